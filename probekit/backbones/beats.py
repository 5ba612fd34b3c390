"""BEATs (Chen et al., ICML 2023): the post-LN DeepNorm audio transformer of microsoft/unilm `beats/`.

What differs from the audio ViTs (docs/ENCODERS.md section 1): its own frontend (kaldi fbank of the
waveform x 2**15 at kaldi defaults, normalised `(x - 15.41663) / (2 * 6.55582)`, no target length); a
bias-free 16x16 patch conv -> LayerNorm -> `post_extract_proj`; no cls token and no absolute positions
(a weight-normed convolutional positional embedding instead); `encoder.layer_norm` before the layers and
none after; T5-style bidirectional relative position buckets shared by all layers, gated per query
(`grep_linear`, `grep_a`); and the official padding mask, which maps sample -> frame -> patch masks
linearly onto the flattened time-major patch index (keys masked, padded queries still computed).

There is no cls token: the tokens' `cls` is the mean of the patch tokens over the valid rows (the BAT
adapter, houtan-ghaffari/BAT_ICML2026 models/beats.py, pools the patch mean; the official fine-tuned
predictor averages the unmasked positions).

This module owns the family: sizes (`_VARIANTS`), cards, the frontend (`BeatsFbank`), and the checkpoint
format:

| format | what it is                                                                               |
|--------|------------------------------------------------------------------------------------------|
| beats  | official `.pt` `{'cfg': dict, 'model': state_dict}` (pre-trained; fine-tuned `predictor.*` ignored) |
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from probekit.backbones.checkpoint_io import (
    CheckpointFormat,
    Detected,
    FileInfo,
    file_sha256,
    load_state_dict,
    register_format,
    strip_wrappers,
    tensors_only,
)
from probekit.backbones.protocol import BackboneBase, BackboneCard, LayerTokens, QueryTokens
from probekit.backbones.registry import check_options, register_backbone
from probekit.backbones.weights import PublishedWeights, register_weights, weights_key
from probekit.errors import BackboneError, CheckpointError, ConfigError

__all__ = ["BeatsBackbone", "BeatsConfig", "BeatsFbank", "BeatsFbankConfig", "BeatsModel", "beats_param_count", "save"]

ARCHITECTURE = "beats"
BEATS_CITATION = (
    "Chen, S., Wu, Y., Wang, C., Liu, S., Tompkins, D., Chen, Z., Wei, F. BEATs: Audio Pre-Training with "
    "Acoustic Tokenizers. ICML 2023."
)
BEATS_URL = "https://github.com/microsoft/unilm/tree/master/beats"

# ---------------------------------------------------------------------------------------------- frontend
_WINDOW, _HOP = 400, 160  # kaldi 25 ms / 10 ms at 16 kHz (snip_edges: frames = 1 + (n - 400) // 160)
_MIN_FRAMES = 16  # one patch row; the official code fails below it (division by zero in the patch mask)


@dataclasses.dataclass(frozen=True)
class BeatsFbankConfig:
    """BEATs.preprocess: kaldi fbank (128 bins, kaldi defaults) of wave * 2**15, `(x - mean) / (2 * std)`.

    target_frames: None = the batch's own length (the official call); an int pads (zeros, as the official
        padded batch) or crops the waveform to `400 + (target_frames - 1) * 160` samples first, so every
        clip of a token store has the same grid.
    """

    target_frames: int | None = None
    mean: float = 15.41663
    std: float = 6.55582
    kind: str = dataclasses.field(default="beats-fbank", init=False)

    def __post_init__(self) -> None:
        t = self.target_frames
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < _MIN_FRAMES):
            raise ConfigError(f"beats-fbank target_frames={t!r} must be an integer >= {_MIN_FRAMES} or None",
                              hint="one patch row needs 16 frames (0.265 s)")
        if not self.std > 0:
            raise ConfigError(f"beats-fbank std={self.std} must be positive")

    @property
    def num_bins(self) -> int:
        return 128

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def official_valid_frames(lengths: torch.Tensor, width: int, frames: int) -> torch.Tensor:
    """BEATs.forward_padding_mask on a sample mask: drop `width % frames` samples, view (frames, s).all(-1).

    Frame i is padding iff its s = width // frames samples all lie past the clip, so the valid frames are
    ceil(length / s) (not the geometric 1 + (length - 400) // 160).
    """
    s = width // frames
    lens = torch.as_tensor(lengths, dtype=torch.long).clamp(0, width)
    return torch.clamp((lens + s - 1) // s, max=frames)


class BeatsFbank(nn.Module):
    """(B, samples) 16 kHz -> ((B, frames, 128) features, (B,) valid frames), as `BEATs.preprocess` + mask.

    Samples past each clip's length are zeroed (the official code expects a zero-padded batch). Waves
    shorter than one patch row (2,800 samples) are zero-padded up to it, where the official code fails.
    """

    def __init__(self, config: BeatsFbankConfig | None = None):
        super().__init__()
        self.config = config or BeatsFbankConfig()

    @property
    def num_bins(self) -> int:
        return 128

    def _width(self, num_samples: int) -> int:
        t = self.config.target_frames
        if t is not None:
            return _WINDOW + (t - 1) * _HOP
        return max(int(num_samples), _WINDOW + (_MIN_FRAMES - 1) * _HOP)

    def num_frames(self, num_samples: int) -> int:
        return 1 + (self._width(num_samples) - _WINDOW) // _HOP

    def valid_frames(self, num_samples: int) -> int:
        """The official frame mask's valid count for one clip of `num_samples` samples (padded alone)."""
        w = self._width(num_samples)
        return int(official_valid_frames(torch.tensor([int(num_samples)]), w, self.num_frames(num_samples))[0])

    def _fbank(self, wave: torch.Tensor) -> torch.Tensor:
        from torchaudio.compliance.kaldi import fbank

        c = self.config
        rows = [fbank(w.unsqueeze(0) * 2**15, num_mel_bins=128, sample_frequency=16000, frame_length=25,
                      frame_shift=10) for w in wave]
        return (torch.stack(rows) - c.mean) / (2 * c.std)

    def forward(self, wave: torch.Tensor, lengths=None) -> tuple[torch.Tensor, torch.Tensor]:
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dim() != 2:
            raise ConfigError(f"beats-fbank takes (B, samples) or (samples,), got shape {tuple(wave.shape)}")
        b, n = wave.shape
        if n == 0:
            raise ConfigError("beats-fbank got an empty waveform")
        lens = torch.full((b,), n, dtype=torch.long) if lengths is None else torch.as_tensor(lengths).reshape(-1).long().cpu()
        if lens.numel() != b or bool((lens <= 0).any() or (lens > n).any()):
            raise ConfigError(f"lengths {lens.tolist()} do not fit a batch of {b} clips of {n} samples (need 1..{n})")
        wave = wave.to(torch.float32)
        if lengths is not None:  # padding is zeros in the official batch: garbage past a clip must not leak in
            keep = torch.arange(n, device=wave.device)[None, :] < lens.to(wave.device)[:, None]
            wave = wave * keep
        width = self._width(n)
        wave = F.pad(wave, (0, width - n)) if width > n else wave[:, :width]
        feats = self._fbank(wave)
        return feats, official_valid_frames(lens, width, feats.shape[1])

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """One clip (samples,) -> (1, frames, 128) (the token-cache workers' call)."""
        if wave.dim() != 1:
            raise ConfigError(f"features() takes one 1-D clip, got shape {tuple(wave.shape)}")
        return self.forward(wave)[0]

    def extra_repr(self) -> str:
        return repr(self.config)


# ---------------------------------------------------------------------------------------------- model
@dataclasses.dataclass(frozen=True)
class BeatsConfig:
    """The fields of the official BEATsConfig that shape the encoder (same names as in a file's `cfg`)."""

    input_patch_size: int = 16
    embed_dim: int = 512  # patch embedding width
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    deep_norm: bool = True
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            want = {"bool": bool, "int": int, "str": str}[str(f.type)]
            if want is int and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ConfigError(f"BEATs cfg {f.name}={v!r} must be a positive integer")
            if want is not int and not isinstance(v, want):
                raise ConfigError(f"BEATs cfg {f.name}={v!r} must be a {want.__name__}")
        if self.layer_norm_first or self.activation_fn != "gelu":
            raise ConfigError(
                f"BEATs cfg layer_norm_first={self.layer_norm_first}, activation_fn={self.activation_fn!r}: only the "
                "published post-LN GELU encoder is implemented", hint="every released BEATs checkpoint uses those")
        d, h, g = self.encoder_embed_dim, self.encoder_attention_heads, self.conv_pos_groups
        if d % h or d % g:
            raise ConfigError(f"BEATs cfg encoder_embed_dim={d} must divide by the heads ({h}) and conv_pos_groups ({g})")
        if self.relative_position_embedding and (self.num_buckets < 4 or self.max_distance <= self.num_buckets // 4):
            raise ConfigError(f"BEATs cfg num_buckets={self.num_buckets}, max_distance={self.max_distance}: need "
                              "num_buckets >= 4 and max_distance > num_buckets // 4")

    @property
    def head_dim(self) -> int:
        return self.encoder_embed_dim // self.encoder_attention_heads

    @property
    def deep_norm_alpha(self) -> float:
        return math.pow(2 * self.encoder_layers, 1 / 4) if self.deep_norm else 1.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# BEATsConfig's own defaults: a file's `cfg` updates these (BEATsConfig(cfg)), not ours.
_OFFICIAL_DEFAULTS = {
    "input_patch_size": -1, "embed_dim": 512, "conv_bias": False, "encoder_layers": 12, "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12, "activation_fn": "gelu",
    "layer_norm_first": False, "deep_norm": False, "conv_pos": 128, "conv_pos_groups": 16,
    "relative_position_embedding": False, "num_buckets": 320, "max_distance": 1280, "gru_rel_pos": False,
}


def config_from_cfg(cfg: Mapping, source: str = "cfg") -> BeatsConfig:
    """A file's official `cfg` dict -> BeatsConfig (BEATsConfig semantics: defaults updated by the dict)."""
    merged = {**_OFFICIAL_DEFAULTS, **{k: v for k, v in cfg.items() if k in _OFFICIAL_DEFAULTS}}
    try:
        return BeatsConfig(**merged)
    except ConfigError as e:
        raise CheckpointError(f"{source}: {e.args[0] if e.args else e}", hint=getattr(e, "hint", None)) from None


def beats_param_count(cfg: BeatsConfig) -> int:
    """Trainable weights, counted from the architecture (the shared relative-bias table once)."""
    e, d, ff, h, p = cfg.embed_dim, cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim, cfg.encoder_attention_heads, \
        cfg.input_patch_size
    n = e * p * p + (e if cfg.conv_bias else 0) + 2 * e  # patch conv + layer_norm
    n += (e * d + d) if e != d else 0  # post_extract_proj
    n += cfg.conv_pos + d * (d // cfg.conv_pos_groups) * cfg.conv_pos + d  # pos_conv weight_g, weight_v, bias
    n += 2 * d  # encoder.layer_norm
    layer = 4 * (d * d + d) + 2 * 2 * d + (d * ff + ff) + (ff * d + d)
    layer += (cfg.head_dim * 8 + 8 + h) if cfg.gru_rel_pos else 0
    n += cfg.encoder_layers * layer
    return n + (cfg.num_buckets * h if cfg.relative_position_embedding else 0)


class _WeightNormConv1d(nn.Module):
    """nn.utils.weight_norm(Conv1d, dim=2): W = g * v / ||v|| over dims (0, 1), per kernel tap."""

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        self.kernel, self.groups = kernel, groups
        v = torch.randn(dim, dim // groups, kernel) * math.sqrt(4 / (kernel * dim))
        self.weight_g = nn.Parameter(v.norm(dim=(0, 1), keepdim=True))
        self.weight_v = nn.Parameter(v)
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        w = torch._weight_norm(self.weight_v, self.weight_g, 2)
        return F.conv1d(x, w, self.bias, padding=self.kernel // 2, groups=self.groups)


class _SamePad(nn.Module):
    def __init__(self, kernel: int):
        super().__init__()
        self.remove = 1 if kernel % 2 == 0 else 0

    def forward(self, x):
        return x[..., : -self.remove] if self.remove else x


def relative_buckets(n: int, num_buckets: int, max_distance: int, device=None) -> torch.Tensor:
    """(n, n) bucket of key - query, T5 bidirectional, with the official float32 log and truncation."""
    pos = torch.arange(n, dtype=torch.long, device=device)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    out = (rel > 0).long() * half
    rel = rel.abs()
    exact = half // 2
    large = exact + (torch.log(rel.float() / exact) / math.log(max_distance / exact) * (half - exact)).to(torch.long)
    large = torch.minimum(large, torch.full_like(large, half - 1))
    return out + torch.where(rel < exact, rel, large)


class _SelfAttention(nn.Module):
    def __init__(self, cfg: BeatsConfig):
        super().__init__()
        d, h = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.heads, self.head_dim, self.scaling = h, cfg.head_dim, cfg.head_dim**-0.5
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        if cfg.relative_position_embedding:
            self.relative_attention_bias = nn.Embedding(cfg.num_buckets, h)
        self.gru_rel_pos = cfg.gru_rel_pos
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(cfg.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, h, 1, 1))

    def forward(self, x, key_pad, pos_bias, num_queries: int = 0):
        b, n, d = x.shape
        alpha = 32  # the official stabilised softmax: q / 32, logits (w - rowmax) * 32
        q = self.q_proj(x) * self.scaling * (1 / alpha)
        q = q.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, H, N, hd)
        k = self.k_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        if num_queries:  # VQT: the first tokens are queries, no keys/values; bias columns of the keys only
            k, v = k[:, :, num_queries:], v[:, :, num_queries:]
            pos_bias = None if pos_bias is None else pos_bias[:, :, num_queries:]
        w = q @ k.transpose(-2, -1)
        w = (w - w.max(dim=-1, keepdim=True)[0]) * alpha
        if key_pad is not None:
            w = w.masked_fill(key_pad[:, None, None, :], float("-inf"))
        if pos_bias is not None:
            bias = pos_bias.unsqueeze(0)  # (1, H, N, N)
            if self.gru_rel_pos:
                gates = torch.sigmoid(self.grep_linear(q * alpha / self.scaling).view(b, self.heads, n, 2, 4).sum(-1))
                ga, gb = gates.chunk(2, dim=-1)
                bias = (ga * (gb * self.grep_a - 1.0) + 2.0) * bias  # per query row
            w = w + bias
        out = (w.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, d)
        return self.out_proj(out)


class _Layer(nn.Module):
    """Post-LN DeepNorm: x = LN(alpha * x + Attn(x)); x = LN(alpha * x + FFN(x))."""

    def __init__(self, cfg: BeatsConfig):
        super().__init__()
        d = cfg.encoder_embed_dim
        self.alpha = cfg.deep_norm_alpha
        self.self_attn = _SelfAttention(cfg)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x, key_pad, pos_bias):
        x = self.self_attn_layer_norm(x * self.alpha + self.self_attn(x, key_pad, pos_bias))
        return self.final_layer_norm(x * self.alpha + self.fc2(F.gelu(self.fc1(x))))


class _Encoder(nn.Module):
    def __init__(self, cfg: BeatsConfig):
        super().__init__()
        d = cfg.encoder_embed_dim
        self.pos_conv = nn.Sequential(_WeightNormConv1d(d, cfg.conv_pos, cfg.conv_pos_groups), _SamePad(cfg.conv_pos),
                                      nn.GELU())
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.encoder_layers))
        if cfg.relative_position_embedding:  # one table, held by every layer (the official key layout)
            for layer in self.layers[1:]:
                layer.self_attn.relative_attention_bias = self.layers[0].self_attn.relative_attention_bias
        self.layer_norm = nn.LayerNorm(d)


class BeatsModel(nn.Module):
    """The official BEATs encoder (module names = the checkpoint's keys), returning every block's output."""

    def __init__(self, cfg: BeatsConfig, seed: int = 0):
        super().__init__()
        self.config = cfg
        with torch.random.fork_rng():  # seeded init that leaves the caller's RNG alone
            torch.manual_seed(seed)
            e, d, p = cfg.embed_dim, cfg.encoder_embed_dim, cfg.input_patch_size
            self.patch_embedding = nn.Conv2d(1, e, kernel_size=p, stride=p, bias=cfg.conv_bias)
            self.layer_norm = nn.LayerNorm(e)
            self.post_extract_proj = nn.Linear(e, d) if e != d else None
            self.encoder = _Encoder(cfg)
        self._buckets: dict = {}

    def position_bias(self, n: int, device) -> torch.Tensor | None:
        cfg = self.config
        if not cfg.relative_position_embedding:
            return None
        key = (n, str(device))
        if key not in self._buckets:
            self._buckets = {key: relative_buckets(n, cfg.num_buckets, cfg.max_distance, device)}
        table = self.encoder.layers[0].self_attn.relative_attention_bias
        return table(self._buckets[key]).permute(2, 0, 1)  # (H, N, N)

    def forward(self, fbank: torch.Tensor, valid_frames: torch.Tensor | None = None):
        """(B, frames, bins) -> (list of L (B, N, D), valid patches (B,), grid (T, F))."""
        b, frames = fbank.shape[:2]
        x = self.patch_embedding(fbank.unsqueeze(1))
        t, f = x.shape[2], x.shape[3]
        x = self.layer_norm(x.reshape(b, x.shape[1], -1).transpose(1, 2))  # time-major: n = t * F + f
        n = x.shape[1]
        key_pad, valid = None, torch.full((b,), n, dtype=torch.long)
        if valid_frames is not None:
            # the official frame mask -> patch mask: drop frames % N trailing frames, view (N, r).all(-1)
            r = frames // n
            vf = torch.as_tensor(valid_frames).reshape(-1).long().cpu().clamp(0, frames)
            valid = torch.clamp((vf + r - 1) // r, min=1, max=n)  # all keys masked would be NaN (official too)
            key_pad = torch.arange(n)[None, :] >= valid[:, None]
            key_pad = key_pad.to(x.device) if bool(key_pad.any()) else None
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        enc = self.encoder
        if key_pad is not None:
            x = x.masked_fill(key_pad[..., None], 0.0)  # x[padding_mask] = 0 before pos_conv
        x = x + enc.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        x = enc.layer_norm(x)
        bias = self.position_bias(n, x.device)
        outs = []
        for layer in enc.layers:
            x = layer(x, key_pad, bias)
            outs.append(x)
        return outs, valid, (t, f)

    def forward_queries(self, fbank: torch.Tensor, valid_frames: torch.Tensor | None, queries: torch.Tensor):
        """Visual query tuning (the official BAT BEATs `extract_vqt_features`): layer i reads `queries[i]`
        (B, q, D) prepended to its input; they are no keys/values, so the patch outputs equal `forward`'s.
        The relative position bias is built over the q + N positions (queries first), its key columns
        kept, as the official code does. Returns ((B, L, q, D) query outputs, (B, N, D) last layer, valid
        patches (B,), grid (T, F))."""
        b, frames = fbank.shape[:2]
        x = self.patch_embedding(fbank.unsqueeze(1))
        t, f = x.shape[2], x.shape[3]
        x = self.layer_norm(x.reshape(b, x.shape[1], -1).transpose(1, 2))
        n, nq = x.shape[1], queries.shape[2]
        key_pad, valid = None, torch.full((b,), n, dtype=torch.long)
        if valid_frames is not None:  # the padding mask of `forward`, on the patch keys only
            r = frames // n
            vf = torch.as_tensor(valid_frames).reshape(-1).long().cpu().clamp(0, frames)
            valid = torch.clamp((vf + r - 1) // r, min=1, max=n)
            key_pad = torch.arange(n)[None, :] >= valid[:, None]
            key_pad = key_pad.to(x.device) if bool(key_pad.any()) else None
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        enc = self.encoder
        if key_pad is not None:
            x = x.masked_fill(key_pad[..., None], 0.0)
        x = x + enc.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        x = enc.layer_norm(x)
        bias = self.position_bias(nq + n, x.device)
        outs = []
        for i, layer in enumerate(enc.layers):  # _Layer.forward with the queries prepended
            x = torch.cat([queries[:, i].to(x.dtype), x], dim=1)
            x = layer.self_attn_layer_norm(x * layer.alpha + layer.self_attn(x, key_pad, bias, num_queries=nq))
            x = layer.final_layer_norm(x * layer.alpha + layer.fc2(F.gelu(layer.fc1(x))))
            outs.append(x[:, :nq])
            x = x[:, nq:]
        return torch.stack(outs, dim=1), x, valid, (t, f)


# ---------------------------------------------------------------------------------------------- backbone
class BeatsBackbone(BackboneBase):
    """A frozen BEATs encoder with its fbank frontend: per-layer tokens on a (frames // 16, 8) grid."""

    def __init__(self, model: BeatsModel, *, name: str, card: BackboneCard, frontend: Any = None,
                 checkpoint_sha256: str | None = None, seed: int | None = 0, checkpoint_format: str | None = None):
        self.model = model.eval().requires_grad_(False)
        self.name = name
        cfg = model.config
        self.num_layers, self.embed_dim, self.num_heads = cfg.encoder_layers, cfg.encoder_embed_dim, \
            cfg.encoder_attention_heads
        self.card = dataclasses.replace(card, name=name, embed_dim=self.embed_dim, num_layers=self.num_layers,
                                        num_heads=self.num_heads, params=beats_param_count(cfg))
        self.checkpoint_sha256 = checkpoint_sha256
        self.seed = None if checkpoint_sha256 else seed
        self.checkpoint_format = checkpoint_format
        self._frontend_spec = frontend

    def default_frontend(self):
        return BeatsFbank()

    def _build_frontend(self) -> None:
        spec = self._frontend_spec
        if spec is None:
            spec = BeatsFbankConfig()
        if isinstance(spec, Mapping) and spec.get("kind") == "beats-fbank":
            d = {k: v for k, v in spec.items() if k != "kind"}
            allowed = {f.name for f in dataclasses.fields(BeatsFbankConfig) if f.init}
            if set(d) - allowed:
                raise ConfigError(f"unknown beats-fbank frontend field(s): {', '.join(sorted(set(d) - allowed))}",
                                  hint=f"known: {', '.join(sorted(allowed))}")
            spec = BeatsFbankConfig(**d)
        if isinstance(spec, BeatsFbankConfig):
            self._frontend, self._frontend_config = BeatsFbank(spec), spec
            return
        from probekit.backbones._frontend import resolve_frontend  # any other probekit frontend, on request

        self._frontend, self._frontend_config = resolve_frontend(spec)

    @torch.no_grad()
    def encode(self, features: torch.Tensor, valid_frames: torch.Tensor | None = None, *,
               layers: Sequence[int] | None = None) -> LayerTokens:
        """(B, frames, 128) or (B, 1, frames, 128) fbank + valid frames -> tokens on a (frames // 16, 8) grid."""
        if not torch.is_tensor(features) or not features.is_floating_point():
            raise BackboneError(f"{self.name}: features must be a floating-point tensor")
        if features.ndim == 4 and features.shape[1] == 1:
            features = features[:, 0]
        p = self.model.config.input_patch_size
        if features.ndim != 3 or features.shape[1] < p or features.shape[2] < p:
            raise BackboneError(f"{self.name}: expected (B, frames, 128) features with at least {p} frames, got "
                                f"shape {tuple(features.shape)}", hint="clips need 0.265 s of audio (16 frames)")
        outs, valid, (t, f) = self.model(features.to(self.device, torch.float32), valid_frames)
        L = self.num_layers
        idx = range(L) if layers is None else [int(i) % L for i in layers]
        patch = torch.stack([outs[i] for i in idx], dim=1)  # (B, L, N, D)
        valid_rows = (valid + f - 1) // f  # rows holding a token the official mask keeps
        keep = (torch.arange(t)[None, :] < valid_rows[:, None]).repeat_interleave(f, dim=1)
        keep = keep.to(patch)[:, None, :, None]
        cls = (patch * keep).sum(2) / keep.sum(2).clamp(min=1)  # no cls token: mean over the valid rows
        return LayerTokens(patch=patch, cls=cls, grid=(t, f), valid_rows=valid_rows.long())

    supports_queries = True

    def encode_queries(self, features: torch.Tensor, valid_frames: torch.Tensor | None,
                       queries: torch.Tensor) -> QueryTokens:
        """VQT: fbank + (B, L, q, D) queries -> each layer's query outputs and the mean of the last layer's
        valid patch tokens (the official head averages the last layer's tokens; `encode`'s cls rule)."""
        if features.ndim == 4 and features.shape[1] == 1:
            features = features[:, 0]
        p = self.model.config.input_patch_size
        if features.ndim != 3 or features.shape[1] < p or not features.is_floating_point():
            raise BackboneError(f"{self.name}: expected (B, frames, 128) float features with at least {p} frames, "
                                f"got shape {tuple(features.shape)}")
        x = features.to(self.device, self.model.layer_norm.weight.dtype)
        q, last, valid, (t, f) = self.model.forward_queries(x, valid_frames, queries)
        valid_rows = (valid + f - 1) // f
        keep = (torch.arange(t)[None, :] < valid_rows[:, None]).repeat_interleave(f, dim=1).to(last)[..., None]
        return QueryTokens(queries=q, cls=(last * keep).sum(1) / keep.sum(1).clamp(min=1))

    def cache_key(self) -> dict:
        from probekit.backbones._frontend import frontend_config_dict

        # local files keep the content key {sha256}; downloads also name source and revision (weights_key)
        weights = weights_key(getattr(self, "weights", None), sha256=self.checkpoint_sha256, seed=self.seed)
        weights.pop("use_ema", None)  # no EMA option in this family: the key of a local file stays as it was
        return {"backbone": self.name, "family": "beats", "config": self.model.config.to_dict(), "weights": weights,
                "frontend": frontend_config_dict(self.frontend_config)}

    def __repr__(self) -> str:
        w = f"sha256={self.checkpoint_sha256[:12]}" if self.checkpoint_sha256 else f"random init seed={self.seed}"
        return f"BeatsBackbone({self.name}: D={self.embed_dim}, L={self.num_layers}, heads={self.num_heads}, {w})"


# ---------------------------------------------------------------------------------------------- checkpoints
def _detect(obj: Any, info: FileInfo) -> Detected | None:
    """Official BEATs `.pt`: {'cfg': dict, 'model': state_dict}; fine-tuned files add `predictor.*`."""
    model = None if info.is_safetensors else obj.get("model")
    if not isinstance(model, Mapping) or "patch_embedding.weight" not in model:
        return None
    info.no_ema("beats")
    cfg = obj.get("cfg")
    if not isinstance(cfg, Mapping):
        raise CheckpointError(f"{info.path} (beats): no 'cfg' dict beside 'model'",
                              hint="an official BEATs checkpoint is torch.save({'cfg': dict, 'model': state_dict})")
    sd = tensors_only(strip_wrappers(model), "model", info.path, "beats")
    ignored = [k for k in sd if k.startswith("predictor.")] + [k for k in obj if k not in ("cfg", "model")]
    sd = {k: v for k, v in sd.items() if not k.startswith("predictor.")}
    return Detected("beats", sd, ignored, [], file_config=dict(cfg))


register_format(CheckpointFormat("beats", ARCHITECTURE, "official BEATs .pt {'cfg': dict, 'model': state_dict}",
                                 _detect, priority=25))

_REL = "encoder.layers.{}.self_attn.relative_attention_bias.weight"


def _load_model(path, found: Detected, source: str) -> BeatsModel:
    cfg = config_from_cfg(found.file_config, source)
    sd = found.state_dict
    if cfg.relative_position_embedding:  # one shared table: every layer's copy must be the same tensor
        first = sd.get(_REL.format(0))
        differ = [i for i in range(1, cfg.encoder_layers)
                  if first is not None and _REL.format(i) in sd and not torch.equal(sd[_REL.format(i)], first)]
        if differ:
            raise CheckpointError(f"{source}: relative_attention_bias of layer(s) {differ} differs from layer 0's; "
                                  "BEATs shares one table across layers", hint="the file is damaged or not BEATs")
    model = BeatsModel(cfg)
    try:
        model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise CheckpointError(f"{source}: weights do not fit its cfg: {' '.join(lines[1:3])[:400]}",
                              hint="the cfg and the state dict must come from the same BEATs model") from None
    return model


def save(path, model: BeatsModel) -> None:
    """Write `model` in the official layout ({'cfg', 'model'}), loadable by probekit and the official code."""
    torch.save({"cfg": model.config.to_dict(), "model": model.state_dict()}, path)


# ---------------------------------------------------------------------------------------------- registry
BEATS_B = BeatsConfig()
BEATS_TINY = BeatsConfig(embed_dim=48, encoder_layers=4, encoder_embed_dim=64, encoder_ffn_embed_dim=128,
                         encoder_attention_heads=2, conv_pos=16, conv_pos_groups=4)
_AS2M = ("as2m", "as20k")  # AudioSet-2M contains the AS-20k balanced subset
_NO_CLS = "no cls token: cls = mean of the valid rows' patch tokens"
_VARIANTS: dict[str, tuple[BeatsConfig, str, tuple[str, ...]]] = {
    "beats-iter3": (
        BEATS_B, f"BEATs_iter3: ViT-B sized, self-supervised on AudioSet-2M (3rd tokenizer iteration); {_NO_CLS}",
        _AS2M),
    "beats-iter3-plus-as2m": (
        BEATS_B, ("BEATs_iter3+ (AS2M): ViT-B sized, AudioSet-2M, tokenizer distilled from a teacher fine-tuned on "
                  f"AS-2M labels; {_NO_CLS}"), _AS2M),
    "beats-tiny": (BEATS_TINY, "test size (D=64, 4 blocks, 2 heads, patch embed 48); random init unless a checkpoint",
                   ()),
}
_OPTIONS = {"seed", "frontend", "device", "trust_checkpoint", "allow_nonfinite"}


def _card(name: str, cfg: BeatsConfig, notes: str, data: tuple[str, ...]) -> BackboneCard:
    return BackboneCard(name=name, family="beats", embed_dim=cfg.encoder_embed_dim, num_layers=cfg.encoder_layers,
                        num_heads=cfg.encoder_attention_heads, frontend="", params=beats_param_count(cfg),
                        training_data=data, checkpoint_formats=("beats",), citation=BEATS_CITATION,
                        url=BEATS_URL if data else "", notes=notes)


def build(name: str, checkpoint=None, *, card: BackboneCard, config: BeatsConfig, **options) -> BeatsBackbone:
    """A BEATs backbone from an official checkpoint (sizes from its cfg) or seeded random init."""
    from probekit._device import resolve_device

    o = check_options(name, options, accepted=_OPTIONS)
    dev = resolve_device(o["device"])
    if checkpoint is None:
        return BeatsBackbone(BeatsModel(config, seed=o["seed"]), name=name, card=card, frontend=o["frontend"],
                             seed=o["seed"]).to(dev)
    found, info = load_state_dict(checkpoint, ARCHITECTURE, trust_checkpoint=o["trust_checkpoint"],
                                  allow_nonfinite=o["allow_nonfinite"], what="a BEATs model")
    model = _load_model(info.path, found, f"{info.path} ({found.format})")
    bb = BeatsBackbone(model, name=name, card=card, frontend=o["frontend"], checkpoint_sha256=file_sha256(info.path),
                       checkpoint_format=found.format)
    return bb.to(dev)


CARDS: dict[str, BackboneCard] = {}
for _name, (_cfg, _notes, _data) in _VARIANTS.items():
    CARDS[_name] = _c = _card(_name, _cfg, _notes, _data)
    _f = partial(build, _name, card=_c, config=_cfg)
    _f.__doc__ = f"{_notes}. From an official BEATs checkpoint, or seeded random init."
    register_backbone(_f, name=_name, card=_c)

# Weights by name (probekit.backbones.weights): the links of the official table in microsoft/unilm
# beats/README.md ("Pre-Trained Model" column), signed Azure blob URLs as published (they expire in 3022).
# No sha256 is published: the first download's hash is pinned. The .pt holds {'cfg': dict, 'model': state dict}
# of plain types, so it loads with weights_only=True like a local file (no converter, no full unpickling).
_BEATS_BLOB = "https://msranlcmtteamdrive.blob.core.windows.net/share/BEATs/"
_BEATS_LICENSE = "MIT (microsoft/unilm LICENSE, per beats/README.md)"
register_weights(PublishedWeights(
    "beats-iter3",
    (_BEATS_BLOB + "BEATs_iter3.pt?sv=2020-08-04&st=2022-12-18T10%3A38%3A57Z&se=3022-12-19T10%3A38%3A00Z&sr=b&sp=r"
     "&sig=Zo2EeinTCJsm4sH%2FjR03eYPdfT%2BLd0LBn%2FYIhj7ZQ7E%3D",),
    license=_BEATS_LICENSE, notes="BEATs_iter3 pre-trained model (microsoft/unilm beats/README.md table); sha256 not "
    "published -> pinned at first download",
))
register_weights(PublishedWeights(
    "beats-iter3-plus-as2m",
    (_BEATS_BLOB + "BEATs_iter3_plus_AS2M.pt?sv=2020-08-04&st=2022-12-18T10%3A40%3A53Z&se=3022-12-19T10%3A40%3A00Z"
     "&sr=b&sp=r&sig=SKBQMA7MRAMFv7Avyu8a4EkFOlkEhf8nF0Jc2wlYd%2B0%3D",),
    license=_BEATS_LICENSE, notes="BEATs_iter3+ (AS2M) pre-trained model, not the fine-tuned cpt1/cpt2 (microsoft/unilm "
    "beats/README.md table); sha256 not published -> pinned at first download",
))

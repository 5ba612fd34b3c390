"""Bird-MAE (DBD-research-group/Bird-MAE): a timm pre-LN ViT pretrained as an MAE on BirdSet XCL, 32 kHz audio.

Facts (docs/ENCODERS.md section 4, read from the official code @a514ef50 and confirmed by running it):

* Frontend (`EvalTransform`): 32 kHz waveform right-zero-padded / cropped to exactly 5 s (160,000 samples),
  minus its mean (taken AFTER padding, so the pad holds -mean), kaldi fbank (htk_compat, hanning, 128 mels,
  no energy, dither 0, 25 ms / 10 ms) -> 498 frames, padded to 512 frames with the fbank's minimum, then
  `(fb + 7.2) / (2 * 4.43)`. The official code takes that minimum over the whole batch; here it is taken
  per clip (the batch of one the official code sees for each clip alone), so a clip's features never depend
  on its batch-mates. The two agree whenever a batch holds one clip or every clip is shorter than ~4.97 s
  (silent frames give log(float32 eps) = -15.9424, the floor of every clip).
* Encoder: timm 1.0.9 VisionTransformer, pre-LN blocks (LN eps 1e-6, erf GELU, qkv bias, fused SDPA),
  16x16 conv patches over (512, 128) -> (32 time, 8 mel) grid, tokens time-major `t * 8 + f`,
  `+ pos_embed[:, 1:]`, then `cls_token + pos_embed[:, :1]` prepended -> (B, 257, D). The positional table
  is the checkpoint's, used as stored (an 8x32 sin-cos table added index by index to the 32x8 tokens).
* Output: the official classifier pools `fc_norm(mean of patch tokens)` of the last block; `norm` is only
  used by the cls pooling (and by the prototype head). LayerTokens hold the raw block outputs (no norm):
  `cls` is the cls token (index 0), `patch` the 256 patch tokens.
* Checkpoint: the Hugging Face `model.safetensors` key layout (timm names, no `head.*`).

Shorter inputs (fewer than 512 frames, e.g. the registry-wide tests) use the prefix of the positional
table, as the index-by-index add implies; longer inputs are refused (the table covers 5 s).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from probekit.audio.frontends import FbankConfig
from probekit.backbones.checkpoint_io import (
    CheckpointFormat,
    Detected,
    FileInfo,
    file_sha256,
    find_num_heads,
    load_state_dict,
    register_format,
    strip_wrappers,
    tensors_only,
)
from probekit.backbones.protocol import BackboneBase, BackboneCard, LayerTokens
from probekit.backbones.registry import check_options, register_backbone
from probekit.backbones.vit import patch_rows
from probekit.backbones.weights import PublishedWeights, register_weights, weights_key
from probekit.errors import BackboneError, CheckpointError, ConfigError

__all__ = ["BirdMAEBackbone", "BirdMAEConfig", "BirdMAEFbankConfig", "BirdMAEFrontend", "BirdMAEViT", "pos_table"]

ARCHITECTURE = "bird-mae"
FAMILY = "bird-mae"
SAMPLE_RATE = 32000
CITATION = (
    "Rauch, L., Moummad, I., Heinrich, R., Joly, A., Sick, B., Scholz, C. Can Masked Autoencoders Also Listen "
    "to Birds? Preprint. arXiv 2504.12880, 2025."
)
URL = "https://github.com/DBD-research-group/Bird-MAE"


# ---------------------------------------------------------------------------------------------- frontend
@dataclasses.dataclass(frozen=True)
class BirdMAEFbankConfig:
    """Bird-MAE's evaluation frontend (transforms.py::EvalTransform with the HSN / melbank_birdset configs)."""

    sample_rate: int = SAMPLE_RATE
    clip_samples: int = 160000  # 5 s: pad with zeros at the end / keep the first 5 s
    target_frames: int = 512  # 498 fbank frames padded with the clip's fbank minimum
    mean: float = -7.2
    std: float = 4.43
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    window_type: str = "hanning"
    htk_compat: bool = True
    use_energy: bool = False
    dither: float = 0.0
    pad_value: str = "clip-min"  # official: the batch minimum (see the module docstring)
    kind: str = dataclasses.field(default="bird-mae-fbank", init=False)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.clip_samples <= 0 or self.std <= 0:
            raise ConfigError(f"bird-mae-fbank: sample_rate, clip_samples and std must be positive ({self})")
        if self.target_frames <= 0 or self.target_frames % 16:
            raise ConfigError(f"bird-mae-fbank target_frames={self.target_frames} must be a positive multiple of 16")
        if self.dither != 0.0:
            raise ConfigError("bird-mae-fbank dither must be 0.0: features must be deterministic to be cached")
        if self.pad_value != "clip-min":
            raise ConfigError(f"bird-mae-fbank pad_value={self.pad_value!r}; only 'clip-min' is supported")

    # same kaldi fields as FbankConfig, so the same window/shift arithmetic and dict form
    window_samples = FbankConfig.window_samples
    shift_samples = FbankConfig.shift_samples
    num_bins = FbankConfig.num_bins
    to_dict = FbankConfig.to_dict

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BirdMAEFbankConfig:
        d = dict(d)
        kind = d.pop("kind", "bird-mae-fbank")
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(d) - known)
        if kind != "bird-mae-fbank" or unknown:
            raise ConfigError(f"not a bird-mae-fbank config (kind={kind!r}, unknown fields {unknown})",
                              hint=f"known fields: {', '.join(sorted(known))}")
        return cls(**d)


class BirdMAEFrontend(nn.Module):
    """(B, samples) 32 kHz waveforms -> (B, 1, 512, 128) Bird-MAE inputs, each clip on its own valid samples."""

    def __init__(self, config: BirdMAEFbankConfig | None = None):
        super().__init__()
        self.config = config or BirdMAEFbankConfig()

    @property
    def num_bins(self) -> int:
        return self.config.num_mel_bins

    def num_frames(self, num_samples: int) -> int:  # noqa: ARG002 - every clip becomes 5 s
        return self.config.target_frames

    def _native_frames(self) -> int:
        c = self.config
        return 1 + (c.clip_samples - c.window_samples) // c.shift_samples

    def valid_frames(self, num_samples: int) -> int:
        """Frames computed from real audio: whole windows inside the clip's first 5 s (at least 1)."""
        c = self.config
        n = min(int(num_samples), c.clip_samples)
        native = 1 + (n - c.window_samples) // c.shift_samples if n >= c.window_samples else 1
        return max(1, min(native, self._native_frames(), c.target_frames))

    def _one(self, wave: torch.Tensor) -> torch.Tensor:
        """One clip (n,) -> (target_frames, bins)."""
        from torchaudio.compliance.kaldi import fbank

        c = self.config
        w = wave.to(torch.float32)
        n = w.shape[0]
        w = F.pad(w, (0, c.clip_samples - n)) if n < c.clip_samples else w[: c.clip_samples]
        w = w - w.mean()  # after padding: the pad becomes -mean, as in the official code
        fb = fbank(w.unsqueeze(0), htk_compat=c.htk_compat, sample_frequency=c.sample_rate, use_energy=c.use_energy,
                   window_type=c.window_type, num_mel_bins=c.num_mel_bins, dither=c.dither,
                   frame_shift=c.frame_shift_ms, frame_length=c.frame_length_ms)
        t = fb.shape[0]
        if t < c.target_frames:
            fb = F.pad(fb, (0, 0, 0, c.target_frames - t), value=fb.min().item())
        else:
            fb = fb[: c.target_frames]
        return (fb - c.mean) / (c.std * 2)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """One clip (samples,) -> (1, frames, bins)."""
        if wave.dim() != 1:
            raise ConfigError(f"features() takes one 1-D clip, got shape {tuple(wave.shape)}; use forward() for batches")
        if wave.shape[0] == 0:
            raise ConfigError("features() got an empty waveform")
        return self._one(wave).unsqueeze(0)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dim() != 2:
            raise ConfigError(f"Bird-MAE frontend takes (B, samples) or (samples,), got shape {tuple(wave.shape)}")
        b, s = wave.shape
        lens = [s] * b if lengths is None else [int(v) for v in torch.as_tensor(lengths).reshape(-1).tolist()]
        if len(lens) != b or any(v <= 0 or v > s for v in lens):
            raise ConfigError(f"lengths {lens} do not fit a batch of {b} clips of {s} samples (need 1..{s})")
        return torch.stack([self._one(wave[i, : lens[i]]) for i in range(b)]).unsqueeze(1)

    def extra_repr(self) -> str:
        return repr(self.config)


# ---------------------------------------------------------------------------------------------- model
@dataclasses.dataclass(frozen=True)
class BirdMAEConfig:
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    num_mel_bins: int = 128
    max_frames: int = 512  # the positional table covers 512 frames (5 s): 32 x 8 patches
    norm_eps: float = 1e-6

    def __post_init__(self):
        if self.embed_dim <= 0 or self.depth <= 0 or self.num_heads <= 0:
            raise BackboneError(f"Bird-MAE sizes must be positive, got {self}")
        if self.embed_dim % self.num_heads:
            raise BackboneError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}",
                                hint="pass num_heads that divides the width")
        if self.embed_dim % 4:
            raise BackboneError(f"embed_dim {self.embed_dim} must be a multiple of 4 (sin-cos table)")

    @property
    def freq_patches(self) -> int:
        return self.num_mel_bins // self.patch_size

    @property
    def num_patches(self) -> int:
        return (self.max_frames // self.patch_size) * self.freq_patches

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)


def pos_table(embed_dim: int, grid: tuple[int, int] = (8, 32)) -> torch.Tensor:
    """(1 + 8*32, D) table of a fresh Bird-MAE (util/pos_embed.get_2d_sincos_pos_embed_flexible, cls row 0).

    Bird-MAE computes it in float32 (AudioMAE's copy uses float64); row m encodes (m % 32, m // 32).
    Loaded checkpoints replace it with their stored table.
    """
    h, w = grid
    gw, gh = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))

    def one(d: int, pos: np.ndarray) -> np.ndarray:
        omega = np.arange(d // 2, dtype=np.float32)
        omega /= d / 2.0
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([one(embed_dim // 2, gw), one(embed_dim // 2, gh)], axis=1)
    return torch.from_numpy(np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)).float()


class _PatchEmbed(nn.Module):
    def __init__(self, d: int, p: int):
        super().__init__()
        self.proj = nn.Conv2d(1, d, kernel_size=p, stride=p)


class _Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # timm 1.0.9 fused_attn
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    """timm pre-LN block: x + Attn(LN1(x)), then x + MLP(LN2(x))."""

    def __init__(self, cfg: BirdMAEConfig):
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.attn = _Attention(d, cfg.num_heads)
        self.norm2 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.mlp = _Mlp(d, cfg.mlp_hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class BirdMAEViT(nn.Module):
    """The Bird-MAE encoder with the Hugging Face checkpoint's key names (timm VisionTransformer minus head)."""

    def __init__(self, config: BirdMAEConfig, *, seed: int | None = None, init: bool = True):
        super().__init__()
        self.config = config
        d = config.embed_dim
        with torch.device("meta"):  # initialised once below (or loaded), never twice
            self.cls_token = nn.Parameter(torch.empty(1, 1, d))
            self.patch_embed = _PatchEmbed(d, config.patch_size)
            self.blocks = nn.ModuleList(_Block(config) for _ in range(config.depth))
            self.norm = nn.LayerNorm(d, eps=config.norm_eps)
            self.fc_norm = nn.LayerNorm(d, eps=config.norm_eps)
        self.to_empty(device="cpu")
        # fixed, never trained (pos_trainable False): a persistent buffer that travels with the state dict
        self.register_buffer("pos_embed", pos_table(d).unsqueeze(0))
        if init:
            self.init_weights(seed)

    def init_weights(self, seed: int | None) -> None:
        """PyTorch layer defaults (U(+-1/sqrt(fan_in))), LayerNorm 1/0, cls ~ N(0, 0.02^2); private generator."""
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    bound = 1.0 / math.sqrt(m.weight[0].numel())
                    m.weight.uniform_(-bound, bound, generator=g)
                    m.bias.uniform_(-bound, bound, generator=g)
                elif isinstance(m, nn.LayerNorm):
                    m.weight.fill_(1.0)
                    m.bias.zero_()
            self.cls_token.normal_(0.0, 0.02, generator=g)

    def forward(self, x: torch.Tensor, *, stop_after: int | None = None) -> list[torch.Tensor]:
        """(B, 1, frames, 128) -> every block's output (B, 1 + N, D), cls first."""
        b = x.shape[0]
        tok = self.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (B, N, D), n = t * 8 + f
        n = tok.shape[1]
        tok = tok + self.pos_embed[:, 1 : 1 + n]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        h = torch.cat([cls, tok], dim=1)
        outs = []
        for blk in self.blocks[: (self.config.depth if stop_after is None else stop_after + 1)]:
            h = blk(h)
            outs.append(h)
        return outs

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The official embedding: fc_norm(mean of the last block's patch tokens) (global_pool 'mean')."""
        return self.fc_norm(self.forward(x)[-1][:, 1:].mean(1))


def param_count(cfg: BirdMAEConfig) -> int:
    """Trainable weights of the encoder (the fixed positional table is not counted), from the sizes."""
    d, h, p = cfg.embed_dim, cfg.mlp_hidden, cfg.patch_size
    per_block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * h + h) + (h * d + d)
    return d * p * p + d + d + cfg.depth * per_block + 2 * d + 2 * d  # patch, cls, blocks, norm, fc_norm


# ---------------------------------------------------------------------------------------------- backbone
class BirdMAEBackbone(BackboneBase):
    """A frozen Bird-MAE with its 32 kHz frontend (`sample_rate` 32000: the cache decodes audio at this rate)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, model: BirdMAEViT, *, name: str, card: BackboneCard, frontend=None,
                 checkpoint_sha256: str | None = None, seed: int | None = 0, checkpoint_path: str | None = None):
        self.model = model.eval().requires_grad_(False)
        self.name = name
        cfg = model.config
        self.num_layers, self.embed_dim, self.num_heads = cfg.depth, cfg.embed_dim, cfg.num_heads
        self.card = dataclasses.replace(card, name=name, embed_dim=cfg.embed_dim, num_layers=cfg.depth,
                                        num_heads=cfg.num_heads, params=sum(p.numel() for p in model.parameters()))
        self.checkpoint_sha256 = checkpoint_sha256
        self.checkpoint_path = checkpoint_path
        self.seed = None if checkpoint_sha256 else seed
        self._frontend_spec = frontend

    def default_frontend(self):
        return BirdMAEFrontend()

    def _build_frontend(self) -> None:
        spec = self._frontend_spec
        if spec is None or spec == "bird-mae":
            fe = BirdMAEFrontend()
        elif isinstance(spec, BirdMAEFbankConfig):
            fe = BirdMAEFrontend(spec)
        elif isinstance(spec, Mapping):
            fe = BirdMAEFrontend(BirdMAEFbankConfig.from_dict(spec))
        elif callable(spec) and hasattr(spec, "config") and not dataclasses.is_dataclass(spec):
            fe = spec
        else:
            raise BackboneError(f"{self.name}: frontend {spec!r} is not a Bird-MAE frontend",
                                hint="use None/'bird-mae', a BirdMAEFbankConfig (or its dict), or a built frontend")
        rate = getattr(fe.config, "sample_rate", None)
        if rate != self.sample_rate:
            raise BackboneError(f"{self.name}: frontend runs at {rate} Hz, Bird-MAE reads {self.sample_rate} Hz audio",
                                hint="use a frontend config with sample_rate=32000")
        self._frontend, self._frontend_config = fe, fe.config

    @torch.no_grad()
    def encode(self, features: torch.Tensor, valid_frames=None, *, layers: Sequence[int] | None = None) -> LayerTokens:
        """(B, 1, frames <= 512, 128) -> per-layer tokens: cls (index 0) and the (frames // 16) x 8 patches."""
        cfg = self.model.config
        if not torch.is_tensor(features) or not features.is_floating_point():
            raise BackboneError(f"{self.name}: features must be a floating-point tensor")
        if features.ndim != 4 or features.shape[1] != 1 or features.shape[3] != cfg.num_mel_bins:
            raise BackboneError(f"{self.name}: expected features of shape (B, 1, frames, {cfg.num_mel_bins}), "
                                f"got {tuple(features.shape)}")
        frames = features.shape[2]
        if not cfg.patch_size <= frames <= cfg.max_frames:
            raise BackboneError(f"{self.name}: {frames} frames; Bird-MAE takes {cfg.patch_size}..{cfg.max_frames} "
                                f"frames (its positional table covers 5 s)", hint="use the model's own frontend")
        depth = cfg.depth
        if layers is not None and any(not -depth <= int(i) < depth for i in layers):
            raise BackboneError(f"layer indices {list(layers)} out of range for {depth} blocks")
        idx = list(range(depth)) if layers is None else [int(i) % depth for i in layers]
        outs = self.model(features.to(self.device, torch.float32), stop_after=max(idx))
        sel = torch.stack([outs[i] for i in idx], dim=1)  # (B, Ls, 1 + N, D)
        b, t = features.shape[0], frames // cfg.patch_size
        valid_rows = patch_rows(valid_frames, b, t, cfg.patch_size)
        return LayerTokens(patch=sel[:, :, 1:], cls=sel[:, :, 0], grid=(t, cfg.freq_patches), valid_rows=valid_rows)

    def cache_key(self) -> dict:
        # local files keep the content key {sha256}; downloads also name source and revision (weights_key)
        weights = weights_key(getattr(self, "weights", None), sha256=self.checkpoint_sha256, seed=self.seed)
        weights.pop("use_ema", None)  # no EMA option in this family: the key of a local file stays as it was
        return {"backbone": self.name, "family": FAMILY, "sample_rate": self.sample_rate,
                "config": dataclasses.asdict(self.model.config), "weights": weights,
                "frontend": dict(self.frontend_config.to_dict())}

    def __repr__(self) -> str:
        w = f"sha256={self.checkpoint_sha256[:12]}" if self.checkpoint_sha256 else f"random init seed={self.seed}"
        c = self.model.config
        return f"BirdMAEBackbone({self.name}: D={c.embed_dim}, L={c.depth}, heads={c.num_heads}, {w})"


# ---------------------------------------------------------------------------------------------- checkpoints
_TOP = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias",
        "fc_norm.weight", "fc_norm.bias")
_IGNORE = ("head.",)  # the fine-tuned classifier: not the encoder
_ROWS = 1 + 32 * 8  # cls + 32 x 8 patches: the 5 s table that tells Bird-MAE from AudioMAE (513 rows)


def _detect_hf(obj: Any, info: FileInfo) -> Detected | None:
    """Hugging Face `model.safetensors` (or the same flat dict saved with torch.save): timm ViT keys, a
    (1, 257, D) positional table, a 1-channel 16x16 patch conv, both `norm` and `fc_norm`, no `pre_norm`."""
    sd = strip_wrappers({k: v for k, v in obj.items() if isinstance(k, str)})
    pos, proj = sd.get("pos_embed"), sd.get("patch_embed.proj.weight")
    if not (torch.is_tensor(pos) and torch.is_tensor(proj) and "fc_norm.weight" in sd and "norm.weight" in sd):
        return None
    if pos.ndim != 3 or pos.shape[1] != _ROWS or proj.ndim != 4 or tuple(proj.shape[1:]) != (1, 16, 16):
        return None
    if any(k.startswith("pre_norm.") for k in sd):
        return None
    info.no_ema("bird-mae-hf")
    sd = tensors_only(sd, "the file", info.path, "bird-mae-hf")
    out, ignored, unexpected = {}, [], []
    for k, v in sd.items():
        if k in _TOP or k.startswith("blocks."):
            out[k] = v
        elif k.startswith(_IGNORE):
            ignored.append(k)
        else:
            unexpected.append(k)
    return Detected("bird-mae-hf", out, ignored, unexpected, dict(info.hf_config))


register_format(CheckpointFormat("bird-mae-hf", ARCHITECTURE,
                                 "Bird-MAE Hugging Face model.safetensors (timm ViT keys, 257-row pos_embed)",
                                 _detect_hf, priority=40))

_KNOWN_HEADS = {768: 12, 1024: 16, 1280: 16}


def config_from_state_dict(sd: Mapping[str, torch.Tensor], *, num_heads: int | None, file_config: Mapping,
                           default: BirdMAEConfig, source: str) -> BirdMAEConfig:
    """Sizes from tensor shapes; heads: option > the file's config.json > this name's size > known sizes > D // 64."""
    try:
        d = int(sd["cls_token"].shape[-1])
        depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        hidden = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
    except (KeyError, ValueError, IndexError):
        raise CheckpointError(f"{source}: missing cls_token or blocks.0.* keys: not a Bird-MAE encoder") from None
    heads = num_heads or find_num_heads(file_config) or (default.num_heads if d == default.embed_dim else None)
    heads = heads or _KNOWN_HEADS.get(d) or max(1, d // 64)
    ratio = hidden / d
    return BirdMAEConfig(embed_dim=d, depth=depth, num_heads=heads, mlp_ratio=float(round(ratio)) if
                         math.isclose(ratio, round(ratio)) else ratio)


def save_hf(path, model: BirdMAEViT) -> None:
    """Write a Bird-MAE encoder in the Hugging Face safetensors key layout (atomically)."""
    from safetensors.torch import save

    from probekit._io import atomic_write_bytes

    atomic_write_bytes(path, save({k: v.detach().contiguous() for k, v in model.state_dict().items()}))


# ---------------------------------------------------------------------------------------------- registry
_VARIANTS: dict[str, tuple[BirdMAEConfig, str, tuple[str, ...]]] = {
    "bird-mae-base": (BirdMAEConfig(768, 12, 12), "ViT-B/16 MAE pretrained on BirdSet XCL (32 kHz, 5 s)", ("xcl",)),
    "bird-mae-large": (BirdMAEConfig(1024, 24, 16), "ViT-L/16 MAE pretrained on BirdSet XCL (32 kHz, 5 s)", ("xcl",)),
    "bird-mae-huge": (BirdMAEConfig(1280, 32, 16), "ViT-H/16 MAE pretrained on BirdSet XCL (32 kHz, 5 s)", ("xcl",)),
    "bird-mae-tiny": (BirdMAEConfig(64, 4, 2), "test size (D=64, 4 blocks, 2 heads); random init unless a checkpoint",
                      ()),
}
_OPTIONS = {"seed", "num_heads", "frontend", "device", "trust_checkpoint", "allow_nonfinite"}


def _card(name: str, cfg: BirdMAEConfig, notes: str, data: tuple[str, ...]) -> BackboneCard:
    return BackboneCard(
        name=name, family=FAMILY, embed_dim=cfg.embed_dim, num_layers=cfg.depth, num_heads=cfg.num_heads,
        frontend="", params=param_count(cfg), training_data=data, checkpoint_formats=("bird-mae-hf",),
        citation=CITATION, url=URL if data else "",
        notes=notes + "; own frontend (kaldi fbank at 32 kHz, 5 s -> 512 x 128); cls token + 32 x 8 patches",
        extra={"sample_rate": SAMPLE_RATE},
    )


def build(name: str, checkpoint=None, *, card: BackboneCard, config: BirdMAEConfig, **options) -> BirdMAEBackbone:
    """Bird-MAE from a Hugging Face model.safetensors (file or snapshot folder; sizes from the file) or seeded init."""
    o = check_options(name, options, accepted=_OPTIONS)
    if checkpoint is None:
        cfg = dataclasses.replace(config, num_heads=o["num_heads"]) if o["num_heads"] else config
        model = BirdMAEViT(cfg, seed=o["seed"])
        bb = BirdMAEBackbone(model, name=name, card=card, frontend=o["frontend"], seed=o["seed"])
        return bb.to(o["device"])
    found, info = load_state_dict(checkpoint, ARCHITECTURE, trust_checkpoint=o["trust_checkpoint"],
                                  allow_nonfinite=o["allow_nonfinite"], what="a Bird-MAE encoder")
    source = f"{info.path} ({found.format})"
    cfg = config_from_state_dict(found.state_dict, num_heads=o["num_heads"], file_config=found.file_config,
                                 default=config, source=source)
    model = BirdMAEViT(cfg, init=False)
    try:
        model.load_state_dict({k: v.float() for k, v in found.state_dict.items()}, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
        raise CheckpointError(f"{source}: does not match Bird-MAE (D={cfg.embed_dim}, {cfg.depth} blocks): "
                              + " | ".join(lines)[:600]) from None
    bb = BirdMAEBackbone(model, name=name, card=card, frontend=o["frontend"], checkpoint_sha256=file_sha256(info.path),
                         checkpoint_path=str(info.path))
    return bb.to(o["device"])


CARDS: dict[str, BackboneCard] = {}
for _name, (_cfg, _notes, _data) in _VARIANTS.items():
    CARDS[_name] = _c = _card(_name, _cfg, _notes, _data)
    _f = partial(build, _name, card=_c, config=_cfg)
    _f.__doc__ = f"{_notes}. From a Bird-MAE model.safetensors, or seeded random init."
    register_backbone(_f, name=_name, card=_c)

# Weights by name (probekit.backbones.weights): the "Models with architectures" Hub repos listed under
# Checkpoints in DBD-research-group/Bird-MAE README.md (model.safetensors, the layout read above). No sha256
# is published apart from the Hub's LFS etag, which is checked; the first download's hash is pinned.
for _name, _repo in (("bird-mae-base", "DBD-research-group/Bird-MAE-Base"),
                     ("bird-mae-large", "DBD-research-group/Bird-MAE-Large"),
                     ("bird-mae-huge", "DBD-research-group/Bird-MAE-Huge")):
    register_weights(PublishedWeights(
        _name, (f"hf:{_repo}/model.safetensors",), license="none stated (no LICENSE file in the repository, none on the model cards; see the card)",
        notes="official Hub release (DBD-research-group/Bird-MAE README); sizes and heads read from the file",
    ))

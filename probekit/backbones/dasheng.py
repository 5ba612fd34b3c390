"""Dasheng (RicherMans/Dasheng @db730935, PyPI dasheng==0.0.9): a pre-LN audio MAE encoder with its own
64-mel frontend and time-only tokens (docs/ENCODERS.md section 3).

- Frontend (`DashengFrontend`, kind "dasheng-logmel"): torchaudio MelSpectrogram (n_fft 512, hop 160,
  64 htk mels, 0-8 kHz, power 2, centred) then AmplitudeToDB(top_db=120) whose floor `max - 120` is ONE
  max over the whole batch (the official quirk, kept: a clip's features depend on its batch mates).
  Output (B, 1, frames, 64), time-major like the other frontends. The per-mel BatchNorm (`init_bn`, eval
  mode) has weights, so it runs in `encode`.
- Tokens: Conv2d(1, D, (64, 4), stride (64, 4)): one token per 4 frames (40 ms) spanning all mels, grid
  (T, 1); a trailing remainder of < 4 frames is dropped. Tokens run in independent chunks of
  `time_pos_embed.shape[-1]` (252 = 10.08 s), positions restarting at 0 in each; the key padding mask
  marks token t of clip b as padding when t >= samples_b // 640 (valid_frames v -> (v - 1) // 4).
- Per-layer tokens = each block's output (blocks 1..L); the official forward returns `norm(block L)`.
  No cls token: `cls` is the mean of the valid patch tokens of each block (the official encoder does no
  pooling itself; its `pooling='mean'` config and its downstream use average the tokens over time).

Checkpoint format "dasheng" = the zenodo `.pt`: `{'model': state dict, 'config': constructor kwargs}`
(also accepted: the state dict alone, torch or safetensors).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from probekit.backbones.checkpoint_io import (
    CheckpointFormat,
    Detected,
    file_sha256,
    load_state_dict,
    register_format,
    strip_wrappers,
    tensors_only,
)
from probekit.backbones.protocol import BackboneBase, BackboneCard, LayerTokens
from probekit.backbones.registry import check_options, register_backbone
from probekit.backbones.weights import PublishedWeights, register_weights, weights_key
from probekit.errors import BackboneError, CheckpointError, ConfigError

ARCHITECTURE = "dasheng"
FORMAT = "dasheng"
CITATION = (
    "Dinkel, H., Yan, Z., Wang, Y., Zhang, J., Wang, Y., Wang, B. Scaling up masked audio encoder learning for "
    "general audio classification. Interspeech 2024."
)
URL = "https://github.com/RicherMans/Dasheng"
SOURCE_COMMIT = "db730935"
PATCH_FRAMES = 4  # frames per token (patch (64, 4), stride (64, 4))
HOP = 160


# ---------------------------------------------------------------------------------------------- frontend
@dataclasses.dataclass(frozen=True)
class DashengFrontendConfig:
    """The official `front_end` (MelSpectrogram + AmplitudeToDB). `target_frames`: pad (zeros on the
    waveform, as a padded batch would) or crop every clip to this many frames; None = the input's length."""

    kind: str = "dasheng-logmel"
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 512
    hop_length: int = HOP
    f_min: float = 0.0
    f_max: float = 8000.0
    n_mels: int = 64
    top_db: float = 120.0
    target_frames: int | None = None

    def __post_init__(self) -> None:
        if self.kind != "dasheng-logmel":
            raise ConfigError(f"DashengFrontendConfig kind must be 'dasheng-logmel', got {self.kind!r}")
        t = self.target_frames
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < PATCH_FRAMES):
            raise ConfigError(f"dasheng-logmel target_frames={self.target_frames!r} must be >= {PATCH_FRAMES} or None")

    @property
    def num_bins(self) -> int:
        return self.n_mels

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> DashengFrontendConfig:
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ConfigError(f"unknown dasheng-logmel frontend field(s): {', '.join(unknown)}",
                              hint=f"known: {', '.join(sorted(allowed))}")
        return cls(**dict(d))


class DashengFrontend(nn.Module):
    """(B, samples) 16 kHz -> ((B, 1, frames, 64) dB mel, valid frames per clip or None).

    The dB floor is `max - top_db` with the max over the WHOLE batch (official AmplitudeToDB on a
    (B, 64, T) tensor). `features()` (one clip, as extraction calls it) therefore floors each clip by its
    own max.
    """

    def __init__(self, config: DashengFrontendConfig | None = None):
        super().__init__()
        import torchaudio

        self.config = config = config or DashengFrontendConfig()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate, n_fft=config.n_fft, win_length=config.win_length,
            hop_length=config.hop_length, f_min=config.f_min, f_max=config.f_max, n_mels=config.n_mels, center=True,
        )

    @property
    def num_bins(self) -> int:
        return self.config.n_mels

    @property
    def min_samples(self) -> int:
        # the centred STFT's reflect padding needs more than n_fft / 2 samples; shorter clips get zeros
        return self.config.n_fft // 2 + 1

    def _native_frames(self, n: int) -> int:
        return 1 + int(n) // self.config.hop_length

    def num_frames(self, num_samples: int) -> int:
        c = self.config
        if c.target_frames is not None:
            return c.target_frames
        return self._native_frames(max(int(num_samples), self.min_samples))

    def valid_frames(self, num_samples: int) -> int:
        return max(1, min(self._native_frames(int(num_samples)), self.num_frames(num_samples)))

    def _fit(self, wave: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.target_frames is not None:  # zero samples, as a padded batch has: frames = 1 + n // hop
            n = (c.target_frames - 1) * c.hop_length
        else:
            n = max(wave.shape[-1], self.min_samples)
        if wave.shape[-1] < n:
            return F.pad(wave, (0, n - wave.shape[-1]))
        return wave[..., :n]

    def db(self, power: torch.Tensor) -> torch.Tensor:
        """AmplitudeToDB('power', top_db) on (B, mels, T): the floor uses one max over the whole batch."""
        x = 10.0 * torch.log10(torch.clamp(power, min=1e-10))
        return torch.maximum(x, x.amax() - self.config.top_db)

    def forward(self, wave: torch.Tensor, lengths=None):
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dim() != 2:
            raise ConfigError(f"dasheng frontend takes (B, samples) or (samples,), got shape {tuple(wave.shape)}")
        n = wave.shape[-1]
        wave = self._fit(wave.to(torch.float32))
        if self.mel.spectrogram.window.device != wave.device:
            self.mel.to(wave.device)
        with torch.autocast(wave.device.type, enabled=False):
            feats = self.db(self.mel(wave)).transpose(1, 2).unsqueeze(1)  # (B, 1, frames, mels)
        if lengths is None:
            return feats, None
        lens = [int(v) for v in torch.as_tensor(lengths).reshape(-1).tolist()]
        if len(lens) != wave.shape[0] or any(v <= 0 or v > n for v in lens):
            raise ConfigError(f"lengths {lens} do not fit a batch of {wave.shape[0]} clips of {n} samples "
                              f"(need 1..{n})")
        return feats, torch.tensor([self.valid_frames(int(v)) for v in lens], dtype=torch.long)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """One clip (samples,) -> (1, frames, mels), floored by its own max (a batch of one)."""
        if wave.dim() != 1 or wave.shape[0] == 0:
            raise ConfigError(f"features() takes one non-empty 1-D clip, got shape {tuple(wave.shape)}")
        return self.forward(wave.unsqueeze(0))[0][0]


def _resolve_frontend(spec: Any):
    if spec is None:
        return DashengFrontend()
    if isinstance(spec, DashengFrontendConfig):
        return DashengFrontend(spec)
    if isinstance(spec, Mapping):
        return DashengFrontend(DashengFrontendConfig.from_dict(spec))
    if isinstance(spec, DashengFrontend):
        return spec
    if isinstance(spec, str) and spec in ("dasheng", "dasheng-logmel", "dasheng-native"):
        return DashengFrontend()
    raise BackboneError(
        f"dasheng reads its own 64-mel dB frontend, not {spec!r}",
        hint="pass None, 'dasheng-logmel' or a DashengFrontendConfig",
    )


# ---------------------------------------------------------------------------------------------- model
@dataclasses.dataclass(frozen=True)
class DashengConfig:
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    n_mels: int = 64
    chunk_tokens: int = 252  # time_pos_embed length = target_length 1008 // 4

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        if pad is not None:  # keys only; finfo.min (not -inf): an all-padding chunk attends uniformly
            attn = attn.masked_fill(pad[:, None, None, :], torch.finfo(attn.dtype).min)
        attn = attn.softmax(dim=-1).nan_to_num()
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, cfg: DashengConfig):
        super().__init__()
        d = cfg.embed_dim
        self.norm1, self.norm2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
        self.attn = _Attention(d, cfg.num_heads)
        self.mlp = _Mlp(d, int(d * cfg.mlp_ratio))

    def forward(self, x, pad):
        x = x + self.attn(self.norm1(x), pad)
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: DashengConfig):
        super().__init__()
        self.proj = nn.Conv2d(1, cfg.embed_dim, (cfg.n_mels, PATCH_FRAMES), stride=(cfg.n_mels, PATCH_FRAMES))


class DashengEncoder(nn.Module):
    """The official encoder's modules under the official key names (front_end buffers excepted: the
    frontend is `DashengFrontend`; the loader checks the file's copies equal it)."""

    def __init__(self, cfg: DashengConfig, seed: int = 0):
        super().__init__()
        if cfg.embed_dim % cfg.num_heads:
            raise BackboneError(f"dasheng: embed_dim {cfg.embed_dim} is not divisible by num_heads {cfg.num_heads}")
        self.config = cfg
        with torch.random.fork_rng():  # seeded init that leaves the caller's RNG alone
            torch.manual_seed(seed)
            d = cfg.embed_dim
            # key names as the official Sequential(Rearrange, BatchNorm2d, Rearrange): init_bn.1.*
            self.init_bn = nn.Sequential(nn.Identity(), nn.BatchNorm2d(cfg.n_mels), nn.Identity())
            self.patch_embed = _PatchEmbed(cfg)
            self.time_pos_embed = nn.Parameter(torch.randn(1, d, 1, cfg.chunk_tokens) * 0.02)
            self.freq_pos_embed = nn.Parameter(torch.randn(1, d, 1, 1) * 0.02)
            self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.depth))
            self.norm = nn.LayerNorm(d, eps=1e-6)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

    def tokens(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 1, frames, mels) dB mel -> (B, T', D) patch embeddings (init_bn in eval mode, fp32)."""
        bn = self.init_bn[1]
        with torch.autocast(features.device.type, enabled=False):
            x = features.float()[:, 0].transpose(1, 2)  # (B, mels, frames): the BN channels are the mels
            x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        x = self.patch_embed.proj(x.unsqueeze(1))  # (B, D, 1, T')
        return x.flatten(2).transpose(1, 2)

    def forward(self, tokens: torch.Tensor, valid_rows: torch.Tensor | None, layers: list[int]) -> list[torch.Tensor]:
        """Per-layer outputs (B, T', D) of `layers` (sorted unique 0-based), run chunk by chunk."""
        n = tokens.shape[1]
        pad = None
        if valid_rows is not None:
            pad = torch.arange(n, device=tokens.device)[None, :] >= valid_rows.to(tokens.device)[:, None]
        last = max(layers)
        outs: dict[int, list[torch.Tensor]] = {i: [] for i in layers}
        for s in range(0, n, self.config.chunk_tokens):
            x = tokens[:, s : s + self.config.chunk_tokens]
            x = x + self.time_pos_embed[0, :, 0, : x.shape[1]].T + self.freq_pos_embed[0, :, 0, 0]
            p = None if pad is None else pad[:, s : s + x.shape[1]]
            for i, blk in enumerate(self.blocks[: last + 1]):
                x = blk(x, p)
                if i in outs:
                    outs[i].append(x)
        return [torch.cat(outs[i], dim=1) for i in layers]


def param_count(cfg: DashengConfig) -> int:
    """Trainable parameters of the architecture (BatchNorm running stats are buffers, not counted)."""
    d, h = cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio)
    block = 4 * d + 3 * d * d + 3 * d + d * d + d + d * h + h + h * d + d
    return (d * cfg.n_mels * PATCH_FRAMES + d) + d * cfg.chunk_tokens + d + 2 * cfg.n_mels + cfg.depth * block + 2 * d


# ---------------------------------------------------------------------------------------------- backbone
class DashengBackbone(BackboneBase):
    """A frozen Dasheng encoder with its own frontend (see the module docstring for the token contract)."""

    def __init__(self, model: DashengEncoder, *, name: str, card: BackboneCard, frontend=None,
                 checkpoint_sha256: str | None = None, seed: int | None = 0, checkpoint_path: str | None = None):
        self.model = model.eval().requires_grad_(False)
        self.name = name
        cfg = model.config
        self.card = dataclasses.replace(card, name=name, embed_dim=cfg.embed_dim, num_layers=cfg.depth,
                                        num_heads=cfg.num_heads, params=param_count(cfg))
        self.num_layers, self.embed_dim, self.num_heads = cfg.depth, cfg.embed_dim, cfg.num_heads
        self.checkpoint_sha256 = checkpoint_sha256
        self.checkpoint_path = checkpoint_path
        self.seed = None if checkpoint_sha256 else seed
        self._frontend_spec = frontend

    def default_frontend(self):
        return DashengFrontend()

    def _build_frontend(self) -> None:
        self._frontend = _resolve_frontend(self._frontend_spec)
        self._frontend_config = self._frontend.config

    @torch.no_grad()
    def encode(self, features, valid_frames=None, *, layers=None) -> LayerTokens:
        mels = self.model.config.n_mels
        if not torch.is_tensor(features) or features.ndim != 4 or features.shape[1] != 1 or features.shape[-1] != mels:
            shape = tuple(features.shape) if torch.is_tensor(features) else type(features).__name__
            raise BackboneError(f"{self.name}: expected features of shape (B, 1, frames, {mels}), got {shape}")
        if not features.is_floating_point():
            raise BackboneError(f"{self.name}: features must be floating point, got {features.dtype}")
        b, frames = features.shape[0], features.shape[2]
        t = frames // PATCH_FRAMES
        if t < 1:
            raise BackboneError(f"{self.name}: {frames} frames is shorter than one token ({PATCH_FRAMES} frames)")
        idx = list(range(self.num_layers)) if layers is None else [int(i) for i in layers]
        bad = [i for i in idx if not -self.num_layers <= i < self.num_layers]
        if bad:
            raise BackboneError(f"{self.name}: layer indices {bad} out of range for {self.num_layers} blocks")
        idx = [i % self.num_layers for i in idx]
        if valid_frames is None:
            valid_rows, mask_rows = torch.full((b,), t, dtype=torch.long), None
        else:
            vf = torch.as_tensor(valid_frames).reshape(-1).cpu().long()
            if vf.shape[0] != b:
                raise BackboneError(f"{self.name}: valid_frames has {vf.shape[0]} entries for a batch of {b}")
            # official: samples // 640; from frames v = 1 + samples // 160 that is exactly (v - 1) // 4
            valid_rows = mask_rows = torch.clamp(torch.div(vf - 1, PATCH_FRAMES, rounding_mode="floor"), 0, t)
        x = self.model.tokens(features.to(self.device))
        uniq = sorted(set(idx))
        outs = dict(zip(uniq, self.model(x, mask_rows, uniq)))
        patch = torch.stack([outs[i] for i in idx], dim=1).float()  # (B, L, T, D): grid (T, 1)
        keep = (torch.arange(t)[None, :] < valid_rows[:, None]).to(patch)[:, None, :, None]
        cls = (patch * keep).sum(2) / keep.sum(2).clamp(min=1)  # no cls token: mean of the valid tokens
        return LayerTokens(patch=patch, cls=cls, grid=(t, 1), valid_rows=valid_rows)

    def final_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """The official forward's output from the last block's tokens: `norm(block L)`."""
        return self.model.norm(tokens)

    def cache_key(self) -> dict:
        # local files keep the content key {sha256}; downloads also name source and revision (weights_key)
        weights = weights_key(getattr(self, "weights", None), sha256=self.checkpoint_sha256, seed=self.seed)
        weights.pop("use_ema", None)  # no EMA option in this family: the key of a local file stays as it was
        return {"backbone": self.name, "family": "dasheng", "config": self.model.config.to_dict(),
                "weights": weights, "frontend": self.frontend.config.to_dict()}

    def __repr__(self) -> str:
        w = f"sha256={self.checkpoint_sha256[:12]}" if self.checkpoint_sha256 else f"random init seed={self.seed}"
        c = self.model.config
        return f"DashengBackbone({self.name}: D={c.embed_dim}, L={c.depth}, heads={c.num_heads}, {w})"


# ---------------------------------------------------------------------------------------------- checkpoints
_FRONT_END = ("front_end.0.spectrogram.window", "front_end.0.mel_scale.fb")
_BN_COUNT = "init_bn.1.num_batches_tracked"
_MARKERS = ("time_pos_embed", "freq_pos_embed", "init_bn.1.running_mean", "patch_embed.proj.weight")
# constructor kwargs that change the frontend or the token layout: probekit runs the published values only
_FIXED = {"n_fft": 512, "n_mels": 64, "hop_size": 160, "win_size": 512, "f_min": 0, "f_max": 8000, "center": True,
          "top_db": 120, "patch_size": (64, 4), "patch_stride": (64, 4), "pooling": "mean", "init_values": None,
          "qkv_bias": True}


def _detect(obj: Any, info) -> Detected | None:
    """zenodo `{'model': sd, 'config': kwargs}`, or the state dict alone (torch or safetensors)."""
    config: dict = {}
    if not info.is_safetensors and isinstance(obj.get("model"), Mapping):
        sd, cfg = obj["model"], obj.get("config")
        if not all(k in sd for k in _MARKERS):
            return None
        config = dict(cfg) if isinstance(cfg, Mapping) else {}
        extra = [k for k in obj if k not in ("model", "config")]
    else:
        sd, extra = obj, []
        if not all(k in sd for k in _MARKERS):
            return None
    info.no_ema(FORMAT)
    sd = tensors_only(strip_wrappers(sd), "the model dict", info.path, FORMAT)
    front = {k: sd.pop(k) for k in _FRONT_END if k in sd}
    count = sd.pop(_BN_COUNT, None)
    found = Detected(FORMAT, sd, ignored=list(extra), file_config=config)
    found.metadata = {"front_end": front, "num_batches_tracked": count}
    return found


register_format(CheckpointFormat(FORMAT, ARCHITECTURE, "Dasheng zenodo .pt ({'model': state dict, 'config': kwargs}) "
                                 "or its state dict alone", _detect, priority=30))


def _config_from(found: Detected, path, num_heads: int | None, default: DashengConfig) -> DashengConfig:
    sd, fc = found.state_dict, found.file_config
    src = f"{path} ({FORMAT})"
    for k, v in _FIXED.items():
        if k in fc and fc[k] is not None and (tuple(fc[k]) if isinstance(fc[k], (list, tuple)) else fc[k]) != v:
            raise CheckpointError(f"{src}: config {k}={fc[k]!r}; probekit runs Dasheng with {k}={v!r} only",
                                  hint="this is not one of the published Dasheng configurations")
    try:
        _, d, _, chunk = sd["time_pos_embed"].shape
        depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{src}: cannot read the sizes from the weights ({type(e).__name__}: {e})") from None
    heads = num_heads or fc.get("num_heads")
    if heads is not None and (isinstance(heads, bool) or not isinstance(heads, int) or heads < 1):
        raise CheckpointError(f"{src}: config num_heads={heads!r} is not a positive integer", hint="pass num_heads=")
    if not heads:  # the official named loaders pass the heads: 12 (768), 16 (1280), 24 (1536)
        heads = _HEADS_BY_WIDTH.get(d, default.num_heads if d == default.embed_dim else max(1, d // 64))
    return DashengConfig(embed_dim=d, depth=depth, num_heads=int(heads), mlp_ratio=hidden / d, n_mels=64,
                         chunk_tokens=chunk)


def _check_front_end(found: Detected, path) -> None:
    src = f"{path} ({FORMAT})"
    front, count = found.metadata.get("front_end", {}), found.metadata.get("num_batches_tracked")
    missing = [k for k in _FRONT_END if k not in front] + ([_BN_COUNT] if count is None else [])
    if missing:
        raise CheckpointError(f"{src}: missing keys: {', '.join(missing)}",
                              hint="the official loader (strict=True) needs them too; re-save from the official model")
    ref = DashengFrontend()
    # the frontend is rebuilt, not read from the file: its copies must be torchaudio's to float32 rounding
    # (a 5e-6 change of the filterbank already moves near-empty mel bins by ~0.03 dB)
    for k, mine in zip(_FRONT_END, (ref.mel.spectrogram.window, ref.mel.mel_scale.fb)):
        theirs = front[k]
        if tuple(theirs.shape) != tuple(mine.shape) or not torch.allclose(theirs.float(), mine, atol=1e-6, rtol=0):
            raise CheckpointError(f"{src}: {k} differs from the official MelSpectrogram (n_fft 512, 64 mels, 0-8 kHz)",
                                  hint="probekit runs the published frontend only")


def build(name: str, checkpoint=None, *, card: BackboneCard, config: DashengConfig, **options) -> DashengBackbone:
    o = check_options(name, options, accepted=_OPTIONS)
    if checkpoint is None:
        cfg = dataclasses.replace(config, num_heads=o["num_heads"]) if o["num_heads"] else config
        bb = DashengBackbone(DashengEncoder(cfg, seed=o["seed"]), name=name, card=card, frontend=o["frontend"],
                             seed=o["seed"])
        return bb.to(o["device"])
    found, info = load_state_dict(checkpoint, ARCHITECTURE, trust_checkpoint=o["trust_checkpoint"],
                                  allow_nonfinite=o["allow_nonfinite"], what="a Dasheng encoder")
    _check_front_end(found, info.path)
    cfg = _config_from(found, info.path, o["num_heads"], config)
    model = DashengEncoder(cfg)
    sd = dict(found.state_dict)
    sd[_BN_COUNT] = found.metadata["num_batches_tracked"]
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
        raise CheckpointError(f"{info.path} ({FORMAT}): {'; '.join(lines)[:400] or str(e)[:400]}",
                              hint="not a Dasheng encoder state dict with the official key names") from None
    bb = DashengBackbone(model, name=name, card=card, frontend=o["frontend"], checkpoint_sha256=file_sha256(info.path),
                         checkpoint_path=str(info.path))
    return bb.to(o["device"])


# ---------------------------------------------------------------------------------------------- registry
_HEADS_BY_WIDTH = {768: 12, 1280: 16, 1536: 24}
_OPTIONS = {"seed", "num_heads", "frontend", "device", "trust_checkpoint", "allow_nonfinite"}
_AUDIOSET_ETC = ("as2m", "as20k", "vggsound", "mtg-jamendo", "acav100m")
_VARIANTS = {
    "dasheng-base": (DashengConfig(768, 12, 12), "Dasheng base (768 wide, 12 blocks, 12 heads)", _AUDIOSET_ETC),
    "dasheng-0.6b": (DashengConfig(1280, 32, 16), "Dasheng 0.6B (1280 wide, 32 blocks, 16 heads)", _AUDIOSET_ETC),
    "dasheng-1.2b": (DashengConfig(1536, 40, 24), "Dasheng 1.2B (1536 wide, 40 blocks, 24 heads)", _AUDIOSET_ETC),
    "dasheng-tiny": (DashengConfig(64, 3, 2), "test size (D=64, 3 blocks, 2 heads); random init unless a checkpoint",
                     ()),
}


def _card(name: str, cfg: DashengConfig, notes: str, data: tuple[str, ...]) -> BackboneCard:
    return BackboneCard(name=name, family="dasheng", embed_dim=cfg.embed_dim, num_layers=cfg.depth,
                        num_heads=cfg.num_heads, frontend="", params=param_count(cfg), training_data=data,
                        checkpoint_formats=(FORMAT,), citation=CITATION, url=URL if data else "",
                        notes=notes + "; no cls token (cls = mean of the valid tokens); time-only grid (T, 1)")


CARDS: dict[str, BackboneCard] = {}
for _name, (_cfg, _notes, _data) in _VARIANTS.items():
    CARDS[_name] = _c = _card(_name, _cfg, _notes, _data)
    register_backbone(partial(build, _name, card=_c, config=_cfg), name=_name, card=_c)

# Weights by name (probekit.backbones.weights): PRETRAINED_CHECKPOINTS of the official package
# (RicherMans/Dasheng dasheng/pretrained/pretrained.py), Zenodo record 11511780. No sha256 is published there:
# the first download's hash is pinned. The .pt is {'model': state dict, 'config': kwargs} of plain types, so it
# loads with weights_only=True like a local file (no converter, no full unpickling).
_ZENODO = "https://zenodo.org/records/11511780/files/"
for _name, _file in (("dasheng-base", "dasheng_base.pt"), ("dasheng-0.6b", "dasheng_06b.pt"),
                     ("dasheng-1.2b", "dasheng_12b.pt")):
    register_weights(PublishedWeights(
        _name, (f"{_ZENODO}{_file}?download=1",), license="see Zenodo record 11511780 for the weights' terms",
        notes="official Zenodo release named by dasheng/pretrained/pretrained.py; sha256 not published -> pinned at "
        "first download; code licence per the package metadata (MIT classifier in pyproject @01fc8828, Apache-2.0 "
        "read from dasheng==0.0.9 for the card): not settled here",
    ))

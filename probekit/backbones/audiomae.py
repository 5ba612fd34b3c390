"""AudioMAE (Huang et al., NeurIPS 2022): the pre-LN ViT-B/16 encoder of facebookresearch/AudioMAE.

What differs from the audio ViTs of `probekit.backbones.vit` (docs/ENCODERS.md section 2):

* timm 0.3.2 pre-LN blocks: `x = x + attn(norm1(x)); x = x + mlp(norm2(x))` (explicit softmax of
  `(q @ k^T) * hd^-0.5`, exact GELU, LayerNorm eps 1e-6), no pre-norm before the blocks.
* A fixed (1, 513, D) sin-cos table, row 0 for the cls token. It was built for an (8, 64) grid, so row
  1 + n encodes (n % 64, n // 64), while the tokens are ordered t * 8 + f on a 64 (time) x 8 (mel) grid:
  the official code adds them index by index. The table is used exactly as the checkpoint stores it.
* `cls_token + pos_embed[:, :1]` is prepended AFTER the positional add of the patches.
* No attention mask; no final norm on the per-layer tokens (see "Per-layer tokens" below).

Per-layer tokens: block i's output, for i = 1..L, with no norm applied anywhere. The fine-tuning and
linear-probing model (`models_vit.VisionTransformer`) deletes `norm` and pools the block-L patch tokens;
the pretraining encoder (`models_mae.forward_encoder`) applies `norm` to every token of block L only,
for its decoder. The pretrain layout's `norm.*` is therefore read and ignored (listed as ignored).

Frontend: AudioMAE's Kaldi fbank (`dataset.AudiosetDataset._wav2fbank`): per clip remove the waveform
mean (no 2**15 scaling), `kaldi.fbank(htk_compat=True, use_energy=False, window_type='hanning',
num_mel_bins=128, dither=0, frame_shift=10, frame_length=25)`, zero-pad at the end (in the log domain) or
cut to the target length, then `(x - mean) / (2 * std)`; padded frames equal `-mean / (2 * std)` (0.46703
with the AudioSet statistics). The target length is the frontend's `target_frames`: the default is the
AudioSet recipe (1,024 frames) for every dataset, FSDD included, since the released checkpoints only run at
1,024 frames (the official forward adds all 512 table rows). Other lengths are presets of this module
(`audiomae-esc50` 512, `audiomae-sc2` 128, `audiomae-fsdd` 256 frames) or any FbankConfig with
`target_frames` <= 1,024; shorter inputs use the table's first 1 + T * 8 rows (an extension: the official
code cannot run them). Pick one with `get_backbone("audiomae", ckpt, frontend="audiomae-esc50")` or
`backbone.with_frontend(...)`.

Checkpoint formats (torch files, loaded with the shared safe reader):

| format             | what it is                                                                         |
|--------------------|------------------------------------------------------------------------------------|
| audiomae-pretrain  | `pretrained.pth`: {'model': encoder + norm + mask_token + decoder_*} (or bare)     |
| audiomae-finetuned | `finetuned.pth`: {'model': encoder + fc_norm + head} (models_vit)                  |
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from probekit._device import resolve_device
from probekit.backbones._frontend import frontend_config_dict, resolve_frontend
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
from probekit.backbones.protocol import BackboneBase, BackboneCard, LayerTokens
from probekit.backbones.registry import check_options, register_backbone
from probekit.backbones.vit import patch_rows, sincos_table
from probekit.backbones.weights import PublishedWeights, register_weights, weights_key
from probekit.errors import BackboneError, CheckpointError, ConfigError

__all__ = [
    "ARCHITECTURE",
    "FRONTEND_PRESETS",
    "AudioMAEBackbone",
    "AudioMAEConfig",
    "AudioMAEEncoder",
    "audiomae_param_count",
]

ARCHITECTURE = "audiomae-vit"
CITATION = (
    "Huang, P.-Y., Xu, H., Li, J., Baevski, A., Auli, M., Galuba, W., Metze, F., Feichtenhofer, C. Masked "
    "Autoencoders that Listen. NeurIPS 2022."
)
URL = "https://github.com/facebookresearch/AudioMAE"
OFFICIAL_COMMIT = "bd60e296"
FORMATS = ("audiomae-pretrain", "audiomae-finetuned")


# ---------------------------------------------------------------------------------------------- frontend
def _fbank(mean: float, std: float, frames: int):
    from probekit.audio.frontends import FbankConfig

    # FbankConfig's defaults are AudioMAE's kaldi arguments: mean removal, no 2**15 scaling, hanning,
    # htk_compat, no energy, dither 0, 25/10 ms, 128 bins; pad (zeros, log domain) before normalising.
    return FbankConfig(mean=mean, std=std, target_frames=frames, pad_before_norm=True, remove_mean=True,
                       wave_scale=1.0)


#: norm_stats and target_length of main_finetune_as.py / main_finetune_esc.py; FSDD (digits of at most
#: 2.28 s, 226 frames) has no official entry: AudioSet statistics at 256 frames, like the eat-fsdd preset.
_PRESET_ARGS = {
    "audiomae-audioset": (-4.2677393, 4.5689974, 1024),
    "audiomae-esc50": (-6.6268077, 5.358466, 512),
    "audiomae-sc2": (-6.845978, 5.5654526, 128),
    "audiomae-fsdd": (-4.2677393, 4.5689974, 256),
}
FRONTEND_PRESETS = tuple(_PRESET_ARGS)
DEFAULT_FRONTEND = "audiomae-audioset"


def frontend_preset(name: str):
    """The FbankConfig of an `audiomae-*` preset."""
    if name not in _PRESET_ARGS:
        raise ConfigError(f"unknown AudioMAE frontend preset {name!r}", hint=f"known: {', '.join(_PRESET_ARGS)}")
    return _fbank(*_PRESET_ARGS[name])


# ---------------------------------------------------------------------------------------------- model
@dataclasses.dataclass(frozen=True)
class AudioMAEConfig:
    """Sizes of one AudioMAE encoder (everything here changes the tokens: it keys the cache)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    time_patches: int = 64  # rows of the positional table's grid: 1,024 frames / 16
    freq_patches: int = 8  # 128 mel bins / 16
    patch_size: int = 16
    norm_eps: float = 1e-6

    def __post_init__(self):
        if self.embed_dim <= 0 or self.depth <= 0 or self.num_heads <= 0:
            raise BackboneError(f"AudioMAE sizes must be positive, got {self}")
        if self.embed_dim % self.num_heads:
            raise BackboneError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}",
                                hint="pass num_heads that divides the width (default width // 64)")

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.embed_dim * self.mlp_ratio))

    @property
    def num_patches(self) -> int:
        return self.time_patches * self.freq_patches

    @property
    def max_frames(self) -> int:
        return self.time_patches * self.patch_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Attention(nn.Module):
    """timm 0.3.2 Attention (qkv with bias)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        if x.is_cuda:  # fused kernel on GPUs (~1e-6 from the explicit formula)
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:  # the official order: (q @ k^T) * scale, then softmax
            out = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # erf GELU, as timm's
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """timm 0.3.2 pre-LN Block."""

    def __init__(self, cfg: AudioMAEConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg.embed_dim, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)


def official_pos_table(cfg: AudioMAEConfig) -> torch.Tensor:
    """(1, 1 + N, D): what models_mae.initialize_weights builds (get_2d_sincos_pos_embed_flexible over
    patch_hw = (8, 64), cls row of zeros). Only for random init: checkpoints carry their own table."""
    table = sincos_table(cfg.embed_dim, cfg.freq_patches, cfg.time_patches)  # row n encodes (n % 64, n // 64)
    return torch.cat([torch.zeros(1, cfg.embed_dim), table], dim=0).unsqueeze(0)


class AudioMAEEncoder(nn.Module):
    """The AudioMAE ViT encoder (parameter names as in both official layouts)."""

    def __init__(self, cfg: AudioMAEConfig, *, seed: int | None = 0, init: bool = True):
        super().__init__()
        self.config = cfg
        d = cfg.embed_dim
        with torch.device("meta"):  # initialised once below (or not at all when a state dict follows)
            self.patch_embed = PatchEmbed(d, cfg.patch_size)
            self.cls_token = nn.Parameter(torch.empty(1, 1, d))
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.to_empty(device="cpu")
        # fixed (requires_grad=False in the official code): a buffer, so it is not counted as trainable
        self.register_buffer("pos_embed", official_pos_table(cfg))
        if init:
            self._init(seed)

    def _init(self, seed: int | None) -> None:
        """models_mae.initialize_weights: xavier-uniform Linear (zero bias) and patch conv, LN (1, 0),
        cls ~ N(0, 0.02^2); from a private generator so the caller's RNG is untouched."""
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    w = m.weight.view(m.weight.shape[0], -1)
                    bound = math.sqrt(6.0 / (w.shape[0] + w.shape[1]))
                    m.weight.uniform_(-bound, bound, generator=g)
                    if isinstance(m, nn.Linear):
                        m.bias.zero_()
                    else:  # the conv keeps PyTorch's default bias init
                        b = 1.0 / math.sqrt(w.shape[1])
                        m.bias.uniform_(-b, b, generator=g)
                elif isinstance(m, nn.LayerNorm):
                    m.weight.fill_(1.0)
                    m.bias.zero_()
            self.cls_token.normal_(0.0, 0.02, generator=g)

    def forward(self, x: torch.Tensor, stop_after: int | None = None) -> list[torch.Tensor]:
        """(B, 1, frames, 128) -> every block's output (B, 1 + N, D), cls first (models_vit.forward_features
        without the pooling). Frames beyond a multiple of 16 are dropped by the patch conv, as officially."""
        cfg = self.config
        tok = self.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (B, N, D), n = t * 8 + f
        n = tok.shape[1]
        tok = tok + self.pos_embed[:, 1 : 1 + n]  # index by index; at 1,024 frames the whole table
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tok.shape[0], -1, -1)
        h = torch.cat([cls, tok], dim=1)
        outs = []
        for blk in self.blocks[: cfg.depth if stop_after is None else stop_after + 1]:
            h = blk(h)
            outs.append(h)
        return outs


def audiomae_param_count(cfg: AudioMAEConfig) -> int:
    """Trainable weights of the encoder (the fixed table is not counted), without building it."""
    d, h, p = cfg.embed_dim, cfg.mlp_hidden, cfg.patch_size
    per_block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * h + h) + (h * d + d)
    return d * p * p + d + d + cfg.depth * per_block


# ---------------------------------------------------------------------------------------------- backbone
class AudioMAEBackbone(BackboneBase):
    """A frozen AudioMAE encoder with its fbank frontend (default: the AudioSet recipe, 1,024 frames)."""

    def __init__(self, model: AudioMAEEncoder, *, name: str, card: BackboneCard, frontend: Any = None,
                 checkpoint_sha256: str | None = None, seed: int | None = 0, checkpoint_format: str | None = None,
                 checkpoint_path: str | None = None):
        self.model = model.eval().requires_grad_(False)
        self.name = name
        cfg = model.config
        self.num_layers, self.embed_dim, self.num_heads = cfg.depth, cfg.embed_dim, cfg.num_heads
        self.card = dataclasses.replace(card, name=name, embed_dim=cfg.embed_dim, num_layers=cfg.depth,
                                        num_heads=cfg.num_heads, params=audiomae_param_count(cfg))
        self.checkpoint_sha256 = checkpoint_sha256
        self.seed = None if checkpoint_sha256 else seed
        self.checkpoint_format = checkpoint_format
        self.checkpoint_path = checkpoint_path
        self._frontend_spec = frontend

    @property
    def config(self) -> AudioMAEConfig:
        return self.model.config

    # ------------------------------------------------------------------ frontend
    def default_frontend(self):
        return frontend_preset(DEFAULT_FRONTEND)

    def _build_frontend(self) -> None:
        spec = self._frontend_spec if self._frontend_spec is not None else self.default_frontend()
        if isinstance(spec, str) and spec in _PRESET_ARGS:
            spec = frontend_preset(spec)
        fe, config = resolve_frontend(spec)
        frames = getattr(config, "target_frames", None)
        bins = getattr(fe, "num_bins", None)
        limit = self.config.max_frames
        if bins not in (None, self.config.freq_patches * self.config.patch_size):
            raise ConfigError(f"{self.name}: frontend gives {bins} bins; AudioMAE reads 128 mel bins")
        if frames is None or not 0 < frames <= limit:
            raise ConfigError(
                f"{self.name}: frontend target_frames={frames} is not in 16..{limit} (the positional table "
                f"holds {self.config.time_patches} time rows)",
                hint=f"use one of {', '.join(_PRESET_ARGS)} or an FbankConfig with target_frames <= {limit}",
            )
        self._frontend, self._frontend_config = fe, config

    def with_frontend(self, config: Any):
        other = super().with_frontend(config)
        other._build_frontend()  # a bad choice fails here, not at the first batch
        return other

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def encode(self, features: torch.Tensor, valid_frames: torch.Tensor | None = None, *,
               layers: Sequence[int] | None = None) -> LayerTokens:
        """(B, 1, frames, 128) fbank features -> per-layer tokens (blocks 1..L, or `layers`)."""
        cfg = self.config
        if not torch.is_tensor(features) or not features.is_floating_point():
            raise BackboneError(f"{self.name}: features must be a floating-point tensor")
        bins = cfg.freq_patches * cfg.patch_size
        if features.ndim != 4 or features.shape[1] != 1 or features.shape[3] != bins:
            raise BackboneError(f"expected features of shape (B, 1, frames, {bins}), got {tuple(features.shape)}")
        frames = features.shape[2]
        if frames < cfg.patch_size:
            raise BackboneError(f"{frames} frames is shorter than one patch ({cfg.patch_size} frames)")
        if frames // cfg.patch_size > cfg.time_patches:
            raise BackboneError(
                f"{self.name}: {frames} frames exceed the {cfg.max_frames} the positional table covers",
                hint=f"cut the input to {cfg.max_frames} frames (AudioMAE's frontend does: target_frames)",
            )
        if layers is not None and any(not -cfg.depth <= int(i) < cfg.depth for i in layers):
            raise BackboneError(f"layer indices {list(layers)} out of range for {cfg.depth} blocks")
        idx = list(range(cfg.depth)) if layers is None else [int(i) % cfg.depth for i in layers]
        b, t = features.shape[0], frames // cfg.patch_size
        outs = self.model(features.to(self.device, torch.float32), stop_after=max(idx))
        sel = torch.stack([outs[i] for i in idx], dim=1)  # (B, Ls, 1 + N, D)
        valid_rows = patch_rows(valid_frames, b, t, cfg.patch_size)
        return LayerTokens(patch=sel[:, :, 1:].contiguous(), cls=sel[:, :, 0].contiguous(),
                           grid=(t, cfg.freq_patches), valid_rows=valid_rows)

    def cache_key(self) -> dict:
        # local files keep the content key {sha256}; downloads also name source and revision (weights_key)
        weights = weights_key(getattr(self, "weights", None), sha256=self.checkpoint_sha256, seed=self.seed)
        weights.pop("use_ema", None)  # no EMA option in this family: the key of a local file stays as it was
        return {"backbone": self.name, "family": "audiomae", "audiomae": self.config.to_dict(), "weights": weights,
                "frontend": frontend_config_dict(self.frontend_config)}

    def __repr__(self) -> str:
        w = f"sha256={self.checkpoint_sha256[:12]}" if self.checkpoint_sha256 else f"random init seed={self.seed}"
        c = self.config
        return f"AudioMAEBackbone({self.name}: D={c.embed_dim}, L={c.depth}, heads={c.num_heads}, {w})"


# ---------------------------------------------------------------------------------------------- formats
_TOP = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias")
_PRETRAIN_EXTRA = ("norm.", "mask_token", "decoder_")  # models_mae parts that are not the probed encoder
_FINETUNED_EXTRA = ("fc_norm.", "head.")  # models_vit's pooling norm and classifier


def _encoder_dict(obj: Any, info: FileInfo) -> tuple[dict, list[str]] | None:
    """An AudioMAE state dict ({'model': sd, ...} or bare) and the other top-level entries; None if not one.

    Recognised by the table: (1, 513, D) = cls row + the 64 x 8 grid, and no pre-norm (EAT/BAT have one).
    """
    if info.is_safetensors:
        return None
    inner = obj.get("model")
    sd, others = (inner, [k for k in obj if k != "model"]) if isinstance(inner, Mapping) else (obj, [])
    sd = strip_wrappers({k: v for k, v in sd.items() if isinstance(k, str)})
    pos = sd.get("pos_embed")
    if not (torch.is_tensor(pos) and pos.ndim == 3 and pos.shape[1] == 1 + 64 * 8 and "cls_token" in sd
            and "patch_embed.proj.weight" in sd and "pre_norm.weight" not in sd):
        return None
    return sd, [str(k) for k in others]


def _split(sd: dict, others: list[str], fmt: str, info: FileInfo) -> Detected:
    info.no_ema(fmt)
    sd = tensors_only(sd, "the model entry", info.path, fmt)
    enc, ignored, unexpected = {}, list(others), []
    for k, v in sd.items():
        if k in _TOP or k.startswith("blocks."):
            enc[k] = v
        elif k.startswith(_PRETRAIN_EXTRA + _FINETUNED_EXTRA):
            ignored.append(k)
        else:
            unexpected.append(k)
    return Detected(fmt, enc, ignored, unexpected)


def _detect_finetuned(obj: Any, info: FileInfo) -> Detected | None:
    found = _encoder_dict(obj, info)
    if found is None or not any(k.startswith(_FINETUNED_EXTRA) for k in found[0]):
        return None
    return _split(*found, "audiomae-finetuned", info)


def _detect_pretrain(obj: Any, info: FileInfo) -> Detected | None:
    found = _encoder_dict(obj, info)
    return None if found is None else _split(*found, "audiomae-pretrain", info)


register_format(CheckpointFormat(
    "audiomae-finetuned", ARCHITECTURE, "AudioMAE fine-tuned .pth {'model': encoder + fc_norm + head}",
    _detect_finetuned, priority=24))
register_format(CheckpointFormat(
    "audiomae-pretrain", ARCHITECTURE,
    "AudioMAE pretraining .pth {'model': encoder + norm + mask_token + decoder_*} (or the bare encoder)",
    _detect_pretrain, priority=25))


def _infer_config(sd: Mapping[str, torch.Tensor], num_heads: int | None, default: AudioMAEConfig,
                  source: str) -> AudioMAEConfig:
    w = sd.get("patch_embed.proj.weight")
    if w is None or w.ndim != 4 or tuple(w.shape[1:]) != (1, 16, 16):
        raise CheckpointError(f"{source}: patch_embed.proj.weight has shape "
                              f"{None if w is None else tuple(w.shape)}, expected (D, 1, 16, 16)")
    dim = int(w.shape[0])
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"^blocks\.(\d+)\.", k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise CheckpointError(f"{source}: block indices {blocks[:20]} are not 0..L-1")
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    if fc1 is None or fc1.ndim != 2:
        raise CheckpointError(f"{source}: missing blocks.0.mlp.fc1.weight; cannot infer the MLP width")
    heads = num_heads or (default.num_heads if dim == default.embed_dim else max(1, dim // 64))
    try:
        return AudioMAEConfig(embed_dim=dim, depth=len(blocks), num_heads=int(heads),
                              mlp_ratio=int(fc1.shape[0]) / dim)
    except BackboneError as e:
        raise CheckpointError(f"{source}: {e}", hint="pass num_heads (--num-heads) that divides the width") from None


def _check_keys(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
              if k in sd and sd[k].shape != v.shape]
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:20])}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}")
    if shapes:
        parts.append(f"shape mismatches: {'; '.join(shapes[:10])}")
    if parts:
        raise CheckpointError(f"{source}: does not match the AudioMAE encoder: " + " | ".join(parts))


def load_encoder(path, *, num_heads: int | None = None, default: AudioMAEConfig = AudioMAEConfig(),
                 trust_checkpoint: bool = False, allow_nonfinite: bool = False,
                 formats: tuple[str, ...] = FORMATS, name: str = "audiomae") -> tuple[AudioMAEEncoder, str, str]:
    """(encoder with exactly the file's weights, format, sha256) from an official AudioMAE checkpoint."""
    found, info = load_state_dict(path, ARCHITECTURE, trust_checkpoint=trust_checkpoint,
                                  allow_nonfinite=allow_nonfinite, what="an AudioMAE encoder")
    source = f"{info.path} ({found.format})"
    if found.format not in formats:
        other = "audiomae-ft-as2m" if found.format == "audiomae-finetuned" else "audiomae"
        raise CheckpointError(f"{source}: backbone {name!r} takes {' / '.join(formats)} files",
                              hint=f"load it as {other!r} (get_backbone({other!r}, checkpoint=...))")
    sd = {k: v.float().contiguous() for k, v in found.state_dict.items()}  # fp16 copies -> fp32
    cfg = _infer_config(sd, num_heads, default, source)
    model = AudioMAEEncoder(cfg, init=False)
    _check_keys(model, sd, source)
    model.load_state_dict(sd, strict=True)  # pos_embed exactly as stored (the transposed-grid table)
    return model, found.format, file_sha256(info.path)


# ---------------------------------------------------------------------------------------------- registry
@dataclasses.dataclass(frozen=True)
class _Variant:
    config: AudioMAEConfig
    notes: str
    training_data: tuple[str, ...]
    formats: tuple[str, ...]


_AS2M = ("as2m", "as20k")  # AudioSet-2M contains the AS-20k balanced subset
AUDIOMAE_B = AudioMAEConfig()
AUDIOMAE_TINY = AudioMAEConfig(embed_dim=64, depth=4, num_heads=2)
_VARIANTS = {
    "audiomae": _Variant(AUDIOMAE_B, "ViT-B/16; masked-autoencoder pretraining on AudioSet-2M (pretrained.pth)",
                         _AS2M, ("audiomae-pretrain",)),
    "audiomae-ft-as2m": _Variant(
        AUDIOMAE_B, "ViT-B/16; AS-2M pretrained, then fine-tuned with AudioSet-2M labels (finetuned.pth, 47.3 mAP)",
        _AS2M, ("audiomae-finetuned",)),
    "audiomae-tiny": _Variant(AUDIOMAE_TINY, "test size (D=64, 4 blocks, 2 heads, the 64 x 8 grid); random init "
                              "unless a checkpoint", (), FORMATS),
}
_OPTIONS = {"seed", "num_heads", "trust_checkpoint", "frontend", "device", "allow_nonfinite"}


def _card(name: str, v: _Variant) -> BackboneCard:
    c = v.config
    return BackboneCard(
        name=name, family="audiomae", embed_dim=c.embed_dim, num_layers=c.depth, num_heads=c.num_heads,
        frontend="", params=audiomae_param_count(c), training_data=v.training_data, checkpoint_formats=v.formats,
        citation=CITATION, url="" if name.endswith("-tiny") else URL, notes=v.notes,
        extra={"frontend_recipe": "audiomae fbank (default audiomae-audioset, 1,024 frames)",
               "official_commit": OFFICIAL_COMMIT},
    )


def build(name: str, checkpoint=None, *, card: BackboneCard, variant: _Variant, **options) -> AudioMAEBackbone:
    """The factory of every registered AudioMAE: an official checkpoint (sizes from the file) or seeded init."""
    o = check_options(name, options, accepted=_OPTIONS)
    dev = resolve_device(o["device"])
    if checkpoint is None:
        cfg = variant.config if o["num_heads"] is None else dataclasses.replace(variant.config, num_heads=o["num_heads"])
        bb = AudioMAEBackbone(AudioMAEEncoder(cfg, seed=o["seed"]), name=name, card=card, frontend=o["frontend"],
                              seed=o["seed"])
    else:
        model, fmt, sha = load_encoder(checkpoint, num_heads=o["num_heads"], default=variant.config,
                                       trust_checkpoint=o["trust_checkpoint"], allow_nonfinite=o["allow_nonfinite"],
                                       formats=variant.formats, name=name)
        bb = AudioMAEBackbone(model, name=name, card=card, frontend=o["frontend"], checkpoint_sha256=sha,
                              checkpoint_format=fmt, checkpoint_path=str(checkpoint))
    if o["frontend"] is not None:
        bb._build_frontend()  # a bad frontend fails at construction
    return bb.to(dev)


CARDS: dict[str, BackboneCard] = {}
for _name, _v in _VARIANTS.items():
    CARDS[_name] = _c = _card(_name, _v)
    _f = partial(build, _name, card=_c, variant=_v)
    _f.__doc__ = f"{_v.notes}. From an official AudioMAE checkpoint, or seeded random init."
    register_backbone(_f, name=_name, card=_c)

# The official checkpoints are published on Google Drive only (facebookresearch/AudioMAE README @bd60e296):
# no direct download exists, so the name says where to get the file instead of silently meaning random init.
_DRIVE = "https://drive.google.com/file/d/{}/view"
for _name, _file, _id in (("audiomae", "pretrained.pth", "1rRsmU8x7D-x4BvcPyroUJwU18eixNfKg"),
                          ("audiomae-ft-as2m", "finetuned.pth", "1dacJa-XcaoLPZf--mLvzSdlzo5iMX2ST")):
    register_weights(PublishedWeights(
        _name, (f"manual:{_file}@{_DRIVE.format(_id)}",), license="CC BY-NC 4.0 (repository LICENSE)",
        finetuned_on=("as2m", "as20k") if _name.endswith("ft-as2m") else (),
        notes="Google Drive only; download by hand and pass --weights PATH",
    ))

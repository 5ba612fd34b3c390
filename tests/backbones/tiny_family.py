"""A complete backbone family in one module, written the way BEATs / AudioMAE / Dasheng / Bird-MAE will be.

It differs from the audio ViTs everywhere the next families do: no cls token (the tokens' "cls" is the
mean of the patch tokens, as the official BEATs code pools), its own frontend (32-band log-mel at a 10 ms
hop; tokens every 20 ms), relative position bias in attention instead of a positional table, and its own
checkpoint format. The module owns its architecture config, checkpoint format, card and frontend, and
registers itself on import: in probekit this is one file in probekit/backbones/ plus one import line in
probekit/backbones/__init__.py; here the test imports it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from probekit.backbones.protocol import BackboneBase, BackboneCard, LayerTokens
from probekit.backbones.checkpoint_io import (
    CheckpointFormat,
    Detected,
    file_sha256,
    load_state_dict,
    register_format,
)
from probekit.backbones.registry import check_options, register_backbone
from probekit.errors import BackboneError, CheckpointError

ARCHITECTURE = "relpos-transformer"
_META_KEY = "relpos"


# ---------------------------------------------------------------------------------------------- frontend
@dataclasses.dataclass(frozen=True)
class LogMelConfig:
    kind: str = "relpos-logmel"
    n_mels: int = 32
    n_fft: int = 400
    hop: int = 160

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class LogMel(nn.Module):
    """(B, samples) 16 kHz -> (B, frames, n_mels) log-mel, plus the frames holding real audio."""

    def __init__(self, config: LogMelConfig = LogMelConfig()):
        super().__init__()
        import torchaudio

        self.config = config
        fb = torchaudio.functional.melscale_fbanks(config.n_fft // 2 + 1, 0.0, 8000.0, config.n_mels, 16000)
        self.register_buffer("fb", fb)
        self.register_buffer("window", torch.hann_window(config.n_fft))

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        c = self.config
        spec = torch.stft(wave, c.n_fft, c.hop, window=self.window, center=True, return_complex=True).abs() ** 2
        feats = torch.log(spec.transpose(1, 2) @ self.fb + 1e-6)  # (B, frames, n_mels)
        n = wave.shape[-1] if lengths is None else torch.as_tensor(lengths)
        valid = torch.as_tensor(n // c.hop + 1, dtype=torch.long).expand(wave.shape[0]).clone()
        return feats, valid


# ---------------------------------------------------------------------------------------------- model
@dataclasses.dataclass(frozen=True)
class RelPosConfig:
    embed_dim: int = 32
    depth: int = 3
    num_heads: int = 2
    max_distance: int = 16  # relative distances beyond this share one bias
    n_mels: int = 32
    stride: int = 2  # frames per token


class Block(nn.Module):
    def __init__(self, cfg: RelPosConfig):
        super().__init__()
        self.heads = cfg.num_heads
        self.norm1, self.norm2 = nn.LayerNorm(cfg.embed_dim), nn.LayerNorm(cfg.embed_dim)
        self.qkv, self.proj = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim), nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.mlp = nn.Sequential(nn.Linear(cfg.embed_dim, 2 * cfg.embed_dim), nn.GELU(),
                                 nn.Linear(2 * cfg.embed_dim, cfg.embed_dim))

    def forward(self, x, bias, pad):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mask = bias.unsqueeze(0) + torch.where(pad, -math.inf, 0.0)[:, None, None, :]  # (B, H, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(out)
        return x + self.mlp(self.norm2(x))


class RelPosTransformer(nn.Module):
    """Pre-LN transformer over strided log-mel frames with a learned relative position bias per head."""

    def __init__(self, cfg: RelPosConfig, seed: int = 0):
        super().__init__()
        self.config = cfg
        g = torch.random.fork_rng()  # seeded init that leaves the caller's RNG alone
        with g:
            torch.manual_seed(seed)
            self.embed = nn.Conv1d(cfg.n_mels, cfg.embed_dim, cfg.stride, stride=cfg.stride)
            self.rel_bias = nn.Parameter(torch.randn(cfg.num_heads, 2 * cfg.max_distance + 1) * 0.1)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))

    def forward(self, feats: torch.Tensor, valid_tokens: torch.Tensor) -> list[torch.Tensor]:
        x = self.embed(feats.transpose(1, 2)).transpose(1, 2)  # (B, N, D)
        n = x.shape[1]
        pos = torch.arange(n, device=x.device)
        rel = (pos[None, :] - pos[:, None]).clamp(-self.config.max_distance, self.config.max_distance)
        bias = self.rel_bias[:, rel + self.config.max_distance]  # (H, N, N)
        pad = pos[None, :] >= valid_tokens[:, None].to(x.device)
        outs = []
        for blk in self.blocks:
            x = blk(x, bias, pad)
            outs.append(x)
        return outs


class RelPosBackbone(BackboneBase):
    """The family's Backbone: BackboneBase supplies frontend handling, forward_tokens, to/eval."""

    def __init__(self, model: RelPosTransformer, *, name: str, card: BackboneCard, frontend=None,
                 checkpoint_sha256: str | None = None, seed: int | None = 0):
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.card = card
        self.num_layers, self.embed_dim, self.num_heads = model.config.depth, model.config.embed_dim, model.config.num_heads
        self.checkpoint_sha256 = checkpoint_sha256
        self.seed = None if checkpoint_sha256 else seed
        self._frontend_spec = frontend

    def default_frontend(self):
        return LogMel()  # the family's own frontend, not one of probekit's presets

    @torch.no_grad()
    def encode(self, features, valid_frames=None, *, layers=None) -> LayerTokens:
        if features.ndim != 3 or features.shape[-1] != self.model.config.n_mels:
            raise BackboneError(f"{self.name}: expected (B, frames, {self.model.config.n_mels}) log-mel features")
        stride = self.model.config.stride
        t = features.shape[1] // stride
        vf = torch.full((features.shape[0],), features.shape[1]) if valid_frames is None else torch.as_tensor(valid_frames)
        valid_rows = torch.clamp((vf.cpu().long() + stride - 1) // stride, 0, t)
        outs = self.model(features.to(self.device, torch.float32), valid_rows)
        idx = range(self.num_layers) if layers is None else [int(i) % self.num_layers for i in layers]
        patch = torch.stack([outs[i] for i in idx], dim=1)  # (B, L, T, D): grid (T, 1)
        keep = (torch.arange(t)[None, :] < valid_rows[:, None]).to(patch)[:, None, :, None]
        cls = (patch * keep).sum(2) / keep.sum(2).clamp(min=1)  # no cls token: mean of the valid tokens
        return LayerTokens(patch=patch, cls=cls, grid=(t, 1), valid_rows=valid_rows)

    def cache_key(self) -> dict:
        weights = {"sha256": self.checkpoint_sha256} if self.checkpoint_sha256 else {"random_init_seed": self.seed}
        return {"backbone": self.name, "family": "relpos", "config": dataclasses.asdict(self.model.config),
                "weights": weights, "frontend": self.frontend.config.to_dict()}


# ---------------------------------------------------------------------------------------------- checkpoints
def _detect(obj, info) -> Detected | None:
    """relpos safetensors: the model's own keys, its config as JSON under the 'relpos' header key."""
    if not info.is_safetensors or _META_KEY not in info.safetensors_meta:
        return None
    info.no_ema("relpos")
    return Detected("relpos", dict(obj), file_config=json.loads(info.safetensors_meta[_META_KEY]))


register_format(CheckpointFormat("relpos", ARCHITECTURE, "relpos safetensors (model keys + config JSON)", _detect,
                                 priority=15))


def save(path, model: RelPosTransformer) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={_META_KEY: json.dumps(dataclasses.asdict(model.config))})


# ---------------------------------------------------------------------------------------------- registry
_VARIANTS = {"relpos-tiny": RelPosConfig(), "relpos-small": RelPosConfig(embed_dim=64, depth=4, num_heads=4)}
_OPTIONS = {"seed", "frontend", "device", "trust_checkpoint", "allow_nonfinite"}


def _card(name: str, cfg: RelPosConfig) -> BackboneCard:
    params = sum(p.numel() for p in RelPosTransformer(cfg).parameters())
    return BackboneCard(name=name, family="relpos", embed_dim=cfg.embed_dim, num_layers=cfg.depth,
                        num_heads=cfg.num_heads, frontend="", params=params, checkpoint_formats=("relpos",),
                        notes="test family: no cls token, relative position bias, own log-mel frontend")


def build(name: str, checkpoint=None, *, card: BackboneCard, config: RelPosConfig, **options) -> RelPosBackbone:
    o = check_options(name, options, accepted=_OPTIONS)
    sha = None
    if checkpoint is None:
        model = RelPosTransformer(config, seed=o["seed"])
    else:
        found, info = load_state_dict(checkpoint, ARCHITECTURE, trust_checkpoint=o["trust_checkpoint"],
                                      allow_nonfinite=o["allow_nonfinite"], what="a relpos transformer")
        model = RelPosTransformer(RelPosConfig(**found.file_config))
        try:
            model.load_state_dict(found.state_dict, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{info.path} (relpos): {str(e).splitlines()[0]}") from None
        sha = file_sha256(info.path)
    bb = RelPosBackbone(model, name=name, card=card, frontend=o["frontend"], checkpoint_sha256=sha, seed=o["seed"])
    return bb.to(o["device"])


for _name, _cfg in _VARIANTS.items():
    _c = _card(_name, _cfg)
    register_backbone(partial(build, _name, card=_c, config=_cfg), name=_name, card=_c)

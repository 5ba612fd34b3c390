"""`ViTBackbone`: a frozen AudioViT plus its frontend, and the one factory of the audio-ViT families.

The frontend and the encoder are callable separately so each can be checked alone:
`backbone.frontend(wave)` -> (B, 1, frames, 128); `backbone.encode(features)` -> LayerTokens;
`backbone.forward_tokens(wave, lengths)` does both. Inference runs under `torch.no_grad()` on a model in
eval mode with gradients off.

A family of audio ViTs (EAT/SSLAM, BAT) is data: `ViTFamily` (what every member shares: citation,
frontend recipe, checkpoint formats) plus `{name: ViTVariant(config, notes, training_data)}`, registered
with `register_vit_family` (one card helper, one factory `build_vit_backbone(name, checkpoint, **options)`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch

from probekit._device import resolve_device
from probekit.backbones._frontend import frontend_config_dict
from probekit.backbones.protocol import BackboneBase, BackboneCard, LayerTokens, QueryTokens
from probekit.backbones.checkpoints import load_checkpoint
from probekit.backbones.registry import check_options, register_backbone
from probekit.backbones.vit import AudioViT, ViTConfig, count_params, vit_param_count
from probekit.backbones.weights import weights_key
from probekit.errors import BackboneError, CheckpointError

__all__ = ["ViTBackbone", "ViTFamily", "ViTVariant", "build_vit_backbone", "register_vit_family", "vit_card"]


class ViTBackbone(BackboneBase):
    """A frozen audio ViT (EAT/SSLAM/BAT family) with its frontend.

    Args:
        model: the AudioViT (weights already loaded).
        name: registry name ("bat", "eat", ...).
        card: registry metadata; sizes are overwritten with the model's actual sizes.
        frontend: a frontend config (probekit.audio.frontends), a preset name, or None for the card's
            recipe ("fbank" for EAT/SSLAM, "bat" for BAT).
        checkpoint_sha256: sha256 of the weights file, None for random init.
        seed: the init seed when there is no checkpoint.
        checkpoint_format / checkpoint_path / use_ema: provenance of the weights.
    """

    def __init__(
        self,
        model: AudioViT,
        *,
        name: str,
        card: BackboneCard,
        frontend: Any = None,
        checkpoint_sha256: str | None = None,
        seed: int | None = 0,
        checkpoint_format: str | None = None,
        checkpoint_path: str | None = None,
        use_ema: bool = False,
    ):
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.checkpoint_sha256 = checkpoint_sha256
        self.seed = None if checkpoint_sha256 else seed
        self.checkpoint_format = checkpoint_format
        self.checkpoint_path = checkpoint_path
        self.use_ema = use_ema
        cfg = model.config
        self.card = dataclasses.replace(
            card, name=name, embed_dim=cfg.embed_dim, num_layers=cfg.depth, num_heads=cfg.num_heads,
            params=count_params(model),
        )
        self._frontend_spec = frontend

    # ------------------------------------------------------------------ sizes
    @property
    def config(self) -> ViTConfig:
        return self.model.config

    @property
    def family(self) -> str:
        return self.card.family

    @property
    def num_layers(self) -> int:
        return self.model.config.depth

    @property
    def embed_dim(self) -> int:
        return self.model.config.embed_dim

    @property
    def num_heads(self) -> int:
        return self.model.config.num_heads

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def encode(
        self,
        features: torch.Tensor,
        valid_frames: torch.Tensor | None = None,
        *,
        layers: Sequence[int] | None = None,
    ) -> LayerTokens:
        """(B, 1, frames, 128) frontend output -> per-layer tokens (blocks 1..L, or `layers`)."""
        if not torch.is_tensor(features):
            raise BackboneError(f"features must be a tensor, got {type(features).__name__}")
        if not features.is_floating_point():
            raise BackboneError(f"features must be floating point, got {features.dtype}")
        x = features.to(self.device, torch.float32)
        return self.model.encode(x, valid_frames, layers=layers)

    supports_queries = True

    def encode_queries(self, features: torch.Tensor, valid_frames: torch.Tensor | None,
                       queries: torch.Tensor) -> QueryTokens:
        """VQT: (B, 1, frames, 128) + (B, L, q, D) queries -> each block's query outputs and the last cls
        (`AudioViT.encode_queries`); not under no_grad, so gradients reach the queries."""
        if not torch.is_tensor(features) or not features.is_floating_point():
            raise BackboneError(f"{self.name}: features must be a floating-point tensor")
        q, cls = self.model.encode_queries(features.to(self.device, self.model.cls_token.dtype), queries)
        return QueryTokens(queries=q, cls=cls)

    # ------------------------------------------------------------------ provenance
    def cache_key(self) -> dict:
        """Everything that changes the tokens: family, sizes, weights (sha256 or seed), frontend config."""
        return {
            "backbone": self.name,
            "family": self.family,
            "vit": self.model.config.to_dict(),
            # local files keep the content key; downloads also name source and revision (weights_key)
            "weights": weights_key(getattr(self, "weights", None), sha256=self.checkpoint_sha256, seed=self.seed,
                                   use_ema=self.use_ema),
            "frontend": frontend_config_dict(self.frontend_config),
        }

    def __repr__(self) -> str:
        w = f"sha256={self.checkpoint_sha256[:12]}" if self.checkpoint_sha256 else f"random init seed={self.seed}"
        c = self.model.config
        return f"ViTBackbone({self.name}: D={c.embed_dim}, L={c.depth}, heads={c.num_heads}, {w})"


# ---------------------------------------------------------------------------------------------- families
@dataclasses.dataclass(frozen=True)
class ViTFamily:
    """What every variant of one audio-ViT family shares (goes on each card)."""

    family: str  # "eat" | "bat"
    frontend: str  # frontend recipe name (probekit.audio.frontends): "fbank" | "bat"
    citation: str
    checkpoint_formats: tuple[str, ...]
    url: str = ""


@dataclasses.dataclass(frozen=True)
class ViTVariant:
    """One registered size of a family."""

    config: ViTConfig
    notes: str
    training_data: tuple[str, ...] = ()
    citation: str = ""  # default: the family's
    url: str | None = None  # default: the family's


def vit_card(name: str, family: ViTFamily, variant: ViTVariant) -> BackboneCard:
    """The card of a registered audio ViT (sizes and the counted parameters from its config)."""
    cfg = variant.config
    return BackboneCard(
        name=name, family=family.family, embed_dim=cfg.embed_dim, num_layers=cfg.depth, num_heads=cfg.num_heads,
        params=vit_param_count(cfg), frontend=family.frontend, training_data=tuple(variant.training_data),
        checkpoint_formats=family.checkpoint_formats, citation=variant.citation or family.citation,
        url=family.url if variant.url is None else variant.url, notes=variant.notes,
    )


def register_vit_family(family: ViTFamily, variants: Mapping[str, ViTVariant]) -> dict[str, BackboneCard]:
    """Register every variant under its name with the shared factory; returns {name: card}."""
    cards = {}
    for name, variant in variants.items():
        card = cards[name] = vit_card(name, family, variant)
        factory = partial(build_vit_backbone, name, card=card, default_config=variant.config)
        factory.__doc__ = f"{variant.notes}. From any {family.family.upper()} checkpoint format, or seeded random init."
        register_backbone(factory, name=name, card=card)
    return cards


def build_vit_backbone(name: str, checkpoint=None, *, card: BackboneCard, default_config: ViTConfig,
                       **options) -> ViTBackbone:
    """The factory of every registered audio ViT: checkpoint (sizes from the file) or seeded init.

    `options` are get_backbone's (seed, num_heads, trust_checkpoint, use_ema, frontend, device,
    chunk_rows, allow_nonfinite), validated once by `check_options`.
    """
    o = check_options(name, options)
    dev = resolve_device(o["device"])
    if checkpoint is None:
        if o["use_ema"]:
            raise BackboneError(f"{name}: use_ema needs a checkpoint")
        changes = {k: o[k] for k in ("num_heads", "chunk_rows") if o[k] is not None}
        cfg = dataclasses.replace(default_config, **changes) if changes else default_config
        model = AudioViT(cfg, seed=o["seed"])
        return ViTBackbone(model, name=name, card=card, frontend=o["frontend"], seed=o["seed"]).to(dev)
    loaded = load_checkpoint(
        checkpoint,
        num_heads=o["num_heads"],
        trust_checkpoint=o["trust_checkpoint"],
        use_ema=o["use_ema"],
        chunk_rows=o["chunk_rows"],
        default_heads={default_config.embed_dim: default_config.num_heads},
        allow_nonfinite=o["allow_nonfinite"],
    )
    if loaded.family != card.family:
        raise CheckpointError(
            f"{loaded.path} ({loaded.format}): holds a {loaded.family.upper()}-family encoder "
            f"({'gated' if loaded.config.gated else 'no'} attention gate), but backbone {name!r} is {card.family.upper()}",
            hint=f"use a {loaded.family} backbone name, e.g. get_backbone({loaded.family!r}, checkpoint=...)",
        )
    bb = ViTBackbone(
        loaded.build(),
        name=name,
        card=card,
        frontend=o["frontend"],
        checkpoint_sha256=loaded.sha256,
        checkpoint_format=loaded.format,
        checkpoint_path=str(loaded.path),
        use_ema=o["use_ema"],
    )
    return bb.to(dev)

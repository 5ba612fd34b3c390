"""Frozen encoders that turn 16 kHz waveforms into per-layer tokens (the audio ViT family and any torch model).

Each model family is one module that registers its names when imported here (timm style); adding a
family is one new module plus one line below. Third-party families register through entry points
(see probekit.backbones.registry).
"""

from probekit.backbones.protocol import Backbone, BackboneBase, BackboneCard, LayerTokens, is_backbone
from probekit.backbones.registry import backbone_card, get_backbone, list_backbones, register_backbone

# The built-in families (each registers its names and checkpoint formats on import).
from probekit.backbones import audiomae  # noqa: E402,F401  isort: skip
from probekit.backbones import bat  # noqa: E402,F401  isort: skip
from probekit.backbones import beats  # noqa: E402,F401  isort: skip
from probekit.backbones import birdmae  # noqa: E402,F401  isort: skip
from probekit.backbones import dasheng  # noqa: E402,F401  isort: skip
from probekit.backbones import eat  # noqa: E402,F401  isort: skip
from probekit.backbones import hf  # noqa: E402,F401  isort: skip
from probekit.backbones import melpatch  # noqa: E402,F401  isort: skip

__all__ = [
    "Backbone",
    "BackboneBase",
    "BackboneCard",
    "LayerTokens",
    "backbone_card",
    "get_backbone",
    "is_backbone",
    "list_backbones",
    "register_backbone",
]

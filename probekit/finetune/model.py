"""The fine-tuned network: a trainable copy of any backbone's encoder plus the official linear head.

The backbone a user passes stays frozen and untouched (its default: eval mode, requires_grad off,
`encode` under no_grad). `FinetuneModel` deep-copies the backbone's module, switches it to training
(requires_grad on) and calls the family's `encode` without its `torch.no_grad` decorator, so every
family behind the Backbone protocol (bat, eat, sslam, beats, audiomae, dasheng, birdmae, hf, melpatch,
custom) fine-tunes through the same `encode` the probes read.
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import nn

from probekit.errors import ConfigError

__all__ = ["FinetuneModel", "LinearHead", "trainable_copy"]


class LinearHead(nn.Module):
    """The official LinearHead on the last block's cls token: fc(dropout(LayerNorm(cls)))."""

    def __init__(self, dim: int, num_classes: int, *, norm: bool, dropout: float):
        super().__init__()
        self.ln = nn.LayerNorm(dim, eps=1e-6) if norm else nn.Identity()
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(dim, num_classes, bias=True)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.ln(cls)))


def trainable_copy(backbone):
    """A shallow copy of `backbone` holding a deep copy of its module with gradients on (the original keeps
    its frozen module)."""
    module = getattr(backbone, "model", None)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"backbone {backbone.name!r} has no torch module (`.model`) to fine-tune",
                          hint="fine-tuning needs a Backbone whose `model` attribute holds its weights")
    clone = copy.copy(backbone)
    clone.model = copy.deepcopy(module).requires_grad_(True).train()
    if getattr(clone, "_hooked", None) and getattr(clone, "blocks", None):  # custom: hook the copy's blocks
        mods = dict(clone.model.named_modules())
        clone._hooked = [mods[b] for b in clone.blocks]
    return clone


def _grad_encode(backbone):
    """The family's `encode` without its @torch.no_grad() decorator (functools.wraps chains)."""
    return inspect.unwrap(type(backbone).encode)


class FinetuneModel(nn.Module):
    """Encoder (trainable copy) -> last block's cls -> LinearHead.

    Args:
        backbone: any Backbone (left frozen; a copy trains).
        num_classes: outputs of the head.
        head_norm, head_dropout: the recipe's head.
        drop_path: stochastic-depth rate (ViT families: linear 0..rate over the blocks); families without
            the hook ignore it and `drop_path_applied` says so.
    """

    def __init__(self, backbone, num_classes: int, *, head_norm: bool = True, head_dropout: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        clone = trainable_copy(backbone)
        self.encoder = clone.model
        self.__dict__["backbone"] = clone  # not a submodule twice: its module is self.encoder
        self.drop_path_applied = False
        if drop_path > 0 and callable(getattr(self.encoder, "set_drop_path", None)):
            self.encoder.set_drop_path(drop_path)
            self.drop_path_applied = True
        self.num_blocks = int(backbone.num_layers)
        self.family = str(getattr(backbone.card, "family", "custom") or "custom")
        self.head = LinearHead(int(backbone.embed_dim), int(num_classes), norm=head_norm, dropout=head_dropout)
        self._encode = _grad_encode(clone)

    def forward(self, features: torch.Tensor, valid_frames: torch.Tensor | None = None) -> torch.Tensor:
        lt = self._encode(self.backbone, features, valid_frames, layers=[-1])
        return self.head(lt.cls[:, -1])

    def named_for_groups(self):
        """(name, parameter) with the encoder's own names and the head under 'head.' (the official layout)."""
        yield from self.encoder.named_parameters()
        for n, p in self.head.named_parameters():
            yield f"head.{n}", p

    def weights(self) -> dict[str, torch.Tensor]:
        """Every tensor of the model for a safetensors file (encoder.* and head.*)."""
        return {k: v.detach().to("cpu").contiguous().clone() for k, v in self.state_dict().items()}

"""Single-vector probes: linear (BAT's `lp`), MLP, and the per-block linear sweep."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from probekit.probes.base import Probe, register_probe
from probekit.probes.space import Choice, Float, Int, Param
from probekit.tokens import TokenBatch, TokenRequest


def _pooling_request(pooling: str, layers, num_layers: int) -> TokenRequest:
    if pooling not in ("cls", "mean"):
        raise ValueError(
            f"pooling={pooling!r} must be 'cls' or 'mean' (mean of patch tokens, for models without cls)"
        )
    req = TokenRequest(layers=layers, patch=pooling == "mean", cls=pooling == "cls")
    req.resolve(num_layers)
    return req


class _Pooled:
    pooling: str

    def _pooled(self, batch: TokenBatch) -> Tensor:
        """(B, Ls, D): the cls token, or the mean of the patch tokens, of each requested layer."""
        return self._cls(batch) if self.pooling == "cls" else self._patch(batch).mean(dim=2)


@register_probe
class LinearProbe(_Pooled, Probe):
    """Last-layer cls (or patch mean) -> LayerNorm(eps 1e-6, optional) -> Dropout -> Linear."""

    name = "linear"
    display_name = "LP"
    description = "Linear probe on the last layer's cls token (patch mean without cls), LayerNorm + dropout"
    search_space: ClassVar[dict[str, Param]] = {
        "dropout": Float(0.0, 0.5),
        "layer_norm": Choice((True, False)),
    }

    def __init__(
        self,
        *,
        num_layers: int,
        embed_dim: int,
        num_classes: int,
        pooling: str = "cls",
        layer_norm: bool = True,
        dropout: float = 0.2,
        layer: int = -1,
    ):
        super().__init__()
        self._store_hparams(locals())
        self.pooling = pooling
        self.request = _pooling_request(pooling, (int(layer),), num_layers)
        self.ln = nn.LayerNorm(embed_dim, eps=1e-6) if layer_norm else nn.Identity()
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(embed_dim, num_classes)

    def forward(self, batch: TokenBatch) -> Tensor:
        return self.fc(self.dropout(self.ln(self._pooled(batch)[:, 0])))


@register_probe
class MLPProbe(_Pooled, Probe):
    """cls (or patch mean) -> [LayerNorm] -> Linear(D, hidden) -> ReLU -> Dropout -> Linear(hidden, C)."""

    name = "mlp"
    display_name = "MLP"
    description = "Two-layer MLP (hidden 512, ReLU) on the last layer's cls token"
    search_space: ClassVar[dict[str, Param]] = {
        "hidden_dim": Int(128, 2048, log=True),
        "dropout": Float(0.0, 0.5),
    }

    def __init__(
        self,
        *,
        num_layers: int,
        embed_dim: int,
        num_classes: int,
        hidden_dim: int = 512,
        pooling: str = "cls",
        layer_norm: bool = False,
        dropout: float = 0.0,
        layer: int = -1,
    ):
        super().__init__()
        self._store_hparams(locals())
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim={hidden_dim} must be >= 1")
        self.pooling = pooling
        self.request = _pooling_request(pooling, (int(layer),), num_layers)
        self.ln = nn.LayerNorm(embed_dim, eps=1e-6) if layer_norm else nn.Identity()
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(hidden_dim, num_classes)

    def forward(self, batch: TokenBatch) -> Tensor:
        h = torch.relu(self.fc1(self.ln(self._pooled(batch)[:, 0])))
        return self.fc(self.dropout(h))


@register_probe
class LayerSweep(_Pooled, Probe):
    """One linear probe per block, trained together in one pass (dinov2 style): forward returns
    (B, L, C) and the loss is the sum of the per-block losses, so each head trains as if alone.
    Gives one score per block -- the per-layer curve next to CGP's learned gates."""

    name = "layers"
    display_name = "layers"
    description = "Per-block linear sweep: one linear probe per layer in one pass, one score per block"
    search_space: ClassVar[dict[str, Param]] = {"dropout": Float(0.0, 0.5)}

    def __init__(
        self,
        *,
        num_layers: int,
        embed_dim: int,
        num_classes: int,
        pooling: str = "cls",
        layer_norm: bool = True,
        dropout: float = 0.2,
        layers: str | tuple[int, ...] = "all",
    ):
        super().__init__()
        self._store_hparams(locals())
        self.pooling = pooling
        self.request = _pooling_request(
            pooling, tuple(layers) if isinstance(layers, list) else layers, num_layers
        )
        self.block_indices = self.request.resolve(num_layers)
        self.num_outputs = len(self.block_indices)
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(embed_dim, eps=1e-6) if layer_norm else nn.Identity(),
                nn.Dropout(p=dropout),
                nn.Linear(embed_dim, num_classes),
            )
            for _ in self.block_indices
        )

    def head_names(self) -> list[str]:
        """One head per read block, 1-based as the paper's figures: "block1", "block2", ..."""
        return [f"block{b + 1}" for b in self.block_indices]

    def forward(self, batch: TokenBatch) -> Tensor:
        x = self._pooled(batch)  # (B, L, D)
        return torch.stack([head(x[:, i]) for i, head in enumerate(self.heads)], dim=1)

"""Single-vector probes: linear (BAT's `lp`), MLP, the per-block linear sweep, and the token-wise linear
baseline (`linpre`)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from probekit.probes.base import Probe, patch_request, register_probe
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


def _norm_dropout_linear(width: int, num_classes: int, *, layer_norm: bool, dropout: float):
    """The linear head's (ln, dropout, fc): LayerNorm(eps 1e-6) or Identity, Dropout, Linear(width, C).
    Built in this order so the classifier's random init draws the same numbers wherever it is used."""
    return (
        nn.LayerNorm(width, eps=1e-6) if layer_norm else nn.Identity(),
        nn.Dropout(p=dropout),
        nn.Linear(width, num_classes),
    )


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
        self.ln, self.dropout, self.fc = _norm_dropout_linear(
            embed_dim, num_classes, layer_norm=layer_norm, dropout=dropout
        )

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
                *_norm_dropout_linear(embed_dim, num_classes, layer_norm=layer_norm, dropout=dropout)
            )
            for _ in self.block_indices
        )

    def head_names(self) -> list[str]:
        """One head per read block, 1-based as the paper's figures: "block1", "block2", ..."""
        return [f"block{b + 1}" for b in self.block_indices]

    def forward(self, batch: TokenBatch) -> Tensor:
        x = self._pooled(batch)  # (B, L, D)
        return torch.stack([head(x[:, i]) for i, head in enumerate(self.heads)], dim=1)


@register_probe
class TokenLinear(Probe):
    """The unmute paper's naive token-map baseline (`linpre`): one linear classifier applied to every patch
    token of the last layer, its logits pooled over the tokens.

    `token_pooling` "max" (default) or "mean". The unmute code base was not available to check which
    one the paper used; "max" is the default because mean-pooled logits of a linear layer are exactly a
    linear probe on the patch mean (`linear` with pooling="mean"), so only "max" is a distinct token-map
    method. LayerNorm (eps 1e-6, optional) and dropout act per token before the classifier.
    """

    name = "linpre"
    display_name = "LinPre"
    description = "Naive token-map baseline: a linear classifier on every patch token, logits max-pooled"
    search_space: ClassVar[dict[str, Param]] = {"dropout": Float(0.0, 0.5)}

    def __init__(
        self,
        *,
        num_layers: int,
        embed_dim: int,
        num_classes: int,
        token_pooling: str = "max",
        layer_norm: bool = False,
        dropout: float = 0.0,
        layer: int = -1,
    ):
        super().__init__()
        self._store_hparams(locals())
        if token_pooling not in ("max", "mean"):
            raise ValueError(f"token_pooling={token_pooling!r} must be 'max' or 'mean'")
        self.token_pooling = token_pooling
        self.request = patch_request(layer, num_layers)
        self.ln, self.dropout, self.fc = _norm_dropout_linear(
            embed_dim, num_classes, layer_norm=layer_norm, dropout=dropout
        )

    def token_logits(self, batch: TokenBatch) -> Tensor:
        """(B, N, C) logits of each patch token."""
        return self.fc(self.dropout(self.ln(self._patch(batch)[:, 0])))

    def forward(self, batch: TokenBatch) -> Tensor:
        z = self.token_logits(batch)
        return z.amax(dim=1) if self.token_pooling == "max" else z.mean(dim=1)

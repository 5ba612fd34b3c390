"""Convex Gated Probing (CGP) and its linear variant (BAT paper; official `models/heads.py`)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from probekit.probes._kernels import extreme_similarity, gated_normalized_sum, normalize_rows
from probekit.probes.base import Probe, register_probe
from probekit.probes.linear import _norm_dropout_linear
from probekit.probes.space import Choice, Float, Int, Param
from probekit.tokens import TokenBatch, TokenRequest


def _layer_request(layers, num_layers: int, *, patch: bool, cls: bool) -> tuple[TokenRequest, int]:
    if isinstance(layers, list):
        layers = tuple(layers)
    req = TokenRequest(layers=layers, patch=patch, cls=cls)
    try:
        n = len(req.resolve(num_layers))
    except ValueError as e:
        raise ValueError(f"layers={layers!r}: {e}") from None
    return req, n


class _GatedMixin:
    block_attention: nn.Parameter
    request: TokenRequest

    def gate_weights(self) -> np.ndarray:
        """The learned convex layer weights softmax(gates), one per read layer (for plotting)."""
        return torch.softmax(self.block_attention.detach().float().cpu(), dim=0).numpy()

    def gate_layers(self, num_layers: int | None = None) -> tuple[int, ...]:
        """0-based block index of each gate."""
        return self.request.resolve(num_layers or self.shape_args["num_layers"])

    def report(self) -> dict:
        """The learned gates and the block each reads (records keep them; `plot gates` draws them)."""
        return {"gates": [float(x) for x in np.asarray(self.gate_weights()).ravel()],
                "gate_layers": [int(x) for x in self.gate_layers()]}


@register_probe
class CGP(_GatedMixin, Probe):
    """Convex Gated Probing: prototype similarities of the gate-mixed, l2-normalised layer tokens.

    feat[3k:3k+3] = [min_n S[n, k], obar . P_k, max_n S[n, k]] with S = zbar @ P^T (no re-normalisation of
    the mixed tokens), or [min, mean, max] without the cls token; logits = fc(dropout(feat)).
    """

    name = "cgp"
    display_name = "CGP"
    description = (
        "Convex Gated Probing: softmax-gated layer mix, K cosine prototypes, [min, cls, max] features"
    )
    search_space: ClassVar[dict[str, Param]] = {
        "prototypes": Int(256, 16384, log=True),
        "dropout": Float(0.0, 0.5),
        "use_cls": Choice((True, False)),
    }

    def __init__(
        self,
        *,
        num_layers: int,
        embed_dim: int,
        num_classes: int,
        prototypes: int = 10000,
        use_cls: bool = True,
        dropout: float = 0.2,
        layers: str | tuple[int, ...] = "all",
    ):
        super().__init__()
        self._store_hparams(locals())
        if prototypes < 1:
            raise ValueError(f"prototypes={prototypes} must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        self.request, n_read = _layer_request(layers, num_layers, patch=True, cls=use_cls)
        self.use_cls = use_cls
        self.num_prototypes = int(prototypes)
        self.prototype_vectors = nn.Parameter(torch.randn(self.num_prototypes, embed_dim) * 0.02)
        self.block_attention = nn.Parameter(torch.ones(n_read))  # softmax(ones) = uniform
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(3 * self.num_prototypes, num_classes)

    def features(self, batch: TokenBatch) -> Tensor:
        """The (B, 3K) interleaved similarity features before dropout."""
        patch = self._patch(batch)  # (B, L, N, D)
        a = torch.softmax(self.block_attention, dim=0)
        zbar = gated_normalized_sum(patch, a.to(patch.dtype))  # (B, N, D), not re-normalised
        p = normalize_rows(self.prototype_vectors)  # parameter precision (fp32), never autocast
        mx, mn = extreme_similarity(zbar, p.to(zbar.dtype), want_min=True)
        if self.use_cls:
            obar = gated_normalized_sum(self._cls(batch), a.to(patch.dtype))  # (B, D)
            mid = obar @ p.to(obar.dtype).T
        else:
            mid = zbar.mean(dim=1) @ p.to(zbar.dtype).T  # mean_n S = (mean_n zbar) @ P^T
        return torch.stack([mn, mid.to(mn.dtype), mx], dim=-1).reshape(mx.shape[0], 3 * self.num_prototypes)

    def forward(self, batch: TokenBatch) -> Tensor:
        return self.fc(self.dropout(self.features(batch)))


@register_probe
class LinearCGP(_GatedMixin, Probe):
    """Softmax-gated sum of raw per-layer cls tokens (or patch means) -> [LayerNorm] -> Dropout -> Linear."""

    name = "lcgp"
    display_name = "LinearCGP"
    description = "Linear CGP: softmax-gated sum of per-layer cls tokens, then a linear classifier"
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
        layers: str | tuple[int, ...] = "all",
    ):
        super().__init__()
        self._store_hparams(locals())
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling={pooling!r} must be 'cls' or 'mean'")
        self.pooling = pooling
        self.request, n_read = _layer_request(
            layers, num_layers, patch=pooling == "mean", cls=pooling == "cls"
        )
        self.block_attention = nn.Parameter(torch.zeros(n_read))  # official init zeros: uniform softmax
        self.ln, self.dropout, self.fc = _norm_dropout_linear(
            embed_dim, num_classes, layer_norm=layer_norm, dropout=dropout
        )

    def forward(self, batch: TokenBatch) -> Tensor:
        x = self._cls(batch) if self.pooling == "cls" else self._patch(batch).mean(dim=2)  # (B, L, D)
        a = torch.softmax(self.block_attention, dim=0).to(x.dtype)
        x = torch.einsum("l,bld->bd", a, x)
        return self.fc(self.dropout(self.ln(x)))

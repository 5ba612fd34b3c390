"""Head2Toe (Evci et al., 2022) as BAT runs it: every layer's cls token (or patch mean) concatenated,
LayerNorm, dropout, one linear layer, trained with a group-lasso penalty on the linear weights.

Re-derived from `houtan-ghaffari/BAT_ICML2026` (models/heads.py: `Head2Toe`, `compute_group_lasso_penalty`;
engine/trainer.py adds `lasso_weight * penalty` to the task loss; configs/*/*_h2t_config.yaml: lasso 1e-4,
head norm on, head dropout 0.2).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from probekit.probes.base import Probe, register_probe
from probekit.probes.constraints import Interval
from probekit.probes.linear import _norm_dropout_linear, _Pooled, _pooling_request
from probekit.probes.space import Float, Param
from probekit.tokens import TokenBatch


def group_scale(group_size: int) -> float:
    """sqrt(group size) as the official head computes it: a float32 buffer
    (`torch.tensor(n, float32).sqrt()`).
    Kept bit-identical so the penalty equals the official one in float64 too (it differs from the float64
    square root by up to ~6e-8 relative)."""
    return float(torch.tensor(float(group_size), dtype=torch.float32).sqrt())


def group_lasso(weight: Tensor, *, layer_wise: bool, layer_width: int) -> Tensor:
    """The official penalty on a (C, L*D) classifier weight, before the sqrt(group size) scale:
    per-feature groups (one column of C weights each): sum_j ||W[:, j]||_2;
    per-layer groups (`layer_wise`, D columns each): sum_l ||W[:, l*D:(l+1)*D] + 1e-8||_F (the official
    1e-8 is added to every weight, keeping the norm's gradient finite at zero)."""
    if layer_wise:
        groups = torch.split(weight, layer_width, dim=1)
        return torch.stack([torch.linalg.vector_norm(w + 1e-8) for w in groups]).sum()
    return torch.linalg.vector_norm(weight, dim=0).sum()


@register_probe
class Head2Toe(_Pooled, Probe):
    """Concatenated per-layer tokens (B, L*D) -> LayerNorm(L*D, eps 1e-6) -> Dropout -> Linear, plus
    `lasso_weight * sqrt(g) * group_lasso(fc.weight)` as `extra_loss()` (g = C for per-feature groups,
    D for per-layer groups with `layer_wise_lasso`). Layers are concatenated in block order."""

    name = "h2t"
    display_name = "H2T"
    description = "Head2Toe: all layers' cls tokens concatenated, LayerNorm, linear, group-lasso penalty"
    search_space: ClassVar[dict[str, Param]] = {
        "lasso_weight": Float(1e-6, 1e-2, log=True),
        "dropout": Float(0.0, 0.5),
    }
    param_constraints: ClassVar[dict[str, list]] = {
        "lasso_weight": [Interval("real", 0, None)],
        "dropout": [Interval("real", 0, 1, "left")],
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
        lasso_weight: float = 1e-4,
        layer_wise_lasso: bool = False,
        layers: str | tuple[int, ...] = "all",
    ):
        super().__init__()
        self._store_hparams(locals())
        self.pooling = pooling
        self.request = _pooling_request(
            pooling, tuple(layers) if isinstance(layers, list) else layers, num_layers
        )
        width = len(self.request.resolve(num_layers)) * embed_dim
        self.embed_dim = int(embed_dim)
        self.layer_wise_lasso = bool(layer_wise_lasso)
        self.lasso_weight = float(lasso_weight)
        self.group_scale = group_scale(embed_dim if layer_wise_lasso else num_classes)
        self.ln, self.dropout, self.fc = _norm_dropout_linear(
            width, num_classes, layer_norm=layer_norm, dropout=dropout
        )

    def forward(self, batch: TokenBatch) -> Tensor:
        x = self._pooled(batch).flatten(1)  # (B, Ls, D) -> (B, Ls*D), layer-major as the official permute
        return self.fc(self.dropout(self.ln(x)))

    def group_lasso_penalty(self) -> Tensor:
        """The official `compute_group_lasso_penalty()` (scaled, not yet weighted)."""
        w = self.fc.weight
        return group_lasso(w, layer_wise=self.layer_wise_lasso, layer_width=self.embed_dim) * self.group_scale

    def extra_loss(self) -> Tensor | None:
        if self.lasso_weight == 0:
            return None
        return self.lasso_weight * self.group_lasso_penalty()

    def report(self) -> dict:
        """Per-layer L2 norm of the classifier weights: which layers the lasso kept."""
        w = self.fc.weight.detach().float()
        norms = [float(torch.linalg.vector_norm(g)) for g in torch.split(w, self.embed_dim, dim=1)]
        layers = self.request.resolve(self.shape_args["num_layers"])
        return {"layer_weight_norms": {f"block{b + 1}": n for b, n in zip(layers, norms)}}

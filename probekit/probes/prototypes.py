"""Prototype probes on the last layer's token map: Protobin (binarised, class-agnostic; BAT / "unmute")
and proto (class-bound, Bird-MAE's ProtoPNet-style head)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probekit.probes._kernels import binarize_normalize_rows, extreme_similarity
from probekit.errors import ProbeError
from probekit.probes.base import Probe, patch_request, register_probe
from probekit.probes.space import Float, Int, Param
from probekit.tokens import TokenBatch, TokenRequest


def binarize_ste(p: Tensor) -> Tensor:
    """sign with sign(0) := +1 in the forward pass; identity gradient (straight-through, no clipping)."""
    sign = torch.where(p >= 0, torch.ones_like(p), -torch.ones_like(p))
    return sign + (p - p.detach())


@register_probe
class Protobin(Probe):
    """Binarised prototypes: max_n cos(z_n, l2norm(STE-sign(p_k))) on the last layer, then a linear layer.

    K = `prototypes` (BAT: 10,000), or `prototypes_per_class` * C when that is > 0 (unmute: J = 20).
    """

    name = "protobin"
    display_name = "Protobin"
    description = (
        "Protobin: binarised class-agnostic prototypes, max-pooled cosine over the last layer's patches"
    )
    search_space: ClassVar[dict[str, Param]] = {
        "prototypes": Int(256, 16384, log=True),
        "dropout": Float(0.0, 0.5),
    }

    def __init__(
        self,
        *,
        num_layers: int,
        embed_dim: int,
        num_classes: int,
        prototypes: int = 10000,
        prototypes_per_class: int = 0,
        dropout: float = 0.2,
        layer: int = -1,
    ):
        super().__init__()
        self._store_hparams(locals())
        k = prototypes_per_class * num_classes if prototypes_per_class > 0 else prototypes
        if k < 1:
            raise ValueError(f"prototypes={prototypes} must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        self.request = patch_request(layer, num_layers)
        self.num_prototypes = int(k)
        self.prototype_vectors = nn.Parameter(torch.randn(self.num_prototypes, embed_dim) * 0.02)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(self.num_prototypes, num_classes)

    def features(self, batch: TokenBatch) -> Tensor:
        z = F.normalize(self._patch(batch)[:, 0], dim=-1)  # (B, N, D)
        phat = binarize_normalize_rows(
            self.prototype_vectors
        )  # = l2norm(binarize_ste(p)): normalise AFTER the STE
        mx, _ = extreme_similarity(z, phat.to(z.dtype), want_min=False)
        return mx

    def forward(self, batch: TokenBatch) -> Tensor:
        return self.fc(self.dropout(self.features(batch)))


class ClassBoundLinear(nn.Module):
    """Each class sees only its own J prototype scores, through non-negative weights (ReLU of the
    parameter; Bird-MAE's LinearLayerWithoutNegativeConnections). weight (C, J), bias (C)."""

    def __init__(
        self, num_classes: int, per_class: int, *, init_weight: float = 1.0, init_bias: float = -2.0
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_classes, per_class), float(init_weight)))
        self.bias = nn.Parameter(torch.full((num_classes,), float(init_bias)))

    def forward(self, act: Tensor) -> Tensor:
        c, j = self.weight.shape
        return torch.einsum("bcj,cj->bc", act.view(act.shape[0], c, j), torch.relu(self.weight)) + self.bias


@register_probe
class ClassProto(Probe):
    """Class-bound prototypes (Bird-MAE): J prototypes per class, ReLU'd cosine similarity max-pooled over
    the last layer's tokens (cls subtracted from each patch first), non-negative class-own connections,
    plus the normalised orthogonality loss ||P_c P_c^T - I||_F / (C J^2) as `extra_loss()`.

    Cosine as Bird-MAE computes it: two constant 1e-4 channels appended to tokens and prototypes,
    |x| = sqrt(sum x^2 + 1e-4), prototypes divided by (|p| + 1e-4), result divided by 1.01.

    Two variants (`upsample`):
      * Bird-MAE-faithful (default, `upsample=True`): as Bird-MAE's `VIT_ppnet` + `PPNet` with
        `add_on_layers_type: upsample` (every Bird-MAE network config): the time-major token sequence
        (B, N, D) is reshaped as the official code does, `permute(0, 2, 1).reshape(B, D, grid_rows, N //
        grid_rows)` with its constant 8 rows (for 8 frequency patches this is not the (freq, time) grid:
        each row holds N/8 consecutive tokens), then `nn.Upsample(scale_factor=2, mode="bilinear")`
        (align_corners False) gives 4N positions, and the similarity is max-pooled over them.
      * plain (`upsample=False`): the similarity max-pooled over the N tokens themselves (probekit 0.1.0).
    The unmute paper's `proto` is Bird-MAE's head (Rauch et al. 2025a); its benchmark code was not available
    to check which variant its numbers used -- the Bird-MAE configs it builds on all set the upsampling.
    """

    name = "proto"
    display_name = "proto"
    description = (
        "Class-bound prototypes (Bird-MAE): J per class, ReLU cosine, max over tokens, orthogonality loss"
    )
    search_space: ClassVar[dict[str, Param]] = {
        "prototypes_per_class": Int(1, 64, log=True),
        "ortho_weight": Float(0.0, 10.0),
    }

    EPS = 1e-4

    def __init__(
        self,
        *,
        num_layers: int,
        embed_dim: int,
        num_classes: int,
        prototypes_per_class: int = 20,
        subtract_cls: bool = True,
        ortho_weight: float = 1.0,
        upsample: bool = True,
        grid_rows: int = 8,
        layer: int = -1,
    ):
        super().__init__()
        self._store_hparams(locals())
        if prototypes_per_class < 1:
            raise ValueError(f"prototypes_per_class={prototypes_per_class} must be >= 1")
        if grid_rows < 1:
            raise ValueError(f"grid_rows={grid_rows} must be >= 1")
        self.upsample, self.grid_rows = bool(upsample), int(grid_rows)
        self.request = TokenRequest(layers=(int(layer),), patch=True, cls=bool(subtract_cls))
        self.request.resolve(num_layers)
        self.per_class = int(prototypes_per_class)
        self.num_classes = int(num_classes)
        self.prototype_vectors = nn.Parameter(torch.rand(num_classes * self.per_class, embed_dim))  # U[0, 1)
        self.last_layer = ClassBoundLinear(num_classes, self.per_class, init_weight=1.0, init_bias=-2.0)
        self.ortho_weight = float(ortho_weight)

    def decayed_parameters(self) -> list[nn.Parameter]:
        return [self.last_layer.weight]

    def similarities(self, batch: TokenBatch) -> Tensor:
        """(B, C*J) ReLU'd max-over-tokens cosine similarities."""
        x = self._patch(batch)[:, 0]  # (B, N, D)
        if self.request.cls:
            x = x - self._cls(batch)[:, 0, None, :]
        if self.upsample:
            x = self.upsampled(x)
        eps = self.EPS
        # the two eps channels add 2*eps^2 to every squared norm and to every dot product
        x_len = torch.sqrt((x * x).sum(-1, keepdim=True) + 2 * eps * eps + eps)  # (B, N, 1)
        p = self.prototype_vectors
        p_len = torch.sqrt((p * p).sum(-1, keepdim=True) + 2 * eps * eps + eps)  # (K, 1)
        xn = x / x_len
        pn = p / (p_len + eps)
        # max over tokens of (xn . pn + 2 eps^2 / (x_len (p_len + eps))) / 1.01 -- the eps term depends on
        # the token, so the similarity tensor is formed explicitly (K = C*J is small for this probe).
        sim = torch.matmul(xn, pn.T) + (2 * eps * eps) / (x_len * (p_len.T + eps))
        act = torch.relu(sim / 1.01)
        return act.amax(dim=1)

    def upsampled(self, x: Tensor) -> Tensor:
        """(B, N, D) time-major tokens -> Bird-MAE's (B, D, rows, N/rows) grid, bilinear x2 -> (B, 4N, D)."""
        B, N, D = x.shape
        rows = self.grid_rows
        if N % rows:
            raise ProbeError(
                f"probe 'proto' reshapes the {N} patch tokens into grid_rows={rows} rows (Bird-MAE's grid), "
                f"but {N} is not divisible by {rows}",
                hint="set grid_rows to a divisor of the token count, or upsample=False",
            )
        grid = x.transpose(1, 2).reshape(B, D, rows, N // rows)
        up = F.interpolate(grid, scale_factor=2, mode="bilinear", align_corners=False)
        return up.flatten(2).transpose(1, 2)

    def forward(self, batch: TokenBatch) -> Tensor:
        return self.last_layer(self.similarities(batch))

    def orthogonality(self) -> Tensor:
        p = self.prototype_vectors
        pn = p / (torch.sqrt((p * p).sum(-1, keepdim=True) + self.EPS) + self.EPS)
        pn = pn.view(self.num_classes, self.per_class, -1)
        eye = torch.eye(self.per_class, dtype=p.dtype, device=p.device)
        return torch.matmul(pn, pn.transpose(1, 2)) - eye

    def extra_loss(self) -> Tensor | None:
        if self.ortho_weight == 0:
            return None
        o = self.orthogonality()
        return self.ortho_weight * torch.linalg.vector_norm(o) / o.numel()

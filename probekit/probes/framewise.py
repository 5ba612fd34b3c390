"""Frame-wise heads for sound event detection: per-time-row logits (B, T, C) on the token grid.

Re-derived from the official BAT heads' `frame_wise_forward` (`houtan-ghaffari/BAT_ICML2026`,
models/heads.py; the head is built with `frame_wise_task: true` by configs/dcase2016_task2/sed_*_config.yaml).
Each reduces the frequency axis of the (T, F) token grid as its official head does:

  * `sed-linear` (LinearHead): last layer, mean over F -> [LayerNorm] -> Dropout -> Linear, per row.
  * `sed-lcgp` (LinearCGP): every layer's F-mean, softmax-gated sum (gates init 0) -> [LN] -> Dropout -> Linear.
  * `sed-cgp` (CGP): per-layer l2-normalised tokens, softmax-gated sum (gates init 1), cosine to K
    l2-normalised prototypes per grid cell, [min, mean, max] over F (interleaved per prototype) -> Dropout -> Linear.
  * `sed-protobin` (Protobin): last layer l2-normalised, STE-binarised l2-normalised prototypes, max over F
    -> Dropout -> Linear.
  * `sed-h2t` (Head2Toe): every layer's F-mean concatenated per row (layer-major) -> [LN] -> Dropout -> Linear,
    with the official group-lasso penalty as `extra_loss()`.

Tokens arrive time-major (token n = t*F + f, REFERENCE.md section 1.1); the batch's `grid` (set by
`probekit.train.events.FrameTokens`) folds them back into (T, F). Parameter names follow the official heads,
so an official frame-wise head's state dict loads as is.

Each frame head also carries the official post-processing of its per-row probabilities into events
(`threshold`, `median_filter`: engine/evaluator.py `tokens_to_events`, called with threshold 0.3 and
filter size 3 by engine/trainer.py); they are hyperparameters, so records keep them.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probekit.errors import ProbeError
from probekit.probes._kernels import binarize_normalize_rows
from probekit.probes.base import Probe, patch_request, register_probe
from probekit.probes.cgp import _GatedMixin, _layer_request
from probekit.probes.constraints import BOOL, Interval
from probekit.probes.head2toe import group_lasso, group_scale
from probekit.probes.linear import _norm_dropout_linear
from probekit.probes.space import Choice, Float, Int, Param
from probekit.tokens import TokenBatch

#: The official post-processing (engine/trainer.py -> eval_test_set_dcase(threshold=0.3, filter_size=3)).
THRESHOLD = 0.3
MEDIAN_FILTER = 3
#: What `fit` selects the best validation step on for event tasks (probekit.train.events.SELECTION_METRIC).
VAL_SELECTION = "frame mAP_micro (official)"

_POST_CONSTRAINTS: dict[str, list] = {
    "threshold": [Interval("real", 0, 1, "neither")],
    "median_filter": [Interval("int", 1, 99)],
    "psds": [BOOL],
}


class FrameHead(Probe):
    """A probe whose forward gives (B, T, C) logits, one row per token time row (event detection)."""

    frame_wise: ClassVar[bool] = True
    threshold: float
    median_filter: int

    def _set_post(self, threshold: float, median_filter: int, psds: bool = True) -> None:
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold={threshold} must be in (0, 1)")
        if int(median_filter) < 1 or int(median_filter) % 2 == 0:
            raise ValueError(f"median_filter={median_filter} must be an odd number of rows >= 1 (1: none)")
        self.threshold, self.median_filter = float(threshold), int(median_filter)
        # psds: also score PSDS1/PSDS2 on test (psds_eval, 50 operating points: ~0.1 s each); False skips it
        self.psds = bool(psds)

    def postprocessing(self) -> dict:
        """How per-row probabilities become events (probekit.train.events.frames_to_events)."""
        return {"threshold": self.threshold, "median_filter": self.median_filter}

    def _event_report(self) -> dict:
        """Recorded with every frame-wise result: the fixed post-processing (official: never tuned on
        validation or test) and the validation metric the best step was selected on (official: frame mAP_micro)."""
        return {"postprocessing": self.postprocessing(), "val_selection": VAL_SELECTION}

    def _grid(self, batch: TokenBatch, patch: Tensor) -> Tensor:
        """(B, Ls, N, D) time-major tokens -> (B, Ls, T, F, D)."""
        if batch.grid is None:
            raise ProbeError(
                f"frame-wise probe {self.name!r} needs the token grid of its batches",
                hint="train it on an event task (probekit.train.events.FrameTokens gives grid and frame targets)",
            )
        t, f = (int(v) for v in batch.grid)
        if t * f != patch.shape[2]:
            raise ProbeError(f"probe {self.name!r}: grid {t}x{f} does not hold the batch's {patch.shape[2]} tokens")
        return patch.reshape(patch.shape[0], patch.shape[1], t, f, patch.shape[3])

    def report(self) -> dict:
        return {**self._event_report(), **super().report()}


@register_probe
class FrameLinear(FrameHead):
    """Official LinearHead.frame_wise_forward: last layer, mean over frequency, [LN], dropout, linear."""

    name = "sed-linear"
    display_name = "LP (frames)"
    description = "Frame-wise linear head (event detection): per time row, last layer's frequency mean"
    search_space: ClassVar[dict[str, Param]] = {
        "dropout": Float(0.0, 0.5),
        "layer_norm": Choice((True, False)),
    }
    param_constraints: ClassVar[dict[str, list]] = dict(_POST_CONSTRAINTS)

    def __init__(self, *, num_layers: int, embed_dim: int, num_classes: int, layer_norm: bool = True,
                 dropout: float = 0.0, layer: int = -1, threshold: float = THRESHOLD,
                 median_filter: int = MEDIAN_FILTER, psds: bool = True):
        super().__init__()
        self._store_hparams(locals())
        self._set_post(threshold, median_filter, psds)
        self.request = patch_request(layer, num_layers)
        self.ln, self.dropout, self.fc = _norm_dropout_linear(
            embed_dim, num_classes, layer_norm=layer_norm, dropout=dropout
        )

    def forward(self, batch: TokenBatch) -> Tensor:
        x = self._grid(batch, self._patch(batch))[:, 0].mean(dim=2)  # (B, T, D)
        return self.fc(self.dropout(self.ln(x)))


@register_probe
class FrameLinearCGP(_GatedMixin, FrameHead):
    """Official LinearCGP.frame_wise_forward: per-layer frequency means, softmax-gated sum, [LN], linear."""

    name = "sed-lcgp"
    display_name = "LinearCGP (frames)"
    description = "Frame-wise LinearCGP (event detection): softmax-gated sum of per-layer frequency means"
    search_space: ClassVar[dict[str, Param]] = {
        "dropout": Float(0.0, 0.5),
        "layer_norm": Choice((True, False)),
    }
    param_constraints: ClassVar[dict[str, list]] = dict(_POST_CONSTRAINTS)

    def __init__(self, *, num_layers: int, embed_dim: int, num_classes: int, layer_norm: bool = True,
                 dropout: float = 0.0, layers: str | tuple[int, ...] = "all", threshold: float = THRESHOLD,
                 median_filter: int = MEDIAN_FILTER, psds: bool = True):
        super().__init__()
        self._store_hparams(locals())
        self._set_post(threshold, median_filter, psds)
        self.request, n_read = _layer_request(layers, num_layers, patch=True, cls=False)
        self.block_attention = nn.Parameter(torch.zeros(n_read))  # official init zeros
        self.ln, self.dropout, self.fc = _norm_dropout_linear(
            embed_dim, num_classes, layer_norm=layer_norm, dropout=dropout
        )

    def forward(self, batch: TokenBatch) -> Tensor:
        x = self._grid(batch, self._patch(batch)).mean(dim=3)  # (B, L, T, D)
        a = torch.softmax(self.block_attention, dim=0).to(x.dtype)
        x = torch.einsum("l,bltd->btd", a, x)
        return self.fc(self.dropout(self.ln(x)))

    def report(self) -> dict:
        return {**self._event_report(), **_GatedMixin.report(self)}


@register_probe
class FrameCGP(_GatedMixin, FrameHead):
    """Official CGP.frame_wise_forward: cosine of the gate-mixed normalised tokens to K prototypes per
    grid cell; per time row [min, mean, max] over frequency (interleaved per prototype) -> dropout -> linear."""

    name = "sed-cgp"
    display_name = "CGP (frames)"
    description = "Frame-wise CGP (event detection): prototype similarities, [min, mean, max] over frequency"
    search_space: ClassVar[dict[str, Param]] = {
        "prototypes": Int(256, 16384, log=True),
        "dropout": Float(0.0, 0.5),
    }
    param_constraints: ClassVar[dict[str, list]] = dict(_POST_CONSTRAINTS)

    def __init__(self, *, num_layers: int, embed_dim: int, num_classes: int, prototypes: int = 10000,
                 dropout: float = 0.2, layers: str | tuple[int, ...] = "all", threshold: float = THRESHOLD,
                 median_filter: int = MEDIAN_FILTER, psds: bool = True):
        super().__init__()
        self._store_hparams(locals())
        self._set_post(threshold, median_filter, psds)
        if prototypes < 1:
            raise ValueError(f"prototypes={prototypes} must be >= 1")
        self.request, n_read = _layer_request(layers, num_layers, patch=True, cls=False)
        self.num_prototypes = int(prototypes)
        # the same draws as the clip-level CGP (official: randn(K, D, 1, 1) * 0.02)
        self.prototype_vectors = nn.Parameter(torch.randn(self.num_prototypes, embed_dim) * 0.02)
        self.block_attention = nn.Parameter(torch.ones(n_read))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(3 * self.num_prototypes, num_classes)

    def features(self, batch: TokenBatch) -> Tensor:
        """(B, T, 3K) per-row similarity features before dropout."""
        z = F.normalize(self._grid(batch, self._patch(batch)), dim=-1)  # (B, L, T, F, D)
        a = torch.softmax(self.block_attention, dim=0).to(z.dtype)
        zbar = torch.einsum("l,bltfd->btfd", a, z)  # not re-normalised (official)
        p = F.normalize(self.prototype_vectors, dim=1).to(zbar.dtype)
        s = zbar @ p.T  # (B, T, F, K)
        feats = torch.stack([s.amin(dim=2), s.mean(dim=2), s.amax(dim=2)], dim=-1)  # (B, T, K, 3)
        return feats.reshape(feats.shape[0], feats.shape[1], 3 * self.num_prototypes)

    def forward(self, batch: TokenBatch) -> Tensor:
        return self.fc(self.dropout(self.features(batch)))

    def report(self) -> dict:
        return {**self._event_report(), **_GatedMixin.report(self)}


@register_probe
class FrameProtobin(FrameHead):
    """Official Protobin (frame_wise_task): max over frequency of the cosine to binarised prototypes."""

    name = "sed-protobin"
    display_name = "Protobin (frames)"
    description = "Frame-wise Protobin (event detection): binarised prototypes, max over frequency per row"
    search_space: ClassVar[dict[str, Param]] = {
        "prototypes": Int(256, 16384, log=True),
        "dropout": Float(0.0, 0.5),
    }
    param_constraints: ClassVar[dict[str, list]] = dict(_POST_CONSTRAINTS)

    def __init__(self, *, num_layers: int, embed_dim: int, num_classes: int, prototypes: int = 10000,
                 dropout: float = 0.0, layer: int = -1, threshold: float = THRESHOLD,
                 median_filter: int = MEDIAN_FILTER, psds: bool = True):
        super().__init__()
        self._store_hparams(locals())
        self._set_post(threshold, median_filter, psds)
        if prototypes < 1:
            raise ValueError(f"prototypes={prototypes} must be >= 1")
        self.request = patch_request(layer, num_layers)
        self.num_prototypes = int(prototypes)
        self.prototype_vectors = nn.Parameter(torch.randn(self.num_prototypes, embed_dim) * 0.02)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(self.num_prototypes, num_classes)

    def features(self, batch: TokenBatch) -> Tensor:
        z = F.normalize(self._grid(batch, self._patch(batch))[:, 0], dim=-1)  # (B, T, F, D)
        phat = binarize_normalize_rows(self.prototype_vectors).to(z.dtype)  # l2norm AFTER the STE sign
        return (z @ phat.T).amax(dim=2)  # (B, T, K)

    def forward(self, batch: TokenBatch) -> Tensor:
        return self.fc(self.dropout(self.features(batch)))


@register_probe
class FrameHead2Toe(FrameHead):
    """Official Head2Toe.frame_wise_forward: every layer's frequency mean concatenated per row (layer-major)
    -> [LayerNorm(L*D)] -> dropout -> linear, plus the official group-lasso penalty."""

    name = "sed-h2t"
    display_name = "H2T (frames)"
    description = "Frame-wise Head2Toe (event detection): per-row concatenated layer means, group lasso"
    search_space: ClassVar[dict[str, Param]] = {
        "lasso_weight": Float(1e-6, 1e-2, log=True),
        "dropout": Float(0.0, 0.5),
    }
    param_constraints: ClassVar[dict[str, list]] = {
        **_POST_CONSTRAINTS,
        "lasso_weight": [Interval("real", 0, None)],
        "dropout": [Interval("real", 0, 1, "left")],
    }

    def __init__(self, *, num_layers: int, embed_dim: int, num_classes: int, layer_norm: bool = True,
                 dropout: float = 0.0, lasso_weight: float = 1e-4, layer_wise_lasso: bool = False,
                 layers: str | tuple[int, ...] = "all", threshold: float = THRESHOLD,
                 median_filter: int = MEDIAN_FILTER, psds: bool = True):
        super().__init__()
        self._store_hparams(locals())
        self._set_post(threshold, median_filter, psds)
        self.request, n_read = _layer_request(layers, num_layers, patch=True, cls=False)
        self.embed_dim = int(embed_dim)
        self.layer_wise_lasso = bool(layer_wise_lasso)
        self.lasso_weight = float(lasso_weight)
        self.group_scale = group_scale(embed_dim if layer_wise_lasso else num_classes)
        self.ln, self.dropout, self.fc = _norm_dropout_linear(
            n_read * embed_dim, num_classes, layer_norm=layer_norm, dropout=dropout
        )

    def forward(self, batch: TokenBatch) -> Tensor:
        x = self._grid(batch, self._patch(batch)).mean(dim=3)  # (B, L, T, D)
        x = x.permute(0, 2, 1, 3).flatten(2)  # (B, T, L*D), layer-major as the official permute
        return self.fc(self.dropout(self.ln(x)))

    def group_lasso_penalty(self) -> Tensor:
        return group_lasso(self.fc.weight, layer_wise=self.layer_wise_lasso, layer_width=self.embed_dim) * (
            self.group_scale)

    def extra_loss(self) -> Tensor | None:
        return None if self.lasso_weight == 0 else self.lasso_weight * self.group_lasso_penalty()


FRAME_HEADS = ("sed-cgp", "sed-protobin", "sed-linear", "sed-lcgp", "sed-h2t")

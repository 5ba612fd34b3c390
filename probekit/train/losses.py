"""Training losses: BCE (multi-label), cross-entropy (multi-class), asymmetric loss (ASL); CTC for the ASR
probe (computed by its task, `probekit.train.ctc.CTCTask`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probekit.errors import ConfigError

LOSSES = ("auto", "bce", "ce", "asl", "ctc")


class AsymmetricLoss(nn.Module):
    """Asymmetric loss for multi-label classification (Ridnik et al., Alibaba-MIIL/ASL).

    p = sigmoid(x); p_neg = min(1 - p + clip, 1) when clip > 0;
    loss = -[y log(max(p, eps)) + (1 - y) log(max(p_neg, eps))] * (1 - p_t)^(g_pos y + g_neg (1 - y)),
    p_t = p y + p_neg (1 - y). The focal weight is computed without gradient, as Alibaba's reference
    (`disable_torch_grad_focal_loss`) and BAT; `focal_grad=True` lets the gradient flow through it, as
    Bird-MAE's `util/asymmetric_loss.py` does (its default `disable_torch_grad_focal_loss=False`, with
    gamma_neg=4, gamma_pos=1, clip=0.05, reduction "mean", for its prototype and linear heads).
    Reference defaults: gamma_neg=4, gamma_pos=1, clip=0.05, eps=1e-8, reduction "sum".
    BAT's AudioSet probe setting: gamma_neg=1, gamma_pos=0, clip=0, reduction "mean".
    """

    def __init__(
        self,
        *,
        gamma_neg: float = 4.0,
        gamma_pos: float = 1.0,
        clip: float = 0.05,
        eps: float = 1e-8,
        reduction: str = "sum",
        focal_grad: bool = False,
    ):
        super().__init__()
        self.focal_grad = bool(focal_grad)
        if reduction not in ("sum", "mean", "none"):
            raise ConfigError(f"ASL reduction={reduction!r} must be 'sum', 'mean' or 'none'")
        self.gamma_neg, self.gamma_pos, self.clip, self.eps, self.reduction = (
            gamma_neg,
            gamma_pos,
            clip,
            eps,
            reduction,
        )

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        y = targets.to(logits.dtype)
        p = torch.sigmoid(logits)
        p_neg = 1 - p
        if self.clip and self.clip > 0:
            p_neg = (p_neg + self.clip).clamp(max=1)
        loss = y * torch.log(p.clamp(min=self.eps)) + (1 - y) * torch.log(p_neg.clamp(min=self.eps))
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            with torch.set_grad_enabled(self.focal_grad and torch.is_grad_enabled()):
                p_t = p * y + p_neg * (1 - y)
                w = torch.pow(1 - p_t, self.gamma_pos * y + self.gamma_neg * (1 - y))
            loss = loss * w
        if self.reduction == "sum":
            return -loss.sum()
        if self.reduction == "mean":
            return -loss.mean()
        return -loss


def make_loss(
    name: str,
    *,
    multilabel: bool,
    asl_gamma_neg: float = 1.0,
    asl_gamma_pos: float = 0.0,
    asl_clip: float = 0.0,
    asl_eps: float = 1e-8,
    asl_reduction: str = "mean",
    asl_focal_grad: bool = False,
    label_smoothing: float = 0.0,
) -> Callable[[Tensor, Tensor], Tensor]:
    """A loss `f(logits (B, C), labels) -> scalar`.

    "auto" is BCE for multi-label data and cross-entropy for multi-class. BCE and ASL accept
    multi-class integer labels (turned one-hot); cross-entropy needs multi-class labels.
    """
    if name not in LOSSES:
        from probekit.errors import suggest

        raise ConfigError(f"unknown loss {name!r}", hint=suggest(name, LOSSES))
    if name == "ctc":
        raise ConfigError("loss 'ctc' trains the ASR probe on transcripts, not clip labels",
                          hint="use probe 'asr' on an ASR dataset, or loss auto/bce/ce/asl")
    if name == "auto":
        name = "bce" if multilabel else "ce"
    if name == "ce":
        if multilabel:
            raise ConfigError(
                "loss 'ce' needs multi-class labels but the data is multi-label", hint="use 'bce' or 'asl'"
            )
        return lambda logits, y: F.cross_entropy(logits, y.long(), label_smoothing=label_smoothing)

    def as_targets(logits: Tensor, y: Tensor) -> Tensor:
        if y.ndim == 1:  # class indices -> one-hot
            return F.one_hot(y.long(), logits.shape[-1]).to(logits.dtype)
        return y.to(logits.dtype)

    if name == "bce":
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits, as_targets(logits, y))
    asl = AsymmetricLoss(
        gamma_neg=asl_gamma_neg, gamma_pos=asl_gamma_pos, clip=asl_clip, eps=asl_eps, reduction=asl_reduction,
        focal_grad=asl_focal_grad,
    )
    return lambda logits, y: asl(logits, as_targets(logits, y))


def task_loss(probe, name: str) -> Callable:
    """The loss of a probe with a sequence task (the ASR probe: CTC): `task.loss(output, batch)`.
    Loss names other than the task's ("auto", "ctc") are refused, as is "ctc" for a clip-level probe."""
    task = getattr(probe, "task", None)
    if task is None:
        make_loss(name, multilabel=False)  # raises the one-line error for "ctc"
    if name not in task.loss_names:
        raise ConfigError(f"probe {probe.name!r} trains with CTC, not loss {name!r}",
                          hint="leave loss at 'auto' (or 'ctc')")
    return task.loss


def check_task_data(probe, data, what: str) -> None:
    """Refuse a clip-level probe on transcripts (an ASR dataset) and the ASR probe on class labels."""
    from probekit.errors import ProbeError
    from probekit.train.ctc import is_transcript_labels

    task = getattr(probe, "task", None)
    if task is not None:
        task.check_data(probe.name, data, what)
    elif is_transcript_labels(data.labels, data.multilabel):
        raise ProbeError(f"probe {probe.name!r} predicts one label per clip, but the {what} data holds "
                         "transcripts (an ASR dataset)", hint="use probe 'asr' on ASR datasets")

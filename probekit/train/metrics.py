"""Evaluation metrics, in percent as the BAT evaluator reports them.

Multi-label: macro mAP with scikit-learn semantics (a class without positives gets AP 0 and still counts,
exactly as `average_precision_score(average="macro")` in BAT's evaluator), cmAP5 (mean AP over classes
with >= 5 positives, bioacoustics), micro/macro F1 at threshold 0.5 (scores rounded, zero_division=0).
Multi-class: accuracy (argmax), macro mAP of the one-hot labels against the scores, micro/macro F1 of argmax.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, f1_score

from probekit.errors import ProbeError


def _per_class_ap(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Per-class AP; a class without positives gets 0, as sklearn defines it.

    Such classes are set to 0 here instead of being passed to sklearn, which would warn "No positive class
    found in y_true" once per class and evaluation (a flood on small holdouts). No warning filter is
    installed, so every other warning still shows (and `warnings.catch_warnings` is not thread-safe).
    """
    ap = np.zeros(y.shape[1], dtype=np.float64)
    has = y.sum(0) > 0
    if has.any():
        cols = np.flatnonzero(has)
        got = average_precision_score(y[:, cols], s[:, cols], average=None) if len(cols) > 1 else (
            average_precision_score(y[:, cols[0]], s[:, cols[0]]))
        ap[cols] = np.atleast_1d(np.asarray(got, dtype=np.float64))
    return ap


def compute_metrics(scores: np.ndarray, labels: np.ndarray, multilabel: bool) -> dict[str, Any]:
    """Metrics of scores (n, C) (probabilities: sigmoid or softmax) against labels.

    Args:
        scores: (n, C) float.
        labels: (n, C) multi-hot when multilabel, else (n,) integer class indices.
        multilabel: which family of metrics.

    Returns:
        dict with "mAP", "f1_macro", "f1_micro", plus "cmAP5" (multi-label) or "accuracy" (multi-class),
        all in percent; "primary" names the headline metric ("mAP" or "accuracy"); "per_class" holds
        lists "ap", "f1" and "positives"; "num_examples".
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 2:
        raise ProbeError(f"scores must be (n, C), got shape {s.shape}")
    n, C = s.shape
    if n == 0:
        raise ProbeError("no examples to evaluate", hint="check the split/indices given for evaluation")
    if multilabel:
        if y.shape != s.shape:
            raise ProbeError(f"multi-label labels {y.shape} do not match scores {s.shape}")
        yb = (y > 0.5).astype(np.int64)
        pred = (s >= 0.5).astype(np.int64)  # == round(sigmoid) as the BAT evaluator
    else:
        if y.ndim != 1 or len(y) != n:
            raise ProbeError(f"multi-class labels must be (n,) = ({n},), got {y.shape}")
        yi = y.astype(np.int64)
        if yi.min() < 0 or yi.max() >= C:
            raise ProbeError(f"class index out of range [0, {C}) in labels")
        yb = np.zeros((n, C), dtype=np.int64)
        yb[np.arange(n), yi] = 1
        pred = np.zeros((n, C), dtype=np.int64)
        pred[np.arange(n), s.argmax(1)] = 1
    ap = _per_class_ap(yb, s)
    positives = yb.sum(0)
    f1_per = f1_score(yb, pred, average=None, zero_division=0)
    out: dict[str, Any] = {
        "mAP": float(ap.mean() * 100),
        "f1_macro": float(f1_score(yb, pred, average="macro", zero_division=0) * 100),
        "f1_micro": float(f1_score(yb, pred, average="micro", zero_division=0) * 100),
    }
    if multilabel:
        ok = positives >= 5
        out["cmAP5"] = float(ap[ok].mean() * 100) if ok.any() else float("nan")
        out["primary"] = "mAP"
    else:
        out["accuracy"] = float((s.argmax(1) == yi).mean() * 100)
        out["primary"] = "accuracy"
    out["per_class"] = {
        "ap": (ap * 100).tolist(),
        "f1": (np.asarray(f1_per) * 100).tolist(),
        "positives": positives.astype(int).tolist(),
    }
    out["num_examples"] = int(n)
    return out


def primary_value(metrics: Mapping[str, Any]) -> float:
    """The headline number of a metrics dict or EvalResult."""
    if isinstance(metrics, EvalResult):
        return metrics.primary
    return float(metrics[metrics["primary"]])


@dataclass(frozen=True)
class EvalResult(Mapping):
    """Metrics of one evaluation, typed: which metric is the headline, every scalar metric (percent),
    per-class scores, and -- for probes with several heads (the layer sweep) -- one result per head.

    `heads` is keyed by the probe's `head_names()` ("block1", ...). The top level holds the metrics of
    `selected_head` when a head was chosen (on validation data, never on test), else of the last head.
    For cross-validation `std` (population std per metric), `folds` (primary per fold) are set.

    It also reads as the plain dict that earlier versions returned (`m["accuracy"]`, `m["primary"]`,
    `m["per_class"]`, `m["num_examples"]`), so code written against that keeps working.
    """

    primary_name: str
    metrics: dict[str, float]
    per_class: dict[str, list] | None = None
    num_examples: int = 0
    heads: dict[str, EvalResult] | None = None
    selected_head: str | None = None
    head_selection: str | None = None  # how the head was chosen, e.g. "validation (holdout 10% of train)"
    std: dict[str, float] | None = None
    folds: list[float] | None = None
    fold: int | None = None

    @property
    def primary(self) -> float:
        """The headline number (percent)."""
        return float(self.metrics[self.primary_name])

    def head_primaries(self) -> dict[str, float]:
        """{head name: primary value} (empty for single-head results)."""
        return {k: h.primary for k, h in (self.heads or {}).items()}

    def select_head(self, name: str, how: str) -> EvalResult:
        """This result with head `name`'s metrics on top (the heads stay available, e.g. for plotting)."""
        h = self.heads[name]  # type: ignore[index]
        return replace(self, metrics=dict(h.metrics), per_class=h.per_class, selected_head=name,
                       head_selection=how)

    @classmethod
    def from_metrics(cls, m: Mapping[str, Any]) -> EvalResult:
        """From `compute_metrics`'s dict."""
        scalars = {k: float(v) for k, v in m.items()
                   if k not in ("num_examples", "fold") and isinstance(v, (int, float)) and not isinstance(v, bool)}
        return cls(primary_name=str(m["primary"]), metrics=scalars, per_class=m.get("per_class"),
                   num_examples=int(m.get("num_examples", 0)), fold=m.get("fold"))

    # ---- checkpoints: plain containers only (torch.load(weights_only=True) reads them back) ----------
    def state_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("primary_name", "metrics", "per_class", "num_examples",
                                             "selected_head", "head_selection", "std", "folds", "fold")}
        d["heads"] = None if self.heads is None else {k: h.state_dict() for k, h in self.heads.items()}
        return d

    @classmethod
    def from_state_dict(cls, d: Mapping[str, Any]) -> EvalResult:
        heads = d.get("heads")
        return cls(**{**d, "heads": None if heads is None else {k: cls.from_state_dict(h) for k, h in heads.items()}})

    # ---- the legacy dict view -------------------------------------------------------------------------
    def _legacy(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.metrics)
        out["primary"] = self.primary_name
        if self.per_class is not None:
            out["per_class"] = self.per_class
        out["num_examples"] = self.num_examples
        if self.fold is not None:
            out["fold"] = self.fold
        if self.std is not None:
            out["std"] = self.std
        if self.folds is not None:
            out["folds"] = self.folds
        return out

    def __getitem__(self, key: str) -> Any:
        return self._legacy()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._legacy())

    def __len__(self) -> int:
        return len(self._legacy())


def evaluate_scores(scores: np.ndarray, labels: np.ndarray, multilabel: bool,
                    head_names: list[str] | None = None) -> EvalResult:
    """`compute_metrics` as an EvalResult, extended to multi-head scores (n, H, C): then `heads` holds
    each head's result under `head_names` (default "head1".."headH") and the top level the last head's."""
    if scores.ndim == 2:
        return EvalResult.from_metrics(compute_metrics(scores, labels, multilabel))
    names = list(head_names) if head_names is not None else [f"head{h + 1}" for h in range(scores.shape[1])]
    if len(names) != scores.shape[1]:
        raise ProbeError(f"{scores.shape[1]} heads scored but {len(names)} head names given")
    heads = {n: EvalResult.from_metrics(compute_metrics(scores[:, h], labels, multilabel))
             for h, n in enumerate(names)}
    last = heads[names[-1]]
    return replace(last, heads=heads)


#: Headline metrics where smaller is better (ASR error rates); every other metric is larger-is-better.
LOWER_IS_BETTER = frozenset({"WER", "CER"})


def at_least_as_good(metrics: EvalResult, new: float, old: float) -> bool:
    """`new >= old` for the headline metric of `metrics`, `new <= old` for an error rate (WER)."""
    return new <= old if metrics.primary_name in LOWER_IS_BETTER else new >= old

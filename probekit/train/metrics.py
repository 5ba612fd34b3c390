"""Evaluation metrics, in percent as the BAT evaluator reports them.

Multi-label: macro mAP with scikit-learn semantics (a class without positives gets AP 0 and still counts,
exactly as `average_precision_score(average="macro")` in BAT's evaluator), cmAP5 (mean AP over classes
with >= 5 positives, bioacoustics), micro/macro F1 at threshold 0.5 (scores rounded, zero_division=0).
Multi-class: accuracy (argmax), macro mAP of the one-hot labels against the scores, micro/macro F1 of argmax.

HEAR's other scene scores (hear-eval-kit heareval/score.py), computed only when a dataset asks for them
(`DatasetSpec.score_metrics`, e.g. a HEAR task's `evaluation` list), on the one-hot/multi-hot targets:
`aucroc` (percent): macro ROC AUC (roc_auc_score(average="macro")); `d_prime` (unitless, not percent):
mean over classes of sqrt(2) * Phi^-1(per-class AUC); `chroma_accuracy` (percent): argmax class index and
target class index compared mod 12 (octave errors forgiven; the class index is the pitch up to an offset in
HEAR's vocabulary of consecutive MIDI pitches). As HEAR, aucroc and d_prime are NaN when any class has no
positive or no negative example (sklearn's ValueError), and a class with AUC 1 gives d_prime inf.
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


#: HEAR's scene scores probekit computes on request: EvalResult key -> function (targets (n, C) 0/1, scores).
HEAR_EXTRA = ("aucroc", "d_prime", "chroma_accuracy")


def aucroc(targets: np.ndarray, scores: np.ndarray) -> float:
    """HEAR's `aucroc`: macro ROC AUC (a fraction); NaN when sklearn refuses (a class with one value only)."""
    from sklearn.metrics import roc_auc_score

    if not _roc_defined(targets):
        return float("nan")
    try:
        return float(roc_auc_score(targets, scores, average="macro"))
    except ValueError:
        return float("nan")


def d_prime(targets: np.ndarray, scores: np.ndarray) -> float:
    """HEAR's `d_prime`: per-class AUC -> sqrt(2) * norm.ppf(AUC), averaged over classes (NaN as aucroc)."""
    from scipy.stats import norm
    from sklearn.metrics import roc_auc_score

    if not _roc_defined(targets):
        return float("nan")
    try:
        auc = np.asarray(roc_auc_score(targets, scores, average=None), dtype=np.float64)
    except ValueError:
        return float("nan")
    with np.errstate(divide="ignore"):  # AUC 1 -> inf, as scipy (and HEAR) give it
        return float(np.mean(norm.ppf(auc) * np.sqrt(2.0)))


def chroma_accuracy(targets: np.ndarray, scores: np.ndarray) -> float:
    """HEAR's `chroma_acc` (a fraction): argmax of scores vs argmax of targets, compared mod 12."""
    t = np.asarray(targets).argmax(1)
    p = np.asarray(scores).argmax(1)
    return float(np.mean(p % 12 == t % 12))


def _roc_defined(targets: np.ndarray) -> bool:
    """Every class has a positive and a negative (else HEAR's roc_auc_score call fails -> NaN); checked
    here so sklearn's per-class "only one class present" warnings do not flood small evaluations."""
    t = np.asarray(targets)
    pos = (t > 0).sum(0)
    return t.ndim == 2 and len(t) > 0 and bool(np.all((pos > 0) & (pos < len(t))))


_EXTRA_FNS = {"aucroc": (aucroc, 100.0), "d_prime": (d_prime, 1.0), "chroma_accuracy": (chroma_accuracy, 100.0)}


def _check_requested(score_metrics: tuple[str, ...], multilabel: bool) -> None:
    known = ("mAP", "accuracy", *HEAR_EXTRA) if not multilabel else ("mAP", "aucroc", "d_prime")
    bad = [m for m in score_metrics if m not in known]
    if bad:
        raise ProbeError(f"metric {bad[0]!r} is not computed for {'multi-label' if multilabel else 'multi-class'} "
                         f"data", hint=f"known: {', '.join(known)}")


def compute_metrics(scores: np.ndarray, labels: np.ndarray, multilabel: bool,
                    score_metrics: tuple[str, ...] = ()) -> dict[str, Any]:
    """Metrics of scores (n, C) (probabilities: sigmoid or softmax) against labels.

    Args:
        scores: (n, C) float.
        labels: (n, C) multi-hot when multilabel, else (n,) integer class indices.
        multilabel: which family of metrics.
        score_metrics: metrics the dataset asks for (EvalResult keys, first = the headline), e.g. a HEAR
            task's ("d_prime", "aucroc", "mAP"); the HEAR_EXTRA among them are added, and the first becomes
            "primary". Empty: the default headline (mAP / accuracy) and no extra metric.

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
    if score_metrics:
        _check_requested(tuple(score_metrics), multilabel)
        for name in score_metrics:
            if name in _EXTRA_FNS:
                fn, scale = _EXTRA_FNS[name]
                out[name] = fn(yb, s) * scale
        out["primary"] = score_metrics[0]
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
                    head_names: list[str] | None = None, score_metrics: tuple[str, ...] = ()) -> EvalResult:
    """`compute_metrics` as an EvalResult, extended to multi-head scores (n, H, C): then `heads` holds
    each head's result under `head_names` (default "head1".."headH") and the top level the last head's."""
    if scores.ndim == 2:
        return EvalResult.from_metrics(compute_metrics(scores, labels, multilabel, score_metrics))
    names = list(head_names) if head_names is not None else [f"head{h + 1}" for h in range(scores.shape[1])]
    if len(names) != scores.shape[1]:
        raise ProbeError(f"{scores.shape[1]} heads scored but {len(names)} head names given")
    heads = {n: EvalResult.from_metrics(compute_metrics(scores[:, h], labels, multilabel, score_metrics))
             for h, n in enumerate(names)}
    last = heads[names[-1]]
    return replace(last, heads=heads)


#: Headline metrics where smaller is better (ASR error rates); every other metric is larger-is-better.
LOWER_IS_BETTER = frozenset({"WER", "CER"})


def at_least_as_good(metrics: EvalResult, new: float, old: float) -> bool:
    """`new >= old` for the headline metric of `metrics`, `new <= old` for an error rate (WER)."""
    return new <= old if metrics.primary_name in LOWER_IS_BETTER else new >= old


def score_metrics_of(data: Any) -> tuple[str, ...]:
    """The metrics a token source's dataset asks for (`DatasetSpec.score_metrics`, attached by
    `attach_score_metrics`); () for everything else (default metrics, unchanged)."""
    return tuple(getattr(data, "score_metrics", ()) or ())


def attach_score_metrics(spec: Any, *sources: Any) -> None:
    """Mark token sources with their dataset's requested metrics so evaluation computes them."""
    wanted = tuple(getattr(spec, "score_metrics", ()) or ())
    if not wanted:
        return
    for src in sources:
        if src is not None:
            try:
                src.score_metrics = wanted
            except AttributeError:  # a read-only source: default metrics (no crash)
                pass

"""Sound event detection on token grids: frame targets, post-processing, event metrics.

Re-derived from the official BAT code (`houtan-ghaffari/BAT_ICML2026`):
  * targets (data/bat_audio_datasets.py `DCASE2016Task2Dataset`): token time row t sits at
    t * row_ms ("patch centers", row_ms = frames per token row * frontend hop: 16 * 10 ms = 160 ms for
    BAT's 16x16 patches); class c is active at row t when onset_ms <= t * row_ms <= offset_ms of one of
    its events. Padded rows after the audio are targets 0 as any other.
  * loss (engine/trainer.py): `F.binary_cross_entropy_with_logits` over every (clip, row, class): probekit's
    "bce" loss (the "auto" loss of multi-label data) on (B, T, C).
  * post-processing (engine/evaluator.py `tokens_to_events`): per class, `scipy.signal.medfilt` of the
    row probabilities (kernel `median_filter`, 3) -> `>= threshold` (0.3) -> runs of active rows; an event
    runs from its first row's time to its last row's time.
  * metrics: HEAR's (hear-eval-kit, and the official `eval_test_set_dcase`) via sed_eval: event-based F1
    with a 200 ms onset collar, offsets ignored (`event_onset_200ms_fms`, the primary metric of HEAR's
    DCASE 2016 task 2 and the official test metric `onset_f1_micro`), segment-based (1 s) F1 and error rate
    (`segment_1s_f1`, `segment_1s_er`; the error rate is a fraction, lower is better), plus the official
    frame-level metrics over every (clip, row): `f1_micro`, `mAP_micro` (the official validation metric),
    `f1_macro`, `mAP_macro`, all in percent; PSDS1/PSDS2 (DCASE 2021+ parameters, psds_eval) on test.
  * validation selection (engine/trainer.py, task dcase2016_task2): `metric_to_track = 'mAP_micro'` of
    `evaluate_dcase_val`, kept with `new >= old` (a later step with an equal score wins). probekit selects on
    the same frame mAP_micro (`SELECTION_METRIC`; `fit` records it as the history's `val_metric`), not on the
    event F1. The rows scored are those inside the clip's audio (the official validation scores the padded
    rows too; for DCASE 2016 task 2, whose clips all fill the 750 rows, the two agree).
  * post-processing parameters are NOT chosen on validation by the official code: `eval_test_set_dcase` is
    called with threshold 0.3 and filter_size 3 after training. probekit does the same (the probe's
    `threshold`/`median_filter`, defaults 0.3/3, recorded in the record's extras `postprocessing`). HEAR's
    eval kit instead grid-searches median_filter_ms/min_duration on validation; probekit does not do that.

Hostile annotations (handled as the official code does, documented and tested): two events of one class that
overlap are both kept (their frame targets are the union, each is one reference event for sed_eval, as
`eval_test_set_dcase`); PSDS, whose psds_eval refuses intersecting events of one class, scores their union.
Events ending after the clip's audio, zero-length events, labels missing from the vocabulary and HEAR times
given in seconds instead of milliseconds are refused when the dataset is read (`probekit.datasets.events`).

`FrameTokens` wraps any TokenData (cache reader, live backbone, in-memory tokens) of an event task: its
batches carry (B, T, C) frame targets and the token grid; `labels` is (clips, T, C). Only frame-wise probes
(`probekit.probes.framewise`) train on it; `event_task` scores their predictions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probekit.errors import ConfigError, ProbeError
from probekit.tokens import TokenBatch

EXTRA_HINT = "pip install 'probekit[events]' (sed_eval, psds_eval)"
#: HEAR's names of the event metrics (hear-eval-kit task_metadata "evaluation").
PRIMARY = "event_onset_200ms_fms"
ONSET_COLLAR_S = 0.200
SEGMENT_S = 1.0
#: The official trainer's validation metric for dcase2016_task2 (engine/trainer.py `metric_to_track`).
SELECTION_METRIC = "mAP_micro"
#: DCASE 2021-2024 task 4 PSDS scenarios (psds_eval PSDSEval thresholds and psds() weights), max eFPR 100/hour.
PSDS_SCENARIOS = {
    # PSDS1's cross-trigger threshold is unused (alpha_ct 0); psds_eval needs a number: 0.3 as the baseline passes
    "psds1": {"dtc_threshold": 0.7, "gtc_threshold": 0.7, "cttc_threshold": 0.3, "alpha_ct": 0.0, "alpha_st": 1.0},
    "psds2": {"dtc_threshold": 0.1, "gtc_threshold": 0.1, "cttc_threshold": 0.3, "alpha_ct": 0.5, "alpha_st": 1.0},
}
PSDS_MAX_EFPR = 100.0
#: The DCASE baseline's 50 operating points: thresholds 0.01, 0.03, ..., 0.99.
PSDS_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(1 / 100, 1, 1 / 50), 6))


def selection_value(metrics) -> float:
    """The value `fit` selects the best validation step on for an event task: frame mAP_micro (official)."""
    return float(metrics.metrics[SELECTION_METRIC])


def is_event_result(metrics) -> bool:
    """True for an EvalResult of an event task (headline: the event F1; selection: mAP_micro)."""
    return getattr(metrics, "primary_name", None) == PRIMARY and SELECTION_METRIC in getattr(metrics, "metrics", {})


def frame_heads() -> tuple[str, ...]:
    from probekit.probes.framewise import FRAME_HEADS

    return FRAME_HEADS


def is_frame_wise(probe_or_name: Any) -> bool:
    """True for a frame-wise probe (class, instance or registered name)."""
    if isinstance(probe_or_name, str):
        from probekit.probes import get_probe_class

        probe_or_name = get_probe_class(probe_or_name)
    return bool(getattr(probe_or_name, "frame_wise", False))


def refuse_clip_probe(name: str, dataset: str) -> ProbeError:
    heads = ", ".join(frame_heads())
    return ProbeError(f"{dataset} is an event (timestamp) task: clip-level probe {name!r} cannot train on it",
                      hint=f"use a frame-wise head: {heads}")


def check_probes_for(dataset, probes: Sequence[str]) -> None:
    """Before any extraction: an event dataset takes frame-wise probes only, a clip dataset clip-level only."""
    event = getattr(dataset, "kind", None) == "event"
    for name in probes:
        fw = is_frame_wise(name)
        if event and not fw:
            raise refuse_clip_probe(name, dataset.name)
        if fw and not event:
            raise ProbeError(f"frame-wise probe {name!r} needs an event (timestamp) task; {dataset.name} has clip labels",
                             hint="use an events:PATH.csv manifest or a HEAR event task (hear:PATH), or a clip-level probe")


def check_fit(probe, data) -> None:
    """`fit`'s check: frame-wise probes on FrameTokens, clip-level probes on clip data."""
    task = getattr(data, "event_task", None)
    fw = is_frame_wise(probe)
    if task is not None and not fw:
        raise refuse_clip_probe(probe.name, task.name)
    if fw and task is None:
        raise ProbeError(f"frame-wise probe {probe.name!r} needs frame targets",
                         hint="train it on an event task: probekit.train.events.FrameTokens(tokens, events, ...)")


# ---- time axis ----------------------------------------------------------------------------------------
def frame_hop_seconds(config) -> float:
    """Seconds between two frontend frames: the kaldi fbank's frame shift in samples, or the STFT hop."""
    sr = float(config.sample_rate)
    if getattr(config, "kind", None) == "fbank":
        return config.shift_samples / sr
    if getattr(config, "kind", None) == "bat":
        return config.hop_length / sr
    raise ConfigError(f"frontend {getattr(config, 'kind', type(config).__name__)!r} has no known frame hop",
                      hint="event tasks need an fbank or bat frontend")


def seconds_per_row(config, grid: Sequence[int]) -> float:
    """Seconds per token time row: frames per row (target_frames / rows, the patch's time size) * hop."""
    frames, rows = config.target_frames, int(grid[0])
    if not frames or rows < 1:
        raise ConfigError(f"cannot time the token rows: {frames} frames for {rows} rows")
    per_row = frames // rows
    if per_row < 1 or frames // per_row != rows:
        raise ConfigError(f"{frames} frames do not split into {rows} token rows of equal length")
    return per_row * frame_hop_seconds(config)


def row_times_ms(num_rows: int, row_s: float) -> np.ndarray:
    """The official "patch centers": t * row_ms (the start of each row's frames)."""
    return np.round(np.arange(num_rows, dtype=np.float64) * (row_s * 1000.0), 6)


def frame_targets(events: Sequence, num_rows: int, num_classes: int, row_s: float) -> np.ndarray:
    """(T, C) float32 multi-hot: row t active for class c when onset <= t*row <= offset (ms, official)."""
    y = np.zeros((num_rows, num_classes), dtype=np.float32)
    centers = row_times_ms(num_rows, row_s)
    for e in events:
        on, off = np.round(e.onset * 1000.0, 6), np.round(e.offset * 1000.0, 6)
        y[(centers >= on) & (centers <= off), int(e.label)] = 1.0
    return y


def frames_to_events(probs: np.ndarray, row_s: float, threshold: float, median_filter: int) -> list[tuple[float, float]]:
    """The official `tokens_to_events` for one class: (onset, offset) seconds of each run of active rows."""
    from scipy.signal import medfilt

    p = np.asarray(probs, dtype=np.float64)
    if median_filter > 1:
        p = medfilt(p, kernel_size=int(median_filter))
    active = (p >= threshold).astype(np.int64)
    d = np.diff(np.pad(active, (1, 1), "constant"))
    onsets, offsets = np.where(d == 1)[0], np.where(d == -1)[0]
    t_ms = np.arange(len(p), dtype=np.float64) * (row_s * 1000.0)
    return [(max(0.0, t_ms[on]) / 1000.0, t_ms[off - 1] / 1000.0) for on, off in zip(onsets, offsets)]


# ---- metrics ------------------------------------------------------------------------------------------
def _sed_eval():
    try:
        import sed_eval
    except ImportError:
        raise ConfigError("event metrics need sed_eval, which is not installed", hint=EXTRA_HINT) from None
    return sed_eval


def event_metrics(reference: Sequence[list[dict]], estimated: Sequence[list[dict]], classes: Sequence[str],
                  durations: Sequence[float | None] | None = None) -> dict[str, Any]:
    """HEAR's event metrics over files: lists (one per file) of {event_label, event_onset, event_offset}."""
    sed_eval = _sed_eval()
    labels = list(classes)
    ev = sed_eval.sound_event.EventBasedMetrics(event_label_list=labels, t_collar=ONSET_COLLAR_S,
                                                evaluate_onset=True, evaluate_offset=False)
    seg = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=labels, time_resolution=SEGMENT_S)
    durations = list(durations) if durations is not None else [None] * len(reference)
    for ref, est, dur in zip(reference, estimated, durations):
        ev.evaluate(reference_event_list=ref, estimated_event_list=est)
        length = max([dur or 0.0, *[e["event_offset"] for e in ref], *[e["event_offset"] for e in est]])
        seg.evaluate(reference_event_list=ref, estimated_event_list=est,
                     evaluated_length_seconds=length if length > 0 else None)
    er, sr = ev.results(), seg.results()
    out = {
        PRIMARY: er["overall"]["f_measure"]["f_measure"] * 100.0,
        "event_onset_200ms_precision": er["overall"]["f_measure"]["precision"] * 100.0,
        "event_onset_200ms_recall": er["overall"]["f_measure"]["recall"] * 100.0,
        "segment_1s_f1": sr["overall"]["f_measure"]["f_measure"] * 100.0,
        "segment_1s_er": float(sr["overall"]["error_rate"]["error_rate"]),
    }
    # a class with no reference and no estimate has an undefined F1 in sed_eval (NaN): 0, as zero_division=0
    per_class = [float(np.nan_to_num(er["class_wise"][c]["f_measure"]["f_measure"] * 100.0, nan=0.0)) for c in labels]
    return {"metrics": {k: float(np.nan_to_num(v, nan=0.0)) for k, v in out.items()}, "per_class_f1": per_class}


def merge_overlaps(events: Sequence[dict]) -> list[dict]:
    """One file's events with overlapping (or touching) events of one label merged into their union."""
    out: list[dict] = []
    for e in sorted(events, key=lambda e: (e["event_label"], e["event_onset"], e["event_offset"])):
        last = out[-1] if out else None
        if last is not None and last["event_label"] == e["event_label"] and e["event_onset"] <= last["event_offset"]:
            last["event_offset"] = max(last["event_offset"], e["event_offset"])
        else:
            out.append(dict(e))
    return out


def _psds_eval_class():
    """psds_eval's PSDSEval, with its ROC step interpolation working under pandas >= 3.

    psds_eval 0.5.3 (its last release) forward-fills with `fillna(method="ffill")`, which pandas 3 removed;
    `step_curve` here is the same computation with `ffill()`. Everything else is psds_eval's own.
    """
    try:
        from psds_eval import PSDSEval
    except ImportError:
        raise ConfigError("PSDS needs psds_eval, which is not installed", hint=EXTRA_HINT) from None
    import pandas as pd

    class _PSDSEval(PSDSEval):
        @staticmethod
        def step_curve(x, xp, yp):
            roc = pd.DataFrame({"x": xp, "y": yp}).groupby("x").agg("max").reset_index().sort_values(by="x")
            if x.size < roc.x.size:
                from psds_eval.psds import PSDSEvalError

                raise PSDSEvalError(f"x: {x.size}, xp: {xp.size}")
            roc.y = roc.y.cummax()  # sub-optimal operating points are ignored (non-decreasing ROC)
            merged = pd.merge(pd.Series(x, name="x"), roc, how="outer", on="x")
            return merged.ffill().fillna(value=0).y.values

        @staticmethod
        def _auc(x, y, max_x=None, decreasing_y=False):
            # psds_eval inserts max_x with `int(np.argwhere(...))`, an error under numpy >= 2.3: insert it here
            # the same way (after the sorted x values below it, repeating the y before it), then its own _auc
            if max_x is not None and isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and (
                    x.ndim == 1 and x.size == y.size and max_x not in x):
                i = int(np.searchsorted(np.sort(x), max_x))
                x = np.sort(np.concatenate([x, [max_x]]))
                y = np.concatenate([y[:i], [y[i - 1]], y[i:]])
            return PSDSEval._auc(x, y, max_x, decreasing_y)

    return _PSDSEval


def psds_scores(reference: Sequence[list[dict]], operating_points: dict[float, Sequence[list[dict]]],
                durations: Sequence[float], classes: Sequence[str], *,
                scenarios: dict[str, dict] | None = None, max_efpr: float = PSDS_MAX_EFPR) -> dict[str, float]:
    """PSDS per scenario (default PSDS1 and PSDS2 of DCASE 2021+), in [0, 1], via psds_eval.

    reference: per file, its {event_label, event_onset, event_offset} (overlaps of one label are merged);
    operating_points: {threshold: per file, its detected events}; durations: per file, seconds of audio.
    Files are named by position. Scored over the classes with a reference event (psds_eval needs each class's
    ground-truth duration; detections of the other classes are left out). Empty where PSDS does not apply:
    fewer than two such classes (psds_eval's effective FP rate is `fpr + alpha_ct * nanmean(cross-trigger
    rates)`, NaN without a second class, which scores 0 whatever the detections).
    """
    import pandas as pd

    present = {e["event_label"] for ref in reference for e in ref if e["event_offset"] > e["event_onset"]}
    classes = [c for c in classes if c in present]
    if len(classes) < 2:
        return {}
    operating_points = {t: [[e for e in est if e["event_label"] in present] for est in op]
                        for t, op in operating_points.items()}

    PSDSEval = _psds_eval_class()
    gt = [(f"f{i}", e["event_onset"], e["event_offset"], e["event_label"])
          for i, ref in enumerate(reference) for e in merge_overlaps(ref)
          if e["event_offset"] > e["event_onset"]]
    if not gt:
        return {}
    cols = ["filename", "onset", "offset", "event_label"]
    gt_t = pd.DataFrame(gt, columns=cols)
    meta_t = pd.DataFrame([(f"f{i}", float(d)) for i, d in enumerate(durations)], columns=["filename", "duration"])
    out = {}
    with warnings.catch_warnings():  # psds_eval: pandas deprecations, "a similar operating point exists"
        warnings.simplefilter("ignore")
        for name, sc in (scenarios or PSDS_SCENARIOS).items():
            out[name] = _psds_one(PSDSEval, sc, gt_t, meta_t, operating_points, classes, max_efpr)
    return out


def _psds_one(PSDSEval, sc, gt_t, meta_t, operating_points, classes, max_efpr) -> float:
    import pandas as pd

    cols = list(gt_t.columns)
    kw = {k: sc[k] for k in ("dtc_threshold", "gtc_threshold", "cttc_threshold")}
    ev = PSDSEval(**kw, ground_truth=gt_t, metadata=meta_t, class_names=list(classes))
    for thr in sorted(operating_points):
        det = [(f"f{i}", e["event_onset"], e["event_offset"], e["event_label"])
               for i, est in enumerate(operating_points[thr]) for e in merge_overlaps(est)]
        ev.add_operating_point(pd.DataFrame(det, columns=cols), info={"threshold": thr})
    return float(ev.psds(alpha_ct=sc["alpha_ct"], alpha_st=sc["alpha_st"], max_efpr=max_efpr).value)



@dataclass
class EventTask:
    """How predictions of an event task are scored: the clips' events, row timing and class names."""

    name: str
    classes: tuple[str, ...]
    events: list[tuple]  # per clip position: its Events (label index, onset s, offset s)
    row_s: float
    num_rows: int
    durations: list[float | None]

    def valid_rows(self, i: int) -> int:
        """Rows that start within the clip's audio (all rows when its duration is unknown)."""
        d = self.durations[i]
        if d is None:
            return self.num_rows
        return int(min(self.num_rows, max(1, math.ceil(d / self.row_s - 1e-9))))

    def evaluate(self, scores: np.ndarray, indices: Sequence[int] | np.ndarray | None, probe=None, *,
                 psds: bool = False):
        """EvalResult of per-row probabilities (n, T, C) of the clips `indices` (default all).

        psds: also PSDS1/PSDS2 (`psds_scores`, percent) from the scores at `PSDS_THRESHOLDS` (test only:
        50 operating points). Clips of unknown duration count the token grid's length.
        """
        from sklearn.metrics import f1_score

        from probekit.train.metrics import EvalResult, _per_class_ap

        s = np.asarray(scores, dtype=np.float64)
        idx = np.arange(len(self.events)) if indices is None else np.asarray(indices, dtype=np.int64)
        if s.ndim != 3 or s.shape[0] != len(idx) or s.shape[2] != len(self.classes):
            raise ProbeError(f"event scores must be (clips, rows, classes) = ({len(idx)}, T, {len(self.classes)}), "
                             f"got {s.shape}")
        post = probe.postprocessing() if hasattr(probe, "postprocessing") else {}
        thr, k = float(post.get("threshold", 0.3)), int(post.get("median_filter", 3))
        refs, ests, durs, ys, ps = [], [], [], [], []
        for j, i in enumerate(idx):
            rows = self.valid_rows(int(i))
            ref = [{"event_label": self.classes[e.label], "event_onset": float(e.onset),
                    "event_offset": float(e.offset)} for e in self.events[i]]
            est = []
            for c, cname in enumerate(self.classes):
                for on, off in frames_to_events(s[j, :rows, c], self.row_s, thr, k):
                    est.append({"event_label": cname, "event_onset": on, "event_offset": off})
            refs.append(ref)
            ests.append(est)
            durs.append(self.durations[int(i)])
            ys.append(frame_targets(self.events[i], s.shape[1], len(self.classes), self.row_s)[:rows])
            ps.append(s[j, :rows])
        ev = event_metrics(refs, ests, self.classes, durs)
        extra = {}
        if psds:
            ops = {t: [[{"event_label": cname, "event_onset": on, "event_offset": off}
                        for c, cname in enumerate(self.classes)
                        for on, off in frames_to_events(s[j, :self.valid_rows(int(i)), c], self.row_s, t, k)]
                       for j, i in enumerate(idx)] for t in PSDS_THRESHOLDS}
            lengths = [d if d is not None else self.num_rows * self.row_s for d in durs]
            extra = {name: v * 100.0 for name, v in psds_scores(refs, ops, lengths, self.classes).items()}
        y, p = (np.concatenate(ys) > 0.5).astype(np.int64), np.concatenate(ps)
        ap = _per_class_ap(y, p)
        from sklearn.metrics import average_precision_score

        metrics = dict(ev["metrics"])
        metrics.update({
            "f1_micro": float(f1_score(y, p >= 0.5, average="micro", zero_division=0) * 100),
            "f1_macro": float(f1_score(y, p >= 0.5, average="macro", zero_division=0) * 100),
            "mAP_micro": float(average_precision_score(y.ravel(), p.ravel()) * 100) if y.any() else 0.0,
            "mAP_macro": float(ap.mean() * 100),
        })
        metrics.update(extra)
        per_class = {"ap": (ap * 100).tolist(), "f1": ev["per_class_f1"], "positives": y.sum(0).astype(int).tolist()}
        return EvalResult(primary_name=PRIMARY, metrics=metrics, per_class=per_class, num_examples=int(len(idx)))


def join_event_tasks(tasks: Sequence[EventTask | None]) -> EventTask:
    """One EventTask over several in order (ConcatTokens of FrameTokens, e.g. cross-validation folds)."""
    if any(t is None for t in tasks):
        raise ProbeError("cannot join an event task with clip-level token data (no frame targets)",
                         hint="join token data of the same event dataset only")
    first = tasks[0]
    for t in tasks[1:]:
        for key in ("classes", "num_rows"):
            if getattr(t, key) != getattr(first, key):
                raise ProbeError(f"cannot join event tasks: {key} differs ({getattr(first, key)} vs {getattr(t, key)})",
                                 hint="extract every part with the same backbone and clip length")
        if not math.isclose(t.row_s, first.row_s, rel_tol=1e-9):
            raise ProbeError(f"cannot join event tasks: token rows of {first.row_s:g} s vs {t.row_s:g} s")
    return EventTask(first.name, first.classes, [e for t in tasks for e in t.events], first.row_s, first.num_rows,
                     [d for t in tasks for d in t.durations])


# ---- token data ---------------------------------------------------------------------------------------
class FrameTokens:
    """TokenData of an event task: `base`'s tokens with (B, T, C) frame targets and the token grid.

    Args:
        base: any TokenData (CacheReader, OnlineTokens, InMemoryTokens) of the event task's clips.
        events: per clip position of `base`, its events (objects with label, onset, offset in seconds).
        row_s: seconds per token time row (`seconds_per_row`).
        classes: class names (default: base.classes).
        durations: per clip, seconds of audio (predictions after it are not scored), or None.
        name: the dataset's name (messages).
    """

    multilabel = True

    def __init__(self, base, events: Sequence[Sequence], row_s: float, *, classes: Sequence[str] | None = None,
                 durations: Sequence[float | None] | None = None, name: str = "event task"):
        if len(events) != base.num_clips:
            raise ProbeError(f"{len(events)} event lists for {base.num_clips} clips")
        if not (row_s > 0 and math.isfinite(row_s)):
            raise ConfigError(f"seconds per token row must be positive, got {row_s}")
        self.base = base
        classes = tuple(classes if classes is not None else getattr(base, "classes", ()))
        if len(classes) != base.num_classes:
            raise ProbeError(f"{len(classes)} class names for {base.num_classes} classes")
        rows = int(base.grid[0])
        for evs in events:
            for e in evs:
                if not 0 <= int(e.label) < base.num_classes:
                    raise ProbeError(f"event label {e.label} out of range [0, {base.num_classes})")
        self.event_task = EventTask(name, classes, [tuple(evs) for evs in events], float(row_s), rows,
                                    list(durations) if durations is not None else [None] * len(events))
        self.labels = np.stack([frame_targets(e, rows, base.num_classes, row_s) for e in events]) if len(events) else (
            np.zeros((0, rows, base.num_classes), np.float32))

    @property
    def classes(self) -> tuple[str, ...]:
        return self.event_task.classes

    def __getattr__(self, name: str):  # num_clips, grid, store, cache_key, clip_ids, ... of the base
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def batches(self, request, batch_size: int, **kwargs) -> Iterator[TokenBatch]:
        for b in self.base.batches(request, batch_size, **kwargs):
            y = torch.from_numpy(self.labels[b.index.cpu().numpy()])
            yield TokenBatch(b.patch, b.cls, y, b.valid_rows, b.index, tuple(int(v) for v in self.base.grid))

    def __len__(self) -> int:
        return self.base.num_clips

    def __repr__(self) -> str:
        return f"FrameTokens({self.base!r}, rows of {self.event_task.row_s * 1000:g} ms)"


def with_frame_targets(tokens, plan):
    """`tokens` of `plan` as FrameTokens when the plan's dataset is an event task; else unchanged."""
    ds = plan.dataset
    if getattr(ds, "kind", None) != "event" or tokens is None:
        return tokens
    from probekit.datasets.events import file_duration

    by_id = {c.id: c for c in ds.events(plan.split)}
    ids = [str(i) for i in tokens.clip_ids]
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ConfigError(f"{ds.name}/{plan.split}: tokens of clip {missing[0]!r} have no events listed",
                          hint="re-extract the cache for this dataset")
    row_s = seconds_per_row(plan.backbone.frontend.config, tokens.grid)
    clips = [by_id[i] for i in ids]
    durations = [file_duration(c.path) if c.path.is_file() else None for c in clips]
    return FrameTokens(tokens, [c.events for c in clips], row_s, classes=ds.spec.classes, durations=durations,
                       name=ds.name)

"""`hear:PATH`: a task folder as hear-preprocess writes it (HEAR 2021 benchmark, hearbenchmark/hear-preprocess).

Layout read (nothing else):

* `task_metadata.json`: `task_name`, `embedding_type` ("scene" | "event"), `prediction_type`
  ("multiclass" | "multilabel"), `split_mode` ("trainvaltest" | "new_split_kfold" | "presplit_kfold" |
  "folds"), `nfolds` (k-fold modes), `sample_duration` (s, optional), `evaluation` (metric names, the first
  is HEAR's primary score).
* `labelvocabulary.csv`: columns `idx,label` (the class order).
* `{split}.json` per split: scene tasks `{filename: [label, ...]}`; event tasks
  `{filename: [{"label", "start", "end"}, ...]}` with times in milliseconds.
  Splits: `train`, `valid`, `test` (trainvaltest) or `fold00` .. `fold{nfolds-1:02d}` (k-fold).
* audio in `{sample_rate}/{split}/{filename}`: HEAR ships 16000, 22050, 32000, 44100 and 48000 Hz copies;
  the 16000 folder is read, else the lowest rate above 16 kHz (encoders resample to 16 kHz), else the
  highest below; option `sample_rate=` picks another.

Scene tasks load as clip datasets. trainvaltest -> splits train/valid/test. k-fold -> splits `all` (every
clip, `Clip.fold` = HEAR fold index + 1, for cross-validating protocols) and train/valid/test of one fold
as HEAR's evaluation kit forms them: test = fold `test_fold` (option, 1-based, default 1), valid = the next
fold (cyclic), train = the rest. HEAR's scene scores map to probekit's metrics (probekit.train.metrics):
top1_acc and pitch_acc -> accuracy, mAP -> mAP, d_prime -> d_prime, aucroc -> aucroc (percent),
chroma_acc -> chroma_accuracy; the first of `evaluation` is the headline (`spec.metric`, the record's
metric) and every listed score is computed (`spec.score_metrics`). A score probekit does not know (or one
that does not fit the prediction type) is a one-line error naming task_metadata.json.

Event tasks load as `probekit.datasets.events.EventDataset` (annotations in seconds): the frame-wise heads
train on them (`probekit.train.events`, scored with HEAR's event metrics); clip-level probes refuse them.
k-fold event tasks split as scene tasks do (`all` with `EventClip.fold`, and train/valid/test of `test_fold`);
protocol `events-cv` (declared in dcase2016.py) cross-validates them over every fold. Times are checked: an
event past its file's end (sample_duration, else the wav's own length) and a split file whose times all fit
their clips read as seconds (HEAR writes milliseconds) are one-line errors naming the file and the event.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from probekit.datasets._common import check_options
from probekit.datasets.base import Clip, Dataset, DatasetSpec
from probekit.datasets.events import Event, EventClip, EventDataset, check_event, file_duration
from probekit.errors import ConfigError, DatasetError

PREFIX = "hear:"
RATES = (16000, 22050, 32000, 44100, 48000)
TARGET_RATE = 16000
KFOLD_MODES = ("new_split_kfold", "presplit_kfold", "folds", "stratified_kfold")
#: HEAR score name -> probekit metric (EvalResult key); absent: not computed by probekit.
METRICS = {"top1_acc": "accuracy", "pitch_acc": "accuracy", "mAP": "mAP", "d_prime": "d_prime",
           "aucroc": "aucroc", "chroma_acc": "chroma_accuracy"}
#: scores that need one label per clip (argmax against the target class)
MULTICLASS_ONLY = ("top1_acc", "pitch_acc", "chroma_acc")
LAYOUT = ("a hear-preprocess task folder: task_metadata.json, labelvocabulary.csv, {split}.json and "
          "{sample_rate}/{split}/ audio")  # fmt: skip
CITATION = ("J. Turian et al., HEAR: Holistic Evaluation of Audio Representations, "
            "PMLR 176 (NeurIPS 2021 Competitions and Demonstrations), 2022")  # fmt: skip


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path} not found", hint=f"expected {LAYOUT}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: not readable JSON ({e})") from None


def read_metadata(root: Path) -> dict:
    meta = _json(root / "task_metadata.json")
    where = root / "task_metadata.json"
    if not isinstance(meta, dict):
        raise DatasetError(f"{where}: expected a JSON object")
    for key in ("task_name", "embedding_type", "prediction_type", "split_mode"):
        if key not in meta:
            raise DatasetError(f"{where}: missing key {key!r}", hint=f"expected {LAYOUT}")
    if meta["embedding_type"] not in ("scene", "event"):
        raise DatasetError(f"{where}: embedding_type {meta['embedding_type']!r} is not 'scene' or 'event'")
    if meta["prediction_type"] not in ("multiclass", "multilabel"):
        raise DatasetError(
            f"{where}: prediction_type {meta['prediction_type']!r} is not multiclass/multilabel"
        )
    if meta["split_mode"] != "trainvaltest" and meta["split_mode"] not in KFOLD_MODES:
        raise DatasetError(f"{where}: split_mode {meta['split_mode']!r} is not supported",
                           hint=f"supported: trainvaltest, {', '.join(KFOLD_MODES)}")  # fmt: skip
    if meta["split_mode"] in KFOLD_MODES:
        n = meta.get("nfolds")
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise DatasetError(
                f"{where}: split_mode {meta['split_mode']!r} needs an integer nfolds >= 2, got {n!r}"
            )
    evaluation = meta.get("evaluation", [])
    if not isinstance(evaluation, list) or not all(isinstance(e, str) for e in evaluation):
        raise DatasetError(f"{where}: evaluation must be a list of metric names, got {evaluation!r}")
    return meta


def hear_splits(meta: dict) -> list[str]:
    """The split files HEAR writes for a task: train/valid/test, or fold00 .. fold{n-1}."""
    if meta["split_mode"] == "trainvaltest":
        return ["train", "valid", "test"]
    return [f"fold{i:02d}" for i in range(meta["nfolds"])]


def read_vocabulary(root: Path) -> tuple[str, ...]:
    path = root / "labelvocabulary.csv"
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise DatasetError(f"{path} not found", hint=f"expected {LAYOUT}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{path}: not readable ({e})") from None
    if not rows or not {"idx", "label"} <= set(rows[0]):
        raise DatasetError(f"{path}: expected columns idx,label and at least one row")
    try:
        by_idx = {int(r["idx"]): str(r["label"]) for r in rows}
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: idx must be integers") from None
    if sorted(by_idx) != list(range(len(rows))):
        raise DatasetError(f"{path}: idx must be 0..{len(rows) - 1}, each once")
    labels = tuple(by_idx[i] for i in range(len(rows)))
    if len(set(labels)) != len(labels):
        raise DatasetError(f"{path}: a label appears twice")
    return labels


def audio_rate(root: Path, sample_rate: int | None = None) -> int:
    """The sample-rate folder read: `sample_rate` if given, else 16000, else the lowest above, else highest."""
    have = sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())
    if sample_rate is not None:
        if int(sample_rate) not in have:
            raise ConfigError(f"{root}: no audio folder {sample_rate}/", hint=f"present: {have or 'none'}")
        return int(sample_rate)
    if not have:
        raise DatasetError(
            f"{root}: no audio folder ({'/, '.join(map(str, RATES))}/)", hint=f"expected {LAYOUT}"
        )
    above = [r for r in have if r >= TARGET_RATE]
    return above[0] if above else have[-1]


def score_metrics(meta: dict, root: Path | None = None) -> tuple[str, ...]:
    """probekit metric keys of a scene task's `evaluation` list (order kept, duplicates dropped)."""
    evaluation = meta.get("evaluation") or []
    multilabel = meta["prediction_type"] == "multilabel"
    out: list[str] = []
    where = f"{root / 'task_metadata.json'}" if root is not None else "task_metadata.json"
    for name in evaluation:
        if name not in METRICS or (multilabel and name in MULTICLASS_ONLY):
            known = [k for k in METRICS if not (multilabel and k in MULTICLASS_ONLY)]
            raise DatasetError(f"{where}: evaluation metric {name!r} is not a HEAR scene score for "
                               f"{meta['prediction_type']} tasks", hint=f"use one of {', '.join(known)}")
        if METRICS[name] not in out:
            out.append(METRICS[name])
    return tuple(out)


def _metric(meta: dict, multilabel: bool, root: Path | None = None) -> tuple[str, list[str]]:
    evaluation = meta.get("evaluation") or []
    if meta["embedding_type"] == "event":  # scored by the frame-wise heads with HEAR's metrics
        return (evaluation[0] if evaluation else "event_onset_200ms_fms"), []
    wanted = score_metrics(meta, root)
    return (wanted[0] if wanted else ("mAP" if multilabel else "accuracy")), []


def _spec(
    root: Path, meta: dict, classes: tuple[str, ...], splits: tuple[str, ...], metric: str
) -> DatasetSpec:
    kind = f"{meta['embedding_type']} {meta['prediction_type']}, {meta['split_mode']}"
    if meta["split_mode"] in KFOLD_MODES:
        kind += f" ({meta['nfolds']} folds)"
    dur = meta.get("sample_duration")
    return DatasetSpec(
        name=f"{PREFIX}{meta['task_name']}",
        classes=classes,
        class_ids=classes,
        multilabel=meta["prediction_type"] == "multilabel",
        clip_seconds=float(dur) if isinstance(dur, (int, float)) and dur else 0.0,
        splits=splits,
        folds=meta["nfolds"] if meta["split_mode"] in KFOLD_MODES else None,
        protocol="default",
        metric=metric,
        score_metrics=() if meta["embedding_type"] == "event" else score_metrics(meta, root),
        license=str(meta.get("license", "")),
        citation=CITATION,
        description=f"HEAR task {meta['task_name']!r}: {kind}; HEAR metrics {meta.get('evaluation', [])}",
        layout=LAYOUT,
        source=str(root.resolve()),
    )


def _probekit_splits(meta: dict) -> tuple[str, ...]:
    if meta["split_mode"] in KFOLD_MODES:  # scene and event tasks: HEAR's folds as all/train/valid/test
        return ("all", "train", "valid", "test")
    return ("train", "valid", "test") if meta["split_mode"] == "trainvaltest" else tuple(hear_splits(meta))


def detect(path: Path) -> Path | None:
    return path if (path / "task_metadata.json").is_file() else None


def get_spec(root: Path) -> DatasetSpec:
    root = Path(root)
    meta = read_metadata(root)
    classes = read_vocabulary(root)
    return _spec(
        root, meta, classes, _probekit_splits(meta), _metric(meta, meta["prediction_type"] == "multilabel", root)[0]
    )


def open_dataset(root: Path, *, test_fold: int = 1, sample_rate: int | None = None, **options) -> Dataset:
    """The task at `root` (see the module docstring)."""
    root = Path(root)
    check_options(f"{PREFIX}{root}", options, ())
    if not root.is_dir():
        raise DatasetError(f"HEAR task folder {root} not found", hint=f"expected {LAYOUT}")
    meta = read_metadata(root)
    classes = read_vocabulary(root)
    index = {c: i for i, c in enumerate(classes)}
    rate = audio_rate(root, sample_rate)
    multilabel = meta["prediction_type"] == "multilabel"
    metric, warnings = _metric(meta, multilabel, root)
    splits = _probekit_splits(meta)
    spec = _spec(root, meta, classes, splits, metric)
    event = meta["embedding_type"] == "event"
    kfold = meta["split_mode"] in KFOLD_MODES
    nfolds = meta.get("nfolds") or 0
    try:
        test_fold = int(test_fold)
    except (TypeError, ValueError):
        raise ConfigError(f"{spec.name} test_fold={test_fold!r} is not an integer") from None
    if kfold and not 1 <= test_fold <= nfolds:
        raise ConfigError(f"{spec.name} test_fold={test_fold} must be 1..{nfolds}")
    missing: dict[str, int] = {}
    per_file: dict[str, list] = {}  # HEAR split -> clips (scene) or event clips
    for k, split in enumerate(hear_splits(meta)):
        where = root / f"{split}.json"
        data = _json(where)
        if not isinstance(data, dict):
            raise DatasetError(f"{where}: expected an object {{filename: labels}}")
        items, absent = [], 0
        for fname, labels in sorted(data.items()):
            path = root / str(rate) / split / fname
            if not path.is_file():
                absent += 1
                continue
            cid = f"{split}/{fname}"
            if event:
                dur = spec.clip_seconds or file_duration(path)  # no sample_duration: the file's own length
                items.append(_event_clip(where, fname, labels, index, cid, path, split, dur,
                                         fold=k + 1 if kfold else None))
            else:
                items.append(
                    _scene_clip(
                        where,
                        fname,
                        labels,
                        index,
                        multilabel,
                        cid,
                        path,
                        split,
                        fold=k + 1 if kfold else None,
                    )
                )
        if event:
            _check_time_unit(where, data, {c.path.name: c.path for c in items}, spec.clip_seconds or None)
        per_file[split] = items
        missing[split] = absent
    if not any(per_file.values()):
        raise DatasetError(f"{root}: none of the listed audio files exist under {rate}/",
                           hint=f"expected {LAYOUT}")  # fmt: skip
    if event:
        ds: Dataset = EventDataset(spec, root, _scene_splits(per_file, meta, int(test_fold)))
    else:
        by_split = _scene_splits(per_file, meta, int(test_fold))
        ds = Dataset(spec, root, lambda s: by_split[s])
        ds.warnings = ds.class_coverage()
    if kfold:  # the same counts, per probekit split
        names = hear_splits(meta)
        test, valid = names[int(test_fold) - 1], names[int(test_fold) % len(names)]
        missing = {"all": sum(missing.values()), "test": missing[test], "valid": missing[valid],
                   "train": sum(v for k, v in missing.items() if k not in (test, valid))}  # fmt: skip
    ds.missing = missing
    ds.warnings = warnings + list(ds.warnings)
    ds.sample_rate = rate
    ds.hear_metadata = meta
    return ds


def _scene_clip(where, fname, labels, index, multilabel, cid, path, split, fold) -> Clip:
    ok = (str, int)  # hear-preprocess writes labels as strings; a numeric label (pitch) reads as its text
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(x, ok) and not isinstance(x, bool) for x in labels)
    ):
        raise DatasetError(f"{where}: {fname!r} needs a non-empty list of labels, got {labels!r}")
    labels = [str(x) for x in labels]
    unknown = [x for x in labels if x not in index]
    if unknown:
        raise DatasetError(f"{where}: {fname!r} has label {unknown[0]!r}, not in labelvocabulary.csv")
    if not multilabel and len(set(labels)) != 1:
        raise DatasetError(f"{where}: {fname!r} has {len(labels)} labels in a multiclass task")
    return Clip(id=cid, path=path, labels=tuple(sorted({index[x] for x in labels})), split=split, fold=fold)


def _event_clip(where, fname, events, index, cid, path, split, duration, fold=None) -> EventClip:
    if not isinstance(events, list):
        raise DatasetError(f"{where}: {fname!r} needs a list of events, got {type(events).__name__}")
    out = []
    for e in events:
        if not isinstance(e, dict) or not {"label", "start", "end"} <= set(e):
            raise DatasetError(f"{where}: {fname!r}: each event needs label, start, end (ms), got {e!r}")
        e = {**e, "label": str(e["label"])}
        if e["label"] not in index:
            raise DatasetError(f"{where}: {fname!r} has label {e['label']!r}, not in labelvocabulary.csv")
        try:
            onset, offset = float(e["start"]) / 1000.0, float(e["end"]) / 1000.0  # HEAR times are ms
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: {fname!r}: start/end must be numbers (ms), got {e!r}") from None
        check_event(f"{where} {fname!r}", e["label"], onset, offset, duration)  # within sample_duration
        out.append(Event(index[e["label"]], onset, offset))
    return EventClip(cid, path, split, tuple(sorted(out, key=lambda v: (v.onset, v.label))), fold)


def _check_time_unit(where: Path, data: dict, paths: dict, sample_duration: float | None) -> None:
    """A split file whose times are seconds, not HEAR's milliseconds: every end, read as seconds, lies inside
    its clip (real millisecond annotations would then all sit in the first thousandth of every clip)."""
    from probekit.datasets.events import file_duration

    first, ends = None, []
    for fname, events in data.items():
        if fname not in paths or not isinstance(events, list):
            continue
        dur = sample_duration or file_duration(paths[fname])
        for e in events:
            if not (isinstance(e, dict) and isinstance(e.get("end"), (int, float)) and dur):
                return  # malformed events are reported per event; unknown durations cannot tell
            ends.append(float(e["end"]) <= dur)
            first = first or (fname, e)
    if first is not None and all(ends) and max(float(e["end"]) for v in data.values() if isinstance(v, list)
                                               for e in v if isinstance(e, dict)) > 0:
        fname, e = first
        raise DatasetError(f"{where}: {fname!r} event {e.get('label')!r} start/end {e.get('start')}/{e.get('end')} "
                           f"look like seconds: every end in this file fits inside its clip read as seconds",
                           hint="HEAR event times are milliseconds: multiply start and end by 1000")


def _scene_splits(per_file: dict[str, list], meta: dict, test_fold: int) -> dict[str, list]:
    """probekit's splits of HEAR's split files (Clips of scene tasks, EventClips of event tasks)."""
    from dataclasses import replace

    if meta["split_mode"] == "trainvaltest":
        return per_file
    names = hear_splits(meta)
    n = len(names)
    test = names[test_fold - 1]
    valid = names[test_fold % n]  # HEAR: the fold after the test fold validates, the rest train
    out = {"all": [replace(c, split="all") for s in names for c in per_file[s]]}
    out["test"] = [replace(c, split="test") for c in per_file[test]]
    out["valid"] = [replace(c, split="valid") for c in per_file[valid]]
    out["train"] = [replace(c, split="train") for s in names if s not in (test, valid) for c in per_file[s]]
    return out

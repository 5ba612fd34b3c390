"""Event (timestamp) annotations: HEAR event tasks and strong-label manifests (`events:PATH.csv`).

An event dataset lists, per split, each file with its labelled events (onset/offset in seconds). `clips()`
lists the files for extraction (labels: the classes with an event in the file, never used as targets);
the frame-wise heads (`probekit.probes.framewise`) train on frame targets made from `events()` at the token
grid's time resolution (`probekit.train.events`). Clip-level probes refuse event tasks (`FRAMEWISE`).

`events:PATH.csv` columns: `path,label,onset,offset,split` (one row per event; a file with several events
has several rows; seconds; `path` relative to the CSV's folder or absolute). Checked: onset >= 0,
onset < offset, split one of train/valid/test, one file in one split only, and -- when the file exists and
its header can be read -- offset <= the file's duration (+10 ms for rounding).

Hostile annotations: an event past the file's end, a zero-length event (onset == offset) and, in HEAR tasks,
a label missing from labelvocabulary.csv or times in seconds where HEAR writes milliseconds are one-line
errors naming the file and the event. Overlapping events of one label are kept as the official BAT code keeps
them: their frame targets are the union, sed_eval scores each as a reference event, and PSDS (whose
psds_eval refuses intersecting events of one class) scores their union (`probekit.train.events`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from probekit.datasets._common import check_options
from probekit.datasets.base import Clip, Dataset, DatasetSpec
from probekit.errors import DatasetError

PREFIX = "events:"
COLUMNS = ("path", "label", "onset", "offset", "split")
SPLITS = ("train", "valid", "test")
LAYOUT = (
    "a CSV with columns path,label,onset,offset,split (seconds; one row per event; paths relative to the CSV)"
)
#: Clip-level probes refuse event tasks with this pointer to the frame-wise heads.
FRAMEWISE = "use a frame-wise head: sed-cgp, sed-protobin, sed-linear, sed-lcgp, sed-h2t"
#: Slack on `offset <= duration`: annotation tools round times to 1-10 ms.
DURATION_SLACK_S = 0.01


@dataclass(frozen=True)
class Event:
    """One labelled event: `label` indexes the spec's classes; onset/offset in seconds."""

    label: int
    onset: float
    offset: float


@dataclass(frozen=True)
class EventClip:
    """A file with its events (possibly none: a clip with no event of any class)."""

    id: str
    path: Path
    split: str
    events: tuple[Event, ...]
    fold: int | None = None  # 1-based fold of k-fold tasks (HEAR), for cross-validating protocols


class EventDataset(Dataset):
    """A dataset of timestamped events. `events(split)` lists them; `clips(split)` lists the files (for
    token extraction) with the classes present as labels; frame targets come from `events`."""

    kind = "event"

    def __init__(self, spec: DatasetSpec, root: Path, by_split: dict[str, list[EventClip]]):
        super().__init__(spec, root, self._files)
        self._events = by_split

    def _files(self, split: str) -> list[Clip]:
        return [Clip(c.id, c.path, tuple(sorted({e.label for e in c.events})), split, fold=c.fold)
                for c in self._events[split]]

    def events(self, split: str) -> list[EventClip]:
        if split not in self.spec.splits:
            raise DatasetError(f"dataset {self.spec.name!r} has no split {split!r}",
                               hint=f"use one of: {', '.join(self.spec.splits)}")  # fmt: skip
        return self._events[split]

    def fingerprint(self, split: str) -> str:
        """Content fingerprint as `Dataset.fingerprint`, over the files and their events."""
        import hashlib
        import json

        from probekit.datasets.fingerprint import FINGERPRINT_VERSION, content_digests

        items = self.events(split)
        digests = content_digests([c.path for c in items])
        h = hashlib.sha256()
        h.update(
            json.dumps(
                [FINGERPRINT_VERSION, "events", self.spec.name, split, list(self.spec.classes)]
            ).encode()
        )
        for c, d in zip(items, digests):
            h.update(json.dumps([c.id, [[e.label, e.onset, e.offset] for e in c.events], d]).encode())
        return f"v{FINGERPRINT_VERSION}-{h.hexdigest()[:16]}"


def check_event(where: str, label: str, onset: float, offset: float, duration: float | None = None) -> None:
    """DatasetError naming `where` when an event's times are impossible."""
    if not (math.isfinite(onset) and math.isfinite(offset)):
        raise DatasetError(f"{where}: event {label!r} has a non-finite time ({onset}, {offset})")
    if onset < 0:
        raise DatasetError(f"{where}: event {label!r} starts before 0 s (onset {onset})")
    if not onset < offset:
        raise DatasetError(f"{where}: event {label!r} has onset {onset} >= offset {offset}",
                           hint="each event needs onset < offset (seconds)")  # fmt: skip
    if duration is not None and offset > duration + DURATION_SLACK_S:
        raise DatasetError(f"{where}: event {label!r} ends at {offset:g} s, after the file's end ({duration:.3f} s)",
                           hint="times are seconds from the file's start (milliseconds? divide by 1000)")  # fmt: skip


def file_duration(path: Path) -> float | None:
    """The file's duration from its header, or None when it cannot be read (checked later, at decoding)."""
    try:
        import soundfile as sf

        info = sf.info(str(path))
        return info.frames / info.samplerate if info.samplerate else None
    except Exception:  # noqa: BLE001 - an unreadable file is reported by extraction, naming it
        return None


def _float(where: str, col: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DatasetError(f"{where}: {col} {value!r} is not a number (seconds)") from None


def parse_events_manifest(
    csv_path: Path, *, check_durations: bool = True
) -> tuple[DatasetSpec, dict[str, list[EventClip]]]:
    """Validate a strong-label manifest: (spec, files with events per split)."""
    from probekit.datasets.manifest import _read_text, _records

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"events manifest {csv_path} not found (or not a file)", hint=f"expected {LAYOUT}")
    records = _records(csv_path, _read_text(csv_path))
    if not records:
        raise DatasetError(f"{csv_path}: empty file (no header)", hint=LAYOUT)
    header = [h.strip() for h in records[0][1]]
    lacking = [c for c in COLUMNS if c not in header]
    if lacking:
        raise DatasetError(
            f"{csv_path}: missing column(s) {', '.join(lacking)} (header: {header})", hint=LAYOUT
        )
    unknown = [c for c in header if c and c not in COLUMNS]
    if unknown or len(set(header)) != len(header):
        raise DatasetError(f"{csv_path}: unknown or repeated column(s) in header {header}", hint=LAYOUT)
    base = csv_path.resolve().parent
    rows: list[tuple[str, Path, str, float, float, str, str]] = []
    for line, fields in records[1:]:
        where = f"{csv_path} line {line}"
        if len(fields) > len(header) and any(f.strip() for f in fields[len(header) :]):
            raise DatasetError(
                f"{where}: more fields than the header names", hint="quote a value with a comma"
            )
        row = {h: f.strip() for h, f in zip(header, fields)}
        rel, label, split = row.get("path", ""), row.get("label", ""), row.get("split", "")
        if not rel or not label:
            raise DatasetError(f"{where}: empty path or label", hint=LAYOUT)
        if split not in SPLITS:
            raise DatasetError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
        onset, offset = (
            _float(where, "onset", row.get("onset", "")),
            _float(where, "offset", row.get("offset", "")),
        )
        check_event(where, label, onset, offset)
        rows.append((rel, (base / rel).resolve(), label, onset, offset, split, where))
    if not rows:
        raise DatasetError(f"{csv_path}: no rows", hint=LAYOUT)
    classes = tuple(sorted({r[2] for r in rows}))
    index = {c: i for i, c in enumerate(classes)}
    files: dict[Path, tuple[str, str, list[Event]]] = {}
    durations: dict[Path, float | None] = {}
    for rel, path, label, onset, offset, split, where in rows:
        _, rsplit, evs = files.setdefault(path, (rel, split, []))
        if rsplit != split:
            raise DatasetError(f"{where}: {rel!r} is in split {split!r} here but {rsplit!r} on an earlier line",
                               hint="a file belongs to one split")  # fmt: skip
        if check_durations and path not in durations:
            durations[path] = file_duration(path) if path.is_file() else None
        check_event(where, label, onset, offset, durations.get(path))
        evs.append(Event(index[label], onset, offset))
    by_split: dict[str, list[EventClip]] = {s: [] for s in SPLITS}
    for path, (rel, split, evs) in files.items():
        by_split[split].append(
            EventClip(rel, path, split, tuple(sorted(evs, key=lambda e: (e.onset, e.label))))
        )
    splits = tuple(s for s in SPLITS if by_split[s])
    spec = DatasetSpec(
        name=f"{PREFIX}{csv_path.name}",
        classes=classes,
        class_ids=classes,
        multilabel=True,
        clip_seconds=0.0,
        splits=splits,
        protocol="default",
        metric="event_onset_200ms_fms",
        description=f"strong-label manifest {csv_path} ({len(rows)} events in {len(files)} files)",
        layout=LAYOUT,
        source=str(csv_path.resolve()),
    )
    return spec, {s: by_split[s] for s in splits}


def build_fsdd_events(out_dir, fsdd_root=None, **kwargs) -> dict[str, Path]:
    """Write an FSDD-derived event task (spoken digits at known onsets) to try SED without DCASE data;
    returns {"events": CSV for `events:`, "hear": folder for `hear:`}. See probekit.datasets.fsdd_events."""
    from probekit.datasets.fsdd_events import build_fsdd_events as build

    return build(out_dir, fsdd_root, **kwargs)


def open_events_manifest(csv_path: Path, **options) -> EventDataset:
    check_options(f"{PREFIX}{csv_path}", options, ())
    spec, by_split = parse_events_manifest(Path(csv_path))
    ds = EventDataset(spec, Path(csv_path).resolve().parent, by_split)
    ds.missing = {s: sum(not c.path.exists() for c in by_split[s]) for s in spec.splits}
    return ds

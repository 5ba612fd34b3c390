"""Dataset specs and clips: the data every later stage reads.

A `DatasetSpec` is pure metadata (classes, task kind, splits, the frontend settings of the official
recipes); a `Dataset` is a spec bound to a root on disk, listing `Clip`s per split.

Declared attributes (what `probekit datasets` lists for every registered dataset, read from the spec and its
registry entry, nothing else; a new dataset fills them and shows up without edits to the listing):

* `name`, `description`, `classes` (or `declared_classes` when the class list is read from disk), `multilabel`;
* `splits`, `folds`, `split_note` (the official split or fold protocol), `metric` (the headline score);
* `license`, `citation`, `download` (how to get it), `layout` (what is expected on disk);
* where it looks: `register_dataset(..., root_names=)` under each data root (`probekit._paths.data_dirs`);
* `frames` (target frames per frontend recipe, as the official configs' time_frame_size) and `fbank_stats`:
  the frontend presets per family come from `probekit.audio.frontends.frontend_for(recipe, spec)`;
* `protocol`: the training protocol preset (`probekit.train.protocols`; a dataset module may declare its own
  in `PROTOCOLS`, a tuple of `ProtocolDecl`, registered there by name).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from probekit.errors import DatasetError


@dataclass(frozen=True)
class Clip:
    """One labelled clip. `labels` are class indices into the spec's `classes`.

    `offset`/`duration` (seconds) select a segment of the file (Speech Commands `_silence_` crops);
    `duration=None` means the whole file from `offset`. `transcript`: the spoken text of a clip of an ASR
    dataset (spec.task == "asr"; `labels` is then empty).
    """

    id: str
    path: Path
    labels: tuple[int, ...]
    split: str
    fold: int | None = None
    offset: float = 0.0
    duration: float | None = None
    transcript: str | None = None


@dataclass(frozen=True)
class ProtocolDecl:
    """A training protocol declared next to its dataset (plain data: datasets never import torch).

    `probekit.train.protocols` registers each as `Protocol(name, description, TrainConfig(**train), cv,
    metric, val_fraction, source)`."""

    name: str
    description: str
    train: Mapping[str, object]
    cv: bool
    metric: str  # "mAP" | "accuracy" | "auto"
    source: str
    val_fraction: float = 0.1


@dataclass(frozen=True)
class DatasetSpec:
    """Metadata of a dataset, independent of where it lives.

    `frames` maps a frontend recipe name ("fbank", "bat") to the target frame count its official
    recipe pads/crops to (e.g. ESC-50: fbank 512, bat 512). `protocol` names the training preset
    (REFERENCE.md section 4) in probekit.train. `task` is "classification" (clip labels) or "asr" (clips
    carry transcripts; `classes` is then the official character vocabulary, index 0 the CTC blank).
    """

    name: str
    classes: tuple[str, ...]
    multilabel: bool
    clip_seconds: float
    splits: tuple[str, ...]
    class_ids: tuple[str, ...] = ()
    folds: int | None = None
    frames: Mapping[str, int] = field(default_factory=dict)
    fbank_stats: tuple[float, float] = (-4.268, 4.569)
    protocol: str = "default"
    metric: str = "accuracy"
    license: str = ""
    citation: str = ""
    description: str = ""
    layout: str = ""  # what the loader expects on disk, shown when the dataset is not found
    source: str = ""  # user data: the resolved path of its manifest (part of `identity`)
    # ---- declared for `probekit datasets` (it reads only these fields; a new dataset shows up unedited) ----
    download: str = ""  # how to get it: where from and what to unpack where (one or two sentences)
    declared_classes: int | None = None  # class count of the official release when `classes` is read from disk
    split_note: str = ""  # the official split/fold protocol in one line (what `splits`/`folds` stand for)
    task: str = "classification"  # or "asr"
    # metrics evaluation computes beyond the defaults (EvalResult keys, first = headline; probekit.train.metrics)
    score_metrics: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def identity(self) -> str:
        """A name unique per data source: `name` for registered datasets; for a manifest its short name
        plus a digest of its resolved path (`manifest:m.csv@1a2b3c4d`), so two projects' `m.csv` never
        share the records keyed by it. `name` stays the short, readable label."""
        if not self.source:
            return self.name
        return f"{self.name}@{hashlib.blake2b(self.source.encode(), digest_size=4).hexdigest()}"


class Dataset:
    """A spec bound to a root directory; clips are listed lazily per split."""

    def __init__(self, spec: DatasetSpec, root: Path, clip_lists: Callable[[str], list[Clip]]):
        self.spec = spec
        self.root = Path(root)
        self._lister = clip_lists
        self._clips: dict[str, list[Clip]] = {}
        self.missing: dict[str, int] = {}  # split -> clips listed in metadata but absent on disk
        self.warnings: list[str] = []  # problems worth a line but not an error (printed by the CLI)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def identity(self) -> str:
        """See `DatasetSpec.identity`: the key for anything stored per dataset (result records)."""
        return self.spec.identity

    def clips(self, split: str) -> list[Clip]:
        if split not in self.spec.splits:
            raise DatasetError(
                f"dataset {self.spec.name!r} has no split {split!r}",
                hint=f"use one of: {', '.join(self.spec.splits)}",
            )
        if split not in self._clips:
            self._clips[split] = self._lister(split)
        return self._clips[split]

    def fingerprint(self, split: str) -> str:
        """Content fingerprint of a split (`v2-` + 16 hex digits): clip ids, labels, segment bounds and a
        digest of every file's bytes (probekit.datasets.fingerprint: mode `full` reads each file whole,
        `$PROBEKIT_FINGERPRINT=sampled` reads 3 x 64 KiB of each; unchanged files are memoised by stat).

        Stable across copies of the data; any relabelling, added or removed clip, or changed audio
        (even at the same byte size) changes it, so a cache built from other data is never reused.
        A missing, unreadable or non-regular file hashes as a marker, so fixing it changes the value.
        """
        from probekit.datasets.fingerprint import FINGERPRINT_VERSION, content_digests

        clips = self.clips(split)
        paths = [c.path for c in clips]
        unique = list(dict.fromkeys(paths))  # windows of one recording (BirdSet events) hash its file once
        by_path = dict(zip(unique, content_digests(unique)))
        digests = [by_path[p] for p in paths]
        h = hashlib.sha256()
        h.update(json.dumps([FINGERPRINT_VERSION, self.spec.name, split, list(self.spec.classes)]).encode())
        for c, digest in zip(clips, digests):
            row = [c.id, list(c.labels), c.fold, c.offset, c.duration, digest]
            if c.transcript is not None:  # ASR clips only, so every other fingerprint stays as it was
                row.append(c.transcript)
            h.update(json.dumps(row).encode())
        return f"v{FINGERPRINT_VERSION}-{h.hexdigest()[:16]}"

    def class_coverage(self, train: str = "train", test: str = "test") -> list[str]:
        """Warnings for classes a probe cannot learn or is never scored on: classes with no clip in
        `train` (present elsewhere) and classes with no clip in `test`. Empty when both splits hold
        every class, or when the dataset lacks either split."""
        splits = self.spec.splits
        if train not in splits or test not in splits or self.spec.task == "asr":  # ASR: no classes to cover
            return []
        seen = {s: {i for c in self.clips(s) for i in c.labels} for s in (train, test)}
        every = set(range(self.spec.num_classes))
        out = []
        for s, other in ((train, test), (test, train)):
            lacking = sorted(every - seen[s])
            if lacking:
                names = ", ".join(repr(self.spec.classes[i]) for i in lacking[:10])
                more = f" and {len(lacking) - 10} more" if len(lacking) > 10 else ""
                why = "a probe cannot learn them" if s == train else "they are never scored"
                out.append(f"{self.spec.name}: {len(lacking)} class(es) have no clip in split {s!r} "
                           f"({why}): {names}{more}")
        return out

    def __repr__(self) -> str:
        return f"Dataset({self.spec.name!r}, root={str(self.root)!r})"

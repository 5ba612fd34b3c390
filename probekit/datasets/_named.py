"""Helpers shared by the named datasets in their official layouts (fsd50k, urbansound8k, gtzan, nsynth,
dcase2016-task2): reading their metadata with errors that name file and line, and fold-based splits."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from pathlib import Path

from probekit.datasets.base import Clip, Dataset, DatasetSpec, ProtocolDecl
from probekit.errors import ConfigError, DatasetError

#: The BAT ESC-50 probe recipe (configs/esc50/*_cgp_config.yaml), reused where a dataset has official folds
#: but no official probe config: 4,000 steps, batch 48, warmup 400, wd 0.2, cross-entropy, last step.
ESC50_RECIPE = {"batch_size": 48, "steps": 4000, "warmup_steps": 400, "weight_decay": 0.2, "loss": "ce",
                "selection": "last"}  # fmt: skip
#: The BAT Speech Commands recipe (configs/scv2): 10,000 steps, batch 256, warmup 1,000, wd 0.05, CE,
#: validate every 500 steps on the official validation split, best -> test.
SC2_RECIPE = {"batch_size": 256, "steps": 10000, "warmup_steps": 1000, "weight_decay": 0.05, "loss": "ce",
              "selection": "best_val", "eval_every": 500}  # fmt: skip
_BAT = "BAT_ICML2026 configs/{}"


def fold_cv_protocol(name: str, dataset: str, folds: int) -> ProtocolDecl:
    return ProtocolDecl(
        name, f"{dataset}: BAT's ESC-50 probe recipe (4,000 steps, batch 48, warmup 400, wd 0.2, cross-entropy) "
        f"cross-validated over the {folds} official folds; accuracy mean +- std",
        ESC50_RECIPE, True, "accuracy",
        source=f"probekit preset: {_BAT.format('esc50')} recipe on the dataset's official folds (no official config)",
    )  # fmt: skip


def read_csv(path: Path, required: tuple[str, ...], *, header: bool = True) -> list[tuple[int, dict | list]]:
    """(line, row) of a metadata CSV: dicts when it has a header (checked for `required`), else lists."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            if not header:
                return [(i, row) for i, row in enumerate(csv.reader(fh), start=1) if row]
            reader = csv.DictReader(fh)
            lacking = [c for c in required if c not in (reader.fieldnames or [])]
            if lacking:
                raise DatasetError(f"{path}: missing column(s) {', '.join(lacking)} "
                                   f"(header: {reader.fieldnames})", hint=f"expected columns {', '.join(required)}")  # fmt: skip
            return [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise DatasetError(f"{path} not found", hint="the dataset's metadata file is part of its archive") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{path}: not readable ({e})") from None


def check_test_fold(spec: DatasetSpec, test_fold) -> int:
    try:
        k = int(test_fold)
    except (TypeError, ValueError):
        raise ConfigError(f"{spec.name} test_fold={test_fold!r} is not an integer") from None
    if not 1 <= k <= (spec.folds or 0):
        raise ConfigError(f"{spec.name} test_fold={k} must be 1..{spec.folds}")
    return k


def fold_dataset(spec: DatasetSpec, root: Path, rows: Iterable[tuple[str, Path, tuple[int, ...], int]],
                 test_fold: int) -> Dataset:
    """Splits of a fold-based dataset (ESC-50 style): `all` (every clip with its fold, for cross-validation),
    `test` = fold `test_fold`, `train` = the other folds. rows: (clip id, path, labels, fold)."""
    rows = list(rows)
    missing: dict[str, int] = {}

    def lister(split: str) -> list[Clip]:
        clips, absent = [], 0
        for cid, path, labels, fold in rows:
            if split == "train" and fold == test_fold or split == "test" and fold != test_fold:
                continue
            if not path.is_file():
                absent += 1
                continue
            clips.append(Clip(id=cid, path=path, labels=labels, split=split, fold=fold))
        missing[split] = absent
        return clips

    ds = Dataset(spec, root, lister)
    ds.missing = missing
    return ds


def split_dataset(spec: DatasetSpec, root: Path, rows: dict[str, list[tuple[str, Path, tuple[int, ...]]]],
                  warnings: list[str] | None = None) -> Dataset:
    """A dataset with fixed official splits; absent files are counted per split (`dataset.missing`)."""
    by_split: dict[str, list[Clip]] = {}
    missing: dict[str, int] = {}
    for split in spec.splits:
        present = [(cid, p, lab) for cid, p, lab in rows.get(split, []) if p.is_file()]
        missing[split] = len(rows.get(split, [])) - len(present)
        by_split[split] = [Clip(id=cid, path=p, labels=lab, split=split) for cid, p, lab in present]
    if not any(by_split.values()):
        raise DatasetError(f"{spec.name}: none of the audio files listed under {root} exist",
                           hint=f"expected {spec.layout}")  # fmt: skip
    ds = Dataset(spec, root, lambda s: by_split[s])
    ds.missing = missing
    ds.warnings = list(warnings or [])
    return ds


def first(paths: Iterable[Path], test: Callable[[Path], bool]) -> Path | None:
    return next((p for p in paths if test(p)), None)

"""`folder:PATH`: audio in class subfolders, like torchvision's ImageFolder.

Two layouts:

* split folders: `PATH/train/<class>/*.wav` plus optional `PATH/valid/<class>/` (or `val/`, `validation/`)
  and `PATH/test/<class>/`; classes are the sorted union of the class folder names.
* one folder: `PATH/<class>/*.wav`. The split is seeded and stratified: within each class the files are
  ordered by blake2b(f"{seed}/{class}/{file name}") and the first 20% (rounded, at least 1 when the class
  has 2+ files) go to test, the next 10% (rounded) to valid, the rest to train. The order depends only on
  names, so adding a file never moves the others between splits. Option `seed=` (default 0).

Files directly in class folders only (no recursion); suffixes as `_common.AUDIO_SUFFIXES`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from probekit.datasets._common import check_options, scan_audio
from probekit.datasets.base import Clip, Dataset, DatasetSpec
from probekit.errors import DatasetError

PREFIX = "folder:"
SPLIT_DIRS = {"train": ("train",), "valid": ("valid", "val", "validation"), "test": ("test",)}
TEST_FRACTION, VALID_FRACTION = 0.2, 0.1
LAYOUT = ("PATH/<class>/*.wav (seeded stratified split), or PATH/train/<class>/, PATH/valid/<class>/, "
          "PATH/test/<class>/")  # fmt: skip


def _class_dirs(path: Path) -> list[Path]:
    return sorted(
        (p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )


def _split_dirs(root: Path) -> dict[str, Path]:
    found = {}
    for split, names in SPLIT_DIRS.items():
        for n in names:
            if (root / n).is_dir():
                found[split] = root / n
                break
    return found if "train" in found else {}


def _layout(root: Path, seed: int) -> tuple[dict[str, list[tuple[str, Path, str]]], str]:
    """{split: [(clip id, path, class name)]} and a one-line description of how splits were formed."""
    if not root.is_dir():
        raise DatasetError(f"folder {root} not found", hint=f"expected {LAYOUT}")
    dirs = _split_dirs(root)
    out: dict[str, list[tuple[str, Path, str]]] = {}
    if dirs:
        for split, d in dirs.items():
            out[split] = [(f"{d.name}/{c.name}/{e.name}", Path(e.path), c.name)
                          for c in _class_dirs(d) for e in scan_audio(c)]  # fmt: skip
        return out, "official split folders: " + ", ".join(f"{s}={d.name}/" for s, d in dirs.items())
    out = {"train": [], "valid": [], "test": []}
    for c in _class_dirs(root):
        files = scan_audio(c)
        files.sort(
            key=lambda e: hashlib.blake2b(f"{seed}/{c.name}/{e.name}".encode(), digest_size=8).digest()
        )
        n = len(files)
        n_test = max(1, round(n * TEST_FRACTION)) if n >= 2 else 0
        n_valid = round(n * VALID_FRACTION) if n - n_test >= 2 else 0
        for i, e in enumerate(files):
            split = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
            out[split].append((f"{c.name}/{e.name}", Path(e.path), c.name))
    return out, f"seeded stratified split (seed {seed}): 20% test, 10% valid per class"


def get_spec(root: Path, *, seed: int = 0) -> DatasetSpec:
    return _open(Path(root), seed)[0]


def _open(root: Path, seed: int) -> tuple[DatasetSpec, dict[str, list[Clip]], str]:
    items, how = _layout(root, seed)
    classes = tuple(sorted({c for rows in items.values() for _, _, c in rows}))
    if not classes:
        raise DatasetError(f"folder {root}: no audio files in class subfolders", hint=f"expected {LAYOUT}")
    index = {c: i for i, c in enumerate(classes)}
    splits = tuple(s for s in ("train", "valid", "test") if items.get(s))
    by_split = {
        s: [Clip(id=i, path=p, labels=(index[c],), split=s) for i, p, c in sorted(items[s])] for s in splits
    }
    spec = DatasetSpec(
        name=f"{PREFIX}{root.name}",
        classes=classes,
        class_ids=classes,
        multilabel=False,
        clip_seconds=0.0,
        splits=splits,
        protocol="default",
        metric="accuracy",
        description=f"audio class folders at {root} ({how})",
        layout=LAYOUT,
        source=f"{root.resolve()}" + (f"#seed={seed}" if seed else ""),
    )
    return spec, by_split, how


def open_dataset(root: Path, *, seed: int = 0, **options) -> Dataset:
    check_options(f"{PREFIX}{root}", options, ("seed",))
    spec, by_split, _ = _open(Path(root), int(seed))
    ds = Dataset(spec, Path(root), lambda s: by_split[s])
    ds.warnings = ds.class_coverage()
    return ds

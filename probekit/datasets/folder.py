"""`folder:PATH`: audio in class subfolders, with torchvision's ImageFolder semantics.

Two layouts:

* split folders: `PATH/train/<class>/*.wav` plus optional `PATH/valid/<class>/` (or `val/`, `validation/`)
  and `PATH/test/<class>/`; classes are the sorted union of the class folder names.
* one folder: `PATH/<class>/*.wav`. The split is seeded and stratified: within each class the files are
  ordered by blake2b(f"{seed}/{class}/{file name}") and the first 20% (rounded, at least 1 when the class
  has 2+ files) go to test, the next 10% (rounded) to valid, the rest to train. The order depends only on
  names, so adding a file never moves the others between splits. Option `seed=` (default 0).

As ImageFolder (torchvision.datasets.folder.find_classes / make_dataset): classes are the class folder names
sorted as Python sorts strings, class index = position in that order; each class folder is walked
recursively, following symlinked folders (a symlink loop is walked once); a file counts when its suffix
(any case) is an audio suffix (`_common.AUDIO_SUFFIXES`); a class folder without any audio file is an error
(option `allow_empty=True` keeps it as a class with no clips, as ImageFolder's allow_empty). Deliberate
difference: hidden folders and files (`.ipynb_checkpoints`, `.DS_Store`, `._x.wav`) are skipped, where
ImageFolder would make `.ipynb_checkpoints` a class. Clip ids are `<class>/<path inside the class folder>`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import os

from probekit.datasets._common import AUDIO_SUFFIXES, check_options
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


def _walk(class_dir: Path) -> list[tuple[str, Path]]:
    """(path inside the class folder, path) of every audio file below `class_dir`, sorted by that name;
    symlinked folders are followed once each (ImageFolder walks with followlinks=True)."""
    out, seen = [], set()
    for top, dirs, files in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:  # a symlink loop (or two links to one folder): walk it once
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            p = Path(top) / f
            if not f.startswith(".") and f.lower().endswith(AUDIO_SUFFIXES) and p.is_file():
                out.append((p.relative_to(class_dir).as_posix(), p))
    return sorted(out)


def _classes(d: Path, allow_empty: bool) -> list[tuple[str, list[tuple[str, Path]]]]:
    found = [(c.name, _walk(c)) for c in _class_dirs(d)]
    empty = [name for name, files in found if not files]
    if empty and not allow_empty and len(empty) < len(found):
        raise DatasetError(f"folder {d}: class folder {empty[0]!r} holds no audio files"
                           + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""),
                           hint="add audio, remove the folder, or pass allow_empty=True (as ImageFolder) to "
                           "keep it as a class without clips")  # fmt: skip
    return found


def _layout(root: Path, seed: int, allow_empty: bool = False
            ) -> tuple[dict[str, list[tuple[str, Path, str]]], str, set[str]]:
    """{split: [(clip id, path, class name)]}, a one-line description of how splits were formed, and the
    names of every class folder (with allow_empty, classes may have no clip)."""
    if not root.is_dir():
        raise DatasetError(f"folder {root} not found", hint=f"expected {LAYOUT}")
    dirs = _split_dirs(root)
    out: dict[str, list[tuple[str, Path, str]]] = {}
    names: set[str] = set()
    if dirs:
        for split, d in dirs.items():
            found = _classes(d, allow_empty)
            names.update(c for c, _ in found)
            out[split] = [(f"{d.name}/{c}/{rel}", p, c) for c, files in found for rel, p in files]
        return out, "official split folders: " + ", ".join(f"{s}={d.name}/" for s, d in dirs.items()), names
    out = {"train": [], "valid": [], "test": []}
    for c, files in _classes(root, allow_empty):
        names.add(c)
        # directly in the class folder `rel` is the file name: the order (and split) of 0.2's flat layout
        files = sorted(files, key=lambda f: hashlib.blake2b(f"{seed}/{c}/{f[0]}".encode(), digest_size=8).digest())
        n = len(files)
        n_test = max(1, round(n * TEST_FRACTION)) if n >= 2 else 0
        n_valid = round(n * VALID_FRACTION) if n - n_test >= 2 else 0
        for i, (rel, p) in enumerate(files):
            split = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
            out[split].append((f"{c}/{rel}", p, c))
    return out, f"seeded stratified split (seed {seed}): 20% test, 10% valid per class", names


def get_spec(root: Path, *, seed: int = 0, allow_empty: bool = False) -> DatasetSpec:
    return _open(Path(root), seed, allow_empty)[0]


def _open(root: Path, seed: int, allow_empty: bool = False) -> tuple[DatasetSpec, dict[str, list[Clip]], str]:
    items, how, names = _layout(root, seed, allow_empty)
    with_clips = {c for rows in items.values() for _, _, c in rows}
    classes = tuple(sorted(names if allow_empty and with_clips else with_clips))
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
        source=f"{root.resolve()}" + (f"#seed={seed}" if seed else "") + ("#allow_empty" if allow_empty else ""),
    )
    return spec, by_split, how


def open_dataset(root: Path, *, seed: int = 0, allow_empty: bool = False, **options) -> Dataset:
    check_options(f"{PREFIX}{root}", options, ("seed", "allow_empty"))
    spec, by_split, _ = _open(Path(root), int(seed), bool(allow_empty))
    ds = Dataset(spec, Path(root), lambda s: by_split[s])
    ds.warnings = ds.class_coverage()
    return ds

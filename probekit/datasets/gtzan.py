"""GTZAN genre collection: `genres/<genre>/<genre>.000NN.{au,wav}` (the marsyas archive; Kaggle's copy
names the folder `genres_original/` and holds .wav).

Two named datasets:

* `gtzan`: 10-fold cross-validation as HEAR's gtzan_genre task evaluates GTZAN (10 folds, accuracy). The
  folds are fixed by file number: fold k holds numbers 10(k-1) .. 10k-1 of every genre, so each fold has 10
  clips per genre and neighbouring files (often the same artist or album) stay in one fold. Why folds and
  not a random split: GTZAN has no official split, and HEAR's numbers are 10-fold means. (HEAR's own fold
  assignment comes with its preprocessed task: `hear:PATH` reads it exactly.)
* `gtzan-filtered`: the fault-filtered split of Kereliuk, Sturm & Larsen (2015), used by most music-tagging
  work (443 train / 197 valid / 290 test): list files `train_filtered.txt`, `valid_filtered.txt`,
  `test_filtered.txt` (lines `blues/blues.00000.wav`) in `<root>/` or `<root>/GTZAN_split/`.
"""

from __future__ import annotations

import re
from pathlib import Path

from probekit.datasets._common import check_options
from probekit.datasets._named import SC2_RECIPE, check_test_fold, fold_cv_protocol, fold_dataset, split_dataset
from probekit.datasets.base import Dataset, DatasetSpec, ProtocolDecl
from probekit.errors import DatasetError

GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
AUDIO_DIRS = ("genres", "genres_original")
SUFFIXES = (".au", ".wav")
_NAME = re.compile(r"^([a-z]+)\.(\d{5})\.(au|wav)$")
FILTERED = {"train": "train_filtered.txt", "valid": "valid_filtered.txt", "test": "test_filtered.txt"}

_COMMON: dict = dict(
    classes=GENRES,
    class_ids=GENRES,
    multilabel=False,
    clip_seconds=30.0,
    # no official BAT config: 30 s at 16 kHz is 3,001 mel / 2,998 fbank frames -> the next multiple of 16
    frames={"fbank": 3008, "fbank@bat-paper": 3008, "bat": 3008},
    metric="accuracy",
    license="no licence stated (research use; audio from CDs and radio, collected by G. Tzanetakis)",
    citation="G. Tzanetakis, P. Cook, Musical Genre Classification of Audio Signals, IEEE TSAP 10(5), 2002",
    layout="<root>/genres/<genre>/<genre>.000NN.au (or genres_original/*.wav); gtzan-filtered also "
    "train/valid/test_filtered.txt in <root>/ or <root>/GTZAN_split/",
    download="http://marsyas.info/index.html (genres.tar.gz; mirrors on Kaggle and Hugging Face): unpack into "
    "<data root>/gtzan/; split lists from github.com/jongpillee/music_dataset_split (GTZAN_split/)",
)
SPEC = DatasetSpec(
    name="gtzan",
    splits=("train", "test", "all"),
    folds=10,
    protocol="gtzan",
    description="1,000 30-s music excerpts, 10 genres (100 each); 10 folds by file number.",
    split_note="10-fold cross-validation as HEAR (fold k = files 10(k-1)..10k-1 of each genre); split 'all'",
    **_COMMON,
)
SPEC_FILTERED = DatasetSpec(
    name="gtzan-filtered",
    splits=("train", "valid", "test"),
    protocol="gtzan-filtered",
    description="GTZAN, fault-filtered split (Kereliuk et al. 2015): 443/197/290 clips without repeats, "
    "distortions or artist overlap between splits.",
    split_note="fault-filtered split: train/valid/test_filtered.txt",
    **_COMMON,
)
ROOT_NAMES = ("gtzan", "GTZAN", "Data", "gtzan_genre")
PROTOCOLS = (
    fold_cv_protocol("gtzan", "GTZAN", 10),
    ProtocolDecl("gtzan-filtered", "GTZAN fault-filtered split: BAT's Speech Commands recipe (10,000 steps, "
                 "batch 256, warmup 1,000, wd 0.05, CE), best validation accuracy -> test",
                 {**SC2_RECIPE, "eval_every": 200}, False, "accuracy",
                 source="probekit preset: BAT_ICML2026 configs/scv2 recipe on the official valid split"),
)  # fmt: skip


def _audio_dir(root: Path) -> Path | None:
    return next((root / d for d in AUDIO_DIRS if (root / d / "blues").is_dir()), None)


def detect(path: Path) -> Path | None:
    return path if _audio_dir(path) is not None else None


def _files(root: Path) -> list[tuple[str, Path, int, int]]:
    """(clip id `genre/file`, path, genre index, file number) of every excerpt."""
    base = _audio_dir(root)
    if base is None:
        raise DatasetError(f"{root}: no genres/<genre>/ folders", hint=f"expected {SPEC.layout}")
    out = []
    for g, genre in enumerate(GENRES):
        d = base / genre
        for p in sorted(d.iterdir()) if d.is_dir() else []:
            m = _NAME.match(p.name)
            if p.suffix.lower() not in SUFFIXES:
                continue
            if not m or m.group(1) != genre:
                raise DatasetError(f"{p}: GTZAN files are named <genre>.000NN.au/.wav inside their genre folder",
                                   hint="remove or rename the file")  # fmt: skip
            out.append((f"{genre}/{p.name}", p, g, int(m.group(2))))
    if not out:
        raise DatasetError(f"{base}: no audio in the genre folders", hint=f"expected {SPEC.layout}")
    return out


def open_dataset(spec: DatasetSpec, root: Path, *, test_fold: int = 1, **options) -> Dataset:
    check_options(spec.name, options, ("test_fold",))
    k = check_test_fold(spec, test_fold)
    rows = [(cid, p, (g,), num // 10 + 1) for cid, p, g, num in _files(root)]
    bad = [cid for cid, *_, fold in rows if fold > 10]
    if bad:
        raise DatasetError(f"{root}: {bad[0]} is numbered above 00099 (GTZAN has 100 files per genre)")
    return fold_dataset(spec, root, rows, k)


def _list_file(root: Path, name: str) -> Path:
    for d in (root, root / "GTZAN_split"):
        if (d / name).is_file():
            return d / name
    raise DatasetError(f"gtzan-filtered: {name} not found in {root} or {root / 'GTZAN_split'}",
                       hint="get the fault-filtered split lists (github.com/jongpillee/music_dataset_split, "
                       "GTZAN_split/) or use the 10-fold dataset 'gtzan'")  # fmt: skip


def open_filtered(spec: DatasetSpec, root: Path, **options) -> Dataset:
    check_options(spec.name, options, ())
    by_stem = {p.with_suffix("").name: (cid, p, g) for cid, p, g, _ in _files(root)}
    rows: dict[str, list] = {}
    seen: dict[str, str] = {}
    for split, name in FILTERED.items():
        path = _list_file(root, name)
        rows[split] = []
        for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            entry = text.strip()
            if not entry:
                continue
            stem = Path(entry).with_suffix("").name  # `blues/blues.00000.wav` -> blues.00000
            genre = stem.split(".")[0]
            if genre not in GENRES:
                raise DatasetError(f"{path} line {line}: {entry!r} names no GTZAN genre")
            if stem in seen:
                raise DatasetError(f"{path} line {line}: {entry!r} is already in split {seen[stem]!r}")
            seen[stem] = split
            cid, p, g = by_stem.get(stem, (f"{genre}/{stem}.wav", _audio_dir(root) / genre / f"{stem}.wav",
                                            GENRES.index(genre)))  # fmt: skip
            rows[split].append((cid, p, (g,)))
    return split_dataset(spec, root, rows)

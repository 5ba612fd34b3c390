"""FSD50K in its Zenodo layout: `FSD50K.ground_truth/{dev,eval,vocabulary}.csv`, `FSD50K.dev_audio/`,
`FSD50K.eval_audio/`.

* `vocabulary.csv` (no header): `index,label,mid`, the 200 classes in their official order.
* `dev.csv`: `fname,labels,mids,split` with `split` in {train, val} (the official validation split);
  `eval.csv`: `fname,labels,mids`. `labels` are comma-joined class names (multi-label; the ground truth
  already holds each label's ancestors).
* audio `FSD50K.dev_audio/<fname>.wav`, `FSD50K.eval_audio/<fname>.wav` (44.1 kHz mono, 0.3-30 s).

probekit splits: train = dev rows with split `train` (36,796), valid = dev rows with split `val` (4,170),
test = eval (10,231). Metric: macro mAP over the 200 classes (the FSD50K paper's headline).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from probekit.datasets._common import check_options
from probekit.datasets._named import read_csv, split_dataset
from probekit.datasets.base import Dataset, DatasetSpec
from probekit.errors import DatasetError

GT, DEV, EVAL = "FSD50K.ground_truth", "FSD50K.dev_audio", "FSD50K.eval_audio"
NUM_CLASSES = 200
#: dev.csv's split column -> probekit split
DEV_SPLITS = {"train": "train", "val": "valid"}

SPEC = DatasetSpec(
    name="fsd50k",
    classes=(),  # read from FSD50K.ground_truth/vocabulary.csv (the official order)
    declared_classes=NUM_CLASSES,
    multilabel=True,
    clip_seconds=0.0,  # 0.3-30 s
    splits=("train", "valid", "test"),
    # no official BAT config for FSD50K: clips are cropped/padded to AudioSet's 10.24 s input (1,024 frames),
    # the length the encoders were pretrained on; longer dev clips (up to 30 s) are cropped
    frames={"fbank": 1024, "fbank@bat-paper": 1024, "bat": 1024},
    protocol="unmute",  # the unmute benchmark (Rauch et al.) probes FSD50K with this recipe
    metric="mAP",
    license="CC BY 4.0 (the dataset; each clip keeps its own Creative Commons licence, listed in "
    "FSD50K.metadata)",
    citation="E. Fonseca, X. Favory, J. Pons, F. Font, X. Serra, FSD50K: An Open Dataset of Human-Labeled "
    "Sound Events, IEEE/ACM TASLP 30:829-852, 2022",
    description="51,197 Freesound clips (108.3 h), 200 AudioSet-ontology classes, multi-label.",
    layout=f"<root>/{GT}/{{dev,eval,vocabulary}}.csv, <root>/{DEV}/*.wav, <root>/{EVAL}/*.wav "
    "(the Zenodo archives unpacked side by side)",
    download="https://zenodo.org/records/4060432: unzip FSD50K.ground_truth.zip, FSD50K.dev_audio.zip "
    "(split archive z01-z05: `zip -s 0 FSD50K.dev_audio.zip --out dev.zip`) and FSD50K.eval_audio.zip into "
    "<data root>/FSD50K/",
    split_note="official: dev.csv split column train -> train, val -> valid; eval.csv -> test",
)
ROOT_NAMES = ("FSD50K", "fsd50k", "fsd50k-v1.0")


def detect(path: Path) -> Path | None:
    return path if (path / GT / "dev.csv").is_file() and (path / GT / "vocabulary.csv").is_file() else None


def read_vocabulary(root: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(labels, mids) in index order from vocabulary.csv (`index,label,mid`, no header)."""
    path = root / GT / "vocabulary.csv"
    rows = read_csv(path, (), header=False)
    by_idx: dict[int, tuple[str, str]] = {}
    for line, row in rows:
        if len(row) < 2:
            raise DatasetError(f"{path} line {line}: expected index,label,mid, got {row}")
        try:
            idx = int(row[0])
        except ValueError:
            raise DatasetError(f"{path} line {line}: index {row[0]!r} is not an integer") from None
        if idx in by_idx:
            raise DatasetError(f"{path} line {line}: index {idx} appears twice")
        by_idx[idx] = (row[1].strip(), row[2].strip() if len(row) > 2 else "")
    if not by_idx or sorted(by_idx) != list(range(len(by_idx))):
        raise DatasetError(f"{path}: indices must be 0..{len(by_idx) - 1}, each once")
    labels = tuple(by_idx[i][0] for i in range(len(by_idx)))
    if len(set(labels)) != len(labels):
        raise DatasetError(f"{path}: a label appears twice")
    return labels, tuple(by_idx[i][1] for i in range(len(by_idx)))


def _labels(path: Path, line: int, text: str, index: dict[str, int]) -> tuple[int, ...]:
    names = [x.strip() for x in (text or "").split(",") if x.strip()]
    if not names:
        raise DatasetError(f"{path} line {line}: no labels")
    unknown = [x for x in names if x not in index]
    if unknown:
        raise DatasetError(f"{path} line {line}: label {unknown[0]!r} is not in vocabulary.csv")
    return tuple(sorted({index[x] for x in names}))


def open_dataset(spec: DatasetSpec, root: Path, **options) -> Dataset:
    check_options(spec.name, options, ())
    labels, mids = read_vocabulary(root)
    spec = replace(spec, classes=labels, class_ids=mids)
    index = {c: i for i, c in enumerate(labels)}
    rows: dict[str, list] = {"train": [], "valid": [], "test": []}
    seen: dict[str, str] = {}
    for csv_name, audio, has_split in (("dev.csv", DEV, True), ("eval.csv", EVAL, False)):
        path = root / GT / csv_name
        for line, row in read_csv(path, ("fname", "labels") + (("split",) if has_split else ())):
            fname = (row["fname"] or "").strip()
            if not fname:
                raise DatasetError(f"{path} line {line}: empty fname")
            if has_split:
                split = DEV_SPLITS.get((row["split"] or "").strip())
                if split is None:
                    raise DatasetError(f"{path} line {line}: split {row['split']!r} is not train or val")
            else:
                split = "test"
            key = f"{audio}/{fname}"
            if key in seen:
                raise DatasetError(f"{path} line {line}: clip {fname!r} listed twice")
            seen[key] = split
            rows[split].append((fname, root / audio / f"{fname}.wav", _labels(path, line, row["labels"], index)))
    warnings = []
    if len(labels) != NUM_CLASSES:
        warnings.append(f"fsd50k: vocabulary.csv has {len(labels)} classes, the FSD50K release {NUM_CLASSES}")
    ds = split_dataset(spec, root, rows, warnings)
    ds.warnings += ds.class_coverage()
    return ds

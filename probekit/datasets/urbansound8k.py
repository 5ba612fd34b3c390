"""UrbanSound8K: `metadata/UrbanSound8K.csv` + `audio/fold1..fold10/<slice_file_name>`, 10 official folds.

The authors' protocol: 10-fold cross-validation over the predefined folds (never reshuffled: slices of one
recording share a fold), accuracy averaged over the folds. Split `all` holds every clip with its fold
(the `urbansound8k` protocol cross-validates it); `train`/`test` hold the folds of option `test_fold`
(default 1), as for ESC-50.
"""

from __future__ import annotations

from pathlib import Path

from probekit.datasets._common import check_options
from probekit.datasets._named import check_test_fold, fold_cv_protocol, fold_dataset, read_csv
from probekit.datasets.base import Dataset, DatasetSpec
from probekit.errors import DatasetError

CLASSES = ("air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling", "engine_idling",
           "gun_shot", "jackhammer", "siren", "street_music")  # fmt: skip
META = Path("metadata") / "UrbanSound8K.csv"
_REQUIRED = ("slice_file_name", "fold", "classID", "class")

SPEC = DatasetSpec(
    name="urbansound8k",
    classes=CLASSES,
    class_ids=tuple(str(i) for i in range(10)),
    multilabel=False,
    clip_seconds=4.0,  # at most 4 s
    splits=("train", "test", "all"),
    folds=10,
    # no official BAT config: 4 s at 16 kHz is 401 mel / 398 fbank frames -> the next multiple of 16
    frames={"fbank": 416, "fbank@bat-paper": 416, "bat": 416},
    protocol="urbansound8k",
    metric="accuracy",
    license="CC BY-NC 3.0",
    citation="J. Salamon, C. Jacoby, J. P. Bello, A Dataset and Taxonomy for Urban Sound Research, "
    "ACM Multimedia 2014",
    description="8,732 urban sound excerpts (<= 4 s), 10 classes, 10 predefined folds.",
    layout="<root>/metadata/UrbanSound8K.csv and <root>/audio/fold1..fold10/*.wav (the official archive)",
    download="https://urbansounddataset.weebly.com/urbansound8k.html: unpack "
    "UrbanSound8K.tar.gz into <data root>/ (it holds UrbanSound8K/)",
    split_note="official: 10-fold cross-validation over the predefined folds (do not reshuffle); split 'all'",
)
ROOT_NAMES = ("UrbanSound8K", "urbansound8k", "us8k")
PROTOCOLS = (fold_cv_protocol("urbansound8k", "UrbanSound8K", 10),)


def detect(path: Path) -> Path | None:
    return path if (path / META).is_file() and (path / "audio").is_dir() else None


def open_dataset(spec: DatasetSpec, root: Path, *, test_fold: int = 1, **options) -> Dataset:
    check_options(spec.name, options, ("test_fold",))
    k = check_test_fold(spec, test_fold)
    path = root / META
    rows, seen = [], set()
    for line, row in read_csv(path, _REQUIRED):
        try:
            fold, cid = int(row["fold"]), int(row["classID"])
        except (TypeError, ValueError):
            raise DatasetError(f"{path} line {line}: fold/classID must be integers, got {row}") from None
        if not 1 <= fold <= 10 or not 0 <= cid < len(CLASSES):
            raise DatasetError(f"{path} line {line}: fold {fold} / classID {cid} out of range (1..10 / 0..9)")
        if row["class"] != CLASSES[cid]:
            raise DatasetError(f"{path} line {line}: classID {cid} is {row['class']!r}, expected {CLASSES[cid]!r}")
        name = row["slice_file_name"]
        if name in seen:
            raise DatasetError(f"{path} line {line}: {name!r} listed twice")
        seen.add(name)
        rows.append((f"fold{fold}/{name}", root / "audio" / f"fold{fold}" / name, (cid,), fold))
    if not rows:
        raise DatasetError(f"{path}: no rows")
    return fold_dataset(spec, root, rows, k)

"""NSynth: `nsynth-{train,valid,test}/examples.json` + `nsynth-{split}/audio/<note_str>.wav` (4-s notes,
16 kHz). The official splits are used as they are (train 289,205 / valid 12,678 / test 4,096 notes).

Two named tasks:

* `nsynth-pitch`: pitch classification as HEAR's nsynth_pitch: the 88 MIDI pitches of the piano range
  21..108 (notes outside it are left out, as HEAR does), labels the pitch numbers; HEAR scores pitch
  accuracy (= accuracy here) and chroma accuracy (`chroma_accuracy`: pitch compared mod 12, as
  hear-eval-kit's chroma_acc; reported beside accuracy). HEAR subsamples the training split to
  5 h / 50 h; here the whole official split is read (subsample by making a manifest if needed).
* `nsynth-family`: the 11 instrument families (`instrument_family`, the dataset's own index order).
"""

from __future__ import annotations

import json
from pathlib import Path

from probekit.datasets._common import check_options
from probekit.datasets._named import SC2_RECIPE, split_dataset
from probekit.datasets.base import Dataset, DatasetSpec, ProtocolDecl
from probekit.errors import DatasetError

SPLITS = {"train": "nsynth-train", "valid": "nsynth-valid", "test": "nsynth-test"}
PITCHES = tuple(range(21, 109))
FAMILIES = ("bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string", "synth_lead",
            "vocal")  # fmt: skip

_COMMON: dict = dict(
    multilabel=False,
    clip_seconds=4.0,
    splits=("train", "valid", "test"),
    # no official BAT config: 4 s at 16 kHz is 401 mel / 398 fbank frames -> the next multiple of 16
    frames={"fbank": 416, "fbank@bat-paper": 416, "bat": 416},
    protocol="nsynth",
    metric="accuracy",
    license="CC BY 4.0",
    citation="J. Engel, C. Resnick, A. Roberts, S. Dieleman, D. Eck, K. Simonyan, M. Norouzi, Neural Audio "
    "Synthesis of Musical Notes with WaveNet Autoencoders, ICML 2017",
    layout="<root>/nsynth-{train,valid,test}/examples.json and <root>/nsynth-{split}/audio/<note_str>.wav",
    download="https://magenta.tensorflow.org/datasets/nsynth (json/wav archives nsynth-train.jsonwav.tar.gz, "
    "nsynth-valid..., nsynth-test...): unpack into <data root>/nsynth/",
    split_note="official: nsynth-train -> train, nsynth-valid -> valid, nsynth-test -> test",
)
SPEC_PITCH = DatasetSpec(
    name="nsynth-pitch",
    classes=tuple(str(p) for p in PITCHES),
    class_ids=tuple(str(p) for p in PITCHES),
    description="NSynth notes, pitch as HEAR's nsynth_pitch: 88 classes (MIDI 21-108); accuracy and chroma "
    "accuracy.",
    score_metrics=("accuracy", "chroma_accuracy"),  # HEAR's pitch_acc, chroma_acc
    **_COMMON,
)
SPEC_FAMILY = DatasetSpec(
    name="nsynth-family",
    classes=FAMILIES,
    class_ids=tuple(str(i) for i in range(len(FAMILIES))),
    description="NSynth notes, 11 instrument families; accuracy.",
    **_COMMON,
)
ROOT_NAMES = ("nsynth", "NSynth")
PROTOCOLS = (
    ProtocolDecl("nsynth", "NSynth: BAT's Speech Commands recipe (10,000 steps, batch 256, warmup 1,000, wd "
                 "0.05, CE), validate every 500 steps on nsynth-valid, best accuracy -> test",
                 SC2_RECIPE, False, "accuracy",
                 source="probekit preset: BAT_ICML2026 configs/scv2 recipe on NSynth's official valid split"),
)  # fmt: skip


def detect(path: Path) -> Path | None:
    return path if any((path / d / "examples.json").is_file() for d in SPLITS.values()) else None


def _examples(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected an object {{note_str: {{...}}}}")
    return data


def _label(task: str, path: Path, note: str, ex) -> int | None:
    if not isinstance(ex, dict):
        raise DatasetError(f"{path}: note {note!r} is not an object")
    key = "pitch" if task == "pitch" else "instrument_family"
    value = ex.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DatasetError(f"{path}: note {note!r} has {key}={value!r}, expected an integer")
    if task == "pitch":
        return value - PITCHES[0] if PITCHES[0] <= value <= PITCHES[-1] else None  # HEAR: piano range only
    if not 0 <= value < len(FAMILIES):
        raise DatasetError(f"{path}: note {note!r} has instrument_family {value}, expected 0..{len(FAMILIES) - 1}")
    name = ex.get("instrument_family_str")
    if name is not None and name != FAMILIES[value]:
        raise DatasetError(f"{path}: note {note!r}: instrument_family {value} is {name!r}, expected {FAMILIES[value]!r}")
    return value


def open_dataset(spec: DatasetSpec, root: Path, **options) -> Dataset:
    check_options(spec.name, options, ())
    task = "pitch" if spec.name == SPEC_PITCH.name else "family"
    rows: dict[str, list] = {}
    absent_splits = []
    for split, folder in SPLITS.items():
        path = root / folder / "examples.json"
        rows[split] = []
        if not path.is_file():
            absent_splits.append(folder)
            continue
        for note, ex in sorted(_examples(path).items()):
            label = _label(task, path, note, ex)
            if label is not None:
                rows[split].append((f"{folder}/{note}", root / folder / "audio" / f"{note}.wav", (label,)))
    warnings = [f"{spec.name}: {f}/examples.json not found (that split is empty)" for f in absent_splits]
    ds = split_dataset(spec, root, rows, warnings)
    ds.warnings += ds.class_coverage()
    return ds

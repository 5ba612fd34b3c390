"""Tiny instances of the named datasets in their exact official layouts, built from real FSDD recordings.

Each builder writes under `<base>/<folder name the registry looks for>` and returns that root. The FSDD
digit of a recording stands for a class of the dataset (digit d -> the d-th class used), so a probe can
learn it; the audio is the FSDD wav itself (8 kHz), copied byte for byte.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from hear_tasks import event_task  # tests/datasets is on sys.path (pytest prepend mode)

SPEAKERS = ["jackson", "nicolas", "theo", "yweweler", "george", "lucas"]


def _fsdd(fsdd_root: Path, digit: int, k: int) -> Path:
    """The k-th FSDD recording of `digit` (speaker k % 6, take k // 6)."""
    return fsdd_root / "recordings" / f"{digit}_{SPEAKERS[k % 6]}_{k // 6}.wav"


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


# ---- FSD50K --------------------------------------------------------------------------------------------
#: (label, mid) of the vocabulary: three leaf classes and their common parent (FSD50K lists ancestors too)
FSD_VOCAB = [("Speech", "/m/09x0r"), ("Male_speech_and_man_speaking", "/m/05zppz"),
             ("Female_speech_and_woman_speaking", "/m/02zsn"), ("Child_speech_and_kid_speaking", "/m/0ytgt")]  # fmt: skip
FSD_PLAN = {"train": 3, "val": 1, "eval": 2}  # clips per digit


def fsd50k(base: Path, fsdd_root: Path) -> Path:
    root = base / "FSD50K"
    gt = root / "FSD50K.ground_truth"
    gt.mkdir(parents=True)
    with open(gt / "vocabulary.csv", "w", newline="") as fh:  # no header, as the release
        csv.writer(fh).writerows([i, lab, mid] for i, (lab, mid) in enumerate(FSD_VOCAB))
    dev, evl, fname, k = [], [], 1000, 0
    for part, n in FSD_PLAN.items():
        for digit in range(3):
            for _ in range(n):
                leaf = FSD_VOCAB[1 + digit]
                labels, mids = f"{leaf[0]},Speech", f"{leaf[1]},/m/09x0r"
                audio = "FSD50K.eval_audio" if part == "eval" else "FSD50K.dev_audio"
                _copy(_fsdd(fsdd_root, digit, k), root / audio / f"{fname}.wav")
                (evl if part == "eval" else dev).append([fname, labels, mids] + ([] if part == "eval" else [part]))
                fname, k = fname + 7, k + 1
    with open(gt / "dev.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["fname", "labels", "mids", "split"])
        w.writerows(dev)
    with open(gt / "eval.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["fname", "labels", "mids"])
        w.writerows(evl)
    return root


# ---- UrbanSound8K ---------------------------------------------------------------------------------------
US8K_CLASSES = ["air_conditioner", "car_horn", "children_playing"]


def urbansound8k(base: Path, fsdd_root: Path) -> Path:
    """3 classes x 10 folds x 1 clip; slice names `<fsID>-<classID>-0-<slice>.wav` as the release."""
    root = base / "UrbanSound8K"
    (root / "metadata").mkdir(parents=True)
    rows = []
    for fold in range(1, 11):
        for cid in range(3):
            fs_id = 1000 * fold + cid
            name = f"{fs_id}-{cid}-0-0.wav"
            _copy(_fsdd(fsdd_root, cid, fold), root / "audio" / f"fold{fold}" / name)
            rows.append([name, fs_id, 0.0, 1.0, 1, fold, cid, US8K_CLASSES[cid]])
    with open(root / "metadata" / "UrbanSound8K.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"])
        w.writerows(rows)
    return root


# ---- GTZAN ----------------------------------------------------------------------------------------------
GTZAN_GENRES = ["blues", "classical", "country"]


def gtzan(base: Path, fsdd_root: Path, *, filtered: bool = True) -> Path:
    """3 genres x 10 files numbered 0, 10, ..., 90 (one per fold); the fault-filtered lists in GTZAN_split/."""
    root = base / "gtzan"
    lists: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for g, genre in enumerate(GTZAN_GENRES):
        for i in range(10):
            name = f"{genre}.{10 * i:05d}.wav"
            _copy(_fsdd(fsdd_root, g, i), root / "genres" / genre / name)
            lists["test" if i < 3 else "valid" if i < 4 else "train"].append(f"{genre}/{name}")
    if filtered:
        (root / "GTZAN_split").mkdir()
        for split, entries in lists.items():
            (root / "GTZAN_split" / f"{split}_filtered.txt").write_text("\n".join(entries) + "\n")
    return root


# ---- NSynth ---------------------------------------------------------------------------------------------
NSYNTH_FAMILIES = [(0, "bass", "bass_synthetic_033"), (3, "guitar", "guitar_acoustic_010"),
                   (6, "organ", "organ_electronic_007")]  # fmt: skip
NSYNTH_PITCHES = [60, 64, 67]
NSYNTH_PLAN = {"nsynth-train": 3, "nsynth-valid": 1, "nsynth-test": 2}


def nsynth(base: Path, fsdd_root: Path) -> Path:
    """Digit d -> family NSYNTH_FAMILIES[d] and pitch NSYNTH_PITCHES[d]; plus one note outside 21..108."""
    root = base / "nsynth"
    k = 0
    for folder, n in NSYNTH_PLAN.items():
        examples = {}
        for d, (fam, fam_str, instrument) in enumerate(NSYNTH_FAMILIES):
            for j in range(n):
                velocity = [25, 50, 75, 100, 127][j]
                note = f"{instrument}-{NSYNTH_PITCHES[d]:03d}-{velocity:03d}"
                _copy(_fsdd(fsdd_root, d, k), root / folder / "audio" / f"{note}.wav")
                k += 1
                examples[note] = {"note": k, "note_str": note, "instrument": 10 * fam + 1,
                                  "instrument_str": instrument, "pitch": NSYNTH_PITCHES[d], "velocity": velocity,
                                  "sample_rate": 16000, "qualities": [0] * 10, "qualities_str": [],
                                  "instrument_family": fam, "instrument_family_str": fam_str,
                                  "instrument_source": 1, "instrument_source_str": "electronic"}  # fmt: skip
        if folder == "nsynth-train":  # a pitch HEAR leaves out (below the piano range): kept for the family task
            note = "bass_synthetic_033-012-100"
            _copy(_fsdd(fsdd_root, 0, 40), root / folder / "audio" / f"{note}.wav")
            examples[note] = {**examples[next(iter(examples))], "note_str": note, "pitch": 12}
        (root / folder / "examples.json").write_text(json.dumps(examples, indent=2))
    return root


# ---- dcase2016-task2 (a HEAR event task folder) ---------------------------------------------------------
def dcase2016_task2(base: Path, fsdd_root: Path) -> Path:
    """The HEAR event task of hear_tasks (FSDD digits at known onsets) under the dcase2016_task2 name."""
    root = event_task(base / "tasks" / "dcase2016_task2-hear2021-full", fsdd_root)
    meta = json.loads((root / "task_metadata.json").read_text())
    meta.update(task_name="dcase2016_task2", sample_duration=3.0)
    (root / "task_metadata.json").write_text(json.dumps(meta, indent=4))
    return root


BUILDERS = {"fsd50k": fsd50k, "urbansound8k": urbansound8k, "gtzan": gtzan, "nsynth-pitch": nsynth,
            "dcase2016-task2": dcase2016_task2}  # fmt: skip

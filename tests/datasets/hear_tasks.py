"""HEAR task folders built from real FSDD recordings, in the exact hear-preprocess layout.

`task_metadata.json`, `labelvocabulary.csv`, `{split}.json` and `{16000,48000}/{split}/*.wav` (resampled,
padded/trimmed to `sample_duration` as hear-preprocess does).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import soundfile as sf

SPEAKERS = ["jackson", "nicolas", "theo", "yweweler", "george", "lucas"]
DIGITS = [str(d) for d in range(10)]


def _read(fsdd_root: Path, name: str, rate: int) -> np.ndarray:
    x, sr = sf.read(str(fsdd_root / "recordings" / name), dtype="float32")
    n = round(len(x) * rate / sr)
    return np.interp(np.arange(n) * sr / rate, np.arange(len(x)), x).astype(np.float32)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))


def _write(root: Path, split: str, fname: str, x: np.ndarray, rates=(16000, 48000)) -> None:
    for r in rates:
        d = root / str(r) / split
        d.mkdir(parents=True, exist_ok=True)
        y = x if r == 16000 else np.interp(np.arange(len(x) * r // 16000) * 16000 / r, np.arange(len(x)), x)
        sf.write(str(d / fname), y.astype(np.float32), r, subtype="PCM_16")


def _common(root: Path, meta: dict, labels: list[str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "task_metadata.json").write_text(json.dumps(meta, indent=4))
    with open(root / "labelvocabulary.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["idx", "label"])
        for i, lab in enumerate(labels):
            w.writerow([i, lab])


def scene_folds(root: Path, fsdd_root: Path, nfolds: int = 5, takes: int = 1) -> Path:
    """Multiclass scene task, speaker-wise folds: fold k holds speaker k's digits (takes 0..takes-1)."""
    meta = {"task_name": "fsdd_digits_folds", "version": "test", "embedding_type": "scene",
            "prediction_type": "multiclass", "split_mode": "new_split_kfold", "nfolds": nfolds,
            "sample_duration": 1.5, "evaluation": ["top1_acc"], "mode": "full"}  # fmt: skip
    _common(root, meta, DIGITS)
    for k in range(nfolds):
        split, labels = f"fold{k:02d}", {}
        for d in DIGITS:
            for t in range(takes):
                fname = f"{d}_{SPEAKERS[k]}_{t}.wav"
                _write(root, split, fname, _fit(_read(fsdd_root, fname, 16000), 24000))
                labels[fname] = [d]
        (root / f"{split}.json").write_text(json.dumps(labels, indent=4))
    return root


def scene_multilabel(root: Path, fsdd_root: Path) -> Path:
    """Multilabel scene task (trainvaltest): each clip is two different digits one after the other."""
    meta = {"task_name": "fsdd_digit_pairs", "version": "test", "embedding_type": "scene",
            "prediction_type": "multilabel", "split_mode": "trainvaltest", "sample_duration": 2.0,
            "evaluation": ["mAP", "d_prime", "aucroc"], "mode": "full"}  # fmt: skip
    _common(root, meta, DIGITS)
    plan = {"train": (SPEAKERS[:3], range(2)), "valid": (SPEAKERS[3:4], range(2, 3)),
            "test": (SPEAKERS[4:6], range(3, 4))}  # fmt: skip
    for split, (speakers, takes) in plan.items():
        labels = {}
        for s in speakers:
            for t in takes:
                for d in range(10):
                    a, b = str(d), str((d + 3 + t) % 10)
                    x = np.concatenate([_fit(_read(fsdd_root, f"{a}_{s}_{t}.wav", 16000), 16000),
                                        _fit(_read(fsdd_root, f"{b}_{s}_{t}.wav", 16000), 16000)])  # fmt: skip
                    fname = f"{s}_{t}_{a}{b}.wav"
                    _write(root, split, fname, x)
                    labels[fname] = [a, b]
        (root / f"{split}.json").write_text(json.dumps(labels, indent=4))
    return root


#: event task: (split, file) -> [(digit, onset s)]; each digit is cut to 0.4 s so its offset is known
EVENT_PLAN = {
    "train": {
        "e0.wav": [("3", 0.25), ("7", 1.5)],
        "e1.wav": [("1", 0.5)],
        "e2.wav": [("9", 2.0), ("2", 0.1)],
    },
    "valid": {"e3.wav": [("5", 1.0)]},
    "test": {"e4.wav": [("0", 0.3), ("8", 1.2), ("4", 2.2)], "e5.wav": []},
}
EVENT_LEN = 0.4


def event_task(root: Path, fsdd_root: Path) -> Path:
    """Event (timestamp) task: 3-s clips of silence with FSDD digits placed at EVENT_PLAN's onsets."""
    meta = {"task_name": "fsdd_digit_events", "version": "test", "embedding_type": "event",
            "prediction_type": "multilabel", "split_mode": "trainvaltest", "sample_duration": 3.0,
            "evaluation": ["event_onset_200ms_fms", "segment_1s_er"], "mode": "full"}  # fmt: skip
    _common(root, meta, DIGITS)
    n = int(EVENT_LEN * 16000)
    for split, files in EVENT_PLAN.items():
        labels = {}
        for fname, evs in files.items():
            x = np.zeros(48000, dtype=np.float32)
            for digit, onset in evs:
                i = int(onset * 16000)
                x[i : i + n] += _fit(_read(fsdd_root, f"{digit}_theo_{int(onset * 10)}.wav", 16000), n)
            _write(root, split, fname, x)
            labels[fname] = [{"label": d, "start": onset * 1000.0, "end": (onset + EVENT_LEN) * 1000.0}
                             for d, onset in evs]  # fmt: skip
        (root / f"{split}.json").write_text(json.dumps(labels, indent=4))
    return root

"""An FSDD-derived sound event detection task built from the real recordings.

Each clip is `seconds` long (drawn in [4, 6] s), low white noise (-60 dBFS RMS) with 1-3 spoken digits placed at
known onsets, non-overlapping and at least 0.3 s apart; an event runs from its onset over the whole recording
(FSDD recordings are trimmed to the word). Written as real 16 kHz wav files in two layouts:

  * `events.csv` (`events:PATH`): path,label,onset,offset,split, paths relative to the CSV;
  * a HEAR event task folder (`hear:PATH`): task_metadata.json (embedding_type "event"), labelvocabulary.csv,
    {split}.json with start/end in ms, 16000/{split}/*.wav padded to the task's sample_duration (6 s) as
    hear-preprocess does.

Deterministic for a seed; speakers and takes differ between splits' clips only by draw (a probe detects
digits, not speakers).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


@dataclass(frozen=True)
class Placed:
    digit: str
    onset: float
    offset: float


def _read16k(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float32")
    if x.ndim > 1:
        x = x.mean(axis=1)
    n = round(len(x) * RATE / sr)
    return np.interp(np.arange(n) * sr / RATE, np.arange(len(x)), x).astype(np.float32)


def _clip(rng, fsdd_root: Path, digits, seconds: tuple[float, float], max_events: int):
    dur = round(float(rng.uniform(*seconds)), 2)
    x = (rng.standard_normal(int(dur * RATE)) * 1e-3).astype(np.float32)
    placed: list[Placed] = []
    t = float(rng.uniform(0.1, 0.6))
    for _ in range(int(rng.integers(1, max_events + 1))):
        d = str(digits[int(rng.integers(len(digits)))])
        w = _read16k(fsdd_root / "recordings" / f"{d}_{SPEAKERS[int(rng.integers(6))]}_{int(rng.integers(50))}.wav")
        w = w / (np.abs(w).max() + 1e-9) * 0.5
        if t + len(w) / RATE > dur - 0.05:
            break
        i = int(round(t * RATE))
        x[i : i + len(w)] += w
        placed.append(Placed(d, round(i / RATE, 4), round((i + len(w)) / RATE, 4)))
        t = (i + len(w)) / RATE + float(rng.uniform(0.3, 1.2))
    return x, dur, placed


def build_fsdd_events(out: Path, fsdd_root: Path, *, clips: dict[str, int] | None = None, digits=tuple("0123456789"),
                      seconds: tuple[float, float] = (4.0, 6.0), max_events: int = 3, seed: int = 0,
                      hear_duration: float = 6.0) -> dict[str, Path]:
    """Write the task under `out`; returns {"events": the CSV, "hear": the HEAR task folder}."""
    clips = clips or {"train": 24, "valid": 6, "test": 8}
    rng = np.random.default_rng(seed)
    out = Path(out)
    audio, hear = out / "audio", out / "hear"
    rows, vocab = [], sorted(digits)
    (hear).mkdir(parents=True, exist_ok=True)
    for split, n in clips.items():
        (audio / split).mkdir(parents=True, exist_ok=True)
        (hear / "16000" / split).mkdir(parents=True, exist_ok=True)
        labels = {}
        for k in range(n):
            x, dur, placed = _clip(rng, fsdd_root, digits, seconds, max_events)
            name = f"{split}_{k:03d}.wav"
            sf.write(str(audio / split / name), x, RATE, subtype="PCM_16")
            pad = np.zeros(int(hear_duration * RATE), dtype=np.float32)
            pad[: min(len(x), len(pad))] = x[: len(pad)]
            sf.write(str(hear / "16000" / split / name), pad, RATE, subtype="PCM_16")
            labels[name] = [{"label": p.digit, "start": p.onset * 1000.0, "end": p.offset * 1000.0} for p in placed]
            rows += [(f"audio/{split}/{name}", p.digit, p.onset, p.offset, split) for p in placed]
            if not placed:  # the manifest needs a row per file; give every clip at least one event
                raise AssertionError("clip without an event")  # _clip always places the first digit
        (hear / f"{split}.json").write_text(json.dumps(labels, indent=1))
    csv_path = out / "events.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "onset", "offset", "split"])
        w.writerows(rows)
    meta = {"task_name": "fsdd_events", "version": "test", "embedding_type": "event",
            "prediction_type": "multilabel", "split_mode": "trainvaltest", "sample_duration": hear_duration,
            "evaluation": ["event_onset_200ms_fms", "segment_1s_er"], "mode": "full"}
    (hear / "task_metadata.json").write_text(json.dumps(meta, indent=1))
    with open(hear / "labelvocabulary.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["idx", "label"])
        w.writerows(enumerate(vocab))
    return {"events": csv_path, "hear": hear}

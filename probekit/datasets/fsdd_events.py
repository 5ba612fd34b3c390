"""A sound event detection task built from real FSDD recordings: try SED without DCASE data.

`build_fsdd_events(out_dir)` writes clips of `seconds` (drawn in [4, 6] s) of low white noise (-60 dBFS RMS)
with 1-3 spoken digits placed at known onsets, non-overlapping and at least 0.3 s apart; an event runs from
its onset over the whole recording (FSDD recordings are trimmed to the word). Written as real 16 kHz wav files
in two layouts that probekit reads:

  * `events.csv` (`-d events:OUT/events.csv`): path,label,onset,offset,split, paths relative to the CSV;
  * a HEAR event task folder (`-d hear:OUT/hear`): task_metadata.json (embedding_type "event"),
    labelvocabulary.csv, {split}.json with start/end in ms, 16000/{split}/*.wav padded to the task's
    sample_duration (6 s) as hear-preprocess does.

By default the recordings come from the FSDD subset shipped with probekit (probekit/data/fsdd-demo, 6
speakers x 10 digits x takes 0-14, CC BY-SA 4.0); pass `fsdd_root` for a full FSDD checkout (takes 0-49).
Deterministic for a seed and source. Speakers and takes are drawn independently per clip (a probe detects
digits, not speakers); bat-tiny-fsdd saw FSDD's training takes in pretraining.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probekit.errors import DatasetError

RATE = 16000
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
DEFAULT_CLIPS = {"train": 24, "valid": 6, "test": 8}
#: The FSDD subset shipped with probekit (probekit.demo.DEMO_DATA, without importing the demo).
SHIPPED_FSDD = Path(__file__).resolve().parents[1] / "data" / "fsdd-demo"


@dataclass(frozen=True)
class Placed:
    digit: str
    onset: float
    offset: float


def _read16k(path: Path) -> np.ndarray:
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="float32")
    if x.ndim > 1:
        x = x.mean(axis=1)
    n = round(len(x) * RATE / sr)
    return np.interp(np.arange(n) * sr / RATE, np.arange(len(x)), x).astype(np.float32)


def _takes(recordings: Path, digits) -> int:
    """How many takes (0..n-1) every (digit, speaker) pair has: the range the draws use."""
    n = 0
    while all((recordings / f"{d}_{s}_{n}.wav").is_file() for d in digits for s in SPEAKERS):
        n += 1
    if n == 0:
        raise DatasetError(f"{recordings}: no FSDD take 0 of every digit {''.join(digits)} by {', '.join(SPEAKERS)}",
                           hint="pass fsdd_root=<folder holding recordings/{digit}_{speaker}_{take}.wav>")
    return n


def _clip(rng, recordings: Path, digits, seconds: tuple[float, float], max_events: int, takes: int):
    dur = round(float(rng.uniform(*seconds)), 2)
    x = (rng.standard_normal(int(dur * RATE)) * 1e-3).astype(np.float32)
    placed: list[Placed] = []
    t = float(rng.uniform(0.1, 0.6))
    for _ in range(int(rng.integers(1, max_events + 1))):
        d = str(digits[int(rng.integers(len(digits)))])
        w = _read16k(recordings / f"{d}_{SPEAKERS[int(rng.integers(6))]}_{int(rng.integers(takes))}.wav")
        w = w / (np.abs(w).max() + 1e-9) * 0.5
        if t + len(w) / RATE > dur - 0.05:
            break
        i = int(round(t * RATE))
        x[i : i + len(w)] += w
        placed.append(Placed(d, round(i / RATE, 4), round((i + len(w)) / RATE, 4)))
        t = (i + len(w)) / RATE + float(rng.uniform(0.3, 1.2))
    return x, dur, placed


def _csv_text(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def build_fsdd_events(out_dir: str | Path, fsdd_root: str | Path | None = None, *, clips: dict[str, int] | None = None,
                      digits=tuple("0123456789"), seconds: tuple[float, float] = (4.0, 6.0), max_events: int = 3,
                      seed: int = 0, hear_duration: float = 6.0) -> dict[str, Path]:
    """Write the FSDD event task under `out_dir`; returns {"events": the CSV, "hear": the HEAR task folder}.

    fsdd_root: a folder holding FSDD's `recordings/` (default: the subset shipped with probekit).
    clips: clips per split (default 24 train, 6 valid, 8 test); digits: the classes used.
    """
    import soundfile as sf

    from probekit._io import atomic_write_json, atomic_write_text

    if fsdd_root is None:
        fsdd_root = SHIPPED_FSDD
    recordings = Path(fsdd_root) / "recordings"
    digits = tuple(str(d) for d in digits)
    if not digits or any(d not in "0123456789" or len(d) != 1 for d in digits):
        raise DatasetError(f"digits {digits!r} must be among 0..9", hint="e.g. digits=('0', '6')")
    if not (0 < seconds[0] <= seconds[1] <= hear_duration):
        raise DatasetError(f"seconds {seconds} must be a range within (0, hear_duration={hear_duration}]")
    takes = _takes(recordings, digits)
    clips = dict(clips or DEFAULT_CLIPS)
    unknown = [s for s in clips if s not in ("train", "valid", "test")]
    if unknown:
        raise DatasetError(f"clips names split {unknown[0]!r}; the splits are train, valid, test")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    audio, hear = out / "audio", out / "hear"
    rows, vocab = [], sorted(digits)
    hear.mkdir(parents=True, exist_ok=True)
    for split, n in clips.items():
        (audio / split).mkdir(parents=True, exist_ok=True)
        (hear / "16000" / split).mkdir(parents=True, exist_ok=True)
        labels = {}
        for k in range(int(n)):
            x, dur, placed = _clip(rng, recordings, digits, seconds, max_events, takes)
            name = f"{split}_{k:03d}.wav"
            sf.write(str(audio / split / name), x, RATE, subtype="PCM_16")
            pad = np.zeros(int(hear_duration * RATE), dtype=np.float32)
            pad[: min(len(x), len(pad))] = x[: len(pad)]
            sf.write(str(hear / "16000" / split / name), pad, RATE, subtype="PCM_16")
            labels[name] = [{"label": p.digit, "start": p.onset * 1000.0, "end": p.offset * 1000.0} for p in placed]
            rows += [(f"audio/{split}/{name}", p.digit, p.onset, p.offset, split) for p in placed]
        atomic_write_json(hear / f"{split}.json", labels, indent=1)
    for split in ("train", "valid", "test"):  # hear-preprocess's trainvaltest layout has all three files
        if split not in clips:
            (hear / "16000" / split).mkdir(parents=True, exist_ok=True)
            atomic_write_json(hear / f"{split}.json", {}, indent=1)
    csv_path = out / "events.csv"
    atomic_write_text(csv_path, _csv_text(["path", "label", "onset", "offset", "split"], rows))
    meta = {"task_name": "fsdd_events", "version": "probekit", "embedding_type": "event",
            "prediction_type": "multilabel", "split_mode": "trainvaltest", "sample_duration": hear_duration,
            "evaluation": ["event_onset_200ms_fms", "segment_1s_er"], "mode": "full"}
    atomic_write_json(hear / "task_metadata.json", meta, indent=1)
    atomic_write_text(hear / "labelvocabulary.csv", _csv_text(["idx", "label"], list(enumerate(vocab))))
    return {"events": csv_path, "hear": hear}

"""Free Spoken Digit Dataset: `recordings/{digit}_{speaker}_{take}.wav`, 8 kHz, takes 0-4 are the test split.

`fsdd` is the 10-class digit task; `fsdd-asr` reads the same recordings and split as a tiny speech recognition
task (transcript = the digit's English word, e.g. "seven"), for the ASR probe on a CPU."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from probekit.datasets._common import check_options
from probekit.datasets.base import Clip, Dataset, DatasetSpec
from probekit.datasets.transcripts import CHARS
from probekit.errors import DatasetError

#: Longest clip 2.28 s -> 226 fbank / 229 mel frames at 16 kHz; 256 covers every clip with one length.
FSDD_FRAMES = 256

SPEC = DatasetSpec(
    name="fsdd",
    classes=tuple(str(d) for d in range(10)),
    class_ids=tuple(str(d) for d in range(10)),
    multilabel=False,
    clip_seconds=2.3,
    splits=("train", "test"),
    frames={"fbank": FSDD_FRAMES, "fbank@bat-paper": FSDD_FRAMES, "bat": FSDD_FRAMES},
    fbank_stats=(-4.268, 4.569),  # no official FSDD statistics: EAT's default (AudioSet)
    protocol="fsdd",
    metric="accuracy",
    license="CC BY-SA 4.0",
    citation="Z. Jackson et al., Free Spoken Digit Dataset (FSDD), Zenodo 2018, doi:10.5281/zenodo.1342401",
    description="3,000 English spoken digits (6 speakers x 10 digits x 50 takes), 8 kHz, 0.14-2.28 s.",
    layout="<root>/recordings/{digit}_{speaker}_{take}.wav (the public GitHub repository layout)",
)
ROOT_NAMES = ("fsdd", "free-spoken-digit-dataset", "FSDD")
#: fsdd-asr: the official character vocabulary as classes (index 0: the CTC blank), task "asr"
SPEC_ASR = dataclasses.replace(
    SPEC, name="fsdd-asr", classes=CHARS, class_ids=CHARS, task="asr", protocol="fsdd-asr", metric="WER",
    description="FSDD as a tiny ASR task: transcript = the spoken digit's word (zero..nine); "
    "the official split of `fsdd` (takes 0-4 test).",
)
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)$")
TEST_TAKES = range(5)


def detect(path: Path) -> Path | None:
    """The FSDD root for `path`: a folder holding `recordings/`, or `recordings/` itself."""
    if (path / "recordings").is_dir():
        return path
    if path.name == "recordings" and path.is_dir() and any(path.glob("*.wav")):
        return path.parent
    return None


def open_dataset(spec: DatasetSpec, root: Path, **options) -> Dataset:
    check_options(spec.name, options, ())
    asr = spec.task == "asr"
    recordings = root / "recordings"
    cache: dict[str, list[Clip]] = {}

    def lister(split: str) -> list[Clip]:
        if not cache:
            by_split: dict[str, list[Clip]] = {"train": [], "test": []}
            for path in sorted(recordings.glob("*.wav")):
                m = _NAME.match(path.stem)
                if not m:
                    raise DatasetError(
                        f"{path}: FSDD file names must be {{digit}}_{{speaker}}_{{take}}.wav",
                        hint="remove or rename the file",
                    )
                digit, take = int(m.group(1)), int(m.group(3))
                s = "test" if take in TEST_TAKES else "train"
                if asr:
                    clip = Clip(id=path.stem, path=path, labels=(), split=s, transcript=DIGIT_WORDS[digit])
                else:
                    clip = Clip(id=path.stem, path=path, labels=(digit,), split=s)
                by_split[s].append(clip)
            if not any(by_split.values()):
                raise DatasetError(f"{recordings}: no .wav files", hint=f"expected {spec.layout}")
            cache.update(by_split)
        return cache[split]

    return Dataset(spec, root, lister)

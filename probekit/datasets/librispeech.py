"""LibriSpeech in its official folder layout (openslr.org/12), read as the BAT code's ASR task.

`<root>/LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac` with one
`<speaker>-<chapter>.trans.txt` per chapter (lines `<speaker>-<chapter>-<utt> TRANSCRIPT`). The BAT code loads
Hugging Face `librispeech_asr` config "clean": train.100, validation, test, i.e. the official subsets
train-clean-100 (train), dev-clean (valid: best-WER selection) and test-clean (test). Clips carry their
transcripts (`Clip.transcript`); the classes are the official character vocabulary (`transcripts.CHARS`).

The training presets `librispeech` (BAT configs/librispeech/ls_probe_config.yaml) and `fsdd-asr` are declared
here, next to the datasets (`PROTOCOL_PRESETS`), and registered by probekit.train.protocols.
"""

from __future__ import annotations

import re
from pathlib import Path

from probekit.datasets._common import check_options
from probekit.datasets.base import Clip, Dataset, DatasetSpec
from probekit.datasets.transcripts import CHARS
from probekit.errors import DatasetError

#: split -> the official subset folder (BAT: HF librispeech_asr "clean" train.100 / validation / test)
SUBSETS = {"train": "train-clean-100", "valid": "dev-clean", "test": "test-clean"}

SPEC = DatasetSpec(
    name="librispeech",
    classes=CHARS,
    class_ids=CHARS,
    multilabel=False,
    clip_seconds=12.7,  # mean utterance length of train-clean-100 (1.3-24.5 s); each split pads to its longest
    splits=("train", "valid", "test"),
    fbank_stats=(-7.32925959, 4.06100490),  # BAT legacy_audio_datasets.py LEGACY_STATS (EAT/SSLAM) LibriSpeech
    protocol="librispeech",
    metric="WER",
    task="asr",
    license="CC BY 4.0",
    citation="V. Panayotov, G. Chen, D. Povey, S. Khudanpur, LibriSpeech: an ASR corpus based on public domain "
    "audio books, ICASSP 2015",
    description="LibriSpeech read English speech, 16 kHz; train-clean-100 (train), dev-clean (valid), "
    "test-clean (test); character CTC targets, WER/CER.",
    layout="<root>/LibriSpeech/{train-clean-100,dev-clean,test-clean}/<speaker>/<chapter>/"
    "<speaker>-<chapter>-<utt>.flac + <speaker>-<chapter>.trans.txt (the openslr.org/12 archives)",
)
ROOT_NAMES = ("librispeech", "LibriSpeech")
_UTT = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def _base(path: Path) -> Path | None:
    """The folder holding the subset folders: `path/LibriSpeech` or `path` itself."""
    for cand in (path / "LibriSpeech", path):
        if any((cand / s).is_dir() for s in SUBSETS.values()):
            return cand
    return None


def detect(path: Path) -> Path | None:
    return path if _base(path) is not None else None


def _read_transcripts(trans: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        lines = trans.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{trans}: cannot read the transcript file ({e})", hint="restore it from the archive")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        utt, _, text = line.strip().partition(" ")
        if not _UTT.match(utt) or not text.strip():
            raise DatasetError(f"{trans}:{n}: expected '<speaker>-<chapter>-<utt> TRANSCRIPT', got {line[:60]!r}",
                               hint="restore the file from the LibriSpeech archive")
        if utt in out:
            raise DatasetError(f"{trans}:{n}: utterance {utt} is listed twice", hint="remove the duplicate line")
        out[utt] = text.strip()
    return out


def _list_subset(folder: Path, split: str) -> tuple[list[Clip], int]:
    """The clips of one subset folder in (speaker, chapter, utterance) order, and transcript lines whose
    audio is absent."""
    clips, missing = [], 0
    def order(p: Path):  # numeric speaker, chapter (as the utterance ids sort); other names after, by text
        return tuple((0, int(n), "") if n.isdigit() else (1, 0, n) for n in (p.parent.parent.name, p.parent.name))

    for trans in sorted(folder.glob("*/*/*.trans.txt"), key=order):
        texts = _read_transcripts(trans)
        audio = {p.stem: p for p in trans.parent.glob("*.flac")}
        for stem in sorted(set(audio) - set(texts)):
            raise DatasetError(f"{audio[stem]}: no line for {stem} in {trans.name}",
                               hint="restore the chapter's transcript file, or remove the audio file")
        for utt, text in sorted(texts.items(), key=lambda kv: tuple(int(x) for x in kv[0].split("-"))):  # numeric ids
            if utt not in audio:
                missing += 1
                continue
            clips.append(Clip(id=utt, path=audio[utt], labels=(), split=split, transcript=text))
    return clips, missing


def open_dataset(spec: DatasetSpec, root: Path, **options) -> Dataset:
    check_options(spec.name, options, ())
    base = _base(root)
    if base is None:
        raise DatasetError(f"{root}: no LibriSpeech subset folder ({', '.join(SUBSETS.values())})",
                           hint=f"expected {spec.layout}")
    ds: Dataset

    def lister(split: str) -> list[Clip]:
        folder = base / SUBSETS[split]
        if not folder.is_dir():
            raise DatasetError(f"{folder}: LibriSpeech subset {SUBSETS[split]} (split {split!r}) is missing",
                               hint=f"unpack {SUBSETS[split]}.tar.gz from openslr.org/12 into {base}")
        clips, missing = _list_subset(folder, split)
        if not clips:
            raise DatasetError(f"{folder}: no <speaker>/<chapter>/*.trans.txt with .flac files",
                               hint=f"expected {spec.layout}")
        if missing:
            ds.missing[split] = missing
            ds.warnings.append(f"librispeech/{split}: {missing} transcript line(s) without their .flac file")
        return clips

    ds = Dataset(spec, root, lister)
    return ds


#: Training presets declared beside the dataset, as plain data (probekit.train.protocols builds and registers
#: them): `train` holds TrainConfig fields.
PROTOCOL_PRESETS = (
    {  # BAT configs/librispeech/ls_probe_config.yaml + engine/trainer.py (CTCLoss, best val WER -> test)
        "name": "librispeech",
        "description": "LibriSpeech ASR: 20,000 steps, batch 64, lr 1e-3, warmup 500, wd 0.05, CTC; validate every "
        "500 steps on dev-clean, best (lowest) WER -> test-clean",
        "train": dict(batch_size=64, steps=20000, lr=1e-3, min_lr=1e-6, warmup_steps=500, weight_decay=0.05,
                      loss="ctc", selection="best_val", eval_every=500, eval_batch_size=64),
        "metric": "WER",
        "source": "BAT_ICML2026 configs/librispeech/ls_probe_config.yaml + engine/trainer.py",
    },
    {  # FSDD read as tiny ASR (no validation split: last step)
        "name": "fsdd-asr",
        "description": "FSDD as tiny ASR: 1,500 steps, batch 32, lr 1e-3, warmup 150, wd 0.05, CTC; last step; WER",
        "train": dict(batch_size=32, steps=1500, lr=1e-3, warmup_steps=150, weight_decay=0.05, loss="ctc",
                      selection="last", checkpoint_every=500),
        "metric": "WER",
        "source": "probekit preset for small data (the LibriSpeech recipe, shorter)",
    },
)

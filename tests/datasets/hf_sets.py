"""Hugging Face datasets built locally from real FSDD recordings (used by the hf: and BirdSet tests).

`datasets` encodes audio through torchcodec; rows are written as {bytes, path} and cast to Audio instead.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import soundfile as sf

# before `datasets` is imported: it reads these once (`offline` also patches its config)
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import datasets  # noqa: E402

DIGITS = [str(i) for i in range(10)]
SPEAKERS = ("jackson", "nicolas", "theo")


def offline(monkeypatch, tmp_path: Path) -> None:
    """No network and no user folders: HF offline (env and the already-imported config), caches in tmp."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache", raising=False)
    monkeypatch.setenv("PROBEKIT_HF_AUDIO", str(tmp_path / "hf-audio"))


def fsdd_rows(fsdd_root: Path, speakers, takes, *, embed: bool = True) -> dict:
    files = [fsdd_root / "recordings" / f"{d}_{s}_{t}.wav" for d in DIGITS for s in speakers for t in takes]
    audio = [{"bytes": f.read_bytes() if embed else None, "path": f.name if embed else str(f)} for f in files]
    return {"audio": audio, "label": [int(f.name[0]) for f in files]}


def fsdd_features(sampling_rate: int = 8000):
    return datasets.Features({"audio": datasets.Audio(sampling_rate=sampling_rate),
                              "label": datasets.ClassLabel(names=DIGITS)})  # fmt: skip


def fsdd_hf(folder: Path, fsdd_root: Path, *, embed: bool = True) -> Path:
    """A DatasetDict (train: 2 takes x 3 speakers x 10 digits, test: 1 take) saved with save_to_disk.

    Rows are written as {bytes, path} and cast to Audio (encoding audio through `datasets` needs torchcodec)."""
    splits = {"train": ("0", "1"), "test": ("2",)}
    dd = datasets.DatasetDict({
        s: datasets.Dataset.from_dict(fsdd_rows(fsdd_root, SPEAKERS, t, embed=embed)).cast(fsdd_features())
        for s, t in splits.items()
    })  # fmt: skip
    dd.save_to_disk(str(folder))
    return folder


# BirdSet HSN's 21 ebird codes (the fixture uses the first three as its species)
HSN = ("gcrfin", "whcspa", "amepip", "sposan", "rocwre", "brebla", "daejun", "foxspa", "clanut", "moublu", "casfin",
       "mallar3", "herthr", "amerob", "yerwar", "yelwar", "dusfly", "mouchi", "orcwar", "warvir", "norfli")  # fmt: skip
SR = 32_000
# train recordings: (species, call onsets in s, event clusters); -1 is BirdSet's noise cluster
RECORDINGS = [
    (0, [1.0, 4.0, 8.0], [0, 0, -1]),
    (0, [0.5, 6.0], [1, 0]),  # tie between clusters 0 and 1: the smaller id wins (np.unique + argmax)
    (1, [2.0, 5.0, 9.0], [0, 1, 1]),
    (1, [3.0], [-1]),  # only a noise event: kept
    (2, [], []),  # no event: the window [0, 5] s
    (2, [1.5, 7.0], [0, 0]),
]
# test_5s windows: the species heard in each (an empty list: nothing)
TEST = [[0], [1], [2], [0, 1], [], [2], [0], [1, 2], [], [1], [0, 2], [1], [0], [2]]  # 5 positives per species


def _digit(fsdd_root: Path, d: int, take: int) -> np.ndarray:
    import torch
    import torchaudio.functional as AF

    x, sr = sf.read(fsdd_root / "recordings" / f"{d}_theo_{take}.wav", dtype="float32")
    return AF.resample(torch.from_numpy(x), sr, SR).numpy()


def _ogg(wave: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, SR, format="OGG", subtype="VORBIS")
    return buf.getvalue()


def _scene(fsdd_root, seconds: float, calls: list[tuple[int, float]], seed: int) -> np.ndarray:
    out = np.random.default_rng(seed).normal(0, 1e-3, int(seconds * SR)).astype(np.float32)
    for k, (d, onset) in enumerate(calls):
        x = _digit(fsdd_root, d, k % 5)
        s = int(onset * SR)
        out[s:s + len(x)] += x[: len(out) - s]
    return out


def features():
    f = datasets.Features
    v, seq, cl = datasets.Value, datasets.Sequence, datasets.ClassLabel(names=list(HSN))
    return f({"audio": datasets.Audio(sampling_rate=SR), "filepath": v("string"), "start_time": v("float64"),
              "end_time": v("float64"), "low_freq": v("int64"), "high_freq": v("int64"), "ebird_code": cl,
              "ebird_code_multilabel": seq(cl), "ebird_code_secondary": seq(v("string")), "call_type": v("string"),
              "sex": v("string"), "lat": v("float64"), "long": v("float64"), "length": v("int64"),
              "microphone": v("string"), "license": v("string"), "source": v("string"), "local_time": v("string"),
              "detected_events": seq(seq(v("float64"))), "event_cluster": seq(v("int64")),
              "peaks": seq(v("float64")), "quality": v("string"), "recordist": v("string")})  # fmt: skip


def _row(name, audio, **kw):
    row = dict(audio={"bytes": audio, "path": name}, filepath=name, start_time=None, end_time=None, low_freq=None,
               high_freq=None, ebird_code=None, ebird_code_multilabel=[], ebird_code_secondary=[], call_type=None,
               sex=None, lat=37.0, long=-118.5, length=None, microphone=None, license=None, source="xenocanto",
               local_time=None, detected_events=None, event_cluster=None, peaks=None, quality=None,
               recordist=None)  # fmt: skip
    row.update(kw)
    return row


def birdset_hf(folder: Path, fsdd_root: Path) -> Path:
    """A BirdSet-shaped DatasetDict (train, test_5s) saved with save_to_disk."""
    train = []
    for i, (sp, onsets, clusters) in enumerate(RECORDINGS):
        wave = _scene(fsdd_root, 12.0, [(sp, t) for t in onsets], seed=i)
        events = [[t, t + 0.6] for t in onsets]
        train.append(_row(f"XC{1000 + i}.ogg", _ogg(wave), ebird_code=sp, ebird_code_multilabel=[sp],
                          length=12, detected_events=events, event_cluster=clusters, quality="A"))  # fmt: skip
    test = []
    for i, species in enumerate(TEST):
        wave = _scene(fsdd_root, 5.0, [(sp, 0.5 + 2.0 * k) for k, sp in enumerate(species)], seed=100 + i)
        test.append(_row(f"HSN_001_20150708_061805_{5 * i:03d}_{5 * i + 5:03d}.ogg", _ogg(wave),
                         ebird_code_multilabel=species, start_time=0.0, end_time=5.0, source="zenodo"))  # fmt: skip
    feats = features()
    dd = datasets.DatasetDict({
        s: datasets.Dataset.from_list(rows).cast(feats) for s, rows in (("train", train), ("test_5s", test))
    })  # fmt: skip
    dd.save_to_disk(str(folder))
    return folder



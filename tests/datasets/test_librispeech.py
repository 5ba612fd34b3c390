"""LibriSpeech's official folder layout, built from real FSDD recordings written as FLAC
(`LibriSpeech/<subset>/<speaker>/<chapter>/<spk>-<ch>-<utt>.flac` + `<spk>-<ch>.trans.txt`), read as the BAT
code's ASR task, extracted and probed end to end."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from probekit.cache.pipeline import clip_labels
from probekit.datasets import get_dataset
from probekit.datasets.transcripts import decode
from probekit.errors import DatasetError

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPEAKERS = {"jackson": 26, "theo": 103}
SUBSETS = {"train-clean-100": (5, 6, 7), "dev-clean": (3,), "test-clean": (0, 1)}


def build_librispeech(fsdd_root, root, digits=range(10)):
    """<root>/LibriSpeech/<subset>/<speaker id>/<chapter>/...: chapter = 1000 + take, utterance = digit."""
    for subset, takes in SUBSETS.items():
        for name, spk in SPEAKERS.items():
            for take in takes:
                ch = 1000 + take
                folder = root / "LibriSpeech" / subset / str(spk) / str(ch)
                folder.mkdir(parents=True, exist_ok=True)
                lines = []
                for d in digits:
                    wav, sr = sf.read(fsdd_root / "recordings" / f"{d}_{name}_{take}.wav", dtype="float32")
                    utt = f"{spk}-{ch}-{d:04d}"
                    sf.write(folder / f"{utt}.flac", wav, sr, format="FLAC")
                    lines.append(f"{utt} {WORDS[d].upper()}")
                (folder / f"{spk}-{ch}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def libri(fsdd_root, tmp_path_factory):
    return build_librispeech(fsdd_root, tmp_path_factory.mktemp("libri"))


def test_official_layout_splits_and_transcripts(libri):
    ds = get_dataset("librispeech", data_root=libri)
    counts = {s: len(ds.clips(s)) for s in ("train", "valid", "test")}
    assert counts == {"train": 60, "valid": 20, "test": 40}
    c = ds.clips("test")[0]
    assert c.id == "26-1000-0000" and c.transcript == "ZERO" and c.path.suffix == ".flac" and c.labels == ()
    assert ds.spec.task == "asr" and ds.spec.classes[0] == "<blank>" and ds.spec.num_classes == 29
    y = clip_labels(ds.clips("test"), ds.spec)
    assert y.shape == (40, 5) and decode(y[0]) == "zero" and decode(y[7]) == "seven"  # 0-padded, lower case
    assert ds.class_coverage() == []  # no clip classes to cover


def test_transcripts_enter_the_fingerprint(libri, tmp_path):
    import shutil

    copy = shutil.copytree(libri, tmp_path / "copy")
    before = get_dataset("librispeech", data_root=copy).fingerprint("valid")
    trans = copy / "LibriSpeech" / "dev-clean" / "26" / "1003" / "26-1003.trans.txt"
    trans.write_text(trans.read_text().replace("SEVEN", "ELEVEN"))
    assert get_dataset("librispeech", data_root=copy).fingerprint("valid") != before


def test_missing_audio_is_counted_and_unlisted_audio_refused(libri, tmp_path):
    import shutil

    copy = shutil.copytree(libri, tmp_path / "copy")
    (copy / "LibriSpeech" / "dev-clean" / "26" / "1003" / "26-1003-0004.flac").unlink()
    ds = get_dataset("librispeech", data_root=copy)
    assert len(ds.clips("valid")) == 19 and ds.missing == {"valid": 1} and "without" in ds.warnings[0]
    trans = copy / "LibriSpeech" / "test-clean" / "103" / "1000" / "103-1000.trans.txt"
    trans.write_text("\n".join(trans.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(DatasetError, match=r"103-1000-0000\.flac: no line for 103-1000-0000"):
        get_dataset("librispeech", data_root=copy).clips("test")


def test_protocol_is_the_bat_librispeech_config():
    from probekit.train import get_protocol

    p = get_protocol("librispeech")
    t = p.train
    assert (t.batch_size, t.steps, t.lr, t.min_lr, t.warmup_steps, t.weight_decay, t.loss, t.selection,
            t.eval_every) == (64, 20000, 1e-3, 1e-6, 500, 0.05, "ctc", "best_val", 500)
    assert p.metric == "WER" and get_dataset_spec_protocol() == "librispeech"


def get_dataset_spec_protocol():
    from probekit.datasets.librispeech import SPEC

    return SPEC.protocol


def test_extract_and_probe_end_to_end(libri, tmp_path):
    from probekit.api import evaluate

    res = evaluate("bat-tiny", datasets=["librispeech"], probes=["asr"], data_root=libri, cache_dir=tmp_path / "c",
                   results_dir=tmp_path / "r", device="cpu", progress=False, workers=0,
                   hparams={"hidden": 32}, train_overrides={"steps": 6, "batch_size": 8, "eval_every": 3})
    (rec,) = res.records
    assert rec.metric == "WER" and rec.dataset == "librispeech" and rec.split == "test"
    m = rec.seeds[0].metrics
    assert set(m) >= {"WER", "CER"} and all(np.isfinite(v) for v in m.values())
    hp = rec.hyperparameters
    assert hp["selection"] == "best_val" and hp["validation"] == "official"  # dev-clean chooses the step

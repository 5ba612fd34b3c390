"""`hf:` speech datasets with a transcript column, read as the BAT code's LibriSpeech task (the `asr` probe).

A real `datasets` DatasetDict saved to disk from FSDD recordings with the digit's word as `text` (the
librispeech_asr schema: audio, text, ids), then extraction and the ASR probe end to end. Nothing downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from probekit.datasets import get_dataset  # noqa: E402
from probekit.datasets.transcripts import CHARS  # noqa: E402
from probekit.errors import DatasetError  # noqa: E402
from hf_sets import offline  # noqa: E402  (tests/datasets is on sys.path)

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    offline(monkeypatch, tmp_path)


def _rows(fsdd_root: Path, takes, speakers=("jackson", "theo")) -> dict:
    files = [fsdd_root / "recordings" / f"{d}_{s}_{t}.wav" for d in range(10) for s in speakers for t in takes]
    return {"audio": [{"bytes": f.read_bytes(), "path": f.name} for f in files],
            # raw text as LibriSpeech has it (upper case); targets are normalised as the official tokenizer
            "text": [WORDS[int(f.name[0])].upper() for f in files],
            "speaker_id": [len(f.name) for f in files], "id": [f.stem for f in files]}


def _save(folder: Path, fsdd_root: Path, splits: dict[str, tuple]) -> Path:
    feats = datasets.Features({"audio": datasets.Audio(sampling_rate=8000), "text": datasets.Value("string"),
                               "speaker_id": datasets.Value("int64"), "id": datasets.Value("string")})
    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict(_rows(fsdd_root, t)).cast(feats) for s, t in splits.items()})
    dd.save_to_disk(str(folder))
    return folder


def test_librispeech_shaped_dataset_is_an_asr_task_with_the_official_splits(tmp_path, fsdd_root):
    folder = _save(tmp_path / "librispeech_asr", fsdd_root,
                   {"train.100": (0,), "train.360": (1,), "validation": (2,), "test": (3,)})
    ds = get_dataset(f"hf:{folder}")
    spec = ds.spec
    assert spec.task == "asr" and spec.classes == CHARS and spec.metric == "WER"
    assert spec.splits == ("train", "valid", "test") and spec.protocol == "librispeech"  # BAT: train.100/validation/test
    clips = ds.clips("test")
    assert [c.transcript for c in clips[:2]] == ["ZERO", "ZERO"] and all(c.labels == () for c in clips)
    assert clips[0].id == "test/0" and clips[0].path.is_file()
    # text_column names another column; a non-string one is refused by name
    with pytest.raises(DatasetError, match="text column 'speaker_id'"):
        get_dataset(f"hf:{folder}?text_column=speaker_id")


def test_hf_transcripts_train_the_asr_probe_end_to_end(tmp_path, fsdd_root):
    import probekit

    folder = _save(tmp_path / "speech", fsdd_root, {"train": (5, 6), "test": (0,)})
    name = f"hf:{folder}?text_column=text"
    assert get_dataset(name).spec.protocol == "default"
    res = probekit.evaluate("bat-tiny", datasets=[name], probes=["asr"], cache_dir=tmp_path / "cache",
                            results_dir=tmp_path / "res", device="cpu", progress=False, hparams={"hidden": 16},
                            train_overrides={"steps": 4, "batch_size": 8})
    (rec,) = res.records
    assert rec.probe == "asr" and rec.metric == "WER" and set(rec.seeds[0].metrics) >= {"WER", "CER"}
    assert rec.clips["test"].scored == 20 and 0.0 <= rec.seeds[0].metrics["WER"]
    # a classification probe on these transcripts is refused before extraction
    with pytest.raises(Exception, match="ASR dataset"):
        probekit.evaluate("bat-tiny", datasets=[name], probes=["linear"], cache_dir=tmp_path / "cache",
                          results_dir=tmp_path / "res", device="cpu", progress=False)


def test_a_row_without_a_usable_transcript_is_named(tmp_path, fsdd_root):
    rows = _rows(fsdd_root, (0,))
    rows["text"][3] = "123 !!"
    feats = datasets.Features({"audio": datasets.Audio(sampling_rate=8000), "text": datasets.Value("string"),
                               "speaker_id": datasets.Value("int64"), "id": datasets.Value("string")})
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows).cast(feats)}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DatasetError, match=r"split 'train' row 3: transcript '123 !!'"):
        get_dataset(f"hf:{tmp_path / 'bad'}").clips("train")

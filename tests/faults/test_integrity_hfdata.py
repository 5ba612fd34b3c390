"""Hostile Hugging Face datasets (hf: names, BirdSet presets): one line naming the column / row / config, exit 2.

Each dataset is built locally with `datasets` from real FSDD recordings; nothing is downloaded. On the base
commit `hf:` names and `birdset-*` were unknown, so none of the words below appeared.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
datasets = pytest.importorskip("datasets")

from _faults import assert_user_error, cli  # noqa: E402  (tests/faults is on sys.path; a site-packages `tests` shadows ours)

DIGITS = [str(i) for i in range(10)]


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache", raising=False)
    monkeypatch.setenv("PROBEKIT_HF_AUDIO", str(tmp_path / "hf-audio"))


def _save(folder: Path, fsdd_root: Path, *, label_feature=None, labels=None, bad_row: int | None = None) -> Path:
    files = [fsdd_root / "recordings" / f"{d}_theo_{t}.wav" for d in DIGITS for t in "01"]
    audio = [{"bytes": f.read_bytes(), "path": f.name} for f in files]
    if bad_row is not None:
        audio[bad_row] = {"bytes": b"RIFF\x10\x00\x00\x00WAVEthis is not audio", "path": "broken.wav"}
    label_feature = label_feature or datasets.ClassLabel(names=DIGITS)
    rows = {"audio": audio, "label": labels if labels is not None else [int(f.name[0]) for f in files]}
    feats = datasets.Features({"audio": datasets.Audio(), "label": label_feature})
    ds = datasets.Dataset.from_dict(rows).cast(feats)
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def good(tmp_path_factory, fsdd_root) -> Path:
    return _save(tmp_path_factory.mktemp("hf") / "good", fsdd_root)


def _datasets(capsys, name, *extra):
    return cli(capsys, "datasets", "-d", name, *extra)


@pytest.mark.parametrize("query, words", [
    ("?label_column=nope", ["no column 'nope'", "label_column", "columns:"]),
    ("?audio_column=label", ["column 'label'", "not Audio", "audio_column="]),
    ("?split.test=test_5s", ["no split 'test_5s'", "its splits: train, test"]),
    ("?colour=red", ["no option(s) colour", "audio_column"]),
    ("?limit=0", ["limit=0", "must be a positive number of rows"]),
    ("?streaming=maybe", ["streaming='maybe'", "boolean"]),
    ("?streaming=true", ["streaming", "save_to_disk folder is already local"]),
])  # fmt: skip
def test_bad_schema_options_are_one_line(good, capsys, query, words):
    rc, _, err = _datasets(capsys, f"hf:{good}{query}")
    assert_user_error(rc, err, *words)


def test_label_column_of_the_wrong_feature_type(tmp_path, fsdd_root, capsys):
    folder = _save(tmp_path / "strings", fsdd_root, label_feature=datasets.Value("string"),
                   labels=[d for d in DIGITS for _ in "01"])  # fmt: skip
    rc, _, err = _datasets(capsys, f"hf:{folder}")
    assert_user_error(rc, err, "no ClassLabel column")
    rc, _, err = _datasets(capsys, f"hf:{folder}?label_column=label")
    assert_user_error(rc, err, "label column 'label'", "Value", "not ClassLabel", "class_encode_column('label')")


def test_unlabelled_row_is_named(tmp_path, fsdd_root, capsys):
    labels = [int(d) for d in DIGITS for _ in "01"]
    labels[5] = -1  # ClassLabel's "no label"
    folder = _save(tmp_path / "minus", fsdd_root, labels=labels)
    rc, _, err = _datasets(capsys, f"hf:{folder}")
    assert_user_error(rc, err, "split 'train' row 5", "column 'label' holds -1")


def test_undecodable_audio_bytes_name_the_row(tmp_path, fsdd_root, capsys):
    folder = _save(tmp_path / "bad", fsdd_root, bad_row=3)
    rc, _, err = cli(capsys, "extract", "--backbone", "bat-tiny", "--dataset", f"hf:{folder}", "--split", "test",
                     "--layers", "last", "--cache-dir", tmp_path / "c", "--device", "cpu", "--workers", "0",
                     "--on-error", "fail")  # fmt: skip
    assert_user_error(rc, err, "row0000003_broken_", "test", "not a readable audio file")


def test_unknown_config_lists_the_known_ones(good, tmp_path, capsys):
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    datasets.load_from_disk(str(good))["train"].to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    rc, _, err = _datasets(capsys, f"hf:{repo}:bogus")
    assert_user_error(rc, err, "no config 'bogus'", "'default'")


@pytest.mark.parametrize("name, words", [
    ("hf:", ["names no dataset"]),
    ("hf:a/b/c", ["not a Hub dataset name"]),
    ("hf:/no/such/folder", ["folder /no/such/folder not found"]),
    ("hf:nobody-here/no-such-dataset:cfg", ["cannot load 'nobody-here/no-such-dataset' config 'cfg'", "offline"]),
])  # fmt: skip
def test_bad_names_are_one_line(capsys, name, words):
    rc, _, err = _datasets(capsys, name)
    assert_user_error(rc, err, *words)


def test_birdset_events_and_clusters_must_pair(tmp_path, fsdd_root, capsys):
    f = fsdd_root / "recordings" / "0_theo_0.wav"
    cl = datasets.ClassLabel(names=["gcrfin", "whcspa"])
    feats = datasets.Features({"audio": datasets.Audio(), "ebird_code": cl,
                               "ebird_code_multilabel": datasets.Sequence(cl),
                               "detected_events": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
                               "event_cluster": datasets.Sequence(datasets.Value("int64"))})  # fmt: skip
    row = {"audio": {"bytes": f.read_bytes(), "path": f.name}, "ebird_code": 0, "ebird_code_multilabel": [0],
           "detected_events": [[0.1, 0.3], [0.4, 0.5]], "event_cluster": [0]}  # fmt: skip
    ds = datasets.Dataset.from_list([row, {**row, "event_cluster": [0, 0]}]).cast(feats)
    root = tmp_path / "data" / "birdset" / "HSN"
    datasets.DatasetDict({"train": ds, "test_5s": ds}).save_to_disk(str(root))
    rc, _, err = _datasets(capsys, "birdset-hsn", "--data-root", tmp_path / "data")
    assert_user_error(rc, err, "train row 0", "2 detected_events but 1 event_cluster")


def test_birdset_folder_without_the_label_column(tmp_path, fsdd_root, capsys):
    f = fsdd_root / "recordings" / "0_theo_0.wav"
    feats = datasets.Features({"audio": datasets.Audio(), "ebird_code": datasets.ClassLabel(names=["a", "b"])})
    ds = datasets.Dataset.from_list([{"audio": {"bytes": f.read_bytes(), "path": f.name}, "ebird_code": 0}]).cast(feats)
    root = tmp_path / "data" / "birdset" / "HSN"
    datasets.DatasetDict({"train": ds, "test_5s": ds}).save_to_disk(str(root))
    rc, _, err = _datasets(capsys, "birdset-hsn", "--data-root", tmp_path / "data")
    assert_user_error(rc, err, "birdset-hsn", "no column 'ebird_code_multilabel'")


def test_split_that_does_not_fit_the_disk_is_refused(good, tmp_path, capsys, monkeypatch):
    from probekit.datasets import hfdata

    monkeypatch.setattr(hfdata, "DISK_RESERVE", 1 << 62)  # any disk is too small now
    rc, _, err = _datasets(capsys, f"hf:{good}")
    assert_user_error(rc, err, "split 'train': no room under", "0 rows written", "limit=N")

"""hf: datasets built locally with `datasets` from real FSDD recordings (save_to_disk, parquet, streaming).

Nothing is downloaded: HF_DATASETS_OFFLINE=1 and the HF cache lives in tmp_path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from probekit.datasets import get_dataset, get_spec  # noqa: E402
from probekit.errors import ConfigError, DatasetError  # noqa: E402
from hf_sets import DIGITS, SPEAKERS, fsdd_features, fsdd_hf, fsdd_rows, offline  # noqa: E402  (tests/datasets is on sys.path; a site-packages `tests` shadows ours)


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    offline(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, fsdd_root) -> Path:
    return fsdd_hf(tmp_path_factory.mktemp("hf") / "fsdd", fsdd_root)


def test_saved_dataset_lists_clips_with_class_names_from_the_classlabel(saved):
    ds = get_dataset(f"hf:{saved}")
    assert ds.spec.classes == tuple(DIGITS) and not ds.spec.multilabel and ds.spec.metric == "accuracy"
    assert ds.spec.splits == ("train", "test")
    train = ds.clips("train")
    assert len(train) == 60 and len(ds.clips("test")) == 30
    assert train[0].id == "train/0" and train[0].labels == (0,)
    # embedded bytes are written once, unchanged, under a name carrying split, row and the source file name
    assert train[7].path.name.startswith("row0000007_") and train[7].path.parent.name == "train"
    src = Path(os.environ["PROBEKIT_HF_AUDIO"])
    assert str(train[7].path).startswith(str(src))
    row = datasets.load_from_disk(str(saved))["train"].cast_column("audio", datasets.Audio(decode=False))[7]
    assert train[7].path.read_bytes() == row["audio"]["bytes"]
    assert row["audio"]["path"][:-4] in train[7].path.name


def test_fingerprint_is_stable_and_follows_the_audio_bytes(saved, tmp_path, fsdd_root):
    a = get_dataset(f"hf:{saved}").fingerprint("test")
    assert get_dataset(f"hf:{saved}").fingerprint("test") == a  # rerun: same files, same value
    other = tmp_path / "swapped"
    dd = datasets.load_from_disk(str(saved))
    rows = fsdd_rows(fsdd_root, SPEAKERS, ("2",))
    rows["audio"][0] = {"bytes": (fsdd_root / "recordings" / "0_george_2.wav").read_bytes(), "path": "x.wav"}
    datasets.DatasetDict({"train": dd["train"], "test": datasets.Dataset.from_dict(rows).cast(fsdd_features())}
                         ).save_to_disk(str(other))  # fmt: skip
    b = get_dataset(f"hf:{other}").fingerprint("test")
    assert b != a  # one clip's audio differs (same label, same row)


def test_path_column_rows_are_read_in_place(tmp_path, fsdd_root):
    """A string column of local paths (save_to_disk embeds the files of an Audio column, so this is how a
    dataset that points at audio on disk arrives) is read in place, relative paths from the folder."""
    files = [fsdd_root / "recordings" / f"{d}_theo_0.wav" for d in DIGITS]
    (tmp_path / "p" / "audio").mkdir(parents=True)
    (tmp_path / "p" / "audio" / "extra.wav").write_bytes(files[0].read_bytes())
    rows = {"file": [str(f) for f in files] + ["audio/extra.wav", "audio/gone.wav"], "label": list(range(10)) + [0, 1]}
    feats = datasets.Features({"file": datasets.Value("string"), "label": datasets.ClassLabel(names=DIGITS)})
    datasets.Dataset.from_dict(rows, features=feats).save_to_disk(str(tmp_path / "p"))
    with pytest.raises(DatasetError, match="no Audio column.*audio_column"):
        get_dataset(f"hf:{tmp_path / 'p'}")
    ds = get_dataset(f"hf:{tmp_path / 'p'}?audio_column=file")
    clips = ds.clips("train")
    assert clips[3].path == files[3]  # no copy
    assert clips[10].path == tmp_path / "p" / "audio" / "extra.wav"
    assert len(clips) == 11 and ds.missing["train"] == 1  # a row whose file is gone is counted and named
    assert ds.warnings == [f"hf:{tmp_path / 'p'}: split 'train' row 11 (column 'file'): audio file audio/gone.wav "
                           "not found; the row is left out"]


def test_options_map_splits_and_limit_rows(saved):
    ds = get_dataset(f"hf:{saved}?split.eval=test&limit=5&label_column=label")
    assert ds.spec.splits == ("eval",) and len(ds.clips("eval")) == 5
    assert ds.clips("eval")[0].id == "test/0"
    kw = get_dataset(f"hf:{saved}", splits={"train": "train"}, limit=3)
    assert kw.spec.splits == ("train",) and len(kw.clips("train")) == 3
    assert get_spec(f"hf:{saved}").num_classes == 10
    with pytest.raises(ConfigError, match="no option.*colour"):
        get_dataset(f"hf:{saved}?colour=red")


def test_multilabel_sequence_of_classlabel(tmp_path, fsdd_root):
    files = [fsdd_root / "recordings" / f"{d}_theo_{t}.wav" for d in "0123" for t in "01"]
    rows = {"audio": [{"bytes": f.read_bytes(), "path": f.name} for f in files],
            "tags": [[int(f.name[0]), (int(f.name[0]) + 1) % 4] if f.name[-5] == "0" else [] for f in files]}
    feats = datasets.Features({"audio": datasets.Audio(), "tags": datasets.Sequence(datasets.ClassLabel(names=list("abcd")))})
    datasets.Dataset.from_dict(rows).cast(feats).save_to_disk(str(tmp_path / "ml"))  # a single Dataset -> "train"
    ds = get_dataset(f"hf:{tmp_path / 'ml'}")
    assert ds.spec.multilabel and ds.spec.metric == "mAP" and ds.spec.splits == ("train",)
    labels = [c.labels for c in ds.clips("train")]
    assert labels[0] == (0, 1) and labels[1] == ()  # an empty label list is a clip with no positive class


def _parquet_repo(folder: Path, saved: Path) -> Path:
    (folder / "data").mkdir(parents=True)
    dd = datasets.load_from_disk(str(saved))
    for split in ("train", "test"):
        dd[split].to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


def test_data_file_folder_loads_and_streams(saved, tmp_path):
    repo = _parquet_repo(tmp_path / "repo", saved)
    full = get_dataset(f"hf:{repo}")
    assert len(full.clips("test")) == 30
    streamed = get_dataset(f"hf:{repo}?streaming=true&limit=4")
    clips = streamed.clips("test")
    assert len(clips) == 4 and clips[0].path.read_bytes() == full.clips("test")[0].path.read_bytes()
    assert streamed.fingerprint("test") != full.fingerprint("test")  # 4 clips, not 30
    with pytest.raises(ConfigError, match="streaming"):
        get_dataset(f"hf:{saved}?streaming=true")  # a save_to_disk folder is local already


def test_streamed_rows_need_their_bytes(tmp_path):
    from probekit.datasets.hfdata import Materialiser

    m = Materialiser("hf:x/y", tmp_path / "audio")
    with pytest.raises(DatasetError, match="row 3: streamed audio has no embedded bytes.*without streaming"):
        m.path_for("train", 3, {"bytes": None, "path": "hf://datasets/x/y@main/a.ogg"}, streaming=True)


def test_hub_name_offline_is_one_line():
    with pytest.raises(DatasetError, match="offline.*HF cache"):
        get_dataset("hf:nobody-here/no-such-dataset:cfg")


def _run(main, capsys, *args):
    capsys.readouterr()
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr()


@pytest.fixture(scope="module")
def token_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokens")  # the CLI test extracts; the Python test reuses its stores


def test_extract_and_probe_end_to_end_cli(saved, token_cache, tmp_path, capsys):
    from probekit.cli import main

    ds = f"hf:{saved}"
    common = ["--cache-dir", token_cache, "--device", "cpu"]
    rc, out = _run(main, capsys, "extract", "--backbone", "bat-tiny", "--dataset", ds, "--layers", "last",
                   "--workers", "0", *common)  # fmt: skip
    assert rc == 0, out.err
    rc, out = _run(main, capsys, "probe", "linear", "-b", "bat-tiny", "-d", ds, "--layers", "last", "--set",
                   "steps=8", "--set", "batch_size=16", "--results-dir", tmp_path / "r", "--yes", *common)  # fmt: skip
    assert rc == 0, out.err
    (path,) = (tmp_path / "r").rglob("*.json")
    rec = json.loads(path.read_text())
    assert rec["metric"] == "accuracy" and rec["dataset"] == ds
    assert rec["clips"]["test"]["scored"] == 30


def test_extract_and_probe_end_to_end_python(saved, token_cache, tmp_path):
    from probekit.api import evaluate

    res = evaluate("bat-tiny", datasets=[f"hf:{saved}"], probes=["linear"], cache_dir=token_cache,
                   device="cpu", progress=False, write=False, workers=0, layers="last",
                   train_overrides={"steps": 6, "batch_size": 8}, results_dir=tmp_path / "r")  # fmt: skip
    (rec,) = res.records
    assert 0 <= rec.seeds[0].metrics["accuracy"] <= 100

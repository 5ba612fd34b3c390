"""BirdSet presets on a BirdSet-shaped dataset built from real FSDD digits (32 kHz ogg, train + test_5s).

The folder has BirdSet's columns and features (dataset card of DBD-research-group/BirdSet): audio,
filepath, start_time, end_time, low_freq, high_freq, ebird_code, ebird_code_multilabel, ebird_code_secondary,
call_type, sex, lat, long, length, microphone, license, source, local_time, detected_events, event_cluster,
peaks, quality, recordist. Digits stand in for bird calls, placed at known onsets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from probekit.datasets import get_dataset, get_spec, list_datasets  # noqa: E402
from probekit.datasets.birdset import SPECS, event_windows  # noqa: E402
from probekit.datasets.birdset import smart_limits  # noqa: E402
from hf_sets import HSN, RECORDINGS, TEST, birdset_hf, offline  # noqa: E402  (tests/datasets is on sys.path; a site-packages `tests` shadows ours)


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    offline(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, fsdd_root) -> Path:
    root = tmp_path_factory.mktemp("birdset-data")
    birdset_hf(root / "birdset" / "HSN", fsdd_root)
    return root


def test_every_birdset_test_set_is_a_named_dataset():
    names = {f"birdset-{c}" for c in ("hsn", "pow", "per", "nes", "uhh", "nbp", "ssw", "sne")}
    assert names <= set(list_datasets("birdset-*"))
    for n in names:
        spec = get_spec(n)
        assert spec.multilabel and spec.metric == "mAP" and spec.protocol == "hsn" and spec.clip_seconds == 5.0
        assert spec.frames["bat"] == 512 and spec.license and "BirdSet" in spec.citation
    assert "21 bird species" in SPECS["birdset-hsn"].description


def test_event_mapping_follows_birdset():
    assert event_windows(0, [[1, 2], [3, 4], [5, 6]], [0, 0, -1]) == [(1, 2), (3, 4)]
    assert event_windows(0, [[1, 2], [3, 4]], [1, 0]) == [(3, 4)]  # tie: smallest cluster id
    assert event_windows(0, [[3, 4]], [-1]) == [(3, 4)]  # a lone noise event stays
    assert event_windows(0, [[3, 4], [5, 6]], [-1, -1]) == [(0.0, 5.0)]  # only noise: as no event
    assert event_windows(0, [], []) == [(0.0, 5.0)]
    assert event_windows(0, [[1, 2], [3, 4], [5, 6], [7, 8]], [2, 2, 1, 1]) == [(5, 6), (7, 8)]


def test_smart_sampling_limits():
    # class "a" holds 9 + 4 + 1 = 14 windows > 6: the 9 is cut to the next level (4) -> 9 >= 6; next step
    # would cut both 4s to 1 (total 3 < 6): stop. Class "b" (3 windows) is under the limit: untouched.
    counts = {(0, "a"): 9, (1, "a"): 4, (2, "a"): 1, (3, "b"): 3}
    assert smart_limits(counts, 6, 2) == {(0, "a"): 4, (1, "a"): 4, (2, "a"): 1, (3, "b"): 3}
    # the event limit stops the cutting once the largest recording holds it
    assert smart_limits({(0, "a"): 9, (1, "a"): 5, (2, "a"): 5}, 3, 5) == {(0, "a"): 5, (1, "a"): 5, (2, "a"): 5}
    assert smart_limits({(0, "a"): 7, (1, "a"): 7}, 3, 5) == {(0, "a"): 7, (1, "a"): 7}  # one level: no loop


def test_hsn_preset_reads_train_windows_and_test_5s(data_root):
    ds = get_dataset("birdset-hsn", data_root=data_root)
    assert ds.spec.classes == HSN and ds.spec.splits == ("train", "test")
    test = ds.clips("test")
    assert [c.labels for c in test] == [tuple(sorted(t)) for t in TEST]
    assert test[0].id == "test_5s/0" and test[0].duration is None  # the whole 5-s file
    train = ds.clips("train")
    want = []
    for row, (_, onsets, clusters) in enumerate(RECORDINGS):
        windows = event_windows(row, [[t, t + 0.6] for t in onsets], clusters)
        want += [(row, w[0]) for w in windows]
    assert [(int(c.id.split("/")[1]), c.offset) for c in train] == want
    assert all(c.duration == 5.0 for c in train)
    assert train[0].labels == (0,) and train[-1].labels == (2,)
    assert ds.fingerprint("train").startswith("v2-")
    first = get_dataset("birdset-hsn", data_root=data_root, train_windows="start")
    assert len(first.clips("train")) == len(RECORDINGS) and first.fingerprint("train") != ds.fingerprint("train")
    small = get_dataset("birdset-hsn", data_root=data_root, class_limit=1, event_limit=1)
    assert len(small.clips("train")) < len(train)  # smart sampling, seeded: the same windows every time
    again = get_dataset("birdset-hsn", data_root=data_root, class_limit=1, event_limit=1)
    assert [c.id for c in again.clips("train")] == [c.id for c in small.clips("train")]


def _run(main, capsys, *args):
    capsys.readouterr()
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr()


@pytest.mark.filterwarnings("ignore:.*class\\(es\\) have no clip")  # 3 of HSN's 21 species
def test_extract_and_probe_birdset_end_to_end(data_root, tmp_path, capsys):
    from probekit.api import evaluate
    from probekit.cli import main

    common = ["--cache-dir", tmp_path / "c", "--device", "cpu", "--data-root", data_root]
    rc, out = _run(main, capsys, "extract", "--backbone", "bat-tiny", "--dataset", "birdset-hsn", "--layers", "last",
                   "--workers", "0", *common)  # fmt: skip
    assert rc == 0, out.err
    rc, out = _run(main, capsys, "probe", "linear", "-b", "bat-tiny", "-d", "birdset-hsn", "--layers", "last",
                   "--set", "steps=6", "--set", "batch_size=8", "--results-dir", tmp_path / "r", "--yes",
                   *common)  # fmt: skip
    assert rc == 0, out.err
    (path,) = (tmp_path / "r").rglob("*.json")
    rec = json.loads(path.read_text())
    assert rec["metric"] == "mAP" and rec["dataset"] == "birdset-hsn" and rec["protocol"] == "hsn"
    assert rec["clips"]["test"]["scored"] == len(TEST)
    res = evaluate("bat-tiny", datasets=["birdset-hsn"], probes=["linear"], cache_dir=tmp_path / "c",
                   data_root=data_root, device="cpu", progress=False, write=False, workers=0, layers="last",
                   train_overrides={"steps": 6, "batch_size": 8}, results_dir=tmp_path / "r2")  # fmt: skip
    metrics = res.records[0].seeds[0].metrics
    assert 0 <= metrics["mAP"] <= 100 and "cmAP5" in metrics

"""`probekit datasets`: every named dataset with where it looks, what it found, its facts, frontends and
protocol; a dataset registered elsewhere shows up from its declared attributes alone; long header scans are
cached."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from probekit.cli import console, main
from probekit.datasets import DatasetSpec, get_dataset
from probekit.datasets.registry import DATASET_SPECS, DATASETS, register_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
import named_layouts as L  # noqa: E402 - the builders of tests/datasets


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    monkeypatch.setattr(console, "width", 400)


@pytest.fixture(scope="module")
def base(tmp_path_factory, fsdd_root):
    base = tmp_path_factory.mktemp("named")
    for build in L.BUILDERS.values():
        build(base, fsdd_root)
    return base


def _flat(capsys) -> str:
    return " ".join(capsys.readouterr().out.split())


def test_lists_every_named_dataset_with_counts_and_facts(base, capsys):
    capsys.readouterr()
    assert main(["datasets", "--data-root", str(base)]) == 0
    out = _flat(capsys)
    for row in ("fsd50k │ 4 │ multi-label │ 18 │ train 9, valid 3, test 6",
                "urbansound8k │ 10 │ multi-class │ 30 │ train 27, test 3, all 30",
                "gtzan │ 10 │ multi-class │ 30 │ train 27, test 3, all 30",
                "nsynth-pitch │ 88 │ multi-class │ 18 │ train 9, valid 3, test 6",
                "dcase2016-task2 │ 10 │ event (timestamp) │ 6 │ train 3 (5 events), valid 1 (1 events), test 2 (3 events)",
                "esc50 │ 50 │ multi-class │ - │ - │ - │ esc50 │ not found"):  # fmt: skip
        assert row in out, row
    assert f"looks in: {base}/FSD50K, {base}/fsd50k" in out
    assert "get it: https://zenodo.org/records/4060432" in out and "cite E. Fonseca" in out
    assert "licence CC BY-NC 3.0; cite J. Salamon" in out
    assert "fbank (eat): 12000 frames" in out and "bat (baseline, bat): 12000 frames" in out
    assert "protocol dcase2016_task2: DCASE 2016 task 2 (frame-wise): 4,000 steps, batch 4" in out
    assert "[BAT_ICML2026 configs/dcase2016_task2/sed_cgp_config.yaml" in out  # markup-looking text kept
    assert "own frontend (audiomae, beats, bird-mae, dasheng)" in out
    assert "warning: fsd50k: vocabulary.csv has 4 classes, the FSD50K release 200" in out


def test_brief_leaves_out_the_facts(base, capsys):
    capsys.readouterr()
    assert main(["datasets", "--data-root", str(base), "-d", "gtzan", "--brief"]) == 0
    out = _flat(capsys)
    assert "gtzan │ 10" in out and "looks in" not in out


def test_a_dataset_registered_elsewhere_shows_its_declared_facts(tmp_path, fsdd_root, capsys):
    """What another module registers (an hf: preset, BirdSet, librispeech) is listed from its spec alone."""
    from probekit.datasets import fsdd

    spec = DatasetSpec(name="toy-digits", classes=tuple("0123456789"), multilabel=False, clip_seconds=1.0,
                       splits=("train", "test"), protocol="fsdd", metric="accuracy", license="CC0",
                       citation="A. Toy, Digits, 2026", description="toy digits", layout="<root>/recordings/*.wav",
                       download="copy FSDD", split_note="takes 0-4 test", frames={"bat": 256})  # fmt: skip
    register_dataset(spec, fsdd.open_dataset, detect=fsdd.detect, root_names=("toy",))
    try:
        capsys.readouterr()
        assert main(["datasets", "--data-root", str(tmp_path), "-d", "toy-digits"]) == 0
        out = _flat(capsys)
        assert "toy-digits │ 10 │ multi-class │ - │ - │ - │ fsdd │ not found" in out
        assert f"looks in: {tmp_path}/toy, {tmp_path} for <root>/recordings/*.wav" in out
        assert "splits: train, test; takes 0-4 test; metric accuracy" in out
        assert "licence CC0; cite A. Toy, Digits, 2026" in out and "get it: copy FSDD" in out
        assert "bat (baseline, bat): 256 frames" in out and "protocol fsdd: FSDD (small)" in out
    finally:
        DATASETS.unregister("toy-digits")
        DATASET_SPECS.pop("toy-digits", None)


def test_long_header_scans_are_cached(base, capsys, monkeypatch, tmp_path):
    import probekit.cli.data as data
    import probekit.datasets.events as events

    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "_LONG_SCAN", 5)
    paths = [c.path for c in get_dataset("urbansound8k", base).clips("all")]
    first = data._hours(paths, "us8k")
    assert (tmp_path / "cache" / "datasets-hours.json").is_file()

    def boom(path):
        raise AssertionError("header read again")

    monkeypatch.setattr(events, "file_duration", boom)
    assert data._hours(paths, "us8k") == first  # from the cached summary
    (base / "UrbanSound8K/audio/fold1/1000-0-0-0.wav").touch()  # a changed file: rescanned
    with pytest.raises(AssertionError, match="header read again"):
        data._hours(paths, "us8k")

"""The named datasets of issue 18 in their official layouts (FSD50K, UrbanSound8K, GTZAN, NSynth,
dcase2016-task2), each built tiny from real FSDD recordings: splits, folds, labels and facts; then
extraction and a probe end to end through the CLI for each clip dataset."""

from __future__ import annotations

import json

import pytest

from probekit.audio.frontends import frontend_for
from probekit.datasets import get_dataset, get_spec
from probekit.errors import ConfigError, DatasetError, ProbekitError
import named_layouts as L  # noqa: E402 - tests/datasets is on sys.path (pytest prepend mode)


@pytest.fixture(scope="module")
def base(tmp_path_factory, fsdd_root):
    base = tmp_path_factory.mktemp("named")
    for build in L.BUILDERS.values():
        build(base, fsdd_root)
    return base


def test_fsd50k_official_splits_vocabulary_and_multilabel(base):
    ds = get_dataset("fsd50k", base)
    assert ds.root == base / "FSD50K"
    assert ds.spec.classes == tuple(lab for lab, _ in L.FSD_VOCAB) and ds.spec.class_ids[0] == "/m/09x0r"
    counts = {s: len(ds.clips(s)) for s in ds.spec.splits}
    assert counts == {"train": 9, "valid": 3, "test": 6}  # dev split column train/val; eval.csv
    c = ds.clips("train")[0]
    assert c.id == "1000" and c.path == base / "FSD50K/FSD50K.dev_audio/1000.wav" and c.labels == (0, 1)
    assert all(c.path.parent.name == "FSD50K.eval_audio" for c in ds.clips("test"))
    assert ds.spec.multilabel and ds.spec.metric == "mAP" and ds.spec.declared_classes == 200
    assert ds.warnings[0] == "fsd50k: vocabulary.csv has 4 classes, the FSD50K release 200"
    assert frontend_for("bat", ds.spec).target_frames == 1024


def test_fsd50k_bad_metadata_is_named(base, tmp_path, fsdd_root):
    root = L.fsd50k(tmp_path, fsdd_root)
    dev = root / "FSD50K.ground_truth" / "dev.csv"
    dev.write_text(dev.read_text().replace('",val', '",validation', 1))
    with pytest.raises(DatasetError, match=r"dev.csv line \d+: split 'validation' is not train or val"):
        get_dataset("fsd50k", root=root)
    dev.write_text(dev.read_text().replace("validation", "val").replace("Male_speech", "Mail_speech", 1))
    with pytest.raises(DatasetError, match="label 'Mail_speech_and_man_speaking' is not in vocabulary.csv"):
        get_dataset("fsd50k", root=root)


def test_urbansound8k_ten_official_folds(base):
    ds = get_dataset("urbansound8k", base, test_fold=3)
    assert len(ds.clips("all")) == 30 and sorted({c.fold for c in ds.clips("all")}) == list(range(1, 11))
    assert {c.fold for c in ds.clips("test")} == {3} and len(ds.clips("train")) == 27
    c = ds.clips("test")[1]
    assert c.id == "fold3/3001-1-0-0.wav" and c.labels == (1,) and ds.spec.classes[1] == "car_horn"
    assert ds.spec.protocol == "urbansound8k" and ds.spec.folds == 10
    with pytest.raises(ConfigError, match="test_fold=11 must be 1..10"):
        get_dataset("urbansound8k", base, test_fold=11)


def test_urbansound8k_class_name_must_match_its_id(tmp_path, fsdd_root):
    root = L.urbansound8k(tmp_path, fsdd_root)
    meta = root / "metadata" / "UrbanSound8K.csv"
    meta.write_text(meta.read_text().replace(",1,car_horn", ",1,siren", 1))
    with pytest.raises(DatasetError, match="classID 1 is 'siren', expected 'car_horn'"):
        get_dataset("urbansound8k", root=root)


def test_gtzan_folds_by_file_number_and_the_filtered_split(base):
    ds = get_dataset("gtzan", base, test_fold=2)
    assert [c.id for c in ds.clips("test")] == ["blues/blues.00010.wav", "classical/classical.00010.wav",
                                                "country/country.00010.wav"]  # fmt: skip
    assert len(ds.clips("all")) == 30 and len(ds.clips("train")) == 27
    assert ds.spec.num_classes == 10 and ds.spec.frames["bat"] == 3008
    f = get_dataset("gtzan-filtered", base)
    assert {s: len(f.clips(s)) for s in f.spec.splits} == {"train": 18, "valid": 3, "test": 9}
    assert f.clips("test")[0].id == "blues/blues.00000.wav" and f.spec.protocol == "gtzan-filtered"


def test_gtzan_filtered_without_lists_says_where_to_get_them(tmp_path, fsdd_root):
    root = L.gtzan(tmp_path, fsdd_root, filtered=False)
    assert len(get_dataset("gtzan", root=root).clips("all")) == 30
    with pytest.raises(DatasetError, match="train_filtered.txt not found") as info:
        get_dataset("gtzan-filtered", root=root)
    assert "music_dataset_split" in info.value.hint


def test_nsynth_pitch_as_hear_and_family(base):
    pitch = get_dataset("nsynth-pitch", base)
    assert {s: len(pitch.clips(s)) for s in pitch.spec.splits} == {"train": 9, "valid": 3, "test": 6}
    assert pitch.spec.num_classes == 88 and pitch.spec.classes[pitch.clips("test")[0].labels[0]] == "60"
    assert not any("-012-" in c.id for c in pitch.clips("train"))  # below MIDI 21: left out as HEAR
    fam = get_dataset("nsynth-family", base)
    assert len(fam.clips("train")) == 10 and fam.spec.classes[fam.clips("train")[0].labels[0]] == "bass"
    c = fam.clips("valid")[0]
    assert c.id.startswith("nsynth-valid/") and c.path.parent == base / "nsynth/nsynth-valid/audio"


def test_dcase2016_task2_preset_reads_the_hear_task_at_48k(base):
    ds = get_dataset("dcase2016-task2", base)
    assert ds.root == base / "tasks/dcase2016_task2-hear2021-full" and ds.sample_rate == 48000
    assert ds.identity == "dcase2016-task2" and ds.spec.num_classes == 10
    assert [len(ds.events(s)) for s in ds.spec.splits] == [3, 1, 2]
    assert ds.spec.frames["bat"] == 12000 and ds.spec.protocol == "dcase2016_task2"
    assert get_dataset("dcase2016-task2", base, sample_rate=16000).sample_rate == 16000
    assert len(ds.clips("train")) == 3  # listed for extraction; the targets are the events
    from probekit.train.events import check_probes_for

    with pytest.raises(ProbekitError, match="frame-wise"):  # clip-level probes are refused on an event task
        check_probes_for(ds, ["linear"])
    from probekit.train.protocols import get_protocol

    p = get_protocol("dcase2016_task2")  # BAT configs/dcase2016_task2
    assert (p.train.batch_size, p.train.steps, p.train.warmup_steps, p.train.eval_every, p.train.loss) == (
        4, 4000, 400, 50, "bce") and p.train.selection == "best_val"  # fmt: skip


def test_specs_declare_their_facts():
    for name in ("fsd50k", "urbansound8k", "gtzan", "gtzan-filtered", "nsynth-pitch", "nsynth-family",
                 "dcase2016-task2"):  # fmt: skip
        s = get_spec(name)
        assert s.license and s.citation and s.download and s.layout and s.split_note and s.frames, name
        from probekit.train.protocols import PROTOCOLS

        assert s.protocol in PROTOCOLS, name


def _run(capsys, *args):
    from probekit.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr()


@pytest.mark.parametrize("name, metric, scored, split", [
    ("fsd50k", "mAP", 6, "test"), ("urbansound8k", "accuracy", 30, "all"), ("gtzan", "accuracy", 30, "all"),
    ("nsynth-pitch", "accuracy", 6, "test"),
])  # fmt: skip
def test_extract_and_probe_end_to_end(base, tmp_path, capsys, name, metric, scored, split):
    """Each name through `probekit probe` (extraction included) under its own protocol, a few steps."""
    common = ["--data-root", base, "--cache-dir", tmp_path / "c", "--device", "cpu"]
    rc, out = _run(capsys, "extract", "--backbone", "bat-tiny", "--dataset", name, "--split", split,
                   "--layers", "last", *common)  # fmt: skip
    assert rc == 0, out.err
    rc, out = _run(capsys, "probe", "linear", "-b", "bat-tiny", "-d", name, "--layers", "last", "--set", "steps=4",
                   "--set", "batch_size=8", "--set", "eval_every=2", "--results-dir", tmp_path / "r", "--yes", *common)  # fmt: skip
    assert rc == 0, out.err
    (path,) = (tmp_path / "r").rglob("*.json")
    rec = json.loads(path.read_text())
    assert rec["dataset"] == name and rec["metric"] == metric and rec["split"] == split
    assert rec["clips"][split]["scored"] == scored and rec["protocol"] == get_spec(name).protocol


def test_default_data_folder_is_searched_without_a_data_root(base, tmp_path, monkeypatch):
    """No --data-root and no $PROBEKIT_DATA: <user data dir>/probekit/datasets is looked in when it exists."""
    monkeypatch.delenv("PROBEKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    with pytest.raises(DatasetError, match="no data root") as info:
        get_dataset("urbansound8k")
    assert str(tmp_path / "xdg" / "probekit" / "datasets") in str(info.value)
    (tmp_path / "xdg" / "probekit").mkdir(parents=True)
    (tmp_path / "xdg" / "probekit" / "datasets").symlink_to(base, target_is_directory=True)
    assert get_dataset("urbansound8k").root == tmp_path / "xdg/probekit/datasets/UrbanSound8K"

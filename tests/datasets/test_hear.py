"""hear:DIR task folders (scene folds, scene multilabel trainvaltest, event) built from real FSDD audio."""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from probekit.datasets import get_dataset, get_spec
from probekit.datasets.events import EventDataset
from probekit.datasets.hear import audio_rate
from probekit.errors import DatasetError
from tests.datasets.hear_tasks import DIGITS, EVENT_LEN, EVENT_PLAN, event_task, scene_folds, scene_multilabel


@pytest.fixture(scope="module")
def tasks(tmp_path_factory, fsdd_root):
    base = tmp_path_factory.mktemp("hear")
    return {"folds": scene_folds(base / "folds", fsdd_root), "pairs": scene_multilabel(base / "pairs", fsdd_root),
            "events": event_task(base / "events", fsdd_root)}  # fmt: skip


def test_folds_task_follows_hear_fold_protocol(tasks):
    ds = get_dataset(f"hear:{tasks['folds']}")
    spec = ds.spec
    assert spec.name == "hear:fsdd_digits_folds" and spec.classes == tuple(DIGITS)
    assert not spec.multilabel and spec.metric == "accuracy" and spec.folds == 5 and spec.clip_seconds == 1.5
    assert spec.splits == ("all", "train", "valid", "test")
    assert ds.sample_rate == 16000  # 16000/ preferred over 48000/
    every = ds.clips("all")
    assert len(every) == 50 and sorted({c.fold for c in every}) == [1, 2, 3, 4, 5]
    # test_fold 1 -> test fold00 (jackson), valid fold01 (nicolas), train the rest (HEAR's evaluation kit)
    assert {c.id.split("/")[0] for c in ds.clips("test")} == {"fold00"}
    assert {c.id.split("/")[0] for c in ds.clips("valid")} == {"fold01"}
    assert {c.id.split("/")[0] for c in ds.clips("train")} == {"fold02", "fold03", "fold04"}
    c = ds.clips("test")[0]
    assert c.path.parent.parts[-2:] == ("16000", "fold00") and sf.info(str(c.path)).samplerate == 16000
    assert DIGITS[c.labels[0]] == c.path.name[0]
    five = get_dataset(f"hear:{tasks['folds']}", test_fold=5)
    assert {c.id.split("/")[0] for c in five.clips("valid")} == {"fold00"}  # cyclic
    assert five.fingerprint("test") != ds.fingerprint("test")


def test_multilabel_trainvaltest(tasks):
    ds = get_dataset(f"hear:{tasks['pairs']}")
    assert ds.spec.multilabel and ds.spec.metric == "mAP" and ds.spec.splits == ("train", "valid", "test")
    assert [len(ds.clips(s)) for s in ds.spec.splits] == [60, 10, 20]
    c = ds.clips("train")[0]
    assert len(c.labels) == 2 and "".join(DIGITS[i] for i in c.labels) == "".join(sorted(c.path.stem[-2:]))
    assert get_spec(f"hear:{tasks['pairs']}").identity.startswith("hear:fsdd_digit_pairs@")


def test_event_task_exposes_annotations_and_refuses_clip_probes(tasks):
    ds = get_dataset(f"hear:{tasks['events']}")
    assert isinstance(ds, EventDataset) and ds.spec.splits == ("train", "valid", "test")
    got = {c.path.name: [(DIGITS[e.label], e.onset, e.offset) for e in c.events] for c in ds.events("test")}
    want = {f: sorted([(d, o, pytest.approx(o + EVENT_LEN)) for d, o in evs], key=lambda v: v[1])
            for f, evs in EVENT_PLAN["test"].items()}  # fmt: skip
    assert got == want  # ms in the JSON -> seconds, sorted by onset; a file with no event stays listed
    # files listed for extraction (labels: the classes they hold); clip-level probes are refused by the runner
    assert {c.path.name: c.labels for c in ds.clips("test")} == {"e4.wav": (0, 4, 8), "e5.wav": ()}


def test_sample_rate_choice(tmp_path):
    for r in (8000, 22050, 48000):
        (tmp_path / str(r)).mkdir()
    assert audio_rate(tmp_path) == 22050  # lowest at or above 16 kHz
    (tmp_path / "16000").mkdir()
    assert audio_rate(tmp_path) == 16000
    assert audio_rate(tmp_path, 48000) == 48000


def test_bad_metadata_is_named(tasks, tmp_path):
    import shutil

    root = shutil.copytree(tasks["pairs"], tmp_path / "t", ignore=shutil.ignore_patterns("48000"))
    meta = json.loads((root / "task_metadata.json").read_text())
    (root / "task_metadata.json").write_text(json.dumps({**meta, "split_mode": "new_split_kfold"}))
    with pytest.raises(DatasetError, match="nfolds"):
        get_dataset(f"hear:{root}")
    (root / "task_metadata.json").write_text(json.dumps({**meta, "prediction_type": "regression"}))
    with pytest.raises(DatasetError, match="prediction_type"):
        get_dataset(f"hear:{root}")
    (root / "task_metadata.json").write_text(json.dumps(meta))
    labels = json.loads((root / "test.json").read_text())
    labels[next(iter(labels))] = ["eleven"]
    (root / "test.json").write_text(json.dumps(labels))
    with pytest.raises(DatasetError, match="eleven.*labelvocabulary"):
        get_dataset(f"hear:{root}")


def _run(main, capsys, *args):
    capsys.readouterr()
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr()


@pytest.mark.parametrize("task, metric", [("folds", "accuracy"), ("pairs", "mAP")])
def test_extract_and_probe_linear_end_to_end(tasks, tmp_path, capsys, task, metric):
    from probekit.cli import main

    ds = f"hear:{tasks[task]}"
    common = ["--cache-dir", tmp_path / "c", "--device", "cpu"]
    rc, out = _run(main, capsys, "extract", "--backbone", "bat-tiny", "--dataset", ds, "--split", "train",
                   "--layers", "last", *common)  # fmt: skip
    assert rc == 0, out.err
    rc, out = _run(main, capsys, "probe", "linear", "-b", "bat-tiny", "-d", ds, "--layers", "last", "--set",
                   "steps=6", "--set", "batch_size=8", "--results-dir", tmp_path / "r", "--yes", *common)  # fmt: skip
    assert rc == 0, out.err
    (path,) = (tmp_path / "r").rglob("*.json")
    rec = json.loads(path.read_text())
    assert rec["metric"] == metric and rec["dataset"].startswith("hear:")
    assert rec["clips"]["test"]["scored"] == (10 if task == "folds" else 20)
    assert rec.get("dataset_id")  # two projects' hear tasks of the same name never share a record


def test_event_task_refused_by_probe(tasks, tmp_path, capsys):
    from probekit.cli import main

    rc, out = _run(
        main,
        capsys,
        "probe",
        "linear",
        "-b",
        "bat-tiny",
        "-d",
        f"hear:{tasks['events']}",
        "--cache-dir",
        tmp_path / "c",
        "--results-dir",
        tmp_path / "r",
        "--device",
        "cpu",
        "--yes",
    )
    assert rc == 2 and "frame-wise" in out.err and "Traceback" not in out.err


def test_folds_cross_validate_under_a_cv_protocol(tasks, tmp_path, capsys):
    """HEAR's k folds -> Clip.fold of split 'all': a cross-validating protocol trains and scores each fold."""
    from probekit.cli import main

    rc, out = _run(main, capsys, "probe", "linear", "-b", "bat-tiny", "-d", f"hear:{tasks['folds']}", "--protocol",
                   "esc50", "--layers", "last", "--set", "steps=6", "--set", "batch_size=8", "--cache-dir",
                   tmp_path / "c", "--results-dir", tmp_path / "r", "--device", "cpu", "--yes")  # fmt: skip
    assert rc == 0, out.err
    (path,) = (tmp_path / "r").rglob("*.json")
    rec = json.loads(path.read_text())
    assert rec["split"] == "all" and rec["clips"]["all"]["scored"] == 50
    assert len(rec["seeds"][0]["extras"]["folds"]) == 5


def test_event_times_are_checked(tasks, tmp_path):
    import shutil

    root = shutil.copytree(tasks["events"], tmp_path / "t", ignore=shutil.ignore_patterns("48000"))
    labels = json.loads((root / "train.json").read_text())
    labels["e1.wav"] = [{"label": "1", "start": 2500.0, "end": 3500.0}]  # past sample_duration 3.0 s
    (root / "train.json").write_text(json.dumps(labels))
    with pytest.raises(DatasetError, match="e1.wav.*after the file's end"):
        get_dataset(f"hear:{root}")
    labels["e1.wav"] = [{"label": "1", "start": 900.0, "end": 500.0}]
    (root / "train.json").write_text(json.dumps(labels))
    with pytest.raises(DatasetError, match="onset 0.9 >= offset 0.5"):
        get_dataset(f"hear:{root}")


def test_missing_files_are_counted_per_split(tasks, tmp_path):
    import shutil

    root = shutil.copytree(tasks["folds"], tmp_path / "t", ignore=shutil.ignore_patterns("48000"))
    (root / "16000" / "fold00" / "3_jackson_0.wav").unlink()
    ds = get_dataset(f"hear:{root}")
    assert ds.missing == {"all": 1, "test": 1, "valid": 0, "train": 0} and len(ds.clips("test")) == 9

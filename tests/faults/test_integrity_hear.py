"""Hostile HEAR task folders, class folders and strong-label manifests: one line naming the file, exit 2."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.datasets.hear_tasks import event_task, scene_multilabel
from tests.faults._faults import assert_user_error, cli


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, fsdd_root):
    return scene_multilabel(tmp_path_factory.mktemp("hear") / "pairs", fsdd_root)


def _copy(src, dst):
    return shutil.copytree(src, dst, ignore=shutil.ignore_patterns("48000"))


def _datasets(capsys, name):
    return cli(capsys, "datasets", "-d", name)


@pytest.mark.parametrize("edit, words", [
    (lambda r: (r / "task_metadata.json").write_text("{not json"), ["task_metadata.json", "not readable JSON"]),
    (lambda r: (r / "test.json").write_text("[1, 2]"), ["test.json", "expected an object"]),
    (lambda r: (r / "labelvocabulary.csv").write_text("idx,label\n0,a\n0,b\n"), ["labelvocabulary.csv", "idx"]),
    (lambda r: (r / "valid.json").unlink(), ["valid.json", "not found"]),
    (lambda r: shutil.rmtree(r / "16000"), ["no audio folder"]),
])  # fmt: skip
def test_broken_hear_task_is_one_line(pairs, tmp_path, capsys, edit, words):
    root = _copy(pairs, tmp_path / "t")
    edit(root)
    rc, _, err = _datasets(capsys, f"hear:{root}")
    assert_user_error(rc, err, *words)


def test_multiclass_clip_with_two_labels_is_refused(pairs, tmp_path, capsys):
    root = _copy(pairs, tmp_path / "t")
    meta = json.loads((root / "task_metadata.json").read_text())
    (root / "task_metadata.json").write_text(json.dumps({**meta, "prediction_type": "multiclass"}))
    rc, _, err = _datasets(capsys, f"hear:{root}")
    assert_user_error(rc, err, "2 labels in a multiclass task", "train.json")


def test_nfolds_bool_or_missing_is_refused(pairs, tmp_path, capsys):
    root = _copy(pairs, tmp_path / "t")
    meta = json.loads((root / "task_metadata.json").read_text())
    (root / "task_metadata.json").write_text(
        json.dumps({**meta, "split_mode": "new_split_kfold", "nfolds": True})
    )
    rc, _, err = _datasets(capsys, f"hear:{root}")
    assert_user_error(rc, err, "nfolds", "task_metadata.json")


def test_two_hear_tasks_of_one_name_get_two_record_identities(pairs, tmp_path):
    """Records are keyed by dataset_id: two copies of a HEAR task (same task_name) elsewhere never share."""
    from probekit.datasets import get_dataset
    from probekit.results.store import dataset_identity

    other = _copy(pairs, tmp_path / "elsewhere")
    a, b = get_dataset(f"hear:{pairs}"), get_dataset(f"hear:{other}")
    assert a.name == b.name and dataset_identity(a) and dataset_identity(a) != dataset_identity(b)


def test_event_task_extracts_and_refuses_clip_probes_in_one_line(tmp_path, fsdd_root, capsys):
    root = event_task(tmp_path / "ev", fsdd_root)
    rc, _, err = cli(capsys, "extract", "--backbone", "bat-tiny", "--dataset", f"hear:{root}", "--split", "test",
                     "--cache-dir", str(tmp_path / "c"), "--device", "cpu")  # fmt: skip
    assert rc == 0, err  # the frame-wise heads train on these tokens
    rc, _, err = cli(capsys, "probe", "linear", "--backbone", "bat-tiny", "--dataset", f"hear:{root}", "--cache-dir",
                     str(tmp_path / "c"), "--device", "cpu", "--yes")  # fmt: skip
    assert_user_error(rc, err, "event (timestamp) task", "frame-wise")


def test_empty_path_after_prefix(capsys):
    rc, _, err = _datasets(capsys, "hear:")
    assert_user_error(rc, err, "names no folder", "hear:DIR")

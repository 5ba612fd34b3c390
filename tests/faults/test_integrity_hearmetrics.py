"""Hostile HEAR metric declarations: refused with one line naming task_metadata.json (no silent fallback)."""

from __future__ import annotations

import json
import shutil

import pytest

from probekit.datasets import get_dataset
from probekit.errors import DatasetError, ProbeError
from probekit.train.metrics import compute_metrics
from tests.datasets.hear_tasks import scene_folds


@pytest.fixture(scope="module")
def folds(tmp_path_factory, fsdd_root):
    return scene_folds(tmp_path_factory.mktemp("hf") / "folds", fsdd_root)


def _with(folds, tmp_path, **meta_update):
    dst = tmp_path / "task"
    shutil.copytree(folds, dst)
    meta = json.loads((dst / "task_metadata.json").read_text())
    meta.update(meta_update)
    (dst / "task_metadata.json").write_text(json.dumps(meta))
    return dst


def test_unknown_metric_named(folds, tmp_path):
    # base: a warning and accuracy reported instead of the task's headline
    task = _with(folds, tmp_path, evaluation=["top5_acc"])
    with pytest.raises(DatasetError, match="task_metadata.json.*'top5_acc'"):
        get_dataset(f"hear:{task}")


def test_chroma_on_multilabel_named(folds, tmp_path):
    task = _with(folds, tmp_path, prediction_type="multilabel", evaluation=["chroma_acc"])
    with pytest.raises(DatasetError, match="chroma_acc"):
        get_dataset(f"hear:{task}")


def test_d_prime_headline_is_reported(folds, tmp_path):
    # base: d_prime fell back to accuracy with a warning
    task = _with(folds, tmp_path, evaluation=["d_prime", "top1_acc"])
    ds = get_dataset(f"hear:{task}")
    assert ds.spec.metric == "d_prime" and not ds.warnings


def test_unknown_requested_metric_is_a_probe_error():
    import numpy as np

    with pytest.raises(ProbeError, match="chroma_accuracy"):
        compute_metrics(np.eye(3), np.eye(3), True, ("chroma_accuracy",))


def test_undefined_headline_is_one_line(folds, tmp_path, capsys):
    # a d_prime task whose test fold misses a class: HEAR gets NaN; probekit says why instead of a schema error
    from probekit.cli import main

    task = _with(folds, tmp_path, evaluation=["d_prime", "top1_acc"])
    f = json.loads((task / "fold00.json").read_text())
    f.pop(next(iter(f)))
    (task / "fold00.json").write_text(json.dumps(f))
    capsys.readouterr()
    rc = main(["probe", "linear", "-b", "bat-tiny", "-d", f"hear:{task}", "--layers", "last", "--set", "steps=4",
               "--set", "batch_size=8", "--results-dir", str(tmp_path / "r"), "--yes", "--cache-dir",
               str(tmp_path / "c"), "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "d_prime is undefined on the test split" in err and "Traceback" not in err

"""HEAR's scene scores (hear-eval-kit heareval/score.py): d_prime, aucroc, chroma_acc."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from probekit.train.metrics import aucroc, chroma_accuracy, compute_metrics, d_prime, evaluate_scores
from tests.datasets.hear_tasks import scene_folds, scene_multilabel

Y = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
S = np.array([[0.9, 0.2], [0.8, 0.6], [0.3, 0.7], [0.1, 0.4]])


def test_hand_checked_small_case():
    # class 0: positives 0.9, 0.3 vs negatives 0.8, 0.1 -> 3 of 4 pairs ordered: AUC 0.75
    # class 1: positives 0.6, 0.4 vs negatives 0.2, 0.7 -> 2 of 4: AUC 0.5
    assert aucroc(Y, S) == pytest.approx(0.625)
    # d' = mean(sqrt(2) * Phi^-1(0.75), sqrt(2) * Phi^-1(0.5)) = sqrt(2) * 0.6744897502 / 2
    assert d_prime(Y, S) == pytest.approx(math.sqrt(2) * 0.6744897501960817 / 2)
    # chroma: targets 0, 12, 5, 3 vs argmax 12, 0, 17, 4 -> three octave errors forgiven, one wrong
    t = np.eye(24)[[0, 12, 5, 3]]
    p = np.eye(24)[[12, 0, 17, 4]]
    assert chroma_accuracy(t, p) == 0.75


def test_against_sklearn_scipy_rederivation():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 7)) < 0.3).astype(int)
    s = rng.random((200, 7)) + 0.3 * y
    per = [roc_auc_score(y[:, c], s[:, c]) for c in range(7)]
    assert aucroc(y, s) == pytest.approx(np.mean(per))
    assert d_prime(y, s) == pytest.approx(np.mean([math.sqrt(2) * norm.ppf(a) for a in per]))
    m = compute_metrics(s, y, True, ("d_prime", "aucroc", "mAP"))
    assert m["primary"] == "d_prime" and m["aucroc"] == pytest.approx(100 * np.mean(per))
    labels = rng.integers(0, 88, 300)
    sc = rng.random((300, 88))
    m = compute_metrics(sc, labels, False, ("accuracy", "chroma_accuracy"))
    assert m["primary"] == "accuracy"
    assert m["chroma_accuracy"] == pytest.approx(100 * np.mean(sc.argmax(1) % 12 == labels % 12))
    assert m["chroma_accuracy"] >= m["accuracy"]


def test_undefined_as_hear_and_defaults_unchanged():
    y = np.array([[1, 0], [1, 0], [0, 0]])  # class 1 has no positive: sklearn refuses, HEAR reports NaN
    s = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.5]])
    assert math.isnan(aucroc(y, s)) and math.isnan(d_prime(y, s))
    assert d_prime(Y, np.array([[1, 0], [0, 1], [1, 0], [0, 1]]) * 1.0) == math.inf  # AUC 1 -> inf
    plain = compute_metrics(S, Y, True)
    assert "d_prime" not in plain and "aucroc" not in plain and plain["primary"] == "mAP"
    r = evaluate_scores(np.stack([S, S], 1), Y, True, score_metrics=("aucroc", "mAP"))
    assert r.primary_name == "aucroc" and r.heads["head1"].metrics["aucroc"] == pytest.approx(62.5)


def _retarget(src, dst, evaluation):
    shutil.copytree(src, dst)
    meta = json.loads((dst / "task_metadata.json").read_text())
    meta["evaluation"] = evaluation
    (dst / "task_metadata.json").write_text(json.dumps(meta))
    return dst


@pytest.fixture(scope="module")
def tasks(tmp_path_factory, fsdd_root):
    base = tmp_path_factory.mktemp("hearm")
    pairs = scene_multilabel(base / "pairs0", fsdd_root)
    folds = scene_folds(base / "folds0", fsdd_root)
    return {"pairs": _retarget(pairs, base / "pairs", ["d_prime", "aucroc", "mAP"]),
            "pitch": _retarget(folds, base / "pitch", ["pitch_acc", "chroma_acc"])}  # fmt: skip


@pytest.mark.parametrize("task, metric, extra", [("pairs", "d_prime", ("aucroc", "mAP")),
                                                 ("pitch", "accuracy", ("chroma_accuracy",))])
def test_hear_task_probe_reports_its_metrics(tasks, tmp_path, capsys, task, metric, extra):
    from probekit.cli import main
    from probekit.datasets import get_dataset

    ds = f"hear:{tasks[task]}"
    d = get_dataset(ds)
    assert d.spec.metric == metric and d.spec.score_metrics == (metric, *extra) and not d.warnings
    capsys.readouterr()
    rc = main(["probe", "linear", "-b", "bat-tiny", "-d", ds, "--layers", "last", "--set", "steps=6", "--set",
               "batch_size=8", "--results-dir", str(tmp_path / "r"), "--yes", "--cache-dir", str(tmp_path / "c"),
               "--device", "cpu"])  # fmt: skip
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert metric in out.out
    (path,) = (tmp_path / "r").rglob("*.json")
    rec = json.loads(path.read_text())
    assert rec["metric"] == metric and metric in rec["aggregate"]
    got = rec["seeds"][0]["metrics"]
    for k in extra:
        assert k in got and math.isfinite(got[k])
    if task == "pitch":  # 10 classes < 12: chroma accuracy equals accuracy exactly
        assert got["chroma_accuracy"] == pytest.approx(got["accuracy"])
    else:
        assert 0.0 <= got["aucroc"] <= 100.0
        assert got["d_prime"] == pytest.approx(math.sqrt(2) * norm.ppf(got["aucroc"] / 100), abs=1.5)


def test_nsynth_pitch_declares_chroma_beside_pitch_accuracy():
    from probekit.datasets.nsynth import SPEC_FAMILY, SPEC_PITCH

    assert SPEC_PITCH.metric == "accuracy" and SPEC_PITCH.score_metrics == ("accuracy", "chroma_accuracy")
    assert SPEC_FAMILY.score_metrics == ()
    # the class index is the MIDI pitch - 21: index mod 12 compares pitch classes exactly as MIDI mod 12 would
    idx = np.arange(88)
    pitch = np.array([int(c) for c in SPEC_PITCH.classes])
    assert np.array_equal((idx[:, None] % 12 == idx[None] % 12), (pitch[:, None] % 12 == pitch[None] % 12))

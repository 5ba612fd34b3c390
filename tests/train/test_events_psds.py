"""PSDS1/PSDS2 (DCASE 2021+ parameters) through psds_eval: hand-checkable cases and psds_eval's documented
behaviour (its README's two close dog barks caught by one detection, zero-length detections dropped,
cross-triggers weighted by alpha_ct and normalised by the other class's ground-truth duration)."""

from __future__ import annotations

import numpy as np
import pytest

from probekit.datasets.events import Event
from probekit.probes import make_probe
from probekit.tokens import InMemoryTokens
from probekit.train.events import PSDS_SCENARIOS, PSDS_THRESHOLDS, FrameTokens, psds_scores

pytest.importorskip("psds_eval")
pytest.importorskip("sed_eval")
HOUR = 3600.0
C = ["a", "b"]


def E(label, onset, offset):
    return {"event_label": label, "event_onset": float(onset), "event_offset": float(offset)}


REF = [[E("a", 10, 12), E("b", 20, 22)]]
PERFECT = [E("a", 10, 12), E("b", 20, 22)]


def test_dcase_parameters_and_thresholds():
    assert PSDS_SCENARIOS["psds1"] == {"dtc_threshold": 0.7, "gtc_threshold": 0.7, "cttc_threshold": 0.3,
                                       "alpha_ct": 0.0, "alpha_st": 1.0}
    assert PSDS_SCENARIOS["psds2"] == {"dtc_threshold": 0.1, "gtc_threshold": 0.1, "cttc_threshold": 0.3,
                                       "alpha_ct": 0.5, "alpha_st": 1.0}
    assert len(PSDS_THRESHOLDS) == 50 and PSDS_THRESHOLDS[0] == 0.01 and PSDS_THRESHOLDS[-1] == 0.99


def test_hand_checked_staircase():
    # perfect at one operating point: TPR 1 at eFPR 0 -> area 100 of 100
    assert psds_scores(REF, {0.5: [PERFECT]}, [HOUR], C) == {"psds1": 1.0, "psds2": 1.0}
    # threshold 0.9 detects nothing; 0.1 detects both plus 50 false positives per class in the 1-hour file:
    # TPR 0 up to eFPR 50/h, then 1 up to 100/h -> 50/100
    fps = [E("a", 100 + 60 * k, 101 + 60 * k) for k in range(50)] + [E("b", 130 + 60 * k, 131 + 60 * k)
                                                                      for k in range(50)]
    assert psds_scores(REF, {0.9: [[]], 0.1: [PERFECT + fps]}, [HOUR], C) == {"psds1": 0.5, "psds2": 0.5}
    # one class missed: mean TPR 0.5, std 0.5, alpha_st 1 -> 0; without the penalty 0.5
    assert psds_scores(REF, {0.5: [[E("a", 10, 12)]]}, [HOUR], C) == {"psds1": 0.0, "psds2": 0.0}
    no_st = {"x": {**PSDS_SCENARIOS["psds1"], "alpha_st": 0.0}}
    assert psds_scores(REF, {0.5: [[E("a", 10, 12)]]}, [HOUR], C, scenarios=no_st) == {"x": 0.5}


def test_cross_trigger_weighs_in_psds2_only():
    # "b" detected on a's event: a FP of b (1/h) -> PSDS1 = 99/100; in PSDS2 also a cross-trigger on a, rate
    # 1 per 2 s of a's ground truth = 1800/h, eFPR_b = 1 + 0.5 * mean(1800, 0) = 901/h > 100 -> TPR_b 0 -> 0
    got = psds_scores(REF, {0.5: [PERFECT + [E("b", 10, 12)]]}, [HOUR], C)
    assert got["psds1"] == pytest.approx(0.99) and got["psds2"] == 0.0


def test_psds_eval_documented_behaviour():
    # README: two dog barks annotated separately, one detection over both is not penalised
    ref = [[E("dog", 1.0, 1.5), E("dog", 1.7, 2.2), E("cat", 5, 6)]]
    assert psds_scores(ref, {0.5: [[E("dog", 1.0, 2.2), E("cat", 5, 6)]]}, [10.0], ["dog", "cat"])["psds1"] == 1.0
    # zero-length detections are removed (a one-row run of the official decoding has onset == offset)
    assert psds_scores(REF, {0.5: [PERFECT + [E("a", 30, 30)]]}, [HOUR], C) == {"psds1": 1.0, "psds2": 1.0}


def test_where_psds_does_not_apply():
    assert psds_scores([[E("a", 1, 2)]], {0.5: [[E("a", 1, 2)]]}, [10.0], ["a"]) == {}  # one class: NaN eFPR
    assert psds_scores([[]], {0.5: [[E("a", 1, 2)]]}, [10.0], C) == {}  # no reference event


def test_overlapping_reference_events_of_one_label_are_scored_as_their_union():
    import pandas as pd
    from psds_eval import PSDSEval, PSDSEvalError

    ref = [[E("a", 10, 12), E("a", 11, 13), E("b", 20, 22)]]
    cols = ["filename", "onset", "offset", "event_label"]
    gt = pd.DataFrame([("f0", 10, 12, "a"), ("f0", 11, 13, "a")], columns=cols)
    with pytest.raises(PSDSEvalError, match="intersecting"):  # psds_eval itself refuses them
        PSDSEval(ground_truth=gt, metadata=pd.DataFrame([("f0", 60.0)], columns=["filename", "duration"]))
    got = psds_scores(ref, {0.5: [[E("a", 10, 13), E("b", 20, 22)]]}, [HOUR], C)
    assert got == {"psds1": 1.0, "psds2": 1.0}


def test_event_task_reports_psds_on_test_only():
    rows, n = 20, 4
    events = [(Event(0, 0.32, 0.96), Event(1, 1.6, 2.4))] * n
    base = InMemoryTokens(np.zeros((n, 1, rows * 2, 4), np.float32), None, np.zeros((n, 2), np.float32),
                          num_classes=2, multilabel=True, grid=(rows, 2))
    data = FrameTokens(base, events, 0.16, classes=("a", "b"), durations=[rows * 0.16] * n)
    probe = make_probe("sed-linear", num_layers=1, embed_dim=4, num_classes=2)
    scores = data.labels.astype(np.float64)
    val = data.event_task.evaluate(scores, None, probe)
    assert "psds1" not in val.metrics
    test = data.event_task.evaluate(scores, None, probe, psds=True)
    # decoded events run from the first to the last active row time: a [0.32, 0.96], b [1.6, 2.4], exact
    assert test.metrics["psds1"] == pytest.approx(100.0) and test.metrics["psds2"] == pytest.approx(100.0)


def test_classes_without_reference_events_are_left_out():
    # "c" has no reference event in the test files: scored over a and b only (psds_eval needs each class's
    # ground-truth duration); its detections do not count
    got = psds_scores(REF, {0.5: [PERFECT + [E("c", 40, 41)]]}, [HOUR], ["a", "b", "c"])
    assert got == {"psds1": 1.0, "psds2": 1.0}
    assert psds_scores([[E("a", 1, 2)]], {0.5: [[E("a", 1, 2)]]}, [10.0], C) == {}  # one class left: none

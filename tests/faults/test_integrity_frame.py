"""Hostile inputs around event tasks and the frame-wise heads: each is refused in one line naming what to use,
or works. (Before the frame-wise heads existed, event tasks could not be extracted or trained at all.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from probekit.datasets.events import Event
from probekit.errors import ProbeError
from tests.datasets.hear_tasks import event_task
from tests.faults._faults import assert_user_error, cli

pytest.importorskip("sed_eval")


@pytest.fixture(scope="module")
def hear_events(tmp_path_factory, fsdd_root):
    return event_task(tmp_path_factory.mktemp("ev") / "task", fsdd_root)


def _common(tmp_path):
    return ["--backbone", "bat-tiny", "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"),
            "--device", "cpu", "--yes", "--no-progress"]


def test_clip_probe_on_event_task_is_refused_before_extraction_naming_the_frame_heads(hear_events, tmp_path, capsys):
    rc, _, err = cli(capsys, "probe", "cgp", "--dataset", f"hear:{hear_events}", *_common(tmp_path))
    assert_user_error(rc, err, "event (timestamp) task", "sed-cgp")
    assert not (tmp_path / "c").exists()


def test_frame_head_on_a_clip_task_is_one_line(tmp_path, fsdd_root, capsys):
    rows = ["path,labels,split"] + [f"{fsdd_root}/recordings/{d}_theo_{t}.wav,d{d},{'test' if t else 'train'}"
                                   for d in range(2) for t in range(3)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    rc, _, err = cli(capsys, "probe", "sed-linear", "--dataset", f"manifest:{tmp_path / 'm.csv'}", *_common(tmp_path))
    assert_user_error(rc, err, "needs an event (timestamp) task", "events:PATH.csv")


@pytest.mark.parametrize("setting, words", [("median_filter=4", "median_filter"), ("threshold=1.5", "threshold"),
                                            ("threshold=0", "threshold")])
def test_bad_postprocessing_setting_is_one_line(hear_events, tmp_path, capsys, setting, words):
    rc, _, err = cli(capsys, "probe", "sed-linear", "--dataset", f"hear:{hear_events}", "--set", setting,
                     *_common(tmp_path))
    # the task's class-coverage warnings come first (this tiny task lacks classes in some splits)
    errors = "\n".join(x for x in err.strip().splitlines() if not x.startswith("[yellow]warning"))
    assert_user_error(rc, errors, words)


def test_event_task_with_an_empty_file_and_an_event_at_the_clip_end_trains_and_scores(hear_events, tmp_path, capsys):
    """e5.wav has no event at all; e4.wav's last digit ends 0.4 s before the 3-s clip's end."""
    rc, out, err = cli(capsys, "probe", "sed-linear", "--dataset", f"hear:{hear_events}", "--set", "steps=5",
                       "--set", "batch_size=2", *_common(tmp_path))
    assert rc == 0, err
    (path,) = (tmp_path / "r").rglob("sed-linear--*.json")
    rec = json.loads(path.read_text())
    m = rec["seeds"][0]["metrics"]
    assert rec["metric"] == "event_onset_200ms_fms" and all(np.isfinite(v) for v in m.values())
    # `probekit predict` on a frame-wise head's record gives events (onset, offset, label), not clip scores
    wav = next((hear_events / "16000" / "test").glob("*.wav"))
    rc, out, err = cli(capsys, "predict", "--record", str(path), str(wav), "--device", "cpu", "-o",
                       str(tmp_path / "ev.csv"))
    assert rc == 0, err
    header = (tmp_path / "ev.csv").read_text().splitlines()[0]
    assert {"path", "onset", "offset", "label"} <= set(header.split(",")), header


def test_frame_tokens_refuse_mismatched_events_or_classes():
    import torch

    from probekit.tokens import InMemoryTokens
    from probekit.train.events import FrameTokens

    base = InMemoryTokens(torch.zeros(2, 1, 8, 4), None, np.zeros((2, 2), np.float32), num_classes=2,
                          multilabel=True, grid=(4, 2))
    with pytest.raises(ProbeError, match="1 event lists for 2 clips"):
        FrameTokens(base, [()], 0.16, classes=("a", "b"))
    with pytest.raises(ProbeError, match="out of range"):
        FrameTokens(base, [(Event(2, 0.0, 0.1),), ()], 0.16, classes=("a", "b"))
    with pytest.raises(ProbeError, match="3 class names"):
        FrameTokens(base, [(), ()], 0.16, classes=("a", "b", "c"))

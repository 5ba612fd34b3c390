"""Sound event detection: frame targets, post-processing and metrics as the official BAT code and HEAR compute
them, FrameTokens, and every frame-wise head trained end to end (Python and CLI, cache and online) on an event
task built from real FSDD recordings placed at known onsets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from probekit.datasets.events import Event
from probekit.errors import ConfigError, ProbeError
from probekit.probes import make_probe
from probekit.tokens import InMemoryTokens, TokenRequest
from probekit.train.events import (
    FrameTokens,
    event_metrics,
    frame_targets,
    frames_to_events,
    seconds_per_row,
)
from probekit.train.fit import TrainConfig, fit, predict

pytest.importorskip("sed_eval")
FRAME_HEADS = ("sed-cgp", "sed-protobin", "sed-linear", "sed-lcgp", "sed-h2t")


# ---- re-derivations of the official code ------------------------------------------------------------------
def official_targets(events, num_rows, num_classes, stride_ms):
    """data/bat_audio_datasets.py DCASE2016Task2Dataset: float32 patch centers in ms, inclusive bounds."""
    centers = torch.arange(num_rows, dtype=torch.float32) * stride_ms
    y = torch.zeros((num_rows, num_classes), dtype=torch.float32)
    for label, start_ms, end_ms in events:
        y[(centers >= start_ms) & (centers <= end_ms), label] = 1.0
    return y.numpy()


def official_tokens_to_events(predictions, patch_stride_ms, threshold, filter_size):
    """engine/evaluator.py tokens_to_events."""
    from scipy.signal import medfilt

    if filter_size > 1:
        predictions = medfilt(predictions, kernel_size=filter_size)
    binary = (predictions >= threshold).astype(int)
    d = np.diff(np.pad(binary, (1, 1), "constant"))
    onsets, offsets = np.where(d == 1)[0], np.where(d == -1)[0]
    centers = np.arange(len(predictions)) * patch_stride_ms
    return [(max(0.0, centers[on]) / 1000.0, centers[off - 1] / 1000.0) for on, off in zip(onsets, offsets)]


def test_frame_targets_follow_the_official_rule():
    rng = np.random.default_rng(0)
    for _ in range(50):
        evs = [(int(rng.integers(3)), float(a), float(a + rng.uniform(0.01, 2.0))) for a in rng.uniform(0, 10, 4)]
        evs += [(1, 0.32, 0.48)]  # bounds exactly on row times (160 ms rows): both rows are in
        want = official_targets([(c, a * 1000, b * 1000) for c, a, b in evs], 75, 3, 160.0)
        got = frame_targets([Event(c, a, b) for c, a, b in evs], 75, 3, 0.16)
        assert np.array_equal(got, want)
    assert frame_targets([Event(0, 0.32, 0.48)], 5, 1, 0.16)[:, 0].tolist() == [0, 0, 1, 1, 0]


@pytest.mark.parametrize("threshold, size", [(0.3, 3), (0.5, 1), (0.2, 5)])
def test_postprocessing_is_the_official_tokens_to_events(threshold, size):
    rng = np.random.default_rng(1)
    for _ in range(30):
        p = rng.uniform(0, 1, 40) ** 2
        assert frames_to_events(p, 0.16, threshold, size) == official_tokens_to_events(p, 160.0, threshold, size)
    # a run touching both ends, and a 1-row blip a median filter of 3 removes
    p = np.array([0.9, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.8, 0.8])
    assert frames_to_events(p, 0.16, 0.3, 3) == [(0.0, 0.16), (1.12, 1.28)]
    assert frames_to_events(p, 0.16, 0.3, 1) == [(0.0, 0.16), (0.64, 0.64), (1.12, 1.28)]


def test_seconds_per_row_from_frontend_and_grid():
    from probekit.audio.frontends import BatMelConfig, FbankConfig

    assert seconds_per_row(BatMelConfig(target_frames=12000), (750, 8)) == pytest.approx(0.16)  # BAT DCASE
    assert seconds_per_row(FbankConfig(target_frames=1024), (64, 8)) == pytest.approx(0.16)
    assert seconds_per_row(BatMelConfig(target_frames=608, sample_rate=8000, hop_length=160), (38, 8)) == (
        pytest.approx(0.32))
    with pytest.raises(ConfigError, match="equal length"):
        seconds_per_row(BatMelConfig(target_frames=48), (20, 8))


def test_event_metrics_onset_collar_and_segments():
    ref = [[{"event_label": "a", "event_onset": 1.0, "event_offset": 1.5}]]
    hit = [[{"event_label": "a", "event_onset": 1.15, "event_offset": 3.0}]]  # onset within 200 ms, offset ignored
    miss = [[{"event_label": "a", "event_onset": 1.25, "event_offset": 1.5}]]
    wrong = [[{"event_label": "b", "event_onset": 1.0, "event_offset": 1.5}]]
    assert event_metrics(ref, hit, ["a", "b"])["metrics"]["event_onset_200ms_fms"] == pytest.approx(100.0)
    assert event_metrics(ref, miss, ["a", "b"])["metrics"]["event_onset_200ms_fms"] == 0.0
    m = event_metrics(ref, wrong, ["a", "b"])["metrics"]
    assert m["event_onset_200ms_fms"] == 0.0 and m["segment_1s_er"] > 0.99
    perfect = event_metrics(ref, ref, ["a", "b"])
    assert perfect["metrics"]["segment_1s_er"] == 0.0 and perfect["metrics"]["segment_1s_f1"] == pytest.approx(100)
    assert perfect["per_class_f1"] == [pytest.approx(100.0), 0.0]  # 'b' has no event: 0, not NaN


def _toy(events, rows=20, grid_f=2, dim=4, classes=("a", "b")):
    n = len(events)
    patch = torch.randn(n, 2, rows * grid_f, dim)
    base = InMemoryTokens(patch, None, np.zeros((n, len(classes)), np.float32), num_classes=len(classes),
                          multilabel=True, grid=(rows, grid_f))
    return FrameTokens(base, events, 0.16, classes=classes, durations=[rows * 0.16] * n)


def test_frame_tokens_batches_and_perfect_scores():
    events = [(Event(0, 0.3, 0.9), Event(1, 1.5, 2.2)), (Event(1, 0.0, 0.5),), ()]
    data = _toy(events)
    assert data.labels.shape == (3, 20, 2) and data.num_layers == 2 and data.grid == (20, 2)
    (b,) = list(data.batches(TokenRequest(layers="all", patch=True, cls=False), 8))
    assert b.labels.shape == (3, 20, 2) and b.grid == (20, 2) and b.labels.dtype == torch.float32
    assert torch.equal(b.labels, torch.from_numpy(data.labels))
    probe = make_probe("sed-linear", num_layers=2, embed_dim=4, num_classes=2)
    m = data.event_task.evaluate(data.labels.astype(np.float64), None, probe)  # the targets as predictions
    assert m.primary_name == "event_onset_200ms_fms" and m.primary == pytest.approx(100.0)
    assert m.metrics["segment_1s_er"] == 0.0 and m.metrics["mAP_micro"] == pytest.approx(100.0)
    late = np.roll(data.labels, 2, axis=1)  # 320 ms late: outside the onset collar
    assert data.event_task.evaluate(late, None, probe).primary == 0.0


def test_clip_probe_on_event_data_and_frame_probe_on_clip_data_are_refused():
    data = _toy([(Event(0, 0.3, 0.9),)] * 4)
    clip = make_probe("linear", num_layers=2, embed_dim=4, num_classes=2, pooling="mean")
    with pytest.raises(ProbeError, match="sed-cgp, sed-protobin, sed-linear, sed-lcgp, sed-h2t"):
        fit(clip, data, config=TrainConfig(steps=1, batch_size=2), progress=False)
    frame = make_probe("sed-linear", num_layers=2, embed_dim=4, num_classes=2)
    with pytest.raises(ProbeError, match="needs frame targets"):
        fit(frame, data.base, config=TrainConfig(steps=1, batch_size=2), progress=False)


@pytest.mark.parametrize("name", FRAME_HEADS)
def test_each_frame_head_fits_in_memory_tokens(name):
    data = _toy([(Event(0, 0.3, 0.9), Event(1, 1.5, 2.2))] * 6)
    hp = {"prototypes": 16} if name in ("sed-cgp", "sed-protobin") else {}
    probe = make_probe(name, num_layers=2, embed_dim=4, num_classes=2, seed=0, **hp)
    cfg = TrainConfig(steps=3, batch_size=4, eval_every=3, seed=2)
    res = fit(probe, data, val_data=data, config=cfg, progress=False)
    assert res.val_metrics.primary_name == "event_onset_200ms_fms"
    assert predict(res.probe, data).shape == (6, 20, 2)
    again = fit(make_probe(name, num_layers=2, embed_dim=4, num_classes=2, seed=0, **hp), data, config=cfg,
                progress=False)  # deterministic under a seed
    for (k, a), b in zip(res.probe.state_dict().items(), again.probe.state_dict().values()):
        assert torch.equal(a, b), k


# ---- end to end on the FSDD event task ---------------------------------------------------------------------
def _builder():
    """tests/datasets/fsdd_events.py, loaded by path: a site-packages `tests` package (dcase_util's, installed
    with sed_eval) shadows this repository's `tests` namespace package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fsdd_events", Path(__file__).parents[1] / "datasets" / "fsdd_events.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fsdd_events", mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod.build_fsdd_events


@pytest.fixture(scope="module")
def task(tmp_path_factory, fsdd_root):
    build_fsdd_events = _builder()
    root = tmp_path_factory.mktemp("fsdd_events")
    paths = build_fsdd_events(root / "data", fsdd_root, digits=("0", "6"), clips={"train": 40, "valid": 4, "test": 12})
    return {**paths, "cache": root / "cache", "root": root}


def _cli(capsys, *args):
    from probekit.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr()


def _record(results: Path, probe: str) -> dict:
    (path,) = [p for p in results.rglob(f"{probe}--*.json")]
    return json.loads(path.read_text())


EVENT_KEYS = {"event_onset_200ms_fms", "segment_1s_f1", "segment_1s_er", "mAP_micro", "f1_micro"}


def test_every_frame_head_trains_from_python_with_event_metrics(task, tmp_path):
    import probekit

    res = probekit.evaluate("bat-tiny-fsdd", datasets=[f"events:{task['events']}"], probes=list(FRAME_HEADS),
                            hparams={"sed-cgp": {"prototypes": 32, "psds": False},
                                     "sed-protobin": {"prototypes": 32, "psds": False},
                                     "sed-lcgp": {"psds": False}, "sed-h2t": {"psds": False}},  # sed-linear: PSDS
                            train_overrides={"steps": 20, "batch_size": 8}, cache_dir=task["cache"],
                            results_dir=tmp_path / "r", device="cpu", progress=False)
    assert [r.probe for r in res.records] == list(FRAME_HEADS)
    for r in res.records:
        assert r.metric == "event_onset_200ms_fms" and EVENT_KEYS <= set(r.seeds[0].metrics), r.probe
        assert r.seeds[0].extras["postprocessing"] == {"threshold": 0.3, "median_filter": 3}
        assert len(r.seeds[0].per_class["f1"]) == 2
        assert ("psds1" in r.seeds[0].metrics) == (r.probe == "sed-linear"), r.probe  # PSDS on test, 2 classes
    from probekit.results.leaderboard import leaderboard

    df = leaderboard(res.records)
    assert {c[1] for c in df.columns if c[1]} == set(FRAME_HEADS)
    assert set(df.attrs["metric"].values()) == {"event_onset_200ms_fms"}


@pytest.mark.parametrize("name", FRAME_HEADS)
def test_every_frame_head_trains_from_the_cli_on_the_hear_layout(task, tmp_path, capsys, name):
    extra = ["--set", "prototypes=32"] if name in ("sed-cgp", "sed-protobin") else []
    extra += ["--set", "psds=false"]  # PSDS (50 psds_eval operating points) is checked in the Python run
    rc, out = _cli(capsys, "probe", name, "-b", "bat-tiny-fsdd", "-d", f"hear:{task['hear']}", "--set", "steps=10",
                   "--set", "batch_size=8", *extra, "--cache-dir", task["cache"], "--results-dir", tmp_path / "r",
                   "--device", "cpu", "--yes", "--no-progress")
    assert rc == 0, out.err
    assert "event_onset_200ms_fms" in out.out
    rec = _record(tmp_path / "r", name)
    assert rec["metric"] == "event_onset_200ms_fms" and EVENT_KEYS <= set(rec["seeds"][0]["metrics"])


def test_online_tokens_give_the_same_frame_targets_as_the_cache(task, tmp_path):
    from probekit.api import prepare

    kw = dict(cache_dir=task["cache"], device="cpu")
    cached = prepare("bat-tiny-fsdd", f"events:{task['events']}", "test", confirm=lambda m: True, **kw).tokens
    live = prepare("bat-tiny-fsdd", f"events:{task['events']}", "test", online=True, **kw).tokens
    assert isinstance(cached, FrameTokens) and isinstance(live, FrameTokens)
    assert np.array_equal(cached.labels, live.labels) and cached.event_task.row_s == live.event_task.row_s
    (b,) = list(live.batches(TokenRequest(layers="last", patch=True, cls=False), 64))
    assert b.labels.shape == (12, *cached.labels.shape[1:]) and b.grid == cached.grid


def test_clip_level_probe_on_an_event_task_is_one_line_naming_the_frame_heads(task, tmp_path, capsys):
    rc, out = _cli(capsys, "probe", "linear", "-b", "bat-tiny-fsdd", "-d", f"events:{task['events']}",
                   "--cache-dir", tmp_path / "c", "--results-dir", tmp_path / "r", "--device", "cpu", "--yes")
    assert rc == 2 and "event (timestamp) task" in out.err and "sed-linear" in out.err
    assert "Traceback" not in out.err and not (tmp_path / "c").exists()  # refused before any extraction


def test_trained_linear_frame_head_detects_digits_far_better_than_untrained(task):
    from probekit.api import token_data

    kw = dict(cache_dir=task["cache"], device="cpu", confirm=lambda m: True)
    train = token_data("bat-tiny-fsdd", f"events:{task['events']}", "train", **kw)
    test = token_data("bat-tiny-fsdd", f"events:{task['events']}", "test", **kw)

    def score(probe):
        return test.event_task.evaluate(predict(probe, test), None, probe).primary

    untrained = make_probe("sed-linear", num_layers=train.num_layers, embed_dim=train.embed_dim,
                           num_classes=train.num_classes, seed=0)
    before = score(untrained)
    res = fit(untrained, train, config=TrainConfig(lr=1e-2, steps=600, batch_size=16, seed=0), progress=False)
    after = score(res.probe)
    assert after >= 40.0 and after >= before + 20.0, (before, after)

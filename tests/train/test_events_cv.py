"""Event tasks: validation selection on frame mAP_micro (official trainer), cross-validation over folds with
frame targets (ConcatTokens, HEAR k-fold event tasks), and the user-facing FSDD event task builder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from probekit.datasets.events import Event, build_fsdd_events
from probekit.probes import make_probe
from probekit.tokens import InMemoryTokens, TokenRequest
from probekit.train.data import ConcatTokens
from probekit.train.events import SELECTION_METRIC, FrameTokens
from probekit.train.fit import TrainConfig, fit
from probekit.train.protocols import run_protocol

pytest.importorskip("sed_eval")
pytest.importorskip("psds_eval")


def _toy(n, rows=20, seed=0, folds=None):
    g = torch.Generator().manual_seed(seed)
    events = [(Event(0, 0.3 + 0.16 * (i % 3), 0.9 + 0.16 * (i % 3)), Event(1, 1.5, 2.2)) for i in range(n)]
    patch = torch.randn(n, 2, rows * 2, 4, generator=g)
    for i, evs in enumerate(events):  # a learnable cue: class c's rows carry +2 on channel c
        for e in evs:
            a, b = int(np.ceil(e.onset / 0.16)), int(e.offset / 0.16)
            patch[i, :, 2 * a:2 * (b + 1), e.label] += 2.0
    base = InMemoryTokens(patch, None, np.zeros((n, 2), np.float32), num_classes=2, multilabel=True,
                          grid=(rows, 2), folds=folds)
    return FrameTokens(base, events, 0.16, classes=("a", "b"), durations=[rows * 0.16] * n)


def test_validation_selects_the_step_with_the_best_frame_map_micro():
    data = _toy(8)
    probe = make_probe("sed-linear", num_layers=2, embed_dim=4, num_classes=2, seed=0)
    res = fit(probe, data, val_data=data, config=TrainConfig(steps=12, batch_size=4, eval_every=1, lr=3e-2,
                                                             selection="best_val", seed=0), progress=False)
    vals = [(h["step"], h["val"]) for h in res.history if "val" in h]
    assert {h["val_metric"] for h in res.history if "val" in h} == {SELECTION_METRIC}
    best = max(v for _, v in vals)
    assert res.best_step == max(s for s, v in vals if v == best)  # ">=": the later of equal scores, as official
    assert res.val_score == pytest.approx(res.val_metrics.metrics["mAP_micro"])
    assert res.val_metrics.primary_name == "event_onset_200ms_fms"  # the headline stays HEAR's event F1
    assert res.probe.report()["val_selection"] == f"frame {SELECTION_METRIC} (official)"


def test_concat_tokens_keep_frame_targets_and_scoring():
    a, b = _toy(4, seed=1), _toy(3, seed=2)
    both = ConcatTokens(a, b)
    assert both.labels.shape == (7, 20, 2) and len(both.event_task.events) == 7
    (batch,) = list(both.batches(TokenRequest(layers="all", patch=True, cls=False), 16, indices=[5, 0, 6]))
    assert batch.grid == (20, 2) and torch.equal(batch.labels, torch.from_numpy(both.labels[[5, 0, 6]]))
    res = fit(make_probe("sed-linear", num_layers=2, embed_dim=4, num_classes=2), both,
              config=TrainConfig(steps=2, batch_size=4), progress=False)  # was "needs frame targets"
    assert res.steps_run == 2
    with pytest.raises(Exception, match="cannot join"):
        ConcatTokens(a, _toy(3, rows=10))


def test_cross_validation_over_event_folds():
    folds = np.array([1, 1, 1, 2, 2, 2, 3, 3, 3])
    data = _toy(9, folds=folds)
    kw = dict(protocol="events-cv", train_overrides={"steps": 3, "batch_size": 4, "warmup_steps": 0}, progress=False,
              hparams={"psds": False})  # PSDS on test: tests/train/test_events.py (5 s per fold here)
    res = run_protocol("sed-linear", data, **kw)
    assert [m.fold for m in res.fold_metrics] == [1, 2, 3] and res.selection == "cv"
    assert res.metrics.primary_name == "event_onset_200ms_fms" and len(res.metrics.folds) == 3
    assert "mAP_micro" in res.fold_metrics[0].metrics and "psds1" not in res.fold_metrics[0].metrics
    # train + test joined (ConcatTokens) as for a dataset whose folds span both splits
    res2 = run_protocol("sed-linear", _toy(6, folds=folds[:6]), _toy(3, seed=3, folds=folds[6:]), **kw)
    assert [m.fold for m in res2.fold_metrics] == [1, 2, 3]


def test_user_facing_builder_runs_on_the_shipped_fsdd_subset(tmp_path):
    from probekit.datasets import get_dataset

    kw = dict(clips={"train": 3, "valid": 1, "test": 2}, digits=("0", "6"), seed=4)
    paths, again = build_fsdd_events(tmp_path / "a", **kw), build_fsdd_events(tmp_path / "b", **kw)
    assert paths["events"].read_text() == again["events"].read_text()  # deterministic
    csv_ds, hear_ds = get_dataset(f"events:{paths['events']}"), get_dataset(f"hear:{paths['hear']}")
    assert csv_ds.spec.classes == hear_ds.spec.classes == ("0", "6")
    ev_csv = {c.path.name: [(e.label, e.onset, e.offset) for e in c.events] for c in csv_ds.events("test")}
    ev_hear = {c.path.name: [(e.label, round(e.onset, 4), round(e.offset, 4)) for e in c.events]
               for c in hear_ds.events("test")}
    assert ev_csv == ev_hear and all(ev_csv.values())


def _kfold(hear, root, nfolds=3):
    """The builder's HEAR trainvaltest folder rewritten as a HEAR k-fold task (fold00..fold02)."""
    root = shutil.copytree(hear, root)
    meta = json.loads((root / "task_metadata.json").read_text())
    meta.update(split_mode="new_split_kfold", nfolds=nfolds)
    (root / "task_metadata.json").write_text(json.dumps(meta))
    for k, split in enumerate(("train", "valid", "test")):
        (root / f"{split}.json").rename(root / f"fold{k:02d}.json")
        (root / "16000" / split).rename(root / "16000" / f"fold{k:02d}")
    return root


def test_hear_kfold_event_task_cross_validates_end_to_end(tmp_path):
    import probekit
    from probekit.datasets import get_dataset

    paths = build_fsdd_events(tmp_path / "d", clips={"train": 3, "valid": 3, "test": 3}, digits=("0", "6"))
    root = _kfold(paths["hear"], tmp_path / "kfold")
    ds = get_dataset(f"hear:{root}")
    assert ds.spec.splits == ("all", "train", "valid", "test") and ds.spec.folds == 3
    assert sorted(c.fold for c in ds.clips("all")) == [1] * 3 + [2] * 3 + [3] * 3
    assert [c.id for c in ds.events("test")] == [c.id for c in ds.events("all") if c.fold == 1]
    res = probekit.evaluate("bat-tiny-fsdd", datasets=[f"hear:{root}"], probes=["sed-linear"], protocol="events-cv",
                            hparams={"sed-linear": {"psds": False}},
                            train_overrides={"steps": 4, "batch_size": 4, "warmup_steps": 0},
                            cache_dir=tmp_path / "c", results_dir=tmp_path / "r", device="cpu", progress=False)
    (rec,) = res.records
    assert rec.metric == "event_onset_200ms_fms" and "mAP_micro" in rec.seeds[0].metrics
    assert rec.protocol == "events-cv" and rec.split == "all"  # every fold tested once

"""Named protocols (REFERENCE.md section 4) and run_protocol: selection never touches the test split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probekit.errors import ConfigError
from probekit.tokens import TokenRequest
from probekit.train import ConcatTokens, get_protocol, holdout_split, list_protocols, run_protocol


def test_presets_match_the_official_table():
    assert {"as20k", "as2m", "esc50", "sc2", "fsdd", "default", "unmute", "hsn", "fsdd-asr", "librispeech"} <= set(list_protocols())
    expect = {  # batch, steps, warmup, wd, loss, selection
        "as20k": (48, 20000, 500, 0.05, "asl", "last"),
        "as2m": (96, 200000, 2000, 0.05, "asl", "last"),
        "esc50": (48, 4000, 400, 0.2, "ce", "cv"),
        "sc2": (256, 10000, 1000, 0.05, "ce", "best_val"),
        "hsn": (64, 10000, 1000, 0.05, "bce", "last"),  # BAT configs/hsn/*_config.yaml
    }
    for name, (bs, steps, warm, wd, loss, sel) in expect.items():
        p = get_protocol(name)
        t = p.train
        assert (t.batch_size, t.steps, t.warmup_steps, t.weight_decay, t.loss, p.selection) == (
            bs,
            steps,
            warm,
            wd,
            loss,
            sel,
        )
        assert t.lr == 1e-3 and t.min_lr == 1e-6 and tuple(t.betas) == (0.9, 0.999)
    for name in ("as20k", "as2m"):  # BAT's ASL setting 1/0/0, averaged
        t = get_protocol(name).train
        assert (t.asl_gamma_neg, t.asl_gamma_pos, t.asl_clip, t.asl_reduction) == (1.0, 0.0, 0.0, "mean")
    assert get_protocol("sc2").train.eval_every == 500
    u = get_protocol("unmute").train
    assert (u.epochs, u.batch_size, u.loss) == (30, 128, "asl")
    with pytest.raises(ConfigError, match="did you mean 'esc50'"):
        get_protocol("esc5")


class SpyTokens:
    """Wraps TokenData and records every read."""

    def __init__(self, data):
        self.data, self.reads = data, 0
        for k in (
            "num_clips",
            "num_layers",
            "embed_dim",
            "grid",
            "num_classes",
            "multilabel",
            "labels",
            "folds",
        ):
            setattr(self, k, getattr(data, k))

    def batches(self, *a, **kw):
        self.reads += 1
        return self.data.batches(*a, **kw)


def test_best_val_holdout_never_touches_test(fsdd_train, fsdd_test):
    spy = SpyTokens(fsdd_test)
    reads_during_training = []
    res = run_protocol(
        "linear",
        fsdd_train,
        spy,
        protocol="fsdd",
        seed=1,
        progress=False,
        train_overrides={"steps": 60, "eval_every": 20, "lr": 1e-2},
        on_eval=lambda step, v: reads_during_training.append(spy.reads),
    )
    assert reads_during_training == [0, 0, 0] and spy.reads == 1
    assert res.val_source == "holdout" and res.val_fraction == 0.1 and res.selection == "best_val"
    assert res.metrics["primary"] == "accuracy" and res.metrics["num_examples"] == fsdd_test.num_clips
    assert res.primary > 20 and res.scores.shape == (fsdd_test.num_clips, 10)
    assert res.hparams == res.probe.hparams and res.fits[0].best_step in (20, 40, 60)


def test_holdout_split_is_stratified_and_disjoint(fsdd_train):
    tr, va = holdout_split(fsdd_train.labels, multilabel=False, fraction=0.1, seed=0)
    assert len(va) == 60 and len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == fsdd_train.num_clips
    assert np.bincount(fsdd_train.labels[va], minlength=10).tolist() == [6] * 10


def test_official_validation_split(fsdd_train, fsdd_test):
    res = run_protocol(
        "linear",
        fsdd_train,
        None,
        protocol="sc2",
        val=fsdd_test,
        progress=False,
        train_overrides={"steps": 20, "eval_every": 10, "batch_size": 32},
    )
    assert res.val_source == "official" and res.metrics is None and res.fits[0].val_score is not None


def test_cross_validation_over_joined_folds(fsdd_train, fsdd_test):
    res = run_protocol(
        "linear",
        fsdd_train,
        fsdd_test,
        protocol="esc50",
        progress=False,
        train_overrides={"steps": 30, "batch_size": 32, "lr": 1e-2},
    )
    assert res.selection == "cv" and len(res.fold_metrics) == 5 and len(res.fits) == 5
    accs = [m["accuracy"] for m in res.fold_metrics]
    assert res.metrics["accuracy"] == pytest.approx(np.mean(accs))
    assert res.metrics["std"]["accuracy"] == pytest.approx(np.std(accs))
    assert (
        res.metrics["folds"] == accs
        and res.metrics["num_examples"] == fsdd_train.num_clips + fsdd_test.num_clips
    )
    with pytest.raises(ConfigError, match="folds"):
        nofold = SpyTokens(fsdd_train)
        nofold.folds = None
        run_protocol("linear", nofold, None, protocol="esc50", progress=False, train_overrides={"steps": 1})


def test_concat_tokens_reads_each_part(fsdd_train, fsdd_test):
    both = ConcatTokens(fsdd_train, fsdd_test)
    assert both.num_clips == fsdd_train.num_clips + fsdd_test.num_clips
    req = TokenRequest(layers="all", patch=True, cls=True)
    idx = np.array([3, fsdd_train.num_clips + 7, 0, fsdd_train.num_clips])
    (b,) = list(both.batches(req, 4, indices=idx))
    assert torch.equal(b.patch[0], fsdd_train.patch[3]) and torch.equal(b.patch[1], fsdd_test.patch[7])
    assert torch.equal(b.cls[3], fsdd_test.cls[0]) and b.labels.tolist() == both.labels[idx].tolist()


def test_layer_sweep_gives_one_score_per_block(fsdd_train, fsdd_test):
    res = run_protocol(
        "layers",
        fsdd_train,
        fsdd_test,
        protocol="default",
        progress=False,
        train_overrides={"epochs": 2, "batch_size": 32, "lr": 1e-2},
    )
    heads = res.metrics.heads
    assert list(heads) == [f"block{i + 1}" for i in range(fsdd_train.num_layers)]
    assert res.scores.shape == (fsdd_test.num_clips, fsdd_train.num_layers, 10)
    # the reported block was chosen on held-out training clips, and its test score is the one reported
    assert res.val_source == "holdout" and "holdout" in res.metrics.head_selection
    chosen = res.metrics.selected_head
    val = res.fits[0].val_metrics.head_primaries()
    assert chosen == max(val, key=val.get)
    assert res.primary == heads[chosen].primary

"""The training loop: official schedule, selection, callbacks, resume equality, config checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probekit.errors import ConfigError, ProbeError
from probekit.probes import make_probe
from probekit.train import TrainConfig, fit, lr_at, predict
from probekit.train.fit import CHECKPOINT_NAME, evaluate_scores


class OfficialRiseRunDecay(torch.optim.lr_scheduler.LRScheduler):
    """BAT engine/optim.py's scheduler (constant_steps=0, lr_scale 1), re-derived for the comparison."""

    def __init__(self, opt, warmup, total, min_lr):
        self.warmup, self.total, self.min_lr = warmup, total, min_lr
        super().__init__(opt)

    def get_lr(self):
        it = self.last_epoch
        if it <= self.warmup and self.warmup > 0:
            f = it / self.warmup
        elif it <= self.warmup:
            f = 1.0
        else:
            d = self.total - self.warmup
            f = 0.0 if d == 0 else 0.5 * (1 + math.cos(math.pi * (it - self.warmup) / d))
        return [max(self.min_lr, lr * f) for lr in self.base_lrs]


@pytest.mark.parametrize("warmup,total", [(500, 4000), (0, 50), (10, 10), (3, 17)])
def test_schedule_matches_official_scheduler(warmup, total):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched = OfficialRiseRunDecay(opt, warmup, total, 1e-6)
    for step in range(total):
        official = opt.param_groups[0]["lr"]  # the lr optimizer.step() uses at this step
        ours = lr_at(step, base_lr=1e-3, warmup_steps=warmup, total_steps=total, min_lr=1e-6)
        assert ours == pytest.approx(official, rel=1e-12, abs=1e-15), step
        opt.step()
        sched.step()
    assert (
        lr_at(0, base_lr=1e-3, warmup_steps=5, total_steps=10, min_lr=1e-6) == 1e-6
    )  # first step: the floor
    assert lr_at(5, base_lr=1e-3, warmup_steps=5, total_steps=10, min_lr=1e-6) == 1e-3  # peak after warmup


def _probe(data, name="linear", seed=0, **hp):
    return make_probe(
        name,
        num_layers=data.num_layers,
        embed_dim=data.embed_dim,
        num_classes=data.num_classes,
        seed=seed,
        **hp,
    )


def test_history_and_schedule_in_fit(fsdd_train):
    cfg = TrainConfig(steps=30, batch_size=16, warmup_steps=5, log_every=10, lr=2e-3)
    res = fit(_probe(fsdd_train), fsdd_train, config=cfg, progress=False)
    assert [h["step"] for h in res.history] == [10, 20, 30]
    for h in res.history:  # the lr of the step that ended the interval
        assert h["lr"] == lr_at(h["step"] - 1, base_lr=2e-3, warmup_steps=5, total_steps=30, min_lr=1e-6)
    assert res.steps_run == 30 and res.val_score is None and res.seconds > 0


def test_epochs_define_steps():
    cfg = TrainConfig(epochs=2.5, batch_size=32, warmup_fraction=0.1)
    assert cfg.schedule(100) == (8, 1, 3)  # 3 full batches per epoch (ragged end dropped), ceil(7.5)
    assert TrainConfig(steps=50, batch_size=32, drop_last=False).schedule(100) == (50, 0, 4)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"lr": 0}, "lr"),
        ({"selection": "best"}, "selection"),
        ({"loss": "mse"}, "loss"),
        ({"steps": None}, "steps"),
        ({"warmup_fraction": 1.5}, "warmup_fraction"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_config_validation(change, match, fsdd_train):
    with pytest.raises(ConfigError, match=match):
        fit(_probe(fsdd_train), fsdd_train, config=TrainConfig().replace(**change), progress=False)


def test_unknown_option_and_mismatched_probe(fsdd_train, fsdd_multilabel):
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        TrainConfig().replace(batchsize=3)
    with pytest.raises(ProbeError, match="num_classes=10"):
        fit(_probe(fsdd_train), fsdd_multilabel, config=TrainConfig(steps=1), progress=False)
    with pytest.raises(ConfigError, match="best_val"):
        fit(_probe(fsdd_train), fsdd_train, config=TrainConfig(steps=1, selection="best_val"), progress=False)


def test_best_val_selection_and_on_eval(fsdd_train):
    idx = np.arange(fsdd_train.num_clips)
    tr, va = idx[idx % 5 != 0], idx[idx % 5 == 0]
    seen = []
    cfg = TrainConfig(steps=60, batch_size=32, lr=5e-2, eval_every=10, selection="best_val", weight_decay=0.0)
    res = fit(
        _probe(fsdd_train),
        fsdd_train,
        config=cfg,
        train_indices=tr,
        val_indices=va,
        on_eval=lambda s, v: seen.append((s, v)),
        progress=False,
    )
    assert [s for s, _ in seen] == [10, 20, 30, 40, 50, 60]
    vals = [v for _, v in seen]
    best = max(vals)
    assert res.val_score == best
    assert res.best_step == max(s for s, v in seen if v == best)  # ties: the later step wins, as official
    # the returned probe holds the best step's weights: re-evaluating it gives the recorded score
    m = evaluate_scores(predict(res.probe, fsdd_train, va), fsdd_train.labels[va], False)
    assert m["accuracy"] == pytest.approx(best, abs=1e-9)


def test_on_eval_exception_propagates(fsdd_train):
    class Pruned(Exception):
        pass

    def prune(step, value):
        raise Pruned(step)

    cfg = TrainConfig(steps=20, batch_size=16, eval_every=5)
    with pytest.raises(Pruned):
        fit(
            _probe(fsdd_train),
            fsdd_train,
            config=cfg,
            val_indices=np.arange(50),
            on_eval=prune,
            progress=False,
        )


@pytest.mark.parametrize("name", ["cgp", "linear"])
def test_resume_equals_uninterrupted(name, fsdd_train, tmp_path):
    hp = {"prototypes": 32} if name == "cgp" else {}
    idx = np.arange(fsdd_train.num_clips)
    tr, va = idx[idx % 6 != 0], idx[idx % 6 == 0]
    cfg = TrainConfig(
        steps=40,
        batch_size=32,
        eval_every=8,
        checkpoint_every=8,
        warmup_steps=4,
        lr=5e-3,
        selection="best_val",
        seed=3,
    )
    kw = {"config": cfg, "train_indices": tr, "val_indices": va, "progress": False}
    full = fit(_probe(fsdd_train, name, **hp), fsdd_train, **kw)

    class Crash(Exception):
        pass

    def crash_at_24(step, value):
        if step == 24:
            raise Crash

    with pytest.raises(Crash):
        fit(_probe(fsdd_train, name, **hp), fsdd_train, checkpoint_dir=tmp_path, on_eval=crash_at_24, **kw)
    assert (tmp_path / CHECKPOINT_NAME).exists() and not list(tmp_path.glob("*.tmp*"))
    resumed = fit(_probe(fsdd_train, name, seed=99, **hp), fsdd_train, checkpoint_dir=tmp_path, **kw)
    assert resumed.resumed_from == 24
    for (k, a), b in zip(full.probe.state_dict().items(), resumed.probe.state_dict().values()):
        assert torch.equal(a, b), k
    assert full.history == resumed.history and full.best_step == resumed.best_step
    # a different run must not silently reuse that checkpoint
    with pytest.raises(ConfigError, match="different run"):
        fit(
            _probe(fsdd_train, name, **hp),
            fsdd_train,
            checkpoint_dir=tmp_path,
            **{**kw, "config": cfg.replace(lr=1e-3)},
        )


def test_progress_bar_runs(fsdd_train, capsys):
    res = fit(
        _probe(fsdd_train), fsdd_train, config=TrainConfig(steps=4, batch_size=8, log_every=2), progress=True
    )
    assert res.steps_run == 4


def test_eval_result_is_typed_and_reads_as_the_old_dict():
    rng = np.random.default_rng(0)
    scores = rng.random((40, 3, 4))
    labels = np.arange(40) % 4
    m = evaluate_scores(scores, labels, False, ["block1", "block2", "block3"])
    assert m.primary_name == "accuracy" and list(m.heads) == ["block1", "block2", "block3"]
    assert m.primary == m.heads["block3"].primary == m["accuracy"]  # no head chosen: the last on top
    chosen = m.select_head("block1", "validation: test")
    assert chosen.primary == m.heads["block1"].primary and chosen.heads is m.heads
    assert chosen["primary"] == "accuracy" and chosen["num_examples"] == 40 and "per_class" in chosen
    from probekit.train.metrics import EvalResult

    assert EvalResult.from_state_dict(chosen.state_dict()) == chosen  # checkpoints hold plain containers


def test_fit_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    from probekit.train.fit import _FitState
    from probekit.train.metrics import EvalResult

    st = _FitState(step=7, epoch=1, pos=2, history=[{"step": 5, "loss": 1.0, "lr": 1e-3}], best_score=50.0,
                   best_step=5, best_state={"w": torch.ones(2)},
                   best_metrics=EvalResult("accuracy", {"accuracy": 50.0}, num_examples=4), loss_sum=0.5,
                   loss_count=2, seconds=1.5)
    torch.save(st.state_dict(), tmp_path / "s.pt")
    back = _FitState()
    back.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert back.best_metrics == st.best_metrics and torch.equal(back.best_state["w"], torch.ones(2))
    assert (back.step, back.epoch, back.pos, back.history, back.seconds) == (7, 1, 2, st.history, 1.5)

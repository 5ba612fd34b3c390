"""tune(): sampler sequence, pruning, the test split kept out of the search, resume, seeds and summary."""

from __future__ import annotations

import math
import time

import numpy as np
import optuna
import pytest
from scipy.stats import qmc

from probekit.errors import ConfigError
from probekit.probes.space import TRAIN_SPACE
from probekit.train import holdout_split
from probekit.tune import confidence_interval, optimize_study, summarize_study, tune
from probekit.tune.runner import count_trials
from probekit.tune.storage import open_storage

FAST = {"steps": 60, "eval_every": 10, "warmup_steps": 6, "batch_size": 32}


class RecordingTokens:
    """TokenData that records every batches() call's clip positions (to prove what was read when)."""

    def __init__(self, inner):
        self._inner = inner
        self.calls: list[np.ndarray] = []
        for k in ("num_clips", "num_layers", "embed_dim", "grid", "num_classes", "multilabel", "labels", "folds"):
            setattr(self, k, getattr(inner, k))

    def batches(self, request, batch_size, *, indices=None, shuffle=False, seed=0, drop_last=False):
        idx = np.arange(self.num_clips) if indices is None else np.asarray(indices)
        self.calls.append(idx.copy())
        return self._inner.batches(request, batch_size, indices=indices, shuffle=shuffle, seed=seed, drop_last=drop_last)


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_first_n_startup_trials_are_sobol_points_then_tpe(tmp_path):
    """The first n_startup configurations are the scrambled Sobol sequence itself; later ones come from TPE."""
    url = f"sqlite:///{tmp_path / 's.db'}"

    def objective(trial, params, report):  # a smooth bowl around lr=1e-3, wd=1e-2
        return -(math.log10(params["lr"]) + 3) ** 2 - (math.log10(params["weight_decay"]) + 2) ** 2

    study = optimize_study(objective, TRAIN_SPACE, study_name="s", storage=url, n_trials=12, n_startup=8, pruner="none", seed=3, progress=False)
    trials = study.trials
    assert [t.system_attrs["probekit:sampler"] for t in trials] == ["qmc"] * 8 + ["tpe"] * 4
    # independent re-derivation: Sobol(d=2, scrambled, seed) mapped to log-uniform ranges, dims in space order
    u = qmc.Sobol(2, scramble=True, seed=3).random(12)
    lo = np.log([TRAIN_SPACE["lr"].low, TRAIN_SPACE["weight_decay"].low])
    hi = np.log([TRAIN_SPACE["lr"].high, TRAIN_SPACE["weight_decay"].high])
    expected = np.exp(lo + u * (hi - lo))
    got = np.array([[t.params["lr"], t.params["weight_decay"]] for t in trials])
    np.testing.assert_allclose(got[:8], expected[:8], rtol=1e-6)
    assert not np.allclose(got[8:], expected[8:], rtol=1e-3)  # TPE, not the Sobol continuation
    # TPE exploits: its proposals are closer to the optimum than the quasi-random ones on average
    dist = np.hypot(np.log10(got[:, 0]) + 3, np.log10(got[:, 1]) + 2)
    assert dist[8:].mean() < dist[:8].mean()


def test_pruning_stops_bad_trials_early_on_real_probes(fsdd_train, tmp_path):
    common = dict(protocol="fsdd", n_trials=8, n_startup=4, seeds=0, train_overrides=FAST, progress=False, only=("lr", "weight_decay"))
    pruned = tune("linear", fsdd_train, pruner="sha", storage=f"sqlite:///{tmp_path / 'a.db'}", **common)
    assert pruned.trials["pruned"] >= 1
    assert pruned.trials["complete"] + pruned.trials["pruned"] + pruned.trials["failed"] == 8
    assert all(s <= 60 for s in pruned.steps_per_trial.values())
    assert pruned.total_steps == sum(pruned.steps_per_trial.values()) < 8 * 60
    study = optuna.load_study(study_name=pruned.study_name, storage=open_storage(pruned.storage))
    for t in study.get_trials(states=(optuna.trial.TrialState.PRUNED,)):
        assert t.user_attrs["steps"] < 60 and max(t.intermediate_values) == t.user_attrs["steps"]

    unpruned = tune("linear", fsdd_train, pruner="none", storage=f"sqlite:///{tmp_path / 'b.db'}", **common)
    assert unpruned.trials == {"complete": 8, "pruned": 0, "failed": 0, "requeued": 0}
    assert unpruned.total_steps == 8 * 60
    # same sampler seed: the same Sobol start in both studies
    assert pruned.search_space == unpruned.search_space


def test_search_never_reads_test_and_validates_on_held_out_clips(fsdd_train, fsdd_test, tmp_path):
    train, test = RecordingTokens(fsdd_train), RecordingTokens(fsdd_test)
    url = f"sqlite:///{tmp_path / 't.db'}"
    kw = dict(protocol="fsdd", n_trials=4, n_startup=2, pruner="none", train_overrides=FAST, progress=False, storage=url, study_name="t")
    res = tune("linear", train, test=test, seeds=0, **kw)
    assert test.calls == []  # the search never touched the test split
    assert "held out" in res.validation
    # every read of train is all fit clips or all held-out validation clips (10%, stratified, seed 0)
    fit_idx, val_idx = holdout_split(fsdd_train.labels, multilabel=False, fraction=0.1, seed=0)
    assert any(np.array_equal(c, val_idx) for c in train.calls)
    fit_reads = [c for c in train.calls if not np.array_equal(c, val_idx)]
    assert fit_reads and all(np.isin(c, fit_idx).all() for c in fit_reads)
    assert set(np.unique(fsdd_train.labels[val_idx])) == set(range(10))  # stratified: every class validated

    # the retrain (same study, now with seeds) is what reads test, once per seed
    res = tune("linear", train, test=test, seeds=2, **kw)
    assert len(test.calls) == 2 and all(len(c) == test.num_clips for c in test.calls)
    assert [s.seed for s in res.seeds] == [0, 1]
    assert res.mean == pytest.approx(np.mean([s.score for s in res.seeds]))
    assert res.trials["complete"] == 4  # resumed study: no extra trials were run
    # seeds already retrained are kept in the study and not run again
    again = tune("linear", train, test=test, seeds=2, **kw)
    assert len(test.calls) == 2 and [s.score for s in again.seeds] == [s.score for s in res.seeds]


def test_official_validation_split_is_used_when_given(fsdd_train, fsdd_test, tmp_path):
    val = RecordingTokens(fsdd_test)
    res = tune("linear", fsdd_train, val=val, protocol="fsdd", n_trials=2, n_startup=2, pruner="none", seeds=0,
               train_overrides=FAST, progress=False, storage=f"sqlite:///{tmp_path / 'v.db'}")
    assert res.validation == "official validation split"
    assert val.calls and all(len(c) == val.num_clips for c in val.calls)


def test_resume_extends_and_refuses_a_different_setup(fsdd_train, tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    kw = dict(protocol="fsdd", n_startup=2, pruner="none", seeds=0, train_overrides=FAST, progress=False, storage=url, study_name="r", only=("lr",))
    tune("linear", fsdd_train, n_trials=2, **kw)
    res = tune("linear", fsdd_train, n_trials=3, **kw)
    assert res.trials["complete"] == 3 and len(res.steps_per_trial) == 3
    with pytest.raises(ConfigError, match="was made with search space lr=.*, this run uses lr=.*weight_decay="):
        tune("linear", fsdd_train, n_trials=3, **{**kw, "only": ("lr", "weight_decay")})
    with pytest.raises(ConfigError, match="was made with probe linear, this run uses mlp"):
        tune("mlp", fsdd_train, n_trials=3, **{**kw, "only": ("lr",)})


def test_summary_and_space_overrides(fsdd_train, fsdd_test, tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    res = tune("linear", fsdd_train, test=fsdd_test, protocol="fsdd", n_trials=3, n_startup=3, pruner="none", seeds=2,
               space={"lr": "1e-3:5e-3:log", "dropout": "0.1"}, train_overrides=FAST, progress=False, storage=url, study_name="o")
    assert res.search_space["lr"] == {"type": "float", "low": 1e-3, "high": 5e-3, "log": True}
    assert res.search_space["dropout"] == {"type": "choice", "choices": [0.1]}
    assert all(1e-3 <= res.best_params["lr"] <= 5e-3 for _ in [0]) and res.best_params["dropout"] == 0.1
    s = summarize_study(url, "o")
    assert s["best_params"] == res.best_params and s["counts"]["complete"] == 3
    assert s["attrs"]["probekit:final"]["mean"] == pytest.approx(res.mean)
    with pytest.raises(ConfigError, match="no study 'x'"):
        summarize_study(url, "x")
    with pytest.raises(ConfigError, match="not a hyperparameter"):
        tune("linear", fsdd_train, space={"prototypes": "1:2"}, progress=False, storage=url)


def test_confidence_interval_is_students_t():
    lo, hi = confidence_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(n)
    assert (lo, hi) == pytest.approx((2 - half, 2 + half))
    assert confidence_interval([5.0]) is None


def test_counts_ignore_requeued_trials(tmp_path):
    """A trial re-queued after a crash is neither a result nor a failure."""
    from probekit.tune.storage import requeue

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'c.db'}"))
    t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(t, state=optuna.trial.TrialState.FAIL)
    requeue(study, study.trials[0])
    c = count_trials(study.trials)
    assert (c.failed, c.requeued, c.waiting, c.results) == (0, 1, 1, 0)
    assert study.trials[1].params == study.trials[0].params


def test_trial_of_a_silent_worker_on_another_host_is_requeued(tmp_path):
    """Heartbeat path: a RUNNING trial whose worker ran elsewhere and stopped beating is failed and re-queued."""
    from probekit.tune.storage import RETRY_REASON_ATTR, WORKER_ATTR, reap_dead_workers

    storage = open_storage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage)
    t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.set_trial_system_attr(t._trial_id, WORKER_ATTR, {"host": "another-machine", "pid": 1, "start": None})
    storage.record_heartbeat(t._trial_id)
    reap_dead_workers(study)
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING  # still beating recently: alive
    time.sleep(2.5)
    reap_dead_workers(study)
    first, retry = study.trials
    assert first.state == optuna.trial.TrialState.FAIL and retry.state == optuna.trial.TrialState.WAITING
    assert retry.params == first.params and "no heartbeat" in retry.system_attrs[RETRY_REASON_ATTR]

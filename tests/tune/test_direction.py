"""Tuning a lower-is-better metric (ASR WER): the study minimises, prunes and retrains by the lowest WER.

Real FSDD tokens read as a tiny ASR task (the digit's word as transcript, tests/probes/test_asr.py); the
`fsdd-asr` protocol's metric is WER (probekit.train.metrics.LOWER_IS_BETTER).
"""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from probekit.datasets.transcripts import CHARS, transcript_targets
from probekit.errors import ConfigError
from probekit.tokens import InMemoryTokens

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _asr(data: InMemoryTokens, n: int | None = None) -> InMemoryTokens:
    idx = np.arange(data.num_clips) if n is None else np.random.default_rng(0).permutation(data.num_clips)[:n]
    clips = [type("C", (), {"transcript": WORDS[int(data.labels[i])], "id": str(i), "path": "-"})() for i in idx]
    return InMemoryTokens(data.patch[idx], data.cls[idx], transcript_targets(clips), num_classes=len(CHARS),
                          multilabel=False, grid=data.grid, valid_rows=np.asarray(data.valid_rows)[idx])


@pytest.fixture(scope="module")
def asr_sets(fsdd_train, fsdd_test):
    return _asr(fsdd_train, 40), _asr(fsdd_test, 12)


def test_asr_study_minimises_wer_and_retrains_the_lowest_validation_trial(asr_sets, tmp_path):
    import hashlib
    import json

    from probekit.tune import TuneOptions, tune
    from probekit.tune.plan import plan_tuning, tuning_plan_lines
    from probekit.tune.study import SEED_ATTR, retrain_best

    train, test = asr_sets
    opts = dict(n_trials=2, n_startup=2, pruner="none", seeds=0, progress=False)
    fixed = dict(hparams={"hidden": 8, "lstm_layers": 1, "layer_norm": True},
                 train_overrides={"steps": 4, "batch_size": 20, "warmup_steps": 1})
    space = {"lr": "1e-4:3e-2:log"}
    plan = plan_tuning("asr", train, protocol="fsdd-asr", space=space, **fixed, options=TuneOptions(**opts))
    assert plan.metric == "WER" and plan.direction == "minimize" and plan.key["direction"] == "minimize WER"
    text = "\n".join(tuning_plan_lines("asr", plan.options, clips={"train": train.num_clips}, plan=plan))
    assert "objective: minimize validation WER (lower is better)" in text
    storage = f"sqlite:///{tmp_path / 's.db'}"
    res = tune("asr", train, test=test, protocol="fsdd-asr", space=space, storage=storage, study_name="asr-dir",
               **fixed, **opts)
    study = optuna.load_study(study_name="asr-dir", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE and res.metric == "WER"
    ran = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(ran) == 2 and all(0.0 <= t.value <= 200.0 for t in ran)  # validation WERs in percent
    # two more validated configurations: a good one (low WER) and a bad one; the retrain must take the low one
    dist, base = study.trials[0].distributions, dict(study.trials[0].params)
    for lr, wer in ((2e-3, 12.5), (3e-4, 99.0)):
        study.add_trial(optuna.trial.create_trial(params={**base, "lr": lr}, distributions=dist, value=wer))
    good = {**base, "lr": 2e-3}
    assert study.best_trial.params == good
    plan = plan_tuning("asr", train, protocol="fsdd-asr", space=space, **fixed,
                       options=TuneOptions(**{**opts, "seeds": 1}))
    (seed,) = retrain_best(plan, study, test)
    key = hashlib.sha256(json.dumps(good, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert f"{SEED_ATTR}{key}:0" in optuna.load_study(study_name="asr-dir", storage=storage).user_attrs
    assert set(seed.metrics) >= {"WER", "CER"} and seed.score == seed.metrics["WER"]
    # the same study resumed for a maximised metric (accuracy) is refused before any trial runs
    clf = InMemoryTokens(train.patch, train.cls, np.arange(train.num_clips) % 10, num_classes=10, multilabel=False,
                         grid=train.grid, valid_rows=train.valid_rows)
    with pytest.raises(ConfigError, match="minimizes its objective; this run would maximize"):
        tune("linear", clf, storage=storage, study_name="asr-dir", n_trials=5, n_startup=1, seeds=0, progress=False)


def test_successive_halving_prunes_the_high_values_of_a_minimised_study(tmp_path):
    """The pruner follows the study direction: of trials reporting a constant value, the low ones go on."""
    from probekit.probes.space import Float
    from probekit.tune.study import optimize_study

    vals = iter([5.0, 90.0, 1.0, 80.0, 70.0, 2.0, 95.0, 60.0])

    def objective(trial, params, report):
        v = next(vals)
        trial.set_user_attr("value", v)
        for step in (1, 2, 4, 8, 16):
            report(step, v)
        return v

    study = optimize_study(objective, {"x": Float(0.0, 1.0)}, study_name="dir", storage=f"sqlite:///{tmp_path / 'd.db'}",
                           n_trials=8, n_startup=8, pruner="sha", min_resource=1, max_resource=16, reduction_factor=2,
                           direction="minimize", progress=False)
    pruned = [t.user_attrs["value"] for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t.user_attrs["value"] for t in study.trials if t.state == TrialState.COMPLETE]
    assert pruned and min(pruned) > min(complete)
    assert 1.0 in complete and 5.0 in complete  # the best (lowest) never pruned
    assert study.best_value == 1.0


def test_held_out_validation_of_transcripts_is_a_random_split(asr_sets):
    from probekit.tune.plan import plan_tuning

    train, _ = asr_sets
    plan = plan_tuning("asr", train, protocol="fsdd-asr")  # stratifying 2-D transcripts failed before
    assert "random" in plan.validation and len(plan.val_idx) + len(plan.fit_idx) == train.num_clips

"""Training integrity: nothing is selected on the test split, and wrongly typed settings are refused.

Each test here fails on the commit before the `train` branch (see the comments).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probekit.errors import ConfigError, ProbeError
from probekit.probes import make_probe
from probekit.probes.space import Choice, Float
from probekit.tokens import InMemoryTokens
from probekit.train import TrainConfig, run_protocol

C, D = 4, 8


def _tokens(n: int, *, block0_informative: bool, block1_noise: float, seed: int, folds=None) -> InMemoryTokens:
    """3 blocks of cls tokens: block 0 carries the label cleanly (or is noise), block 1 carries it under
    `block1_noise`, block 2 is pure noise."""
    g = np.random.default_rng(seed)
    y = np.arange(n) % C
    centres = np.eye(C, D) * 4.0
    cls = g.normal(size=(n, 3, D)).astype(np.float32)
    if block0_informative:
        cls[:, 0] += centres[y]
    cls[:, 1] = centres[y] + block1_noise * g.normal(size=(n, D))
    return InMemoryTokens(None, torch.from_numpy(cls), y, num_classes=C, multilabel=False, grid=(1, 1),
                          folds=folds)


def test_layer_sweep_block_is_chosen_on_validation_not_test():
    # Train (and so its held-out part): block 1 (index 0) is clean, block 2 (index 1) is noisier.
    # Test: block 1 is pure noise and block 2 still informative. The test-argmax is block 2; a
    # validation choice must pick block 1 and report its (poor) test score. Base: `best_layer` was
    # the test argmax (1) and the reported accuracy max(curve).
    from probekit._evaluate import _seed_run

    train = _tokens(400, block0_informative=True, block1_noise=2.5, seed=0)
    test = _tokens(200, block0_informative=False, block1_noise=2.5, seed=1)
    res = run_protocol("layers", train, test, protocol="default", progress=False,
                       train_overrides={"epochs": None, "steps": 150, "batch_size": 32, "lr": 1e-2})
    curve = [h.primary for h in res.metrics.heads.values()]
    assert int(np.argmax(curve)) == 1  # the constructed case: test prefers block 2
    run, _ = _seed_run(res, "layers", 0)
    assert run.extras["best_layer"] == 0 and res.metrics.selected_head == "block1"
    assert run.metrics["accuracy"] == pytest.approx(curve[0]) and curve[0] < max(curve)
    assert run.extras["layer_scores"] == pytest.approx(curve) and run.extras["layer_scores_split"] == "test"
    assert "holdout" in run.extras["layer_selection"]


def test_layer_sweep_under_cv_chooses_per_fold_on_training_folds():
    # Cross-validation used the fold-mean test curve's argmax as `best_layer` (base). Now each fold
    # chooses its block on a held-out part of its training folds.
    from probekit._evaluate import _seed_run

    folds = np.repeat([1, 2], 150)
    data = _tokens(300, block0_informative=True, block1_noise=2.5, seed=2, folds=folds)
    res = run_protocol("layers", data, protocol="esc50", progress=False,
                       train_overrides={"steps": 60, "batch_size": 32, "lr": 1e-2, "warmup_steps": 0})
    run, _ = _seed_run(res, "layers", 0)
    assert "best_layer" not in run.extras and len(run.extras["best_layer_per_fold"]) == 2
    assert all(f.selected_head is not None for f in res.fold_metrics)
    assert run.metrics["accuracy"] == pytest.approx(np.mean([f.primary for f in res.fold_metrics]))


@pytest.mark.parametrize("key,value", [("lr", "abc"), ("batch_size", "32"), ("drop_last", "yes"),
                                       ("betas", "0.9"), ("amp", 1), ("steps", 2.5), ("eval_every", "x")])
def test_wrongly_typed_training_settings_are_refused_by_name(key, value):
    # redteam #92: `probe --set lr=abc` ended in "TypeError: '>' not supported between str and int";
    # drop_last="yes", amp=1 and betas="0.9" were taken silently.
    with pytest.raises(ConfigError, match=f"TrainConfig: {key}={value!r} must be"):
        TrainConfig().replace(**{key: value}).validate()


def test_wrongly_typed_setting_through_run_protocol(fsdd_train):
    with pytest.raises(ConfigError, match="lr='abc'"):
        run_protocol("linear", fsdd_train, protocol="default", train_overrides={"lr": "abc"}, progress=False)


@pytest.mark.parametrize("name,key,value", [("cgp", "use_cls", 1), ("linear", "layer_norm", 0)])
def test_wrongly_typed_probe_hyperparameter_is_refused_by_name(name, key, value):
    # base: 1 == True, so `1 in (True, False)` let an integer through as a switch
    with pytest.raises(ProbeError, match=f"{key}={value} must be one of True, False"):
        make_probe(name, num_layers=3, embed_dim=D, num_classes=C, **{key: value})


@pytest.mark.parametrize("space", [{"lr": Choice(("abc",))}, {"prototypes": Choice((2.5,))},
                                   {"use_cls": Choice(("yes", True))}, {"weight_decay": Float(-1.0, 0.1)}])
def test_search_space_with_refused_values_is_refused_before_a_study(space):
    # redteam #77: `tune --space lr=abc` ran trials into a TypeError; the checker now names the key first
    from probekit.probes import get_probe_class
    from probekit.train.fit import check_search_space

    with pytest.raises(ConfigError, match=f"search space {next(iter(space))}"):
        check_search_space(get_probe_class("cgp"), space)
    check_search_space(get_probe_class("cgp"), {**get_probe_class("cgp").search_space, "lr": Float(1e-5, 1e-2)})

"""Hostile inputs around the training samplers and random crops (probekit.train.sampling, probekit.cache.crop):
each test fails on the commit before them and passes after."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probekit.errors import ConfigError
from probekit.probes import make_probe
from probekit.tokens import InMemoryTokens


def _data(labels, multilabel: bool, num_classes: int = 3):
    n = len(labels)
    g = torch.Generator().manual_seed(0)
    return InMemoryTokens(None, torch.randn(n, 2, 8, generator=g), np.asarray(labels), num_classes=num_classes,
                          multilabel=multilabel, grid=(1, 1))


def test_cli_unknown_sampler_names_the_choices(fsdd_root, tmp_path, capsys):
    from probekit.cli import main

    code = main(["probe", "linear", "-b", "bat-tiny", "-d", "fsdd", "--data-root", str(fsdd_root.parent),
                 "--set", "sampler=balanced", "--cache-dir", str(tmp_path / "c"), "--device", "cpu", "--yes",
                 "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "sampler" in err and "class_balanced" in err and "label_weighted" in err


def test_sampler_on_sequence_labels_is_a_config_error():
    from probekit.train import TrainConfig, fit

    data = _data(np.zeros((6, 4, 3), np.float32), True)  # (clips, T, C): frame targets, no clip label
    probe = make_probe("linear", num_layers=2, embed_dim=8, num_classes=3)
    with pytest.raises(ConfigError, match=r"sampler='class_balanced'.*shape \(6, 4, 3\)") as e:
        from probekit.train.fit import _setup

        run = _setup(probe, data, TrainConfig(sampler="class_balanced", device="cpu"), np.arange(6))
        next(run.epoch_batches(0, 0))
    assert "sampler=shuffle" in e.value.hint
    assert callable(fit)


def test_clips_without_labels_are_a_group_not_a_crash():
    # BirdSet-like rows with an empty label list: the official `x[0]` fails; here they form their own group
    from probekit.train.sampling import epoch_order, sample_weights

    lab = np.zeros((40, 3), np.float32)
    lab[:30, 0] = 1
    lab[30:35, 1] = 1  # 5 of class 1, 5 unlabelled, no class 2
    w = sample_weights("class_balanced", lab, True)
    assert np.isfinite(w).all() and w[35:].sum() == pytest.approx(w[30:35].sum()) == pytest.approx(w[:30].sum())
    draws = np.concatenate([epoch_order("class_balanced", w, np.arange(40), seed=0, epoch=e, num_samples=40)
                            for e in range(100)])
    assert abs((draws >= 35).mean() - 1 / 3) < 0.03


def test_checkpoints_keep_their_fingerprint_and_refuse_another_sampler(tmp_path):
    from probekit.train import TrainConfig, fit
    from probekit.train.fit import _fingerprint

    p = make_probe("linear", num_layers=2, embed_dim=8, num_classes=3, seed=0)
    # the values of the commit before the samplers: checkpoints written then still resume
    assert _fingerprint(p, TrainConfig(), np.arange(10), False) == "49cbb6718fb3c147"
    assert _fingerprint(p, TrainConfig(lr=0.01, seed=3), np.arange(7), True) == "855bb06ba4eaa31c"
    assert _fingerprint(p, TrainConfig(sampler="class_balanced"), np.arange(10), False) != "49cbb6718fb3c147"
    data = _data(np.arange(12) % 3, False)
    cfg = TrainConfig(steps=2, batch_size=4, device="cpu", checkpoint_every=1)
    fit(p, data, config=cfg, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="different run"):
        fit(make_probe("linear", num_layers=2, embed_dim=8, num_classes=3, seed=0), data,
            config=cfg.replace(sampler="class_balanced"), checkpoint_dir=tmp_path, progress=False)


def test_epoch_larger_than_the_data_without_replacement_is_clamped():
    from probekit.train import TrainConfig

    cfg = TrainConfig(sampler="label_weighted", sampler_epoch=200_000, batch_size=4, drop_last=False)
    assert cfg.schedule(10) == (2000, 0, 3)  # 10 clips once each per epoch, not 200,000 draws


def test_crop_keys_with_a_negative_seed(fsdd_root):
    from probekit.cache.crop import bat_crop

    wav = sorted(fsdd_root.rglob("*.wav"))[0]
    a = bat_crop(wav, 8000, {"seconds": 5.0, "noise_std": 0.02}, (-7, 0, 0))  # TrainConfig allows seed < 0
    assert a.shape == (40000,) and torch.isfinite(a).all()

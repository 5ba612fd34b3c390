"""Mixup, SpecAugment masks, time roll and colour noise change a fixed batch exactly as the official code.

The reference below re-derives the official data/augmentations.py and DataTransforms.forward (global
numpy / torch / Python RNGs, torchaudio's FrequencyMasking/TimeMasking with iid_masks on (B, 1, F, T));
probekit's versions draw from a RandomState / random.Random seeded the same and torch's global RNG, on
time-major (B, 1, T, F) features.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch

from probekit.finetune import get_recipe
from probekit.finetune.augment import apply_color_noise, augment_features

torchaudio = pytest.importorskip("torchaudio")


def _official_mixup(x, y, beta, chance, hard):
    a = torch.from_numpy(np.random.beta(beta, beta, (x.shape[0], 1, 1, 1))).to(x)
    if chance < 1:
        a *= torch.empty_like(a).bernoulli_(chance)
    x = (1 - a) * x + a * x.flip(0)
    if hard:
        y = y + y.flip(0)
    else:
        a_y = a.reshape(-1, *([1] * (y.ndim - 1)))
        y = (1 - a_y) * y + a_y * y.flip(0)
    return x, torch.clamp(y, 0.0, 1.0)


def _official_feature_side(x_ft, y, r):
    """DataTransforms.forward after the mel: time roll, mixup, masks; then (B, 1, T, F)."""
    if r.use_time_roll:
        x_ft = torch.roll(x_ft, shifts=random.randint(0, x_ft.shape[-1]), dims=-1)
    if r.use_mixup:
        x_ft, y = _official_mixup(x_ft, y, r.mixup_beta, r.mixup_chance, r.mixup_hard_label)
    if r.use_tf_mask:
        fm = torchaudio.transforms.FrequencyMasking(freq_mask_param=r.freq_mask_param, iid_masks=True)
        tm = torchaudio.transforms.TimeMasking(time_mask_param=r.time_mask_param, iid_masks=True)
        for _ in range(r.tf_mask_repeats):
            x_ft = fm(x_ft)
            x_ft = tm(x_ft)
    return x_ft.transpose(2, 3), y


def _batch(b=8, t=96, f=128, c=5):
    g = torch.Generator().manual_seed(123)
    x = torch.rand(b, 1, t, f, generator=g) + 0.1  # strictly positive: every mask shows as zeros
    y = torch.nn.functional.one_hot(torch.arange(b) % c, c).float()
    return x, y


@pytest.mark.parametrize("recipe", ["as20k", "esc50", "hsn"])
@pytest.mark.parametrize("seed", [0, 7])
def test_feature_augmentation_equals_official(recipe, seed):
    r = get_recipe(recipe)
    x, y = _batch()
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)
    ref_x, ref_y = _official_feature_side(x.transpose(2, 3).clone(), y.clone(), r)
    torch.manual_seed(seed)
    got_x, got_y = augment_features(x.clone(), y.clone(), r, np_rng=np.random.RandomState(seed),
                                    py_rng=random.Random(seed))
    assert torch.equal(got_x, ref_x) and torch.equal(got_y, ref_y)
    # and the batch did change as specified
    assert not torch.equal(got_x, x)
    if r.use_tf_mask:
        assert (got_x == 0).any()  # masks write zeros (inputs are > 0)
    if r.use_mixup:
        assert not torch.equal(got_y, y) and torch.allclose(got_y.sum(1), torch.ones(len(y)))  # soft labels


def test_masks_are_bands_of_at_most_param_width():
    r = dataclasses.replace(get_recipe("as20k"), use_mixup=False, tf_mask_repeats=1)
    x, y = _batch()
    torch.manual_seed(3)
    out, _ = augment_features(x, y, r, np_rng=np.random.RandomState(0), py_rng=random.Random(0))
    for b in range(len(x)):
        zero = out[b, 0] == 0
        full_rows = zero.all(1).sum().item()  # time frames masked across every bin
        full_cols = zero.all(0).sum().item()  # bins masked across every frame
        assert full_rows < r.time_mask_param and full_cols < r.freq_mask_param
        # every zero lies in a fully-masked row or column (masks are bands, nothing else is touched)
        assert torch.equal(zero, zero.all(1, keepdim=True) | zero.all(0, keepdim=True))


def test_mixup_hard_labels_and_no_augment():
    r = dataclasses.replace(get_recipe("as20k"), mixup_hard_label=True, mixup_chance=1.0, use_tf_mask=False)
    x, y = _batch()
    np.random.seed(1)
    torch.manual_seed(1)
    ref_x, ref_y = _official_feature_side(x.transpose(2, 3).clone(), y.clone(), r)
    torch.manual_seed(1)
    got_x, got_y = augment_features(x, y, r, np_rng=np.random.RandomState(1), py_rng=random.Random(1))
    assert torch.equal(got_x, ref_x) and torch.equal(got_y, ref_y)
    assert set(got_y.unique().tolist()) <= {0.0, 1.0} and (got_y.sum(1) == 2).any()
    off = dataclasses.replace(r, augment=False)
    same_x, same_y = augment_features(x, y, off, np_rng=np.random.RandomState(1), py_rng=random.Random(1))
    assert same_x is x and same_y is y


def _official_color_noise(x, chance):
    b, n = x.shape
    f_decay = torch.empty((b, 1), dtype=x.dtype).uniform_(-2.0, 2.0)
    snr_db = torch.empty((b, 1), dtype=x.dtype).uniform_(5.0, 25.0)
    noise = torch.randn(b, n, dtype=x.dtype)
    spec = torch.fft.rfft(noise, dim=1)
    freqs = torch.arange(1, spec.shape[1] + 1, dtype=x.dtype).unsqueeze(0)
    spec *= 1.0 / (freqs ** (f_decay / 2.0))
    noise = torch.fft.irfft(spec, n=n, dim=1)
    noise = noise / (1e-8 + noise.square().mean(dim=-1, keepdim=True).sqrt())
    amp = x.square().mean(dim=-1, keepdim=True).sqrt() / (10 ** (snr_db / 20.0))
    amp = amp * torch.empty((b, 1), dtype=x.dtype).bernoulli_(chance)
    return x + amp * noise


def test_color_noise_equals_official():
    x = torch.sin(torch.linspace(0, 400, 4000)).repeat(6, 1) * torch.linspace(0.1, 1, 6)[:, None]
    torch.manual_seed(5)
    ref = _official_color_noise(x.clone(), 0.3)
    torch.manual_seed(5)
    got = apply_color_noise(x.clone(), 0.3)
    assert torch.equal(got, ref)
    torch.manual_seed(5)
    assert not torch.equal(apply_color_noise(x.clone(), 1.0), x)  # chance 1: every clip gets noise

"""Fine-tuning augmentations, re-derived from the official BAT code (data/augmentations.py and the
`DataTransforms` of data/bat_audio_datasets.py), draw for draw.

The official order per training batch: random gain and colour noise on the waveforms, then the
frontend, time roll, mixup, and `tf_mask_repeats` x (frequency mask, time mask). Random numbers come
from the same sources as the official code so a seeded run draws the same values: mixup's weights from
numpy's legacy `RandomState` (the official `np.random.beta`), everything else from torch's global RNG
(or `generator`), the time roll from Python's `random` (here a `random.Random`).

probekit's features are time-major (B, 1, frames, bins); the official masks run on (B, 1, bins, frames),
so "frequency" is axis 3 here and "time" axis 2, with the official draws: per (B, 1) row
`width = U * param`, `start = U * (size - width)`, mask `[long(start), long(start) + long(width))`
(torchaudio's `mask_along_axis_iid`, which the official FrequencyMasking/TimeMasking call with iid_masks).
"""

from __future__ import annotations

import random as _random

import numpy as np
import torch

__all__ = ["apply_color_noise", "apply_mixup", "apply_random_gain", "mask_along_axis", "spec_augment",
           "time_roll", "augment_features"]


def apply_random_gain(x: torch.Tensor, np_rng: np.random.RandomState) -> torch.Tensor:
    """(B, T) waves times 0.5 + Beta(10, 10) per clip (official apply_random_gain)."""
    v = torch.from_numpy(np_rng.beta(10.0, 10.0, size=(x.shape[0], 1))).to(x) + 0.5
    return x * v


def apply_color_noise(x: torch.Tensor, chance: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Power-law noise (f^-decay, decay ~ U(-2, 2)) at an SNR ~ U(5, 25) dB, added with probability `chance`
    per clip (official apply_color_noise). x: (B, T) or (T,)."""
    squeeze = x.ndim == 1
    if squeeze:
        x = x.unsqueeze(0)
    b, n = x.shape
    kw = dict(dtype=x.dtype, device=x.device)
    f_decay = torch.empty((b, 1), **kw).uniform_(-2.0, 2.0, generator=generator)
    snr_db = torch.empty((b, 1), **kw).uniform_(5.0, 25.0, generator=generator)
    noise = torch.randn(b, n, generator=generator, **kw)
    spec = torch.fft.rfft(noise, dim=1)
    freqs = torch.arange(1, spec.shape[1] + 1, **kw).unsqueeze(0)
    spec *= 1.0 / (freqs ** (f_decay / 2.0))  # power law in power: amplitude exponent halved
    noise = torch.fft.irfft(spec, n=n, dim=1)
    noise = noise / (1e-8 + noise.square().mean(dim=-1, keepdim=True).sqrt())
    clean_rms = x.square().mean(dim=-1, keepdim=True).sqrt()
    amp = clean_rms / (10 ** (snr_db / 20.0))
    amp = amp * torch.empty((b, 1), **kw).bernoulli_(chance, generator=generator)
    out = x + amp * noise
    return out.squeeze(0) if squeeze else out


def time_roll(x: torch.Tensor, py_rng: _random.Random) -> torch.Tensor:
    """Roll the whole batch along time by randint(0, frames) frames (official: one shift per batch).
    x: (B, 1, frames, bins)."""
    return torch.roll(x, shifts=py_rng.randint(0, x.shape[2]), dims=2)


def apply_mixup(x: torch.Tensor, y: torch.Tensor, beta: float, chance: float, hard_label: bool,
                np_rng: np.random.RandomState, generator: torch.Generator | None = None):
    """Mix each clip with the batch reversed (official apply_mixup).

    a ~ Beta(beta, beta) per clip (numpy), zeroed with probability 1 - chance (torch bernoulli, only when
    chance < 1); x = (1 - a) x + a x.flip(0); soft labels y = (1 - a) y + a y.flip(0) (hard: y + y.flip(0)),
    clamped to [0, 1]. y must be one-hot / multi-hot float (B, C).
    """
    b = x.shape[0]
    a = torch.from_numpy(np_rng.beta(beta, beta, (b,) + (1,) * (x.ndim - 1))).to(x)
    if chance < 1:
        a *= torch.empty_like(a).bernoulli_(chance, generator=generator)
    x = (1 - a) * x + a * x.flip(0)
    if hard_label:
        y = y + y.flip(0)
    else:
        a_y = a.reshape(*([-1] + [1] * (y.ndim - 1)))
        y = (1 - a_y) * y + a_y * y.flip(0)
    return x, torch.clamp(y, min=0.0, max=1.0)


def mask_along_axis(x: torch.Tensor, param: int, axis: int, generator: torch.Generator | None = None,
                    value: float = 0.0) -> torch.Tensor:
    """One iid mask per (B, C) row along `axis` (2 or 3 of a 4-D tensor), torchaudio's mask_along_axis_iid."""
    if param < 1:
        return x
    lead = x.shape[:2]
    width = torch.rand(lead, device=x.device, dtype=x.dtype, generator=generator) * param
    start = torch.rand(lead, device=x.device, dtype=x.dtype, generator=generator) * (x.size(axis) - width)
    lo = start.long()[..., None, None]
    hi = (start.long() + width.long())[..., None, None]
    pos = torch.arange(0, x.size(axis), device=x.device, dtype=x.dtype)
    xt = x.transpose(axis, -1)
    xt = xt.masked_fill((pos >= lo) & (pos < hi), value)
    return xt.transpose(axis, -1)


def spec_augment(x: torch.Tensor, freq_param: int, time_param: int, repeats: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """`repeats` x (frequency mask, time mask) on time-major (B, 1, frames, bins) features, mask value 0."""
    if x.ndim != 4:
        raise ValueError(f"spec_augment expects (B, 1, frames, bins), got {tuple(x.shape)}")
    for _ in range(repeats):
        x = mask_along_axis(x, freq_param, 3, generator)
        x = mask_along_axis(x, time_param, 2, generator)
    return x


def augment_features(x: torch.Tensor, y: torch.Tensor, recipe, *, np_rng: np.random.RandomState,
                     py_rng: _random.Random, generator: torch.Generator | None = None):
    """The feature-side part of the official DataTransforms.forward (augment=True): time roll, mixup, masks.

    x: (B, 1, frames, bins) (or (B, frames, bins)) features; y: (B, C) float targets. Returns (x, y)."""
    if not recipe.augment:
        return x, y
    if x.ndim == 3:  # families whose frontend gives (B, frames, bins): same draws on a channel view
        x4, y = augment_features(x.unsqueeze(1), y, recipe, np_rng=np_rng, py_rng=py_rng, generator=generator)
        return x4.squeeze(1), y
    if recipe.use_time_roll:
        x = time_roll(x, py_rng)
    if recipe.use_mixup:
        x, y = apply_mixup(x, y, recipe.mixup_beta, recipe.mixup_chance, recipe.mixup_hard_label, np_rng, generator)
    if recipe.use_tf_mask:
        x = spec_augment(x, recipe.freq_mask_param, recipe.time_mask_param, recipe.tf_mask_repeats, generator)
    return x, y

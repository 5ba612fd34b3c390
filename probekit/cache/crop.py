"""Random training crops of a live (`--online`) source: a fresh window of the recording every draw.

A dataset declares its crop as plain data (`Dataset.train_crop`, e.g. `probekit.datasets.birdset.TRAIN_CROP`);
`OnlineTokens` applies it to its training batches only when the training loop hands it draw keys
(seed, epoch, position in the epoch), so the crop of every draw is seeded, the same on every data-parallel
rank and after a resume, and evaluation reads the fixed windows. A token cache holds one window per clip,
so it never crops (the result record says so).

`bat_crop` re-derives BAT's `BirdSet.get_train` (data/bat_audio_datasets.py): a recording of at least
`seconds` gives a window at a uniform random offset in [0, length - seconds]; a shorter one is padded with
zeros to `seconds` and rolled by a uniform random shift in [0, pad] (so it sits at a random time); then
Gaussian noise of std `noise_std` is added.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["bat_crop", "crop_rng", "describe_crop"]


def crop_rng(key) -> np.random.Generator:
    """The generator of one draw: key = (seed, epoch, position in the epoch)."""
    return np.random.default_rng([int(k) % (1 << 63) for k in key])


def bat_crop(path, sample_rate: int, crop: Mapping[str, Any], key) -> torch.Tensor:
    """One random training window of the whole recording at `path` (see the module docstring)."""
    from probekit.audio.io import audio_info, load_audio

    seconds = float(crop["seconds"])
    n = int(round(seconds * sample_rate))
    rng = crop_rng(key)
    native, frames, _ = audio_info(path)
    length = frames / native
    if length < seconds:
        wave = load_audio(path, sample_rate=sample_rate)[:n]
        pad = n - wave.numel()
        wave = torch.roll(torch.nn.functional.pad(wave, (0, pad)), int(rng.integers(0, pad + 1)))
    else:
        offset = float(rng.random()) * max(0.0, length - seconds)
        wave = load_audio(path, sample_rate=sample_rate, offset=offset, duration=seconds)[:n]
        wave = torch.nn.functional.pad(wave, (0, n - wave.numel()))  # resampling may round one sample short
    noise = float(crop.get("noise_std") or 0.0)
    if noise:
        wave = wave + torch.from_numpy(rng.standard_normal(n).astype(np.float32)) * noise
    return wave


def describe_crop(crop: Mapping[str, Any] | None, online: bool) -> str:
    """The training-window sentence of a result record / dry-run plan."""
    if not crop:
        return "fixed windows"
    what = (f"random {float(crop['seconds']):g}-s crop / time shift per draw"
            + (f" + noise std {crop['noise_std']:g}" if crop.get("noise_std") else "") + f" ({crop.get('source', '')})")
    return what if online else f"fixed windows (a token cache holds one window per clip; online mode: {what})"

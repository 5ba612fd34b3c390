"""The online data path of fine-tuning: clips -> (waveform augmentation) -> frontend -> batches.

Decoding (and, when the recipe has no waveform augmentation, the frontend) runs in DataLoader workers
through the cache's own `ClipFeatures`, so a clip's features are those its tokens in the cache come
from. With colour noise / random gain the workers return waveforms; the batch is padded like the official
collate, augmented, and each clip goes through the frontend at its own length.

Order: one permutation per pass, `numpy.random.default_rng([seed, pass])`, so the position (pass, batch)
is all a checkpoint needs to continue the same sequence. AS-2M and HSN draw clips with the weights of the
official samplers (`data/factory.py`). `shard` is where a data-parallel rank takes its part of a batch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from probekit.errors import AudioError

__all__ = ["ClipWaves", "batch_order", "feature_batches", "shard", "wave_batches", "waves_to_features"]


def shard(rows: Sequence[int], rank: int = 0, world_size: int = 1) -> list[int]:
    """The clips of one global batch that data-parallel rank `rank` of `world_size` trains on: a contiguous
    part (probekit.distributed.shard_bounds), so global-batch dropout masks slice at one offset."""
    if world_size <= 1:
        return list(rows)
    from probekit.distributed import shard_bounds

    rows = list(rows)
    lo, hi = shard_bounds(len(rows), rank, world_size)
    return rows[lo:hi]


def _weights(sampler: str, labels: np.ndarray, multilabel: bool) -> np.ndarray:
    if multilabel:
        lab = [np.flatnonzero(r) for r in labels]
    else:
        lab = [np.asarray([int(v)]) for v in labels]
    c = labels.shape[1] if multilabel else int(labels.max()) + 1
    if sampler == "balanced_200k":  # official: mean of 1/class count over the clip's labels (1.0 without labels)
        counts = np.zeros(c)
        for ls in lab:
            counts[ls] += 1
        cw = 1.0 / (counts + 1e-8)
        return np.asarray([cw[ls].sum() / len(ls) if len(ls) else 1.0 for ls in lab])
    # balanced_first_label (HSN): 1 / count of the clip's first label
    first = np.asarray([ls[0] if len(ls) else 0 for ls in lab])
    counts = np.bincount(first, minlength=c)
    return (1.0 / (counts + 1e-8))[first]


def batch_order(n: int, batch_size: int, epoch: int, seed: int, *, sampler: str = "shuffle",
                labels: np.ndarray | None = None, multilabel: bool = False) -> list[list[int]]:
    """The batches (clip positions) of pass `epoch`; the last one may be short (official drop_last=False)."""
    rng = np.random.default_rng([int(seed), int(epoch)])
    if sampler == "shuffle":
        order = rng.permutation(n)
    else:
        w = _weights(sampler, np.asarray(labels), multilabel)
        p = w / w.sum()
        if sampler == "balanced_200k":
            order = rng.choice(n, size=min(200_000, n), replace=False, p=p)
        else:
            order = rng.choice(n, size=n, replace=True, p=p)
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


class ClipWaves(torch.utils.data.Dataset):
    """Decode one clip in a worker (for waveform augmentation before the frontend)."""

    def __init__(self, clips, sample_rate: int):
        self.clips, self.sample_rate = clips, sample_rate

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int):
        from probekit.audio.io import load_audio

        c = self.clips[i]
        return i, load_audio(c.path, sample_rate=self.sample_rate, offset=c.offset, duration=c.duration)


def _loader(source, batches, collate, workers: int, device: torch.device):
    from probekit.cache.pipeline import worker_init

    return torch.utils.data.DataLoader(
        source, batch_sampler=batches, collate_fn=collate, num_workers=workers,
        pin_memory=device.type == "cuda", worker_init_fn=worker_init if workers else None,
        # a private generator: creating the iterator must not draw from the global RNG (exact resume)
        generator=torch.Generator().manual_seed(0), persistent_workers=False,
    )


def feature_batches(clips, frontend, sample_rate: int, batches, *, workers: int, device: torch.device):
    """Yields (rows, features (B, ...), valid frames (B,)) per batch; a clip that fails to decode raises."""
    from probekit.cache.pipeline import ClipFeatures, collate

    source = ClipFeatures(clips, copy.deepcopy(frontend).to("cpu"), sample_rate)
    for rows, feats, valid, ok, errors in _loader(source, batches, collate, workers, device):
        if errors:
            raise AudioError(f"fine-tuning needs every clip: {errors[0][1]}",
                             hint="fix or remove the clip (probekit data check lists bad files)")
        yield rows, feats, valid


def _collate_waves(items):
    return torch.tensor([it[0] for it in items], dtype=torch.long), [it[1] for it in items]


def wave_batches(clips, sample_rate: int, batches, *, workers: int, device: torch.device):
    """Yields (rows, [wave (samples,)]) per batch."""
    yield from _loader(ClipWaves(clips, sample_rate), batches, _collate_waves, workers, device)


def waves_to_features(waves: list[torch.Tensor], frontend, recipe, *, np_rng, generator=None):
    """Official waveform augmentation on the zero-padded batch (random gain, colour noise), then each clip
    through the frontend at its own length. Returns (features (B, ...), valid frames (B,))."""
    from probekit.finetune.augment import apply_color_noise, apply_random_gain

    lens = [int(w.numel()) for w in waves]
    x = torch.zeros(len(waves), max(lens))
    for i, w in enumerate(waves):
        x[i, : lens[i]] = w
    if recipe.augment and recipe.use_random_gain:
        x = apply_random_gain(x, np_rng)
    if recipe.augment and recipe.use_color_noise:
        x = apply_color_noise(x, recipe.color_noise_chance, generator)
    feats, valid = [], []
    with torch.no_grad():
        for i, n in enumerate(lens):
            feats.append(frontend.features(x[i, :n]))
            valid.append(int(frontend.valid_frames(n)))
    return torch.stack(feats), torch.tensor(valid, dtype=torch.long)

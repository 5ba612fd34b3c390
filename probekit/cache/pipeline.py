"""The decode + frontend pipeline shared by extraction and the online token source.

Clips are decoded and turned into frontend features in DataLoader workers (on the CPU); bad clips come
back as errors, not raises, so the caller decides whether to skip or fail. Labels and folds of a clip
list are built here once for both.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from probekit.errors import AudioError, CacheError, ProbekitError

__all__ = ["ClipFeatures", "clip_folds", "clip_labels", "collate", "feature_loader", "worker_init"]


class ClipFeatures(torch.utils.data.Dataset):
    """Decode + frontend for one clip, in a DataLoader worker. Bad clips come back as errors, not raises."""

    def __init__(self, clips, frontend, sample_rate: int, crop=None):
        self.clips, self.frontend, self.sample_rate = clips, frontend, sample_rate
        self.crop = crop  # a dataset's train_crop (probekit.cache.crop): items (i, draw key) get a random window

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i):
        from probekit.audio.io import load_audio

        i, key = i if isinstance(i, tuple) else (i, None)
        c = self.clips[i]
        try:
            if self.crop is not None and key is not None:
                from probekit.cache.crop import bat_crop

                wave = bat_crop(c.path, self.sample_rate, self.crop, key)
            else:
                wave = load_audio(c.path, sample_rate=self.sample_rate, offset=c.offset, duration=c.duration)
            with torch.inference_mode():
                feats = self.frontend.features(wave)
            return i, feats, int(self.frontend.valid_frames(wave.numel())), None
        except ProbekitError as e:
            msg = str(e) if isinstance(e, AudioError) else f"{c.path}: {e}"
            return i, None, 0, msg


def collate(items):
    """-> (rows, features of the good clips, their valid frames, ok mask, [(row, error)] of the bad ones)."""
    rows = torch.tensor([it[0] for it in items], dtype=torch.long)
    ok = [it for it in items if it[3] is None]
    feats = torch.stack([it[1] for it in ok]) if ok else None  # (B_ok, 1, frames, bins)
    valid = torch.tensor([it[2] for it in ok], dtype=torch.long)
    ok_mask = torch.tensor([it[3] is None for it in items])
    errors = [(it[0], it[3]) for it in items if it[3] is not None]
    return rows, feats, valid, ok_mask, errors


def worker_init(_):
    torch.set_num_threads(1)  # one decode per worker; the workers are the parallelism


def feature_loader(clips, frontend, sample_rate: int, batches: Sequence[Sequence[int]], *, workers: int,
                   device: torch.device, prefetch_factor: int | None = None,
                   crop=None) -> torch.utils.data.DataLoader:
    """A DataLoader yielding `collate` tuples for the given batches of clip positions.

    Features are computed on the CPU (in `workers` processes when > 0) by a copy of `frontend`; the
    backbone keeps its own copy where it is.
    """
    source = ClipFeatures(clips, copy.deepcopy(frontend).to("cpu"), sample_rate, crop)
    return torch.utils.data.DataLoader(
        source,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=worker_init if workers else None,
        prefetch_factor=prefetch_factor if workers else None,
        persistent_workers=False,
    )


def clip_labels(clips, spec) -> np.ndarray:
    """(clips,) int64 class indices, or (clips, classes) uint8 multi-hot for a multi-label dataset; for an
    ASR dataset (clips, S) int64 character ids of the transcripts padded with 0 (`probekit.train.ctc`)."""
    if getattr(spec, "task", "classification") == "asr":
        from probekit.datasets.transcripts import transcript_targets

        return transcript_targets(clips, spec.name)
    if spec.multilabel:
        out = np.zeros((len(clips), spec.num_classes), dtype=np.uint8)
        for i, c in enumerate(clips):
            out[i, list(c.labels)] = 1
        return out
    bad = [c.id for c in clips if len(c.labels) != 1]
    if bad:
        raise CacheError(f"single-label dataset {spec.name!r} has clips with {len(bad)} label sets != 1: {bad[:3]}")
    return np.asarray([c.labels[0] for c in clips], dtype=np.int64)


def clip_folds(clips) -> np.ndarray | None:
    """(clips,) fold numbers (-1: none), or None when no clip has a fold."""
    if not any(c.fold is not None for c in clips):
        return None
    return np.asarray([-1 if c.fold is None else c.fold for c in clips])

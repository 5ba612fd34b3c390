"""Training samplers of the official recipes: which clips each epoch draws (`TrainConfig.sampler`).

* ``shuffle`` (default): every training clip once per epoch, in a seeded random order.
* ``class_balanced``: the official BAT HSN/BirdSet sampler (data/factory.py, task 'hsn'): each clip weighs
  1 / (count of its first label's class + 1e-8) over the training clips, and an epoch is
  ``len(train)`` draws with replacement (torch's ``WeightedRandomSampler(..., replacement=True)``).
  The first label of a multi-hot row is its lowest class index (probekit keeps label sets, not the order
  of the Hugging Face list; BirdSet's Xeno-Canto training rows carry their primary class first and mostly
  alone). Clips without a label form a group of their own (the official code fails on them).
* ``label_weighted``: the official BAT AudioSet-2M sampler (data/factory.py, task 'as2m'): each clip weighs
  the mean over its labels of 1 / (class count + 1e-8) (1.0 without labels), and an epoch is
  ``sampler_epoch`` (official: 200,000) draws without replacement.

The draw itself is `probekit.tokens.weighted_order`, seeded by (seed, epoch): the cache reader, the live
backbone source and every data-parallel rank read the same batches, and a resumed run draws the epochs
it has left exactly as a straight run (the order is recomputed, never stored).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from probekit.errors import ConfigError
from probekit.tokens import weighted_order

SAMPLERS = ("shuffle", "class_balanced", "label_weighted")
REPLACEMENT = {"class_balanced": True, "label_weighted": False}
SOURCES = {
    "class_balanced": "BAT data/factory.py (hsn): WeightedRandomSampler, 1/count of each clip's first label, "
    "len(train) draws with replacement",
    "label_weighted": "BAT data/factory.py (as2m): WeightedRandomSampler, mean 1/count over each clip's labels, "
    "sampler_epoch draws without replacement",
}
_EPS = 1e-8  # as official: 1.0 / (class_counts + 1e-8)

__all__ = ["SAMPLERS", "describe", "epoch_order", "epoch_size", "sample_weights"]


def _class_rows(labels: np.ndarray, multilabel: bool, sampler: str) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim == 1 and not multilabel:
        return lab.astype(np.int64)[:, None] == np.arange(int(lab.max()) + 1 if len(lab) else 1)
    if lab.ndim == 2 and multilabel:
        return lab > 0
    raise ConfigError(f"sampler={sampler!r} needs one class or one multi-hot label row per clip "
                      f"(these labels have shape {lab.shape})",
                      hint="use sampler=shuffle for event, frame-wise or ASR training data")


def sample_weights(sampler: str, labels: np.ndarray, multilabel: bool) -> np.ndarray:
    """(clips,) float64 draw weights of the training clips' `labels` (the official recipe of `sampler`)."""
    hot = _class_rows(labels, multilabel, sampler)  # (clips, C) bool
    if sampler == "class_balanced":
        has = hot.any(axis=1)
        first = np.where(has, hot.argmax(axis=1), hot.shape[1])  # no label: a group of its own
        counts = np.bincount(first, minlength=hot.shape[1] + 1).astype(np.float64)
        return 1.0 / (counts[first] + _EPS)
    if sampler == "label_weighted":
        class_w = 1.0 / (hot.sum(axis=0).astype(np.float64) + _EPS)
        n = hot.sum(axis=1)
        return np.where(n > 0, (hot * class_w).sum(axis=1) / np.maximum(n, 1), 1.0)
    raise ConfigError(f"unknown sampler {sampler!r}", hint=f"use one of: {', '.join(SAMPLERS)}")


def epoch_size(sampler: str, sampler_epoch: int | None, num_train: int) -> int:
    """Clips one epoch draws: all training clips under shuffle; `sampler_epoch` (default: the number of
    training clips) under a weighted sampler, at most every clip once without replacement."""
    if sampler == "shuffle" or sampler_epoch is None:
        return int(num_train)
    n = int(sampler_epoch)
    return n if REPLACEMENT.get(sampler, True) else min(n, int(num_train))


def epoch_order(sampler: str, weights: np.ndarray, train_idx: np.ndarray, *, seed: int, epoch: int,
                num_samples: int) -> np.ndarray:
    """The clip positions (from `train_idx`) of epoch `epoch`, drawn by `sampler` with `weights`."""
    pos = weighted_order(weights, num_samples, replacement=REPLACEMENT[sampler], seed=[int(seed), int(epoch)])
    return np.asarray(train_idx, dtype=np.int64)[pos]


def describe(config: Any, num_train: int | None = None) -> dict[str, Any]:
    """What a result record and the dry-run plan say about the sampler of `config` (a TrainConfig)."""
    s = getattr(config, "sampler", "shuffle")
    out: dict[str, Any] = {"sampler": s}
    if s != "shuffle":
        out["replacement"] = REPLACEMENT[s]
        out["epoch_draws"] = (config.sampler_epoch if num_train is None
                              else epoch_size(s, config.sampler_epoch, num_train))
        out["source"] = SOURCES[s]
    return out


def record_sampling(config: Any, num_train: int | None, crop: Any, online: bool) -> dict[str, Any]:
    """The `sampling` block of a result record (probekit.results.schema.Sampling): sampler and windows."""
    from probekit.cache.crop import describe_crop

    return {**describe(config, num_train), "crop": describe_crop(crop, online)}


def crop_warning(dataset: str, crop: Any, online: bool) -> str | None:
    """A token cache cannot hold every random crop: say the run trains on the fixed windows instead."""
    if not crop or online:
        return None
    return (f"{dataset}: training on the fixed window of each clip (a token cache holds one); the official "
            f"random {float(crop['seconds']):g}-s crop per draw ({crop.get('source', '')}) needs --online")

"""Token batches: the one format probes train on, whether read from a cache or made live.

`TokenData` is what the training loop consumes. The cache reader (probekit.cache.reader), the live
backbone source (`--online`) and `InMemoryTokens` all satisfy it, so a probe never knows where its
tokens came from. This module imports nothing else of probekit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@dataclass(frozen=True)
class TokenRequest:
    """What a probe reads, so the reader loads only that.

    layers: "all", "last", or explicit 0-based block indices (negative counts from the end).
    """

    layers: str | tuple[int, ...] = "last"
    patch: bool = True
    cls: bool = True

    def resolve(self, num_layers: int) -> tuple[int, ...]:
        if self.layers == "all":
            return tuple(range(num_layers))
        if self.layers == "last":
            return (num_layers - 1,)
        out = tuple(i % num_layers if -num_layers <= i < num_layers else -1 for i in self.layers)
        if -1 in out:
            raise ValueError(f"layer index out of range for {num_layers} layers: {self.layers}")
        return out


@dataclass
class TokenBatch:
    """One batch. patch (B, Ls, N, D) and cls (B, Ls, D) are float32 or None when not requested.

    labels: (B, C) float32 multi-hot when multilabel, else (B,) int64 class indices; for event tasks
        (probekit.train.events.FrameTokens) (B, T, C) float32 multi-hot per token time row.
    valid_rows: (B,) int64 time rows holding real audio (of grid[0]).
    index: (B,) int64 clip positions in the source.
    grid: the (time rows, frequency columns) token grid, where the source says it (frame-wise heads need
        it to fold the N = T*F time-major tokens back into rows); None otherwise.
    ASR data: labels are (B, S) int64 character ids padded with 0 (the CTC blank); `target_lengths` counts them.
    """

    patch: torch.Tensor | None
    cls: torch.Tensor | None
    labels: torch.Tensor
    valid_rows: torch.Tensor
    index: torch.Tensor
    grid: tuple[int, int] | None = None

    @property
    def target_lengths(self) -> torch.Tensor:
        """ASR data: (B,) characters per padded transcript row (ids > 0)."""
        return (self.labels > 0).sum(dim=1).long()

    def to(self, device) -> TokenBatch:
        mv = lambda t: None if t is None else t.to(device, non_blocking=True)
        return TokenBatch(mv(self.patch), mv(self.cls), mv(self.labels), mv(self.valid_rows), mv(self.index),
                          self.grid)


@runtime_checkable
class TokenData(Protocol):
    num_clips: int
    num_layers: int
    embed_dim: int
    grid: tuple[int, int]
    num_classes: int
    multilabel: bool
    labels: np.ndarray  # (clips, C) float32 multi-hot if multilabel else (clips,) int64
    folds: np.ndarray | None  # (clips,) fold numbers where the dataset has folds

    def batches(
        self,
        request: TokenRequest,
        batch_size: int,
        *,
        indices: Sequence[int] | np.ndarray | None = None,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> Iterator[TokenBatch]:
        """One pass over `indices` (default all clips) in batches."""
        ...


def batch_order(
    num_clips: int,
    batch_size: int,
    *,
    indices: Sequence[int] | np.ndarray | None = None,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> list[np.ndarray]:
    """The clip positions of each batch of one pass: every TokenData draws its order here, so the same
    seed gives the same batches whether tokens come from RAM, a cache or a live backbone."""
    idx = np.arange(num_clips) if indices is None else np.asarray(indices, dtype=np.int64)
    if shuffle:
        idx = idx[np.random.default_rng(seed).permutation(len(idx))]
    stop = len(idx) - (len(idx) % batch_size if drop_last else 0)
    return [idx[s : s + batch_size] for s in range(0, stop, batch_size) if len(idx[s : s + batch_size])]


def weighted_order(
    weights: np.ndarray,
    num_samples: int,
    *,
    replacement: bool,
    seed: int | Sequence[int] = 0,
) -> np.ndarray:
    """Positions 0..len(weights)-1 drawn in proportion to `weights` (>= 0), as torch's
    WeightedRandomSampler draws one epoch: `num_samples` draws, with or without replacement (then in the
    order of successive weighted draws). A pure function of `seed`, so every rank, resumed run and token
    source (RAM, cache, live backbone) draws the same epoch."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("sampling weights must be a non-empty 1-D array of finite values >= 0 with a positive sum")
    rng = np.random.default_rng(seed)
    if replacement:
        return rng.choice(len(w), size=int(num_samples), replace=True, p=w / w.sum()).astype(np.int64)
    n = min(int(num_samples), int((w > 0).sum()))
    # successive weighted draws without replacement == ascending exponential keys E/w (Efraimidis-Spirakis)
    with np.errstate(divide="ignore"):
        keys = rng.exponential(size=len(w)) / w
    return np.argsort(keys, kind="stable")[:n].astype(np.int64)


class InMemoryTokens:
    """TokenData held in RAM (float32 tensors). Used for preloaded caches and tests."""

    def __init__(
        self,
        patch: torch.Tensor | None,
        cls: torch.Tensor | None,
        labels: np.ndarray,
        *,
        num_classes: int,
        multilabel: bool,
        grid: tuple[int, int],
        valid_rows: np.ndarray | None = None,
        folds: np.ndarray | None = None,
    ):
        ref = patch if patch is not None else cls
        if ref is None:
            raise ValueError("InMemoryTokens needs patch or cls tokens")
        self.patch, self.cls = patch, cls
        self.num_clips = ref.shape[0]
        self.num_layers = ref.shape[1]
        self.embed_dim = ref.shape[-1]
        self.grid = tuple(grid)
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.labels = np.asarray(labels)
        self.folds = None if folds is None else np.asarray(folds)
        self.valid_rows = (
            np.full(self.num_clips, self.grid[0], dtype=np.int64) if valid_rows is None else np.asarray(valid_rows)
        )

    def batches(self, request, batch_size, *, indices=None, shuffle=False, seed=0, drop_last=False):
        layers = torch.as_tensor(request.resolve(self.num_layers))
        order = batch_order(self.num_clips, batch_size, indices=indices, shuffle=shuffle, seed=seed, drop_last=drop_last)
        for chunk in order:
            b = torch.as_tensor(chunk)
            patch = self.patch[b][:, layers].float() if request.patch and self.patch is not None else None
            cls = self.cls[b][:, layers].float() if request.cls and self.cls is not None else None
            labels = torch.as_tensor(self.labels[b.numpy()])
            yield TokenBatch(patch, cls, labels, torch.as_tensor(self.valid_rows[b.numpy()]), b, self.grid)

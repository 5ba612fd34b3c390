"""Helpers over TokenData: joining two sources (for cross-validation over train + test) and held-out
validation splits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from probekit.errors import ProbeError
from probekit.tokens import TokenBatch, TokenData, TokenRequest, batch_order


class ConcatTokens:
    """Two (or more) TokenData with the same layers/width/classes seen as one; clip i of part j has the
    global index offset_j + i. Satisfies TokenData."""

    def __init__(self, *parts: TokenData):
        if not parts:
            raise ProbeError("ConcatTokens needs at least one TokenData")
        first = parts[0]
        for p in parts[1:]:
            for key in ("num_layers", "embed_dim", "num_classes", "multilabel"):
                if getattr(p, key) != getattr(first, key):
                    raise ProbeError(
                        f"cannot join token sources: {key} differs ({getattr(first, key)} vs {getattr(p, key)})"
                    )
        self.parts = parts
        self.offsets = np.cumsum([0] + [p.num_clips for p in parts])
        self.num_clips = int(self.offsets[-1])
        self.num_layers = first.num_layers
        self.embed_dim = first.embed_dim
        self.num_classes = first.num_classes
        self.multilabel = first.multilabel
        self.score_metrics = getattr(first, "score_metrics", ())  # the dataset's requested metrics (HEAR)
        self.grid = tuple(max(p.grid[i] for p in parts) for i in range(2))
        tasks = [getattr(p, "event_task", None) for p in parts]
        if any(t is not None for t in tasks):  # event tasks (FrameTokens): keep the frame targets' scoring
            from probekit.train.events import join_event_tasks

            self.event_task = join_event_tasks(tasks)
            self.classes = self.event_task.classes
        self.labels = np.concatenate([np.asarray(p.labels) for p in parts])
        folds = [p.folds for p in parts]
        self.folds = None if any(f is None for f in folds) else np.concatenate([np.asarray(f) for f in folds])

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
        for chunk in batch_order(self.num_clips, batch_size, indices=indices, shuffle=shuffle, seed=seed,
                                 drop_last=drop_last):
            yield self._gather(request, chunk)

    def _gather(self, request: TokenRequest, gidx: np.ndarray) -> TokenBatch:
        part_of = np.searchsorted(self.offsets, gidx, side="right") - 1
        pieces, order = [], []
        for j, part in enumerate(self.parts):
            sel = np.nonzero(part_of == j)[0]
            if sel.size == 0:
                continue
            local = gidx[sel] - self.offsets[j]
            pieces.append(next(iter(part.batches(request, len(local), indices=local, shuffle=False))))
            order.append(sel)
        pos = np.argsort(np.concatenate(order), kind="stable")
        perm = torch.as_tensor(pos)

        def cat(ts):
            if any(t is None for t in ts):
                return None
            # parts may differ in token count (grid rows): pad patch tokens with zeros to the longest
            if ts[0].ndim == 4 and len({t.shape[2] for t in ts}) > 1:
                n = max(t.shape[2] for t in ts)
                ts = [torch.nn.functional.pad(t, (0, 0, 0, n - t.shape[2])) for t in ts]
            return torch.cat(ts)[perm]

        return TokenBatch(
            patch=cat([b.patch for b in pieces]),
            cls=cat([b.cls for b in pieces]),
            labels=torch.cat([b.labels for b in pieces])[perm],
            valid_rows=torch.cat([b.valid_rows for b in pieces])[perm],
            index=torch.as_tensor(gidx, dtype=torch.long),
            grid=self.grid if hasattr(self, "event_task") else None,  # frame-wise heads fold rows with it
        )


def holdout_split(
    labels: np.ndarray, *, multilabel: bool, fraction: float, seed: int = 0, indices: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) positions from `indices` (default all): stratified by class for multi-class
    labels (every class keeps examples on both sides when it can), random for multi-label."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
    if not 0 < fraction < 1:
        raise ProbeError(f"validation fraction {fraction} must be in (0, 1)")
    n_val = max(1, round(fraction * len(idx)))
    if n_val >= len(idx):
        raise ProbeError(f"only {len(idx)} training clips: too few to hold out a validation part")
    y = np.asarray(labels)[idx]
    stratify = None
    if not multilabel:
        counts = np.bincount(y.astype(np.int64))
        if counts[counts > 0].min() >= 2 and n_val >= (counts > 0).sum():
            stratify = y
    tr, va = train_test_split(idx, test_size=n_val, random_state=seed, stratify=stratify)
    return np.sort(tr), np.sort(va)

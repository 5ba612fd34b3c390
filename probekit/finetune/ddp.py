"""Data-parallel fine-tuning (torchrun): the rank's side of one `probekit.finetune.loop.train_run`.

Every rank decodes the whole global batch and draws every augmentation for all of it (same RNG states on
every rank), then keeps its contiguous rows (`Ranks.take`). Dropout and drop-path masks are drawn for the
global batch and sliced (as probekit.distributed does for probes), each rank's loss is weighed by its share
b_r / B and one all-reduce sums the gradients: the update equals one process on the global batch. Encoders
with BatchNorm are refused (their batch statistics would be per rank).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from probekit.errors import ConfigError

__all__ = ["GlobalDropPath", "Ranks"]


class Ranks:
    """The data-parallel side of one run (world_size > 1): rank, global-batch rows, gradient and loss sums."""

    def __init__(self, rank: int, world_size: int):
        from probekit.distributed import DataParallel, DistEnv

        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise ConfigError(f"fine-tuning with world_size={world_size} needs an initialised process group",
                              hint="start the ranks with torchrun (or `probekit finetune --nodes N --gpus G`)")
        self.rank, self.world = int(rank), int(world_size)
        self.dp = DataParallel(DistEnv(self.rank, self.world, 0, torch.distributed.get_backend()))
        self.weight = 1.0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def attach(self, model, fp: str) -> None:
        """Same run on every rank (fingerprint), rank 0's weights everywhere, global-batch dropout masks."""
        import types

        from probekit.distributed import _global_dropout
        from probekit.errors import ProbeError

        bn = [n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if bn:
            raise ConfigError(f"data-parallel fine-tuning of an encoder with BatchNorm ({bn[0]}): its batch "
                              "statistics would be per rank, not the global batch's",
                              hint="fine-tune it in one process (no torchrun), or use a BatchNorm-free encoder")
        every: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(every, fp)
        if len(set(every)) > 1:
            raise ProbeError(f"data-parallel ranks disagree on the fine-tuning run (fingerprints {', '.join(every)})",
                             hint="start every rank with the same command, data and recipe")
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                torch.distributed.broadcast(t.data, src=0)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.forward = types.MethodType(_global_dropout(self.dp), m)

    def take(self, n: int) -> slice:
        """This rank's rows of a global batch of n (contiguous); sets the masks' offsets and the loss weight."""
        from probekit.distributed import shard_bounds

        if n < self.world:
            raise ConfigError(f"data-parallel fine-tuning on {self.world} ranks: a global batch of {n} clip(s) "
                              "leaves a rank without clips",
                              hint=f"use train_batch_size >= {self.world} and a training set whose last batch "
                                   f"has >= {self.world} clips, or fewer ranks")
        lo, hi = shard_bounds(n, self.rank, self.world)
        self.dp.global_n, self.dp.local_n, self.dp.offset = n, hi - lo, lo
        self.weight = (hi - lo) / n
        return slice(lo, hi)

    def global_loss(self, loss: torch.Tensor) -> torch.Tensor:
        t = torch.tensor([float(loss.detach()) * self.weight], dtype=torch.float64, device=loss.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t[0]

    def predict(self, score: Callable, split) -> np.ndarray:
        """`score(part)` of this rank's contiguous part of `split` (a SplitData), gathered once (rank order):
        every rank gets the scores of the whole split."""
        from probekit.distributed import gather_rows, shard_bounds

        lo, hi = shard_bounds(len(split.clips), self.rank, self.world)
        part = type(split)(split.clips[lo:hi], split.labels[lo:hi])
        return gather_rows(score(part) if hi > lo else None)

    def barrier(self) -> None:
        torch.distributed.barrier()


class GlobalDropPath:
    """While active, the ViT families' drop path draws its per-sample mask for the global batch and keeps
    this rank's rows (one process: the same draws)."""

    def __init__(self, ranks: Ranks | None, active: bool):
        self.ranks, self.active = ranks, active and ranks is not None
        self.saved = None

    def __enter__(self):
        if not self.active:
            return self
        from probekit.backbones import vit

        dp, self.saved = self.ranks.dp, vit.drop_path

        def drop_path(x, p, training):
            if p == 0.0 or not training or x.shape[0] != dp.local_n:
                return self.saved(x, p, training)
            keep = 1.0 - p
            mask = x.new_empty((dp.global_n,) + (1,) * (x.ndim - 1)).bernoulli_(keep)
            if keep > 0.0:
                mask.div_(keep)
            return x * mask[dp.offset : dp.offset + dp.local_n]

        vit.drop_path = drop_path
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            from probekit.backbones import vit

            vit.drop_path, self.saved = self.saved, None

"""Data-parallel probe training over torch.distributed (torchrun, or a SLURM job started by submitit).

`fit` turns this on by itself when the process runs under torchrun (WORLD_SIZE > 1): every rank walks the
same shuffled batch order (same seed, same epochs) and takes its own contiguous part of each global batch
(`shard_bounds`), so a cache reader reads only that rank's rows and online tokens run the frozen encoder only
on that rank's clips. Gradients are summed with one all-reduce per step after each rank weighs its own by
its share of the global batch (b_r / B): for every mean-reduced loss (CE, BCE over B x C, ASL "mean",
several heads, plus a parameter-only regulariser) the sum is exactly the gradient of the single-process loss
of the global batch, also for an uneven last batch (47 clips on 2 ranks: 24/47 and 23/47). The logged loss is
reduced the same way. Dropout masks are drawn for the whole global batch on every rank (same RNG state) and
each rank keeps its rows, so on CPU a run with N ranks equals the one-process run within float rounding.

Validation predictions are computed rank by rank and gathered once per evaluation; every rank then scores
the same full predictions (selection and pruning agree). Only rank 0 shows progress, writes checkpoints
and (in `probekit.api.evaluate`) records; every rank resumes from rank 0's checkpoint.

Backends: NCCL on CUDA (each rank on cuda:LOCAL_RANK), gloo on CPU.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probekit.errors import ConfigError, ProbeError

__all__ = ["DataParallel", "DistEnv", "data_parallel", "gather_rows", "init_from_env", "is_main", "rank",
           "shard_bounds", "world_size"]

_TIMEOUT_S = int(os.environ.get("PROBEKIT_DIST_TIMEOUT", "1800"))


@dataclass(frozen=True)
class DistEnv:
    """This process in the job: rank, world size, rank on its node, backend (None for a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"${name}={raw!r} is not an integer",
                          hint="torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; unset them for a single process") from None


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init_from_env(device: str = "auto") -> DistEnv:
    """Join the job torchrun (or `probekit.launch`) described in the environment: RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT. A single process (no WORLD_SIZE, or 1) gets DistEnv() and
    nothing is initialised. Idempotent: a process group already set up is reused as it is."""
    import torch.distributed as dist

    if _initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), dist.get_backend())
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistEnv()
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ConfigError(f"$RANK={rank} is not in 0..{world - 1} ($WORLD_SIZE={world})",
                          hint="start the ranks with torchrun (or `probekit probe --nodes/--gpus`)")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise ConfigError(f"$WORLD_SIZE={world} but ${missing[0]} is not set",
                          hint="start the ranks with torchrun (it sets MASTER_ADDR/MASTER_PORT), or unset WORLD_SIZE")
    from probekit._device import resolve_device

    dev = resolve_device(device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev.index if dev.index is not None else local)  # one GPU per rank
    dist.init_process_group(backend=backend, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=_TIMEOUT_S))
    return DistEnv(rank, world, local, backend)


def rank() -> int:
    """This process's rank (0 outside a job)."""
    return torch.distributed.get_rank() if _initialized() else _env_int("RANK", 0)


def world_size() -> int:
    """Processes in the job (1 outside a job)."""
    return torch.distributed.get_world_size() if _initialized() else _env_int("WORLD_SIZE", 1)


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one that writes records, checkpoints and logs."""
    return rank() == 0


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of `rank`'s contiguous part of n items: the first n % world ranks take one more
    (np.array_split's cut), so a rank's share of every full batch has the same size."""
    q, r = divmod(int(n), int(world))
    start = rank * q + min(rank, r)
    return start, start + q + (1 if rank < r else 0)


def gather_rows(local: np.ndarray | None) -> np.ndarray | None:
    """Concatenate each rank's rows in rank order (one all_gather); None parts are skipped."""
    if not _initialized() or torch.distributed.get_world_size() == 1:
        return local
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, local)
    parts = [p for p in parts if p is not None]
    return np.concatenate(parts) if parts else None


def _sum_(t: torch.Tensor) -> torch.Tensor:
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


class _ReducingOptimizer:
    """The run's optimiser with one gradient all-reduce before each step; everything else (param_groups,
    state_dict for checkpoints) is the wrapped optimiser's."""

    def __init__(self, inner, dp: DataParallel):
        self.inner, self.dp = inner, dp

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def step(self, *a, **k):
        self.dp.reduce_grads(self.inner)
        return self.inner.step(*a, **k)


def _global_dropout(dp: DataParallel):
    """nn.Dropout.forward drawing the mask of the whole global batch (as `F.dropout` draws it on CPU:
    bernoulli_(1 - p) over the full shape, then / (1 - p)) and keeping this rank's rows."""

    def forward(self, x):
        if not self.training or self.p == 0 or dp.global_n is None or x.shape[0] != dp.local_n:
            return torch.nn.functional.dropout(x, self.p, self.training, self.inplace)
        if self.p >= 1:
            return x * 0
        noise = torch.empty((dp.global_n, *x.shape[1:]), dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        noise.div_(1 - self.p)
        return x * noise[dp.offset : dp.offset + dp.local_n]

    return forward


class DataParallel:
    """One training run split over the ranks of a torch.distributed job (see the module docstring)."""

    def __init__(self, env: DistEnv):
        self.env = env
        self.inside = False  # True while `_Run.train_step` runs its own (single-process) body
        self.weight = 1.0  # this rank's share of the current global batch
        self.global_n: int | None = None
        self.local_n = 0
        self.offset = 0
        self.sum_reduced = False
        self._patched: list[torch.nn.Module] = []

    @property
    def is_main(self) -> bool:
        return self.env.is_main

    # ---- setup --------------------------------------------------------------------------------------
    def check_sizes(self, num_train: int, batch_size: int, drop_last: bool) -> None:
        """Every rank must get at least one clip of every global batch (an empty part has no loss)."""
        w = self.env.world_size
        ragged = 0 if (drop_last and num_train >= batch_size) else num_train % batch_size
        smallest = min(batch_size, num_train) if num_train < batch_size else batch_size
        if smallest < w or 0 < ragged < w:
            n = ragged if 0 < ragged < w else smallest
            raise ConfigError(
                f"data-parallel training on {w} ranks: a global batch of {n} clip(s) leaves a rank without clips "
                f"(batch_size={batch_size}, {num_train} training clips, drop_last={drop_last})",
                hint=f"use batch_size >= {w} and drop_last=true (or a batch size that divides the clips), or fewer ranks")

    def attach(self, run, fingerprint: str) -> None:
        """Prepare a `probekit.train.fit._Run` (after any resume): same run on every rank (fingerprint),
        rank 0's weights everywhere, the reducing optimiser and global-batch dropout."""
        cfg = run.config
        self.check_sizes(len(run.train_idx), cfg.batch_size, cfg.drop_last)
        self.sum_reduced = cfg.loss == "asl" and cfg.asl_reduction == "sum"
        if self.sum_reduced and run.probe.extra_loss() is not None:
            raise ConfigError(
                f"data-parallel training of {run.probe.name!r} with asl_reduction=sum: its regulariser would be "
                "counted once per rank", hint="use asl_reduction=mean, or train it in one process")
        import dataclasses

        facts = {"fingerprint": fingerprint, "steps": run.total, "batches per epoch": run.per_epoch,
                 "probe": run.probe.name, "training clips": len(run.train_idx),
                 "clips digest": hashlib.sha256(np.ascontiguousarray(run.train_idx, np.int64).tobytes()).hexdigest()[:12],
                 **{f"config.{k}": repr(v) for k, v in dataclasses.asdict(cfg).items()
                    if k not in ("device", "num_threads")},
                 **{f"param.{k}": repr(v) for k, v in run.probe.get_params().items()}}
        every: list[Any] = [None] * self.env.world_size
        torch.distributed.all_gather_object(every, facts)
        differ = sorted(k for k in set().union(*every) if len({repr(f.get(k)) for f in every}) > 1)
        if differ:
            k = next((k for k in differ if k != "fingerprint"), differ[0])
            raise ProbeError(
                f"data-parallel ranks disagree on the run: {', '.join(differ[:4])} differ (e.g. {k}: "
                + " vs ".join(f"rank {r} {f.get(k)!r}" for r, f in enumerate(every[:2])) + ")",
                hint="start every rank with the same command and data")
        with torch.no_grad():
            for t in [*run.probe.parameters(), *run.probe.buffers()]:
                torch.distributed.broadcast(t.data, src=0)
        run.optimizer = _ReducingOptimizer(run.optimizer, self)
        for m in run.probe.modules():
            if isinstance(m, torch.nn.Dropout):
                m.forward = types.MethodType(_global_dropout(self), m)
                self._patched.append(m)

    def detach(self, run) -> None:
        """Undo `attach` on the probe and run (the trained probe is a plain module again)."""
        for m in self._patched:
            m.__dict__.pop("forward", None)
        self._patched.clear()
        if isinstance(run.optimizer, _ReducingOptimizer):
            run.optimizer = run.optimizer.inner

    # ---- batches ------------------------------------------------------------------------------------
    def local_batches(self, data, request, batch_size: int, order: np.ndarray, draw_keys=None) -> Iterator:
        """This rank's part of each global batch of `order` (cut in batch_size pieces, a ragged last one
        kept): its clips only are read (or encoded). Sets the weights the next train step uses."""
        r, w = self.env.rank, self.env.world_size
        order = np.asarray(order, dtype=np.int64)
        full = len(order) // batch_size
        # draw_keys (a live source's random crops): cut like the clips, so each draw keeps its key
        keys = np.zeros((len(order), 3), np.int64) if draw_keys is None else np.asarray(draw_keys, np.int64)
        pieces = [(order[: full * batch_size].reshape(full, batch_size), batch_size,
                   keys[: full * batch_size].reshape(full, batch_size, 3))] if full else []
        if len(order) > full * batch_size:
            pieces.append((order[full * batch_size :].reshape(1, -1), len(order) - full * batch_size,
                           keys[full * batch_size :].reshape(1, len(order) - full * batch_size, 3)))
        for block, n, kblock in pieces:
            lo, hi = shard_bounds(n, r, w)
            mine = block[:, lo:hi].reshape(-1)
            extra = {} if draw_keys is None else {"draw_keys": kblock[:, lo:hi].reshape(len(mine), 3)}
            for b in data.batches(request, hi - lo, indices=mine, shuffle=False, drop_last=False, **extra):
                self.global_n, self.local_n, self.offset = n, hi - lo, lo
                self.weight = 1.0 if self.sum_reduced else (hi - lo) / n
                yield b

    # ---- steps --------------------------------------------------------------------------------------
    def train_step(self, run, batch, lr: float, step: int) -> float:
        """One step of the global batch: this rank's body of `run.train_step` (its optimiser all-reduces
        the weighted gradients before stepping); the loss of the global batch."""
        self.inside = True
        try:
            local = run.train_step(batch, lr, step)
        finally:
            self.inside = False
        # on the run's device: NCCL reduces CUDA tensors only
        return float(_sum_(torch.tensor([local * self.weight], dtype=torch.float64, device=run.device))[0])

    def reduce_grads(self, optimizer) -> None:
        """grad <- sum over ranks of weight_r * grad_r, in one all-reduce (a flag per parameter keeps a
        gradient no rank produced as None, as AdamW skips such a parameter in one process)."""
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if not params:
            return
        dev = params[0].device
        flat = torch.cat([
            *((p.grad.detach().reshape(-1).float() * self.weight) if p.grad is not None
              else torch.zeros(p.numel(), device=dev) for p in params),
            torch.tensor([float(p.grad is not None) for p in params], device=dev),
        ])
        _sum_(flat)
        used, pos = flat[-len(params):], 0
        for i, p in enumerate(params):
            n = p.numel()
            if used[i] > 0:
                g = flat[pos : pos + n].view_as(p).to(p.dtype)
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)
            pos += n

    # ---- evaluation ---------------------------------------------------------------------------------
    def predict(self, predict_fn: Callable, probe, data, indices, **kw) -> np.ndarray:
        """`predict_fn` (probekit.train.fit.predict) on this rank's part of `indices`, gathered once: every
        rank gets the scores of all clips in `indices` order."""
        idx = np.arange(data.num_clips, dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
        lo, hi = shard_bounds(len(idx), self.env.rank, self.env.world_size)
        mine = predict_fn(probe, data, idx[lo:hi], **kw) if hi > lo else None
        out = gather_rows(mine)
        if out is None:
            raise ProbeError("no clips to predict", hint="the indices given for evaluation are empty")
        return out


def data_parallel(device: str = "auto") -> DataParallel | None:
    """A DataParallel for this process when it runs as one of several ranks (torchrun's environment or an
    initialised process group), else None (one process: `fit` as always)."""
    if not _initialized() and _env_int("WORLD_SIZE", 1) <= 1:
        return None
    env = init_from_env(device)
    return DataParallel(env) if env.enabled else None



def barrier() -> None:
    """Wait for every rank (joining the job from the environment first); nothing in a single process."""
    if not _initialized() and _env_int("WORLD_SIZE", 1) <= 1:
        return
    init_from_env()
    torch.distributed.barrier()

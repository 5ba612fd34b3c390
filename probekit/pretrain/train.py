"""The BAT pretraining loop: DDP from the environment, EMA teacher, exact resume, checkpoints, logs.

One process (CPU or one GPU):

    probekit pretrain --config bat-tiny-fsdd --dataset fsdd --out runs/tiny
    python -m probekit.pretrain --config bat-tiny-fsdd --out runs/tiny

Several GPUs / nodes (the paper: 4 GPUs x 24 clips x 16 views, bf16):

    torchrun --nproc_per_node=4 -m probekit.pretrain --config bat-base --data-root /data/audioset --out runs/base
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
        -m probekit.pretrain --config bat-base --out runs/base

Run the same command with `--resume` after an interruption: the newest checkpoint in `OUT/checkpoints`
restores model, EMA teacher, optimizer, schedule, RNG state and step, and the data order is a pure
function of (seed, step, rank), so the resumed run continues exactly where the first one stopped.

Outputs in OUT: `log.csv` (losses, lr, EMA decay, steps/s), `tb/` (TensorBoard, when installed),
`checkpoints/step_<N>.pt` (resumable), `probe.csv` and `best.safetensors` (probe in the loop),
`init.safetensors` (the encoder before training: the matching random-init baseline), and the final encoder
`<config>.safetensors` (+ `<config>.md` card) that `get_backbone("bat", checkpoint=...)` loads.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from probekit._console import Bar
from probekit._device import resolve_device
from probekit._io import atomic_write, atomic_write_bytes
from probekit.datasets.base import Clip
from probekit.errors import CheckpointError, ConfigError, ProbekitError
from probekit.pretrain.config import PretrainConfig
from probekit.pretrain.data import ClipWaves, PretrainSpectrogram, StepSampler, _seed
from probekit.pretrain.export import export_encoder, write_card
from probekit.pretrain.masking import inverse_block_masks
from probekit.pretrain.model import BatStudent, ema_decay_at, ema_update, forward_losses, lr_at, make_teacher

LOG_COLUMNS = ("step", "loss", "global_loss", "local_loss", "lr", "ema_decay", "steps_per_s", "elapsed_s")

# Config fields that may differ between a run and its resumption (they change no number the run computes).
_RESUME_FREE = {
    "description",
    "data.data_root",
    "data.num_workers",
    "data.preload",
    "run.log_every",
    "run.save_every",
    "run.keep_checkpoints",
    "run.compile",
    "run.export",
    "run.probe_every",
    "run.probe_dataset",
    "run.probe_clips",
    "run.probe_val_clips",
    "run.probe_prototypes",
    "run.probe_steps",
}


@dataclass
class PretrainResult:
    """What a run produced."""

    out_dir: Path
    step: int  # optimizer steps completed
    checkpoint: (
        Path | None
    )  # the exported encoder (.safetensors); None on non-zero ranks or when stopped early
    log_csv: Path
    last_loss: float
    seconds: float
    best_checkpoint: Path | None = None
    probe_history: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- helpers


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _setup_distributed(device: str) -> tuple[_Dist, torch.device]:
    """Read torchrun's environment (RANK/WORLD_SIZE/LOCAL_RANK); one process needs none of it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    d = _Dist(rank=rank, world_size=world, local_rank=local)
    dev = resolve_device(device)  # ConfigError naming the value for 'tpu' or an absent CUDA
    if dev.type == "cuda" and (device == "auto" or dev.index is None):
        dev = torch.device(f"cuda:{local}")  # one GPU per torchrun process
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        d.initialized_here = True
    return d, dev


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _config_mismatch(saved: dict, current: dict) -> list[str]:
    a, b = _flatten(saved), _flatten(current)
    return sorted(k for k in set(a) | set(b) if k not in _RESUME_FREE and a.get(k) != b.get(k))


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    p = state["python"]
    random.setstate((p[-2], tuple(p[:-2]), p[-1]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_paths(out_dir: str | os.PathLike) -> list[Path]:
    """Resumable checkpoints of a run directory, oldest first."""
    d = Path(out_dir) / "checkpoints"
    return sorted(d.glob("step_*.pt")) if d.is_dir() else []


def load_training_checkpoint(path: str | os.PathLike) -> dict:
    """Read a resumable checkpoint (tensors and plain containers only; no code is unpickled)."""
    p = Path(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{p}: cannot read the pretraining checkpoint ({type(e).__name__}: {e})",
            hint="delete it to resume from the previous one",
        ) from e
    missing = {"student", "teacher", "optimizer", "scheduler", "step", "config"} - set(state)
    if missing:
        raise CheckpointError(f"{p}: not a probekit pretraining checkpoint (missing {sorted(missing)})")
    return state


class _CsvLog:
    """Append-only CSV; on resume the rows after the restored step are dropped (they will be redone)."""

    def __init__(self, path: Path, start_step: int, columns: Sequence[str]):
        self.path, self.columns = path, tuple(columns)
        rows = []
        if start_step > 0 and path.exists():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= start_step]
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=self.columns)
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in self.columns} for r in rows)
        atomic_write_bytes(path, buf.getvalue().encode())

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns).writerow({k: row.get(k, "") for k in self.columns})


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(out_dir / "tb"))


def _load_clips(cfg: PretrainConfig) -> list[Clip]:
    from probekit.datasets import get_dataset

    ds = get_dataset(cfg.data.dataset, data_root=cfg.data.data_root)
    return list(ds.clips(cfg.data.split))


# ---------------------------------------------------------------------------------------------- the run


def pretrain(
    config: PretrainConfig,
    out_dir: str | os.PathLike,
    *,
    device: str = "auto",
    resume: bool = False,
    stop_after: int | None = None,
    max_minutes: float | None = None,
    clips: Sequence[Clip] | None = None,
    output: str | os.PathLike | None = None,
    progress: bool = True,
    probe_fn: Callable[[nn.Module, int], dict] | None = None,
    threads: int | None = None,
) -> PretrainResult:
    """Pretrain a BAT encoder with `config`, writing logs, checkpoints and the final encoder to `out_dir`.

    Args:
        config: a `PretrainConfig` (see `get_config`).
        out_dir: run directory (created); holds log.csv, checkpoints/, tb/ and the exported encoder.
        device: "auto" (cuda:LOCAL_RANK when available, else CPU), "cpu", "cuda", "cuda:1", ...
        resume: continue from the newest checkpoint in out_dir/checkpoints (error if there is none).
        stop_after: stop (with a resumable checkpoint) once this many optimizer steps are done, without
            changing the schedule; None runs to `config.optim.steps` and exports the encoder.
        max_minutes: wall-clock budget; the run checkpoints and exports at the first step past it.
        clips: train on these clips instead of `config.data.dataset`'s split.
        output: path of the exported encoder (default OUT/<config name>.safetensors).
        progress: show the rich progress bar (rank 0 only).
        probe_fn: `fn(encoder, step) -> {"score": float, ...}` run every `config.run.probe_every` steps on
            rank 0; the best-scoring encoder is kept as OUT/best.safetensors. Default: the fast probe of
            `probekit.pretrain.monitor` when probe_every > 0.
        threads: torch CPU threads for this run (None leaves torch's setting).
    """
    cfg = config.validate()
    if threads is not None:
        torch.set_num_threads(threads)
    dctx, dev = _setup_distributed(device)
    out = Path(out_dir)
    if dctx.is_main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    try:
        return _run(
            cfg,
            out,
            dctx,
            dev,
            resume=resume,
            stop_after=stop_after,
            max_minutes=max_minutes,
            clips=clips,
            output=output,
            progress=progress,
            probe_fn=probe_fn,
        )
    finally:
        if dctx.initialized_here:
            dist.destroy_process_group()


@dataclass
class _State:
    """The trained objects and counters a checkpoint restores."""

    student: BatStudent
    teacher: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    start_step: int = 0
    probe_history: list[dict] = field(default_factory=list)
    best: dict | None = None  # {"score", "step"} of the best probe-in-the-loop encoder

    def checkpoint(self, cfg: PretrainConfig, dctx: _Dist, step: int) -> dict:
        """Everything a resume needs, as tensors and plain containers (loads with weights_only=True)."""
        return {
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": step,
            "config": cfg.to_dict(),
            "rng": _rng_state(),
            "world_size": dctx.world_size,
            "probe_history": self.probe_history,
            "best": self.best,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def _restore_or_init(cfg: PretrainConfig, out: Path, dctx: _Dist, dev: torch.device, resume: bool) -> _State:
    """Seed, build student/EMA teacher/optimiser/schedule, then either restore the newest checkpoint
    (refusing another config or world size) or, for a fresh run, export the untrained encoder."""
    o = cfg.optim
    torch.manual_seed(cfg.run.seed)
    random.seed(cfg.run.seed)
    np.random.seed(cfg.run.seed % 2**32)

    student = BatStudent(cfg).to(dev)
    teacher = make_teacher(student.encoder)
    # One group, weight decay on everything, as the official trainer (frozen tensors get no grad, no update).
    optimizer = torch.optim.AdamW(
        student.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay
    )
    schedule = {"lr": o.lr, "min_lr": o.min_lr, "warmup_steps": o.warmup_steps, "total_steps": o.steps}
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, **schedule) / o.lr)
    st = _State(student, teacher, optimizer, scheduler)

    if resume:
        found = checkpoint_paths(out)
        if not found:
            raise CheckpointError(
                f"{out / 'checkpoints'}: no checkpoint to resume from",
                hint="run without --resume to start a new run",
            )
        state = load_training_checkpoint(found[-1])
        bad = _config_mismatch(state["config"], cfg.to_dict())
        if bad:
            raise ConfigError(
                f"{found[-1]}: the run was started with a different config ({', '.join(bad)} differ)",
                hint="resume with the original settings or start a new run in another --out directory",
            )
        if state.get("world_size", 1) != dctx.world_size:
            raise ConfigError(
                f"{found[-1]}: saved with {state.get('world_size', 1)} processes, resuming with {dctx.world_size}",
                hint="resume with the same number of processes (the batches depend on it)",
            )
        student.load_state_dict(state["student"])
        teacher.load_state_dict(state["teacher"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(
            state["rng"][dctx.rank]
            if isinstance(state["rng"], list) and len(state["rng"]) > dctx.rank
            else state["rng"]
        )
        st.start_step = int(state["step"])
        st.probe_history = list(state.get("probe_history", []))
        st.best = state.get("best")
    elif dctx.is_main and checkpoint_paths(out):
        raise ConfigError(
            f"{out}: holds checkpoints of an earlier run",
            hint="pass --resume to continue it, or choose another --out directory",
        )
    elif dctx.is_main:
        # The exact starting point, for the fairest random-init baseline (same init, same architecture).
        export_encoder(
            student.encoder,
            out / "init.safetensors",
            cfg,
            {"config_name": cfg.name, "steps": 0, "dataset": None, "split": None, "encoder": "init",
             "seed": cfg.run.seed},
        )
    return st


def _wrap(st: _State, cfg: PretrainConfig, dctx: _Dist, dev: torch.device):
    """(student as trained: DDP and/or compiled, teacher forward, autocast dtype or None)."""
    model: nn.Module = st.student
    if dctx.enabled:
        model = nn.parallel.DistributedDataParallel(
            st.student, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    teacher_fwd = st.teacher
    if cfg.run.compile and dev.type == "cuda":
        model = torch.compile(model)
        teacher_fwd = torch.compile(st.teacher)
    autocast = torch.bfloat16 if (dev.type == "cuda" and cfg.run.precision == "bf16") else None
    return model, teacher_fwd, autocast


@dataclass
class _Data:
    clips: Sequence[Clip]
    loader: torch.utils.data.DataLoader
    spectrogram: nn.Module


def _build_data(cfg: PretrainConfig, clips: Sequence[Clip] | None, dctx: _Dist, dev: torch.device,
                start_step: int, progress: bool) -> _Data:
    """Waveforms, the step-indexed sampler (a pure function of seed, step and rank: exact resume), the
    loader and the on-device spectrogram."""
    if clips is None:
        clips = _load_clips(cfg)
    fill = (
        (cfg.encoder.frames - 1) * cfg.data.hop_length if cfg.data.fill == "repeat" else None
    )  # -> `frames` frames
    waves = ClipWaves(
        clips,
        sample_rate=cfg.data.sample_rate,
        random_roll=cfg.data.random_roll,
        preload=cfg.data.preload,
        max_seconds=cfg.data.max_seconds,
        fill_samples=fill,
        progress=progress and dctx.is_main,
    )
    sampler = StepSampler(
        len(waves),
        cfg.data.batch_size,
        seed=cfg.run.seed,
        rank=dctx.rank,
        world_size=dctx.world_size,
        start=start_step * cfg.optim.grad_accum,
    )
    loader = torch.utils.data.DataLoader(
        waves,
        batch_sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=ClipWaves.collate,
        pin_memory=dev.type == "cuda",
        persistent_workers=cfg.data.num_workers > 0,
        prefetch_factor=4 if cfg.data.num_workers > 0 else None,
    )
    spectrogram = PretrainSpectrogram(
        sample_rate=cfg.data.sample_rate,
        n_fft=cfg.data.n_fft,
        hop_length=cfg.data.hop_length,
        n_mels=cfg.encoder.n_mels,
        top_db=cfg.data.top_db,
        frames=cfg.encoder.frames,
    ).to(dev)
    return _Data(clips, loader, spectrogram)


def _step(step: int, it, st: _State, model, teacher_fwd, autocast, data: _Data, cfg: PretrainConfig,
          dctx: _Dist, dev: torch.device) -> tuple[float, float, float, float]:
    """One optimizer step (grad_accum micro-batches, masks seeded by (seed, micro-step, rank)), the
    optimiser/schedule step and the EMA update. Returns (global loss, local loss, lr used, EMA decay)."""
    o, m = cfg.optim, cfg.masking
    g_sum = l_sum = 0.0
    for a in range(o.grad_accum):
        micro = step * o.grad_accum + a
        wave = next(it).to(dev, non_blocking=True)
        clean = data.spectrogram(wave)
        gen = torch.Generator().manual_seed(_seed(cfg.run.seed, 3, micro, dctx.rank))
        masks = inverse_block_masks(
            clean.shape[0] * m.num_views,
            cfg.grid,
            mask_ratio=m.mask_ratio,
            block_size=m.block_size,
            centre_prob_adjust=m.centre_prob_adjust,
            generator=gen,
        ).to(dev)
        sync = model.no_sync() if (dctx.enabled and a < o.grad_accum - 1) else contextlib.nullcontext()
        with sync:
            g_loss, l_loss = forward_losses(model, teacher_fwd, clean, masks, m.num_views, autocast)
            ((g_loss + l_loss) / o.grad_accum).backward()
        g_sum += g_loss.item() / o.grad_accum
        l_sum += l_loss.item() / o.grad_accum
    if not math.isfinite(g_sum + l_sum):
        raise ProbekitError(
            f"pretraining diverged at step {step}: loss {g_sum + l_sum} (global {g_sum}, local {l_sum})",
            hint="lower optim.lr or lengthen optim.warmup_steps; resume from the last checkpoint",
        )
    if o.clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(st.student.parameters(), o.clip_norm)
    lr_used = st.optimizer.param_groups[0]["lr"]
    st.optimizer.step()
    st.scheduler.step()
    st.optimizer.zero_grad(set_to_none=True)
    decay = ema_decay_at(
        step, decay_start=cfg.ema.decay_start, decay_end=cfg.ema.decay_end, warmup_steps=cfg.ema.warmup_steps
    )
    ema_update(st.teacher, st.student.encoder, decay)
    return g_sum, l_sum, lr_used, decay


class _Log:
    """Loss averages between log rows (all-reduced over ranks), log.csv, TensorBoard and the bar."""

    def __init__(self, out: Path, start_step: int, dctx: _Dist, dev: torch.device, t_start: float):
        self.dctx, self.dev, self.t_start = dctx, dev, t_start
        self.csv = _CsvLog(out / "log.csv", start_step, LOG_COLUMNS) if dctx.is_main else None
        self.tb = _tensorboard(out) if dctx.is_main else None
        self.sums = torch.zeros(2, dtype=torch.float64)
        self.n, self.last_loss = 0, float("nan")
        self.t_window, self.steps_window = time.perf_counter(), 0

    def add(self, g: float, l: float) -> None:  # noqa: E741 - the local loss
        self.steps_window += 1
        self.sums += torch.tensor([g, l], dtype=torch.float64)
        self.n += 1

    def row(self, step: int, lr_used: float, decay: float, bar) -> None:
        """Write one row: the mean losses since the last row, lr, EMA decay, steps/s."""
        if self.dctx.enabled:
            red = torch.tensor([self.sums[0], self.sums[1], self.n], dtype=torch.float64, device=self.dev)
            dist.all_reduce(red)
            g_avg, l_avg = (red[0] / red[2]).item(), (red[1] / red[2]).item()
        else:
            g_avg, l_avg = (self.sums[0] / self.n).item(), (self.sums[1] / self.n).item()
        now = time.perf_counter()
        rate = self.steps_window / max(now - self.t_window, 1e-9)
        self.last_loss = g_avg + l_avg
        row = {
            "step": step,
            "loss": f"{self.last_loss:.6f}",
            "global_loss": f"{g_avg:.6f}",
            "local_loss": f"{l_avg:.6f}",
            "lr": f"{lr_used:.6e}",
            "ema_decay": f"{decay:.7f}",
            "steps_per_s": f"{rate:.4f}",
            "elapsed_s": f"{now - self.t_start:.1f}",
        }
        if self.csv is not None:
            self.csv.write(row)
        if self.tb is not None:
            for k in ("loss", "global_loss", "local_loss", "lr", "ema_decay", "steps_per_s"):
                self.tb.add_scalar(f"pretrain/{k}", float(row[k]), step)
        bar.update(
            step,
            info=f"loss {self.last_loss:.4f} (g {g_avg:.3f} l {l_avg:.3f}) lr {lr_used:.2e} "
            f"ema {decay:.5f} {rate:.2f} step/s",
        )
        self.sums.zero_()
        self.n, self.t_window, self.steps_window = 0, now, 0


def _save(st: _State, cfg: PretrainConfig, dctx: _Dist, out: Path, step_done: int) -> None:
    """Write a resumable checkpoint (rank 0) and keep the newest `run.keep_checkpoints`."""
    if not dctx.is_main:
        return
    path = out / "checkpoints" / f"step_{step_done:07d}.pt"
    blob = st.checkpoint(cfg, dctx, step_done)
    atomic_write(path, lambda f: torch.save(blob, f), binary=True)
    for old in checkpoint_paths(out)[: -max(1, cfg.run.keep_checkpoints)]:
        old.unlink(missing_ok=True)


def _out_of_time(deadline: float | None, dctx: _Dist, dev: torch.device) -> bool:
    out_of_time = deadline is not None and time.perf_counter() >= deadline
    if dctx.enabled and deadline is not None:  # every rank must stop at the same step
        flag = torch.tensor([1.0 if out_of_time else 0.0], device=dev)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        out_of_time = bool(flag.item())
    return out_of_time


def _run(cfg, out, dctx, dev, *, resume, stop_after, max_minutes, clips, output, progress, probe_fn):
    """The pretraining run behind `pretrain`: restore or initialise, build the data, then step, log,
    probe and checkpoint until `end_step` (or the wall-clock budget), and export the encoder when done."""
    t_start = time.perf_counter()
    o = cfg.optim
    st = _restore_or_init(cfg, out, dctx, dev, resume)
    model, teacher_fwd, autocast = _wrap(st, cfg, dctx, dev)
    data = _build_data(cfg, clips, dctx, dev, st.start_step, progress)
    end_step = o.steps if stop_after is None else min(o.steps, stop_after)
    log = _Log(out, st.start_step, dctx, dev, t_start)
    if probe_fn is None and cfg.run.probe_every > 0 and dctx.is_main:
        from probekit.pretrain.monitor import make_probe_fn

        probe_fn = make_probe_fn(cfg, device=dev)
    prober = None if probe_fn is None else _Prober(probe_fn, cfg, out, log.tb, st)

    it = iter(data.loader)
    log.t_window = time.perf_counter()
    deadline = None if max_minutes is None else t_start + 60.0 * max_minutes
    step = st.start_step
    st.student.train()
    with Bar(f"pretrain {cfg.name}", end_step, completed=st.start_step, enabled=progress and dctx.is_main) as bar:
        while step < end_step:
            g, l, lr_used, decay = _step(step, it, st, model, teacher_fwd, autocast, data, cfg, dctx, dev)  # noqa: E741
            step += 1
            log.add(g, l)
            out_of_time = _out_of_time(deadline, dctx, dev)
            if step % cfg.run.log_every == 0 or step == end_step or out_of_time:
                log.row(step, lr_used, decay, bar)
            else:
                bar.update(step)
            if (prober is not None and dctx.is_main and cfg.run.probe_every > 0
                    and (step % cfg.run.probe_every == 0 or step == end_step)):
                prober(step)
                st.student.train()
            if step % cfg.run.save_every == 0 or step == end_step or out_of_time:
                _save(st, cfg, dctx, out, step)
            if out_of_time:
                break

    if log.tb is not None:
        log.tb.close()
    exported = None
    finished = step >= o.steps or (stop_after is None)
    if dctx.is_main and finished:
        exported = Path(output) if output is not None else out / f"{cfg.name}.safetensors"
        encoder = st.student.encoder if cfg.run.export == "student" else st.teacher
        meta = _run_metadata(cfg, step, data.clips, time.perf_counter() - t_start, dctx.world_size, log.last_loss)
        export_encoder(encoder, exported, cfg, meta)
        write_card(exported.with_suffix(".md"), cfg, meta, st.probe_history)
    if dctx.enabled:
        dist.barrier()
    best_path = out / "best.safetensors" if st.best is not None else None
    return PretrainResult(
        out_dir=out,
        step=step,
        checkpoint=exported,
        log_csv=out / "log.csv",
        last_loss=log.last_loss,
        seconds=time.perf_counter() - t_start,
        best_checkpoint=best_path,
        probe_history=st.probe_history,
    )


def _run_metadata(
    cfg: PretrainConfig, step: int, clips: Sequence[Clip], seconds: float, world: int, last_loss: float
) -> dict:
    """Provenance stored in the exported checkpoint and its card: data, steps, sizes, when."""
    return {
        "config_name": cfg.name,
        "steps": step,
        "planned_steps": cfg.optim.steps,
        "stopped_early": step < cfg.optim.steps,  # the wall-clock budget ended the run before the schedule
        "dataset": cfg.data.dataset,
        "split": cfg.data.split,
        "num_clips": len(clips),
        "clips_seen": step * cfg.optim.grad_accum * cfg.data.batch_size * world,
        "views_per_clip": cfg.masking.num_views,
        "world_size": world,
        "encoder": cfg.run.export,
        "frames": cfg.encoder.frames,
        "last_loss": None if not math.isfinite(last_loss) else round(last_loss, 6),
        "train_seconds": round(seconds, 1),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


class _Prober:
    """The probe in the loop: scores the encoder every `run.probe_every` steps, appends probe.csv and
    TensorBoard, and keeps the best-scoring encoder as best.safetensors (its score is the probe's
    validation part of the probe dataset, see `probekit.pretrain.monitor`)."""

    def __init__(self, probe_fn: Callable[[nn.Module, int], dict], cfg: PretrainConfig, out: Path, tb,
                 st: _State):
        self.probe_fn, self.cfg, self.out, self.tb, self.st = probe_fn, cfg, out, tb, st
        self.csv = out / "probe.csv"

    def __call__(self, step: int) -> None:
        cfg, st = self.cfg, self.st
        encoder = st.student.encoder if cfg.run.export == "student" else st.teacher
        encoder.eval()
        with torch.no_grad():
            scores = dict(self.probe_fn(encoder, step))
        row = {"step": step, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in scores.items()}}
        st.probe_history.append(row)
        new_file = not self.csv.exists()
        with self.csv.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new_file:
                w.writeheader()
            w.writerow(row)
        if self.tb is not None:
            for k, v in scores.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"probe/{k}", float(v), step)
        score = float(scores.get("score", float("nan")))
        if math.isfinite(score) and (st.best is None or score > st.best["score"]):
            st.best = {"score": score, "step": step}
            meta = {
                "config_name": cfg.name,
                "steps": step,
                "dataset": cfg.data.dataset,
                "split": cfg.data.split,
                "probe": json.dumps(row),
                "encoder": cfg.run.export,
            }
            export_encoder(encoder, self.out / "best.safetensors", cfg, meta)

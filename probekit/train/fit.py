"""One training loop for every probe.

AdamW (0.9, 0.999) with weight decay only on the classifier weights, a per-step schedule (linear warmup
from 0, cosine decay to a floor -- the official BAT `RiseRunDecay`), bf16 autocast on CUDA only, seeded
and deterministic on CPU, rich progress, optional validation with `on_eval` callbacks (the tuner raises
optuna.TrialPruned there; exceptions propagate), and resumable checkpoints: a run restarted with the same
`checkpoint_dir` continues from its last checkpoint and ends with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probekit import distributed as _distributed
from probekit._console import Bar
from probekit._device import resolve_device
from probekit._io import atomic_write
from probekit.cache.live import require_live
from probekit.errors import ConfigError, ProbeError
from probekit.probes.base import Probe
from probekit.probes.constraints import BOOL, Interval, Options, Pair, check_params, check_space
from probekit.tokens import TokenData
from probekit.train.events import SELECTION_METRIC as EVENT_SELECTION_METRIC
from probekit.train.events import check_fit, is_event_result
from probekit.train.events import selection_value as event_selection_value
from probekit.train.losses import LOSSES, check_task_data, make_loss, task_loss
from probekit.train.metrics import EvalResult, at_least_as_good, evaluate_scores, score_metrics_of
from probekit.train.sampling import SAMPLERS, epoch_order, epoch_size, sample_weights
from probekit.train.schedule import warmup_cosine

CHECKPOINT_NAME = "fit_state.pt"
_CHECKPOINT_VERSION = 1


_POS, _NONNEG = Interval("real", 0, None, "neither"), Interval("real", 0, None)
_POS_INT = Interval("int", 1, None)
# What each TrainConfig field accepts (types first: `probe --set lr=abc` must not reach `lr > 0`).
TRAIN_CONSTRAINTS: dict[str, list[Any]] = {
    "lr": [_POS], "weight_decay": [_NONNEG], "batch_size": [_POS_INT], "steps": [_POS_INT, None],
    "epochs": [_POS, None], "warmup_steps": [Interval("int", 0, None)],
    "warmup_fraction": [Interval("real", 0, 1, "left"), None], "min_lr": [_NONNEG],
    "betas": [Pair(Interval("real", 0, 1, "left"))], "loss": [Options(LOSSES)],
    "asl_gamma_neg": [_NONNEG], "asl_gamma_pos": [_NONNEG], "asl_clip": [_NONNEG], "asl_eps": [_NONNEG],
    "asl_reduction": [Options(("mean", "sum"))], "asl_focal_grad": [BOOL], "label_smoothing": [Interval("real", 0, 1, "left")],
    "selection": [Options(("last", "best_val"))], "eval_every": [_POS_INT, None],
    "eval_batch_size": [_POS_INT], "log_every": [_POS_INT], "checkpoint_every": [_POS_INT],
    "drop_last": [BOOL], "seed": [Interval("int")], "device": [str], "amp": [BOOL],
    "num_threads": [Interval("int", 0, None), None],
    "sampler": [Options(SAMPLERS)], "sampler_epoch": [_POS_INT, None],
}


@dataclass
class TrainConfig:
    """How a probe is trained. Defaults are the official BAT probe recipe where one exists."""

    lr: float = 1e-3
    weight_decay: float = 0.05  # classifier weights only
    batch_size: int = 48
    steps: int | None = 2000  # optimizer steps; ignored when `epochs` is given
    epochs: float | None = None  # passes over the training indices (steps = ceil(epochs * batches/epoch))
    warmup_steps: int = 0
    warmup_fraction: float | None = None  # when given, warmup = round(fraction * total steps)
    min_lr: float = 1e-6  # the schedule's floor (also the lr of the very first warmup step, as official)
    betas: tuple[float, float] = (0.9, 0.999)
    loss: str = "auto"  # auto (bce multi-label / ce multi-class), bce, ce, asl
    asl_gamma_neg: float = 1.0  # BAT's AudioSet probe setting 1/0/0, averaged
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.0
    asl_eps: float = 1e-8
    asl_reduction: str = "mean"
    asl_focal_grad: bool = False  # True: gradient through the focal weight (Bird-MAE's ASL)
    label_smoothing: float = 0.0
    selection: str = "last"  # "last" step or "best_val" (needs validation data)
    eval_every: int | None = None  # validate every N steps (and at the end); None: only at the end
    eval_batch_size: int = 256
    log_every: int = 50  # history gets the mean training loss every N steps
    checkpoint_every: int = 1000  # with checkpoint_dir: save resumable state every N steps and at the end
    drop_last: bool = True  # drop the ragged last batch of an epoch (when there is at least one full batch)
    seed: int = 0
    device: str = "auto"  # auto: cuda when available, else cpu
    amp: bool = True  # bf16 autocast, on CUDA only
    num_threads: int | None = None  # torch CPU threads during the run (restored after)
    # which clips an epoch draws (probekit.train.sampling): shuffle, or the official weighted samplers
    # class_balanced (BAT hsn) / label_weighted (BAT as2m); sampler_epoch: draws per epoch (None: all clips)
    sampler: str = "shuffle"
    sampler_epoch: int | None = None

    def validate(self) -> None:
        """Refuse a value of the wrong type or range, naming the key and the value (ConfigError)."""

        def bad(msg: str, hint: str | None = None):
            raise ConfigError(f"TrainConfig: {msg}", hint=hint)

        check_params("TrainConfig", dataclasses.asdict(self), TRAIN_CONSTRAINTS, ConfigError)
        if self.epochs is None and self.steps is None:
            bad("give steps >= 1 or epochs > 0")
        if self.device not in ("auto", "cpu") and not self.device.startswith(("cuda", "mps")):
            bad(f"device={self.device!r} must be auto, cpu or cuda[:N]")


    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (unknown names raise ConfigError)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - names
        if unknown:
            from probekit.errors import suggest

            k = min(unknown)
            raise ConfigError(f"unknown training option {k!r}", hint=suggest(k, names))
        return dataclasses.replace(self, **changes)

    def schedule(self, num_train: int) -> tuple[int, int, int]:
        """(total steps, warmup steps, batches per epoch) for `num_train` training clips."""
        bs = self.batch_size
        num_train = epoch_size(self.sampler, self.sampler_epoch, num_train)  # a weighted sampler's epoch
        per_epoch = num_train // bs if (self.drop_last and num_train >= bs) else math.ceil(num_train / bs)
        per_epoch = max(1, per_epoch)
        total = math.ceil(self.epochs * per_epoch) if self.epochs is not None else int(self.steps)
        warm = (
            round(self.warmup_fraction * total)
            if self.warmup_fraction is not None
            else int(self.warmup_steps)
        )
        return max(1, total), min(warm, total), per_epoch


def check_search_space(probe_cls: type[Probe], space: dict[str, Any]) -> None:
    """Refuse a tuning search space (probe hyperparameters and TrainConfig fields) holding a value the
    probe or TrainConfig would refuse -- before a study starts (redteam #77: `--space lr=abc`)."""
    constraints = {**TRAIN_CONSTRAINTS, **probe_cls.param_constraints_of()}
    check_space(f"probe {probe_cls.name!r}", space, constraints, ConfigError)


def lr_at(step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float) -> float:
    """Learning rate of optimizer step `step` (0-based): `probekit.train.schedule.warmup_cosine`
    (the official `RiseRunDecay`) under the TrainConfig names."""
    return warmup_cosine(step, peak=base_lr, floor=min_lr, warmup=warmup_steps, total=total_steps)


@dataclass
class FitResult:
    """What `fit` returns. `probe` holds the selected weights (last step, or best validation)."""

    probe: Probe
    steps_run: int
    best_step: int | None
    history: list[dict[str, Any]]
    val_score: float | None
    seconds: float
    val_metrics: EvalResult | None = None
    config: TrainConfig | None = None
    resumed_from: int | None = None  # the step a checkpoint resumed from


def make_optimizer(groups: list[dict[str, Any]], *, lr: float, betas: tuple[float, float] = (0.9, 0.999)):
    """AdamW; the fused kernel (one pass per step, deterministic on CPU) where torch offers it for the
    parameters' device -- K=10,000 CGP has 23.5 M parameters, so the optimiser step is not negligible."""
    params = [p for g in groups for p in g["params"]]
    dev = params[0].device.type if params else "cpu"
    if dev in ("cpu", "cuda") and all(p.dtype in (torch.float32, torch.float64) for p in params):
        try:
            return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
        except (RuntimeError, TypeError):  # older torch or unsupported device: the default implementation
            pass
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def _probe_device(probe: Probe) -> torch.device:
    for p in probe.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def predict(
    probe: Probe,
    data: TokenData,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    amp: bool = True,
    progress: bool = False,
) -> np.ndarray:
    """Scores of `probe` on `data` (rows in `indices` order): sigmoid for multi-label data, softmax for
    multi-class. Shape (n, C), or (n, H, C) for probes with several heads (the layer sweep).
    `device` defaults to where the probe's parameters are; `progress` shows a rich bar."""
    require_live(probe, data)
    dev = _probe_device(probe) if device is None else resolve_device(device)
    was_training = probe.training
    probe.to(dev).eval()
    use_amp = amp and dev.type == "cuda"
    out = []
    total = data.num_clips if indices is None else len(indices)
    bar = Bar(f"predict {probe.name}", math.ceil(total / batch_size), unit="batches", enabled=progress,
              transient=True)
    try:
        for i, batch in enumerate(data.batches(probe.request, batch_size, indices=indices, shuffle=False)):
            bar.update(i + 1)
            batch = batch.to(dev)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = probe(batch)
            logits = logits.float()
            out.append((torch.sigmoid(logits) if data.multilabel else torch.softmax(logits, dim=-1)).cpu())
    finally:
        bar.close()
        probe.train(was_training)
    if not out:
        raise ProbeError("no clips to predict", hint="the indices given for evaluation are empty")
    return torch.cat(out).numpy()


def _selection_value(metrics: EvalResult) -> float:
    if is_event_result(metrics):  # event tasks: frame mAP_micro, as the official trainer (train.events)
        return event_selection_value(metrics)
    # multi-head probes are selected on the mean over heads (one snapshot serves every head)
    if metrics.heads:
        return float(np.mean(list(metrics.head_primaries().values())))
    return metrics.primary


def _fingerprint(probe: Probe, config: TrainConfig, train_idx: np.ndarray, has_val: bool) -> str:
    cfg = dataclasses.asdict(config)
    for k in ("device", "num_threads", "checkpoint_every", "eval_batch_size", "amp"):
        cfg.pop(k, None)
    if not cfg.get("asl_focal_grad"):  # added later: at its default, checkpoints written before still resume
        cfg.pop("asl_focal_grad", None)
    for k, default in (("sampler", "shuffle"), ("sampler_epoch", None)):  # likewise
        if cfg.get(k) == default:
            cfg.pop(k, None)
    blob = json.dumps(
        {
            "probe": probe.name,
            "params": {k: repr(v) for k, v in probe.get_params().items()},
            "config": {k: repr(v) for k, v in cfg.items()},
            "train": hashlib.sha256(np.ascontiguousarray(train_idx, dtype=np.int64).tobytes()).hexdigest(),
            "val": has_val,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_probe_matches(probe: Probe, data: TokenData, what: str) -> None:
    sa = probe.shape_args
    for key, have in (
        ("num_classes", data.num_classes),
        ("embed_dim", data.embed_dim),
        ("num_layers", data.num_layers),
    ):
        if key in sa and sa[key] != have:
            raise ProbeError(
                f"probe {probe.name!r} was built for {key}={sa[key]} but the {what} data has {key}={have}",
                hint="build the probe with make_probe(..., num_layers=data.num_layers, embed_dim=data.embed_dim, "
                "num_classes=data.num_classes)",
            )


@dataclass
class _FitState:
    """Everything of a run that changes step by step and must survive a resume."""

    step: int = 0
    epoch: int = 0
    pos: int = 0  # batches done in the current epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float | None = None
    best_step: int | None = None
    best_state: dict[str, torch.Tensor] | None = None  # the probe's weights at best_step (best_val)
    best_metrics: EvalResult | None = None
    last_metrics: EvalResult | None = None
    loss_sum: float = 0.0  # training loss since the last history entry
    loss_count: int = 0
    seconds: float = 0.0  # training time of earlier (interrupted) sessions

    def state_dict(self) -> dict[str, Any]:
        """Plain containers and tensors only (the checkpoint loads with weights_only=True)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k in ("best_metrics", "last_metrics"):
            d[k] = None if d[k] is None else d[k].state_dict()
        return d

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, d[f.name])
        for k in ("best_metrics", "last_metrics"):
            v = getattr(self, k)
            setattr(self, k, None if v is None else _metrics_from_checkpoint(v))


def _metrics_from_checkpoint(d: dict[str, Any]) -> EvalResult:
    if "primary_name" in d:
        return EvalResult.from_state_dict(d)
    # written before EvalResult (a plain metrics dict with "per_head" for several heads): still resumable
    m = EvalResult.from_metrics({k: v for k, v in d.items() if k not in ("per_head", "per_head_primary")})
    if "per_head" in d:
        heads = {f"head{i + 1}": EvalResult.from_metrics(h) for i, h in enumerate(d["per_head"])}
        m = dataclasses.replace(m, heads=heads)
    return m


class _Checkpointer:
    """The resumable state of one run in `dir/fit_state.pt`, refused when it belongs to another run."""

    def __init__(self, directory: str | os.PathLike, fingerprint: str):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / CHECKPOINT_NAME
        self.fingerprint = fingerprint

    def resume(self, probe: Probe, optimizer, state: _FitState, device: torch.device) -> int | None:
        """Load a checkpoint into probe/optimizer/state/RNG; the step resumed from, or None if none."""
        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConfigError(
                f"{self.path}: cannot read the training checkpoint ({e})", hint="delete it to start over"
            ) from e
        if saved.get("version") != _CHECKPOINT_VERSION or saved.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                f"{self.path}: checkpoint belongs to a different run (probe, hyperparameters, training "
                "options or training clips differ)",
                hint="use a fresh checkpoint_dir, or delete the old checkpoint",
            )
        probe.load_state_dict(saved["probe"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        state.load_state_dict(saved["state"])
        return state.step

    def save(self, probe: Probe, optimizer, state: _FitState, device: torch.device, elapsed: float) -> None:
        st = state.state_dict()
        st["seconds"] = state.seconds + elapsed
        blob = {
            "version": _CHECKPOINT_VERSION,
            "fingerprint": self.fingerprint,
            "probe": {k: v.detach().cpu() for k, v in probe.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "state": st,
        }
        atomic_write(self.path, lambda f: torch.save(blob, f), binary=True)


class _Evaluator:
    """Scores the probe on the validation clips and keeps the best snapshot under "best_val"."""

    def __init__(self, data: TokenData, indices: np.ndarray | None, config: TrainConfig, device: torch.device):
        self.data, self.indices, self.config, self.device = data, indices, config, device
        self.dp = None  # data-parallel: each rank predicts its part, gathered once (probekit.distributed)

    def __call__(self, probe: Probe, state: _FitState) -> float:
        cfg = self.config
        task = getattr(probe, "task", None)
        event_task = getattr(self.data, "event_task", None)  # event tasks: scored as events (train.events)
        run_predict = predict if self.dp is None else (lambda *a, **k: self.dp.predict(predict, *a, **k))
        if task is not None:  # a sequence task (ASR: WER/CER, lower is better) scores itself
            metrics = task.evaluate(probe, self.data, self.indices, batch_size=cfg.eval_batch_size,
                                    device=self.device, amp=cfg.amp)
        elif event_task is not None:
            scores = run_predict(probe, self.data, self.indices, batch_size=cfg.eval_batch_size,
                                 device=self.device, amp=cfg.amp)
            metrics = event_task.evaluate(scores, self.indices, probe)
        else:
            scores = run_predict(probe, self.data, self.indices, batch_size=cfg.eval_batch_size,
                                 device=self.device, amp=cfg.amp)
            labels = self.data.labels if self.indices is None else self.data.labels[self.indices]
            metrics = evaluate_scores(scores, labels, self.data.multilabel, probe.head_names(),
                                      score_metrics=score_metrics_of(self.data))
        value = _selection_value(metrics)
        state.last_metrics = metrics
        if cfg.selection == "best_val" and (state.best_score is None or at_least_as_good(metrics, value,
                                                                                          state.best_score)):
            # ">=": a later step with an equal score wins, as the official trainer
            state.best_score, state.best_step, state.best_metrics = value, state.step, metrics
            state.best_state = {k: v.detach().cpu().clone() for k, v in probe.state_dict().items()}
        return value


@dataclass
class _Run:
    """What `fit` sets up once: the probe on its device, optimiser, loss, schedule and batch order."""

    probe: Probe
    data: TokenData
    config: TrainConfig
    train_idx: np.ndarray
    device: torch.device
    optimizer: Any
    loss_fn: Callable
    total: int
    warmup: int
    per_epoch: int
    dp: Any = None  # probekit.distributed.DataParallel when this is one rank of several

    def epoch_batches(self, epoch: int, start: int) -> Iterator:
        """The batches of `epoch` from batch `start` on (a pure function of seed and epoch: resumable)."""
        bs, idx = self.config.batch_size, self.train_idx
        # a reader may shuffle its own way (CacheReader(shuffle_order="shard")): also a pure function of seed and epoch
        custom = getattr(self.data, "epoch_order", None)
        order = None
        if self.config.sampler != "shuffle":  # a weighted sampler decides which clips (beats a reader's order)
            order = self.sampled_epoch(epoch)
            idx = order
        elif custom is not None:
            order = custom(idx, [self.config.seed, epoch])
        if order is None:
            order = idx[np.random.default_rng([self.config.seed, epoch]).permutation(len(idx))]
        drop_last = self.config.drop_last and len(idx) >= bs
        stop = self.per_epoch * bs if drop_last else len(order)
        # Within a batch the order is irrelevant to training; ascending indices let chunked (Zarr) readers
        # fetch neighbouring clips together.
        full = (len(order) // bs) * bs
        order[:full] = np.sort(order[:full].reshape(-1, bs), axis=1).reshape(-1)
        extra = {}
        if getattr(self.data, "crop", None):  # a live source's random crop: one key per draw (seed, epoch, position)
            pos = np.arange(start * bs, stop, dtype=np.int64)
            extra["draw_keys"] = np.stack([np.full_like(pos, self.config.seed), np.full_like(pos, epoch), pos], 1)
        if self.dp is not None:  # data-parallel: this rank's part of each global batch
            return self.dp.local_batches(self.data, self.probe.request, bs, order[start * bs : stop], **extra)
        return iter(self.data.batches(self.probe.request, bs, indices=order[start * bs : stop], shuffle=False,
                                      drop_last=False, **extra))

    def sampled_epoch(self, epoch: int) -> np.ndarray:
        """The clips a weighted sampler draws in `epoch` (weights computed once per run)."""
        cfg = self.config
        if getattr(self, "_weights", None) is None:
            self._weights = sample_weights(cfg.sampler, np.asarray(self.data.labels)[self.train_idx],
                                           bool(self.data.multilabel))
        n = epoch_size(cfg.sampler, cfg.sampler_epoch, len(self.train_idx))
        return epoch_order(cfg.sampler, self._weights, self.train_idx, seed=cfg.seed, epoch=epoch, num_samples=n)

    def batches(self, state: _FitState) -> Iterator:
        """The remaining batches of the run, epoch after epoch, from where `state` stands (the caller
        advances `state.step` and `state.pos` after each batch)."""
        it = None
        while state.step < self.total:
            if it is None or state.pos >= self.per_epoch:
                if it is not None:
                    state.epoch, state.pos = state.epoch + 1, 0
                it = self.epoch_batches(state.epoch, state.pos)
            batch = next(it, None)
            if batch is None:  # epoch exhausted early (ragged end without drop_last)
                state.pos = self.per_epoch
                continue
            yield batch

    def lr(self, step: int) -> float:
        cfg = self.config
        return warmup_cosine(step, peak=cfg.lr, floor=cfg.min_lr, warmup=self.warmup, total=self.total)

    def train_step(self, batch, lr: float, step: int) -> float:
        """One optimiser step on `batch` at learning rate `lr`; the loss."""
        if self.dp is not None and not self.dp.inside:  # weighs, all-reduces; the global batch's loss
            return self.dp.train_step(self, batch, lr, step)
        probe, device = self.probe, self.device
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        probe.train()
        use_amp = self.config.amp and device.type == "cuda"
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = probe(batch)
        logits = logits.float()
        task = getattr(probe, "task", None)
        if task is not None:  # a sequence task (ASR: CTC on (B, T', C) log-probabilities) computes its loss
            loss = task.loss(logits, batch)
        elif logits.ndim == 3 and not getattr(probe, "frame_wise", False):  # one head per output: each trains alone
            loss = sum(self.loss_fn(logits[:, h], batch.labels) for h in range(logits.shape[1]))
        else:
            loss = self.loss_fn(logits, batch.labels)
        extra = probe.extra_loss()
        if extra is not None:
            loss = loss + extra.float()
        if not torch.isfinite(loss):
            raise ProbeError(
                f"training loss is {loss.item()} at step {step} (probe {probe.name!r}, lr {lr:.3g})",
                hint="lower the learning rate or check the tokens for NaN/inf",
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def _setup(probe: Probe, data: TokenData, config: TrainConfig, train_idx: np.ndarray) -> _Run:
    """Device, optimiser, loss and schedule of a run; seeds torch."""
    total, warmup, per_epoch = config.schedule(len(train_idx))
    device = resolve_device(config.device)
    task = getattr(probe, "task", None)
    loss_fn = task_loss(probe, config.loss) if task is not None or config.loss == "ctc" else make_loss(
        config.loss,
        multilabel=data.multilabel,
        asl_gamma_neg=config.asl_gamma_neg,
        asl_gamma_pos=config.asl_gamma_pos,
        asl_clip=config.asl_clip,
        asl_eps=config.asl_eps,
        asl_reduction=config.asl_reduction,
        asl_focal_grad=config.asl_focal_grad,
        label_smoothing=config.label_smoothing,
    )
    probe.to(device)
    optimizer = make_optimizer(probe.param_groups(config.weight_decay), lr=config.lr, betas=tuple(config.betas))
    torch.manual_seed(config.seed)
    return _Run(probe, data, config, train_idx, device, optimizer, loss_fn, total, warmup, per_epoch)


def _check_inputs(probe, data, config, train_indices, val_data, val_indices):
    """Validated (train indices, validation data, validation indices)."""
    config.validate()
    if not isinstance(probe, Probe):
        raise ProbeError(
            f"fit needs a probekit Probe, got {type(probe).__name__}", hint="build one with make_probe"
        )
    _check_probe_matches(probe, data, "training")
    require_live(probe, data)  # a probe that trains inside the encoder (VQT) cannot read a token cache
    check_task_data(probe, data, "training")
    check_fit(probe, data)  # frame-wise probes on event tasks only, and only they
    train_idx = (
        np.arange(data.num_clips, dtype=np.int64)
        if train_indices is None
        else np.asarray(train_indices, np.int64)
    )
    if train_idx.size == 0:
        raise ProbeError("no training clips", hint="train_indices is empty")
    if val_indices is not None and val_data is None:
        val_data = data
    val_idx = None
    if val_data is not None:
        _check_probe_matches(probe, val_data, "validation")
        require_live(probe, val_data)
        check_task_data(probe, val_data, "validation")
        check_fit(probe, val_data)
        val_idx = None if val_indices is None else np.asarray(val_indices, np.int64)
    elif config.selection == "best_val":
        raise ConfigError(
            "selection='best_val' needs validation data", hint="pass val_data/val_indices or use 'last'"
        )
    return train_idx, val_data, val_idx


def fit(
    probe: Probe,
    data: TokenData,
    *,
    config: TrainConfig | None = None,
    train_indices: Sequence[int] | np.ndarray | None = None,
    val_data: TokenData | None = None,
    val_indices: Sequence[int] | np.ndarray | None = None,
    on_eval: Callable[[int, float], None] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> FitResult:
    """Train `probe` on `data` (clips `train_indices`, default all).

    Args:
        probe: from `make_probe`; trained in place and returned in the result.
        data: training tokens (TokenData).
        config: TrainConfig (defaults if None).
        val_data, val_indices: validation clips (val_data defaults to `data` when only indices are given).
            Evaluated every `config.eval_every` steps and at the end.
        on_eval: called as on_eval(step, value) after each validation (value: the primary metric, percent).
            Exceptions propagate (the tuner prunes trials this way).
        checkpoint_dir: resumable state is saved there every `config.checkpoint_every` steps; an existing
            checkpoint of the same run (same probe, config and train indices) is resumed.
        progress: show a rich progress bar.

    Returns:
        FitResult with the selected weights loaded into `probe`.
    """
    config = config or TrainConfig()
    train_idx, val_data, val_idx = _check_inputs(probe, data, config, train_indices, val_data, val_indices)
    old_threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    t0 = time.perf_counter()
    dp = _distributed.data_parallel(config.device)  # None unless one of several torchrun ranks
    progress = progress and (dp is None or dp.is_main)
    run = _setup(probe, data, config, train_idx)
    evaluator = None if val_data is None else _Evaluator(val_data, val_idx, config, run.device)
    state, checkpointer, resumed_from = _FitState(), None, None
    if checkpoint_dir is not None:
        checkpointer = _Checkpointer(checkpoint_dir, _fingerprint(probe, config, train_idx, evaluator is not None))
        resumed_from = checkpointer.resume(probe, run.optimizer, state, run.device)
    if dp is not None:  # after the resume: every rank read rank 0's checkpoint
        dp.attach(run, _fingerprint(probe, config, train_idx, evaluator is not None))
        run.dp = dp
        if evaluator is not None:
            evaluator.dp = dp

    bar = Bar(probe.name, run.total, completed=state.step, unit="steps", enabled=progress)
    samples_seen, rate_t0 = 0, time.perf_counter()
    info, last_val = None, ""
    try:
        for batch in run.batches(state):
            lr = run.lr(state.step)
            loss = run.train_step(batch.to(run.device), lr, state.step)
            state.step, state.pos = state.step + 1, state.pos + 1
            state.loss_sum, state.loss_count = state.loss_sum + loss, state.loss_count + 1
            samples_seen += int(batch.labels.shape[0])
            step = state.step
            is_eval = evaluator is not None and (
                (config.eval_every and step % config.eval_every == 0) or step == run.total)
            entry = _log(state, config, lr, is_eval, evaluator, probe, run.total)
            if entry is not None:
                rate = samples_seen / max(1e-9, time.perf_counter() - rate_t0)
                if "val" in entry:
                    last_val = f" val {entry['val_metric']} {entry['val']:.2f}"
                info = f"loss {entry['loss']:.4f}{last_val} {rate:,.0f} samples/s"
            bar.update(step, info=info)
            if checkpointer is not None and (step % config.checkpoint_every == 0 or step == run.total) and (
                    dp is None or dp.is_main):
                checkpointer.save(probe, run.optimizer, state, run.device, time.perf_counter() - t0)
            if is_eval and on_eval is not None:
                on_eval(step, entry["val"])
        bar.update(state.step)
    finally:
        bar.close()
        if dp is not None:
            dp.detach(run)
        if config.num_threads:
            torch.set_num_threads(old_threads)
    return _finish(probe, config, state, resumed_from, state.seconds + (time.perf_counter() - t0))


def _log(state: _FitState, config: TrainConfig, lr: float, is_eval: bool, evaluator: _Evaluator | None,
         probe: Probe, total: int) -> dict[str, Any] | None:
    """The history entry of this step (mean loss since the last one, lr, validation), or None."""
    step = state.step
    if not (step % config.log_every == 0 or step == total or is_eval):
        return None
    entry = {"step": step, "loss": state.loss_sum / max(1, state.loss_count), "lr": lr}
    state.loss_sum, state.loss_count = 0.0, 0
    if is_eval:
        entry["val"] = evaluator(probe, state)
        m = state.last_metrics
        entry["val_metric"] = EVENT_SELECTION_METRIC if is_event_result(m) else m.primary_name
    state.history.append(entry)
    return entry


def _finish(probe: Probe, config: TrainConfig, state: _FitState, resumed_from: int | None,
            seconds: float) -> FitResult:
    """Load the selected weights (best validation or last step) and describe the run."""
    if config.selection == "best_val" and state.best_state is not None:
        probe.load_state_dict(state.best_state)
        val_score, val_metrics = state.best_score, state.best_metrics
    else:
        val_metrics = state.last_metrics
        val_score = _selection_value(val_metrics) if val_metrics else None
    probe.eval()
    return FitResult(
        probe=probe,
        steps_run=state.step,
        best_step=state.best_step if config.selection == "best_val" else state.step,
        history=list(state.history),
        val_score=val_score,
        seconds=seconds,
        val_metrics=val_metrics,
        config=config,
        resumed_from=resumed_from,
    )

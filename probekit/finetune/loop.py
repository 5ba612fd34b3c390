"""One fine-tuning run (one seed, one fold): the official training step on live inputs, with exact resume.

Per optimizer step (engine/trainer.py): `grad_accumulation_steps` micro-batches, each decoded ->
(waveform augmentation) -> frontend -> time roll / mixup / SpecAugment masks -> encoder + head under
autocast (bf16, or fp16 with a gradient scaler, on CUDA; float32 on CPU) -> loss on float logits /
accumulation -> backward; then optional gradient clipping, the learning rate of every group (layer-wise
decay x warmup + cosine, RiseRunDecay), AdamW step, zero grad, optional EMA update, validation (best_val)
and a checkpoint every `checkpoint_every` steps.

A checkpoint (RUN_DIR/ckpt-<step>/) holds the model (and EMA) weights in safetensors and the rest in
state.pt: optimizer, fp16 gradient scaler, step, data position (pass, batch), the torch (CPU and CUDA),
numpy and Python RNG states, best validation score and history. RUN_DIR/latest names the newest complete
one (written last, atomically), so a run killed at any moment resumes from a whole checkpoint and then
draws the same numbers as a run that was never stopped: on CPU the two end bit-identical.
The last and best models are RUN_DIR/last.safetensors and RUN_DIR/best.safetensors.

Data parallelism (torchrun; `world_size` > 1, process group initialised): every rank walks the same global
batch order with the same RNG states, decodes the whole global batch, runs the frontend and draws every
augmentation (time roll, mixup pairs with the reversed global batch, SpecAugment masks, waveform gain and
noise) for the whole global batch, then keeps its contiguous rows (`data.shard`) for the encoder (the costly
part). Dropout and drop-path masks are drawn for the global batch too and sliced, each rank weighs its loss
by its share of the global batch (b_r / B) and one all-reduce sums the gradients before clipping: the update
is that of one process on the global batch (on CPU within float rounding). Encoders must be BatchNorm-free
(batch statistics would be per rank; refused). Rank 0 alone writes checkpoints, best/last weights and logs;
every rank resumes from rank 0's checkpoint (the RNG states are the same on every rank).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random as _random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from probekit.errors import ConfigError

__all__ = ["RunData", "RunResult", "SplitData", "train_run", "predict_scores", "load_weights"]

CHECKPOINT_FORMAT = 1


@dataclass
class SplitData:
    clips: list
    labels: np.ndarray  # (n,) int64 class indices, or (n, C) multi-hot


@dataclass
class RunData:
    """What one run reads: the (frozen) backbone, the frontend its inputs go through, the splits."""

    backbone: Any
    frontend: Any
    num_classes: int
    multilabel: bool
    train: SplitData
    test: SplitData | None = None
    val: SplitData | None = None
    tag: str = ""  # names the data in the fingerprint (dataset identity, fold)


@dataclass
class RunResult:
    metrics: dict[str, Any] | None  # test metrics of the selected model (None when stopped early)
    steps: int
    seconds: float
    last_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_val: float | None = None
    best_step: int | None = None
    resumed_from: int | None = None
    stopped: bool = False
    last_path: Path | None = None
    best_path: Path | None = None
    drop_path_applied: bool = False
    scores: np.ndarray | None = None
    losses: list[float] = field(default_factory=list)  # loss of the global batch per optimizer step


# ---------------------------------------------------------------------------------------------- pieces
def _loss_fn(recipe, multilabel: bool) -> Callable:
    name = recipe.loss_name
    if name == "auto":
        name = "bce" if multilabel else "ce"
    if name == "asl":
        from probekit.train.losses import AsymmetricLoss

        # the official fine-tuning ASL: AsymmetricLossMultiLabel(gamma_neg=1, gamma_pos=0, clip=0.0), mean
        asl = AsymmetricLoss(gamma_neg=1.0, gamma_pos=0.0, clip=0.0, eps=1e-8, reduction="mean")
        return lambda p, y: asl(p, y)
    if name == "bce":
        return lambda p, y: F.binary_cross_entropy_with_logits(p, y)
    if multilabel:
        raise ConfigError(f"finetune recipe {recipe.name!r}: loss 'ce' needs multi-class data",
                          hint="--set loss=bce or --set loss=asl")
    ls = float(recipe.label_smoothing or 0.0)
    return lambda p, y: F.cross_entropy(p, y, label_smoothing=ls)


def _targets(labels: np.ndarray, rows, num_classes: int, multilabel: bool, soft: bool) -> torch.Tensor:
    y = labels[np.asarray(rows)]
    if multilabel:
        return torch.as_tensor(y, dtype=torch.float32)
    t = torch.as_tensor(y, dtype=torch.long)
    # mixup needs one-hot targets (official ESC50/SpeechCommands datasets: one_hot_labels=use_mixup)
    return F.one_hot(t, num_classes).float() if soft else t


def _amp(recipe, device: torch.device):
    if device.type != "cuda" or recipe.amp == "none":
        return None
    return torch.float16 if recipe.amp == "fp16" else torch.bfloat16


def _scaler(recipe, device: torch.device):
    """torch.amp.GradScaler for amp=fp16 (CUDA only: refused elsewhere), else None."""
    if recipe.amp != "fp16":
        return None
    if device.type != "cuda":
        raise ConfigError(f"finetune recipe {recipe.name!r}: amp=fp16 (float16 with a gradient scaler) runs on CUDA "
                          f"only, not on {device.type}", hint="--set amp=bf16 or --set amp=none, or --device cuda")
    return torch.amp.GradScaler(device.type)


def _fingerprint(data: RunData, recipe, seed: int) -> str:
    skip = {"checkpoint_every", "train_num_workers", "val_num_workers", "test_num_workers", "compile",
            "save_model", "eval_batch_size", "test_batch_size", "val_batch_size", "source"}
    doc = {
        "recipe": {k: v for k, v in recipe.to_dict().items() if k not in skip},
        "seed": int(seed),
        "backbone": data.backbone.cache_key(),
        "tag": data.tag,
        "train": [c.id for c in data.train.clips],
    }
    return hashlib.blake2b(json.dumps(doc, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _save_weights(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    from safetensors.torch import save

    from probekit._io import atomic_write_bytes

    atomic_write_bytes(path, save(tensors, metadata=meta))


# ---------------------------------------------------------------------------------------------- scoring
@torch.no_grad()
def predict_scores(model, split: SplitData, data: RunData, recipe, device: torch.device, *, workers: int = 0
                   ) -> np.ndarray:
    """(n, C) probabilities (sigmoid for multi-label, softmax for multi-class) of the model in eval mode."""
    from probekit.finetune.data import feature_batches

    was = model.training
    model.eval()
    n = len(split.clips)
    bs = recipe.eval_batch_size
    batches = [list(range(i, min(n, i + bs))) for i in range(0, n, bs)]
    out = np.zeros((n, data.num_classes), dtype=np.float32)
    amp = _amp(recipe, device)
    for rows, feats, valid in feature_batches(split.clips, data.frontend, data.backbone.sample_rate, batches,
                                              workers=workers, device=device):
        with torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None):
            logits = model(feats.to(device, non_blocking=True), valid)
        logits = logits.float()
        p = torch.sigmoid(logits) if data.multilabel else torch.softmax(logits, dim=-1)
        out[rows.numpy()] = p.cpu().numpy()
    model.train(was)
    return out


def _metrics(scores: np.ndarray, split: SplitData, multilabel: bool) -> dict[str, Any]:
    from probekit.train.metrics import compute_metrics

    return compute_metrics(scores, split.labels, multilabel)


# ---------------------------------------------------------------------------------------------- checkpoint
class _State:
    def __init__(self):
        self.step = 0  # optimizer steps done
        self.micro = 0  # micro-batches done
        self.epoch = 0  # pass over the training clips
        self.pos = 0  # batches of this pass done
        self.best: float | None = None
        self.best_step: int | None = None
        self.history: list[dict[str, float]] = []
        self.last_loss = float("nan")
        self.losses: list[float] = []


def _rng_payload(np_rng: np.random.RandomState, py_rng: _random.Random, device: torch.device) -> dict:
    name, keys, pos, has_gauss, gauss = np_rng.get_state()
    ver, internal, gauss_next = py_rng.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": [int(ver), list(internal), gauss_next],
    }


def _restore_rng(d: dict, np_rng: np.random.RandomState, py_rng: _random.Random, device: torch.device) -> None:
    torch.set_rng_state(d["torch"])
    if d["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(d["cuda"], device)
    name, keys, pos, has_gauss, gauss = d["numpy"]
    np_rng.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    ver, internal, gauss_next = d["python"]
    py_rng.setstate((ver, tuple(internal), gauss_next))


def _save_checkpoint(run_dir: Path, fp: str, st: _State, model, ema, optimizer, np_rng, py_rng, device,
                     scaler=None) -> Path:
    from probekit._io import atomic_write_bytes, atomic_write_text

    d = run_dir / f"ckpt-{st.step:08d}"
    d.mkdir(parents=True, exist_ok=True)
    meta = {"fingerprint": fp, "step": str(st.step)}
    _save_weights(d / "model.safetensors", model.weights(), meta)
    if ema is not None:
        _save_weights(d / "ema.safetensors", ema.weights(), meta)
    payload = {
        "format": CHECKPOINT_FORMAT, "fingerprint": fp, "step": st.step, "micro": st.micro, "epoch": st.epoch,
        "pos": st.pos, "best": st.best, "best_step": st.best_step, "history": st.history,
        "last_loss": st.last_loss, "losses": st.losses, "optimizer": optimizer.state_dict(),
        "rng": _rng_payload(np_rng, py_rng, device),
        # fp16: the loss scale and its growth tracker, so a resumed run scales (and skips steps) as a straight one
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(d / "state.pt", buf.getvalue())
    atomic_write_text(run_dir / "latest", d.name)  # the switch: only now is this checkpoint the one to resume
    for old in run_dir.glob("ckpt-*"):
        if old != d and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return d


def _load_checkpoint(run_dir: Path, fp: str, st: _State, model, ema, optimizer, np_rng, py_rng, device,
                     scaler=None) -> int | None:
    latest = run_dir / "latest"
    if not latest.is_file():
        return None
    d = run_dir / latest.read_text().strip()
    try:
        payload = torch.load(d / "state.pt", map_location="cpu", weights_only=True)
        weights = load_weights(d / "model.safetensors")
    except Exception as e:  # noqa: BLE001 - any unreadable file: name it
        raise ConfigError(f"{d}: the fine-tuning checkpoint cannot be read ({type(e).__name__}: {e})",
                          hint=f"delete {run_dir} to start over") from None
    if payload.get("format") != CHECKPOINT_FORMAT or payload.get("fingerprint") != fp:
        raise ConfigError(f"{d}: the checkpoint belongs to another fine-tuning run (other recipe, seed, backbone "
                          "or data)", hint=f"pass another run directory, or delete {run_dir} to start over")
    model.load_state_dict(weights)
    if ema is not None:
        ema.load_state_dict(load_weights(d / "ema.safetensors"))
    optimizer.load_state_dict(payload["optimizer"])
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    for k in ("step", "micro", "epoch", "pos", "best", "best_step", "history", "last_loss"):
        setattr(st, k, payload[k])
    st.losses = list(payload.get("losses", []))
    _restore_rng(payload["rng"], np_rng, py_rng, device)
    return st.step


# ---------------------------------------------------------------------------------------------- the run
def build_optimizer(model, recipe):
    """AdamW over the official parameter groups; every group carries its `lr_scale`."""
    from probekit.finetune.optim import param_groups

    groups = param_groups(model.named_for_groups(), num_blocks=model.num_blocks, family=model.family,
                          weight_decay=recipe.weight_decay, layer_decay=recipe.lr_layer_decay)
    for g in groups:
        g.pop("names")
    return torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay,
                             betas=(recipe.adam_beta1, recipe.adam_beta2))


@torch.no_grad()
def _ema_update(ema, model, decay: float) -> None:
    """The official ema_update: parameters and buffers (num_batches_tracked copied)."""
    for pa, p in zip(ema.parameters(), model.parameters()):
        pa.data = decay * pa.data + (1.0 - decay) * p.data
    for (n, ba), (_, b) in zip(ema.named_buffers(), model.named_buffers()):
        ba.data = b.data if n.split(".")[-1] == "num_batches_tracked" else decay * ba.data + (1.0 - decay) * b.data


def _optimizer_step(st: _State, loss, model, ema, optimizer, recipe, ranks=None, scaler=None) -> None:
    """Clip (optional), the scheduled rate of every group, AdamW, zero grad, EMA (official train_step order).
    With data-parallel `ranks`: first the gradient all-reduce, and the logged loss is the global batch's.
    With an fp16 `scaler`: gradients are unscaled before clipping; the step is skipped on inf/NaN gradients
    (torch.amp.GradScaler, as Lightning's 16-mixed precision and fairseq's fp16 fine-tuning do)."""
    from probekit.finetune.optim import scheduled_lr

    if ranks is not None:
        ranks.dp.reduce_grads(optimizer)  # weights already in the losses: a plain sum (same scale on every rank)
        loss = ranks.global_loss(loss)
    if recipe.grad_clip_norm:
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip_norm)
    for g in optimizer.param_groups:
        g["lr"] = scheduled_lr(st.step, lr=recipe.lr, min_lr=recipe.min_lr, warmup=recipe.lr_warmup_steps,
                               total=recipe.optimization_steps, lr_scale=g["lr_scale"])
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    st.step += 1
    st.last_loss = float(loss.detach())
    st.losses.append(st.last_loss)
    # fp16: an overflowing step is skipped by the scaler (it backs off); diverged once the scale is spent
    if not math.isfinite(st.last_loss) and (scaler is None or scaler.get_scale() < 1.0):
        raise ConfigError(f"fine-tuning diverged at step {st.step} (loss {st.last_loss})",
                          hint="lower the learning rate (--set lr=...) or clip gradients (--set grad_clip_norm=1.0)")
    if ema is not None:
        _ema_update(ema, model, recipe.ema_decay)


def _clear(run_dir: Path) -> None:
    """Remove resume state (checkpoints and the `latest` pointer)."""
    for old in [*run_dir.glob("ckpt-*"), run_dir / "latest"]:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


def _build(data: RunData, recipe, device: torch.device):
    """(model, EMA copy or None, AdamW) of a run; the head is drawn from the seeded global RNG."""
    from probekit.finetune.model import FinetuneModel

    model = FinetuneModel(data.backbone, data.num_classes, head_norm=recipe.head_norm,
                          head_dropout=recipe.head_dropout, drop_path=recipe.path_dropout_rate).to(device)
    model.train()
    ema = None
    if recipe.ema_decay is not None:
        ema = FinetuneModel(data.backbone, data.num_classes, head_norm=recipe.head_norm,
                            head_dropout=recipe.head_dropout).to(device)
        ema.load_state_dict(model.state_dict())
        ema.eval().requires_grad_(False)
    return model, ema, build_optimizer(model, recipe)


def _train_batches(data: RunData, recipe, batches, np_rng, workers: int, device: torch.device):
    """(rows, features, valid frames) per batch; waveform augmentation first when the recipe has it."""
    from probekit.finetune.data import feature_batches, wave_batches, waves_to_features

    sr = data.backbone.sample_rate
    if recipe.augment and (recipe.use_color_noise or recipe.use_random_gain):
        for rows, w in wave_batches(data.train.clips, sr, batches, workers=workers, device=device):
            yield (rows, *waves_to_features(w, data.frontend, recipe, np_rng=np_rng))
    else:
        yield from feature_batches(data.train.clips, data.frontend, sr, batches, workers=workers, device=device)


def _refuse(data: RunData, recipe) -> None:
    if recipe.frame_wise_task:
        raise ConfigError(f"finetune recipe {recipe.name!r} is frame-wise (event detection)",
                          hint="fine-tuning scores clip-level datasets; use a clip-level recipe")
    if recipe.selection == "best_val" and data.val is None:
        raise ConfigError(f"finetune recipe {recipe.name!r} selects on validation data, but there is no validation "
                          "split", hint="--set selection=last")
    if not data.train.clips:
        raise ConfigError("fine-tuning has no training clips", hint="check the dataset's train split")


def _forward_backward(model, x, y, valid, loss_fn, amp, accum: int, *, ranks, drop_path, scaler) -> torch.Tensor:
    """One micro-batch (the whole global batch, augmented): this rank's rows through the model, loss, backward."""
    weight = 1.0
    if ranks is not None:
        mine = ranks.take(len(x))
        x, y, valid, weight = x[mine], y[mine], valid[mine], ranks.weight
    with drop_path, torch.autocast(device_type=x.device.type, dtype=amp, enabled=amp is not None):
        logits = model(x, valid)
    loss = loss_fn(logits.float(), y)
    # b_r / B: the summed gradients of the ranks are the gradient of the global batch's mean loss
    scaled = loss * weight / accum
    (scaler.scale(scaled) if scaler is not None else scaled).backward()
    return loss


def train_run(data: RunData, recipe, *, seed: int, run_dir: str | Path, device: torch.device | str = "cpu",
              workers: int = 0, resume: bool = True, stop_after: int | None = None, rank: int = 0,
              world_size: int = 1, log: Callable[[str], None] | None = None) -> RunResult:
    """Fine-tune a copy of `data.backbone` with `recipe`; score the selected model on `data.test`.

    stop_after: stop (resumably: a checkpoint is written) once this many optimizer steps are done.
    rank, world_size: this process in a data-parallel job (torch.distributed initialised; see the module
        docstring); every rank must call with the same arguments and a shared `run_dir`.
    """
    from probekit._device import resolve_device
    from probekit.finetune.augment import augment_features
    from probekit.finetune.data import batch_order

    _refuse(data, recipe)
    device = resolve_device(device)
    from probekit.finetune.ddp import GlobalDropPath, Ranks

    ranks = Ranks(rank, world_size) if world_size > 1 else None
    main = ranks is None or ranks.main
    log = log if main else None
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    # every random number of the run comes from these, seeded here (as the official seed_everything)
    torch.manual_seed(seed)
    np_rng = np.random.RandomState(seed)
    py_rng = _random.Random(seed)

    scaler = _scaler(recipe, device)
    model, ema, optimizer = _build(data, recipe, device)
    loss_fn = _loss_fn(recipe, data.multilabel)
    amp = _amp(recipe, device)
    # one-hot float targets for mixup (official one_hot_labels=use_mixup) and for BCE/ASL on multi-class data
    soft = (recipe.augment and recipe.use_mixup) or recipe.loss_name in ("asl", "bce")
    accum = recipe.grad_accumulation_steps
    total = recipe.optimization_steps

    st = _State()
    fp = _fingerprint(data, recipe, seed)
    resumed = (_load_checkpoint(run_dir, fp, st, model, ema, optimizer, np_rng, py_rng, device, scaler)
               if resume else None)
    if not resume and main:
        _clear(run_dir)
    if ranks is not None:
        ranks.barrier()  # nobody reads run_dir while rank 0 clears it
        ranks.attach(model, fp)
    n_train = len(data.train.clips)
    scored = ema if ema is not None else model
    best_path = run_dir / "best.safetensors"
    stopped = False

    def scores_of(split: SplitData) -> np.ndarray:
        def score(part):
            return predict_scores(scored, part, data, recipe, device, workers=workers)

        return score(split) if ranks is None else ranks.predict(score, split)

    def validate() -> None:
        scores = scores_of(data.val)
        m = _metrics(scores, data.val, data.multilabel)
        v = float(m[m["primary"]])
        st.history.append({"step": float(st.step), f"val_{m['primary']}": v})
        if st.best is None or v >= st.best:  # official is_best: new >= old
            st.best, st.best_step = v, st.step
            if main:
                _save_weights(best_path, scored.weights(), {"step": str(st.step), "val": repr(v)})

    drop_path = GlobalDropPath(ranks, model.drop_path_applied)
    while st.step < total and not stopped:
        order = batch_order(n_train, recipe.train_batch_size, st.epoch, seed, sampler=recipe.sampler,
                            labels=data.train.labels, multilabel=data.multilabel)
        # the whole global batch on every rank: augmentation draws for all of it, then this rank's rows
        for rows, feats, valid in _train_batches(data, recipe, order[st.pos:], np_rng, workers, device):
            x = feats.to(device, non_blocking=True)
            y = _targets(data.train.labels, rows.numpy(), data.num_classes, data.multilabel, soft).to(device)
            with torch.no_grad():
                x, y = augment_features(x, y, recipe, np_rng=np_rng, py_rng=py_rng)
            loss = _forward_backward(model, x, y, valid, loss_fn, amp, accum, ranks=ranks, drop_path=drop_path,
                                     scaler=scaler)
            st.micro += 1
            st.pos += 1
            if st.micro % accum:
                continue
            _optimizer_step(st, loss, model, ema, optimizer, recipe, ranks, scaler)
            if recipe.selection == "best_val" and (st.step % recipe.val_frequency == 0 or st.step == total):
                validate()
            if log is not None and (st.step % max(1, total // 20) == 0 or st.step == total):
                log(f"step {st.step}/{total} loss {st.last_loss:.4f} lr {optimizer.param_groups[-1]['lr']:.2e}")
            done = st.step >= total
            due = recipe.checkpoint_every and st.step % recipe.checkpoint_every == 0 and not done
            halt = stop_after is not None and st.step >= stop_after and not done
            if (due or halt) and main:
                _save_checkpoint(run_dir, fp, st, model, ema, optimizer, np_rng, py_rng, device, scaler)
            if (due or halt) and ranks is not None:
                ranks.barrier()  # a rank killed after this resumes from the same checkpoint as rank 0
            if halt:
                stopped = True
            if done or halt:
                break
        else:
            st.epoch += 1
            st.pos = 0

    result = RunResult(None, st.step, time.perf_counter() - t0, st.last_loss, list(st.history), st.best,
                       st.best_step, resumed, stopped, None, None, model.drop_path_applied, losses=list(st.losses))
    if not stopped:
        _finish(result, run_dir, data, recipe, scored, scores_of, ranks)
        result.seconds = time.perf_counter() - t0
    return result


def _finish(result: RunResult, run_dir: Path, data: RunData, recipe, scored, scores_of, ranks) -> None:
    """The end of a finished run: last weights, the selected model scored on the test split, resume state
    removed (rank 0 writes and removes; every rank scores)."""
    main = ranks is None or ranks.main
    best_path = run_dir / "best.safetensors"
    last_path = run_dir / "last.safetensors"
    if main:
        _save_weights(last_path, scored.weights(), {"step": str(result.steps)})
    if ranks is not None:
        ranks.barrier()  # best.safetensors is complete before any rank reloads it
    result.last_path = last_path
    if recipe.selection == "best_val" and best_path.is_file():
        scored.load_state_dict(load_weights(best_path))  # the official temp_save_path reload
        result.best_path = best_path
    if data.test is not None:
        scores = scores_of(data.test)
        result.metrics = _metrics(scores, data.test, data.multilabel)
        result.scores = scores
    if ranks is not None:
        ranks.barrier()  # every rank has read best.safetensors
    if main:
        _clear(run_dir)  # a finished run needs no resume state (the weights are in last/best.safetensors)

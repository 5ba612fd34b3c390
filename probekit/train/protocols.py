"""Named training protocols (REFERENCE.md section 4) and `run_protocol`, which trains a probe under one
and evaluates it on the test split.

Selection never looks at the test split: "last" takes the final step, "best_val" picks the step with the
best validation score on the official validation split (`val=`) or, without one, on a held-out stratified
part of the training clips, and "cv" cross-validates over the dataset's folds. A probe with several heads
(the layer sweep) has its reported head chosen the same way -- on the validation split, or on a held-out
part of train (seeded) when there is none -- and only that head's test score is reported; the per-head
test curve stays in `metrics.heads` for plotting.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probekit._registry import Registry
from probekit.datasets import birdset as _birdset  # the hsn preset is declared beside the dataset
from probekit.errors import ConfigError
from probekit.probes.base import Probe, make_probe
from probekit.tokens import TokenData
from probekit.train.data import ConcatTokens, holdout_split
from probekit.train.fit import FitResult, TrainConfig, fit, predict
from probekit.train.losses import check_task_data
from probekit.train.metrics import EvalResult, evaluate_scores, score_metrics_of


@dataclass(frozen=True)
class Protocol:
    """A named recipe: training options + whether it cross-validates + the headline metric.

    How the reported model is selected lives in one place, `train.selection` ("last" | "best_val");
    `selection` reads "cv" for cross-validating protocols and `train.selection` otherwise.
    """

    name: str
    description: str
    train: TrainConfig
    cv: bool  # cross-validate over the dataset's folds (each fold is trained to its last step)
    metric: str  # "mAP" | "accuracy" | "auto" (mAP for multi-label data, accuracy for multi-class)
    val_fraction: float = (
        0.1  # held-out part of train for best_val when there is no official validation split
    )
    source: str = ""

    @property
    def selection(self) -> str:
        return "cv" if self.cv else self.train.selection


_BAT = "BAT_ICML2026 configs/{}/*_cgp_config.yaml + engine/trainer.py"


class _ProtocolRegistry(Registry):
    def __getitem__(self, name: str) -> Protocol:  # PROTOCOLS[name] reads as the dict it used to be
        return self.get(name)


PROTOCOLS: Registry[Protocol] = _ProtocolRegistry(
    "protocol", ConfigError, hint="probekit.train.list_protocols() names them")
for _p in (
        Protocol(
            "as20k",
            "AudioSet-20k: 20,000 steps, batch 48, warmup 500, wd 0.05, ASL 1/0/0; last step; macro mAP",
            TrainConfig(
                batch_size=48,
                steps=20000,
                warmup_steps=500,
                weight_decay=0.05,
                loss="asl",
                asl_gamma_neg=1.0,
                asl_gamma_pos=0.0,
                asl_clip=0.0,
                asl_reduction="mean",
                selection="last",
                checkpoint_every=1000,
            ),
            False,
            "mAP",
            source=_BAT.format("as20k"),
        ),
        Protocol(
            "as2m",
            "AudioSet-2M: 200,000 steps, batch 96, warmup 2,000, wd 0.05, ASL 1/0/0, label-weighted sampler "
            "(200,000 draws per epoch without replacement); last step; macro mAP",
            TrainConfig(
                batch_size=96,
                steps=200000,
                warmup_steps=2000,
                weight_decay=0.05,
                loss="asl",
                asl_gamma_neg=1.0,
                asl_gamma_pos=0.0,
                asl_clip=0.0,
                asl_reduction="mean",
                selection="last",
                checkpoint_every=2000,
                sampler="label_weighted",  # BAT data/factory.py (as2m): WeightedRandomSampler, 200,000 draws
                sampler_epoch=200_000,
                drop_last=False,  # the official DataLoader keeps an epoch's ragged last batch (200,000 = 2,083 x 96 + 32)
            ),
            False,
            "mAP",
            source="BAT paper appendix; sampler: BAT data/factory.py (as2m)",
        ),
        Protocol(
            "esc50",
            "ESC-50: 4,000 steps, batch 48, warmup 400, wd 0.2, cross-entropy; 5-fold CV; accuracy mean +- std",
            TrainConfig(
                batch_size=48, steps=4000, warmup_steps=400, weight_decay=0.2, loss="ce", selection="last"
            ),
            True,
            "accuracy",
            source=_BAT.format("esc50"),
        ),
        Protocol(
            "sc2",
            "Speech Commands v2 (12): 10,000 steps, batch 256, warmup 1,000, wd 0.05, cross-entropy; "
            "validate every 500 steps, best accuracy -> test",
            TrainConfig(
                batch_size=256,
                steps=10000,
                warmup_steps=1000,
                weight_decay=0.05,
                loss="ce",
                selection="best_val",
                eval_every=500,
            ),
            False,
            "accuracy",
            source=_BAT.format("scv2"),
        ),
        Protocol(
            "hsn",
            "BirdSet HSN (and the other BirdSet test sets): 10,000 steps, batch 64, warmup 1,000, wd 0.05, BCE; "
            "class-balanced sampler (1/count of each clip's first label, with replacement); last step; macro mAP "
            "(cmAP5 beside it)",
            TrainConfig(**_birdset.PROTOCOL_HSN),
            False,
            "mAP",
            source=_BAT.format("hsn"),
        ),
        Protocol(
            "fsdd",
            "FSDD (small): 1,500 steps, batch 32, warmup 150, wd 0.05, cross-entropy; validate every 100 steps "
            "on 10% of train, best accuracy -> test",
            TrainConfig(
                batch_size=32,
                steps=1500,
                warmup_steps=150,
                weight_decay=0.05,
                loss="ce",
                selection="best_val",
                eval_every=100,
                checkpoint_every=500,
            ),
            False,
            "accuracy",
            val_fraction=0.1,
            source="probekit preset for small data",
        ),
        Protocol(
            "default",
            "Small data: 30 epochs, batch 64, 5% warmup, wd 0.05, BCE/CE by label type; last step",
            TrainConfig(
                batch_size=64,
                steps=None,
                epochs=30,
                warmup_fraction=0.05,
                weight_decay=0.05,
                loss="auto",
                selection="last",
            ),
            False,
            "auto",
            source="probekit preset for small data",
        ),
        Protocol(
            "unmute",
            "Unmute benchmark: 30 epochs, batch 128, cosine (no warmup), ASL as Bird-MAE's code (4/1/0.05, mean, "
            "gradient through the focal weight); last epoch; lr and weight decay tuned",
            TrainConfig(
                batch_size=128,
                steps=None,
                epochs=30,
                warmup_steps=0,
                weight_decay=0.05,
                loss="asl",
                asl_gamma_neg=4.0,
                asl_gamma_pos=1.0,
                asl_clip=0.05,
                asl_reduction="mean",
                asl_focal_grad=True,
                selection="last",
            ),
            False,
            "mAP",
            source="Rauch et al., 'Unmute the patch tokens' (ASL parameters not stated: the authors' Bird-MAE "
            "code, DBD-research-group/Bird-MAE util/asymmetric_loss.py defaults, disable_torch_grad_focal_loss=False)",
        ),
    ):
    PROTOCOLS.register(_p.name, _p)

# presets declared beside their datasets (the BAT LibriSpeech recipe; FSDD as tiny ASR)
from probekit.datasets import librispeech as _librispeech  # noqa: E402

for _d in _librispeech.PROTOCOL_PRESETS:
    PROTOCOLS.register(_d["name"], Protocol(_d["name"], _d["description"], TrainConfig(**_d["train"]), False,
                                            _d["metric"], source=_d["source"]))


def _register_declared() -> None:
    """Protocols declared next to their datasets (`ProtocolDecl`, probekit.datasets.registry); plain data."""
    from probekit.datasets.registry import DECLARED_PROTOCOLS

    for d in DECLARED_PROTOCOLS:
        PROTOCOLS.register(d.name, Protocol(d.name, d.description, TrainConfig(**d.train), d.cv, d.metric,
                                            val_fraction=d.val_fraction, source=d.source))


_register_declared()


def list_protocols() -> list[str]:
    return PROTOCOLS.names()


def get_protocol(name: str | Protocol) -> Protocol:
    if isinstance(name, Protocol):
        return name
    return PROTOCOLS.get(name)


@dataclass
class ProtocolResult:
    """Outcome of `run_protocol`.

    metrics: test metrics (EvalResult, percent; for "cv" the mean over folds with `std` per metric and
    `folds`); None when no test data was given (and the protocol is not "cv"). For a probe with several
    heads the top level is the head chosen on validation data (`metrics.selected_head`,
    `metrics.head_selection` says how) and `metrics.heads` holds every head's test result.
    fold_metrics: per-fold test metrics (cv). fits: one FitResult per trained probe. probe: the last
    trained probe. scores: test scores (n, C) or (n, H, C) for the layer sweep (cv: None).
    """

    protocol: str
    probe_name: str
    hparams: dict[str, Any]
    config: TrainConfig
    selection: str
    metrics: EvalResult | None
    fold_metrics: list[EvalResult] | None
    fits: list[FitResult]
    probe: Probe
    seconds: float
    seed: int
    val_source: str  # "official", "holdout", or "none"
    val_fraction: float | None = None
    scores: np.ndarray | None = None

    @property
    def primary(self) -> float | None:
        return None if self.metrics is None else self.metrics.primary


def _mean_metrics(per_fold: list[EvalResult]) -> EvalResult:
    """Fold mean of every scalar metric, with the population std (as the official ESC-50 summary, np.std)."""
    first = per_fold[0]
    means, std = {}, {}
    for key in first.metrics:
        vals = np.array([m.metrics[key] for m in per_fold], dtype=np.float64)
        means[key], std[key] = float(vals.mean()), float(vals.std())
    heads = None
    if first.heads:  # the per-head test curve, averaged over folds (for plotting; never for selection)
        heads = {k: EvalResult(first.primary_name, {first.primary_name: float(np.mean([m.heads[k].primary
                                                                                          for m in per_fold]))})
                 for k in first.heads}
    return EvalResult(
        primary_name=first.primary_name, metrics=means, num_examples=int(sum(m.num_examples for m in per_fold)),
        std=std, folds=[m.primary for m in per_fold], heads=heads,
        head_selection=first.head_selection and f"per fold: {first.head_selection}",
    )


def _choose_head(val_metrics: EvalResult | None) -> str | None:
    """The head with the best validation primary (the first on ties, as argmax); None for one head."""
    if val_metrics is None or not val_metrics.heads:
        return None
    names = list(val_metrics.heads)
    return names[int(np.argmax([val_metrics.heads[n].primary for n in names]))]


def _test_result(res: FitResult, data: TokenData, indices, how: str, *, batch_size: int, amp: bool,
                 progress: bool) -> tuple[EvalResult, np.ndarray]:
    """Test metrics of a fitted probe; for several heads, the validation-chosen head's on top."""
    task = getattr(res.probe, "task", None)
    if task is not None:  # a sequence task (ASR) scores itself (WER/CER); there are no per-clip scores
        return task.evaluate(res.probe, data, indices, batch_size=batch_size, amp=amp), None
    scores = predict(res.probe, data, indices, batch_size=batch_size, amp=amp, progress=progress)
    task = getattr(data, "event_task", None)  # event tasks: scored as events (train.events)
    if task is not None:
        psds = getattr(res.probe, "psds", True)  # PSDS1/PSDS2 on test only (never while validating)
        return task.evaluate(scores, indices, res.probe, psds=psds), scores
    labels = data.labels if indices is None else data.labels[indices]
    m = evaluate_scores(scores, labels, data.multilabel, res.probe.head_names(), score_metrics=score_metrics_of(data))
    head = _choose_head(res.val_metrics)
    return (m if head is None else m.select_head(head, how)), scores


def _holdout(labels, multilabel: bool, frac: float, seed: int, within: np.ndarray | None = None):
    """(train, validation) indices: a stratified, seeded held-out part of `within` (default: all)."""
    sub = labels if within is None else labels[within]
    tr, va = holdout_split(sub, multilabel=multilabel, fraction=frac, seed=seed)
    return (tr, va) if within is None else (within[tr], within[va])


def run_protocol(
    probe_name: str,
    train: TokenData,
    test: TokenData | None = None,
    *,
    protocol: str | Protocol = "default",
    hparams: dict[str, Any] | None = None,
    train_overrides: dict[str, Any] | None = None,
    seed: int = 0,
    val_fraction: float | None = None,
    val: TokenData | None = None,
    num_heads: int | None = None,
    checkpoint_dir: str | Path | None = None,
    on_eval: Callable[[int, float], None] | None = None,
    progress: bool = True,
) -> ProtocolResult:
    """Train `probe_name` on `train` under a named protocol and evaluate on `test`.

    Args:
        probe_name: a registered probe (`list_probes()`); `hparams` its hyperparameters.
        train, test: token data of the training and test splits. For "cv" protocols the folds of
            `train` (joined with `test` when given, e.g. ESC-50's five folds) are cross-validated.
        protocol: a name in `list_protocols()` or a Protocol.
        train_overrides: TrainConfig fields to change (e.g. {"steps": 200, "lr": 3e-4}).
        seed: seeds the probe initialisation, the batch order, dropout and the validation split.
        val_fraction: held-out part of train for "best_val" (or a multi-head probe's head choice) without
            `val` (default: the protocol's).
        val: the official validation split, when the dataset has one.
        num_heads: backbone attention heads (attentive probes); default from the data or D // 64.
        checkpoint_dir: resumable training state (one sub-folder per fold for cv).
        on_eval: passed to `fit` (validation callback; exceptions propagate).
        progress: rich progress bars.
    """
    t0 = time.perf_counter()
    proto = get_protocol(protocol)
    config = proto.train.replace(seed=int(seed), **(train_overrides or {}))
    hparams = dict(hparams or {})
    heads = num_heads or getattr(train, "num_heads", None)
    frac = float(val_fraction if val_fraction is not None else proto.val_fraction)
    eval_kw = dict(batch_size=config.eval_batch_size, amp=config.amp, progress=progress)

    def new_probe() -> Probe:
        return make_probe(
            probe_name,
            num_layers=train.num_layers,
            embed_dim=train.embed_dim,
            num_classes=train.num_classes,
            num_heads=heads,
            seed=seed,
            **hparams,
        )

    def sub_ckpt(name: str) -> Path | None:
        return None if checkpoint_dir is None else Path(checkpoint_dir) / name

    if proto.cv:
        return _cross_validate(proto, config, new_probe, train, test, frac=frac, seed=int(seed), t0=t0,
                               sub_ckpt=sub_ckpt, on_eval=on_eval, progress=progress, probe_name=probe_name)
    probe = new_probe()
    check_task_data(probe, train, "training")  # before any holdout split of the labels
    val_source, used_frac = "none", None
    fit_kwargs: dict[str, Any] = {}
    # validation data: for best_val, when given, and to choose a multi-head probe's head (never test)
    if config.selection == "best_val" or val is not None or probe.num_outputs > 1:
        if val is not None:
            val_source = "official"
            fit_kwargs = {"val_data": val}
        else:
            used_frac = frac
            tr, va = _holdout(train.labels, train.multilabel, frac, seed)
            val_source = "holdout"
            fit_kwargs = {"train_indices": tr, "val_data": train, "val_indices": va}
    res = fit(
        probe,
        train,
        config=config,
        checkpoint_dir=sub_ckpt("fit") if checkpoint_dir else None,
        progress=progress,
        on_eval=on_eval,
        **fit_kwargs,
    )
    metrics, scores = None, None
    if test is not None:
        how = ("validation: the official validation split" if val_source == "official"
               else f"validation: holdout {frac:.0%} of train (seed {seed})")
        metrics, scores = _test_result(res, test, None, how, **eval_kw)
    return ProtocolResult(
        protocol=proto.name,
        probe_name=probe_name,
        hparams=dict(res.probe.hparams),
        config=config,
        selection=config.selection,
        metrics=metrics,
        fold_metrics=None,
        fits=[res],
        probe=res.probe,
        seconds=time.perf_counter() - t0,
        seed=int(seed),
        val_source=val_source,
        val_fraction=used_frac,
        scores=scores,
    )


def _cross_validate(proto: Protocol, config: TrainConfig, new_probe: Callable[[], Probe], train: TokenData,
                    test: TokenData | None, *, frac: float, seed: int, t0: float,
                    sub_ckpt: Callable[[str], Path | None], on_eval, progress: bool,
                    probe_name: str) -> ProtocolResult:
    """Train and test once per fold of `train` (+ `test`); a multi-head probe chooses its head per fold
    on a held-out part of that fold's training clips."""
    eval_kw = dict(batch_size=config.eval_batch_size, amp=config.amp, progress=progress)
    data = train if test is None else ConcatTokens(train, test)
    if data.folds is None:
        raise ConfigError(
            f"protocol {proto.name!r} cross-validates over folds, but the data has no fold numbers",
            hint="use a dataset with folds (ESC-50) or another protocol",
        )
    folds = np.asarray(data.folds)
    per_fold, fits, probe = [], [], None
    how = f"validation: holdout {frac:.0%} of the training folds (seed {seed})"
    for f in np.unique(folds):
        tr = np.nonzero(folds != f)[0]
        te = np.nonzero(folds == f)[0]
        probe = new_probe()
        val_kw: dict[str, Any] = {}
        if probe.num_outputs > 1:  # choose the head on held-out training clips, never on the test fold
            tr, va = _holdout(data.labels, data.multilabel, frac, seed, within=tr)
            val_kw = {"val_data": data, "val_indices": va}
        res = fit(
            probe,
            data,
            config=config.replace(selection="last"),
            train_indices=tr,
            checkpoint_dir=sub_ckpt(f"fold{f}"),
            progress=progress,
            on_eval=on_eval,
            **val_kw,
        )
        m, _ = _test_result(res, data, te, how, **eval_kw)
        per_fold.append(dataclasses.replace(m, fold=int(f)))
        fits.append(res)
    return ProtocolResult(
        protocol=proto.name,
        probe_name=probe_name,
        hparams=dict(probe.hparams),
        config=config,
        selection="cv",
        metrics=_mean_metrics(per_fold),
        fold_metrics=per_fold,
        fits=fits,
        probe=probe,
        seconds=time.perf_counter() - t0,
        seed=int(seed),
        val_source="holdout" if per_fold[0].heads else "none",
        val_fraction=frac if per_fold[0].heads else None,
    )

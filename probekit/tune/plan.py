"""What a tuning run searches, decided before any study is opened: options, space, validation, study key.

`plan_tuning(...)` checks every user input (so a rejected run leaves no study file behind), resolves the
search space and the validation data, and builds the study key: everything that changes what a trial's
value means (backbone and its weights, dataset, token layout, probe, protocol, space, fixed values).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probekit.errors import ConfigError, ProbeError, suggest
from probekit.probes.space import Param
from probekit.tokens import TokenData
from probekit.tune.space import load_space_file, resolve_space, space_to_text

__all__ = ["PRUNERS", "TuneOptions", "search_space", "TuningPlan", "default_study_name", "plan_tuning", "pruner_rungs", "token_source", "tuning_plan_lines"]

PRUNERS = ("sha", "hyperband", "none")

# TrainConfig fields that are machinery, not hyperparameters (tuning them would make no sense).
_NOT_TUNABLE = {"device", "amp", "num_threads", "seed", "eval_every", "eval_batch_size", "log_every", "checkpoint_every", "betas"}


@dataclass(frozen=True)
class TuneOptions:
    """How to search (not what): budget, sampler, pruner, retrains, timing. `check()` names a bad value.

    Attributes:
        n_trials: results the study should hold (complete + pruned + failed; trials killed with their
            worker are re-run and do not count). An existing study is continued up to this number.
        n_startup: quasi-random (scrambled Sobol) configurations before TPE takes over.
        pruner: "sha" (successive halving), "hyperband" or "none", on the validation metric. Rungs sit at
            eval_every * reduction_factor**k steps.
        reduction_factor: the pruner's reduction factor (2 keeps half at each rung, 4 a quarter). Default 4:
            on the pruning benchmark (benchmarks/tune_pruning.py, seeds 0-2) it used 0.28-0.30x the steps of
            no pruning with the same best validation (+0.37, 0, 0 points); 3 used 0.33-0.41x (+0.37, 0, -0.19).
        pruner_warmup: validations every trial runs before its first rung (the first rung sits at
            pruner_warmup * eval_every steps). Default 1: a warm-up of 2 gave the same best validation on the
            benchmark's 3 seeds but 0.54x the steps (over the 0.4x target).
        seeds: retrains of the best configuration (0: none; workers that only help the search use 0).
        eval_every: validation (and pruning) interval in steps; default the protocol's or a tenth of a run.
        val_fraction: part of train held out for validation when there is no validation split.
        timeout: seconds after which no new trial starts.
        seed: seeds the samplers and every trial's training (the retrain uses seeds 0..seeds-1).
        progress: live table of trials.
    """

    n_trials: int = 50
    n_startup: int = 25
    pruner: str = "sha"
    reduction_factor: int = 4
    pruner_warmup: int = 1
    seeds: int = 5
    eval_every: int | None = None
    val_fraction: float | None = None
    timeout: float | None = None
    seed: int = 0
    progress: bool = True

    def check(self) -> TuneOptions:
        def bad(flag: str, value: Any, need: str) -> ConfigError:
            return ConfigError(f"{flag} {value}: {need}", hint=f"e.g. {flag} {dict(_EXAMPLES)[flag]}")

        if self.n_trials < 1:
            raise ConfigError(f"n_trials must be at least 1, got {self.n_trials}", hint="e.g. --trials 50")
        if self.n_startup < 0:
            raise bad("--startup", self.n_startup, "the number of quasi-random trials cannot be negative")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"unknown pruner {self.pruner!r}", hint=suggest(self.pruner, PRUNERS))
        if self.reduction_factor < 2:
            raise bad("--reduction-factor", self.reduction_factor, "must be at least 2, keeping 1/N of the trials per rung")
        if self.pruner_warmup < 1:
            raise bad("--pruner-warmup", self.pruner_warmup, "must be at least 1 validation before the first rung")
        if self.seeds < 0:
            raise bad("--seeds", self.seeds, "cannot be negative; 0 means no retrain")
        if self.eval_every is not None and self.eval_every < 1:
            raise bad("--eval-every", self.eval_every, "must be at least 1 step")
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            raise bad("--val-fraction", self.val_fraction, "must lie between 0 and 1")
        if self.timeout is not None and not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise bad("--timeout", self.timeout, "must be a positive number of seconds")
        return self


_EXAMPLES = (("--startup", 25), ("--reduction-factor", 4), ("--pruner-warmup", 1), ("--seeds", 5), ("--eval-every", 100),
             ("--val-fraction", 0.1), ("--timeout", 3600))


# ---- the study key --------------------------------------------------------------------------------------
def _digest(obj: Any, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _weights(w: Mapping[str, Any]) -> str:
    if w.get("sha256"):
        return f"sha256 {w['sha256']}" + (" (ema)" if w.get("use_ema") else "")
    if "random_init_seed" in w:
        return f"random-init seed {w['random_init_seed']}"
    return "unknown (" + _digest(dict(w)) + ")"


def _labels_fingerprint(data: TokenData) -> str:
    """Shape, classes and labels: tells datasets apart even where the tokens' source is unknown."""
    h = hashlib.sha256()
    h.update(json.dumps([int(data.num_clips), int(data.num_layers), int(data.embed_dim), int(data.num_classes), bool(data.multilabel)]).encode())
    h.update(np.ascontiguousarray(data.labels).tobytes())
    return h.hexdigest()[:16]


def token_source(data: TokenData) -> dict[str, str]:
    """Where tokens come from, in words: backbone, weights, dataset, token layout.

    Read from the content key of a token cache (or of online tokens); tokens held in memory are hashed.
    """
    key = getattr(getattr(data, "store", None), "key", None)
    if key is None and callable(getattr(data, "cache_key", None)):
        key = data.cache_key()
    if isinstance(key, Mapping) and isinstance(key.get("backbone"), Mapping):
        bb = key["backbone"]
        ds = key.get("dataset") or {}
        arch = {k: v for k, v in bb.items() if k != "weights"}
        return {
            "backbone": f"{bb.get('backbone', '?')} (architecture {_digest(arch)})",
            "weights": _weights(bb.get("weights") or {}),
            "dataset": f"{ds.get('name')} {ds.get('split')} (fingerprint {ds.get('fingerprint')})",
            "tokens": f"layers {key.get('layers')} {key.get('dtype')} (frontend {_digest(key.get('frontend'))})",
        }
    h = hashlib.sha256()
    for name in ("cls", "patch"):
        t = getattr(data, name, None)
        if t is not None and hasattr(t, "detach"):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {"tokens": f"in memory (sha256 {h.hexdigest()[:16]}, labels {_labels_fingerprint(data)})"}


def default_study_name(probe: str, key: Mapping[str, str], prefix: str | None = None) -> str:
    """`<prefix or probe>-<digest of the key>`, made safe as a file name (no '/', ':' or spaces)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", prefix or probe).strip("-.") or probe
    return f"{stem[:100]}-{_digest(dict(key), 8)}"


# ---- the plan -------------------------------------------------------------------------------------------
@dataclass
class TuningPlan:
    """Everything resolved for one tuning run; `objective()` trains one trial."""

    probe_name: str
    train: TokenData
    val: TokenData | None
    protocol: Any  # probekit.train.Protocol
    base: Any  # the protocol's TrainConfig with the fixed training values
    hparams: dict[str, Any]
    fixed_train: dict[str, Any]
    probe_names: set[str]
    space: dict[str, Param]
    options: TuneOptions
    validation: str
    fit_idx: np.ndarray | None
    val_idx: np.ndarray | None
    val_data: TokenData
    interval: int
    total: int
    heads: int | None
    key: dict[str, str] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return selection_metric(self.protocol, self.train, self.probe_name)

    @property
    def direction(self) -> str:
        """"minimize" for an error rate (WER/CER: `probekit.train.metrics.LOWER_IS_BETTER`), else "maximize"."""
        return metric_direction(self.metric)

    def split_params(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(probe hyperparameters, training values) of a trial's parameters."""
        return ({k: v for k, v in params.items() if k in self.probe_names},
                {k: v for k, v in params.items() if k not in self.probe_names})

    def objective(self, trial: Any, params: dict[str, Any], report: Callable[[int, float], None]) -> float:
        """Train one configuration on the fit clips, reporting each validation (the pruner may stop it)."""
        from probekit.probes import make_probe
        from probekit.train import fit

        probe_kw, train_kw = self.split_params(params)
        seed = self.options.seed
        probe = make_probe(
            self.probe_name, num_layers=self.train.num_layers, embed_dim=self.train.embed_dim,
            num_classes=self.train.num_classes, num_heads=self.heads, seed=seed, **{**self.hparams, **probe_kw},
        )
        config = self.base.replace(**train_kw, eval_every=self.interval, seed=seed)
        lower = self.direction == "minimize"  # WER: the best validation so far is the lowest
        best = [math.inf if lower else -math.inf]

        def on_eval(step: int, value: float) -> None:
            # Under best-validation selection a trial is worth its best validation so far: the pruner
            # compares that, not a momentary dip of the cosine schedule.
            if config.selection == "best_val":
                best[0] = min(best[0], value) if lower else max(best[0], value)
                value = best[0]
            report(step, value)

        res = fit(probe, self.train, config=config, train_indices=self.fit_idx, val_data=self.val_data,
                  val_indices=self.val_idx, on_eval=on_eval, progress=False)
        trial.set_user_attr("steps", int(res.steps_run))
        return float(res.val_score)


def selection_metric(protocol: Any, train: TokenData, probe_name: str) -> str:
    """The validation metric trials are ranked by: the protocol's, else WER for a transcript (CTC) probe
    or transcript labels, the event metric of an event task, mAP for multi-label data, else accuracy."""
    m = protocol.metric
    if m != "auto":
        return m
    from probekit.train.ctc import is_transcript_labels

    kind = getattr(_probe_class(probe_name), "task_kind", "classification")
    if kind == "asr" or is_transcript_labels(train.labels, bool(train.multilabel)):
        return "WER"
    if getattr(train, "event_task", None) is not None:
        from probekit.train.events import PRIMARY

        return PRIMARY
    from probekit.train.metrics import score_metrics_of

    wanted = score_metrics_of(train)  # a HEAR task's headline (d_prime, aucroc, ...): what val_score holds
    if wanted:
        return wanted[0]
    return "mAP" if train.multilabel else "accuracy"


def _probe_class(name: str):
    from probekit.probes import get_probe_class

    try:
        return get_probe_class(name)
    except Exception:  # noqa: BLE001 - an unknown name is refused elsewhere, with suggestions
        return None


def metric_direction(metric: str) -> str:
    """The Optuna study direction of a selection metric: error rates are minimised, the rest maximised."""
    from probekit.train.metrics import LOWER_IS_BETTER

    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


def _tunable_train_fields() -> set[str]:
    from probekit.train import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)} - _NOT_TUNABLE


def search_space(cls, probe_name, hparams, train_overrides, space, space_file, only) -> dict[str, Param]:
    """The space to search for probe class `cls`: defaults, overrides, `only`, minus the fixed values."""
    probe_names = set(cls.hparam_names())
    for k in hparams:
        if k not in probe_names:
            raise ProbeError(f"probe {probe_name!r} has no hyperparameter {k!r}", hint=suggest(k, probe_names) if probe_names else "it takes none")
    overrides: dict[str, Param | str] = dict(load_space_file(space_file)) if space_file else {}
    overrides.update(space or {})
    from probekit.train import TrainConfig

    # a name's current value types its fixed values ("--space lr=abc" is refused, not run)
    likes = {**{f.name: f.default for f in dataclasses.fields(TrainConfig)}, **cls.hparam_defaults()}
    the_space = resolve_space(cls.search_space, overrides, allowed=probe_names | _tunable_train_fields(), likes=likes)
    if only:
        unknown = [k for k in only if k not in the_space]
        if unknown:
            raise ConfigError(f"--only {unknown[0]!r} is not in the search space", hint=suggest(unknown[0], the_space))
        the_space = {k: v for k, v in the_space.items() if k in only}
    for fixed in (*hparams, *train_overrides):  # fixed values leave the search
        if fixed in the_space and fixed not in overrides:
            the_space.pop(fixed)
    if not the_space:
        raise ConfigError("nothing left to search: every parameter is fixed", hint="drop some --only/--set values")
    return the_space


def plan_tuning(
    probe_name: str,
    train: TokenData,
    *,
    val: TokenData | None = None,
    protocol: str = "default",
    space: Mapping[str, Param | str] | None = None,
    space_file: str | None = None,
    only: tuple[str, ...] | list[str] | None = None,
    hparams: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    num_heads: int | None = None,
    options: TuneOptions | None = None,
) -> TuningPlan:
    """Check and resolve one tuning run (arguments as `probekit.tune.tune`); opens no study."""
    from probekit.probes import get_probe_class
    from probekit.train import get_protocol, holdout_split

    opts = (options or TuneOptions()).check()
    cls = get_probe_class(probe_name)
    proto = get_protocol(protocol)
    hparams = dict(hparams or {})
    fixed_train = dict(train_overrides or {})
    base = proto.train.replace(**fixed_train)  # validates the names
    the_space = search_space(cls, probe_name, hparams, fixed_train, space, space_file, only)

    if val is not None:
        fit_idx, val_idx, val_data = None, None, val
        validation = "official validation split"
        n_fit = train.num_clips
    else:
        frac = float(opts.val_fraction if opts.val_fraction is not None else proto.val_fraction)
        from probekit.train.ctc import is_transcript_labels

        # transcripts (ASR) and frame targets have no class to stratify by: a random part, as multi-label data
        unstratified = bool(train.multilabel) or is_transcript_labels(train.labels, bool(train.multilabel))
        fit_idx, val_idx = holdout_split(train.labels, multilabel=unstratified, fraction=frac, seed=0)
        val_data = train
        validation = f"{frac:.0%} of train held out ({'random' if unstratified else 'stratified'}, seed 0)"
        if proto.cv:
            # Cross-validation scores every fold of this same split, so the held-out clips are also some
            # fold's test clips: say so where the number is read (nested CV is not implemented).
            validation += ("; cross-validation protocol: the held-out clips are also CV test clips, so the "
                           "tuned score is optimistic (nested CV not implemented)")
            import warnings

            warnings.warn(f"tuning {probe_name} under the cross-validation protocol {proto.name!r}: the validation "
                          "clips come from the split whose folds are later scored, so the reported score saw "
                          "its test clips during the search (nested CV is not implemented)", stacklevel=2)
        n_fit = len(fit_idx)
    total, _, _ = base.schedule(n_fit)
    interval = int(opts.eval_every or base.eval_every or max(1, total // 10))
    plan = TuningPlan(
        probe_name=probe_name, train=train, val=val, protocol=proto, base=base, hparams=hparams,
        fixed_train=fixed_train, probe_names=set(cls.hparam_names()), space=the_space, options=opts,
        validation=validation, fit_idx=fit_idx, val_idx=val_idx, val_data=val_data, interval=interval,
        total=total, heads=num_heads or getattr(train, "num_heads", None),
    )
    plan.key = {
        **token_source(train),
        "labels": _labels_fingerprint(train),
        **({"validation data": token_source(val).get("dataset") or token_source(val)["tokens"]} if val is not None else {}),
        "probe": probe_name,
        "protocol": proto.name,
        "validation": validation,
        "search space": space_to_text(the_space),
        "fixed hyperparameters": ", ".join(f"{k}={v!r}" for k, v in sorted(hparams.items())) or "none",
        "fixed training": ", ".join(f"{k}={v!r}" for k, v in sorted(fixed_train.items())) or "none",
        "eval_every": str(interval),
        "startup trials": str(opts.n_startup),
        "pruner": opts.pruner if opts.pruner == "none" else f"{opts.pruner}/{opts.reduction_factor}"
        + (f" warm-up {opts.pruner_warmup}" if opts.pruner_warmup != 1 else ""),
    }
    if plan.direction != "maximize":
        # only where it is not the old implicit maximize: studies made before keep their key and default name
        plan.key["direction"] = f"{plan.direction} {plan.metric}"
    return plan


# ---- the plan in words (printed before a study starts; `probekit tune --dry-run`) ----------------------
def pruner_rungs(opts: TuneOptions, interval: int, total: int) -> list[int]:
    """Steps at which the pruner decides (successive halving: first rung * reduction_factor**k below a
    full run); Hyperband's brackets each start one rung later, from the same first rung."""
    if opts.pruner == "none":
        return []
    first, rungs = max(1, interval * opts.pruner_warmup), []
    while first < total and len(rungs) < 32:
        rungs.append(first)
        first *= opts.reduction_factor
    return rungs


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def tuning_plan_lines(
    probe_name: str,
    opts: TuneOptions,
    *,
    clips: Mapping[str, int],
    plan: TuningPlan | None = None,
    estimate: Mapping[str, Any] | None = None,
    planned: Mapping[str, Any] | None = None,
    warning: str | None = None,
) -> list[str]:
    """The plan of a tuning run, one fact a line: clips per split, trials, steps and rungs, retrains, an
    estimated training time (from `probekit._evaluate.estimate_fit`'s timed warm-up), memory, warnings.

    `plan` is None when the training tokens do not exist yet (a dry run): then `planned` (split ->
    cache.planning.DryRun) gives the projected cache sizes and no time can be estimated."""
    lines = [f"plan: tune {probe_name}" + (f" (protocol {plan.protocol.name}; validation: {plan.validation})" if plan else "")]
    lines.append("  clips: " + ", ".join(f"{s} {n}" for s, n in clips.items()))
    for s, d in (planned or {}).items():
        lines.append(f"  {s}: no token cache yet; extraction planned: {d.clips} clips, projected {_bytes(d.needed)} "
                     f"at {d.path} ({_bytes(d.free)} free)")
    startup = min(opts.n_startup, opts.n_trials)
    lines.append(f"  trials: {opts.n_trials} " + (f"({startup} quasi-random, then TPE)" if startup < opts.n_trials
                                                   else "(all quasi-random: --startup covers them)")
                 + (f"; no new trial after {opts.timeout:g} s" if opts.timeout else ""))
    if plan is not None:
        rungs = pruner_rungs(opts, plan.interval, plan.total)
        pruning = ("no pruning" if opts.pruner == "none" else
                   f"pruner {opts.pruner}/{opts.reduction_factor} rungs at step(s) {', '.join(map(str, rungs))}"
                   if rungs else f"pruner {opts.pruner}: no rung below {plan.total} steps (no trial is pruned)")
        lines.append(f"  steps: at most {plan.total} per trial, validation every {plan.interval}; {pruning}")
        better = "lower is better" if plan.direction == "minimize" else "higher is better"
        lines.append(f"  objective: {plan.direction} validation {plan.metric} ({better}); the pruner and the "
                     "retrain pick by it")
    lines.append(f"  seed retrains of the best: {opts.seeds}")
    if plan is not None and estimate is not None:
        per_step, setup = float(estimate["per_step_s"]), float(estimate["setup_s"])
        trial_s = opts.n_trials * (setup + per_step * plan.total)
        retrain_s = opts.seeds * (setup + per_step * int(estimate["steps"]))
        bound = opts.pruner != "none" and bool(pruner_rungs(opts, plan.interval, plan.total))
        lines.append(
            f"  estimated training time: {'at most ' if bound else '~'}{_seconds(trial_s + retrain_s)} "
            f"({opts.n_trials} trial(s) x {plan.total} steps"
            + (", an upper bound: pruned trials stop early" if bound else "")
            + f", + {opts.seeds} retrain(s) x {int(estimate['steps'])} steps; from a timed warm-up of "
            f"{estimate['warmup_steps']} real steps at the default hyperparameters: {per_step * 1000:.1f} ms/step; "
            "validation not counted)")
        if estimate.get("peak_bytes"):
            lines.append(f"  peak GPU memory in the warm-up: {_bytes(estimate['peak_bytes'])}")
    elif plan is None:
        lines.append("  steps and training time: estimated once the tokens exist (extract first, or run without --dry-run)")
    if warning:
        lines.append(f"  warning: {warning}")
    return lines

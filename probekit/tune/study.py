"""Hyperparameter search for probes with Optuna: Sobol start + TPE, successive halving, seeds.

    from probekit.tune import tune
    result = tune("protobin", train, test=test, n_trials=50, n_startup=25, pruner="sha", seeds=5)
    print(result.mean, result.ci95, result.best_params)

The test split is never read while searching: trials validate on `val` (an official validation split)
or on a stratified part held out of `train` with a fixed seed. The best configuration is then retrained
on all of `train` with `seeds` seeds and each run is scored on `test`.

Studies live in one SQLite file each (`results/studies/<study>.db`; browse with
`optuna-dashboard sqlite:///results/studies/<study>.db`) or in any Optuna RDB URL (PostgreSQL) shared by
many workers: run the same `tune(...)`/`probekit tune ...` on each machine with `storage=URL`. Rerunning
a study after a crash or Ctrl-C continues it to `n_trials` results. A study remembers what its trials
measured (backbone, weights, data, tokens, probe, protocol, space): resuming it with other inputs is
refused, and the default study name carries a digest of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from probekit.errors import ConfigError, ProbeError, suggest
from probekit.probes.space import Param
from probekit.tokens import TokenData
from probekit.tune.logs import route_optuna_logging
from probekit.tune.plan import PRUNERS, TuneOptions, TuningPlan, default_study_name, plan_tuning
from probekit.tune.progress import LiveStudy
from probekit.tune.runner import count_trials, failure_reasons, run_trials, trial_steps
from probekit.tune.sampler import StartupThenTPESampler
from probekit.tune.space import space_to_dict, space_to_text, to_distributions
from probekit.tune.storage import default_storage_url, open_storage, redact, study_lock

__all__ = [
    "SeedScore",
    "TuneOptions",
    "TuneResult",
    "confidence_interval",
    "failure_reasons",
    "make_pruner",
    "optimize_study",
    "retrain_seeds",
    "tune",
]

KEY_ATTR = "probekit:key"  # study user attr: what the study's trials measured (checked when it is resumed)
META_ATTR = "probekit:meta"  # the key of studies made by probekit 0.1.0 (no backbone weights in it)
FINAL_ATTR = "probekit:final"  # study user attr: the seed retrain of the best configuration
SEED_ATTR = "probekit:seed:"  # study user attr prefix: one finished seed run (a resumed retrain reuses it)

# (trial, params, report) -> value; report(step, value) records a validation and may raise TrialPruned.
StudyObjective = Callable[[optuna.Trial, dict[str, Any], Callable[[int, float], None]], float]


@dataclass
class SeedScore:
    """One retrain of the best configuration: its seed, primary test score, all metrics, steps."""

    seed: int
    score: float
    metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0


@dataclass
class TuneResult:
    """Everything a tuning run found, JSON-able with `to_dict()` for result records.

    `storage` is the study's URL with any password masked (records are shared): open the study with the
    URL you gave, not this one.
    """

    study_name: str
    storage: str
    probe: str
    protocol: str
    metric: str
    validation: str
    search_space: dict[str, dict[str, Any]]
    trials: dict[str, int]
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    total_steps: int
    steps_per_trial: dict[int, int]
    seeds: list[SeedScore]
    mean: float | None
    std: float | None
    ci95: tuple[float, float] | None
    pruner: str = ""
    n_startup: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["steps_per_trial"] = {str(k): v for k, v in self.steps_per_trial.items()}
        return d


# ---- pieces --------------------------------------------------------------------------------------------
def make_pruner(kind: str, *, min_resource: int, max_resource: int, reduction_factor: int = 4) -> optuna.pruners.BasePruner:
    """Successive halving ("sha"), Hyperband, or none, on steps at which validation is reported.

    Args:
        min_resource: steps of the first rung; set it to the validation interval so every rung is a
            validation (smaller rungs would all be decided at the first validation).
        max_resource: steps of a full run (Hyperband's largest bracket).
    """
    if kind not in PRUNERS:
        raise ConfigError(f"unknown pruner {kind!r}", hint=suggest(kind, PRUNERS))
    if kind != "none" and reduction_factor < 2:
        raise ConfigError(f"--reduction-factor {reduction_factor}: must be at least 2", hint="e.g. --reduction-factor 4")
    if kind == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=reduction_factor)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=max_resource, reduction_factor=reduction_factor)
    return optuna.pruners.NopPruner()


def confidence_interval(scores: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Two-sided Student-t interval of the mean (None with fewer than two scores); see probekit._stats."""
    from probekit._stats import mean_std_ci

    if len(scores) < 2:
        return None
    s = mean_std_ci(scores, level=level)
    return (s.ci_low, s.ci_high)


def _short(text: str) -> str:
    """Long hex digests cut to 16 characters, so a message stays one readable line."""
    return re.sub(r"\b([0-9a-f]{16})[0-9a-f]{8,}\b", r"\1...", str(text))


def _check_key(study: optuna.Study, key: Mapping[str, str], url: str) -> None:
    """Stamp a new study with its key; refuse to resume one whose trials measured something else."""
    stored = study.user_attrs.get(KEY_ATTR)
    name = study.study_name
    if stored is None:
        made = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
        if made or META_ATTR in study.user_attrs:
            raise ConfigError(
                f"study {name!r} in {redact(url, url)} does not record the backbone weights and data its trials used"
                " (made by an older probekit)",
                hint="use another --study, or --fresh to start it again",
            )
        study.set_user_attr(KEY_ATTR, dict(key))
        return
    # the weights first: what a user most often changes, and what makes every stored trial meaningless
    order = sorted([*key, *(k for k in stored if k not in key)], key=lambda k: (k != "weights", k != "dataset"))
    for k in order:
        old, new = stored.get(k, "nothing"), key.get(k, "nothing")
        if old != new:
            raise ConfigError(
                _short(f"study {name!r} was made with {k} {old}, this run uses {new}"),
                hint="use another --study or --fresh; the default study name follows the inputs",
            )


def _reasons_text(trials: list[optuna.trial.FrozenTrial]) -> str:
    return "; ".join(f"{n}x {why}" for why, n in failure_reasons(trials))


# ---- the engine ----------------------------------------------------------------------------------------
def optimize_study(
    objective: StudyObjective,
    space: Mapping[str, Param],
    *,
    study_name: str,
    storage: str | None = None,
    n_trials: int = 50,
    n_startup: int = 25,
    pruner: str | optuna.pruners.BasePruner = "sha",
    min_resource: int = 1,
    max_resource: int = 100,
    reduction_factor: int = 4,
    direction: str = "maximize",
    seed: int = 0,
    timeout: float | None = None,
    progress: bool = True,
    meta: Mapping[str, Any] | None = None,
    catch: tuple[type[Exception], ...] = (),
    fresh: bool = False,
) -> optuna.Study:
    """Create or resume a study and run trials until it holds `n_trials` results.

    Any process calling this with the same `storage` and `study_name` joins the same study.

    Args:
        objective: `objective(trial, params, report) -> value`; call `report(step, value)` at each
            validation (it prunes by raising optuna.TrialPruned) and set the trial's user attr "steps".
        space: the search space (name -> Float/Int/Choice).
        study_name: the study's name (and its SQLite file's name when storage is None).
        storage: an Optuna RDB URL; None = `sqlite:///results/studies/<study_name>.db`.
        meta: the study key: what the trials measure, as name -> value (text). Stored on creation; a
            resumed study with another value is refused, naming it. The space and n_startup are added.
        catch: exceptions that fail a trial without stopping the study (see `run_trials`).
        fresh: delete an existing study of this name first.

    Returns:
        the study, loaded from storage.
    """
    TuneOptions(n_trials=n_trials, n_startup=n_startup, timeout=timeout).check()
    # everything is checked before the storage is opened: a refused run leaves no study file behind
    the_pruner = pruner if isinstance(pruner, optuna.pruners.BasePruner) else make_pruner(
        pruner, min_resource=min_resource, max_resource=max_resource, reduction_factor=reduction_factor
    )
    route_optuna_logging()
    url = storage or default_storage_url(study_name)
    st = open_storage(url)
    sampler = StartupThenTPESampler(to_distributions(space), n_startup=n_startup, seed=seed)
    key = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str) for k, v in (meta or {}).items()}
    key.setdefault("search space", space_to_text(space))
    key.setdefault("startup trials", str(n_startup))
    with study_lock(st, study_name):
        if fresh and study_name in {s.study_name for s in optuna.get_all_study_summaries(st, include_best_trial=False)}:
            optuna.delete_study(study_name=study_name, storage=st)
        study = optuna.create_study(
            storage=st, study_name=study_name, sampler=sampler, pruner=the_pruner, direction=direction, load_if_exists=True
        )
        if study.direction.name.lower() != direction:
            # e.g. a WER study (minimize) resumed for an accuracy metric: its trial values mean the opposite
            raise ConfigError(f"study {study_name!r} in {redact(url, url)} {study.direction.name.lower()}s its "
                              f"objective; this run would {direction} it",
                              hint="use another --study or --fresh (the metric decides the direction: WER/CER are "
                              "minimised, the rest maximised)")
        _check_key(study, key, url)

    with LiveStudy(study, n_trials, enabled=progress) as live:

        def wrapped(trial: optuna.Trial, params: dict[str, Any]) -> float:
            def report(step: int, value: float) -> None:
                step, value = int(step), float(value)
                trial.report(value, step)
                trial.set_user_attr("steps", step)
                live.on_eval(trial.number, step, value)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step} (value {value:.4g})")

            return objective(trial, params, report)

        try:
            run_trials(study, space, wrapped, n_trials=n_trials, timeout=timeout, on_event=live.on_event, catch=catch)
        except catch as e:  # several trials in a row failed here: a broken setup, said once with its reasons
            raise ConfigError(
                f"study {study_name!r}: trials keep failing: {_reasons_text(study.get_trials(deepcopy=False))}",
                hint="fix the search range or the fixed values; tune --show lists each trial's error",
            ) from e
    return study


def best_complete_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The best COMPLETE trial; without one, an error that says why the trials did not complete."""
    trials = study.get_trials(deepcopy=False)
    if not any(t.state == TrialState.COMPLETE for t in trials):
        c = count_trials(trials)
        if c.results == 0:
            what, hint = "no trial ran", "run more trials or give a longer --timeout"
        elif c.failed:
            what = f"{c.failed} failed: {_reasons_text(trials)}" + (f"; {c.pruned} pruned" if c.pruned else "")
            hint = "fix the search range or the fixed values that make them fail"
        else:
            what, hint = f"all {c.pruned} were pruned", "run more trials or use --pruner none"
        raise ConfigError(f"study {study.study_name!r} has no complete trial to retrain ({what})", hint=hint)
    return study.best_trial


def retrain_seeds(
    study: optuna.Study,
    run_seed: Callable[[int, dict[str, Any]], SeedScore],
    *,
    seeds: int,
    params: dict[str, Any],
    metric: str,
    progress: bool = True,
) -> list[SeedScore]:
    """Run `run_seed(seed, params)` for seeds 0..seeds-1, keeping finished ones in the study (resumable)."""
    from probekit._console import Bar

    key = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]
    out: list[SeedScore] = []
    with Bar(f"retrain best ({metric})", seeds, unit="seeds", enabled=progress, transient=True) as bar:
        for s in range(seeds):
            attr = f"{SEED_ATTR}{key}:{s}"
            done = study.user_attrs.get(attr)
            if done is not None:
                out.append(SeedScore(**done))
            else:
                r = run_seed(s, params)
                study.set_user_attr(attr, dataclasses.asdict(r))
                out.append(r)
            bar.update(advance=1, info=f"seed {s}: {metric} {out[-1].score:.2f}")
    return out


def _summary_stats(scores: list[float]) -> tuple[float | None, float | None, tuple[float, float] | None]:
    from probekit._stats import mean_std_ci

    if not scores:
        return None, None, None
    s = mean_std_ci(scores)
    return s.mean, s.std, (None if s.ci_low is None else (s.ci_low, s.ci_high))


def study_result(
    study: optuna.Study,
    *,
    url: str,
    probe: str,
    protocol: str,
    metric: str,
    validation: str,
    space: Mapping[str, Param],
    seeds: list[SeedScore],
    pruner: str = "",
    n_startup: int = 0,
) -> TuneResult:
    trials = study.get_trials(deepcopy=False)
    counts = count_trials(trials)
    best = best_complete_trial(study)
    mean, std, ci = _summary_stats([s.score for s in seeds])
    return TuneResult(
        study_name=study.study_name,
        storage=redact(url, url),
        probe=probe,
        protocol=protocol,
        metric=metric,
        validation=validation,
        search_space=space_to_dict(space),
        trials={"complete": counts.complete, "pruned": counts.pruned, "failed": counts.failed, "requeued": counts.requeued},
        best_trial=best.number,
        best_value=float(best.value),
        best_params=dict(best.params),
        total_steps=sum(trial_steps(t) for t in trials),
        steps_per_trial={t.number: trial_steps(t) for t in trials},
        seeds=seeds,
        mean=mean,
        std=std,
        ci95=ci,
        pruner=pruner,
        n_startup=n_startup,
    )


# ---- probes ------------------------------------------------------------------------------------------
def _plain_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    if not metrics:
        return {}
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_search(plan: TuningPlan, *, study_name: str, storage: str, fresh: bool = False) -> optuna.Study:
    """The trials of a plan in the study `study_name` at `storage` (created, resumed or joined)."""
    o = plan.options
    return optimize_study(
        plan.objective, plan.space, study_name=study_name, storage=storage, n_trials=o.n_trials,
        n_startup=o.n_startup, pruner=o.pruner, min_resource=plan.interval * o.pruner_warmup, max_resource=plan.total,
        reduction_factor=o.reduction_factor, seed=o.seed, timeout=o.timeout, progress=o.progress,
        meta=plan.key, catch=(ProbeError, ValueError, RuntimeError, TypeError), fresh=fresh,
        direction=plan.direction,
    )


def retrain_best(plan: TuningPlan, study: optuna.Study, test: TokenData | None) -> list[SeedScore]:
    """The best configuration trained with seeds 0..seeds-1 and scored on `test` (or the folds of train
    under cross-validated protocols); nothing without seeds or test data."""
    from probekit.train import run_protocol

    o = plan.options
    best = best_complete_trial(study)
    # cross-validated protocols (ESC-50) score each seed on the folds of `train` itself
    if o.seeds == 0 or (test is None and plan.protocol.selection != "cv"):
        return []
    probe_kw, train_kw = plan.split_params(best.params)

    def run_seed(s: int, params: dict[str, Any]) -> SeedScore:
        r = run_protocol(
            plan.probe_name, plan.train, test, protocol=plan.protocol, hparams={**plan.hparams, **probe_kw},
            train_overrides={**plan.fixed_train, **train_kw}, seed=s, val=plan.val, val_fraction=o.val_fraction,
            num_heads=plan.heads, progress=False,
        )
        return SeedScore(seed=s, score=float(r.primary), metrics=_plain_metrics(r.metrics), steps=sum(f.steps_run for f in r.fits))

    return retrain_seeds(study, run_seed, seeds=o.seeds, params=dict(best.params), metric=plan.metric, progress=o.progress)


def finish(plan: TuningPlan, study: optuna.Study, scores: list[SeedScore], url: str) -> TuneResult:
    """The TuneResult of a study (the seed retrain is also stored on the study for `tune --show`)."""
    o = plan.options
    result = study_result(
        study, url=url, probe=plan.probe_name, protocol=plan.protocol.name, metric=plan.metric,
        validation=plan.validation, space=plan.space, seeds=scores, pruner=o.pruner, n_startup=o.n_startup,
    )
    if scores:
        study.set_user_attr(FINAL_ATTR, {
            "metric": plan.metric, "params": result.best_params, "mean": result.mean, "std": result.std,
            "ci95": result.ci95, "seeds": [dataclasses.asdict(s) for s in scores],
        })
    return result


def tune(
    probe_name: str,
    train: TokenData,
    *,
    val: TokenData | None = None,
    test: TokenData | None = None,
    protocol: str = "default",
    space: Mapping[str, Param | str] | None = None,
    space_file: str | None = None,
    only: tuple[str, ...] | list[str] | None = None,
    hparams: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    fresh: bool = False,
    num_heads: int | None = None,
    options: TuneOptions | None = None,
    **option_values: Any,
) -> TuneResult:
    """Tune a probe's hyperparameters on `train`, then retrain the best with `seeds` seeds and test each.

    Args:
        probe_name: a registered probe (`probekit.probes.list_probes()`).
        train: training tokens. Trials train on it and validate on `val`, or without `val` on a stratified
            part of it held out with a fixed seed (`val_fraction`, default the protocol's).
        val: an official validation split.
        test: test tokens, read only by the final retrain (never while searching). Without it nothing is
            retrained, except under cross-validated protocols, which score on the folds of `train`.
        protocol: a named training protocol (`probekit.train.list_protocols()`): steps, batch, loss, selection.
        space: overrides of the search space by name (Param or "low:high[:log]" / "a,b,c" strings).
        space_file: a TOML file of overrides (`[space]` table); `space` wins over it.
        only: search just these names (e.g. ("lr", "weight_decay") as the unmute protocol); the rest keep
            their defaults.
        hparams: fixed probe hyperparameters (taken out of the search).
        train_overrides: fixed TrainConfig fields (taken out of the search), e.g. {"steps": 500}.
        storage: an Optuna RDB URL shared by workers; None = one SQLite file in results/studies/.
        study_name: default "<probe>-<protocol>-<digest of the study key>", so the same inputs resume their
            study and other inputs (weights, data, space, ...) get another one.
        fresh: delete an existing study of that name and start again.
        num_heads: backbone heads for attentive probes.
        options: how to search (TuneOptions); or give its fields as keywords: n_trials, n_startup, pruner,
            reduction_factor, pruner_warmup, seeds, eval_every, val_fraction, timeout, seed, progress.

    Returns:
        TuneResult: best parameters, trial counts, training steps, per-seed test scores, mean, std, 95% CI.
    """
    names = {f.name for f in dataclasses.fields(TuneOptions)}
    unknown = sorted(set(option_values) - names)
    if unknown:
        raise TypeError(f"tune() got an unexpected keyword argument {unknown[0]!r}")
    opts = dataclasses.replace(options or TuneOptions(), **option_values)
    plan = plan_tuning(probe_name, train, val=val, protocol=protocol, space=space, space_file=space_file, only=only,
                       hparams=hparams, train_overrides=train_overrides, num_heads=num_heads, options=opts)
    name = study_name or default_study_name(probe_name, plan.key, prefix=f"{probe_name}-{plan.protocol.name}")
    url = storage or default_storage_url(name)
    study = run_search(plan, study_name=name, storage=url, fresh=fresh)
    return finish(plan, study, retrain_best(plan, study, test), url)

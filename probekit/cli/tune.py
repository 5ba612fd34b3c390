"""`probekit tune PROBE --backbone B --dataset D --trials N`: Optuna search, then a seed retrain on test.

    probekit tune protobin --backbone eat --dataset as20k --trials 50 --startup 25 --pruner sha --seeds 5
    probekit tune cgp --backbone bat --dataset esc50 --space lr=1e-4:3e-3:log --space-file space.toml
    probekit tune cgp --backbone bat --dataset as20k --storage postgresql://user@host/db --study s1 --seeds 0  # helper
    probekit tune --show cgp-bat-as20k-as20k-1a2b3c4d  # table of trials (+ errors) + best params (+ seed results)
    optuna-dashboard sqlite:///results/studies/cgp-bat-as20k-as20k-1a2b3c4d.db
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from probekit.cli import JSON_HELP, PROGRESS_HELP, QUIET_HELP, app, console, output_mode
from probekit.errors import ConfigError


def _parse_sets(items: list[str], probe_cls) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--set NAME=VALUE` items -> (probe hyperparameters, training values); each value is cast like the
    default it replaces (probekit.cli._parse rules)."""
    import dataclasses

    from probekit.cli._parse import parse_set, split_set
    from probekit.train import TrainConfig

    probe_defaults = probe_cls.hparam_defaults()
    train_defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    hparams: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for item in items:
        key, raw = split_set(item, example="--set steps=2000 --set prototypes=1000")
        if key in probe_defaults or key in probe_cls.hparam_names():
            hparams[key] = parse_set(raw, probe_defaults.get(key), name=key)
        else:  # TrainConfig.replace names an unknown key later
            train[key] = parse_set(raw, train_defaults.get(key), name=key)
    return hparams, train


def token_splits(backbone: str, dataset: str, protocol: str | None, *, planned: dict | None = None, **prepare_kwargs):
    """(train, val, test, protocol name) TokenData for a backbone on a dataset, extracting when needed.

    val is the dataset's official validation split when it has one; test its test split (None for
    cross-validated protocols, whose folds all live in the training tokens). With `planned` (a dict: the
    dry run) nothing is extracted: a split without a finished cache is None and its projected size (a
    cache.planning.DryRun) goes into planned[split].
    """
    from probekit.datasets import get_dataset

    try:
        from probekit.api import protocol_for, token_data
    except ImportError as e:
        raise ConfigError(
            f"probekit tune --backbone/--dataset needs probekit.api to read the token cache ({e})",
            hint="from Python, call probekit.tune.tune(probe, train_tokens, test=test_tokens)",
        ) from None
    ds = get_dataset(dataset, prepare_kwargs.get("data_root"))
    spec = ds.spec
    proto = protocol_for(protocol, spec)
    splits = spec.splits
    if proto.selection == "cv":
        train_split, test_split = ("all" if "all" in splits else "train"), None
    else:
        train_split = "train"
        test_split = "test" if "test" in splits else None
    val_split = next((s for s in ("valid", "validation", "val") if s in splits), None)
    if train_split not in splits:
        raise ConfigError(f"dataset {spec.name!r} has no {train_split!r} split to tune on", hint=f"its splits: {', '.join(splits)}")

    def get(split):
        if split is None:
            return None
        if planned is None:
            return token_data(backbone, ds, split, **prepare_kwargs)
        # as api.prepare, but a missing cache is planned, not extracted
        from probekit._evaluate import collect_options, plan_split, prepare_planned
        from probekit.api import resolve_backbone

        o = collect_options({k: v for k, v in prepare_kwargs.items() if k != "data_root"}, where="prepare")
        bb = resolve_backbone(backbone, device=o.run.device, **o.backbone)
        p = prepare_planned(plan_split(bb, ds, split, o, False), o.run, online=False, confirm=None, dry_run=True)
        if p.planned is not None:
            planned[split] = p.planned
        return p.tokens

    return get(train_split), get(val_split), get(test_split), proto.name


def _token_probe(cls):
    """`cls`, unless it trains inside the live encoder (VQT): this command tunes on token caches."""
    if getattr(cls, "needs_encoder", False):
        raise ConfigError(f"probekit tune reads token caches; probe {cls.name!r} needs the live encoder",
                          hint=f"run `probekit probe {cls.name} --online --tune` (Python: evaluate(..., online=True, "
                          "tune=True))")
    return cls


_WORKERS_OPT = typer.Option(None, "--workers", min=1, help="With --slurm: N worker jobs on one study "
                            "(--storage postgresql://... across machines), then the seed retrain here.")
_SLURM_OPT = typer.Option(None, "--slurm", help="Run --workers as SLURM jobs (submitit): KEY=VALUE items "
                          "(partition=..., time=..., folder=LOGS, wait=true); `--slurm local` runs them here.")


@app.command("tune")
def tune_cmd(
    probe: str | None = typer.Argument(None, help="Probe to tune (probekit probes lists them)."),
    backbone: str | None = typer.Option(None, "--backbone", "-b", help="Backbone name."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Dataset name."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Backbone weights file (alias of --weights PATH)."),
    weights: str | None = typer.Option(
        None, "--weights", help="pretrained (default: the official weights), random, a path, hf:OWNER/REPO@REV/FILE or a URL."
    ),
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder holding the datasets."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Token cache folder."),
    protocol: str | None = typer.Option(None, "--protocol", help="Training protocol (default: the dataset's)."),
    trials: int = typer.Option(50, "--trials", "-n", help="Results the study should hold (resumed studies continue)."),
    startup: int = typer.Option(25, "--startup", help="Quasi-random (Sobol) trials before TPE."),
    pruner: str = typer.Option("sha", "--pruner", help="sha (successive halving), hyperband or none."),
    reduction_factor: int = typer.Option(4, "--reduction-factor", help="Pruner reduction factor (keep 1/N per rung)."),
    seeds: int = typer.Option(5, "--seeds", help="Retrains of the best configuration, each scored on test (0: none)."),
    space: list[str] = typer.Option([], "--space", help="Override a range: NAME=LOW:HIGH[:log], NAME=int:LOW:HIGH, NAME=A,B,C."),
    space_file: Path | None = typer.Option(None, "--space-file", help="TOML file with a \\[space] table of ranges."),
    only: str | None = typer.Option(None, "--only", help="Search only these names (comma-separated), e.g. lr,weight_decay."),
    sets: list[str] = typer.Option([], "--set", help="Fix a probe hyperparameter or training option: NAME=VALUE."),
    storage: str | None = typer.Option(None, "--storage", help="Optuna RDB URL (default: RESULTS/studies/STUDY.db)."),
    study: str | None = typer.Option(
        None, "--study", help="Study name (default: PROBE-BACKBONE-DATASET-PROTOCOL-DIGEST of weights, data, space)."
    ),
    fresh: bool = typer.Option(False, "--fresh", help="Delete the study of that name first and start again."),
    show: str | None = typer.Option(None, "--show", help="Print the summary of study STUDY and exit."),
    eval_every: int | None = typer.Option(None, "--eval-every", help="Validation/pruning interval in steps."),
    val_fraction: float | None = typer.Option(None, "--val-fraction", help="Held-out part of train without a validation split."),
    timeout: float | None = typer.Option(None, "--timeout", help="Start no new trial after this many seconds."),
    seed: int = typer.Option(0, "--seed", help="Sampler and trial seed."),
    json_out: Path | None = typer.Option(
        None, "--json", help="Also write the result as JSON to this file; `--json -`: " + JSON_HELP[0].lower() + JSON_HELP[1:]),
    results_dir: Path | None = typer.Option(
        None, "--results-dir", help="Result records and studies/ (default: $PROBEKIT_RESULTS or ./results)."
    ),
    log_level: str | None = typer.Option(
        None, "--log-level", help="Optuna's log lines: debug, info, warning (default: the root --log-level, "
        "$PROBEKIT_LOG_LEVEL or warning), error."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=PROGRESS_HELP + " On a terminal: a live "
                                  "table of trials."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP + " Prints the best trial and the test score."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (clips, trials, steps, estimated time, "
                                 "cache size) and exit: no extraction, no study, no record."),
    workers: int | None = _WORKERS_OPT,
    slurm: list[str] | None = _SLURM_OPT,
) -> None:
    """Tune a probe with Optuna (Sobol start, TPE, successive halving), retrain the best with seeds, test."""
    if workers is not None or slurm:  # worker jobs through submitit (probekit.launch)
        return _launch_workers(workers, slurm)
    from probekit.tune.logs import cli_log_handler

    to_stdout = json_out is not None and str(json_out) == "-"
    no_progress = not output_mode(progress, quiet, to_stdout)
    quiet = quiet or to_stdout
    cli_log_handler(log_level)
    if show is not None:
        _show(show, storage, results_dir)
        return
    if probe is None or backbone is None or dataset is None:
        raise ConfigError("probekit tune needs PROBE, --backbone and --dataset (or --show STUDY)",
                          hint="e.g. probekit tune cgp --backbone bat --dataset esc50 --trials 50")
    from probekit.probes import get_probe_class
    from probekit.tune import TuneOptions, default_study_name, finish, plan_tuning, retrain_best, run_search
    from probekit.tune.plan import search_space
    from probekit.tune.space import parse_space_override
    from probekit.tune.storage import default_storage_url

    # every option is checked before the tokens are extracted (minutes) and before a study file exists
    options = TuneOptions(
        n_trials=trials, n_startup=startup, pruner=pruner, reduction_factor=reduction_factor, seeds=seeds,
        eval_every=eval_every, val_fraction=val_fraction, timeout=timeout, seed=seed, progress=not no_progress,
    ).check()
    cls = _token_probe(get_probe_class(probe))
    hparams, train_overrides = _parse_sets(sets, cls)
    overrides = dict(parse_space_override(item) for item in space)
    names = tuple(s.strip() for s in only.split(",") if s.strip()) if only else None
    space_path = str(space_file) if space_file else None
    search_space(cls, probe, hparams, train_overrides, overrides, space_path, names)
    if storage is None and not dry_run:  # a bad --study name or an unwritable studies folder, said before extraction
        default_storage_url(study or probe, results_dir)

    from probekit.api import resolve_backbone

    # resolved once: the tokens and the record then name the same weights (checkpoint sha256)
    bb = resolve_backbone(backbone, checkpoint=checkpoint, weights=weights)
    planned: dict = {}  # dry run: split -> projected size of its missing cache (nothing is extracted)
    train, val, test, proto = token_splits(bb, dataset, protocol, data_root=data_root, cache_dir=cache_dir,
                                           progress=not no_progress, **({"planned": planned} if dry_run else {}))
    plan = None if train is None else plan_tuning(
        probe, train, val=val, protocol=proto, space=overrides, space_file=space_path, only=names, hparams=hparams,
        train_overrides=train_overrides, options=options)
    if not quiet:  # the plan before any trial (--quiet / --json -: only the result)
        _print_plan(probe, options, plan, {"train": train, "validation": val, "test": test}, planned)
    if dry_run:
        return
    # the default name carries a digest of what the trials measure: other weights or data, another study
    name = study or default_study_name(probe, plan.key, prefix=f"{probe}-{backbone}-{dataset}-{proto}")
    url = storage or default_storage_url(name, results_dir)
    the_study = run_search(plan, study_name=name, storage=url, fresh=fresh)
    result = finish(plan, the_study, retrain_best(plan, the_study, test), url)
    write = lambda say: _write_record(result, bb, dataset, train, test, data_root, results_dir, say=say)  # noqa: E731
    _report(result, url, name, json_out, to_stdout=to_stdout, quiet=quiet, write_record=write)


def _report(result, url: str, name: str, json_out, *, to_stdout: bool, quiet: bool, write_record) -> None:
    """What `tune` prints and writes once the study is done: the JSON on stdout, or the summary, then the record."""
    from probekit.tune import print_summary, summarize_study
    from probekit.tune.storage import redact

    if to_stdout:
        write_record(False)
        console.print(json.dumps(result.to_dict(), indent=2, default=str), markup=False, highlight=False, soft_wrap=True)
        return
    if quiet:
        console.print(_result_line(result), markup=False, highlight=False, soft_wrap=True)
    else:
        print_summary(summarize_study(url, name), console)
    if json_out is not None:
        _write_json(result, json_out, say=not quiet)
    if url.startswith("sqlite") and not quiet:
        console.print(f"[dim]browse: optuna-dashboard {redact(url, url)}[/]", soft_wrap=True)
    write_record(not quiet)


def _launch_workers(workers: int | None, slurm: list[str] | None) -> None:
    """`--workers N --slurm ...`: N tuning workers as jobs on one study (probekit.launch); once they are done
    (waited for with `--slurm local` or wait=true) this command's own run retrains the best with seeds."""
    from probekit.cli import _state, main
    from probekit.launch import launch_tune, parse_slurm, strip_options

    if not slurm:
        raise ConfigError("--workers starts worker jobs through --slurm", hint="add --slurm local (this machine) "
                          "or --slurm partition=... ; on one machine, start `probekit tune ... --seeds 0` N times")
    argv = strip_options(_state.get("argv") or [], {"--slurm", "--workers"})
    spec = parse_slurm(slurm)
    say = lambda line: console.print(line, highlight=False, soft_wrap=True, markup=False)  # noqa: E731
    launch_tune(argv, workers or 1, spec, say)
    if spec.wait:  # the study holds its trials now: this run starts none, retrains the best and writes the record
        rc = main(argv)
        if rc:
            raise typer.Exit(rc)


def _write_json(result, json_out: Path, *, say: bool) -> None:
    from probekit._io import atomic_write_text

    json_out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_out, json.dumps(result.to_dict(), indent=2, default=str))
    if say:
        console.print(f"wrote {json_out}")


def _print_plan(probe: str, options, plan, data: dict, planned: dict) -> None:
    console.print("\n".join(_plan_lines(probe, options, plan, data, planned)), markup=False, highlight=False,
                  soft_wrap=True)


def _plan_lines(probe: str, options, plan, data: dict, planned: dict) -> list[str]:
    """The plan of this run in words: a timed warm-up of the probe on the real training tokens (as
    `probekit probe` does) extrapolated to trials x steps plus the seed retrains."""
    from probekit._evaluate import estimate_fit, prototype_warning
    from probekit.tune.plan import tuning_plan_lines

    clips = {s: d.num_clips for s, d in data.items() if d is not None}
    clips.update({s: d.clips for s, d in planned.items()})  # by their split names: no tokens yet
    if plan is None:
        return tuning_plan_lines(probe, options, clips=clips, planned=planned)
    if plan.fit_idx is not None:  # the held-out validation part of train
        clips = {"train": len(plan.fit_idx), "validation (held out of train)": len(plan.val_idx),
                 **{s: n for s, n in clips.items() if s != "train"}}
    hparams = dict(plan.hparams)
    k = plan.space.get("prototypes")
    if k is not None and getattr(k, "high", None) is not None:  # searched: the largest K a trial may use
        hparams["prototypes"] = k.high
    n_fit = len(plan.fit_idx) if plan.fit_idx is not None else plan.train.num_clips
    warning = prototype_warning(probe, hparams, n_fit, plan.train.num_classes)
    if warning:  # said in tune's flags
        warning = warning.replace(" try --prototypes ", " try --set prototypes=").replace(" (hparams={'prototypes': ...})", "")
        if k is not None and getattr(k, "high", None) is not None:
            warning += f", or search a smaller range: --space prototypes=int:16:{max(32, n_fit // 4)}:log"
    est = estimate_fit(probe, plan.train, plan.protocol, plan.hparams, plan.fixed_train)
    return tuning_plan_lines(probe, options, clips=clips, plan=plan, estimate=est, planned=planned, warning=warning)


def _result_line(result) -> str:
    """--quiet: the best trial and the retrained test score on one line."""
    from probekit.tune.progress import _fmt

    params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(result.best_params.items()))
    line = f"best: {_fmt(result.best_value)} (trial #{result.best_trial}; {params})"
    if result.mean is not None:
        spread = f" ± {result.std:.2f}" if result.std is not None and len(result.seeds) > 1 else ""
        line += f"; {result.metric} on test: {result.mean:.2f}{spread} ({len(result.seeds)} seed(s))"
    return line


def _show(name: str, storage: str | None, results_dir: Path | None) -> None:
    """`tune --show STUDY`: its trials (with why failed ones failed), best parameters and seed retrain."""
    from probekit.tune import print_summary, summarize_study
    from probekit.tune.storage import redact, studies_dir

    url = storage
    if url is None:
        folder = studies_dir(results_dir)
        path = folder / f"{name}.db"
        if not path.is_file():
            known = sorted(p.stem for p in folder.glob("*.db")) if folder.is_dir() else []
            raise ConfigError(
                f"no study file {path}",
                hint=f"studies here: {', '.join(known)}" if known else "pass --storage URL or --results-dir for studies kept elsewhere",
            )
        url = f"sqlite:///{path.resolve()}"
    print_summary(summarize_study(url, name), console)
    if url.startswith("sqlite"):
        console.print(f"[dim]browse: optuna-dashboard {redact(url, url)}[/]", soft_wrap=True)


def _write_record(result, bb, dataset: str, train, test, data_root, results_dir, *, say: bool = True) -> None:
    """The result record of the seed retrains (scored on test, or cross-validated on train), as `probekit probe`."""
    from probekit.api import record_from_tune
    from probekit.cache import key_digest
    from probekit.results.records import write_record

    if not result.seeds:
        if say:
            console.print("[dim]no result record: no seed retrains (--seeds 0)[/]")
        return
    scored = test if test is not None else train
    store_key = getattr(getattr(scored, "store", None), "key", None)  # a CacheReader's content key
    split = (store_key or {}).get("dataset", {}).get("split") or getattr(scored, "split", None)
    split = split or ("test" if test is not None else "train")
    key = key_digest(store_key) if store_key else None
    record = record_from_tune(result, backbone=bb, dataset=dataset, split=split, cache_key=key, data_root=data_root)
    path = write_record(record, results_dir)
    if say:
        console.print(f"record: {path}", highlight=False, soft_wrap=True)

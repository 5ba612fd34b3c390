"""`probekit leaderboard` and `probekit plot ...`: tables and figures rebuilt from result records."""

from __future__ import annotations

from pathlib import Path

import typer

from probekit.cli import DEVICE_HELP, JSON_HELP, PROGRESS_HELP, QUIET_HELP, app, console, output_mode

plot_app = typer.Typer(help="Figures from result records (PNG/SVG/PDF by the file suffix).", no_args_is_help=True)
app.add_typer(plot_app, name="plot")


def _names(values: list[str] | None) -> list[str] | None:
    """Repeated options and comma lists both work: --dataset a --dataset b,c."""
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


_DATASET = typer.Option(None, "--dataset", "--datasets", "-d", help="Only these datasets (repeat or comma-separate).")
_PROBE = typer.Option(None, "--probe", "--probes", "-p", help="Only these probes (repeat or comma-separate).")
_BACKBONE = typer.Option(None, "--backbone", "--backbones", "-b", help="Only these backbones (repeat or comma-separate).")
_RESULTS = typer.Option(None, "--results-dir", help="Result records directory (default: $PROBEKIT_RESULTS or ./results).")
_SOURCE = typer.Option("all", "--source", help="Rows to show: all, measured or reported.")
_METRIC = typer.Option(None, "--metric", help="Metric to show (default: each dataset's primary metric).")


def _warnings_to_stderr(caught) -> None:
    """Warnings (skipped files, conflicting records) as one 'warning:' line each, not Python's file:line form."""
    from probekit.cli import err_console

    for w in caught:
        err_console.print(f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True)


def _board(results_dir, dataset, probe, backbone, source, metric):
    import warnings

    from probekit.errors import ConfigError
    from probekit.results.leaderboard import leaderboard
    from probekit.results.store import load_records

    if source not in ("all", "measured", "reported"):
        raise ConfigError(f"--source {source!r} is not one of all, measured, reported")
    records = load_records(results_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        board = leaderboard(records, dataset=_names(dataset), probe=_names(probe), backbone=_names(backbone),
                            source=source, metric=metric, published=source != "measured")
    _warnings_to_stderr(caught)
    return board


def _write_text(output: Path, text: str) -> None:
    """Write -o/--output atomically; a folder or an unwritable path is one line naming it."""
    from probekit._io import atomic_write_text
    from probekit.errors import ConfigError

    if output.is_dir():
        raise ConfigError(f"--output {output}: is a folder", hint=f"give a file name, e.g. {output / 'leaderboard.md'}")
    try:
        atomic_write_text(output, text)
    except OSError as e:
        raise ConfigError(f"--output {output}: cannot write: {e.strerror or e}",
                          hint="pick a writable file name") from None


@app.command("leaderboard")
def leaderboard_cmd(
    dataset: list[str] | None = _DATASET,
    probe: list[str] | None = _PROBE,
    backbone: list[str] | None = _BACKBONE,
    fmt: str = typer.Option("table", "--format", "-f", help="table, markdown, csv, latex, html or json."),
    results_dir: Path | None = _RESULTS,
    source: str = _SOURCE,
    metric: str | None = _METRIC,
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of the terminal."),
    gap: bool = typer.Option(False, "--gap", help="Show each probe's gap to fine-tuning (FT - probe, and the "
                             "fraction of the LP-to-FT gap closed) instead of the scores."),
) -> None:
    """Pivot table of every result record (rows: backbones; columns: dataset x probe), with the
    published figures of the BAT and unmute papers as "reported" rows. Mean and rank are given only
    for rows that fill every shown column (others show how many they fill): narrow the columns with
    --dataset/--probe to compare more rows. Piped or written to a file, the table is never cut."""
    from probekit.results.leaderboard import render, show

    df = _board(results_dir, dataset, probe, backbone, source, metric)
    if df.empty:
        from probekit.errors import ConfigError

        raise ConfigError("no result records match these filters",
                          hint="try fewer --dataset/--probe/--backbone filters; `probekit probe ...` writes records")
    if gap:  # probe-to-FT gaps per row (probekit.results.leaderboard.ft_gap)
        from probekit.results.leaderboard import ft_gap, render_gap

        text = render_gap(ft_gap(df), "table" if fmt in ("table", "latex", "html") else fmt)
        if output is not None:
            _write_text(output, text)
            console.print(f"wrote {output}", highlight=False, soft_wrap=True)
        else:
            console.print(text, markup=False, highlight=False, soft_wrap=True, end="")
        return
    if output is not None:
        _write_text(output, render(df, fmt))
        console.print(f"wrote {output}", highlight=False, soft_wrap=True)
    elif fmt == "table":
        show(df, console)
    else:
        console.print(render(df, fmt), markup=False, highlight=False, soft_wrap=True, end="")


@plot_app.command("heatmap")
def plot_heatmap_cmd(
    output: Path = typer.Option(Path("leaderboard.png"), "--output", "-o", help="Figure file (.png, .svg, .pdf)."),
    dataset: list[str] | None = _DATASET,
    probe: list[str] | None = _PROBE,
    backbone: list[str] | None = _BACKBONE,
    results_dir: Path | None = _RESULTS,
    source: str = _SOURCE,
    metric: str | None = _METRIC,
) -> None:
    """The leaderboard as a heatmap (colour scaled per column, best per column in bold)."""
    from probekit.results.plots import plot_heatmap

    df = _board(results_dir, dataset, probe, backbone, source, metric)
    console.print(f"wrote {plot_heatmap(df, output)}", highlight=False, soft_wrap=True)


@plot_app.command("gates")
def plot_gates_cmd(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset whose cgp and layers records to draw."),
    output: Path = typer.Option(Path("gates.png"), "--output", "-o", help="Figure file (.png, .svg, .pdf)."),
    backbone: list[str] | None = _BACKBONE,
    results_dir: Path | None = _RESULTS,
) -> None:
    """CGP's learned gate weight per layer under the per-layer linear-probe curve (the BAT paper's
    Figure 4), one column per backbone. Needs `probekit probe cgp` and `probekit probe layers` records."""
    from probekit.results.plots import plot_gates
    from probekit.results.store import load_records

    records = load_records(results_dir)
    console.print(f"wrote {plot_gates(records, output, dataset=dataset, backbones=_names(backbone))}",
                  highlight=False, soft_wrap=True)


# ---- probekit probe ---------------------------------------------------------------------------------------
PROBE_CHOICES = ("cgp", "protobin", "proto", "linear", "mlp", "mhca", "lcgp", "layers")


def split_settings(probe: str, settings: list[str] | None) -> tuple[dict, dict]:
    """`--set key=value` items -> (probe hyperparameters, training overrides), by name; unknown keys fail."""
    import dataclasses

    from probekit.errors import ConfigError, suggest
    from probekit.probes import get_probe_class
    from probekit.train import TrainConfig

    from probekit.cli._parse import parse_set

    probe_keys = set(get_probe_class(probe).hparam_names())
    train_defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    train_keys = set(train_defaults) - {"seed"}
    hparams, overrides = {}, {}
    for item in settings or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--set {item!r} is not key=value", hint="e.g. --set lr=3e-4 --set dropout=0.1")
        if key in probe_keys:
            hparams[key] = parse_set(value)
        elif key in train_keys:  # cast like the field's default: lr=abc is refused here, not mid-training
            overrides[key] = parse_set(value, train_defaults[key], name=key)
        else:
            raise ConfigError(f"--set {key}: neither a {probe!r} hyperparameter nor a training setting",
                              hint=suggest(key, probe_keys | train_keys))
    return hparams, overrides


def _confirm(yes: bool):
    """Ask before extracting a missing cache, only when someone can answer (a terminal) and --yes is absent."""
    import sys

    if yes or not sys.stdin.isatty():
        return None
    return lambda msg: typer.confirm(msg, default=True)


def run_table(records, *, title: str = "Result"):
    """One row per record: the score as mean ± std over seeds, and every seed's score."""
    from rich.table import Table

    t = Table(title=title, header_style="bold")
    for c in ("backbone", "dataset", "probe", "protocol", "metric", "score", "seeds", "train s"):
        t.add_column(c, justify="right" if c in ("score", "train s") else "left")
    for r in records:
        st = r.aggregate[r.metric]
        score = f"{st.mean:.2f}" + (f" ± {st.std:.2f}" if st.n > 1 else "")
        seeds = " ".join(f"{s.metrics[r.metric]:.2f}" for s in r.seeds)
        train = f"{r.timings.train_s:.1f}" if r.timings.train_s is not None else "-"
        t.add_row(r.backbone.label, f"{r.dataset}/{r.split}", r.probe, r.protocol, r.metric, score, seeds, train)
    return t


_NODES_OPT = typer.Option(1, "--nodes", min=1, help="Data-parallel training on N nodes (with --gpus; torchrun, or --slurm).")
_GPUS_OPT = typer.Option(1, "--gpus", min=1, help="Data-parallel ranks per node (GPUs; CPU processes without CUDA).")
_SLURM_OPT = typer.Option(None, "--slurm", help="Run it as a SLURM job (submitit): KEY=VALUE items (partition=..., "
                          "time=..., folder=LOGS, wait=true); `--slurm local` runs it here.")
_RDZV_OPT = typer.Option(None, "--rdzv-endpoint", help="--nodes N without --slurm: HOST:PORT of torchrun's rendezvous "
                         "(run the command on every node).")


def _ranks(nodes: int, gpus: int, slurm, rdzv_endpoint, results_dir, tune: bool, device: str) -> bool | None:
    """`probe --nodes/--gpus/--slurm`: start the ranks (torchrun or a submitit job) and return None. Otherwise
    join the torchrun job this process belongs to, if any: True for a rank other than 0, which trains its part
    and takes every step rank 0 takes (the plan's timed warm-up too) but neither prints nor writes."""
    from probekit import distributed
    from probekit.cli import _state
    from probekit.errors import ConfigError
    from probekit.launch import launch_probe, parse_slurm, strip_options

    if tune and (nodes * gpus > 1 or distributed.world_size() > 1):  # every rank would run its own trials
        raise ConfigError("--tune with data-parallel ranks: each rank would run its own trials",
                          hint="tune first (`probekit tune ... --workers N --slurm ...`), then probe with --set")
    if not (nodes > 1 or gpus > 1 or slurm):
        return not distributed.init_from_env(device).is_main

    argv = strip_options(_state.get("argv") or [], {"--nodes", "--gpus", "--slurm", "--rdzv-endpoint"})
    launch_probe(argv, nodes, gpus, parse_slurm(slurm), lambda line: console.print(line, highlight=False,
                 soft_wrap=True, markup=False), rdzv_endpoint=rdzv_endpoint,
                 results_dir=str(results_dir) if results_dir else None)
    return None


def _prototypes_key(probe: str) -> str:
    """The hyperparameter `--prototypes` sets on `probe` (K of cgp/protobin, J per class of proto)."""
    from probekit.errors import ConfigError
    from probekit.probes import get_probe_class

    names = get_probe_class(probe).hparam_names()
    for key in ("prototypes", "prototypes_per_class"):
        if key in names:
            return key
    raise ConfigError(f"--prototypes does not apply to probe {probe!r}", hint="use it with cgp, protobin or proto")


@app.command("probe")
def probe_cmd(
    probe: str = typer.Argument(..., help=f"Probe to train: {', '.join(PROBE_CHOICES)} (or any registered probe)."),
    backbone: str = typer.Option(..., "--backbone", "-b", help="Registered backbone (`probekit backbones`)."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name or manifest:PATH.csv."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Weights file (alias of --weights PATH)."),
    weights: str | None = typer.Option(
        None, "--weights", help="pretrained (default: the official weights), random, a path, hf:OWNER/REPO@REV/FILE or a URL."
    ),
    protocol: str | None = typer.Option(None, "--protocol", help="Training preset (default: the dataset's)."),
    prototypes: int | None = typer.Option(None, "--prototypes", "-k", help="Prototypes (cgp, protobin) or per class (proto)."),
    seeds: int = typer.Option(1, "--seeds", help="Train with seeds 0..N-1; the record keeps each and mean/std/CI."),
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder holding datasets (default: $PROBEKIT_DATA)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Token caches (default: $PROBEKIT_CACHE)."),
    results_dir: Path | None = _RESULTS,
    online: bool = typer.Option(False, "--online", help="Run the frozen backbone per batch instead of caching tokens."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    settings: list[str] | None = typer.Option(None, "--set", help="key=value: a probe hyperparameter or training setting (repeatable)."),
    layers: str = typer.Option("all", "--layers", help="Layers to extract when the cache is missing: all, last, 0,5,11."),
    dtype: str = typer.Option("float16", "--dtype", help="Cache dtype when extracting: float16, bfloat16, float32, int8."),
    batch_size: int = typer.Option(32, "--batch-size", help="Clips per encoder call when extracting."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow full unpickling of the checkpoint."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Extract a missing cache without asking."),
    tune: bool = typer.Option(False, "--tune", help="Search hyperparameters first (Optuna, validation data only)."),
    trials: int = typer.Option(50, "--trials", help="Trials of the --tune search."),
    allow_partial_test: bool = typer.Option(False, "--allow-partial-test", help="Score the test clips that remain when some failed to extract (the record says how many)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (clips, steps, estimated time, cache size) and exit without training."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=PROGRESS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP + " Prints the result table."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP + " The result record(s), as written to disk."),
    save_probe: bool = typer.Option(True, "--save-probe/--no-save-probe", help="Save the first seed's probe beside the record (for `probekit predict`)."),
    nodes: int = _NODES_OPT,
    gpus: int = _GPUS_OPT,
    slurm: list[str] | None = _SLURM_OPT,
    rdzv_endpoint: str | None = _RDZV_OPT,
) -> None:
    """Train a probe on a backbone's frozen tokens, test it, write a result record and print it.

    Uses the token cache of `probekit extract` (offering to extract first when it is missing), or the
    live backbone with --online; --tune searches hyperparameters first (the record keeps the study summary;
    `probekit tune` offers every search option). Example:
    probekit probe cgp --backbone bat --dataset as20k --prototypes 10000
    """
    other_rank = _ranks(nodes, gpus, slurm, rdzv_endpoint, results_dir, tune, device)
    if other_rank is None:  # data-parallel ranks were started here (torchrun or a submitit job) and are done
        return
    progress = progress and not other_rank
    from probekit.api import RunOptions, TokenSpec, TrainOptions, TuneOptions, evaluate, resolve_backbone
    from probekit.results.leaderboard import leaderboard
    from probekit.results.store import load_records

    show = output_mode(progress, quiet, json_out)
    hparams, overrides = split_settings(probe, settings)
    if prototypes is not None:
        hparams[_prototypes_key(probe)] = prototypes
    import warnings

    from probekit.cli import err_console

    bb = resolve_backbone(backbone, checkpoint=checkpoint, device=device, trust_checkpoint=trust_checkpoint,
                          weights=weights)
    with warnings.catch_warnings():
        # failed clips and class coverage are said before training, one 'warning:' line each
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *a, **k: err_console.print(
            f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True, markup=False)
        res = evaluate(
            bb, datasets=[dataset], probes=[probe],
            tokens=TokenSpec(layers=layers, dtype=dtype),
            run=RunOptions(device=device, batch_size=batch_size, cache_dir=cache_dir, progress=show),
            train=TrainOptions(protocol=protocol, seeds=seeds, hparams=hparams, overrides=overrides,
                               allow_partial_test=allow_partial_test),
            tune=TuneOptions(trials=trials) if tune else False,
            online=online, confirm=None if dry_run else _confirm(yes), results_dir=results_dir,
            data_root=data_root, dry_run=dry_run, write=not dry_run, save_probe=save_probe,
            log=None if (quiet or json_out) else (lambda line: None) if other_rank else
            (lambda line: console.print(line, highlight=False, soft_wrap=True, markup=False)),
        )
    if other_rank:  # rank 0 alone wrote the record and prints it
        return
    if dry_run:
        console.print("dry run: nothing trained, no record written", highlight=False)
        return
    if json_out:  # the records exactly as written to disk, one JSON document
        import json

        docs = [json.loads(r.to_json()) for r in res.records]
        console.print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2), markup=False, highlight=False,
                      soft_wrap=True)
        return
    from probekit._console import print_table

    print_table(run_table(res.records), console)
    if quiet:
        return
    for p in res.paths:
        console.print(f"record: {p}", highlight=False, soft_wrap=True)
        if save_probe:
            from probekit.predict import probe_path_for

            console.print(f"probe: {probe_path_for(p)} (`probekit predict --record {p} AUDIO...`)",
                          highlight=False, soft_wrap=True, markup=False)
    rec = res.records[0]
    # the run succeeded: a bad record elsewhere in the results dir is a warning here, never exit 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        board = leaderboard(load_records(results_dir, on_error="warn"), dataset=rec.dataset, probe=probe,
                            published=True)
    _warnings_to_stderr(caught)
    if len(board.index) > 1:
        from probekit.results.leaderboard import show as show_board

        show_board(board, console, title=f"{probe} on {rec.dataset}: reproduced and reported")
    if probe in ("cgp", "lcgp", "layers"):
        console.print(f"[dim]figure: probekit plot gates --dataset {rec.dataset}"
                      + (f" --results-dir {results_dir}" if results_dir else "") + "[/]", highlight=False)

"""`probekit pretrain`: BAT self-supervised pretraining from the command line (also under torchrun)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.table import Table

from probekit._console import print_table
from probekit.cli import DEVICE_HELP, JSON_HELP, PROGRESS_HELP, QUIET_HELP, app, console, output_mode


def build_config(name: str, sets: list[str], **direct):
    """Named config + direct options (None = keep) + `--set section.field=value` overrides."""
    from probekit.pretrain.config import _resolve_field, get_config

    cfg = get_config(name)
    overrides = {k: v for k, v in direct.items() if v is not None}
    from probekit.cli._parse import parse_set, split_set

    for item in sets:
        key, raw = split_set(item, example="--set optim.lr=1e-3")
        section, leaf = _resolve_field(key)
        current = getattr(cfg if section is None else getattr(cfg, section), leaf)
        value = parse_set(raw, current, name=key)  # cast to the type of the field it replaces
        if current is None and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # optional numeric fields (clip_norm, max_seconds) are floats
        overrides[key] = value
    return cfg.with_overrides(**overrides).validate() if overrides else cfg


@app.command("pretrain")
def pretrain_command(
    config: str = typer.Option(
        "bat-tiny-fsdd", "--config", "-c", help="Named config: bat-base, bat-tiny-fsdd, bat-micro-fsdd."
    ),
    dataset: str | None = typer.Option(None, "--dataset", help="Dataset to pretrain on (its train split)."),
    data_root: Path | None = typer.Option(None, "--data-root", help="Dataset root directory."),
    out: Path | None = typer.Option(
        None, "--run-dir", "--out", help="Run directory: checkpoints, log.csv (default runs/pretrain/<config>)."
    ),
    steps: int | None = typer.Option(
        None, "--steps", help="Total optimizer steps (sets the schedule length)."
    ),
    stop_after: int | None = typer.Option(
        None, "--stop-after", help="Stop after this many steps, resumable, same schedule."
    ),
    max_minutes: float | None = typer.Option(
        None, "--max-minutes", help="Wall-clock budget; checkpoint and export when spent."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --run-dir."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Clips per process per micro-batch."),
    grad_accum: int | None = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step."),
    num_workers: int | None = typer.Option(None, "--num-workers", help="Decoding workers."),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed of the initialisation, masks and data order (default: the config's run.seed)."
    ),
    probe_every: int | None = typer.Option(None, "--probe-every", help="Fast probe every N steps (0: off)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Exported encoder file (default RUN_DIR/<config>.safetensors)."
    ),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads."),
    sets: list[str] = typer.Option([], "--set", help="Override any field: --set optim.lr=1e-3 (repeatable)."),
    show: bool = typer.Option(False, "--show", help="Print the resolved config and exit."),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help=PROGRESS_HELP + " Every log row also goes to RUN_DIR/log.csv."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP + " Prints the result table."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Pretrain a BAT encoder (EMA teacher, inverse block masking); export a checkpoint the BAT backbone loads.

    -o/--output is the exported encoder file (in every command -o names the output file); the run directory is --run-dir (formerly --out, still accepted).

    Multi-GPU: torchrun --nproc_per_node=4 -m probekit.pretrain --config bat-base --data-root /data/audioset
    """
    cfg = build_config(
        config,
        list(sets),
        **{
            "data.dataset": dataset,
            "data.data_root": None if data_root is None else str(data_root),
            "optim.steps": steps,
            "data.batch_size": batch_size,
            "optim.grad_accum": grad_accum,
            "data.num_workers": num_workers,
            "run.seed": seed,
            "run.probe_every": probe_every,
        },
    )
    if steps is not None and cfg.optim.warmup_steps > steps:
        cfg = cfg.with_overrides(**{"optim.warmup_steps": max(0, steps // 10)}).validate()
    if show:
        console.print_json(json.dumps(cfg.to_dict()))
        return
    show_progress = output_mode(progress, quiet, json_out)
    from probekit.pretrain.train import pretrain

    run_dir = out if out is not None else Path("runs") / "pretrain" / cfg.name
    result = pretrain(
        cfg,
        run_dir,
        device=device,
        resume=resume,
        stop_after=stop_after,
        max_minutes=max_minutes,
        output=output,
        progress=show_progress,
        threads=threads,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    if json_out:
        doc = {"config": cfg.name, "step": result.step, "steps": cfg.optim.steps, "last_loss": result.last_loss,
               "seconds": result.seconds, "log_csv": result.log_csv, "checkpoint": result.checkpoint,
               "best_checkpoint": result.best_checkpoint, "run_dir": run_dir}
        console.print(json.dumps(doc, indent=2, default=str), markup=False, highlight=False, soft_wrap=True)
        return
    t = Table(title=f"pretrain {cfg.name}", show_header=False)
    t.add_row("steps", f"{result.step} / {cfg.optim.steps}")
    t.add_row("last loss", f"{result.last_loss:.4f}")
    t.add_row("time", f"{result.seconds / 60:.1f} min")
    t.add_row("log", str(result.log_csv))
    t.add_row(
        "checkpoint", str(result.checkpoint) if result.checkpoint else "(stopped early: resume with --resume)"
    )
    if result.best_checkpoint:
        t.add_row("best (probe)", str(result.best_checkpoint))
    print_table(t, console)


@app.command("pretrain-configs")
def pretrain_configs_command() -> None:
    """List the built-in pretraining configs."""
    from probekit.pretrain.config import CONFIGS

    t = Table(title="pretraining configs")
    for col in ("name", "encoder", "frames", "views", "batch", "steps", "description"):
        t.add_column(col)
    for name, factory in CONFIGS.items():
        c = factory()
        t.add_row(
            name,
            f"D{c.encoder.dim} x{c.encoder.depth}",
            str(c.encoder.frames),
            str(c.masking.num_views),
            str(c.data.batch_size),
            str(c.optim.steps),
            c.description,
        )
    print_table(t, console)


__all__ = ["build_config", "pretrain_command", "pretrain_configs_command"]

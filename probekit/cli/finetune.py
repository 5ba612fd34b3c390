"""`probekit finetune`: fine-tune a backbone with its dataset's official recipe; writes an FT record."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from probekit._console import print_table
from probekit.cli import DEVICE_HELP, JSON_HELP, PROGRESS_HELP, QUIET_HELP, app, console, output_mode


def _launch_ranks(nodes: int, gpus: int, slurm, rdzv_endpoint, results_dir) -> None:
    """nodes x gpus data-parallel ranks of this command (torchrun here, or a submitit job with --slurm)."""
    from probekit.cli import _state
    from probekit.launch import launch_probe, parse_slurm, strip_options

    argv = strip_options(_state.get("argv") or [], {"--nodes", "--gpus", "--slurm", "--rdzv-endpoint"})
    launch_probe(argv, nodes, gpus, parse_slurm(slurm), lambda line: console.print(line, highlight=False,
                 soft_wrap=True, markup=False), rdzv_endpoint=rdzv_endpoint,
                 results_dir=str(results_dir) if results_dir else None, command="finetune")


@app.command("finetune")
def finetune_command(
    backbone: str = typer.Option(None, "--backbone", help="Registered backbone name (see `probekit backbones`)."),
    dataset: str = typer.Option(None, "--dataset", help="Dataset name, or manifest:PATH.csv."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Weights file (alias of --weights PATH)."),
    weights: str | None = typer.Option(
        None, "--weights", help="pretrained (default: the official weights), random, a path, hf:OWNER/REPO@REV/FILE or a URL."
    ),
    recipe: str | None = typer.Option(
        None, "--recipe", help="Preset (default: the dataset's official recipe; --list-recipes shows them)."
    ),
    sets: list[str] = typer.Option([], "--set", help="Override a recipe value: --set lr=1e-4 (repeatable; the "
                                   "official config keys, e.g. optimization_steps, train_batch_size, use_mixup)."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Number of seeds (0..N-1)."),
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder holding datasets."),
    results_dir: Path | None = typer.Option(None, "--results-dir", help="Where records go (default $PROBEKIT_RESULTS)."),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="Checkpoints and best/last weights (default RESULTS/finetune/<backbone>-<dataset>-<recipe>)."
    ),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    workers: int = typer.Option(0, "--workers", min=0, help="Decoding workers."),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue an unfinished run in --run-dir (default), "
                                "or start over."),
    stop_after: int | None = typer.Option(None, "--stop-after", min=1, help="Stop after this many steps (resumable)."),
    seed: int = typer.Option(0, "--seed", help="Init seed of --weights random."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow full unpickling."),
    write: bool = typer.Option(True, "--write/--no-write", help="Write the record to the results folder."),
    show: bool = typer.Option(False, "--show", help="Print the resolved recipe and exit."),
    list_recipes: bool = typer.Option(False, "--list-recipes", help="List the presets and exit."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=PROGRESS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    nodes: int = typer.Option(1, "--nodes", min=1, help="Data-parallel fine-tuning on N nodes (with --gpus; "
                              "torchrun, or --slurm)."),
    gpus: int = typer.Option(1, "--gpus", min=1, help="Data-parallel ranks per node (GPUs; CPU processes without "
                             "CUDA). The global batch is the recipe's train_batch_size, split over the ranks."),
    slurm: list[str] | None = typer.Option(None, "--slurm", help="Run it as a SLURM job (submitit): KEY=VALUE items "
                                           "(partition=..., time=..., folder=LOGS, wait=true); `--slurm local` runs it here."),
    rdzv_endpoint: str | None = typer.Option(None, "--rdzv-endpoint", help="--nodes N without --slurm: HOST:PORT of "
                                             "torchrun's rendezvous (run the command on every node)."),
) -> None:
    """Fine-tune the whole encoder with the official recipe of the dataset (BAT code); records probe 'finetune' (FT)."""
    from probekit.errors import ConfigError
    from probekit.finetune import RECIPES, resolve_recipe

    if list_recipes:
        t = Table(title="fine-tuning recipes")
        for col in ("recipe", "steps", "batch", "lr", "decay", "warmup", "loss", "mixup", "masks", "selection"):
            t.add_column(col)
        for name, r in sorted(RECIPES.items()):
            t.add_row(name, str(r.optimization_steps), str(r.train_batch_size), f"{r.lr:g}", str(r.lr_layer_decay),
                      str(r.lr_warmup_steps), r.loss_name if r.loss_name != "auto" else "ce/bce",
                      f"{r.mixup_chance:g}/{r.mixup_beta:g}" if r.use_mixup else "-",
                      f"{r.freq_mask_param}/{r.time_mask_param} x{r.tf_mask_repeats}" if r.use_tf_mask else "-",
                      r.selection)
        print_table(t, console)
        return
    if show and not dataset and recipe:  # a preset alone needs no data
        from probekit.finetune import get_recipe

        console.print_json(json.dumps(get_recipe(recipe).with_sets(list(sets)).to_dict()))
        return
    if not dataset:
        raise ConfigError("probekit finetune needs --dataset", hint="e.g. --dataset esc50 (or --list-recipes)")
    from probekit.datasets import get_dataset

    ds = get_dataset(dataset, data_root=data_root)
    r = resolve_recipe(ds.spec, recipe, list(sets))
    if show:
        console.print_json(json.dumps(r.to_dict()))
        return
    if not backbone:
        raise ConfigError("probekit finetune needs --backbone", hint="e.g. --backbone bat (see `probekit backbones`)")
    if nodes > 1 or gpus > 1 or slurm:  # start the ranks; each reruns this command without the launch options
        _launch_ranks(nodes, gpus, slurm, rdzv_endpoint, results_dir)
        return
    from probekit import distributed

    if distributed.world_size() > 1 and not distributed.init_from_env(device).is_main:
        progress, quiet, json_out = False, True, False  # rank 0 alone prints (and writes the record)
    chatty = output_mode(progress, quiet, json_out)
    from probekit.backbones import get_backbone
    from probekit.finetune import finetune

    bb = get_backbone(backbone, checkpoint=checkpoint, seed=seed, trust_checkpoint=trust_checkpoint, weights=weights,
                      device=device)
    log = (lambda line: console.print(line, markup=False, highlight=False)) if chatty else None
    out = finetune(bb, ds, recipe=r, seeds=seeds, device=device, workers=workers, run_dir=run_dir,
                   results_dir=results_dir, write=write, resume=resume, stop_after=stop_after, log=log)
    if distributed.rank() != 0:  # another rank of a data-parallel job: nothing to print
        return
    if out.record is None:
        msg = f"stopped after {stop_after} steps; resume with the same command (run dir {out.run_dir})"
        if json_out:
            console.print(json.dumps({"stopped": True, "run_dir": str(out.run_dir)}), markup=False, highlight=False)
        else:
            console.print(msg, markup=False, highlight=False)
        return
    rec = out.record
    st = rec.aggregate[rec.metric]
    if json_out:
        doc = {"backbone": bb.name, "dataset": ds.spec.name, "probe": "finetune", "recipe": r.name,
               "metric": rec.metric, "mean": st.mean, "std": st.std, "n": st.n, "ci": [st.ci_low, st.ci_high],
               "seeds": [s.metrics.get(rec.metric) for s in rec.seeds], "record": str(out.path) if out.path else None,
               "run_dir": str(out.run_dir)}
        console.print(json.dumps(doc, indent=2), markup=False, highlight=False, soft_wrap=True)
        return
    if quiet:
        console.print(f"{st.mean:.2f}", markup=False, highlight=False)
        return
    t = Table(title=f"FT {bb.name} / {ds.spec.name} (recipe {r.name})", show_header=False)
    t.add_row(rec.metric, f"{st.mean:.2f} ± {st.std:.2f} (n={st.n})")
    if st.ci_low is not None:
        t.add_row("95% CI", f"{st.ci_low:.2f} .. {st.ci_high:.2f}")
    t.add_row("seeds", ", ".join(f"{s.metrics.get(rec.metric, float('nan')):.2f}" for s in rec.seeds))
    t.add_row("weights", str(out.run_dir))
    if out.path:
        t.add_row("record", str(out.path))
    if rec.notes:
        t.add_row("notes", rec.notes)
    print_table(t, console)


__all__ = ["finetune_command"]

"""`probekit demo`: the embedded default run (see probekit.demo)."""

from __future__ import annotations

from pathlib import Path

import typer

from probekit.cli import DEVICE_HELP, PROGRESS_HELP, QUIET_HELP, app, console, output_mode


@app.command("demo")
def demo(
    out_dir: Path = typer.Option(Path("probekit-demo"), "--out", help="Where caches, records and figures go."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Seeds per probe (mean +- std in the table when > 1)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=PROGRESS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP + " Prints the leaderboard."),
) -> None:
    """Probe a FSDD-pretrained tiny BAT, its random init and the melpatch floor on shipped FSDD clips."""
    from probekit.demo import DEMO_PROBES, run_demo
    from probekit.results.leaderboard import show

    show_progress = output_mode(progress, quiet)
    if not quiet:
        if console.is_terminal:
            console.rule("[bold]probekit demo")
        console.print(
            "bat-tiny-fsdd (pretrained by probekit on FSDD's training split) vs. the same architecture at random "
            "init vs. melpatch (the raw log-mel 16x16 patches, no weights: the floor a model must beat); "
            f"probes: {', '.join(DEMO_PROBES)}; data: 600 train / 300 test real FSDD clips (CC BY-SA 4.0).",
            soft_wrap=not console.is_terminal,
        )
    res = run_demo(out_dir, device=device, seeds=seeds, progress=show_progress)
    show(res.board, console, title="probekit demo, test accuracy in % (600 train / 300 test clips)")
    if quiet:
        return
    console.print(f"leaderboard: {res.leaderboard_path}  (heatmap: {res.heatmap_path})", highlight=False, soft_wrap=True)
    console.print(f"layer-gate figure: {res.gates_path}", highlight=False, soft_wrap=True)
    console.print(f"records: {out_dir / 'results'}  ·  done in {res.seconds:.0f} s", highlight=False, soft_wrap=True)
    console.print(
        "rows: the probekit-pretrained model (†: it saw FSDD's training split), the same architecture at random "
        "init, and melpatch (raw log-mel patches, no weights): a model is only worth its score above both floors. "
        f"Next: probekit leaderboard --results-dir {out_dir / 'results'} ; "
        f"probekit plot gates -d fsdd --results-dir {out_dir / 'results'} -o gates.png",
        highlight=False, soft_wrap=True, markup=False)

"""`probekit extract` and `probekit cache ls|du|verify|rm`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from probekit._console import print_table
from probekit.cli import DEVICE_HELP, JSON_HELP, PROGRESS_HELP, QUIET_HELP, app, console, output_mode
from probekit.errors import CacheError

cache_app = typer.Typer(help="Inspect, verify and remove token stores.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@app.command("extract")
def extract_command(
    backbone: str = typer.Option(..., "--backbone", help="Registered backbone name (see `probekit backbones`)."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset name, or manifest:PATH.csv."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Weights file (alias of --weights PATH)."),
    weights: str | None = typer.Option(
        None, "--weights", help="pretrained (default: the official weights), random, a path, hf:OWNER/REPO@REV/FILE or a URL."
    ),
    data_root: Path | None = typer.Option(None, "--data-root", help="Folder holding datasets."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Store root (default $PROBEKIT_CACHE)."),
    split: list[str] | None = typer.Option(None, "--split", help="Split(s) to extract (default: all)."),
    layers: str = typer.Option("all", "--layers", help="all, last, or block indices like 0,5,11."),
    dtype: str = typer.Option("float16", "--dtype", help="float16 | bfloat16 | float32 | int8."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    workers: int | None = typer.Option(None, "--workers", min=0, help="Decoding workers (default cores-1)."),
    shard: str | None = typer.Option(None, "--shard", help="i/n: this process does shards i, i+n, ..."),
    on_error: str = typer.Option("skip", "--on-error", help="skip (record failed clips) or fail."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show projected sizes and free disk; write nothing."),
    frontend_style: str = typer.Option("model", "--frontend-style", help="model or bat-paper."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow full unpickling."),
    autocast: bool = typer.Option(False, "--autocast", help="Encoder under bfloat16 autocast (own cache key)."),
    seed: int = typer.Option(0, "--seed", help="Init seed of --weights random."),
    force: bool = typer.Option(False, "--force", help="Delete an existing store with this key first."),
    ignore_disk_space: bool = typer.Option(False, "--ignore-disk-space", help="Start even if it will not fit."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=PROGRESS_HELP + " --no-progress prints "
                                  "each store's path instead of its summary."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP + " Prints each store's path."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP + " One summary per split."),
    allow_nonfinite: bool = typer.Option(False, "--allow-nonfinite", help="Load NaN/Inf weights and store NaN/Inf tokens (default: refuse both)."),
    verify: bool | None = typer.Option(None, "--verify/--no-verify",
                                       help="Re-hash finished shards first (default: when the store is complete)."),
    slurm: list[str] | None = typer.Option(None, "--slurm", help="Fan the shards out as a SLURM job array "
                                           "(submitit): KEY=VALUE items (partition=gpu,time=120,gpus_per_node=1, "
                                           "folder=LOGS, wait=true); `--slurm local` runs the jobs here."),
    jobs: int = typer.Option(4, "--jobs", min=1, help="With --slurm: tasks of the job array (task i does shards i, i+N, ...)."),
    clips_per_shard: int | None = typer.Option(None, "--clips-per-shard", min=1,
                                               help="Shard size of a new store (default: ~256 MB of tokens)."),
) -> None:
    """Extract per-layer tokens once into the content-addressed cache (resumable; rerun to finish)."""
    if slurm:  # each array task runs this same command with --shard i/N (probekit.launch)
        from probekit.cli import _state
        from probekit.launch import launch_extract, parse_slurm, strip_options

        argv = strip_options(_state.get("argv") or [], {"--slurm", "--jobs"})
        launch_extract(argv, jobs, parse_slurm(slurm), lambda line: console.print(line, highlight=False,
                                                                                  soft_wrap=True, markup=False))
        return
    from probekit.backbones import get_backbone
    from probekit.cache import RunOptions, TokenSpec, plan, run_extraction
    from probekit.cache.extraction import dry_run_of
    from probekit.datasets import get_dataset

    show = output_mode(progress, quiet, json_out)
    chatty = progress and not (quiet or json_out)  # summaries and notes besides the bar
    tokens = TokenSpec(layers=layers, dtype=dtype, frontend_style=frontend_style, autocast=autocast)
    run = RunOptions(device=device, workers=workers, batch_size=batch_size, cache_dir=cache_dir, progress=show,
                     on_error=on_error, shard=shard, ignore_disk_space=ignore_disk_space,
                     allow_nonfinite=allow_nonfinite, verify=verify, clips_per_shard=clips_per_shard)
    # --on-error skip: a manifest's absent files become failed clips that name the file (fail: refused up front)
    opts = {"keep_missing": True} if on_error == "skip" and dataset.startswith("manifest:") else {}
    ds = get_dataset(dataset, data_root=data_root, **opts)
    bb = get_backbone(backbone, checkpoint=checkpoint, seed=seed, trust_checkpoint=trust_checkpoint,
                      allow_nonfinite=allow_nonfinite, weights=weights)
    results = []
    for s in split or list(ds.spec.splits):
        p = plan(bb, ds, s, tokens, run)
        if dry_run:
            report = dry_run_of(p, run)
            if json_out:
                import dataclasses

                results.append({**dataclasses.asdict(report), "needed": report.needed, "fits": report.fits})
            elif chatty:
                print_dry_run(report)
            continue
        done = run_extraction(p, run, force=force)
        if json_out:
            results.append({**done.store.summary(), "cache_hit": done.cache_hit, "failed_clips": done.store.failed_counts()["failed"]})
            continue
        if done.repaired and chatty:
            console.print(f"[yellow]re-extracted {len(done.repaired)} shard(s)[/]: "
                          + "; ".join(done.repaired[j] for j in sorted(done.repaired)[:3]), highlight=False)
        if not chatty:
            console.print(str(done.store.path), highlight=False)
            _warn_failed(done.store)
        elif done.cache_hit:
            console.print(f"[green]cache hit[/]: {done.store.path}", highlight=False, soft_wrap=True)
            _warn_failed(done.store)  # a reused store still says which clips it lacks
        else:
            if done.resumed_batch_size is not None:
                console.print(f"resumed with the store's batch size {done.resumed_batch_size} "
                              "(bitwise-identical results)")
            print_summary(done.store)
    if json_out:
        import json

        console.print(json.dumps(results, indent=2, default=str), markup=False, highlight=False, soft_wrap=True)


def _warn_failed(store) -> None:
    """Failed clips of a store, on stderr: the count, then the first three with their reason."""
    from probekit.cli import err_console

    from rich.markup import escape

    c = store.failed_counts()
    if c["failed"]:
        err_console.print(f"[yellow]warning:[/] {c['failed']} of {c['clips']} clips of split {c['split']} failed; "
                          "a rerun retries them once the files are fixed", highlight=False, soft_wrap=True)
        for f in store.failed_clips()[:3]:  # the reason of each, as decoding said it
            err_console.print(f"  {escape(str(f.get('error') or f.get('id')))}", highlight=False, soft_wrap=True)


def print_dry_run(report) -> None:
    """The projected sizes of a `DryRun` as a table, and whether the chosen one fits."""
    from probekit.cache.disk import fmt_bytes

    t = Table(title=f"projected store size: {report.clips} clips, grid {report.grid}, dim {report.embed_dim}")
    for col in ("layers", "dtype", "size", ""):
        t.add_column(col, justify="right" if col == "size" else "left")
    for r in report.rows:
        t.add_row(r["layers"], r["dtype"], fmt_bytes(r["bytes"]), "[bold green]<- chosen[/]" if r["chosen"] else "")
    print_table(t, console)
    verdict = "[green]fits[/]" if report.fits else "[bold red]does not fit[/]"
    console.print(
        f"store: {report.path}\nneeded {fmt_bytes(report.needed)} (already on disk {fmt_bytes(report.existing)}), "
        f"free {fmt_bytes(report.free)}: {verdict}",
        highlight=False,
    )


def print_summary(store) -> None:
    """A finished store's summary and its failed clips (the first 20)."""
    from probekit.cache.disk import fmt_bytes

    s = store.summary()
    failed = store.meta.get("failed_clips", [])
    t = Table(title="extraction summary", show_header=False)
    for k in ("path", "backbone", "dataset", "split", "clips", "layers", "grid", "dim", "dtype", "done"):
        t.add_row(k, str(s[k]))
    t.add_row("size", fmt_bytes(s["bytes"]))
    t.add_row("failed clips", str(len(failed)))
    print_table(t, console)
    for f in failed[:20]:
        console.print(f"  [yellow]failed[/] {f['id']}: {f['error']}", highlight=False)
    if len(failed) > 20:
        console.print(f"  ... and {len(failed) - 20} more (store attribute probekit.failed_clips)")


def _stores(cache_dir: Path | None):
    stores, others = _scan(cache_dir)
    for p, why, _ in others:
        console.print(f"[yellow]skipping[/] {p.name}: {why}", highlight=False)
    return stores


def _scan(cache_dir: Path | None):
    """(probekit stores, [(path, why, counts_as_damage)]): foreign *.zarr and unreadable stores are listed.

    A *.zarr with no probekit attributes is someone else's (not damage); one whose zarr.json or probekit
    attributes cannot be read is a damaged store.
    """
    from probekit.cache.store import NotAStoreError, TokenStore, list_stores

    stores, others = [], []
    for p in list_stores(cache_dir):
        try:
            stores.append(TokenStore(p))
        except NotAStoreError as e:
            others.append((p, "not a probekit store" + (f" ({e.detail})" if e.detail else ""), e.detail is not None))
        except CacheError as e:
            others.append((p, e.message.removeprefix(f"{p}: "), True))
    return stores, others


def _find(ref: str, cache_dir: Path | None) -> Path:
    from probekit.cache import default_cache_dir, list_stores

    from probekit.cache.fs import location

    p = location(ref)  # a folder, or a store's fsspec URL
    if (p / "zarr.json").is_file():
        return p
    hits = [s for s in list_stores(cache_dir) if s.name == ref or s.name.startswith(ref) or ref in s.name]
    if len(hits) == 1:
        return hits[0]
    root = location(cache_dir) if cache_dir else default_cache_dir()
    if not hits:
        raise CacheError(f"no store matches {ref!r} in {root}", hint="`probekit cache ls` lists them")
    raise CacheError(f"{ref!r} matches {len(hits)} stores in {root}: {', '.join(h.name for h in hits[:4])}",
                     hint="give more of the name or the full path")


@cache_app.command("ls")
def ls_command(
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Store root (default $PROBEKIT_CACHE)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP + " Every store's full summary."),
) -> None:
    """List stores with their provenance and size (never cut: a narrow terminal gets several tables)."""
    from probekit.cache.disk import fmt_bytes
    from probekit.cache.keys import cache_root

    stores, others = _scan(cache_dir)
    if json_out:
        import json

        rows = [st.summary() for st in stores] + [{"path": str(p), "error": why} for p, why, _ in others]
        console.print(json.dumps(rows, indent=2, default=str), markup=False, highlight=False, soft_wrap=True)
        return
    t = Table(title=f"token stores in {cache_root(cache_dir)}", caption="`probekit cache rm STORE` takes the store column")
    for col in ("store", "backbone", "weights", "dataset/split", "clips", "layers", "grid x dim", "dtype",
                "state", "failed", "size", "created"):
        t.add_column(col, justify="right" if col in ("clips", "size", "failed") else "left",
                     no_wrap=col in ("store", "backbone", "weights"))  # identifiers a user types: never cut
    for st in stores:
        s = st.summary()
        state = "[green]complete[/]" if s["complete"] else f"[yellow]partial {s['done']}[/]"
        digest = Path(s["path"]).stem.rsplit("__", 1)[-1]  # the rest of the name is in the other columns
        t.add_row(digest[:12], s["backbone"], s["checkpoint"], f"{s['dataset']}/{s['split']}",
                  str(s["clips"]), str(s["layers"]), f"{s['grid'][0]}x{s['grid'][1]} x {s['dim']}", s["dtype"],
                  state, str(s["failed"]), fmt_bytes(s["bytes"]), s["created"])
    for p, why, _ in others:  # listed, not hidden: a damaged store must be visible (`cache rm` takes its name)
        t.add_row(p.name, "", "", "", "", "", "", "", f"[red]{why}[/]", "", "", "")
    print_table(t, console)


@cache_app.command("du")
def du_command(
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Store root (default $PROBEKIT_CACHE)."),
) -> None:
    """Disk use per backbone and dataset, and the free space left."""
    from probekit.cache.disk import fmt_bytes, free_bytes
    from probekit.cache.keys import cache_root

    root = cache_root(cache_dir)  # a folder or an fsspec URL
    totals: dict[tuple[str, str], list[int]] = {}
    for st in _stores(cache_dir):
        s = st.summary()
        v = totals.setdefault((s["backbone"], s["dataset"]), [0, 0])
        v[0] += 1
        v[1] += s["bytes"]
    t = Table(title=f"disk use of {root}")
    t.add_column("backbone")
    t.add_column("dataset")
    t.add_column("stores", justify="right")
    t.add_column("size", justify="right")
    for (b, d), (n, size) in sorted(totals.items()):
        t.add_row(b, d, str(n), fmt_bytes(size))
    t.add_row("[bold]total", "", str(sum(v[0] for v in totals.values())),
              f"[bold]{fmt_bytes(sum(v[1] for v in totals.values()))}")
    print_table(t, console)
    console.print(f"free on that disk: {fmt_bytes(free_bytes(root))}", highlight=False)


@cache_app.command("verify")
def verify_command(
    stores: list[str] | None = typer.Argument(None, help="Store paths or names (default: all)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Store root (default $PROBEKIT_CACHE)."),
    checksums: bool = typer.Option(True, "--checksums/--no-checksums", help="Re-read and hash every shard."),
) -> None:
    """Check completeness and checksums; exits 1 when a store has problems."""
    from probekit._console import Bar
    from probekit.cache.store import TokenStore

    if stores:
        targets, others = [], []
        for s in stores:
            p = _find(s, cache_dir)
            try:
                targets.append(TokenStore(p))
            except CacheError as e:  # named explicitly: unreadable or foreign counts as a failure
                others.append((p, e.message.removeprefix(f"{p}: "), True))
    else:
        targets, others = _scan(cache_dir)
    t = Table(title="verify")
    t.add_column("store")
    t.add_column("result")
    bad = 0
    for p, why, damage in others:
        bad += damage
        t.add_row(p.name, ("[red]" if damage else "[yellow]") + why)
    for st in targets:
        with Bar(f"verify {st.path.name}", st.layout.num_shards, unit="shards", transient=True) as bar:
            problems = st.verify(checksums=checksums, progress=lambda bar=bar: bar.update(advance=1))
            bad += bool(problems)
            t.add_row(st.path.name, "[green]ok[/]" if not problems else "[red]" + "; ".join(problems))
    print_table(t, console)
    if bad:
        raise typer.Exit(1)


@cache_app.command("rm")
def rm_command(
    stores: list[str] = typer.Argument(..., help="Store paths or names."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Store root (default $PROBEKIT_CACHE)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Delete stores (refused while one is being extracted)."""
    from probekit.cache.disk import dir_bytes, fmt_bytes
    from probekit.cache.store import remove_store

    paths = [_find(s, cache_dir) for s in stores]
    for p in paths:
        size = dir_bytes(p)
        if not yes and not typer.confirm(f"delete {p} ({fmt_bytes(size)})?"):
            continue
        remove_store(p)
        console.print(f"removed {p.name} ({fmt_bytes(size)})", highlight=False)

"""`probekit extract` and `probekit cache ls|du|verify|rm`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from probekit.cli import app, console
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
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
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
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Extract per-layer tokens once into the content-addressed cache (resumable; rerun to finish)."""
    from probekit.backbones import get_backbone
    from probekit.cache.extract import extract
    from probekit.datasets import get_dataset

    # --on-error skip: a manifest's absent files become failed clips that name the file (fail: refused up front)
    opts = {"keep_missing": True} if on_error == "skip" and dataset.startswith("manifest:") else {}
    ds = get_dataset(dataset, data_root=data_root, **opts)
    bb = get_backbone(backbone, checkpoint=checkpoint, seed=seed, trust_checkpoint=trust_checkpoint, weights=weights)
    for s in split or list(ds.spec.splits):
        out = extract(
            bb, ds, s, cache_dir=cache_dir, layers=layers, dtype=dtype, batch_size=batch_size, device=device,
            workers=workers, shard=shard, on_error=on_error, dry_run=dry_run, force=force, autocast=autocast,
            progress=progress, frontend_style=frontend_style, ignore_disk_space=ignore_disk_space, console=console,
        )
        if not dry_run and not progress:
            console.print(str(out.path), highlight=False)


def _stores(cache_dir: Path | None):
    from probekit.cache.store import TokenStore, list_stores

    out = []
    for p in list_stores(cache_dir):
        try:
            out.append(TokenStore(p))
        except CacheError as e:
            console.print(f"[yellow]skipping[/] {p.name}: {e}", highlight=False)
    return out


def _find(ref: str, cache_dir: Path | None) -> Path:
    from probekit.cache.store import default_cache_dir, list_stores

    p = Path(ref).expanduser()
    if (p / "zarr.json").is_file():
        return p
    hits = [s for s in list_stores(cache_dir) if s.name == ref or s.name.startswith(ref) or ref in s.name]
    if len(hits) == 1:
        return hits[0]
    root = cache_dir or default_cache_dir()
    if not hits:
        raise CacheError(f"no store matches {ref!r} in {root}", hint="`probekit cache ls` lists them")
    raise CacheError(f"{ref!r} matches {len(hits)} stores in {root}: {', '.join(h.name for h in hits[:4])}",
                     hint="give more of the name or the full path")


@cache_app.command("ls")
def ls_command(
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Store root (default $PROBEKIT_CACHE)."),
) -> None:
    """List stores with their provenance and size."""
    from probekit.cache.store import default_cache_dir, fmt_bytes

    stores = _stores(cache_dir)
    t = Table(title=f"token stores in {cache_dir or default_cache_dir()}", caption="`probekit cache rm STORE` takes the store column")
    for col in ("store", "backbone", "weights", "dataset/split", "clips", "layers", "grid x dim", "dtype",
                "state", "failed", "size", "created"):
        t.add_column(col, justify="right" if col in ("clips", "size", "failed") else "left")
    for st in stores:
        s = st.summary()
        state = "[green]complete[/]" if s["complete"] else f"[yellow]partial {s['done']}[/]"
        digest = Path(s["path"]).stem.rsplit("__", 1)[-1]  # the rest of the name is in the other columns
        t.add_row(digest[:12], s["backbone"], s["checkpoint"], f"{s['dataset']}/{s['split']}",
                  str(s["clips"]), str(s["layers"]), f"{s['grid'][0]}x{s['grid'][1]} x {s['dim']}", s["dtype"],
                  state, str(s["failed"]), fmt_bytes(s["bytes"]), s["created"])
    console.print(t)


@cache_app.command("du")
def du_command(
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Store root (default $PROBEKIT_CACHE)."),
) -> None:
    """Disk use per backbone and dataset, and the free space left."""
    from probekit.cache.store import default_cache_dir, fmt_bytes, free_bytes

    root = Path(cache_dir) if cache_dir else default_cache_dir()
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
    console.print(t)
    console.print(f"free on that disk: {fmt_bytes(free_bytes(root))}", highlight=False)


@cache_app.command("verify")
def verify_command(
    stores: list[str] | None = typer.Argument(None, help="Store paths or names (default: all)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Store root (default $PROBEKIT_CACHE)."),
    checksums: bool = typer.Option(True, "--checksums/--no-checksums", help="Re-read and hash every shard."),
) -> None:
    """Check completeness and checksums; exits 1 when a store has problems."""
    from rich.progress import Progress

    from probekit.cache.store import TokenStore

    targets = [TokenStore(_find(s, cache_dir)) for s in stores] if stores else _stores(cache_dir)
    t = Table(title="verify")
    t.add_column("store")
    t.add_column("result")
    bad = 0
    with Progress(console=console, transient=True) as prog:
        for st in targets:
            task = prog.add_task(st.path.name[:40], total=st.layout.num_shards)
            problems = st.verify(checksums=checksums, progress=lambda task=task: prog.advance(task))
            bad += bool(problems)
            t.add_row(st.path.name, "[green]ok[/]" if not problems else "[red]" + "; ".join(problems[:3]))
    console.print(t)
    if bad:
        raise typer.Exit(1)


@cache_app.command("rm")
def rm_command(
    stores: list[str] = typer.Argument(..., help="Store paths or names."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Store root (default $PROBEKIT_CACHE)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Delete stores (refused while one is being extracted)."""
    from probekit.cache.store import dir_bytes, fmt_bytes, remove_store

    paths = [_find(s, cache_dir) for s in stores]
    for p in paths:
        size = dir_bytes(p)
        if not yes and not typer.confirm(f"delete {p} ({fmt_bytes(size)})?"):
            continue
        remove_store(p)
        console.print(f"removed {p.name} ({fmt_bytes(size)})", highlight=False)

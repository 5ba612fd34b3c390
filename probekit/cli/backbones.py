"""CLI: `probekit backbones`, `probekit convert`, `probekit check-backbone`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from probekit._console import print_table
from probekit.cli import DEVICE_HELP, JSON_HELP, app, console


def _human(n: int) -> str:
    if not n:
        return "-"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _short_citation(citation: str) -> str:
    """'Chen, W., Liang, Y., ... Title. IJCAI 2024.' -> 'Chen et al., IJCAI 2024' (full text in the cards)."""
    if not citation:
        return "-"
    first = citation.split(",")[0].strip()
    venue = citation.rstrip(". ").rsplit(". ", 1)[-1]
    return f"{first} et al., {venue}"


@app.command("backbones")
def backbones_cmd(
    pattern: str | None = typer.Argument(None, help="Only names matching this pattern, e.g. 'eat*'."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List registered backbones: parameters, width, layers, heads, frontend, training data, citation.

    Full cards (architecture, checkpoint formats, citation) are in the repository's backbones/ folder.
    """
    from probekit.backbones.registry import backbone_card, list_backbones

    table = Table(title="probekit backbones", show_lines=False)
    for col, kw in (
        ("name", {"style": "bold cyan", "no_wrap": True}),
        ("params", {"justify": "right", "no_wrap": True}),
        ("dim", {"justify": "right"}),
        ("layers", {"justify": "right"}),
        ("heads", {"justify": "right"}),
        ("frontend", {}),
        ("training data", {}),
        ("citation", {"no_wrap": True}),
    ):
        table.add_column(col, **kw)
    names = list_backbones(pattern)
    if json_out:
        import dataclasses
        import json

        cards = [{"name": n, **dataclasses.asdict(backbone_card(n))} for n in names]
        console.print(json.dumps(cards, indent=2, default=str), markup=False, highlight=False, soft_wrap=True)
        return
    for name in names:
        c = backbone_card(name)
        table.add_row(
            name,
            _human(c.params),
            str(c.embed_dim),
            str(c.num_layers),
            str(c.num_heads),
            c.frontend or f"own ({c.family})",  # families with their own frontend (BEATs, Dasheng, ...)
            ", ".join(c.training_data) or "-",
            _short_citation(c.citation),
        )
    print_table(table, console)
    if not names:
        console.print(f"[yellow]no backbone matches {pattern!r}[/]")


@app.command("convert")
def convert_cmd(
    src: Path = typer.Argument(..., help="Checkpoint in any accepted format (or a Hugging Face folder)."),
    dst: Path = typer.Argument(..., help="Output .safetensors (probekit format: ViT keys + metadata)."),
    trust_checkpoint: bool = typer.Option(
        False, "--trust-checkpoint", help="Allow full unpickling of SRC (can run code from the file)."
    ),
    use_ema: bool = typer.Option(False, "--use-ema", help="Export the EMA teacher where the file has one."),
    num_heads: int | None = typer.Option(None, "--num-heads", help="Attention heads (default: file config or width/64)."),
    allow_nonfinite: bool = typer.Option(
        False, "--allow-nonfinite", help="Load weights holding NaN/Inf (refused by default: they poison every token)."
    ),
) -> None:
    """Convert any accepted checkpoint format into safetensors once (safe to load from then on)."""
    from probekit.backbones.checkpoints import convert_checkpoint

    loaded = convert_checkpoint(src, dst, num_heads=num_heads, trust_checkpoint=trust_checkpoint, use_ema=use_ema,
                                allow_nonfinite=allow_nonfinite)
    c = loaded.config
    console.print(
        f"[green]converted[/] {loaded.path} [dim]({loaded.format})[/] -> {dst}: {loaded.family.upper()} "
        f"D={c.embed_dim} L={c.depth} heads={c.num_heads} table={c.pos_len} rows"
        + (f", ignored {len(loaded.ignored)} non-encoder entries" if loaded.ignored else "")
    )


def _load_factory(spec: str):
    import importlib

    from probekit.errors import BackboneError

    mod_name, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise BackboneError(f"cannot load backbone factory {spec!r}: {e}", hint="use 'package.module:function'") from None
    if not callable(obj):
        raise BackboneError(f"{spec!r} is not callable", hint="point at a function returning a backbone")
    return obj


@app.command("check-backbone")
def check_backbone_cmd(
    name: str = typer.Argument(
        ..., help="Registered backbone name (see `probekit backbones`), or 'package.module:factory' for your own."
    ),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Weights file (alias of --weights PATH)."),
    weights: str | None = typer.Option(
        None, "--weights", help="pretrained (default: the official weights), random, a path, hf:OWNER/REPO@REV/FILE or a URL."
    ),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow full unpickling of the checkpoint."),
    use_ema: bool = typer.Option(False, "--use-ema", help="Load the EMA teacher where the file has one."),
    num_heads: int | None = typer.Option(None, "--num-heads", help="Attention heads override."),
    seconds: float = typer.Option(1.0, "--seconds", help="Length of the test clips."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    allow_nonfinite: bool = typer.Option(
        False, "--allow-nonfinite", help="Load weights holding NaN/Inf (refused by default: they poison every token)."
    ),
) -> None:
    """Conformance check of a backbone: shapes, dtypes, no NaN/Inf, determinism, batch independence."""
    from probekit.backbones.custom import check_backbone
    from probekit.backbones.registry import get_backbone, is_prefixed_name

    if ":" in name and not is_prefixed_name(name):  # "package.module:factory" -> a user's factory returning any Backbone (e.g. adapt_module(...))
        bb = _load_factory(name)(checkpoint) if checkpoint else _load_factory(name)()
    else:
        bb = get_backbone(
            name, checkpoint, num_heads=num_heads, trust_checkpoint=trust_checkpoint, use_ema=use_ema, device=device,
            allow_nonfinite=allow_nonfinite, weights=weights,
        )
    results = check_backbone(bb, seconds=seconds, raise_on_fail=False)
    w = getattr(bb, "weights", None)
    shown = w.describe(bb.seed) if w is not None else str(checkpoint) if checkpoint else "random init"
    table = Table(title=f"check-backbone {name} ({shown})")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for r in results:
        table.add_row(r.check, "[green]ok[/]" if r.ok else "[bold red]FAIL[/]", r.detail)
    print_table(table, console)
    failed = [r for r in results if not r.ok]
    if failed:
        from probekit.errors import BackboneError

        raise BackboneError(f"{name}: {len(failed)} of {len(results)} checks failed: {', '.join(r.check for r in failed)}")
    console.print(f"[green]{name}: all {len(results)} checks passed[/]")


@app.command("checkpoint-info")
def checkpoint_info_cmd(
    path: Path = typer.Argument(..., help="Checkpoint file or Hugging Face folder."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow full unpickling of the file."),
    use_ema: bool = typer.Option(False, "--use-ema", help="Inspect the EMA teacher where the file has one."),
    num_heads: int | None = typer.Option(None, "--num-heads", help="Attention heads override."),
    allow_nonfinite: bool = typer.Option(
        False, "--allow-nonfinite", help="Load weights holding NaN/Inf (refused by default: they poison every token)."
    ),
) -> None:
    """Detected format, sizes, sha256 and skipped entries of a checkpoint (nothing is written)."""
    from probekit.backbones.checkpoints import FORMATS, load_checkpoint

    ck = load_checkpoint(path, num_heads=num_heads, trust_checkpoint=trust_checkpoint, use_ema=use_ema,
                         allow_nonfinite=allow_nonfinite)
    c = ck.config
    table = Table(title=str(ck.path), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    base_fmt = ck.format.removesuffix("-ema")
    rows = [
        ("format", f"{ck.format} ({FORMATS.get(base_fmt, '')})"),
        ("family", f"{ck.family} ({'gated' if c.gated else 'no'} attention gate)"),
        ("embed dim / layers / heads", f"{c.embed_dim} / {c.depth} / {c.num_heads}"),
        ("MLP ratio", f"{c.mlp_ratio:g}"),
        ("positional table", f"{c.pos_len} rows -> sequences of up to {c.window_rows} time patches"),
        ("sha256", ck.sha256),
        ("skipped (not the encoder)", ", ".join(ck.ignored[:12]) + (" ..." if len(ck.ignored) > 12 else "") or "-"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    print_table(table, console)

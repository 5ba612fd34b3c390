"""`probekit probes`: the registered probes, their names in tables, hyperparameters and tuned ranges."""

from __future__ import annotations

from rich.markup import escape

import json

import typer
from rich.table import Table

from probekit.cli import JSON_HELP, app, console


def _space(spec) -> str:
    """A search-space entry as `probekit tune --space` writes it (lr=1e-4:3e-3:log, choice a,b)."""
    choices = getattr(spec, "choices", None)
    if choices is not None:
        return ",".join(str(c) for c in choices)
    low, high = getattr(spec, "low", None), getattr(spec, "high", None)
    if low is None:
        return str(spec)
    kind = "int:" if type(spec).__name__ == "Int" else ""
    return f"{kind}{low:g}:{high:g}" + (":log" if getattr(spec, "log", False) else "")


@app.command("probes")
def probes_cmd(
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List registered probes: the name to pass (`probekit probe NAME`, `probekit tune NAME`), the name in
    tables, each hyperparameter's default (set with --set NAME=VALUE) and the ranges `tune` searches."""
    from probekit._console import print_table
    from probekit.probes import get_probe_class, list_probes

    rows = []
    for name in list_probes():
        cls = get_probe_class(name)
        rows.append({
            "name": name,
            "display_name": cls.label(),
            "description": cls.description,
            "hyperparameters": {k: v for k, v in cls.hparam_defaults().items()},
            "search_space": {k: _space(v) for k, v in cls.search_space.items()},
        })
    if json_out:
        console.print(json.dumps(rows, indent=2, default=str), markup=False, highlight=False, soft_wrap=True)
        return
    from probekit.probes.space import TRAIN_SPACE

    shared = " ".join(f"{k}={_space(v)}" for k, v in TRAIN_SPACE.items())
    t = Table(title="probekit probes",
              caption=f"--set NAME=VALUE fixes a hyperparameter; `probekit tune` searches the ranges and, for every "
              f"probe, {shared}")
    t.add_column("name", style="bold cyan", no_wrap=True)
    t.add_column("in tables")
    t.add_column("hyperparameters (default)")
    t.add_column("tuned ranges")
    t.add_column("description")
    for r in rows:
        # descriptions and values are text: "[min, cls, max]" is not rich markup
        t.add_row(*(escape(x) for x in (
            r["name"], r["display_name"], " ".join(f"{k}={v}" for k, v in r["hyperparameters"].items()),
            " ".join(f"{k}={v}" for k, v in r["search_space"].items()) or "-", r["description"])))
    print_table(t, console)

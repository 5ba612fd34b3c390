"""Leaderboards rebuilt from result records: the shape of the BAT paper's Table 5.

Rows are backbones (measured runs first, then published figures set apart, each labelled with its
source), columns are (dataset, probe) pairs, cells are the mean of each dataset's primary metric in
percent (probekit's metrics are percentages). `leaderboard()` returns the numeric table; `df.attrs` carries what the renderers mark:

- ``std`` / ``n``: std over seeds and the seed count per cell (``± std`` is shown where n > 1),
- ``best``: the best value per column (bold),
- ``in_domain``: cells whose dataset the backbone saw in (pre)training (``†``),
- two summary columns: ``mean`` (of the row's cells) and ``rank`` (the row's mean rank over columns,
  1 = best; each column ranks the rows that have a value).

`render(df, fmt)` writes it as ``table`` (rich), ``markdown``, ``csv``, ``latex``, ``html`` or ``json``.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from probekit.errors import ConfigError
from probekit.results.records import ResultRecord, filter_records

FORMATS = ("table", "markdown", "csv", "latex", "html", "json")
MEASURED_GROUP = "measured"
REPORTED_GROUP = "reported"
SUMMARY = ("mean", "rank")

# Display names and the usual column order (the paper's, then the rest alphabetically).
DATASET_NAMES = {
    "as2m": "AS-2M", "as20k": "AS-20k", "esc50": "ESC-50", "sc2": "SC-2", "sc2-35": "SC-2 (35)",
    "fsd50k": "FSD50K", "fsdd": "FSDD",
}


class _ProbeNames(dict):
    """Probe display names as each probe class declares them (`Probe.display_name`); plugins join too."""

    def get(self, key, default=None):
        if key in self:
            return self[key]
        from probekit.probes import PROBES  # lazily: tables of records need no torch until shown

        return PROBES.get(key).label() if key in PROBES else default


PROBE_NAMES = _ProbeNames(finetune="FT")  # fine-tuning is no probe
_DATASET_ORDER = list(DATASET_NAMES)
_PROBE_ORDER = ["finetune", "cgp", "protobin", "proto", "mhca", "mlp", "lcgp", "linear", "layers"]
# A backbone pretrained on the left saw (the clips of) the datasets on the right.
_COVERS = {"as2m": {"as2m", "as20k"}, "audioset": {"as2m", "as20k"}}


def _canon(name: str) -> str:
    n = re.sub(r"[^a-z0-9]", "", name.lower())
    return {"audioset2m": "as2m", "as2m": "as2m", "audioset": "audioset", "audioset20k": "as20k",
            "esc50": "esc50", "speechcommands": "sc2", "speechcommandsv2": "sc2"}.get(n, n)


def in_domain(training_data: Iterable[str], dataset: str) -> bool:
    """True when a backbone trained on `training_data` has seen `dataset` (AS-2M covers AS-20k)."""
    target = _canon(dataset)
    for t in training_data:
        c = _canon(t)
        if c == target or target in _COVERS.get(c, ()):
            return True
    return False


def short_source(source: str) -> str:
    """'Ghaffari, Rauch, ... ICML 2026 ..., Table 5' -> 'Ghaffari et al. 2026'; 'measured' stays.

    One row per publication: the tables of one paper share a row (the record keeps the full source).
    """
    if source == "measured":
        return source
    first = re.split(r"[ ,.]", source.strip(), maxsplit=1)[0]
    years = re.findall(r"\b(?:19|20)\d\d\b", source)
    return f"{first} et al." + (f" {years[0]}" if years else "")


def _order(values: Iterable[str], preferred: Sequence[str]) -> list[str]:
    vals = list(dict.fromkeys(values))
    rank = {v: i for i, v in enumerate(preferred)}
    return sorted(vals, key=lambda v: (rank.get(v, len(preferred)), v))


def leaderboard(
    records: Iterable[ResultRecord],
    dataset: str | Sequence[str] | None = None,
    probe: str | Sequence[str] | None = None,
    backbone: str | Sequence[str] | None = None,
    *,
    metric: str | None = None,
    source: Literal["all", "measured", "reported"] = "all",
    scale: float = 1.0,
) -> pd.DataFrame:
    """Pivot records into a leaderboard (rows: group x backbone x source; columns: dataset x probe).

    Args:
        records: result records (e.g. `load_records()`, which includes the published figures).
        dataset, probe, backbone: keep only these names (one or a list).
        metric: metric to tabulate (default: each record's primary metric, e.g. mAP or accuracy).
        source: "measured", "reported" or "all" rows.
        scale: multiply scores (probekit's metrics are already in percent, as the papers print them).

    Returns:
        A DataFrame of mean scores with `mean` and `rank` summary columns; `df.attrs` holds `std`,
        `n`, `best`, `in_domain` frames of the same shape and `metric` labels per column. Where
        several records fall in one cell (other protocols or splits) the most recent one is shown.
    """
    recs = filter_records(records, dataset=dataset, probe=probe, backbone=backbone, source=source)
    cells: dict[tuple, dict] = {}
    col_metric: dict[tuple[str, str], set[str]] = {}
    for r in recs:
        m = metric or r.metric
        if m not in r.aggregate:
            continue
        group = REPORTED_GROUP if r.reported else MEASURED_GROUP
        row = (group, r.backbone.label, short_source(r.source))
        col = (r.dataset, r.probe)
        old = cells.get((row, col))
        if old is not None and old["date"] > r.date:
            continue
        st = r.aggregate[m]
        cells[(row, col)] = dict(
            mean=st.mean * scale, std=st.std * scale, n=st.n, date=r.date,
            in_domain=in_domain(r.backbone.training_data, r.dataset),
        )
        col_metric.setdefault(col, set()).add(m)

    datasets = _order((c[0] for _, c in cells), _DATASET_ORDER)
    cols = [(d, p) for d in datasets for p in _order((c[1] for _, c in cells if c[0] == d), _PROBE_ORDER)]
    rows_measured = sorted({r for r, _ in cells if r[0] == MEASURED_GROUP}, key=lambda r: (r[1].lower(), r[2]))
    rows_reported = sorted({r for r, _ in cells if r[0] == REPORTED_GROUP}, key=lambda r: (r[1].lower(), r[2]))
    index = pd.MultiIndex.from_tuples(rows_measured + rows_reported, names=["group", "backbone", "source"])
    columns = pd.MultiIndex.from_tuples(cols, names=["dataset", "probe"])

    def frame(key, fill, dtype):
        f = pd.DataFrame(fill, index=index, columns=columns, dtype=dtype)
        for (row, col), c in cells.items():
            f.loc[row, col] = c[key]
        return f

    mean = frame("mean", np.nan, float)
    std = frame("std", np.nan, float)
    n = frame("n", 0, int)
    dom = frame("in_domain", False, bool)

    summary_cols = pd.MultiIndex.from_tuples([(s, "") for s in SUMMARY], names=["dataset", "probe"])
    out = mean.copy()
    if len(cols):
        ranks = mean.rank(axis=0, ascending=False, method="min")
        out[("mean", "")] = mean.mean(axis=1, skipna=True)
        out[("rank", "")] = ranks.mean(axis=1, skipna=True)
    else:
        out = pd.DataFrame(index=index, columns=summary_cols, dtype=float)
    best = pd.DataFrame(False, index=index, columns=out.columns)
    for c in out.columns:
        col = out[c]
        if col.notna().any():
            target = col.min() if c == ("rank", "") else col.max()
            best[c] = np.isclose(col, target, rtol=0, atol=1e-9) & col.notna()
    pad = lambda f, fill: f.reindex(columns=out.columns, fill_value=fill)
    out.attrs = {
        "std": pad(std, np.nan),
        "n": pad(n, 0),
        "in_domain": pad(dom, False),
        "best": best,
        "metric": {c: "/".join(sorted(col_metric[c])) for c in cols},
        "scale": scale,
    }
    return out


# ---- rendering --------------------------------------------------------------------------------------
def _fmt(v: float, digits: int = 2) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _cell_parts(df: pd.DataFrame, row, col) -> tuple[str, bool, bool]:
    """(text, best, in_domain) of one cell: '41.04 ± 0.31' where several seeds exist."""
    v = df.at[row, col]
    if pd.isna(v):
        return "–", False, False
    a = df.attrs
    if col[0] in SUMMARY:
        return _fmt(v), bool(a["best"].at[row, col]), False
    text = _fmt(v)
    if int(a["n"].at[row, col]) > 1:
        text += f" ± {_fmt(a['std'].at[row, col])}"
    return text, bool(a["best"].at[row, col]), bool(a["in_domain"].at[row, col])


def _headers(df: pd.DataFrame) -> list[str]:
    # One dataset: the probe names alone (the dataset goes in the title), so narrow terminals keep the scores.
    single = len({d for d, _ in df.columns if d not in SUMMARY}) == 1
    out = []
    for d, p in df.columns:
        if d in SUMMARY:
            out.append(d)
        elif single:
            out.append(PROBE_NAMES.get(p, p))
        else:
            out.append(f"{DATASET_NAMES.get(d, d)} {PROBE_NAMES.get(p, p)}")
    return out


def _row_label(row) -> str:
    group, bb, src = row
    return bb if group == MEASURED_GROUP else f"{bb} ({src})"


def legend(df: pd.DataFrame) -> str:
    metrics = sorted(set(df.attrs.get("metric", {}).values()))
    unit = " in %" if df.attrs.get("scale", 1.0) == 1.0 else ""
    return (
        f"scores: {', '.join(metrics) or '-'}{unit}; best per column in bold; ± std over seeds; "
        "† in-domain (the backbone saw this dataset in pretraining); mean over the row's cells; "
        "rank = mean rank over columns (1 = best)"
    )


def _styled_rows(df, bold, dagger):
    """[(group, label, [cell strings])] with markup from `bold(text)` and `dagger(text)`."""
    rows = []
    for row in df.index:
        cells = []
        for col in df.columns:
            text, is_best, dom = _cell_parts(df, row, col)
            if dom:
                text = dagger(text)
            if is_best:
                text = bold(text)
            cells.append(text)
        rows.append((row[0], _row_label(row), cells))
    return rows


def to_rich(df: pd.DataFrame, *, title: str | None = "Leaderboard"):
    """A rich Table: measured rows, a rule, then published rows; best per column in bold green."""
    from rich.table import Table

    datasets = {d for d, _ in df.columns if d not in SUMMARY}
    if title and len(datasets) == 1:
        title = f"{title}: {DATASET_NAMES.get(next(iter(datasets)), next(iter(datasets)))}"
    table = Table(title=title, caption=legend(df), caption_justify="left", show_lines=False, header_style="bold")
    # One dataset (few columns): scores never shrink to an ellipsis, long backbone labels fold instead.
    # Many columns: labels stay whole and a narrow terminal shortens the cells.
    single = len(datasets) == 1
    table.add_column("backbone", style="cyan", no_wrap=not single, overflow="fold", min_width=12)
    for h in _headers(df):
        table.add_column(h, justify="right", no_wrap=single)
    rows = _styled_rows(df, lambda t: f"[bold green]{t}[/]", lambda t: f"{t}†")
    last_group = None
    for group, label, cells in rows:
        if last_group is not None and group != last_group:
            table.add_section()
        if group != last_group:
            table.add_row(f"[italic]{'reproduced (measured)' if group == MEASURED_GROUP else 'reported'}[/]",
                          *[""] * len(cells))
        last_group = group
        table.add_row(label, *cells)
    return table


def _markdown(df: pd.DataFrame) -> str:
    head = ["backbone", *_headers(df)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    last = None
    for group, label, cells in _styled_rows(df, lambda t: f"**{t}**", lambda t: f"{t}†"):
        if group != last:
            name = "reproduced (measured)" if group == MEASURED_GROUP else "reported"
            lines.append("| *" + name + "* |" + " |" * len(cells))
            last = group
        lines.append("| " + " | ".join([label.replace("|", "/"), *cells]) + " |")
    return "\n".join(lines) + "\n\n" + legend(df) + "\n"


def _latex_escape(s: str) -> str:
    return re.sub(r"([&%$#_{}])", r"\\\1", s).replace("±", r"$\pm$").replace("–", "--")


def _latex(df: pd.DataFrame) -> str:
    ncol = len(df.columns)
    out = [r"\begin{tabular}{l" + "r" * ncol + "}", r"\toprule"]
    # two header rows: datasets spanning their probes, then probes (like Table 5)
    spans, top = [], []
    for d, _ in df.columns:
        if spans and spans[-1][0] == d:
            spans[-1][1] += 1
        else:
            spans.append([d, 1])
    for d, k in spans:
        name = d if d in SUMMARY else DATASET_NAMES.get(d, d)
        top.append(rf"\multicolumn{{{k}}}{{c}}{{{_latex_escape(name)}}}" if k > 1 else _latex_escape(name))
    out.append("Model & " + " & ".join(top) + r" \\")
    out.append(" & " + " & ".join("" if d in SUMMARY else _latex_escape(PROBE_NAMES.get(p, p))
                                  for d, p in df.columns) + r" \\")
    out.append(r"\midrule")
    last = None
    rows = _styled_rows(df, lambda t: rf"\textbf{{{t}}}", lambda t: rf"{t}$^\dagger$")
    for group, label, cells in rows:
        if group != last:
            if last is not None:
                out.append(r"\midrule")
            name = "Reproduced (measured)" if group == MEASURED_GROUP else "Reported"
            out.append(rf"\multicolumn{{{ncol + 1}}}{{l}}{{\textit{{{name}}}}} \\")
            last = group
        cells = [c.replace(" ± ", r" $\pm$ ").replace("–", "--") for c in cells]
        out.append(_latex_escape(label) + " & " + " & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", "% " + legend(df)]
    return "\n".join(out) + "\n"


def _html(df: pd.DataFrame) -> str:
    import html as _h

    head = "".join(f"<th>{_h.escape(h)}</th>" for h in ["backbone", *_headers(df)])
    body, last = [], None
    rows = _styled_rows(df, lambda t: f"<b>{t}</b>", lambda t: f"{t}&dagger;")
    for group, label, cells in rows:
        if group != last:
            name = "reproduced (measured)" if group == MEASURED_GROUP else "reported"
            body.append(f'<tr class="group"><td colspan="{len(cells) + 1}"><i>{name}</i></td></tr>')
            last = group
        tds = "".join(f"<td>{c.replace('±', '&plusmn;')}</td>" for c in cells)
        body.append(f'<tr class="{group}"><td>{_h.escape(label)}</td>{tds}</tr>')
    return (
        f'<table class="probekit-leaderboard">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(body)
        + f"\n</tbody>\n<caption>{_h.escape(legend(df))}</caption>\n</table>\n"
    )


def to_long(df: pd.DataFrame) -> pd.DataFrame:
    """One row per filled cell with its numbers and flags (what csv and json write)."""
    a = df.attrs
    rows = []
    for row in df.index:
        for col in df.columns:
            v = df.at[row, col]
            if pd.isna(v):
                continue
            summary = col[0] in SUMMARY
            rows.append(dict(
                group=row[0], backbone=row[1], source=row[2],
                dataset="" if summary else col[0], probe="" if summary else col[1],
                column=col[0] if summary else f"{col[0]}/{col[1]}",
                metric=col[0] if summary else a["metric"].get(col, ""),
                value=round(float(v), 6),
                std=None if summary or int(a["n"].at[row, col]) < 2 else round(float(a["std"].at[row, col]), 6),
                n=None if summary else int(a["n"].at[row, col]),
                best=bool(a["best"].at[row, col]),
                in_domain=False if summary else bool(a["in_domain"].at[row, col]),
            ))
    out = pd.DataFrame(rows, columns=["group", "backbone", "source", "dataset", "probe", "column", "metric",
                                      "value", "std", "n", "best", "in_domain"])
    return out.astype({"n": "Int64"})


def render(df: pd.DataFrame, fmt: str = "table", *, width: int = 200) -> str:
    """The leaderboard as text in one of FORMATS."""
    if fmt not in FORMATS:
        from probekit.errors import suggest

        raise ConfigError(f"unknown leaderboard format {fmt!r}", hint=suggest(fmt, FORMATS))
    if fmt == "table":
        from rich.console import Console

        console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
        console.print(to_rich(df))
        return console.export_text()
    if fmt == "markdown":
        return _markdown(df)
    if fmt == "latex":
        return _latex(df)
    if fmt == "html":
        return _html(df)
    long = to_long(df)
    if fmt == "csv":
        return long.to_csv(index=False)
    return json.dumps({"legend": legend(df), "cells": json.loads(long.to_json(orient="records"))}, indent=2) + "\n"

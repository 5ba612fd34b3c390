"""Leaderboards rebuilt from result records: the shape of the BAT paper's Table 5.

Rows are backbones (measured runs first, then published figures set apart, each labelled with its
source), columns are (dataset, probe) pairs, cells are the mean of each dataset's primary metric in
percent (probekit's metrics are percentages). `leaderboard()` returns the numeric table; `df.attrs` carries what the renderers mark:

- ``std`` / ``n``: std over seeds and the seed count per cell (``± std`` is shown where n > 1),
- ``best``: the best value per column (bold),
- ``in_domain``: cells whose dataset the backbone saw in (pre)training (``†``),
- ``coverage``: per row, how many of the shown columns it fills,
- two summary columns: ``mean`` (of the row's cells) and ``rank`` (the row's mean rank over columns,
  1 = best). Both only for rows that fill every shown column (the MTEB rule): a mean over other columns
  is not comparable. Other rows show their coverage (e.g. ``3/5``) instead of a mean.

Two records of the same run (same backbone and weights, dataset, split, probe and protocol) with different
content are a conflict: the newer one is shown and a warning names both files (delete the wrong one).

`render(df, fmt)` writes it as ``table`` (rich), ``markdown``, ``csv``, ``latex``, ``html`` or ``json``;
tables are never cut to fit a width (`render` measures the table; `show` does so when not on a terminal).
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
from probekit.results.schema import ResultRecord
from probekit.results.store import filter_records

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
_PROBE_ORDER = ["finetune", "cgp", "protobin", "proto", "mhca", "mlp", "lcgp", "linear", "layers",
                "sed-cgp", "sed-protobin", "sed-linear", "sed-lcgp", "sed-h2t"]  # frame-wise heads (event tasks)
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


def _dataset_columns(recs: Sequence[ResultRecord]) -> dict[int, str]:
    """Column name of each record's dataset: the name, or `name#id6` where one name covers several datasets
    (two projects' `manifest:m.csv`)."""
    ids: dict[str, set] = {}
    for r in recs:
        ids.setdefault(r.dataset, set()).add(r.dataset_id)
    # a record without an id (registered dataset, or written by probekit 0.1.0) keeps the plain name
    return {id(r): r.dataset if len(ids[r.dataset]) == 1 or not r.dataset_id else f"{r.dataset}#{r.dataset_id[:6]}"
            for r in recs}


def _where(r: ResultRecord) -> str:
    return str(r.path) if r.path is not None else f"{r.backbone.label}/{r.dataset_key}/{r.probe} (in memory)"


def _drop_conflicts(recs: Sequence[ResultRecord]) -> list[ResultRecord]:
    """One record per key: identical copies collapse silently; different contents keep the newest (ties:
    the first by path) and one warning per key names every differing file."""
    import warnings

    groups: dict[tuple, list[ResultRecord]] = {}
    for r in recs:
        group = groups.setdefault((r.key, r.source), [])
        if not any(o == r for o in group):
            group.append(r)
    out = []
    for (key, _), group in groups.items():
        new = max(group, key=lambda r: r.date)  # max keeps the first of equal dates
        out.append(new)
        if len(group) > 1:
            why = "the newest" if sum(r.date == new.date for r in group) == 1 else "same date; the first by path"
            others = " and ".join(f"{_where(r)} ({r.date}, {r.score:.2f})" for r in group)
            warnings.warn(f"conflicting records for {'/'.join(key)}: {others}; showing {_where(new)} ({why}). "
                          "Delete the one that is wrong", UserWarning, stacklevel=3)
    return out


def leaderboard(
    records: Iterable[ResultRecord],
    dataset: str | Sequence[str] | None = None,
    probe: str | Sequence[str] | None = None,
    backbone: str | Sequence[str] | None = None,
    *,
    metric: str | None = None,
    source: Literal["all", "measured", "reported"] = "all",
    scale: float = 1.0,
    published: bool = False,
) -> pd.DataFrame:
    """Pivot records into a leaderboard (rows: group x backbone x source; columns: dataset x probe).

    Args:
        records: result records (e.g. `load_records()`).
        dataset, probe, backbone: keep only these names (one or a list).
        metric: metric to tabulate (default: each record's primary metric, e.g. mAP or accuracy).
        source: "measured", "reported" or "all" rows.
        scale: multiply scores (probekit's metrics are already in percent, as the papers print them).
        published: add the published figures probekit ships (`probekit.results.reported`).

    Returns:
        A DataFrame of mean scores with `mean` and `rank` summary columns (filled only for rows that cover
        every column); `df.attrs` holds `std`, `n`, `best`, `in_domain` frames of the same shape, the
        per-row `coverage` and `metric` labels per column. Where several records fall in one cell (other
        protocols or splits) the most recent one is shown; records of the same key that differ warn.
    """
    records = list(records)
    if published:
        from probekit.results.reported import published_records

        records += published_records()
    recs = _drop_conflicts(filter_records(records, dataset=dataset, probe=probe, backbone=backbone, source=source))
    ds_col = _dataset_columns(recs)
    cells: dict[tuple, dict] = {}
    col_metric: dict[tuple[str, str], set[str]] = {}
    for r in recs:
        m = metric or r.metric
        if m not in r.aggregate:
            continue
        group = REPORTED_GROUP if r.reported else MEASURED_GROUP
        row = (group, r.backbone.label, short_source(r.source))
        col = (ds_col[id(r)], r.probe)
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
    from probekit.train.metrics import LOWER_IS_BETTER

    lower = [c for c in cols if col_metric[c] and col_metric[c] <= LOWER_IS_BETTER]  # WER columns
    coverage = mean.notna().sum(axis=1).astype(int)
    out = mean.copy()
    if len(cols):
        # MTEB's rule: a mean or rank over other columns is not comparable, so only rows that fill every
        # shown column get one, and the ranks are taken among those rows.
        complete = coverage == len(cols)
        out[("mean", "")] = mean[complete].mean(axis=1).reindex(index)
        ranks = mean[complete].rank(axis=0, ascending=False, method="min")
        if lower:  # error rates (ASR WER) rank ascending; a mean mixing them with scores means nothing
            ranks[lower] = mean[complete][lower].rank(axis=0, ascending=True, method="min")
            if len(lower) < len(cols):
                out[("mean", "")] = np.nan
        out[("rank", "")] = ranks.mean(axis=1).reindex(index)
    else:
        out = pd.DataFrame(index=index, columns=summary_cols, dtype=float)
    best = pd.DataFrame(False, index=index, columns=out.columns)
    for c in out.columns:
        col = out[c]
        if col.notna().any():
            low = c == ("rank", "") or c in lower or (c == ("mean", "") and len(lower) == len(cols))
            target = col.min() if low else col.max()
            best[c] = np.isclose(col, target, rtol=0, atol=1e-9) & col.notna()
    pad = lambda f, fill: f.reindex(columns=out.columns, fill_value=fill)
    out.attrs = {
        "std": pad(std, np.nan),
        "n": pad(n, 0),
        "in_domain": pad(dom, False),
        "best": best,
        "coverage": coverage,
        "n_columns": len(cols),  # what `coverage` counts against, also when a renderer shows a slice
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
    a = df.attrs
    if pd.isna(v):
        if col == ("mean", "") and "coverage" in a:  # no mean over a partial row: say how much it covers
            return f"{int(a['coverage'].at[row])}/{_n_columns(df)}", False, False
        return "–", False, False
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


def _n_columns(df: pd.DataFrame) -> int:
    return int(df.attrs.get("n_columns", sum(1 for d, _ in df.columns if d not in SUMMARY)))


def _columns(df: pd.DataFrame, cols: list) -> pd.DataFrame:
    """`df` restricted to `cols`, keeping the board's attrs (best, coverage, ... of the whole board)."""
    sub = df[cols]
    sub.attrs = df.attrs
    return sub


def _shown(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """attrs[key] over the filled score cells only (no summary columns)."""
    cols = [c for c in df.columns if c[0] not in SUMMARY]
    return df.attrs[key][cols].where(df[cols].notna())


def legend(df: pd.DataFrame) -> str:
    """The caption: only the markers that appear in `df`, and the rule behind mean and rank."""
    metrics = sorted(set(df.attrs.get("metric", {}).values()))
    unit = " in %" if df.attrs.get("scale", 1.0) == 1.0 else ""
    parts = [f"scores: {', '.join(metrics) or '-'}{unit}", "best per column in bold"]
    if "n" in df.attrs and (_shown(df, "n").fillna(0) > 1).to_numpy().any():
        parts.append("± std over seeds")
    if "in_domain" in df.attrs and (_shown(df, "in_domain").fillna(False).astype(bool)).to_numpy().any():
        parts.append("† in-domain (the backbone saw this dataset in pretraining)")
    if _n_columns(df):
        parts.append(f"mean and rank only for rows that fill all {_n_columns(df)} columns, others show how many "
                     "they fill (k/n); rank = mean rank over columns among those rows (1 = best)")
    return "; ".join(parts)


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


def to_rich(df: pd.DataFrame, *, title: str | None = "Leaderboard", caption: bool = True):
    """A rich Table: measured rows, a rule, then published rows; best per column in bold green."""
    from rich.table import Table

    datasets = {d for d, _ in df.columns if d not in SUMMARY}
    if title and len(datasets) == 1:
        title = f"{title}: {DATASET_NAMES.get(next(iter(datasets)), next(iter(datasets)))}"
    table = Table(title=title, caption=legend(df) if caption else None, caption_justify="left", show_lines=False,
                  header_style="bold")
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


def natural_width(renderable) -> int:
    """The width a rich renderable needs to print without cutting or folding anything."""
    from rich.console import Console

    return max(20, Console(file=io.StringIO(), width=100_000).measure(renderable).maximum)


def show(df: pd.DataFrame, console, *, title: str | None = "Leaderboard") -> None:
    """Print `df` as rich tables on `console`, never cutting a value to "d…": anywhere but a terminal (a pipe,
    a log file) at full width; on a terminal too narrow for it, as several tables of whole columns (the
    backbone column repeated; the legend after the last), like pandas' wide frames."""
    table = to_rich(df, title=title)
    if not console.is_terminal:
        from rich.console import Console

        buf = Console(file=io.StringIO(), width=natural_width(table), record=True, color_system=None)
        buf.print(table)
        console.print(buf.export_text(), markup=False, highlight=False, soft_wrap=True, end="")
        return
    if natural_width(table) <= console.width or len(df.columns) < 2:
        console.print(table)
        return
    parts: list[list] = [[]]
    for col in df.columns:
        trial = parts[-1] + [col]
        if parts[-1] and natural_width(to_rich(_columns(df, trial), title=title, caption=False)) > console.width:
            parts.append([col])
        else:
            parts[-1] = trial
    for i, cols in enumerate(parts, 1):
        part_title = f"{title} ({i}/{len(parts)})" if title else None
        console.print(to_rich(_columns(df, cols), title=part_title, caption=i == len(parts)))


def render(df: pd.DataFrame, fmt: str = "table", *, width: int | None = None) -> str:
    """The leaderboard as text in one of FORMATS (`table`: `width` columns, default the full width)."""
    if fmt not in FORMATS:
        from probekit.errors import suggest

        raise ConfigError(f"unknown leaderboard format {fmt!r}", hint=suggest(fmt, FORMATS))
    if fmt == "table":
        from rich.console import Console

        table = to_rich(df)
        console = Console(file=io.StringIO(), width=width or natural_width(table), record=True, color_system=None)
        console.print(table)
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


# ---- probe-to-fine-tuning gap --------------------------------------------------------------------------
GAP_MEASURES = ("gap", "closed")


def ft_gap(board: pd.DataFrame, *, baseline: str = "linear") -> pd.DataFrame:
    """Each probe's distance to fine-tuning, per leaderboard row and dataset column.

    For every dataset with an FT ("finetune") column and every other probe p of that dataset:
    ("gap") FT - p in points, and ("closed") (p - LP) / (FT - LP), the fraction of the linear-probe-to-FT
    gap that p closes, as the unmute paper reports it (1: as good as FT, 0: no better than LP; NaN where a
    value is missing or FT == LP). Rows are the board's (one backbone and source each), so a probe is only
    ever compared with the FT of the same row.

    Args:
        board: a `leaderboard(...)` frame.
        baseline: the probe the fraction starts from (default "linear", the LP column).

    Returns:
        A frame with the board's rows and columns (dataset, probe, measure), measure in GAP_MEASURES;
        rows without any gap are left out.
    """
    cols = [c for c in board.columns if c[0] not in SUMMARY]
    out: dict[tuple[str, str, str], pd.Series] = {}
    for d in dict.fromkeys(c[0] for c in cols):
        if (d, "finetune") not in board.columns:
            continue
        ft = board[(d, "finetune")].astype(float)
        lp = board[(d, baseline)].astype(float) if (d, baseline) in board.columns else None
        for dd, p in cols:
            if dd != d or p == "finetune":
                continue
            v = board[(d, p)].astype(float)
            out[(d, p, "gap")] = ft - v
            if lp is None:
                out[(d, p, "closed")] = pd.Series(np.nan, index=board.index)
            else:
                span = ft - lp
                out[(d, p, "closed")] = ((v - lp) / span).where(span.abs() > 1e-12)
    names = ["dataset", "probe", "measure"]
    if not out:
        return pd.DataFrame(index=board.index[:0], columns=pd.MultiIndex.from_tuples([], names=names), dtype=float)
    gap = pd.DataFrame(out, index=board.index)
    gap.columns = pd.MultiIndex.from_tuples(list(out), names=names)
    return gap.dropna(how="all").dropna(axis=1, how="all")


def render_gap(gap: pd.DataFrame, fmt: str = "table") -> str:
    """The `ft_gap` frame as text: "gap" in points, "closed" in percent; csv/json keep the raw numbers."""
    if fmt == "csv":
        return gap.to_csv()
    if fmt == "json":
        return gap.to_json(orient="split", indent=2) + "\n"
    if gap.empty:
        return "no row has both a fine-tuning (FT) score and a probe score of the same dataset\n"
    single = len({d for d, _, _ in gap.columns}) == 1
    headers = ["backbone"] + [
        f"{'' if single else DATASET_NAMES.get(d, d) + ' '}{PROBE_NAMES.get(p, p)} "
        f"{'FT-gap' if m == 'gap' else 'closed'}" for d, p, m in gap.columns]
    lines = []
    for row in gap.index:
        cells = [_row_label(row)]
        for col in gap.columns:
            v = gap.at[row, col]
            cells.append("–" if pd.isna(v) else (f"{v:.2f}" if col[2] == "gap" else f"{100 * v:.0f}%"))
        lines.append(cells)
    if fmt == "markdown":
        out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(c) + " |" for c in lines]
        return "\n".join(out) + "\n"
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(headers)]

    def fmt_row(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt_row(headers), *(fmt_row(c) for c in lines)]) + "\n"

"""Figures from result records: CGP's layer gates next to the per-layer linear curve, and leaderboard heatmaps.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend change,
works headless); the file type follows the suffix (.png, .svg, .pdf).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.errors import ConfigError
from probekit.results.schema import ResultRecord

_SUFFIXES = {".png", ".svg", ".pdf"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    from probekit._io import atomic_write

    path = Path(path)
    if path.suffix.lower() not in _SUFFIXES:
        raise ConfigError(f"{path}: unsupported figure type {path.suffix or '(none)'!r}",
                          hint="use a .png, .svg or .pdf file name")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder", hint=f"give a file name, e.g. {path / ('figure' + path.suffix)}")
    try:  # a finished figure or none, never half a file
        atomic_write(path, lambda f: fig.savefig(f, format=path.suffix[1:].lower(), dpi=150), binary=True)
    except OSError as e:
        raise ConfigError(f"{path}: cannot write the figure: {e.strerror or e}",
                          hint="pick a writable file with -o/--output") from None
    return path


def _seed_mean(record: ResultRecord, key: str) -> np.ndarray | None:
    rows = [np.asarray(s.extras[key], dtype=float) for s in record.seeds if key in s.extras]
    if not rows or len({len(r) for r in rows}) != 1:
        return None
    return np.mean(rows, axis=0)


def gate_curves(
    records: Iterable[ResultRecord], *, dataset: str | None = None, backbones: Sequence[str] | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Per backbone label: ``gates`` (CGP's softmax gate weight per layer) and ``layer_scores``
    (the per-layer linear sweep, primary metric in %), averaged over seeds, from measured `cgp`/`lcgp` and `layers` records."""
    out: dict[str, dict[str, np.ndarray]] = {}
    wanted = None if backbones is None else {b.lower() for b in backbones}
    for r in sorted(records, key=lambda r: r.date):  # later runs win
        if dataset and r.dataset != dataset:
            continue
        if wanted and r.backbone.name.lower() not in wanted and r.backbone.label.lower() not in wanted:
            continue
        label = r.backbone.label if dataset else f"{r.backbone.label} / {r.dataset}"
        if any("gates" in s.extras for s in r.seeds):  # what the probe reported of itself (CGP, LinearCGP)
            g = _seed_mean(r, "gates")
            if g is not None:
                out.setdefault(label, {})["gates"] = g
                blocks = r.seeds[0].extras.get("gate_layers")
                if blocks is not None and len(blocks) == len(g):
                    out[label]["gate_blocks"] = np.asarray(blocks) + 1  # 1-based block numbers, as Figure 4
        elif any("layer_scores" in s.extras for s in r.seeds):  # a multi-head probe's per-head test curve
            s = _seed_mean(r, "layer_scores")
            if s is not None:
                out.setdefault(label, {})["layer_scores"] = s
    return out


def plot_gates(
    curves: Mapping[str, Mapping[str, Sequence[float]]] | Iterable[ResultRecord],
    path: str | os.PathLike,
    *,
    dataset: str | None = None,
    backbones: Sequence[str] | None = None,
    metric_label: str = "score (%)",
) -> Path:
    """The BAT paper's Figure 4: per backbone, the per-layer linear-probe score (top) over CGP's learned
    gate weight per layer (bottom).

    Args:
        curves: ``{label: {"gates": [...], "layer_scores": [...]}}`` or result records (see `gate_curves`).
        path: output file (.png, .svg, .pdf).
        dataset, backbones: which records to use when `curves` are records.
    """
    if not isinstance(curves, Mapping):
        curves = gate_curves(curves, dataset=dataset, backbones=backbones)
    curves = {k: v for k, v in curves.items() if v.get("gates") is not None or v.get("layer_scores") is not None}
    if not curves:
        raise ConfigError(
            "no CGP gates or per-layer scores to plot" + (f" for dataset {dataset!r}" if dataset else ""),
            hint="run `probekit probe cgp ...` and `probekit probe layers ...` on the same backbone and dataset first",
        )
    n = len(curves)
    fig = _figure(max(3.4 * n + 0.6, 6.0), 5.0)
    axes = fig.subplots(2, n, squeeze=False, sharex="col", sharey="row")  # panels compare on one scale
    for j, (label, c) in enumerate(curves.items()):
        top, bottom = axes[0][j], axes[1][j]
        scores, gates = c.get("layer_scores"), c.get("gates")
        if scores is not None:
            x = np.arange(1, len(scores) + 1)
            top.plot(x, scores, marker="o", color="tab:blue")
            top.margins(y=0.15)
            best = int(np.argmax(scores))
            top.annotate(f"{scores[best]:.1f}", (x[best], scores[best]), textcoords="offset points",
                         xytext=(0, 5), ha="center", fontsize=8)
        else:
            top.text(0.5, 0.5, "no per-layer sweep", ha="center", va="center", transform=top.transAxes)
        if gates is not None:
            x = c.get("gate_blocks")
            x = np.arange(1, len(gates) + 1) if x is None else np.asarray(x)
            bottom.bar(x, gates, color="tab:orange")
            bottom.axhline(1.0 / len(gates), color="grey", lw=0.8, ls="--", label="uniform")
            bottom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, 1.18), framealpha=0.9)
        else:
            bottom.text(0.5, 0.5, "no CGP gates", ha="center", va="center", transform=bottom.transAxes)
        top.set_title(label, fontsize=10)
        bottom.set_xlabel("block")
        if j == 0:
            top.set_ylabel(f"linear probe {metric_label}\n(test split, per block)")
            bottom.set_ylabel("CGP gate weight")
        length = max(len(scores) if scores is not None else 0,
                     int(np.max(c["gate_blocks"])) if c.get("gate_blocks") is not None else 0,
                     len(gates) if gates is not None else 0)
        bottom.set_xticks(np.arange(1, length + 1, max(1, math.ceil(length / 12))))
        top.grid(alpha=0.3)
        bottom.grid(alpha=0.3, axis="y")
    fig.suptitle("Per-block linear probe vs CGP gates" + (f" ({dataset})" if dataset else ""), fontsize=11)
    return _save(fig, path)


def plot_heatmap(df: pd.DataFrame, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """A leaderboard (from `leaderboard()`) as an annotated heatmap on one 0-100 colour scale with a colour
    bar (every metric is a percentage), best per column in bold; at most 24 inches either way."""
    from probekit.results.leaderboard import DATASET_NAMES, PROBE_NAMES, SUMMARY, _row_label

    cols = [c for c in df.columns if c[0] not in SUMMARY]
    if df.empty or not cols:
        raise ConfigError("the leaderboard is empty: nothing to plot",
                          hint="loosen --dataset/--probe/--backbone, or run a probe first")
    values = df[cols].to_numpy(dtype=float)
    # one absolute 0-100 scale for every column (scores are percentages): with per-column scaling two rows
    # 41.3 vs 37.3 looked as far apart as 83.7 vs 64.7
    norm = np.clip(values / 100.0, 0.0, 1.0)
    rows = [_row_label(r) for r in df.index]
    fig = _figure(min(0.8 * len(cols) + 4.0, 24.0), min(0.42 * len(rows) + 1.8, 24.0))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto", vmin=0, vmax=100)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="score (%)")
    best = df.attrs.get("best")
    for i in range(len(rows)):
        for j, c in enumerate(cols):
            v = values[i, j]
            if np.isnan(v):
                continue
            bold = best is not None and bool(best.iloc[i][c])
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8,
                    color="black" if norm[i, j] > 0.6 else "white", fontweight="bold" if bold else "normal")
    ax.set_xticks(range(len(cols)),
                  [f"{DATASET_NAMES.get(d, d)}\n{PROBE_NAMES.get(p, p)}" for d, p in cols], fontsize=8,
                  rotation=90 if len(cols) > 12 else 0)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    groups = [r[0] for r in df.index]
    for i in range(1, len(groups)):
        if groups[i] != groups[i - 1]:
            ax.axhline(i - 0.5, color="white", lw=2)
    ax.set_title(title or "Leaderboard (colour: score in %, one scale for every column)", fontsize=10)
    return _save(fig, path)

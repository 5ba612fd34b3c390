"""Aggregates of per-seed results: every metric and per-class score over a record's seeds."""

from __future__ import annotations

from collections.abc import Sequence

from probekit._stats import mean_std_ci
from probekit.results.schema import SeedRun, Stat

__all__ = ["aggregate", "aggregate_seeds"]


def aggregate(values: Sequence[float], *, level: float = 0.95) -> Stat:
    """Mean, sample std (ddof=1) and the Student-t confidence interval of per-seed values."""
    s = mean_std_ci(values, level=level)
    return Stat(mean=s.mean, std=s.std, n=s.n, ci_low=s.ci_low, ci_high=s.ci_high, ci_level=s.level)


def aggregate_seeds(runs: Sequence[SeedRun]) -> tuple[dict[str, Stat], dict[str, list[float]]]:
    """(aggregate per metric, mean per-class scores per metric) over `runs`; a metric some seeds lack is
    aggregated over the seeds that have it."""
    if not runs:
        return {}, {}
    names = sorted(set().union(*(r.metrics for r in runs)))
    agg = {m: aggregate([r.metrics[m] for r in runs if m in r.metrics]) for m in names}
    per_class: dict[str, list[float]] = {}
    for m in sorted(set().union(*(r.per_class for r in runs))):
        rows = [r.per_class[m] for r in runs if m in r.per_class]
        per_class[m] = [sum(col) / len(col) for col in zip(*rows)]
    return agg, per_class

"""Summary statistics of repeated runs (seeds, folds): one definition for records and tuning."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = ["MeanStdCI", "mean_std_ci"]


@dataclass(frozen=True)
class MeanStdCI:
    mean: float
    std: float  # sample std (ddof=1); 0.0 for a single value
    n: int
    ci_low: float | None  # two-sided Student-t interval of the mean; None for n < 2
    ci_high: float | None
    level: float


def mean_std_ci(values: Sequence[float], *, level: float = 0.95) -> MeanStdCI:
    """Mean, sample std and the Student-t confidence interval of the mean of `values`."""
    import numpy as np

    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_std_ci() needs at least one value")
    mean = float(x.mean())
    if x.size < 2:
        return MeanStdCI(mean, 0.0, 1, None, None, level)
    from scipy import stats

    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, df=x.size - 1)) * std / math.sqrt(x.size)
    return MeanStdCI(mean, std, int(x.size), mean - half, mean + half, level)

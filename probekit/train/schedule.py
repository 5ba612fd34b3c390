"""The one learning-rate schedule of probekit: linear warmup from 0, then half-cosine to 0, with a floor.

Probe training (`probekit.train.fit`) and BAT pretraining (`probekit.pretrain`) both use it; it is the
official BAT `RiseRunDecay` (constant_steps 0, lr_scale 1).
"""

from __future__ import annotations

import math

__all__ = ["warmup_cosine"]


def warmup_cosine(step: int, *, peak: float, floor: float, warmup: int, total: int) -> float:
    """Learning rate of optimizer step `step` (0-based).

    Linear warmup from 0 over `warmup` steps (floored, so the very first step runs at `floor`), then a
    half-cosine from `peak` to 0 at `total`, floored at `floor`. Past `total` the rate stays at the floor
    (pretraining's scheduler is stepped once more after the last step; probe training never gets there).
    """
    if warmup > 0 and step <= warmup:
        factor = step / warmup
    else:
        span = total - warmup
        # same float operations as both former copies, so every rate is bit-identical
        factor = 0.0 if span <= 0 else 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))
    return max(floor, peak * factor)

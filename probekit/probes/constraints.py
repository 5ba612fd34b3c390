"""Declared parameter constraints and one checker (scikit-learn's `_parameter_constraints` style).

`TrainConfig` and every probe declare, per parameter, the kinds of value it accepts; `check_params`
refuses anything else with one line that names the owner, the key and the value -- before a comparison
such as `lr > 0` can fail on a string with an internal TypeError (redteam #92: `probe --set lr=abc`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from probekit.errors import ProbekitError

__all__ = ["Interval", "Options", "Pair", "check_params", "check_space", "describe"]


@dataclass(frozen=True)
class Interval:
    """A number of `kind` ("int" or "real") in [low, high] (bounds None: open; closed ends by `closed`)."""

    kind: str = "real"
    low: float | None = None
    high: float | None = None
    closed: str = "both"  # "both", "left", "right", "neither"

    def accepts(self, v: Any) -> bool:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            return False
        if self.kind == "int" and not (isinstance(v, numbers.Integral) or (math.isfinite(v) and float(v) == int(v))):
            return False
        if not math.isfinite(float(v)) and (self.low is not None or self.high is not None):
            return False
        lo_ok = self.low is None or (v >= self.low if self.closed in ("both", "left") else v > self.low)
        hi_ok = self.high is None or (v <= self.high if self.closed in ("both", "right") else v < self.high)
        return bool(lo_ok and hi_ok)

    def __str__(self) -> str:
        what = "an integer" if self.kind == "int" else "a number"
        if self.low is None and self.high is None:
            return what
        lb = "[" if self.closed in ("both", "left") else "("
        rb = "]" if self.closed in ("both", "right") else ")"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{what} in {lb}{lo}, {hi}{rb}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (strings or booleans)."""

    values: tuple

    def accepts(self, v: Any) -> bool:
        if isinstance(v, np.generic):
            v = v.item()
        # True == 1 in Python: a bool option must get a bool, and a bool must not pass as 1
        return any(v == o and isinstance(v, bool) == isinstance(o, bool) for o in self.values)

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.values)


@dataclass(frozen=True)
class Pair:
    """A sequence of two values, each accepted by `item`."""

    item: Interval

    def accepts(self, v: Any) -> bool:
        return (isinstance(v, Sequence) and not isinstance(v, str) and len(v) == 2
                and all(self.item.accepts(x) for x in v))

    def __str__(self) -> str:
        return f"a pair of {self.item}"


BOOL = Options((True, False))
Constraint = Interval | Options | Pair | type(None) | type


def _accepts(c: Any, v: Any) -> bool:
    if c is None:
        return v is None
    if isinstance(c, type):
        return isinstance(v, c) and not (c is not bool and isinstance(v, bool))
    return c.accepts(v)


def describe(constraints: Sequence[Any]) -> str:
    parts = ["None" if c is None else (c.__name__ if isinstance(c, type) else str(c)) for c in constraints]
    return " or ".join(parts)


def check_params(owner: str, values: Mapping[str, Any], constraints: Mapping[str, Sequence[Any]],
                 error: type[ProbekitError] = ProbekitError, *, hint: str | None = None) -> None:
    """Raise `error` naming `owner`, the key and the value for the first value no constraint accepts.

    Keys without declared constraints are not checked here.
    """
    for key, value in values.items():
        allowed = constraints.get(key)
        if allowed is None or any(_accepts(c, value) for c in allowed):
            continue
        raise error(f"{owner}: {key}={value!r} must be {describe(allowed)}",
                    hint=hint or f"set {key} to {describe(allowed)}")


def check_space(owner: str, space: Mapping[str, Any], constraints: Mapping[str, Sequence[Any]],
                error: type[ProbekitError] = ProbekitError) -> None:
    """Refuse a search space (name -> Float/Int/Choice of `probekit.probes.space`) that could suggest a
    value its parameter does not accept: every choice, and both bounds of a range, are checked."""
    for key, spec in space.items():
        allowed = constraints.get(key)
        if allowed is None:
            continue
        values = spec.choices if hasattr(spec, "choices") else (spec.low, spec.high)
        for v in values:
            if not any(_accepts(c, v) for c in allowed):
                raise error(f"{owner}: search space {key}: {v!r} is not a valid value ({key} must be "
                            f"{describe(allowed)})", hint=f"give {key} values that are {describe(allowed)}")

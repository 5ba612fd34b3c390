"""Search spaces for tuning: a probe's declared space plus the shared training space, with overrides.

Probes declare `search_space` next to their hyperparameters (probekit.probes.space types); this module
merges that with `TRAIN_SPACE`, applies overrides given as Param objects, CLI strings
(`lr=1e-5:1e-2:log`, `dropout=0:0.5`, `num_prototypes=int:100:2000:log`, `pooling=mean,max`) or a TOML
file, and turns the result into Optuna distributions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna

from probekit.errors import ConfigError
from probekit.probes.space import TRAIN_SPACE, Choice, Float, Int, Param

__all__ = [
    "load_space_file",
    "parse_space_override",
    "resolve_space",
    "space_to_dict",
    "space_to_text",
    "suggest_params",
    "to_distributions",
]


def _number(text: str, *, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"search space {what}: {text!r} is not a number", hint="write e.g. lr=1e-5:1e-2:log") from None


def _scalar(text: str, like: Any = None, name: str | None = None) -> Any:
    """A choice value from the CLI, by the `--set` rules (probekit.cli._parse.parse_set)."""
    from probekit.cli._parse import parse_set

    return parse_set(text, like, name=name, option="--space")


def _like(p: Param | None, fallback: Any = None) -> Any:
    """A value of the type a parameter takes (what its choices are cast to)."""
    if isinstance(p, Float):
        return float(p.low)
    if isinstance(p, Int):
        return int(p.low)
    if isinstance(p, Choice) and p.choices and p.choices[0] is not None:
        return p.choices[0]
    return fallback


def _check_type(name: str, p: Param, like: Any) -> Param:
    """Choices of a numeric parameter must be numbers: `--space lr=abc` is refused before any trial."""
    if isinstance(p, Choice) and isinstance(like, (int, float)) and not isinstance(like, bool):
        for c in p.choices:
            if c is not None and (isinstance(c, bool) or not isinstance(c, (int, float))):
                raise ConfigError(f"search space {name!r}: {c!r} is not a number", hint=f"write e.g. {name}={like!r} or {name}=LOW:HIGH")
    return p


def _check(name: str, p: Param) -> Param:
    if isinstance(p, (Float, Int)):
        if not p.low <= p.high:
            raise ConfigError(f"search space {name!r}: low {p.low} is above high {p.high}", hint="swap the bounds")
        if p.log and p.low <= 0:
            raise ConfigError(
                f"search space {name!r}: a log scale needs a positive low bound, got {p.low}",
                hint="drop ':log' or raise the low bound",
            )
        if not (math.isfinite(p.low) and math.isfinite(p.high)):
            raise ConfigError(f"search space {name!r}: bounds must be finite, got {p.low}:{p.high}")
    elif isinstance(p, Choice):
        if len(p.choices) == 0:
            raise ConfigError(f"search space {name!r}: an empty list of choices")
    else:
        raise ConfigError(f"search space {name!r}: {p!r} is not a Float, Int or Choice")
    return p


def parse_space_override(text: str, like: Any = None) -> tuple[str, Param]:
    """Parse one CLI override.

    Forms: `name=low:high` (float), `name=low:high:log`, `name=int:low:high[:log]`, `name=a,b,c` (choices),
    `name=value` (fixed: a one-element choice). Choices follow the `--set` value rules, cast like `like`
    (a value of the parameter's type) when given.

    Returns:
        (name, Param)
    """
    if "=" not in text:
        raise ConfigError(f"--space {text!r}: expected NAME=LOW:HIGH[:log] or NAME=A,B,C", hint="e.g. --space lr=1e-5:1e-2:log")
    name, _, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not name or not spec:
        raise ConfigError(f"--space {text!r}: empty name or range", hint="e.g. --space lr=1e-5:1e-2:log")
    if ":" in spec:
        parts = [s.strip() for s in spec.split(":")]
        is_int = parts[0].lower() == "int"
        if is_int or parts[0].lower() == "float":
            parts = parts[1:]
        log = False
        if len(parts) == 3:
            if parts[2].lower() != "log":
                raise ConfigError(f"--space {text!r}: the third field must be 'log', got {parts[2]!r}")
            log = True
        elif len(parts) != 2:
            raise ConfigError(f"--space {text!r}: expected LOW:HIGH or LOW:HIGH:log")
        low, high = _number(parts[0], what=name), _number(parts[1], what=name)
        if is_int:
            if low != int(low) or high != int(high):
                raise ConfigError(f"--space {text!r}: integer bounds expected")
            return name, _check(name, Int(int(low), int(high), log=log))
        return name, _check(name, Float(low, high, log=log))
    return name, _check(name, Choice(tuple(_scalar(s, like, name) for s in spec.split(","))))


def _param_from_toml(name: str, value: Any, path: Path) -> Param:
    where = f"{path} [{name}]"
    if isinstance(value, Mapping):
        keys = set(value)
        if "choices" in keys:
            extra = keys - {"choices"}
            if extra:
                raise ConfigError(f"{where}: unknown keys {sorted(extra)}", hint="a choice takes only 'choices'")
            return _check(name, Choice(tuple(value["choices"])))
        unknown = keys - {"low", "high", "log", "type", "step"}
        if unknown or not {"low", "high"} <= keys:
            raise ConfigError(
                f"{where}: expected low, high and optional log/type/step, got {sorted(keys)}",
                hint='e.g. lr = { low = 1e-5, high = 1e-2, log = true }',
            )
        kind = value.get("type", "int" if isinstance(value["low"], int) and isinstance(value["high"], int) else "float")
        if kind == "int":
            return _check(name, Int(int(value["low"]), int(value["high"]), log=bool(value.get("log", False)), step=int(value.get("step", 1))))
        if kind == "float":
            return _check(name, Float(float(value["low"]), float(value["high"]), log=bool(value.get("log", False))))
        raise ConfigError(f"{where}: type must be 'int' or 'float', got {kind!r}")
    if isinstance(value, list):
        return _check(name, Choice(tuple(value)))
    if isinstance(value, str):
        return parse_space_override(f"{name}={value}")[1]
    if isinstance(value, (int, float, bool)):
        return Choice((value,))
    raise ConfigError(f"{where}: cannot read {value!r} as a search range")


def load_space_file(path: str | Path) -> dict[str, Param]:
    """Read overrides from TOML: a `[space]` table (or top-level keys) of name -> range.

    Example::

        [space]
        lr = { low = 1e-5, high = 1e-2, log = true }
        num_prototypes = { low = 100, high = 2000, log = true, type = "int" }
        dropout = "0:0.5"
        pooling = ["mean", "max"]
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search-space file {path} does not exist", hint="pass a TOML file with a [space] table")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    table = data.get("space", data)
    if not isinstance(table, Mapping) or not table:
        raise ConfigError(f"{path}: no search ranges found", hint="put them under a [space] table")
    return {name: _param_from_toml(name, value, path) for name, value in table.items()}


def resolve_space(
    probe_space: Mapping[str, Param],
    overrides: Mapping[str, Param | str] | None = None,
    *,
    allowed: set[str] | None = None,
    likes: Mapping[str, Any] | None = None,
) -> dict[str, Param]:
    """The space to search: TRAIN_SPACE, then the probe's own, then overrides (by name).

    Args:
        probe_space: the probe class's `search_space`.
        overrides: name -> Param or CLI string ("1e-5:1e-2:log"); a new name is added to the space.
        allowed: names that may be set at all (probe constructor arguments + TrainConfig fields); an
            override outside it is refused with the list of known names.
        likes: name -> a value of its type (defaults), for names the space does not type itself.
    """
    space: dict[str, Param] = {**TRAIN_SPACE, **dict(probe_space)}
    for name, value in (overrides or {}).items():
        if allowed is not None and name not in allowed:
            from probekit.errors import suggest

            raise ConfigError(f"search space: {name!r} is not a hyperparameter of this probe or training", hint=suggest(name, allowed))
        like = _like(space.get(name), (likes or {}).get(name))
        p = parse_space_override(f"{name}={value}", like)[1] if isinstance(value, str) else _check(name, value)
        space[name] = _check_type(name, p, like)
    return space


def to_distributions(space: Mapping[str, Param]) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna distributions for a space (one-element choices included: they show in the dashboard)."""
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for name, p in space.items():
        if isinstance(p, Float):
            out[name] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)
        elif isinstance(p, Int):
            out[name] = optuna.distributions.IntDistribution(p.low, p.high, log=p.log, step=1 if p.log else p.step)
        else:
            out[name] = optuna.distributions.CategoricalDistribution(list(p.choices))
    return out


def suggest_params(trial: optuna.Trial, space: Mapping[str, Param]) -> dict[str, Any]:
    """Ask the trial for every parameter, in a fixed (sorted) order so resumed studies sample alike."""
    out: dict[str, Any] = {}
    for name in sorted(space):
        p = space[name]
        if isinstance(p, Float):
            out[name] = trial.suggest_float(name, p.low, p.high, log=p.log)
        elif isinstance(p, Int):
            out[name] = trial.suggest_int(name, p.low, p.high, log=p.log, step=1 if p.log else p.step)
        else:
            out[name] = trial.suggest_categorical(name, list(p.choices))
    return out


def space_to_dict(space: Mapping[str, Param]) -> dict[str, dict[str, Any]]:
    """A JSON-able form, stored with the study and in the result record."""
    out: dict[str, dict[str, Any]] = {}
    for name, p in sorted(space.items()):
        if isinstance(p, Float):
            out[name] = {"type": "float", "low": p.low, "high": p.high, "log": p.log}
        elif isinstance(p, Int):
            out[name] = {"type": "int", "low": p.low, "high": p.high, "log": p.log, "step": p.step}
        else:
            out[name] = {"type": "choice", "choices": list(p.choices)}
    return out


def space_to_text(space: Mapping[str, Param]) -> str:
    """One line in the CLI's own syntax (`lr=1e-05:0.01:log, pooling=mean,max`), for messages and keys."""
    parts = []
    for name, p in sorted(space.items()):
        if isinstance(p, Float):
            parts.append(f"{name}={p.low}:{p.high}" + (":log" if p.log else ""))
        elif isinstance(p, Int):
            parts.append(f"{name}=int:{p.low}:{p.high}" + (":log" if p.log else "") + (f" step {p.step}" if p.step != 1 else ""))
        else:
            parts.append(f"{name}=" + ",".join(str(c) for c in p.choices))
    return ", ".join(parts)

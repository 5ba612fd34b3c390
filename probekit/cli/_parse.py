"""`--set KEY=VALUE` values: one rule set for `probe`, `tune`, `pretrain` and `tune --space` choices.

Rules of `parse_set(text, like=None)`:

* `none` / `null` (any case) is None.
* With `like` (the value being replaced, e.g. the field's default), the text is cast to its type:
  bool takes true/false, yes/no, on/off, 1/0; int takes an integral number (`2000`, `2e3`); float any
  finite or infinite number; a tuple or list takes `a,b,c` or a JSON list, each item cast like the first
  item of `like`; str keeps the text. A value that does not fit is a ConfigError naming it.
* Without `like` (or when `like` is None) the type is guessed: true/false are bools, a JSON list
  (`[1, 2]`) or a comma list (`mean,max`) is a tuple of guessed items, then int, then float, else the
  text itself.
"""

from __future__ import annotations

import json
from typing import Any

from probekit.errors import ConfigError

__all__ = ["parse_set", "split_set"]

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def split_set(item: str, *, option: str = "--set", example: str = "--set steps=2000") -> tuple[str, str]:
    """`KEY=VALUE` -> (key, value text); refuses an item without '=' or with an empty key."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{option} {item!r} is not KEY=VALUE", hint=f"e.g. {example}")
    return key, value.strip()


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _items(text: str) -> list[str] | None:
    """The items of a JSON list or a comma list, as texts; None when `text` is neither."""
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            items = None
        if isinstance(items, list):
            return [json.dumps(x) if not isinstance(x, str) else x for x in items]
    if "," in text:
        return [x.strip() for x in text.split(",") if x.strip()]
    return None


def _guess(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    items = _items(text)
    if items is not None:
        return tuple(parse_set(x) for x in items)
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_set(text: str, like: Any = None, *, name: str | None = None, option: str = "--set") -> Any:
    """One `--set` value (see the module docstring for the rules).

    Args:
        text: the text after '='.
        like: the value it replaces (its type decides the cast); None guesses the type.
        name: the key, for error messages.
        option: the option it came with, for error messages.
    """
    t = text.strip()
    what = f"{option} {name}={t}" if name else f"value {t!r}"
    if t.lower() in ("none", "null"):
        return None
    if like is None:
        return _guess(t)
    low = t.lower()
    if isinstance(like, bool):
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ConfigError(f"{what}: not a boolean", hint="use true or false")
    if isinstance(like, int):
        number = _number(t)
        if number is None or not number.is_integer():
            raise ConfigError(f"{what}: not an integer", hint=f"e.g. {like}")
        return int(number)
    if isinstance(like, float):
        number = _number(t)
        if number is None:
            raise ConfigError(f"{what}: not a number", hint=f"e.g. {like:g}")
        return number
    if isinstance(like, (tuple, list)):
        items = _items(t)
        if items is None:
            items = [t] if t else []
        first = like[0] if len(like) else None
        return type(like)(parse_set(x, first, name=name, option=option) for x in items)
    return t

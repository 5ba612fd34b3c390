"""One registry shape for every named thing (backbones, probes, datasets, protocols, pretrain configs).

A `Registry` maps a name to an entry (a factory, a class, a preset). It imports nothing of what it
holds: the package that defines the entries registers them (timm style), so there are no cycles.
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Generic, Iterator, TypeVar

from probekit.errors import ProbekitError, suggest

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """name -> entry, with close-match suggestions on misses and sorted, pattern-filtered listings."""

    def __init__(self, kind: str, error: type[ProbekitError] = ProbekitError, *, hint: str = ""):
        self.kind = kind  # "backbone", "probe", ... (used in messages)
        self.error = error
        self.hint = hint  # where to see the full list, e.g. "probekit backbones lists them"
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None, *, replace: bool = False):
        """`reg.register(name, entry)`, or `@reg.register(name)` as a decorator."""
        if entry is None:
            return lambda e: self.register(name, e, replace=replace)
        if not replace and name in self._entries and self._entries[name] is not entry:
            raise self.error(f"{self.kind} {name!r} is registered twice", hint="pick another name")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            hint = suggest(name, self._entries)
            raise self.error(f"unknown {self.kind} {name!r}", hint=f"{hint}; {self.hint}" if self.hint else hint) \
                from None

    def names(self, pattern: str | None = None) -> list[str]:
        names = sorted(self._entries)
        return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n]) for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)


Factory = Callable[..., object]

"""Exclusive extraction locks of a store (filelock: released by the OS if the holder dies)."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

from probekit.cache.layout import META
from probekit.errors import CacheError

__all__ = ["ExtractionLock"]


class ExtractionLock:
    """Exclusive lock for extracting (a shard plan of) one store.

    Runs with the same `i/n` exclude each other; an unsharded run (0/1) excludes everything. Plans with
    another `n` are refused while any of their locks is held, so no two processes write one shard.
    """

    def __init__(self, path: Path, shard: tuple[int, int]):
        self.path = Path(path)
        self.shard = shard
        self._lock = None

    def _file(self, i: int, n: int) -> Path:
        return self.path / META / f"lock-{i}-of-{n}"

    def __enter__(self) -> "ExtractionLock":
        from filelock import FileLock, Timeout

        i, n = self.shard
        own = self._file(i, n)
        own.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(own) + ".lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise CacheError(
                f"{self.path} is already being extracted ({self._holder(own)})",
                hint="wait for that run to finish, or stop it; a rerun afterwards resumes where it stopped",
            ) from None
        # other shard plans that overlap ours: any held lock with a different n, or 0/1 vs anything
        for other in own.parent.glob("lock-*-of-*.lock"):
            if other.name == own.name + ".lock" or other.name == own.name:
                continue
            m = re.match(r"lock-(\d+)-of-(\d+)\.lock$", other.name)
            if not m or (int(m.group(2)) == n and n > 1):
                continue  # same plan, other shard: disjoint, fine
            probe = FileLock(str(other), timeout=0)
            try:
                probe.acquire()
                probe.release()
            except Timeout:
                lock.release()
                raise CacheError(
                    f"{self.path} is being extracted with another shard plan "
                    f"({self._holder(other.with_suffix(''))}); this run uses shard {i}/{n}",
                    hint="use the same shard i/n (shard=, CLI --shard) for every process of one extraction",
                ) from None
        own.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        self._lock = lock
        return self

    @staticmethod
    def _holder(info: Path) -> str:
        try:
            d = json.loads(info.read_text())
            return f"pid {d['pid']} on {d['host']} since {time.strftime('%H:%M:%S', time.localtime(d['since']))}"
        except (OSError, ValueError, KeyError):
            return "another process"

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

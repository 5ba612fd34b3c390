"""Disk-space helpers of the cache: free space, sizes, and a clear error when the disk fills up."""

from __future__ import annotations

import errno
import math
from pathlib import Path

from probekit.errors import CacheError

__all__ = ["dir_bytes", "disk_full_error", "fmt_bytes", "free_bytes", "is_disk_full"]


def is_disk_full(exc: BaseException) -> bool:
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        e = e.__cause__ or e.__context__
    return False


def disk_full_error(path: Path, exc: BaseException) -> CacheError:
    free = free_bytes(path)
    return CacheError(
        f"disk full while writing {path} ({exc}); {fmt_bytes(free)} free",
        hint="free space (or pick a cache dir on a bigger disk: cache_dir=, CLI --cache-dir) and rerun the same command: "
        "the store resumes from its last complete shard",
    )


def free_bytes(path: Path) -> float:
    """Free bytes of the disk holding `path` (object stores: math.inf, see probekit.cache.fs)."""
    from probekit.cache import fs

    return fs.free_bytes(fs.location(path))


def fmt_bytes(n: float) -> str:
    if n == math.inf:
        return "unlimited"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def dir_bytes(path: Path) -> int:
    from probekit.cache import fs

    return fs.tree_bytes(fs.location(path))

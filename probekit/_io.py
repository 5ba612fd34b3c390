"""One way to write a file: readers see the old content or the new, never half of it.

Every file probekit writes (records, store metadata, checkpoints, plots, probe weights) goes through
`atomic_write`: a unique temporary file beside the target, fsync, then `os.replace`, and the temporary
file is removed on any failure (also KeyboardInterrupt). Two writers never share a temporary name.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "FILE_MODE"]

# Files are shared between teammates (results dirs, caches): the usual 0644 under umask 022, not
# mkstemp's 0600.
FILE_MODE = 0o666


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return FILE_MODE & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO], Any], *, binary: bool = False,
                 encoding: str = "utf-8", fsync: bool = True) -> Path:
    """Call `write(f)` on a temporary file beside `path`, fsync it, then rename it over `path`.

    The parent folder is created. The file gets the mode a plain `open()` would give (umask applied).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": encoding})) as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, **kw) -> Path:
    return atomic_write(path, lambda f: f.write(data), binary=True, **kw)


def atomic_write_text(path: str | os.PathLike, text: str, **kw) -> Path:
    return atomic_write(path, lambda f: f.write(text), **kw)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = None,
                      sort_keys: bool = True, **kw) -> Path:
    return atomic_write(path, lambda f: json.dump(obj, f, indent=indent, sort_keys=sort_keys), **kw)

"""Where probekit keeps files between runs: one home for the default folders and their variables.

- `token_cache_dir()`: token stores, `$PROBEKIT_CACHE` or `<user cache dir>/probekit/tokens`.
- `user_cache_root()`: small indexes (checkpoint sha256 index), `$PROBEKIT_CACHE_DIR` or
  `<user cache dir>/probekit`.
- `data_dirs()`: folders holding datasets, `$PROBEKIT_DATA` (`os.pathsep`-separated) or
  `<user data dir>/probekit/datasets` when that folder exists (`default_data_dir()`).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dirs", "default_data_dir", "token_cache_dir", "user_cache_root"]


def user_cache_root() -> Path:
    env = os.environ.get("PROBEKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("probekit"))


def token_cache_dir() -> Path:
    """`$PROBEKIT_CACHE`, else the platform's user cache dir (e.g. ~/.cache/probekit/tokens)."""
    env = os.environ.get("PROBEKIT_CACHE")
    if env and "://" not in env:  # a URL (s3://...) is read by probekit.cache.keys; local indexes stay local
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("probekit")) / "tokens"


DATA_ENV = "PROBEKIT_DATA"


def default_data_dir() -> Path:
    """Where datasets are looked for without `--data-root`/`$PROBEKIT_DATA` (e.g. ~/.local/share/probekit/datasets)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("probekit")) / "datasets"


def data_dirs() -> list[Path]:
    """The folders of `$PROBEKIT_DATA`, else the default data folder if it exists, else none."""
    env = os.environ.get(DATA_ENV, "")
    dirs = [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    if dirs:
        return dirs
    default = default_data_dir()
    return [default] if default.is_dir() else []

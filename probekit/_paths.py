"""Where probekit keeps files between runs: one home for the default folders and their variables.

- `token_cache_dir()`: token stores, `$PROBEKIT_CACHE` or `<user cache dir>/probekit/tokens`.
- `user_cache_root()`: small indexes (checkpoint sha256 index), `$PROBEKIT_CACHE_DIR` or
  `<user cache dir>/probekit`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["token_cache_dir", "user_cache_root"]


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

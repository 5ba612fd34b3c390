"""Content keys: what identifies a store (everything that changes its tokens), its digest and its path.

Equal keys mean interchangeable stores. The digest names the store on disk, so the canonical form of a
key must never change for the same inputs (tests/cache/test_keys_stable.py pins it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probekit.cache import fs
from probekit.cache.codec import DTYPES
from probekit._paths import token_cache_dir
from probekit.errors import CacheError

__all__ = ["FORMAT_VERSION", "cache_root", "canonical", "content_key", "default_cache_dir", "key_differences",
           "key_digest", "store_path"]

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """`$PROBEKIT_CACHE` (a folder or an fsspec URL), else the platform's user cache dir (see probekit._paths)."""
    env = os.environ.get("PROBEKIT_CACHE")
    if env and fs.is_url(env):
        return fs.location(env)
    return token_cache_dir()


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """The folder holding the stores: `cache_dir` (a folder or an fsspec URL: s3://bucket/prefix), or the default."""
    return fs.location(cache_dir) if cache_dir is not None else default_cache_dir()


def canonical(obj: Any) -> Any:
    """JSON-safe, order-stable form of a key (tuples -> lists, paths -> str, floats kept exact)."""
    if isinstance(obj, Mapping):
        return {str(k): canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def content_key(
    *,
    backbone: Mapping[str, Any],
    frontend: Mapping[str, Any],
    dataset: str,
    split: str,
    fingerprint: str,
    layers: Sequence[int],
    dtype: str,
) -> dict:
    """Everything that changes the stored tokens; equal keys mean interchangeable stores."""
    if dtype not in DTYPES:
        raise CacheError(f"unknown cache dtype {dtype!r}", hint=f"use one of: {', '.join(DTYPES)}")
    return canonical(
        {
            "format": FORMAT_VERSION,
            "backbone": dict(backbone),
            "frontend": dict(frontend),
            "dataset": {"name": dataset, "split": split, "fingerprint": fingerprint},
            "layers": [int(i) for i in layers],
            "dtype": dtype,
        }
    )


def key_digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(canonical(key), sort_keys=True).encode()).hexdigest()[:20]


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(s)).strip("-")[:48] or "x"


def store_path(cache_dir: str | os.PathLike | None, key: Mapping[str, Any], backbone_name: str = "backbone") -> Path:
    """Where the store of `key` lives: a readable name plus the key digest."""
    ds = key["dataset"]
    name = "__".join(_slug(x) for x in (backbone_name, ds["name"], ds["split"], key["dtype"]))
    return cache_root(cache_dir) / f"{name}__{key_digest(key)}.zarr"


def key_differences(stored: Mapping[str, Any], asked: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Human-readable list of the fields where two keys differ (for mismatch errors)."""
    out: list[str] = []
    for k in sorted(set(stored) | set(asked)):
        a, b = stored.get(k, "<absent>"), asked.get(k, "<absent>")
        name = f"{prefix}{k}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += key_differences(a, b, name + ".")
        elif a != b:
            sa, sb = json.dumps(a, default=str), json.dumps(b, default=str)
            out.append(f"{name}: store has {sa[:60]}, asked {sb[:60]}")
    return out

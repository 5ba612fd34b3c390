"""The two value objects of the cache seam: what the tokens are (`TokenSpec`) and how to run (`RunOptions`).

`TokenSpec` holds everything a caller chooses that changes the stored bytes and so enters the content
key (with the backbone, its frontend and the data). `RunOptions` never changes a byte: device, workers,
batch size, where stores live, progress, what to do with a bad clip. Both are frozen, so one `Plan`
(`probekit.cache.planning.plan`) can be computed once and shared by extraction, the reader, the online
token source and `probekit.evaluate`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from probekit.cache.codec import DTYPES
from probekit.errors import ConfigError

__all__ = ["FRONTEND_STYLES", "ON_ERROR", "RUN_FIELDS", "TOKEN_FIELDS", "RunOptions", "TokenSpec", "resolve_layers",
           "split_options"]

ON_ERROR = ("skip", "fail")
FRONTEND_STYLES = ("model", "bat-paper")


@dataclass(frozen=True)
class TokenSpec:
    """What changes the stored tokens (all of it enters the content key).

    layers: "all", "last", "0,5,11", a block index or a sequence of them.
    dtype: storage dtype, float16 | bfloat16 | float32 | int8 (per-token symmetric with float32 scales).
    frontend_style: "model" (the model authors' recipe), "bat-paper", or None (the backbone's own frontend).
    autocast: run the encoder under autocast (True: bfloat16 where supported; or "bfloat16"/"float16").
    """

    layers: str | int | tuple[int, ...] = "all"
    dtype: str = "float16"
    frontend_style: str | None = "model"
    autocast: bool | str = False

    def __post_init__(self):
        if not isinstance(self.layers, (str, int)):  # any sequence -> a hashable tuple
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown token dtype {self.dtype!r}", hint=f"use one of: {', '.join(DTYPES)}")
        if self.frontend_style is not None and self.frontend_style not in FRONTEND_STYLES:
            raise ConfigError(f"unknown frontend style {self.frontend_style!r}",
                              hint=f"use one of: {', '.join(FRONTEND_STYLES)}, or None for the backbone's own")
        if self.autocast not in (True, False, "bfloat16", "float16"):
            raise ConfigError(f"bad autocast {self.autocast!r}", hint="use True, 'bfloat16' or 'float16'")


@dataclass(frozen=True)
class RunOptions:
    """How to compute or read tokens; never part of the content key.

    device: "auto" (CUDA when present), "cpu", "cuda:1", ...
    workers: DataLoader workers for decoding + frontend (None: CPU cores - 1, at most 8; online: 0).
    batch_size: clips per encoder call (a resumed store keeps the batch size it was started with).
    cache_dir: root of the stores (None: `$PROBEKIT_CACHE` or the user cache dir).
    progress: show progress bars.
    on_error: "skip" records a failed clip (zeros, listed in the store) and goes on; "fail" stops.
    shard: "i/n" or (i, n): this process extracts shards i, i+n, ... (None: the torchrun rank, else all).
    clips_per_shard: shard size of a new store (None: ~256 MB of patch tokens per shard).
    ignore_disk_space: start extracting even when the projected size exceeds the free space.
    allow_nonfinite: store NaN/Inf tokens instead of refusing them (a NaN checkpoint otherwise stops at
        its first batch, naming the clips).
    verify: re-hash finished shards against their completion records before reusing them (None: when
        the store is complete, so a rerun repairs what the reader reported; not when resuming, which
        then finds only missing, 0-byte and wrong-size shard files).
    """

    device: str = "auto"
    workers: int | None = None
    batch_size: int = 32
    cache_dir: str | os.PathLike | None = None
    progress: bool = True
    on_error: str = "skip"
    shard: str | tuple[int, int] | None = None
    clips_per_shard: int | None = None
    ignore_disk_space: bool = False
    allow_nonfinite: bool = False
    verify: bool | None = None

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.on_error not in ON_ERROR:
            raise ConfigError(f"bad on_error value {self.on_error!r}", hint="use skip or fail")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")

    def shard_of(self) -> tuple[int, int]:
        """`shard` as (i, n); None -> this torchrun rank of WORLD_SIZE, else (0, 1)."""
        shard = self.shard
        if shard is None:
            if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # launched by torchrun: one shard per process
                return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            return 0, 1
        if isinstance(shard, str):
            try:
                i, n = (int(x) for x in shard.split("/"))
            except ValueError:
                raise ConfigError(f"bad shard value {shard!r}", hint="use i/n, e.g. 0/4 for the first of four") from None
        else:
            i, n = shard
        if n < 1 or not 0 <= i < n:
            raise ConfigError(f"bad shard {i}/{n}: need 0 <= i < n")
        return i, n


TOKEN_FIELDS = frozenset(f.name for f in dataclasses.fields(TokenSpec))
RUN_FIELDS = frozenset(f.name for f in dataclasses.fields(RunOptions))
_IGNORED = frozenset({"need_layout"})  # planning no longer runs the encoder; kept so old calls work


def split_options(options: Mapping[str, Any], tokens: TokenSpec | None = None, run: RunOptions | None = None, *,
                  where: str = "probekit") -> tuple[TokenSpec, RunOptions]:
    """Flat keyword options (the pre-0.2 call style) on top of `tokens`/`run` -> the two value objects.

    The one place the old keywords (layers=, dtype=, device=, cache_dir=, ...) are mapped; unknown names
    raise TypeError like any misspelt keyword argument.
    """
    unknown = sorted(set(options) - TOKEN_FIELDS - RUN_FIELDS - _IGNORED)
    if unknown:
        raise TypeError(f"{where}() got unexpected keyword argument(s): {', '.join(unknown)}")
    tok = {k: v for k, v in options.items() if k in TOKEN_FIELDS}
    run_kw = {k: v for k, v in options.items() if k in RUN_FIELDS}
    tokens = dataclasses.replace(tokens or TokenSpec(), **tok)
    run = dataclasses.replace(run or RunOptions(), **run_kw)
    return tokens, run


def resolve_layers(layers: str | int | Sequence[int], num_layers: int) -> tuple[int, ...]:
    """"all", "last", "0,5,11", an int or a sequence -> sorted unique 0-based block indices."""
    if isinstance(layers, str):
        s = layers.strip().lower()
        if s == "all":
            return tuple(range(num_layers))
        if s == "last":
            return (num_layers - 1,)
        try:
            items = [int(x) for x in s.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"bad layers value {layers!r}", hint="use all, last, or block indices like 0,5,11") from None
    elif isinstance(layers, int):
        items = [layers]
    else:
        items = [int(x) for x in layers]
    if not items:
        raise ConfigError("no layers selected", hint="use all, last, or block indices like 0,5,11")
    out = []
    for i in items:
        if not -num_layers <= i < num_layers:
            raise ConfigError(f"layer {i} out of range: the backbone has {num_layers} blocks (0..{num_layers - 1})")
        out.append(i % num_layers)
    return tuple(sorted(set(out)))

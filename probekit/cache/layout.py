"""Shapes of a store: clips, layers, token grid, width, dtype and how clips are grouped into shards.

Why shards of S clips (figures from benchmarks/cache_size.py): one shard file per S clips keeps AS-2M at
tens of thousands of files instead of millions, and a shard is the unit of work of extraction (written
whole, then committed by its completion record).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from probekit.cache.codec import projected_bytes

__all__ = ["MAX_SHARD_CLIPS", "SHARD_TARGET_BYTES", "StoreLayout", "default_clips_per_shard"]

# Shards aim at this many bytes of patch tokens: big enough that AS-2M x ViT-B (9.4 MB/clip, all layers)
# is ~70k files, small enough that the writer's buffer and the work lost to a crash stay small.
SHARD_TARGET_BYTES = 256 * 2**20
MAX_SHARD_CLIPS = 1024


@dataclass(frozen=True)
class StoreLayout:
    """Shapes of a store (everything but the content key)."""

    num_clips: int
    layers: tuple[int, ...]
    grid: tuple[int, int]
    embed_dim: int
    dtype: str
    clips_per_shard: int
    batch_size: int
    num_classes: int
    multilabel: bool
    has_folds: bool

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_shards(self) -> int:
        return max(1, math.ceil(self.num_clips / self.clips_per_shard))

    def shard_rows(self, j: int) -> tuple[int, int]:
        s = j * self.clips_per_shard
        return s, min(self.num_clips, s + self.clips_per_shard)

    def clip_bytes(self) -> int:
        """Stored bytes of one clip (patch + cls + int8 scales), uncompressed."""
        return projected_bytes(1, self.num_layers, self.num_tokens, self.embed_dim, self.dtype)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StoreLayout:
        d = dict(d)
        d["layers"], d["grid"] = tuple(d["layers"]), tuple(d["grid"])
        return cls(**d)


def default_clips_per_shard(layout_bytes_per_clip: int, batch_size: int) -> int:
    s = max(1, min(MAX_SHARD_CLIPS, SHARD_TARGET_BYTES // max(1, layout_bytes_per_clip)))
    if s >= batch_size:  # whole batches per shard: no ragged batch in the middle of a shard
        s -= s % batch_size
    return s



# Folder inside a store holding completion records and locks (see probekit.cache.store).
META = ".probekit"

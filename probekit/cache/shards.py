"""Fast reads of token chunks straight from Zarr v3 shard files (no zarr-python on the hot path)."""

from __future__ import annotations

import mmap
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probekit.errors import CacheError

__all__ = ["ShardReader"]

_EMPTY = np.uint64(2**64 - 1)


class ShardReader:
    """Reads (clip, layer) chunks of one sharded, uncompressed array straight from its shard files.

    zarr-python's read path costs ~30x a memmap for token-sized chunks (measured in
    benchmarks/cache_io.py), so the reader maps each shard file and views chunks through the shard index
    (Zarr v3 sharding spec: index at the end, (offset, nbytes) uint64 per inner chunk, C order, crc32c).
    Falls back to zarr when the array uses codecs this path does not know.
    """

    def __init__(self, array, *, max_open: int = 256):
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        meta = array.metadata.to_dict()
        codecs = meta.get("codecs", [])
        self.fast = False
        if len(codecs) == 1 and codecs[0]["name"] == "sharding_indexed":
            cfg = codecs[0]["configuration"]
            inner = cfg["codecs"]
            idx = cfg.get("index_codecs", [])
            self.fast = (
                len(inner) == 1
                and inner[0]["name"] == "bytes"
                and inner[0].get("configuration", {}).get("endian", "little") == "little"
                and cfg.get("index_location", "end") == "end"
                and [c["name"] for c in idx] in (["bytes", "crc32c"], ["bytes"])
            )
            self.shard_shape = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
            self.chunk_shape = tuple(cfg["chunk_shape"])
            self.index_crc = [c["name"] for c in idx] == ["bytes", "crc32c"]
        self.root = Path(str(array.store_path.store.root)) / array.store_path.path if self.fast else None
        sep = meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/") if self.fast else "/"
        self._sep = sep
        self._prefix = "c" if meta.get("chunk_key_encoding", {}).get("name") == "default" else ""
        self._open: OrderedDict[int, tuple[Any, np.ndarray | None]] = OrderedDict()
        self._max_open = max_open
        if self.fast:
            per = [s // c for s, c in zip(self.shard_shape, self.chunk_shape)]
            self._chunks_per_shard = per
            self._per_row = int(np.prod(per[1:]))
            self._nchunks = int(np.prod(per))
            self._chunk_items = int(np.prod(self.chunk_shape))

    def _shard(self, j: int):
        hit = self._open.get(j)
        if hit is not None:
            self._open.move_to_end(j)
            return hit
        nd = len(self.shape)
        coords = [str(j)] + ["0"] * (nd - 1)
        path = self.root / self._sep.join([self._prefix, *coords]) if self._prefix else self.root / self._sep.join(coords)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed right below, the mmap outlives it
        except FileNotFoundError:
            entry = (None, None)  # shard never written: all fill value
        else:
            with f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            n = self._nchunks
            tail = 16 * n + (4 if self.index_crc else 0)
            index = np.frombuffer(mm, dtype="<u8", count=2 * n, offset=len(mm) - tail).reshape(n, 2)
            # uncompressed chunks all have one size and are packed from offset 0, so the data part is a
            # (chunks, items) matrix and a batch is one fancy-index gather (checked per read)
            nbytes = self._chunk_items * self.dtype.itemsize
            full = (len(mm) - tail) // nbytes
            mat = np.frombuffer(mm, dtype=self.dtype, count=full * self._chunk_items).reshape(full, self._chunk_items)
            entry = (mat, index)
        self._open[j] = entry
        if len(self._open) > self._max_open:
            self._open.popitem(last=False)
        return entry

    def read(self, rows: np.ndarray, inner: Sequence[int]) -> np.ndarray:
        """(len(rows), len(inner), chunk items): chunks `inner` (C order within a clip's part of a shard).

        Fastest with sorted rows: each shard's chunks are then gathered straight into one slice of the
        output (one copy, like a memmap's fancy index).
        """
        rows = np.asarray(rows, dtype=np.int64)
        inner = np.asarray(inner, dtype=np.int64)
        R, K, items = len(rows), len(inner), self._chunk_items
        out = np.empty((R, K, items), dtype=self.dtype)
        flat = out.reshape(R * K, items)
        S = self.shard_shape[0]
        shard, local = np.divmod(rows, S)
        nbytes = np.uint64(items * self.dtype.itemsize)
        # runs of equal shard numbers (one run per shard when rows are sorted)
        cuts = np.flatnonzero(np.diff(shard)) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, R]):
            a, b = int(a), int(b)
            mat, index = self._shard(int(shard[a]))
            if mat is None:
                flat[a * K : b * K] = 0
                continue
            off = index[local[a:b, None] * self._per_row + inner[None, :], 0].ravel()
            empty = off == _EMPTY
            pos = np.where(empty, np.uint64(0), off // nbytes).astype(np.int64)
            if not bool((off[~empty] % nbytes == 0).all()) or (pos >= len(mat)).any():
                raise CacheError(
                    f"{self.root}: shard {int(shard[a])} is not laid out as probekit writes it (corrupt?)",
                    hint="run `probekit cache verify`; re-extract if it fails",
                )
            np.take(mat, pos, axis=0, out=flat[a * K : b * K], mode="clip")  # "raise" would buffer: 2 copies
            if empty.any():
                flat[a * K : b * K][empty] = 0
        return out

    def close(self) -> None:
        self._open.clear()

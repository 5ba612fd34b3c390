"""Fast reads of token chunks straight from Zarr v3 shard files (no zarr-python on the hot path).

Every shard is checked against its completion record before its first read (`ShardReader` with
`expected`, made by `TokenStore.shard_reader`): a missing, truncated or altered shard is a named
`DamagedShardError`, never wrong tokens.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probekit.cache import fs
from probekit.errors import CacheError

__all__ = ["REPAIR_HINT", "DamagedShardError", "ShardReader"]

_EMPTY = np.uint64(2**64 - 1)

REPAIR_HINT = ("rerun the same `probekit extract` command: it re-extracts damaged shards "
               "(`probekit cache verify` lists them)")

# Shard files already checked against their completion record in this process, by file identity
# (path, inode, size, mtime) and expected checksum: a file replaced or rewritten is checked again.
_VERIFIED: set[tuple] = set()
_VERIFIED_LOCK = threading.Lock()
_ZEROS_SHA: dict[int, str] = {}
_HASH_BLOCK = 32 * 2**20  # bytes gathered and hashed at a time
# shards of a store on an object store, read without a local chunk cache, are held in memory: at most
# this many bytes of them per reader (least recently used go first)
REMOTE_RAM = 1 << 30


class DamagedShardError(CacheError):
    """A finished shard whose file is missing, truncated, or does not match its completion record."""

    def __init__(self, store: Path, array: str, shard: int, rows: tuple[int, int] | None, why: str):
        self.store, self.array, self.shard, self.why = fs.location(store), array, int(shard), why
        where = f" (clips {rows[0]}-{rows[1]})" if rows else ""
        self.short = f"shard {shard} of {array}{where}: {why}"
        super().__init__(f"{store}: {self.short}", hint=REPAIR_HINT)


def _zeros_sha(nbytes: int) -> str:
    """sha256 of `nbytes` zero bytes (a shard zarr left unwritten because it holds only fill values)."""
    got = _ZEROS_SHA.get(nbytes)
    if got is None:
        h, block, left = hashlib.sha256(), bytes(min(nbytes, _HASH_BLOCK)), nbytes
        while left:
            n = min(left, len(block))
            h.update(block[:n] if n < len(block) else block)
            left -= n
        got = _ZEROS_SHA[nbytes] = h.hexdigest()
    return got


class ShardReader:
    """Reads (clip, layer) chunks of one sharded, uncompressed array straight from its shard files.

    zarr-python's read path costs ~30x a memmap for token-sized chunks (measured in
    benchmarks/cache_io.py), so the reader maps each shard file and views chunks through the shard index
    (Zarr v3 sharding spec: index at the end, (offset, nbytes) uint64 per inner chunk, C order, crc32c).
    Falls back to zarr when the array uses codecs this path does not know.

    With `expected` (`j -> (start, stop, sha256, file size or None)`, what shard j's completion record
    says; `TokenStore.expected_shard`) every shard is checked before its first read, once per process:
    a missing, truncated or altered shard file raises `DamagedShardError` instead of handing out wrong
    tokens. The checksum covers the shard's logical bytes (rows start..stop in C order, as written).
    """

    def __init__(self, array, *, max_open: int = 256, expected=None, location=None, chunk_cache=None):
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
        # rows per stored file (a shard, or a plain chunk for unsharded arrays)
        self.rows_per_file = int(meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape", [1])[0])
        # where the array's files are: a local folder (mapped), or an fsspec URL (fetched; probekit.cache.fs)
        if location is not None:
            self.root = fs.location(location)
        else:
            root = getattr(array.store_path.store, "root", None)
            self.root = Path(str(root)) / array.store_path.path if root is not None else None
        self.remote = fs.is_remote(self.root)
        self.chunk_cache = chunk_cache if self.remote else None
        enc = meta.get("chunk_key_encoding", {})
        self._sep = enc.get("configuration", {}).get("separator", "/" if enc.get("name", "default") == "default" else ".")
        self._prefix = "c" if enc.get("name", "default") == "default" else ""
        self._open: OrderedDict[int, tuple[Any, np.ndarray | None]] = OrderedDict()
        self._max_open = max_open
        self._expected = expected
        self._expect_cache: dict[int, tuple[int, int, str, int | None]] = {}
        self._lock = threading.Lock()
        self._first: dict[int, threading.Lock] = {}
        if self.fast:
            per = [s // c for s, c in zip(self.shard_shape, self.chunk_shape)]
            self._chunks_per_shard = per
            self._per_row = int(np.prod(per[1:]))
            self._nchunks = int(np.prod(per))
            self._chunk_items = int(np.prod(self.chunk_shape))
            if self.remote and self.chunk_cache is None:  # shards held in memory: bound their bytes
                shard_bytes = int(np.prod(self.shard_shape)) * self.dtype.itemsize
                self._max_open = max(2, min(max_open, REMOTE_RAM // max(1, shard_bytes)))

    @property
    def name(self) -> str:
        return self.root.name if self.root is not None else str(self.array.path)

    def shard_path(self, j: int) -> Path:
        """The file holding rows j*S .. (j+1)*S (S = rows per shard)."""
        coords = [str(j)] + ["0"] * (len(self.shape) - 1)
        key = self._sep.join([self._prefix, *coords]) if self._prefix else self._sep.join(coords)
        return self.root / key

    def _rel(self, j: int) -> str:
        """Shard j's file relative to the store (for messages)."""
        return f"{self.name}/{self.shard_path(j).relative_to(self.root).as_posix()}"

    # ---- integrity --------------------------------------------------------------------------------
    def _expect(self, j: int) -> tuple[int, int, str, int | None]:
        got = self._expect_cache.get(j)
        if got is None:
            got = self._expect_cache[j] = self._expected(j)
        return got

    def _damaged(self, j: int, why: str) -> DamagedShardError:
        rows = None
        if self._expected is not None:
            try:
                rows = self._expect(j)[:2]
            except CacheError:
                pass
        store = self.root.parent if self.root is not None else Path(str(self.array.store_path))
        return DamagedShardError(store, self.name, j, rows, why)

    def _map(self, j: int):
        """(mat, index, stat) of shard j's file; (None, None, None) when it does not exist."""
        path = self.shard_path(j)
        tail = 16 * self._nchunks + (4 if self.index_crc else 0)
        if self.remote:  # the whole object, by parallel range requests (or from the local chunk cache)
            mm, st = fs.fetch(path, self.chunk_cache)
            if mm is None:
                return None, None, None
            if st.st_size < tail:
                raise self._damaged(j, f"file {self._rel(j)} is {st.st_size} bytes, too short for its index (truncated)")
        else:
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed right below, the mmap outlives it
            except FileNotFoundError:
                return None, None, None
            with f:
                st = os.fstat(f.fileno())
                if st.st_size < tail:  # a 0-byte or cut file: no room for its index
                    raise self._damaged(j, f"file {self._rel(j)} is {st.st_size} bytes, too short for its index (truncated)")
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        n = self._nchunks
        index = np.frombuffer(mm, dtype="<u8", count=2 * n, offset=len(mm) - tail).reshape(n, 2)
        # uncompressed chunks all have one size and are packed from offset 0, so the data part is a
        # (chunks, items) matrix and a batch is one fancy-index gather (checked per read)
        nbytes = self._chunk_items * self.dtype.itemsize
        full = (len(mm) - tail) // nbytes
        mat = np.frombuffer(mm, dtype=self.dtype, count=full * self._chunk_items).reshape(full, self._chunk_items)
        return mat, index, st

    def _positions(self, j: int, mat, index, chunk_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of `mat` holding `chunk_ids` of shard j, and which of them are empty (fill value)."""
        nbytes = np.uint64(self._chunk_items * self.dtype.itemsize)
        off = index[chunk_ids, 0]
        empty = off == _EMPTY
        pos = np.where(empty, np.uint64(0), off // nbytes).astype(np.int64)
        if not bool((off[~empty] % nbytes == 0).all()) or (pos >= len(mat)).any():
            raise self._damaged(j, "not laid out as probekit writes it (corrupt index)")
        return pos, empty

    def _logical_sha(self, j: int, mat, index, nrows: int) -> str:
        """sha256 of rows 0..nrows of shard j in C order (what `TokenStore.write_shard` hashed)."""
        h = hashlib.sha256()
        n = nrows * self._per_row
        step = max(1, _HASH_BLOCK // (self._chunk_items * self.dtype.itemsize))
        for a in range(0, n, step):
            ids = np.arange(a, min(n, a + step))
            pos, empty = self._positions(j, mat, index, ids)
            block = np.take(mat, pos, axis=0)
            if empty.any():
                block[empty] = 0
            h.update(block)
        return h.hexdigest()

    def _check(self, j: int, entry, *, full: bool = True) -> None:
        """Raise DamagedShardError unless shard j's file matches its completion record.

        `full=False` checks only existence and size (cheap: no read); `full=True` also the checksum,
        once per file per process.
        """
        s, e, want, size = self._expect(j)
        mat, index, st = entry
        logical = (e - s) * int(np.prod(self.shape[1:])) * self.dtype.itemsize
        if st is None:  # zarr writes no file for a shard of fill values only
            if size not in (None, 0) or want != _zeros_sha(logical):
                raise self._damaged(j, f"file {self._rel(j)} is missing")
            return
        if size is not None and st.st_size != size:
            raise self._damaged(j, f"file {self._rel(j)} is {st.st_size} bytes, its record says {size}")
        if not full:
            return
        ident = (str(self.shard_path(j)), st.st_ino, st.st_size, st.st_mtime_ns, want)
        if ident in _VERIFIED:
            return
        if self.fast:
            got = self._logical_sha(j, mat, index, e - s)
        else:
            got = hashlib.sha256(np.ascontiguousarray(self.array[s:e]).tobytes()).hexdigest()
        if got != want:
            raise self._damaged(j, "checksum mismatch")
        with _VERIFIED_LOCK:
            _VERIFIED.add(ident)

    def check(self, j: int, *, full: bool = True) -> None:
        """Check shard j against its completion record (raises DamagedShardError)."""
        if self.fast and (full or not self.remote):  # (remote size checks: one HEAD, not the whole object)
            self._map_checked(j, full=full)
            return
        try:
            st = self.shard_path(j).stat() if self.root is not None else None
        except FileNotFoundError:
            st = None
        self._check(j, (None, None, st), full=full)

    def _map_checked(self, j: int, *, full: bool = True):
        """`_map(j)`, checked against shard j's completion record."""
        entry = self._map(j)
        try:
            self._check(j, entry, full=full)
        except DamagedShardError:
            if not (self.remote and self.chunk_cache is not None):
                raise
            # the local copy may be what is damaged, not the store: drop it and check the object itself
            fs.evict(self.shard_path(j), self.chunk_cache)
            entry = self._map(j)
            self._check(j, entry, full=full)
        return entry

    def check_rows(self, rows) -> None:
        """Check every shard that `rows` touch (the zarr fallback path reads without `_shard`)."""
        if self._expected is None:
            return
        for j in np.unique(np.asarray(rows, dtype=np.int64) // self.rows_per_file):
            self.check(int(j))

    def _shard(self, j: int):
        hit = self._open.get(j)
        if hit is not None:
            with self._lock:
                if j in self._open:
                    self._open.move_to_end(j)
            return hit
        with self._lock:
            first = self._first.setdefault(j, threading.Lock())
        with first:  # reader threads asking for one shard at once: one maps and checks it, the others wait
            hit = self._open.get(j)
            if hit is not None:
                return hit
            mat, index, _ = self._map_checked(j) if self._expected is not None else self._map(j)
            entry = (mat, index)  # (None, None): shard never written, all fill value
            with self._lock:
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
        # runs of equal shard numbers (one run per shard when rows are sorted)
        cuts = np.flatnonzero(np.diff(shard)) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, R]):
            a, b = int(a), int(b)
            j = int(shard[a])
            mat, index = self._shard(j)
            if mat is None:
                flat[a * K : b * K] = 0
                continue
            pos, empty = self._positions(j, mat, index, (local[a:b, None] * self._per_row + inner[None, :]).ravel())
            np.take(mat, pos, axis=0, out=flat[a * K : b * K], mode="clip")  # "raise" would buffer: 2 copies
            if empty.any():
                flat[a * K : b * K][empty] = 0
        return out

    def close(self) -> None:
        self._open.clear()

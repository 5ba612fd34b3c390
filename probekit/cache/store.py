"""The token store: one Zarr v3 group per content key, written shard by shard, crash-safe.

Layout of `<cache_dir>/<backbone>__<dataset>__<split>__<dtype>__<digest>.zarr`:

    zarr.json            group; attributes["probekit"] = key, layout, provenance, completion summary
    patch/               (clips, layers, tokens, dim)  storage dtype; shards of S clips, inner chunks (1, 1, N, D)
    cls/                 (clips, layers, dim)          shards of S clips, inner chunks (1, L, D)
    patch_scale/ cls_scale/   int8 stores only: float32 per-token scales (x ~= q * scale)
    labels/              (clips,) int64 class index, or (clips, C) uint8 multi-hot
    clip_ids/            (clips,) str
    folds/               (clips,) int16 (datasets with folds only)
    valid_rows/          (clips,) int32 time rows of real audio (-1 until the store is complete)
    .probekit/done/NNNNNN.json   completion record of shard NNNNNN (sha256 per array, file sizes, valid rows,
                         failures)
    .probekit/lock-*     exclusive extraction locks (filelock; released by the OS if the process dies)
    .probekit/finalize.lock   serialises finalisation of a complete store

`<cache_dir>` may also be an fsspec URL (s3://bucket/prefix, gs://, az://): the same objects, written and
read through `probekit.cache.fs` (creation by a conditional create of the root zarr.json, locks as lease
objects; what that guarantees is in probekit.cache.fs and probekit.cache.lock).

While a local store is being created, `<store>.zarr.create.lock` beside it serialises the creators; the creator
removes it once the store exists (see `TokenStore.create_or_open`), so finished stores leave nothing beside them.

Why this shape (figures from benchmarks/cache_size.py and cache_io.py): one shard file per S clips keeps
AS-2M at tens of thousands of files instead of millions; one inner chunk per (clip, layer) lets a reader
touch only the layers a probe asks for. Chunks are stored without a compressor: on FSDD tokens zstd-1
saves 10% of float16 bytes (blosc-zstd+bitshuffle 14%, int8 3-6%) at 2.3-2.6x zarr's read cost, and
zarr-python's own read path runs at ~0.02x of a memmap, so the reader maps shard files and gathers
chunks through the shard index in one copy, which needs uncompressed, equal-size chunks (`ShardReader`).
A shard is the unit of work: it is written whole, then its completion record is written atomically, so a
crash at any moment leaves only shards that are redone on resume. Token encoding: `probekit.cache.codec`;
fast chunk reads: `probekit.cache.shards`.

Integrity: the records are the store's word on its data. Readers check each shard against its record's
sha256 before its first read (once per process; `shard_reader`); `damaged_shards` finds shards whose
file is missing, 0-byte, of the wrong size or (full check) altered, and whose record is unreadable or
gone; `reopen_shards` turns them back into pending work, so rerunning the extraction repairs exactly them.
A store where some clips failed says how many (`failed_counts`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from probekit.cache import fs
from probekit.cache.codec import NUMPY_DTYPE
from probekit.cache.disk import dir_bytes, disk_full_error, is_disk_full
from probekit.cache.keys import FORMAT_VERSION, cache_root, key_differences, key_digest
from probekit.cache.keys import canonical as _canonical
from probekit.cache.layout import META, StoreLayout
from probekit.cache.lock import ExtractionLock, mutex
from probekit.cache.shards import REPAIR_HINT, DamagedShardError, ShardReader
from probekit.errors import CacheError

__all__ = ["NotAStoreError", "TokenStore", "check_cache_root", "list_stores", "remove_store"]


def _array_codecs():
    from zarr.codecs import BytesCodec

    # Uncompressed on purpose: see the module docstring (benchmarks/cache_size.py has the codec study).
    return {"serializer": BytesCodec(endian="little"), "compressors": None, "filters": None}


class TokenStore:
    """A token store on disk: creation, shard writes with completion records, locks, verification."""

    def __init__(self, path: str | os.PathLike, *, mode: str = "r", chunk_cache: str | os.PathLike | None = None):
        import zarr

        self.path = fs.location(path)  # a local Path as before, or an fsspec URL (probekit.cache.fs)
        self.chunk_cache = fs.chunk_cache_dir(chunk_cache) if fs.is_remote(self.path) else None
        self._guard = None  # set while this process holds the extraction lock (lease checks)
        self._read_records: dict[int, dict] = {}  # records read by this store's shard readers (`shard_reader`)
        if not (self.path / "zarr.json").is_file():
            raise CacheError(f"no token store at {self.path}", hint="run `probekit extract` or `probekit cache ls`")
        try:
            self.group = zarr.open_group(fs.zarr_store(self.path, read_only=mode == "r"),
                                         mode="r" if mode == "r" else "r+")
        except Exception as e:
            raise CacheError(f"{self.path}: unreadable store ({e})", hint="remove it with `probekit cache rm`") from e
        meta = dict(self.group.attrs).get("probekit")
        if not isinstance(meta, Mapping):
            raise NotAStoreError(self.path)
        if meta.get("format") != FORMAT_VERSION:
            raise CacheError(
                f"{self.path}: store format {meta.get('format')} is not {FORMAT_VERSION}",
                hint="re-extract with this probekit version",
            )
        self.meta = dict(meta)
        self.key, self.layout = self._parse_meta(self.path, meta)
        if key_digest(self.key) != meta.get("digest"):
            raise CacheError(f"{self.path}: key digest does not match its key (edited attributes?)")

    @staticmethod
    def _parse_meta(path: Path, meta: Mapping[str, Any]) -> tuple[dict, StoreLayout]:
        """Key and layout of the 'probekit' attributes; incomplete ones are a named error, not a KeyError."""
        try:
            key = meta["key"]
            layout = StoreLayout.from_dict(meta["layout"])
            _ = key["dataset"]["name"], key["dataset"]["split"], key["dtype"]  # every caller reads these
        except (KeyError, TypeError, ValueError) as e:
            what = f"missing {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
            raise NotAStoreError(
                path, f"incomplete probekit attributes: {what}",
                hint="it was not written by probekit, or its zarr.json was edited; remove it with `probekit cache rm`",
            ) from None
        return key, layout

    # ---- creation ---------------------------------------------------------------------------
    @classmethod
    def create_or_open(
        cls,
        path: Path,
        *,
        key: dict,
        layout: StoreLayout,
        provenance: dict,
        clip_ids: Sequence[str],
        labels: np.ndarray,
        folds: np.ndarray | None,
        classes: Sequence[str],
    ) -> TokenStore:
        """Open the store at `path` if it holds `key`; else build it in a temporary folder and rename.

        The rename makes creation atomic: a crash leaves no half-made store, and concurrent shard
        processes (serialised by a lock beside the store) all end up opening the same one.
        """
        from filelock import FileLock, Timeout

        path = fs.location(path)
        check_cache_root(path.parent, create=True)
        if (path / "zarr.json").exists():  # created stores appear whole (rename): no lock needed to open one
            return cls._open_created(path, key)
        if fs.is_remote(path):
            return cls._create_remote(path, key, (layout, provenance, clip_ids, labels, folds, classes))
        lock_path = Path(str(path) + ".create.lock")
        try:
            with _writable(path.parent), FileLock(str(lock_path), timeout=600):
                try:
                    if (path / "zarr.json").exists():
                        return cls._open_created(path, key)
                    # leftovers of creations killed before their rename (we hold the lock: nobody else is creating)
                    for stale in path.parent.glob(f".{path.name}.*.tmp"):
                        shutil.rmtree(stale, ignore_errors=True)
                    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                    try:
                        cls._build(tmp, key, layout, provenance, clip_ids, labels, folds, classes)
                        os.replace(tmp, path)
                    except BaseException as e:
                        shutil.rmtree(tmp, ignore_errors=True)
                        if is_disk_full(e):
                            raise disk_full_error(path, e) from e
                        raise
                finally:
                    # Unlinking a lock file others may wait on is safe only once the store exists: whoever
                    # then gets this (or a new) lock file sees zarr.json and just opens it, never creates.
                    if (path / "zarr.json").exists():
                        lock_path.unlink(missing_ok=True)
        except Timeout:
            raise CacheError(f"timed out waiting for {lock_path}", hint="another process holds it") from None
        return cls(path, mode="r+")

    @classmethod
    def _create_remote(cls, path, key: dict, build_args) -> TokenStore:
        """Object stores have no rename: build locally, upload, and create the root zarr.json last with a
        conditional write (`fs.publish_tree`), so the store appears whole; a creator that loses the race
        opens the winner's store (the same key: identical objects)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="probekit-store-") as d:
            tmp = Path(d) / path.name
            cls._build(tmp, key, *build_args)
            try:
                fs.publish_tree(tmp, path, last="zarr.json")
            except OSError as e:  # no such bucket, access denied, endpoint down: one line, no credentials
                raise CacheError(
                    f"cannot write to {path} ({type(e).__name__}: {e})",
                    hint="check that the bucket exists and that the credentials of the standard environment "
                    "and config files (AWS_* variables, ~/.aws, fsspec config) may write to it",
                ) from e
        return cls._open_created(path, key)

    @classmethod
    def _open_created(cls, path: Path, key: dict) -> TokenStore:
        store = cls(path, mode="r+")
        if store.key != key:
            diffs = key_differences(store.key, key)
            raise CacheError(f"{path} holds another key: " + "; ".join(diffs[:4]))
        return store

    @staticmethod
    def _build(tmp, key, layout: StoreLayout, provenance, clip_ids, labels, folds, classes) -> None:
        import zarr

        c, L, N, D, S = layout.num_clips, layout.num_layers, layout.num_tokens, layout.embed_dim, layout.clips_per_shard
        g = zarr.open_group(str(tmp), mode="w")
        dt = NUMPY_DTYPE[layout.dtype]
        codecs = _array_codecs()
        g.create_array(
            "patch", shape=(c, L, N, D), dtype=dt, chunks=(1, 1, N, D), shards=(S, L, N, D), fill_value=0,
            dimension_names=("clip", "layer", "token", "dim"), **codecs,
        )
        g.create_array(
            "cls", shape=(c, L, D), dtype=dt, chunks=(1, L, D), shards=(S, L, D), fill_value=0,
            dimension_names=("clip", "layer", "dim"), **codecs,
        )
        if layout.dtype == "int8":
            g.create_array(
                "patch_scale", shape=(c, L, N), dtype=np.float32, chunks=(1, L, N), shards=(S, L, N), fill_value=0,
                dimension_names=("clip", "layer", "token"), **codecs,
            )
            g.create_array(
                "cls_scale", shape=(c, L), dtype=np.float32, chunks=(S, L), fill_value=0,
                dimension_names=("clip", "layer"), **codecs,
            )
        meta_chunk = min(c, 1 << 16)
        lab = np.asarray(labels)
        a = g.create_array("labels", shape=lab.shape, dtype=lab.dtype, chunks=(meta_chunk, *lab.shape[1:]), fill_value=0)
        a[...] = lab
        a = g.create_array("clip_ids", shape=(c,), dtype=str, chunks=(meta_chunk,))
        a[...] = np.asarray(list(clip_ids), dtype=object)
        if folds is not None:
            a = g.create_array("folds", shape=(c,), dtype=np.int16, chunks=(meta_chunk,), fill_value=-1)
            a[...] = np.asarray(folds, dtype=np.int16)
        g.create_array("valid_rows", shape=(c,), dtype=np.int32, chunks=(meta_chunk,), fill_value=-1)
        meta = {
            "format": FORMAT_VERSION,
            "key": key,
            "digest": key_digest(key),
            "layout": _canonical(asdict(layout)),
            "classes": list(classes),
            "storage": {"bfloat16": "raw bfloat16 bits in uint16"} if layout.dtype == "bfloat16" else {},
            "provenance": _canonical(provenance),
            "complete": False,
            "failed_clips": [],
        }
        g.attrs["probekit"] = meta
        (Path(tmp) / META / "done").mkdir(parents=True, exist_ok=True)

    # ---- completion records --------------------------------------------------------------------
    def _done_path(self, j: int) -> Path:
        return self.path / META / "done" / f"{j:06d}.json"

    def done_shards(self) -> set[int]:
        d = self.path / META / "done"
        if not fs.is_remote(d) and not d.is_dir():  # (object stores have no folders: an empty listing)
            return set()
        return {int(p.stem) for p in d.glob("[0-9]*.json")}

    def done_record(self, j: int) -> dict:
        try:
            rec = json.loads(self._done_path(j).read_text())
        except (OSError, ValueError) as e:
            raise CacheError(f"{self._done_path(j)}: unreadable completion record ({e})", hint=REPAIR_HINT) from e
        if not isinstance(rec, dict):
            raise CacheError(f"{self._done_path(j)}: unreadable completion record (not an object)", hint=REPAIR_HINT)
        return rec

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete"))

    def write_shard(self, j: int, arrays: Mapping[str, np.ndarray], valid_rows: np.ndarray, failed: list[dict]) -> int:
        """Write shard `j` whole, then its completion record (the commit point). Returns bytes written."""
        start, stop = self.layout.shard_rows(j)
        checksums = {}
        try:
            for name in sorted(arrays):
                data = np.ascontiguousarray(arrays[name])
                if data.shape[0] != stop - start:
                    raise CacheError(f"shard {j} of {name}: {data.shape[0]} rows, expected {stop - start}")
                self.group[name][start:stop] = data
                checksums[name] = hashlib.sha256(data.tobytes()).hexdigest()
            record = {
                "shard": j,
                "rows": [start, stop],
                "checksums": checksums,
                "files": self._file_sizes(j, sorted(arrays)),
                "valid_rows": [int(v) for v in valid_rows],
                "failed": failed,
            }
            if self._guard is not None:  # object stores: our lease must still be ours at the commit point
                self._guard()
            fs.write_json_atomic(self._done_path(j), record)
        except BaseException as e:
            if is_disk_full(e):
                raise disk_full_error(self.path, e) from e
            raise
        return int(sum(a.nbytes for a in arrays.values()))

    def finalize(self) -> bool:
        """Once every shard has its record: fill valid_rows, list failures, mark complete. Idempotent."""
        if self.complete:
            return True
        done = self.done_shards()
        if len(done) < self.layout.num_shards:
            return False
        # inside the store (it exists by now), so nothing is left beside it
        with mutex(self.path / META / "finalize.lock", timeout=600):
            fresh = TokenStore(self.path, mode="r+", chunk_cache=self.chunk_cache)
            if fresh.complete:
                self.meta = fresh.meta
                return True
            valid = np.full(self.layout.num_clips, -1, dtype=np.int32)
            failed: list[dict] = []
            for j in range(self.layout.num_shards):
                rec = fresh.done_record(j)
                s, e = rec["rows"]
                valid[s:e] = rec["valid_rows"]
                failed += rec["failed"]
            try:
                fresh.group["valid_rows"][:] = valid
                # zarr's temporaries from writes a crash cut short (local only: object stores have single PUTs)
                for p in () if fs.is_remote(self.path) else self.path.rglob("*.partial"):
                    p.unlink(missing_ok=True)
                # completion records killed between write and rename (every record exists now: none is live)
                for p in (self.path / META / "done").glob(".*.tmp"):
                    p.unlink(missing_ok=True)
                meta = dict(fresh.meta)
                meta.update(complete=True, failed_clips=failed)
                meta["provenance"] = dict(meta["provenance"], completed=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                fresh.group.attrs["probekit"] = meta
            except BaseException as e:
                if is_disk_full(e):
                    raise disk_full_error(self.path, e) from e
                raise
            self.meta = meta
            self.group = fresh.group
        return True

    # ---- locking ----------------------------------------------------------------------------------
    def lock(self, shard: tuple[int, int] = (0, 1)) -> ExtractionLock:
        lock = ExtractionLock(self.path, shard)
        self._guard = lock.check
        return lock

    # ---- verification --------------------------------------------------------------------------------
    def verify(self, *, checksums: bool = True, progress=None) -> list[str]:
        """Problems found (empty when the store is complete and every shard matches its checksums)."""
        problems = []
        done = self.done_shards()
        missing = sorted(set(range(self.layout.num_shards)) - done)
        if missing:
            problems.append(f"{len(missing)} of {self.layout.num_shards} shards not extracted (first: {missing[:5]})")
        if not self.complete:
            problems.append("store not finalised (extraction did not finish; rerun it to resume)")
        damaged = self.damaged_shards(full=checksums, progress=progress)
        problems += [damaged[j] for j in sorted(damaged) if j in done]  # the others are counted above
        return problems

    # ---- integrity: what the completion records promise, checked ----------------------------------
    def token_arrays(self) -> tuple[str, ...]:
        """The arrays every completion record holds a checksum of."""
        return ("cls", "patch") + (("cls_scale", "patch_scale") if self.layout.dtype == "int8" else ())

    def _file_sizes(self, j: int, names: Sequence[str]) -> dict[str, int]:
        """Bytes of shard j's file per array (0: no file, zarr skips shards of fill values only)."""
        out = {}
        for name in names:
            try:
                out[name] = self._reader(name).shard_path(j).stat().st_size
            except (OSError, TypeError):
                out[name] = 0
        return out

    def expected_shard(self, name: str, j: int, record: dict | None = None) -> tuple[int, int, str, int | None]:
        """(start, stop, sha256, file size or None) of array `name` in shard j, from its completion record."""
        rec = self.done_record(j) if record is None else record
        try:
            s, e = (int(v) for v in rec["rows"])
            want = str(rec["checksums"][name])
        except (KeyError, TypeError, ValueError) as ex:
            raise CacheError(f"{self._done_path(j)}: completion record has no rows/checksum of {name} ({ex})",
                             hint=REPAIR_HINT) from None
        size = (rec.get("files") or {}).get(name)
        return s, e, want, None if size is None else int(size)

    def shard_reader(self, name: str, **kw) -> ShardReader:
        """A ShardReader of array `name` that checks each shard against its completion record."""
        return self._reader(name, expected=lambda j: self.expected_shard(name, j, self._reader_record(j)), **kw)

    def _reader_record(self, j: int) -> dict:
        # the readers of one store (patch, cls, scales) share each shard's record: one read (one GET on
        # an object store), not one per array
        rec = self._read_records.get(j)
        if rec is None:
            rec = self._read_records[j] = self.done_record(j)
        return rec

    def _reader(self, name: str, **kw) -> ShardReader:
        return ShardReader(self.group[name], location=self.path / name, chunk_cache=self.chunk_cache, **kw)

    def damaged_shards(self, shards: Sequence[int] | None = None, *, full: bool = False, progress=None) -> dict[int, str]:
        """Finished shards (of `shards`, default all) whose data does not match their completion record.

        {shard: problem}. A record that cannot be read counts as damaged. `full=False` checks that each
        shard file exists with the size its record gives (no data read: cheap); `full=True` also
        re-hashes every byte (the cost of reading the store once).
        """
        done = self.done_shards()
        asked = set(range(self.layout.num_shards)) if shards is None else {int(j) for j in shards}
        targets = sorted(asked & done)
        out: dict[int, str] = {}
        if self.complete:  # a complete store with a shard record gone (deleted, or a repair cut short)
            for j in sorted(asked - done):
                out[j] = f"shard {j}: completion record {self._done_path(j).name} is missing"
        rec: dict[int, dict] = {}  # the record of the shard being checked, read once for all arrays
        readers = {
            name: self._reader(name, max_open=1,
                               expected=lambda j, name=name: self.expected_shard(name, j, rec.get(j)))
            for name in self.token_arrays()
        }
        for j in targets:
            rec.clear()
            try:
                rec[j] = self.done_record(j)
                for name in self.token_arrays():
                    readers[name].check(j, full=full)
            except DamagedShardError as e:
                out[j] = e.short
            except CacheError as e:
                out[j] = f"shard {j}: {e.message}"
            if progress is not None:
                progress()
        return out

    def check_loaded(self, name: str, data: np.ndarray) -> None:
        """Check an array read whole (int8 stores' small cls scales) shard by shard against the records."""
        for j in range(self.layout.num_shards):
            s, e, want, _ = self.expected_shard(name, j)
            if hashlib.sha256(np.ascontiguousarray(data[s:e]).tobytes()).hexdigest() != want:
                raise DamagedShardError(self.path, name, j, (s, e), "checksum mismatch")

    def reopen_shards(self, shards: Sequence[int]) -> None:
        """Mark shards as not done (their records and files go) so extraction writes them again.

        Call under this store's extraction lock. A complete store becomes incomplete until then.
        """
        shards = sorted({int(j) for j in shards})
        if not shards:
            return
        try:
            if self.complete:
                meta = dict(self.meta, complete=False)
                self.group.attrs["probekit"] = meta
                self.meta = meta
            for j in shards:
                self._done_path(j).unlink(missing_ok=True)  # first: a crash from here on leaves the shard pending
                for name in self.token_arrays():
                    self._reader(name).shard_path(j).unlink(missing_ok=True)
        except PermissionError as e:
            raise CacheError(f"{self.path}: cannot repair a read-only store ({e.strerror})",
                             hint="make it writable, or extract into another --cache-dir") from e

    def failed_clips(self) -> list[dict]:
        """Clips whose extraction failed ({index, id, error}): from the finished store, else the records so far."""
        if self.complete:
            return list(self.meta.get("failed_clips", []))
        out: list[dict] = []
        for j in sorted(self.done_shards()):
            try:
                out += self.done_record(j).get("failed", [])
            except CacheError:
                pass
        return out

    def failed_counts(self) -> dict:
        """{split, clips, failed, ids}: how many clips of this store's split failed (first ids named).

        For result records and for probes that must refuse when test clips are missing.
        """
        failed = self.failed_clips()
        return {"split": self.key["dataset"]["split"], "clips": self.layout.num_clips, "failed": len(failed),
                "ids": [str(f.get("id")) for f in failed[:5]]}

    def summary(self) -> dict:
        prov = self.meta.get("provenance", {})
        ds = self.key["dataset"]
        return {
            "path": str(self.path),
            "backbone": prov.get("backbone_name", self.key["backbone"].get("name", "?")),
            "dataset": ds["name"],
            "split": ds["split"],
            "clips": self.layout.num_clips,
            "layers": self.layout.num_layers,
            "grid": self.layout.grid,
            "dim": self.layout.embed_dim,
            "dtype": self.layout.dtype,
            "complete": self.complete,
            "done": f"{len(self.done_shards())}/{self.layout.num_shards}",
            "failed": len(self.meta.get("failed_clips", [])),
            "created": prov.get("created", ""),
            "checkpoint": (prov.get("checkpoint_sha256") or "random-init")[:12],
            "bytes": dir_bytes(self.path),
        }


class NotAStoreError(CacheError):
    """A `*.zarr` folder that is not a probekit token store.

    `detail` None: no probekit attributes at all (someone else's zarr); else what is wrong with them.
    """

    def __init__(self, path: Path, detail: str | None = None, *, hint: str | None = None):
        self.detail = detail
        super().__init__(f"{path}: not a probekit token store ({detail or 'no probekit attributes'})", hint=hint)


def check_cache_root(root: Path, *, create: bool = False) -> None:
    """A cache root that is a file (PROBEKIT_CACHE=some file) is a named error, not FileExistsError."""
    root = fs.location(root)
    if root.exists() and not root.is_dir():
        raise CacheError(f"cache dir {root} is not a folder",
                         hint="point --cache-dir or PROBEKIT_CACHE at a folder (it is created if missing)")
    if create:
        with _writable(root):
            root.mkdir(parents=True, exist_ok=True)


class _writable:
    """Turns permission errors while writing under `root` into one named line."""

    def __init__(self, root: Path):
        self.root = root

    def __enter__(self):
        return self

    def __exit__(self, tp, exc, tb):
        if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise CacheError(f"cannot write to cache dir {self.root} ({exc.strerror})",
                             hint="pick a writable --cache-dir (or PROBEKIT_CACHE)") from exc
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            raise CacheError(f"cannot create cache dir {self.root} ({exc.strerror}: {exc.filename})",
                             hint="point --cache-dir or PROBEKIT_CACHE at a folder") from exc
        return False


def list_stores(cache_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    root = cache_root(cache_dir)
    check_cache_root(root)
    if not root.is_dir():
        return iter(())
    return iter(sorted(p for p in root.glob("*.zarr") if (p / "zarr.json").is_file()))


def remove_store(path: str | os.PathLike) -> None:
    """Delete a store (refused while an extraction holds its lock)."""
    path = fs.location(path)
    with ExtractionLock(path, (0, 1)):
        pass
    fs.rmtree(path)
    if not fs.is_remote(path):  # (object stores are created without a lock beside them)
        Path(str(path) + ".create.lock").unlink(missing_ok=True)

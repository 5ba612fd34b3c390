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
    .probekit/done/NNNNNN.json   completion record of shard NNNNNN (checksums, valid rows, failures)
    .probekit/lock-*     exclusive extraction locks (filelock; released by the OS if the process dies)
    .probekit/finalize.lock   serialises finalisation of a complete store

While a store is being created, `<store>.zarr.create.lock` beside it serialises the creators; the creator
removes it once the store exists (see `TokenStore.create`), so finished stores leave nothing beside them.

Why this shape (figures from benchmarks/cache_size.py and cache_io.py): one shard file per S clips keeps
AS-2M at tens of thousands of files instead of millions; one inner chunk per (clip, layer) lets a reader
touch only the layers a probe asks for. Chunks are stored without a compressor: on FSDD tokens zstd-1
saves 10% of float16 bytes (blosc-zstd+bitshuffle 14%, int8 3-6%) at 2.3-2.6x zarr's read cost, and
zarr-python's own read path runs at ~0.02x of a memmap, so the reader maps shard files and gathers
chunks through the shard index in one copy, which needs uncompressed, equal-size chunks (`ShardReader`).
A shard is the unit of work: it is written whole, then its completion record is written atomically, so a
crash at any moment leaves only shards that are redone on resume.

bfloat16 has no numpy dtype: it is stored as its raw 16 bits in uint16 (attribute `storage`), so plain zarr
users read it with `(a.astype(np.uint32) << 16).view(np.float32)`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import mmap
import os
import re
import shutil
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probekit.errors import CacheError

FORMAT_VERSION = 1
DTYPES = ("float16", "bfloat16", "float32", "int8")
# numpy dtype each storage dtype is written as (bfloat16: raw bits)
NUMPY_DTYPE = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32, "int8": np.int8}
# Shards aim at this many bytes of patch tokens: big enough that AS-2M x ViT-B (9.4 MB/clip, all layers)
# is ~70k files, small enough that the writer's buffer and the work lost to a crash stay small.
SHARD_TARGET_BYTES = 256 * 2**20
MAX_SHARD_CLIPS = 1024
META = ".probekit"


def default_cache_dir() -> Path:
    """`$PROBEKIT_CACHE`, else the platform's user cache dir (e.g. ~/.cache/probekit/tokens)."""
    env = os.environ.get("PROBEKIT_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("probekit")) / "tokens"


def _canonical(obj: Any) -> Any:
    """JSON-safe, order-stable form of a key (tuples -> lists, paths -> str, floats kept exact)."""
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
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
    return _canonical(
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
    return hashlib.sha256(json.dumps(_canonical(key), sort_keys=True).encode()).hexdigest()[:20]


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(s)).strip("-")[:48] or "x"


def store_path(cache_dir: str | os.PathLike | None, key: Mapping[str, Any], backbone_name: str = "backbone") -> Path:
    """Where the store of `key` lives: a readable name plus the key digest."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    ds = key["dataset"]
    name = "__".join(_slug(x) for x in (backbone_name, ds["name"], ds["split"], key["dtype"]))
    return root / f"{name}__{key_digest(key)}.zarr"


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


def projected_bytes(clips: int, layers: int, tokens: int, dim: int, dtype: str) -> int:
    """Token bytes of a store (labels, ids and shard indices are negligible beside them)."""
    item = np.dtype(NUMPY_DTYPE[dtype]).itemsize
    per_clip = layers * (tokens + 1) * dim * item
    if dtype == "int8":
        per_clip += layers * (tokens + 1) * 4  # float32 scale per token
    return clips * per_clip


def default_clips_per_shard(layout_bytes_per_clip: int, batch_size: int) -> int:
    s = max(1, min(MAX_SHARD_CLIPS, SHARD_TARGET_BYTES // max(1, layout_bytes_per_clip)))
    if s >= batch_size:  # whole batches per shard: no ragged batch in the middle of a shard
        s -= s % batch_size
    return s


def _atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
        hint="free space (or pick --cache-dir on a bigger disk) and rerun the same command: "
        "the store resumes from its last complete shard",
    )


def free_bytes(path: Path) -> int:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def _array_codecs():
    from zarr.codecs import BytesCodec

    # Uncompressed on purpose: see the module docstring (benchmarks/cache_size.py has the codec study).
    return {"serializer": BytesCodec(endian="little"), "compressors": None, "filters": None}


class TokenStore:
    """A token store on disk: creation, shard writes with completion records, locks, verification."""

    def __init__(self, path: str | os.PathLike, *, mode: str = "r"):
        import zarr

        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise CacheError(f"no token store at {self.path}", hint="run `probekit extract` or `probekit cache ls`")
        try:
            self.group = zarr.open_group(str(self.path), mode="r" if mode == "r" else "r+")
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

        path = Path(path)
        check_cache_root(path.parent, create=True)
        if (path / "zarr.json").exists():  # created stores appear whole (rename): no lock needed to open one
            return cls._open_created(path, key)
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
        if not d.is_dir():
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
            _atomic_write_json(self._done_path(j), record)
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
        from filelock import FileLock

        # inside the store (it exists by now), so nothing is left beside it
        with FileLock(str(self.path / META / "finalize.lock"), timeout=600):
            fresh = TokenStore(self.path, mode="r+")
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
                for p in self.path.rglob("*.partial"):  # zarr's temporaries from writes a crash cut short
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
        return ExtractionLock(self.path, shard)

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
        problems += [damaged[j] for j in sorted(damaged)]
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
                out[name] = ShardReader(self.group[name]).shard_path(j).stat().st_size
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
        return ShardReader(self.group[name], expected=lambda j: self.expected_shard(name, j), **kw)

    def damaged_shards(self, shards: Sequence[int] | None = None, *, full: bool = False, progress=None) -> dict[int, str]:
        """Finished shards (of `shards`, default all) whose data does not match their completion record.

        {shard: problem}. A record that cannot be read counts as damaged. `full=False` checks that each
        shard file exists with the size its record gives (no data read: cheap); `full=True` also
        re-hashes every byte (the cost of reading the store once).
        """
        done = self.done_shards()
        targets = sorted(done if shards is None else set(shards) & done)
        rec: dict[int, dict] = {}  # the record of the shard being checked, read once for all arrays
        readers = {
            name: ShardReader(self.group[name], max_open=1,
                              expected=lambda j, name=name: self.expected_shard(name, j, rec.get(j)))
            for name in self.token_arrays()
        }
        out: dict[int, str] = {}
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
                    ShardReader(self.group[name]).shard_path(j).unlink(missing_ok=True)
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


class ExtractionLock:
    """Exclusive lock for extracting (a shard plan of) one store.

    Runs with the same `i/n` exclude each other; an unsharded run (0/1) excludes everything. Plans with
    another `n` are refused while any of their locks is held, so no two processes write one shard.
    """

    def __init__(self, path: Path, shard: tuple[int, int]):
        self.path = Path(path)
        self.shard = shard
        self._lock = None

    def _file(self, i: int, n: int) -> Path:
        return self.path / META / f"lock-{i}-of-{n}"

    def __enter__(self) -> "ExtractionLock":
        from filelock import FileLock, Timeout

        i, n = self.shard
        own = self._file(i, n)
        own.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(own) + ".lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise CacheError(
                f"{self.path} is already being extracted ({self._holder(own)})",
                hint="wait for that run to finish, or stop it; a rerun afterwards resumes where it stopped",
            ) from None
        # other shard plans that overlap ours: any held lock with a different n, or 0/1 vs anything
        for other in own.parent.glob("lock-*-of-*.lock"):
            if other.name == own.name + ".lock" or other.name == own.name:
                continue
            m = re.match(r"lock-(\d+)-of-(\d+)\.lock$", other.name)
            if not m or (int(m.group(2)) == n and n > 1):
                continue  # same plan, other shard: disjoint, fine
            probe = FileLock(str(other), timeout=0)
            try:
                probe.acquire()
                probe.release()
            except Timeout:
                lock.release()
                raise CacheError(
                    f"{self.path} is being extracted with another shard plan "
                    f"({self._holder(other.with_suffix(''))}); this run uses shard {i}/{n}",
                    hint="use the same --shard i/n for every process of one extraction",
                ) from None
        own.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        self._lock = lock
        return self

    @staticmethod
    def _holder(info: Path) -> str:
        try:
            d = json.loads(info.read_text())
            return f"pid {d['pid']} on {d['host']} since {time.strftime('%H:%M:%S', time.localtime(d['since']))}"
        except (OSError, ValueError, KeyError):
            return "another process"

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


# ---- fast reads ----------------------------------------------------------------------------------
_EMPTY = np.uint64(2**64 - 1)

REPAIR_HINT = ("rerun the same `probekit extract` command: it re-extracts damaged shards "
               "(`probekit cache verify` lists them)")

# Shard files already checked against their completion record in this process, by file identity
# (path, inode, size, mtime) and expected checksum: a file replaced or rewritten is checked again.
_VERIFIED: set[tuple] = set()
_VERIFIED_LOCK = threading.Lock()
_ZEROS_SHA: dict[int, str] = {}
_HASH_BLOCK = 32 * 2**20  # bytes gathered and hashed at a time


class DamagedShardError(CacheError):
    """A finished shard whose file is missing, truncated, or does not match its completion record."""

    def __init__(self, store: Path, array: str, shard: int, rows: tuple[int, int] | None, why: str):
        self.store, self.array, self.shard, self.why = Path(store), array, int(shard), why
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

    def __init__(self, array, *, max_open: int = 256, expected=None):
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
        root = getattr(array.store_path.store, "root", None)
        self.root = Path(str(root)) / array.store_path.path if root is not None else None
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
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed right below, the mmap outlives it
        except FileNotFoundError:
            return None, None, None
        with f:
            st = os.fstat(f.fileno())
            tail = 16 * self._nchunks + (4 if self.index_crc else 0)
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
        if self.fast:
            entry = self._map(j)
        else:
            try:
                st = os.stat(self.shard_path(j)) if self.root is not None else None
            except FileNotFoundError:
                st = None
            entry = (None, None, st)
        self._check(j, entry, full=full)

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
            mat, index, st = self._map(j)
            if self._expected is not None:
                self._check(j, (mat, index, st))
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


class NotAStoreError(CacheError):
    """A `*.zarr` folder that is not a probekit token store.

    `detail` None: no probekit attributes at all (someone else's zarr); else what is wrong with them.
    """

    def __init__(self, path: Path, detail: str | None = None, *, hint: str | None = None):
        self.detail = detail
        super().__init__(f"{path}: not a probekit token store ({detail or 'no probekit attributes'})", hint=hint)


def check_cache_root(root: Path, *, create: bool = False) -> None:
    """A cache root that is a file (PROBEKIT_CACHE=some file) is a named error, not FileExistsError."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise CacheError(f"cache dir {root} is not a folder",
                         hint="point --cache-dir or PROBEKIT_CACHE at a folder (it is created if missing)")
    if create:
        with _writable(root):
            root.mkdir(parents=True, exist_ok=True)


class _writable:
    """Turns permission errors while writing under `root` into one named line."""

    def __init__(self, root: Path):
        self.root = Path(root)

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
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    check_cache_root(root)
    if not root.is_dir():
        return iter(())
    return iter(sorted(p for p in root.glob("*.zarr") if (p / "zarr.json").is_file()))


def remove_store(path: str | os.PathLike) -> None:
    """Delete a store (refused while an extraction holds its lock)."""
    path = Path(path)
    with ExtractionLock(path, (0, 1)):
        pass
    shutil.rmtree(path)
    for extra in (Path(str(path) + ".create.lock"),):
        extra.unlink(missing_ok=True)

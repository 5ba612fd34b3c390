"""Where a store lives: a local folder (pathlib.Path, exactly as before) or any fsspec URL (s3://, gs://, az://, ...).

This module is the cache's only seam to storage. A location is either a `pathlib.Path` (local: every
call below does what the cache did before, byte for byte) or an `ObjectPath`, a small pathlib-like
view of an fsspec URL (`/`, `name`, `parent`, `exists`, `glob`, `read_text`, `unlink`, `stat`, ...).
The cache modules call `location()` once on what the user gave and then use these functions for what
differs between the two: atomic writes, conditional creates, deletes, zarr stores, shard fetches,
free space. Nothing else in probekit.cache looks at a URL's scheme.

Object stores (what is and is not guaranteed; s3fs on AWS S3 or an S3-compatible server, tested
against moto's S3 server in tests/cache/test_object_store.py):

* A single PUT is atomic: readers see the old object or the new one, never half (`write_bytes_atomic`).
  Completion records and store metadata are single PUTs, so they are as atomic as the local
  fsync+rename. There is no rename: a new store is built in a local temporary folder, its objects are
  uploaded, and its root `zarr.json` is created last with a conditional write, so a store appears
  whole or not at all (`publish_tree`); two creators racing upload identical bytes and one wins.
* `create_exclusive` is a conditional create (S3 `PutObject` with `If-None-Match: *`; s3fs
  `mode="create"`): of several writers exactly one succeeds. `replace_if` is a compare-and-swap on the
  ETag (`If-Match`). Both are what the extraction lock's lease objects rest on (probekit.cache.lock).
  On file systems whose fsspec driver offers neither (some gs/az/http drivers), they fall back to
  exists-then-write, which is NOT safe against a writer racing in between: run one extraction
  process per store there, or use disjoint `--shard i/n` plans started after the first created it.
* Reads: a shard file is fetched whole (its checksum is verified before its first read) with
  parallel range requests (`fetch`: fsspec `cat_ranges`, `PART` bytes each), into memory, or with a
  local chunk cache (`chunk_cache=` / `$PROBEKIT_CHUNK_CACHE`) into a file keyed by the object's URL,
  ETag and size, which is then memory-mapped like a local shard. A rewritten shard has another ETag,
  so a stale cached copy is never used.
* Credentials and endpoints come only from each library's own environment and config files (for S3:
  AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_PROFILE, ~/.aws/config, AWS_ENDPOINT_URL; for any
  protocol: fsspec's `FSSPEC_<PROTOCOL>_<OPTION>` variables and ~/.config/fsspec/*.json). probekit
  passes none, and never writes a URL's user:password@ part or its query string (signed URLs, SAS
  tokens) into a record or a message: `str(ObjectPath)` is the redacted URL.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any, Union

from probekit.errors import CacheError

__all__ = ["Location", "ObjectPath", "PART", "chunk_cache_dir", "create_exclusive", "evict", "fetch", "free_bytes",
           "is_remote", "is_url", "location", "publish_tree", "read_etag", "redact", "replace_if", "rmtree", "store_exists",
           "tree_bytes", "write_bytes_atomic", "write_json_atomic", "zarr_store"]

PART = 8 * 2**20  # bytes per range request when fetching a shard file
CLOUD_HINT = "pip install 'probekit[cloud]' (s3fs; gcsfs / adlfs for gs:// / az://)"

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://(.*)$", re.S)
_CHAINED = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(::[A-Za-z][A-Za-z0-9+.\-]*)+://", re.S)  # simplecache::s3://
# a URL that went through pathlib.Path (typer options typed Path): "s3://b/p" became "s3:/b/p"
_MANGLED = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*(?:::[A-Za-z][A-Za-z0-9+.\-]*)*):/([^/].*)?$", re.S)


def redact(url: str) -> str:
    """`url` without credentials: no user:password@ part, no query string (signed URLs, SAS tokens)."""
    m = _URL.match(str(url))
    if not m:
        return str(url)
    proto, rest = m.groups()
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    head, sep, tail = rest.partition("/")
    if "@" in head:
        head = head.rsplit("@", 1)[1]
    return f"{proto}://{head}{sep}{tail}"


class ObjectPath:
    """A pathlib-like view of an fsspec URL (the parts of pathlib the cache uses)."""

    def __init__(self, url: str):
        if _CHAINED.match(url):
            raise CacheError(f"chained fsspec URL {redact(url.rsplit('::', 1)[-1])!r} is not supported as a cache dir",
                             hint="give the plain URL; a local copy of read shards: chunk_cache= or PROBEKIT_CHUNK_CACHE")
        m = _URL.match(url)
        if not m:
            raise CacheError(f"{url!r} is not a URL")
        self.protocol = m.group(1).lower()
        self.url = url.rstrip("/") if m.group(2).strip("/") else url

    # ---- the file system -------------------------------------------------------------------------
    @property
    def fs(self):
        # not kept on the object: fsspec caches instances per process and makes new ones after a fork
        return _filesystem(self.protocol)

    @property
    def key(self) -> str:
        """The path as the fsspec file system names it (no protocol)."""
        return self.fs._strip_protocol(self.url)

    # ---- pure path operations ----------------------------------------------------------------------
    def _with(self, url: str) -> "ObjectPath":
        return ObjectPath(url)

    def __truediv__(self, other) -> "ObjectPath":
        other = str(other).strip("/")
        return self._with(f"{self.url}/{other}" if other else self.url)

    @property
    def _pure(self) -> PurePosixPath:
        return PurePosixPath("/" + _URL.match(self.url).group(2))

    @property
    def name(self) -> str:
        return self._pure.name

    @property
    def stem(self) -> str:
        return self._pure.stem

    @property
    def suffix(self) -> str:
        return self._pure.suffix

    @property
    def parent(self) -> "ObjectPath":
        parent = str(self._pure.parent).lstrip("/")
        return self._with(f"{self.protocol}://{parent}")

    def with_name(self, name: str) -> "ObjectPath":
        return self.parent / name

    def relative_to(self, other) -> PurePosixPath:
        return self._pure.relative_to(other._pure if isinstance(other, ObjectPath) else other)

    def as_posix(self) -> str:
        return str(self)

    def expanduser(self) -> "ObjectPath":
        return self

    def __str__(self) -> str:
        return redact(self.url)

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectPath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __lt__(self, other) -> bool:
        return self.url < other.url

    # ---- queries -------------------------------------------------------------------------------------
    def _info(self) -> dict | None:
        try:
            return self.fs.info(self.key)
        except FileNotFoundError:
            return None

    def exists(self) -> bool:
        self.fs.invalidate_cache(self.key)
        return self.fs.exists(self.key)

    def is_file(self) -> bool:
        self.fs.invalidate_cache(self.key)
        info = self._info()
        return info is not None and info.get("type") == "file"

    def is_dir(self) -> bool:
        self.fs.invalidate_cache(self.key)
        info = self._info()
        return info is not None and info.get("type") == "directory"

    def stat(self):
        """os.stat_result-like: st_size, st_mtime_ns, st_ino (from the ETag: a rewritten object differs)."""
        self.fs.invalidate_cache(self.key)
        info = self._info()
        if info is None or info.get("type") != "file":
            raise FileNotFoundError(2, "no such object", str(self))
        etag = str(info.get("ETag") or info.get("etag") or info.get("md5_checksum") or "")
        mtime = info.get("LastModified") or info.get("mtime") or info.get("updated") or 0
        mtime = mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime or 0)
        return SimpleNamespace(st_size=int(info.get("size") or 0), st_mtime=mtime, st_mtime_ns=int(mtime * 1e9),
                               st_ino=int(hashlib.sha256(etag.encode()).hexdigest()[:15], 16), etag=etag)

    def _list(self, recursive: bool) -> list[str]:
        self.fs.invalidate_cache(self.key)
        try:
            if recursive:
                return list(self.fs.find(self.key))
            return [e["name"] if isinstance(e, dict) else e for e in self.fs.ls(self.key, detail=True)]
        except FileNotFoundError:
            return []

    def iterdir(self):
        base = self.key.rstrip("/")
        for name in sorted(self._list(False)):
            if name.rstrip("/") != base:
                yield self / name.rstrip("/").rsplit("/", 1)[-1]

    def glob(self, pattern: str):
        """Direct children whose name matches `pattern` (no '/' in patterns)."""
        return iter([p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern)])

    def rglob(self, pattern: str):
        base = self.key.rstrip("/")
        for name in sorted(self._list(True)):
            rel = name[len(base):].lstrip("/")
            if fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], pattern):
                yield self / rel

    # ---- reads and writes ------------------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.key)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        self.fs.pipe_file(self.key, bytes(data))
        self.fs.invalidate_cache(self.key)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise
        self.fs.invalidate_cache(self.key)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no folders: nothing to make (a missing bucket fails at the first write)."""


Location = Union[Path, ObjectPath]


def _filesystem(protocol: str):
    try:
        import fsspec

        return fsspec.filesystem(protocol)  # applies fsspec's config (FSSPEC_* variables, ~/.config/fsspec)
    except ImportError as e:
        raise CacheError(f"cache dir on {protocol}:// needs an fsspec driver ({e})", hint=CLOUD_HINT) from None
    except ValueError as e:  # unknown protocol
        raise CacheError(f"cache dir on {protocol}://: {e}", hint="use a local folder or an fsspec URL (s3://bucket/prefix)") from None


def is_url(x: Any) -> bool:
    return isinstance(x, str) and bool(_URL.match(x) or _CHAINED.match(x))


def location(x: "str | os.PathLike | ObjectPath") -> Location:
    """The location of `x`: an ObjectPath for an fsspec URL (not file://), else a pathlib.Path (expanded)."""
    if isinstance(x, ObjectPath):
        return x
    s = os.fspath(x)
    if isinstance(x, Path) and not x.is_absolute():
        m2 = _MANGLED.match(s)  # "s3://b/p" that went through pathlib.Path (CLI options typed Path)
        if m2:
            s = f"{m2.group(1)}://{m2.group(2) or ''}"
    if _CHAINED.match(s):
        return ObjectPath(s)  # (refused there, with a named error)
    m = _URL.match(s)
    if m is None:
        return Path(s).expanduser()
    if m.group(1).lower() in ("file", "local"):
        return Path(m.group(2)).expanduser()
    return ObjectPath(s)


def is_remote(loc: Any) -> bool:
    return isinstance(loc, ObjectPath)


def store_exists(loc: Location) -> bool:
    """Whether a store was created at `loc`. Local: the folder exists (creation renames a whole folder into
    place). Object stores: its root zarr.json exists (created last, `publish_tree`); objects of a creation
    killed before that are overwritten by the next one."""
    return (loc / "zarr.json").exists() if is_remote(loc) else loc.exists()


# ---- writes --------------------------------------------------------------------------------------------
def write_bytes_atomic(loc: Location, data: bytes) -> None:
    if is_remote(loc):
        loc.write_bytes(data)  # one PUT: atomic for readers
    else:
        from probekit._io import atomic_write_bytes

        atomic_write_bytes(loc, data)


def write_json_atomic(loc: Location, obj: Any) -> None:
    if is_remote(loc):
        loc.write_bytes(json.dumps(obj, sort_keys=True).encode())  # the bytes atomic_write_json writes
    else:
        from probekit._io import atomic_write_json

        atomic_write_json(loc, obj)


def create_exclusive(loc: Location, data: bytes) -> bool:
    """Create `loc` holding `data` unless it exists; True when this call created it (one winner of many)."""
    if not is_remote(loc):
        loc.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(loc, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    fs = loc.fs
    try:
        fs.pipe_file(loc.key, data, mode="create")  # S3: PutObject If-None-Match: * (s3fs, moto, AWS)
        return True
    except FileExistsError:
        return False
    except TypeError:  # a driver without mode=: best effort (see the module docstring)
        if fs.exists(loc.key):
            return False
        fs.pipe_file(loc.key, data)
        return True
    finally:
        fs.invalidate_cache(loc.key)


def read_etag(loc: ObjectPath) -> tuple[bytes, str] | None:
    """(content, ETag) of an object, or None when it does not exist."""
    try:
        st = loc.stat()
        data = loc.read_bytes()
    except FileNotFoundError:
        return None
    return data, st.etag


def replace_if(loc: ObjectPath, data: bytes, etag: str) -> bool:
    """Overwrite `loc` only if it still has `etag` (S3 If-Match); True when it did."""
    fs = loc.fs
    try:
        if loc.protocol in ("s3", "s3a"):
            fs.pipe_file(loc.key, data, IfMatch=etag)
            return True
        if loc.stat().etag != etag:  # best effort elsewhere (see the module docstring)
            return False
        fs.pipe_file(loc.key, data)
        return True
    except (FileNotFoundError, FileExistsError):
        return False
    except OSError as e:
        if "pre-condition" in str(e) or "PreconditionFailed" in str(e) or getattr(e, "errno", None) == 22:
            return False
        raise
    finally:
        fs.invalidate_cache(loc.key)


def rmtree(loc: Location) -> None:
    if is_remote(loc):
        try:
            loc.fs.rm(loc.key, recursive=True)
        except FileNotFoundError:
            pass
        loc.fs.invalidate_cache(loc.key)
    else:
        shutil.rmtree(loc)


def publish_tree(src: Path, dest: Location, last: str = "zarr.json") -> bool:
    """Copy the local folder `src` to `dest`, creating `dest/last` last and only if absent.

    Returns False when `dest/last` already existed (someone else published first; nothing of theirs is
    replaced but identical sub-objects). Local destinations are not published this way (os.replace).
    """
    files = sorted(p for p in Path(src).rglob("*") if p.is_file())
    for f in files:
        rel = f.relative_to(src).as_posix()
        if rel != last:
            (dest / rel).write_bytes(f.read_bytes())
    return create_exclusive(dest / last, (Path(src) / last).read_bytes())


# ---- zarr --------------------------------------------------------------------------------------------
def zarr_store(loc: Location, *, read_only: bool):
    """What zarr.open_group takes for `loc`: the local path as before, or zarr's FsspecStore."""
    if not is_remote(loc):
        return str(loc)
    try:
        from zarr.storage import FsspecStore
    except ImportError as e:
        raise CacheError(f"{loc}: zarr without FsspecStore ({e})", hint=CLOUD_HINT) from None
    return FsspecStore.from_url(loc.url, read_only=read_only)


# ---- reads of shard files --------------------------------------------------------------------------------
def chunk_cache_dir(explicit: "str | os.PathLike | None" = None) -> Path | None:
    """The local chunk cache folder: `explicit`, else $PROBEKIT_CHUNK_CACHE, else None (fetch into memory)."""
    d = explicit if explicit is not None else os.environ.get("PROBEKIT_CHUNK_CACHE") or None
    return None if d is None else Path(d).expanduser()


def fetch(loc: ObjectPath, cache: Path | None = None):
    """(buffer, stat) of the whole object at `loc`, or (None, None) when it does not exist.

    The object is read with parallel range requests of `PART` bytes. With `cache`, it is kept in a local
    file named by the URL, ETag and size (written atomically) and the buffer is a read-only memory map
    of that file; a second read of the same object version costs one HEAD request.
    """
    try:
        st = loc.stat()
    except FileNotFoundError:
        return None, None
    if cache is not None:
        local = _cache_file(loc, st, cache)
        if not (local.is_file() and local.stat().st_size == st.st_size):
            local.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".tmp", dir=local.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    for part in _ranges(loc, st.st_size):
                        f.write(part)
                os.replace(tmp, local)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        import mmap

        with open(local, "rb") as f:
            if st.st_size == 0:
                return b"", st
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), st
    parts = _ranges(loc, st.st_size)
    return (parts[0] if len(parts) == 1 else b"".join(parts)), st


def _cache_file(loc: ObjectPath, st, cache: Path) -> Path:
    ident = hashlib.sha256(f"{loc.url}\0{st.etag}\0{st.st_size}".encode()).hexdigest()[:40]
    return Path(cache) / ident[:2] / f"{ident}.bin"


def evict(loc: ObjectPath, cache: Path) -> None:
    """Drop the chunk cache's copy of the current version of `loc` (it failed its check)."""
    try:
        _cache_file(loc, loc.stat(), cache).unlink(missing_ok=True)
    except FileNotFoundError:
        pass


def _ranges(loc: ObjectPath, size: int) -> list[bytes]:
    if size == 0:
        return [b""]
    starts = list(range(0, size, PART))
    ends = [min(size, s + PART) for s in starts]
    parts = loc.fs.cat_ranges([loc.key] * len(starts), starts, ends)  # concurrent on async drivers (s3fs)
    for p in parts:
        if isinstance(p, BaseException):
            raise p
    got = sum(len(p) for p in parts)
    if got != size:
        raise OSError(f"{loc}: read {got} of {size} bytes (object changed while being read?)")
    return parts


# ---- sizes ----------------------------------------------------------------------------------------------
def free_bytes(loc: Location) -> float:
    """Free bytes where `loc` is (object stores: unlimited as far as probekit can tell)."""
    if is_remote(loc):
        return math.inf
    p = Path(loc)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def tree_bytes(loc: Location) -> int:
    """Bytes of every file under `loc`."""
    if is_remote(loc):
        try:
            return int(loc.fs.du(loc.key, total=True))
        except FileNotFoundError:
            return 0
    total = 0
    for root, _, files in os.walk(loc):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total

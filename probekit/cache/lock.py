"""Exclusive extraction locks of a store.

Local stores: filelock (released by the OS if the holder dies). Stores on an object store (any fsspec
URL, see probekit.cache.fs): lease objects, because there is no POSIX lock there.

A lease is an object `<store>/.probekit/lock-<i>-of-<n>` holding {owner, host, pid, renewed, ttl}.

* Taking it is a conditional create (S3 `If-None-Match: *`): of several processes exactly one gets it.
* Its holder renews it every ttl/3 with a compare-and-swap on its ETag (S3 `If-Match`); a renewal that
  fails means the lease was taken over, and the holder stops before its next shard commit
  (`ExtractionLock.check`, called by `TokenStore.write_shard`).
* A lease is stale when it was not renewed for `ttl` seconds (`$PROBEKIT_LEASE_TTL`, default 120; the
  hosts' clocks must agree to well within it), or at once when its holder is a dead process on this
  host. A stale lease is taken over by a compare-and-swap on the ETag seen stale: of several takers
  exactly one wins.

What is not guaranteed: a holder paused for longer than the ttl (SIGSTOP, a VM freeze) may still
write the shard it was writing when it resumes, after another process took over. Shard contents
are deterministic (same bytes from any run of the same plan) and a shard is committed only by its
completion record, so this costs duplicated work, not wrong tokens. On fsspec drivers without
conditional writes the lease is best effort (probekit.cache.fs).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path

from probekit.cache import fs
from probekit.cache.layout import META
from probekit.errors import CacheError

__all__ = ["ExtractionLock", "Lease", "lease_ttl", "mutex"]


def lease_ttl() -> float:
    try:
        return max(1.0, float(os.environ.get("PROBEKIT_LEASE_TTL", "120")))
    except ValueError:
        raise CacheError(f"PROBEKIT_LEASE_TTL={os.environ['PROBEKIT_LEASE_TTL']!r} is not a number of seconds",
                         hint="unset it (default 120) or give seconds, e.g. PROBEKIT_LEASE_TTL=60") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class Lease:
    """A lease object on an object store (see the module docstring)."""

    def __init__(self, obj: fs.ObjectPath, ttl: float | None = None):
        self.obj = obj
        self.ttl = lease_ttl() if ttl is None else float(ttl)
        self.owner = uuid.uuid4().hex
        self.etag: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "renewed": time.time(), "ttl": self.ttl}, sort_keys=True).encode()

    @staticmethod
    def _parse(data: bytes) -> dict | None:
        try:
            d = json.loads(data)
            return d if isinstance(d, dict) else None
        except ValueError:
            return None

    def stale(self, d: dict | None) -> bool:
        if d is None:  # unreadable: stale once its ttl passed since it was written
            try:
                return time.time() > self.obj.stat().st_mtime + self.ttl
            except FileNotFoundError:
                return True
        try:
            if d.get("host") == socket.gethostname() and not _alive(int(d["pid"])):
                return True
            return time.time() > float(d["renewed"]) + float(d.get("ttl", self.ttl))
        except (KeyError, TypeError, ValueError):
            return True

    def live_holder(self) -> dict | None:
        """The holder's info when someone holds this lease (not stale), else None."""
        got = fs.read_etag(self.obj)
        if got is None:
            return None
        d = self._parse(got[0])
        return None if self.stale(d) else (d or {})

    def try_acquire(self) -> bool:
        for _ in range(3):
            if fs.create_exclusive(self.obj, self._body()):
                break
            got = fs.read_etag(self.obj)
            if got is None:
                continue  # released between our create and our read: try again
            data, etag = got
            if not self.stale(self._parse(data)):
                return False
            if fs.replace_if(self.obj, self._body(), etag):
                break
            return False  # another process took the stale lease over first
        else:
            return False
        self.etag = self.obj.stat().etag
        self._thread = threading.Thread(target=self._renew, daemon=True, name="probekit-lease")
        self._thread.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not fs.replace_if(self.obj, self._body(), self.etag):
                    self.lost = True
                    return
                self.etag = self.obj.stat().etag
            except Exception:  # noqa: BLE001 - a failed renewal is retried; the ttl leaves room for two more
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.etag is not None and not self.lost:
            got = fs.read_etag(self.obj)
            if got is not None and (self._parse(got[0]) or {}).get("owner") == self.owner:
                self.obj.unlink(missing_ok=True)
        self.etag = None

    @staticmethod
    def describe(d: dict | None) -> str:
        try:
            return f"pid {d['pid']} on {d['host']}, lease renewed {time.time() - float(d['renewed']):.0f} s ago"
        except (KeyError, TypeError, ValueError):
            return "another process"


class ExtractionLock:
    """Exclusive lock for extracting (a shard plan of) one store.

    Runs with the same `i/n` exclude each other; an unsharded run (0/1) excludes everything. Plans with
    another `n` are refused while any of their locks is held, so no two processes write one shard.
    """

    def __init__(self, path, shard: tuple[int, int]):
        self.path = fs.location(path)
        self.shard = shard
        self._lock = None
        self._lease: Lease | None = None

    def _file(self, i: int, n: int):
        return self.path / META / f"lock-{i}-of-{n}"

    def check(self) -> None:
        """Raise CacheError when this lock's lease was taken over (object stores; see the module docstring)."""
        if self._lease is not None and self._lease.lost:
            raise CacheError(f"{self.path}: lost the extraction lease {self._lease.obj.name} to another process",
                             hint="another run took it over (this one was paused past its ttl); let that run finish")

    def __enter__(self) -> "ExtractionLock":
        if fs.is_remote(self.path):
            return self._enter_lease()
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
                    hint="use the same shard i/n (shard=, CLI --shard) for every process of one extraction",
                ) from None
        own.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        self._lock = lock
        return self

    def _enter_lease(self) -> "ExtractionLock":
        # the same protocol as the file locks: take our own lease first, then look at the others, so
        # two overlapping plans never both go on (at worst both stop)
        i, n = self.shard
        own = Lease(self._file(i, n))
        if not own.try_acquire():
            raise CacheError(
                f"{self.path} is already being extracted ({Lease.describe(own.live_holder())})",
                hint="wait for that run to finish, or stop it; a rerun afterwards resumes where it stopped "
                "(a killed run's lease lapses after PROBEKIT_LEASE_TTL seconds)",
            )
        for other in (self.path / META).glob("lock-*-of-*"):
            m = re.match(r"lock-(\d+)-of-(\d+)$", other.name)
            if not m or other.name == own.obj.name or (int(m.group(2)) == n and n > 1):
                continue
            holder = Lease(other).live_holder()
            if holder is not None:
                own.release()
                raise CacheError(
                    f"{self.path} is being extracted with another shard plan ({Lease.describe(holder)}); "
                    f"this run uses shard {i}/{n}",
                    hint="use the same shard i/n (shard=, CLI --shard) for every process of one extraction",
                )
        self._lease = own
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
        if self._lease is not None:
            self._lease.release()
            self._lease = None


@contextlib.contextmanager
def mutex(loc, *, timeout: float = 600):
    """A short critical section keyed by `loc`: a FileLock on local stores, a lease object on object stores."""
    loc = fs.location(loc)
    if not fs.is_remote(loc):
        from filelock import FileLock

        with FileLock(str(loc), timeout=timeout):
            yield
        return
    lease = Lease(loc)
    t0 = time.time()
    while not lease.try_acquire():
        if time.time() - t0 > timeout:
            raise CacheError(f"timed out waiting for {loc}", hint="another process holds it")
        time.sleep(0.2)
    try:
        yield
    finally:
        lease.release()

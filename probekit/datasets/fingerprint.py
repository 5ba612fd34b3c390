"""Content fingerprints of audio files: what makes a token cache stale when the audio changes.

`Dataset.fingerprint(split)` hashes, per clip, its id, labels, segment bounds and a digest of the file's
*content* (`content_digests`). Two modes, picked by `$PROBEKIT_FINGERPRINT`:

* `full` (default): blake2b over every byte of every file (read in 1 MiB blocks). Any change to the
  audio, however small and whatever the file size, changes the fingerprint.
* `sampled`: blake2b over the file size plus three 64 KiB blocks (start, middle, end). For corpora too
  large to read at every run (AudioSet). Catches re-encodings, truncations, appended data and any
  rewrite that touches one of those blocks (loudness normalisation, denoising, a new recording);
  an edit confined to bytes between the sampled blocks of a file above 192 KiB goes unnoticed.
  Files of 192 KiB or less are read whole, so both modes give them the same digest.

A persistent memo (SQLite, `<cache dir>/.fingerprints.sqlite`, or `$PROBEKIT_FINGERPRINT_MEMO`; `off`
disables it) maps (absolute path, and the device, inode, size, mtime_ns and ctime_ns of the file it
leads to) to the digest, so a rerun
over unchanged files costs one stat() each. ctime is in the key because tools that restore mtime
(`cp -p`, `rsync -t`, `touch -r`) cannot restore it. Files modified in the last 2 s are hashed but not
memoised (their timestamp may not yet tell a later same-second write apart). The memo is an
optimisation only: when it cannot be opened or written, every file is hashed.

Fingerprints carry their version (`v2-...`); stores keyed by an older fingerprint (16 bare hex digits:
ids, labels and file sizes only) are stale and are re-extracted (`is_current`).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from probekit.errors import ConfigError

__all__ = [
    "FINGERPRINT_VERSION",
    "MODES",
    "content_digests",
    "file_digest",
    "fingerprint_mode",
    "fingerprint_version",
    "is_current",
]

#: Bumped whenever what a fingerprint covers changes; part of every fingerprint string.
FINGERPRINT_VERSION = 2
MODES = ("full", "sampled")
MODE_ENV = "PROBEKIT_FINGERPRINT"
MEMO_ENV = "PROBEKIT_FINGERPRINT_MEMO"
BLOCK = 1 << 20  # read size of the full hash
SAMPLE = 64 << 10  # one sampled block
_RECENT_S = 2.0  # files younger than this are not memoised


def fingerprint_mode(mode: str | None = None) -> str:
    """`mode`, else `$PROBEKIT_FINGERPRINT`, else "full"; ConfigError naming the value when unknown."""
    m = (mode if mode is not None else os.environ.get(MODE_ENV, "")).strip().lower() or "full"
    if m not in MODES:
        src = f"${MODE_ENV}" if mode is None else "fingerprint mode"
        raise ConfigError(f"{src} is {m!r}", hint=f"use one of: {', '.join(MODES)}")
    return m


def fingerprint_version(fp: str) -> int:
    """The version of a stored fingerprint string (1: the old ids/labels/sizes hash without a prefix)."""
    if fp.startswith("v") and "-" in fp:
        head = fp[1 : fp.index("-")]
        if head.isdigit():
            return int(head)
    return 1


def is_current(fp: str) -> bool:
    """Whether a store's fingerprint was made the way this probekit makes them (else: stale, re-extract)."""
    return fingerprint_version(fp) == FINGERPRINT_VERSION


def _hash_full(fh) -> str:
    h = hashlib.blake2b(digest_size=16)
    while block := fh.read(BLOCK):
        h.update(block)
    return h.hexdigest()


def file_digest(path: str | os.PathLike, mode: str = "full") -> str:
    """Content digest of one regular file (see the module docstring for what each mode covers).

    Raises OSError when the file cannot be read; `content_digests` turns that into a marker.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if mode == "full" or size <= 3 * SAMPLE:
            return _hash_full(fh)
        h = hashlib.blake2b(digest_size=16, person=b"pk-sampled")
        h.update(size.to_bytes(8, "little"))
        for start in (0, (size - SAMPLE) // 2, size - SAMPLE):
            fh.seek(start)
            h.update(fh.read(SAMPLE))
        return "s" + h.hexdigest()


def _kind(mode_bits: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "char-device"), (stat.S_ISBLK, "block-device")):  # fmt: skip
        if test(mode_bits):
            return name
    return "special"


def _memo_path() -> Path | None:
    env = os.environ.get(MEMO_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none", "no") else Path(env).expanduser()
    from probekit._paths import token_cache_dir as default_cache_dir

    return default_cache_dir() / ".fingerprints.sqlite"


class _Memo:
    """The SQLite memo; every failure degrades to 'not memoised' (the digest is then just computed)."""

    def __init__(self, path: Path | None):
        self.db = None
        if path is None:
            return
        for attempt in (0, 1):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(str(path), timeout=10)
                db.execute(
                    "CREATE TABLE IF NOT EXISTS memo (path TEXT, mode TEXT, dev INT, ino INT, size INT,"
                    " mtime_ns INT, ctime_ns INT, digest TEXT, PRIMARY KEY (path, mode))"
                )
                self.db = db
                return
            except sqlite3.DatabaseError:  # not a database (damaged): start a new one, once
                if attempt == 0:
                    try:
                        path.unlink()
                        continue
                    except OSError:
                        pass
                return
            except (sqlite3.Error, OSError):
                return

    def lookup(self, paths: list[str], mode: str) -> dict[str, tuple]:
        """path -> (dev, ino, size, mtime_ns, ctime_ns, digest) for the memoised ones among `paths`."""
        if self.db is None:
            return {}
        found: dict[str, tuple] = {}
        try:
            for i in range(0, len(paths), 900):  # under SQLite's bound-parameter limit
                chunk = paths[i : i + 900]
                marks = ",".join("?" * len(chunk))
                for row in self.db.execute(
                    "SELECT path, dev, ino, size, mtime_ns, ctime_ns, digest FROM memo"
                    f" WHERE mode=? AND path IN ({marks})",
                    (mode, *chunk),
                ):
                    found[row[0]] = tuple(row[1:])
        except sqlite3.Error:
            self.db = None
            return {}
        return found

    def put(self, rows: list[tuple]) -> None:
        if self.db is None or not rows:
            return
        try:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO memo VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.Error:
            pass

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


def content_digests(paths: Sequence[str | os.PathLike], mode: str | None = None) -> list[str]:
    """One content digest per path (`mode`: see `fingerprint_mode`), memoised across runs.

    Files that cannot be hashed get a marker instead, so the fingerprint still changes when they
    become readable: `missing`, `not-regular:<kind>` (a FIFO is never opened: reading it would block),
    `unreadable:<errno name>` (no read permission, I/O error).
    """
    mode = fingerprint_mode(mode)
    names = [os.path.abspath(p) for p in paths]  # the key; dev/ino/size/times below identify the content
    memo = _Memo(_memo_path() if names else None)
    out: list[str] = []
    new: list[tuple] = []
    now = time.time()
    try:
        known = memo.lookup(names, mode)
        for name in names:
            try:
                st = os.stat(name)
            except FileNotFoundError:
                out.append("missing")
                continue
            except OSError as e:
                out.append(f"unreadable:{_errno_name(e)}")
                continue
            if not stat.S_ISREG(st.st_mode):
                out.append(f"not-regular:{_kind(st.st_mode)}")
                continue
            ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            hit = known.get(name)
            if hit is not None and hit[:5] == ident:
                out.append(hit[5])
                continue
            try:
                digest = file_digest(name, mode)
                after = os.stat(name)
            except OSError as e:
                out.append(f"unreadable:{_errno_name(e)}")
                continue
            unchanged = (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == ident[2:]
            settled = now - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 > _RECENT_S
            if unchanged and settled:
                new.append((name, mode, *ident, digest))
            out.append(digest)
        memo.put(new)
    finally:
        memo.close()
    return out


def _errno_name(e: OSError) -> str:
    import errno

    return errno.errorcode.get(e.errno or 0, type(e).__name__)

"""Where records live and how they are read, written, loaded and filtered.

One file per record key (backbone + weights, dataset identity, split, probe, protocol)::

    results/<backbone>--<sha12|random-seedN>/<dataset>[--<dataset_id>]/<split>/<probe>--<protocol>.json

A later run of the same key replaces the file, written atomically with the usual 0644 mode (teammates
share results directories). The directory defaults to ``./results``; ``PROBEKIT_RESULTS`` or an
explicit argument moves it. Published figures are not here: see `probekit.results.reported`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from probekit._io import atomic_write_text
from probekit.results.schema import RecordError, ResultRecord, validate

__all__ = ["RESULTS_ENV", "dataset_identity", "filter_records", "load_records", "read_record", "results_dir",
           "write_record"]

RESULTS_ENV = "PROBEKIT_RESULTS"
MANIFEST_PREFIX = "manifest:"


def results_dir(path: str | os.PathLike | None = None) -> Path:
    """The results directory: `path`, else $PROBEKIT_RESULTS, else ./results (a folder or an fsspec URL)."""
    if path is not None:
        return record_location(path)
    env = os.environ.get(RESULTS_ENV)
    return record_location(env) if env else Path("results")


def record_location(p: str | os.PathLike) -> Path:
    """A folder, or an fsspec URL (s3://bucket/results: records read and written through fsspec, like
    token stores; see probekit.cache.fs). The cache's fs module is imported only for URLs."""
    mangled = isinstance(p, Path) and not p.is_absolute() and p.parts and p.parts[0].endswith(":")  # s3:// as a Path
    if "://" in str(p) or mangled:  # (an ObjectPath prints as its URL)
        from probekit.cache.fs import location

        return location(p)
    return Path(p).expanduser()


def dataset_identity(dataset: Any) -> str | None:
    """`ResultRecord.dataset_id` for a `probekit.datasets.Dataset`: None for a registered dataset (its name
    identifies it), else 12 hex digits of the manifest's resolved location and the content fingerprint of
    every split, so two projects' `manifest:m.csv` never share a record file or a leaderboard cell."""
    name = str(getattr(dataset, "name", ""))
    # user data (manifest:, hear:, folder:, events:) carries its resolved location in spec.source
    if not name.startswith(MANIFEST_PREFIX) and not getattr(getattr(dataset, "spec", None), "source", ""):
        return None
    # Dataset.identity holds the manifest's resolved location; the fingerprints add its content.
    prints = [[s, dataset.fingerprint(s)] for s in dataset.spec.splits]
    blob = json.dumps([dataset.identity, prints])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def write_record(record: ResultRecord, root: str | os.PathLike | None = None) -> Path:
    """Validate and write `record` atomically below `root` (see `results_dir`); returns the file path."""
    record = validate(json.loads(record.to_json()), where=f"record for {record.backbone.label}/{record.dataset}")
    path = results_dir(root) / record.relpath()
    try:
        if isinstance(path, Path):
            atomic_write_text(path, record.to_json())  # never a half-written record, even on a crash
        else:  # an object store: one PUT, as atomic for readers
            path.write_bytes(record.to_json().encode("utf-8"))
    except OSError as e:
        raise RecordError(f"{path}: cannot write result record: {e.strerror or e}",
                          hint="check the results directory (--results-dir / PROBEKIT_RESULTS)") from None
    return path


@contextlib.contextmanager
def beside_record(path, names: Sequence[str]):
    """A local stand-in for a record's path while files named `names` are written or removed beside it.

    Local records: `path` itself. Records on an object store: a path in a temporary folder; on exit each
    of `names` present there is uploaded beside the record, and each absent one is deleted there.
    """
    if isinstance(path, Path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="probekit-record-") as d:
        yield Path(d) / path.name
        for name in names:
            local, remote = Path(d) / name, path.parent / name
            if local.is_file():
                remote.write_bytes(local.read_bytes())
            else:
                remote.unlink(missing_ok=True)


def read_record(path: str | os.PathLike) -> ResultRecord:
    """Read and validate one record file; RecordError names the file and what is wrong with it."""
    path = record_location(path) if not isinstance(path, Path) else path
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RecordError(f"{path}: cannot read result record: {e.strerror or e}") from None
    record = ResultRecord.from_json(raw, where=str(path))
    record._path = path
    return record


def read_records(paths: Iterable[Path], *, on_error: Literal["raise", "warn"] = "raise") -> list[ResultRecord]:
    """`read_record` of each path; with `on_error="warn"` bad files are skipped and named in one warning."""
    out: list[ResultRecord] = []
    bad: list[str] = []
    for p in paths:
        try:
            out.append(read_record(p))
        except RecordError as e:
            if on_error == "raise":
                raise
            bad.append(str(e))
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        warnings.warn(f"skipped {len(bad)} unreadable result record(s): {shown}", UserWarning, stacklevel=3)
    return out


def load_records(
    root: str | os.PathLike | None = None,
    *,
    on_error: Literal["raise", "warn"] = "raise",
    include_published: bool = False,
) -> list[ResultRecord]:
    """Every record below `root` (sorted by path). A missing directory is not an error (no runs yet).

    `on_error="warn"` skips files that are not valid records and names them in one `UserWarning` with their
    count (use it after a run that succeeded, so an unrelated broken file does not turn it into a failure).
    Published figures are not included: `probekit.results.reported.published_records()` or
    `leaderboard(..., published=True)`.
    """
    if include_published:
        from probekit.errors import ConfigError

        raise ConfigError("load_records() no longer includes the published figures",
                          hint="use probekit.results.published_records() or leaderboard(..., published=True)")
    if on_error not in ("raise", "warn"):
        raise ValueError(f"on_error must be 'raise' or 'warn', got {on_error!r}")
    base = results_dir(root)
    if not base.is_dir():
        return []
    return read_records(sorted(base.rglob("*.json")), on_error=on_error)


def filter_records(
    records: Iterable[ResultRecord],
    *,
    dataset: str | Sequence[str] | None = None,
    probe: str | Sequence[str] | None = None,
    backbone: str | Sequence[str] | None = None,
    source: Literal["all", "measured", "reported"] = "all",
) -> list[ResultRecord]:
    """Records matching every given filter (a name or a list of names; backbone names match case-insensitively)."""

    def norm(v):
        return None if v is None else {v.lower()} if isinstance(v, str) else {x.lower() for x in v}

    ds, pr, bb = norm(dataset), norm(probe), norm(backbone)
    out = []
    for r in records:
        if ds and r.dataset.lower() not in ds and r.dataset_key.lower() not in ds:
            continue
        if pr and r.probe.lower() not in pr:
            continue
        if bb and r.backbone.name.lower() not in bb and r.backbone.label.lower() not in bb:
            continue
        if source == "measured" and r.reported or source == "reported" and not r.reported:
            continue
        out.append(r)
    return out

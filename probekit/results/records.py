"""Building a result record from per-seed runs (`make_record`).

The record's parts live in one module per job, all re-exported here for the import paths in use:
`probekit.results.schema` (the pydantic models, JSON in and out), `probekit.results.stats` (mean, std,
confidence interval over seeds), `probekit.results.environment` (versions, CPU/GPU, git) and
`probekit.results.store` (paths, read, write, load, filter). Leaderboards are rebuilt from these files,
never kept by hand (the MTEB habit).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import ValidationError

from probekit.results.environment import capture_environment
from probekit.results.schema import (
    MEASURED,
    SCHEMA_VERSION,
    BackboneRef,
    ClipCount,
    Environment,
    RecordError,
    ResultRecord,
    SeedRun,
    Stat,
    Timings,
    TuningSummary,
    describe,
    safe_name,
    validate,
)
from probekit.results.stats import aggregate, aggregate_seeds
from probekit.results.store import (
    RESULTS_ENV,
    dataset_identity,
    filter_records,
    load_records,
    read_record,
    results_dir,
    write_record,
)

__all__ = [
    "MEASURED", "RESULTS_ENV", "SCHEMA_VERSION", "BackboneRef", "ClipCount", "Environment", "RecordError",
    "ResultRecord", "SeedRun", "Stat", "Timings", "TuningSummary", "aggregate", "capture_environment",
    "dataset_identity", "filter_records", "load_records", "make_record", "read_record", "results_dir",
    "validate", "write_record",
]

_safe = safe_name  # the name probekit.api imports
_describe = describe


def make_record(
    *,
    backbone: BackboneRef | Mapping[str, Any],
    dataset: str,
    split: str,
    probe: str,
    protocol: str,
    metric: str,
    seeds: Sequence[SeedRun | Mapping[str, Any]],
    source: str = MEASURED,
    dataset_id: str | None = None,
    class_names: Sequence[str] = (),
    hyperparameters: Mapping[str, Any] | None = None,
    tuning: TuningSummary | Mapping[str, Any] | None = None,
    cache_key: str | None = None,
    clips: Mapping[str, ClipCount | Mapping[str, int]] | None = None,
    timings: Timings | Mapping[str, Any] | None = None,
    environment: Environment | None | Literal["auto"] = "auto",
    date: str | None = None,
    notes: str = "",
) -> ResultRecord:
    """Build and validate a record; aggregates every metric (and per-class score) over the seeds.

    `environment="auto"` captures this machine for measured records (None for reported ones).
    `dataset_id`: see `dataset_identity`; `clips`: per split, ``{"scored": n, "failed": m}``.
    """
    where = f"record {getattr(backbone, 'name', backbone)!r}/{dataset}/{probe}"
    try:
        runs = [SeedRun.model_validate(s.model_dump() if isinstance(s, SeedRun) else s) for s in seeds]
        agg, per_class = aggregate_seeds(runs)
        if environment == "auto":
            environment = capture_environment() if source == MEASURED else None
        return ResultRecord.model_validate(dict(
            schema_version=SCHEMA_VERSION,
            source=source,
            backbone=backbone,
            dataset=dataset,
            dataset_id=dataset_id,
            split=split,
            probe=probe,
            protocol=protocol,
            metric=metric,
            seeds=runs,
            aggregate=agg,
            class_names=list(class_names),
            per_class=per_class,
            hyperparameters=_jsonable(dict(hyperparameters or {})),
            tuning=tuning,
            cache_key=cache_key,
            clips=clips,
            timings=timings or Timings(),
            environment=environment,
            date=date or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            notes=notes,
        ))
    except ValidationError as e:
        raise RecordError(describe(e, where)) from None


def _jsonable(obj: Any) -> Any:
    """Hyperparameters as plain JSON values (tuples -> lists, paths/dtypes/other -> str)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    try:  # numpy scalars
        import numpy as np

        if isinstance(obj, np.generic):
            return _jsonable(obj.item())
    except ImportError:  # pragma: no cover
        pass
    return str(obj)

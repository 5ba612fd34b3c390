"""The result-record schema (version 2): pydantic models, and a record to and from JSON text.

Version 2 added `dataset_id` and `clips` (both optional); version-1 files are read as they are.

A record holds everything needed to rebuild a leaderboard cell and to judge it later: per-seed metrics
and their aggregate (mean, std, 95% confidence interval), per-class scores, the probe's and the
trainer's hyperparameters, the tuning summary, the cache key of the tokens, timings, the clips scored
and failed per split, the hardware and software it ran on, and its `source`: ``"measured"`` for runs
made here, a citation for numbers copied from a paper (the files in ``probekit/data/published``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from probekit.errors import ProbekitError

__all__ = [
    "MEASURED", "SCHEMA_VERSION", "BackboneRef", "ClipCount", "Environment", "RecordError", "ResultRecord",
    "SeedRun", "Stat", "Timings", "TuningSummary", "validate",
]

SCHEMA_VERSION = 2  # 2: dataset_id and clips (probekit 0.1.0 wrote 1; it refuses 2 with "upgrade probekit")
MEASURED = "measured"


class RecordError(ProbekitError):
    """A result record that is malformed, of an unknown schema version, or cannot be read or written."""


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError(f"must be a finite number, got {v}")
    return v


class Stat(BaseModel):
    """Aggregate of one metric over seeds. `ci_*` is the two-sided Student-t interval (None when n < 2)."""

    model_config = ConfigDict(extra="forbid")

    mean: float
    std: float = Field(ge=0.0)
    n: int = Field(ge=1)
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float = Field(0.95, gt=0.0, lt=1.0)

    @field_validator("mean", "std")
    @classmethod
    def _check_finite(cls, v: float) -> float:
        return _finite(v)


class SeedRun(BaseModel):
    """One training seed: its metrics, per-class scores (aligned with `class_names`) and extras
    (e.g. ``gates``: CGP's softmax gate weight per layer; ``layer_scores``: the per-layer sweep)."""

    model_config = ConfigDict(extra="forbid")

    seed: int
    metrics: dict[str, float]
    per_class: dict[str, list[float]] = Field(default_factory=dict)
    extras: dict[str, Any] = Field(default_factory=dict)
    train_s: float | None = None

    @field_validator("metrics")
    @classmethod
    def _check_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("needs at least one metric")
        for k, x in v.items():
            if not math.isfinite(x):
                raise ValueError(f"metric {k!r} must be a finite number, got {x}")
        return v


class BackboneRef(BaseModel):
    """Which weights were probed. `checkpoint_sha256` None with `init_seed` set means random init."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    checkpoint_sha256: str | None = None
    init_seed: int | None = None
    family: str | None = None
    params: int | None = None
    # dataset names seen in (pre)training, copied from the backbone card: flags in-domain cells
    training_data: list[str] = Field(default_factory=list)

    @field_validator("checkpoint_sha256")
    @classmethod
    def _check_sha(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("must be 64 lowercase hex digits (sha256 of the weights file)")
        return v

    @property
    def label(self) -> str:
        """Row label in tables: the name, plus the checkpoint prefix or the init seed."""
        if self.checkpoint_sha256:
            return f"{self.name}@{self.checkpoint_sha256[:8]}"
        if self.init_seed is not None:
            return f"{self.name} (random init, seed {self.init_seed})"
        return self.name

    @property
    def key(self) -> str:
        if self.checkpoint_sha256:
            return f"{self.name}--{self.checkpoint_sha256[:12]}"
        if self.init_seed is not None:
            return f"{self.name}--random-seed{self.init_seed}"
        return self.name


class Timings(BaseModel):
    """Wall-clock seconds. extract: building the token cache (0 when reused); train/eval: all seeds."""

    model_config = ConfigDict(extra="forbid")

    extract_s: float | None = Field(None, ge=0.0)
    train_s: float | None = Field(None, ge=0.0)
    eval_s: float | None = Field(None, ge=0.0)
    cache_reused: bool | None = None


class ClipCount(BaseModel):
    """Clips of one split: scored (used by the probe) and failed (listed but unusable, e.g. unreadable audio)."""

    model_config = ConfigDict(extra="forbid")

    scored: int = Field(ge=0)
    failed: int = Field(0, ge=0)


class Environment(BaseModel):
    """Software and hardware a measured record came from."""

    model_config = ConfigDict(extra="forbid")

    probekit: str
    torch: str | None = None
    python: str
    platform: str
    cpu: str | None = None
    cpu_count: int | None = None
    gpu: str | None = None
    device: str | None = None
    git_revision: str | None = None
    git_dirty: bool | None = None


class TuningSummary(BaseModel):
    """What a tuning study found. Extra keys from probekit.tune are kept as they are."""

    model_config = ConfigDict(extra="allow")

    trials: int = Field(ge=0)
    best_params: dict[str, Any] = Field(default_factory=dict)
    best_value: float | None = None
    search_space: dict[str, Any] = Field(default_factory=dict)
    study: str | None = None
    storage: str | None = None
    validation: str | None = None  # which data scored the trials (never the test split)


class Sampling(BaseModel):
    """How training clips were drawn (probekit.train.sampling) and windowed (probekit.cache.crop)."""

    model_config = ConfigDict(extra="forbid")

    sampler: str = "shuffle"  # shuffle, class_balanced (BAT hsn), label_weighted (BAT as2m)
    replacement: bool | None = None
    epoch_draws: int | None = None  # draws per epoch of a weighted sampler
    source: str | None = None  # the official code it re-derives
    crop: str = "fixed windows"  # training windows: fixed, or a random crop per draw (online only)


class ResultRecord(BaseModel):
    """One probing result (schema version 2). Build with `make_record`; store with `write_record`."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int
    source: str = Field(min_length=1)  # "measured" or a citation of the paper/table a number comes from
    backbone: BackboneRef
    dataset: str = Field(min_length=1)
    # Which data, where the name alone does not say it (user manifests: the resolved CSV location and the
    # content fingerprint, so two projects' `m.csv` never share a record or a leaderboard cell). None for
    # registered datasets, whose name identifies them.
    dataset_id: str | None = Field(None, pattern=r"^[0-9a-f]{8,64}$")
    split: str = Field(min_length=1)
    probe: str = Field(min_length=1)
    protocol: str = Field(min_length=1)
    metric: str = Field(min_length=1)  # the primary metric, a key of `aggregate`
    seeds: list[SeedRun] = Field(min_length=1)
    aggregate: dict[str, Stat]
    class_names: list[str] = Field(default_factory=list)
    per_class: dict[str, list[float]] = Field(default_factory=dict)  # mean over seeds, per class
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    tuning: TuningSummary | None = None
    cache_key: str | None = None
    sampling: Sampling | None = None  # None: not recorded (records before the samplers)
    clips: dict[str, ClipCount] | None = None  # per split: clips scored and failed (None: not recorded)
    timings: Timings = Field(default_factory=Timings)
    environment: Environment | None = None
    date: str
    notes: str = ""

    # The file this record was read from (not part of the JSON): lets the leaderboard name both files of a conflict.
    _path: Path | None = PrivateAttr(default=None)

    @field_validator("schema_version")
    @classmethod
    def _check_version(cls, v: int) -> int:
        if v > SCHEMA_VERSION:
            raise ValueError(
                f"schema version {v} is newer than this probekit understands ({SCHEMA_VERSION}); "
                "upgrade probekit to read it"
            )
        if v < 1:
            raise ValueError(f"unknown schema version {v}")
        return v

    @field_validator("date")
    @classmethod
    def _check_date(cls, v: str) -> str:
        try:
            _dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"must be an ISO-8601 date, got {v!r}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ResultRecord:
        if self.metric not in self.aggregate:
            raise ValueError(f"primary metric {self.metric!r} missing from aggregate (has {sorted(self.aggregate)})")
        n = len(self.class_names)
        for where, table in [("per_class", self.per_class)] + [
            (f"seeds.{i}.per_class", s.per_class) for i, s in enumerate(self.seeds)
        ]:
            for k, scores in table.items():
                if len(scores) != n:
                    raise ValueError(f"{where}.{k} has {len(scores)} scores for {n} class_names")
        seen = [s.seed for s in self.seeds]
        if len(set(seen)) != len(seen):
            raise ValueError(f"duplicate seeds {seen}")
        if self.source != MEASURED and self.environment is not None:
            raise ValueError("a reported (cited) record has no environment; only measured runs do")
        return self

    def __eq__(self, other: object) -> bool:
        # equal content is an equal record, wherever it was read from (pydantic would compare `_path` too)
        if not isinstance(other, ResultRecord):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # mutable model, like pydantic's default

    # ---- conveniences ------------------------------------------------------------------------
    @property
    def reported(self) -> bool:
        """True for numbers copied from a publication (source is a citation)."""
        return self.source != MEASURED

    @property
    def score(self) -> float:
        """Mean of the primary metric over seeds."""
        return self.aggregate[self.metric].mean

    @property
    def dataset_key(self) -> str:
        """The dataset's identity: its name, plus `dataset_id` where the name alone is ambiguous."""
        return f"{self.dataset}#{self.dataset_id}" if self.dataset_id else self.dataset

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """One record per key: (backbone + weights, dataset identity, split, probe, protocol)."""
        return (self.backbone.key, self.dataset_key, self.split, self.probe, self.protocol)

    @property
    def path(self) -> Path | None:
        """The file this record was read from (None for records built in memory)."""
        return self._path

    def relpath(self) -> Path:
        """Path of this record below a results directory (one file per `key`)::

            <backbone>--<sha12|random-seedN>/<dataset>[--<dataset_id>]/<split>/<probe>--<protocol>.json
        """
        ds = safe_name(self.dataset) + (f"--{self.dataset_id}" if self.dataset_id else "")
        return (
            Path(safe_name(self.backbone.key))
            / ds
            / safe_name(self.split)
            / f"{safe_name(self.probe)}--{safe_name(self.protocol)}.json"
        )

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str = "record") -> ResultRecord:
        """Parse and validate JSON text; RecordError names `where` and what is wrong (never another error)."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RecordError(f"{where}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})",
                                  hint="a result record is JSON written by probekit; restore or delete this file") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RecordError(f"{where}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        except RecursionError:
            raise RecordError(f"{where}: not a result record (JSON nested too deeply to read)",
                              hint="restore or delete this file") from None
        return validate(data, where=where)


def safe_name(name: str) -> str:
    """A file-name-safe form of `name`; names that had to change get a short hash so they stay distinct."""
    clean = re.sub(r"[^A-Za-z0-9._=+-]+", "_", name).strip("._") or "_"
    if clean != name:
        clean = f"{clean[:80]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return clean


def describe(err: ValidationError, where: str) -> str:
    """One line naming `where` and up to five fields at fault."""
    parts = []
    for e in err.errors()[:5]:
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        parts.append(f"field {loc!r}: {e['msg']}")
    more = f" (+{err.error_count() - 5} more)" if err.error_count() > 5 else ""
    return f"{where}: invalid result record: " + "; ".join(parts) + more


def validate(data: Mapping[str, Any], *, where: str = "record") -> ResultRecord:
    """Validate a decoded JSON object as a record; RecordError names `where` and the field."""
    if not isinstance(data, Mapping):
        raise RecordError(f"{where}: a result record must be a JSON object, got {type(data).__name__}")
    if "schema_version" not in data:
        raise RecordError(
            f"{where}: field 'schema_version' is missing",
            hint="not a probekit result record? records carry schema_version",
        )
    try:
        return ResultRecord.model_validate(data)
    except ValidationError as e:
        raise RecordError(describe(e, where)) from None
    except RecursionError:
        raise RecordError(f"{where}: not a result record (nested too deeply to validate)") from None

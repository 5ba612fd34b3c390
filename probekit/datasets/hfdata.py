"""`hf:` datasets: Hugging Face `datasets` (Hub or `save_to_disk` folders) with an Audio column and labels.

Names:

* `hf:owner/name[:config]`: `datasets.load_dataset(owner/name, config)` (the Hub, or the HF cache offline).
* `hf:/path/to/folder`: a `save_to_disk` folder (DatasetDict or Dataset) via `datasets.load_from_disk`; a
  folder of data files (a cloned Hub repository) goes through `load_dataset(folder, config)` instead.
* Options as keywords (`get_dataset("hf:...", label_column="labels")`) or, on the command line, after `?`:
  `hf:owner/name:config?label_column=labels&split.test=test_5s&limit=200`.

The schema (`SCHEMA_OPTIONS`): `audio_column` (default: the one `Audio` column; a string column of file
paths also works), `label_column` (default: `label`/`labels`, else the one `ClassLabel` or
`Sequence(ClassLabel)` column), `multilabel` (default: from the label feature), `splits` (probekit split ->
HF split, e.g. `{"test": "test_5s"}` or `split.test=test_5s`; default: every HF split under its own name),
`limit` (first N rows per split), `streaming`, `revision`, `audio_dir`.

Class names come from the label feature (`ClassLabel.names`). Audio is never decoded by `datasets`: the
column is read as `Audio(decode=False)` ({bytes, path}) and decoded by probekit's own loader
(`probekit.audio.io.load_audio`), so every error names the item. A row whose audio is a local file is read
in place; embedded bytes (Parquet/Arrow) are written once, unchanged, to
`<audio_dir>/<split>/row<N>_<name>_<digest><ext>` (default `$PROBEKIT_HF_AUDIO`, else
`<user cache>/hf-audio/<dataset digest>`) -- the file name carries the split, the row and a digest of the
bytes, so an error from the loader names the row, and the content fingerprint (`Dataset.fingerprint`)
hashes exactly the dataset's bytes. Clip ids are `<hf split>/<row>` (stable for a given dataset version).

Streaming (`streaming=True`, Hub names only): rows are read once, in order, without downloading the whole
dataset (other splits and configs, the Arrow cache). What it supports: rows that carry their audio bytes
(Parquet/WebDataset datasets on the Hub), `limit=`, every probekit stage afterwards. What it cannot do, and
refuses with one line: a `save_to_disk` folder (already local), rows whose audio is only a remote path
(no bytes: load without streaming), and a split whose audio does not fit the free space under `audio_dir`
(extraction decodes clips by position in worker processes and the content fingerprint hashes every clip
before a store is keyed, so each extracted split's encoded audio must be on disk once; the error names the
split and the rows written, use `limit=` or another `audio_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probekit.datasets._common import check_options
from probekit.datasets.base import Clip, Dataset, DatasetSpec
from probekit.errors import ConfigError, DatasetError

PREFIX = "hf:"
EXTRA_HINT = "pip install 'probekit[datasets]'"
AUDIO_DIR_ENV = "PROBEKIT_HF_AUDIO"
SCHEMA_OPTIONS = ("audio_column", "label_column", "multilabel", "splits", "limit", "streaming", "revision",
                  "audio_dir", "text_column")  # fmt: skip
#: string columns read as transcripts (an ASR dataset) when no ClassLabel column exists and none is named
TEXT_COLUMNS = ("text", "transcript", "transcription", "sentence")
#: Hugging Face `librispeech_asr` "clean" -> probekit splits, as the BAT code loads it (train.100 / validation / test)
LIBRISPEECH_SPLITS = {"train": "train.100", "valid": "validation", "test": "test"}
LAYOUT = ("hf:owner/name[:config] (the Hub / HF cache) or hf:/path (a datasets.save_to_disk folder) with an "
          "Audio column and a ClassLabel or Sequence(ClassLabel) label column")  # fmt: skip
#: bytes kept free under audio_dir while materialising (the loader refuses a split that would eat them)
DISK_RESERVE = 256 << 20
_BATCH = 256


def require_datasets():
    """The `datasets` module, or a ConfigError naming the extra."""
    try:
        import datasets
    except ImportError:
        raise ConfigError("hf: datasets need the 'datasets' library, which is not installed",
                          hint=EXTRA_HINT) from None  # fmt: skip
    return datasets


# ---- names ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """What an `hf:` name points at: a save_to_disk folder (`saved`) or a load_dataset path + config."""

    text: str  # the name without prefix and query
    saved: Path | None = None
    path: str | None = None  # load_dataset's `path`: owner/name or a local folder of data files
    config: str | None = None

    @property
    def identity(self) -> str:
        if self.saved is not None:
            return str(self.saved.resolve())
        return f"{self.path}:{self.config or ''}"


def _is_saved(p: Path) -> bool:
    return (p / "dataset_dict.json").is_file() or (p / "state.json").is_file()


def parse_name(name: str) -> tuple[Source, dict[str, Any]]:
    """(Source, options written after `?`) of an `hf:` name."""
    body = name[len(PREFIX):] if name.startswith(PREFIX) else name
    body, _, query = body.partition("?")
    body = body.strip()
    if not body:
        raise DatasetError(f"{name!r} names no dataset", hint="write hf:owner/name[:config] or hf:/path/to/saved")
    options = _parse_query(name, query)
    local = Path(body).expanduser()
    looks_local = body.startswith(("/", ".", "~")) or local.exists()
    if looks_local:
        if local.is_dir():
            if _is_saved(local):
                return Source(body, saved=local), options
            return Source(body, path=str(local)), options
        head, sep, config = body.rpartition(":")
        if sep and Path(head).expanduser().is_dir():
            return Source(body, path=str(Path(head).expanduser()), config=config or None), options
        raise DatasetError(f"{name}: folder {local} not found",
                           hint="give a datasets.save_to_disk folder, or hf:owner/name[:config] for the Hub")
    repo, sep, config = body.partition(":")
    if repo.count("/") > 1 or not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", repo):
        raise DatasetError(f"{name}: {repo!r} is not a Hub dataset name",
                           hint="write hf:owner/name[:config], or hf:/path for a save_to_disk folder")
    return Source(body, path=repo, config=config or None), options


def _parse_query(name: str, query: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    splits: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{name}: option {item!r} is not KEY=VALUE", hint="e.g. ?label_column=labels")
        if key.startswith("split."):
            splits[key[len("split."):]] = value
        else:
            out[key] = value
    if splits:
        out["splits"] = splits
    return out


def _bool(name: str, key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: {key}={value!r} is not a boolean", hint=f"{key}=true or {key}=false")


def _splits_option(name: str, value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, str):  # "train=train,test=test_5s"
        pairs = [p.partition("=") for p in value.split(",") if p.strip()]
        if not pairs or any(not sep for _, sep, _ in pairs):
            raise ConfigError(f"{name}: splits={value!r} is not NAME=HF_SPLIT[,...]", hint="e.g. splits=test=test_5s")
        return {a.strip(): b.strip() for a, _, b in pairs}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    raise ConfigError(f"{name}: splits must map probekit split -> HF split, got {type(value).__name__}")


# ---- loading ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet(datasets):
    """No `datasets` progress bars while probekit reads (its own bars and messages say what happens)."""
    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def _short(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return msg if len(msg) < 200 else msg[:197] + "..."


def load(name: str, src: Source, *, streaming: bool = False, revision: str | None = None) -> dict[str, Any]:
    """{HF split: Dataset or IterableDataset}; DatasetError with one line when it cannot be loaded."""
    datasets = require_datasets()
    with _quiet(datasets):
        if src.saved is not None:
            if streaming:
                raise ConfigError(f"{name}: streaming reads from the Hub; a save_to_disk folder is already local",
                                  hint="drop streaming=")  # fmt: skip
            try:
                obj = datasets.load_from_disk(str(src.saved))
            except Exception as e:  # datasets raises FileNotFoundError / ValueError / ArrowInvalid by version
                raise DatasetError(f"{name}: not a readable save_to_disk folder ({_short(e)})",
                                   hint="write it with datasets' save_to_disk, or check the files") from None
        else:
            try:
                obj = datasets.load_dataset(src.path, src.config, revision=revision, streaming=streaming)
            except ValueError as e:
                text = str(e)
                if src.config and ("BuilderConfig" in text or "config" in text.lower()):
                    known = re.findall(r"\[([^\]]*)\]", text)
                    raise DatasetError(f"{name}: the dataset has no config {src.config!r}",
                                       hint=f"use one of: {known[-1] if known else 'see its dataset card'}") from None
                raise DatasetError(f"{name}: cannot load ({_short(e)})") from None
            except Exception as e:  # offline, unknown repo, network, unsupported loading script
                offline = bool(getattr(datasets.config, "HF_HUB_OFFLINE", False)) or os.environ.get(
                    "HF_DATASETS_OFFLINE", "") not in ("", "0")
                why = "offline ($HF_DATASETS_OFFLINE) and not in the HF cache" if offline else _short(e)
                raise DatasetError(
                    f"{name}: cannot load {src.path!r}{f' config {src.config!r}' if src.config else ''} ({why})",
                    hint="check the name on the Hub; or save_to_disk it and use hf:/path/to/folder",
                ) from None
    if isinstance(obj, (datasets.Dataset, datasets.IterableDataset)):
        return {"train": obj}
    return dict(obj)


def _feature_kind(feature) -> str:
    """'audio', 'path' (string), 'label' (ClassLabel), 'labels' (a sequence of ClassLabel) or its type name."""
    import datasets

    if isinstance(feature, datasets.Audio):
        return "audio"
    if isinstance(feature, datasets.ClassLabel):
        return "label"
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return "path"
    inner = getattr(feature, "feature", None)
    if inner is not None and isinstance(inner, datasets.ClassLabel) and not isinstance(feature, dict):
        return "labels"
    return type(feature).__name__ + (f"({feature.dtype})" if hasattr(feature, "dtype") else "")


def _describe(feature) -> str:
    return " ".join(repr(feature).split())[:120]


@dataclass(frozen=True)
class Schema:
    audio_column: str
    label_column: str
    multilabel: bool
    classes: tuple[str, ...]
    audio_is_path: bool  # a string column of file paths instead of an Audio column


def resolve_schema(name: str, features, *, audio_column: str | None = None, label_column: str | None = None,
                   multilabel: bool | None = None, where: str = "") -> Schema:
    """Pick and check the audio and label columns of `features` (one line naming the column when wrong)."""
    cols = list(features)
    at = f" (split {where!r})" if where else ""
    kinds = {c: _feature_kind(features[c]) for c in cols}
    audio_column, audio_is_path = _audio_column(name, features, audio_column, where)
    if label_column is None:
        named = [c for c in ("label", "labels") if c in features and kinds[c] in ("label", "labels")]
        found = named or [c for c in cols if kinds[c] in ("label", "labels")]
        if len(found) != 1:
            raise DatasetError(f"{name}{at}: {'no' if not found else 'several'} ClassLabel column(s) "
                               f"({', '.join(found) or 'none'} among {cols})",
                               hint="name it: label_column=COLUMN (a ClassLabel or Sequence(ClassLabel))")  # fmt: skip
        label_column = found[0]
    elif label_column not in features:
        raise DatasetError(f"{name}{at}: no column {label_column!r} (label_column)", hint=f"columns: {cols}")
    kind = kinds[label_column]
    if kind not in ("label", "labels"):
        raise DatasetError(f"{name}{at}: label column {label_column!r} is {_describe(features[label_column])}, "
                           "not ClassLabel or Sequence(ClassLabel)",
                           hint=f"encode it first: ds.class_encode_column({label_column!r}), or cast it to "
                                "datasets.ClassLabel(names=[...])")  # fmt: skip
    feat = features[label_column]
    names = tuple(str(n) for n in (feat.names if kind == "label" else feat.feature.names))
    if not names:
        raise DatasetError(f"{name}{at}: label column {label_column!r} has no class names",
                           hint="cast it to datasets.ClassLabel(names=[...])")  # fmt: skip
    ml = (kind == "labels") if multilabel is None else bool(multilabel)
    return Schema(audio_column, label_column, ml, names, audio_is_path)


# ---- rows -> clips ----------------------------------------------------------------------------------------
_MAGIC = ((b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"\xff\xfb", ".mp3"),
          (b"FORM", ".aiff"))  # fmt: skip


def _suffix(data: bytes, path: str | None) -> str:
    if path:
        suf = Path(path).suffix.lower()
        if re.fullmatch(r"\.[a-z0-9]{1,5}", suf):
            return suf
    return next((s for m, s in _MAGIC if data.startswith(m)), ".bin")


def _stem(path: str | None) -> str:
    if not path:
        return ""
    stem = re.sub(r"[^\w.\-]+", "-", Path(path).stem)[:48].strip("-.")
    return f"_{stem}" if stem else ""


def default_audio_dir(identity: str) -> Path:
    env = os.environ.get(AUDIO_DIR_ENV, "").strip()
    digest = hashlib.blake2b(identity.encode(), digest_size=6).hexdigest()
    if env:
        return Path(env).expanduser() / digest
    from probekit._paths import user_cache_root

    return user_cache_root() / "hf-audio" / digest


class Materialiser:
    """Writes embedded audio bytes to files named by split, row and content digest (once; reruns reuse them)."""

    def __init__(self, name: str, audio_dir: Path, base: Path | None = None):
        self.name, self.audio_dir, self.base = name, Path(audio_dir), base
        self.written = 0

    def path_for(self, split: str, row: int, value: Any, *, streaming: bool = False) -> Path | str:
        """The file holding row `row`'s audio, or a string saying why there is none."""
        if isinstance(value, str):  # a path column
            value = {"bytes": None, "path": value}
        if not isinstance(value, Mapping):
            return f"no audio (value {type(value).__name__})"
        data, path = value.get("bytes"), value.get("path")
        if data:
            return self._write(split, row, bytes(data), path)
        if not path:
            return "neither audio bytes nor a path"
        p = Path(path).expanduser()
        if not p.is_absolute() and self.base is not None:
            p = self.base / p
        if streaming and not p.exists():
            raise DatasetError(f"{self.name}: split {split!r} row {row}: streamed audio has no embedded bytes, "
                               f"only the path {path!r}",
                               hint="streaming needs datasets that store audio bytes (Parquet on the Hub); "
                                    "load it without streaming")  # fmt: skip
        if not p.exists():
            return f"audio file {path} not found"
        return p

    def _write(self, split: str, row: int, data: bytes, path: str | None) -> Path:
        digest = hashlib.blake2b(data, digest_size=6).hexdigest()
        folder = self.audio_dir / re.sub(r"[^\w.\-]+", "-", split)
        target = folder / f"row{row:07d}{_stem(path)}_{digest}{_suffix(data, path)}"
        if target.is_file() and target.stat().st_size == len(data):
            return target  # the digest is in the name: same name and size is the same content
        folder.mkdir(parents=True, exist_ok=True)
        if self.written % 64 == 0 or len(data) > DISK_RESERVE // 4:
            free = shutil.disk_usage(folder).free
            if free < len(data) + DISK_RESERVE:
                raise DatasetError(
                    f"{self.name}: split {split!r}: no room under {self.audio_dir} for row {row} "
                    f"({free >> 20} MiB free after {self.written} rows written)",
                    hint=f"free space, point audio_dir= (or ${AUDIO_DIR_ENV}) at a bigger disk, or take limit=N rows",
                )
        from probekit._io import atomic_write_bytes

        atomic_write_bytes(target, data)
        self.written += 1
        return target


def iter_rows(ds, columns: list[str], limit: int | None, audio: str | None = None) -> Iterator[tuple[int, dict]]:
    """(row index, {column: value}) over a Dataset or IterableDataset, reading only `columns`; the Audio
    column `audio` comes undecoded ({bytes, path}): probekit decodes it."""
    import datasets

    if audio is not None:
        ds = ds.cast_column(audio, datasets.Audio(decode=False))  # features only: no rewrite of the data
    if limit is not None:
        ds = ds.take(limit) if isinstance(ds, datasets.IterableDataset) else ds.select(range(min(limit, len(ds))))
    ds = ds.select_columns(columns)
    row = 0
    for batch in ds.iter(batch_size=_BATCH):
        n = len(batch[columns[0]])
        for j in range(n):
            yield row + j, {c: batch[c][j] for c in columns}
        row += n


def as_labels(name: str, split: str, row: int, column: str, value: Any, schema: Schema) -> tuple[int, ...]:
    """Class indices of one row's label value (int or list of ints); DatasetError naming the row."""
    if value is None:
        vals: list = []
    elif isinstance(value, (list, tuple)):
        vals = list(value)
    else:
        vals = [value]
    n = len(schema.classes)
    if any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n for v in vals):
        raise DatasetError(f"{name}: split {split!r} row {row}: column {column!r} holds {value!r}, "
                           f"not class indices 0..{n - 1}",
                           hint="a ClassLabel value of -1 means 'no label': fix or drop the row")  # fmt: skip
    if not schema.multilabel and len(vals) != 1:
        raise DatasetError(f"{name}: split {split!r} row {row}: {len(vals)} labels in column {column!r} of a "
                           "single-label dataset", hint="pass multilabel=true, or fix the row")  # fmt: skip
    return tuple(sorted(set(vals)))


# ---- the dataset ------------------------------------------------------------------------------------------
def _hf_splits(name: str, loaded: dict[str, Any], mapping: dict[str, str] | None) -> dict[str, str]:
    if mapping is None:
        return {s: s for s in loaded}
    unknown = [v for v in mapping.values() if v not in loaded]
    if unknown:
        raise DatasetError(f"{name}: no split {unknown[0]!r} (splits option)", hint=f"its splits: {', '.join(loaded)}")
    return dict(mapping)


def _info(ds) -> Any:
    return getattr(ds, "info", None)


def build(name: str, src: Source, *, spec_name: str | None = None, audio_column: str | None = None,
          label_column: str | None = None, multilabel: Any = None, splits: Any = None, limit: Any = None,
          streaming: Any = False, revision: str | None = None, audio_dir: Any = None,
          extra_columns: tuple[str, ...] = (), rows_to_clips: Callable[..., list[Clip]] | None = None,
          finish: Callable[[str, list[Clip]], list[Clip]] | None = None,
          spec_fields: Mapping[str, Any] | None = None, loaded: dict[str, Any] | None = None,
          text_column: str | None = None) -> Dataset:
    """The Dataset of an hf: source (see the module docstring).

    Presets (BirdSet) hook in with `rows_to_clips(split, hf_split, row, values, path, labels) -> [Clip]`
    (one row -> several windows; `values` holds the audio, label and `extra_columns` of the row) and
    `finish(split, clips) -> clips` (a selection over the whole split)."""
    streaming = _bool(name, "streaming", streaming)
    if limit is not None:
        try:
            limit = int(limit)
        except (TypeError, ValueError):
            limit = -1
        if limit < 1:
            raise ConfigError(f"{name}: limit={limit!r} must be a positive number of rows")
    if multilabel is not None:
        multilabel = _bool(name, "multilabel", multilabel)
    mapping = _splits_option(name, splits)
    loaded = loaded if loaded is not None else load(name, src, streaming=streaming, revision=revision)
    hf_of = _hf_splits(name, loaded, mapping)
    if not hf_of:
        raise DatasetError(f"{name}: the dataset has no splits")
    if rows_to_clips is None:
        text_column = _text_column(name, loaded, hf_of, text_column, label_column)
    if text_column is not None:  # transcripts: an ASR dataset (the `asr` probe)
        return build_asr(name, src, loaded, hf_of if mapping is not None else _asr_splits(loaded, hf_of),
                         text_column=text_column, audio_column=audio_column, limit=limit, streaming=streaming,
                         revision=revision, audio_dir=audio_dir, spec_name=spec_name, mapped=mapping is not None)
    schema = None
    for split, hf in hf_of.items():
        features = loaded[hf].features
        if features is None:
            raise DatasetError(f"{name}: split {hf!r} declares no features (a streamed dataset without a card)",
                               hint="load it without streaming, or give it features")  # fmt: skip
        s = resolve_schema(name, features, audio_column=audio_column, label_column=label_column,
                           multilabel=multilabel, where=hf)
        if schema is None:
            schema = s
        elif s.classes != schema.classes:
            raise DatasetError(f"{name}: split {hf!r} has other class names in {s.label_column!r} than the others",
                               hint="all splits must share one ClassLabel")  # fmt: skip
    assert schema is not None
    for col in extra_columns:
        for hf in hf_of.values():
            if col not in loaded[hf].features:
                raise DatasetError(f"{name}: split {hf!r} has no column {col!r}",
                                   hint=f"columns: {list(loaded[hf].features)}")  # fmt: skip
    first = loaded[next(iter(hf_of.values()))]
    info = _info(first)
    fields = dict(
        name=spec_name or f"{PREFIX}{src.text}",
        classes=schema.classes,
        class_ids=schema.classes,
        multilabel=schema.multilabel,
        clip_seconds=0.0,
        splits=tuple(hf_of),
        metric="mAP" if schema.multilabel else "accuracy",
        license=str(getattr(info, "license", "") or ""),
        citation=" ".join(str(getattr(info, "citation", "") or "").split())[:300],
        description=f"Hugging Face dataset {src.text}: audio {schema.audio_column!r}, labels "
        f"{schema.label_column!r} ({len(schema.classes)} classes, {'multi' if schema.multilabel else 'single'}-label)"
        + (f", splits {hf_of}" if any(k != v for k, v in hf_of.items()) else "")
        + (", streamed" if streaming else ""),
        layout=LAYOUT,
        # what else selects the clips: a limited or remapped run is another dataset to result records
        source=f"{src.identity}|{schema.audio_column}|{schema.label_column}|{revision or ''}|{limit or ''}|"
        f"{sorted(hf_of.items()) if mapping else ''}",
    )
    fields.update(spec_fields or {})
    spec = DatasetSpec(**fields)
    where = Path(audio_dir).expanduser() if audio_dir else default_audio_dir(f"{spec.name}|{src.identity}")
    writer = Materialiser(name, where, base=src.saved)
    missing: dict[str, int] = {}
    notes: list[str] = []
    columns = [schema.audio_column, schema.label_column, *[c for c in extra_columns
                                                           if c not in (schema.audio_column, schema.label_column)]]

    def lister(split: str) -> list[Clip]:
        hf = hf_of[split]
        clips: list[Clip] = []
        absent = 0
        audio = None if schema.audio_is_path else schema.audio_column
        for row, values in iter_rows(loaded[hf], columns, limit, audio):
            labels = as_labels(name, hf, row, schema.label_column, values[schema.label_column], schema)
            path = writer.path_for(hf, row, values[schema.audio_column], streaming=streaming)
            if isinstance(path, str):
                absent += 1
                if absent <= 3:
                    notes.append(f"{name}: split {hf!r} row {row} (column {schema.audio_column!r}): {path}; "
                                 "the row is left out")
                continue
            if rows_to_clips is not None:
                clips.extend(rows_to_clips(split, hf, row, values, path, labels))
            else:
                clips.append(Clip(id=f"{hf}/{row}", path=path, labels=labels, split=split))
        missing[split] = absent
        if finish is not None:
            clips = finish(split, clips)
        if not clips:
            raise DatasetError(f"{name}: split {hf!r} yields no clips ({absent} rows without audio)",
                               hint="check the audio column (audio_column=) and that its files exist")  # fmt: skip
        return clips

    ds = Dataset(spec, Path(src.saved or where), lister)
    ds.missing = missing
    ds.warnings = notes  # filled as splits are listed
    ds.schema = schema
    ds.hf_splits = hf_of
    ds.audio_dir = where
    return ds


def open_hf(name: str, data_root: Any = None, **options) -> Dataset:
    """`hf:` names (registry entry point): options from the keywords and from the name's `?` query."""
    src, query = parse_name(name)
    opts = {**query, **options}
    check_options(name, opts, SCHEMA_OPTIONS)
    if src.saved is None and src.path and not Path(src.path).is_absolute() and data_root is not None:
        local = Path(data_root).expanduser() / src.text
        if _is_saved(local):
            src = Source(src.text, saved=local)
    return build(name.partition("?")[0], src, **opts)


def get_spec(name: str, **options) -> DatasetSpec:
    return open_hf(name, **options).spec


# ---- ASR: a transcript column ------------------------------------------------------------------------------
def _text_column(name: str, loaded: dict[str, Any], hf_of: dict[str, str], text_column: str | None,
                 label_column: str | None) -> str | None:
    """The transcript column: `text_column` as given (checked), else a `text`-like string column of a
    dataset without any ClassLabel column (librispeech_asr: `text`), else None (a classification dataset)."""
    features = loaded[next(iter(hf_of.values()))].features
    if features is None:
        return text_column
    if text_column is not None:
        for hf in hf_of.values():
            f = loaded[hf].features
            if f is not None and text_column not in f:
                raise DatasetError(f"{name}: split {hf!r} has no column {text_column!r} (text_column)",
                                   hint=f"columns: {list(f)}")
            if f is not None and _feature_kind(f[text_column]) != "path":  # 'path': any string column
                raise DatasetError(f"{name}: text column {text_column!r} is {_describe(f[text_column])}, not a "
                                   "string", hint="name the transcript column: text_column=COLUMN")
        return text_column
    if label_column is not None or any(_feature_kind(features[c]) in ("label", "labels") for c in features):
        return None
    found = [c for c in TEXT_COLUMNS if c in features and _feature_kind(features[c]) == "path"]
    return found[0] if found else None


def _asr_splits(loaded: dict[str, Any], hf_of: dict[str, str]) -> dict[str, str]:
    """librispeech_asr "clean" (train.100, train.360, validation, test): the BAT code's three splits."""
    if all(v in loaded for v in LIBRISPEECH_SPLITS.values()):
        return dict(LIBRISPEECH_SPLITS)
    return hf_of


def _audio_column(name: str, features, audio_column: str | None, where: str) -> tuple[str, bool]:
    """(the audio column, whether it holds file paths), as `resolve_schema` picks it."""
    cols = list(features)
    at = f" (split {where!r})" if where else ""
    kinds = {c: _feature_kind(features[c]) for c in cols}
    if audio_column is None:
        audio = [c for c in cols if kinds[c] == "audio"]
        if len(audio) != 1:
            raise DatasetError(f"{name}{at}: {'no' if not audio else len(audio)} Audio column(s) among {cols}",
                               hint="name it: audio_column=COLUMN")  # fmt: skip
        audio_column = audio[0]
    elif audio_column not in features:
        raise DatasetError(f"{name}{at}: no column {audio_column!r} (audio_column)", hint=f"columns: {cols}")
    if kinds[audio_column] not in ("audio", "path"):
        raise DatasetError(f"{name}{at}: column {audio_column!r} is {_describe(features[audio_column])}, "
                           "not Audio or a string path",
                           hint="pick the audio column with audio_column=, or cast it: "
                                "ds.cast_column(COL, datasets.Audio())")  # fmt: skip
    return audio_column, kinds[audio_column] == "path"


def build_asr(name: str, src: Source, loaded: dict[str, Any], hf_of: dict[str, str], *, text_column: str,
              audio_column: str | None, limit: int | None, streaming: bool, revision: str | None, audio_dir: Any,
              spec_name: str | None, mapped: bool) -> Dataset:
    """An `hf:` dataset of transcripts read as the BAT code's LibriSpeech task: task "asr", the official
    character vocabulary as classes (`transcripts.CHARS`), clips carrying their raw transcript (normalised
    into CTC targets as `librispeech` does: lower case, characters outside [a-z ' space] dropped)."""
    from probekit.datasets.transcripts import CHARS, normalize_transcript

    audio_is_path = False
    for hf in hf_of.values():
        features = loaded[hf].features
        if features is None:
            raise DatasetError(f"{name}: split {hf!r} declares no features (a streamed dataset without a card)",
                               hint="load it without streaming, or give it features")
        audio_column, audio_is_path = _audio_column(name, features, audio_column, hf)
    info = _info(loaded[next(iter(hf_of.values()))])
    libri = "librispeech" in src.text.lower()
    fields = dict(
        name=spec_name or f"{PREFIX}{src.text}", classes=CHARS, class_ids=CHARS, multilabel=False,
        clip_seconds=0.0, splits=tuple(hf_of), metric="WER", task="asr",
        # the BAT LibriSpeech recipe (configs/librispeech) for LibriSpeech; other speech the generic defaults
        protocol="librispeech" if libri else "default",
        license=str(getattr(info, "license", "") or ""),
        citation=" ".join(str(getattr(info, "citation", "") or "").split())[:300],
        description=f"Hugging Face ASR dataset {src.text}: audio {audio_column!r}, transcripts {text_column!r} "
        "(character CTC targets, WER/CER)" + (f", splits {hf_of}" if any(k != v for k, v in hf_of.items()) else "")
        + (", streamed" if streaming else ""),
        layout=LAYOUT.replace("a ClassLabel or Sequence(ClassLabel) label column",
                              "a string transcript column (text_column=)"),
        source=f"{src.identity}|{audio_column}|text:{text_column}|{revision or ''}|{limit or ''}|"
        f"{sorted(hf_of.items()) if mapped else ''}",
    )
    if libri:
        from probekit.datasets.librispeech import SPEC as LIBRI

        fields["fbank_stats"] = LIBRI.fbank_stats
    spec = DatasetSpec(**fields)
    where = Path(audio_dir).expanduser() if audio_dir else default_audio_dir(f"{spec.name}|{src.identity}")
    writer = Materialiser(name, where, base=src.saved)
    missing: dict[str, int] = {}
    notes: list[str] = []

    def lister(split: str) -> list[Clip]:
        hf = hf_of[split]
        clips: list[Clip] = []
        absent = 0
        for row, values in iter_rows(loaded[hf], [audio_column, text_column], limit,
                                     None if audio_is_path else audio_column):
            text = values[text_column]
            if not isinstance(text, str) or not normalize_transcript(text).strip():
                raise DatasetError(f"{name}: split {hf!r} row {row}: transcript {text!r} (column {text_column!r}) "
                                   "has no character of the vocabulary [a-z ']", hint="fix or drop that row")
            path = writer.path_for(hf, row, values[audio_column], streaming=streaming)
            if isinstance(path, str):
                absent += 1
                if absent <= 3:
                    notes.append(f"{name}: split {hf!r} row {row} (column {audio_column!r}): {path}; the row is left out")
                continue
            clips.append(Clip(id=f"{hf}/{row}", path=path, labels=(), split=split, transcript=text))
        missing[split] = absent
        if not clips:
            raise DatasetError(f"{name}: split {hf!r} yields no clips ({absent} rows without audio)",
                               hint="check the audio column (audio_column=) and that its files exist")
        return clips

    ds = Dataset(spec, Path(src.saved or where), lister)
    ds.missing = missing
    ds.warnings = notes
    ds.schema = Schema(audio_column, text_column, False, CHARS, audio_is_path)
    ds.hf_splits = hf_of
    ds.audio_dir = where
    return ds

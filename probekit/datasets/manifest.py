"""`manifest:PATH.csv`: bring your own data as a CSV with columns `path,labels,split[,fold]`.

* `path`: audio file, absolute or relative to the CSV's folder (`..`, symlinked folders and files outside
  that folder are fine, as NeMo/ESPnet/HEAR-style lists write them); option `root=DIR` (API:
  `get_dataset("manifest:m.csv", root=DIR)`; a name: `manifest:m.csv?root=DIR`) makes relative paths
  resolve against DIR instead. A file listed twice (two spellings of one path included) is refused, so one
  clip never sits in two splits.
* `labels`: class names, several joined by `;` (any row with more than one makes the task multi-label).
  The class list is the sorted union of all labels.
* `split`: `train`, `valid` or `test`. `fold`: optional integer (for cross-validation).

The file is UTF-8 (a byte-order mark is fine), or UTF-16/UTF-32 with a byte-order mark (Excel's
"Unicode text"). Anything the parser cannot take for certain (another encoding, a duplicated column,
a field beyond the header, a NUL byte, a field over 10 MiB) is refused with the file and physical line.
Classes that miss the train or test split are not an error but a warning (`Dataset.warnings`).
"""

from __future__ import annotations

import codecs
import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from probekit.datasets._common import check_options
from probekit.datasets.base import Clip, Dataset, DatasetSpec
from probekit.errors import DatasetError

PREFIX = "manifest:"
COLUMNS = ("path", "labels", "split")
OPTIONAL = ("fold",)
SPLITS = ("train", "valid", "test")
LAYOUT = (
    "a CSV with columns path,labels,split[,fold]; paths absolute or relative to the CSV's folder (or to option "
    "root=DIR); labels joined by ';'"
)
#: `manifest:PATH.csv?root=DIR` in a dataset name: the `root` option where only a name can be given (the CLI)
ROOT_QUERY = "?root="
#: Longest field accepted (csv's own default, 128 KiB, is short for a long multi-label list).
FIELD_LIMIT = 10 * 2**20
_UTF8_HINT = "save the file as UTF-8 (Excel: 'CSV UTF-8'; LibreOffice: character set 'Unicode (UTF-8)')"


def _read_text(csv_path: Path) -> str:
    """The manifest's text: the encoding follows its byte-order mark (none: UTF-8)."""
    try:
        data = csv_path.read_bytes()
    except PermissionError:
        raise DatasetError(f"manifest {csv_path}: permission denied", hint="check the file's mode") from None
    except OSError as e:
        raise DatasetError(f"manifest {csv_path}: cannot read it ({e.strerror})") from None
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # before UTF-16: FF FE starts both
        encoding = "utf-32"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
        if b"\x00" in data.split(b"\n", 1)[0]:
            raise DatasetError(
                f"{csv_path} line 1: NUL bytes in the header (UTF-16 text without a byte-order mark?)",
                hint=_UTF8_HINT,
            )
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        if encoding != "utf-8-sig":
            raise DatasetError(f"{csv_path}: not valid {encoding.upper()} text ({e.reason} at byte {e.start})",
                               hint=_UTF8_HINT) from None  # fmt: skip
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DatasetError(
            f"{csv_path} line {line}: byte 0x{data[e.start]:02x} (column {column}) is not UTF-8 "
            "(Latin-1 or Windows-1252 text?)",
            hint=_UTF8_HINT,
        ) from None


def _records(csv_path: Path, text: str) -> list[tuple[int, list[str]]]:
    """(physical line where the record starts, fields) per non-blank record."""
    reader = csv.reader(io.StringIO(text, newline=""))
    out: list[tuple[int, list[str]]] = []
    end = 0
    old = csv.field_size_limit(FIELD_LIMIT)  # process-wide: restored below
    try:
        while True:
            start = end + 1
            try:
                row = next(reader)
            except StopIteration:
                return out
            except csv.Error as e:
                if "field limit" in str(e):
                    raise DatasetError(
                        f"{csv_path} line {start}: a field is longer than {FIELD_LIMIT // 2**20} MiB",
                        hint='an unclosed quote (") makes the rest of the file one field; close it',
                    ) from None
                raise DatasetError(f"{csv_path} line {start}: not valid CSV ({e})") from None
            end = reader.line_num
            if row:  # a blank line is no record
                out.append((start, row))
    finally:
        csv.field_size_limit(old)


@dataclass
class _Row:
    line: int
    rel: str
    path: Path
    labels: tuple[str, ...]
    split: str
    fold: int | None


def _header(csv_path: Path, line: int, fields: list[str]) -> list[str]:
    header = [h.strip() for h in fields]
    twice = [c for c, n in Counter(header).items() if n > 1 and c]
    if twice:
        raise DatasetError(
            f"{csv_path} line {line}: column {twice[0]!r} appears {header.count(twice[0])} times in the header",
            hint="keep one column of each name",
        )
    lacking = [c for c in COLUMNS if c not in header]
    if lacking:
        raise DatasetError(f"{csv_path}: missing column(s) {', '.join(lacking)} (header: {header})", hint=LAYOUT)
    unknown = [c for c in header if c and c not in COLUMNS + OPTIONAL]  # unnamed: spreadsheet padding
    if unknown:
        raise DatasetError(
            f"{csv_path}: unknown column(s) {', '.join(unknown)}", hint=f"allowed: {', '.join(COLUMNS + OPTIONAL)}"
        )
    return header


def _row(csv_path: Path, base: Path, header: list[str], line: int, fields: list[str]) -> _Row:
    where = f"{csv_path} line {line}"
    # empty fields past the header or under an unnamed column (spreadsheet exports) are harmless;
    # a value there would be silently lost
    extra = [f for i, f in enumerate(fields) if (i >= len(header) or not header[i]) and f.strip()]
    if extra:
        named = sum(1 for h in header if h)
        raise DatasetError(
            f"{where}: {len(fields)} fields but the header names {named} columns (extra field {extra[0]!r})",
            hint='quote a value that holds a comma ("a, b"), or remove the extra field',
        )
    row = {h: f for h, f in zip(header, fields) if h}
    for col, value in row.items():
        if "\x00" in value:
            raise DatasetError(f"{where}: NUL byte in column {col!r} ({value!r})",
                               hint="remove it; the file may be damaged or not plain text")  # fmt: skip
    rel = row.get("path", "").strip()
    if not rel:
        raise DatasetError(f"{where}: empty path")
    path = (base / Path(rel).expanduser()).resolve()  # relative to `base`; an absolute path stays as it is
    labels = tuple(sorted({x.strip() for x in row.get("labels", "").split(";") if x.strip()}))
    if not labels:
        raise DatasetError(f"{where}: no labels for {rel!r}", hint="column labels: class names joined by ';'")
    split = row.get("split", "").strip()
    if not split:
        raise DatasetError(f"{where}: empty split for {rel!r}", hint=f"use one of {', '.join(SPLITS)}")
    if split not in SPLITS:
        raise DatasetError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    fold = None
    if row.get("fold", "").strip():
        try:
            fold = int(row["fold"])
        except ValueError:
            raise DatasetError(f"{where}: fold {row['fold']!r} is not an integer") from None
    return _Row(line, rel, path, labels, split, fold)


def _base(csv_path: Path, root: str | Path | None) -> Path:
    """The folder relative paths resolve against: option `root` (checked), else the CSV's folder."""
    if root is None or str(root) == "":
        return csv_path.resolve().parent
    base = Path(root).expanduser()
    if not base.is_dir():
        what = "not a folder" if base.exists() else "not found"
        raise DatasetError(f"manifest {csv_path}: root {str(root)!r} is {what}",
                           hint="root= names the folder that the manifest's relative paths start from")  # fmt: skip
    return base.resolve()


def _rows(csv_path: Path, root: str | Path | None = None) -> list[_Row]:
    if not csv_path.exists():
        raise DatasetError(f"manifest {csv_path} not found", hint=f"expected {LAYOUT}")
    if csv_path.is_dir():
        raise DatasetError(f"manifest {csv_path} is a directory, not a CSV file",
                           hint="name the CSV file inside it: manifest:DIR/FILE.csv")  # fmt: skip
    if not csv_path.is_file():
        raise DatasetError(f"manifest {csv_path} is not a regular file", hint="give a CSV file")
    base = _base(csv_path, root)
    records = _records(csv_path, _read_text(csv_path))
    if not records:
        raise DatasetError(f"{csv_path}: empty file (no header)", hint=LAYOUT)
    header = _header(csv_path, *records[0])
    rows: list[_Row] = []
    seen: dict[str, int] = {}
    for line, fields in records[1:]:
        r = _row(csv_path, base, header, line, fields)
        if str(r.path) in seen:
            first = seen[str(r.path)]
            raise DatasetError(f"{csv_path} line {line}: duplicate path {r.rel!r} (first on line {first})")
        seen[str(r.path)] = line
        rows.append(r)
    if not rows:
        raise DatasetError(f"{csv_path}: no rows", hint=LAYOUT)
    return rows


def _spec(csv_path: Path, rows: list[_Row], root: str | Path | None = None) -> DatasetSpec:
    classes = tuple(sorted({c for r in rows for c in r.labels}))
    multilabel = any(len(r.labels) > 1 for r in rows)
    folds = {r.fold for r in rows if r.fold is not None}
    return DatasetSpec(
        name=f"{PREFIX}{csv_path.name}",
        classes=classes,
        class_ids=classes,
        multilabel=multilabel,
        clip_seconds=0.0,  # varies; frontends use each clip's native length
        splits=tuple(s for s in SPLITS if any(r.split == s for r in rows)),
        folds=len(folds) or None,
        protocol="default",
        metric="mAP" if multilabel else "accuracy",
        description=f"user manifest {csv_path}",
        layout=LAYOUT,
        # another root is other audio: its records never share the CSV's alone
        source=str(csv_path.resolve()) + (f"#root={_base(csv_path, root)}" if root not in (None, "") else ""),
    )


def parse_manifest(
    csv_path: Path, *, keep_missing: bool = False, root: str | Path | None = None
) -> tuple[DatasetSpec, list[Clip], dict[str, int]]:
    """Validate a manifest and return (spec, clips present on disk, absent files per split).

    With `keep_missing` absent files are listed as clips too (and still counted as absent). A path that
    exists but is no regular file (a FIFO, a folder) stays a clip: decoding it names what it is.
    """
    csv_path = Path(csv_path)
    rows = _rows(csv_path, root)
    spec = _spec(csv_path, rows, root)
    index = {c: i for i, c in enumerate(spec.classes)}
    clips, absent = [], {s: 0 for s in spec.splits}
    for r in rows:
        if not r.path.exists():
            absent[r.split] += 1
            if not keep_missing:
                continue
        labels = tuple(index[c] for c in r.labels)
        clips.append(Clip(id=r.rel, path=r.path, labels=labels, split=r.split, fold=r.fold))
    return spec, clips, absent


def _first_absent(clips: list[Clip], csv_path: Path, root: str | Path | None) -> str:
    present = {str(c.path) for c in clips if c.path.exists()}
    for r in _rows(csv_path, root):
        if str(r.path) not in present:
            return r.rel
    return "?"


def open_manifest(
    csv_path: Path, *, allow_missing: bool = False, keep_missing: bool = False, root: str | Path | None = None,
    **options,
) -> Dataset:
    """A Dataset from a manifest. Listed files that are absent are an error unless `allow_missing`
    (they are dropped) or `keep_missing` (they stay listed, so extraction records each one as a failed
    clip naming the file: `probekit extract --on-error skip`). A manifest none of whose files exist is
    always an error: that is a wrong folder, not a few lost files.

    `dataset.warnings` lists classes absent from the train or test split (`Dataset.class_coverage`)."""
    check_options(f"{PREFIX}{csv_path}", options, ("allow_missing", "keep_missing", "root"))
    csv_path = Path(csv_path)
    spec, clips, absent = parse_manifest(csv_path, keep_missing=keep_missing, root=root)
    base = _base(csv_path, root)
    total = sum(absent.values())
    if total and not (allow_missing or keep_missing):
        raise DatasetError(
            f"{csv_path}: {total} listed audio file(s) not found, e.g. {_first_absent(clips, csv_path, root)}",
            hint="fix the paths; `probekit extract --on-error skip` records them as failed clips "
            "(allow_missing=True drops them)",
        )
    if total and not any(c.path.exists() for c in clips):
        raise DatasetError(
            f"{csv_path}: none of its {total} listed audio files exist, e.g. {_first_absent(clips, csv_path, root)}",
            hint=f"relative paths start from {base}" + ("" if root else " (the CSV's folder; option root= "
                                                            "changes it)") + "; check that the audio is there",
        )
    by_split: dict[str, list[Clip]] = {s: [] for s in spec.splits}
    for c in clips:
        by_split[c.split].append(c)
    ds = Dataset(spec, base, lambda split: by_split[split])
    ds.missing = absent
    ds.warnings = ds.class_coverage()
    return ds

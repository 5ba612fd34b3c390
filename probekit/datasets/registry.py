"""The dataset registry: specs by name, where each lives on disk, and `get_dataset`.

Data roots, first match wins: the dataset's own `root=` option (its folder), else `data_root`
(a folder holding datasets, e.g. `<data_root>/fsdd/recordings`), else each folder of `$PROBEKIT_DATA`
(`os.pathsep`-separated), else the default data folder `<user data dir>/probekit/datasets` when it exists
(`probekit._paths.data_dirs`). Under a data root each dataset is looked for in its usual folder names and in
the root itself. When nothing matches, the error lists every folder tried and the layout expected.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from probekit._registry import Registry
from probekit.datasets import (
    audioset,
    birdset,
    dcase2016,
    esc50,
    events,
    folder,
    fsd50k,
    fsdd,
    gtzan,
    hear,
    hfdata,
    librispeech,
    manifest,
    nsynth,
    speechcommands,
    urbansound8k,
)
from probekit.datasets.base import Dataset, DatasetSpec, ProtocolDecl
from probekit.errors import DatasetError

ENV_VAR = "PROBEKIT_DATA"


@dataclass(frozen=True)
class _Entry:
    spec: DatasetSpec
    root_names: tuple[str, ...]
    detect: Callable[[Path], Path | None]
    open: Callable[..., Dataset]


DATASETS: Registry[_Entry] = Registry(
    "dataset", DatasetError, hint="probekit datasets lists them; or manifest:PATH.csv for your own data"
)


def register_dataset(
    spec: DatasetSpec,
    open_fn: Callable[..., Dataset],
    *,
    detect: Callable[[Path], Path | None],
    root_names: tuple[str, ...] = (),
    replace: bool = False,
) -> None:
    """Add a dataset: `open_fn(spec, root, **options) -> Dataset`; `detect(folder)` returns its root or None.

    A name registered twice is refused unless `replace=True`."""
    if spec.name.startswith(PATH_PREFIXES):
        raise DatasetError(
            f"dataset name {spec.name!r} is reserved",
            hint=f"names starting {', '.join(PATH_PREFIXES)} are paths",
        )
    entry = _Entry(spec, tuple(root_names) or (spec.name,), detect, open_fn)
    DATASETS.register(spec.name, entry, replace=replace)
    DATASET_SPECS[spec.name] = spec


DATASET_SPECS: dict[str, DatasetSpec] = {}
#: Names that are paths to user data: manifest:PATH.csv, events:PATH.csv (strong labels), hear:DIR, folder:DIR.
PATH_PREFIXES = (manifest.PREFIX, events.PREFIX, hear.PREFIX, folder.PREFIX, hfdata.PREFIX)
for _name, _spec in audioset.SPECS.items():
    register_dataset(
        _spec, audioset.open_dataset, detect=audioset.detector(_name), root_names=audioset.ROOT_NAMES
    )
register_dataset(esc50.SPEC, esc50.open_dataset, detect=esc50.detect, root_names=esc50.ROOT_NAMES)
for _spec in (speechcommands.SPEC_12, speechcommands.SPEC_35):
    register_dataset(
        _spec, speechcommands.open_dataset, detect=speechcommands.detect, root_names=speechcommands.ROOT_NAMES
    )
register_dataset(fsdd.SPEC, fsdd.open_dataset, detect=fsdd.detect, root_names=fsdd.ROOT_NAMES)
# the official layouts of issue 18 (each module declares its facts on its spec and its protocols in PROTOCOLS)
register_dataset(fsd50k.SPEC, fsd50k.open_dataset, detect=fsd50k.detect, root_names=fsd50k.ROOT_NAMES)
register_dataset(urbansound8k.SPEC, urbansound8k.open_dataset, detect=urbansound8k.detect,
                 root_names=urbansound8k.ROOT_NAMES)  # fmt: skip
register_dataset(gtzan.SPEC, gtzan.open_dataset, detect=gtzan.detect, root_names=gtzan.ROOT_NAMES)
register_dataset(gtzan.SPEC_FILTERED, gtzan.open_filtered, detect=gtzan.detect, root_names=gtzan.ROOT_NAMES)
for _spec in (nsynth.SPEC_PITCH, nsynth.SPEC_FAMILY):
    register_dataset(_spec, nsynth.open_dataset, detect=nsynth.detect, root_names=nsynth.ROOT_NAMES)
register_dataset(dcase2016.SPEC, dcase2016.open_dataset, detect=dcase2016.detect, root_names=dcase2016.ROOT_NAMES)

for _spec in birdset.SPECS.values():  # BirdSet test sets (save_to_disk folders of DBD-research-group/BirdSet)
    register_dataset(_spec, birdset.open_dataset, detect=birdset.detector(_spec.name),
                     root_names=birdset.root_names(_spec.name))

register_dataset(fsdd.SPEC_ASR, fsdd.open_dataset, detect=fsdd.detect, root_names=fsdd.ROOT_NAMES)
register_dataset(librispeech.SPEC, librispeech.open_dataset, detect=librispeech.detect,
                 root_names=librispeech.ROOT_NAMES)

#: Training protocols declared next to their datasets; probekit.train.protocols registers them by name.
DECLARED_PROTOCOLS: tuple[ProtocolDecl, ...] = (
    *urbansound8k.PROTOCOLS, *gtzan.PROTOCOLS, *nsynth.PROTOCOLS, *dcase2016.PROTOCOLS,
)


def root_names(name: str) -> tuple[str, ...]:
    """The folder names dataset `name` is looked for under each data root (then the root itself)."""
    return _entry(name).root_names


def list_datasets(pattern: str | None = None) -> list[str]:
    """Registered dataset names, sorted; `pattern` filters them (fnmatch, e.g. "as*").
    User data is `manifest:PATH.csv`."""
    return DATASETS.names(pattern)


def _entry(name: str) -> _Entry:
    return DATASETS.get(name)


def _root_query(name: str) -> tuple[str, str | None]:
    """`manifest:m.csv?root=DIR` -> ("manifest:m.csv", "DIR"); other names unchanged, root None."""
    if name.startswith(manifest.PREFIX) and manifest.ROOT_QUERY in name:
        path, root = name.rsplit(manifest.ROOT_QUERY, 1)
        return path, root
    return name, None


def _manifest_path(name: str) -> Path:
    prefix = next(p for p in PATH_PREFIXES if name.startswith(p))
    text = name[len(prefix) :].strip()
    if not text:
        what, path = (
            ("CSV file", "PATH.csv") if prefix in (manifest.PREFIX, events.PREFIX) else ("folder", "DIR")
        )
        raise DatasetError(f"{name!r} names no {what}", hint=f"write {prefix}{path}")
    return Path(text).expanduser()


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset, or of a manifest (`manifest:PATH.csv`, read and validated)."""
    if name.startswith(manifest.PREFIX):
        name, root = _root_query(name)
        return manifest.parse_manifest(_manifest_path(name), root=root)[0]
    if name.startswith(hear.PREFIX):
        return hear.get_spec(_manifest_path(name))  # task_metadata.json + labelvocabulary.csv only
    if name.startswith(hfdata.PREFIX):
        return hfdata.get_spec(name)
    if name.startswith(PATH_PREFIXES):
        return get_dataset(name).spec
    return _entry(name).spec


def data_roots(data_root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for datasets: `data_root` if given, else those in $PROBEKIT_DATA."""
    from probekit._paths import data_dirs

    if data_root is not None:
        return [Path(data_root).expanduser()]
    return data_dirs()


def _default_dir() -> Path:
    from probekit._paths import default_data_dir

    return default_data_dir()


def find_root(
    name: str, data_root: str | os.PathLike | None = None, root: str | os.PathLike | None = None
) -> Path:
    """The folder holding dataset `name`; DatasetError saying which layout was expected where."""
    entry = _entry(name)
    if root is not None:
        candidates = [Path(root).expanduser()]
    else:
        bases = data_roots(data_root)
        if not bases:
            raise DatasetError(
                f"no data root for dataset {name!r}: pass --data-root DIR (data_root=...), set ${ENV_VAR} "
                f"or create {_default_dir()}",
                hint=f"expected {entry.spec.layout}",
            )
        candidates = [b / n for b in bases for n in entry.root_names] + bases
    for c in candidates:
        found = entry.detect(c) if c.is_dir() else None
        if found is not None:
            return found
    tried = ", ".join(str(c) for c in candidates)
    raise DatasetError(
        f"dataset {name!r} not found (looked in {tried})", hint=f"expected {entry.spec.layout}"
    )


def get_dataset(name: str, data_root: str | os.PathLike | None = None, **options) -> Dataset:
    """Open a dataset by name.

    Args:
        name: a registered name (`list_datasets()`), or a path to user data: `manifest:PATH.csv`,
            `events:PATH.csv` (strong labels), `hear:DIR` (a HEAR task folder), `folder:DIR` (class
            subfolders); PATH relative to the current folder, else to the data root.
        data_root: folder holding datasets; default $PROBEKIT_DATA.
        **options: `root=` (the dataset's own folder) and dataset options, e.g. `test_fold=` for esc50,
            `allow_missing=` for manifests.

    Returns:
        A Dataset; clips are listed per split on first use (`dataset.clips("train")`).
    """
    if name.startswith(hfdata.PREFIX):  # Hugging Face datasets: not a path, options may follow '?'
        ds = hfdata.open_hf(name, data_root, **options)
    elif name.startswith(PATH_PREFIXES):
        name, query_root = _root_query(name)
        if query_root is not None:
            if options.get("root") not in (None, query_root):
                raise DatasetError(f"{name}: root given twice ({query_root!r} in the name, {options['root']!r})",
                                   hint="give root= once")  # fmt: skip
            options["root"] = query_root
        path = _manifest_path(name)
        if not path.is_absolute() and not path.exists():
            for base in data_roots(data_root):
                if (base / path).exists():
                    path = base / path
                    break
        prefix = next(p for p in PATH_PREFIXES if name.startswith(p))
        opener = {
            manifest.PREFIX: manifest.open_manifest,
            events.PREFIX: events.open_events_manifest,
            hear.PREFIX: hear.open_dataset,
            folder.PREFIX: folder.open_dataset,
        }[prefix]
        ds = opener(path, **options)
    else:
        root = options.pop("root", None)
        entry = _entry(name)
        ds = entry.open(entry.spec, find_root(name, data_root, root), **options)
    ds.options = dict(options)
    return ds


def describe(name: str, data_root: str | os.PathLike | None = None) -> dict[str, object]:
    """The declared facts of a registered dataset, in one place (what `probekit datasets` shows; nothing
    is opened): read from its `DatasetSpec` fields (see `probekit.datasets.base`) and registry entry."""
    entry = _entry(name)
    spec = entry.spec
    bases = data_roots(data_root)
    return {
        "name": spec.name,
        "description": spec.description,
        "classes": spec.num_classes or spec.declared_classes,
        "multilabel": spec.multilabel,
        "splits": spec.splits,
        "folds": spec.folds,
        "split_note": spec.split_note,
        "metric": spec.metric,
        "protocol": spec.protocol,
        "frames": dict(spec.frames),
        "license": spec.license,
        "citation": spec.citation,
        "download": spec.download,
        "layout": spec.layout,
        "root_names": entry.root_names,
        "looks_in": [str(b / n) for b in bases for n in entry.root_names] + [str(b) for b in bases],
    }

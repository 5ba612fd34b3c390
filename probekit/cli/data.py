"""`probekit datasets` (what data is where) and `probekit doctor` (is this machine set up)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from probekit._console import print_table
from probekit.cli import app, console

_DATA_ROOT_HELP = (
    "Folder holding the dataset folders (e.g. DIR with DIR/fsdd/recordings/). Default: $PROBEKIT_DATA."
)
DataRootOption = Annotated[Path | None, typer.Option("--data-root", help=_DATA_ROOT_HELP)]


#: Above this many files the total duration is estimated from an evenly spaced sample (header reads only).
_HOURS_EXACT = 20_000
#: Header scans of more files than this show a progress bar and keep their result in the summary cache.
_LONG_SCAN = 2_000


def _hours_cache() -> Path:
    from probekit._paths import user_cache_root

    return user_cache_root() / "datasets-hours.json"


def _scan_key(paths: list) -> str:
    """Digest of the sampled files' names, sizes and mtimes: a changed file makes a new key."""
    import hashlib

    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0-\n".encode())
    return h.hexdigest()[:32]


def _durations(sample: list, label: str) -> list[float]:
    """Durations from the headers; long scans show a bar and are cached by `_scan_key`."""
    import json

    from probekit._console import Bar
    from probekit._io import atomic_write_json
    from probekit.datasets.events import file_duration

    if len(sample) <= _LONG_SCAN:
        return [d for d in (file_duration(p) for p in sample) if d is not None]
    key, cache = _scan_key(sample), _hours_cache()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), list):
        return [float(x) for x in known[key]]
    secs = []
    with Bar(f"reading headers ({label})", len(sample), unit="files", transient=True) as bar:
        for i, p in enumerate(sample, start=1):
            d = file_duration(p)
            if d is not None:
                secs.append(d)
            if i % 200 == 0 or i == len(sample):
                bar.update(completed=i)
    known = known if isinstance(known, dict) else {}
    known[key] = secs
    try:
        atomic_write_json(cache, dict(list(known.items())[-64:]))  # a few datasets' summaries, not a log
    except OSError:
        pass  # a read-only cache folder only costs the next listing a rescan
    return secs


def _hours(paths: list, label: str = "") -> str:
    """Total duration of `paths` in hours from the file headers; '~' marks an estimate from a sample."""
    if not paths:
        return "0"
    step = max(1, len(paths) // _HOURS_EXACT)
    sample = paths[::step]
    secs = _durations(sample, label)
    if not secs:
        return "-"
    total = sum(secs) / len(secs) * len(paths) if step > 1 or len(secs) < len(sample) else sum(secs)
    return ("~" if step > 1 else "") + f"{total / 3600:.2f}"


def _recipe_families() -> dict[str, list[str]]:
    """Backbone families per frontend recipe of their cards ("fbank", "bat"; others use their own)."""
    from probekit.backbones.registry import backbone_card, list_backbones
    from probekit.errors import ProbekitError

    out: dict[str, set[str]] = {}
    for n in list_backbones():
        try:
            card = backbone_card(n)
        except ProbekitError:  # a broken plugin is `probekit backbones`' business
            continue
        out.setdefault(card.frontend or "", set()).add(card.family)
    return {k: sorted(v) for k, v in out.items()}


def _frontends(spec, families: dict[str, list[str]]) -> str:
    """'fbank (eat): 1024 frames, stats -4.27/4.57; bat (bat): 1024 frames; own frontend: beats, ...'."""
    from probekit.audio.frontends import frontend_for
    from probekit.errors import ProbekitError

    parts = []
    for recipe in ("fbank", "bat"):
        try:
            cfg = frontend_for(recipe, spec)
            paper = frontend_for(recipe, spec, "bat-paper")
        except ProbekitError as e:
            parts.append(f"{recipe}: {e}")
            continue
        frames = cfg.target_frames or "native"
        text = f"{recipe} ({', '.join(families.get(recipe, [])) or '-'}): {frames} frames"
        if getattr(cfg, "mean", None) is not None:
            text += f", stats {cfg.mean:.3f}/{cfg.std:.3f}"
        if paper != cfg:
            text += f" (BAT-paper style: {paper.target_frames or 'native'} frames"
            text += f", stats {paper.mean:.3f}/{paper.std:.3f})" if getattr(paper, "mean", None) is not None else ")"
        parts.append(text)
    own = families.get("", [])
    if own:
        parts.append(f"own frontend ({', '.join(own)}): the model's recipe")
    return "; ".join(parts)


def _protocol_line(name: str) -> str:
    from probekit.train.protocols import PROTOCOLS

    if name not in PROTOCOLS:
        return f"{name} (not a registered protocol)"
    p = PROTOCOLS[name]
    return f"{p.name}: {p.description} [{p.source}]" if p.source else f"{p.name}: {p.description}"


def _about(name: str, data_root: Path | None, families: dict[str, list[str]]) -> list[str]:
    """The declared facts of a registered dataset, one labelled line each (`registry.describe`)."""
    from probekit.datasets import get_spec
    from probekit.datasets.registry import describe

    from rich.markup import escape

    d = {k: escape(v) if isinstance(v, str) else v for k, v in describe(name, data_root).items()}
    spec = get_spec(name)
    looks = ", ".join(d["looks_in"]) or f"no data root ({_no_root_hint()})"
    lines = [f"[bold cyan]{name}[/]: {d['description']}",
             f"  looks in: {escape(looks)} for {d['layout']}",
             f"  splits: {', '.join(d['splits'])}" + (f" ({d['folds']} folds)" if d["folds"] else "")
             + (f"; {d['split_note']}" if d["split_note"] else "") + f"; metric {d['metric']}",
             f"  frontends: {escape(_frontends(spec, families))}",
             f"  protocol {escape(_protocol_line(spec.protocol))}"]  # fmt: skip
    about = "; ".join(x for x in (d["license"] and f"licence {d['license']}",
                                  d["citation"] and f"cite {d['citation']}") if x)  # fmt: skip
    if about:
        lines.append(f"  {about}")
    if d["download"]:
        lines.append(f"  get it: {d['download']}")
    return lines


def _no_root_hint() -> str:
    from probekit._paths import DATA_ENV, default_data_dir

    return f"pass --data-root DIR, set ${DATA_ENV} or create {default_data_dir()}"


def _survey(name: str, data_root: Path | None) -> tuple[str, str, str, str, str, str, list[str]]:
    """(classes, kind, total clips, clips per split, hours, coloured location, notes) of one dataset; ProbekitError when broken."""
    from probekit.datasets import find_root, get_dataset, get_spec
    from probekit.datasets.registry import PATH_PREFIXES
    from probekit.errors import ProbekitError

    if not name.startswith(PATH_PREFIXES):
        try:
            find_root(name, data_root)
        except ProbekitError as e:  # the message lists every folder tried
            spec = get_spec(name)
            kind = "multi-label" if spec.multilabel else "multi-class"
            kind = "ASR (characters)" if spec.task == "asr" else kind
            classes = spec.num_classes or spec.declared_classes or "-"
            return (str(classes), kind, "-", "-", "-", "[yellow]not found[/]", [f"[yellow]{name}[/]: {e}"])
    ds = get_dataset(name, data_root)
    events = getattr(ds, "events", None)
    parts, total, paths = [], 0, []
    for split in ds.spec.splits:
        items = events(split) if events is not None else ds.clips(split)
        n = len(items)
        miss = ds.missing.get(split, 0)
        extra = f" ({sum(len(c.events) for c in items)} events)" if events is not None else ""
        parts.append(f"{split} {n}{extra}" + (f" ({miss} missing)" if miss else ""))
        total = n if split == "all" else total + (0 if "all" in ds.spec.splits else n)
        if split == "all" or "all" not in ds.spec.splits:
            paths.extend(c.path for c in items)
    notes = [f"[yellow]warning:[/] {w}" for w in ds.warnings]
    if name.startswith(PATH_PREFIXES):  # user data: its licence/citation when it states one (HEAR tasks)
        about = "; ".join(x for x in (ds.spec.license and f"licence {ds.spec.license}",
                                      ds.spec.citation and f"cite {ds.spec.citation}") if x)  # fmt: skip
        if about:
            notes.append(f"[cyan]{name}[/]: {about}")
    kind = (
        "event (timestamp)" if events is not None else "multi-label" if ds.spec.multilabel else "multi-class"
    )
    kind = "ASR (characters)" if ds.spec.task == "asr" else kind
    return (
        str(ds.spec.num_classes),
        kind,
        str(total),
        ", ".join(parts),
        _hours(paths, name),
        f"[green]{ds.root}[/]",
        notes,
    )


@app.command("datasets")
def datasets_cmd(
    data_root: DataRootOption = None,
    dataset: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset",
            "-d",
            help="Only these datasets (repeatable); also takes manifest:PATH.csv (relative paths from another "
            "folder: manifest:PATH.csv?root=DIR), "
            "events:PATH.csv (strong labels), hear:DIR (a HEAR task folder) and folder:DIR (class folders).",
        ),
    ] = None,
    brief: Annotated[
        bool, typer.Option("--brief", help="Only the table: leave out each dataset's facts below it.")
    ] = False,
) -> None:
    """List the datasets probekit knows: classes, clips found per split, hours, protocol and where (or what is
    expected); below the table each named dataset's facts: where it looks, splits and metric, the frontend
    presets per backbone family, the training protocol, licence, citation and how to get it.

    Exits 2 when a dataset is broken (a bad manifest, an unknown name, unreadable metadata); a built-in
    dataset that is simply not downloaded is only marked "not found", with the folders looked in.
    Hours come from the audio headers (a sample of 20,000 files at most; long scans are cached).
    """
    from probekit.datasets import data_roots, get_spec, list_datasets
    from probekit.datasets.registry import PATH_PREFIXES
    from probekit.errors import ProbekitError

    names = dataset or list_datasets()
    roots = data_roots(data_root)
    where = ", ".join(str(r) for r in roots) if roots else f"none ({_no_root_hint()})"
    table = Table(title=f"probekit datasets (data roots: {where})", header_style="bold cyan")
    table.add_column("dataset", no_wrap=True)
    table.add_column("classes", justify="right")
    table.add_column("kind")
    table.add_column("clips", justify="right")
    table.add_column("per split")
    table.add_column("hours", justify="right")
    table.add_column("protocol")
    table.add_column("location", overflow="fold")
    notes: list[str] = []
    facts: list[str] = []
    errors: list[ProbekitError] = []
    families = None
    for name in names:
        try:
            # a path's spec (hear:, folder:, ...) is read once, there, with the data root
            classes, kind, total, per_split, hours, location, more = _survey(name, data_root)
            named = not name.startswith(PATH_PREFIXES)
            protocol = get_spec(name).protocol if named else "-"
            if named and not brief:
                families = _recipe_families() if families is None else families
                facts.extend(_about(name, data_root, families))
        except ProbekitError as e:  # a bad manifest or name shows as a row, then the command fails
            table.add_row(name, "-", "-", "-", "-", "-", "-", "[red]error[/]")
            errors.append(e)
            continue
        table.add_row(name, classes, kind, total, per_split, hours, protocol, location)
        notes.extend(more)
    print_table(table, console)
    for note in notes:
        console.print(note, soft_wrap=False)
    for line in facts:
        console.print(line, soft_wrap=False, highlight=False)
    for e in errors[1:]:
        console.print(f"[red]error:[/] {e}", soft_wrap=True, highlight=False)
    if errors:
        raise errors[0]  # the CLI prints it as one line and exits 2


def _version(module: str) -> tuple[str, str]:
    import importlib

    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - report any import failure
        return "-", f"import failed: {type(e).__name__}: {e}"
    version = getattr(mod, "__version__", None)
    if version is None:  # some packages (jiwer) only carry their version in the installed metadata
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        try:
            version = dist_version(module)
        except PackageNotFoundError:
            version = "?"
    return str(version), "ok"


def _base_version(v: str) -> tuple[int, ...]:
    core = v.split("+")[0]
    return tuple(int(x) for x in core.split(".")[:2] if x.isdigit())


#: optional libraries -> the probekit extra that installs them (what each enables: pyproject.toml)
_OPTIONAL = {"soxr": "soxr", "transformers": "hf", "sed_eval": "events", "psds_eval": "events", "jiwer": "asr",
             "datasets": "datasets", "s3fs": "cloud", "submitit": "cluster"}


@app.command("doctor")
def doctor_cmd(
    data_root: DataRootOption = None,
) -> None:
    """Check the installation: versions, CPU/GPU, torch/torchaudio match, data roots."""
    import sys

    table = Table(title="probekit doctor", header_style="bold cyan")
    table.add_column("check")
    table.add_column("value", overflow="fold")
    table.add_column("status", overflow="fold")
    problems = 0

    def row(check: str, value: str, ok: bool | None, note: str = "") -> None:
        nonlocal problems
        mark = "[green]ok[/]" if ok else ("[red]problem[/]" if ok is False else "[yellow]note[/]")
        problems += ok is False
        table.add_row(check, value, f"{mark} {note if not ok else ''}".strip())

    import probekit

    row("probekit", probekit.__version__, True)
    row("python", f"{platform.python_version()} ({sys.executable})", sys.version_info >= (3, 10), "needs >= 3.10")
    versions = {}
    for mod in ("torch", "torchaudio", "numpy", "soundfile", "zarr", "numcodecs", "optuna", "sklearn", "safetensors"):
        v, status = _version(mod)
        versions[mod] = v
        required = mod in ("torch", "torchaudio", "numpy", "soundfile")
        row(mod, v, status == "ok" if required else (True if status == "ok" else None), "" if status == "ok" else status)
    for mod, extra in _OPTIONAL.items():  # optional: absent is a note naming the extra that brings it
        v, status = _version(mod)
        row(mod, v, True if status == "ok" else None, f"optional: pip install 'probekit[{extra}]'")
    if versions["torch"] != "-" and versions["torchaudio"] != "-":
        match = _base_version(versions["torch"]) == _base_version(versions["torchaudio"])
        row(
            "torch/torchaudio pair",
            f"{versions['torch']} / {versions['torchaudio']}",
            match,
            "" if match else "install matching versions: pip install 'torch==X.Y.*' 'torchaudio==X.Y.*'",
        )
        try:  # the two ops every frontend needs, on a tiny input
            import torch
            import torchaudio
            from torchaudio.compliance.kaldi import fbank

            fbank(torch.zeros(1, 1600), num_mel_bins=128, dither=0.0, htk_compat=True, window_type="hanning")
            torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=1024, hop_length=160, n_mels=128)(
                torch.zeros(1600)
            )
            row("torchaudio ops", "kaldi fbank + MelSpectrogram", True)
        except Exception as e:  # noqa: BLE001
            row(
                "torchaudio ops",
                f"{type(e).__name__}: {e}",
                False,
                "reinstall a matching torch/torchaudio pair",
            )
    try:
        import soundfile

        row(
            "libsndfile",
            soundfile.__libsndfile_version__,
            True,
            "(decodes wav/flac/ogg" + ("/mp3)" if "MP3" in soundfile.available_formats() else ", no mp3)"),
        )
    except Exception as e:  # noqa: BLE001
        row("libsndfile", str(e), False)
    row(
        "cpu", f"{platform.machine()} {platform.processor() or ''} x{os.cpu_count()}".replace("  ", " "), True
    )
    try:
        import torch

        if torch.cuda.is_available():
            gpus = ", ".join(
                f"{torch.cuda.get_device_name(i)} ({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
                for i in range(torch.cuda.device_count())
            )
            row("gpu", f"{gpus}; CUDA {torch.version.cuda}", True)
        else:
            row("gpu", "none (CPU only)", None, "device='auto' uses the CPU")
    except Exception as e:  # noqa: BLE001
        row("gpu", str(e), None)

    from probekit.datasets import ENV_VAR, data_roots, find_root, list_datasets
    from probekit.errors import ProbekitError

    roots = data_roots(data_root)
    src = "--data-root" if data_root is not None else f"${ENV_VAR}"
    if not roots:
        row("data roots", "none", None, f"pass --data-root DIR or set ${ENV_VAR}")
    for r in roots:
        row(f"data root ({src})", str(r), r.is_dir(), "" if r.is_dir() else "folder does not exist")
    if roots:
        found = []
        for name in list_datasets():
            try:
                found.append(f"{name}: {find_root(name, data_root)}")
            except ProbekitError:
                pass
        row("datasets found", "; ".join(found) or "none", None if not found else True)
    print_table(table, console)
    if problems:
        console.print(f"[bold red]{problems} problem(s) found[/]")
        raise typer.Exit(1)

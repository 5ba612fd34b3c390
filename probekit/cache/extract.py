"""Extraction: run a frozen backbone over a dataset split once and write its per-layer tokens to a store.

Decoding and the frontend run in DataLoader workers, the encoder on the GPU when there is one, and
finished shards are written by a background thread, so the encoder is the bottleneck
(benchmarks/extract_throughput.py). Work is planned in shards of the store: each shard is computed in
fixed batches and committed by its completion record, so a run killed at any moment and rerun produces
the same bytes as an uninterrupted one (same batch size and thread count; the batch size is kept in the
store for that reason).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import platform
import queue
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probekit.cache.store import (
    DTYPES,
    StoreLayout,
    TokenStore,
    content_key,
    default_clips_per_shard,
    disk_full_error,
    fmt_bytes,
    free_bytes,
    is_disk_full,
    key_differences,
    projected_bytes,
    store_path,
)
from probekit.errors import AudioError, CacheError, ConfigError, ProbekitError

ON_ERROR = ("skip", "fail")
FRONTEND_STYLES = ("model", "bat-paper")


def resolve_layers(layers: str | Sequence[int] | int, num_layers: int) -> tuple[int, ...]:
    """"all", "last", "0,5,11", an int or a sequence -> sorted unique 0-based block indices."""
    if isinstance(layers, str):
        s = layers.strip().lower()
        if s == "all":
            return tuple(range(num_layers))
        if s == "last":
            return (num_layers - 1,)
        try:
            items = [int(x) for x in s.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"bad --layers {layers!r}", hint="use all, last, or block indices like 0,5,11") from None
    elif isinstance(layers, int):
        items = [layers]
    else:
        items = [int(x) for x in layers]
    if not items:
        raise ConfigError("no layers selected", hint="use all, last, or block indices like 0,5,11")
    out = []
    for i in items:
        if not -num_layers <= i < num_layers:
            raise ConfigError(f"layer {i} out of range: the backbone has {num_layers} blocks (0..{num_layers - 1})")
        out.append(i % num_layers)
    return tuple(sorted(set(out)))


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int]:
    """"i/n" (or (i, n)) -> (i, n); None -> this torchrun rank of WORLD_SIZE, else (0, 1)."""
    if shard is None:
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # launched by torchrun: one shard per process
            return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        return 0, 1
    if isinstance(shard, str):
        try:
            i, n = (int(x) for x in shard.split("/"))
        except ValueError:
            raise ConfigError(f"bad --shard {shard!r}", hint="use i/n, e.g. 0/4 for the first of four") from None
    else:
        i, n = shard
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"bad shard {i}/{n}: need 0 <= i < n")
    return i, n


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked but CUDA is not available", hint="use --device cpu or auto")
    return d


def _precision(autocast: bool | str, device: torch.device) -> str:
    """The arithmetic the encoder runs in; part of the content key (autocast changes the tokens)."""
    if not autocast:
        return "float32"
    if autocast is True:
        return "autocast-bfloat16" if device.type == "cpu" or torch.cuda.is_bf16_supported() else "autocast-float16"
    if autocast not in ("bfloat16", "float16"):
        raise ConfigError(f"bad autocast {autocast!r}", hint="use True, 'bfloat16' or 'float16'")
    return f"autocast-{autocast}"


def _clip_samples(clip, sample_rate: int) -> int | None:
    """Samples of a clip after resampling, from its header only (None when unreadable)."""
    from probekit.audio.io import audio_info

    try:
        sr, frames, _ = audio_info(clip.path)
    except AudioError:
        return None
    start = round(clip.offset * sr)
    stop = frames if clip.duration is None else min(frames, start + round(clip.duration * sr))
    n = max(0, stop - start)
    return math.ceil(n * sample_rate / sr) if n else None


def dataset_frontend(backbone, dataset, clips, style: str | None):
    """The frontend config this backbone uses on this dataset; native-length recipes get the split's max.

    Every clip of a store has one token grid, so a recipe without a fixed frame count is padded (by its
    own padding rule) to the longest clip of the split; each clip's tokens then do not depend on which
    clips share its batch (the encoders attend to padding).
    """
    config = None
    if style is not None:
        if style not in FRONTEND_STYLES:
            raise ConfigError(f"unknown frontend style {style!r}", hint=f"use one of: {', '.join(FRONTEND_STYLES)}")
        card = getattr(backbone, "card", None)
        recipe = getattr(card, "frontend", None)
        if recipe:
            from probekit.audio.frontends import frontend_for

            config = frontend_for(recipe, dataset.spec, style)
    own = config is None
    if own:
        config = backbone.frontend.config
    if config.target_frames is None:
        from probekit.audio.frontends import make_frontend

        # the backbone's own frontend counts its frames (it may not be one of probekit's recipes, e.g. hf:)
        probe = backbone.frontend if own else make_frontend(config)
        lengths = [n for n in (_clip_samples(c, backbone.sample_rate) for c in clips) if n]
        frames = max((probe.num_frames(n) for n in lengths), default=probe.num_frames(backbone.sample_rate))
        config = dataclasses.replace(config, target_frames=frames)
    return config


@dataclass
class Plan:
    """Everything decided before extraction starts (also what --dry-run shows)."""

    backbone: Any
    dataset: Any
    split: str
    clips: list
    key: dict
    path: Path
    layout: StoreLayout | None
    device: torch.device
    precision: str
    frontend: dict

    @property
    def total_bytes(self) -> int:
        return self.layout.num_clips * self.layout.clip_bytes()


def _probe_grid(backbone, device, frames: int, bins: int) -> tuple[tuple[int, int], int]:
    with torch.inference_mode():
        x = torch.zeros(1, 1, frames, bins, device=device)
        lt = backbone.encode(x, torch.tensor([frames], device=device))
    return tuple(int(v) for v in lt.grid), int(lt.patch.shape[-1])


def plan(
    backbone,
    dataset,
    split: str,
    *,
    cache_dir=None,
    layers="all",
    dtype: str = "float16",
    batch_size: int = 32,
    device="auto",
    autocast: bool | str = False,
    frontend_style: str | None = "model",
    clips_per_shard: int | None = None,
    need_layout: bool = True,
) -> Plan:
    """Resolve frontend, layers, key, store path and layout for one extraction (nothing is written).

    With `need_layout=False` (readers) no forward pass is run and `layout` is that of an existing store
    or None.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"unknown --dtype {dtype!r}", hint=f"use one of: {', '.join(DTYPES)}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    clips = list(dataset.clips(split))
    if not clips:
        raise CacheError(f"dataset {dataset.name!r} split {split!r} has no clips", hint="check the data root")
    config = dataset_frontend(backbone, dataset, clips, frontend_style)
    try:
        current = backbone.frontend.config
    except ProbekitError:  # a frontend the backbone cannot build by itself; the dataset's replaces it
        current = None
    if config != current:
        if not hasattr(backbone, "with_frontend"):
            raise ConfigError(
                f"backbone {backbone.name!r} cannot switch frontends (no with_frontend)",
                hint="pass frontend_style=None to use its own frontend",
            )
        backbone = backbone.with_frontend(config)
    if hasattr(backbone, "eval"):
        backbone.eval()
    if need_layout and hasattr(backbone, "to"):  # readers only compute the key: leave the model where it is
        backbone = backbone.to(dev) or backbone
    layer_ids = resolve_layers(layers, backbone.num_layers)
    precision = _precision(autocast, dev)
    frontend = dict(backbone.frontend.config.to_dict())
    bkey = dict(backbone.cache_key())
    bkey["precision"] = precision
    spec = dataset.spec
    key = content_key(
        backbone=bkey,
        frontend=frontend,
        dataset=spec.name,
        split=split,
        fingerprint=dataset.fingerprint(split),
        layers=layer_ids,
        dtype=dtype,
    )
    path = store_path(cache_dir, key, backbone.name)
    if (path / "zarr.json").exists():
        layout = TokenStore(path).layout  # an existing store keeps its layout (and batch size) on resume
    elif not need_layout:
        layout = None
    else:
        grid, dim = _probe_grid(backbone, dev, config.target_frames, backbone.frontend.num_bins)
        if dim != backbone.embed_dim:
            raise CacheError(f"backbone {backbone.name!r} returned width {dim}, declares embed_dim {backbone.embed_dim}")
        one = projected_bytes(1, len(layer_ids), grid[0] * grid[1], dim, dtype)
        layout = StoreLayout(
            num_clips=len(clips),
            layers=layer_ids,
            grid=grid,
            embed_dim=dim,
            dtype=dtype,
            # a shard never spans past the clips: its index would list chunks that cannot exist
            clips_per_shard=min(len(clips), clips_per_shard or default_clips_per_shard(one, batch_size)),
            batch_size=batch_size,
            num_classes=spec.num_classes,
            multilabel=spec.multilabel,
            has_folds=any(c.fold is not None for c in clips),
        )
    return Plan(backbone, dataset, split, clips, key, path, layout, dev, precision, frontend)


# ---- dry run --------------------------------------------------------------------------------------
@dataclass
class DryRun:
    path: Path
    clips: int
    grid: tuple[int, int]
    embed_dim: int
    num_layers: int
    chosen: tuple[tuple[int, ...], str]
    rows: list[dict]  # layers, dtype, bytes, chosen
    free: int
    existing: int

    @property
    def needed(self) -> int:
        return next(r["bytes"] for r in self.rows if r["chosen"])

    @property
    def fits(self) -> bool:
        return self.needed - self.existing <= self.free


def dry_run_report(p: Plan) -> DryRun:
    L = p.backbone.num_layers
    lay = p.layout
    choices = {"all": tuple(range(L)), "last": (L - 1,)}
    if lay.layers not in choices.values():
        choices[",".join(map(str, lay.layers))] = lay.layers
    rows = []
    for name, ids in choices.items():
        for dt in DTYPES:
            rows.append(
                {
                    "layers": name,
                    "dtype": dt,
                    "bytes": projected_bytes(lay.num_clips, len(ids), lay.num_tokens, lay.embed_dim, dt),
                    "chosen": ids == lay.layers and dt == lay.dtype,
                }
            )
    from probekit.cache.store import dir_bytes

    existing = dir_bytes(p.path) if p.path.exists() else 0
    return DryRun(p.path, lay.num_clips, lay.grid, lay.embed_dim, L, (lay.layers, lay.dtype), rows,
                  free_bytes(p.path.parent), existing)


def print_dry_run(report: DryRun, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"projected store size: {report.clips} clips, grid {report.grid}, dim {report.embed_dim}")
    for col in ("layers", "dtype", "size", ""):
        t.add_column(col, justify="right" if col == "size" else "left")
    for r in report.rows:
        t.add_row(r["layers"], r["dtype"], fmt_bytes(r["bytes"]), "[bold green]<- chosen[/]" if r["chosen"] else "")
    console.print(t)
    verdict = "[green]fits[/]" if report.fits else "[bold red]does not fit[/]"
    console.print(
        f"store: {report.path}\nneeded {fmt_bytes(report.needed)} (already on disk {fmt_bytes(report.existing)}), "
        f"free {fmt_bytes(report.free)}: {verdict}",
        highlight=False,
    )


# ---- the pipeline ----------------------------------------------------------------------------------
class _ClipFeatures(torch.utils.data.Dataset):
    """Decode + frontend for one clip, in a DataLoader worker. Bad clips come back as errors, not raises."""

    def __init__(self, clips, frontend, sample_rate: int):
        self.clips, self.frontend, self.sample_rate = clips, frontend, sample_rate

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int):
        from probekit.audio.io import load_audio

        c = self.clips[i]
        try:
            wave = load_audio(c.path, sample_rate=self.sample_rate, offset=c.offset, duration=c.duration)
            with torch.inference_mode():
                feats = self.frontend.features(wave)
            return i, feats, int(self.frontend.valid_frames(wave.numel())), None
        except ProbekitError as e:
            msg = str(e) if isinstance(e, AudioError) else f"{c.path}: {e}"
            return i, None, 0, msg


def _collate(items):
    rows = torch.tensor([it[0] for it in items], dtype=torch.long)
    ok = [it for it in items if it[3] is None]
    feats = torch.stack([it[1] for it in ok]) if ok else None  # (B_ok, 1, frames, bins)
    valid = torch.tensor([it[2] for it in ok], dtype=torch.long)
    ok_mask = torch.tensor([it[3] is None for it in items])
    errors = [(it[0], it[3]) for it in items if it[3] is not None]
    return rows, feats, valid, ok_mask, errors


def _worker_init(_):
    torch.set_num_threads(1)  # one decode per worker; the workers are the parallelism


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-token int8: x ~= q * scale, scale = max|x| / 127 over the last dim."""
    x = x.float()
    scale = x.abs().amax(dim=-1) / 127.0
    q = torch.where(scale[..., None] > 0, x / scale.clamp_min(torch.finfo(torch.float32).tiny)[..., None], 0.0)
    return q.round().clamp_(-127, 127).to(torch.int8), scale


def encode_for_storage(t: torch.Tensor, dtype: str) -> dict[str, np.ndarray]:
    """Tokens -> the arrays stored for them (on the tensor's device, then to numpy)."""
    if dtype == "int8":
        q, s = quantize_int8(t)
        return {"": q.cpu().numpy(), "_scale": s.cpu().numpy()}
    if dtype == "bfloat16":
        return {"": t.to(torch.bfloat16).view(torch.int16).cpu().numpy().view(np.uint16)}
    return {"": t.to(getattr(torch, dtype)).cpu().numpy()}


class _Writer(threading.Thread):
    """Collects batch outputs into shard buffers and writes each shard when it is whole."""

    def __init__(self, store: TokenStore, shards: Sequence[int]):
        super().__init__(daemon=True, name="probekit-cache-writer")
        self.store = store
        self.q: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.abort = False
        self.bytes_written = 0
        self.shards_written = 0
        self.failed: list[dict] = []
        self._buf: dict[int, dict] = {}

    def _buffer(self, j: int, arrays: dict[str, np.ndarray]) -> dict:
        b = self._buf.get(j)
        if b is None:
            s, e = self.store.layout.shard_rows(j)
            b = {
                "start": s,
                "left": e - s,
                "arrays": {k: np.zeros((e - s, *v.shape[1:]), dtype=v.dtype) for k, v in arrays.items()},
                "valid": np.zeros(e - s, dtype=np.int64),
                "failed": [],
            }
            self._buf[j] = b
        return b

    def run(self) -> None:
        S = self.store.layout.clips_per_shard
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error is not None or self.abort:
                continue  # drain so the producer never blocks
            try:
                rows, arrays, valid, failed = item
                j = int(rows[0]) // S
                b = self._buffer(j, arrays)
                local = rows - b["start"]
                for k, v in arrays.items():
                    b["arrays"][k][local] = v
                b["valid"][local] = valid
                b["failed"] += failed
                b["left"] -= len(rows)
                if b["left"] == 0:
                    self.bytes_written += self.store.write_shard(j, b["arrays"], b["valid"], b["failed"])
                    self.shards_written += 1
                    self.failed += b["failed"]
                    del self._buf[j]
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                self.error = e

    def put(self, item) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self.q.put(None)
        self.join()
        if self.error is not None:
            raise self.error


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed or 0:.1f} clips/s")

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TextColumn("{task.fields[mb]:.1f} MB of tokens"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def _provenance(p: Plan, batch_size: int, workers: int) -> dict:
    import zarr

    import probekit

    card = getattr(p.backbone, "card", None)
    card_d = dataclasses.asdict(card) if dataclasses.is_dataclass(card) else (card or {})
    dev = p.device
    return {
        "probekit_version": probekit.__version__,
        "torch_version": torch.__version__,
        "zarr_version": zarr.__version__,
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({platform.processor() or 'cpu'})",
        "precision": p.precision,
        "autocast": p.precision != "float32",
        "backbone_name": p.backbone.name,
        "backbone_card": card_d,
        "checkpoint_sha256": getattr(p.backbone, "checkpoint_sha256", None),
        "frontend": p.frontend,
        "dataset": {
            "name": p.dataset.spec.name,
            "split": p.split,
            "fingerprint": p.key["dataset"]["fingerprint"],
            "root": str(getattr(p.dataset, "root", "")),
            "missing_files": getattr(p.dataset, "missing", {}).get(p.split, 0),
        },
        "batch_size": batch_size,
        "workers": workers,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _labels(clips, spec) -> np.ndarray:
    if spec.multilabel:
        out = np.zeros((len(clips), spec.num_classes), dtype=np.uint8)
        for i, c in enumerate(clips):
            out[i, list(c.labels)] = 1
        return out
    bad = [c.id for c in clips if len(c.labels) != 1]
    if bad:
        raise CacheError(f"single-label dataset {spec.name!r} has clips with {len(bad)} label sets != 1: {bad[:3]}")
    return np.asarray([c.labels[0] for c in clips], dtype=np.int64)


def default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def extract(
    backbone,
    dataset,
    split: str = "train",
    *,
    cache_dir: str | os.PathLike | None = None,
    layers: str | Sequence[int] = "all",
    dtype: str = "float16",
    batch_size: int = 32,
    device: str = "auto",
    workers: int | None = None,
    shard: str | tuple[int, int] | None = None,
    on_error: str = "skip",
    dry_run: bool = False,
    force: bool = False,
    autocast: bool | str = False,
    progress: bool = True,
    frontend_style: str | None = "model",
    ignore_disk_space: bool = False,
    clips_per_shard: int | None = None,
    console=None,
) -> TokenStore | DryRun:
    """Extract per-layer tokens of `backbone` on `dataset`/`split` into the content-addressed store.

    Reuses a finished store with the same key, resumes an unfinished one, and otherwise creates it.

    Args:
        backbone: anything satisfying `probekit.backbones.protocol.Backbone`.
        dataset: a `probekit.datasets.base.Dataset`.
        split: which split to extract.
        cache_dir: root of the stores (default `$PROBEKIT_CACHE` or the user cache dir).
        layers: "all", "last", "0,5,11" or a sequence of block indices.
        dtype: float16 | bfloat16 | float32 | int8 (per-token symmetric, with float32 scales).
        batch_size: clips per encoder call (a resumed store keeps the batch size it was started with).
        device: "auto" (CUDA when present), "cpu", "cuda:1", ...
        workers: DataLoader workers for decoding + frontend (default: CPU cores - 1, at most 8).
        shard: "i/n": this process extracts shards i, i+n, ... of the store (several processes or GPUs);
            under torchrun the rank/world size are used when not given.
        on_error: "skip" records a failed clip (zeros, listed in the store) and goes on; "fail" stops.
        dry_run: return the projected sizes and free disk (a `DryRun`) without writing anything.
        force: delete an existing store with this key first.
        autocast: run the encoder under autocast (True = bfloat16; or "float16"); part of the key.
        progress: show a rich progress bar.
        frontend_style: "model" (the model authors' recipe), "bat-paper", or None (the backbone's own
            frontend as configured).
        ignore_disk_space: start even when the projected size exceeds the free space.
        clips_per_shard: shard size of a new store (default: ~256 MB of patch tokens per shard).

    Returns:
        The finished `TokenStore` (or, with `shard`, this process's part of it; the last process to
        finish finalises the store), or a `DryRun` report.

    Raises:
        CacheError: locked store, disk full, not enough space; AudioError with on_error="fail".
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    if on_error not in ON_ERROR:
        raise ConfigError(f"bad --on-error {on_error!r}", hint="use skip or fail")
    si, sn = parse_shard(shard)
    p = plan(
        backbone, dataset, split, cache_dir=cache_dir, layers=layers, dtype=dtype, batch_size=batch_size,
        device=device, autocast=autocast, frontend_style=frontend_style, clips_per_shard=clips_per_shard,
    )
    if dry_run:
        report = dry_run_report(p)
        if progress:
            print_dry_run(report, console)
        return report
    if force and p.path.exists():
        from probekit.cache.store import remove_store

        remove_store(p.path)
        p = plan(
            backbone, dataset, split, cache_dir=cache_dir, layers=layers, dtype=dtype, batch_size=batch_size,
            device=device, autocast=autocast, frontend_style=frontend_style, clips_per_shard=clips_per_shard,
        )
    if p.path.exists():
        existing = TokenStore(p.path)
        if existing.key != p.key:  # copied or renamed by hand: never reuse or resume it as these inputs' tokens
            raise CacheError(
                f"{p.path} holds tokens of other inputs than its name says: "
                + "; ".join(key_differences(existing.key, p.key)[:4]),
                hint="it was copied or renamed by hand; remove it (`probekit cache rm`) and extract again",
            )
        if existing.complete:
            if progress:
                console.print(f"[green]cache hit[/]: {p.path}", highlight=False)
            return existing
    if p.layout.batch_size != batch_size and progress:
        console.print(f"resuming with the store's batch size {p.layout.batch_size} (bitwise-identical results)")
    bs = p.layout.batch_size
    layout = p.layout

    # disk space: what is left to write must fit
    done_before = TokenStore(p.path).done_shards() if p.path.exists() else set()
    mine = [j for j in range(layout.num_shards) if j % sn == si]
    pending = [j for j in mine if j not in done_before]
    todo_clips = sum(layout.shard_rows(j)[1] - layout.shard_rows(j)[0] for j in pending)
    need = todo_clips * layout.clip_bytes()
    free = free_bytes(p.path.parent)
    if need > free and not ignore_disk_space:
        raise CacheError(
            f"extraction needs about {fmt_bytes(need)} but {p.path.parent} has {fmt_bytes(free)} free",
            hint="free space, pick another --cache-dir, fewer --layers or --dtype int8; "
            "--ignore-disk-space starts anyway",
        )

    n_workers = default_workers() if workers is None else int(workers)
    store = TokenStore.create_or_open(
        p.path,
        key=p.key,
        layout=layout,
        provenance=_provenance(p, bs, n_workers),
        clip_ids=[c.id for c in p.clips],
        labels=_labels(p.clips, dataset.spec),
        folds=np.asarray([-1 if c.fold is None else c.fold for c in p.clips]) if layout.has_folds else None,
        classes=dataset.spec.classes,
    )
    with store.lock((si, sn)):
        pending = [j for j in mine if j not in store.done_shards()]  # re-read under the lock
        if pending:
            _run(p, store, pending, bs, n_workers, on_error, progress, console)
        store.finalize()
    if progress:
        _print_summary(store, console)
    return store


def _run(p: Plan, store: TokenStore, pending: list[int], bs: int, n_workers: int, on_error: str, progress: bool,
         console) -> None:
    layout = store.layout
    batches = []
    for j in pending:
        s, e = layout.shard_rows(j)
        batches += [list(range(b, min(b + bs, e))) for b in range(s, e, bs)]
    total = sum(len(b) for b in batches)
    dev = p.device
    frontend = p.backbone.frontend
    if hasattr(frontend, "cpu"):  # workers compute features on the CPU; leave the backbone's own copy alone
        frontend = copy.deepcopy(frontend).cpu()
    source = _ClipFeatures(p.clips, frontend, p.backbone.sample_rate)
    loader = torch.utils.data.DataLoader(
        source,
        batch_sampler=batches,
        collate_fn=_collate,
        num_workers=n_workers,
        pin_memory=dev.type == "cuda",
        worker_init_fn=_worker_init if n_workers else None,
        prefetch_factor=4 if n_workers else None,
        persistent_workers=False,
    )
    layer_idx = torch.tensor(layout.layers, dtype=torch.long, device=dev)
    amp = p.precision.startswith("autocast")
    amp_dtype = torch.bfloat16 if p.precision.endswith("bfloat16") else torch.float16
    writer = _Writer(store, pending)
    writer.start()
    ids = [c.id for c in p.clips]
    N, D, L = layout.num_tokens, layout.embed_dim, layout.num_layers
    sdt = np.dtype({"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32, "int8": np.int8}[layout.dtype])
    produced = 0  # token bytes handed to the writer; counted per batch, as shards are written whole at their end
    try:
        with _progress(progress) as bar:
            task = bar.add_task(f"extract {p.dataset.spec.name}/{p.split}", total=total, mb=0.0)
            for rows, feats, valid_frames, ok, errors in loader:
                failed = [{"index": int(i), "id": ids[int(i)], "error": msg} for i, msg in errors]
                if failed and on_error == "fail":
                    raise AudioError(p.clips[failed[0]["index"]].path, failed[0]["error"].split(": ", 1)[-1],
                                     hint="--on-error skip records failed clips and goes on")
                B = len(rows)
                arrays = {
                    "patch": np.zeros((B, L, N, D), dtype=sdt),
                    "cls": np.zeros((B, L, D), dtype=sdt),
                }
                if layout.dtype == "int8":
                    arrays["patch_scale"] = np.zeros((B, L, N), dtype=np.float32)
                    arrays["cls_scale"] = np.zeros((B, L), dtype=np.float32)
                valid = np.zeros(B, dtype=np.int64)
                if feats is not None:
                    okn = ok.numpy()
                    with torch.inference_mode(), torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
                        lt = p.backbone.encode(feats.to(dev, non_blocking=True), valid_frames.to(dev))
                        if tuple(lt.grid) != layout.grid:
                            raise CacheError(f"backbone returned grid {tuple(lt.grid)}, the store has {layout.grid}")
                        patch = lt.patch.index_select(1, layer_idx)
                        cls = lt.cls.index_select(1, layer_idx)
                    for name, t in (("patch", patch), ("cls", cls)):
                        for suffix, arr in encode_for_storage(t, layout.dtype).items():
                            arrays[name + suffix][okn] = arr
                    valid[okn] = lt.valid_rows.cpu().numpy()
                writer.put((rows.numpy(), arrays, valid, failed))
                produced += sum(a.nbytes for a in arrays.values())
                bar.update(task, advance=B, mb=produced / 1e6)
        writer.close()
    except BaseException as e:
        writer.abort = True  # drop queued batches; a shard being written still completes or is redone
        writer.q.put(None)
        writer.join()
        if is_disk_full(e) and not isinstance(e, CacheError):
            raise disk_full_error(store.path, e) from e
        raise


def _print_summary(store: TokenStore, console) -> None:
    from rich.table import Table

    s = store.summary()
    failed = store.meta.get("failed_clips", [])
    t = Table(title="extraction summary", show_header=False)
    for k in ("path", "backbone", "dataset", "split", "clips", "layers", "grid", "dim", "dtype", "done"):
        t.add_row(k, str(s[k]))
    t.add_row("size", fmt_bytes(s["bytes"]))
    t.add_row("failed clips", str(len(failed)))
    console.print(t)
    for f in failed[:20]:
        console.print(f"  [yellow]failed[/] {f['id']}: {f['error']}", highlight=False)
    if len(failed) > 20:
        console.print(f"  ... and {len(failed) - 20} more (store attribute probekit.failed_clips)")

"""Extraction, the write path: run a frozen backbone over a dataset split once and write its tokens to a store.

Decoding and the frontend run in DataLoader workers (`probekit.cache.pipeline`), the encoder on the GPU
when there is one, and finished shards are written by a background thread, so the encoder is the
bottleneck (benchmarks/extract_throughput.py). Work is planned in shards of the store: each shard is
computed in fixed batches and committed by its completion record, so a run killed at any moment and
rerun produces the same bytes as an uninterrupted one (same batch size and thread count; the batch size
is kept in the store for that reason).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import queue
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from probekit._console import Bar

from probekit.cache import fs
from probekit.cache.codec import encode_for_storage, storage_dtype
from probekit.cache.disk import disk_full_error, fmt_bytes, free_bytes, is_disk_full
from probekit.cache.keys import key_differences
from probekit.cache.pipeline import ClipFeatures, clip_folds, clip_labels, feature_loader
from probekit.cache.planning import DryRun, Plan, dry_run_report, new_layout, plan
from probekit.cache.spec import TOKEN_FIELDS, RunOptions, TokenSpec, split_options
from probekit.cache.store import TokenStore, remove_store
from probekit.errors import AudioError, CacheError

__all__ = ["Extraction", "default_workers", "dry_run_of", "extract", "run_extraction"]


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


def _provenance(p: Plan, batch_size: int, workers: int) -> dict:
    import zarr

    import probekit

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
        "backbone_card": dataclasses.asdict(p.backbone.card),
        "checkpoint_sha256": p.backbone.checkpoint_sha256,
        "frontend": p.frontend,
        "dataset": {
            "name": p.dataset.spec.name,
            "split": p.split,
            "fingerprint": p.key["dataset"]["fingerprint"],
            "root": str(p.dataset.root),
            "missing_files": p.dataset.missing.get(p.split, 0),
        },
        "batch_size": batch_size,
        "workers": workers,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))


@dataclass
class Extraction:
    """What `run_extraction` did: the store, whether it was already finished, and a resumed batch size."""

    store: TokenStore
    cache_hit: bool = False
    resumed_batch_size: int | None = None  # the store's own batch size, when it differs from the asked one
    repaired: dict[int, str] = dataclasses.field(default_factory=dict)  # shards extracted again, and why


def extract(backbone, dataset=None, split: str = "train", *, tokens: TokenSpec | None = None,
            run: RunOptions | None = None, dry_run: bool = False, force: bool = False,
            **options) -> TokenStore | DryRun:
    """Extract per-layer tokens of `backbone` on `dataset`/`split` into the content-addressed store.

    Reuses a finished store with the same key, resumes an unfinished one, and otherwise creates it.

    Args:
        backbone: anything satisfying `probekit.backbones.protocol.Backbone`, or a `Plan` (then `dataset`,
            `split` and `tokens` come from it).
        dataset: a `probekit.datasets.base.Dataset`.
        split: which split to extract.
        tokens: what to store (`TokenSpec`: layers, dtype, frontend style, autocast).
        run: how to run (`RunOptions`: device, workers, batch size, cache dir, progress, on_error, shard, ...).
        dry_run: return the projected sizes and free disk (a `DryRun`) without writing anything.
        force: delete an existing store with this key first.
        **options: the fields of `TokenSpec` and `RunOptions` as flat keywords (layers="last", cache_dir=...).

    Returns:
        The finished `TokenStore` (or, with `shard`, this process's part of it; the last process to
        finish finalises the store), or a `DryRun` report.

    Raises:
        CacheError: locked store, disk full, not enough space, every clip of the split failed,
            NaN/Inf tokens (unless allow_nonfinite); AudioError with on_error="fail".
    """
    if isinstance(backbone, Plan):
        p = backbone
        if tokens is not None or set(options) & TOKEN_FIELDS:
            raise TypeError("extract(plan, ...): the plan fixes the tokens; pass only run options")
        _, run = split_options(options, p.tokens, run, where="extract")
    else:
        tokens, run = split_options(options, tokens, run, where="extract")
        p = plan(backbone, dataset, split, tokens, run)
    if dry_run:
        return dry_run_of(p, run)
    return run_extraction(p, run, force=force).store


def dry_run_of(p: Plan, run: RunOptions) -> DryRun:
    """Projected sizes and free disk for this plan (one forward pass for the token grid; nothing written)."""
    p = dataclasses.replace(p, backbone=p.backbone.to(p.device))
    return dry_run_report(p, p.existing_layout() or new_layout(p, run))


def run_extraction(p: Plan, run: RunOptions, *, force: bool = False) -> Extraction:
    """Reuse, resume or create the store of plan `p` (see `extract`)."""
    si, sn = run.shard_of()
    if force and fs.store_exists(p.path):
        remove_store(p.path)
    full_check = bool(run.verify)
    redo: dict[int, str] = {}
    if fs.store_exists(p.path):
        existing = TokenStore(p.path)
        if existing.key != p.key:  # copied or renamed by hand: never reuse or resume it as these inputs' tokens
            raise CacheError(
                f"{p.path} holds tokens of other inputs than its name says: "
                + "; ".join(key_differences(existing.key, p.key)[:4]),
                hint="it was copied or renamed by hand; remove it (`probekit cache rm`) and extract again",
            )
        if existing.complete:
            full_check = run.verify is None or run.verify
            mine = [j for j in range(existing.layout.num_shards) if j % sn == si]
            redo = _shards_to_redo(p, existing, mine, full=full_check)
            if not redo:
                _refuse_all_failed(existing, p)
                return Extraction(existing, cache_hit=True)
    p = dataclasses.replace(p, backbone=p.backbone.to(p.device))
    layout = p.existing_layout() or new_layout(p, run)  # an existing store keeps its layout (and batch size)
    resumed = layout.batch_size if layout.batch_size != run.batch_size else None
    bs = layout.batch_size

    # disk space: what is left to write must fit
    done_before = TokenStore(p.path).done_shards() - set(redo) if fs.store_exists(p.path) else set()
    mine = [j for j in range(layout.num_shards) if j % sn == si]
    pending = [j for j in mine if j not in done_before]
    todo_clips = sum(layout.shard_rows(j)[1] - layout.shard_rows(j)[0] for j in pending)
    need = todo_clips * layout.clip_bytes()
    free = free_bytes(p.path.parent)
    if need > free and not run.ignore_disk_space:
        raise CacheError(
            f"extraction needs about {fmt_bytes(need)} but {p.path.parent} has {fmt_bytes(free)} free",
            hint="free space, pick another cache dir, fewer layers or dtype int8 "
            "(or ignore_disk_space / --ignore-disk-space to start anyway)",
        )

    n_workers = default_workers() if run.workers is None else int(run.workers)
    store = TokenStore.create_or_open(
        p.path,
        key=p.key,
        layout=layout,
        provenance=_provenance(p, bs, n_workers),
        clip_ids=[c.id for c in p.clips],
        labels=clip_labels(p.clips, p.dataset.spec),
        folds=clip_folds(p.clips) if layout.has_folds else None,
        classes=p.dataset.spec.classes,
    )
    with store.lock((si, sn)):
        # re-read under the lock: damaged shards and shards of failed clips that decode now are redone
        redo = _shards_to_redo(p, store, mine, full=full_check)
        store.reopen_shards(list(redo))
        pending = [j for j in mine if j not in store.done_shards()]
        if pending:
            _run(p, store, pending, n_workers, run)
        store.finalize()
    _refuse_all_failed(store, p)
    return Extraction(store, resumed_batch_size=resumed, repaired=redo)


# ---- integrity: what a rerun redoes, and what it refuses -------------------------------------------
def _shards_to_redo(p: Plan, store: TokenStore, shards: Sequence[int], *, full: bool) -> dict[int, str]:
    """Finished shards among `shards` to extract again, with the reason.

    Damaged ones (missing, 0-byte or wrong-size files, unreadable completion records; with `full` also
    checksum mismatches) and ones holding a failed clip that decodes now (a file that was unreadable,
    e.g. for its permissions, and has been fixed: the dataset fingerprint does not see that).
    """
    redo = store.damaged_shards(shards, full=full)
    S = store.layout.clips_per_shard
    mine = set(shards) & store.done_shards()
    retry = [f for f in store.failed_clips() if int(f["index"]) // S in mine and int(f["index"]) // S not in redo]
    if retry:
        source = ClipFeatures(p.clips, copy.deepcopy(p.backbone.frontend).to("cpu"), p.backbone.sample_rate)
        for f in retry:
            i = int(f["index"])
            if i < len(p.clips) and source[i][3] is None:
                redo.setdefault(i // S, f"failed clip {f['id']} decodes now")
    return redo


def _refuse_all_failed(store: TokenStore, p: Plan) -> None:
    """A store in which every clip failed holds no tokens: an error naming the split, not a silent success."""
    if not store.complete:
        return
    failed = store.failed_clips()
    n = store.layout.num_clips
    if n and len(failed) >= n:
        first = "; ".join(f"{f['id']}: {f['error']}" for f in failed[:3])
        raise CacheError(
            f"every one of the {n} clips of {p.dataset.spec.name}/{p.split} failed to extract (first: {first})",
            hint="fix the files or the paths (--data-root, the manifest); a rerun retries failed clips",
        )


def _nonfinite_clips(patch: torch.Tensor, cls: torch.Tensor, dtype: str) -> torch.Tensor:
    """(B,) bool: clips with a NaN/Inf token as stored (float16 also overflows to Inf past 65504)."""
    def bad(t):
        t = t.to(torch.float16) if dtype == "float16" else t
        return ~torch.isfinite(t).flatten(1).all(1)

    return bad(patch) | bad(cls)


def _refuse_nonfinite(p: Plan, rows: np.ndarray, bad: np.ndarray) -> None:
    ids = [p.clips[int(i)].id for i in rows[bad]]
    raise CacheError(
        f"{p.backbone.name} produced NaN/Inf tokens for {len(ids)} of {len(rows)} clips of "
        f"{p.dataset.spec.name}/{p.split} in the batch of clips {int(rows[0])}-{int(rows[-1])} "
        f"(first: {', '.join(ids[:3])})",
        hint="check the checkpoint for NaN/Inf weights (`probekit check-backbone`); "
        "--allow-nonfinite (allow_nonfinite=True) stores them anyway",
    )


def _run(p: Plan, store: TokenStore, pending: list[int], n_workers: int, run: RunOptions) -> None:
    layout = store.layout
    bs = layout.batch_size
    batches = []
    for j in pending:
        s, e = layout.shard_rows(j)
        batches += [list(range(b, min(b + bs, e))) for b in range(s, e, bs)]
    total = sum(len(b) for b in batches)
    dev = p.device
    loader = feature_loader(p.clips, p.backbone.frontend, p.backbone.sample_rate, batches, workers=n_workers,
                            device=dev, prefetch_factor=4)
    layer_idx = torch.tensor(layout.layers, dtype=torch.long, device=dev)
    amp = p.precision.startswith("autocast")
    amp_dtype = torch.bfloat16 if p.precision.endswith("bfloat16") else torch.float16
    writer = _Writer(store, pending)
    writer.start()
    ids = [c.id for c in p.clips]
    N, D, L = layout.num_tokens, layout.embed_dim, layout.num_layers
    sdt = storage_dtype(layout.dtype)
    produced = 0  # token bytes handed to the writer; counted per batch, as shards are written whole at their end
    try:
        with Bar(f"extract {p.dataset.spec.name}/{p.split}", total, unit="clips", enabled=run.progress) as bar:
            for rows, feats, valid_frames, ok, errors in loader:
                failed = [{"index": int(i), "id": ids[int(i)], "error": msg} for i, msg in errors]
                if failed and run.on_error == "fail":
                    raise AudioError(p.clips[failed[0]["index"]].path, failed[0]["error"].split(": ", 1)[-1],
                                     hint="on_error='skip' (--on-error skip) records failed clips and goes on")
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
                    if not run.allow_nonfinite:
                        bad = _nonfinite_clips(patch, cls, layout.dtype).cpu().numpy()
                        if bad.any():
                            _refuse_nonfinite(p, rows.numpy()[okn], bad)
                    for name, t in (("patch", patch), ("cls", cls)):
                        for suffix, arr in encode_for_storage(t, layout.dtype).items():
                            arrays[name + suffix][okn] = arr
                    valid[okn] = lt.valid_rows.cpu().numpy()
                writer.put((rows.numpy(), arrays, valid, failed))
                produced += sum(a.nbytes for a in arrays.values())
                bar.update(advance=B, info=f"{produced / 1e6:.4g} MB of tokens")
        writer.close()
    except BaseException as e:
        writer.abort = True  # drop queued batches; a shard being written still completes or is redone
        writer.q.put(None)
        writer.join()
        if is_disk_full(e) and not isinstance(e, CacheError):
            raise disk_full_error(store.path, e) from e
        raise

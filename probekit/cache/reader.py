"""Reading a token store as `TokenData`: batches of the requested layers and token kinds, fast.

Batches are assembled from the shard files through their index (see `probekit.cache.shards.ShardReader`)
by a small thread pool that works a few batches ahead, and converted to float32 by the codec (int8
dequantised, bfloat16 widened). A store that fits in memory can be preloaded once; later epochs then
read from RAM.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from probekit.cache.codec import decode_to_float as _to_float
from probekit.cache.disk import fmt_bytes
from probekit.cache.keys import key_differences
from probekit.cache.planning import Plan, plan
from probekit.cache.shards import ShardReader
from probekit.cache.spec import RunOptions, TokenSpec, split_options
from probekit.cache.store import TokenStore, list_stores
from probekit.errors import CacheError
from probekit.tokens import TokenBatch, TokenRequest, batch_order

__all__ = ["CacheReader", "SHUFFLE_ORDERS", "open_cache", "shard_batch_order", "shard_order"]

# "global": one permutation of all clips, the same as InMemoryTokens/OnlineTokens draw for the seed (the
# default: cache, RAM and live tokens give the same batches, and resumed runs replay them exactly).
# "shard": shard-aware shuffling (opt-in): shards in a random order, a few at a time, clips shuffled within
# that window, so a batch touches at most `shard_window` shards (sequential-like reads from cold disks).
SHUFFLE_ORDERS = ("global", "shard")


def shard_order(shard_of: np.ndarray, indices: np.ndarray, seed, *, window: int = 2) -> np.ndarray:
    """`indices` shuffled shard-aware: shard order shuffled, then clips shuffled inside each window of
    `window` consecutive shards of that order. `shard_of[i]` is position i's shard. A pure function of
    its arguments (`seed`: anything `np.random.default_rng` takes), so a resumed run replays it."""
    idx = np.asarray(indices, dtype=np.int64)
    rng = np.random.default_rng(seed)
    sh = shard_of[idx]
    shards = np.unique(sh)
    shards = shards[rng.permutation(len(shards))]
    parts = []
    for w in range(0, len(shards), max(1, window)):
        members = idx[np.isin(sh, shards[w : w + window])]
        parts.append(members[rng.permutation(len(members))])
    return np.concatenate(parts) if parts else idx


def shard_batch_order(shard_of: np.ndarray, batch_size: int, *, indices: np.ndarray, seed: int = 0,
                      drop_last: bool = False, window: int = 2) -> list[np.ndarray]:
    """The batches of one shard-aware shuffled pass (`shard_order`), cut like `batch_order`'s."""
    idx = shard_order(shard_of, indices, seed, window=window)
    stop = len(idx) - (len(idx) % batch_size if drop_last else 0)
    return [idx[s : s + batch_size] for s in range(0, stop, batch_size) if len(idx[s : s + batch_size])]


def _available_ram() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0



class CacheReader:
    """A finished token store as `probekit.tokens.TokenData`.

    Clips whose extraction failed are left out (their positions are `rows`), unless
    `include_failed=True`. `num_layers` counts the stored layers; `layer_ids` are their block indices,
    and a `TokenRequest`'s explicit layers index the stored ones.
    """

    def __init__(self, path: "str | os.PathLike | TokenStore", *, preload: bool | str = "auto", threads: int = 4,
                 prefetch: int = 4, include_failed: bool = False, layers: Sequence[int] | None = None,
                 shuffle_order: str = "global", shard_window: int = 2,
                 chunk_cache: str | os.PathLike | None = None):
        if shuffle_order not in SHUFFLE_ORDERS:
            raise CacheError(f"shuffle_order {shuffle_order!r} is not one of {', '.join(SHUFFLE_ORDERS)}",
                             hint="use 'global' (the default, same batches as in-memory tokens) or 'shard'")
        if int(shard_window) < 1:
            raise CacheError(f"shard_window {shard_window!r} must be at least 1", hint="e.g. shard_window=2")
        self.shuffle_order, self.shard_window = shuffle_order, int(shard_window)
        # a TokenStore already opened by the caller (open_cache read its key) is reused, not reopened
        # chunk_cache: stores on an object store keep fetched shard files in this local folder
        # (default $PROBEKIT_CHUNK_CACHE; none: in memory), see probekit.cache.fs
        self.store = path if isinstance(path, TokenStore) else TokenStore(path, chunk_cache=chunk_cache)
        if not self.store.complete:
            raise CacheError(
                f"{self.store.path} is not complete ({self.store.summary()['done']} shards done)",
                hint="rerun the same `probekit extract` command to finish it",
            )
        g, lay = self.store.group, self.store.layout
        self.path = self.store.path
        self.layout = lay
        self.dtype = lay.dtype
        if layers is None:
            layers = lay.layers
        absent = [i for i in layers if i not in lay.layers]
        if absent:
            raise CacheError(f"{self.path} holds layers {list(lay.layers)}, not {absent}",
                             hint="extract those layers (--layers) or ask for stored ones")
        self.layer_ids = tuple(int(i) for i in layers)
        self._layer_pos = tuple(lay.layers.index(i) for i in self.layer_ids)  # view -> stored position
        self.num_layers = len(self.layer_ids)
        self.embed_dim = lay.embed_dim
        self.grid = tuple(lay.grid)
        self.num_classes = lay.num_classes
        self.multilabel = lay.multilabel
        self.classes = tuple(self.store.meta.get("classes", ()))
        failed = {int(f["index"]) for f in self.store.meta.get("failed_clips", [])}
        self.failed = sorted(failed)
        all_rows = np.arange(lay.num_clips)
        self.rows = all_rows if include_failed or not failed else np.setdiff1d(all_rows, list(failed))
        labels = np.asarray(g["labels"][...])
        self.labels = (labels.astype(np.float32) if self.multilabel else labels.astype(np.int64))[self.rows]
        self.clip_ids = np.asarray([str(x) for x in g["clip_ids"][...]], dtype=object)[self.rows]
        self.folds = np.asarray(g["folds"][...]).astype(np.int64)[self.rows] if "folds" in g else None
        self.valid_rows = np.clip(np.asarray(g["valid_rows"][...]).astype(np.int64), 0, None)[self.rows]
        self.num_clips = len(self.rows)
        if not self.num_clips and lay.num_clips:  # every clip failed: nothing to train or score on
            raise CacheError(
                f"{self.path}: every one of the {lay.num_clips} clips of split {self.store.key['dataset']['split']} "
                f"failed to extract (first: {self.store.meta['failed_clips'][0]['id']}: "
                f"{self.store.meta['failed_clips'][0]['error']})",
                hint="fix the files, then rerun `probekit extract` (it retries failed clips)",
            )
        # every shard is checked against its completion record (sha256) before its first read
        self._patch = self.store.shard_reader("patch")
        self._cls = self.store.shard_reader("cls")
        self._pscale = self.store.shard_reader("patch_scale") if self.dtype == "int8" else None
        self._cscale = g["cls_scale"] if self.dtype == "int8" else None
        self._cscale_ram = self._checked_cls_scale() if self._cscale is not None else None
        self.threads = max(0, int(threads))
        self.prefetch = max(1, int(prefetch))
        self._ram: dict[str, np.ndarray] | None = None
        if preload is True or (preload == "auto" and self.nbytes * 2 < _available_ram()):
            self.preload()

    def _checked_cls_scale(self) -> np.ndarray:
        """int8 stores: the (small) cls scales, read whole and checked shard by shard."""
        ram = np.asarray(self._cscale[...])
        self.store.check_loaded("cls_scale", ram)
        return ram

    def failed_counts(self) -> dict:
        """{split, clips, failed, ids}: clips of this split whose extraction failed (`TokenStore.failed_counts`)."""
        return self.store.failed_counts()

    # ---- sizes and preload -------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes of all stored tokens (storage dtype)."""
        return self.layout.num_clips * self.layout.clip_bytes()

    @property
    def preloaded(self) -> bool:
        return self._ram is not None

    def preload(self) -> None:
        """Read every stored token into RAM (storage dtype); later batches are slices of memory."""
        if self._ram is not None:
            return
        lay = self.layout
        rows = np.arange(lay.num_clips)
        ram = {}
        with ThreadPoolExecutor(max(1, self.threads)) as ex:
            parts = list(ex.map(lambda sl: self._read_rows(rows[sl], range(lay.num_layers), True, True),
                                [slice(i, i + 256) for i in range(0, lay.num_clips, 256)]))
        for name in parts[0]:
            ram[name] = np.concatenate([p[name] for p in parts]) if parts[0][name] is not None else None
        self._ram = ram

    # ---- raw reads -------------------------------------------------------------------------------
    def _gather(self, reader: ShardReader, rows: np.ndarray, layers: Sequence[int], per_layer_chunks: bool):
        """(len(rows), len(layers), ...) in storage dtype."""
        shape = reader.shape
        if not reader.fast:  # codecs this reader does not know: zarr's own (slow) path
            reader.check_rows(rows)
            sel = np.sort(rows)
            data = np.asarray(reader.array.oindex[sel, list(layers)])
            return data[np.searchsorted(sel, rows)]
        if per_layer_chunks:  # one chunk per (clip, layer)
            return reader.read(rows, layers).reshape(len(rows), len(layers), *shape[2:])
        data = reader.read(rows, [0]).reshape(len(rows), *shape[1:])  # one chunk per clip holding all layers
        return data if list(layers) == list(range(shape[1])) else data[:, list(layers)]

    def _read_rows(self, rows: np.ndarray, layers: Sequence[int], patch: bool, cls: bool) -> dict:
        layers = list(layers)
        out = {"patch": None, "cls": None, "patch_scale": None, "cls_scale": None}
        if patch:
            out["patch"] = self._gather(self._patch, rows, layers, True)
            if self._pscale is not None:
                out["patch_scale"] = self._gather(self._pscale, rows, layers, False)
        if cls:
            out["cls"] = self._gather(self._cls, rows, layers, False)
            if self._cscale_ram is not None:
                out["cls_scale"] = self._cscale_ram[rows][:, layers]
        return out

    def _batch(self, pos: np.ndarray, layers: tuple[int, ...], request: TokenRequest) -> TokenBatch:
        # within a batch clips come in storage order (one copy per shard); `index` says which they are
        pos = np.sort(pos)
        rows = self.rows[pos]
        if self._ram is not None:
            ram, li = self._ram, list(layers)
            full = li == list(range(self.layout.num_layers))
            ix = np.ix_(rows, li)

            def take(a):
                return None if a is None else (a[rows] if full else a[ix])

            raw = {
                "patch": take(ram["patch"]) if request.patch else None,
                "cls": take(ram["cls"]) if request.cls else None,
                "patch_scale": take(ram["patch_scale"]) if request.patch else None,
                "cls_scale": take(ram["cls_scale"]) if request.cls else None,
            }
        else:
            raw = self._read_rows(rows, layers, request.patch, request.cls)
        patch = _to_float(raw["patch"], self.dtype, raw["patch_scale"]) if raw["patch"] is not None else None
        cls = _to_float(raw["cls"], self.dtype, raw["cls_scale"]) if raw["cls"] is not None else None
        return TokenBatch(
            patch,
            cls,
            torch.from_numpy(self.labels[pos]),
            torch.from_numpy(self.valid_rows[pos]),
            torch.from_numpy(np.asarray(pos, dtype=np.int64)),
            self.grid,
        )

    # ---- TokenData ---------------------------------------------------------------------------------
    def epoch_order(self, indices: np.ndarray, seed) -> np.ndarray | None:
        """The shuffled order of `indices` for one training epoch (`probekit.train.fit` asks; `seed` is
        (run seed, epoch)): shard-aware for a reader opened with shuffle_order="shard", else None (fit's
        own global permutation, the same for every TokenData)."""
        if self.shuffle_order != "shard":
            return None
        return shard_order(self.rows // self.layout.clips_per_shard, indices, seed, window=self.shard_window)

    def batches(
        self,
        request: TokenRequest,
        batch_size: int,
        *,
        indices: Sequence[int] | np.ndarray | None = None,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> Iterator[TokenBatch]:
        """One pass over `indices` (positions 0..num_clips-1, default all) in batches.

        Shuffling draws the same permutation as `InMemoryTokens` for the same seed, so batches hold the
        same clips; within a batch they come in storage order (`TokenBatch.index` names them). A reader
        opened with `shuffle_order="shard"` shuffles shard-aware instead (`shard_batch_order`).
        """
        if not (request.patch or request.cls):
            raise CacheError("TokenRequest asks for neither patch nor cls tokens")
        idx = np.arange(self.num_clips) if indices is None else np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.num_clips):
            raise CacheError(f"index out of range for {self.num_clips} clips in {self.path}")
        layers = tuple(self._layer_pos[i] for i in request.resolve(self.num_layers))
        if shuffle and self.shuffle_order == "shard":
            chunks = shard_batch_order(self.rows // self.layout.clips_per_shard, batch_size, indices=idx, seed=seed,
                                       drop_last=drop_last, window=self.shard_window)
        else:
            chunks = batch_order(self.num_clips, batch_size, indices=idx, shuffle=shuffle, seed=seed, drop_last=drop_last)
        if not chunks:
            return
        if self.threads == 0:  # inline: no hand-off between threads (best when the consumer is idle anyway)
            for c in chunks:
                yield self._batch(c, layers, request)
            return
        with ThreadPoolExecutor(self.threads) as ex:
            futures = [ex.submit(self._batch, c, layers, request) for c in chunks[: self.prefetch]]
            for k in range(len(chunks)):
                nxt = k + self.prefetch
                if nxt < len(chunks):
                    futures.append(ex.submit(self._batch, chunks[nxt], layers, request))
                yield futures[k].result()
                futures[k] = None

    def __len__(self) -> int:
        return self.num_clips

    def __repr__(self) -> str:
        return (
            f"CacheReader({str(self.path)!r}, clips={self.num_clips}, layers={list(self.layer_ids)}, "
            f"grid={self.grid}, dim={self.embed_dim}, dtype={self.dtype}, {fmt_bytes(self.nbytes)}"
            f"{', preloaded' if self.preloaded else ''})"
        )


def _check_expected(store_path: Path, stored: dict, asked: dict) -> None:
    if stored == asked:
        return
    diffs = key_differences(stored, asked)
    raise CacheError(
        f"{store_path} was made from other inputs than asked: " + "; ".join(diffs[:5]),
        hint="extract tokens for this backbone/weights/frontend with `probekit extract` (other stores are never mixed)",
    )


def open_cache(
    backbone=None,
    dataset=None,
    split: str = "train",
    *,
    path: str | os.PathLike | None = None,
    tokens: TokenSpec | None = None,
    run: RunOptions | None = None,
    preload: bool | str = "auto",
    threads: int = 4,
    include_failed: bool = False,
    **options,
) -> CacheReader:
    """Open the store made by `extract` with the same arguments, or the store at `path`.

    `open_cache("path/to/store.zarr")` opens a store directly. With a backbone and dataset (or a `Plan`
    as the first argument) the store is found by its content key; with both a path and a
    backbone/dataset the path must hold exactly that key (other weights, frontend parameters, layers,
    dtype or data are refused, naming the difference). A store with more layers than asked (same
    everything else) is used as is. `tokens`/`run` (or their fields as flat keywords: layers=,
    dtype=, cache_dir=, ...) are as in `extract`; the plan's device is only used to key autocast.
    """
    if isinstance(backbone, (str, os.PathLike)) and path is None:
        path, backbone = backbone, None
    kw = {"preload": preload, "threads": threads, "include_failed": include_failed}
    if isinstance(backbone, Plan):
        if dataset is not None or tokens is not None or run is not None or options:
            raise TypeError("open_cache(plan, ...): the plan fixes dataset, tokens and cache dir; pass only path, "
                            "preload, threads, include_failed")
        p = backbone
    elif backbone is None or dataset is None:
        if path is None:
            raise CacheError("open_cache needs a store path, or a backbone and a dataset")
        if (backbone is None) != (dataset is None):
            raise CacheError("open_cache checks a store against a backbone AND a dataset; pass both or neither")
        return CacheReader(path, **kw)
    else:
        tokens, run = split_options(options, tokens, run or RunOptions(device="cpu"), where="open_cache")
        p = plan(backbone, dataset, split, tokens, run)
    return _open_planned(p, path, kw)


def _open_planned(p: Plan, path, kw: dict) -> CacheReader:
    # each store is opened once: the TokenStore whose key is checked is the one the reader uses
    if path is not None:
        store = TokenStore(path)
        stored = store.key
        if stored != p.key and _superset(stored, p.key):
            return CacheReader(store, layers=p.key["layers"], **kw)
        _check_expected(store.path, stored, p.key)
        return CacheReader(store, **kw)
    if (p.path / "zarr.json").exists():
        # found by name; the name is only a digest, so a store copied or renamed by hand is checked by content
        store = TokenStore(p.path)
        _check_expected(p.path, store.key, p.key)
        return CacheReader(store, **kw)
    root = p.path.parent
    near = []
    for sp in list_stores(root):
        try:
            store = TokenStore(sp)
            k = store.key
        except CacheError:
            continue
        if _superset(k, p.key):
            return CacheReader(store, layers=p.key["layers"], **kw)
        if k["dataset"]["name"] == p.key["dataset"]["name"] and k["dataset"]["split"] == p.split:
            near.append((sp, k))
    name, ds, split = p.backbone.name, p.dataset.name, p.split
    if near:
        sp, k = near[0]
        diffs = key_differences(k, p.key)
        raise CacheError(
            f"no cache of {name} on {ds}/{split} with these inputs; {sp.name} differs: " + "; ".join(diffs[:4]),
            hint="run `probekit extract` for this backbone/checkpoint/frontend",
        )
    raise CacheError(
        f"no cache of {name} on {ds}/{split} in {root}",
        hint=f"run `probekit extract --backbone {name} --dataset {ds} --split {split}`",
    )


def _superset(stored: dict, asked: dict) -> bool:
    """Same inputs, and the store holds every asked layer."""
    a = {k: v for k, v in stored.items() if k != "layers"}
    b = {k: v for k, v in asked.items() if k != "layers"}
    return a == b and set(asked["layers"]) <= set(stored["layers"])

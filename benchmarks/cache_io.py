"""Cache read speed: one epoch through CacheReader vs an uncompressed .npy memmap of the same tokens.

    PYTHONPATH=. python benchmarks/cache_io.py [--clips 1024 --layers 4 --tokens 256 --dim 192 --batch 64]

Both sides produce the same float32 torch batches (patch + cls of the requested layers) from page-cached
files (each side is read once to warm the cache, then timed). Also times zarr-python's own read path
(`oindex`) on a few batches, the reason the reader reads shard files through their index.

Integrity rows: the reader checks every shard against the sha256 of its completion record at its first
read in a process. "first epoch, checked" times a fresh reader with that check against a fresh reader
without it (same page-cached files), so the ratio is the whole cost of the check; later epochs of the
same process pay nothing. Also the two checks a rerun of `probekit extract` runs on finished shards:
existence + size (`damaged_shards(full=False)`) and the full re-hash (`full=True`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from probekit.cache import shards as shards_mod
from probekit.cache.disk import fmt_bytes
from probekit.cache.layout import StoreLayout
from probekit.cache.reader import CacheReader
from probekit.cache.shards import ShardReader
from probekit.cache.store import TokenStore
from probekit.tokens import TokenRequest


def make_store(root: Path, C: int, L: int, T: int, D: int, S: int) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    layout = StoreLayout(num_clips=C, layers=tuple(range(L)), grid=(T // 8, 8), embed_dim=D, dtype="float16",
                         clips_per_shard=S, batch_size=S, num_classes=10, multilabel=False, has_folds=False)
    N = layout.num_tokens
    key = {"format": 1, "bench": True, "dims": [C, L, N, D], "dataset": {"name": "bench", "split": "test"}, "dtype": "float16"}
    store = TokenStore.create_or_open(root / "bench.zarr", key=key, layout=layout, provenance={"created": "bench"},
                                      clip_ids=[f"c{i}" for i in range(C)], labels=rng.integers(0, 10, C),
                                      folds=None, classes=[str(i) for i in range(10)])
    patch = np.lib.format.open_memmap(root / "patch.npy", mode="w+", dtype=np.float16, shape=(C, L, N, D))
    cls = np.lib.format.open_memmap(root / "cls.npy", mode="w+", dtype=np.float16, shape=(C, L, D))
    for j in range(layout.num_shards):
        s, e = layout.shard_rows(j)
        p = rng.standard_normal((e - s, L, N, D), dtype=np.float32).astype(np.float16)
        c = rng.standard_normal((e - s, L, D), dtype=np.float32).astype(np.float16)
        patch[s:e], cls[s:e] = p, c
        store.write_shard(j, {"patch": p, "cls": c}, np.full(e - s, T // 8), [])
    patch.flush()
    cls.flush()
    store.finalize()
    return store.path, np.load(root / "patch.npy", mmap_mode="r"), np.load(root / "cls.npy", mmap_mode="r")


CLOCK = time.perf_counter


def epoch_memmap(patch, cls, req_layers, batch, order) -> float:
    t = CLOCK()
    li = list(req_layers)
    for s in range(0, len(order), batch):
        idx = np.sort(order[s : s + batch])  # sorted fancy index: the memmap's best case
        p = torch.from_numpy(patch[np.ix_(idx, li)]).float()  # reads only the requested layers
        c = torch.from_numpy(cls[np.ix_(idx, li)]).float()
        assert p.shape[0] == c.shape[0]
    return CLOCK() - t


def epoch_reader(reader, req, batch, shuffle) -> float:
    t = CLOCK()
    for b in reader.batches(req, batch, shuffle=shuffle, seed=0):
        assert b.patch is not None
    return CLOCK() - t


def fresh_reader(path: Path, threads: int, checked: bool) -> CacheReader:
    """A reader that has read nothing yet; `checked=False` drops the per-shard checksum check."""
    shards_mod._VERIFIED.clear()  # forget what this process already checked
    r = CacheReader(path, preload=False, threads=threads)
    if not checked:
        g = r.store.group
        r._patch, r._cls = ShardReader(g["patch"]), ShardReader(g["cls"])
    return r


def integrity_rows(path: Path, req, batch: int, threads: int, repeats: int) -> list[tuple[str, float, float]]:
    """(name, unchecked s, checked s) of a first epoch, and the two checks of an extract rerun."""
    unchecked = min(epoch_reader(fresh_reader(path, threads, False), req, batch, False) for _ in range(repeats))
    checked = min(epoch_reader(fresh_reader(path, threads, True), req, batch, False) for _ in range(repeats))
    out = [("first epoch all layers: checked vs unchecked", unchecked, checked)]
    st = TokenStore(path)
    t = CLOCK()
    assert st.damaged_shards(full=False) == {}
    cheap = CLOCK() - t
    shards_mod._VERIFIED.clear()
    t = CLOCK()
    assert st.damaged_shards(full=True) == {}
    full = CLOCK() - t
    out.append(("extract rerun check: size only vs full sha256 (vs epoch)", unchecked, cheap))
    out.append(("extract rerun check: full sha256 (vs unchecked epoch)", unchecked, full))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=256)  # T*F, F=8
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--shard", type=int, default=128)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs per side (the fastest counts)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu = process CPU time (stable on a shared machine; use with --threads 0)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if a.clock == "cpu" else time.perf_counter
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="probekit-cache-io-"))
    try:
        path, patch, cls = make_store(tmp, a.clips, a.layers, a.tokens, a.dim, a.shard)
        size = patch.nbytes + cls.nbytes
        print(f"clock {a.clock}, reader threads {a.threads}; {a.clips} clips x {a.layers} layers x {a.tokens} tokens x {a.dim} dim float16: {fmt_bytes(size)}")
        rows = []
        reader = CacheReader(path, preload=False, threads=a.threads)
        for name, req in (("last layer", TokenRequest(layers="last")), ("all layers", TokenRequest(layers="all"))):
            li = req.resolve(a.layers)
            for shuffle in (False, True):
                order = np.random.default_rng(0).permutation(a.clips) if shuffle else np.arange(a.clips)
                epoch_memmap(patch, cls, li, a.batch, order)  # warm the page cache
                epoch_reader(reader, req, a.batch, shuffle)
                tm = min(epoch_memmap(patch, cls, li, a.batch, order) for _ in range(a.repeats))
                tr = min(epoch_reader(reader, req, a.batch, shuffle) for _ in range(a.repeats))
                rows.append((f"{name}, {'shuffled' if shuffle else 'sequential'}", tm, tr))
        # shard-aware shuffling (opt-in reader order): memmap keeps its globally shuffled order
        shard_reader = CacheReader(path, preload=False, threads=a.threads, shuffle_order="shard")
        order = np.random.default_rng(0).permutation(a.clips)
        for name, req in (("last layer", TokenRequest(layers="last")), ("all layers", TokenRequest(layers="all"))):
            li = req.resolve(a.layers)
            epoch_reader(shard_reader, req, a.batch, True)
            tm = min(epoch_memmap(patch, cls, li, a.batch, order) for _ in range(a.repeats))
            tr = min(epoch_reader(shard_reader, req, a.batch, True) for _ in range(a.repeats))
            rows.append((f"{name}, shuffled shard-aware (vs global memmap)", tm, tr))
        pre = CacheReader(path, preload=True, threads=a.threads)
        req = TokenRequest(layers="last")
        order = np.random.default_rng(0).permutation(a.clips)
        tm = min(epoch_memmap(patch, cls, req.resolve(a.layers), a.batch, order) for _ in range(a.repeats))
        tp = min(epoch_reader(pre, req, a.batch, True) for _ in range(a.repeats))
        rows.append(("last layer, shuffled, preloaded", tm, tp))
        # zarr-python's own path on the same store, a few batches
        import zarr

        g = zarr.open_group(str(path), mode="r")
        nb = 4
        t = time.perf_counter()
        for s in range(0, nb * a.batch, a.batch):
            idx = np.sort(order[s : s + a.batch])
            torch.from_numpy(np.asarray(g["patch"].oindex[idx, [a.layers - 1]])).float()
            torch.from_numpy(np.asarray(g["cls"].oindex[idx, [a.layers - 1]])).float()
        tz = (time.perf_counter() - t) * (a.clips / (nb * a.batch))
        tm = epoch_memmap(patch, cls, [a.layers - 1], a.batch, order)
        rows.append(("last layer, shuffled, zarr oindex (extrapolated)", tm, tz))
        print(f"{'epoch':50s} {'memmap s':>9s} {'cache s':>9s} {'cache/memmap speed':>19s}")
        for name, tm, tr in rows:
            print(f"{name:50s} {tm:9.3f} {tr:9.3f} {tm / tr:18.2f}x")
        checks = integrity_rows(path, TokenRequest(layers="all"), a.batch, a.threads, a.repeats)
        print(f"\n{'integrity':58s} {'base s':>9s} {'with s':>9s} {'time ratio':>11s}")
        for name, base, with_check in checks:
            print(f"{name:58s} {base:9.3f} {with_check:9.3f} {with_check / base:10.2f}x")
        if a.json:
            a.json.write_text(json.dumps([{"epoch": n, "memmap_s": m, "cache_s": r, "speed_ratio": m / r}
                                          for n, m, r in rows]
                                         + [{"integrity": n, "base_s": b, "with_check_s": w, "time_ratio": w / b}
                                            for n, b, w in checks], indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

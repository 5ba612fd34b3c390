"""Object-store read throughput: one epoch through CacheReader from a local S3 server vs the same store on local disk.

    PYTHONPATH=. python benchmarks/object_store_read.py [--clips 256 --layers 12 --tokens 64 --dim 384 --shard 32]

One token store (random float16 tokens, the layout `extract` writes) is written on local disk and
copied object by object to an S3 server on 127.0.0.1 (moto's server mode, in its own process, so the
reader and the server do not share a GIL; s3fs reaches it through AWS_ENDPOINT_URL exactly as it
reaches AWS). Then one epoch (shuffled, batches of `--batch`, all layers and the last layer only) is
read by a fresh `CacheReader` (preload off, 4 reader threads) from:

* local disk (page-cached: the best case),
* S3, streamed: each shard object fetched whole by parallel range requests, checked, held in memory,
* S3 with the local chunk cache, cold (first epoch: fetch + write the local copy) and warm (second
  reader of the same version: one HEAD per shard, then memory-mapped like a local store).

Every reader's first epoch includes the sha256 check of each shard against its completion record, as
in real use. Figures: clips/s and MB/s of stored tokens handed out, and each S3 row's ratio to local
disk. moto is a Python server on loopback: the ratios say what probekit's read path costs over the
network protocol, not what a real S3 bucket's latency and bandwidth would give.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from probekit.cache import shards as shards_mod
from probekit.cache.layout import StoreLayout
from probekit.cache.reader import CacheReader
from probekit.cache.store import TokenStore
from probekit.tokens import TokenRequest


def make_store(root: Path, C: int, L: int, T: int, D: int, S: int) -> Path:
    rng = np.random.default_rng(0)
    layout = StoreLayout(num_clips=C, layers=tuple(range(L)), grid=(T // 8, 8), embed_dim=D, dtype="float16",
                         clips_per_shard=S, batch_size=S, num_classes=10, multilabel=False, has_folds=False)
    N = layout.num_tokens
    key = {"format": 1, "bench": True, "dims": [C, L, N, D], "dataset": {"name": "bench", "split": "test"},
           "dtype": "float16"}
    store = TokenStore.create_or_open(root / "bench.zarr", key=key, layout=layout, provenance={"created": "bench"},
                                      clip_ids=[f"c{i}" for i in range(C)], labels=rng.integers(0, 10, C),
                                      folds=None, classes=[str(i) for i in range(10)])
    for j in range(layout.num_shards):
        s, e = layout.shard_rows(j)
        p = rng.standard_normal((e - s, L, N, D), dtype=np.float32).astype(np.float16)
        c = rng.standard_normal((e - s, L, D), dtype=np.float32).astype(np.float16)
        store.write_shard(j, {"patch": p, "cls": c}, np.full(e - s, T // 8), [])
    store.finalize()
    return store.path


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/moto-api/").read()
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("moto server did not start")


def epoch(src, req: TokenRequest, batch: int, seed: int, **kw) -> tuple[float, int]:
    """Seconds and stored bytes handed out for one shuffled epoch by a fresh reader (first read: checks)."""
    shards_mod._VERIFIED.clear()  # each reader is a new process as far as the integrity check goes
    t = time.perf_counter()
    r = CacheReader(src, preload=False, threads=4, **kw)
    nbytes = 0
    for b in r.batches(req, batch, shuffle=True, seed=seed):
        nbytes += (b.patch.numel() + b.cls.numel()) * 2  # float16 as stored
    return time.perf_counter() - t, nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=256)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--shard", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="pk-osr-"))
    proc, endpoint = start_server()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=endpoint)
    try:
        import fsspec

        local = make_store(work, args.clips, args.layers, args.tokens, args.dim, args.shard)
        fs = fsspec.filesystem("s3")
        fs.mkdir("bench")
        fs.put(str(local), "bench/c/", recursive=True)
        url = f"s3://bench/c/{local.name}"
        assert TokenStore(url).complete
        size = sum(f.stat().st_size for f in local.rglob("*") if f.is_file())
        print(f"store: {args.clips} clips x {args.layers} layers x {args.tokens} tokens x {args.dim} dim float16, "
              f"{args.shard} clips/shard, {size / 1e6:.1f} MB; S3: moto server on {endpoint} (own process)")
        for name, req in (("all layers", TokenRequest(layers="all")), ("last layer", TokenRequest())):
            rows = {}
            for rep in range(args.repeats):
                cache = work / f"chunks-{name}-{rep}"
                runs = [("local disk", lambda: epoch(local, req, args.batch, rep)),
                        ("S3 streamed", lambda: epoch(url, req, args.batch, rep)),
                        ("S3 + chunk cache, cold", lambda: epoch(url, req, args.batch, rep, chunk_cache=cache)),
                        ("S3 + chunk cache, warm", lambda: epoch(url, req, args.batch, rep, chunk_cache=cache))]
                for label, fn in runs:
                    rows.setdefault(label, []).append(fn())
            base = min(s for s, _ in rows["local disk"])
            print(f"\n{name} (one shuffled epoch, batch {args.batch}; best of {args.repeats})")
            print(f"{'source':<26}{'s':>8}{'clips/s':>10}{'MB/s':>9}{'vs local':>10}")
            for label, got in rows.items():
                s, nb = min(got)
                print(f"{label:<26}{s:>8.3f}{args.clips / s:>10.0f}{nb / s / 1e6:>9.1f}{base / s:>9.2f}x")
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

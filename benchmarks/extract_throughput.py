"""Extraction throughput vs the bare encoder forward on the same clips.

    PYTHONPATH=. python benchmarks/extract_throughput.py [--backbone bat-tiny] [--clips 300] [--batch-size 32]
        [--workers N] [--device auto] [--dtype float16]

"bare" = `backbone.encode` over batches of features computed beforehand (frontend excluded, nothing
written); "extract" = the whole `probekit.cache.extract` call into a fresh store (decode + frontend in
DataLoader workers, encoder, int8/float16 conversion, background shard writes, completion records,
finalise). The ratio bare_time / extract_time is the fraction of encoder speed extraction keeps.

`--clock cpu` (for a shared, busy machine, where wall time mostly measures the neighbours): CPU seconds
of this process (encoder, conversion, writer thread, store creation and finalisation: the critical path
when the decode workers have cores of their own) and, separately, of the DataLoader workers
(decode + frontend, `getrusage(RUSAGE_CHILDREN)` after they exit). The ratio is bare CPU / main CPU.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from probekit.backbones import get_backbone
from probekit._device import resolve_device
from probekit.cache import extract, plan
from probekit.cache.disk import dir_bytes, fmt_bytes
from probekit.cache.extraction import default_workers
from probekit.datasets import get_dataset
from probekit.datasets.base import Dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="bat-tiny")
    ap.add_argument("--data-root", default=None, help="folder holding fsdd/ (default: $PROBEKIT_DATA or ../shared/data)")
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the main process")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: process CPU seconds (main process; workers reported apart)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    root = a.data_root
    if root is None:
        for cand in (Path("../shared/data"), Path("/work/shared/data")):
            if (cand / "fsdd").is_dir():
                root = str(cand)
                break
    full = get_dataset("fsdd", data_root=root)
    clips = full.clips("test")[: a.clips]
    ds = Dataset(full.spec, full.root, lambda s: clips)
    dev = resolve_device(a.device)
    bb = get_backbone(a.backbone, seed=0)
    p = plan(bb, ds, "test", device=dev)
    enc = p.backbone
    from probekit.audio.io import load_audio

    feats, valid = [], []
    for c in clips:
        w = load_audio(c.path, sample_rate=enc.sample_rate)
        feats.append(enc.frontend.cpu().features(w))
        valid.append(enc.frontend.valid_frames(w.numel()))
    feats = torch.stack(feats)
    valid = torch.tensor(valid)
    enc.to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    clock = time.process_time if a.clock == "cpu" else time.perf_counter

    def children_cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def bare() -> float:
        sync()
        t = clock()
        with torch.inference_mode():
            for s in range(0, len(clips), a.batch_size):
                lt = enc.encode(feats[s : s + a.batch_size].to(dev, non_blocking=True), valid[s : s + a.batch_size].to(dev))
                lt.patch.float().sum().item()  # the tokens must exist, as extraction needs them on the host
        sync()
        return clock() - t

    bare()  # warm-up
    t_bare = min(bare() for _ in range(2))
    workers = default_workers() if a.workers is None else a.workers
    times, worker_cpu, size = [], [], 0
    for _ in range(2):
        tmp = Path(tempfile.mkdtemp(prefix="probekit-extract-bench-"))
        try:
            t, w = clock(), children_cpu()
            st = extract(bb, ds, "test", cache_dir=tmp, batch_size=a.batch_size, workers=workers, device=str(dev),
                         dtype=a.dtype, progress=False)
            times.append(clock() - t)
            worker_cpu.append(children_cpu() - w)
            size = dir_bytes(st.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    t_ext = min(times)
    n = len(clips)
    print(f"{a.backbone} on {n} FSDD clips, grid {st.layout.grid}, {st.layout.num_layers} layers, {a.dtype}, "
          f"batch {a.batch_size}, device {dev}, workers {workers}, torch threads {torch.get_num_threads()}, "
          f"clock {a.clock}")
    print(f"{'':10s} {'seconds':>8s} {'clips/s':>8s}")
    print(f"{'bare':10s} {t_bare:8.2f} {n / t_bare:8.1f}")
    print(f"{'extract':10s} {t_ext:8.2f} {n / t_ext:8.1f}   store {fmt_bytes(size)}")
    if a.clock == "cpu":
        print(f"{'workers':10s} {min(worker_cpu):8.2f} {'':8s}   decode + frontend CPU s, off the critical path")
    print(f"extract / bare encoder throughput: {t_bare / t_ext:.2f}x")


if __name__ == "__main__":
    main()

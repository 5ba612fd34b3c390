"""Does shard-aware shuffling change probe scores? The same probes, seeds and steps trained from one store
read in the default (global) shuffled order and in the opt-in shard-aware order (`CacheReader(...,
shuffle_order="shard")`), and scored on the FSDD test clips.

Data: log-mel patch tokens of the 2,700 FSDD training clips (tests/tune/fsdd_tokens.py) written in dataset
order (digit-major: each shard holds one or two digits, the hard case for shard-local batches) into a
float32 store of `--shard` clips per shard; test = the 300 test clips in RAM.

    PYTHONPATH=. python benchmarks/shard_shuffle_effect.py [--probes linear,mlp] [--seeds 3] [--steps 300]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from probekit.cache.layout import StoreLayout
from probekit.cache.reader import CacheReader
from probekit.cache.store import TokenStore
from probekit.train import run_protocol

REPO = Path(__file__).resolve().parents[1]


def _fsdd_tokens():
    spec = importlib.util.spec_from_file_location("fsdd_tokens", REPO / "tests" / "tune" / "fsdd_tokens.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.fsdd_tokens


def write_store(root: Path, tok, shard: int) -> Path:
    C, L, N, D = tok.patch.shape
    layout = StoreLayout(num_clips=C, layers=tuple(range(L)), grid=tuple(tok.grid), embed_dim=D, dtype="float32",
                         clips_per_shard=shard, batch_size=shard, num_classes=10, multilabel=False, has_folds=False)
    key = {"format": 1, "bench": "shard-shuffle", "dataset": {"name": "fsdd-logmel", "split": "train"}, "dtype": "float32"}
    labels = np.asarray(tok.labels)
    st = TokenStore.create_or_open(root / "train.zarr", key=key, layout=layout, provenance={"created": "bench"},
                                   clip_ids=[f"c{i}" for i in range(C)], labels=labels, folds=None,
                                   classes=[str(i) for i in range(10)])
    for j in range(layout.num_shards):
        s, e = layout.shard_rows(j)
        st.write_shard(j, {"patch": tok.patch[s:e].numpy(), "cls": tok.cls[s:e].numpy()},
                       np.asarray(tok.valid_rows[s:e]), [])
    st.finalize()
    return st.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probes", default="linear,mlp")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--shard", type=int, default=64)
    ap.add_argument("--window", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    root = next(c / "data" / "fsdd" for c in (REPO.parent / "shared", REPO.parent.parent / "shared", Path("/work/shared"))
                if (c / "data" / "fsdd" / "recordings").is_dir())
    fsdd = _fsdd_tokens()
    train = fsdd(root, split="train", per_digit_speaker=45)
    test = fsdd(root, split="test", per_digit_speaker=5)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_store(Path(tmp), train, a.shard)
        readers = {"global": CacheReader(path, preload=False, threads=0),
                   "shard": CacheReader(path, preload=False, threads=0, shuffle_order="shard", shard_window=a.window)}
        print(f"{train.num_clips} train clips in {readers['global'].layout.num_shards} shards of {a.shard}, "
              f"window {a.window}; {test.num_clips} test clips; {a.steps} steps, batch 32, seeds 0..{a.seeds - 1}")
        print(f"{'probe':8s} {'order':7s} {'test acc per seed':30s} {'mean':>7s}")
        for probe in a.probes.split(","):
            means = {}
            for order, r in readers.items():
                accs = [float(run_protocol(probe, r, test, protocol="fsdd", seed=s, progress=False,
                                           train_overrides={"steps": a.steps, "warmup_steps": a.steps // 10,
                                                            "batch_size": 32, "eval_every": a.steps // 10}).primary)
                        for s in range(a.seeds)]
                means[order] = statistics.mean(accs)
                print(f"{probe:8s} {order:7s} {', '.join(f'{x:.2f}' for x in accs):30s} {means[order]:7.2f}")
            print(f"{probe:8s} shard - global: {means['shard'] - means['global']:+.2f} points")


if __name__ == "__main__":
    main()

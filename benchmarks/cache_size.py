"""Store bytes per dtype, the codec study behind the store's layout, and int8's effect on a probe.

    PYTHONPATH=. python benchmarks/cache_size.py [--backbone bat-tiny] [--train-clips 540]

1. Extracts the FSDD test split (300 real clips) once per dtype and reports the bytes of the token arrays
   (patch + cls + int8 scales) next to float16.
2. Rewrites the float16 and int8 patch tokens with other inner-chunk compressors (same chunks and
   shards) and reports size and full-read time through zarr, next to the uncompressed layout.
3. Fits a logistic-regression probe (last-layer cls + mean patch token) on FSDD train clips and reports
   test accuracy with float32, float16 and int8 tokens (int8 = the store's quantise/dequantise).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from probekit.backbones import get_backbone
from probekit.cache import extract, open_cache
from probekit.cache.codec import quantize_int8
from probekit.cache.disk import dir_bytes, fmt_bytes
from probekit.datasets import get_dataset
from probekit.datasets.base import Dataset
from probekit.tokens import TokenRequest


def token_bytes(path: Path) -> int:
    return sum(dir_bytes(path / a) for a in ("patch", "cls", "patch_scale", "cls_scale") if (path / a).exists())


def codec_study(arr: np.ndarray, S: int, tmp: Path) -> list[tuple[str, int, float, float]]:
    import zarr
    from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec

    _, L, N, D = arr.shape
    typesize = arr.dtype.itemsize
    choices = {
        "none (chosen)": None,
        "zstd-1": [ZstdCodec(level=1)],
        "zstd-5": [ZstdCodec(level=5)],
        "blosc-lz4+shuffle": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=typesize)],
        "blosc-zstd1+bitshuffle": [BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle", typesize=typesize)],
    }
    out = []
    for name, comp in choices.items():
        p = tmp / f"codec-{len(out)}.zarr"
        a = zarr.create_array(str(p), shape=arr.shape, dtype=arr.dtype, chunks=(1, 1, N, D), shards=(S, L, N, D),
                              serializer=BytesCodec(), compressors=comp, filters=None, overwrite=True)
        t = time.perf_counter()
        a[...] = arr
        tw = time.perf_counter() - t
        t = time.perf_counter()
        back = a[...]
        tr = time.perf_counter() - t
        assert np.array_equal(back, arr)
        out.append((name, dir_bytes(p), tw, tr))
        shutil.rmtree(p)
    return out


def probe_accuracy(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    clf.fit(*train)
    return float((clf.predict(test[0]) == test[1]).mean())


def features(reader, convert, kind: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for b in reader.batches(TokenRequest(layers="last"), 64):
        patch, cls = convert(b.patch[:, 0]), convert(b.cls[:, 0])
        xs.append({"cls": cls, "mean patch": patch.mean(1)}[kind].numpy())
        ys.append(b.labels.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def as_int8(x: torch.Tensor) -> torch.Tensor:
    q, s = quantize_int8(x)
    return q.float() * s[..., None]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="bat-tiny")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--train-clips", type=int, default=540)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(1)
    root = a.data_root
    if root is None:
        root = next(str(c) for c in (Path("../shared/data"), Path("/work/shared/data")) if (c / "fsdd").is_dir())
    full = get_dataset("fsdd", data_root=root)
    bb = get_backbone(a.backbone, seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="probekit-cache-size-"))
    opts = {"cache_dir": tmp, "workers": a.workers, "progress": False, "batch_size": 32}
    try:
        stores = {dt: extract(bb, full, "test", dtype=dt, **opts) for dt in ("float32", "float16", "bfloat16", "int8")}
        lay = stores["float16"].layout
        print(f"{a.backbone}: FSDD test, {lay.num_clips} clips x {lay.num_layers} layers x {lay.num_tokens} tokens "
              f"x {lay.embed_dim} dim")
        f16 = token_bytes(stores["float16"].path)
        print(f"{'dtype':10s} {'bytes':>10s} {'vs float16':>10s}")
        for dt, st in stores.items():
            b = token_bytes(st.path)
            print(f"{dt:10s} {fmt_bytes(b):>10s} {b / f16:9.3f}x")
        print(f"int8 at ViT-B width (D=768), projected: {(768 + 4) / (2 * 768):.3f}x of float16")

        import zarr

        for dt in ("float16", "int8"):
            arr = np.asarray(zarr.open_group(str(stores[dt].path), mode="r")["patch"][...])
            rows = codec_study(arr, lay.clips_per_shard, tmp)
            base_b, base_r = rows[0][1], rows[0][3]
            print(f"\ncodecs on {dt} patch tokens ({fmt_bytes(arr.nbytes)} raw), read = full zarr read")
            print(f"{'codec':24s} {'bytes':>10s} {'size':>7s} {'write s':>8s} {'read s':>7s} {'read cost':>9s}")
            for name, b, tw, tr in rows:
                print(f"{name:24s} {fmt_bytes(b):>10s} {b / base_b:6.3f}x {tw:8.2f} {tr:7.2f} {tr / base_r:8.2f}x")

        # int8's effect on a probe
        tr_clips = full.clips("train")[:: max(1, len(full.clips("train")) // a.train_clips)][: a.train_clips]
        train_ds = Dataset(full.spec, full.root, lambda s: tr_clips)
        train_store = extract(bb, train_ds, "train", dtype="float32", **opts)
        r_tr, r_te = open_cache(train_store.path), open_cache(stores["float32"].path)
        print(f"\nlogistic-regression probe on last-layer tokens, {len(tr_clips)} train / {r_te.num_clips} test "
              "FSDD clips (test accuracy)")
        convs = {"float32": lambda x: x, "float16": lambda x: x.half().float(), "int8": as_int8}
        print(f"{'input':12s} " + " ".join(f"{k:>8s}" for k in convs) + "   clip-to-clip std / int8 error rms")
        b = next(r_te.batches(TokenRequest(layers="last"), r_te.num_clips))
        for kind in ("cls", "mean patch"):
            accs = [probe_accuracy(features(r_tr, c, kind), features(r_te, c, kind)) for c in convs.values()]
            x = b.cls[:, 0] if kind == "cls" else b.patch[:, 0]
            err = (as_int8(x) - x).pow(2).mean().sqrt()
            spread = (x if kind == "cls" else x.mean(1)).std(0).mean()
            print(f"{kind:12s} " + " ".join(f"{v:8.4f}" for v in accs) + f"   {spread:.4f} / {err:.4f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Extraction with a tiny backbone on real FSDD clips, read back through the reader and through plain zarr."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probekit.cache import TokenStore, extract, open_cache, plan
from probekit.cache.disk import dir_bytes
from probekit.tokens import InMemoryTokens, TokenData, TokenRequest


def _reference_tokens(backbone, dataset, split="test"):
    """Tokens of every clip encoded one at a time, straight from the backbone (float32)."""
    from probekit.audio.io import load_audio

    p = plan(backbone, dataset, split, device="cpu")
    bb = p.backbone
    patch, cls, valid = [], [], []
    for c in p.clips:
        wave = load_audio(c.path, sample_rate=bb.sample_rate)
        feats = bb.frontend.features(wave).unsqueeze(0)
        lt = bb.encode(feats, torch.tensor([bb.frontend.valid_frames(wave.numel())]))
        patch.append(lt.patch[0])
        cls.append(lt.cls[0])
        valid.append(int(lt.valid_rows[0]))
    return torch.stack(patch), torch.stack(cls), np.asarray(valid)


@pytest.fixture(scope="module")
def reference(bat_tiny, small_fsdd):
    return _reference_tokens(bat_tiny, small_fsdd)


@pytest.fixture(scope="module")
def stores(tmp_path_factory, bat_tiny, small_fsdd):
    root = tmp_path_factory.mktemp("stores")
    out = {}
    for dt in ("float32", "float16", "bfloat16", "int8"):
        out[dt] = extract(bat_tiny, small_fsdd, "test", cache_dir=root, dtype=dt, batch_size=8, workers=0,
                          clips_per_shard=16, progress=False)
    return out


def _read_all(reader, layers="all"):
    b = list(reader.batches(TokenRequest(layers=layers), 16))
    return torch.cat([x.patch for x in b]), torch.cat([x.cls for x in b]), torch.cat([x.valid_rows for x in b])


@pytest.mark.parametrize(
    "dtype, rtol, atol",
    [("float32", 1e-5, 1e-5), ("float16", 1e-3, 1e-3), ("bfloat16", 8e-3, 1e-2)],
)
def test_read_back_equals_encoder_within_dtype(stores, reference, dtype, rtol, atol):
    ref_patch, ref_cls, ref_valid = reference
    r = open_cache(stores[dtype].path, preload=False)
    assert isinstance(r, TokenData)
    patch, cls, valid = _read_all(r)
    assert patch.dtype == torch.float32 and patch.shape == ref_patch.shape
    torch.testing.assert_close(patch, ref_patch, rtol=rtol, atol=atol)
    torch.testing.assert_close(cls, ref_cls, rtol=rtol, atol=atol)
    assert np.array_equal(valid.numpy(), ref_valid)
    assert 0 < ref_valid.min() and ref_valid.max() <= r.grid[0]  # real audio rows, padding beyond


def test_int8_error_and_size(stores, reference):
    ref_patch, ref_cls, _ = reference
    patch, cls, _ = _read_all(open_cache(stores["int8"].path))
    # per-token symmetric: error at most half a step (max|x| / 254) per value
    step = ref_patch.abs().amax(-1, keepdim=True) / 127
    assert ((patch - ref_patch).abs() <= step / 2 + 1e-6).all()
    cos = torch.nn.functional.cosine_similarity(patch, ref_patch, dim=-1)
    assert cos.min() > 0.999
    torch.testing.assert_close(cls, ref_cls, rtol=0.02, atol=0.02)

    def token_bytes(st):
        return sum(dir_bytes(st.path / a) for a in ("patch", "cls", "patch_scale", "cls_scale") if (st.path / a).exists())

    ratio = token_bytes(stores["int8"]) / token_bytes(stores["float16"])
    assert ratio <= 0.55, ratio  # D=64 is the worst case: the 4-byte scale is 1/16 of a token


def test_plain_zarr_opens_store_without_probekit(stores):
    import subprocess
    import sys

    path = stores["float16"].path
    code = f"""
import sys, zarr, numpy as np
assert 'probekit' not in sys.modules
g = zarr.open_group({str(path)!r}, mode='r')
meta = g.attrs['probekit']
print(g['patch'].shape, g['patch'].dtype, g['cls'].shape, int(g['labels'][5]), str(g['clip_ids'][5]),
      int(g['valid_rows'][5]), meta['complete'], meta['provenance']['torch_version'], meta['layout']['grid'])
np.save(sys.argv[1], g['patch'][5, 2])
"""
    out_npy = path.parent / "plain.npy"
    res = subprocess.run([sys.executable, "-c", code, str(out_npy)], capture_output=True, text=True, cwd="/", check=False)
    assert res.returncode == 0, res.stderr
    r = open_cache(path)
    b = next(r.batches(TokenRequest(layers=(2,)), 1, indices=[5]))
    assert np.array_equal(np.load(out_npy).astype(np.float32), b.patch[0, 0].numpy())
    assert f"({r.num_clips}, 4, 128, 64) float16 ({r.num_clips}, 4, 64) {int(r.labels[5])} {r.clip_ids[5]}" in res.stdout
    assert "True" in res.stdout and torch.__version__ in res.stdout


def test_provenance_attrs(stores, bat_tiny):
    meta = stores["float16"].meta
    prov = meta["provenance"]
    for k in ("probekit_version", "torch_version", "device", "precision", "created", "completed", "backbone_card",
              "checkpoint_sha256", "frontend", "dataset"):
        assert k in prov, k
    assert prov["dataset"]["fingerprint"] == meta["key"]["dataset"]["fingerprint"]
    assert prov["frontend"]["kind"] == "bat" and prov["frontend"]["target_frames"] == 256
    assert meta["key"]["backbone"]["weights"] == {"random_init_seed": 0}
    assert meta["complete"] and meta["failed_clips"] == []


def test_reader_matches_in_memory_tokens_shuffled_and_preloaded(stores):
    streamed = open_cache(stores["float16"].path, preload=False)
    preloaded = open_cache(stores["float16"].path, preload=True)
    assert preloaded.preloaded and not streamed.preloaded
    patch, cls, valid = _read_all(streamed)
    mem = InMemoryTokens(patch, cls, streamed.labels, num_classes=10, multilabel=False, grid=streamed.grid,
                         valid_rows=valid.numpy())
    req = TokenRequest(layers=(0, -1), patch=True, cls=False)
    idx = np.arange(3, 30)
    for source in (streamed, preloaded):
        got = list(source.batches(req, 7, indices=idx, shuffle=True, seed=3, drop_last=True))
        want = list(mem.batches(req, 7, indices=idx, shuffle=True, seed=3, drop_last=True))
        assert len(got) == len(want) == len(idx) // 7
        for g, w in zip(got, want):
            assert g.cls is None
            order = torch.argsort(w.index)  # same clips per batch; the reader yields them in storage order
            assert torch.equal(g.index, w.index[order]) and torch.equal(g.labels, w.labels[order])
            assert torch.equal(g.patch, w.patch[order]) and torch.equal(g.valid_rows, w.valid_rows[order])


def test_content_addressing_reuses_store(stores, bat_tiny, small_fsdd, tmp_path):
    root = stores["float16"].path.parent
    again = extract(bat_tiny, small_fsdd, "test", cache_dir=root, dtype="float16", batch_size=8, workers=0,
                    progress=False)
    assert again.path == stores["float16"].path  # same inputs -> same store, nothing recomputed
    assert len({s.path for s in stores.values()}) == 4  # every dtype its own store
    # a store of all layers serves a request for a subset
    r = open_cache(bat_tiny, small_fsdd, "test", cache_dir=root, layers="1,3", dtype="float16")
    assert r.layer_ids == (1, 3) and r.num_layers == 2
    full = open_cache(stores["float16"].path)
    a = next(r.batches(TokenRequest(layers="last"), 4)).patch
    b = next(full.batches(TokenRequest(layers=(3,)), 4)).patch
    assert torch.equal(a, b)


def test_finished_stores_leave_no_lock_files_beside_them(stores, bat_tiny, small_fsdd):
    root = stores["float16"].path.parent
    extract(bat_tiny, small_fsdd, "test", cache_dir=root, dtype="float16", batch_size=8, workers=0, progress=False)
    assert sorted(p.name for p in root.iterdir() if "lock" in p.name or p.name.endswith(".tmp")) == []
    assert all(s.complete for s in stores.values())


def test_verify_detects_corruption(stores, tmp_path):
    import shutil

    src = stores["float16"].path
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    st = TokenStore(dst)
    assert st.verify() == []
    shard = dst / "patch" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = st.verify()
    assert any("shard 1 of patch" in p and "checksum" in p for p in problems), problems


def test_progress_counts_token_bytes_per_batch(tmp_path, bat_tiny, make_subset, monkeypatch):
    # one shard holds every clip, so nothing reaches disk before the end; the column must still move
    import importlib

    ex = importlib.import_module("probekit.cache.extraction")

    seen: list[float] = []

    class Recording(ex.Bar):  # the progress display of probekit._console, reading the MB it is given
        def update(self, completed=None, *, advance=0, info=None, total=None):
            seen.append(float(info.split()[0]))
            return super().update(completed, advance=advance, info=info, total=total)

    monkeypatch.setattr(ex, "Bar", Recording)
    store = extract(bat_tiny, make_subset(12), "test", cache_dir=tmp_path, dtype="float16", batch_size=4, workers=0,
                    clips_per_shard=64, progress=True)
    assert len(seen) == 3 and seen[0] > 0 and seen[0] < seen[1] < seen[2]
    assert seen[2] * 1e6 == pytest.approx(store.layout.num_clips * store.layout.clip_bytes(), rel=0.01)

"""Mismatch refusal, dry run and disk-space refusal, failed clips, manifests, and the CLI."""

from __future__ import annotations

import importlib
import shutil

import numpy as np
import pytest

from probekit.cache import DryRun, TokenStore, extract, open_cache
from probekit.cache.disk import dir_bytes
from probekit.cli import main
from probekit.errors import AudioError, CacheError
from probekit.tokens import TokenRequest

OPTS = {"batch_size": 8, "workers": 0, "progress": False}


@pytest.fixture(scope="module")
def bat_store(tmp_path_factory, bat_tiny, small_fsdd):
    return extract(bat_tiny, small_fsdd, "test", cache_dir=tmp_path_factory.mktemp("bat"), **OPTS)


def test_other_weights_frontend_or_data_are_refused(bat_store, small_fsdd, make_subset):
    from probekit.backbones import get_backbone

    other_weights = get_backbone("bat-tiny", seed=1)
    with pytest.raises(CacheError, match="random_init_seed"):
        open_cache(other_weights, small_fsdd, "test", path=bat_store.path)
    # found by key: nothing for those weights, and the near miss is named
    with pytest.raises(CacheError, match="no cache of bat-tiny.*random_init_seed"):
        open_cache(other_weights, small_fsdd, "test", cache_dir=bat_store.path.parent)
    same = get_backbone("bat-tiny", seed=0)
    with pytest.raises(CacheError, match="fingerprint"):
        open_cache(same, make_subset(24), "test", path=bat_store.path)
    with pytest.raises(CacheError, match="dtype"):
        open_cache(same, small_fsdd, "test", path=bat_store.path, dtype="int8")
    ok = open_cache(same, small_fsdd, "test", path=bat_store.path)
    assert ok.num_clips == 32


def test_other_frontend_recipe_is_refused(tmp_path, eat_tiny, small_fsdd):
    st = extract(eat_tiny, small_fsdd, "test", cache_dir=tmp_path, layers="last", **OPTS)
    assert st.layout.layers == (3,)
    with pytest.raises(CacheError, match="frontend"):
        open_cache(eat_tiny, small_fsdd, "test", path=st.path, layers="last", frontend_style="bat-paper")
    with pytest.raises(CacheError, match="layers"):
        open_cache(eat_tiny, small_fsdd, "test", path=st.path, layers="all")


def test_dry_run_projects_and_refuses_when_full(tmp_path, bat_tiny, small_fsdd, monkeypatch):
    ex = importlib.import_module("probekit.cache.extraction")

    rep = extract(bat_tiny, small_fsdd, "test", cache_dir=tmp_path, dry_run=True, **OPTS)
    assert isinstance(rep, DryRun) and not list(tmp_path.glob("*.zarr"))
    sizes = {(r["layers"], r["dtype"]): r["bytes"] for r in rep.rows}
    assert sizes[("all", "float32")] == 2 * sizes[("all", "float16")] == 8 * sizes[("last", "float16")]
    assert sizes[("all", "int8")] < 0.55 * sizes[("all", "float16")]
    assert rep.fits and rep.needed == sizes[("all", "float16")]
    monkeypatch.setattr(ex, "free_bytes", lambda p: 10_000)
    with pytest.raises(CacheError, match="needs about .* but .* has 10.0 KB free"):
        extract(bat_tiny, small_fsdd, "test", cache_dir=tmp_path, **OPTS)
    st = extract(bat_tiny, small_fsdd, "test", cache_dir=tmp_path, ignore_disk_space=True, **OPTS)
    on_disk = sum(dir_bytes(st.path / a) for a in ("patch", "cls"))
    assert abs(on_disk - rep.needed) / rep.needed < 0.02  # projection = real bytes (+ shard indices)


@pytest.fixture
def manifest(tmp_path, fsdd_root):
    """A multi-label manifest of real FSDD clips plus one corrupt file; native clip lengths."""
    d = tmp_path / "mdata"
    d.mkdir()
    rows = ["path,labels,split,fold"]
    for i, name in enumerate(["0_jackson_5", "1_nicolas_7", "2_theo_9", "3_yweweler_11", "4_george_6", "5_lucas_8"]):
        shutil.copy(fsdd_root / "recordings" / f"{name}.wav", d / f"{name}.wav")
        labels = f"d{name[0]}" + (";even" if int(name[0]) % 2 == 0 else "")
        rows.append(f"{name}.wav,{labels},train,{i % 2}")
    (d / "broken.wav").write_bytes(b"RIFF" + np.random.default_rng(0).bytes(300))
    rows.append("broken.wav,d9,train,1")
    (d / "m.csv").write_text("\n".join(rows) + "\n")
    return d / "m.csv"


def test_manifest_failed_clip_skip_and_fail(manifest, tmp_path, bat_tiny):
    from probekit.datasets import get_dataset

    ds = get_dataset(f"manifest:{manifest}")
    st = extract(bat_tiny, ds, "train", cache_dir=tmp_path / "c", batch_size=3, workers=0, progress=False)
    failed = st.meta["failed_clips"]
    assert [f["id"] for f in failed] == ["broken.wav"] and "broken.wav" in failed[0]["error"]
    # native length: padded to the longest clip of the split (rounded to 16 frames)
    assert st.key["frontend"]["target_frames"] % 16 == 0 and st.layout.grid[1] == 8
    r = open_cache(st.path)
    assert r.num_clips == 6 and "broken.wav" not in list(r.clip_ids)
    assert r.multilabel and r.labels.shape == (6, len(ds.spec.classes)) and r.labels.dtype == np.float32
    assert list(r.folds) == [0, 1, 0, 1, 0, 1]
    b = next(r.batches(TokenRequest(layers="last", patch=False), 6))
    assert b.patch is None and b.cls.shape == (6, 1, 64) and bool(b.cls.abs().sum(-1).gt(0).all())
    assert open_cache(st.path, include_failed=True).num_clips == 7
    with pytest.raises(AudioError, match="broken.wav"):
        extract(bat_tiny, ds, "train", cache_dir=tmp_path / "d", on_error="fail", **OPTS)
    # the run stopped cleanly: the store is not complete, and a skip run finishes it
    part = TokenStore(next((tmp_path / "d").glob("*.zarr")))
    assert not part.complete
    assert extract(bat_tiny, ds, "train", cache_dir=tmp_path / "d", **OPTS).complete


def test_cli_extract_ls_du_verify_rm(manifest, tmp_path, capsys, monkeypatch):
    from probekit.cli import console

    monkeypatch.setattr(console, "width", 220)  # tables unwrapped, as on a wide terminal
    cache = tmp_path / "cli-cache"
    base = ["--backbone", "eat-tiny", "--dataset", f"manifest:{manifest}", "--cache-dir", str(cache)]
    assert main(["extract", *base, "--dry-run", "--layers", "0,3"]) == 0
    out = capsys.readouterr().out
    assert "projected store size" in out and "chosen" in out and "free" in out
    assert not cache.exists() or not list(cache.glob("*.zarr"))
    rc = main(["extract", *base, "--split", "train", "--workers", "0", "--batch-size", "4", "--dtype", "int8"])
    out = capsys.readouterr().out
    assert rc == 0 and "failed clips" in out and "broken.wav" in out
    assert main(["cache", "ls", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "eat-tiny" in out and "complete" in out and "int8" in out
    assert main(["cache", "du", "--cache-dir", str(cache)]) == 0
    assert "total" in capsys.readouterr().out
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 0
    assert "ok" in capsys.readouterr().out
    store = next(cache.glob("*.zarr"))
    shard = store / "cls" / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[10] ^= 1
    shard.write_bytes(bytes(data))
    assert main(["cache", "verify", store.name, "--cache-dir", str(cache)]) == 1
    assert main(["cache", "rm", "nothing-like-this", "--cache-dir", str(cache), "--yes"]) == 2
    assert "no store matches" in capsys.readouterr().err
    assert main(["cache", "rm", store.name[:20], "--cache-dir", str(cache), "--yes"]) == 0
    assert not store.exists()
    assert main(["extract", *base, "--split", "train", "--on-error", "fail", "--workers", "0", "--no-progress"]) == 2
    assert "broken.wav" in capsys.readouterr().err


def test_store_renamed_to_another_key_is_refused(bat_store, small_fsdd, tmp_path):
    """Found by name, checked by content: a store copied under another key's name is neither read nor resumed."""
    import shutil

    from probekit.backbones import get_backbone
    from probekit.cache import plan

    other = get_backbone("bat-tiny", seed=1)
    target = plan(other, small_fsdd, "test", cache_dir=tmp_path).path
    shutil.copytree(bat_store.path, target)
    with pytest.raises(CacheError, match="made from other inputs than asked: .*random_init_seed"):
        open_cache(other, small_fsdd, "test", cache_dir=tmp_path)
    with pytest.raises(CacheError, match="holds tokens of other inputs than its name says: .*random_init_seed"):
        extract(other, small_fsdd, "test", cache_dir=tmp_path, **OPTS)

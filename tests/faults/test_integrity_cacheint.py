"""A token store never hands out wrong tokens silently (red-team #24, #36, #38-#45, #50-#52, #80, #88).

Every case breaks a real store of real FSDD tokens (tiny backbone) the way a disk, a user or a bad
checkpoint does, then checks that the read is refused with a line naming the store, array and shard,
that `cache verify` lists the damage and fails, and that rerunning the same extraction repairs exactly
that and ends bitwise identical to an undamaged store.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from _faults import assert_same_store, assert_user_error, cli, fsdd_manifest, run_module

from probekit.cache import extract
from probekit.cache.reader import CacheReader, open_cache
from probekit.cache.store import TokenStore
from probekit.errors import CacheError
from probekit.tokens import TokenRequest

# 16 clips in 4 shards of 4: one damaged shard leaves three good ones to compare against
OPTS = {"dtype": "float16", "batch_size": 4, "workers": 0, "clips_per_shard": 4, "progress": False}


@pytest.fixture(scope="module")
def bat_tiny():
    from probekit.backbones import get_backbone

    return get_backbone("bat-tiny", seed=0)


@pytest.fixture(scope="module")
def make_subset(fsdd_root):
    """make_subset(n): every k-th clip of the FSDD test split (all ten digits), as its own Dataset."""
    from probekit.datasets import get_dataset
    from probekit.datasets.base import Dataset

    def make(n):
        full = get_dataset("fsdd", root=fsdd_root)
        clips = full.clips("test")
        chosen = clips[:: max(1, len(clips) // n)][:n]
        return Dataset(full.spec, full.root, lambda s: chosen if s == "test" else [])

    return make


@pytest.fixture(scope="module")
def reference(tmp_path_factory, bat_tiny, make_subset):
    ds = make_subset(16)
    return extract(bat_tiny, ds, "test", cache_dir=tmp_path_factory.mktemp("ref"), **OPTS), ds


@pytest.fixture
def copy(reference, tmp_path):
    """A fresh copy of the reference store in its own cache dir: (store path, dataset)."""
    ref, ds = reference
    dst = tmp_path / "cache" / ref.path.name
    shutil.copytree(ref.path, dst)
    return dst, ds


def _read_all(path: Path, **kw) -> torch.Tensor:
    """Every stored token (patch and cls, all layers), flattened per clip."""
    r = open_cache(path, preload=False, **kw)
    return torch.cat([torch.cat([b.patch.flatten(1), b.cls.flatten(1)], 1) for b in r.batches(TokenRequest(layers="all"), 4)])


def _flip_bits(f: Path, n: int = 50, seed: int = 2) -> None:
    """Exponent bits of float16 values in the data part of a shard (the index at the end is left alone)."""
    b = bytearray(f.read_bytes())
    for i in np.random.default_rng(seed).choice(len(b) // 2, n, replace=False):
        b[int(i) | 1] ^= 0x40
    f.write_bytes(bytes(b))


def _shard(store: Path, array: str, j: int) -> Path:
    return store / array / "c" / str(j) / "0" / ("0/0" if array == "patch" else "0")  # patch_scale: c/j/0/0


# ---- #38 #39 #40 #41: a damaged shard is refused at its first read, named, and repaired by a rerun ----
@pytest.mark.parametrize(
    "damage, words",
    [
        ("bit flips", ["checksum mismatch"]),  # #38
        ("nan bytes", ["checksum mismatch"]),  # #39: 0xFF bytes = float16 NaN
        ("deleted", ["cls/c/1/0/0", "missing"]),  # #40
        ("zero bytes", ["cls/c/1/0/0", "0 bytes"]),  # #41
    ],
)
def test_damaged_shard_is_refused_then_repaired_by_the_same_extract(copy, reference, bat_tiny, damage, words):
    path, ds = copy
    f = _shard(path, "cls", 1)
    if damage == "bit flips":
        _flip_bits(f)
    elif damage == "nan bytes":
        b = bytearray(f.read_bytes())
        b[64 : 64 + 1024] = b"\xff" * 1024  # inside the data part: same file size
        f.write_bytes(bytes(b))
    elif damage == "deleted":
        f.unlink()
    else:
        f.write_bytes(b"")
    for preload in (False, True):  # both ways a probe reads
        with pytest.raises(CacheError) as err:
            r = open_cache(path, preload=preload)
            list(r.batches(TokenRequest(layers="all"), 4))
        msg = str(err.value)
        for w in [str(path), "shard 1 of cls", "clips 4-8", "probekit extract", *words]:
            assert w in msg, msg
    # the undamaged shards still read (the error is about shard 1 only)
    ok = open_cache(path, preload=False)
    assert next(ok.batches(TokenRequest(layers="all"), 4)).cls.isfinite().all()  # rows 0-3: shard 0
    problems = TokenStore(path).verify()
    assert len(problems) == 1 and problems[0].startswith("shard 1 of cls"), problems
    # the same command repairs it: only that shard is extracted again, and the store is the reference
    before = {j: _shard(path, "patch", j).stat().st_mtime_ns for j in range(4)}
    st = extract(bat_tiny, ds, "test", cache_dir=path.parent, **OPTS)
    assert st.complete and st.verify() == []
    after = {j: _shard(path, "patch", j).stat().st_mtime_ns for j in range(4)}
    assert [j for j in range(4) if before[j] != after[j]] == [1]
    assert_same_store(path, reference[0].path)
    assert torch.equal(_read_all(path), _read_all(reference[0].path))


def test_missing_and_empty_shards_are_found_without_reading_the_data(copy, reference, bat_tiny):
    """--no-verify (the resume default) still finds missing and 0-byte files: existence + size only."""
    path, ds = copy
    _shard(path, "patch", 0).unlink()
    _shard(path, "cls", 3).write_bytes(b"")
    _flip_bits(_shard(path, "cls", 2))  # same size: only a checksum finds this one
    st = TokenStore(path)
    cheap = st.damaged_shards(full=False)
    assert sorted(cheap) == [0, 3] and "patch/c/0/0/0/0 is missing" in cheap[0]
    assert sorted(st.damaged_shards(full=True)) == [0, 2, 3]
    extract(bat_tiny, ds, "test", cache_dir=path.parent, verify=False, **OPTS)
    assert sorted(TokenStore(path).damaged_shards(full=True)) == [2]
    extract(bat_tiny, ds, "test", cache_dir=path.parent, **OPTS)  # complete store: checksums by default
    assert_same_store(path, reference[0].path)


def test_cache_verify_lists_each_damaged_shard_and_fails(copy, capsys, monkeypatch):
    from probekit.cli import console

    monkeypatch.setattr(console, "width", 400)
    path, _ = copy
    _shard(path, "cls", 1).unlink()
    _flip_bits(_shard(path, "patch", 2))
    _shard(path, "cls", 3).write_bytes(b"")
    rec = path / ".probekit" / "done" / "000000.json"
    rec.write_text(rec.read_text()[:40])
    rc, out, err = cli(capsys, "cache", "verify", "--cache-dir", path.parent)
    assert rc == 1 and not err, out + err
    for w in ("shard 0: ", "000000.json: unreadable completion record", "shard 1 of cls", "missing",
              "shard 2 of patch", "checksum mismatch", "shard 3 of cls", "0 bytes"):
        assert w in out, out


def test_reader_checks_each_shard_once_per_process(copy):
    """Damage after a shard was verified in this process is not re-hashed on every read (once per shard)."""
    from probekit.cache import shards as shards_mod

    path, _ = copy
    a = _read_all(path)
    seen = {k for k in shards_mod._VERIFIED if k[0].startswith(str(path))}
    assert len(seen) == 8  # four patch and four cls shards, each hashed once
    assert torch.equal(_read_all(path), a)
    assert {k for k in shards_mod._VERIFIED if k[0].startswith(str(path))} == seen


# ---- #50: a truncated completion record -------------------------------------------------------------
def test_truncated_completion_record_is_redone_not_a_dead_end(reference, bat_tiny, tmp_path, capsys):
    ref, ds = reference
    cache = tmp_path / "c"
    part = extract(bat_tiny, ds, "test", cache_dir=cache, shard="0/2", **OPTS)  # shards 0 and 2 done
    rec = part.path / ".probekit" / "done" / "000000.json"
    rec.write_text(rec.read_text()[:40])
    problems = TokenStore(part.path).verify()
    assert any("shard 0" in p and "unreadable completion record" in p for p in problems), problems
    final = extract(bat_tiny, ds, "test", cache_dir=cache, **OPTS)
    assert final.complete and final.verify() == []
    assert_same_store(final.path, ref.path)


def test_truncated_record_of_a_complete_store_is_refused_at_read_and_repaired(copy, reference, bat_tiny):
    path, ds = copy
    rec = path / ".probekit" / "done" / "000002.json"
    rec.write_text(rec.read_text()[:40])
    with pytest.raises(CacheError, match="000002.json: unreadable completion record.*probekit extract"):
        _read_all(path)
    extract(bat_tiny, ds, "test", cache_dir=path.parent, **OPTS)
    assert_same_store(path, reference[0].path)


def test_deleted_completion_record_of_a_complete_store_is_repaired(copy, reference, bat_tiny, capsys):
    """A record gone from a store marked complete (deleted by hand, or a repair cut short) is not a cache hit."""
    path, ds = copy
    (path / ".probekit" / "done" / "000001.json").unlink()
    with pytest.raises(CacheError, match="000001.json: unreadable completion record.*probekit extract"):
        _read_all(path)
    assert TokenStore(path).verify()[0].startswith("1 of 4 shards not extracted")
    assert extract(bat_tiny, ds, "test", cache_dir=path.parent, **OPTS).verify() == []
    assert_same_store(path, reference[0].path)


# ---- #80 #88: NaN/Inf tokens are refused at extraction --------------------------------------------
@pytest.fixture(scope="module")
def nan_backbone(bat_tiny):
    import copy as copy_mod

    bb = copy_mod.deepcopy(bat_tiny)
    with torch.no_grad():
        dict(bb.model.named_parameters())["blocks.1.mlp.fc1.weight"][0, 0] = float("nan")
    return bb


def test_nan_weights_are_refused_naming_the_clips(nan_backbone, make_subset, tmp_path):
    ds = make_subset(16)
    with pytest.raises(CacheError) as err:
        extract(nan_backbone, ds, "test", cache_dir=tmp_path, **OPTS)
    msg = str(err.value)
    first = ds.clips("test")[0].id
    for w in ("NaN/Inf tokens", "of 4 clips", "test", first, "check-backbone", "--allow-nonfinite"):
        assert w in msg, msg
    st = TokenStore(next(tmp_path.glob("*.zarr")))
    assert not st.complete and st.done_shards() == set()  # nothing of it was committed
    # asked for explicitly, they are stored
    done = extract(nan_backbone, ds, "test", cache_dir=tmp_path, allow_nonfinite=True, **OPTS)
    assert done.complete and not _read_all(done.path).isfinite().all()


def test_nan_checkpoint_cli_refuses_then_allows(tmp_path, fsdd_root, capsys):
    from safetensors.torch import save_file

    from probekit.backbones import get_backbone

    sd = {k: v.clone().contiguous() for k, v in get_backbone("bat-tiny", seed=0).model.state_dict().items()}
    sd["blocks.1.mlp.fc1.weight"][0, 0] = float("nan")
    ck = tmp_path / "one_nan.safetensors"
    save_file(sd, str(ck))
    m = fsdd_manifest(tmp_path / "data", fsdd_root, n=8)
    base = ["extract", "--backbone", "bat-tiny", "--checkpoint", ck, "--dataset", f"manifest:{m}",
            "--cache-dir", tmp_path / "c", "--workers", "0", "--no-progress"]
    rc, _, err = cli(capsys, *base)
    # refused before any token is computed: the loader names the bad tensor (backbones' #88 check)
    assert_user_error(rc, err, "NaN/Inf", "blocks.1.mlp.fc1.weight", "--allow-nonfinite")
    rc, _, err = cli(capsys, "cache", "verify", "--cache-dir", tmp_path / "c")
    assert rc != 0 or "ok" not in err  # nothing was stored as complete
    rc, _, err = cli(capsys, *base, "--allow-nonfinite")
    assert rc == 0, err


# ---- #36: failed clips are retried by a rerun --------------------------------------------------------
def test_failed_clip_is_retried_when_it_decodes_again(tmp_path, fsdd_root, bat_tiny, capsys):
    from probekit.datasets import get_dataset

    m = fsdd_manifest(tmp_path / "data", fsdd_root, n=8)
    # the shortest clip: the longest one sets the split's token grid, so its absence would change the key
    victim = min((tmp_path / "data").glob("*.wav"), key=lambda f: f.stat().st_size)
    good = victim.read_bytes()
    ds = get_dataset(f"manifest:{m}")
    ref = extract(bat_tiny, ds, "train", cache_dir=tmp_path / "ref", **OPTS)
    # broken for a while (a file mid-copy): same size, other content, so content fingerprints give the
    # dataset another key; its store records the failed clip
    victim.write_bytes(b"XXXX" + good[4:])
    broken = get_dataset(f"manifest:{m}")
    st = extract(bat_tiny, broken, "train", cache_dir=tmp_path / "c", **OPTS)
    assert st.path.name != ref.path.name
    assert [f["id"] for f in st.failed_clips()] == [victim.name]
    counts = open_cache(st.path).failed_counts()
    assert counts == {"split": "train", "clips": 8, "failed": 1, "ids": [victim.name]}
    # still broken: a rerun of that store tries the clip again, it fails again, nothing else is redone
    assert extract(bat_tiny, broken, "train", cache_dir=tmp_path / "c", **OPTS).failed_counts()["failed"] == 1
    victim.write_bytes(good)
    again = extract(bat_tiny, get_dataset(f"manifest:{m}"), "train", cache_dir=tmp_path / "c", **OPTS)
    assert again.failed_counts()["failed"] == 0 and again.meta["failed_clips"] == []
    assert open_cache(again.path).num_clips == 8
    assert_same_store(again.path, ref.path)


def test_unreadable_file_permission_fixed_then_rerun_recovers(tmp_path, fsdd_root):
    """#35/#36 as the red team ran it: mode 000 with every capability dropped, then chmod 644 and rerun."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not available")
    m = fsdd_manifest(tmp_path / "data", fsdd_root, n=6)
    victim = min((tmp_path / "data").glob("*.wav"), key=lambda f: f.stat().st_size)
    args = ["extract", "--backbone", "bat-tiny", "--dataset", f"manifest:{m}", "--cache-dir", tmp_path / "c",
            "--workers", "0", "--batch-size", "4", "--no-progress"]
    victim.chmod(0)
    drop = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all"]
    try:
        r = _run_dropped(drop, args)
    finally:
        victim.chmod(0o644)
    stores = list((tmp_path / "c").glob("*.zarr"))
    if r.returncode != 0 or not stores or TokenStore(stores[0]).failed_counts()["failed"] != 1:
        pytest.skip(f"could not make the file unreadable here: {r.stderr[-300:]}")
    r = run_module(*args)
    assert r.returncode == 0, r.stderr
    # content fingerprints mark an unreadable file, so the fixed dataset has its own key: the rerun's store
    # (named on stdout) is complete with every clip, and the one with the failed clip is never reused
    used = [p for p in (tmp_path / "c").glob("*.zarr") if p.name in r.stdout]
    assert len(used) == 1, r.stdout
    st = TokenStore(used[0])
    assert st.complete and st.failed_counts()["failed"] == 0


def _run_dropped(drop, args) -> subprocess.CompletedProcess:
    import os
    import sys

    from _faults import REPO

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", COLUMNS="250")
    return subprocess.run([*drop, sys.executable, "-m", "probekit", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300, check=False)


# ---- #24: a split where every clip failed ------------------------------------------------------------
def test_every_clip_failed_is_an_error_not_a_silent_success(tmp_path, fsdd_root, capsys):
    m = fsdd_manifest(tmp_path / "data", fsdd_root, n=6)
    for f in (tmp_path / "data").glob("*.wav"):
        f.write_bytes(b"")
    args = ["extract", "--backbone", "bat-tiny", "--dataset", f"manifest:{m}", "--cache-dir", tmp_path / "c",
            "--workers", "0", "--no-progress"]
    rc, _, err = cli(capsys, *args)
    assert_user_error(rc, err, "every one of the 6 clips", "/train", "empty file")
    rc, _, err = cli(capsys, *args)  # the rerun (a cache hit) says the same
    assert_user_error(rc, err, "every one of the 6 clips")
    # and a probe reading it is told the same, not "no clips to predict" (#21)
    store = next((tmp_path / "c").glob("*.zarr"))
    with pytest.raises(CacheError, match="every one of the 6 clips of split train failed .*empty file"):
        open_cache(store)
    assert open_cache(store, include_failed=True).num_clips == 6


def test_some_clips_failed_are_reported_with_no_progress(tmp_path, fsdd_root, capsys):
    m = fsdd_manifest(tmp_path / "data", fsdd_root, n=6)
    broken = sorted((tmp_path / "data").glob("*.wav"))[:2]
    for f in broken:
        f.write_bytes(b"")
    rc, _, err = cli(capsys, "extract", "--backbone", "bat-tiny", "--dataset", f"manifest:{m}", "--cache-dir",
                       tmp_path / "c", "--workers", "0", "--no-progress")
    assert rc == 0 and "2 of 6 clips of split train failed" in err and broken[0].name in err, err


# ---- #51 #52: verify and ls on stores that are not (or no longer) readable ---------------------------
def test_verify_fails_on_a_corrupt_zarr_json(copy, capsys):
    path, _ = copy
    meta = path / "zarr.json"
    meta.write_text(meta.read_text()[: len(meta.read_text()) // 2])
    rc, out, err = cli(capsys, "cache", "verify", "--cache-dir", path.parent)
    assert rc == 1 and "Traceback" not in err and path.name[:30] in out, out + err


def test_foreign_zarr_is_listed_as_not_a_probekit_store(copy, capsys, monkeypatch):
    from probekit.cli import console

    monkeypatch.setattr(console, "width", 400)
    path, _ = copy
    foreign = path.parent / "other.zarr"
    shutil.copytree(path, foreign)
    meta = json.loads((foreign / "zarr.json").read_text())
    del meta["attributes"]["probekit"]["layout"]["layers"]
    (foreign / "zarr.json").write_text(json.dumps(meta))
    rc, out, err = cli(capsys, "cache", "ls", "--cache-dir", path.parent)
    assert rc == 0 and "internal error" not in err, err
    assert "other.zarr" in out and "not a probekit store" in out and "complete" in out, out
    rc, out, err = cli(capsys, "cache", "verify", "--cache-dir", path.parent)
    assert rc == 1 and "internal error" not in err, err
    assert "not a probekit store" in out and "layers" in out and "ok" in out, out
    # a plain zarr group of someone else is listed but is not a failure
    import zarr

    shutil.rmtree(foreign)
    zarr.open_group(str(path.parent / "plain.zarr"), mode="w")
    rc, out, err = cli(capsys, "cache", "verify", "--cache-dir", path.parent)
    assert rc == 0 and "plain.zarr" in out and "not a probekit store" in out, out + err


# ---- #43 #45: cache dirs that cannot hold a store ----------------------------------------------------
def test_cache_dir_that_is_a_file(tmp_path, fsdd_root, capsys, monkeypatch):
    m = fsdd_manifest(tmp_path / "data", fsdd_root, n=4)
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    monkeypatch.setenv("PROBEKIT_CACHE", str(afile))
    rc, _, err = cli(capsys, "extract", "--backbone", "bat-tiny", "--dataset", f"manifest:{m}", "--workers", "0",
                     "--no-progress")
    assert_user_error(rc, err, str(afile), "not a folder")
    rc, _, err = cli(capsys, "cache", "ls")
    assert_user_error(rc, err, str(afile), "not a folder")
    assert afile.read_text() == "not a folder"


def test_read_only_cache_dir_is_one_named_line(tmp_path, fsdd_root):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not available")
    m = fsdd_manifest(tmp_path / "data", fsdd_root, n=4)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = _run_dropped(["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all"],
                         ["extract", "--backbone", "bat-tiny", "--dataset", f"manifest:{m}", "--cache-dir", ro,
                          "--workers", "0", "--no-progress"])
    finally:
        ro.chmod(0o755)
    if r.returncode == 0:
        pytest.skip("the read-only folder was writable here (capabilities not dropped)")
    assert_user_error(r.returncode, r.stderr, str(ro), "cannot write to cache dir", "Permission denied")


def test_read_through_reader_class_directly_is_checked_too(copy):
    """CacheReader (not only open_cache) checks: the API's prepare() builds one after extract()."""
    path, _ = copy
    _flip_bits(_shard(path, "patch", 3))
    r = CacheReader(path, preload=False)
    with pytest.raises(CacheError, match="shard 3 of patch .*checksum mismatch"):
        list(r.batches(TokenRequest(layers="last", cls=False), 4))


def test_int8_scales_are_checked_too(reference, bat_tiny, tmp_path):
    """int8 stores also hold float32 scales; a flipped scale scales a whole token: refused by name."""
    _, ds = reference
    st = extract(bat_tiny, ds, "test", cache_dir=tmp_path, **{**OPTS, "dtype": "int8"})
    _flip_bits(st.path / "cls_scale" / "c" / "2" / "0", n=4)
    with pytest.raises(CacheError, match="shard 2 of cls_scale .*checksum mismatch.*probekit extract"):
        open_cache(st.path, preload=False)
    _flip_bits(_shard(st.path, "patch_scale", 1), n=4)
    assert sorted(TokenStore(st.path).damaged_shards(full=True)) == [1, 2]
    assert extract(bat_tiny, ds, "test", cache_dir=tmp_path, **{**OPTS, "dtype": "int8"}).verify() == []
    assert open_cache(st.path, preload=True).num_clips == 16

"""Crash consistency: SIGKILL at several moments, shards, the lock, and a full disk; all end bitwise identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from probekit.cache import TokenStore, extract
from probekit.errors import CacheError

N_CLIPS = 32
OPTS = {"dtype": "float16", "batch_size": 4, "workers": 0, "clips_per_shard": 4, "progress": False}  # 8 shards



def _child(cache: str, dataset) -> None:
    # a forked copy of the test process: starts in milliseconds, dies by SIGKILL like any crashed run
    import torch

    from probekit.backbones import get_backbone

    torch.set_num_threads(1)
    extract(get_backbone("bat-tiny", seed=0), dataset, "test", cache_dir=cache, **OPTS)


def store_snapshot(path: Path) -> dict[str, bytes]:
    """Every file of a store that must be bitwise reproducible (the group's provenance times aside)."""
    out = {}
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path).as_posix()
        if f.is_dir() or rel.startswith(".probekit/lock-"):
            continue
        if rel == "zarr.json":
            meta = json.loads(f.read_bytes())
            prov = meta["attributes"]["probekit"].pop("provenance")
            assert prov["created"] and prov["completed"]
            out[rel] = json.dumps(meta, sort_keys=True).encode()
        else:
            out[rel] = f.read_bytes()
    return out


def assert_same_store(a: Path, b: Path) -> None:
    sa, sb = store_snapshot(a), store_snapshot(b)
    assert sorted(sa) == sorted(sb)
    different = [k for k in sa if sa[k] != sb[k]]
    assert not different, different[:5]
    assert not list(a.parent.glob(".*.tmp")) and not list(a.rglob("*.partial"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, bat_tiny, make_subset):
    ds = make_subset(N_CLIPS)
    return extract(bat_tiny, ds, "test", cache_dir=tmp_path_factory.mktemp("ref"), **OPTS), ds


def _wait_for(cond, proc, timeout=60.0) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        if not proc.is_alive():
            return False
        time.sleep(0.005)
    return False


def test_sigkill_at_five_moments_then_resume_is_bitwise_identical(tmp_path, reference, bat_tiny):
    ref, ds = reference
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    cache = tmp_path / "cache"
    store = cache / ref.path.name
    done = store / ".probekit" / "done"

    def n_done():
        return len(list(done.glob("*.json"))) if done.is_dir() else 0

    # kill points: while the group is being created, then after 1, 3, 5 and 7 of 8 shards are committed
    points = [lambda: cache.is_dir() and any(cache.iterdir())] + [(lambda k=k: n_done() >= k) for k in (1, 3, 5, 7)]
    killed = 0
    for cond in points:
        if n_done() == 8:
            break
        proc = fork.Process(target=_child, args=(str(cache), ds))
        proc.start()
        if _wait_for(cond, proc):
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.join(timeout=60)
        assert proc.exitcode in (0, -signal.SIGKILL)
    assert killed >= 4  # the run really was interrupted (the last point may race the finish)
    assert not TokenStore(store).complete or n_done() == 8
    final = extract(bat_tiny, ds, "test", cache_dir=cache, **OPTS)
    assert final.complete and final.verify() == []
    assert_same_store(final.path, ref.path)


def test_shards_and_lock(tmp_path, reference, bat_tiny):
    from probekit.cache.lock import ExtractionLock

    ref, ds = reference
    first = extract(bat_tiny, ds, "test", cache_dir=tmp_path, shard="0/2", **OPTS)
    assert not first.complete and first.done_shards() == {0, 2, 4, 6}
    with ExtractionLock(first.path, (1, 2)):
        with pytest.raises(CacheError, match="already being extracted"):
            extract(bat_tiny, ds, "test", cache_dir=tmp_path, shard="1/2", **OPTS)
        with pytest.raises(CacheError, match="another shard plan"):
            extract(bat_tiny, ds, "test", cache_dir=tmp_path, **OPTS)
        # the other shard of the same plan is disjoint and may run beside it
        extract(bat_tiny, ds, "test", cache_dir=tmp_path, shard="0/2", **OPTS)
    with ExtractionLock(first.path, (0, 1)), pytest.raises(CacheError, match="already being extracted"):
        extract(bat_tiny, ds, "test", cache_dir=tmp_path, **OPTS)
    final = extract(bat_tiny, ds, "test", cache_dir=tmp_path, shard="1/2", **OPTS)
    assert final.complete
    assert_same_store(final.path, ref.path)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, check=False)
    except OSError:
        return False
    return r.returncode == 0


def test_disk_full_is_clear_and_resumable(tmp_path, reference, bat_tiny, monkeypatch):
    ref, ds = reference
    mnt = tmp_path / "small"
    real = _mount_tmpfs(mnt, "1200k")  # the store needs ~2.2 MB
    try:
        if not real:  # no privileges for a tmpfs: make zarr's file writes fail as a full disk does
            import errno

            import zarr.storage._local as local

            orig, calls = local._put, [0]

            def full_put(path, value, exclusive=False):
                calls[0] += 1
                if calls[0] > 30:
                    raise OSError(errno.ENOSPC, "No space left on device", str(path))
                return orig(path, value, exclusive=exclusive)

            monkeypatch.setattr(local, "_put", full_put)
        with pytest.raises(CacheError, match="disk full") as err:
            extract(bat_tiny, ds, "test", cache_dir=mnt, ignore_disk_space=True, **OPTS)
        assert "rerun" in str(err.value)
        store = TokenStore(mnt / ref.path.name)
        assert 0 < len(store.done_shards()) < 8 and not store.complete
        assert store.verify(checksums=True)[0].startswith(f"{8 - len(store.done_shards())} of 8 shards")
        if real:
            subprocess.run(["mount", "-o", "remount,size=8m", str(mnt)], check=True)
        else:
            monkeypatch.undo()
        final = extract(bat_tiny, ds, "test", cache_dir=mnt, **OPTS)
        assert final.complete
        assert_same_store(final.path, ref.path)
    finally:
        if real:
            subprocess.run(["umount", str(mnt)], capture_output=True, check=False)


def test_dataloader_workers_give_the_same_bytes(tmp_path, reference, bat_tiny):
    ref, ds = reference
    st = extract(bat_tiny, ds, "test", cache_dir=tmp_path, **{**OPTS, "workers": 2})
    assert_same_store(st.path, ref.path)


def test_completion_record_temporaries_of_a_killed_run_are_cleaned(tmp_path, reference, bat_tiny):
    """SIGKILL between writing a completion record's temporary and renaming it leaves `.NNNNNN.json.PID.tmp`."""
    ref, ds = reference
    part = extract(bat_tiny, ds, "test", cache_dir=tmp_path, shard="0/2", **OPTS)
    stale = part.path / ".probekit" / "done" / ".000001.json.4242.tmp"
    stale.write_text('{"shard": 1')  # half a record, as a crash leaves it
    assert 1 not in part.done_shards()  # never mistaken for a record
    final = extract(bat_tiny, ds, "test", cache_dir=tmp_path, shard="1/2", **OPTS)
    assert final.complete and not stale.exists()
    assert_same_store(final.path, ref.path)

"""Crash consistency and concurrency of extraction, end to end.

* SIGKILL at 6 random moments (seeded; PROBEKIT_FAULT_SEED picks others) across a run, resumed each
  time: the store ends bitwise identical to an uninterrupted run. tests/cache/test_resume.py kills right
  after shard commits; these moments fall at random times inside the shards (encoder calls, zarr shard
  writes, completion records) and during the store's creation.
* `probekit extract` in a fresh process killed with SIGKILL, then Ctrl-C (SIGINT): exit 130 with one
  line, no traceback; the rerun finishes the same store as an uninterrupted CLI run.
* Two `probekit extract` on one store: the second is refused with one line naming the running one.

Tuning under SIGKILL/SIGINT and two tuning workers on one study are covered by
tests/tune/test_workers.py (real worker processes on SQLite; PostgreSQL when available).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from _faults import assert_same_store, assert_user_error, cli, fsdd_manifest, popen_module

from probekit.cache.store import TokenStore

OPTS = {"dtype": "float16", "batch_size": 4, "workers": 0, "clips_per_shard": 4, "progress": False}  # 8 shards
FORK = multiprocessing.get_context("fork")


def _extract_child(csv: str, cache: str, hold: str | None = None) -> None:
    """A forked copy of the test process: starts in milliseconds, dies by SIGKILL like any crashed run.

    With `hold`, its second shard write waits until that file exists (it holds the lock meanwhile).
    """
    import torch

    from probekit.backbones import get_backbone
    from probekit.cache import extract
    from probekit.datasets import get_dataset

    torch.set_num_threads(1)
    if hold:
        orig = TokenStore.write_shard

        def held(self, j, *a, **k):
            t0 = time.time()
            while j > 0 and not os.path.exists(hold) and time.time() - t0 < 120:
                time.sleep(0.01)
            return orig(self, j, *a, **k)

        TokenStore.write_shard = held
    extract(get_backbone("bat-tiny", seed=0), get_dataset(f"manifest:{csv}"), "train", cache_dir=cache, **OPTS)


@pytest.fixture(scope="module")
def data(tmp_path_factory, fsdd_root):
    return fsdd_manifest(tmp_path_factory.mktemp("crash") / "clips", fsdd_root, 32)


def _started(cache: Path) -> bool:
    """The child has planned and begun writing (the store, or its creation folder, exists)."""
    return cache.is_dir() and any(cache.iterdir())


def _locked_since(store: Path, t: float) -> bool:
    """A run took the store's extraction lock after time `t` (the lock's info file is rewritten then)."""
    info = store / ".probekit" / "lock-0-of-1"
    try:
        return info.stat().st_mtime >= t - 0.01
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    """The uninterrupted run (in a forked child, like the interrupted ones) and how long its writing phase took."""
    cache = tmp_path_factory.mktemp("ref")
    proc = FORK.Process(target=_extract_child, args=(str(data), str(cache)))
    proc.start()
    while not _started(cache) and proc.is_alive():
        time.sleep(0.005)
    t0 = time.perf_counter()
    proc.join(timeout=300)
    assert proc.exitcode == 0
    (path,) = cache.glob("*.zarr")
    return path, time.perf_counter() - t0


def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(tmp_path, data, reference):
    ref, seconds = reference
    seed = int(os.environ.get("PROBEKIT_FAULT_SEED", "0"))
    rng = np.random.default_rng(seed)
    cache = tmp_path / "cache"
    store = cache / ref.name

    def done() -> int:
        d = store / ".probekit" / "done"
        return len(list(d.glob("*.json"))) if d.is_dir() else 0

    moments = []  # (shards committed when killed, seconds after the last observed commit)
    shard_time = seconds / 8
    for attempt in range(20):
        if len(moments) >= 6 or done() == 8:
            break
        # a random point further on: after one more commit, a random time into the next shard (encoder
        # calls, zarr shard writes, the completion record); the first run is killed while creating the store
        fresh, t_fork = not store.exists(), time.time()
        target = 0 if fresh and attempt == 0 else min(7, done() + 1)
        delay = float(rng.uniform(0.0, 1.0)) * shard_time
        proc = FORK.Process(target=_extract_child, args=(str(data), str(cache)))
        proc.start()
        # the clock starts when writing starts: creating the store, or (resuming) taking its lock
        while proc.is_alive() and not (_started(cache) if fresh else _locked_since(store, t_fork)):
            time.sleep(0.002)
        while proc.is_alive() and done() < target:
            time.sleep(0.002)
        proc.join(timeout=delay)
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
            proc.join()
            moments.append((done(), round(delay, 3)))
        assert proc.exitcode in (0, -signal.SIGKILL)
    assert len(moments) >= 5, f"seed {seed}: only {len(moments)} kills landed: {moments}"
    assert len({m[0] for m in moments}) >= 3, f"seed {seed}: kills not spread over the run: {moments}"
    proc = FORK.Process(target=_extract_child, args=(str(data), str(cache)))
    proc.start()
    proc.join(timeout=300)
    assert proc.exitcode == 0
    final = TokenStore(store)
    assert final.complete and final.verify() == []
    assert_same_store(store, ref)


def _wait(cond, proc, timeout=120.0) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def test_cli_killed_then_interrupted_then_rerun(tmp_path, data, capsys):
    args = ["extract", "--backbone", "bat-tiny", "--dataset", f"manifest:{data}", "--workers", "0",
            "--batch-size", "4", "--no-progress"]  # fmt: skip
    ref_cache, cache = tmp_path / "ref", tmp_path / "cache"
    rc, _, err = cli(capsys, *args, "--cache-dir", ref_cache)
    assert rc == 0, err
    (ref,) = ref_cache.glob("*.zarr")

    store = cache / ref.name
    proc = popen_module(*args, "--cache-dir", cache)
    assert _wait(lambda: _started(cache), proc), proc.communicate()
    time.sleep(0.2)
    proc.kill()  # SIGKILL: no cleanup runs at all
    proc.communicate(timeout=60)
    t = time.time()
    proc = popen_module(*args, "--cache-dir", cache)
    seen = _wait(lambda: _locked_since(store, t), proc)
    # a kill that landed late leaves little to resume: the rerun may finish before its lock is seen
    assert seen or proc.poll() == 0, proc.communicate()
    time.sleep(0.1)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # Ctrl-C while it extracts
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 130:  # it was still working: one line, no traceback
        assert err.strip().splitlines()[-1:] == ["interrupted"] and "Traceback" not in err, (out, err)
    else:  # the interrupt came after the last write: it finished normally
        assert proc.returncode == 0, err
    rc, out, err = cli(capsys, *args, "--cache-dir", cache)
    assert rc == 0, err
    (store,) = cache.glob("*.zarr")
    assert TokenStore(store).complete
    assert_same_store(store, ref)


def test_second_extraction_on_one_store_is_refused(tmp_path, data, reference, capsys):
    ref, _ = reference
    cache = tmp_path / "cache"
    store = cache / ref.name
    hold = tmp_path / "release"
    first = FORK.Process(target=_extract_child, args=(str(data), str(cache), str(hold)))
    first.start()
    t0 = time.time()
    while not (store / ".probekit" / "done").is_dir() or not any((store / ".probekit" / "done").iterdir()):
        assert first.is_alive() and time.time() - t0 < 120
        time.sleep(0.01)
    rc, _, err = cli(capsys, "extract", "--backbone", "bat-tiny", "--dataset", f"manifest:{data}", "--cache-dir",
                     cache, "--workers", "0", "--no-progress")  # fmt: skip
    assert_user_error(rc, err, str(store), "is already being extracted", f"pid {first.pid}",
                      "wait for that run to finish")  # fmt: skip
    assert first.is_alive()  # the refused run did not disturb the first one
    hold.touch()
    first.join(timeout=300)
    assert first.exitcode == 0
    rc, out, err = cli(capsys, "extract", "--backbone", "bat-tiny", "--dataset", f"manifest:{data}", "--cache-dir",
                       cache, "--workers", "0")  # fmt: skip
    assert rc == 0 and "cache hit" in out, (out, err)
    assert_same_store(store, ref)

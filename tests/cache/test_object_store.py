"""Token stores on an object store, end to end against a real S3 server (moto's server mode on 127.0.0.1).

s3fs talks HTTP to the server exactly as to AWS (credentials and endpoint from the standard AWS_*
variables): extract, kill mid-shard, resume, verify, read, probe; two shard writers at once; the lease
lock; the chunk cache; no credentials in records or messages. Every store is compared byte for byte
with the same extraction on local disk (same content key, same store name, same shard bytes).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from _s3server import SECRET, assert_same, moto_s3  # noqa: E402,F401 - the S3 server fixture

OPTS = {"dtype": "float16", "batch_size": 4, "workers": 0, "clips_per_shard": 4, "progress": False}  # 3 shards
FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def subset(make_subset):
    return make_subset(12)


@pytest.fixture(scope="module")
def local_ref(tmp_path_factory, subset, bat_tiny):
    """The same extraction on local disk."""
    from probekit.cache import extract

    return extract(bat_tiny, subset, "test", cache_dir=tmp_path_factory.mktemp("local"), **OPTS).path


def _extract_child(subset, cache: str, hold: str | None = None, shard=(0, 1)) -> None:
    """A forked extraction. With `hold`, shard 1's completion record waits for that file to exist, after
    its token objects were written: killed there, the store holds a shard's data without its record."""
    from probekit.backbones import get_backbone
    from probekit.cache import extract, fs

    torch.set_num_threads(1)
    if hold:
        orig = fs.write_json_atomic

        def held(loc, obj):
            t0 = time.time()
            while loc.name == "000001.json" and not os.path.exists(hold) and time.time() - t0 < 120:
                time.sleep(0.01)
            return orig(loc, obj)

        fs.write_json_atomic = held
    extract(get_backbone("bat-tiny", seed=0), subset, "test", cache_dir=cache, shard=shard, **OPTS)


def _batches(reader):
    from probekit.tokens import TokenRequest

    return [(b.patch, b.cls, b.labels) for b in reader.batches(TokenRequest(layers="all"), 5, shuffle=True, seed=3)]


def test_kill_mid_shard_resume_verify_read_probe(moto_s3, subset, local_ref, tmp_path):
    from probekit.cache import CacheReader, TokenStore
    from probekit.probes import make_probe
    from probekit.train import TrainConfig, fit

    fs, _ = moto_s3
    cache = "s3://probekit-test/crash"
    url = f"{cache}/{local_ref.name}"  # same content key, same store name as on local disk
    hold = tmp_path / "release"
    proc = FORK.Process(target=_extract_child, args=(subset, cache, str(hold)))
    proc.start()
    shard1 = url.split("://", 1)[1] + "/patch/c/1/0/0/0"
    t0 = time.time()
    while not fs.exists(shard1):  # shard 1's tokens are written; its record waits
        assert proc.is_alive() and time.time() - t0 < 120
        time.sleep(0.2)  # (each look is a request the in-process server answers: not too often)
        fs.invalidate_cache()
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    store = TokenStore(url)
    assert store.done_shards() == {0} and not store.complete
    assert fs.exists(url.split("://", 1)[1] + "/.probekit/lock-0-of-1")  # the killed run's lease is left behind

    # resume (a dead holder on this host: its lease is taken over at once), then verify
    proc = FORK.Process(target=_extract_child, args=(subset, cache))
    proc.start()
    proc.join(timeout=120)
    assert proc.exitcode == 0
    store = TokenStore(url)
    assert store.complete and store.verify() == []
    assert not fs.exists(url.split("://", 1)[1] + "/.probekit/lock-0-of-1")  # released
    assert_same(fs, url, local_ref)

    # read: the same batches as the local store, streamed and through the local chunk cache
    local = _batches(CacheReader(local_ref, preload=False))
    for reader in (CacheReader(url, preload=False), CacheReader(url, preload=False, chunk_cache=tmp_path / "cc")):
        got = _batches(reader)
        assert all(torch.equal(x, y) for a, b in zip(got, local) for x, y in zip(a, b))
    assert len(list((tmp_path / "cc").rglob("*.bin"))) == 3 * 2  # patch and cls of 3 shards

    # probe: training from the S3 store gives the very weights training from the local one gives
    cfg = TrainConfig(steps=6, batch_size=4, warmup_steps=1, lr=1e-3)
    res = []
    for src in (url, local_ref):
        data = CacheReader(src, preload=False)
        probe = make_probe("linear", num_layers=data.num_layers, embed_dim=data.embed_dim,
                           num_classes=data.num_classes, seed=0)
        res.append(fit(probe, data, config=cfg, progress=False))
    a, b = (r.probe.state_dict() for r in res)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_shard_writers_on_one_store(moto_s3, subset, local_ref):
    fs, _ = moto_s3
    cache = "s3://probekit-test/two"
    procs = [FORK.Process(target=_extract_child, args=(subset, cache, None, (i, 2))) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    from probekit.cache import TokenStore

    url = f"{cache}/{local_ref.name}"
    store = TokenStore(url)
    assert store.complete and store.verify() == []  # whoever finished last finalised it
    assert_same(fs, url, local_ref)


def test_second_run_refused_while_lease_is_live_and_plans_exclude(moto_s3, tmp_path):
    from probekit.cache import fs as pfs
    from probekit.cache.lock import ExtractionLock, Lease
    from probekit.errors import CacheError

    store = pfs.location("s3://probekit-test/locks/x.zarr")
    with ExtractionLock(store, (0, 2)) as first:
        with pytest.raises(CacheError, match=rf"already being extracted \(pid {os.getpid()} on"):
            ExtractionLock(store, (0, 2)).__enter__()
        with ExtractionLock(store, (1, 2)):  # the same plan, another shard: disjoint, allowed
            pass
        with pytest.raises(CacheError, match="another shard plan"):
            ExtractionLock(store, (0, 1)).__enter__()
        assert not (store / ".probekit" / "lock-0-of-1").exists()  # the refused one took its lease back
        first.check()
    assert list((store / ".probekit").glob("lock-*")) == []
    # a lease nobody renewed for its ttl is taken over; exactly one of two takers wins
    obj = store / ".probekit" / "lock-0-of-1"
    obj.write_bytes(json.dumps({"owner": "x", "host": "elsewhere", "pid": 1, "renewed": time.time() - 60,
                                "ttl": 5}).encode())
    a, b = Lease(obj, ttl=5), Lease(obj, ttl=5)
    won = [a.try_acquire(), b.try_acquire()]
    assert won == [True, False]
    a.release()
    assert not obj.exists()


def test_lease_lost_stops_the_commit(moto_s3):
    from probekit.cache import fs as pfs
    from probekit.cache.lock import ExtractionLock
    from probekit.errors import CacheError

    store = pfs.location("s3://probekit-test/lost/x.zarr")
    os.environ["PROBEKIT_LEASE_TTL"] = "1.5"
    try:
        with ExtractionLock(store, (0, 1)) as lock:
            (store / ".probekit" / "lock-0-of-1").write_bytes(b'{"owner": "thief"}')  # taken over behind our back
            time.sleep(1.2)  # a renewal (every ttl/3) sees another ETag
            with pytest.raises(CacheError, match="lost the extraction lease"):
                lock.check()
    finally:
        os.environ.pop("PROBEKIT_LEASE_TTL")
    assert (store / ".probekit" / "lock-0-of-1").read_bytes() == b'{"owner": "thief"}'  # not ours to delete


def test_no_credentials_in_records_keys_or_messages(moto_s3, fsdd_root, tmp_path, capsys):
    from probekit.cache import fs as pfs
    from probekit.cli import main
    fs, endpoint = moto_s3
    wavs = sorted((fsdd_root / "recordings").glob("*.wav"))[:8]
    csv = tmp_path / "m.csv"
    csv.write_text("path,labels,split\n" + "".join(f"{w},d{w.name[0]},train\n" for w in wavs))
    cache = "s3://probekit-test/creds"
    printed = ""
    for args in (["extract", "--backbone", "bat-tiny", "--dataset", f"manifest:{csv}", "--workers", "0",
                  "--batch-size", "4", "--no-progress", "--cache-dir", cache],
                 ["cache", "ls", "--cache-dir", cache], ["cache", "verify", "--cache-dir", cache]):
        capsys.readouterr()
        rc = main(args)
        out = capsys.readouterr()
        assert rc == 0, out.err
        printed += out.out + out.err
    assert "s3://probekit-test/creds/bat-tiny__manifest" in printed.replace("\n", "")  # the store, by its URL
    every = b"".join(fs.cat_file(k) for k in fs.find("probekit-test/creds"))
    for secret in (SECRET, endpoint, "pk-test-key"):
        assert secret not in printed and secret.encode() not in every, secret
    # cache du and rm on the bucket: the store goes, with its lease-free prefix
    (name,) = [k.split("/")[2] for k in fs.find(cache.split("://")[1]) if k.endswith(".zarr/zarr.json")]
    capsys.readouterr()
    assert main(["cache", "du", "--cache-dir", cache]) == 0
    assert main(["cache", "rm", name[:30], "--cache-dir", cache, "--yes"]) == 0
    printed += capsys.readouterr().out
    assert fs.find(cache.split("://")[1]) == []
    # a URL carrying credentials is never printed with them
    loc = pfs.location(f"s3://pk-test-key:{SECRET}@probekit-test/creds?X-Amz-Signature={SECRET}")
    assert SECRET not in str(loc) and SECRET not in repr(loc) and str(loc) == "s3://probekit-test/creds"
    assert SECRET not in str(loc / "x.zarr" / "zarr.json")


def test_probe_cli_with_cache_and_results_on_s3(moto_s3, fsdd_root, tmp_path, capsys):
    """`probekit probe --cache-dir s3://... --results-dir s3://...`: extract, train, record and probe file on S3."""
    from probekit.cli import main
    from probekit.results.records import load_records

    fs, endpoint = moto_s3
    wavs = sorted((fsdd_root / "recordings").glob("*.wav"))
    take = lambda w: int(w.stem.split("_")[2])  # noqa: E731
    rows = [(w, "train") for w in [w for w in wavs if take(w) >= 5][::150][:8]]
    rows += [(w, "test") for w in [w for w in wavs if take(w) < 5][::150][:4]]
    csv = tmp_path / "m.csv"
    csv.write_text("path,labels,split\n" + "".join(f"{w},d{w.name[0]},{sp}\n" for w, sp in rows))
    capsys.readouterr()
    rc = main(["probe", "linear", "--backbone", "bat-tiny", "--dataset", f"manifest:{csv}", "--device", "cpu",
               "--cache-dir", "s3://probekit-test/pc", "--results-dir", "s3://probekit-test/pr", "--yes",
               "--no-progress", "--batch-size", "4", "--set", "steps=4", "--set", "batch_size=4"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "record: s3://probekit-test/pr/bat-tiny--" in out.out
    objs = fs.find("probekit-test/pr")
    assert [o.rsplit("/", 1)[1] for o in objs] == ["linear--default.json", "linear--default.probe.safetensors"]
    (rec,) = load_records("s3://probekit-test/pr")
    assert rec.probe == "linear" and len(fs.find("probekit-test/pc")) > 0
    assert SECRET not in rec.to_json() and endpoint not in rec.to_json() and SECRET not in out.out + out.err

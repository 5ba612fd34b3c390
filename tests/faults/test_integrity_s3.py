"""Hostile inputs for token stores on an object store (a real S3 server: moto's server mode on 127.0.0.1).

Each case failed on the base commit (no fsspec URL was a cache dir there: `s3://b/p` became the local
folder `s3:/b/p`) and passes now:

* a shard object cut short or altered on S3: named DamagedShardError on read, listed by verify, and the
  rerun of the extraction repairs exactly it (bytes equal to the local store again);
* a completion record deleted from a complete store: found, and the shard redone;
* a chunk-cache copy altered on the local disk: the reader drops it and reads the object again
  (the store is not blamed, the tokens are right);
* objects of a store creation killed before its root zarr.json: the next run creates the store;
* a missing bucket, a chained `simplecache::` URL, an unknown protocol, a non-numeric
  PROBEKIT_LEASE_TTL: one line naming the value and what to do (CLI exit 2);
* a lease object holding garbage: stale once its ttl passed, then taken over.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from _faults import assert_user_error, cli, fsdd_manifest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import importlib.util  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

if "_s3server" not in sys.modules:  # the S3 server fixture lives beside tests/cache/test_object_store.py
    _spec = importlib.util.spec_from_file_location("_s3server", Path(__file__).parents[1] / "cache" / "_s3server.py")
    sys.modules["_s3server"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["_s3server"])
from _s3server import assert_same, moto_s3  # noqa: E402,F401

OPTS = {"dtype": "float16", "batch_size": 4, "workers": 0, "clips_per_shard": 4, "progress": False}


@pytest.fixture(scope="module")
def csv(tmp_path_factory, fsdd_root):
    return fsdd_manifest(tmp_path_factory.mktemp("s3i") / "clips", fsdd_root, 8)


@pytest.fixture(scope="module")
def data(csv):
    from probekit.datasets import get_dataset

    return get_dataset(f"manifest:{csv}")


def _extract(data, cache):
    from probekit.backbones import get_backbone
    from probekit.cache import extract

    return extract(get_backbone("bat-tiny", seed=0), data, "train", cache_dir=cache, **OPTS)


@pytest.fixture(scope="module")
def local(tmp_path_factory, data):
    return _extract(data, tmp_path_factory.mktemp("local")).path


def test_damaged_shard_object_is_named_then_repaired(moto_s3, data, local):
    from probekit.cache import CacheReader, TokenStore
    from probekit.cache.shards import DamagedShardError
    from probekit.tokens import TokenRequest

    fs, _ = moto_s3
    st = _extract(data, "s3://probekit-test/dmg")
    key = str(st.path).split("://", 1)[1]
    obj = f"{key}/patch/c/1/0/0/0"
    whole = fs.cat_file(obj)
    fs.pipe_file(obj, whole[: len(whole) // 2])  # cut short
    with pytest.raises(DamagedShardError, match="shard 1 of patch"):
        list(CacheReader(st.path, preload=False).batches(TokenRequest(), 8))
    bad = bytearray(whole)
    bad[100] ^= 0xFF
    fs.pipe_file(obj, bytes(bad))  # same size, altered: the full check finds it
    problems = TokenStore(st.path).verify()
    assert len(problems) == 1 and "shard 1 of patch" in problems[0] and "checksum mismatch" in problems[0]
    fs.rm_file(f"{key}/.probekit/done/000000.json")  # and a record gone from the complete store
    assert sorted(TokenStore(st.path).damaged_shards()) == [0]
    _extract(data, "s3://probekit-test/dmg")  # the rerun redoes shards 0 and 1
    assert TokenStore(st.path).verify() == []
    assert_same(fs, str(st.path), local)


def test_altered_chunk_cache_copy_is_refetched(moto_s3, data, local, tmp_path):
    from probekit.cache import CacheReader
    from probekit.tokens import TokenRequest

    st = _extract(data, "s3://probekit-test/cc")
    cc = tmp_path / "cc"
    want = [b.patch for b in CacheReader(local, preload=False).batches(TokenRequest(), 8)]
    assert all(torch.equal(a, b.patch) for a, b in
               zip(want, CacheReader(st.path, preload=False, chunk_cache=cc).batches(TokenRequest(), 8)))
    copies = sorted(cc.rglob("*.bin"))
    orig = {c: c.read_bytes() for c in copies}
    for c in copies:  # every cached copy altered in place
        b = bytearray(c.read_bytes())
        b[10] ^= 0xFF
        c.write_bytes(bytes(b))
    from probekit.cache import shards

    shards._VERIFIED.clear()  # a new process
    got = [b.patch for b in CacheReader(st.path, preload=False, chunk_cache=cc).batches(TokenRequest(), 8)]
    assert all(torch.equal(a, b) for a, b in zip(want, got))
    assert sorted(cc.rglob("*.bin")) == copies and all(c.read_bytes() == orig[c] for c in copies)  # fetched again


@pytest.mark.parametrize("cache,words", [
    ("s3://probekit-no-such-bucket/c", ["probekit-no-such-bucket", "bucket"]),
    ("simplecache::s3://probekit-test/c", ["chained fsspec URL", "chunk_cache"]),
    ("nosuchproto://x/y", ["nosuchproto://", "fsspec URL"]),
])
def test_bad_cache_urls_are_one_line(moto_s3, csv, capsys, cache, words):
    rc, _, err = cli(capsys, "extract", "--backbone", "bat-tiny", "--dataset", f"manifest:{csv}", "--workers", "0",
                     "--no-progress", "--cache-dir", cache)
    assert_user_error(rc, err, *words)


def test_bad_lease_ttl_and_garbage_lease(moto_s3, monkeypatch):
    from probekit.cache import fs as pfs
    from probekit.cache.lock import ExtractionLock, Lease
    from probekit.errors import CacheError

    store = pfs.location("s3://probekit-test/garbage/x.zarr")
    monkeypatch.setenv("PROBEKIT_LEASE_TTL", "soon")
    with pytest.raises(CacheError, match="PROBEKIT_LEASE_TTL='soon'"):
        ExtractionLock(store, (0, 1)).__enter__()
    monkeypatch.setenv("PROBEKIT_LEASE_TTL", "2")
    obj = store / ".probekit" / "lock-0-of-1"
    obj.write_bytes(b"\x00not json")
    with pytest.raises(CacheError, match="already being extracted"):  # fresh garbage: wait for its ttl
        ExtractionLock(store, (0, 1)).__enter__()
    time.sleep(2.2)
    with ExtractionLock(store, (0, 1)):
        assert Lease(obj).live_holder()["pid"] == os.getpid()
    assert not obj.exists()


def test_creation_killed_before_its_root_object(moto_s3, data, local):
    """Objects of a creation killed mid-upload (no root zarr.json yet) do not block the next run."""
    from probekit.cache import TokenStore

    fs, _ = moto_s3
    key = f"probekit-test/orphan/{local.name}"
    fs.pipe_file(f"{key}/patch/zarr.json", (local / "patch" / "zarr.json").read_bytes())
    fs.pipe_file(f"{key}/labels/c/0", b"half")
    st = _extract(data, "s3://probekit-test/orphan")
    assert TokenStore(st.path).verify() == []
    assert_same(fs, str(st.path), local)

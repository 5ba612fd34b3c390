"""A real S3 server for tests (moto's server mode on 127.0.0.1) and byte-level comparisons of stores on it.

Used by tests/cache/test_object_store.py and tests/faults/test_integrity_s3.py (`moto_s3` fixture).
A plain module beside the tests (like tests/faults/_faults.py): a top-level `tests` package installed in
some environments shadows `tests.*` imports.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

SECRET = "pk-test-SECRET-d41d8cd98f00b204"  # must never show up in a record, a message or a key


@pytest.fixture(scope="module")
def moto_s3():
    """A real S3 server on 127.0.0.1 and the standard AWS variables pointing s3fs at it; yields (fs, endpoint)."""
    import logging

    import fsspec
    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "pk-test-key", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    # moto keeps its buckets per Python process, not per server: start from an empty one
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).read()
    fs = fsspec.filesystem("s3")
    fs.mkdir("probekit-test")
    try:
        yield fs, endpoint
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()



def remote_snapshot(fs, url: str) -> dict[str, bytes]:
    """Objects of a store on S3, normalised like tests/faults/_faults.store_snapshot (locks aside)."""
    root = url.split("://", 1)[1]
    out = {}
    for key in fs.find(root):
        rel = key[len(root):].lstrip("/")
        out[rel] = fs.cat_file(key)
    return _normalise(out)


def local_snapshot(path: Path) -> dict[str, bytes]:
    return _normalise({f.relative_to(path).as_posix(): f.read_bytes() for f in path.rglob("*") if f.is_file()})


def _normalise(files: dict[str, bytes]) -> dict[str, bytes]:
    out = {}
    for rel, data in files.items():
        if rel.startswith(".probekit/lock-") or rel == ".probekit/finalize.lock":
            continue
        if rel == "zarr.json":
            meta = json.loads(data)
            prov = meta["attributes"]["probekit"].pop("provenance")
            for k in ("created", "completed", "host"):
                prov.pop(k, None)
            data = json.dumps(meta, sort_keys=True).encode() + json.dumps(prov, sort_keys=True).encode()
        out[rel] = data
    return out


def assert_same(fs, url: str, local: Path) -> None:
    a, b = remote_snapshot(fs, url), local_snapshot(local)
    assert sorted(a) == sorted(b), set(a) ^ set(b)
    assert [k for k in a if a[k] != b[k]] == []

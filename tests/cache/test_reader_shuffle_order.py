"""Shard-aware shuffling of CacheReader (opt-in): every clip once, few shards per batch, deterministic;
the default order stays the one InMemoryTokens draws (the resume and cache-vs-RAM contract)."""

from __future__ import annotations

import numpy as np
import pytest

from probekit.cache.layout import StoreLayout
from probekit.cache.reader import CacheReader, shard_batch_order
from probekit.cache.store import TokenStore
from probekit.errors import CacheError
from probekit.tokens import TokenRequest, batch_order

C, S = 40, 8  # 5 shards


@pytest.fixture
def store_path(tmp_path):
    rng = np.random.default_rng(0)
    layout = StoreLayout(num_clips=C, layers=(0, 1), grid=(2, 2), embed_dim=4, dtype="float16", clips_per_shard=S,
                         batch_size=S, num_classes=3, multilabel=False, has_folds=False)
    key = {"format": 1, "test": "order", "dataset": {"name": "t", "split": "test"}, "dtype": "float16"}
    st = TokenStore.create_or_open(tmp_path / "s.zarr", key=key, layout=layout, provenance={"created": "test"},
                                   clip_ids=[f"c{i}" for i in range(C)], labels=rng.integers(0, 3, C), folds=None,
                                   classes=["a", "b", "c"])
    for j in range(layout.num_shards):
        s, e = layout.shard_rows(j)
        # clip i's tokens all equal i: a batch's values name its clips
        p = np.broadcast_to(np.arange(s, e, dtype=np.float16)[:, None, None, None], (e - s, 2, 4, 4)).copy()
        st.write_shard(j, {"patch": p, "cls": p[:, :, 0].copy()}, np.full(e - s, 2), [])
    st.finalize()
    return st.path


def _epoch(reader, seed, **kw):
    return [b.index.numpy() for b in reader.batches(TokenRequest(layers="all"), 6, shuffle=True, seed=seed, **kw)]


def test_default_order_is_the_in_memory_order(store_path):
    r = CacheReader(store_path, preload=False, threads=0)
    got = _epoch(r, 3)
    want = batch_order(C, 6, shuffle=True, seed=3)
    assert [sorted(g) for g in got] == [sorted(w) for w in want]


def test_shard_order_covers_every_clip_once_and_reads_few_shards(store_path):
    r = CacheReader(store_path, preload=False, threads=0, shuffle_order="shard", shard_window=2)
    batches = [b for b in r.batches(TokenRequest(layers="all"), 8, shuffle=True, seed=1)]
    idx = np.concatenate([b.index.numpy() for b in batches])
    assert sorted(idx.tolist()) == list(range(C))
    for b in batches:  # the tokens are the clips the batch names
        assert np.array_equal(b.patch[:, 0, 0, 0].numpy(), b.index.numpy().astype(np.float32))
        # batches of 8 tile the windows of 2 x 8 clips: each batch lies in one window (two shards)
        assert len(set((b.index.numpy() // S).tolist())) <= 2
    windows = [set(w.tolist()) for w in np.split(idx, [16, 32])]  # first two windows hold 2 whole shards each
    assert all(len({i // S for i in w}) == 2 for w in windows[:2])


def test_shard_order_is_deterministic_and_seeded(store_path):
    r = CacheReader(store_path, preload=False, threads=0, shuffle_order="shard")
    a, b, c = _epoch(r, 5), _epoch(r, 5), _epoch(r, 6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    # indices and drop_last as in the global order
    sub = np.arange(0, C, 3)
    got = np.concatenate([x for x in _epoch(r, 5, indices=sub)])
    assert sorted(got.tolist()) == sub.tolist()
    assert all(len(x) == 6 for x in _epoch(r, 5, drop_last=True))


def test_shard_batch_order_unshuffled_window_one_keeps_shards_whole():
    shard_of = np.arange(20) // 5
    order = np.concatenate(shard_batch_order(shard_of, 5, indices=np.arange(20), seed=0, window=1))
    assert all(len(set(shard_of[order[s:s + 5]].tolist())) == 1 for s in range(0, 20, 5))


def test_bad_order_is_refused(store_path):
    with pytest.raises(CacheError, match="shuffle_order 'random'"):
        CacheReader(store_path, preload=False, shuffle_order="random")
    with pytest.raises(CacheError, match="shard_window 0"):
        CacheReader(store_path, preload=False, shuffle_order="shard", shard_window=0)


def test_fit_trains_in_the_reader_order_and_resumes_it(store_path):
    from probekit.cache.reader import shard_order

    r = CacheReader(store_path, preload=False, threads=0, shuffle_order="shard")
    idx = np.arange(C)
    a, b = r.epoch_order(idx, [0, 1]), r.epoch_order(idx, [0, 1])
    assert np.array_equal(a, b) and sorted(a.tolist()) == list(range(C))
    assert np.array_equal(a, shard_order(np.arange(C) // S, idx, [0, 1], window=2))
    assert CacheReader(store_path, preload=False, threads=0).epoch_order(idx, [0, 1]) is None  # fit's own order

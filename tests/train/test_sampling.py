"""Weighted training samplers (probekit.train.sampling): the official BAT hsn / as2m draw weights, the
batches fit reads under them, resume and 2-rank data parallelism on real FSDD tokens.

This file is also the program of the data-parallel ranks (`python tests/train/test_sampling.py SPEC.json`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CFG = dict(steps=24, batch_size=16, lr=3e-3, log_every=4, checkpoint_every=6, warmup_steps=2, seed=5,
           device="cpu", sampler="class_balanced")


def _imbalanced(data, keep_every: dict[int, int]):
    """A subset of `data` where class c keeps every keep_every[c]-th clip (others all): skewed classes."""
    from probekit.tokens import InMemoryTokens

    lab = np.asarray(data.labels)
    cls = lab if lab.ndim == 1 else lab.argmax(1)
    seen: dict[int, int] = {}
    rows = []
    for i, c in enumerate(cls):
        seen[c] = seen.get(c, 0) + 1
        if (seen[c] - 1) % keep_every.get(int(c), 1) == 0:
            rows.append(i)
    rows = np.asarray(rows)
    return InMemoryTokens(data.patch[rows], data.cls[rows], lab[rows], num_classes=data.num_classes,
                          multilabel=data.multilabel, grid=data.grid)


def _official_weights(labels: np.ndarray, kind: str) -> np.ndarray:
    """BAT data/factory.py, re-derived on label lists (hsn: first label; as2m: mean over labels)."""
    lists = [list(np.flatnonzero(r)) if np.ndim(r) else [int(r)] for r in labels]
    if kind == "hsn":
        first = np.array([x[0] for x in lists])
        counts = np.bincount(first)
        return (1.0 / (counts + 1e-8))[first]
    counts = np.zeros(labels.shape[1])
    for x in lists:
        for c in x:
            counts[c] += 1
    cw = 1.0 / (counts + 1e-8)
    return np.array([sum(cw[c] for c in x) / len(x) if x else 1.0 for x in lists])


def _drawn(data, config, epochs: int) -> np.ndarray:
    from probekit.probes import make_probe
    from probekit.train.fit import _setup

    probe = make_probe("linear", num_layers=data.num_layers, embed_dim=data.embed_dim, num_classes=data.num_classes)
    run = _setup(probe, data, config, np.arange(data.num_clips))
    return np.concatenate([b.index.numpy() for e in range(epochs) for b in run.epoch_batches(e, 0)])


def test_class_balanced_draws_match_official_hsn_weights(fsdd_train):
    from probekit.train import TrainConfig
    from probekit.train.sampling import sample_weights

    data = _imbalanced(fsdd_train, {0: 1, 1: 2, 2: 4, 3: 8, 4: 10, 5: 20})
    cls = np.asarray(data.labels)
    counts = np.bincount(cls)
    assert counts.max() / counts.min() >= 15  # really skewed
    np.testing.assert_allclose(sample_weights("class_balanced", cls, False), _official_weights(cls, "hsn"))
    # the official WeightedRandomSampler on the same weights: every class drawn ~ equally often
    w = torch.as_tensor(_official_weights(cls, "hsn"))
    ref = np.bincount(cls[list(torch.utils.data.WeightedRandomSampler(w, 40 * len(w), replacement=True,
                                                                       generator=torch.Generator().manual_seed(0)))],
                      minlength=10) / (40 * len(w))
    got_idx = _drawn(data, TrainConfig(batch_size=16, sampler="class_balanced", drop_last=False, seed=1), epochs=40)
    assert len(got_idx) == 40 * data.num_clips  # an epoch is len(train) draws, as official
    got = np.bincount(cls[got_idx], minlength=10) / len(got_idx)
    np.testing.assert_allclose(got, 0.1, atol=0.012)
    np.testing.assert_allclose(got, ref, atol=0.015)
    # shuffle (default) keeps the skew: each clip once per epoch
    plain = _drawn(data, TrainConfig(batch_size=16, drop_last=False), epochs=2)
    np.testing.assert_array_equal(np.bincount(plain, minlength=data.num_clips), 2)


def test_label_weighted_draws_match_official_as2m_weights(fsdd_multilabel):
    from probekit.train import TrainConfig
    from probekit.train.sampling import sample_weights

    data = _imbalanced(fsdd_multilabel, {0: 1, 1: 3, 2: 6})
    lab = np.asarray(data.labels)
    w = _official_weights(lab, "as2m")
    np.testing.assert_allclose(sample_weights("label_weighted", lab, True), w)
    # without replacement, sampler_epoch draws per epoch: each clip at most once, the heavy ones first
    n = data.num_clips // 2
    cfg = TrainConfig(batch_size=10, sampler="label_weighted", sampler_epoch=n, drop_last=False)
    assert cfg.schedule(data.num_clips)[2] == -(-n // 10)
    idx = _drawn(data, cfg, epochs=300)
    per_epoch = idx.reshape(300, n)
    assert all(len(set(e)) == n for e in per_epoch)
    # inclusion frequency per clip vs the official sampler (torch.multinomial without replacement)
    ref = np.zeros(len(w))
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        ref[torch.multinomial(torch.as_tensor(w), n, replacement=False, generator=g).numpy()] += 1
    got = np.bincount(idx, minlength=len(w))
    cls_of = lab.argmax(1)
    for c in range(10):  # per class (summed over its clips) within 5 % of the draws
        assert abs(got[cls_of == c].sum() - ref[cls_of == c].sum()) <= 0.05 * 300 * n


def test_protocols_and_checks():
    from probekit.errors import ConfigError
    from probekit.train import TrainConfig
    from probekit.train.protocols import get_protocol

    assert get_protocol("hsn").train.sampler == "class_balanced"
    as2m = get_protocol("as2m").train
    assert (as2m.sampler, as2m.sampler_epoch) == ("label_weighted", 200_000)
    assert as2m.schedule(2_000_000)[2] == 2_084 and not as2m.drop_last  # 2,083 x 96 + a ragged 32, as official
    assert get_protocol("hsn").train.drop_last is False
    assert TrainConfig().sampler == "shuffle"
    with pytest.raises(ConfigError, match="sampler"):
        TrainConfig(sampler="balanced").validate()
    with pytest.raises(ConfigError, match="sampler_epoch"):
        TrainConfig(sampler="class_balanced", sampler_epoch=0).validate()


def _train(data, *, checkpoint_dir=None, stop_at=None, **cfg):
    from probekit.probes import make_probe
    from probekit.train import TrainConfig, fit

    probe = make_probe("linear", num_layers=data.num_layers, embed_dim=data.embed_dim, num_classes=data.num_classes,
                       seed=0)

    def on_eval(step, value):
        if step == stop_at:
            raise KeyboardInterrupt

    res = fit(probe, data, config=TrainConfig(**{**CFG, **cfg}, eval_every=6), val_data=data, progress=False,
              checkpoint_dir=checkpoint_dir, on_eval=on_eval)
    return res


def test_resumed_run_equals_straight_run(fsdd_train, tmp_path):
    data = _imbalanced(fsdd_train, {1: 3, 2: 5})
    straight = _train(data)
    with pytest.raises(KeyboardInterrupt):
        _train(data, checkpoint_dir=tmp_path, stop_at=12)
    resumed = _train(data, checkpoint_dir=tmp_path)
    assert resumed.resumed_from == 12
    for k, v in straight.probe.state_dict().items():
        torch.testing.assert_close(resumed.probe.state_dict()[k], v, rtol=0, atol=0)
    # and the sampler changes the run (it is not ignored)
    other = _train(data, sampler="shuffle")
    assert any(not torch.equal(v, straight.probe.state_dict()[k]) for k, v in other.probe.state_dict().items())


# ---- 2 gloo ranks == 1 process --------------------------------------------------------------------------
def _worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(1)
    d = torch.load(spec["data"], weights_only=False)
    from probekit.tokens import InMemoryTokens

    data = InMemoryTokens(d["patch"], d["cls"], d["labels"], num_classes=d["num_classes"], multilabel=False,
                          grid=(4, 4))
    res = _train(data, batch_size=15)  # 8/7 per rank, with duplicates drawn
    out = {k: v.numpy().tolist() for k, v in res.probe.state_dict().items()}
    Path(spec["out"]).joinpath(f"rank{os.environ['RANK']}.json").write_text(json.dumps(out))


def test_two_ranks_equal_one_process(fsdd_train, tmp_path):
    data = _imbalanced(fsdd_train, {1: 3, 2: 5})
    path = tmp_path / "tokens.pt"
    torch.save({"patch": data.patch, "cls": data.cls, "labels": data.labels, "num_classes": data.num_classes}, path)
    single = _train(data, batch_size=15).probe.state_dict()
    (tmp_path / "spec.json").write_text(json.dumps({"data": str(path), "out": str(tmp_path)}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for r in range(2):
        env = {**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        procs.append(subprocess.Popen([sys.executable, __file__, str(tmp_path / "spec.json")], env=env, cwd=REPO,
                                      stderr=subprocess.PIPE, text=True))
    deadline = time.time() + 120
    for p in procs:
        try:
            p.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if any(p.returncode != 0 for p in procs):
        pytest.fail("\n".join(p.stderr.read()[-3000:] for p in procs))
    for p in procs:
        p.stderr.close()
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]
    for k, v in single.items():
        np.testing.assert_allclose(ranks[0][k], v.numpy(), rtol=1e-4, atol=1e-5, err_msg=k)


# ---- BirdSet training crops (online) ------------------------------------------------------------------
def test_bat_crop_follows_birdset_get_train(fsdd_root, tmp_path):
    import soundfile as sf

    from probekit.audio.io import load_audio
    from probekit.cache.crop import bat_crop, crop_rng

    crop = {"seconds": 5.0, "noise_std": 0.02}
    short = sorted((fsdd_root).rglob("*.wav"))[0]
    wave = load_audio(short, sample_rate=16000)
    out = bat_crop(short, 16000, crop, (0, 1, 2))
    assert out.shape == (80000,)
    # zero-padded, rolled by randint(0, pad) (the rng's first draw), then noise std 0.02 everywhere
    rng = crop_rng((0, 1, 2))
    shift = int(rng.integers(0, 80000 - wave.numel() + 1))
    noise = torch.from_numpy(rng.standard_normal(80000).astype(np.float32)) * 0.02
    want = torch.roll(torch.nn.functional.pad(wave, (0, 80000 - wave.numel())), shift) + noise
    torch.testing.assert_close(out, want)
    assert 0.015 < float(noise.std()) < 0.025
    assert torch.equal(out, bat_crop(short, 16000, crop, (0, 1, 2)))  # seeded by its key
    assert not torch.equal(out, bat_crop(short, 16000, crop, (0, 1, 3)))
    # a 12-s recording: a 5-s window at offset U * (12 - 5)
    long = np.concatenate([load_audio(p, sample_rate=16000).numpy() for p in sorted(fsdd_root.rglob("*.wav"))[:40]])
    long = long[: 12 * 16000]
    path = tmp_path / "long.wav"
    sf.write(path, long, 16000)
    offsets = []
    for k in range(20):
        rng = crop_rng((3, 0, k))
        off = float(rng.random()) * 7.0
        offsets.append(off)
        got = bat_crop(path, 16000, {"seconds": 5.0}, (3, 0, k))
        torch.testing.assert_close(got, load_audio(path, sample_rate=16000, offset=off, duration=5.0))
    assert min(offsets) < 1.5 and max(offsets) > 5.5  # spread over the whole recording


@pytest.fixture(scope="module")
def birdset_root(tmp_path_factory, fsdd_root):
    pytest.importorskip("datasets")
    sys.path.insert(0, str(REPO / "tests" / "datasets"))
    from hf_sets import birdset_hf

    root = tmp_path_factory.mktemp("birdset")
    birdset_hf(root / "birdset" / "HSN", fsdd_root)
    return root


def test_online_birdset_crops_each_draw_and_a_cache_says_fixed(birdset_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from probekit.backbones import get_backbone
    from probekit.cache.online import OnlineTokens
    from probekit.datasets import get_dataset
    from probekit.tokens import TokenRequest

    ds = get_dataset("birdset-hsn", data_root=birdset_root, train_windows="start")
    assert ds.train_crop["seconds"] == 5.0 and ds.train_crop["noise_std"] == 0.02
    assert get_dataset("birdset-hsn", data_root=birdset_root).train_crop is None  # event windows stay fixed
    tok = OnlineTokens.live(get_backbone("bat-tiny"), ds, "train", device="cpu")
    assert tok.crop is not None
    req = TokenRequest(layers="last", patch=False, cls=True)
    idx = np.array([0, 1, 0])

    def cls(keys=None):
        return next(iter(tok.batches(req, 3, indices=idx, draw_keys=keys))).cls

    fixed = cls()
    torch.testing.assert_close(fixed, cls())  # evaluation: the fixed window, every time
    a = cls(np.array([[0, 0, 0], [0, 0, 1], [0, 0, 2]]))
    torch.testing.assert_close(a, cls(np.array([[0, 0, 0], [0, 0, 1], [0, 0, 2]])))  # seeded
    assert not torch.allclose(a[0], a[2])  # the same clip drawn twice: two crops
    assert not torch.allclose(a[0], fixed[0])
    # fit hands the keys (seed, epoch, position): a run is reproducible and differs from fixed windows
    from probekit.probes import make_probe
    from probekit.train import TrainConfig, fit

    def run(data):
        probe = make_probe("linear", num_layers=data.num_layers, embed_dim=data.embed_dim,
                           num_classes=data.num_classes, seed=0)
        cfg = TrainConfig(steps=3, batch_size=4, device="cpu", sampler="class_balanced", seed=1, log_every=1)
        return fit(probe, data, config=cfg, progress=False)

    r1, r2 = run(tok), run(tok)
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]
    tok.crop = None
    r3 = run(tok)
    assert [h["loss"] for h in r1.history] != [h["loss"] for h in r3.history]


@pytest.mark.filterwarnings("ignore:.*class\\(es\\) have no clip")
def test_records_and_plans_say_sampler_and_windows(birdset_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from probekit.api import evaluate
    from probekit.datasets import get_dataset

    ds = get_dataset("birdset-hsn", data_root=birdset_root, train_windows="start")
    common = dict(probes=["linear"], cache_dir=tmp_path / "c", device="cpu", progress=False, write=False, workers=0,
                  layers="last", train_overrides={"steps": 2, "batch_size": 4}, results_dir=tmp_path / "r")
    plans = evaluate("bat-tiny", datasets=[ds], online=True, dry_run=True, **common).plans
    line = next(x for x in plans[0] if x.strip().startswith("sampler:"))
    assert "class_balanced (6 draws per epoch, with replacement" in line and "random 5-s crop" in line
    online = evaluate("bat-tiny", datasets=[ds], online=True, **common).records[0]
    assert online.sampling.sampler == "class_balanced" and online.sampling.replacement is True
    assert online.sampling.epoch_draws == 6 and online.sampling.crop.startswith("random 5-s crop")
    with pytest.warns(UserWarning, match="fixed window of each clip"):
        cached = evaluate("bat-tiny", datasets=[ds], **common).records[0]
    assert cached.sampling.crop.startswith("fixed windows (a token cache") and "needs --online" in cached.notes
    plain = evaluate("bat-tiny", datasets=[ds], online=True, **{**common, "train_overrides": {
        "steps": 2, "batch_size": 4, "sampler": "shuffle"}}).records[0]
    assert plain.sampling.sampler == "shuffle" and plain.sampling.epoch_draws is None
    assert "sampling" in type(plain).model_validate_json(plain.to_json() if hasattr(plain, "to_json")
                                                         else plain.model_dump_json()).model_fields_set


if __name__ == "__main__":
    _worker(sys.argv[1])

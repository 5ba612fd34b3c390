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
    assert as2m.schedule(2_000_000)[2] == 200_000 // 96
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


if __name__ == "__main__":
    _worker(sys.argv[1])

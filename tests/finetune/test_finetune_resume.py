"""Kill-and-resume equals a straight run, bit for bit on CPU (weights, EMA, scores)."""

from __future__ import annotations

import pytest
import torch

from probekit.backbones import get_backbone
from probekit.finetune import finetune
from probekit.finetune.loop import load_weights

# every random draw of the recipe is on: colour noise, time roll, mixup, masks, drop path, head dropout,
# gradient accumulation, clipping, EMA; checkpoints every 2 steps
SETS = dict(optimization_steps=5, lr_warmup_steps=2, train_batch_size=6, grad_accumulation_steps=2,
            checkpoint_every=2, use_mixup=True, mixup_chance=0.9, mixup_beta=0.8, use_color_noise=True,
            color_noise_chance=0.5, use_time_roll=True, head_dropout=0.2, path_dropout_rate=0.1,
            grad_clip_norm=1.0, ema_decay=0.9, lr=1e-3, eval_batch_size=16)


@pytest.fixture(scope="module")
def data(fsdd_part_factory):
    return fsdd_part_factory(16, 8)


def _run(bb, ds, run_dir, **kw):
    return finetune(bb, ds, sets=SETS, device="cpu", write=False, run_dir=run_dir, **kw)


def test_kill_and_resume_equals_straight_run(data, tmp_path):
    bb = get_backbone("bat-tiny", seed=0)
    before = {k: v.clone() for k, v in bb.model.state_dict().items()}
    straight = _run(bb, data, tmp_path / "a")
    stopped = _run(bb, data, tmp_path / "b", stop_after=3)
    assert stopped.record is None and (tmp_path / "b" / "seed0" / "latest").is_file()
    resumed = _run(bb, data, tmp_path / "b")
    (r1,), (r2,) = straight.runs[0], resumed.runs[0]
    assert r2.resumed_from == 3  # stop_after writes its own checkpoint
    w1, w2 = load_weights(r1.last_path), load_weights(r2.last_path)
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert (r1.scores == r2.scores).all()
    assert straight.record.seeds[0].metrics == resumed.record.seeds[0].metrics
    # the run trained something and left the frozen backbone as it was
    assert any(not torch.equal(w1[f"encoder.{k}"], v) for k, v in before.items() if f"encoder.{k}" in w1)
    assert all(torch.equal(bb.model.state_dict()[k], v) for k, v in before.items())
    # a finished run keeps only its weights
    assert not list((tmp_path / "b" / "seed0").glob("ckpt-*"))


def test_resume_refuses_another_runs_checkpoint(data, tmp_path):
    from probekit.errors import ConfigError

    bb = get_backbone("bat-tiny", seed=0)
    _run(bb, data, tmp_path / "c", stop_after=2)
    with pytest.raises(ConfigError, match="another fine-tuning run"):
        finetune(bb, data, sets={**SETS, "lr": 2e-3}, device="cpu", write=False, run_dir=tmp_path / "c")

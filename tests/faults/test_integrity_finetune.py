"""Fine-tuning under faults and hostile inputs.

- SIGKILL at random moments (possibly inside a checkpoint write), then resume: bit-identical to a straight run.
- Bad recipe values, unknown keys, another run's or a corrupt checkpoint, a frame-wise recipe: one-line
  ConfigErrors naming the key / file, before any training where possible (the CLI exits 2).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from probekit.errors import ConfigError
from probekit.datasets.base import Dataset

def fsdd_part(root, n_train: int, n_test: int, *, valid: int = 0) -> Dataset:
    from probekit.datasets import get_dataset

    full = get_dataset("fsdd", root=root)

    def every(split, n, offset=0):
        clips = full.clips(split)
        step = max(1, len(clips) // n)
        return clips[offset::step][:n]

    train, test = every("train", n_train), every("test", n_test)
    val = every("train", valid, offset=1) if valid else []
    return Dataset(full.spec, full.root, lambda s: {"train": train, "test": test, "valid": val}.get(s, []))


FORK = multiprocessing.get_context("fork")
STEPS = 6
SETS = dict(optimization_steps=STEPS, lr_warmup_steps=2, train_batch_size=4, checkpoint_every=1, use_mixup=True,
            mixup_chance=0.9, mixup_beta=0.8, use_color_noise=True, color_noise_chance=0.5, use_time_roll=True,
            head_dropout=0.2, lr=1e-3, eval_batch_size=16)


@pytest.fixture(scope="module")
def data(fsdd_root):
    return fsdd_part(fsdd_root, 12, 6)


def _ft(ds, run_dir, **kw):
    from probekit.backbones import get_backbone
    from probekit.finetune import finetune

    return finetune(get_backbone("bat-tiny", seed=0), ds, sets=kw.pop("sets", SETS), device="cpu", write=False,
                    run_dir=run_dir, **kw)


def _child(ds, run_dir):
    torch.set_num_threads(1)
    _ft(ds, run_dir)


def _newest(seed_dir: Path) -> int:
    try:
        return int((seed_dir / "latest").read_text().strip().split("-")[1])
    except (OSError, IndexError, ValueError):
        return 0


def test_sigkill_then_resume_matches_a_straight_run(tmp_path, data):
    from probekit.finetune.loop import load_weights

    straight = _ft(data, tmp_path / "a")
    out = tmp_path / "b"
    rng = np.random.default_rng(int(os.environ.get("PROBEKIT_FAULT_SEED", "0")))
    kills = []
    for _ in range(8):
        if len(kills) >= 2:
            break
        start = _newest(out / "seed0")
        proc = FORK.Process(target=_child, args=(data, out))
        proc.start()
        t0 = time.time()
        while proc.is_alive() and _newest(out / "seed0") < start + 1:
            assert time.time() - t0 < 300
            time.sleep(0.005)
        proc.join(timeout=float(rng.uniform(0.0, 0.3)))
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
            proc.join()
            kills.append(_newest(out / "seed0"))
        assert proc.exitcode in (0, -signal.SIGKILL)
    assert kills, "no run was killed mid-way"
    resumed = _ft(data, out)
    a, b = load_weights(straight.runs[0][0].last_path), load_weights(resumed.runs[0][0].last_path)
    assert all(torch.equal(a[k], b[k]) for k in a), f"weights differ after kills at steps {kills}"
    assert straight.record.seeds[0].metrics == resumed.record.seeds[0].metrics


@pytest.mark.parametrize("sets,match", [
    (["lr=abc"], "lr=abc: not a number"),
    (["optimization_steps=0"], "optimization_steps=0 must be an integer >= 1"),
    (["mixup_chance=1.5"], "mixup_chance=1.5 must be in"),
    (["lrr=1e-4"], "unknown finetune recipe key 'lrr'"),
    (["selection=best"], "selection='best' is not one of"),
    (["grad_clip_norm=-1"], "grad_clip_norm=-1.0 must be > 0"),
])
def test_bad_recipe_values_are_refused(sets, match):
    from probekit.finetune import get_recipe

    with pytest.raises(ConfigError, match=match):
        get_recipe("as20k").with_sets(sets)


def test_cli_refuses_bad_set_with_exit_2(capsys):
    from probekit.cli import main

    assert main(["finetune", "--recipe", "esc50", "--set", "lr=abc", "--show"]) == 2
    assert "lr=abc" in capsys.readouterr().err
    assert main(["finetune", "--recipe", "esc50", "--set", "lr=2e-4", "--show"]) == 0
    assert '"lr": 0.0002' in capsys.readouterr().out


def test_corrupt_checkpoint_is_named(tmp_path, data):
    _ft(data, tmp_path / "c", stop_after=1)
    seed_dir = tmp_path / "c" / "seed0"
    state = seed_dir / (seed_dir / "latest").read_text().strip() / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ConfigError, match="cannot be read") as e:
        _ft(data, tmp_path / "c")
    assert "state.pt" in str(e.value) or str(state.parent) in str(e.value)
    # --restart (resume=False) starts over instead
    assert _ft(data, tmp_path / "c", resume=False, sets={**SETS, "optimization_steps": 1}).record is not None


def test_frame_wise_recipe_is_refused(tmp_path, data):
    from probekit.finetune import finetune

    with pytest.raises(ConfigError, match="frame-wise"):
        finetune("bat-tiny", data, recipe="dcase2016_task2", device="cpu", write=False, run_dir=tmp_path / "d")


def test_evaluate_checks_finetune_overrides_first(tmp_path, data):
    import probekit

    with pytest.raises(ConfigError, match="unknown finetune recipe key 'nope'"):
        probekit.evaluate("bat-tiny", [data], probes=["linear", "finetune"], hparams={"finetune": {"nope": 1}},
                          device="cpu", write=False, progress=False, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing extracted

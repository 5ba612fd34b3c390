"""Hostile or broken inputs to data-parallel training and cluster launch: each is one line naming the value
(ConfigError, CLI exit 2), never a hang, a silent single-process run or a half-submitted job."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from probekit.cli import main
from probekit.errors import ConfigError


def _tiny_fit():
    from probekit.probes import make_probe
    from probekit.tokens import InMemoryTokens
    from probekit.train import TrainConfig, fit

    g = torch.Generator().manual_seed(0)
    data = InMemoryTokens(None, torch.randn(16, 2, 8, generator=g), np.arange(16) % 2, num_classes=2,
                          multilabel=False, grid=(1, 1))
    probe = make_probe("linear", num_layers=2, embed_dim=8, num_classes=2, seed=0)
    return fit(probe, data, config=TrainConfig(steps=2, batch_size=4, device="cpu"), progress=False)


def test_world_size_without_master_address_is_refused(monkeypatch):
    """WORLD_SIZE=2 but no MASTER_ADDR (a half-copied torchrun environment): fit must not train alone as if it
    were the whole job (each of N such processes would write its own result)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ConfigError, match=r"\$WORLD_SIZE=2 but \$MASTER_ADDR is not set"):
        _tiny_fit()


def test_non_integer_world_size_is_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match=r"\$WORLD_SIZE='two' is not an integer"):
        _tiny_fit()


def test_rank_outside_the_world_is_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ConfigError, match=r"\$RANK=5 is not in 0..1"):
        _tiny_fit()


def test_a_batch_too_small_for_the_ranks_is_refused_before_training():
    """batch_size 1 on 2 ranks (or a ragged last batch of 1): one rank would have no clips and no loss."""
    from probekit.distributed import DataParallel, DistEnv

    dp = DataParallel(DistEnv(rank=0, world_size=2, backend="gloo"))
    with pytest.raises(ConfigError, match="leaves a rank without clips"):
        dp.check_sizes(num_train=10, batch_size=1, drop_last=True)
    with pytest.raises(ConfigError, match=r"a global batch of 1 clip"):
        dp.check_sizes(num_train=9, batch_size=4, drop_last=False)  # 4, 4, then 1
    dp.check_sizes(num_train=9, batch_size=4, drop_last=True)  # the ragged batch is dropped: fine


@pytest.mark.parametrize("items, message", [
    (["partition"], "--slurm 'partition' is not KEY=VALUE"),
    (["cluster=pbs"], "--slurm cluster='pbs' is not one of slurm, local"),
    (["local", "timeout_min=soon"], "--slurm timeout_min=soon: not an integer"),
])
def test_bad_slurm_items_are_named(items, message, capsys, tmp_path):
    argv = ["extract", "--backbone", "bat-tiny", "--dataset", "fsdd", "--cache-dir", str(tmp_path)]
    for it in items:
        argv += ["--slurm", it]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not list(tmp_path.iterdir())  # nothing submitted, nothing extracted


def test_shard_with_a_job_array_is_refused(capsys, tmp_path):
    argv = ["extract", "--backbone", "bat-tiny", "--dataset", "fsdd", "--cache-dir", str(tmp_path), "--shard", "0/2",
            "--slurm", "local", "--slurm", f"folder={tmp_path / 'logs'}"]
    assert main(argv) == 2
    assert "--shard and --slurm together" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="this machine has SLURM")
def test_slurm_without_sbatch_says_how_to_run_here(capsys, tmp_path):
    argv = ["extract", "--backbone", "bat-tiny", "--dataset", "fsdd", "--slurm", "partition=gpu",
            "--slurm", f"folder={tmp_path / 'logs'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no sbatch" in err and "--slurm local" in err


def test_probe_on_several_nodes_needs_slurm_or_a_rendezvous(capsys):
    argv = ["probe", "linear", "--backbone", "bat-tiny", "--dataset", "fsdd", "--nodes", "2", "--gpus", "2"]
    assert main(argv) == 2
    assert "--nodes 2 without --slurm needs --rdzv-endpoint HOST:PORT" in capsys.readouterr().err


def test_tune_workers_without_slurm_is_refused(capsys):
    argv = ["tune", "linear", "--backbone", "bat-tiny", "--dataset", "fsdd", "--workers", "3"]
    assert main(argv) == 2
    assert "--workers starts worker jobs through --slurm" in capsys.readouterr().err


def test_probe_tune_on_several_ranks_is_refused(capsys):
    """--tune under data parallelism: every rank would draw and run its own trials on one study."""
    argv = ["probe", "linear", "--backbone", "bat-tiny", "--dataset", "fsdd", "--tune", "--gpus", "2"]
    assert main(argv) == 2
    assert "--tune with data-parallel ranks" in capsys.readouterr().err

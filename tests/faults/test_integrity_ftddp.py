"""Hostile inputs of data-parallel and fp16 fine-tuning: each is refused with one line that names the value,
and the fp16 gradient scaler's state survives a checkpoint (exact resume)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from probekit.errors import ConfigError


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fsdd_part_factory(fsdd_root):
    from tests.finetune.conftest import fsdd_part

    return lambda n_train, n_test: fsdd_part(fsdd_root, n_train, n_test)


@pytest.fixture
def group():
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_port()}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_fp16_on_cpu_is_refused_in_one_line(fsdd_part_factory, tmp_path):
    from probekit.backbones import get_backbone
    from probekit.finetune import finetune

    with pytest.raises(ConfigError, match="amp=fp16") as e:
        finetune(get_backbone("bat-tiny", seed=0), fsdd_part_factory(4, 2), sets={"amp": "fp16"}, device="cpu",
                 write=False, run_dir=tmp_path)
    assert "\n" not in str(e.value) and "amp=bf16" in e.value.hint
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_world_size_without_process_group_is_refused(fsdd_part_factory, tmp_path):
    from probekit.backbones import get_backbone
    from probekit.finetune.loop import RunData, SplitData, train_run
    from probekit.finetune.recipes import get_recipe

    bb = get_backbone("bat-tiny", seed=0)
    tr = SplitData(fsdd_part_factory(4, 2).clips("train"), np.arange(4) % 10)
    with pytest.raises(ConfigError, match="world_size=2 needs an initialised process group"):
        train_run(RunData(bb, bb.frontend, 10, False, tr), get_recipe("default-multiclass"), seed=0,
                  run_dir=tmp_path, world_size=2, rank=1)


def test_batchnorm_encoder_is_refused_on_several_ranks(group):
    from probekit.finetune.ddp import Ranks

    model = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.BatchNorm1d(2))
    with pytest.raises(ConfigError, match=r"BatchNorm \(1\)"):
        Ranks(0, 2).attach(model, "fingerprint")


def test_fp16_scaler_state_is_checkpointed(tmp_path):
    """A skipped fp16 step (inf gradient) halves the loss scale; the checkpoint restores the halved scale and
    its growth tracker, so the resumed run scales (and skips) as the straight one."""
    import random

    from probekit.finetune.loop import _load_checkpoint, _optimizer_step, _save_checkpoint, _State
    from probekit.finetune.recipes import get_recipe

    class Tiny(torch.nn.Linear):
        def weights(self):
            return {k: v.detach().clone() for k, v in self.state_dict().items()}

    recipe = get_recipe("default-multiclass").with_sets({"grad_clip_norm": 1.0})
    torch.manual_seed(0)
    model = Tiny(3, 2)
    opt = torch.optim.AdamW([{"params": list(model.parameters()), "lr_scale": 1.0}], lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")  # the CUDA scaler's logic, runnable here
    before = model.weight.detach().clone()
    loss = model(torch.full((1, 3), float("inf"))).sum()
    scaler.scale(loss).backward()
    st = _State()
    _optimizer_step(st, loss, model, None, opt, recipe, scaler=scaler)  # an overflow: skipped, not "diverged"
    assert torch.equal(model.weight, before) and scaler.get_scale() == 65536.0 / 2  # skipped, backed off
    assert st.step == 1
    dev = torch.device("cpu")
    _save_checkpoint(tmp_path, "fp", st, model, None, opt, np.random.RandomState(0), random.Random(0), dev, scaler)
    fresh = torch.amp.GradScaler("cpu")
    assert fresh.get_scale() == 65536.0
    _load_checkpoint(tmp_path, "fp", _State(), Tiny(3, 2), None, opt, np.random.RandomState(1), random.Random(1),
                     dev, fresh)
    assert fresh.state_dict() == scaler.state_dict()

"""Hostile weights and modules at the backbone seam (redteam #82, #88, #91): one precise error, early.

- a module whose layers differ in width: BackboneError naming the layers and widths (was torch's bare
  "stack expects each tensor to be equal size" at the first forward);
- a checkpoint with NaN/Inf weights: refused at load, naming the file and the bad keys (was loaded, and
  extraction wrote a store full of NaN); `allow_nonfinite=True` / `--allow-nonfinite` loads it anyway;
- integer tensors for float weights: refused naming the key (was cast silently).
"""

from __future__ import annotations

import pytest
import torch
from _faults import assert_user_error, cli
from safetensors.torch import save_file
from torch import nn

from probekit.backbones import get_backbone
from probekit.backbones.checkpoints import load_checkpoint
from probekit.backbones.custom import adapt_module
from probekit.errors import BackboneError, CheckpointError


@pytest.fixture(autouse=True)
def _isolated_sha_index(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bat_tiny_state():
    return {k: v.clone() for k, v in get_backbone("bat-tiny", seed=0).model.state_dict().items()}


# ------------------------------------------------------------------------------------------ #82
class Widths(nn.Module):
    """Three 1-D stages of widths 16 / 32 / 16 over waveform frames."""

    def __init__(self, widths=(16, 32, 16)):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv1d(1, widths[0], 400, stride=160)
        dims = (widths[0], *widths)
        self.stages = nn.ModuleList(nn.Conv1d(a, b, 3, padding=1) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, wave):
        h, outs = self.stem(wave.unsqueeze(1)), []
        for stage in self.stages:
            h = stage(h)
            outs.append(h.transpose(1, 2))
        return outs


class HookedWidths(nn.Module):
    """Token-wise stages 16 -> 16 -> 32 -> 16 wide, read with forward hooks."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv1d(1, 16, 400, stride=160)
        self.stages = nn.ModuleList([nn.Linear(16, 16), nn.Linear(16, 32), nn.Linear(32, 16)])

    def forward(self, wave):
        h = self.stem(wave.unsqueeze(1)).transpose(1, 2)
        for stage in self.stages:
            h = stage(h)
        return h


def test_returned_layers_of_different_widths_name_the_widths():
    with pytest.raises(BackboneError) as err:
        bb = adapt_module(Widths(), name="widths", input="wave", cls=None)
        bb.forward_tokens(torch.randn(1, 16000) * 0.1)
    msg = str(err.value)
    assert "widths: the layers differ in shape" in msg
    assert "layer 0: 98 tokens x 16 wide" in msg and "layer 1: 98 tokens x 32 wide" in msg


def test_hooked_blocks_of_different_widths_name_the_blocks():
    with pytest.raises(BackboneError) as err:
        bb = adapt_module(HookedWidths(), name="widths", input="wave", cls=None,
                          blocks=["stages.0", "stages.1", "stages.2"])
        bb.forward_tokens(torch.randn(1, 16000) * 0.1)
    msg = str(err.value)
    assert "stages.0: 98 tokens x 16 wide" in msg and "stages.1: 98 tokens x 32 wide" in msg
    assert "stages.2: 98 tokens x 16 wide" in msg


def test_evaluate_gets_the_same_error_not_a_runtime_error(tmp_path):
    from probekit.api import resolve_backbone

    with pytest.raises(BackboneError, match="the layers differ in shape"):
        resolve_backbone(Widths(), name="widths", adapt={"input": "wave", "cls": None})


# ------------------------------------------------------------------------------------------ #88
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_weights_refused_naming_file_and_key(tmp_path, bat_tiny_state, bad):
    sd = dict(bat_tiny_state)
    w = sd["blocks.2.mlp.fc1.weight"].clone()
    w[3, 5] = bad
    sd["blocks.2.mlp.fc1.weight"] = w
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and "(bat-safetensors)" in msg
    assert "1 weight tensor(s) hold NaN/Inf: blocks.2.mlp.fc1.weight" in msg and "allow_nonfinite=True" in msg
    with pytest.raises(CheckpointError, match="hold NaN/Inf"):
        get_backbone("bat-tiny", path)
    # the explicit opt-out loads the file as it is
    bb = get_backbone("bat-tiny", path, allow_nonfinite=True)
    assert not torch.isfinite(bb.model.blocks[2].mlp.fc1.weight).all()


def test_all_nan_weights_list_the_first_keys(tmp_path, bat_tiny_state):
    sd = {k: torch.full_like(v, float("nan")) for k, v in bat_tiny_state.items()}
    path = tmp_path / "nan.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"nan.pt \(bat-state-dict\): \d+ weight tensor\(s\) hold NaN/Inf: .* \.\.\."):
        load_checkpoint(path)


def test_cli_refuses_nonfinite_and_allows_it_when_asked(tmp_path, bat_tiny_state, capsys):
    sd = dict(bat_tiny_state)
    sd["cls_token"] = torch.full_like(sd["cls_token"], float("nan"))
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    rc, _, err = cli(capsys, "check-backbone", "bat-tiny", "--checkpoint", path)
    assert_user_error(rc, err, str(path), "cls_token", "--allow-nonfinite")
    rc, out, _ = cli(capsys, "checkpoint-info", path, "--allow-nonfinite")
    assert rc == 0 and "bat-safetensors" in out


# ------------------------------------------------------------------------------------------ #91
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_integer_tensors_for_float_weights_refused(tmp_path, bat_tiny_state, dtype):
    sd = dict(bat_tiny_state)
    sd["blocks.0.attn.qkv.weight"] = (sd["blocks.0.attn.qkv.weight"] * 100).to(dtype)
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    for allow in (False, True):  # ints are never valid float weights, whatever the NaN policy
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path, **({"allow_nonfinite": True} if allow else {}))
        msg = str(err.value)
        assert str(path) in msg and f"not floating point: blocks.0.attn.qkv.weight ({dtype})" in msg

"""Every family fine-tunes through the Backbone protocol: a trainable copy, gradients into the encoder,
the user's backbone left frozen, and the frozen forward unchanged (drop path only acts in training)."""

from __future__ import annotations

import pytest
import torch

from probekit.backbones import get_backbone
from probekit.finetune.loop import build_optimizer
from probekit.finetune.model import FinetuneModel
from probekit.finetune.recipes import get_recipe

FAMILIES = ["bat-tiny", "eat-tiny", "beats-tiny", "audiomae-tiny", "dasheng-tiny", "bird-mae-tiny", "melpatch"]


def _features(bb, seconds=1.0):
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(2, int(bb.sample_rate * seconds), generator=g) * 0.1
    from probekit.backbones._frontend import run_frontend

    return run_frontend(bb.frontend, wave, None)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_trains_and_stays_frozen(name):
    bb = get_backbone(name, seed=0)
    feats, valid = _features(bb)
    frozen = bb.encode(feats, valid, layers=[-1])
    before = {k: v.clone() for k, v in bb.model.state_dict().items()}
    torch.manual_seed(0)
    m = FinetuneModel(bb, 5, head_norm=True, head_dropout=0.2, drop_path=0.1)
    m.train()
    logits = m(feats, valid)
    assert logits.shape == (2, 5) and logits.requires_grad
    logits.square().sum().backward()
    enc = [p for p in m.encoder.parameters()]
    if enc:  # melpatch has nothing to learn: only its head trains
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc), name
    assert m.head.fc.weight.grad.abs().sum() > 0
    opt = build_optimizer(m, get_recipe("as20k"))
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(m.parameters()))
    # the user's backbone: same weights, still frozen, same tokens
    assert not any(p.requires_grad for p in bb.model.parameters())
    assert all(torch.equal(bb.model.state_dict()[k], v) for k, v in before.items())
    again = bb.encode(feats, valid, layers=[-1])
    assert torch.equal(again.cls, frozen.cls) and torch.equal(again.patch, frozen.patch)
    # in eval mode the trainable copy computes exactly the frozen forward (drop path and dropout are off)
    m.eval()
    with torch.no_grad():
        cls = m._encode(m.backbone, feats, valid, layers=[-1]).cls
    assert torch.equal(cls, frozen.cls)
    if name in ("bat-tiny", "eat-tiny"):
        assert m.drop_path_applied and m.encoder.blocks[-1].drop_path == pytest.approx(0.1)
        assert bb.model.blocks[-1].drop_path == 0.0


def test_drop_path_changes_training_forward_only():
    bb = get_backbone("bat-tiny", seed=0)
    feats, valid = _features(bb)
    m = FinetuneModel(bb, 3, head_norm=False, head_dropout=0.0, drop_path=0.5)
    m.train()
    torch.manual_seed(1)
    a = m(feats, valid)
    m.encoder.set_drop_path(0.0)
    b = m(feats, valid)
    assert not torch.equal(a, b)
    m.encoder.set_drop_path(0.5)
    m.eval()
    plain = FinetuneModel(bb, 3, head_norm=False, head_dropout=0.0)
    plain.load_state_dict(m.state_dict())
    plain.eval()
    with torch.no_grad():
        assert torch.equal(m(feats, valid), plain(feats, valid))


class _WaveNet(torch.nn.Module):
    """A user's module returning its layers (adapted as a custom backbone)."""

    def __init__(self, dim=16, layers=2):
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv1d(1, dim, kernel_size=400, stride=160)
        self.layers = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Conv1d(dim, dim, 3, padding=1),
                                                              torch.nn.GELU()) for _ in range(layers))

    def forward(self, wave):
        h = self.stem(wave.unsqueeze(1))
        outs = []
        for layer in self.layers:
            h = h + layer(h)
            outs.append(h.transpose(1, 2))
        return outs


def test_custom_module_fine_tunes():
    from probekit.backbones.custom import adapt_module

    bb = adapt_module(_WaveNet(), name="wavenet", input="wave", cls=None, freq_patches=1)
    feats, valid = _features(bb)
    m = FinetuneModel(bb, 4, head_norm=True, head_dropout=0.0)
    m(feats, valid).sum().backward()
    assert m.encoder.stem.weight.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in bb.model.parameters())
    groups = build_optimizer(m, get_recipe("esc50")).param_groups
    # generic layer ids: the stem before the blocks (0), layers.i -> i + 1, the head at the top
    assert sorted({g["lr_scale"] for g in groups}) == sorted({0.75 ** 3, 0.75 ** 2, 0.75, 1.0})

"""ASL's `focal_grad` option: Bird-MAE's loss (gradient through the focal weight) vs Alibaba's reference and
BAT (focal weight detached), both re-derived in float64; gradients to <= 1e-10."""

from __future__ import annotations

import pytest
import torch

from probekit.errors import ConfigError
from probekit.train import AsymmetricLoss, TrainConfig, make_loss


def asl_ref(x, y, g_neg, g_pos, clip, eps, reduction, focal_grad):
    """Re-derived from DBD-research-group/Bird-MAE @ a514ef5 util/asymmetric_loss.py (focal_grad=True: its
    default disable_torch_grad_focal_loss=False) and Alibaba-MIIL/ASL / BAT engine/utils.py (detached)."""
    xs_pos = torch.sigmoid(x)
    xs_neg = 1 - xs_pos
    if clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    loss = y * torch.log(xs_pos.clamp(min=eps)) + (1 - y) * torch.log(xs_neg.clamp(min=eps))
    pt = xs_pos * y + xs_neg * (1 - y)
    w = torch.pow(1 - pt, g_pos * y + g_neg * (1 - y))
    loss = loss * (w if focal_grad else w.detach())
    return -loss.mean() if reduction == "mean" else -loss.sum()


@pytest.mark.parametrize("focal_grad", [True, False])
@pytest.mark.parametrize("g_neg,g_pos,clip,reduction", [(4.0, 1.0, 0.05, "mean"), (1.0, 0.0, 0.0, "sum")])
def test_asl_focal_gradient_matches_birdmae_and_reference(focal_grad, g_neg, g_pos, clip, reduction):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(5, 7, generator=g, dtype=torch.float64) * 3).requires_grad_()
    y = (torch.rand(5, 7, generator=g) < 0.3).double()
    ours = AsymmetricLoss(gamma_neg=g_neg, gamma_pos=g_pos, clip=clip, reduction=reduction,
                          focal_grad=focal_grad)(x, y)
    (gx,) = torch.autograd.grad(ours, x)
    x2 = x.detach().clone().requires_grad_()
    ref = asl_ref(x2, y, g_neg, g_pos, clip, 1e-8, reduction, focal_grad)
    (gr,) = torch.autograd.grad(ref, x2)
    assert abs(ours.item() - ref.item()) <= 1e-12 * abs(ref.item())
    assert (gx - gr).abs().max() <= 1e-10 * gr.abs().max()


def test_focal_gradient_changes_the_gradient_not_the_value():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(4, 6, generator=g) < 0.5).double()
    a = make_loss("asl", multilabel=True, asl_gamma_neg=4.0, asl_gamma_pos=1.0, asl_clip=0.05)(x, y)
    b = make_loss("asl", multilabel=True, asl_gamma_neg=4.0, asl_gamma_pos=1.0, asl_clip=0.05,
                  asl_focal_grad=True)(x, y)
    assert a.item() == b.item()
    (ga,) = torch.autograd.grad(a, x)
    (gb,) = torch.autograd.grad(b, x)
    assert (ga - gb).abs().max() > 1e-3


def test_train_config_takes_the_option():
    assert TrainConfig().asl_focal_grad is False  # the reference/BAT behaviour stays the default
    TrainConfig(loss="asl", asl_focal_grad=True).validate()
    with pytest.raises(ConfigError, match="asl_focal_grad"):
        TrainConfig(asl_focal_grad="yes").validate()


def test_unmute_preset_uses_birdmae_asl_with_the_focal_gradient():
    """The unmute benchmark (Bird-MAE's group) trains with Bird-MAE's ASL: 4/1/0.05, mean, focal gradient."""
    from probekit.train import get_protocol

    t = get_protocol("unmute").train
    assert (t.loss, t.asl_gamma_neg, t.asl_gamma_pos, t.asl_clip, t.asl_reduction, t.asl_focal_grad) == (
        "asl", 4.0, 1.0, 0.05, "mean", True)
    for name in ("as20k", "as2m"):  # BAT's presets keep the detached focal weight (its engine/utils.py)
        assert get_protocol(name).train.asl_focal_grad is False

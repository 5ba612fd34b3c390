"""Layer-wise lr decay groups and the schedule equal the official engine/optim.py (re-derived here)."""

from __future__ import annotations

import math

import pytest
import torch

from probekit.finetune.model import FinetuneModel
from probekit.finetune.optim import param_groups, scheduled_lr


def _official_vit_layer_id(name, num_layers):
    if name in ["cls_token", "pos_embed"]:
        return 0
    if name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    return num_layers


def _official_param_groups_lrd(named, num_blocks, weight_decay, layer_decay, no_wd=("cls_token", "pos_embed")):
    groups = {}
    num_layers = num_blocks + 1
    scales = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
    for n, p in named:
        if not p.requires_grad:
            continue
        if p.ndim == 1 or n in no_wd:
            g, wd = "no_decay", 0.0
        else:
            g, wd = "decay", weight_decay
        lid = _official_vit_layer_id(n, num_layers)
        key = "layer_%d_%s" % (lid, g)
        groups.setdefault(key, {"lr_scale": scales[lid], "weight_decay": wd, "params": []})["params"].append(n)
    return groups


@pytest.mark.parametrize("name", ["bat-tiny", "eat-tiny"])
def test_vit_groups_equal_official(name):
    from probekit.backbones import get_backbone

    bb = get_backbone(name, seed=0)
    m = FinetuneModel(bb, 7, head_norm=True, head_dropout=0.2)
    named = list(m.named_for_groups())
    ref = _official_param_groups_lrd(named, bb.num_layers, 0.05, 0.75)
    got = param_groups(named, num_blocks=bb.num_layers, family=bb.card.family, weight_decay=0.05, layer_decay=0.75)
    got = {f"layer_{g['layer_id']}_{'no_decay' if g['weight_decay'] == 0 else 'decay'}": g for g in got}
    assert set(got) == set(ref)
    for k, r in ref.items():
        assert got[k]["names"] == r["params"]
        assert got[k]["lr_scale"] == r["lr_scale"] and got[k]["weight_decay"] == r["weight_decay"]
    # spot checks of the official rule: pre_norm and the head at scale 1, block 0 at decay**L
    L = bb.num_layers
    where = {n: k for k, g in got.items() for n in g["names"]}
    assert where["pre_norm.weight"] == f"layer_{L + 1}_no_decay" and where["head.fc.weight"] == f"layer_{L + 1}_decay"
    assert where["cls_token"] == "layer_0_no_decay" and where["patch_embed.proj.weight"] == "layer_0_decay"
    assert got["layer_1_decay"]["lr_scale"] == 0.75 ** L
    # the frozen backbone is untouched: still frozen, not the trained copy
    assert not any(p.requires_grad for p in bb.model.parameters())
    assert all(p.requires_grad for p in m.encoder.parameters())


def test_beats_style_groups():
    named = [(n, torch.nn.Parameter(torch.zeros(2, 2) if "weight" in n else torch.zeros(2))) for n in (
        "patch_embedding.weight", "layer_norm.weight", "post_extract_proj.weight", "encoder.pos_conv.0.weight",
        "encoder.layers.0.self_attn.k_proj.weight", "encoder.layers.1.self_attn.relative_attention_bias.weight",
        "encoder.layers.1.self_attn.grep_a", "head.fc.weight")]
    got = param_groups(named, num_blocks=2, family="beats", weight_decay=0.05, layer_decay=0.5)
    where = {n: (g["layer_id"], g["weight_decay"]) for g in got for n in g["names"]}
    assert where["patch_embedding.weight"] == (0, 0.05) and where["encoder.pos_conv.0.weight"] == (0, 0.05)
    assert where["encoder.layers.0.self_attn.k_proj.weight"] == (1, 0.05)
    assert where["encoder.layers.1.self_attn.relative_attention_bias.weight"] == (2, 0.0)  # official no-decay list
    assert where["encoder.layers.1.self_attn.grep_a"] == (2, 0.0)
    assert where["head.fc.weight"] == (3, 0.05)


def _official_rise_run_decay(it, lr, min_lr, warmup, total, scale):
    constant = warmup
    interval = total - constant
    if it <= warmup and warmup > 0:
        factor = it / warmup
    elif it <= constant:
        factor = 1.0
    else:
        factor = 0.0 if interval == 0 else 0.5 * (1 + math.cos(math.pi * (it - constant) / interval))
    return max(min_lr * scale, lr * factor * scale)


@pytest.mark.parametrize("warmup,total", [(4000, 40000), (400, 4000), (0, 50), (10, 10)])
def test_schedule_equals_rise_run_decay(warmup, total):
    for scale in (1.0, 0.75 ** 13, 0.75 ** 3):
        for it in sorted({0, 1, warmup - 1, warmup, warmup + 1, total // 2, total - 1, total} - {-1}):
            assert scheduled_lr(it, lr=5e-5, min_lr=1e-6, warmup=warmup, total=total, lr_scale=scale) == \
                _official_rise_run_decay(it, 5e-5, 1e-6, warmup, total, scale)

"""Layer-wise learning-rate decay and the AdamW parameter groups of the official fine-tuning
(engine/optim.py: `param_groups_lrd` for the ViTs, `param_groups_lrd_beats` for BEATs), re-derived.

Layer ids (L = blocks + 1, scale of id i = decay ** (L - i)):
- ViT (BAT, EAT, SSLAM): cls_token, pos_embed, patch_embed.* -> 0; blocks.{i}.* -> i + 1; everything
  else (pre_norm, the head) -> L (scale 1).
- BEATs: patch_embedding, pos_conv, layer_norm, post_extract_proj, encoder.pos_conv, encoder.layer_norm
  -> 0; encoder.layers.{i}.* -> i + 1; everything else -> L.
- other families (probekit's generic rule): the first `<blocks|layers|layer|block|h>.<i>` in the name
  -> i + 1; parameters registered before the first block -> 0; the rest -> L.
No weight decay: every 1-D parameter (norms, biases) and the names the official lists give
(ViT: cls_token, pos_embed; BEATs: relative_attention_bias, grep_a, vqt).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["layer_id", "param_groups", "lr_scales", "scheduled_lr", "NO_DECAY"]

NO_DECAY = {"vit": ("cls_token", "pos_embed"), "beats": ("relative_attention_bias", "grep_a", "vqt")}
_VIT_FAMILIES = {"bat", "eat", "sslam"}
_BEATS_ZERO = ("patch_embedding", "pos_conv", "layer_norm", "post_extract_proj", "encoder.pos_conv",
               "encoder.layer_norm")
_BLOCK = re.compile(r"(?:^|\.)(?:blocks|layers|layer|block|h)\.(\d+)(?:\.|$)")


def _style(family: str) -> str:
    return "vit" if family in _VIT_FAMILIES else "beats" if family == "beats" else "generic"


def layer_id(name: str, num_blocks: int, style: str, *, before_blocks: bool = False) -> int:
    """The layer id of parameter `name` (head parameters are named 'head.*')."""
    top = num_blocks + 1
    if style == "vit":
        if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
            return 0
        if name.startswith("blocks"):
            return int(name.split(".")[1]) + 1
        return top
    if style == "beats":
        if name.startswith(_BEATS_ZERO):
            return 0
        if name.startswith("encoder.layers"):
            return int(name.split(".")[2]) + 1
        return top
    if name.startswith("head."):
        return top
    m = _BLOCK.search(name)
    if m is not None:
        return min(int(m.group(1)) + 1, top)
    return 0 if before_blocks else top


def lr_scales(num_blocks: int, decay: float) -> list[float]:
    top = num_blocks + 1
    return [decay ** (top - i) for i in range(top + 1)]


def param_groups(named: Iterable[tuple[str, torch.nn.Parameter]], *, num_blocks: int, family: str,
                 weight_decay: float, layer_decay: float | None) -> list[dict[str, Any]]:
    """AdamW groups `layer_{id}_{decay|no_decay}` in first-seen order, each with `lr_scale`, `weight_decay`,
    `params` and `names`. `layer_decay` None: one group pair at scale 1 (the official fallback has one
    group with decay on every parameter; here norms/biases still go without decay)."""
    style = _style(family)
    no_decay = NO_DECAY.get(style, ())
    named = [(n, p) for n, p in named if p.requires_grad]
    first_block = next((i for i, (n, _) in enumerate(named) if not n.startswith("head.")
                        and layer_id(n, num_blocks, "generic") not in (0, num_blocks + 1)), len(named))
    scales = lr_scales(num_blocks, layer_decay if layer_decay is not None else 1.0)
    groups: dict[str, dict[str, Any]] = {}
    for i, (n, p) in enumerate(named):
        if style == "vit":
            nd = p.ndim == 1 or n in no_decay  # the official ViT rule: exact names
        else:
            nd = p.ndim == 1 or any(k in n for k in no_decay)  # BEATs: substrings
        lid = layer_id(n, num_blocks, style, before_blocks=i < first_block)
        if layer_decay is None:
            lid = num_blocks + 1
        key = f"layer_{lid}_{'no_decay' if nd else 'decay'}"
        g = groups.setdefault(key, {"lr_scale": scales[lid], "weight_decay": 0.0 if nd else weight_decay,
                                    "params": [], "names": [], "layer_id": lid})
        g["params"].append(p)
        g["names"].append(n)
    return list(groups.values())


def scheduled_lr(step: int, *, lr: float, min_lr: float, warmup: int, total: int, lr_scale: float) -> float:
    """The official RiseRunDecay rate of one group at optimizer step `step` (0-based):
    max(min_lr * scale, lr * factor * scale), factor from probekit's warmup_cosine."""
    from probekit.train.schedule import warmup_cosine

    factor = warmup_cosine(step, peak=1.0, floor=0.0, warmup=warmup, total=total)
    return max(min_lr * lr_scale, lr * factor * lr_scale)  # the official order of the products

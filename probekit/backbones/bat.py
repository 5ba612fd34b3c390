"""BAT (Better Audio Transformer): the gated audio ViT of Ghaffari, Rauch et al. (ICML 2026).

Same skeleton as EAT with a sigmoid gate on the attention output, a flat (1, 512, D) positional table
(row n encodes (n % 64, n // 64)) and 64-time-patch chunking of long inputs (docs/REFERENCE.md section 6).
Its frontend is mel -> dB (top_db 80) -> per-clip min-max (recipe "bat").

This module owns the family: sizes (`_VARIANTS`), cards, and the BAT checkpoint formats:

| format          | what it is                                                                  |
|-----------------|-----------------------------------------------------------------------------|
| bat-safetensors | BAT Hugging Face `model.safetensors`: the ViT keys as they are              |
| bat-lightning   | BAT repo `.pt`: `{'state_dict': {'student.encoder.<key>': ...}}`            |
| bat-pretrain    | official BAT pretraining output `{'encoder', 'decoder', 'ema_encoder', ...}` |
| bat-state-dict  | a `.pt` holding the ViT keys directly                                       |
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from probekit.backbones.vit_backbone import ViTFamily, ViTVariant, register_vit_family
from probekit.backbones.checkpoint_io import (
    CheckpointFormat,
    Detected,
    FileInfo,
    register_format,
    strip_wrappers,
    tensors_only,
)
from probekit.backbones.checkpoints import VIT_ARCHITECTURE, convert_checkpoint, vit_split
from probekit.backbones.weights import PublishedWeights, register_converter, register_weights
from probekit.backbones.vit import ViTConfig
from probekit.errors import CheckpointError

BAT_CITATION = (
    "Ghaffari, H., Rauch, L., Scholz, C., Devos, P. BAT: Better Audio Transformer Guided by Convex Gated "
    "Probing. ICML 2026."
)
BAT_FORMATS = ("bat-safetensors", "bat-lightning", "bat-pretrain", "bat-state-dict", "probekit")

BAT_B = ViTConfig(
    embed_dim=768, depth=12, num_heads=12, gated=True, pos_layout="bat", pos_len=512, chunk_rows=None
)
BAT_TINY = ViTConfig(embed_dim=64, depth=4, num_heads=2, gated=True, pos_layout="bat", pos_len=512)
# The size `probekit pretrain --config bat-tiny-fsdd` trains on a CPU; its weights ship with the package.
BAT_TINY_FSDD = ViTConfig(embed_dim=128, depth=4, num_heads=4, gated=True, pos_layout="bat", pos_len=512)
BAT_TINY_FSDD_WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "bat-tiny-fsdd.safetensors"

FAMILY = ViTFamily(
    family="bat", frontend="bat", citation=BAT_CITATION, checkpoint_formats=BAT_FORMATS,
    url="https://huggingface.co/lrauch/BAT-vit-b16-pretrainedAS2M",
)
_VARIANTS = {
    # BAT is pretrained on AudioSet-2M, which contains the AS-20k balanced subset.
    "bat": ViTVariant(BAT_B, "ViT-B/16 with gated attention; self-supervised on AudioSet-2M", ("as2m", "as20k")),
    "bat-tiny": ViTVariant(BAT_TINY, "test size (D=64, 4 blocks, 2 heads); random init unless a checkpoint"),
    "bat-tiny-fsdd": ViTVariant(
        BAT_TINY_FSDD,
        "D=128, 4 blocks, 4 heads; pretrained by probekit.pretrain on the FSDD train split (weights shipped: "
        "probekit/data/bat-tiny-fsdd.safetensors, card backbones/bat-tiny-fsdd.md); --weights random for the floor",
        ("fsdd",),
    ),
}
CARDS = register_vit_family(FAMILY, _VARIANTS)
register_converter("bat", convert_checkpoint)  # downloaded pickles -> safetensors once

# Weights by name (probekit.backbones.weights): what `bat` / `bat-tiny-fsdd` mean without --weights.
register_weights(PublishedWeights(
    "bat", ("hf:lrauch/BAT-vit-b16-pretrainedAS2M/model.safetensors",), license="MIT (see the model card)",
    notes="official release; sha256 not published apart from the Hub's LFS etag (checked) -> pinned at first download",
))
register_weights(PublishedWeights(
    "bat-tiny-fsdd", ("package:data/bat-tiny-fsdd.safetensors",), license="MIT (probekit)",
    sha256="57e9406a43f39a2932bbe5813c7e58a46703861ec19206fc3e7fe7c5a80cbc94", notes="shipped inside the package",
))


# ---------------------------------------------------------------------------------------------- formats
def _has_vit_keys(sd: Mapping) -> bool:
    return "cls_token" in sd or "patch_embed.proj.weight" in sd


def _detect_safetensors(obj: Any, info: FileInfo) -> Detected | None:
    sd = strip_wrappers(obj) if info.is_safetensors else {}
    if not _has_vit_keys(sd):
        return None
    info.no_ema("bat-safetensors")
    return Detected("bat-safetensors", *vit_split(sd))


def _detect_lightning(obj: Any, info: FileInfo) -> Detected | None:
    if info.is_safetensors or not isinstance(obj.get("state_dict"), Mapping):
        return None
    sd, prefix, fmt = obj["state_dict"], "student.encoder.", "bat-lightning"
    if info.use_ema:
        prefix = next((c for c in ("teacher.encoder.", "ema_encoder.", "ema.encoder.") if any(
            isinstance(k, str) and k.startswith(c) for k in sd)), None)
        if prefix is None:
            raise CheckpointError(f"{info.path} (bat-lightning): no EMA/teacher encoder in state_dict", hint="drop --use-ema")
        fmt = "bat-lightning-ema"
    sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if not sub:
        raise CheckpointError(f"{info.path} (bat-lightning): state_dict has no '{prefix}*' keys (first keys: {list(sd)[:5]})")
    vit, ignored, unexpected = vit_split(tensors_only(sub, "state_dict", info.path, fmt))
    return Detected(fmt, vit, [k for k in sd if not k.startswith(prefix)] + ignored, unexpected)


def _detect_pretrain(obj: Any, info: FileInfo) -> Detected | None:
    """Official BAT pretraining output: {'encoder', 'decoder', 'ema_encoder', 'optimized_steps', 'args'}."""
    if info.is_safetensors or not isinstance(obj.get("encoder"), Mapping):
        return None
    which = "ema_encoder" if info.use_ema else "encoder"
    if not isinstance(obj.get(which), Mapping):
        raise CheckpointError(f"{info.path} (bat-pretrain): no '{which}' entry",
                              hint="drop --use-ema" if info.use_ema else None)
    fmt = "bat-pretrain-ema" if info.use_ema else "bat-pretrain"
    vit, ignored, unexpected = vit_split(strip_wrappers(tensors_only(obj[which], which, info.path, fmt)))
    args = obj.get("args") if isinstance(obj.get("args"), Mapping) else {}
    meta = {"optimized_steps": obj.get("optimized_steps")} if "optimized_steps" in obj else {}
    return Detected(fmt, vit, ignored + [k for k in obj if k != which], unexpected, dict(args), meta)


def _detect_state_dict(obj: Any, info: FileInfo) -> Detected | None:
    """A bare state dict in ViT key layout (BAT, or any AudioViT saved with torch.save)."""
    if info.is_safetensors:
        return None
    sd = strip_wrappers({k: v for k, v in obj.items() if isinstance(k, str)})
    if not _has_vit_keys(sd):
        return None
    info.no_ema("bat-state-dict")
    return Detected("bat-state-dict", *vit_split(tensors_only(sd, "the file", info.path, "bat-state-dict")))


for _fmt in (
    CheckpointFormat("bat-safetensors", VIT_ARCHITECTURE, "BAT Hugging Face model.safetensors (ViT keys)",
                     _detect_safetensors, priority=90),
    CheckpointFormat("bat-lightning", VIT_ARCHITECTURE, "BAT repo .pt {'state_dict': {'student.encoder.*'}}",
                     _detect_lightning, priority=30),
    CheckpointFormat("bat-pretrain", VIT_ARCHITECTURE,
                     "official BAT pretraining output {'encoder', 'decoder', 'ema_encoder', ...}", _detect_pretrain,
                     priority=31),
    CheckpointFormat("bat-state-dict", VIT_ARCHITECTURE, ".pt holding the ViT keys directly", _detect_state_dict,
                     priority=90),
):
    register_format(_fmt)

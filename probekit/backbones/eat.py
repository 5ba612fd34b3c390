"""EAT and SSLAM: the post-LN audio ViT of data2vec 2.0 lineage (one architecture, one checkpoint layout).

No attention gate; a fixed 2-D sin-cos table (1, 768 * 8, D) indexed by (time, frequency) rows, so one
sequence covers up to 12,288 frames (docs/REFERENCE.md section 1). Frontend: Kaldi fbank normalised with
dataset statistics (recipe "fbank").

This module owns the family: sizes (`_VARIANTS`), cards, and the EAT/SSLAM checkpoint formats:

| format                | what it is                                                            |
|-----------------------|-----------------------------------------------------------------------|
| eat-fairseq           | fairseq pretraining `.pt` (`model`: `modality_encoders.IMAGE.*`)       |
| eat-fairseq-finetuned | fairseq fine-tuned `.pt` (encoder keys under `model.`)                 |
| eat-hf                | Hugging Face `model.safetensors` (`model.local_encoder...`)            |
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
    blocks_only,
    register_format,
    split_keys,
    strip_wrappers,
    tensors_only,
)
from probekit.backbones.checkpoints import VIT_ARCHITECTURE, convert_checkpoint
from probekit.backbones.vit import ViTConfig
from probekit.backbones.weights import PublishedWeights, register_converter, register_weights
from probekit.errors import CheckpointError

EAT_CITATION = (
    "Chen, W., Liang, Y., Ma, Z., Zheng, Z., Chen, X. EAT: Self-Supervised Pre-Training with Efficient Audio "
    "Transformer. IJCAI 2024."
)
SSLAM_CITATION = (
    "Alex, T., Atito, S., Mustafa, A., Awais, M., Jackson, P. J. B. SSLAM: Enhancing Self-Supervised Models with "
    "Audio Mixtures for Polyphonic Soundscapes. ICLR 2025."
)
EAT_FORMATS = ("eat-fairseq", "eat-fairseq-finetuned", "eat-hf", "probekit")

EAT_B = ViTConfig(embed_dim=768, depth=12, num_heads=12, gated=False, pos_layout="eat", pos_len=768 * 8)
EAT_L = ViTConfig(embed_dim=1024, depth=24, num_heads=16, gated=False, pos_layout="eat", pos_len=768 * 8)
EAT_TINY = ViTConfig(embed_dim=64, depth=4, num_heads=2, gated=False, pos_layout="eat", pos_len=768 * 8)

FAMILY = ViTFamily(family="eat", frontend="fbank", citation=EAT_CITATION, checkpoint_formats=EAT_FORMATS,
                   url="https://github.com/cwx-worst-one/EAT")
_AS2M = ("as2m", "as20k")  # AudioSet-2M contains the AS-20k balanced subset
_VARIANTS = {
    "eat": ViTVariant(EAT_B, "ViT-B/16; self-supervised on AudioSet-2M (EAT-base)", _AS2M),
    "sslam": ViTVariant(EAT_B, "ViT-B/16; EAT architecture, pretrained with audio mixtures on AudioSet-2M", _AS2M,
                        citation=SSLAM_CITATION, url="https://github.com/ta012/SSLAM"),
    "eat-large": ViTVariant(EAT_L, "ViT-L/16 (1024 wide, 24 blocks, 16 heads); self-supervised on AudioSet-2M", _AS2M),
    # Fine-tuned on AudioSet-2M labels: supervised, so in-domain (and flagged so) on every AudioSet task.
    "eat-ft-as2m": ViTVariant(EAT_B, "EAT-base fine-tuned on AudioSet-2M labels (supervised; in-domain for AudioSet)",
                              _AS2M),
    "eat-large-ft-as2m": ViTVariant(EAT_L, "EAT-large fine-tuned on AudioSet-2M labels (supervised; in-domain for "
                                    "AudioSet)", _AS2M),
    "sslam-ft-as2m": ViTVariant(EAT_B, "SSLAM fine-tuned on AudioSet-2M labels (supervised; in-domain for AudioSet)",
                                _AS2M, citation=SSLAM_CITATION, url="https://github.com/ta012/SSLAM"),
    "eat-tiny": ViTVariant(EAT_TINY, "test size (D=64, 4 blocks, 2 heads); random init unless a checkpoint", url=""),
}
CARDS = register_vit_family(FAMILY, _VARIANTS)
register_converter("eat", convert_checkpoint)  # downloaded pickles -> safetensors once

# Weights by name (probekit.backbones.weights). The Hub repos hold the transformers remote-code release
# (`AutoModel.from_pretrained`, format eat-hf). No sha256 is published apart from the Hub's LFS etag, which is
# checked; the first download's hash is pinned. SSLAM's file name is not confirmed: pytorch_model.bin is tried next.
_EAT_LICENSE = "MIT (model card)"
for _name, _repo, _lic, _ft in (
    ("eat", "worstchan/EAT-base_epoch30_pretrain", _EAT_LICENSE, ()),
    ("eat-ft-as2m", "worstchan/EAT-base_epoch30_finetune_AS2M", _EAT_LICENSE, ("as2m",)),
    ("eat-large", "worstchan/EAT-large_epoch20_pretrain", _EAT_LICENSE, ()),
    ("eat-large-ft-as2m", "worstchan/EAT-large_epoch20_finetune_AS2M", _EAT_LICENSE, ("as2m",)),
    ("sslam", "ta012/SSLAM_pretrain", "see the model card", ()),
    ("sslam-ft-as2m", "ta012/SSLAM_AS2M_Finetuned", "see the model card", ("as2m",)),
):
    _sources = (f"hf:{_repo}/model.safetensors",) + ((f"hf:{_repo}/pytorch_model.bin",) if _name.startswith("sslam") else ())
    register_weights(PublishedWeights(_name, _sources, license=_lic, finetuned_on=_ft))


# ---------------------------------------------------------------------------------------------- formats
# EAT/SSLAM fairseq encoder keys -> AudioViT keys (blocks.* keep their names).
_IMAGE = "modality_encoders.IMAGE."
_FAIRSEQ_RENAME = {
    _IMAGE + "extra_tokens": "cls_token",
    _IMAGE + "local_encoder.proj.weight": "patch_embed.proj.weight",
    _IMAGE + "local_encoder.proj.bias": "patch_embed.proj.bias",
    _IMAGE + "fixed_positional_encoder.positions": "pos_embed",
    _IMAGE + "context_encoder.norm.weight": "pre_norm.weight",
    _IMAGE + "context_encoder.norm.bias": "pre_norm.bias",
}
# Pretraining/fine-tuning parts that are not the encoder: dropped on purpose (listed in `ignored`).
_FAIRSEQ_IGNORE = (
    _IMAGE + "decoder.", _IMAGE + "encoder_mask", "recon_proj.", "cls_proj.", "center", "shared_decoder.", "_ema",
    "fc_norm.", "head.",
)
# The Hugging Face EAT remote code holds the same modules under `model.` with shorter names.
_HF_RENAME = {
    "model.extra_tokens": "cls_token",
    "model.local_encoder.proj.weight": "patch_embed.proj.weight",
    "model.local_encoder.proj.bias": "patch_embed.proj.bias",
    "model.fixed_positional_encoder.positions": "pos_embed",
    "model.pre_norm.weight": "pre_norm.weight",
    "model.pre_norm.bias": "pre_norm.bias",
}
_HF_IGNORE = ("model.fc_norm.", "model.head.", "fc_norm.", "head.")


def _flat(obj: Any) -> dict:
    """The file as one flat state dict (str keys, DDP/compile prefixes dropped)."""
    return strip_wrappers({k: v for k, v in obj.items() if isinstance(k, str)})


def _fairseq_model(obj: Any, info: FileInfo) -> Mapping | None:
    """fairseq checkpoints: {'cfg', 'model', ...} -> the `model` dict."""
    model = None if info.is_safetensors else obj.get("model")
    return model if isinstance(model, Mapping) else None


def _ema_merge(model: Mapping, ema: Mapping, prefix: str, path: Path, fmt: str) -> dict:
    """fairseq `_ema` = the teacher's state dict; with `ema_encoder_only` it holds only the blocks."""
    ema = dict(ema)
    if any(k.startswith(_IMAGE) for k in ema):
        return {prefix + k: v for k, v in ema.items()}
    if blocks_only(ema):  # ('0.norm1.weight', ...): the rest of the encoder is shared with the student
        merged = {k: v for k, v in model.items() if not k.startswith(prefix + "blocks.") and not k.endswith("_ema")}
        merged.update({f"{prefix}blocks.{k}": v for k, v in ema.items()})
        return merged
    raise CheckpointError(f"{path} ({fmt}): the _ema entry has an unknown layout (keys {list(ema)[:5]})")


def _fairseq_cfg(obj: Mapping) -> dict:
    cfg = obj.get("cfg") if isinstance(obj.get("cfg"), Mapping) else {}
    model_cfg = cfg.get("model", {})
    return dict(model_cfg) if isinstance(model_cfg, Mapping) else {}


def _detect_finetuned(obj: Any, info: FileInfo) -> Detected | None:
    fmt, prefix = "eat-fairseq-finetuned", "model."
    rename = {prefix + k: v for k, v in _FAIRSEQ_RENAME.items()}
    ignore = tuple(prefix + p for p in _FAIRSEQ_IGNORE) + ("fc_norm.", "head.")
    model = _fairseq_model(obj, info)
    if model is not None and any(k.startswith(prefix + _IMAGE) for k in model):
        if info.use_ema:
            ema = model.get("model._ema")
            if not isinstance(ema, Mapping):
                raise CheckpointError(f"{info.path} ({fmt}): no EMA teacher (model._ema) in this file", hint="drop --use-ema")
            src, fmt = _ema_merge(model, ema, prefix, info.path, fmt), fmt + "-ema"
        else:
            src = {k: v for k, v in model.items() if not k.startswith("model._ema")}
        return Detected(fmt, *split_keys(src, rename, ignore, prefix), _fairseq_cfg(obj))
    sd = _flat(obj)
    if prefix + _IMAGE + "extra_tokens" not in sd:  # a fine-tuned fairseq `model` dict saved on its own
        return None
    info.no_ema(fmt)
    return Detected(fmt, *split_keys(tensors_only(sd, "the file", info.path, fmt), rename, ignore, prefix))


def _detect_fairseq(obj: Any, info: FileInfo) -> Detected | None:
    fmt = "eat-fairseq"
    model = _fairseq_model(obj, info)
    if model is not None and any(k.startswith(_IMAGE) for k in model):
        if info.use_ema:
            ema = model.get("_ema")
            if not isinstance(ema, Mapping):
                raise CheckpointError(f"{info.path} ({fmt}): no EMA teacher (_ema) in this file", hint="drop --use-ema")
            src, fmt = _ema_merge(model, ema, "", info.path, fmt), "eat-fairseq-ema"
        else:
            src = {k: v for k, v in model.items() if k != "_ema"}
        vit, ignored, unexpected = split_keys(src, _FAIRSEQ_RENAME, _FAIRSEQ_IGNORE, "")
        if "_ema" in model and not info.use_ema:
            ignored.append("_ema")
        return Detected(fmt, vit, ignored, unexpected, _fairseq_cfg(obj))
    sd = _flat(obj)
    if _IMAGE + "extra_tokens" not in sd:
        return None
    info.no_ema(fmt)
    return Detected(fmt, *split_keys(tensors_only(sd, "the file", info.path, fmt), _FAIRSEQ_RENAME, _FAIRSEQ_IGNORE, ""))


def _detect_hf(obj: Any, info: FileInfo) -> Detected | None:
    sd = _flat(obj)
    if "model.extra_tokens" not in sd and "model.local_encoder.proj.weight" not in sd:
        return None
    info.no_ema("eat-hf")
    return Detected("eat-hf", *split_keys(tensors_only(sd, "the file", info.path, "eat-hf"), _HF_RENAME, _HF_IGNORE,
                                          "model."))


for _fmt in (
    CheckpointFormat("eat-fairseq-finetuned", VIT_ARCHITECTURE, "EAT/SSLAM fairseq fine-tuned .pt (keys under model.)",
                     _detect_finetuned, priority=20),
    CheckpointFormat("eat-fairseq", VIT_ARCHITECTURE, "EAT/SSLAM fairseq pretraining .pt", _detect_fairseq,
                     priority=21),
    CheckpointFormat("eat-hf", VIT_ARCHITECTURE, "EAT/SSLAM Hugging Face model.safetensors", _detect_hf, priority=22),
):
    register_format(_fmt)

"""Checkpoint loading for the audio ViT family (EAT, SSLAM, BAT): every official format, safe by default.

The formats themselves live with their family (`probekit.backbones.eat`, `probekit.backbones.bat`) and
register detectors in `probekit.backbones.checkpoint_io`; this module owns what is common to the audio
ViT: the `probekit` safetensors format (ViT keys + JSON metadata in the header, written by
`save_probekit_checkpoint`), size inference from tensor shapes, the strict key/shape check, and
`load_checkpoint` / `convert_checkpoint`.

`use_ema=True` picks the EMA teacher where a file has one (`ema_encoder`, fairseq `_ema`).
Sizes come from tensor shapes; the number of heads is not recoverable from shapes: it comes from the
file's own config when present, else width // 64, and `num_heads=` overrides both.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from probekit._io import atomic_write
from probekit.backbones.checkpoint_io import (
    FORMATS,
    CheckpointFormat,
    Detected,
    FileInfo,
    file_sha256,
    find_num_heads,
    load_state_dict,
    register_format,
    split_keys,
    strip_wrappers,
)
from probekit.backbones.vit import AudioViT, ViTConfig, infer_mlp_ratio
from probekit.errors import CheckpointError

__all__ = [
    "FORMATS",
    "VIT_ARCHITECTURE",
    "LoadedCheckpoint",
    "convert_checkpoint",
    "file_sha256",
    "load_checkpoint",
    "save_probekit_checkpoint",
    "vit_split",
]

VIT_ARCHITECTURE = "audio-vit"
PROBEKIT_FORMAT_VERSION = 1
_META_KEY = "probekit"
# The AudioViT's own non-block keys; a file in ViT layout holds these as they are.
VIT_TOP_KEYS = ("pos_embed", "cls_token", "patch_embed.proj.weight", "patch_embed.proj.bias", "pre_norm.weight",
                "pre_norm.bias")
# Parts of ViT-layout files that are not the encoder (classifier head, BAT's vqt): dropped on purpose.
VIT_IGNORE = ("head.", "vqt", "fc_norm.")


def vit_split(sd: Mapping[str, Any], ignore: tuple[str, ...] = VIT_IGNORE):
    """A state dict already in AudioViT key layout -> (vit_sd, ignored, unexpected)."""
    return split_keys(sd, {k: k for k in VIT_TOP_KEYS}, ignore, "")


def _detect_probekit(obj: Any, info: FileInfo) -> Detected | None:
    if not info.is_safetensors or _META_KEY not in info.safetensors_meta:
        return None
    try:
        meta = json.loads(info.safetensors_meta[_META_KEY])
    except ValueError:
        raise CheckpointError(f"{info.path} (probekit): header metadata is not valid JSON") from None
    if info.use_ema:
        raise CheckpointError(
            f"{info.path} (probekit): holds a single encoder, no EMA teacher",
            hint="drop --use-ema (probekit pretrain exports the encoder it was asked to export)",
        )
    vit, ignored, unexpected = vit_split(obj)
    return Detected("probekit", vit, ignored, unexpected, meta.get("vit_config", {}), meta)


register_format(CheckpointFormat("probekit", VIT_ARCHITECTURE, "probekit safetensors (ViT keys + JSON metadata)",
                                 _detect_probekit, priority=10))


# ---------------------------------------------------------------------------------------------- model
@dataclass
class LoadedCheckpoint:
    """An encoder state dict in AudioViT key layout plus what was learnt about the file."""

    path: Path
    format: str
    family: str  # "eat" (no gate) or "bat" (gated)
    config: ViTConfig
    state_dict: dict[str, torch.Tensor]
    sha256: str
    ignored: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict)

    def build(self, *, attn_impl: str = "auto") -> AudioViT:
        """An AudioViT with exactly these weights (strict)."""
        model = AudioViT(self.config, attn_impl=attn_impl, init=None)  # every weight comes from the file
        check_state_dict(model, self.state_dict, source=f"{self.path} ({self.format})")
        model.load_state_dict(self.state_dict, strict=True)
        return model


# ---------------------------------------------------------------------------------------------- sizes
def infer_config(
    sd: Mapping[str, torch.Tensor],
    *,
    family: str,
    num_heads: int | None,
    file_config: Mapping | None = None,
    source: str = "",
    default_heads: Mapping[int, int] | None = None,
) -> ViTConfig:
    """ViT sizes from tensor shapes (width, depth, MLP width, gate, table length); heads as documented above."""
    need = ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight")
    missing = [k for k in need if k not in sd]
    if missing:
        raise CheckpointError(f"{source}: missing encoder keys {missing}; cannot infer the model size")
    w = sd["patch_embed.proj.weight"]
    if w.ndim != 4 or w.shape[1] != 1 or w.shape[2] != w.shape[3]:
        raise CheckpointError(
            f"{source}: patch_embed.proj.weight has shape {tuple(w.shape)}, expected (D, 1, p, p) for a "
            f"single-channel spectrogram"
        )
    dim, patch = int(w.shape[0]), int(w.shape[2])
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"^blocks\.(\d+)\.", k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise CheckpointError(f"{source}: block indices {blocks[:20]} are not 0..L-1")
    hidden = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
    pos = sd["pos_embed"]
    if pos.ndim not in (2, 3) or pos.shape[-1] != dim:
        raise CheckpointError(f"{source}: pos_embed has shape {tuple(pos.shape)}, expected (1, rows, {dim})")
    fc = file_config or {}
    heads = num_heads or find_num_heads(fc) or (default_heads or {}).get(dim) or max(1, dim // 64)
    if dim % heads:
        raise CheckpointError(
            f"{source}: width {dim} is not divisible by {heads} heads", hint="pass num_heads (--num-heads) that divides it"
        )
    gated = "blocks.0.attn.gate.weight" in sd
    layout = fc.get("pos_layout") if fc.get("pos_layout") in ("eat", "bat") else ("bat" if family == "bat" else "eat")
    chunk = fc.get("chunk_rows") if isinstance(fc.get("chunk_rows"), int) else None
    try:
        return ViTConfig(
            embed_dim=dim,
            depth=len(blocks),
            num_heads=int(heads),
            mlp_ratio=infer_mlp_ratio(hidden, dim),
            gated=gated,
            pos_layout=layout,
            pos_len=int(pos.shape[-2]),
            chunk_rows=chunk,
            patch_size=patch,
        )
    except Exception as e:  # noqa: BLE001 - BackboneError from validation; re-raise as a checkpoint problem
        raise CheckpointError(f"{source}: inconsistent sizes: {e}") from None


def check_state_dict(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Strict key and shape check with every missing/unexpected key and shape mismatch listed."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}")
        if unexpected:
            parts.append(
                f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}{' ...' if len(unexpected) > 20 else ''}"
            )
        if shapes:
            parts.append(f"shape mismatches: {'; '.join(shapes[:10])}")
        raise CheckpointError(f"{source}: does not match the audio ViT: " + " | ".join(parts))


# ---------------------------------------------------------------------------------------------- public
def load_checkpoint(
    path: str | os.PathLike,
    *,
    num_heads: int | None = None,
    trust_checkpoint: bool = False,
    use_ema: bool = False,
    chunk_rows: int | None = None,
    default_heads: Mapping[int, int] | None = None,
    allow_nonfinite: bool = False,
) -> LoadedCheckpoint:
    """Read any accepted audio-ViT checkpoint format into an AudioViT state dict (fp32) with inferred sizes.

    Args:
        path: a file, or a Hugging Face snapshot folder holding model.safetensors.
        num_heads: attention heads (not recoverable from shapes); default the file's config or width // 64.
        trust_checkpoint: allow full unpickling for files that need it (prints a warning).
        use_ema: take the EMA teacher where the format has one.
        chunk_rows: override the time rows per sequence (default: the positional table's capacity).
        default_heads: {width: heads} used when neither `num_heads` nor the file says (a registered
            name's own size, e.g. the tiny test models' 2 heads at width 64); else width // 64.
        allow_nonfinite: load weights holding NaN/Inf (refused by default: they fill caches with NaN).

    Raises:
        CheckpointError: unreadable/unsafe file, unknown layout, missing or unexpected keys, bad shapes,
            integer or NaN/Inf weights.
    """
    found, info = load_state_dict(path, VIT_ARCHITECTURE, trust_checkpoint=trust_checkpoint, use_ema=use_ema,
                                  allow_nonfinite=allow_nonfinite, what="an EAT/SSLAM/BAT encoder")
    file = info.path
    source = f"{file} ({found.format})"
    # fp16/bf16 weights (fairseq students are stored in half precision) -> fp32, contiguous
    sd = {k: v.float().contiguous() for k, v in found.state_dict.items()}
    if "pos_embed" in sd and sd["pos_embed"].ndim == 2:
        sd["pos_embed"] = sd["pos_embed"].unsqueeze(0)
    metadata = found.metadata
    family = str(metadata.get("family") or ("bat" if "blocks.0.attn.gate.weight" in sd else "eat"))
    cfg_src = dict(info.hf_config)
    if isinstance(found.file_config, Mapping):
        cfg_src.update(found.file_config)
    config = infer_config(
        sd, family=family, num_heads=num_heads, file_config=cfg_src, source=source, default_heads=default_heads
    )
    if chunk_rows is not None:
        try:
            config = replace(config, chunk_rows=chunk_rows)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{source}: {e}") from None
    loaded = LoadedCheckpoint(
        path=file,
        format=found.format,
        family=family,
        config=config,
        state_dict=sd,
        sha256=file_sha256(file),
        ignored=tuple(found.ignored),
        metadata=dict(metadata),
    )
    check_state_dict(AudioViT(config, init=None), sd, source=source)
    return loaded


def save_probekit_checkpoint(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any] | None = None,
    *,
    config: ViTConfig | None = None,
) -> Path:
    """Write an AudioViT encoder as probekit safetensors (atomically: nothing half-written on crash).

    Args:
        path: destination, conventionally `*.safetensors`.
        state_dict: AudioViT keys (`AudioViT.state_dict()`; DDP `module.` / compile `_orig_mod.` prefixes
            are stripped).
        metadata: JSON-serialisable facts kept in the safetensors header (e.g. step, training data,
            recipe). Reserved keys filled here: `format_version`, `family`, `vit_config`.
        config: the model's ViTConfig (recommended: keeps num_heads, layout and chunking exact).

    Returns:
        The written path.
    """
    from safetensors.torch import save

    path = Path(path)
    sd = strip_wrappers(state_dict)
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict holds non-tensor entries {bad[:5]}")
    tensors = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous() for k, v in sd.items()}
    meta = dict(metadata or {})
    meta["format_version"] = PROBEKIT_FORMAT_VERSION
    if config is not None:
        meta["vit_config"] = config.to_dict()
    meta.setdefault("family", "bat" if "blocks.0.attn.gate.weight" in tensors else "eat")
    try:
        header = {_META_KEY: json.dumps(meta, sort_keys=True, default=str), "format": "probekit"}
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: metadata is not JSON-serialisable ({e})") from None
    # validate before writing: a file we cannot load back is never written
    source = f"{path} (probekit)"
    cfg = infer_config(tensors, family=meta["family"], num_heads=None, file_config=meta.get("vit_config", {}), source=source)
    check_state_dict(AudioViT(cfg, init=None), tensors, source=source)
    # safetensors serialises to bytes; written atomically (nothing half-written on a crash)
    atomic_write(path, lambda f: f.write(save(tensors, metadata=header)), binary=True)
    return path


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    num_heads: int | None = None,
    trust_checkpoint: bool = False,
    use_ema: bool = False,
    allow_nonfinite: bool = False,
) -> LoadedCheckpoint:
    """Any accepted format -> probekit safetensors (ViT keys, fp32, sizes and provenance in the header)."""
    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"{dst}: the output must end in .safetensors")
    loaded = load_checkpoint(src, num_heads=num_heads, trust_checkpoint=trust_checkpoint, use_ema=use_ema,
                             allow_nonfinite=allow_nonfinite)
    meta = dict(loaded.metadata)
    meta.update(
        {
            "family": loaded.family,
            "converted_from": str(loaded.path),
            "source_format": loaded.format,
            "source_sha256": loaded.sha256,
        }
    )
    save_probekit_checkpoint(dst, loaded.state_dict, meta, config=loaded.config)
    return loaded

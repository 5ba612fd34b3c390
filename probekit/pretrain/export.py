"""Writing a pretrained encoder as a BAT checkpoint (+ a card) that `get_backbone("bat", ...)` loads.

The tensors are exactly the BAT Hugging Face layout (`pos_embed, cls_token, patch_embed.proj.*,
pre_norm.*, blocks.{i}.*`); the safetensors metadata carries the ViT sizes and the run's provenance
as JSON, so the loader needs no flags and a card can always be regenerated from the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from probekit._io import atomic_write_text
from probekit.backbones.vit import AudioViT
from probekit.pretrain.config import PretrainConfig


def export_encoder(encoder: AudioViT, path: str | os.PathLike, cfg: PretrainConfig, meta: dict) -> Path:
    """Write `encoder` to `path` (.safetensors, float32, atomically) with BAT keys and JSON metadata.

    The file is validated by loading it back before it replaces anything (the backbones writer does that).
    """
    from probekit.backbones.checkpoints import save_probekit_checkpoint

    metadata = {"family": "bat", "pretrain": meta, "pretrain_config": cfg.to_dict()}
    return save_probekit_checkpoint(Path(path), encoder.state_dict(), metadata, config=encoder.config)


def write_card(
    path: str | os.PathLike,
    cfg: PretrainConfig,
    meta: dict,
    probe_history: list[dict] = (),
    checkpoint: str | os.PathLike | None = None,
) -> Path:
    """A markdown card: architecture, data, steps, recipe, checkpoint sha256, probe curve.

    `checkpoint` defaults to the .safetensors beside `path`.
    """
    from probekit.backbones.checkpoints import file_sha256

    ckpt = Path(checkpoint) if checkpoint is not None else Path(path).with_suffix(".safetensors")
    e, d, m, o, ema = cfg.encoder, cfg.decoder, cfg.masking, cfg.optim, cfg.ema
    lines = [
        f"# {cfg.name} (probekit BAT pretraining)",
        "",
        cfg.description,
        "",
        "| field | value |",
        "|---|---|",
        "| family | bat (gated-attention audio ViT, post-LN, pre-norm, cls) |",
        f"| encoder | D={e.dim}, {e.depth} blocks, {e.num_heads} heads, MLP x{e.mlp_ratio}, 16x16 patches |",
        (
            f"| frontend | BAT mel (16 kHz, n_fft {cfg.data.n_fft}, hop {cfg.data.hop_length}, {e.n_mels} mels, "
            f"dB top {cfg.data.top_db:g}, per-clip min-max) |"
        ),
        f"| pretraining frames | {e.frames} ({cfg.grid[0]} x {cfg.grid[1]} patches); short clips "
        f"{'looped over the input' if cfg.data.fill == 'repeat' else 'zero-padded'} (data.fill={cfg.data.fill}) |",
        f"| training data | {meta.get('dataset')} split `{meta.get('split')}` ({meta.get('num_clips')} clips) |",
        (
            f"| steps | {meta.get('steps')} of {o.steps} planned; {meta.get('clips_seen')} clips seen x "
            f"{m.num_views} views; {meta.get('world_size')} process(es) |"
        ),
        (
            f"| recipe | mask {m.mask_ratio}, inverse {m.block_size}x{m.block_size} blocks; decoder D={d.dim} x "
            f"{d.depth}; AdamW lr {o.lr:g} (warmup {o.warmup_steps}, cosine to {o.min_lr:g}), wd {o.weight_decay}, "
            f"betas ({o.beta1}, {o.beta2}); EMA {ema.decay_start} -> {ema.decay_end} over {ema.warmup_steps} |"
        ),
        f"| exported encoder | {meta.get('encoder')} (float32 safetensors, BAT keys) |",
        f"| last loss | {meta.get('last_loss')} |",
        f"| train time | {meta.get('train_seconds')} s |",
        f"| created | {meta.get('created')} |",
        f"| checkpoint sha256 | {file_sha256(ckpt) if ckpt.exists() else '(not written yet)'} |",
        "",
        f'Load: `probekit.backbones.get_backbone("bat", checkpoint="{ckpt.name}")`.',
    ]
    if probe_history:
        keys = [k for k in probe_history[0] if k != "step"]
        lines += [
            "",
            "Probe in the loop:",
            "",
            "| step | " + " | ".join(keys) + " |",
            "|---|" + "---|" * len(keys),
        ]
        lines += [
            f"| {r['step']} | " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in probe_history
        ]
    lines += ["", "```json", json.dumps(meta, indent=2), "```", ""]
    return atomic_write_text(path, "\n".join(lines))

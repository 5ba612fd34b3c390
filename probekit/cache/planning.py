"""Planning: everything decided before tokens are extracted, read or computed live (nothing is written).

`plan(backbone, dataset, split, tokens, run)` resolves the frontend the backbone uses on this dataset,
the layers, the arithmetic, the content key and the store path, once; extraction, `open_cache`, the
online token source and `probekit.evaluate` all take the resulting `Plan`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from probekit._device import resolve_device
from probekit.cache.codec import DTYPES, projected_bytes
from probekit.cache.disk import dir_bytes, free_bytes
from probekit.cache.keys import content_key, store_path
from probekit.cache.layout import StoreLayout, default_clips_per_shard
from probekit.cache.spec import RunOptions, TokenSpec, resolve_layers, split_options
from probekit.cache.store import TokenStore
from probekit.errors import AudioError, CacheError, ProbekitError

__all__ = ["DryRun", "Plan", "dataset_frontend", "dry_run_report", "new_layout", "plan", "precision", "token_grid"]


def precision(autocast: bool | str, device: torch.device) -> str:
    """The arithmetic the encoder runs in; part of the content key (autocast changes the tokens)."""
    if not autocast:
        return "float32"
    if autocast is True:
        return "autocast-bfloat16" if device.type == "cpu" or torch.cuda.is_bf16_supported() else "autocast-float16"
    return f"autocast-{autocast}"


def _clip_samples(clip, sample_rate: int) -> int | None:
    """Samples of a clip after resampling, from its header only (None when unreadable)."""
    from probekit.audio.io import audio_info

    try:
        sr, frames, _ = audio_info(clip.path)
    except AudioError:
        return None
    start = round(clip.offset * sr)
    stop = frames if clip.duration is None else min(frames, start + round(clip.duration * sr))
    n = max(0, stop - start)
    return math.ceil(n * sample_rate / sr) if n else None


#: a clip this many times longer than the split's median pads every clip of the split to its length
LONG_CLIP_FACTOR = 8


def _warn_long_clip(sized, sample_rate: int) -> None:
    """Name the clip that sets a split's grid when it is far longer than the rest (all are padded to it)."""
    if len(sized) < 2:
        return
    lengths = sorted(n for n, _ in sized)
    median = lengths[len(lengths) // 2]
    longest, clip = max(sized, key=lambda t: t[0])
    if longest > LONG_CLIP_FACTOR * median:
        import warnings

        warnings.warn(f"{clip.path}: {longest / sample_rate:.1f} s, {longest / median:.0f}x the split's median "
                      f"clip ({median / sample_rate:.1f} s): every clip of the split is padded to its length "
                      "(store size and extraction time grow by that factor); cut it into segments or drop it",
                      stacklevel=3)


def dataset_frontend(backbone, dataset, clips, style: str | None):
    """The frontend config this backbone uses on this dataset; native-length recipes get the split's max.

    Every clip of a store has one token grid, so a recipe without a fixed frame count is padded (by its
    own padding rule) to the longest clip of the split; each clip's tokens then do not depend on which
    clips share its batch (the encoders attend to padding).
    """
    config = None
    if style is not None and backbone.card.frontend:
        from probekit.audio.frontends import frontend_for

        config = frontend_for(backbone.card.frontend, dataset.spec, style)
    if config is None:
        config = backbone.frontend.config
    if config.target_frames is None:
        # the backbone builds the frontend: a family's own config (e.g. BEATs' fbank) is not a probekit preset
        probe = backbone.with_frontend(config).frontend
        sized = [(n, c) for n, c in ((_clip_samples(c, backbone.sample_rate), c) for c in clips) if n]
        lengths = [n for n, _ in sized]
        frames = max((probe.num_frames(n) for n in lengths), default=probe.num_frames(backbone.sample_rate))
        config = dataclasses.replace(config, target_frames=frames)
        _warn_long_clip(sized, backbone.sample_rate)
    return config


@dataclass(frozen=True)
class Plan:
    """What a (backbone, dataset, split, TokenSpec) resolves to: computed once by `plan`, shared by all.

    `backbone` already uses the dataset's frontend (`dataset_frontend`); it is moved to `device` only by
    whoever runs it (extraction, online tokens), never by readers.
    """

    backbone: Any
    dataset: Any
    split: str
    clips: list
    tokens: TokenSpec
    layer_ids: tuple[int, ...]
    key: dict
    path: Path
    device: torch.device
    precision: str
    frontend: dict

    def existing_layout(self) -> StoreLayout | None:
        """The layout of a store already at `path` (it keeps its layout and batch size on resume)."""
        return TokenStore(self.path).layout if (self.path / "zarr.json").exists() else None


def plan(backbone, dataset, split: str, tokens: TokenSpec | None = None, run: RunOptions | None = None,
         **options) -> Plan:
    """Resolve frontend, layers, precision, content key and store path (no forward pass, nothing written).

    `tokens` says what the tokens are, `run` where stores live and which device computes them (autocast's
    precision depends on it). Flat keywords of the pre-0.2 API (layers=, dtype=, cache_dir=, device=, ...)
    are still accepted and applied on top.
    """
    tokens, run = split_options(options, tokens, run, where="plan")
    dev = resolve_device(run.device)
    clips = list(dataset.clips(split))
    if not clips:
        raise CacheError(f"dataset {dataset.name!r} split {split!r} has no clips", hint="check the data root")
    config = dataset_frontend(backbone, dataset, clips, tokens.frontend_style)
    try:
        current = backbone.frontend.config
    except ProbekitError:  # a frontend the backbone cannot build by itself; the dataset's replaces it
        current = None
    if config != current:
        backbone = backbone.with_frontend(config)
    backbone = backbone.eval()
    layer_ids = resolve_layers(tokens.layers, backbone.num_layers)
    prec = precision(tokens.autocast, dev)
    frontend = dict(backbone.frontend.config.to_dict())
    bkey = dict(backbone.cache_key())
    bkey["precision"] = prec
    key = content_key(
        backbone=bkey,
        frontend=frontend,
        dataset=dataset.spec.name,
        split=split,
        fingerprint=dataset.fingerprint(split),
        layers=layer_ids,
        dtype=tokens.dtype,
    )
    path = store_path(run.cache_dir, key, backbone.name)
    return Plan(backbone, dataset, split, clips, tokens, layer_ids, key, path, dev, prec, frontend)


def token_grid(p: Plan) -> tuple[tuple[int, int], int]:
    """(token grid, width) of the planned backbone, from one forward pass on zeros (backbone on p.device)."""
    frames, bins = p.backbone.frontend.config.target_frames, p.backbone.frontend.num_bins
    with torch.inference_mode():
        x = torch.zeros(1, 1, frames, bins, device=p.device)
        lt = p.backbone.encode(x, torch.tensor([frames], device=p.device))
    return tuple(int(v) for v in lt.grid), int(lt.patch.shape[-1])


def new_layout(p: Plan, run: RunOptions) -> StoreLayout:
    """The layout a new store of this plan gets (one forward pass; the backbone must be on p.device)."""
    grid, dim = token_grid(p)
    bb = p.backbone
    if dim != bb.embed_dim:
        raise CacheError(f"backbone {bb.name!r} returned width {dim}, declares embed_dim {bb.embed_dim}")
    one = projected_bytes(1, len(p.layer_ids), grid[0] * grid[1], dim, p.tokens.dtype)
    spec = p.dataset.spec
    return StoreLayout(
        num_clips=len(p.clips),
        layers=p.layer_ids,
        grid=grid,
        embed_dim=dim,
        dtype=p.tokens.dtype,
        # a shard never spans past the clips: its index would list chunks that cannot exist
        clips_per_shard=min(len(p.clips), run.clips_per_shard or default_clips_per_shard(one, run.batch_size)),
        batch_size=run.batch_size,
        num_classes=spec.num_classes,
        multilabel=spec.multilabel,
        has_folds=any(c.fold is not None for c in p.clips),
    )


# ---- dry run --------------------------------------------------------------------------------------
@dataclass
class DryRun:
    """Projected store sizes of the layer/dtype choices, and the disk space (what --dry-run shows)."""

    path: Path
    clips: int
    grid: tuple[int, int]
    embed_dim: int
    num_layers: int
    chosen: tuple[tuple[int, ...], str]
    rows: list[dict]  # layers, dtype, bytes, chosen
    free: int
    existing: int

    @property
    def needed(self) -> int:
        return next(r["bytes"] for r in self.rows if r["chosen"])

    @property
    def fits(self) -> bool:
        return self.needed - self.existing <= self.free


def dry_run_report(p: Plan, lay: StoreLayout) -> DryRun:
    """Sizes of every dtype for all / last / the chosen layers, next to the free space."""
    L = p.backbone.num_layers
    choices = {"all": tuple(range(L)), "last": (L - 1,)}
    if lay.layers not in choices.values():
        choices[",".join(map(str, lay.layers))] = lay.layers
    rows = []
    for name, ids in choices.items():
        for dt in DTYPES:
            rows.append(
                {
                    "layers": name,
                    "dtype": dt,
                    "bytes": projected_bytes(lay.num_clips, len(ids), lay.num_tokens, lay.embed_dim, dt),
                    "chosen": ids == lay.layers and dt == lay.dtype,
                }
            )
    existing = dir_bytes(p.path) if p.path.exists() else 0
    return DryRun(p.path, lay.num_clips, lay.grid, lay.embed_dim, L, (lay.layers, lay.dtype), rows,
                  free_bytes(p.path.parent), existing)

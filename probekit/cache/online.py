"""Tokens from a live frozen backbone: `TokenData` that runs the encoder for every batch (`--online`).

For data that would not fit a cache (AS-2M scale), or a one-off run. Clips are decoded and turned into
features exactly as extraction does (the same `Plan`: frontend recipe per dataset, padding to one token
grid per split; the same `probekit.cache.pipeline` in DataLoader workers), then encoded on the device
batch by batch, so the probe code is the same as with the cache reader. Every epoch pays the encoder's
cost again (the official on-the-fly approach); the cache pays it once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from probekit.cache.live import InputRequest, LiveSource, input_batches
from probekit.cache.pipeline import clip_folds, clip_labels, feature_loader
from probekit.cache.planning import Plan, plan, token_grid
from probekit.cache.spec import RunOptions
from probekit.errors import AudioError
from probekit.tokens import TokenBatch, TokenRequest, batch_order

__all__ = ["OnlineTokens"]


class OnlineTokens(LiveSource):
    """`TokenData` backed by a frozen backbone run on each batch.

    Args:
        plan: a `Plan` (`probekit.cache.plan`): backbone with its dataset frontend, dataset, split, device.
            Its TokenSpec's dtype does not apply (tokens stay float32 on the device).
        run: `RunOptions`; `workers` is the number of DataLoader workers for decoding + frontend
            (None or 0: in this process).

    `OnlineTokens.live(backbone, dataset, split, device=..., frontend_style=..., workers=...)` plans first.
    """

    def __init__(self, plan: Plan, run: RunOptions | None = None):
        run = run or RunOptions()
        p = dataclasses.replace(plan, backbone=plan.backbone.to(plan.device))
        self._plan = p
        self.backbone = p.backbone
        self.device = p.device
        self.split = p.split
        self.clips = p.clips
        spec = p.dataset.spec
        self.clip_ids = np.asarray([c.id for c in p.clips], dtype=object)
        self.classes = tuple(spec.classes)
        self.num_clips = len(p.clips)
        self.num_layers = int(self.backbone.num_layers)
        self.embed_dim = int(self.backbone.embed_dim)
        self.num_heads = int(self.backbone.num_heads or 0) or None
        self.grid = token_grid(p)[0]
        self.num_classes = spec.num_classes
        self.multilabel = spec.multilabel
        labels = clip_labels(p.clips, spec)
        self.labels = labels.astype(np.float32) if self.multilabel else labels.astype(np.int64)
        self.folds = clip_folds(p.clips)
        self.workers = int(run.workers or 0)
        # the dataset's random training crop (probekit.cache.crop), applied to draws fit keys (draw_keys)
        self.crop = getattr(p.dataset, "train_crop", None) if p.split == "train" else None

    @classmethod
    def live(cls, backbone, dataset, split: str, *, device: str = "auto", frontend_style: str | None = "model",
             workers: int = 0) -> OnlineTokens:
        """Plan and open in one call (the pre-0.2 constructor's arguments)."""
        return cls(plan(backbone, dataset, split, frontend_style=frontend_style, dtype="float32", device=device),
                   RunOptions(device=device, workers=workers))

    def cache_key(self) -> dict:
        """The content key a cache of these tokens would have (provenance for result records)."""
        return self._plan.key

    def batches(
        self,
        request: TokenRequest,
        batch_size: int,
        *,
        indices: Sequence[int] | np.ndarray | None = None,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        draw_keys: np.ndarray | None = None,
    ) -> Iterator[TokenBatch]:
        """One pass over `indices` (default all clips): decode, frontend, encode, select the requested tokens.
        An `InputRequest` (a probe that runs the encoder itself, VQT) gets the frontend features instead.
        `draw_keys` ((len(indices), 3) seed, epoch, position; with `indices`, no shuffle): training draws,
        which get the dataset's random crop (`self.crop`) seeded by their key."""
        if isinstance(request, InputRequest):
            yield from input_batches(self, batch_size, indices=indices, shuffle=shuffle, seed=seed,
                                     drop_last=drop_last)
            return
        order = batch_order(self.num_clips, batch_size, indices=indices, shuffle=shuffle, seed=seed, drop_last=drop_last)
        chunks = [c.tolist() for c in order]
        if not chunks:
            return
        crop = None
        if self.crop and draw_keys is not None and indices is not None and not shuffle:
            keys = [tuple(int(v) for v in k) for k in np.asarray(draw_keys, dtype=np.int64).reshape(-1, 3)]
            it = iter(keys)  # batch_order keeps `indices` in order: the keys follow them
            chunks = [[(i, next(it)) for i in c] for c in chunks]
            crop = self.crop
        loader = feature_loader(self.clips, self.backbone.frontend, self.backbone.sample_rate, chunks,
                                workers=self.workers, device=self.device, crop=crop)
        wanted = list(request.resolve(self.num_layers))
        for rows, feats, valid_frames, ok, errors in loader:
            if errors:
                i, msg = errors[0]
                raise AudioError(self.clips[i].path, msg.split(": ", 1)[-1] if ": " in msg else msg,
                                 hint=f"{len(errors)} clip(s) of this batch failed; extract with on_error='skip' "
                                 "(--on-error skip) to leave bad clips out")
            # no_grad (not inference_mode): the tokens feed a probe's autograd graph. The encoder keeps
            # only the wanted layers, in that order (less memory than all of them).
            with torch.no_grad():
                lt = self.backbone.encode(feats.to(self.device, non_blocking=True), valid_frames.to(self.device),
                                          layers=wanted)
            patch = lt.patch.float() if request.patch else None
            cls = lt.cls.float() if request.cls else None
            r = rows.numpy()
            yield TokenBatch(
                patch=patch,
                cls=cls,
                labels=torch.as_tensor(self.labels[r]),
                valid_rows=torch.as_tensor(lt.valid_rows, dtype=torch.long).cpu(),
                index=rows,
                grid=tuple(lt.grid),
            )

    def __len__(self) -> int:
        return self.num_clips

    def __repr__(self) -> str:
        return (f"OnlineTokens({self.backbone.name} on {self._plan.dataset.name}/{self.split}: "
                f"{self.num_clips} clips, L={self.num_layers}, grid={self.grid}, device={self.device})")


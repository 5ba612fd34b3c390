"""Frontend features for probes that run the frozen encoder themselves (VQT), from the live source.

Most probes read per-layer tokens (`TokenRequest`). A probe whose `request` is an `InputRequest` (it
declares `needs_encoder = True`) trains something *inside* the encoder (VQT's query tokens), so it needs
the encoder's input instead: `OnlineTokens.batches` then yields `InputBatch`es holding the frontend features
of the batch, each clip's valid frames, the labels, and the frozen backbone that made them. A token cache
cannot serve such a probe (its tokens are fixed); `require_live` and `check_live_probes` refuse it in one line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probekit.errors import AudioError, ConfigError
from probekit.tokens import TokenBatch, TokenRequest, batch_order

__all__ = ["InputBatch", "InputRequest", "LiveSource", "check_live_probes", "input_batches", "needs_encoder", "refuse_backbone",
           "require_live"]


@dataclass(frozen=True)
class InputRequest(TokenRequest):
    """The request of a probe that runs the encoder itself: frontend features, no tokens."""

    layers: str | tuple[int, ...] = "all"
    patch: bool = False
    cls: bool = False


@dataclass
class InputBatch(TokenBatch):
    """A TokenBatch (patch/cls None) with the encoder's input: features (B, 1, frames, bins) as the frontend
    made them, valid_frames (B,) frames of real audio per clip, and the frozen `backbone` to run them through."""

    features: torch.Tensor | None = None
    valid_frames: torch.Tensor | None = None
    backbone: Any = None

    def to(self, device) -> InputBatch:
        mv = lambda t: None if t is None else t.to(device, non_blocking=True)
        return InputBatch(None, None, mv(self.labels), mv(self.valid_rows), mv(self.index),
                          features=mv(self.features), valid_frames=self.valid_frames, backbone=self.backbone)


def needs_encoder(probe_or_class) -> bool:
    """True for probes that train inside the frozen encoder (they declare `needs_encoder = True`)."""
    return bool(getattr(probe_or_class, "needs_encoder", False))


class LiveSource:
    """Marks token data that runs the frozen encoder itself (`OnlineTokens`), so it can serve `InputRequest`s
    with `input_batches`. It has `clips`, `backbone`, `labels`, `num_clips`, `workers` and `device`."""


def require_live(probe, data) -> None:
    """Refuse token data that cannot run the encoder (a cache, tokens in RAM) for a probe that needs it."""
    if needs_encoder(probe) and not isinstance(data, LiveSource):
        raise ConfigError(
            f"probe {probe.name!r} trains inside the frozen encoder, so it cannot read a token cache "
            f"({type(data).__name__})",
            hint="pass --online (Python: online=True, or OnlineTokens as the data)")


def check_live_probes(probe_classes: Sequence[type], backbone, online: bool) -> None:
    """Before any extraction: probes that need the encoder run online only, on a backbone that takes queries."""
    live = [c.name for c in probe_classes if needs_encoder(c)]
    if not live:
        return
    if not online:
        raise ConfigError(
            f"probe(s) {', '.join(live)} train inside the frozen encoder and need it live, not a token cache",
            hint="pass --online (Python: online=True)")
    refuse_backbone(backbone, live[0])


def refuse_backbone(backbone, probe_name: str) -> None:
    """The one-line refusal of a backbone without query support."""
    if getattr(backbone, "supports_queries", False):
        return
    name = getattr(backbone, "name", type(backbone).__name__)
    family = getattr(getattr(backbone, "card", None), "family", "?")
    raise ConfigError(f"probe {probe_name!r}: backbone {name!r} (family {family!r}) cannot take query tokens",
                      hint="VQT runs on the BAT, EAT, SSLAM and BEATs families (e.g. bat, eat, sslam, beats-iter3)")


def input_batches(source, batch_size: int, *, indices: Sequence[int] | np.ndarray | None = None,
                  shuffle: bool = False, seed: int = 0, drop_last: bool = False) -> Iterator[InputBatch]:
    """One pass of an `OnlineTokens` source as InputBatches: decode + frontend in its DataLoader workers
    (the same pipeline and batch order as its token batches), no encoder call."""
    from probekit.cache.pipeline import feature_loader

    order = batch_order(source.num_clips, batch_size, indices=indices, shuffle=shuffle, seed=seed,
                        drop_last=drop_last)
    chunks = [c.tolist() for c in order]
    if not chunks:
        return
    bb = source.backbone
    loader = feature_loader(source.clips, bb.frontend, bb.sample_rate, chunks, workers=source.workers,
                            device=source.device)
    for rows, feats, valid_frames, _ok, errors in loader:
        if errors:
            i, msg = errors[0]
            raise AudioError(source.clips[i].path, msg.split(": ", 1)[-1] if ": " in msg else msg,
                             hint=f"{len(errors)} clip(s) of this batch failed; extract with on_error='skip' "
                             "(--on-error skip) to leave bad clips out")
        r = rows.numpy()
        yield InputBatch(
            patch=None, cls=None, labels=torch.as_tensor(source.labels[r]),
            # 16-frame patch rows holding real audio (every query-capable family patches 16 frames)
            valid_rows=torch.div(valid_frames + 15, 16, rounding_mode="floor"),
            index=rows, features=feats, valid_frames=valid_frames, backbone=bb,
        )

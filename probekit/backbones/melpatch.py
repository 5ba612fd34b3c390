"""`melpatch`: the no-learning floor every board can show.

The frontend's log-mel spectrogram cut into the same 16x16 patches an audio ViT embeds, each patch's 256
values taken as one token; one "layer", no weights at all. A probe on these tokens measures what raw
features give, so a model row below the melpatch row has learnt nothing a probe can use.

Default frontend: the BAT recipe (mel -> dB -> per-clip min-max, values in [0, 1]); `frontend=` picks
another (e.g. "fbank" to compare with EAT/SSLAM on their own features).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from probekit.backbones._frontend import frontend_config_dict
from probekit.backbones.protocol import BackboneBase, BackboneCard, LayerTokens
from probekit.backbones.registry import check_options, register_backbone
from probekit.backbones.weights import register_no_weights
from probekit.errors import BackboneError

__all__ = ["PATCH", "MelPatchBackbone"]

PATCH = 16
MEL_BINS = 128
CARD = BackboneCard(
    name="melpatch", family="baseline", embed_dim=PATCH * PATCH, num_layers=1, num_heads=0, frontend="bat",
    params=0, notes="floor: the frontend's log-mel 16x16 patches as tokens (256 values each), one layer, no weights",
)


class MelPatchBackbone(BackboneBase):
    """Log-mel 16x16 patches as tokens: (B, 1, frames, 128) -> patch (B, 1, T*8, 256), time-major."""

    name = "melpatch"
    num_layers = 1
    embed_dim = PATCH * PATCH
    checkpoint_sha256 = None
    seed = None  # no weights, not random ones: records label the row plainly "melpatch"

    def __init__(self, *, frontend=None):
        self.card = CARD
        self.model = torch.nn.Identity().eval()  # nothing learnt: no parameters
        self._frontend_spec = frontend
        self._device = torch.device("cpu")

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device):
        from probekit._device import resolve_device

        self._device = resolve_device(device)
        return super().to(self._device)

    @torch.no_grad()
    def encode(self, features: torch.Tensor, valid_frames: torch.Tensor | None = None, *,
               layers: Sequence[int] | None = None) -> LayerTokens:
        if not torch.is_tensor(features) or not features.is_floating_point():
            raise BackboneError("melpatch: features must be a floating-point tensor (B, 1, frames, 128)")
        if features.ndim != 4 or features.shape[1] != 1 or features.shape[3] != MEL_BINS:
            raise BackboneError(f"melpatch: features must be (B, 1, frames, {MEL_BINS}), got {tuple(features.shape)}")
        if layers is not None and any(int(i) not in (0, -1) for i in layers):
            raise BackboneError(f"melpatch has one layer; layer indices {list(layers)} are out of range")
        x = features.to(self.device, torch.float32)[:, 0]
        b, frames, _ = x.shape
        t, f = frames // PATCH, MEL_BINS // PATCH  # frames floor-divided by 16, as the ViT's patch embedding
        if t == 0:
            raise BackboneError(f"melpatch: {frames} frames is shorter than one {PATCH}-frame patch")
        # (B, T, 16, F, 16) -> (B, T, F, 16*16): the same pixels a ViT's 16x16 conv patch sees, time-major
        patch = x[:, : t * PATCH].reshape(b, t, PATCH, f, PATCH).permute(0, 1, 3, 2, 4).reshape(b, t * f, PATCH * PATCH)
        if valid_frames is None:
            valid_rows = torch.full((b,), t, dtype=torch.long)
        else:
            vf = torch.as_tensor(valid_frames, dtype=torch.long).reshape(-1).cpu()
            valid_rows = torch.clamp((vf + PATCH - 1) // PATCH, 1, t)
        # no cls token: the mean of the valid patch tokens (the protocol's rule for models without one)
        mask = (torch.arange(t).unsqueeze(0) < valid_rows.unsqueeze(1)).repeat_interleave(f, dim=1).to(patch.device)
        cls = (patch * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        n = 1 if layers is None else len(layers)
        return LayerTokens(patch.unsqueeze(1).expand(b, n, t * f, -1).contiguous(),
                           cls.unsqueeze(1).expand(b, n, -1).contiguous(), (t, f), valid_rows)

    def cache_key(self) -> dict:
        return {"backbone": self.name, "family": "baseline", "patch": PATCH, "weights": "none",
                "frontend": frontend_config_dict(self.frontend_config)}

    def __repr__(self) -> str:
        return "MelPatchBackbone(log-mel 16x16 patches, 256-d tokens, 1 layer, no weights)"


@register_backbone(name="melpatch", card=CARD)
def build_melpatch(checkpoint=None, **options) -> MelPatchBackbone:
    """The log-mel patch floor (no weights; `seed` has no effect)."""
    if checkpoint is not None:
        raise BackboneError("melpatch has no weights", hint="drop --weights/--checkpoint for the melpatch floor")
    o = check_options("melpatch", options, accepted=("seed", "frontend", "device"))
    from probekit._device import resolve_device

    return MelPatchBackbone(frontend=o["frontend"]).to(resolve_device(o["device"]))


register_no_weights("melpatch")

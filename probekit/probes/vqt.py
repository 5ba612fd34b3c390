"""VQT (visual query tuning, Tu et al., CVPR 2023) as BAT runs it: learnable query tokens in every block of
the live frozen encoder, each block's query outputs (and the last cls) the features of one linear head.

Re-derived from `houtan-ghaffari/BAT_ICML2026`:
- models/vit.py (BAT, EAT, SSLAM) and models/beats.py (BEATs): `vqt = zeros(depth, num_vqt, dim)`
  initialised U(-v, v), v = sqrt(6 / (3 * 16 * 16 + dim)); block i gets `dropout(vqt[i])` prepended to its
  input; keys and values exclude the queries (BEATs: the relative bias is built over q + N positions, its key
  columns kept); the query outputs are taken and dropped before the next block.
- `extract_vqt_features`: queries and cls averaged over 64-row chunks; cls = the last block's cls token
  (BEATs: mean of the last layer's tokens); features = cat(normalize(cls), normalize(each block's q*D
  query outputs)) -> (B, D + L*q*D), block-major.
- the head: [LayerNorm(eps 1e-6; BEATs 1e-5) if head_norm] -> Linear; the BEATs head also applies
  Dropout(head_dropout) before the linear layer, the ViT head has none.
- models/builder.py: the encoder is frozen, the head and `vqt` train; engine/optim.py: no weight decay on
  `vqt` and 1-D weights. configs/*/*_vqt_config.yaml: num_vqt 10, head_dropout 0.2, head_norm true (false
  for AS-20k), lr 1e-3, weight decay 0.05 (ESC-50: 0.2), vqt dropout 0 (the builder's default).

It needs the live encoder: it runs online only (`--online`, `online=True`) and refuses a token cache.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probekit.cache.live import InputBatch, InputRequest, refuse_backbone
from probekit.errors import ProbeError
from probekit.probes.base import Probe, register_probe
from probekit.probes.constraints import Interval
from probekit.probes.space import Choice, Float, Param

__all__ = ["VQT", "query_init_bound", "vqt_features"]

PATCH_AREA = 16 * 16  # the official init reads the 16x16 patch of every supported family


def query_init_bound(embed_dim: int, patch_area: int = PATCH_AREA) -> float:
    """The official U(-v, v) bound of the query tokens: sqrt(6 / (3 * patch_area + dim))."""
    return math.sqrt(6.0 / float(3 * patch_area + embed_dim))


def vqt_features(queries: Tensor, cls: Tensor, *, normalize: bool = True) -> Tensor:
    """(B, L, q, D) query outputs + (B, D) cls -> (B, D + L*q*D): cls, then each block's q*D outputs
    (each L2-normalised on its own when `normalize`, as `normalize_vqt`)."""
    q = queries.flatten(2)  # (B, L, q*D)
    if normalize:
        cls, q = F.normalize(cls, dim=-1), F.normalize(q, dim=-1)
    return torch.cat([cls, q.flatten(1)], dim=1)


# The head as each official model class builds it: (LayerNorm eps, head dropout applied?).
_FAMILY_HEAD = {"beats": (1e-5, True)}
_VIT_HEAD = (1e-6, False)  # models/vit.py: norm_layer eps 1e-6, head_dropout not used by the vqt head


@register_probe
class VQT(Probe):
    """Visual query tuning: `num_queries` learnable tokens per block of the frozen encoder (L, q, D), read
    through the live encoder; features (B, D + L*q*D) -> [LayerNorm] -> [Dropout] -> Linear.

    Args:
        num_queries: query tokens per block (official num_vqt: 10).
        layer_norm: LayerNorm on the features before the linear layer (official head_norm).
        dropout: head dropout; None: as the official code for the family (BEATs 0.2, the configs'
            head_dropout; BAT/EAT/SSLAM none, their vqt head has no dropout).
        query_dropout: dropout on the query tokens before each block (official vqt_dropout, 0).
        normalize: L2-normalise the cls and each block's query outputs (official normalize_vqt).
    """

    name = "vqt"
    display_name = "VQT"
    description = "visual query tuning: learnable query tokens in every block of the live frozen encoder (online only)"
    needs_encoder: ClassVar[bool] = True  # it trains inside the encoder: live source only (probekit.cache.live)
    search_space: ClassVar[dict[str, Param]] = {
        "num_queries": Choice((1, 5, 10, 20)),
        "layer_norm": Choice((True, False)),
        "dropout": Float(0.0, 0.5),
    }
    param_constraints: ClassVar[dict[str, list]] = {
        "num_queries": [Interval("int", 1, None)],
        "dropout": [Interval("real", 0, 1, "left"), None],
        "query_dropout": [Interval("real", 0, 1, "left")],
    }

    def __init__(
        self,
        *,
        num_layers: int,
        embed_dim: int,
        num_classes: int,
        num_queries: int = 10,
        layer_norm: bool = True,
        dropout: float | None = None,
        query_dropout: float = 0.0,
        normalize: bool = True,
    ):
        super().__init__()
        self._store_hparams(locals())
        self.request = InputRequest()
        self.num_queries, self.normalize = int(num_queries), bool(normalize)
        # official order: the queries are drawn first, then the head
        v = query_init_bound(embed_dim)
        self.vqt = nn.Parameter(torch.empty(num_layers, self.num_queries, embed_dim).uniform_(-v, v))
        self.query_dropout = nn.Dropout(query_dropout)
        width = embed_dim + num_layers * self.num_queries * embed_dim
        self.ln = nn.LayerNorm(width, eps=1e-6) if layer_norm else nn.Identity()
        self.dropout = nn.Dropout(0.0 if dropout is None else dropout)
        self.fc = nn.Linear(width, num_classes)
        self._family: str | None = None

    # ---- the encoder ------------------------------------------------------------------------------
    @property
    def backbone(self):
        """The frozen backbone this probe runs (attached from the first batch; not part of its weights)."""
        return self.__dict__.get("_backbone")

    def attach(self, backbone) -> None:
        """Run `backbone` (frozen, not a submodule: its weights are no part of the probe's state dict);
        family-specific head details (LayerNorm eps, head dropout) follow the official model class."""
        have = self.backbone
        if have is backbone:
            return
        refuse_backbone(backbone, self.name)
        if have is not None and getattr(have, "model", None) is not getattr(backbone, "model", None) and (
                (have.name, have.checkpoint_sha256, have.seed)
                != (backbone.name, backbone.checkpoint_sha256, backbone.seed)):
            raise ProbeError(f"probe 'vqt' was trained with {have.name!r} and cannot run {backbone.name!r}: its "
                             "query tokens belong to that encoder", hint="train a new vqt probe for this backbone")
        sa = self.shape_args
        if (backbone.num_layers, backbone.embed_dim) != (sa["num_layers"], sa["embed_dim"]):
            raise ProbeError(f"probe 'vqt' has queries for {sa['num_layers']} blocks of width {sa['embed_dim']}; "
                             f"{backbone.name!r} has {backbone.num_layers} of width {backbone.embed_dim}",
                             hint="build the probe with the backbone's num_layers and embed_dim")
        family = backbone.card.family
        eps, head_dropout = _FAMILY_HEAD.get(family, _VIT_HEAD)
        if isinstance(self.ln, nn.LayerNorm):
            self.ln.eps = eps
        if self.hparams["dropout"] is None:
            self.dropout.p = 0.2 if head_dropout else 0.0
        self._family = family
        self.__dict__["_backbone"] = backbone

    def features(self, batch: InputBatch) -> Tensor:
        """(B, D + L*q*D): the official `extract_vqt_features` on the batch's frontend features."""
        if not isinstance(batch, InputBatch) or batch.features is None:
            raise ProbeError("probe 'vqt' trains inside the frozen encoder and cannot read tokens (a token cache)",
                             hint="pass --online (Python: online=True, or OnlineTokens as the data)")
        self.attach(batch.backbone)
        bb = self.backbone
        if bb.device != self.vqt.device:
            raise ProbeError(f"probe 'vqt' is on {self.vqt.device} but backbone {bb.name!r} runs on {bb.device}",
                             hint="train with the device the online tokens use (device=...)")
        b = batch.features.shape[0]
        queries = self.query_dropout(self.vqt.unsqueeze(0).expand(b, -1, -1, -1))
        out = bb.encode_queries(batch.features, batch.valid_frames, queries)
        return vqt_features(out.queries, out.cls, normalize=self.normalize)

    def forward(self, batch: InputBatch) -> Tensor:
        return self.fc(self.dropout(self.ln(self.features(batch))))

    def report(self) -> dict:
        """The family whose official head was followed, and the head dropout / LayerNorm eps it gave."""
        out = {"num_queries": self.num_queries, "head_dropout": float(self.dropout.p)}
        if self._family is not None:
            out["family"] = self._family
        if isinstance(self.ln, nn.LayerNorm):
            out["head_norm_eps"] = float(self.ln.eps)
        return out

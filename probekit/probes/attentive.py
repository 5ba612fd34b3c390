"""Attentive pooling probe (MHCA, AIM style, as used by Bird-MAE and the "unmute" benchmark)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from probekit.probes.base import Probe, patch_request, register_probe
from probekit.probes.space import Float, Param
from probekit.tokens import TokenBatch


@register_probe
class MHCA(Probe):
    """One learned query (no projection) attends over the last layer's patch tokens:
    k = x Wk, v = x Wv (no bias), per head softmax(q k^T / sqrt(D/h)) v, heads concatenated
    -> LayerNorm(eps 1e-6) -> Dropout -> Linear. Heads default to the backbone's (D // 64)."""

    name = "mhca"
    display_name = "MHCA"
    description = "Multi-head cross-attention pooling (AIM style): one learned query over the patch tokens"
    search_space: ClassVar[dict[str, Param]] = {"dropout": Float(0.0, 0.5)}

    def __init__(
        self,
        *,
        num_layers: int,
        embed_dim: int,
        num_classes: int,
        num_heads: int,
        dropout: float = 0.0,
        layer: int = -1,
    ):
        super().__init__()
        self._store_hparams(locals())
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.num_heads = int(num_heads)
        self.request = patch_request(layer, num_layers)
        self.query = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.k = nn.Linear(embed_dim, embed_dim, bias=False)
        self.v = nn.Linear(embed_dim, embed_dim, bias=False)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(embed_dim, num_classes)

    def attention(self, batch: TokenBatch) -> tuple[Tensor, Tensor]:
        """(pooled (B, D), attention weights (B, heads, N))."""
        x = self._patch(batch)[:, 0]  # (B, N, D)
        B, N, D = x.shape
        h, d = self.num_heads, D // self.num_heads
        q = self.query.to(x.dtype).expand(B, 1, D).reshape(B, 1, h, d).transpose(1, 2)  # (B, h, 1, d)
        k = self.k(x).reshape(B, N, h, d).transpose(1, 2)  # (B, h, N, d)
        v = self.v(x).reshape(B, N, h, d).transpose(1, 2)
        w = torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(d), dim=-1)  # (B, h, 1, N)
        out = (w @ v).transpose(1, 2).reshape(B, D)
        return out, w[:, :, 0]

    def forward(self, batch: TokenBatch) -> Tensor:
        pooled, _ = self.attention(batch)
        return self.fc(self.dropout(self.norm(pooled)))

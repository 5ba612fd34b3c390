"""Attentive poolings of the efficient-probing benchmark (Psomas et al.): SimPool, EP (efficient probing),
AIM-style attention pooling and ABMILP, on the last layer's patch tokens.

Re-derived from `billpsomas/efficient-probing` (poolings/simpool.py, poolings/ep.py, poolings/aim.py,
poolings/abmilp.py, models_vit.py `Attention`, probe_heads.py, main_linprobe.py defaults). Every official
head has the same shape, kept here:

    pooling (B, N, D) -> (B, W)  ->  BatchNorm1d(W, affine=False, eps=1e-6)  ->  Linear(W, C)

The BatchNorm normalises with batch statistics in training and running statistics (momentum 0.1) in
evaluation, exactly as the official head; it therefore needs at least two clips per training batch.
`dropout` (default 0: the official heads have none) sits between the BatchNorm and the classifier.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor, nn

from probekit.errors import ProbeError
from probekit.probes.base import Probe, patch_request, register_probe
from probekit.probes.constraints import Interval, Options
from probekit.probes.space import Choice, Float, Int, Param
from probekit.tokens import TokenBatch

_DROPOUT = [Interval("real", 0, 1, "left")]
_POS_INT = [Interval("int", 1, None)]


class _BNHead(Probe, metaclass=ABCMeta):
    """Shared tail: the official non-affine BatchNorm and the linear classifier, on the pooled vector.
    Subclasses must define `pool`; ABCMeta refuses to build one that does not."""

    def _init_tail(self, width: int, num_classes: int, dropout: float, layer: int, num_layers: int) -> None:
        self.request = patch_request(layer, num_layers)
        self.bn = nn.BatchNorm1d(width, affine=False, eps=1e-6)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(width, num_classes)

    def _tokens(self, batch: TokenBatch) -> Tensor:
        x = self._patch(batch)[:, 0]  # (B, N, D)
        if self.training and x.shape[0] < 2:
            raise ProbeError(
                f"probe {self.name!r} normalises with batch statistics (BatchNorm) and got a training "
                f"batch of {x.shape[0]} clip",
                hint="train with batch_size >= 2 and at least 2 training clips",
            )
        return x

    @abstractmethod
    def pool(self, x: Tensor) -> Tensor:
        """(B, N, D) patch tokens -> (B, W) pooled vector."""

    def forward(self, batch: TokenBatch) -> Tensor:
        return self.fc(self.dropout(self.bn(self.pool(self._tokens(batch)))))


@register_probe
class SimPool(_BNHead):
    """SimPool (Psomas et al., 2023): the patch mean as query, q = Wq mean(x), k = Wk LN(x), v = LN(x)
    (LayerNorm eps 1e-6 shared by k and v, no value projection), softmax(q k^T / sqrt(D/h)) v."""

    name = "simpool"
    display_name = "SimPool"
    description = "SimPool: GAP-initialised single-query attention pooling over the patch tokens"
    search_space: ClassVar[dict[str, Param]] = {"dropout": Float(0.0, 0.5)}
    param_constraints: ClassVar[dict[str, list]] = {"dropout": _DROPOUT, "heads": _POS_INT}

    def __init__(
        self,
        *,
        num_layers: int,
        embed_dim: int,
        num_classes: int,
        heads: int = 1,
        dropout: float = 0.0,
        layer: int = -1,
    ):
        super().__init__()
        self._store_hparams(locals())
        if embed_dim % heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by heads={heads}")
        self.heads = int(heads)
        self.scale = (embed_dim // heads) ** -0.5
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.wq = nn.Linear(embed_dim, embed_dim, bias=False)
        self.wk = nn.Linear(embed_dim, embed_dim, bias=False)
        self._init_tail(embed_dim, num_classes, dropout, layer, num_layers)

    def pool(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        h = self.heads
        gap = x.mean(dim=1, keepdim=True)  # (B, 1, D): the query starts from the raw patch mean
        xn = self.norm(x)
        q = self.wq(gap).reshape(B, 1, h, D // h).transpose(1, 2)  # (B, h, 1, d)
        k = self.wk(xn).reshape(B, N, h, D // h).transpose(1, 2)  # (B, h, N, d)
        v = xn.reshape(B, N, h, D // h).transpose(1, 2)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return (attn @ v).transpose(1, 2).reshape(B, D)


@register_probe
class EfficientProbe(_BNHead):
    """EP (efficient probing): Q learned queries attend over the raw patch tokens (no key projection,
    one head, scale D^-1/2); the value projection Linear(D, D/d_out, no bias) is split into Q channel
    slices and query i pools slice i; the slices concatenated give a (B, D/d_out) vector."""

    name = "ep"
    display_name = "EP"
    description = "Efficient probing: Q learned queries, each pooling its own slice of projected channels"
    search_space: ClassVar[dict[str, Param]] = {
        "num_queries": Choice((4, 8, 16, 32)),
        "dropout": Float(0.0, 0.5),
    }
    param_constraints: ClassVar[dict[str, list]] = {"dropout": _DROPOUT, "num_queries": _POS_INT,
                                                    "d_out": _POS_INT}

    def __init__(
        self,
        *,
        num_layers: int,
        embed_dim: int,
        num_classes: int,
        num_queries: int = 32,
        d_out: int = 1,
        dropout: float = 0.0,
        layer: int = -1,
    ):
        super().__init__()
        self._store_hparams(locals())
        if embed_dim % (d_out * num_queries):
            raise ValueError(
                f"embed_dim={embed_dim} is not divisible by d_out*num_queries={d_out * num_queries}"
            )
        self.num_queries, self.d_out = int(num_queries), int(d_out)
        self.scale = embed_dim**-0.5
        self.v = nn.Linear(embed_dim, embed_dim // d_out, bias=False)
        self.query = nn.Parameter(torch.randn(1, num_queries, embed_dim) * 0.02)
        self._init_tail(embed_dim // d_out, num_classes, dropout, layer, num_layers)

    def attention(self, x: Tensor) -> Tensor:
        """(B, Q, N) attention of each query over the tokens."""
        q = self.query.to(x.dtype) * self.scale
        return torch.softmax(q @ x.transpose(-2, -1), dim=-1)  # (1, Q, D) @ (B, D, N)

    def pool(self, x: Tensor) -> Tensor:
        B, N, _ = x.shape
        Q = self.num_queries
        v = self.v(x)  # (B, N, W)
        v = v.reshape(B, N, Q, v.shape[-1] // Q).transpose(1, 2)  # (B, Q, N, W/Q)
        out = self.attention(x).unsqueeze(2) @ v  # (B, Q, 1, W/Q)
        return out.reshape(B, -1)


@register_probe
class AIMPool(_BNHead):
    """AIM-style attention pooling as the efficient-probing benchmark runs it: the tokens first pass a
    non-affine BatchNorm over channels (statistics over clips and tokens), then Q learned queries (scaled
    by (D/h)^-1/2) attend with k = x Wk, v = x Wv (no biases), h heads; the queries' outputs are averaged.
    Unlike `mhca` (Bird-MAE's variant: LayerNorm after pooling), no LayerNorm and two BatchNorms."""

    name = "aim"
    display_name = "AIM"
    description = "AIM attention pooling (efficient-probing variant): token BatchNorm, learned query"
    search_space: ClassVar[dict[str, Param]] = {"dropout": Float(0.0, 0.5)}
    param_constraints: ClassVar[dict[str, list]] = {"dropout": _DROPOUT, "heads": _POS_INT,
                                                    "num_queries": _POS_INT}

    def __init__(
        self,
        *,
        num_layers: int,
        embed_dim: int,
        num_classes: int,
        heads: int = 16,
        num_queries: int = 1,
        dropout: float = 0.0,
        layer: int = -1,
    ):
        super().__init__()
        self._store_hparams(locals())
        if embed_dim % heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by heads={heads}")
        self.heads, self.num_queries = int(heads), int(num_queries)
        self.scale = (embed_dim // heads) ** -0.5
        self.k = nn.Linear(embed_dim, embed_dim, bias=False)
        self.v = nn.Linear(embed_dim, embed_dim, bias=False)
        self.query = nn.Parameter(torch.randn(1, num_queries, embed_dim) * 0.02)
        self.token_bn = nn.BatchNorm1d(embed_dim, affine=False, eps=1e-6)
        self._init_tail(embed_dim, num_classes, dropout, layer, num_layers)

    def pool(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        h, Q = self.heads, self.num_queries
        x = self.token_bn(x.transpose(1, 2)).transpose(1, 2)
        q = (self.query.to(x.dtype) * self.scale).expand(B, Q, D).reshape(B, Q, h, D // h).transpose(1, 2)
        k = self.k(x).reshape(B, N, h, D // h).transpose(1, 2)
        v = self.v(x).reshape(B, N, h, D // h).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-2, -1), dim=-1)  # (B, h, Q, N)
        return (attn @ v).transpose(1, 2).reshape(B, Q, D).mean(dim=1)


class _SelfAttention(nn.Module):
    """The ViT attention block of the benchmark (models_vit.Attention): qkv without bias, output
    projection with bias."""

    def __init__(self, dim: int, heads: int = 1):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        h = self.heads
        q, k, v = self.qkv(x).reshape(B, N, 3, h, D // h).permute(2, 0, 3, 1, 4).unbind(0)
        attn = torch.softmax((q * (D // h) ** -0.5) @ k.transpose(-2, -1), dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, D))


@register_probe
class ABMILP(_BNHead):
    """ABMILP (attention-based MIL pooling): an MLP (`depth` layers, tanh) scores each token, softmax over
    tokens, weighted sum. `self_attention` "both" (the benchmark's default): a one-head self-attention
    block feeds both the scorer and the sum; "map": only the scorer; "none": neither."""

    name = "abmilp"
    display_name = "ABMILP"
    description = "ABMILP: attention-based MIL pooling (self-attention, tanh MLP scores, softmax over tokens)"
    search_space: ClassVar[dict[str, Param]] = {
        "depth": Int(1, 3),
        "dropout": Float(0.0, 0.5),
    }
    param_constraints: ClassVar[dict[str, list]] = {
        "dropout": _DROPOUT, "depth": _POS_INT,
        "self_attention": [Options(("both", "map", "none"))], "activation": [Options(("tanh", "relu"))],
    }

    def __init__(
        self,
        *,
        num_layers: int,
        embed_dim: int,
        num_classes: int,
        self_attention: str = "both",
        activation: str = "tanh",
        depth: int = 2,
        dropout: float = 0.0,
        layer: int = -1,
    ):
        super().__init__()
        self._store_hparams(locals())
        self.self_attention = self_attention
        self.self_attn = _SelfAttention(embed_dim, 1) if self_attention != "none" else None
        mlp: list[nn.Module] = []
        for _ in range(depth - 1):
            mlp += [nn.Linear(embed_dim, embed_dim), nn.Tanh() if activation == "tanh" else nn.ReLU()]
        mlp.append(nn.Linear(embed_dim, 1))
        self.attention_predictor = nn.Sequential(*mlp)
        self._init_tail(embed_dim, num_classes, dropout, layer, num_layers)

    def attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(what is summed (B, N, D), token weights (B, N, 1))."""
        xa = self.self_attn(x) if self.self_attn is not None else x
        scores = self.attention_predictor(xa if self.self_attention in ("map", "both") else x)
        return (xa if self.self_attention == "both" else x), torch.softmax(scores, dim=1)

    def pool(self, x: Tensor) -> Tensor:
        content, w = self.attention(x)
        return (content * w).sum(dim=1)

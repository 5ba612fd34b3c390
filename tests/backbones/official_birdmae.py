"""Independent re-derivation of Bird-MAE's official evaluation path (DBD-research-group/Bird-MAE @a514ef50),
written from the official code's math (transforms.py::EvalTransform, models/vit/vit.py::VIT.forward_features,
timm 1.0.9 VisionTransformer blocks), not copied from it and not sharing code with probekit:

- frontend on a BATCH, official quirks kept: pad/crop to 5 s first, subtract each waveform's mean after the
  padding, kaldi fbank per waveform, pad time to 512 with the minimum of the WHOLE BATCH's fbank, normalise;
- encoder with plain loops and explicit attention: per-head softmax(q k^T / sqrt(hd)) v, LayerNorm from its
  formula, erf GELU, the 257-row table added index by index, cls + pos_embed[0] prepended.
"""

from __future__ import annotations

import math

import torch
from torchaudio.compliance.kaldi import fbank

SR = 32000
CLIP = 160000
TARGET = 512
MEAN, STD = -7.2, 4.43


def official_frontend(waves: list[torch.Tensor]) -> torch.Tensor:
    """List of 1-D float32 waveforms at 32 kHz -> (B, 1, 512, 128), one batch as EvalTransform sees it."""
    padded = torch.zeros(len(waves), CLIP, dtype=torch.float32)
    for i, w in enumerate(waves):  # SequenceFeatureExtractor.pad(max_length, truncation): right zeros / crop
        n = min(CLIP, w.numel())
        padded[i, :n] = w[:n]
    padded = padded - padded.mean(axis=1, keepdims=True)
    feats = torch.stack([
        fbank(row.unsqueeze(0), htk_compat=True, sample_frequency=SR, use_energy=False, window_type="hanning",
              num_mel_bins=128, dither=0.0, frame_shift=10)
        for row in padded
    ])  # (B, 498, 128)
    low = feats.min()  # over the whole batch
    if TARGET > feats.shape[0]:  # the official condition compares with the batch size: always true here
        feats = torch.cat([feats, low.expand(feats.shape[0], TARGET - feats.shape[1], 128)], dim=1)
    return ((feats - MEAN) / (STD * 2)).unsqueeze(1)


def _layer_norm(x, w, b, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def official_blocks(sd: dict[str, torch.Tensor], x: torch.Tensor, num_heads: int) -> list[torch.Tensor]:
    """(B, 1, 512, 128) -> every block's output (B, 257, D) from a Bird-MAE HF state dict."""
    w, b = sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"]
    d = w.shape[0]
    bsz, _, frames, bins = x.shape
    # 16x16 stride-16 conv as patches @ weight: patch (t, f) -> token t * 8 + f (timm flatten(2) of (T, F))
    tokens = []
    for t in range(frames // 16):
        for f in range(bins // 16):
            patch = x[:, 0, t * 16:(t + 1) * 16, f * 16:(f + 1) * 16].reshape(bsz, 256)
            tokens.append(patch @ w.reshape(d, 256).T + b)
    h = torch.stack(tokens, dim=1)
    pos = sd["pos_embed"]
    h = h + pos[:, 1:1 + h.shape[1]]
    cls = (sd["cls_token"] + pos[:, :1]).expand(bsz, 1, d)
    h = torch.cat([cls, h], dim=1)
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    hd = d // num_heads
    outs = []
    for i in range(depth):
        p = f"blocks.{i}."
        y = _layer_norm(h, sd[p + "norm1.weight"], sd[p + "norm1.bias"])
        qkv = y @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]
        q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
        heads = []
        for j in range(num_heads):
            qj, kj, vj = (z[..., j * hd:(j + 1) * hd] for z in (q, k, v))
            att = torch.softmax(qj @ kj.transpose(1, 2) / math.sqrt(hd), dim=-1)
            heads.append(att @ vj)
        a = torch.cat(heads, dim=-1) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        h = h + a
        y = _layer_norm(h, sd[p + "norm2.weight"], sd[p + "norm2.bias"])
        y = _gelu(y @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]) @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
        h = h + y
        outs.append(h)
    return outs


def official_pooled(sd: dict[str, torch.Tensor], last: torch.Tensor) -> torch.Tensor:
    """global_pool: fc_norm(mean of the patch tokens of the last block)."""
    return _layer_norm(last[:, 1:].mean(1), sd["fc_norm.weight"], sd["fc_norm.bias"])

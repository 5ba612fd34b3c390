"""An independent re-derivation of the official AudioMAE forward and preprocessing (facebookresearch/AudioMAE
@bd60e296, timm 0.3.2), written from the official code's math with plain loops and explicit attention.

* `official_fbank`: dataset.AudiosetDataset._wav2fbank + __getitem__ (eval: no masking, no mixup, no noise).
* `official_forward`: models_vit.VisionTransformer.forward_features before the pooling (and what
  models_mae.forward_encoder adds: `norm` over all tokens of the last block), one list entry per block.
* `official_pos_embed`: util/pos_embed.get_2d_sincos_pos_embed_flexible(D, patch_hw=(8, 64), cls_token=True)
  in numpy float64, as models_mae.initialize_weights builds it.
* `official_state`: random weights in the official checkpoint layouts (models_mae / models_vit state dicts).

Shares no code with probekit.
"""

from __future__ import annotations

import math

import numpy as np
import torch


# ------------------------------------------------------------------------------ preprocessing
def official_fbank(wave: torch.Tensor, target_length: int = 1024, mean: float = -4.2677393,
                   std: float = 4.5689974) -> torch.Tensor:
    """(samples,) float in [-1, 1] at 16 kHz -> (target_length, 128), as the official eval loader gives it."""
    import torchaudio

    w = wave.to(torch.float32)[None]  # torchaudio.load: (1, samples), no 2**15 scaling
    w = w - w.mean()
    fb = torchaudio.compliance.kaldi.fbank(w, htk_compat=True, sample_frequency=16000, use_energy=False,
                                           window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    p = target_length - fb.shape[0]
    if p > 0:  # torch.nn.ZeroPad2d((0, 0, 0, p)): zeros appended in the log-mel domain
        fb = torch.cat([fb, torch.zeros(p, fb.shape[1])], dim=0)
    elif p < 0:
        fb = fb[:target_length, :]
    return (fb - mean) / (std * 2)


# ------------------------------------------------------------------------------ positional table
def official_pos_embed(embed_dim: int, grid_size=(8, 64)) -> np.ndarray:
    """(1 + H*W, D) float64: row 0 zeros; row 1 + n encodes (w = n % W, h = n // W)."""
    grid_h = np.arange(grid_size[0], dtype=np.float32)
    grid_w = np.arange(grid_size[1], dtype=np.float32)
    gw, gh = np.meshgrid(grid_w, grid_h)  # w goes first

    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
        omega = 1.0 / 10000**omega
        out = pos.reshape(-1)[:, None] * omega[None, :]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([one_d(embed_dim // 2, gw), one_d(embed_dim // 2, gh)], axis=1)
    return np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)


# ------------------------------------------------------------------------------ forward
def _layer_norm(x, w, b, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _attention(x, qkv_w, qkv_b, proj_w, proj_b, heads):
    b, n, c = x.shape
    hd = c // heads
    qkv = x @ qkv_w.T + qkv_b  # rows [q; k; v], head h owns columns h*hd:(h+1)*hd of each
    q, k, v = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]
    out = torch.empty(b, n, c)
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        logits = (q[..., sl] @ k[..., sl].transpose(1, 2)) * hd**-0.5  # timm 0.3.2: scale after q @ k^T
        logits = logits - logits.max(-1, keepdim=True).values
        p = logits.exp()
        out[..., sl] = (p / p.sum(-1, keepdim=True)) @ v[..., sl]
    return out @ proj_w.T + proj_b


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def official_forward(sd: dict, x: torch.Tensor, heads: int) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Official key layout + (B, 1, frames, 128) -> ([block outputs (B, 1 + N, D)], norm(last) or None).

    `pos_embed` is added index by index from the stored table (its first 1 + N rows: at 1,024 frames all).
    """
    g = {k: v.float() for k, v in sd.items()}
    w, bias = g["patch_embed.proj.weight"], g["patch_embed.proj.bias"]
    bsz, _, frames, bins = x.shape
    t, f, d = frames // 16, bins // 16, w.shape[0]
    # conv 16x16 stride 16 as a patch matmul: patch (ti, fi) -> token ti * F + fi (flatten(2) of (B, D, T, F))
    patches = x[:, 0, : t * 16].reshape(bsz, t, 16, f, 16).permute(0, 1, 3, 2, 4).reshape(bsz, t * f, 256)
    tok = patches @ w.reshape(d, 256).T + bias
    pos = g["pos_embed"]
    tok = tok + pos[:, 1 : 1 + t * f, :]
    cls = (g["cls_token"] + pos[:, :1, :]).expand(bsz, -1, -1)
    h = torch.cat([cls, tok], dim=1)
    depth = len({k.split(".")[1] for k in g if k.startswith("blocks.")})
    outs = []
    for i in range(depth):
        p = f"blocks.{i}."
        h = h + _attention(_layer_norm(h, g[p + "norm1.weight"], g[p + "norm1.bias"]), g[p + "attn.qkv.weight"],
                           g[p + "attn.qkv.bias"], g[p + "attn.proj.weight"], g[p + "attn.proj.bias"], heads)
        z = _layer_norm(h, g[p + "norm2.weight"], g[p + "norm2.bias"])
        z = _gelu(z @ g[p + "mlp.fc1.weight"].T + g[p + "mlp.fc1.bias"]) @ g[p + "mlp.fc2.weight"].T
        h = h + z + g[p + "mlp.fc2.bias"]
        outs.append(h)
    normed = _layer_norm(h, g["norm.weight"], g["norm.bias"]) if "norm.weight" in g else None
    return outs, normed


# ------------------------------------------------------------------------------ official layouts
def official_state(*, dim=64, depth=3, decoder_dim=32, seed=0, layout="pretrain", classes=5) -> dict:
    """Random weights under the official key names: models_mae (layout="pretrain": encoder + norm,
    mask_token, decoder_*) or models_vit with global_pool (layout="finetuned": encoder + fc_norm, head)."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=0.1: torch.randn(*s, generator=gen) * scale  # noqa: E731
    pos = torch.from_numpy(official_pos_embed(dim)).float().unsqueeze(0)
    sd = {"cls_token": r(1, 1, dim, scale=0.02), "pos_embed": pos,
          "patch_embed.proj.weight": r(dim, 1, 16, 16, scale=0.05), "patch_embed.proj.bias": r(dim)}

    def block(p, d):
        return {p + "norm1.weight": 1 + r(d), p + "norm1.bias": r(d),
                p + "attn.qkv.weight": r(3 * d, d), p + "attn.qkv.bias": r(3 * d),
                p + "attn.proj.weight": r(d, d), p + "attn.proj.bias": r(d),
                p + "norm2.weight": 1 + r(d), p + "norm2.bias": r(d),
                p + "mlp.fc1.weight": r(4 * d, d), p + "mlp.fc1.bias": r(4 * d),
                p + "mlp.fc2.weight": r(d, 4 * d), p + "mlp.fc2.bias": r(d)}

    for i in range(depth):
        sd.update(block(f"blocks.{i}.", dim))
    if layout == "pretrain":
        sd.update({"norm.weight": 1 + r(dim), "norm.bias": r(dim), "mask_token": r(1, 1, decoder_dim),
                   "decoder_pos_embed": torch.from_numpy(official_pos_embed(decoder_dim)).float().unsqueeze(0),
                   "decoder_embed.weight": r(decoder_dim, dim), "decoder_embed.bias": r(decoder_dim),
                   "decoder_norm.weight": 1 + r(decoder_dim), "decoder_norm.bias": r(decoder_dim),
                   "decoder_pred.weight": r(256, decoder_dim), "decoder_pred.bias": r(256)})
        sd.update(block("decoder_blocks.0.", decoder_dim))
    elif layout == "finetuned":
        sd.update({"fc_norm.weight": 1 + r(dim), "fc_norm.bias": r(dim), "head.weight": r(classes, dim),
                   "head.bias": r(classes)})
    else:
        raise ValueError(layout)
    return sd

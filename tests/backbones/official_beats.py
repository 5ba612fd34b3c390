"""An independent re-derivation of the official BEATs forward (microsoft/unilm beats/ @768a3c87).

Written from the official math (BEATs.py preprocess / forward_padding_mask / extract_features,
backbone.py TransformerEncoder / TransformerSentenceEncoderLayer / MultiheadAttention), sharing no code
with probekit: raw state dicts with the checkpoint's own key names, (N, B, D) layout as the official
encoder runs, explicit per-clip, per-head attention with a plain softmax, hand-written LayerNorm and erf
GELU, the weight norm spelled out, and the bucket table from a per-distance loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FBANK_MEAN, FBANK_STD = 15.41663, 6.55582


def fbank_official(wave: torch.Tensor) -> torch.Tensor:
    """BEATs.preprocess: per row kaldi fbank of wave * 2**15 (kaldi defaults otherwise), then normalise."""
    from torchaudio.compliance import kaldi

    rows = []
    for w in wave:
        rows.append(kaldi.fbank(w[None] * 32768.0, num_mel_bins=128, sample_frequency=16000,
                                frame_length=25, frame_shift=10))
    return (torch.stack(rows) - FBANK_MEAN) / (2 * FBANK_STD)


def _downsample_mask(mask: torch.Tensor, steps: int) -> torch.Tensor:
    """forward_padding_mask: drop the remainder, then a step is padding iff all its entries are."""
    b, n = mask.shape
    per = n // steps
    out = torch.zeros(b, steps, dtype=torch.bool)
    for i in range(b):
        for s in range(steps):
            out[i, s] = bool(mask[i, s * per:(s + 1) * per].all())
    return out


def patch_mask_official(sample_pad: torch.Tensor, frames: int, patches: int) -> torch.Tensor:
    """(B, samples) True = padding -> (B, patches), via the frame mask, both linear (the official quirk)."""
    return _downsample_mask(_downsample_mask(sample_pad, frames), patches)


def bucket_official(rel: int, num_buckets: int = 320, max_distance: int = 800) -> int:
    """T5 bidirectional bucket of rel = key - query, float32 log and truncation as the official code."""
    half = num_buckets // 2
    base = half if rel > 0 else 0
    d = abs(rel)
    exact = half // 2
    if d < exact:
        return base + d
    scaled = torch.log(torch.tensor(float(d), dtype=torch.float32) / exact) / math.log(max_distance / exact)
    return base + min(exact + int((scaled * (half - exact)).item()), half - 1)


def _ln(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _lin(x, sd, p):
    return x @ sd[p + ".weight"].T + sd[p + ".bias"]


def beats_official(sd: dict, cfg: dict, fbank: torch.Tensor, patch_pad: torch.Tensor | None = None):
    """Official state dict + cfg, (B, frames, 128) normalised fbank, (B, N) patch mask -> L x (B, N, D).

    cfg holds the official BEATsConfig fields (encoder_layers, encoder_attention_heads, conv_pos, ...).
    """
    sd = {k: v.float() for k, v in sd.items()}
    layers, heads = cfg["encoder_layers"], cfg["encoder_attention_heads"]
    nb, maxd, k_pos, groups = cfg["num_buckets"], cfg["max_distance"], cfg["conv_pos"], cfg["conv_pos_groups"]
    alpha = (2 * layers) ** 0.25 if cfg.get("deep_norm") else 1.0
    b, frames, bins = fbank.shape
    w = sd["patch_embedding.weight"]  # (E, 1, P, P)
    e, p = w.shape[0], w.shape[-1]
    t, f = frames // p, bins // p
    # patch embedding by hand: patch (ti, fi) covers frames ti*P.., bins fi*P..; tokens time-major
    cut = fbank[:, : t * p, : f * p].reshape(b, t, p, f, p).permute(0, 1, 3, 2, 4).reshape(b, t * f, p * p)
    x = cut @ w.reshape(e, p * p).T
    if "patch_embedding.bias" in sd:
        x = x + sd["patch_embedding.bias"]
    x = _ln(x, sd["layer_norm.weight"], sd["layer_norm.bias"])
    if "post_extract_proj.weight" in sd:
        x = _lin(x, sd, "post_extract_proj")
    n, d = x.shape[1], x.shape[2]
    if patch_pad is not None:
        x = x.clone()
        x[patch_pad] = 0.0
    # pos_conv: weight norm over dims (0, 1) per tap, grouped conv, drop the last step, GELU
    v, g = sd["encoder.pos_conv.0.weight_v"], sd["encoder.pos_conv.0.weight_g"]
    wconv = g * v / torch.sqrt((v * v).sum(dim=(0, 1), keepdim=True))
    conv = F.conv1d(x.transpose(1, 2), wconv, sd["encoder.pos_conv.0.bias"], padding=k_pos // 2, groups=groups)
    if k_pos % 2 == 0:
        conv = conv[..., :-1]
    x = x + _gelu(conv).transpose(1, 2)
    x = _ln(x, sd["encoder.layer_norm.weight"], sd["encoder.layer_norm.bias"])
    x = x.transpose(0, 1)  # (N, B, D) as the official encoder
    table = sd["encoder.layers.0.self_attn.relative_attention_bias.weight"]  # (buckets, H), shared by every layer
    by_rel = torch.tensor([bucket_official(r, nb, maxd) for r in range(-(n - 1), n)])  # one per distance
    idx = torch.arange(n)
    buckets = by_rel[idx[None, :] - idx[:, None] + n - 1]  # [q, k] -> bucket of k - q
    pos_bias = table[buckets].permute(2, 0, 1)  # (H, N_q, N_k)
    hd = d // heads
    outs = []
    for i in range(layers):
        pre = f"encoder.layers.{i}."
        q = _lin(x, sd, pre + "self_attn.q_proj")
        k = _lin(x, sd, pre + "self_attn.k_proj")
        vv = _lin(x, sd, pre + "self_attn.v_proj")
        att = torch.zeros_like(x)
        for bi in range(b):
            for h in range(heads):
                sl = slice(h * hd, (h + 1) * hd)
                qh, kh, vh = q[:, bi, sl], k[:, bi, sl], vv[:, bi, sl]
                logits = (qh @ kh.T) / math.sqrt(hd)
                gate_in = qh @ sd[pre + "self_attn.grep_linear.weight"].T + sd[pre + "self_attn.grep_linear.bias"]
                s = torch.sigmoid(gate_in.reshape(n, 2, 4).sum(-1))  # (N, 2)
                gate = s[:, 0] * (s[:, 1] * sd[pre + "self_attn.grep_a"][0, h, 0, 0] - 1.0) + 2.0
                logits = logits + gate[:, None] * pos_bias[h]
                if patch_pad is not None:
                    logits[:, patch_pad[bi]] = float("-inf")
                ex = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
                att[:, bi, sl] = (ex / ex.sum(-1, keepdim=True)) @ vh
        x = _ln(x * alpha + _lin(att, sd, pre + "self_attn.out_proj"),
                sd[pre + "self_attn_layer_norm.weight"], sd[pre + "self_attn_layer_norm.bias"])
        ff = _lin(_gelu(_lin(x, sd, pre + "fc1")), sd, pre + "fc2")
        x = _ln(x * alpha + ff, sd[pre + "final_layer_norm.weight"], sd[pre + "final_layer_norm.bias"])
        outs.append(x.transpose(0, 1))
    return outs


def random_beats_checkpoint(*, embed=48, dim=64, layers=3, heads=2, ffn=128, conv_pos=16, groups=4, seed=0,
                            finetuned=False) -> dict:
    """A tiny random checkpoint in the official layout: {'cfg': BEATsConfig fields, 'model': state_dict}."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=0.1: torch.randn(*s, generator=gen) * scale
    cfg = {"input_patch_size": 16, "embed_dim": embed, "conv_bias": False, "encoder_layers": layers,
           "encoder_embed_dim": dim, "encoder_ffn_embed_dim": ffn, "encoder_attention_heads": heads,
           "activation_fn": "gelu", "layer_norm_first": False, "deep_norm": True, "dropout": 0.0,
           "attention_dropout": 0.0, "conv_pos": conv_pos, "conv_pos_groups": groups,
           "relative_position_embedding": True, "num_buckets": 320, "max_distance": 800, "gru_rel_pos": True,
           "finetuned_model": finetuned, "predictor_class": 527}
    hd = dim // heads
    rel = r(320, heads, scale=1.0)
    sd = {
        "patch_embedding.weight": r(embed, 1, 16, 16, scale=0.05),
        "layer_norm.weight": 1 + r(embed), "layer_norm.bias": r(embed),
        "post_extract_proj.weight": r(dim, embed), "post_extract_proj.bias": r(dim),
        "encoder.pos_conv.0.bias": r(dim),
        "encoder.pos_conv.0.weight_g": 1 + r(1, 1, conv_pos),
        "encoder.pos_conv.0.weight_v": r(dim, dim // groups, conv_pos),
        "encoder.layer_norm.weight": 1 + r(dim), "encoder.layer_norm.bias": r(dim),
    }
    for i in range(layers):
        p = f"encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            # q/k at 0.1: softer attention keeps float32 rounding (probekit and official alike) near 3e-6
            sd[p + f"self_attn.{proj}.weight"] = r(dim, dim, scale=0.1 if proj in ("q_proj", "k_proj") else 0.2)
            sd[p + f"self_attn.{proj}.bias"] = r(dim)
        sd[p + "self_attn.relative_attention_bias.weight"] = rel  # the same tensor in every layer
        sd[p + "self_attn.grep_linear.weight"] = r(8, hd, scale=0.3)
        sd[p + "self_attn.grep_linear.bias"] = r(8)
        sd[p + "self_attn.grep_a"] = 1 + r(1, heads, 1, 1)
        sd[p + "self_attn_layer_norm.weight"] = 1 + r(dim)
        sd[p + "self_attn_layer_norm.bias"] = r(dim)
        sd[p + "fc1.weight"], sd[p + "fc1.bias"] = r(ffn, dim), r(ffn)
        sd[p + "fc2.weight"], sd[p + "fc2.bias"] = r(dim, ffn), r(dim)
        sd[p + "final_layer_norm.weight"] = 1 + r(dim)
        sd[p + "final_layer_norm.bias"] = r(dim)
    if finetuned:
        sd["predictor.weight"], sd["predictor.bias"] = r(527, dim), r(527)
    return {"cfg": cfg, "model": sd}

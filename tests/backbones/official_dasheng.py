"""Independent re-derivation of the official Dasheng forward (RicherMans/Dasheng @db730935, dasheng==0.0.9).

Written from the math of `dasheng/train/models.py` (`AudioTransformerMAE_Encoder.front_end`, `init_bn`,
`AudioPatchEmbed`, `Block`, `Attention`) and `dasheng/pretrained/pretrained.py` (`Dasheng.forward`,
`forward_spectrogram`, `forward_features`, `_to_mask`): plain tensor maths on the raw official state dict
(official key names); the forward shares no code with probekit or torchaudio (only `official_state_dict`
takes the front_end buffers from torchaudio, as the official module holds them):

- frontend (with the module's loaded window / filterbank buffers): reflect-padded frames of 512 samples
  every 160, periodic Hann, |rfft|^2, an HTK mel filterbank (64 bands, 0-8 kHz, no norm; also built here),
  10*log10(max(P, 1e-10)), then ONE floor max(x, max_over_the_whole_batch - 120);
- per-mel BatchNorm with running stats; (64, 4) patches as a reshape + einsum (trailing frames dropped);
- chunks of time_pos_embed.shape[-1] tokens, each with positions from 0; pre-LN blocks with explicit
  attention per head, key mask from x_length samples (t >= x_length // 640 -> finfo.min), softmax,
  nan_to_num; final LayerNorm.
"""

from __future__ import annotations

import math

import torch


def hann_periodic(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(2 * math.pi * k / n)).float()


def htk_mel_fb(n_freqs: int = 257, f_min: float = 0.0, f_max: float = 8000.0, n_mels: int = 64,
               sr: int = 16000) -> torch.Tensor:
    """(n_freqs, n_mels) triangular HTK-mel filters, unnormalised (torchaudio's default)."""
    hz2mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)
    freqs = [sr / 2 * i / (n_freqs - 1) for i in range(n_freqs)]
    lo, hi = hz2mel(f_min), hz2mel(f_max)
    pts = [700.0 * (10 ** ((lo + (hi - lo) * j / (n_mels + 1)) / 2595.0) - 1.0) for j in range(n_mels + 2)]
    fb = torch.zeros(n_freqs, n_mels, dtype=torch.float64)
    for m in range(n_mels):
        left, centre, right = pts[m], pts[m + 1], pts[m + 2]
        for i, f in enumerate(freqs):
            up = (f - left) / (centre - left)
            down = (right - f) / (right - centre)
            fb[i, m] = max(0.0, min(up, down))
    return fb.float()


def frontend(wave: torch.Tensor, window: torch.Tensor | None = None, fb: torch.Tensor | None = None,
             top_db: float = 120.0) -> torch.Tensor:
    """(B, n) 16 kHz -> (B, 64, T) dB mel, T = 1 + n // 160, the top_db floor over the whole batch.

    `window` / `fb`: the buffers the official module holds (its state dict's front_end.0.*); default the
    ones built here."""
    n_fft, hop = 512, 160
    window = hann_periodic(n_fft) if window is None else window
    fb = htk_mel_fb() if fb is None else fb
    padded = torch.nn.functional.pad(wave[:, None], (n_fft // 2, n_fft // 2), mode="reflect")[:, 0]
    t = 1 + wave.shape[1] // hop
    frames = torch.stack([padded[:, i * hop : i * hop + n_fft] for i in range(t)], dim=1)  # (B, T, 512)
    power = torch.fft.rfft(frames * window, dim=-1).abs() ** 2  # (B, T, 257)
    mel = (power @ fb).transpose(1, 2)  # (B, 64, T)
    db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
    return torch.maximum(db, db.max() - top_db)


def _ln(x, sd, p, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * sd[p + ".weight"] + sd[p + ".bias"]


def _attention(x, sd, p, heads, pad):
    b, n, c = x.shape
    hd = c // heads
    qkv = x @ sd[p + "qkv.weight"].T + sd[p + "qkv.bias"]  # (B, N, 3C): [q | k | v], heads inside each
    out = torch.zeros(b, n, c)
    for h in range(heads):
        q = qkv[:, :, h * hd : (h + 1) * hd]
        k = qkv[:, :, c + h * hd : c + (h + 1) * hd]
        v = qkv[:, :, 2 * c + h * hd : 2 * c + (h + 1) * hd]
        s = (q @ k.transpose(1, 2)) * hd ** -0.5
        if pad is not None:
            s = torch.where(pad[:, None, :], torch.tensor(torch.finfo(s.dtype).min), s)
        a = torch.nan_to_num(torch.softmax(s, dim=-1))
        out[:, :, h * hd : (h + 1) * hd] = a @ v
    return out @ sd[p + "proj.weight"].T + sd[p + "proj.bias"]


def dasheng_official(sd: dict, wave: torch.Tensor, heads: int, x_length: torch.Tensor | None = None):
    """Official state dict + (B, n) waves (+ sample lengths) -> (dB mel (B, 64, T), per-block outputs
    [(B, T', D)] * depth, final normed output (B, T', D))."""
    spec = frontend(wave, sd["front_end.0.spectrogram.window"], sd["front_end.0.mel_scale.fb"])  # loaded buffers
    bn = "init_bn.1."
    x = (spec - sd[bn + "running_mean"][:, None]) / torch.sqrt(sd[bn + "running_var"][:, None] + 1e-5)
    x = x * sd[bn + "weight"][:, None] + sd[bn + "bias"][:, None]
    b, f, t = x.shape
    tp = t // 4
    patches = x[:, :, : tp * 4].reshape(b, f, tp, 4)  # (B, 64, T', 4)
    w = sd["patch_embed.proj.weight"][:, 0]  # (D, 64, 4)
    tok = torch.einsum("bftk,dfk->btd", patches, w) + sd["patch_embed.proj.bias"]
    chunk = sd["time_pos_embed"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    pad = None
    if x_length is not None:
        valid = (x_length / (160 * 4)).long()
        pad = torch.arange(tp)[None, :] >= valid[:, None]
    layers = [[] for _ in range(depth)]
    finals = []
    for s in range(0, tp, chunk):
        xc = tok[:, s : s + chunk]
        xc = xc + sd["time_pos_embed"][0, :, 0, : xc.shape[1]].T + sd["freq_pos_embed"][0, :, 0, 0]
        pc = None if pad is None else pad[:, s : s + xc.shape[1]]
        for i in range(depth):
            p = f"blocks.{i}."
            xc = xc + _attention(_ln(xc, sd, p + "norm1"), sd, p + "attn.", heads, pc)
            h = _ln(xc, sd, p + "norm2") @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]
            h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))  # exact GELU
            xc = xc + h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
            layers[i].append(xc)
        finals.append(_ln(xc, sd, "norm"))
    return spec, [torch.cat(chunks, dim=1) for chunks in layers], torch.cat(finals, dim=1)


def official_state_dict(embed_dim: int, depth: int, chunk: int, seed: int = 0) -> dict:
    """A random state dict in the official layout (every key `Dasheng(**config).state_dict()` has with
    pooling='mean', qkv_bias=True, no LayerScale), BN stats away from identity."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, win_length=512, hop_length=160,
                                               f_min=0, f_max=8000, n_mels=64, center=True)
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=0.05: torch.randn(*s, generator=g) * scale
    d, h = embed_dim, 4 * embed_dim
    sd = {
        "time_pos_embed": r(1, d, 1, chunk, scale=0.5),
        "freq_pos_embed": r(1, d, 1, 1, scale=0.5),
        # the official module's buffers are torchaudio's (float32 arithmetic: ~5e-6 from htk_mel_fb above)
        "front_end.0.spectrogram.window": mel.spectrogram.window.clone(),
        "front_end.0.mel_scale.fb": mel.mel_scale.fb.clone(),
        "init_bn.1.weight": 1 + r(64, scale=0.2),
        "init_bn.1.bias": r(64, scale=0.2),
        "init_bn.1.running_mean": -40 + r(64, scale=10.0),
        "init_bn.1.running_var": 200 + torch.rand(64, generator=g) * 100,
        "init_bn.1.num_batches_tracked": torch.tensor(1000, dtype=torch.long),
        "patch_embed.proj.weight": r(d, 1, 64, 4),
        "patch_embed.proj.bias": r(d),
        "norm.weight": 1 + r(d),
        "norm.bias": r(d),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({
            p + "norm1.weight": 1 + r(d), p + "norm1.bias": r(d),
            p + "attn.qkv.weight": r(3 * d, d, scale=0.12), p + "attn.qkv.bias": r(3 * d),
            p + "attn.proj.weight": r(d, d, scale=0.12), p + "attn.proj.bias": r(d),
            p + "norm2.weight": 1 + r(d), p + "norm2.bias": r(d),
            p + "mlp.fc1.weight": r(h, d, scale=0.12), p + "mlp.fc1.bias": r(h),
            p + "mlp.fc2.weight": r(d, h, scale=0.12), p + "mlp.fc2.bias": r(d),
        })
    return sd

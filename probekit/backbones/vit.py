"""The audio ViT family: one encoder class for EAT, SSLAM and BAT (any width/depth).

EAT/SSLAM and BAT share one skeleton (docs/REFERENCE.md 1.1 and 6.1): 16x16 conv patches with bias over a
(frames, 128) spectrogram, time-major tokens (n = t * 8 + f), a fixed sin-cos table added to the patch
tokens only, one cls token prepended after the positional add, a LayerNorm over the whole sequence
("pre-norm"), then POST-LN blocks and no final norm. BAT's only difference inside a block is a sigmoid
gate on the attention output (`gated=True`).

Parameter names follow the BAT state dict exactly (`patch_embed.proj`, `pos_embed`, `cls_token`,
`pre_norm`, `blocks.{i}.{norm1,attn.qkv,attn.proj,attn.gate,norm2,mlp.fc1,mlp.fc2}`), so a BAT
checkpoint loads as-is and EAT/SSLAM keys are renamed once, by the formats in `probekit.backbones.eat`.

Attention kernel: on CPU (and whenever `attn_impl="explicit"`) the explicit formula
`softmax((q * hd^-0.5) @ k^T, fp32) @ v` runs, which reproduces the official modules bit for bit;
on CUDA with `attn_impl="auto"` torch's fused `scaled_dot_product_attention` runs (faster, differs
by ~1e-6 from the explicit formula).

The pretraining code (`probekit.pretrain`) reuses this class: `forward_features(x, keep_index=...)`
runs the student on the kept patch positions only, `forward_features(x)` returns every block's output
for the teacher targets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from probekit.backbones.protocol import LayerTokens
from probekit.errors import BackboneError

__all__ = ["AudioViT", "ViTConfig", "sincos_table"]

POS_LAYOUTS = ("eat", "bat")
ATTN_IMPLS = ("auto", "explicit", "sdpa")


@dataclass(frozen=True)
class ViTConfig:
    """Sizes and recipe of one audio ViT. Everything here changes the tokens (it keys the cache)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    # BAT multiplies the attention output by sigmoid(gate(x)) before the output projection.
    gated: bool = False
    # Only matters for random init: where the sin-cos table comes from. Loaded tables are used as stored.
    #   "eat": 2-D table over (time rows, 8 freq columns), row t*8+f encodes (f, t)  -> prefix rows [:N]
    #   "bat": flat table built for an (8, 64) grid, row n encodes (n % 64, n // 64) -> prefix rows [:N]
    pos_layout: str = "eat"
    # Rows in the positional table. EAT: 768 time rows * 8 = 6144 (12,288 frames); BAT: 512 (1,024 frames).
    pos_len: int = 6144
    # Longest sequence in time rows; longer inputs are split into independent chunks of this many rows
    # (BAT: 64 -> cls averaged over chunks, patches concatenated). None: the table's capacity
    # (pos_len // freq_patches), i.e. EAT's single sequence up to its table length.
    chunk_rows: int | None = None
    patch_size: int = 16
    num_mel_bins: int = 128
    norm_eps: float = 1e-6
    pre_norm: bool = True

    def __post_init__(self):
        if self.embed_dim <= 0 or self.depth <= 0 or self.num_heads <= 0:
            raise BackboneError(f"ViT sizes must be positive, got {self}")
        if self.embed_dim % self.num_heads:
            raise BackboneError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}",
                hint="pass num_heads that divides the width (default width // 64)",
            )
        if self.pos_layout not in POS_LAYOUTS:
            raise BackboneError(f"unknown pos_layout {self.pos_layout!r}; known: {', '.join(POS_LAYOUTS)}")
        if self.num_mel_bins % self.patch_size:
            raise BackboneError(f"num_mel_bins {self.num_mel_bins} is not a multiple of patch {self.patch_size}")
        if self.pos_len % self.freq_patches:
            raise BackboneError(f"pos_len {self.pos_len} is not a multiple of {self.freq_patches} frequency patches")
        if self.chunk_rows is not None and not 0 < self.chunk_rows <= self.max_rows:
            raise BackboneError(
                f"chunk_rows {self.chunk_rows} must be in 1..{self.max_rows} (the positional table holds "
                f"{self.max_rows} time rows)"
            )

    @property
    def freq_patches(self) -> int:
        return self.num_mel_bins // self.patch_size

    @property
    def max_rows(self) -> int:
        """Time rows the positional table covers."""
        return self.pos_len // self.freq_patches

    @property
    def window_rows(self) -> int:
        """Time rows per independent sequence (chunk)."""
        return self.chunk_rows or self.max_rows

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ViTConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise BackboneError(f"unknown ViT config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def sincos_table(embed_dim: int, rows: int, cols: int) -> torch.Tensor:
    """2-D sin-cos table (rows * cols, D) over a (rows, cols) grid, flattened row-major.

    Token n = r * cols + c. The first half of the channels encodes the column c, the second half the
    row r, each as [sin(p * w_k), cos(p * w_k)] with w_k = 10000^(-k / (D/4)) (the MAE recipe; float64
    here, rounded once to float32). EAT: rows = time, cols = 8 frequencies. BAT: rows = 8, cols = 64,
    which is why BAT's row n encodes (n % 64, n // 64).
    """
    if embed_dim % 4:
        raise BackboneError(f"embed_dim {embed_dim} must be a multiple of 4 for the sin-cos table")
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    n = torch.arange(rows * cols, dtype=torch.float64)
    col, row = n % cols, torch.div(n, cols, rounding_mode="floor")

    def enc(p):
        out = p[:, None] * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([enc(col), enc(row)], dim=1).float()


class PatchEmbed(nn.Module):
    def __init__(self, embed_dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 1, frames, 128) -> (B, D, T, F) -> (B, T*F, D): time-major, n = t * F + f
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, gated: bool, attn_impl: str = "auto"):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)  # rows [q; k; v], head h owns rows h*hd:(h+1)*hd of each
        self.proj = nn.Linear(dim, dim)
        self.gate = nn.Linear(dim, dim) if gated else None
        self.attn_impl = attn_impl

    def forward(self, x: torch.Tensor, num_queries: int = 0) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if num_queries:  # VQT: the first `num_queries` tokens read the sequence but are no keys/values
            k, v = k[:, :, num_queries:], v[:, :, num_queries:]
        fused = self.attn_impl == "sdpa" or (self.attn_impl == "auto" and x.is_cuda)
        if fused:
            # CUDA default: fused kernel (flash / memory-efficient); ~1e-6 from the explicit formula.
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            # CPU default: the official modules' formula, op for op (q scaled before q @ k^T, softmax in fp32).
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
            out = attn @ v
        out = out.transpose(1, 2).reshape(b, n, c)
        if self.gate is not None:
            out = out * self.gate(x).sigmoid()  # the gate reads the block input, not the attention output
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU, as timm's Mlp in EAT and BAT's own Mlp
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (the official ViT's DropPath, scale_by_keep): identity when p == 0 or in eval."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    if keep > 0.0:
        mask.div_(keep)
    return x * mask


class Block(nn.Module):
    """Post-LN transformer block: h = LN1(h + Attn(h)); h = LN2(h + MLP(h)).

    `drop_path` (a plain float, not in the state dict; 0 = off, the frozen default) is stochastic depth on
    both residual branches in training mode, as the official fine-tuning recipes use (`AudioViT.set_drop_path`).
    """

    drop_path: float = 0.0

    def __init__(self, cfg: ViTConfig, attn_impl: str = "auto"):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads, cfg.gated, attn_impl)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg.embed_dim, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_path and self.training:
            x = self.norm1(x + drop_path(self.attn(x), self.drop_path, True))
            return self.norm2(x + drop_path(self.mlp(x), self.drop_path, True))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class AudioViT(nn.Module):
    """One audio ViT encoder (EAT/SSLAM without gate, BAT with gate), sizes from `ViTConfig`.

    Args:
        config: sizes and recipe.
        attn_impl: "auto" (explicit formula on CPU, fused SDPA on CUDA), "explicit" or "sdpa".
        seed: seed of the initial weights (None: torch's global RNG).
        init: "default" (layer defaults, cls ~ N(0, 0.02^2)), "xavier" (BAT pretraining), or None to
            leave the weights uninitialised because a state dict is loaded next.
    """

    def __init__(
        self,
        config: ViTConfig,
        *,
        attn_impl: str = "auto",
        seed: int | None = None,
        init: str | None = "default",
    ):
        super().__init__()
        if attn_impl not in ATTN_IMPLS:
            raise BackboneError(f"unknown attn_impl {attn_impl!r}; known: {', '.join(ATTN_IMPLS)}")
        self.config = config
        d = config.embed_dim
        # Built on the meta device and initialised once below: ViT-B's 86M weights would otherwise be
        # drawn twice (layer defaults, then the seeded init), and not at all when a checkpoint follows.
        with torch.device("meta"):
            self.patch_embed = PatchEmbed(d, config.patch_size)
            self.cls_token = nn.Parameter(torch.empty(1, 1, d))
            self.pre_norm = nn.LayerNorm(d, eps=config.norm_eps) if config.pre_norm else nn.Identity()
            self.blocks = nn.ModuleList(Block(config, attn_impl) for _ in range(config.depth))
        self.to_empty(device="cpu")
        # Fixed (never trained) table; a persistent buffer so it travels with the state dict.
        self.register_buffer("pos_embed", self.default_pos_table(config).unsqueeze(0))
        if init is not None:
            self.init_weights(seed=seed, style=init)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def default_pos_table(cfg: ViTConfig) -> torch.Tensor:
        """The sin-cos table a fresh model starts from (checkpoints replace it with their stored one)."""
        fp = cfg.freq_patches
        if cfg.pos_layout == "eat":
            return sincos_table(cfg.embed_dim, cfg.pos_len // fp, fp)
        return sincos_table(cfg.embed_dim, fp, cfg.pos_len // fp)

    def init_weights(self, *, seed: int | None = None, style: str = "default") -> AudioViT:
        """(Re-)initialise every trainable weight, reproducibly when `seed` is given.

        style: "default" (PyTorch's layer defaults, cls ~ N(0, 0.02^2): the official ViT's random
        baseline) or "xavier" (xavier-uniform Linear weights with zero bias: BAT pretraining's init).
        The positional table is not touched.
        """
        if style not in ("default", "xavier"):
            raise BackboneError(f"unknown init style {style!r}; known: default, xavier")
        # A private generator: seeding never touches the caller's global (CPU or CUDA) random state.
        dev = self.cls_token.device
        g = torch.Generator(device=dev).manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    fan_in = m.weight[0].numel()
                    if style == "xavier" and isinstance(m, nn.Linear):
                        bound = math.sqrt(6.0 / (fan_in + m.weight.shape[0]))
                        m.weight.uniform_(-bound, bound, generator=g)
                        m.bias.zero_()
                    else:  # PyTorch's layer default: kaiming_uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in)), same for bias
                        bound = 1.0 / math.sqrt(fan_in)
                        m.weight.uniform_(-bound, bound, generator=g)
                        m.bias.uniform_(-bound, bound, generator=g)
                elif isinstance(m, nn.LayerNorm):
                    m.weight.fill_(1.0)
                    m.bias.zero_()
            self.cls_token.normal_(0.0, 0.02, generator=g)
        return self

    @property
    def num_layers(self) -> int:
        return self.config.depth

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def num_heads(self) -> int:
        return self.config.num_heads

    def set_drop_path(self, rate: float) -> None:
        """Stochastic depth rising linearly from 0 (first block) to `rate` (last), as the official ViT's
        `torch.linspace(0, drop_path_rate, depth)`; 0 switches it off. Acts only in training mode."""
        rates = [d.item() for d in torch.linspace(0, rate, self.config.depth)] if rate > 0 else [0.0] * self.config.depth
        for blk, r in zip(self.blocks, rates):
            blk.drop_path = float(r)

    def set_attn_impl(self, attn_impl: str) -> None:
        if attn_impl not in ATTN_IMPLS:
            raise BackboneError(f"unknown attn_impl {attn_impl!r}; known: {', '.join(ATTN_IMPLS)}")
        for blk in self.blocks:
            blk.attn.attn_impl = attn_impl

    # ------------------------------------------------------------------ building blocks
    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[3] != self.config.num_mel_bins:
            raise BackboneError(
                f"expected features of shape (B, 1, frames, {self.config.num_mel_bins}), got {tuple(x.shape)}"
            )
        if x.shape[2] < self.config.patch_size:
            raise BackboneError(
                f"{x.shape[2]} frames is shorter than one patch ({self.config.patch_size} frames)",
                hint="pad the spectrogram to at least one patch (frontends pad to a multiple of 16)",
            )

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, frames, 128) -> (B, T, F, D) patch embeddings without positions (frames floor-divided by 16)."""
        self._check_input(x)
        tok = self.patch_embed(x)
        return tok.reshape(x.shape[0], -1, self.config.freq_patches, self.config.embed_dim)

    def run_blocks(
        self, x: torch.Tensor, *, return_layers: bool = True, stop_after: int | None = None
    ) -> list[torch.Tensor] | torch.Tensor:
        """Pre-norm + blocks on a full sequence (cls first). Returns each block's output (LN2) or the last."""
        x = self.pre_norm(x)
        outs = []
        last = self.config.depth if stop_after is None else stop_after + 1
        for blk in self.blocks[:last]:
            x = blk(x)
            if return_layers:
                outs.append(x)
        return outs if return_layers else x

    def forward_features(
        self,
        x: torch.Tensor,
        keep_index: torch.Tensor | None = None,
        *,
        return_layers: bool = True,
    ) -> list[torch.Tensor] | torch.Tensor:
        """One sequence (no chunking): patches + positions, optional subset, cls, pre-norm, blocks.

        Args:
            x: (B, 1, frames, 128) features; frames // 16 time rows must fit the positional table.
            keep_index: optional (B, n) int64 indices into the N = T * F patch positions to keep (the
                student's visible patches). Gathered AFTER the positional add, as BAT's student does.
            return_layers: True -> list of L tensors (B, 1 + n, D), every block's LN2 output (cls at 0);
                False -> only the last block's output.
        """
        tok = self.patchify(x).flatten(1, 2)  # (B, N, D)
        n = tok.shape[1]
        if n > self.pos_embed.shape[1]:
            raise BackboneError(
                f"{n} patches exceed the positional table ({self.pos_embed.shape[1]} rows); "
                f"use encode() to process long inputs in chunks"
            )
        tok = tok + self.pos_embed[:, :n]
        if keep_index is not None:
            if keep_index.ndim != 2 or keep_index.shape[0] != tok.shape[0]:
                raise BackboneError(f"keep_index must be (B, n) with B={tok.shape[0]}, got {tuple(keep_index.shape)}")
            idx = keep_index.to(tok.device, torch.long).unsqueeze(-1).expand(-1, -1, tok.shape[2])
            tok = torch.gather(tok, 1, idx)
        seq = torch.cat([self.cls_token.expand(tok.shape[0], -1, -1).to(tok.dtype), tok], dim=1)
        return self.run_blocks(seq, return_layers=return_layers)

    def forward(self, x: torch.Tensor, keep_index: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Alias of `forward_features(x, keep_index)` (all block outputs), so the module can be wrapped (DDP)."""
        return self.forward_features(x, keep_index, return_layers=True)

    # ------------------------------------------------------------------ probing view
    def encode(
        self,
        features: torch.Tensor,
        valid_frames: torch.Tensor | None = None,
        *,
        layers: Sequence[int] | None = None,
    ) -> LayerTokens:
        """Per-layer tokens for probing, chunked like the official code.

        Time rows are split into windows of `config.window_rows` (BAT: 64). Every window is an independent
        sequence with its own cls copy and positions `pos_embed[:, :n_window]` (the last window is not
        padded); patch tokens are concatenated along time and cls tokens averaged (unweighted) over
        windows — the official BAT `extract_features_with_patch_tokens`. With one window this is EAT's
        single-sequence forward.

        Args:
            features: (B, 1, frames, 128).
            valid_frames: (B,) frames holding real audio (the rest is padding); default all.
            layers: optional 0-based block indices to return (computation stops after the deepest).

        Returns:
            LayerTokens with patch (B, L, N, D), cls (B, L, D), grid (T, F), valid_rows (B,).
        """
        cfg = self.config
        layer_idx = list(range(cfg.depth)) if layers is None else [int(i) % cfg.depth for i in layers]
        if layers is not None and any(not -cfg.depth <= int(i) < cfg.depth for i in layers):
            raise BackboneError(f"layer indices {list(layers)} out of range for {cfg.depth} blocks")
        grid = self.patchify(features)  # (B, T, F, D)
        b, t, fp, d = grid.shape
        w = cfg.window_rows
        # Windows of equal length run as one batch (same math per sample); a shorter tail runs alone.
        n_full, tail = divmod(t, w)
        pieces = []  # (rows, tensor (B*k, rows*F, D))
        if n_full:
            full = grid[:, : n_full * w].reshape(b, n_full, w * fp, d).transpose(0, 1).reshape(n_full * b, w * fp, d)
            pieces.append((n_full, w, full))
        if tail:
            pieces.append((1, tail, grid[:, n_full * w :].reshape(b, tail * fp, d)))
        stop = max(layer_idx)
        patch_parts, cls_sum = [], None
        for k, rows, tok in pieces:
            tok = tok + self.pos_embed[:, : rows * fp]
            seq = torch.cat([self.cls_token.expand(tok.shape[0], -1, -1).to(tok.dtype), tok], dim=1)
            outs = self.run_blocks(seq, return_layers=True, stop_after=stop)
            sel = torch.stack([outs[i] for i in layer_idx], dim=1)  # (k*B, Ls, 1 + rows*F, D)
            sel = sel.reshape(k, b, len(layer_idx), 1 + rows * fp, d)
            cls = sel[:, :, :, 0].sum(0)  # (B, Ls, D)
            cls_sum = cls if cls_sum is None else cls_sum + cls
            # windows back to time order: (k, B, Ls, rows*F, D) -> (B, Ls, k*rows*F, D)
            patch_parts.append(sel[:, :, :, 1:].permute(1, 2, 0, 3, 4).reshape(b, len(layer_idx), k * rows * fp, d))
        n_windows = n_full + (1 if tail else 0)
        patch = patch_parts[0] if len(patch_parts) == 1 else torch.cat(patch_parts, dim=2)
        cls = cls_sum / n_windows
        valid_rows = patch_rows(valid_frames, b, t, cfg.patch_size)
        return LayerTokens(patch=patch, cls=cls, grid=(t, fp), valid_rows=valid_rows)

    # ------------------------------------------------------------------ query tuning (VQT)
    def encode_queries(self, features: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual query tuning (the official BAT `extract_vqt_features`): block i reads `queries[i]`
        (q tokens) prepended to its input; they attend to the sequence but are no keys/values of anyone,
        so the cls/patch outputs equal the plain forward's. Each block's query outputs are dropped before
        the next block. Windows as `encode`; queries and cls are averaged over windows.

        Args:
            features: (B, 1, frames, 128).
            queries: (L, q, D) or (B, L, q, D) (per-sample, e.g. after dropout); gradients flow to them.

        Returns:
            (B, L, q, D) each block's query outputs and (B, D) the last block's cls token.
        """
        cfg = self.config
        grid = self.patchify(features)  # (B, T, F, D)
        b, t, fp, d = grid.shape
        if queries.ndim == 3:
            queries = queries.unsqueeze(0).expand(b, -1, -1, -1)
        if queries.shape[0] != b or queries.shape[1] != cfg.depth or queries.shape[3] != d:
            raise BackboneError(f"queries must be (L={cfg.depth}, q, D={d}) or (B={b}, L, q, D), "
                                f"got {tuple(queries.shape)}")
        nq = queries.shape[2]
        w = cfg.window_rows
        n_full, tail = divmod(t, w)
        pieces = []  # (windows, rows, (windows*B, rows*F, D)), window-major as encode
        if n_full:
            full = grid[:, : n_full * w].reshape(b, n_full, w * fp, d).transpose(0, 1).reshape(n_full * b, w * fp, d)
            pieces.append((n_full, w, full))
        if tail:
            pieces.append((1, tail, grid[:, n_full * w :].reshape(b, tail * fp, d)))
        q_sum, cls_sum = None, None
        for k, rows, tok in pieces:
            tok = tok + self.pos_embed[:, : rows * fp]
            x = self.pre_norm(torch.cat([self.cls_token.expand(tok.shape[0], -1, -1).to(tok.dtype), tok], dim=1))
            outs = []
            for i, blk in enumerate(self.blocks):
                qi = queries[:, i].to(x.dtype).repeat(k, 1, 1)  # the same queries in every window
                x = torch.cat([qi, x], dim=1)
                x = blk.norm1(x + blk.attn(x, num_queries=nq))  # Block.forward with keys/values excluding queries
                x = blk.norm2(x + blk.mlp(x))
                outs.append(x[:, :nq])
                x = x[:, nq:]
            qo = torch.stack(outs, dim=1).reshape(k, b, cfg.depth, nq, d).sum(0)
            cls = x[:, 0].reshape(k, b, d).sum(0)
            q_sum = qo if q_sum is None else q_sum + qo
            cls_sum = cls if cls_sum is None else cls_sum + cls
        n_windows = n_full + (1 if tail else 0)
        return q_sum / n_windows, cls_sum / n_windows


def patch_rows(valid_frames, b: int, t: int, patch_size: int) -> torch.Tensor:
    """(B,) patch rows holding real audio, out of `t`, from each clip's valid frame count (None: all)."""
    if valid_frames is None:
        return torch.full((b,), t, dtype=torch.long)
    vf = torch.as_tensor(valid_frames, dtype=torch.long).reshape(-1).cpu()
    if vf.shape[0] != b:
        raise BackboneError(f"valid_frames has {vf.shape[0]} entries for a batch of {b}")
    # a row holds real audio when any of its 16 frames does (the tokens are those of the padded input)
    return torch.clamp(torch.div(vf + patch_size - 1, patch_size, rounding_mode="floor"), 0, t)


def count_params(module: nn.Module) -> int:
    """Trainable-weight count (the fixed positional table is a buffer and not counted)."""
    return sum(p.numel() for p in module.parameters())


def infer_mlp_ratio(hidden: int, dim: int) -> float:
    ratio = hidden / dim
    return float(ratio) if not math.isclose(ratio, round(ratio)) else float(round(ratio))


def vit_param_count(cfg: ViTConfig) -> int:
    """Trainable weights of an AudioViT with this config, without building it (for registry cards)."""
    d, h, p = cfg.embed_dim, cfg.mlp_hidden, cfg.patch_size
    per_block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * h + h) + (h * d + d)
    if cfg.gated:
        per_block += d * d + d
    return d * p * p + d + d + (2 * d if cfg.pre_norm else 0) + cfg.depth * per_block

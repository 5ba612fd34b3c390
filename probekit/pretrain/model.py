"""BAT's student, decoder, EMA teacher, targets and losses (REFERENCE.md section 6.3).

    student:  AudioViT on the kept patches of each view (+ cls) -> decoder -> prediction at all N patches
    teacher:  EMA copy of the student's encoder on the clean clip -> all L end-of-block outputs -> targets
    loss:     global (student cls vs mean target token) + local (prediction vs target on masked patches), 1:1

The encoder is probekit's own audio ViT (`probekit.backbones.vit.AudioViT`), the very module the BAT
backbone runs at evaluation time, so a pretrained encoder state dict loads there without any key mapping.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from probekit.backbones.vit import AudioViT, Block, ViTConfig, sincos_table
from probekit.pretrain.config import BAT_TABLE_ROWS, PretrainConfig
from probekit.pretrain.masking import ViewMasks
from probekit.train.schedule import warmup_cosine


def encoder_config(cfg: PretrainConfig) -> ViTConfig:
    """The BAT ViTConfig of a pretraining config: gated attention, BAT's flat (8, 64) positional table.

    The table is the one the BAT backbone uses at evaluation (512 rows, prefix-sliced, 64-row chunks), so
    tiny configs with fewer frames train on exactly the positions their checkpoint is later probed with.
    """
    e = cfg.encoder
    fp = e.n_mels // e.patch_size
    return ViTConfig(
        embed_dim=e.dim,
        depth=e.depth,
        num_heads=e.num_heads,
        mlp_ratio=e.mlp_ratio,
        gated=True,
        pos_layout="bat",
        pos_len=BAT_TABLE_ROWS * fp,
        chunk_rows=BAT_TABLE_ROWS,
        patch_size=e.patch_size,
        num_mel_bins=e.n_mels,
    )


def build_encoder(cfg: PretrainConfig) -> AudioViT:
    """The student encoder of a config (BAT: gated attention, post-LN blocks, pre-norm, cls)."""
    return AudioViT(encoder_config(cfg))


class BatDecoder(nn.Module):
    """Predicts the teacher's targets at every patch from the kept patches' encoder outputs.

    Mask tokens fill all N positions, the encoder outputs are scattered back to their positions, a
    TRAINABLE 2-D sin-cos table is added, then post-LN gated blocks (no cls, no pre-norm) and a bias-free
    output projection back to the encoder width.
    """

    def __init__(
        self, *, grid: tuple[int, int], in_dim: int, dim: int, depth: int, num_heads: int, mlp_ratio: float
    ):
        super().__init__()
        t, f = grid
        self.grid = grid
        self.num_patches = t * f
        # The official decoder builds its table for a (freq, time) grid: row n encodes (n % T, n // T).
        self.pos_embed = nn.Parameter(sincos_table(dim, f, t).unsqueeze(0), requires_grad=True)
        self.mask_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.in_proj = nn.Linear(in_dim, dim, bias=False) if in_dim != dim else nn.Identity()
        # The encoder's own post-LN gated block, at the decoder's sizes.
        block_cfg = ViTConfig(
            embed_dim=dim, depth=max(depth, 1), num_heads=num_heads, mlp_ratio=mlp_ratio, gated=True
        )
        self.blocks = nn.ModuleList([Block(block_cfg) for _ in range(depth)])
        self.out_proj = nn.Linear(dim, in_dim, bias=False)

    def forward(self, kept: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """kept: (V, K, D_enc) encoder patch outputs; ids_keep: (V, K) -> (V, N, D_enc) predictions."""
        x = self.in_proj(kept)
        v, _, d = x.shape
        full = self.mask_token.to(x.dtype).expand(v, self.num_patches, d)
        x = full.scatter(1, ids_keep.unsqueeze(-1).expand(-1, -1, d), x)
        x = x + self.pos_embed.to(x.dtype)
        for blk in self.blocks:
            x = blk(x)
        return self.out_proj(x)


class BatStudent(nn.Module):
    """Encoder (kept patches + cls) and decoder; the module that the optimizer trains (and DDP wraps)."""

    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        self.encoder = build_encoder(cfg)
        d = cfg.decoder
        self.decoder = BatDecoder(
            grid=cfg.grid,
            in_dim=cfg.encoder.dim,
            dim=d.dim,
            depth=d.depth,
            num_heads=d.num_heads,
            mlp_ratio=d.mlp_ratio,
        )
        # Official init: xavier-uniform on every Linear of encoder and decoder, zero biases; the conv patch
        # embedding and LayerNorms keep torch's defaults; cls/mask tokens N(0, 0.02^2).
        self.apply(_xavier_linear)

    def forward(self, views: torch.Tensor, ids_keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """views: (V, 1, frames, n_mels); ids_keep (V, K) -> student cls (V, D), predictions (V, N, D)."""
        out = self.encoder.forward_features(views, ids_keep, return_layers=False)  # (V, 1 + K, D)
        return out[:, 0], self.decoder(out[:, 1:], ids_keep)


def _xavier_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def make_teacher(student_encoder: nn.Module) -> nn.Module:
    """A frozen copy of the student encoder (the EMA teacher starts equal to the student)."""
    teacher = copy.deepcopy(student_encoder)
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher <- decay * teacher + (1 - decay) * student for every parameter; buffers are copied.

    The only buffer of the encoder is the fixed positional table, identical in both; copying keeps it
    bit-exact where averaging a tensor with itself would drift by rounding.
    """
    t_params = list(teacher.parameters())
    s_params = list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError(f"teacher has {len(t_params)} parameters, student {len(s_params)}")
    for t, s in zip(t_params, s_params):
        t.mul_(decay).add_(s.detach(), alpha=1.0 - decay)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(s)


def make_targets(layer_outputs: list[torch.Tensor] | torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Teacher targets from the patch outputs of all L blocks, (L, B, N, D) or a list of (B, N, D).

    Each layer is instance-normalised over the tokens (per channel, biased variance, eps 1e-6), the layers
    are averaged, and each token is then normalised over its channels (parameter-free layer norm).
    """
    y = torch.stack(list(layer_outputs)) if isinstance(layer_outputs, (list, tuple)) else layer_outputs
    y = y.float()
    mean = y.mean(dim=2, keepdim=True)
    var = y.var(dim=2, correction=0, keepdim=True)
    y = ((y - mean) / torch.sqrt(var + eps)).mean(dim=0)
    mean = y.mean(dim=-1, keepdim=True)
    var = y.var(dim=-1, correction=0, keepdim=True)
    return (y - mean) / torch.sqrt(var + eps)


@torch.no_grad()
def teacher_targets(teacher: AudioViT, clean: torch.Tensor) -> torch.Tensor:
    """(B, 1, frames, n_mels) clean clips -> (B, N, D) float32 targets."""
    return make_targets([y[:, 1:].float() for y in teacher.forward_features(clean)])


def bat_losses(
    student_cls: torch.Tensor,
    predictions: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    num_views: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global and local losses (float32), each a scalar; the training loss is their sum.

    student_cls: (B*V, D); predictions: (B*V, N, D); targets: (B, N, D), one per clip (views of a clip are
    consecutive rows); mask: (B*V, N), 1 on the patches hidden from the student.
    """
    targets = targets.float().repeat_interleave(num_views, dim=0)
    global_loss = (student_cls.float() - targets.mean(dim=1)).pow(2).mean()
    per_token = (predictions.float() - targets).pow(2).mean(dim=-1)
    mask = mask.to(per_token.dtype)
    local_loss = (per_token * mask).sum() / mask.sum()
    return global_loss, local_loss


def forward_losses(
    student: nn.Module,
    teacher: AudioViT,
    clean: torch.Tensor,
    masks: ViewMasks,
    num_views: int,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One micro-batch: student on the masked views, teacher on the clean clips -> (global, local) losses.

    clean: (B, 1, frames, n_mels); masks: B * num_views rows (views of a clip consecutive).
    """
    device = clean.device
    views = clean.repeat_interleave(num_views, dim=0)
    ctx = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    with ctx:
        cls, pred = student(views, masks.ids_keep)
        with torch.no_grad():
            layers = teacher.forward_features(clean)
    targets = make_targets([y[:, 1:].float() for y in layers])
    return bat_losses(cls, pred, targets, masks.mask, num_views)


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate of optimizer step `step` (0-based): `probekit.train.schedule.warmup_cosine` (linear
    warmup from 0 floored at min_lr, then half-cosine to 0 at `total_steps`, floored) under the config's names."""
    return warmup_cosine(step, peak=lr, floor=min_lr, warmup=warmup_steps, total=total_steps)


def ema_decay_at(step: int, *, decay_start: float, decay_end: float, warmup_steps: int) -> float:
    """EMA decay used after optimizer step `step` (0-based): linear start -> end over warmup_steps, then end."""
    if warmup_steps <= 1:
        return decay_end
    frac = min(step, warmup_steps - 1) / (warmup_steps - 1)
    return decay_start + (decay_end - decay_start) * frac

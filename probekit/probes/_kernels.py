"""Memory-lean autograd paths for prototype probes (CGP, Protobin, LinearCGP).

The plain formula `S = z @ P^T` builds a (B, N, K) similarity tensor (327 MB for B=16, N=512, K=10,000)
and its backward builds a dense gradient of the same size plus two more matmuls. But the gradient of
`min_n S` / `max_n S` reaches only the arg-min / arg-max token, so:

- `extreme_similarity` computes min/max (and their indices) chunked over prototypes, keeps only the
  indices (O(B*K)) for backward, and the backward is two sparse-dense products with one non-zero per
  (b, k): O(B*K*D) work instead of O(B*N*K*D).
- `gated_normalized_sum` mixes l2-normalised layers with softmax gates without saving the normalised
  copy of every layer (O(B*L*N*D)); it keeps only the inverse token norms (B, L, N).

Both equal autograd of the plain formula (tests/probes/test_kernels.py).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

# Working-set budget (elements) of one forward chunk. 4M float32 = 16 MB: small next to the plain (B, N, K)
# tensor, large enough that the per-chunk matmul stays efficient.
FORWARD_CHUNK_ELEMS = 4 * 1024 * 1024


def _chunk(budget: int, per_item: int) -> int:
    return max(1, budget // max(1, per_item))


class _ExtremeSimilarity(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, z: Tensor, p: Tensor, want_min: bool):
        B, N, _ = z.shape
        K = p.shape[0]
        out_dtype = torch.promote_types(z.dtype, p.dtype)
        mx = torch.empty(B, K, dtype=out_dtype, device=z.device)
        amx = torch.empty(B, K, dtype=torch.long, device=z.device)
        mn = torch.empty(B, K if want_min else 0, dtype=out_dtype, device=z.device)
        amn = torch.empty(B, K if want_min else 0, dtype=torch.long, device=z.device)
        zt = z.transpose(
            1, 2
        )  # (B, D, N): the chunk similarity comes out (B, k, N), reduced over its last dim
        step = _chunk(FORWARD_CHUNK_ELEMS, B * N)
        for s in range(0, K, step):
            e = min(K, s + step)
            # (B, k, N) written directly in this layout (a broadcast matmul would transpose-copy it)
            sim = torch.bmm(p[s:e].unsqueeze(0).expand(B, -1, -1), zt)
            v, i = sim.max(dim=-1)
            mx[:, s:e] = v
            amx[:, s:e] = i
            if want_min:
                v, i = sim.min(dim=-1)
                mn[:, s:e] = v
                amn[:, s:e] = i
            del sim
        ctx.want_min = want_min
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(z, p, amx, amn)
        ctx.mark_non_differentiable(amx, amn)
        return mx, mn, amx, amn

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g_mx, g_mn, _g_amx, _g_amn):
        z, p, amx, amn = ctx.saved_tensors
        need_z, need_p = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        B, N, D = z.shape
        K = p.shape[0]
        dtype = torch.promote_types(z.dtype, p.dtype)
        terms = [(g, a) for g, a in ((g_mx, amx), (g_mn if ctx.want_min else None, amn)) if g is not None]
        if not terms or not (need_z or need_p):
            return None, None, None
        # The gradient is a sparse (B*N) x K matrix M with one entry per (b, k, term): M[b*N + n*, k] = g[b, k]
        # at the winning token n*. dL/dz = M @ P and dL/dP = M^T @ z: sparse products with 2*B*K non-zeros.
        row0 = (torch.arange(B, device=z.device) * N)[:, None]
        rows = torch.cat([(a + row0).reshape(-1) for _, a in terms])
        cols = torch.arange(K, device=z.device).repeat(B * len(terms))
        vals = torch.cat([g.reshape(-1) for g, _ in terms]).to(dtype)
        gz = gp = None
        # autocast off: the sparse products run in the full-precision dtype (no bf16 sparse kernels)
        with warnings.catch_warnings(), torch.autocast(device_type=z.device.type, enabled=False):
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            m = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (B * N, K), check_invariants=False)
            m = m.coalesce()  # sorts and sums duplicates (min and max at the same token)
            if need_z:
                gz = (m.to_sparse_csr() @ p.to(dtype)).view(B, N, D).to(z.dtype)
            if need_p:
                gp = (m.t().to_sparse_csr() @ z.reshape(B * N, D).to(dtype)).to(p.dtype)
        return gz, gp, None


def extreme_similarity(z: Tensor, p: Tensor, *, want_min: bool = True) -> tuple[Tensor, Tensor | None]:
    """min_n and max_n of `z @ p^T` without keeping the (B, N, K) similarity tensor.

    Args:
        z: (B, N, D) tokens. p: (K, D) prototypes.
        want_min: also return the minimum (CGP); Protobin needs only the maximum.

    Returns:
        (max (B, K), min (B, K) or None). Gradients flow to the arg-max/arg-min token only, exactly as
        autograd of `(z @ p.T).max(1).values` does (the same torch reduction picks the same index).
    """
    mx, mn, _, _ = _ExtremeSimilarity.apply(z, p, want_min)
    return mx, (mn if want_min else None)


class _GatedNormalizedSum(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x: Tensor, a: Tensor):
        # x (B, L, ..., D) raw tokens, a (L,) convex weights -> sum_l a_l * x_l / max(|x_l|, 1e-12)
        # (F.normalize's eps). Only the inverse norms (B, L, ...) are kept for backward.
        inv = torch.linalg.vector_norm(x, dim=-1).clamp_min(1e-12).reciprocal()
        out = torch.zeros_like(x[:, 0])
        for layer in range(x.shape[1]):
            out.addcmul_(x[:, layer], (inv[:, layer] * a[layer]).unsqueeze(-1))
        ctx.save_for_backward(x, a, inv)
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g: Tensor):
        x, a, inv = ctx.saved_tensors
        need_x, need_a = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = torch.zeros_like(x) if need_x else None
        ga = torch.zeros_like(a) if need_a else None
        for layer in range(x.shape[1]):
            if need_a:
                # d/da_l = sum <g, x_l / |x_l|>
                ga[layer] = (torch.linalg.vecdot(g, x[:, layer]) * inv[:, layer]).sum()
            if need_x:
                with torch.enable_grad():
                    xl = x[:, layer].detach().requires_grad_(True)
                    zl = F.normalize(xl, dim=-1)
                (gx[:, layer],) = torch.autograd.grad(zl, xl, g * a[layer])
        return gx, ga


def gated_normalized_sum(x: Tensor, a: Tensor) -> Tensor:
    """sum_l a[l] * l2norm(x[:, l], dim=-1) for x (B, L, ..., D) without storing every normalised layer."""
    return _GatedNormalizedSum.apply(x, a)


class _RowNormalize(torch.autograd.Function):
    """F.normalize(w, dim=1) (eps 1e-12), optionally of the straight-through binarisation of w; backward
    (g - out <out, g>) / |.| with one temporary instead of autograd's chain of (K, D) intermediates."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, w: Tensor, binarize: bool):
        x = torch.where(w >= 0, 1.0, -1.0).to(w.dtype) if binarize else w
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        clamped = norm < 1e-12
        norm = norm.clamp_min(1e-12)
        out = x / norm
        ctx.save_for_backward(out, norm, clamped)
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g: Tensor):
        out, norm, clamped = ctx.saved_tensors
        # d out / d x for out = x / max(|x|, eps); the straight-through estimator passes it on to w unchanged
        dot = torch.linalg.vecdot(g, out).unsqueeze(1)
        dot = dot.masked_fill(clamped, 0.0)  # where the norm was clamped the map is linear: g / eps
        return torch.addcmul(g, out, dot, value=-1).div_(norm), None


def normalize_rows(w: Tensor) -> Tensor:
    """F.normalize(w, dim=1), memory-lean backward."""
    return _RowNormalize.apply(w, False)


def binarize_normalize_rows(w: Tensor) -> Tensor:
    """F.normalize(sign(w) + (w - w.detach()), dim=1) with sign(0) := +1 (Protobin), memory-lean."""
    return _RowNormalize.apply(w, True)

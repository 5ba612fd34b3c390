"""The heads of issue 17 against independent re-derivations of the official code, in float64: outputs,
parameter gradients (and BatchNorm running statistics) to <= 1e-10.

Official sources re-derived (math re-written here, not copied):
  * h2t: houtan-ghaffari/BAT_ICML2026 @ cc92282, models/heads.py (Head2Toe, compute_group_lasso_penalty),
    engine/trainer.py (loss + lasso_weight * penalty).
  * simpool, ep, aim, abmilp: billpsomas/efficient-probing @ b8f4fb8, poolings/{simpool,ep,aim,abmilp}.py,
    models_vit.py (Attention), probe_heads.py (pool -> BatchNorm1d(affine=False, eps=1e-6) -> Linear).
  * proto (upsample): DBD-research-group/Bird-MAE @ a514ef5, models/vit/vit.py (VIT_ppnet.forward_features:
    permute(0, 2, 1).reshape(B, D, 8, N // 8)), models/ppnet/ppnet.py (nn.Upsample(scale_factor=2,
    mode="bilinear"), cos_activation). The upsampling is re-derived with explicit 0.75/0.25 weights.
  * linpre: the unmute paper's description (its code base was not available): per-token linear, max.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from probekit.errors import ProbeError
from probekit.probes import make_probe
from probekit.tokens import TokenBatch

B, L, T, FQ, D, C = 3, 4, 5, 2, 16, 6
N = T * FQ
TOL = 1e-10


@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(0)
    patch = torch.randn(B, L, N, D, generator=g, dtype=torch.float64)
    cls = torch.randn(B, L, D, generator=g, dtype=torch.float64)
    return patch, cls


def official_layout(patch, cls):
    """probekit (B, L, N, D) / (B, L, D) -> BAT's feat_cache (L, B, D, T, F) / (L, B, D)."""
    return patch.permute(1, 0, 3, 2).reshape(patch.shape[1], patch.shape[0], D, T, FQ), cls.permute(1, 0, 2)


def seq(x5):
    """(B, D, T, F) of one layer -> the ViT token sequence (B, N, D), time-major."""
    return x5.flatten(2).transpose(1, 2)


def rel(a, b):
    """Relative error; absolute where the reference is zero up to rounding (the gradient of a bias that a
    softmax over tokens cancels, e.g. ABMILP's last scorer bias, is ~1e-17 on both sides)."""
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / (scale if scale > 1e-12 else 1.0)


def run_both(probe, tokens, official_fn, *, training=False):
    """Forward + backward of the probe and of official_fn(params, buffers, patch5, cls3, training) with the
    same parameters; returns the largest relative error (outputs, gradients, updated buffers)."""
    patch, cls = tokens
    probe = probe.double().train(training)
    layers = torch.as_tensor(probe.request.resolve(patch.shape[1]))
    batch = TokenBatch(patch[:, layers], cls[:, layers], torch.zeros(B), torch.zeros(B), torch.arange(B))
    buffers = {n: b.detach().clone() for n, b in probe.named_buffers()}
    ours = probe(batch)
    up = torch.randn(ours.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    loss = (ours * up).sum()
    extra = probe.extra_loss()
    if extra is not None:
        loss = loss + extra
    loss.backward()
    params = {n: p.detach().clone().requires_grad_() for n, p in probe.named_parameters()}
    patch5, cls3 = official_layout(patch, cls)
    ref, ref_extra = official_fn(params, buffers, patch5, cls3, training)
    ((ref * up).sum() + (0 if ref_extra is None else ref_extra)).backward()
    errs = [rel(ours, ref)]
    for n, p in probe.named_parameters():
        assert params[n].grad is not None, n
        errs.append(rel(p.grad, params[n].grad))
    for n, b in probe.named_buffers():  # running statistics move the same way
        if b.is_floating_point():
            errs.append(rel(b, buffers[n]))
    assert max(errs) <= TOL, errs
    return max(errs)


def bn(x, Bf, prefix, training):
    """The official non-affine BatchNorm1d(eps 1e-6, momentum 0.1) on (B, W) or (B, W, N); updates Bf."""
    return F.batch_norm(x, Bf[f"{prefix}running_mean"], Bf[f"{prefix}running_var"], None, None,
                        training=training, momentum=0.1, eps=1e-6)


def randomize_bn(probe):
    """Non-trivial running statistics, so evaluation-mode normalisation is really compared."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in probe.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


# ---- Head2Toe (BAT) ------------------------------------------------------------------------------------
def bat_h2t(use_cls, layer_wise, lasso_weight):
    def f(P, Bf, x_patch, x_cls, training):
        if use_cls:
            x = x_cls.permute(1, 0, 2).flatten(1)
        else:
            x = x_patch.flatten(3).mean(dim=3).permute(1, 0, 2).flatten(1)
        x = F.layer_norm(x, (L * D,), P["ln.weight"], P["ln.bias"], eps=1e-6)
        logits = F.linear(x, P["fc.weight"], P["fc.bias"])
        w = P["fc.weight"]
        group_size = D if layer_wise else C
        scale = torch.tensor(group_size, dtype=torch.float32).sqrt()  # the official float32 buffer
        if layer_wise:
            penalty = 0.0
            for w_g in torch.split(w, group_size, dim=1):
                penalty = penalty + torch.linalg.matrix_norm(w_g + 1e-8)
        else:
            penalty = torch.linalg.vector_norm(w, dim=0).sum()
        return logits, lasso_weight * (penalty * scale)

    return f


@pytest.mark.parametrize("use_cls,layer_wise", [(True, False), (True, True), (False, False), (False, True)])
def test_h2t_matches_bat(tokens, use_cls, layer_wise):
    probe = make_probe("h2t", num_layers=L, embed_dim=D, num_classes=C, pooling="cls" if use_cls else "mean",
                       layer_wise_lasso=layer_wise, lasso_weight=0.37, seed=0)
    with torch.no_grad():
        probe.ln.weight.normal_()
        probe.ln.bias.normal_()
    assert probe.request.resolve(L) == tuple(range(L))
    run_both(probe, tokens, bat_h2t(use_cls, layer_wise, 0.37))


def test_h2t_penalty_is_the_official_value():
    probe = make_probe("h2t", num_layers=L, embed_dim=D, num_classes=C, seed=0).double()
    w = probe.fc.weight.detach()
    expected = w.norm(dim=0).sum() * float(torch.tensor(float(C), dtype=torch.float32).sqrt())
    assert abs(probe.group_lasso_penalty().item() - expected.item()) <= 1e-12 * expected.item()
    assert abs(probe.extra_loss().item() - 1e-4 * expected.item()) <= 1e-12 * expected.item()
    assert make_probe("h2t", num_layers=L, embed_dim=D, num_classes=C, lasso_weight=0.0).extra_loss() is None


# ---- efficient-probing heads -------------------------------------------------------------------------
def tail(P, Bf, pooled, training):
    return F.linear(bn(pooled, Bf, "bn.", training), P["fc.weight"], P["fc.bias"]), None


def ep_simpool(heads):
    def f(P, Bf, x_patch, x_cls, training):
        x = seq(x_patch[-1])
        Bq, Nk, d = x.shape
        gap_cls = x.mean(-2).unsqueeze(1)
        xn = F.layer_norm(x, (d,), P["norm.weight"], P["norm.bias"], eps=1e-6)
        q, k, v = gap_cls, xn, xn
        qq = F.linear(q, P["wq.weight"]).reshape(Bq, 1, heads, d // heads).permute(0, 2, 1, 3)
        kk = F.linear(k, P["wk.weight"]).reshape(Bq, Nk, heads, d // heads).permute(0, 2, 1, 3)
        vv = v.reshape(Bq, Nk, heads, d // heads).permute(0, 2, 1, 3)
        attn = ((qq @ kk.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(dim=-1)
        pooled = (attn @ vv).transpose(1, 2).reshape(Bq, 1, d).squeeze(1)
        return tail(P, Bf, pooled, training)

    return f


def ep_efficient(num_queries, d_out):
    def f(P, Bf, x_patch, x_cls, training):
        x = seq(x_patch[-1])
        Bq, Nk, Cd = x.shape
        q = P["query"].expand(Bq, -1, -1).reshape(Bq, num_queries, 1, Cd).permute(0, 2, 1, 3)
        k = x.reshape(Bq, Nk, 1, Cd).permute(0, 2, 1, 3)
        q = q * Cd**-0.5
        v = F.linear(x, P["v.weight"]).reshape(Bq, Nk, num_queries, Cd // (d_out * num_queries))
        v = v.permute(0, 2, 1, 3)
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        pooled = torch.matmul(attn.squeeze(1).unsqueeze(2), v).reshape(Bq, Cd // d_out)
        return tail(P, Bf, pooled, training)

    return f


def ep_aim(heads, num_queries):
    def f(P, Bf, x_patch, x_cls, training):
        x = seq(x_patch[-1])
        Bq, Nk, Cd = x.shape
        x = bn(x.transpose(-2, -1), Bf, "token_bn.", training).transpose(-2, -1)
        q = P["query"].expand(Bq, -1, -1).reshape(Bq, num_queries, heads, Cd // heads).permute(0, 2, 1, 3)
        k = F.linear(x, P["k.weight"]).reshape(Bq, Nk, heads, Cd // heads).permute(0, 2, 1, 3)
        q = q * (Cd // heads) ** -0.5
        v = F.linear(x, P["v.weight"]).reshape(Bq, Nk, heads, Cd // heads).permute(0, 2, 1, 3)
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        pooled = (attn @ v).transpose(1, 2).reshape(Bq, num_queries, Cd).mean(dim=1)
        return tail(P, Bf, pooled, training)

    return f


def ep_abmilp(sa, depth):
    def f(P, Bf, x_patch, x_cls, training):
        x = seq(x_patch[-1])
        Bq, Nk, Cd = x.shape
        if sa != "none":
            qkv = F.linear(x, P["self_attn.qkv.weight"]).reshape(Bq, Nk, 3, 1, Cd).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            attn = ((q * Cd**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
            x_attn = F.linear((attn @ v).transpose(1, 2).reshape(Bq, Nk, Cd), P["self_attn.proj.weight"],
                              P["self_attn.proj.bias"])
        else:
            x_attn = x
        h = x_attn if sa in ("map", "both") else x
        for i in range(depth - 1):
            h = torch.tanh(F.linear(h, P[f"attention_predictor.{2 * i}.weight"],
                                    P[f"attention_predictor.{2 * i}.bias"]))
        j = 2 * (depth - 1)
        attn_map = F.softmax(F.linear(h, P[f"attention_predictor.{j}.weight"],
                                      P[f"attention_predictor.{j}.bias"]), dim=1)
        x_out = x_attn if sa == "both" else x
        return tail(P, Bf, (x_out * attn_map).sum(dim=1), training)

    return f


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("heads", [1, 4])
def test_simpool_matches_official(tokens, training, heads):
    probe = make_probe("simpool", num_layers=L, embed_dim=D, num_classes=C, heads=heads, seed=0)
    with torch.no_grad():
        probe.norm.weight.normal_()
        probe.norm.bias.normal_()
    randomize_bn(probe)
    run_both(probe, tokens, ep_simpool(heads), training=training)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("num_queries,d_out", [(4, 1), (2, 2), (1, 1)])
def test_ep_matches_official(tokens, training, num_queries, d_out):
    probe = make_probe("ep", num_layers=L, embed_dim=D, num_classes=C, num_queries=num_queries, d_out=d_out,
                       seed=0)
    with torch.no_grad():
        probe.query.normal_()  # larger than the 0.02 init: a peaked softmax
    randomize_bn(probe)
    assert probe.fc.in_features == D // d_out
    run_both(probe, tokens, ep_efficient(num_queries, d_out), training=training)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("heads,num_queries", [(4, 1), (2, 3)])
def test_aim_matches_official(tokens, training, heads, num_queries):
    probe = make_probe("aim", num_layers=L, embed_dim=D, num_classes=C, heads=heads, num_queries=num_queries,
                       seed=0)
    with torch.no_grad():
        probe.query.normal_()
    randomize_bn(probe)
    run_both(probe, tokens, ep_aim(heads, num_queries), training=training)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("sa,depth", [("both", 2), ("map", 2), ("none", 3), ("both", 1)])
def test_abmilp_matches_official(tokens, training, sa, depth):
    probe = make_probe("abmilp", num_layers=L, embed_dim=D, num_classes=C, self_attention=sa, depth=depth,
                       seed=0)
    randomize_bn(probe)
    run_both(probe, tokens, ep_abmilp(sa, depth), training=training)


def test_batchnorm_heads_refuse_a_single_clip_batch():
    probe = make_probe("ep", num_layers=L, embed_dim=D, num_classes=C, num_queries=4).train()
    one = TokenBatch(torch.randn(1, 1, N, D), None, torch.zeros(1), torch.zeros(1), torch.arange(1))
    with pytest.raises(ProbeError, match="batch_size >= 2"):
        probe(one)
    probe.eval()
    assert probe(one).shape == (1, C)  # evaluation uses the running statistics


# ---- linpre --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_linpre_is_a_tokenwise_linear_pooled(tokens, pool):
    probe = make_probe("linpre", num_layers=L, embed_dim=D, num_classes=C, token_pooling=pool, seed=0)

    def f(P, Bf, x_patch, x_cls, training):
        z = F.linear(seq(x_patch[-1]), P["fc.weight"], P["fc.bias"])  # (B, N, C)
        return (z.max(dim=1).values if pool == "max" else z.mean(dim=1)), None

    run_both(probe, tokens, f)


# ---- proto with Bird-MAE's upsampling -------------------------------------------------------------------
def upsample2(x, dim):
    """Bilinear x2 along `dim` with align_corners=False: out[2i] = .25 x[i-1] + .75 x[i],
    out[2i+1] = .75 x[i] + .25 x[i+1], indices clamped at the edges."""
    n = x.shape[dim]
    idx = torch.arange(n)
    prev = x.index_select(dim, (idx - 1).clamp(min=0))
    nxt = x.index_select(dim, (idx + 1).clamp(max=n - 1))
    even, odd = 0.25 * prev + 0.75 * x, 0.75 * x + 0.25 * nxt
    return torch.stack((even, odd), dim=dim + 1).flatten(dim, dim + 1)


def birdmae_proto_upsampled(per_class, rows):
    eps = 1e-4

    def f(P, Bf, x_patch, x_cls, training):
        z = seq(x_patch[-1]) - x_cls[-1].unsqueeze(1)  # focal similarity, (B, N, D)
        x = z.permute(0, 2, 1).reshape(B, D, rows, N // rows)  # Bird-MAE's reshape
        x = upsample2(upsample2(x, 2), 3)
        K = C * per_class
        protos = P["prototype_vectors"].reshape(K, D, 1, 1)
        x = torch.cat((x, torch.full((B, 2, x.shape[2], x.shape[3]), eps, dtype=x.dtype)), dim=-3)
        x_len = torch.sqrt(torch.sum(x**2, dim=-3, keepdim=True) + eps)
        xn = 64 * x / x_len
        pp = torch.cat((protos, torch.full((K, 2, 1, 1), eps, dtype=x.dtype)), dim=-3)
        p_len = torch.sqrt(torch.sum(pp**2, dim=-3, keepdim=True) + eps)
        act = torch.relu(F.conv2d(xn, pp / (p_len + eps)) / (64 * 1.01))
        act = torch.amax(act, dim=[2, 3])
        logits = torch.einsum("bof,of->bo", act.view(B, C, per_class), torch.relu(P["last_layer.weight"]))
        logits = logits + P["last_layer.bias"]
        pv = P["prototype_vectors"]
        pv = (pv / (torch.sqrt(torch.sum(pv**2, dim=1, keepdim=True) + eps) + eps)).view(C, per_class, D)
        ortho = pv @ pv.transpose(1, 2) - torch.eye(per_class, dtype=pv.dtype).unsqueeze(0).repeat(C, 1, 1)
        return logits, torch.norm(ortho) / ortho.numel()

    return f


@pytest.mark.parametrize("rows", [2, 5, 1])
def test_proto_upsampled_matches_birdmae(tokens, rows):
    probe = make_probe("proto", num_layers=L, embed_dim=D, num_classes=C, prototypes_per_class=4,
                       grid_rows=rows, seed=0)
    assert probe.hparams["upsample"] is True  # the Bird-MAE-faithful variant is the default
    with torch.no_grad():
        probe.last_layer.weight.uniform_(-0.5, 1.5)
        probe.prototype_vectors.sub_(0.3)
    run_both(probe, tokens, birdmae_proto_upsampled(4, rows))


def test_proto_upsample_uses_interpolate_semantics():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    want = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert (upsample2(upsample2(x, 2), 3) - want).abs().max() < 1e-14  # the re-derivation is the Upsample


def test_proto_grid_rows_must_divide_tokens():
    probe = make_probe("proto", num_layers=L, embed_dim=D, num_classes=C, prototypes_per_class=2)
    batch = TokenBatch(torch.randn(2, 1, 10, D), torch.randn(2, 1, D), torch.zeros(2), torch.zeros(2),
                       torch.arange(2))
    with pytest.raises(ProbeError, match="grid_rows=8"):
        probe(batch)
    plain = make_probe("proto", num_layers=L, embed_dim=D, num_classes=C, prototypes_per_class=2,
                       upsample=False)
    assert plain(batch).shape == (2, C)

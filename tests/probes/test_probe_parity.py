"""Forward outputs and parameter gradients equal an independent re-derivation of the official head math
(BAT `models/heads.py` in its (L, B, D, T, F) layout with conv2d; Bird-MAE's PPNet cosine and AIM-style
attentive pooling) in float64, to <= 1e-10."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

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
    """probekit (B, L, N, D) / (B, L, D) -> the official feat_cache (L, B, D, T, F) / (L, B, D)."""
    return patch.permute(1, 0, 3, 2).reshape(L, B, D, T, FQ), cls.permute(1, 0, 2)


def run_both(probe, tokens, official_fn):
    """Forward + backward of the probe and of official_fn(params, patch5, cls3) with the same parameters."""
    patch, cls = tokens
    probe = probe.double().eval()  # dropout off
    layers = torch.as_tensor(probe.request.resolve(L))
    batch = TokenBatch(patch[:, layers], cls[:, layers], torch.zeros(B), torch.zeros(B), torch.arange(B))
    ours = probe(batch)
    up = torch.randn(ours.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    loss = (ours * up).sum()
    extra = probe.extra_loss()
    if extra is not None:
        loss = loss + extra
    loss.backward()
    params = {n: p.detach().clone().requires_grad_() for n, p in probe.named_parameters()}
    patch5, cls3 = official_layout(patch, cls)
    ref, ref_extra = official_fn(params, patch5, cls3)
    ref_loss = (ref * up).sum() + (0 if ref_extra is None else ref_extra)
    ref_loss.backward()
    assert (ours - ref).abs().max().item() <= TOL * max(1.0, ref.abs().max().item())
    for n, p in probe.named_parameters():
        g_ref = params[n].grad
        assert g_ref is not None, n
        err = (p.grad - g_ref).abs().max().item() / max(1e-30, g_ref.abs().max().item())
        assert err <= TOL, (n, err)
    return ours


# ---- BAT heads (models/heads.py), re-derived ---------------------------------------------------------
def bat_cgp(use_cls):
    def f(P, x_patch, x_cls):
        x_patch = F.normalize(x_patch, dim=2)
        x_cls = F.normalize(x_cls, dim=2)
        K = P["prototype_vectors"].shape[0]
        p = F.normalize(P["prototype_vectors"].reshape(K, D, 1, 1), dim=1)
        a = torch.softmax(P["block_attention"], dim=0)
        x_patch = (a.reshape(L, 1, 1, 1, 1) * x_patch).sum(dim=0)
        act = F.conv2d(x_patch, p).reshape(B, K, -1)
        if use_cls:
            mid = (a.reshape(L, 1, 1) * x_cls).sum(dim=0) @ p.reshape(K, D).T
        else:
            mid = act.mean(dim=-1)
        feat = torch.stack([act.min(-1).values, mid, act.max(-1).values], dim=-1).reshape(B, 3 * K)
        return F.linear(feat, P["fc.weight"], P["fc.bias"]), None

    return f


def bat_protobin(P, x_patch, x_cls):
    x = x_patch[-1]
    K = P["prototype_vectors"].shape[0]
    w = P["prototype_vectors"].reshape(K, D, 1, 1)
    proto_bin = (w >= 0).double() * 2.0 - 1.0 + (w - w.detach())
    act = F.conv2d(F.normalize(x, dim=1), F.normalize(proto_bin, dim=1)).reshape(B, K, -1)
    return F.linear(act.max(dim=-1).values, P["fc.weight"], P["fc.bias"]), None


def bat_linear(ln, pooling):
    def f(P, x_patch, x_cls):
        x = x_cls[-1] if pooling == "cls" else x_patch[-1].flatten(2).mean(dim=2)
        if ln:
            x = F.layer_norm(x, (D,), P["ln.weight"], P["ln.bias"], eps=1e-6)
        return F.linear(x, P["fc.weight"], P["fc.bias"]), None

    return f


def bat_linear_cgp(P, x_patch, x_cls):
    a = torch.softmax(P["block_attention"], dim=0).reshape(-1, 1, 1)
    x = (a * x_cls).sum(dim=0)
    x = F.layer_norm(x, (D,), P["ln.weight"], P["ln.bias"], eps=1e-6)
    return F.linear(x, P["fc.weight"], P["fc.bias"]), None


# ---- Bird-MAE heads, re-derived ------------------------------------------------------------------------
def birdmae_proto(per_class):
    eps = 1e-4

    def f(P, x_patch, x_cls):
        x = x_patch[-1] - x_cls[-1][:, :, None, None]  # "focal similarity": patch minus cls
        protos = P["prototype_vectors"].reshape(C * per_class, D, 1, 1)
        x = torch.cat((x, torch.full((B, 2, T, FQ), eps, dtype=x.dtype)), dim=-3)
        x_len = torch.sqrt(torch.sum(x**2, dim=-3, keepdim=True) + eps)
        xn = 64 * x / x_len
        pp = torch.cat((protos, torch.full((C * per_class, 2, 1, 1), eps, dtype=x.dtype)), dim=-3)
        p_len = torch.sqrt(torch.sum(pp**2, dim=-3, keepdim=True) + eps)
        pn = pp / (p_len + eps)
        act = torch.relu(F.conv2d(xn, pn) / (64 * 1.01))
        act = act.reshape(B, C * per_class, -1).max(dim=-1).values
        w = torch.relu(P["last_layer.weight"])
        logits = torch.einsum("bof,of->bo", act.view(B, C, per_class), w) + P["last_layer.bias"]
        pv = P["prototype_vectors"]
        pv = pv / (torch.sqrt(torch.sum(pv**2, dim=1, keepdim=True) + eps) + eps)
        pv = pv.view(C, per_class, D)
        ortho = pv @ pv.transpose(1, 2) - torch.eye(per_class, dtype=pv.dtype).unsqueeze(0).repeat(C, 1, 1)
        return logits, torch.norm(ortho) / ortho.numel()

    return f


def aim_mhca(heads):
    def f(P, x_patch, x_cls):
        x = x_patch[-1].flatten(2).transpose(1, 2)  # (B, N, D)
        hd = D // heads
        q = P["query"].expand(B, -1, -1).reshape(B, 1, heads, hd).permute(0, 2, 1, 3)
        k = F.linear(x, P["k.weight"]).reshape(B, N, heads, hd).permute(0, 2, 1, 3)
        v = F.linear(x, P["v.weight"]).reshape(B, N, heads, hd).permute(0, 2, 1, 3)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, 1, D).mean(dim=1)
        o = F.layer_norm(o, (D,), P["norm.weight"], P["norm.bias"], eps=1e-6)
        return F.linear(o, P["fc.weight"], P["fc.bias"]), None

    return f


def mlp_ref(P, x_patch, x_cls):
    h = torch.relu(F.linear(x_cls[-1], P["fc1.weight"], P["fc1.bias"]))
    return F.linear(h, P["fc.weight"], P["fc.bias"]), None


@pytest.mark.parametrize("use_cls", [True, False])
def test_cgp_matches_official(tokens, use_cls):
    probe = make_probe(
        "cgp", num_layers=L, embed_dim=D, num_classes=C, prototypes=37, use_cls=use_cls, seed=0
    )
    with torch.no_grad():  # non-uniform gates, so the mixing is really tested
        probe.block_attention.copy_(torch.tensor([0.3, -1.0, 2.0, 0.1]))
    run_both(probe, tokens, bat_cgp(use_cls))


def test_protobin_matches_official(tokens):
    probe = make_probe("protobin", num_layers=L, embed_dim=D, num_classes=C, prototypes=29, seed=0)
    with torch.no_grad():
        probe.prototype_vectors[0, :3] = 0.0  # sign(0) := +1
    run_both(probe, tokens, bat_protobin)


@pytest.mark.parametrize("ln,pooling", [(True, "cls"), (False, "cls"), (True, "mean")])
def test_linear_matches_official(tokens, ln, pooling):
    probe = make_probe(
        "linear", num_layers=L, embed_dim=D, num_classes=C, layer_norm=ln, pooling=pooling, seed=0
    )
    if ln:
        with torch.no_grad():
            probe.ln.weight.normal_()
            probe.ln.bias.normal_()
    run_both(probe, tokens, bat_linear(ln, pooling))


def test_linear_cgp_matches_official(tokens):
    probe = make_probe("lcgp", num_layers=L, embed_dim=D, num_classes=C, seed=0)
    with torch.no_grad():
        probe.block_attention.copy_(torch.tensor([0.5, -0.2, 1.0, 0.0]))
    run_both(probe, tokens, bat_linear_cgp)


def test_class_proto_matches_birdmae(tokens):
    probe = make_probe("proto", num_layers=L, embed_dim=D, num_classes=C, prototypes_per_class=4,
                       upsample=False, seed=0)  # the plain variant (the upsampled one: test_probe_parity_heads)
    with torch.no_grad():
        probe.last_layer.weight.uniform_(-0.5, 1.5)  # some negative: the ReLU'd connections
        probe.prototype_vectors.sub_(0.3)
    run_both(probe, tokens, birdmae_proto(4))


def test_mhca_matches_aim_pooling(tokens):
    probe = make_probe("mhca", num_layers=L, embed_dim=D, num_classes=C, num_heads=4, seed=0)
    run_both(probe, tokens, aim_mhca(4))


def test_mlp_matches_reference(tokens):
    probe = make_probe("mlp", num_layers=L, embed_dim=D, num_classes=C, seed=0)
    run_both(probe, tokens, mlp_ref)


def test_layer_sweep_heads_are_independent_linear_probes(tokens):
    probe = make_probe("layers", num_layers=L, embed_dim=D, num_classes=C, seed=0)
    out = run_both(
        probe,
        tokens,
        lambda P, xp, xc: (
            torch.stack(
                [
                    F.linear(
                        F.layer_norm(xc[i], (D,), P[f"heads.{i}.0.weight"], P[f"heads.{i}.0.bias"], eps=1e-6),
                        P[f"heads.{i}.2.weight"],
                        P[f"heads.{i}.2.bias"],
                    )
                    for i in range(L)
                ],
                dim=1,
            ),
            None,
        ),
    )
    assert out.shape == (B, L, C)

"""Frame-wise heads vs re-derivations of the official BAT `frame_wise_forward` (models/heads.py), float64.

The official heads read `feat_cache['patch_tokens']` as (L, B, D, T, F); probekit's tokens are (B, L, N, D)
time-major (n = t*F + f). Each reference below is written from the official code's operations on the
official layout, with the probe's own parameters; outputs and gradients must agree to 1e-10.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from probekit.errors import ProbeError
from probekit.probes import make_probe
from probekit.tokens import TokenBatch

B, L, T, FQ, D, C, K = 3, 4, 5, 3, 8, 4, 6


def _batch(seed=0, grid=(T, FQ)):
    g = torch.Generator().manual_seed(seed)
    patch = torch.randn(B, L, T * FQ, D, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.zeros(B, T, C, dtype=torch.float64)
    return TokenBatch(patch, None, labels, torch.full((B,), T), torch.arange(B), grid)


def _official_layout(patch):
    """(B, L, N, D) time-major -> (L, B, D, T, F) as the official feat_cache holds it."""
    return patch.reshape(B, L, T, FQ, D).permute(1, 0, 4, 2, 3)


# ---- re-derivations of the official frame_wise_forward ------------------------------------------------
def ref_linear(pt, ln, fc):
    x = pt[-1].mean(dim=3).transpose(1, 2)  # B, T, D
    return fc(ln(x))


def ref_lcgp(pt, gates, ln, fc):
    x = pt.mean(dim=4)  # L, B, D, T
    a = torch.softmax(gates, dim=0).reshape(-1, 1, 1, 1)
    x = (a * x).sum(dim=0).transpose(1, 2)
    return fc(ln(x))


def ref_cgp(pt, protos, gates, fc):
    nl, b, d, t, f = pt.shape
    x = F.normalize(pt, dim=2)
    p = F.normalize(protos.reshape(protos.shape[0], d, 1, 1), dim=1)
    a = torch.softmax(gates, dim=0).reshape(nl, 1, 1, 1, 1)
    x = (a * x).sum(dim=0)
    act = F.conv2d(x, p)  # B, P, T, F
    s = torch.stack([act.min(dim=-1).values, act.mean(dim=-1), act.max(dim=-1).values], dim=-1)
    s = s.transpose(1, 2).reshape(b, t, 3 * protos.shape[0])
    return fc(s)


def ref_protobin(pt, protos, fc):
    x = pt[-1]
    pv = protos.reshape(protos.shape[0], -1, 1, 1)
    sign = (pv >= 0).to(pv.dtype) * 2.0 - 1.0
    pb = sign + (pv - pv.detach())
    act = F.conv2d(F.normalize(x, dim=1), F.normalize(pb, dim=1))  # B, P, T, F
    act = act.transpose(1, 2).max(dim=-1).values  # B, T, P
    return fc(act)


def ref_h2t(pt, ln, fc):
    x = pt.mean(dim=4).permute(1, 3, 0, 2).flatten(2)  # B, T, L*D
    return fc(ln(x))


def _make(name, **hp):
    return make_probe(name, num_layers=L, embed_dim=D, num_classes=C, seed=1, **hp).double().eval()


CASES = {
    "sed-linear": (dict(dropout=0.0), lambda p, pt: ref_linear(pt, p.ln, p.fc)),
    "sed-lcgp": (dict(dropout=0.0), lambda p, pt: ref_lcgp(pt, p.block_attention, p.ln, p.fc)),
    "sed-cgp": (dict(prototypes=K, dropout=0.0), lambda p, pt: ref_cgp(pt, p.prototype_vectors, p.block_attention, p.fc)),
    "sed-protobin": (dict(prototypes=K, dropout=0.0), lambda p, pt: ref_protobin(pt, p.prototype_vectors, p.fc)),
    "sed-h2t": (dict(dropout=0.0), lambda p, pt: ref_h2t(pt, p.ln, p.fc)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_frame_head_matches_official_frame_wise_forward(name):
    hp, ref = CASES[name]
    probe = _make(name, **hp)
    with torch.no_grad():  # non-trivial gates: a softmax of equal gates would hide a wrong layer order
        if hasattr(probe, "block_attention"):
            probe.block_attention.copy_(torch.linspace(-1.0, 1.5, L, dtype=torch.float64))
    batch = _batch()
    read = list(probe.request.resolve(L))  # what a reader would hand this probe
    out = probe(TokenBatch(batch.patch[:, read], None, batch.labels, batch.valid_rows, batch.index, batch.grid))
    assert out.shape == (B, T, C)
    want = ref(probe, _official_layout(batch.patch))
    assert torch.allclose(out, want, atol=1e-10, rtol=0)
    w = torch.randn(B, T, C, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    params = [batch.patch, *[p for p in probe.parameters() if p.requires_grad]]
    g1 = torch.autograd.grad((out * w).sum(), params)
    g2 = torch.autograd.grad((want * w).sum(), params, allow_unused=True)
    for a, b in zip(g1, g2):
        assert b is not None
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


def test_official_state_dict_loads_into_frame_cgp():
    probe = _make("sed-cgp", prototypes=K)
    sd = {k: v.clone() for k, v in probe.state_dict().items()}
    sd["prototype_vectors"] = sd["prototype_vectors"].reshape(K, D, 1, 1) * 2  # official conv-kernel shape
    probe.load_state_dict(sd)
    assert probe.prototype_vectors.shape == (K, D)


def test_frame_head_needs_grid_and_refuses_a_wrong_one():
    probe = _make("sed-linear")
    b = _batch()
    with pytest.raises(ProbeError, match="grid"):
        probe(TokenBatch(b.patch, None, b.labels, b.valid_rows, b.index, None))
    with pytest.raises(ProbeError, match="does not hold"):
        probe(TokenBatch(b.patch, None, b.labels, b.valid_rows, b.index, (T + 1, FQ)))


def test_postprocessing_parameters_are_checked_and_reported():
    p = _make("sed-cgp", prototypes=K, threshold=0.4, median_filter=5)
    assert p.report()["postprocessing"] == {"threshold": 0.4, "median_filter": 5}
    assert "gates" in p.report()
    with pytest.raises(ProbeError):
        _make("sed-linear", median_filter=4)
    with pytest.raises(ProbeError):
        _make("sed-linear", threshold=1.0)


def test_h2t_frame_group_lasso_is_the_official_penalty():
    p = _make("sed-h2t", lasso_weight=1e-3)
    w = p.fc.weight
    want = torch.linalg.vector_norm(w, dim=0).sum() * torch.tensor(float(C), dtype=torch.float32).sqrt().item()
    assert torch.allclose(p.extra_loss(), 1e-3 * want, atol=1e-12)

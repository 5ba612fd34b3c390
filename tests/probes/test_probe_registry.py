"""Registry, factory, hyperparameter checks and the weight-decay split, for every registered probe."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from probekit.errors import ProbeError
from probekit.cache.live import needs_encoder
from probekit.probes import PROBES, list_probes, make_probe
from probekit.probes.space import Choice, Float, Int
from probekit.tokens import TokenBatch

# clip-level probes (one output per clip); the ASR probe has its own tests (tests/probes/test_asr.py)
CLIP_PROBES = [n for n in sorted(PROBES) if getattr(PROBES[n], "task_kind", "") != "asr"]

L, D, C = 3, 16, 5
# ep: 32 queries need a width divisible by 32; proto: Bird-MAE's 8 grid rows need N divisible by 8 (N = 6)
SMALL = {"cgp": {"prototypes": 40}, "protobin": {"prototypes": 40}, "ep": {"num_queries": 4},
         "proto": {"grid_rows": 2}}


def _batch(probe, B=4, N=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    patch = torch.randn(B, L, N, D, generator=g)
    cls = torch.randn(B, L, D, generator=g)
    layers = torch.as_tensor(probe.request.resolve(L))
    return TokenBatch(
        patch[:, layers] if probe.request.patch else None,
        cls[:, layers] if probe.request.cls else None,
        torch.zeros(B, dtype=torch.long),
        torch.full((B,), 2),
        torch.arange(B),
        (2, N // 2),  # the token grid: frame-wise heads give one row of logits per time row
    )


def test_registry_has_every_probe():
    assert set(list_probes()) == {"cgp", "protobin", "proto", "linear", "mlp", "mhca", "lcgp", "layers",
                                  "h2t", "linpre", "simpool", "ep", "aim", "abmilp", "vqt", "asr",
                                  "sed-cgp", "sed-protobin", "sed-linear", "sed-lcgp", "sed-h2t"}


def test_unknown_probe_suggests():
    with pytest.raises(ProbeError, match="did you mean 'cgp'"):
        make_probe("cpg", num_layers=L, embed_dim=D, num_classes=C)


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("cgp", {"prototype": 10}, "no hyperparameter 'prototype'.*prototypes"),
        ("cgp", {"prototypes": "many"}, "prototypes=.many. must be an integer"),
        ("cgp", {"prototypes": 2.5}, "must be an integer"),
        ("cgp", {"prototypes": 0}, "must be >= 1"),
        ("cgp", {"use_cls": "yes"}, "use_cls=.yes. must be one of True, False"),
        ("linear", {"dropout": "abc"}, "dropout=.abc. must be a number"),
        ("linear", {"pooling": "max"}, "pooling"),
        ("linear", {"dropout": 1.5}, "dropout"),
        ("mhca", {"layer": 7}, "out of range"),
    ],
)
def test_bad_hyperparameters_raise_probe_error(name, kwargs, match):
    with pytest.raises(ProbeError, match=match):
        make_probe(name, num_layers=L, embed_dim=D, num_classes=C, **kwargs)


def test_bad_shape_args():
    with pytest.raises(ProbeError, match="num_classes"):
        make_probe("linear", num_layers=L, embed_dim=D, num_classes=0)
    with pytest.raises(ProbeError, match="divisible"):
        make_probe("mhca", num_layers=L, embed_dim=D, num_classes=C, num_heads=3)


@pytest.mark.parametrize("name", [n for n in CLIP_PROBES if not needs_encoder(PROBES[n])])  # vqt: test_vqt.py
def test_contract(name):
    cls = PROBES[name]
    assert cls.description and cls.search_space
    for key, spec in cls.search_space.items():
        assert key in cls.hparam_names()
        assert isinstance(spec, (Float, Int, Choice))
    probe = make_probe(name, num_layers=L, embed_dim=D, num_classes=C, seed=0, **SMALL.get(name, {}))
    assert probe.name == name
    # hyperparameters are explicit keyword arguments; get_params rebuilds an identically shaped twin
    twin = type(probe)(**probe.get_params())
    assert {k: v.shape for k, v in twin.state_dict().items()} == {
        k: v.shape for k, v in probe.state_dict().items()
    }
    assert set(probe.hparams) == set(cls.hparam_names())
    out = probe(_batch(probe))
    expected = (4, probe.num_outputs, C) if probe.num_outputs > 1 else (4, C)
    if getattr(probe, "frame_wise", False):  # event detection: (B, T, C)
        expected = (4, 2, C)
    assert out.shape == expected
    # decay only the classifier weights: every decayed tensor is a classifier matrix, never a prototype/gate
    groups = probe.param_groups(0.1)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {id(p): n for n, p in probe.named_parameters()}
    assert decayed, "no classifier weight decayed"
    for pid in decayed:
        n = names[pid]
        assert (
            n.endswith("weight") and "prototype" not in n and "block_attention" not in n and "ln" not in n
        ), n
    assert sum(len(g["params"]) for g in groups) == len(list(probe.parameters()))
    for n, p in probe.named_parameters():
        if n.endswith("bias") or "prototype" in n or "block_attention" in n or n == "query":
            assert id(p) not in decayed, n


@pytest.mark.parametrize("name", CLIP_PROBES)
def test_seeded_init_is_reproducible(name):
    a = make_probe(name, num_layers=L, embed_dim=D, num_classes=C, seed=3, **SMALL.get(name, {}))
    b = make_probe(name, num_layers=L, embed_dim=D, num_classes=C, seed=3, **SMALL.get(name, {}))
    c = make_probe(name, num_layers=L, embed_dim=D, num_classes=C, seed=4, **SMALL.get(name, {}))
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values()))


def test_requests_declare_what_is_read():
    assert make_probe("protobin", num_layers=L, embed_dim=D, num_classes=C).request.resolve(L) == (L - 1,)
    assert not make_probe("protobin", num_layers=L, embed_dim=D, num_classes=C).request.cls
    cgp = make_probe("cgp", num_layers=L, embed_dim=D, num_classes=C, prototypes=8)
    assert cgp.request.resolve(L) == (0, 1, 2) and cgp.request.cls and cgp.request.patch
    nocls = make_probe("cgp", num_layers=L, embed_dim=D, num_classes=C, prototypes=8, use_cls=False)
    assert not nocls.request.cls
    lin = make_probe("linear", num_layers=L, embed_dim=D, num_classes=C)
    assert lin.request.cls and not lin.request.patch
    mean = make_probe("linear", num_layers=L, embed_dim=D, num_classes=C, pooling="mean")
    assert mean.request.patch and not mean.request.cls
    with pytest.raises(ProbeError, match="pooling='mean'"):
        lin(TokenBatch(torch.randn(2, 1, 4, D), None, torch.zeros(2), torch.zeros(2), torch.arange(2)))


def test_cgp_gates_start_uniform_and_are_exposed():
    cgp = make_probe("cgp", num_layers=12, embed_dim=D, num_classes=C, prototypes=8)
    w = cgp.gate_weights()
    assert w.shape == (12,) and abs(w.sum() - 1) < 1e-6 and abs(w - 1 / 12).max() < 1e-7
    assert cgp.gate_layers() == tuple(range(12))
    assert torch.equal(cgp.block_attention.data, torch.ones(12))
    p = cgp.prototype_vectors.detach()
    assert abs(p.std().item() - 0.02) < 0.005
    # parameter count of the paper: K*D + L + 3K*C + C
    big = make_probe("cgp", num_layers=12, embed_dim=768, num_classes=527, prototypes=10000)
    assert big.num_parameters() == 10000 * 768 + 12 + 3 * 10000 * 527 + 527  # 23.49 M


def test_official_state_dict_loads():
    # the official heads store prototypes as (K, D, 1, 1) conv kernels under the same names
    cgp = make_probe("cgp", num_layers=L, embed_dim=D, num_classes=C, prototypes=8)
    sd = {k: v.clone() for k, v in cgp.state_dict().items()}
    sd["prototype_vectors"] = torch.randn(8, D, 1, 1)
    cgp.load_state_dict(sd)
    assert torch.equal(cgp.prototype_vectors.data, sd["prototype_vectors"].reshape(8, D))


def test_protobin_per_class_prototypes():
    pb = make_probe("protobin", num_layers=L, embed_dim=D, num_classes=C, prototypes_per_class=20)
    assert pb.prototype_vectors.shape == (C * 20, D) and pb.fc.in_features == C * 20


def test_class_proto_connections_are_class_bound():
    pr = make_probe("proto", num_layers=L, embed_dim=D, num_classes=C, prototypes_per_class=3)
    assert pr.prototype_vectors.shape == (C * 3, D)
    assert pr.prototype_vectors.min() >= 0 and pr.prototype_vectors.max() < 1  # U[0, 1)
    assert torch.equal(pr.last_layer.weight.data, torch.ones(C, 3))
    assert torch.equal(pr.last_layer.bias.data, torch.full((C,), -2.0))
    act = torch.zeros(1, C * 3)
    act[0, 3:6] = 1.0  # only class 1's prototypes fire
    out = pr.last_layer(act)
    assert out[0, 1] == 1.0 and (out[0, [0, 2, 3, 4]] == -2.0).all()
    assert pr.extra_loss() is not None and pr.extra_loss() > 0
    assert isinstance(pr.last_layer, nn.Module)


def test_new_heads_display_names_and_errors():
    names = {n: PROBES[n].label() for n in ("h2t", "linpre", "simpool", "ep", "aim", "abmilp")}
    assert names == {"h2t": "H2T", "linpre": "LinPre", "simpool": "SimPool", "ep": "EP", "aim": "AIM",
                     "abmilp": "ABMILP"}
    with pytest.raises(ProbeError, match="divisible by d_out"):
        make_probe("ep", num_layers=L, embed_dim=D, num_classes=C, num_queries=3)
    with pytest.raises(ProbeError, match="lasso_weight=-1"):
        make_probe("h2t", num_layers=L, embed_dim=D, num_classes=C, lasso_weight=-1.0)
    with pytest.raises(ProbeError, match="token_pooling"):
        make_probe("linpre", num_layers=L, embed_dim=D, num_classes=C, token_pooling="sum")
    with pytest.raises(ProbeError, match="self_attention"):
        make_probe("abmilp", num_layers=L, embed_dim=D, num_classes=C, self_attention="all")
    h2t = make_probe("h2t", num_layers=L, embed_dim=D, num_classes=C)
    assert h2t.fc.in_features == L * D and h2t.request.resolve(L) == (0, 1, 2) and h2t.request.cls
    rep = h2t.report()["layer_weight_norms"]
    assert list(rep) == ["block1", "block2", "block3"] and all(v > 0 for v in rep.values())

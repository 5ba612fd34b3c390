"""VQT (visual query tuning) against a re-derivation of the official BAT code, in float64, and end to end.

The reference below is written from houtan-ghaffari/BAT_ICML2026 (models/vit.py `Attention(num_vqt)`,
`EncoderBlock.forward_norm_last`, `ViT.extract_vqt_features`; models/beats.py `MultiheadAttention(num_vqt)`,
`TransformerSentenceEncoderLayer`, `TransformerEncoder.forward(num_vqt, vqt)`, `BEATs.extract_vqt_features`;
the vqt head), on raw state dicts with the official key names, sharing no code with probekit's VQT path.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from probekit.backbones.beats import CARDS as BEATS_CARDS
from probekit.backbones.beats import BeatsBackbone, BeatsConfig, BeatsModel
from probekit.backbones.bat import CARDS as BAT_CARDS
from probekit.backbones.eat import CARDS as EAT_CARDS
from probekit.backbones.vit import AudioViT, ViTConfig
from probekit.backbones.vit_backbone import ViTBackbone
from probekit.cache.live import InputBatch
from probekit.probes import make_probe
from probekit.probes.vqt import query_init_bound

TOL = 1e-10


# ---------------------------------------------------------------------------------------------- reference
def _ln(x, sd, p, eps):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)


def _lin(x, sd, p):
    return F.linear(x, sd[p + ".weight"], sd.get(p + ".bias"))


def official_vit_vqt(sd, x, vqt, *, heads, depth, gated, normalize=True, chunk=64, eps=1e-6):
    """models/vit.py extract_vqt_features: (B, 1, T*16, 128) -> (B, D + L*q*D)."""
    nv = vqt.shape[1]
    tok = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16)
    b, d = tok.shape[0], tok.shape[1]
    tok = tok.flatten(2).transpose(1, 2).reshape(b, -1, 8, d)  # B, T, F, D
    chunks = []
    for xi in torch.split(tok, chunk, dim=1):
        xi = xi.flatten(1, 2)
        xi = xi + sd["pos_embed"][:, : xi.shape[1], :]
        chunks.append(torch.cat((sd["cls_token"].expand(b, -1, -1), xi), dim=1))
    cls_list, q_list = [], []
    for xi in chunks:
        xi = _ln(xi, sd, "pre_norm", eps)
        qs = []
        for i in range(depth):
            xi = torch.cat((vqt[i].expand(b, -1, -1), xi), dim=1)
            p = f"blocks.{i}."
            B, N, C = xi.shape
            qkv = _lin(xi, sd, p + "attn.qkv").reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            k, v = k[:, :, nv:, :], v[:, :, nv:, :]  # keys/values exclude the queries
            attn = ((q * (C // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
            out = (attn @ v).transpose(1, 2).reshape(B, N, C)
            if gated:
                out = out * _lin(xi, sd, p + "attn.gate").sigmoid()
            z = xi + _lin(out, sd, p + "attn.proj")  # forward_norm_last
            xi = _ln(z, sd, p + "norm1", eps)
            z = xi + _lin(F.gelu(_lin(xi, sd, p + "mlp.fc1")), sd, p + "mlp.fc2")
            xi = _ln(z, sd, p + "norm2", eps)
            qs.append(xi[:, :nv, :])
            xi = xi[:, nv:, :]
        q_list.append(torch.stack(qs))
        cls_list.append(xi[:, 0])
    cls = torch.stack(cls_list).mean(dim=0)
    qt = torch.stack(q_list).mean(dim=0).flatten(2)  # L, B, q*D
    if normalize:
        cls, qt = F.normalize(cls, dim=-1), F.normalize(qt, dim=-1)
    return torch.cat([cls, qt.transpose(0, 1).flatten(1)], dim=1)


def _bucket(rel, num_buckets, max_distance):
    """MultiheadAttention._relative_positions_bucket (bidirectional), as written there."""
    num_buckets = num_buckets // 2
    out = (rel > 0).to(torch.long) * num_buckets
    rel = torch.abs(rel)
    max_exact = num_buckets // 2
    is_small = rel < max_exact
    large = max_exact + (torch.log(rel.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return out + torch.where(is_small, rel, large)


def official_beats_vqt(sd, model, fbank, vqt, cfg: BeatsConfig, normalize=True, chunk=64):
    """models/beats.py extract_vqt_features with (N, B, D) layout; the pos_conv module is the model's own
    (its parity with the official BEATs is tests/backbones/test_beats.py)."""
    H, nv = cfg.encoder_attention_heads, vqt.shape[1]
    hd = cfg.encoder_embed_dim // H
    scaling, alpha, dn = hd ** -0.5, 32, math.pow(2 * cfg.encoder_layers, 1 / 4)
    x = F.conv2d(fbank.unsqueeze(1), sd["patch_embedding.weight"], stride=16)
    b, c, t, f = x.shape
    x = _ln(x.reshape(b, c, -1).transpose(1, 2), sd, "layer_norm", 1e-5)
    x = _lin(x, sd, "post_extract_proj").reshape(b, t, f, -1)
    cls_chunks, q_chunks = [], []
    for xi in torch.split(x, chunk, dim=1):
        xi = xi.flatten(1, 2)
        xi = xi + model.encoder.pos_conv(xi.transpose(1, 2)).transpose(1, 2)
        xi = _ln(xi, sd, "encoder.layer_norm", 1e-5).transpose(0, 1)  # N, B, D
        pos_bias, results = None, []
        for i in range(cfg.encoder_layers):
            p = f"encoder.layers.{i}."
            xi = torch.cat((vqt[i].expand(xi.shape[1], -1, -1).transpose(0, 1), xi), dim=0)
            tgt, bsz, D = xi.shape
            if pos_bias is None:
                ctx = torch.arange(tgt)[:, None]
                mem = torch.arange(tgt)[None, :]
                vals = F.embedding(_bucket(mem - ctx, cfg.num_buckets, cfg.max_distance),
                                   sd["encoder.layers.0.self_attn.relative_attention_bias.weight"]).permute(2, 0, 1)
                pos_bias = vals.unsqueeze(0).repeat(bsz, 1, 1, 1).view(bsz * H, tgt, tgt)
            residual = xi
            q = _lin(xi, sd, p + "self_attn.q_proj") * scaling
            k = _lin(xi, sd, p + "self_attn.k_proj")[nv:]
            v = _lin(xi, sd, p + "self_attn.v_proj")[nv:]
            src = tgt - nv
            bias = pos_bias[:, :, nv:]
            q = q * (1 / alpha)
            q = q.contiguous().view(tgt, bsz * H, hd).transpose(0, 1)
            k = k.contiguous().view(-1, bsz * H, hd).transpose(0, 1)
            v = v.contiguous().view(-1, bsz * H, hd).transpose(0, 1)
            w = torch.bmm(q, k.transpose(1, 2))
            w = (w - w.max(dim=-1, keepdim=True)[0]) * alpha
            ql = q.view(bsz, H, tgt, hd) * alpha / scaling
            g = torch.sigmoid(_lin(ql, sd, p + "self_attn.grep_linear").view(bsz, H, tgt, 2, 4).sum(-1))
            ga, gb = g.chunk(2, dim=-1)
            ga1 = ga * (gb * sd[p + "self_attn.grep_a"] - 1.0) + 2.0
            w = w + (ga1.view(bsz * H, tgt, 1) * bias).view(w.size())
            a = torch.bmm(F.softmax(w, dim=-1), v)
            assert a.shape == (bsz * H, tgt, hd) and k.shape[1] == src
            a = _lin(a.transpose(0, 1).contiguous().view(tgt, bsz, D), sd, p + "self_attn.out_proj")
            xi = _ln(residual * dn + a, sd, p + "self_attn_layer_norm", 1e-5)
            residual = xi
            xi = _lin(F.gelu(_lin(xi, sd, p + "fc1")), sd, p + "fc2")  # official gelu: erf GELU
            xi = _ln(residual * dn + xi, sd, p + "final_layer_norm", 1e-5)
            results.append(xi[:nv].transpose(0, 1))
            xi = xi[nv:]
        q_chunks.append(torch.stack(results))
        cls_chunks.append(xi.mean(dim=0))
    cls = torch.stack(cls_chunks).mean(dim=0)
    qt = torch.stack(q_chunks).mean(dim=0).flatten(2)
    if normalize:
        cls, qt = F.normalize(cls, dim=-1), F.normalize(qt, dim=-1)
    return torch.cat([cls, qt.transpose(0, 1).flatten(1)], dim=1)


def official_head(feats, probe, eps):
    """The vqt head: Sequential(LayerNorm(eps), [Dropout: eval], Linear)."""
    z = F.layer_norm(feats, feats.shape[-1:], probe.ln.weight, probe.ln.bias, eps)
    return F.linear(z, probe.fc.weight, probe.fc.bias)


# ---------------------------------------------------------------------------------------------- builders
def _vit_backbone(gated: bool, chunk_rows=None, dim=32, depth=2, heads=2) -> ViTBackbone:
    layout = "bat" if gated else "eat"
    cfg = ViTConfig(embed_dim=dim, depth=depth, num_heads=heads, gated=gated, pos_layout=layout,
                    pos_len=512 if gated else 768 * 8, chunk_rows=chunk_rows)
    card = BAT_CARDS["bat-tiny"] if gated else EAT_CARDS["eat-tiny"]
    model = AudioViT(cfg, seed=3)
    with torch.no_grad():  # non-trivial norms and biases
        g = torch.Generator().manual_seed(5)
        for n, p in model.named_parameters():
            if n.endswith("bias") or "norm" in n:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    bb = ViTBackbone(model, name="bat-tiny" if gated else "eat-tiny", card=card, seed=3)
    bb.model.double().set_attn_impl("sdpa")  # float64 attention (the explicit path's softmax is fp32)
    return bb


def _beats_backbone(layers=2) -> BeatsBackbone:
    cfg = BeatsConfig(embed_dim=24, encoder_layers=layers, encoder_embed_dim=32, encoder_ffn_embed_dim=48,
                      encoder_attention_heads=2, conv_pos=8, conv_pos_groups=4, num_buckets=32, max_distance=40)
    model = BeatsModel(cfg, seed=1)
    with torch.no_grad():
        g = torch.Generator().manual_seed(7)
        for n, p in model.named_parameters():
            if n.endswith("bias") or "norm" in n or "grep" in n:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    bb = BeatsBackbone(model.double(), name="beats-tiny", card=BEATS_CARDS["beats-tiny"], seed=1)
    return bb


def _probe(bb, num_queries=3, classes=5):
    p = make_probe("vqt", num_layers=bb.num_layers, embed_dim=bb.embed_dim, num_classes=classes,
                   num_queries=num_queries, seed=0).double()
    with torch.no_grad():
        p.ln.weight.add_(0.1), p.ln.bias.add_(0.05)
    return p.eval()


def _batch(bb, feats, valid=None):
    b = feats.shape[0]
    return InputBatch(None, None, torch.zeros(b, dtype=torch.long), torch.zeros(b, dtype=torch.long),
                      torch.arange(b), features=feats, valid_frames=valid, backbone=bb)


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("gated,chunk_rows,rows", [(True, None, 70), (False, 64, 70), (False, None, 5)])
def test_vit_family_vqt_matches_official_in_float64(gated, chunk_rows, rows):
    """BAT (gated, 64-row chunks: one full window + a 6-row tail), EAT/SSLAM with BAT's 64-row chunking,
    and EAT's own single sequence: logits and the gradients to the queries and the head <= 1e-10."""
    torch.manual_seed(0)
    bb = _vit_backbone(gated, chunk_rows)
    probe = _probe(bb)
    feats = torch.randn(2, 1, rows * 16, 128, dtype=torch.float64)
    logits = probe(_batch(bb, feats))
    sd = {k: v for k, v in bb.model.state_dict().items()}
    vqt = probe.vqt.detach().clone().requires_grad_(True)
    ref = official_head(official_vit_vqt(sd, feats, vqt, heads=2, depth=2, gated=gated), probe, 1e-6)
    assert probe.ln.eps == 1e-6 and probe.dropout.p == 0.0  # the ViT vqt head: eps 1e-6, no dropout
    assert (logits - ref).abs().max().item() <= TOL
    w = torch.randn_like(ref)
    (g_probe,) = torch.autograd.grad((logits * w).sum(), probe.vqt)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), vqt)
    assert g_ref.abs().max() > 1e-6  # the queries do get a gradient through the frozen blocks
    assert (g_probe - g_ref).abs().max().item() <= TOL
    assert all(p.grad is None and not p.requires_grad for p in bb.model.parameters())


def test_beats_vqt_matches_official_in_float64():
    """BEATs: relative bias over q + N positions with the queries first, key columns kept, the grep gate
    per query row; features = normalize(mean of last layer), normalize(each layer's queries)."""
    torch.manual_seed(0)
    bb = _beats_backbone()
    probe = _probe(bb)
    fbank = torch.randn(2, 4 * 16, 128, dtype=torch.float64)
    logits = probe(_batch(bb, fbank.unsqueeze(1)))
    sd = {k: v for k, v in bb.model.state_dict().items()}
    vqt = probe.vqt.detach().clone().requires_grad_(True)
    ref = official_head(official_beats_vqt(sd, bb.model, fbank, vqt, bb.model.config), probe, 1e-5)
    assert probe.ln.eps == 1e-5 and probe.dropout.p == 0.2  # the BEATs vqt head: eps 1e-5, head_dropout 0.2
    assert (logits - ref).abs().max().item() <= TOL
    w = torch.randn_like(ref)
    (g_probe,) = torch.autograd.grad((logits * w).sum(), probe.vqt)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), vqt)
    assert g_ref.abs().max() > 1e-6
    assert (g_probe - g_ref).abs().max().item() <= TOL


def test_query_init_and_count_follow_the_official_code():
    p = make_probe("vqt", num_layers=4, embed_dim=64, num_classes=7, seed=0)
    v = math.sqrt(6.0 / (3 * 256 + 64))
    assert query_init_bound(64) == v
    assert p.vqt.shape == (4, 10, 64) and p.vqt.abs().max() <= v and p.vqt.abs().max() > 0.9 * v
    assert p.fc.in_features == 64 + 4 * 10 * 64
    # weight decay on the classifier weight only (the official optimiser: no decay on vqt or 1-D weights)
    groups = p.param_groups(0.05)
    assert [x.shape for x in groups[0]["params"]] == [p.fc.weight.shape] and groups[0]["weight_decay"] == 0.05


# ---------------------------------------------------------------------------------------------- the official property
def test_vit_queries_leave_cls_and_patch_outputs_of_every_block_unchanged():
    bb = _vit_backbone(True)
    m = bb.model
    x = torch.randn(2, 1, 70 * 16, 128, dtype=torch.float64)
    seq = torch.cat([m.cls_token.expand(2, -1, -1), m.patchify(x)[:, :64].flatten(1, 2) + m.pos_embed[:, :512]], 1)
    h = m.pre_norm(seq)
    q = torch.randn(2, 3, m.config.embed_dim, dtype=torch.float64)
    for blk in m.blocks:
        plain = blk(h)
        z = torch.cat([q, h], 1)
        z = blk.norm1(z + blk.attn(z, num_queries=3))
        z = blk.norm2(z + blk.mlp(z))
        assert (z[:, 3:] - plain).abs().max().item() <= 1e-12
        h = plain
    # end to end: the last cls of the query path is the plain encoder's (with 64-row chunking)
    qt = m.encode_queries(x, torch.randn(2, 4, m.config.embed_dim, dtype=torch.float64))[1]
    assert (qt - m.encode(x).cls[:, -1]).abs().max().item() <= 1e-12


def test_beats_queries_leave_patch_outputs_unchanged_with_padding():
    bb = _beats_backbone()
    m = bb.model
    fbank = torch.randn(2, 5 * 16, 128, dtype=torch.float64)
    valid = torch.tensor([80, 37])
    outs, valid_patches, (t, f) = m(fbank, valid)
    q = torch.randn(2, 2, 4, 32, dtype=torch.float64)
    _, last, _, _ = m.forward_queries(fbank, valid, q)
    assert valid_patches.tolist() == [40, 19]  # the official linear frame->patch mask: ceil(37 / 2)
    assert (last - outs[-1]).abs().max().item() <= 1e-12
    # cls: the mean of the last layer's valid rows, as `encode` pools it
    rows = (valid_patches + f - 1) // f
    want = torch.stack([outs[-1][i, : int(r) * f].mean(0) for i, r in enumerate(rows)])
    assert (bb.encode_queries(fbank, valid, q).cls - want).abs().max().item() <= 1e-12


def test_plain_attention_is_untouched_without_queries():
    torch.manual_seed(0)
    m = AudioViT(ViTConfig(embed_dim=32, depth=1, num_heads=2, gated=True, pos_layout="bat", pos_len=512), seed=0)
    x = torch.randn(2, 9, 32)
    assert torch.equal(m.blocks[0].attn(x), m.blocks[0].attn(x, num_queries=0))


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def manifest(fsdd_root, tmp_path_factory):
    """40 real FSDD clips of one speaker: take 0 test, takes 1-3 train."""
    root = tmp_path_factory.mktemp("fsdd_vqt")
    (root / "audio").mkdir()
    rows = ["path,labels,split"]
    for digit in range(10):
        for take in range(4):
            name = f"{digit}_jackson_{take}.wav"
            shutil.copy(fsdd_root / "recordings" / name, root / "audio" / name)
            rows.append(f"audio/{name},{digit},{'test' if take < 1 else 'train'}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return f"manifest:{root / 'manifest.csv'}"


def test_python_evaluate_online_trains_queries_and_beats_chance(manifest, tmp_path):
    from probekit.api import evaluate

    res = evaluate("bat-tiny-fsdd", datasets=[manifest], probes=["vqt"], online=True, device="cpu",
                   progress=False, workers=0, results_dir=tmp_path / "r", cache_dir=tmp_path / "c",
                   train_overrides={"steps": 40, "batch_size": 10, "lr": 3e-3}, write=False)
    (rec,) = res.records
    assert rec.probe == "vqt" and rec.cache_key.endswith("(online)")
    acc = rec.aggregate["accuracy"].mean
    assert acc >= 40.0, acc  # chance is 10 %
    assert rec.seeds[0].extras["family"] == "bat" and rec.seeds[0].extras["num_queries"] == 10
    assert not (tmp_path / "c").exists()  # nothing cached


def test_queries_train_and_the_encoder_stays_frozen(manifest):
    from probekit.api import resolve_backbone, resolve_dataset
    from probekit.cache.online import OnlineTokens
    from probekit.train import TrainConfig, fit

    bb = resolve_backbone("bat-tiny", device="cpu")
    before = {k: v.clone() for k, v in bb.model.state_dict().items()}
    data = OnlineTokens.live(bb, resolve_dataset(manifest), "train", device="cpu")
    probe = make_probe("vqt", num_layers=data.num_layers, embed_dim=data.embed_dim, num_classes=data.num_classes,
                       num_queries=2, seed=0)
    q0 = probe.vqt.detach().clone()
    fit(probe, data, config=TrainConfig(steps=3, batch_size=8, device="cpu"), progress=False)
    assert not torch.equal(q0, probe.vqt.detach())  # the queries moved
    assert all(torch.equal(before[k], v) for k, v in bb.model.state_dict().items())  # the encoder did not
    assert "vqt" in probe.state_dict() and not any(k.startswith(("blocks", "model")) for k in probe.state_dict())


def test_cli_probe_vqt_online_writes_record_and_leaderboard_column(manifest, tmp_path, capsys):
    from probekit.cli import main

    res = tmp_path / "r"
    args = ["probe", "vqt", "-b", "bat-tiny", "-d", manifest, "--online", "--set", "steps=4", "--set",
            "batch_size=8", "--set", "num_queries=2", "--results-dir", str(res), "--device", "cpu",
            "--no-progress"]
    assert main(args) == 0
    (path,) = [p for p in res.rglob("*.json")]
    rec = json.loads(path.read_text())
    assert rec["probe"] == "vqt" and np.isfinite(rec["aggregate"]["accuracy"]["mean"])
    assert rec["hyperparameters"]["probe"]["num_queries"] == 2
    capsys.readouterr()
    assert main(["leaderboard", "--results-dir", str(res), "-d", rec["dataset"], "-f", "markdown"]) == 0
    assert "| backbone | VQT |" in capsys.readouterr().out


def test_contract_and_round_trip_with_a_live_batch(tmp_path):
    """What tests/probes/test_probe_registry.py and test_probe_io.py check of token probes, on a live batch."""
    from probekit.backbones import get_backbone
    from probekit.probes import PROBES, load_probe, save_probe

    cls = PROBES["vqt"]
    assert cls.label() == "VQT" and cls.needs_encoder and set(cls.search_space) <= set(cls.hparam_names())
    bb = get_backbone("bat-tiny")
    probe = make_probe("vqt", num_layers=bb.num_layers, embed_dim=bb.embed_dim, num_classes=3, num_queries=2, seed=3)
    twin = type(probe)(**probe.get_params())
    assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in probe.state_dict().items()}
    with torch.no_grad():
        for p in probe.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    probe.eval()
    batch = _batch(bb, torch.randn(2, 1, 48, 128), torch.tensor([48, 20]))
    path = save_probe(probe, tmp_path / "vqt.safetensors", metadata={"backbone": "bat-tiny"})
    back = load_probe(path, embed_dim=bb.embed_dim, num_layers=bb.num_layers, num_classes=3).eval()
    with torch.no_grad():
        assert torch.equal(back(batch), probe(batch))

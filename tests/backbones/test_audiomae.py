"""AudioMAE: parity with the official forward and preprocessing (re-derived in official_audiomae.py) on real
FSDD clips, both official checkpoint layouts, the frontend choices, the cards, and FSDD end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from official_audiomae import official_fbank, official_forward, official_pos_embed, official_state

from probekit.backbones import backbone_card, get_backbone, list_backbones
from probekit.backbones.audiomae import AudioMAEConfig, official_pos_table
from probekit.backbones.custom import check_backbone
from probekit.errors import BackboneError, CheckpointError, ConfigError

TOL, FE_TOL = 1e-5, 1e-4
DIM, DEPTH, HEADS = 64, 3, 4
REPO = Path(__file__).resolve().parents[2]
NAMES = ("audiomae", "audiomae-ft-as2m", "audiomae-tiny")


@pytest.fixture(autouse=True)
def _isolated_sha_index(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny random checkpoints in both official layouts (torch.save of the official dicts)."""
    root = tmp_path_factory.mktemp("audiomae")
    pre = official_state(dim=DIM, depth=DEPTH, seed=1, layout="pretrain")
    ft = official_state(dim=DIM, depth=DEPTH, seed=2, layout="finetuned")
    # misc.save_model's dict, less `args` (an argparse Namespace needs full unpickling; tested below)
    torch.save({"model": pre, "optimizer": {"state": {}}, "epoch": 32, "scaler": {"scale": 65536.0}},
               root / "pretrained.pth")
    torch.save({"model": ft}, root / "finetuned.pth")
    return {"pretrain": (root / "pretrained.pth", pre), "finetuned": (root / "finetuned.pth", ft), "root": root}


def _fsdd_batch(fsdd_root, names):
    """Real FSDD clips at 16 kHz, right-padded into one batch, with their lengths."""
    import soundfile as sf
    import torchaudio

    waves = []
    for n in names:
        w, sr = sf.read(fsdd_root / "recordings" / n, dtype="float32")
        waves.append(torchaudio.functional.resample(torch.as_tensor(w), sr, 16000))
    batch = torch.zeros(len(waves), max(len(w) for w in waves))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    return batch, torch.tensor([len(w) for w in waves]), waves


CLIPS = ("3_jackson_0.wav", "7_theo_12.wav", "0_george_5.wav", "9_yweweler_30.wav")


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("layout,name", [("pretrain", "audiomae-tiny"), ("finetuned", "audiomae-tiny")])
def test_every_block_and_frontend_match_official_on_padded_fsdd_batch(files, fsdd_root, layout, name):
    path, sd = files[layout]
    bb = get_backbone(name, checkpoint=path, num_heads=HEADS)
    assert bb.checkpoint_format == f"audiomae-{layout}" and bb.checkpoint_sha256 and bb.seed is None
    wave, lengths, clips = _fsdd_batch(fsdd_root, CLIPS)
    # frontend: each clip in the padded batch equals the official loader on that clip alone
    feats = bb.frontend(wave, lengths)
    ref_feats = torch.stack([official_fbank(w) for w in clips]).unsqueeze(1)  # (B, 1, 1024, 128)
    assert feats.shape == ref_feats.shape == (4, 1, 1024, 128)
    fe_err = (feats - ref_feats).abs().max().item()
    assert fe_err <= FE_TOL, fe_err
    assert torch.allclose(feats[:, 0, -1], torch.full((4, 128), 4.2677393 / (4.5689974 * 2)))  # 0.46703
    # every block, cls and patches, on the padded input (no mask, as the official code)
    out = bb.forward_tokens(wave, lengths)
    ref, _ = official_forward(sd, ref_feats, HEADS)
    assert out.grid == (64, 8) and out.patch.shape == (4, DEPTH, 512, DIM)
    errs = [max((out.patch[:, i] - r[:, 1:]).abs().max().item(), (out.cls[:, i] - r[:, 0]).abs().max().item())
            for i, r in enumerate(ref)]
    assert max(errs) <= TOL, errs
    # valid_rows: the rows holding real frames (any of 16), so probes can drop the padding
    frames = [1 + (int(n) - 400) // 160 for n in lengths]
    assert out.valid_rows.tolist() == [-(-f // 16) for f in frames]
    assert out.valid_rows.max() < 64


def test_table_is_used_as_stored_with_the_transposed_grid_quirk(files, tmp_path):
    """The stored table is added index by index (row 1 + n encodes (n % 64, n // 64) on the 8 x 64 grid):
    a different stored table changes the tokens exactly as the official forward says; nothing is rebuilt."""
    _, sd = files["pretrain"]
    table = torch.from_numpy(official_pos_embed(DIM)).float()
    n = 8 * 3 + 5  # token (t=3, f=5)
    q = DIM // 4  # columns: sin(w * omega_k) k < q, cos(w * omega_k), then the same for h; omega_0 = 1
    np.testing.assert_allclose(table[1 + n, [0, q, 2 * q, 3 * q]].numpy(),
                               [np.sin(n % 64), np.cos(n % 64), np.sin(n // 64), np.cos(n // 64)], atol=1e-6)
    odd = dict(sd, pos_embed=torch.randn(1, 513, DIM, generator=torch.Generator().manual_seed(9)) * 0.5)
    path = tmp_path / "odd.pth"
    torch.save({"model": odd}, path)
    bb = get_backbone("audiomae-tiny", path, num_heads=HEADS)
    assert torch.equal(bb.model.pos_embed, odd["pos_embed"])
    x = torch.randn(2, 1, 1024, 128, generator=torch.Generator().manual_seed(1))
    out = bb.encode(x)
    ref, _ = official_forward(odd, x, HEADS)
    assert max((out.patch[:, i] - r[:, 1:]).abs().max().item() for i, r in enumerate(ref)) <= TOL
    # random init builds the table models_mae.initialize_weights builds
    assert torch.equal(official_pos_table(AudioMAEConfig(embed_dim=768)),
                       torch.from_numpy(official_pos_embed(768)).float().unsqueeze(0))


def test_no_norm_on_the_last_block(files):
    """Per-layer tokens are the block outputs; the pretrain layout's `norm` (models_mae) is not applied."""
    path, sd = files["pretrain"]
    bb = get_backbone("audiomae-tiny", path, num_heads=HEADS)
    x = torch.randn(1, 1, 1024, 128, generator=torch.Generator().manual_seed(2))
    ref, normed = official_forward(sd, x, HEADS)
    out = bb.encode(x, layers=[-1])
    assert (out.patch[:, 0] - ref[-1][:, 1:]).abs().max().item() <= TOL
    assert (out.patch[:, 0] - normed[:, 1:]).abs().max().item() > 0.1


def test_shorter_inputs_use_the_table_prefix(files):
    """Below 1,024 frames (ESC-50 512, Speech Commands 128 presets) tokens take the first 1 + N rows."""
    path, sd = files["finetuned"]
    bb = get_backbone("audiomae-tiny", path, num_heads=HEADS)
    x = torch.randn(2, 1, 168, 128, generator=torch.Generator().manual_seed(3))  # 10 rows, 8 frames dropped
    out = bb.encode(x, torch.tensor([168, 40]))
    ref, _ = official_forward(sd, x, HEADS)
    assert out.grid == (10, 8) and out.valid_rows.tolist() == [10, 3]
    assert max((out.patch[:, i] - r[:, 1:]).abs().max().item() for i, r in enumerate(ref)) <= TOL
    with pytest.raises(BackboneError, match="1040 frames exceed the 1024"):
        bb.encode(torch.zeros(1, 1, 1040, 128))


# ---------------------------------------------------------------------------------------------- formats
def test_formats_are_detected_and_strict(files, tmp_path):
    pre, ft = files["pretrain"][0], files["finetuned"][0]
    # the published names take their own layout and point at the other one
    with pytest.raises(CheckpointError, match=r"\(audiomae-finetuned\): backbone 'audiomae' takes.*audiomae-ft-as2m"):
        get_backbone("audiomae", ft)
    with pytest.raises(CheckpointError, match=r"\(audiomae-pretrain\): backbone 'audiomae-ft-as2m' takes"):
        get_backbone("audiomae-ft-as2m", pre)
    # width 64 -> the tiny size's 2 heads unless told (heads are not in the file)
    assert get_backbone("audiomae-tiny", pre).num_heads == 2
    # another family's loader names the architecture instead of listing keys
    with pytest.raises(CheckpointError, match="holds a audiomae-vit checkpoint"):
        get_backbone("bat-tiny", pre)
    _, sd = files["pretrain"]
    bad = tmp_path / "extra.pth"
    torch.save({"model": dict(sd, **{"blocks.0.attn.gate.weight": torch.zeros(DIM, DIM)})}, bad)
    with pytest.raises(CheckpointError, match="unexpected keys.*blocks.0.attn.gate.weight"):
        get_backbone("audiomae-tiny", bad)
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": dict(sd, projector=torch.zeros(3))}, foreign)
    with pytest.raises(CheckpointError, match=r"\(audiomae-pretrain\): unexpected keys \(1\): projector"):
        get_backbone("audiomae-tiny", foreign)
    nan = tmp_path / "nan.pth"
    broken = {k: v.clone() for k, v in sd.items()}
    broken["blocks.1.mlp.fc1.weight"][0, 0] = float("nan")
    torch.save({"model": broken}, nan)
    with pytest.raises(CheckpointError, match="hold NaN/Inf: blocks.1.mlp.fc1.weight"):
        get_backbone("audiomae-tiny", nan)
    # misc.save_model stores `args` (argparse.Namespace): refused unless trusted
    ns = tmp_path / "with_args.pth"
    torch.save({"model": sd, "args": argparse.Namespace(model="mae_vit_base_patch16")}, ns)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        get_backbone("audiomae-tiny", ns)
    a = get_backbone("audiomae-tiny", ns, trust_checkpoint=True, num_heads=HEADS)
    b = get_backbone("audiomae-tiny", pre, num_heads=HEADS)
    x = torch.randn(1, 1, 64, 128)
    assert torch.equal(a.encode(x).patch, b.encode(x).patch)
    # fp16 copies and a bare encoder state dict load too
    half = tmp_path / "bare_half.pth"
    torch.save({k: v.half() for k, v in sd.items() if not k.startswith(("decoder", "mask", "norm."))}, half)
    c = get_backbone("audiomae-tiny", half, num_heads=HEADS)
    assert c.checkpoint_format == "audiomae-pretrain"
    assert (c.encode(x).patch - b.encode(x).patch).abs().max().item() < 0.05


def test_cli_extract_loads_the_official_file(files, fsdd_root, tmp_path):
    from probekit.cli import main
    from probekit.cache.store import TokenStore, list_stores

    root = tmp_path / "ds"
    (root / "audio").mkdir(parents=True)
    rows = ["path,labels,split"]
    for d in range(3):
        name = f"{d}_jackson_1.wav"
        (root / "audio" / name).write_bytes((fsdd_root / "recordings" / name).read_bytes())
        rows.append(f"audio/{name},{d},test")
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    args = ["extract", "--backbone", "audiomae-tiny", "--checkpoint", str(files["pretrain"][0]), "--dataset",
            f"manifest:{root / 'm.csv'}", "--split", "test", "--cache-dir", str(tmp_path / "c"), "--device", "cpu",
            "--workers", "0", "--no-progress"]
    assert main(args) == 0
    (store,) = [TokenStore(p) for p in list_stores(tmp_path / "c")]
    assert store.layout.grid == (64, 8) and store.layout.num_clips == 3


# ---------------------------------------------------------------------------------------------- frontend
def test_frontend_choice_default_presets_and_limits():
    bb = get_backbone("audiomae-tiny")
    wave = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    assert bb.frontend.config.target_frames == 1024 and bb.frontend.config.mean == -4.2677393
    esc = bb.with_frontend("audiomae-esc50")
    assert esc.model is bb.model and esc.frontend(wave).shape == (1, 1, 512, 128)
    assert (esc.frontend.config.mean, esc.frontend.config.std) == (-6.6268077, 5.358466)
    assert esc.cache_key()["frontend"] != bb.cache_key()["frontend"]
    assert get_backbone("audiomae-tiny", frontend="audiomae-sc2").forward_tokens(wave).grid == (8, 8)
    assert get_backbone("audiomae-tiny", frontend="audiomae-fsdd").forward_tokens(wave).grid == (16, 8)
    with pytest.raises(ConfigError, match=r"target_frames=2048 is not in 16..1024"):
        bb.with_frontend({"kind": "fbank", "target_frames": 2048})
    with pytest.raises(ConfigError, match="target_frames=None"):
        get_backbone("audiomae-tiny", frontend="eat-native")


# ---------------------------------------------------------------------------------------------- registry
def test_registered_names_cards_and_conformance():
    assert list_backbones("audiomae*") == list(NAMES)
    base = backbone_card("audiomae")
    # models_vit's 85,659,407 trainable (main_finetune_as log, 527 classes) minus fc_norm and head
    assert base.params == 85_659_407 - (768 * 527 + 527) - 2 * 768 == 85_252_608
    assert (base.embed_dim, base.num_layers, base.num_heads) == (768, 12, 12)
    assert backbone_card("audiomae-ft-as2m").params == base.params
    for name in NAMES:
        card = backbone_card(name)
        text = (REPO / "backbones" / f"{name}.md").read_text()
        for needle in ("Architecture", "Frontend", "Checkpoint formats", "Citation", "Training data"):
            assert needle in text, (name, needle)
        rows = dict(line.strip("|").split("|", 1) for line in text.splitlines() if line.startswith("| "))
        rows = {k.strip(): v.strip() for k, v in rows.items()}
        assert rows["embed dim / layers / heads"] == f"{card.embed_dim} / {card.num_layers} / {card.num_heads}"
        shown = f"{card.params / 1e6:.1f}M" if card.params >= 1e6 else f"{card.params / 1e3:.0f}k"
        assert rows["parameters"].startswith(f"{shown} trainable"), (name, rows["parameters"])
        for ds in card.training_data:
            assert f"`{ds}`" in rows["training data"], (name, ds)
    bb = get_backbone("audiomae-tiny", seed=4)
    assert bb.card.params == sum(p.numel() for p in bb.model.parameters()) == backbone_card("audiomae-tiny").params
    assert all(r.ok for r in check_backbone(bb))
    with pytest.raises(BackboneError, match=r"does not accept option\(s\) \['chunk_rows'\]"):
        get_backbone("audiomae-tiny", chunk_rows=4)
    with pytest.raises(BackboneError, match="use_ema"):
        get_backbone("audiomae-tiny", use_ema=True)


# ---------------------------------------------------------------------------------------------- end to end
def test_fsdd_cache_then_linear_and_cgp(fsdd_root, tmp_path):
    """Extract real FSDD clips into the cache with audiomae-tiny, then train linear and CGP from it."""
    from probekit.api import evaluate
    from probekit.results.records import read_record

    root = tmp_path / "fsdd"
    (root / "audio").mkdir(parents=True)
    rows = ["path,labels,split"]
    for digit in range(10):
        for take in range(3):
            name = f"{digit}_jackson_{take}.wav"
            (root / "audio" / name).write_bytes((fsdd_root / "recordings" / name).read_bytes())
            rows.append(f"audio/{name},{digit},{'test' if take < 1 else 'train'}")
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    # the FSDD preset (256 frames) keeps this short; the default 1,024-frame path is extracted by the CLI test
    bb = get_backbone("audiomae-tiny", frontend="audiomae-fsdd")
    res = evaluate(bb, datasets=[f"manifest:{root / 'm.csv'}"], probes=["linear", "cgp"],
                   hparams={"cgp": {"prototypes": 8}}, train_overrides={"steps": 15, "batch_size": 10},
                   cache_dir=tmp_path / "c", results_dir=tmp_path / "r", device="cpu", progress=False, workers=0)
    assert [r.probe for r in res.records] == ["linear", "cgp"]
    for p in res.paths:
        rec = read_record(p)
        assert rec.backbone.name == "audiomae-tiny" and 0.0 <= rec.score <= 100.0
    from probekit.cache.store import TokenStore, list_stores

    stores = [TokenStore(p) for p in list_stores(tmp_path / "c")]
    assert len(stores) == 2 and all(s.layout.grid == (16, 8) for s in stores)
    gates = res.records[1].seeds[0].extras["gates"]
    assert len(gates) == 4 and sum(gates) == pytest.approx(1.0, abs=1e-5)

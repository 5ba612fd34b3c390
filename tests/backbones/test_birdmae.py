"""Bird-MAE: parity with the re-derived official path (official_birdmae.py) on real FSDD clips at 32 kHz, the
Hugging Face safetensors layout by file path, the 32 kHz cache pipeline, and FSDD end to end (linear + cgp)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from official_birdmae import official_blocks, official_frontend, official_pooled
from safetensors.torch import save_file

from probekit.audio.io import load_audio
from probekit.backbones import backbone_card, get_backbone, list_backbones
from probekit.backbones.birdmae import pos_table
from probekit.backbones.custom import check_backbone
from probekit.errors import BackboneError, CheckpointError

REPO = Path(__file__).resolve().parents[2]
D, DEPTH, HEADS = 64, 4, 2
TOL_BLOCKS, TOL_FRONTEND = 1e-5, 1e-4
CLIPS = ["3_jackson_0", "7_theo_12", "0_george_21", "9_nicolas_3"]  # 0.3 .. 0.8 s: a padded batch


def official_state(seed: int = 0, d: int = D, depth: int = DEPTH) -> dict[str, torch.Tensor]:
    """A random Bird-MAE encoder in the HF model.safetensors layout (timm names) plus a fine-tuned head."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.05):
        return torch.randn(*shape, generator=g) * s

    # the stored table: Bird-MAE's sin-cos plus noise, so "used as stored" is tested, not a rebuilt one
    sd = {"cls_token": r(1, 1, d, s=0.02), "pos_embed": pos_table(d).unsqueeze(0) + r(1, 257, d, s=0.01),
          "patch_embed.proj.weight": r(d, 1, 16, 16), "patch_embed.proj.bias": r(d, s=0.02)}
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": 1 + r(d, s=0.1), p + "norm1.bias": r(d, s=0.1),
                   p + "attn.qkv.weight": r(3 * d, d, s=0.15), p + "attn.qkv.bias": r(3 * d, s=0.02),
                   p + "attn.proj.weight": r(d, d, s=0.1), p + "attn.proj.bias": r(d, s=0.02),
                   p + "norm2.weight": 1 + r(d, s=0.1), p + "norm2.bias": r(d, s=0.1),
                   p + "mlp.fc1.weight": r(4 * d, d, s=0.1), p + "mlp.fc1.bias": r(4 * d, s=0.02),
                   p + "mlp.fc2.weight": r(d, 4 * d, s=0.05), p + "mlp.fc2.bias": r(d, s=0.02)})
    sd.update({"norm.weight": 1 + r(d, s=0.1), "norm.bias": r(d, s=0.1), "fc_norm.weight": 1 + r(d, s=0.1),
               "fc_norm.bias": r(d, s=0.1), "head.weight": r(21, d), "head.bias": r(21)})
    return sd


@pytest.fixture(autouse=True)
def _isolated_sha_index(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "sha"))


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A Hugging Face snapshot folder: model.safetensors + config.json (the release's field names)."""
    sd = official_state()
    d = tmp_path_factory.mktemp("bird-mae-hf")
    save_file(sd, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"model_type": "bird_mae", "embed_dim": D, "depth": DEPTH,
                                               "num_heads": HEADS, "img_size_x": 512, "img_size_y": 128}))
    return d, sd


@pytest.fixture(scope="module")
def waves(fsdd_root):
    """Real FSDD clips decoded by probekit at 32 kHz (the rate the cache asks for), plus a 6.4 s clip."""
    w = [load_audio(fsdd_root / "recordings" / f"{c}.wav", sample_rate=32000) for c in CLIPS]
    long = torch.cat([load_audio(fsdd_root / "recordings" / f"{k}_jackson_1.wav", sample_rate=32000)
                      for k in range(10)])
    assert long.numel() > 160000 and max(x.numel() for x in w) < 160000 - 800
    return w, long


def _padded(ws):
    n = max(x.numel() for x in ws)
    out = torch.zeros(len(ws), n)
    for i, x in enumerate(ws):
        out[i, : x.numel()] = x
    return out, torch.tensor([x.numel() for x in ws])


def test_registered_sizes_and_cards():
    assert list_backbones("bird-mae*") == ["bird-mae-base", "bird-mae-huge", "bird-mae-large", "bird-mae-tiny"]
    sizes = {n: (c.embed_dim, c.num_layers, c.num_heads, c.params) for n in list_backbones("bird-mae*")
             for c in [backbone_card(n)]}
    assert sizes["bird-mae-base"] == (768, 12, 12, 85_255_680)
    assert sizes["bird-mae-large"] == (1024, 24, 16, 302_577_664)
    assert sizes["bird-mae-huge"] == (1280, 32, 16, 630_013_440)
    assert sizes["bird-mae-tiny"][:3] == (64, 4, 2)
    for name in ("bird-mae-base", "bird-mae-large", "bird-mae-huge"):
        text = (REPO / "backbones" / f"{name}.md").read_text()
        c = backbone_card(name)
        for needle in ("Architecture", "Frontend", "Checkpoint formats", "Citation", "Training data", "Licence",
                       "32 kHz", "a514ef50"):
            assert needle in text, (name, needle)
        rows = {k.strip(): v.strip() for k, v in (ln.strip("|").split("|", 1) for ln in text.splitlines()
                                                   if ln.startswith("| "))}
        assert rows["embed dim / layers / heads"] == f"{c.embed_dim} / {c.num_layers} / {c.num_heads}"
        assert rows["parameters"].startswith(f"{c.params / 1e6:.1f}M trainable")
        assert "`xcl`" in rows["training data"]


def test_frontend_parity_padded_batch(waves):
    ws, _ = waves
    ref = official_frontend(ws)  # one official batch: all clips shorter than 5 s
    fe = get_backbone("bird-mae-tiny").frontend
    wave, lengths = _padded(ws)
    ours = fe(wave, lengths)
    err = (ours - ref).abs().max().item()
    print(f"\nbird-mae frontend, padded FSDD batch of {len(ws)}: max |diff| {err:.2e}")
    assert ours.shape == (4, 1, 512, 128) and err <= TOL_FRONTEND
    # each clip alone equals its row in the batch (pad value: per clip == batch minimum here)
    assert torch.equal(fe.features(ws[1]), ours[1])
    assert math.isclose(float(ref[0, 0, -1, 0]), (math.log(torch.finfo(torch.float32).eps) + 7.2) / 8.86,
                        rel_tol=1e-6)


def test_frontend_parity_long_clip_cropped(waves):
    _, long = waves
    ref = official_frontend([long])
    ours = get_backbone("bird-mae-tiny").frontend(long)
    err = (ours - ref).abs().max().item()
    print(f"\nbird-mae frontend, 6.4 s clip cropped to 5 s: max |diff| {err:.2e}")
    assert err <= TOL_FRONTEND


def test_block_parity_every_layer_hf_folder(hf_folder, waves):
    folder, sd = hf_folder
    bb = get_backbone("bird-mae-tiny", checkpoint=folder)
    assert bb.checkpoint_sha256 and bb.num_heads == HEADS
    assert torch.equal(bb.model.pos_embed, sd["pos_embed"])  # the stored table, not a rebuilt one
    ws, long = waves
    for name, batch in (("padded FSDD batch of 4", ws), ("6.4 s clip", [long])):
        x = official_frontend(batch)
        ref = official_blocks(sd, x, HEADS)
        wave, lengths = _padded(batch)
        out = bb.forward_tokens(wave, lengths)  # our frontend + encoder, end to end
        assert out.grid == (32, 8) and out.patch.shape == (len(batch), DEPTH, 256, D)
        errs = [max((out.patch[:, i] - ref[i][:, 1:]).abs().max().item(),
                    (out.cls[:, i] - ref[i][:, 0]).abs().max().item()) for i in range(DEPTH)]
        print(f"\nbird-mae blocks 1..{DEPTH}, {name}: max |diff| " + ", ".join(f"{e:.2e}" for e in errs))
        assert max(errs) <= TOL_BLOCKS, errs
        pooled = bb.model.pooled(x)
        assert (pooled - official_pooled(sd, ref[-1])).abs().max().item() <= TOL_BLOCKS
    # valid rows: ceil(valid frames / 16) of the clip's own audio (0.3 s -> 28 frames -> 2 rows)
    wave, lengths = _padded(ws)
    vr = bb.forward_tokens(wave, lengths).valid_rows
    expect = [math.ceil((1 + (n - 800) // 320) / 16) for n in lengths.tolist()]
    assert vr.tolist() == expect


def test_file_path_and_format_checks(hf_folder, tmp_path):
    folder, sd = hf_folder
    single = tmp_path / "bird.safetensors"
    shutil.copy(folder / "model.safetensors", single)
    bb = get_backbone("bird-mae-tiny", single)  # a file alone: heads from the name's size
    assert bb.num_heads == HEADS and bb.cache_key()["weights"] == {"sha256": bb.checkpoint_sha256}
    # the same flat dict saved with torch.save loads too
    pt = tmp_path / "bird.pt"
    torch.save(sd, pt)
    assert torch.equal(get_backbone("bird-mae-tiny", pt).model.blocks[0].attn.qkv.weight,
                       sd["blocks.0.attn.qkv.weight"])
    with pytest.raises(CheckpointError, match=r"\(bird-mae-hf\): holds a bird-mae checkpoint, not an EAT"):
        get_backbone("eat-tiny", single)
    bad = dict(sd, **{"decoder_embed.weight": torch.zeros(2, 2)})
    save_file(bad, str(p := tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): decoder_embed.weight"):
        get_backbone("bird-mae-tiny", p)
    save_file({k: v for k, v in sd.items() if k != "blocks.3.mlp.fc2.bias"}, str(p := tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match=r"does not match Bird-MAE.*blocks.3.mlp.fc2.bias"):
        get_backbone("bird-mae-tiny", p)
    nan = {k: v.clone() for k, v in sd.items()}
    nan["blocks.1.attn.proj.weight"][0, 0] = float("nan")
    save_file(nan, str(p := tmp_path / "nan.safetensors"))
    with pytest.raises(CheckpointError, match=r"hold NaN/Inf: blocks.1.attn.proj.weight"):
        get_backbone("bird-mae-tiny", p)
    # an audio-ViT (EAT/BAT) file is not taken for Bird-MAE
    eat = tmp_path / "eat.safetensors"
    save_file({k: v.contiguous() for k, v in get_backbone("bat-tiny").model.state_dict().items()}, str(eat))
    with pytest.raises(CheckpointError, match="not a Bird-MAE encoder"):
        get_backbone("bird-mae-tiny", eat)


def test_sample_rate_frontend_and_cache_key():
    bb = get_backbone("bird-mae-tiny", seed=1)
    assert bb.sample_rate == 32000 and bb.frontend.config.sample_rate == 32000
    key = bb.cache_key()
    assert key["sample_rate"] == 32000 and key["frontend"]["sample_rate"] == 32000
    assert key["frontend"]["kind"] == "bird-mae-fbank" and key["weights"] == {"random_init_seed": 1}
    with pytest.raises(BackboneError, match="not a Bird-MAE frontend"):
        bb.with_frontend("eat-esc50").frontend  # noqa: B018 - a 16 kHz preset must not run silently
    with pytest.raises(BackboneError, match="takes 16..512 frames"):
        bb.encode(torch.zeros(1, 1, 528, 128))
    assert bb.frontend.valid_frames(32000) == 98 and bb.frontend.valid_frames(10**6) == 498
    assert bb.frontend.valid_frames(100) == 1


def test_check_backbone_on_real_audio_at_32k(waves):
    ws, _ = waves
    wave, lengths = _padded(ws[:2])
    results = check_backbone(get_backbone("bird-mae-tiny", seed=3), wave=wave, lengths=lengths)
    assert all(r.ok for r in results), [r for r in results if not r.ok]


def test_fsdd_extract_32k_then_linear_and_cgp(hf_folder, fsdd_root, tmp_path, capsys):
    """CLI extract with --checkpoint on an FSDD manifest (decoded at 32 kHz), then linear + cgp from the cache."""
    from probekit.cache.reader import open_cache
    from probekit.cli import main
    from probekit.probes import make_probe
    from probekit.train import TrainConfig, fit, predict

    folder, _ = hf_folder
    d = tmp_path / "m"
    d.mkdir()
    rows = ["path,labels,split"]
    for digit in range(4):
        for take in range(3):
            name = f"{digit}_jackson_{take}.wav"
            shutil.copy(fsdd_root / "recordings" / name, d / name)
            rows.append(f"{name},d{digit},{'test' if take == 2 else 'train'}")
    (d / "m.csv").write_text("\n".join(rows) + "\n")
    cache = tmp_path / "cache"
    rc = main(["extract", "--backbone", "bird-mae-tiny", "--checkpoint", str(folder / "model.safetensors"),
               "--dataset", f"manifest:{d / 'm.csv'}", "--cache-dir", str(cache), "--workers", "0",
               "--batch-size", "4", "--dtype", "float32", "--device", "cpu"])
    assert rc == 0, capsys.readouterr()
    stores = sorted(cache.glob("*.zarr"))
    assert len(stores) == 2
    by_split = {open_cache(s).store.key["dataset"]["split"]: open_cache(s) for s in stores}
    train, test = by_split["train"], by_split["test"]
    assert train.num_clips == 8 and test.num_clips == 4 and train.grid == (32, 8)
    key = train.store.key
    assert key["backbone"]["sample_rate"] == 32000 and key["frontend"]["sample_rate"] == 32000
    # the store holds what the backbone computes on the clip decoded at 32 kHz
    bb = get_backbone("bird-mae-tiny", folder / "model.safetensors")
    clip = load_audio(d / train.clip_ids[0], sample_rate=32000)
    ref = bb.forward_tokens(clip.unsqueeze(0))
    from probekit.tokens import TokenRequest

    b = next(train.batches(TokenRequest(layers="all"), 1))
    assert (b.patch[0] - ref.patch[0]).abs().max().item() <= 1e-5
    assert b.valid_rows[0].item() == ref.valid_rows[0].item()
    for probe_name in ("linear", "cgp"):
        probe = make_probe(probe_name, num_layers=train.num_layers, embed_dim=train.embed_dim,
                           num_classes=train.num_classes, seed=0)
        res = fit(probe, train, config=TrainConfig(steps=4, batch_size=4, device="cpu"), progress=False)
        scores = predict(res.probe, test, batch_size=4)
        assert scores.shape[0] == 4 and np.isfinite(scores).all()

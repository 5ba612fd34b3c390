"""BEATs: parity with the official forward (re-derived in official_beats.py) on real FSDD clips, the official
checkpoint layout, the padding-mask quirk, and extraction + probes end to end on beats-tiny."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torchaudio
from official_beats import (
    beats_official,
    bucket_official,
    fbank_official,
    patch_mask_official,
    random_beats_checkpoint,
)

from probekit.backbones import backbone_card, get_backbone, list_backbones
from probekit.backbones.beats import (
    BeatsFbank,
    BeatsFbankConfig,
    BeatsModel,
    beats_param_count,
    relative_buckets,
)
from probekit.backbones.checkpoints import load_checkpoint
from probekit.backbones.custom import check_backbone
from probekit.errors import BackboneError, CheckpointError, ConfigError

TOL, FRONTEND_TOL = 1e-5, 1e-4


@pytest.fixture(autouse=True)
def _isolated_sha_index(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "sha"))


def _clip(fsdd_root, name):
    import soundfile as sf

    w, sr = sf.read(fsdd_root / "recordings" / name, dtype="float32")
    return torchaudio.functional.resample(torch.as_tensor(w), sr, 16000)


def _batch(waves):
    n = max(len(w) for w in waves)
    wave, pad = torch.zeros(len(waves), n), torch.ones(len(waves), n, dtype=torch.bool)
    for i, w in enumerate(waves):
        wave[i, : len(w)], pad[i, : len(w)] = w, False
    return wave, pad, torch.tensor([len(w) for w in waves])


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A tiny random checkpoint in the official layout ({'cfg', 'model'}), saved with torch.save."""
    ck = random_beats_checkpoint(layers=3, seed=3)
    path = tmp_path_factory.mktemp("beats") / "BEATs_tiny.pt"
    torch.save(ck, path)
    return path, ck


@pytest.fixture(scope="module")
def fsdd_batch(fsdd_root):
    names = ["3_jackson_0.wav", "7_theo_12.wav", "0_george_0.wav", "9_lucas_3.wav"]
    return _batch([_clip(fsdd_root, n) for n in names])


def _compare(bb, ck, wave, pad, lengths):
    """Max |probekit - official| per block, for a (possibly padded) batch."""
    fb = fbank_official(wave)
    ours = bb.forward_tokens(wave, lengths)
    t, f = ours.grid
    assert (t, f) == (fb.shape[1] // 16, 8)
    mask = patch_mask_official(pad, fb.shape[1], t * f) if pad.any() else None
    ref = beats_official(ck["model"], ck["cfg"], fb, mask)
    assert ours.patch.shape == (wave.shape[0], len(ref), t * f, ref[0].shape[-1])
    return [(ours.patch[:, i] - r).abs().max().item() for i, r in enumerate(ref)], ours, mask


def test_frontend_equals_official_preprocess_on_fsdd(fsdd_batch):
    wave, pad, lengths = fsdd_batch
    feats, valid = BeatsFbank()(wave, lengths)
    ref = fbank_official(wave)
    assert feats.shape == ref.shape == (4, 1 + (wave.shape[1] - 400) // 160, 128)
    assert (feats - ref).abs().max().item() <= FRONTEND_TOL
    # the official sample mask -> frame mask (linear: drop samples % frames, a frame is padding iff all of it is)
    frames = ref.shape[1]
    per = wave.shape[1] // frames
    official_frames = [int((~pad[i, : frames * per].reshape(frames, per).all(-1)).sum()) for i in range(4)]
    assert valid.tolist() == official_frames
    # one clip alone through the token-cache call equals its row of the batch (samples past it are zeros)
    fe = BeatsFbank(BeatsFbankConfig(target_frames=frames))
    one = fe.features(wave[1, : lengths[1]])
    assert torch.equal(one[0], feats[1]) and fe.valid_frames(int(lengths[1])) == official_frames[1]


def test_parity_every_block_padded_fsdd_batch(official, fsdd_batch):
    path, ck = official
    bb = get_backbone("beats-tiny", path)
    errs, ours, mask = _compare(bb, ck, *fsdd_batch)
    assert mask is not None and mask.any()  # three of the four clips are padded
    assert max(errs) <= TOL, errs
    # valid_rows: rows holding a patch the official mask keeps; cls: mean of those rows' patches
    kept = (~mask).sum(1)
    assert ours.valid_rows.tolist() == ((kept + 7) // 8).tolist()
    r = int(ours.valid_rows[1])
    assert torch.allclose(ours.cls[1], ours.patch[1, :, : r * 8].mean(1), atol=1e-6)


def test_parity_unpadded_clip_and_final_equals_last_block(official, fsdd_root):
    path, ck = official
    bb = get_backbone("beats-tiny", path)
    wave = _clip(fsdd_root, "5_yweweler_7.wav")[None]
    errs, ours, _ = _compare(bb, ck, wave, torch.zeros_like(wave, dtype=torch.bool), None)
    assert max(errs) <= TOL, errs
    assert ours.valid_rows.tolist() == [ours.grid[0]]
    assert torch.allclose(ours.cls[0], ours.patch[0].mean(1), atol=1e-6)  # no padding: the plain patch mean


def test_parity_long_input_reaches_the_log_and_clipped_buckets(fsdd_root, tmp_path):
    """16.6 s of FSDD speech: 832 patches, so distances pass max_exact (80) and the last bucket (~778)."""
    ck = random_beats_checkpoint(layers=2, seed=4)
    path = tmp_path / "long.pt"
    torch.save(ck, path)
    bb = get_backbone("beats-tiny", path)
    long = torch.cat([_clip(fsdd_root, f"{d}_nicolas_{k}.wav") for k in range(5) for d in range(10)])[:266_000]
    wave, pad, lengths = _batch([long, long[:100_000]])
    errs, ours, _ = _compare(bb, ck, wave, pad, lengths)
    assert ours.grid[0] * 8 >= 778 and max(errs) <= TOL, errs


def test_bucket_table_matches_the_official_rounding():
    n = 1200
    ours = relative_buckets(n, 320, 800)
    by_rel = {r: bucket_official(r) for r in range(-(n - 1), n)}
    assert all(int(ours[0, k]) == by_rel[k] for k in range(n)) and all(int(ours[q, 0]) == by_rel[-q] for q in range(n))
    assert [bucket_official(r) for r in (0, 1, 79, 80, -80, 799, 800, 5000, -5000)] == [0, 161, 239, 240, 80, 239 + 80, 319, 319, 159]
    assert int(ours.max()) == 319 and int(ours.min()) == 0


def test_padding_mask_maps_linearly_onto_the_patch_index():
    """docs/ENCODERS.md: 68 padded frames of 198 give 31 padded patches of 96 (not 4 whole rows + ...)."""
    model = BeatsModel(get_backbone("beats-tiny").model.config)
    _, valid, grid = model(torch.randn(1, 198, 128), torch.tensor([130]))
    assert grid == (12, 8) and 96 - int(valid[0]) == 31
    frame_pad = torch.arange(198)[None] >= 130
    official = patch_mask_official(frame_pad, 198, 96)
    assert int(official.sum()) == 31


def test_checkpoint_layout_loads_strictly(official, tmp_path):
    path, _ = official
    bb = get_backbone("beats-tiny", path)
    assert bb.seed is None and bb.checkpoint_sha256 and bb.checkpoint_format == "beats"
    assert bb.cache_key()["weights"] == {"sha256": bb.checkpoint_sha256}
    assert bb.card.params == beats_param_count(bb.model.config) == sum(p.numel() for p in bb.model.parameters())
    wave = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    ref = bb.forward_tokens(wave).patch
    # fine-tuned files add predictor.*: ignored
    ft = random_beats_checkpoint(layers=3, seed=3, finetuned=True)
    torch.save(ft, tmp_path / "ft.pt")
    assert torch.equal(get_backbone("beats-tiny", tmp_path / "ft.pt").forward_tokens(wave).patch, ref)
    # sizes come from the file's cfg, not the registered size (here 3 layers, not 4)
    assert bb.num_layers == 3 and get_backbone("beats-tiny").num_layers == 4

    def bad(edit, match):
        c = random_beats_checkpoint(layers=3, seed=3)
        edit(c)
        p = tmp_path / "bad.pt"
        torch.save(c, p)
        with pytest.raises(CheckpointError, match=match):
            get_backbone("beats-tiny", p)

    bad(lambda c: c["model"].pop("encoder.layers.2.fc1.bias"), r"bad.pt \(beats\): weights do not fit its cfg: .*encoder.layers.2.fc1.bias")
    bad(lambda c: c["model"].__setitem__("encoder.layers.9.fc1.bias", torch.zeros(3)), "Unexpected key.*encoder.layers.9.fc1.bias")
    bad(lambda c: c["cfg"].__setitem__("encoder_attention_heads", 3), r"\(beats\): BEATs cfg encoder_embed_dim=64 must divide")
    bad(lambda c: c["cfg"].__setitem__("layer_norm_first", True), r"\(beats\): BEATs cfg layer_norm_first=True")
    bad(lambda c: c["cfg"].__setitem__("encoder_layers", "3"), r"\(beats\): BEATs cfg encoder_layers='3' must be a positive")
    bad(lambda c: c["cfg"].pop("input_patch_size"), r"input_patch_size=-1 must be a positive integer")  # BEATsConfig's -1
    bad(lambda c: c["cfg"].__setitem__("encoder_layers", 4), "weights do not fit its cfg")
    bad(lambda c: c.pop("cfg"), r"\(beats\): no 'cfg' dict beside 'model'")

    def unshare(c):
        c["model"]["encoder.layers.1.self_attn.relative_attention_bias.weight"] = torch.zeros(320, 2)

    bad(unshare, r"relative_attention_bias of layer\(s\) \[1\] differs from layer 0's")

    def nan(c):
        c["model"]["encoder.layers.0.fc2.weight"][0, 0] = float("nan")

    bad(nan, r"\(beats\): 1 weight tensor\(s\) hold NaN/Inf: encoder.layers.0.fc2.weight")


def test_other_families_refuse_a_beats_file_and_vice_versa(official, tmp_path):
    path, _ = official
    with pytest.raises(CheckpointError, match=r"\(beats\): holds a beats checkpoint, not"):
        get_backbone("bat-tiny", path)
    with pytest.raises(CheckpointError, match=r"\(beats\): holds a beats checkpoint"):
        load_checkpoint(path)
    from safetensors.torch import save_file

    vit = get_backbone("bat-tiny").model.state_dict()
    save_file({k: v.contiguous() for k, v in vit.items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"\(bat-safetensors\): holds a audio-vit checkpoint, not a BEATs model"):
        get_backbone("beats-tiny", tmp_path / "model.safetensors")


def test_registered_sizes_cards_and_conformance(fsdd_batch):
    assert list_backbones("beats*") == ["beats-iter3", "beats-iter3-plus-as2m", "beats-tiny"]
    for name in ("beats-iter3", "beats-iter3-plus-as2m"):
        c = backbone_card(name)
        assert (c.embed_dim, c.num_layers, c.num_heads, c.params) == (768, 12, 12, 90_311_792)
        assert c.family == "beats" and c.checkpoint_formats == ("beats",) and "as2m" in c.training_data
    bb = get_backbone("beats-tiny", seed=2)
    wave, _, lengths = fsdd_batch
    assert all(r.ok for r in check_backbone(bb, wave=wave, lengths=lengths))
    sub = bb.forward_tokens(wave, lengths, layers=[-1, 0])
    full = bb.forward_tokens(wave, lengths)
    assert torch.equal(sub.patch, full.patch[:, [3, 0]])
    with pytest.raises(BackboneError, match="does not accept option"):
        get_backbone("beats-tiny", chunk_rows=64)
    with pytest.raises(BackboneError, match="at least 16 frames"):
        bb.encode(torch.zeros(1, 12, 128))
    with pytest.raises(ConfigError, match="target_frames"):
        BeatsFbankConfig(target_frames=8)
    # short clips are zero-padded to one patch row (the official code fails on them); the padding is masked
    t = bb.forward_tokens(torch.randn(1, 1000) * 0.1)
    assert t.grid == (1, 8) and t.valid_rows.tolist() == [1]


def test_frontend_configs_round_trip_through_with_frontend():
    bb = get_backbone("beats-tiny")
    other = bb.with_frontend({"kind": "beats-fbank", "target_frames": 64})
    assert other.frontend.config == BeatsFbankConfig(target_frames=64)
    assert other.cache_key()["frontend"]["target_frames"] == 64 and bb.cache_key()["frontend"]["target_frames"] is None
    with pytest.raises(ConfigError, match="unknown beats-fbank frontend field"):
        _ = bb.with_frontend({"kind": "beats-fbank", "frames": 64}).frontend


@pytest.fixture(scope="module")
def manifest(fsdd_root, tmp_path_factory):
    """60 real FSDD clips: digits 0-9 of one speaker, takes 0-1 test, 2-5 train."""
    root = tmp_path_factory.mktemp("fsdd_beats")
    (root / "audio").mkdir()
    rows = ["path,labels,split"]
    for digit in range(10):
        for take in range(6):
            name = f"{digit}_jackson_{take}.wav"
            shutil.copy(fsdd_root / "recordings" / name, root / "audio" / name)
            rows.append(f"audio/{name},{digit},{'test' if take < 2 else 'train'}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return f"manifest:{root / 'manifest.csv'}"


def test_extract_from_the_cli_then_train_linear_and_cgp(official, manifest, tmp_path):
    """`probekit extract --backbone beats-tiny --checkpoint FILE` fills the cache; linear and cgp train from it."""
    from probekit.api import evaluate
    from probekit.cache.store import TokenStore
    from probekit.cli import main

    path, _ = official
    cache = tmp_path / "cache"
    args = ["extract", "--backbone", "beats-tiny", "--checkpoint", str(path), "--dataset", manifest,
            "--cache-dir", str(cache), "--device", "cpu", "--workers", "0", "--dtype", "float32", "--no-progress"]
    assert main(args) == 0
    stores = sorted(cache.glob("*.zarr"))
    assert len(stores) == 2  # train and test
    store = TokenStore(stores[0])
    assert store.layout.grid[1] == 8 and store.layout.embed_dim == 64
    res = evaluate("beats-tiny", datasets=[manifest], probes=["linear", "cgp"], checkpoint=path, cache_dir=cache,
                   dtype="float32", device="cpu", progress=False, write=False, workers=0,
                   train_overrides={"steps": 20, "batch_size": 16}, hparams={"cgp": {"prototypes": 8}},
                   results_dir=tmp_path / "r")
    assert stores == sorted(cache.glob("*.zarr"))  # trained from the extracted cache, nothing re-extracted
    assert [r.probe for r in res.records] == ["linear", "cgp"]
    for r in res.records:
        assert json.dumps(r.seeds[0].metrics) and 0 <= r.seeds[0].metrics["accuracy"] <= 100

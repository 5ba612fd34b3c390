"""Dasheng: parity with an independent re-derivation of the official forward (official_dasheng.py) on real
FSDD clips, the official checkpoint layout loaded strictly, the batch-wide dB floor reproduced, cards, and
the time-only grid (T, 1) end to end: extraction into the cache, then linear / cgp / protobin / mhca."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from official_dasheng import dasheng_official, official_state_dict

from probekit.backbones import backbone_card, get_backbone, list_backbones
from probekit.errors import CheckpointError

NAMES = ("dasheng-0.6b", "dasheng-1.2b", "dasheng-base", "dasheng-tiny")
D, DEPTH, HEADS, TARGET_LENGTH = 32, 3, 4, 24  # 6 tokens per chunk: FSDD clips span 2-4 chunks


@pytest.fixture(autouse=True)
def _isolated_sha_index(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def official_sd():
    return official_state_dict(D, DEPTH, TARGET_LENGTH // 4, seed=1)


def _save(path, sd, config=None):
    if config is None:
        config = {"embed_dim": D, "depth": DEPTH, "num_heads": HEADS, "target_length": TARGET_LENGTH}
    torch.save({"model": sd, "config": config}, path)  # the zenodo layout `Dasheng.from_pretrained` reads
    return path


@pytest.fixture(scope="module")
def official_file(tmp_path_factory, official_sd):
    return _save(tmp_path_factory.mktemp("dasheng") / "dasheng_tiny.pt", official_sd)


@pytest.fixture(scope="module")
def fsdd_batch(fsdd_root):
    """Four real clips at 16 kHz, zero-padded to the longest (different lengths: a padded batch)."""
    import soundfile as sf
    import torchaudio

    waves = []
    for name in ("3_jackson_0", "7_theo_12", "0_nicolas_5", "9_yweweler_3"):
        w, sr = sf.read(fsdd_root / "recordings" / f"{name}.wav", dtype="float32")
        waves.append(torchaudio.functional.resample(torch.as_tensor(w), sr, 16000))
    wave = torch.zeros(len(waves), max(len(w) for w in waves))
    for i, w in enumerate(waves):
        wave[i, : len(w)] = w
    return wave, torch.tensor([len(w) for w in waves])


def test_names_registered_with_published_sizes():
    assert list_backbones("dasheng*") == sorted(NAMES)
    sizes = {n: (backbone_card(n).embed_dim, backbone_card(n).num_layers, backbone_card(n).num_heads) for n in NAMES}
    assert sizes == {"dasheng-base": (768, 12, 12), "dasheng-0.6b": (1280, 32, 16), "dasheng-1.2b": (1536, 40, 24),
                     "dasheng-tiny": (64, 3, 2)}
    # params counted from the architecture equal the module's own count (base: 85.4M as published "86M")
    bb = get_backbone("dasheng-base", weights="random")  # no download in tests
    assert bb.card.params == sum(p.numel() for p in bb.model.parameters()) == backbone_card("dasheng-base").params
    assert 85.0e6 < bb.card.params < 86.0e6


@pytest.mark.parametrize("lengths", [True, False], ids=["padded-batch-with-x_length", "no-x_length"])
def test_parity_every_block_and_frontend(official_file, official_sd, fsdd_batch, lengths):
    wave, lens = fsdd_batch
    xl = lens if lengths else None
    bb = get_backbone("dasheng-tiny", official_file)
    assert (bb.embed_dim, bb.num_layers, bb.num_heads, bb.model.config.chunk_tokens) == (D, DEPTH, HEADS, 6)
    spec, ref_layers, ref_final = dasheng_official(official_sd, wave, HEADS, xl)
    feats, valid = bb.frontend(wave, xl)
    assert (feats[:, 0].transpose(1, 2) - spec).abs().max() <= 1e-4
    lt = bb.forward_tokens(wave, xl)
    t = spec.shape[-1] // 4
    assert lt.grid == (t, 1) and t > 2 * bb.model.config.chunk_tokens  # several chunks, the last one partial
    for i, ref in enumerate(ref_layers):
        assert (lt.patch[:, i] - ref).abs().max() <= 1e-5, i
    assert (bb.final_norm(lt.patch[:, -1]) - ref_final).abs().max() <= 1e-5
    expected_rows = lens // 640 if lengths else torch.full((4,), t)
    assert lt.valid_rows.tolist() == expected_rows.tolist()
    # no cls token: cls is the mean of each block's valid tokens
    r = int(lt.valid_rows[1])
    assert torch.allclose(lt.cls[1], lt.patch[1, :, :r].mean(1), atol=1e-6)


def test_parity_one_clip_alone(official_file, official_sd, fsdd_batch):
    wave, lens = fsdd_batch
    clip = wave[2:3, : int(lens[2])]
    bb = get_backbone("dasheng-tiny", official_file)
    _, ref_layers, _ = dasheng_official(official_sd, clip, HEADS, None)
    lt = bb.forward_tokens(clip)
    assert max((lt.patch[:, i] - ref).abs().max().item() for i, ref in enumerate(ref_layers)) <= 1e-5


def test_frontend_is_torchaudios_official_transforms_with_the_batch_wide_floor(fsdd_batch):
    """The official front_end (torchaudio MelSpectrogram + AmplitudeToDB(top_db=120) on (B, 64, T)):
    the floor is max over the whole batch - 120, so a clip's features depend on its batch mates."""
    import torchaudio

    from probekit.backbones.dasheng import DashengFrontend

    wave, lens = fsdd_batch
    loud = torch.cat([wave[:1] * 0.02, wave[1:2] * 50.0])  # a very quiet clip beside a loud one
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, win_length=512, hop_length=160,
                                               f_min=0, f_max=8000, n_mels=64, center=True)
    official_db = torchaudio.transforms.AmplitudeToDB(top_db=120)(mel(loud))  # (B, 64, T)
    fe = DashengFrontend()
    batched, _ = fe(loud)
    assert (batched[:, 0].transpose(1, 2) - official_db).abs().max() <= 1e-4
    alone, _ = fe(loud[:1])
    assert (alone[0] - batched[0]).abs().max() > 1.0  # the quirk: the quiet clip changes with its batch mate
    assert torch.equal(fe.features(loud[0]), alone[0])  # extraction: each clip alone (a batch of one)


def test_checkpoint_layout_is_checked_strictly(tmp_path, official_sd):
    def save(name, change, config=None):
        sd = {k: v.clone() for k, v in official_sd.items()}
        change(sd)
        return _save(tmp_path / name, sd, config)

    with pytest.raises(CheckpointError, match=r"missing keys: init_bn.1.num_batches_tracked"):
        get_backbone("dasheng-tiny", save("nobn.pt", lambda sd: sd.pop("init_bn.1.num_batches_tracked")))
    with pytest.raises(CheckpointError, match=r"Missing key\(s\) in state_dict: \"blocks.1.mlp.fc2.bias\""):
        get_backbone("dasheng-tiny", save("miss.pt", lambda sd: sd.pop("blocks.1.mlp.fc2.bias")))
    with pytest.raises(CheckpointError, match=r"\(dasheng\): Unexpected key\(s\) in state_dict: \"cls_token\""):
        get_backbone("dasheng-tiny", save("tok.pt", lambda sd: sd.update(cls_token=torch.zeros(1, 1, D))))
    with pytest.raises(CheckpointError, match=r"config pooling='token'"):
        get_backbone("dasheng-tiny", save("pool.pt", lambda sd: None, {"pooling": "token"}))
    with pytest.raises(CheckpointError, match="front_end.0.mel_scale.fb differs from the official MelSpectrogram"):
        get_backbone("dasheng-tiny", save("fb.pt", lambda sd: sd["front_end.0.mel_scale.fb"].mul_(1.01)))
    with pytest.raises(CheckpointError, match=r"1 weight tensor\(s\) hold NaN/Inf: blocks.0.attn.qkv.weight"):
        get_backbone("dasheng-tiny", save("nan.pt", lambda sd: sd["blocks.0.attn.qkv.weight"][0].fill_(float("nan"))))
    # heads: the file's config, else the option; the audio-ViT loaders name the architecture
    path = save("ok.pt", lambda sd: None)
    assert get_backbone("dasheng-tiny", path, num_heads=2).num_heads == 2
    with pytest.raises(CheckpointError, match=r"\(dasheng\): holds a dasheng checkpoint, not"):
        get_backbone("eat-tiny", path)


def test_cli_loads_the_official_file(official_file, capsys):
    from probekit.cli import main

    assert main(["check-backbone", "dasheng-tiny", "--checkpoint", str(official_file)]) == 0
    assert "all" in capsys.readouterr().out


def test_every_dasheng_name_has_a_card_file():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for name in NAMES:
        text = (repo / "backbones" / f"{name}.md").read_text()
        c = backbone_card(name)
        for needle in ("Architecture", "Frontend", "Checkpoint formats", "Citation", "Training data", "cls"):
            assert needle in text, (name, needle)
        rows = dict(line.strip("|").split("|", 1) for line in text.splitlines() if line.startswith("| "))
        rows = {k.strip(): v.strip() for k, v in rows.items()}
        assert rows["embed dim / layers / heads"] == f"{c.embed_dim} / {c.num_layers} / {c.num_heads}", name
        shown = f"{c.params / 1e6:.1f}M" if c.params >= 1e6 else f"{c.params / 1e3:.0f}k"
        assert rows["parameters"].startswith(f"{shown} trainable"), (name, rows["parameters"], c.params)
        assert rows["token grid"].startswith("(T, 1)"), name
        for ds in c.training_data:
            assert f"`{ds}`" in rows["training data"], (name, ds)


def test_time_only_grid_end_to_end_cache_and_probes(tmp_path, fsdd_root):
    """dasheng-tiny -> FSDD tokens in the cache (grid (T, 1)) -> linear, cgp, protobin and mhca train."""
    from probekit.audio.io import load_audio
    from probekit.cache import extract, plan
    from probekit.cache.reader import open_cache
    from probekit.probes import make_probe
    from probekit.tokens import TokenRequest
    from probekit.train import TrainConfig, fit, predict
    from tests.cache.conftest import fsdd_subset

    bb = get_backbone("dasheng-tiny", seed=0)
    ds = fsdd_subset(fsdd_root, 40)
    store = extract(bb, ds, "test", cache_dir=tmp_path / "stores", dtype="float32", batch_size=8, workers=0,
                    progress=False)
    data = open_cache(store.path, preload=True)
    t = store.layout.grid[0]
    assert store.layout.grid == (t, 1) and t >= 10  # the split's longest clip, 4 frames a token
    # a stored clip equals the backbone on that clip alone (its features floored by its own max)
    clip = ds.clips("test")[5]
    wave = load_audio(clip.path, sample_rate=16000)
    bb.to("cpu")  # extraction may have moved it to a GPU; the reference runs on the CPU
    p_bb = plan(bb, ds, "test", device="cpu", need_layout=False).backbone  # frames fixed to the split's longest
    assert p_bb.frontend.config.target_frames // 4 == t
    fe = p_bb.frontend
    lt = p_bb.encode(fe.features(wave).unsqueeze(0), torch.tensor([fe.valid_frames(wave.numel())]))
    got = next(iter(data.batches(TokenRequest(layers="all"), 40)))
    assert torch.allclose(got.patch[5].float(), lt.patch[0], atol=1e-5)
    assert int(got.valid_rows[5]) == int(lt.valid_rows[0]) == wave.numel() // 640
    cfg = TrainConfig(steps=30, batch_size=16, lr=1e-2, warmup_steps=3, seed=0, log_every=10)
    small = {"cgp": {"prototypes": 16}, "protobin": {"prototypes": 16}}
    for name in ("linear", "cgp", "protobin", "mhca"):
        probe = make_probe(name, num_layers=data.num_layers, embed_dim=data.embed_dim, num_classes=data.num_classes,
                           seed=0, **small.get(name, {}))
        res = fit(probe, data, config=cfg, progress=False)
        scores = predict(res.probe, data)
        assert scores.shape == (40, 10) and np.isfinite(scores).all(), name
        assert res.history[-1]["loss"] < res.history[0]["loss"], name


def test_bad_inputs_and_short_clips():
    from probekit.errors import BackboneError

    bb = get_backbone("dasheng-tiny")
    with pytest.raises(BackboneError, match=r"expected features of shape \(B, 1, frames, 64\), got \(2, 1, 160, 128\)"):
        bb.encode(torch.zeros(2, 1, 160, 128))
    with pytest.raises(BackboneError, match="3 frames is shorter than one token"):
        bb.encode(torch.zeros(1, 1, 3, 64))
    with pytest.raises(BackboneError, match="valid_frames has 2 entries for a batch of 1"):
        bb.encode(torch.zeros(1, 1, 16, 64), torch.tensor([16, 16]))
    with pytest.raises(BackboneError, match=r"layer indices \[3\] out of range for 3 blocks"):
        bb.encode(torch.zeros(1, 1, 16, 64), layers=[3])
    with pytest.raises(BackboneError, match="reads its own 64-mel dB frontend, not 'eat-esc50'"):
        get_backbone("dasheng-tiny", frontend="eat-esc50").forward_tokens(torch.zeros(1, 16000))
    # a clip shorter than one token (< 640 samples) beside a longer one: every key of it is masked, as in
    # the official code (finfo.min, not -inf: uniform attention, finite tokens); its cls is then zero
    wave = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0)) * 0.1
    lt = bb.forward_tokens(wave, torch.tensor([4000, 600]))
    assert lt.valid_rows.tolist() == [6, 0] and torch.isfinite(lt.patch).all() and not lt.cls[1].any()
    # layer subsets are the same rows as the full output
    sub = bb.forward_tokens(wave, torch.tensor([4000, 600]), layers=[-1, 0])
    assert torch.equal(sub.patch, lt.patch[:, [2, 0]])


def test_official_buffers_are_the_htk_filterbank_and_periodic_hann(official_sd):
    """The front_end buffers an official checkpoint carries (torchaudio's, float32) equal the filterbank and
    window re-derived in float64 in official_dasheng.py, to float32 rounding."""
    from official_dasheng import hann_periodic, htk_mel_fb

    assert (official_sd["front_end.0.mel_scale.fb"] - htk_mel_fb()).abs().max() <= 1e-5
    assert (official_sd["front_end.0.spectrogram.window"] - hann_periodic(512)).abs().max() <= 1e-6

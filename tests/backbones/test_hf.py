"""hf:<folder> backbones: tiny random transformers models of each supported architecture, saved with
save_pretrained (+ their feature extractors) and loaded back by path (no download).

Parity is against the transformers model itself: probekit's features equal the folder's feature extractor's
output and its tokens equal `model(**features, output_hidden_states=True).hidden_states[1:]` on real FSDD
clips in a padded batch (AST's patches reordered from its frequency-major order to time-major)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from probekit.audio.io import load_audio
from probekit.backbones import get_backbone, list_backbones
from probekit.backbones.custom import check_backbone
from probekit.errors import BackboneError

try:
    import transformers

    HAVE_HF = True
except ImportError:  # CI without the hf extra: these tests skip, the last one still runs
    HAVE_HF = False
needs_hf = pytest.mark.skipif(not HAVE_HF, reason="hf: backbones need transformers (pip install 'probekit[hf]')")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
CONV = dict(conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 8), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2)
FE_WAVE = "Wav2Vec2FeatureExtractor"


def _save(model, extractor, folder):
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    return str(folder)


def _make(arch: str, folder):
    """A tiny random model of `arch` (and its feature extractor) saved in `folder`."""
    tf = transformers
    torch.manual_seed(0)
    if arch == "ast":  # 32 mel bins x 256 frames: a 25 x 2 patch grid (time x frequency), not square
        cfg = tf.ASTConfig(**TINY, num_mel_bins=32, max_length=256, frequency_stride=10, time_stride=10)
        return _save(tf.ASTModel(cfg), tf.ASTFeatureExtractor(num_mel_bins=32, max_length=256), folder)
    if arch == "whisper":  # 3 s chunks: 300 mel frames -> 150 tokens
        cfg = tf.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                               decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80,
                               max_source_positions=150, max_target_positions=16, vocab_size=64,
                               pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                               suppress_tokens=None, begin_suppress_tokens=None)
        return _save(tf.WhisperModel(cfg), tf.WhisperFeatureExtractor(feature_size=80, chunk_length=3), folder)
    fe_mask = tf.Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True)
    fe_nomask = tf.Wav2Vec2FeatureExtractor(return_attention_mask=False, do_normalize=True)
    if arch == "wav2vec2-base":  # group norm, post-LN, no attention mask (as wav2vec2-base)
        cfg = tf.Wav2Vec2Config(**TINY, **CONV, feat_extract_norm="group", do_stable_layer_norm=False)
        return _save(tf.Wav2Vec2Model(cfg), fe_nomask, folder)
    if arch == "wav2vec2-large":  # layer norm, pre-LN ("stable layer norm"), attention mask
        cfg = tf.Wav2Vec2Config(**TINY, **CONV, feat_extract_norm="layer", do_stable_layer_norm=True)
        return _save(tf.Wav2Vec2Model(cfg), fe_mask, folder)
    if arch == "hubert":
        cfg = tf.HubertConfig(**TINY, **CONV, feat_extract_norm="group", do_stable_layer_norm=False)
        return _save(tf.HubertModel(cfg), fe_nomask, folder)
    if arch == "wavlm":  # relative position buckets, gated bias
        cfg = tf.WavLMConfig(**TINY, **CONV, feat_extract_norm="layer", do_stable_layer_norm=True,
                             num_buckets=16, max_bucket_distance=64)
        return _save(tf.WavLMModel(cfg), fe_mask, folder)
    if arch == "data2vec-audio":
        cfg = tf.Data2VecAudioConfig(**TINY, **{k: v for k, v in CONV.items() if k != "num_conv_pos_embeddings"},
                                     conv_pos_kernel_size=5, num_conv_pos_embeddings=2)
        return _save(tf.Data2VecAudioModel(cfg), fe_mask, folder)
    raise ValueError(arch)


ARCHS = ["ast", "whisper", "wav2vec2-base", "wav2vec2-large", "hubert", "wavlm", "data2vec-audio"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {a: _make(a, root / a) for a in ARCHS}


@pytest.fixture(autouse=True)
def _isolated_sha_index(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def clips(fsdd_root):
    """Three real FSDD clips of different lengths, right-padded into one batch."""
    rec = sorted((fsdd_root / "recordings").glob("*.wav"))
    waves = [load_audio(p, sample_rate=16000) for p in (rec[0], rec[700], rec[1400])]
    lengths = torch.tensor([w.numel() for w in waves])
    assert len(set(lengths.tolist())) == 3
    batch = torch.zeros(3, int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : w.numel()] = w
    return waves, batch, lengths


def _official(folder, waves):
    """The transformers pipeline itself: feature extractor on the list of clips, then the model."""
    tf = transformers
    fe = tf.AutoFeatureExtractor.from_pretrained(folder)
    model = tf.AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    if model.config.is_encoder_decoder:
        model = model.get_encoder()
    pad = {"padding": True} if isinstance(fe, tf.Wav2Vec2FeatureExtractor) else {}
    inputs = fe([w.numpy() for w in waves], sampling_rate=16000, return_tensors="pt", **pad)
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states
    return fe, model, inputs, hidden


@needs_hf
@pytest.mark.parametrize("arch", ARCHS)
def test_tokens_equal_the_models_own_hidden_states(folders, clips, arch):
    waves, batch, lengths = clips
    bb = get_backbone(f"hf:{folders[arch]}")
    fe, model, inputs, hidden = _official(folders[arch], waves)
    feats, valid = bb.frontend(batch, lengths)
    lt = bb.forward_tokens(batch, lengths)
    assert lt.num_layers == bb.num_layers == len(hidden) - 1
    key = "input_features" if arch == "whisper" else "input_values"
    ours = bb.model_inputs(feats, valid)
    assert torch.equal(ours[key], inputs[key])  # the frontend IS the feature extractor
    if "attention_mask" in inputs:
        assert torch.equal(ours["attention_mask"], inputs["attention_mask"])
    else:
        assert "attention_mask" not in ours
    b = batch.shape[0]
    for i in range(bb.num_layers):
        h = hidden[i + 1]
        if arch == "ast":
            t, f = lt.grid
            assert torch.equal(lt.cls[:, i], h[:, 0])
            # AST flattens frequency-major (n = f * T + t); probekit's tokens are time-major (n = t * F + f)
            for tt in (0, 7, t - 1):
                for ff in range(f):
                    assert torch.equal(lt.patch[:, i, tt * f + ff], h[:, 2 + ff * t + tt])
            assert torch.equal(lt.patch[:, i], h[:, 2:].reshape(b, f, t, -1).transpose(1, 2).reshape(b, t * f, -1))
        else:
            assert torch.equal(lt.patch[:, i], h)
    if arch == "ast":
        cfg = model.config
        assert lt.grid == ((256 - 16) // 10 + 1, (32 - 16) // 10 + 1) == (25, 2)
        frames = [1 + (int(n) - 400) // 160 for n in lengths]
        assert lt.valid_rows.tolist() == [min(25, -(-v // cfg.time_stride)) for v in frames]
    elif arch == "whisper":
        mask = fe([w.numpy() for w in waves], sampling_rate=16000, return_attention_mask=True)["attention_mask"]
        vf = torch.as_tensor(mask).sum(-1)
        assert valid.tolist() == vf.tolist() and lt.grid == (150, 1)
        assert lt.valid_rows.tolist() == ((vf + 1) // 2).tolist()
        assert torch.allclose(lt.cls, lt.patch.mean(2))  # WhisperForAudioClassification's pooling
    else:
        t = lt.grid[0]
        assert lt.grid == (hidden[1].shape[1], 1)
        if "attention_mask" in inputs:
            own = model._get_feature_vector_attention_mask(t, inputs["attention_mask"]).sum(-1)
        else:
            own = model._get_feat_extract_output_lengths(lengths)
        assert lt.valid_rows.tolist() == own.tolist()
        assert int(lt.valid_rows.max()) == t and len(set(lt.valid_rows.tolist())) == 3  # padding shows
        for j in range(b):
            v = int(lt.valid_rows[j])
            assert torch.allclose(lt.cls[j], lt.patch[j, :, :v].mean(1), atol=1e-6)
    # one clip alone (no padding) is what the model gives that clip alone
    _, _, _, alone = _official(folders[arch], waves[1:2])
    one = bb.forward_tokens(waves[1][None])
    got = one.patch[:, -1] if arch != "ast" else one.cls[:, -1]
    assert torch.equal(got, alone[-1] if arch != "ast" else alone[-1][:, 0])


@needs_hf
@pytest.mark.parametrize("arch", ARCHS)
def test_check_backbone_passes(folders, arch):
    results = check_backbone(get_backbone(f"hf:{folders[arch]}"), raise_on_fail=False)
    assert all(r.ok for r in results), [r for r in results if not r.ok]


@needs_hf
def test_cache_key_names_folder_weights_and_version(folders, tmp_path):
    import shutil

    src = folders["wav2vec2-large"]
    bb = get_backbone(f"hf:{src}")
    key = bb.cache_key()
    assert key["source"] == src and key["transformers"] == transformers.__version__
    assert list(key["weights"]["files"]) == ["model.safetensors"] and len(key["weights"]["sha256"]) == 64
    assert bb.checkpoint_sha256 == key["weights"]["sha256"] and bb.seed is None
    # other weights in a copy of the folder: another sha256
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    other = transformers.Wav2Vec2Model.from_pretrained(src)
    with torch.no_grad():
        other.encoder.layers[0].attention.q_proj.weight.add_(1e-3)
    other.save_pretrained(copy)
    assert get_backbone(f"hf:{copy}").cache_key()["weights"]["sha256"] != key["weights"]["sha256"]


@needs_hf
def test_hf_names_are_not_listed_and_errors_name_the_folder(folders, tmp_path):
    assert not [n for n in list_backbones() if n.startswith("hf:")]
    with pytest.raises(BackboneError, match="no such folder"):
        get_backbone(f"hf:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="empty: no config.json"):
        get_backbone(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(BackboneError, match="weights come from the folder"):
        get_backbone(f"hf:{folders['hubert']}", checkpoint=tmp_path / "x.safetensors")
    with pytest.raises(BackboneError, match=r"does not accept option\(s\) \['seed'\]"):
        get_backbone(f"hf:{folders['hubert']}", seed=3)
    with pytest.raises(BackboneError, match="not this model's feature extractor"):
        get_backbone(f"hf:{folders['ast']}", frontend="eat").frontend
    bert = tmp_path / "bert"
    transformers.BertModel(transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=32, vocab_size=50)).save_pretrained(bert)
    with pytest.raises(BackboneError, match="model_type 'bert' is not supported"):
        get_backbone(f"hf:{bert}")


@needs_hf
def test_extract_fsdd_and_train_linear_and_cgp(folders, fsdd_root, tmp_path):
    """End to end on a tiny wav2vec 2.0: FSDD into the cache (each clip padded to the split's longest),
    the stored tokens equal the backbone's, and linear + cgp probes train from the store."""
    from probekit.cache import extract
    from probekit.cache.reader import open_cache
    from probekit.datasets import get_dataset
    from probekit.datasets.base import Dataset
    from probekit.probes import make_probe
    from probekit.tokens import TokenRequest
    from probekit.train.fit import TrainConfig, fit

    full = get_dataset("fsdd", root=fsdd_root)
    train = full.clips("train")[::100][:24]
    ds = Dataset(full.spec, full.root, lambda s: train if s == "train" else [])
    bb = get_backbone(f"hf:{folders['wav2vec2-large']}")
    store = extract(bb, ds, "train", cache_dir=tmp_path / "cache", dtype="float32", batch_size=8, workers=0,
                    progress=False)
    assert store.complete
    data = open_cache(path=store.path)
    longest = max(load_audio(c.path, sample_rate=16000).numel() for c in train)
    assert data.grid == (int(bb.model._get_feat_extract_output_lengths(longest)), 1)
    first = next(data.batches(TokenRequest(layers="all"), 4))
    wave = load_audio(train[0].path, sample_rate=16000)
    bb.to("cpu")  # extraction may have moved it to a GPU; the reference runs on the CPU
    ref = bb.with_frontend(bb.frontend.config.__class__(**{**bb.frontend.config.__dict__, "target_frames": longest}))
    want = ref.forward_tokens(wave[None])
    v = int(want.valid_rows[0])
    assert int(first.valid_rows[0]) == v
    torch.testing.assert_close(first.patch[0, :, :v], want.patch[0, :, :v], rtol=1e-5, atol=1e-5)
    for probe_name in ("linear", "cgp"):
        opts = {"prototypes": 4} if probe_name == "cgp" else {}
        probe = make_probe(probe_name, num_layers=data.num_layers, embed_dim=data.embed_dim,
                           num_classes=data.num_classes, seed=0, **opts)
        fit(probe, data, config=TrainConfig(epochs=2, batch_size=8, device="cpu"), progress=False)
        probe.eval()
        with torch.no_grad():
            logits = probe(first)
        assert logits.shape == (4, data.num_classes) and torch.isfinite(logits).all()


@needs_hf
def test_cli_extract_takes_an_hf_folder(folders, fsdd_root, tmp_path, capsys):
    from probekit.cli import main

    rec = sorted((fsdd_root / "recordings").glob("*.wav"))[:6]
    csv = tmp_path / "m.csv"
    csv.write_text("path,labels,split\n" + "".join(f"{p},d{p.name[0]},train\n" for p in rec))
    base = ["extract", "--backbone", f"hf:{folders['hubert']}", "--dataset", f"manifest:{csv}",
            "--cache-dir", str(tmp_path / "c"), "--workers", "0", "--no-progress"]
    assert main(base) == 0
    assert main([*base, "--checkpoint", str(csv)]) == 2
    assert "weights come from the folder" in capsys.readouterr().err
    assert main(["check-backbone", f"hf:{folders['hubert']}"]) == 0  # a prefixed name, not module:factory
    assert f"hf:{folders['hubert']}: all 13 checks passed" in capsys.readouterr().out.replace("\n", "")


def test_probekit_works_without_transformers():
    """transformers is imported only when an hf: name is built; without it that is one user error."""
    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "import probekit, probekit.backbones as b\n"
        "assert 'bat' in b.list_backbones()\n"
        "from probekit.errors import BackboneError\n"
        "try:\n    b.get_backbone('hf:/nonexistent-folder')\nexcept BackboneError as e:\n    print(e)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root, env=env)
    assert out.returncode == 0, out.stderr
    assert "need the transformers package" in out.stdout and "probekit[hf]" in out.stdout

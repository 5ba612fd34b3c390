"""Every registered backbone automatically gets forward, shape, no-NaN and determinism tests (timm-style)."""

from __future__ import annotations

import gc
from importlib import metadata as importlib_metadata
from pathlib import Path

import pytest
import torch

from probekit.backbones import backbone_card, get_backbone, list_backbones
from probekit.backbones.protocol import Backbone, LayerTokens
from probekit.backbones.custom import check_backbone
from probekit.cli import main
from probekit.errors import BackboneError

REPO = Path(__file__).resolve().parents[2]
BUILTIN = ("bat", "bat-tiny", "eat", "eat-large", "eat-tiny", "sslam")


@pytest.fixture(scope="module")
def built():
    cache: dict[str, Backbone] = {}

    def get(name):
        if name not in cache:
            cache.clear()  # one full-size model in memory at a time
            gc.collect()
            cache[name] = get_backbone(name, seed=0, weights="random")  # no downloads in tests
        return cache[name]

    yield get
    cache.clear()


def test_builtins_registered():
    assert set(BUILTIN) <= set(list_backbones())
    assert list_backbones("eat*") == ["eat", "eat-ft-as2m", "eat-large", "eat-large-ft-as2m", "eat-tiny"]


def _sized(names):
    # >100M-parameter models take ~30 s to initialise on one shared core: benchmarks/backbones.py runs
    # every registered backbone (these included) through the same checks.
    return [pytest.param(n, marks=pytest.mark.slow) if backbone_card(n).params > 100e6 else n for n in names]


# Families whose encoder reads other features than the audio ViTs' (B, 1, frames, 128):
# family -> (bins, grid of 160 frames, valid_rows of valid frames [160, 70]). Time-only grids are (T, 1).
_ENCODE_PROBE = {"dasheng": (64, (40, 1), [39, 17])}  # 4 frames a token; official mask (v - 1) // 4


@pytest.mark.parametrize("name", _sized(list_backbones()))
def test_every_backbone_forward_shapes_finite_deterministic(built, name):
    bb = built(name)
    card = backbone_card(name)
    assert (bb.num_layers, bb.embed_dim, bb.num_heads) == (card.num_layers, card.embed_dim, card.num_heads)
    bins, grid, rows = _ENCODE_PROBE.get(card.family, (128, (10, 8), [10, 5]))
    feats = torch.randn(2, 1, 160, bins, generator=torch.Generator().manual_seed(1))
    valid = torch.tensor([160, 70])
    a = bb.encode(feats, valid)
    assert isinstance(a, LayerTokens)
    assert a.grid == grid
    assert a.patch.shape == (2, bb.num_layers, grid[0] * grid[1], bb.embed_dim) and a.patch.dtype == torch.float32
    assert a.cls.shape == (2, bb.num_layers, bb.embed_dim) and a.cls.dtype == torch.float32
    assert a.valid_rows.tolist() == rows and a.valid_rows.dtype == torch.int64
    assert torch.isfinite(a.patch).all() and torch.isfinite(a.cls).all()
    b = bb.encode(feats, valid)
    assert torch.equal(a.patch, b.patch) and torch.equal(a.cls, b.cls)
    # layers are distinct blocks, not copies; a layer subset equals the same rows of the full output
    assert bb.num_layers == 1 or not torch.allclose(a.cls[:, 0], a.cls[:, -1])
    sub = bb.encode(feats, valid, layers=[0, -1])
    assert torch.equal(sub.patch, a.patch[:, [0, bb.num_layers - 1]])
    assert not any(p.requires_grad for p in bb.model.parameters()) and not bb.model.training


@pytest.mark.parametrize("name", [n for n in list_backbones() if n.endswith("-tiny")])
def test_tiny_backbones_conform_on_real_audio(name, fsdd_root):
    import soundfile as sf

    from probekit.audio.frontends import make_frontend  # noqa: F401 - the real frontends must be importable

    clips = [fsdd_root / "recordings" / f"{d}_jackson_0.wav" for d in (3, 7)]
    waves = []
    for c in clips:
        w, _ = sf.read(c, dtype="float32")
        waves.append(torch.as_tensor(w))
    import torchaudio

    waves = [torchaudio.functional.resample(w, 8000, 16000) for w in waves]
    n = max(len(w) for w in waves)
    wave = torch.zeros(len(waves), n)
    for i, w in enumerate(waves):
        wave[i, : len(w)] = w
    lengths = torch.tensor([len(w) for w in waves])
    bb = get_backbone(name, seed=3)
    results = check_backbone(bb, wave=wave, lengths=lengths)
    assert all(r.ok for r in results), [r for r in results if not r.ok]


def test_seed_controls_random_init():
    a = get_backbone("eat-tiny", seed=1).model.state_dict()
    b = get_backbone("eat-tiny", seed=1).model.state_dict()
    c = get_backbone("eat-tiny", seed=2).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], c["blocks.0.attn.qkv.weight"])
    assert torch.equal(a["pos_embed"], c["pos_embed"])  # the fixed table is not random


def test_misspelt_name_suggests():
    with pytest.raises(BackboneError, match=r"unknown backbone 'eat-larg'.*did you mean 'eat-large'"):
        get_backbone("eat-larg")


def test_entry_point_plugin_is_registered(monkeypatch):
    from probekit.backbones import registry

    # an entry point naming a factory function (this module's, so the test needs no installed package)
    ep = importlib_metadata.EntryPoint(
        name="plugin-eat", value=f"{__name__}:plugin_factory", group=registry.ENTRY_POINT_GROUP
    )
    broken = importlib_metadata.EntryPoint(name="plugin-broken", value="no_such_module:f", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.importlib_metadata, "entry_points", lambda group: [ep, broken])
    monkeypatch.setitem(registry._state, "entry_points", False)
    monkeypatch.setattr(registry._REGISTRY, "_entries", dict(registry._REGISTRY._entries))
    assert {"plugin-eat", "plugin-broken"} <= set(list_backbones())
    bb = get_backbone("plugin-eat", seed=0)
    assert bb.num_layers == 4
    with pytest.raises(BackboneError, match="no_such_module:f failed to import"):
        get_backbone("plugin-broken")
    # an option the plugin's factory cannot take is refused, not dropped
    with pytest.raises(BackboneError, match=r"does not accept option\(s\) \['chunk_rows'\]"):
        get_backbone("plugin-eat", chunk_rows=4)


def plugin_factory(checkpoint=None, *, seed=0):
    """A third-party factory taking only some of get_backbone's options."""
    return get_backbone("eat-tiny", checkpoint, seed=seed)


def test_every_builtin_has_a_card_file():
    """backbones/<name>.md restates the registry card (the one source of model facts): sizes, counted
    parameters as `probekit backbones` shows them, and every training-data name."""
    for name in (*BUILTIN, "bat-tiny-fsdd"):
        card = REPO / "backbones" / f"{name}.md"
        assert card.is_file(), card
        text = card.read_text()
        c = backbone_card(name)
        for needle in ("Architecture", "Frontend", "Checkpoint formats", "Citation", "Training data"):
            assert needle in text, (name, needle)
        rows = dict(line.strip("|").split("|", 1) for line in text.splitlines() if line.startswith("| "))
        rows = {k.strip(): v.strip() for k, v in rows.items()}
        assert rows["embed dim / layers / heads"] == f"{c.embed_dim} / {c.num_layers} / {c.num_heads}", name
        shown = f"{c.params / 1e6:.1f}M" if c.params >= 1e6 else f"{c.params / 1e3:.0f}k"
        assert rows["parameters"].startswith(f"{shown} trainable"), (name, rows["parameters"], c.params)
        for ds in c.training_data:
            assert f"`{ds}`" in rows["training data"], (name, ds)


def test_cli_lists_backbones(capsys, monkeypatch):
    from probekit.cli import console

    monkeypatch.setattr(console, "width", 160)  # a wide terminal; captured output defaults to 80 columns
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    for name in BUILTIN:
        assert name in out
    assert "85.3M" in out and "Chen et al., IJCAI 2024" in out and "92.3M" in out and "Ghaffari et al., ICML 2026" in out


def test_cli_check_backbone(capsys):
    assert main(["check-backbone", "bat-tiny"]) == 0
    assert "all" in capsys.readouterr().out
    assert main(["check-backbone", "bta-tiny"]) == 2


def test_with_frontend_shares_weights_and_changes_cache_key():
    bb = get_backbone("eat-tiny")
    other = bb.with_frontend("eat-esc50")
    assert other.model is bb.model
    assert other.cache_key()["frontend"] != bb.cache_key()["frontend"]
    assert other.cache_key()["weights"] == bb.cache_key()["weights"] == {"random_init_seed": 0}
    wave = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    assert other.frontend(wave).shape == (1, 1, 512, 128)
    assert other.forward_tokens(wave).grid == (32, 8)


def test_bad_inputs_get_precise_errors():
    bb = get_backbone("bat-tiny")
    with pytest.raises(BackboneError, match=r"expected features of shape \(B, 1, frames, 128\), got \(2, 100, 128\)"):
        bb.encode(torch.zeros(2, 100, 128))
    with pytest.raises(BackboneError, match="8 frames is shorter than one patch"):
        bb.encode(torch.zeros(1, 1, 8, 128))
    with pytest.raises(BackboneError, match="valid_frames has 3 entries for a batch of 1"):
        bb.encode(torch.zeros(1, 1, 32, 128), torch.tensor([32, 32, 32]))
    with pytest.raises(BackboneError, match=r"layer indices \[4\] out of range for 4 blocks"):
        bb.encode(torch.zeros(1, 1, 32, 128), layers=[4])
    with pytest.raises(BackboneError, match="chunk_rows 65 must be in 1..64"):
        get_backbone("bat-tiny", chunk_rows=65)
    with pytest.raises(BackboneError, match="not divisible by num_heads 3"):
        get_backbone("eat-tiny", num_heads=3)
    with pytest.raises(BackboneError, match="wave must be"):
        bb.forward_tokens(torch.zeros(1, 1, 16000))

"""Adding a backbone family is one module that registers itself: tiny_family.py (a real tiny encoder with no
cls token, relative position bias, its own frontend and checkpoint format) passes the same conformance
check as the built-ins, loads its own checkpoints through the shared safe loader, and is told apart from
the audio ViTs' formats."""

from __future__ import annotations

import importlib

import pytest
import torch
from safetensors.torch import save_file

from probekit.backbones import backbone_card, get_backbone, is_backbone, list_backbones
from probekit.backbones.checkpoint_io import FORMATS
from probekit.backbones.checkpoints import load_checkpoint
from probekit.backbones.custom import check_backbone
from probekit.errors import BackboneError, CheckpointError


@pytest.fixture(scope="module")
def family():
    from probekit.backbones import registry

    fam = importlib.import_module("tiny_family")  # the one line a new family needs (in backbones/__init__.py)
    yield fam
    for name in fam._VARIANTS:  # keep the registry-wide tests to the built-ins
        registry._REGISTRY.unregister(name)


@pytest.fixture(autouse=True)
def _isolated_sha_index(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))


def test_family_registers_itself_and_conforms(family):
    assert list_backbones("relpos*") == ["relpos-small", "relpos-tiny"]
    card = backbone_card("relpos-small")
    assert (card.family, card.embed_dim, card.num_layers, card.num_heads) == ("relpos", 64, 4, 4)
    assert "relpos" in FORMATS
    for name in ("relpos-tiny", "relpos-small"):
        bb = get_backbone(name, seed=1)
        assert is_backbone(bb) and bb.card.params == backbone_card(name).params > 0
        results = check_backbone(bb)
        assert all(r.ok for r in results), [r for r in results if not r.ok]
    tokens = get_backbone("relpos-tiny").forward_tokens(torch.randn(2, 16000) * 0.1, torch.tensor([16000, 8000]))
    assert tokens.grid == (50, 1) and tokens.valid_rows.tolist() == [50, 26]
    # no cls token: "cls" is the mean of the valid patch tokens
    assert torch.allclose(tokens.cls[1], tokens.patch[1, :, :26].mean(1), atol=1e-6)


def test_family_checkpoint_roundtrip_and_format_table(family, tmp_path):
    bb = get_backbone("relpos-tiny", seed=7)
    path = tmp_path / "relpos.safetensors"
    family.save(path, bb.model)
    loaded = get_backbone("relpos-tiny", path)
    wave = torch.randn(1, 12000, generator=torch.Generator().manual_seed(0)) * 0.1
    a, b = bb.forward_tokens(wave), loaded.forward_tokens(wave)
    assert torch.equal(a.patch, b.patch)
    assert loaded.seed is None and loaded.cache_key()["weights"]["sha256"] == loaded.checkpoint_sha256
    # the audio-ViT loader recognises the format and names the architecture instead of listing missing keys
    with pytest.raises(CheckpointError, match=r"\(relpos\): holds a relpos-transformer checkpoint, not an EAT"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="holds a relpos-transformer checkpoint"):
        get_backbone("bat-tiny", path)


def test_family_gets_the_shared_integrity_checks(family, tmp_path):
    bb = get_backbone("relpos-tiny")
    sd = {k: v.clone() for k, v in bb.model.state_dict().items()}
    sd["rel_bias"][0, 3] = float("nan")
    path = tmp_path / "nan.safetensors"
    import json

    save_file(sd, str(path), metadata={"relpos": json.dumps({})})
    with pytest.raises(CheckpointError, match=r"nan.safetensors \(relpos\): 1 weight tensor\(s\) hold NaN/Inf: rel_bias"):
        get_backbone("relpos-tiny", path)
    assert get_backbone("relpos-tiny", path, allow_nonfinite=True).checkpoint_sha256


def test_family_refuses_options_it_does_not_take(family):
    with pytest.raises(BackboneError, match=r"'relpos-tiny' does not accept option\(s\) \['chunk_rows'\]"):
        get_backbone("relpos-tiny", chunk_rows=4)
    with pytest.raises(BackboneError, match="seed must be an integer"):
        get_backbone("relpos-tiny", seed="1")

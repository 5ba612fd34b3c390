"""Weights by name for BEATs, Dasheng and Bird-MAE: the official source of each name is fetched through the local
Hub/https stand-in (tests/backbones/hub_server.py, 127.0.0.1), verified, and loaded exactly as the same file by path.

Nothing here leaves the machine: HF_ENDPOINT points at the stand-in, every cache is under tmp_path. The URL
families are served under their registered file name (only the host is swapped for the stand-in's).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import urllib.parse

import pytest
import torch
from hub_server import COMMIT, HubServer
from official_beats import random_beats_checkpoint
from official_dasheng import official_state_dict

from probekit.backbones import get_backbone
from probekit.backbones import weights as W
from probekit.backbones.birdmae import BirdMAEConfig, BirdMAEViT, save_hf
from probekit.errors import CheckpointError

WAVE = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
LENGTHS = torch.tensor([16000])
BIRD_REPO = "DBD-research-group/Bird-MAE-Base"


@pytest.fixture(autouse=True)
def _no_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("PROBEKIT_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "PROBEKIT_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    yield server
    server.stop()


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _serve_registered(hub, monkeypatch, name: str, data: bytes) -> str:
    """Serve `data` under the file name the registry names for `name`; point the entry at the stand-in."""
    entry = W.published_weights(name)
    official = urllib.parse.urlparse(entry.sources[0])
    fname = official.path.rsplit("/", 1)[1]
    hub.files[fname] = data
    local = f"{hub.url}/files/{fname}" + (f"?{official.query}" if official.query else "")
    monkeypatch.setitem(W._WEIGHTS, name, dataclasses.replace(entry, sources=(local,)))
    return local


def _same_tokens(a, b):
    ta, tb = a.forward_tokens(WAVE, LENGTHS), b.forward_tokens(WAVE, LENGTHS)
    assert torch.equal(ta.patch, tb.patch) and torch.equal(ta.cls, tb.cls)


def test_every_family_name_has_its_official_source():
    zenodo = "https://zenodo.org/records/11511780/files/"
    expected = {
        "dasheng-base": zenodo + "dasheng_base.pt?download=1",
        "dasheng-0.6b": zenodo + "dasheng_06b.pt?download=1",
        "dasheng-1.2b": zenodo + "dasheng_12b.pt?download=1",
        "bird-mae-base": "hf:DBD-research-group/Bird-MAE-Base/model.safetensors",
        "bird-mae-large": "hf:DBD-research-group/Bird-MAE-Large/model.safetensors",
        "bird-mae-huge": "hf:DBD-research-group/Bird-MAE-Huge/model.safetensors",
    }
    for name, src in expected.items():
        assert W.published_weights(name).sources == (src,), name
    blob = "https://msranlcmtteamdrive.blob.core.windows.net/share/BEATs/"
    assert W.published_weights("beats-iter3").sources[0].startswith(blob + "BEATs_iter3.pt?sv=")
    assert W.published_weights("beats-iter3-plus-as2m").sources[0].startswith(blob + "BEATs_iter3_plus_AS2M.pt?sv=")
    # AudioMAE publishes Google Drive pages only (no direct file URL): no registered source, random by default
    # AudioMAE's files sit behind Google Drive pages: the name says where to get them, never random init
    for name, file in (("audiomae", "pretrained.pth"), ("audiomae-ft-as2m", "finetuned.pth")):
        (src,) = W.published_weights(name).sources
        assert src.startswith(f"manual:{file}@https://drive.google.com/")
        with pytest.raises(CheckpointError, match=f"download {file} from that page"):
            get_backbone(name)


def test_dasheng_by_name_downloads_verifies_and_loads_the_official_file(hub, monkeypatch):
    cfg = {"embed_dim": 32, "depth": 2, "num_heads": 4, "target_length": 24}
    data = _torch_bytes({"model": official_state_dict(32, 2, 6, seed=4), "config": cfg})  # the zenodo layout
    url = _serve_registered(hub, monkeypatch, "dasheng-base", data)
    sha = hashlib.sha256(data).hexdigest()
    bb = get_backbone("dasheng-base")  # no checkpoint: the registered weights, not random init
    assert bb.weights.kind == "url" and bb.checkpoint_sha256 == sha and bb.embed_dim == 32
    assert bb.cache_key()["weights"] == {"sha256": sha, "source": url}
    assert W._read_pins()[url] == sha
    ref = get_backbone("dasheng-base", checkpoint=bb.weights.path)  # the same file by path
    assert ref.cache_key()["weights"] == {"sha256": sha}  # a local file keeps its content key
    _same_tokens(bb, ref)
    n = len(hub.log)
    assert get_backbone("dasheng-base").checkpoint_sha256 == sha and len(hub.log) == n  # cached: no network
    bb.weights.path.write_bytes(data[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match=rf"does not match the sha256 pinned at its first download {sha}"):
        get_backbone("dasheng-base")


def test_beats_by_name_downloads_and_loads_the_official_layout(hub, monkeypatch):
    data = _torch_bytes(random_beats_checkpoint(layers=2, seed=5))  # {'cfg': dict, 'model': state dict}
    url = _serve_registered(hub, monkeypatch, "beats-iter3", data)
    bb = get_backbone("beats-iter3")
    sha = hashlib.sha256(data).hexdigest()
    assert bb.weights.kind == "url" and bb.weights.path.name == "BEATs_iter3.pt" and bb.checkpoint_sha256 == sha
    assert bb.cache_key()["weights"] == {"sha256": sha, "source": url}
    ref = get_backbone("beats-iter3", checkpoint=bb.weights.path)
    assert ref.cache_key()["weights"] == {"sha256": sha}
    _same_tokens(bb, ref)


def test_a_downloaded_pickle_keeps_the_trust_rules(hub, monkeypatch):
    cfg = {"embed_dim": 32, "depth": 2, "num_heads": 4, "target_length": 24}
    # an object weights_only=True refuses: full unpickling needs trust_checkpoint, as for a local file
    data = _torch_bytes({"model": official_state_dict(32, 2, 6, seed=4), "config": cfg,
                         "args": argparse.Namespace(lr=1e-3)})
    _serve_registered(hub, monkeypatch, "dasheng-0.6b", data)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        get_backbone("dasheng-0.6b")
    bb = get_backbone("dasheng-0.6b", trust_checkpoint=True)
    assert bb.checkpoint_sha256 == hashlib.sha256(data).hexdigest() and bb.weights.kind == "url"


def test_bird_mae_by_name_comes_from_its_hub_repo(hub, tmp_path):
    model = BirdMAEViT(BirdMAEConfig(64, 2, 2), seed=7)
    save_hf(tmp_path / "model.safetensors", model)
    data = (tmp_path / "model.safetensors").read_bytes()
    sha = hub.add(BIRD_REPO, "model.safetensors", data)
    bb = get_backbone("bird-mae-base", num_heads=2)
    assert bb.weights.kind == "hub" and bb.weights.revision == COMMIT and bb.checkpoint_sha256 == sha
    assert bb.embed_dim == 64 and bb.num_layers == 2
    assert bb.cache_key()["weights"] == {"sha256": sha, "source": f"hf:{BIRD_REPO}/model.safetensors",
                                         "revision": COMMIT}
    ref = get_backbone("bird-mae-base", checkpoint=tmp_path / "model.safetensors", num_heads=2)
    assert ref.cache_key()["weights"] == {"sha256": sha}
    wave = torch.randn(1, 32000, generator=torch.Generator().manual_seed(1)) * 0.1
    ta, tb = bb.forward_tokens(wave, torch.tensor([32000])), ref.forward_tokens(wave, torch.tensor([32000]))
    assert torch.equal(ta.patch, tb.patch) and torch.equal(ta.cls, tb.cls)


def test_random_still_means_seeded_init_labelled_as_such(hub):
    rnd = get_backbone("bird-mae-base", weights="random", seed=3)
    assert rnd.weights.kind == "random" and rnd.checkpoint_sha256 is None
    assert rnd.weights.describe(3) == "random init (seed 3)" and rnd.cache_key()["weights"] == {"random_init_seed": 3}
    assert hub.log == []  # random init downloads nothing


def test_offline_without_cache_names_the_file_to_place(monkeypatch):
    monkeypatch.setenv("PROBEKIT_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"dasheng_base\.pt\?download=1: not downloaded yet and offline mode"):
        get_backbone("dasheng-base")

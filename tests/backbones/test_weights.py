"""Weights by name: official sources fetched through a local Hub/https stand-in (127.0.0.1, started here).

Nothing here leaves the machine: HF_ENDPOINT points at `hub_server.HubServer`, every cache is under tmp_path.
"""

from __future__ import annotations

import hashlib
import io

import pytest
import torch
from hub_server import COMMIT, HubServer
from official_reference import random_vit_state, to_hf_eat_keys
from safetensors.torch import save

from probekit.backbones import get_backbone
from probekit.backbones import weights as W
from probekit.cli import main
from probekit.errors import BackboneError, CheckpointError

X = torch.randn(1, 1, 64, 128, generator=torch.Generator().manual_seed(0))
BAT_REPO = "lrauch/BAT-vit-b16-pretrainedAS2M"
EAT_REPO = "worstchan/EAT-base_epoch30_pretrain"


def _st(sd) -> bytes:
    return save({k: v.contiguous() for k, v in sd.items()})


@pytest.fixture(scope="module")
def bat_bytes():
    return _st(random_vit_state(dim=64, depth=2, gated=True, pos_rows=512, seed=1, table="bat"))


@pytest.fixture(scope="module")
def eat_sd():
    return to_hf_eat_keys(random_vit_state(dim=64, depth=2, gated=False, pos_rows=768 * 8, seed=2, table="eat"))


@pytest.fixture(autouse=True)
def _no_network(tmp_path, monkeypatch):
    """Every test: caches under tmp_path and a Hub endpoint nothing listens on (nothing leaves the machine)."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("PROBEKIT_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("PROBEKIT_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "PROBEKIT_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    yield server
    server.stop()


def test_bat_by_name_downloads_verifies_and_names_the_weights(hub, bat_bytes, monkeypatch):
    sha = hub.add(BAT_REPO, "model.safetensors", bat_bytes)
    bb = get_backbone("bat")
    assert bb.checkpoint_sha256 == sha and bb.seed is None
    w = bb.weights
    assert (w.kind, w.source, w.revision, w.sha256) == ("hub", f"hf:{BAT_REPO}/model.safetensors", COMMIT, sha)
    assert bb.cache_key()["weights"] == {"sha256": sha, "use_ema": False, "source": w.source, "revision": COMMIT}
    assert f"sha256:{sha}" in w.describe()
    assert any(p.startswith("/cdn/") for p in hub.requests("GET"))
    tokens = bb.encode(X)
    # second load: no download; with the server gone the cached file is used, then with HF_HUB_OFFLINE
    n_get = len(hub.requests("GET"))
    assert get_backbone("bat").checkpoint_sha256 == sha and len(hub.requests("GET")) == n_get
    hub.stop()
    again = get_backbone("bat")
    assert torch.equal(again.encode(X).patch, tokens.patch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert get_backbone("bat").checkpoint_sha256 == sha
    hub.httpd = type("Closed", (), {"shutdown": lambda s: None, "server_close": lambda s: None})()


def test_offline_without_cache_names_the_file_to_place(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=rf"hf:{EAT_REPO}/model.safetensors: not in the Hugging Face cache.*"
                       "HF_HUB_OFFLINE") as e:
        get_backbone("eat")
    assert f"hf download {EAT_REPO} model.safetensors" in e.value.hint and "--weights PATH" in e.value.hint
    assert hub.log == []  # offline means no request at all


def test_eat_and_finetuned_names_use_their_own_repos(hub, eat_sd):
    sha = hub.add(EAT_REPO, "model.safetensors", _st(eat_sd))
    ft = dict(eat_sd, **{"model.head.weight": torch.zeros(527, 64), "model.head.bias": torch.zeros(527)})
    sha_ft = hub.add("worstchan/EAT-base_epoch30_finetune_AS2M", "model.safetensors", _st(ft))
    assert get_backbone("eat").checkpoint_sha256 == sha
    bb = get_backbone("eat-ft-as2m")
    assert bb.checkpoint_sha256 == sha_ft and bb.checkpoint_format == "eat-hf"
    assert "in-domain" in bb.card.notes and "as2m" in bb.card.training_data


def test_sslam_falls_back_to_a_pickle_converted_once_to_safetensors(hub, eat_sd, tmp_path):
    buf = io.BytesIO()
    torch.save(eat_sd, buf)  # a plain state dict: loads with weights_only, no trust needed
    sha = hub.add("ta012/SSLAM_pretrain", "pytorch_model.bin", buf.getvalue())
    bb = get_backbone("sslam")
    assert bb.checkpoint_sha256 == sha  # the file as published, not the converted copy
    converted = tmp_path / "weights" / "converted" / f"{sha}.safetensors"
    assert converted.is_file() and bb.checkpoint_path == str(converted)
    mtime = converted.stat().st_mtime_ns
    assert get_backbone("sslam").checkpoint_sha256 == sha and converted.stat().st_mtime_ns == mtime


def test_hf_spec_with_revision_and_file(hub, bat_bytes):
    sha = hub.add("someone/my-bat", "weights/enc.safetensors", bat_bytes)
    bb = get_backbone("bat-tiny", weights=f"hf:someone/my-bat@{COMMIT}/weights/enc.safetensors")
    assert bb.checkpoint_sha256 == sha and bb.weights.revision == COMMIT
    with pytest.raises(CheckpointError, match="revision 'nope' not found"):
        get_backbone("bat-tiny", weights="hf:someone/my-bat@nope/weights/enc.safetensors")
    with pytest.raises(CheckpointError, match="has no file 'model.safetensors'"):
        get_backbone("bat-tiny", weights="hf:someone/my-bat")
    with pytest.raises(CheckpointError, match="repository no/such not found"):
        get_backbone("bat-tiny", weights="hf:no/such")


def test_corrupted_hub_file_is_refused_with_both_hashes(hub, bat_bytes):
    sha = hub.add(BAT_REPO, "model.safetensors", bat_bytes)
    path = get_backbone("bat").weights.path.resolve()
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(CheckpointError, match=rf"sha256 {bad} does not match the sha256 published by the Hub {sha}"):
        get_backbone("bat")


def test_gated_repo_without_token_is_a_clear_error(hub, bat_bytes, monkeypatch):
    hub.add("org/gated-bat", "model.safetensors", bat_bytes)
    hub.gated.add("org/gated-bat")
    with pytest.raises(CheckpointError, match="gated repository") as e:
        get_backbone("bat-tiny", weights="hf:org/gated-bat")
    assert "HF_TOKEN" in e.value.hint and f"{hub.url}/org/gated-bat" in e.value.hint
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert get_backbone("bat-tiny", weights="hf:org/gated-bat").checkpoint_sha256


def test_url_download_pins_its_first_hash_and_refuses_a_changed_file(hub, bat_bytes):
    hub.files["enc.safetensors"] = bat_bytes
    url = f"{hub.url}/files/enc.safetensors"
    bb = get_backbone("bat-tiny", weights=url)
    sha = hashlib.sha256(bat_bytes).hexdigest()
    assert bb.checkpoint_sha256 == sha and bb.cache_key()["weights"]["source"] == url
    assert W._read_pins()[url] == sha
    n = len(hub.log)
    assert get_backbone("bat-tiny", weights=url).checkpoint_sha256 == sha and len(hub.log) == n  # no network
    path = bb.weights.path
    path.write_bytes(bat_bytes[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match=rf"does not match the sha256 pinned at its first download {sha}"):
        get_backbone("bat-tiny", weights=url)


def test_interrupted_url_download_resumes(hub, bat_bytes):
    hub.files["big.safetensors"] = bat_bytes
    hub.interrupt_once.add("big.safetensors")
    url = f"{hub.url}/files/big.safetensors"
    with pytest.raises(CheckpointError, match="interrupted"):
        get_backbone("bat-tiny", weights=url)
    part = W._url_dest(url).with_name("big.safetensors.part")
    assert 0 < part.stat().st_size < len(bat_bytes)
    bb = get_backbone("bat-tiny", weights=url)
    assert bb.checkpoint_sha256 == hashlib.sha256(bat_bytes).hexdigest() and not part.exists()
    ranged = [h.get("Range") for m, p, h in hub.log if m == "GET" and p.endswith("big.safetensors")]
    assert ranged[-1] == f"bytes={len(bat_bytes) // 2}-"


def test_url_offline_names_where_to_place_the_file(hub, monkeypatch):
    monkeypatch.setenv("PROBEKIT_OFFLINE", "1")
    url = f"{hub.url}/files/x.safetensors"
    with pytest.raises(CheckpointError, match="offline") as e:
        get_backbone("bat-tiny", weights=url)
    assert str(W._url_dest(url)) in e.value.hint


def test_plain_http_is_refused_off_the_loopback():
    with pytest.raises(BackboneError, match="only https"):
        get_backbone("bat-tiny", weights="http://example.com/w.safetensors")


def test_registered_sha256_is_enforced(hub, bat_bytes, monkeypatch):
    hub.files["enc.safetensors"] = bat_bytes
    url = f"{hub.url}/files/enc.safetensors"
    monkeypatch.setitem(W._WEIGHTS, "bat-tiny", W.PublishedWeights("bat-tiny", (url,), sha256="0" * 64))
    with pytest.raises(CheckpointError, match=f"does not match the registered sha256 {'0' * 64}"):
        get_backbone("bat-tiny")


def test_random_and_pretrained_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))
    shipped = get_backbone("bat-tiny-fsdd")  # the file inside the package
    assert shipped.weights.kind == "package" and shipped.checkpoint_sha256 == W.published_weights("bat-tiny-fsdd").sha256
    rnd = get_backbone("bat-tiny-fsdd", weights="random", seed=3)
    assert rnd.checkpoint_sha256 is None and rnd.seed == 3 and rnd.weights.describe(3) == "random init (seed 3)"
    assert rnd.cache_key()["weights"] == {"random_init_seed": 3}
    assert get_backbone("bat-tiny").weights.kind == "random"  # a test size has no published weights
    with pytest.raises(BackboneError, match="'bat-tiny' has no published weights"):
        get_backbone("bat-tiny", weights="pretrained")
    with pytest.raises(BackboneError, match="both checkpoint="):
        get_backbone("bat-tiny-fsdd", checkpoint=shipped.weights.path, weights="random")
    # --checkpoint PATH is an alias of --weights PATH: same weights, same cache key
    a = get_backbone("bat-tiny-fsdd", checkpoint=shipped.weights.path)
    assert a.cache_key() == get_backbone("bat-tiny-fsdd", weights=str(shipped.weights.path)).cache_key()
    assert a.cache_key() == shipped.cache_key()


def test_every_official_name_has_a_source():
    for name in ("bat", "eat", "eat-ft-as2m", "eat-large", "eat-large-ft-as2m", "sslam", "sslam-ft-as2m"):
        entry = W.published_weights(name)
        assert entry is not None and entry.sources[0].startswith("hf:"), name
    assert W.published_weights("sslam-ft-as2m").sources[0] == "hf:ta012/SSLAM_AS2M_Finetuned/model.safetensors"


def test_melpatch_floor_tokens():
    bb = get_backbone("melpatch")
    feats = torch.arange(2 * 40 * 128, dtype=torch.float32).reshape(2, 1, 40, 128)
    t = bb.encode(feats, torch.tensor([40, 10]))
    assert t.grid == (2, 8) and t.patch.shape == (2, 1, 16, 256) and t.valid_rows.tolist() == [2, 1]
    # token (t=1, f=2) is the 16x16 block frames 16..31, mel bins 32..47, row-major
    assert torch.equal(t.patch[0, 0, 1 * 8 + 2], feats[0, 0, 16:32, 32:48].reshape(-1))
    assert torch.allclose(t.cls[1, 0], t.patch[1, 0, :8].mean(0))
    assert bb.checkpoint_sha256 is None and bb.seed is None and bb.card.params == 0
    with pytest.raises(BackboneError, match="melpatch has no weights"):
        get_backbone("melpatch", weights="pretrained")
    with pytest.raises(BackboneError, match="melpatch has no weights"):
        get_backbone("melpatch", weights="hf:a/b")


def test_cli_weights_random_check_backbone(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["check-backbone", "bat-tiny-fsdd", "--weights", "random"]) == 0
    assert "random init (seed 0)" in capsys.readouterr().out
    assert main(["check-backbone", "bat-tiny", "--weights", "pretrained"]) == 2

"""Weights by name (issue 15): a name means its published weights, never silently random ones, and a
changed file is refused. Each test fails on the commit before `probekit.backbones.weights`."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backbones"))
from hub_server import HubServer  # noqa: E402
from official_reference import random_vit_state  # noqa: E402

from probekit.backbones import get_backbone  # noqa: E402
from probekit.errors import CheckpointError  # noqa: E402

SHIPPED_SHA = "57e9406a43f39a2932bbe5813c7e58a46703861ec19206fc3e7fe7c5a80cbc94"  # probekit/data/bat-tiny-fsdd


@pytest.fixture(autouse=True)
def _local_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: no request leaves the machine
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("PROBEKIT_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "PROBEKIT_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(k, raising=False)


def test_shipped_name_means_the_shipped_weights_not_random_init():
    from probekit._evaluate import backbone_ref as _backbone_ref

    bb = get_backbone("bat-tiny-fsdd")
    assert bb.checkpoint_sha256 == SHIPPED_SHA
    ref = _backbone_ref(bb)
    assert "random init" not in ref.label and ref.training_data == ["fsdd"]


def test_official_name_offline_is_a_clear_error_not_random_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="hf:lrauch/BAT-vit-b16-pretrainedAS2M/model.safetensors: not in the "
                       "Hugging Face cache"):
        get_backbone("bat")


def test_random_weights_only_when_asked_and_labelled():
    from probekit._evaluate import backbone_ref as _backbone_ref

    ref = _backbone_ref(get_backbone("bat-tiny-fsdd", weights="random", seed=5))
    assert ref.checkpoint_sha256 is None and ref.label == "bat-tiny-fsdd (random init, seed 5)"


def test_changed_download_is_refused_with_both_hashes(monkeypatch):
    server = HubServer().start()
    try:
        data = save({k: v.contiguous() for k, v in random_vit_state(dim=64, depth=2, seed=4).items()})
        good = server.add("lrauch/BAT-vit-b16-pretrainedAS2M", "model.safetensors", data)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        path = get_backbone("bat").weights.path.resolve()
        path.write_bytes(data[:-8] + b"\x7f" * 8)  # bit rot, or a tampered cache
        bad = hashlib.sha256(path.read_bytes()).hexdigest()
        with pytest.raises(CheckpointError, match=f"sha256 {bad} does not match .* {good}"):
            get_backbone("bat")
    finally:
        server.stop()


def test_pinned_url_hash_refuses_a_replaced_file(monkeypatch):
    server = HubServer().start()
    try:
        state = random_vit_state(dim=64, depth=2, seed=6)
        server.files["w.safetensors"] = save({k: v.contiguous() for k, v in state.items()})
        url = f"{server.url}/files/w.safetensors"
        first = get_backbone("bat-tiny", weights=url)
        other = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
        first.weights.path.write_bytes(save({k: torch.as_tensor(v).contiguous() for k, v in other.items()}))
        with pytest.raises(CheckpointError, match="pinned at its first download"):
            get_backbone("bat-tiny", weights=url)
    finally:
        server.stop()

"""Mismatch guards: tokens made with other weights or another frontend are never probed as if they
were the ones asked for, and a trained probe is never run on a backbone of another width.

tests/cache/test_guards.py covers `open_cache(..., path=...)` with another seed/frontend/dataset; here the
same refusals are checked where a user meets them: the weights in a --checkpoint file, a store copied or
renamed by hand into the place of another key, `probekit.api.prepare`, and a saved probe.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from _faults import OTHERS, SOURCE, assert_user_error, cli, write_manifest

from probekit.backbones import get_backbone
from probekit.backbones.checkpoints import save_probekit_checkpoint
from probekit.cache.reader import open_cache
from probekit.errors import CacheError, ProbeError


@pytest.fixture(scope="module")
def setup(tmp_path_factory, fsdd_root):
    """A manifest of real clips, two weight files of bat-tiny, and the cache of the first one."""
    d = tmp_path_factory.mktemp("mismatch")
    names = [SOURCE, *OTHERS]
    for n in names:
        shutil.copyfile(fsdd_root / "recordings" / n, d / n)
    csv = write_manifest(d, [(n, f"d{n[0]}", "train") for n in names])
    weights = {}
    for seed in (0, 1):
        m = get_backbone("bat-tiny", seed=seed).model
        weights[seed] = save_probekit_checkpoint(d / f"w{seed}.safetensors", m.state_dict(), config=m.config)
    from probekit.cli import main

    cache = d / "cache"
    assert main(["extract", "--backbone", "bat-tiny", "--checkpoint", str(weights[0]), "--dataset",
                 f"manifest:{csv}", "--cache-dir", str(cache), "--workers", "0", "--no-progress"]) == 0  # fmt: skip
    return csv, weights, cache


def _ds(csv):
    from probekit.datasets import get_dataset

    return get_dataset(f"manifest:{csv}")


def test_cache_of_other_weights_is_not_used_for_a_checkpoint(setup):
    csv, weights, cache = setup
    other = get_backbone("bat-tiny", weights[1])
    with pytest.raises(CacheError, match=r"no cache of bat-tiny .* differs: .*weights.sha256"):
        open_cache(other, _ds(csv), "train", cache_dir=cache)
    (store,) = cache.glob("*.zarr")
    with pytest.raises(CacheError, match=r"was made from other inputs than asked: .*weights.sha256"):
        open_cache(other, _ds(csv), "train", path=store)
    ok = open_cache(get_backbone("bat-tiny", weights[0]), _ds(csv), "train", cache_dir=cache)
    assert ok.num_clips == len(OTHERS) + 1


def test_api_refuses_rather_than_reuse_when_extraction_is_declined(setup, tmp_path):
    from probekit.api import prepare

    csv, weights, cache = setup
    with pytest.raises(CacheError, match=r"extraction declined .*weights.sha256"):
        prepare("bat-tiny", _ds(csv), "train", cache_dir=cache, checkpoint=weights[1], confirm=lambda m: False,
                progress=False, device="cpu")  # fmt: skip
    assert len(list(cache.glob("*.zarr"))) == 1  # nothing was extracted or reused
    # another frontend recipe (EAT's paper fbank statistics vs the model's own): refused, naming it
    eat = prepare("eat-tiny", _ds(csv), "train", cache_dir=tmp_path, confirm=lambda m: True, progress=False,
                  device="cpu", workers=0)  # fmt: skip
    assert not eat.reused
    with pytest.raises(CacheError, match=r"extraction declined .*frontend\.(mean|std|pad_before_norm)"):
        prepare("eat-tiny", _ds(csv), "train", cache_dir=tmp_path, frontend_style="bat-paper",
                confirm=lambda m: False, progress=False, device="cpu")  # fmt: skip
    assert prepare("eat-tiny", _ds(csv), "train", cache_dir=tmp_path, progress=False, device="cpu").reused


def test_store_renamed_into_the_place_of_another_key_is_refused(setup, tmp_path, capsys):
    """A store copied by hand under the name another key would have: found by name, refused by content."""
    from probekit.cache import plan

    csv, weights, cache = setup
    (store,) = cache.glob("*.zarr")
    other = get_backbone("bat-tiny", weights[1])
    target = plan(other, _ds(csv), "train", cache_dir=tmp_path, need_layout=False).path
    shutil.copytree(store, target)
    with pytest.raises(CacheError, match=r"was made from other inputs than asked: .*weights.sha256"):
        open_cache(other, _ds(csv), "train", cache_dir=tmp_path)
    # extract must not take it for a finished cache of these weights either
    rc, _, err = cli(capsys, "extract", "--backbone", "bat-tiny", "--checkpoint", weights[1], "--dataset",
                     f"manifest:{csv}", "--cache-dir", tmp_path, "--workers", "0", "--no-progress")  # fmt: skip
    assert_user_error(rc, err, target.name, "weights.sha256")


def test_probe_for_another_width_is_refused(setup, tmp_path):
    """A probe trained on bat-tiny's 64-wide tokens, loaded for BAT-B (768 wide): refused, naming both."""
    from probekit.backbones.registry import backbone_card
    from probekit.probes import load_probe, make_probe, save_probe
    from probekit.tokens import TokenRequest
    from probekit.train.fit import TrainConfig, fit

    csv, weights, cache = setup
    data = open_cache(get_backbone("bat-tiny", weights[0]), _ds(csv), "train", cache_dir=cache)
    probe = make_probe("linear", num_layers=data.num_layers, embed_dim=data.embed_dim,
                       num_classes=data.num_classes, seed=0)  # fmt: skip
    fit(probe, data, config=TrainConfig(epochs=3, batch_size=6, device="cpu"), progress=False)
    path = save_probe(probe, tmp_path / "linear.safetensors", metadata={"backbone": "bat-tiny"})
    bat = backbone_card("bat")
    with pytest.raises(ProbeError, match=r"embed_dim 64 \(file\) vs 768 \(asked\); num_layers 4 \(file\) vs 12"):
        load_probe(path, embed_dim=bat.embed_dim, num_layers=bat.num_layers)
    back = load_probe(path, embed_dim=data.embed_dim, num_layers=data.num_layers, num_classes=data.num_classes)
    batch = next(data.batches(TokenRequest(layers="all"), 6))
    probe.eval()
    with torch.no_grad():
        assert torch.equal(back(batch), probe(batch))

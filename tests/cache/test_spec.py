"""The cache seam's value objects: validation in library words, one plan shared by extract and open_cache,
and the module layout (no module shadowed by the function of the same name)."""

from __future__ import annotations

import importlib

import pytest

from probekit.cache import RunOptions, TokenSpec, extract, open_cache, plan
from probekit.cache.spec import resolve_layers, split_options
from probekit.errors import ConfigError


@pytest.mark.parametrize("make, words", [
    (lambda: TokenSpec(dtype="float8"), "unknown token dtype 'float8'"),
    (lambda: TokenSpec(frontend_style="paper"), "unknown frontend style 'paper'"),
    (lambda: TokenSpec(autocast="int8"), "bad autocast 'int8'"),
    (lambda: RunOptions(batch_size=0), "batch size must be >= 1, got 0"),
    (lambda: RunOptions(on_error="ignore"), "bad on_error value 'ignore'"),
    (lambda: RunOptions(shard="1-2").shard_of(), "bad shard value '1-2'"),
    (lambda: RunOptions(shard=(2, 2)).shard_of(), "bad shard 2/2"),
    (lambda: resolve_layers("0,x", 4), "bad layers value '0,x'"),
    (lambda: resolve_layers("7", 4), "layer 7 out of range: the backbone has 4 blocks"),
])
def test_library_errors_name_the_value_in_library_words(make, words):
    with pytest.raises(ConfigError) as err:
        make()
    assert words in str(err.value) and "--" not in str(err.value).split("hint")[0]


def test_value_objects_are_frozen_and_hashable():
    spec = TokenSpec(layers=[3, 1])
    assert spec.layers == (3, 1) and hash(spec) == hash(TokenSpec(layers=(3, 1)))
    with pytest.raises(AttributeError):
        spec.dtype = "int8"
    tokens, run = split_options({"layers": "last", "cache_dir": "/x", "need_layout": False}, TokenSpec(dtype="int8"))
    assert tokens == TokenSpec(layers="last", dtype="int8") and run == RunOptions(cache_dir="/x")
    with pytest.raises(TypeError, match="layerz"):
        split_options({"layerz": "last"})


def test_one_plan_serves_extract_and_open_cache(bat_tiny, make_subset, tmp_path):
    ds = make_subset(8)
    run = RunOptions(device="cpu", cache_dir=tmp_path, batch_size=4, workers=0, progress=False)
    p = plan(bat_tiny, ds, "test", TokenSpec(layers="last", dtype="int8"), run)
    store = extract(p, run=run)
    assert store.path == p.path and store.key == p.key and store.layout.layers == (3,)
    assert open_cache(p).path == p.path
    # the flat 0.1 call finds the very same store
    assert extract(bat_tiny, ds, "test", cache_dir=tmp_path, layers="last", dtype="int8", workers=0,
                   progress=False, device="cpu").path == p.path
    with pytest.raises(TypeError, match="the plan fixes the tokens"):
        extract(p, layers="all")
    with pytest.raises(TypeError, match="the plan fixes"):
        open_cache(p, dtype="float16")


def test_extract_is_a_function_and_extraction_its_module():
    import probekit
    import probekit.cache

    assert callable(probekit.cache.extract) and probekit.extract is probekit.cache.extract
    assert importlib.import_module("probekit.cache.extraction").extract is probekit.cache.extract
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("probekit.cache.extract")

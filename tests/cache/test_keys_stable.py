"""The content key of a store never changes for the same inputs.

A refactor that changes one of the digests below would orphan every store users already have (and
silently re-extract): keep them.

History: 0.2.0 changed exactly one part of every key, the dataset fingerprint (`v2-`: file contents
instead of file sizes, so audio edited in place is noticed). Every other field of these five keys was
checked equal to 0.1.0's (commit 01d8ec0) with the fingerprint masked; the digests were then re-pinned.
Old stores are re-extracted once (CHANGELOG, "Migration").
"""

from __future__ import annotations

import pytest

from probekit.backbones import get_backbone
from probekit.cache import extract, plan
from probekit.cache.keys import key_digest

# name -> (backbone, token options, pinned digest)
CASES = {
    "bat-default": ("bat-tiny", {}, "084f5eb2a66060999a91"),
    "eat-last-int8": ("eat-tiny", dict(layers="last", dtype="int8"), "ff7f161c4d0881306ea9"),
    "bat-paper-bf16": ("bat-tiny", dict(frontend_style="bat-paper", dtype="bfloat16", layers="0,2"),
                       "a6aedcd8751d7b70322c"),
    "eat-autocast": ("eat-tiny", dict(autocast=True, dtype="float32"), "e66b02ab9dee0db7d633"),
    "bat-own-frontend": ("bat-tiny", dict(frontend_style=None), "6dbad8c7eb39c7830b3b"),
}


@pytest.fixture(scope="module")
def fsdd48(make_subset):
    return make_subset(48)


@pytest.mark.parametrize("case", sorted(CASES))
def test_planned_key_digest_is_pinned(case, fsdd48, tmp_path):
    from probekit.cache import RunOptions, TokenSpec

    name, opts, digest = CASES[case]
    p = plan(get_backbone(name, seed=0), fsdd48, "test", TokenSpec(**opts), RunOptions(cache_dir=tmp_path, device="cpu"))
    assert key_digest(p.key) == digest
    assert p.path.name.endswith(f"__{digest}.zarr") and p.path.parent == tmp_path


def test_trained_checkpoint_key_is_pinned(fsdd48, tmp_path):
    from probekit.backbones.bat import BAT_TINY_FSDD_WEIGHTS
    from probekit.cache import RunOptions, TokenSpec

    p = plan(get_backbone("bat-tiny-fsdd", BAT_TINY_FSDD_WEIGHTS), fsdd48, "test", TokenSpec(),
             RunOptions(cache_dir=tmp_path, device="cpu"))
    assert key_digest(p.key) == "c3be88ac2c23576a60b0"


def test_extracted_store_name_is_pinned(make_subset, tmp_path):
    st = extract(get_backbone("bat-tiny", seed=0), make_subset(8), "test", cache_dir=tmp_path, layers="last",
                 dtype="int8", batch_size=4, workers=0, progress=False, device="cpu")
    assert st.path.name == "bat-tiny__fsdd__test__int8__e7c68d939bd8640b86c8.zarr"
    assert key_digest(st.key) == "e7c68d939bd8640b86c8"

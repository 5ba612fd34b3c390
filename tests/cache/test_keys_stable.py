"""The content key of a store never changes for the same inputs.

The digests below were computed on the commit before the cache seam was split (01d8ec0). A refactor that
changes one of them would orphan every store users already have (and silently re-extract): keep them.
"""

from __future__ import annotations

import pytest

from probekit.backbones import get_backbone
from probekit.cache import extract, plan
from probekit.cache.keys import key_digest

# name -> (backbone, token options, pinned digest)
CASES = {
    "bat-default": ("bat-tiny", {}, "c5977bb77699c1dfb2f8"),
    "eat-last-int8": ("eat-tiny", dict(layers="last", dtype="int8"), "dba3344b8786b4e6a036"),
    "bat-paper-bf16": ("bat-tiny", dict(frontend_style="bat-paper", dtype="bfloat16", layers="0,2"),
                       "af03c2bc5d6145dee088"),
    "eat-autocast": ("eat-tiny", dict(autocast=True, dtype="float32"), "30ac0d450d1bb262610b"),
    "bat-own-frontend": ("bat-tiny", dict(frontend_style=None), "68e45d2468dba05fbec2"),
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
    assert key_digest(p.key) == "425db65d9b55e08c86e4"


def test_extracted_store_name_is_pinned(make_subset, tmp_path):
    st = extract(get_backbone("bat-tiny", seed=0), make_subset(8), "test", cache_dir=tmp_path, layers="last",
                 dtype="int8", batch_size=4, workers=0, progress=False, device="cpu")
    assert st.path.name == "bat-tiny__fsdd__test__int8__dfbedd3c084fba64162b.zarr"
    assert key_digest(st.key) == "dfbedd3c084fba64162b"

"""Shared fixtures. Real audio comes from ../shared/data/fsdd (CI has it beside the clone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Keep the suite's files out of the user's folders: the fingerprint memo and the checkpoint sha256
# index go to a per-run temporary folder unless a test sets its own (subprocesses inherit these).
if "PROBEKIT_FINGERPRINT_MEMO" not in os.environ or "PROBEKIT_CACHE_DIR" not in os.environ:
    import tempfile

    _run_dir = Path(tempfile.mkdtemp(prefix="probekit-tests-"))
    os.environ.setdefault("PROBEKIT_FINGERPRINT_MEMO", str(_run_dir / "fingerprints.sqlite"))
    os.environ.setdefault("PROBEKIT_CACHE_DIR", str(_run_dir / "user-cache"))


def _find_shared() -> Path | None:
    env = os.environ.get("PROBEKIT_SHARED")
    candidates = [Path(env)] if env else []
    # ../shared beside the clone (CI and developers), also from git worktrees one level deeper
    candidates += [REPO.parent / "shared", REPO.parent.parent / "shared", Path("/work/shared")]
    for c in candidates:
        if (c / "data" / "fsdd" / "recordings").is_dir():
            return c
    return None


SHARED = _find_shared()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The directory holding real datasets (fsdd/ inside)."""
    if SHARED is None:
        pytest.fail("../shared/data/fsdd not found: set PROBEKIT_SHARED to the shared folder")
    return SHARED / "data"


@pytest.fixture(scope="session")
def fsdd_root(shared_data) -> Path:
    return shared_data / "fsdd"


@pytest.fixture(autouse=True)
def _deterministic_torch():
    # 2-core machines run several test processes at once; one thread keeps timings sane and results deterministic.
    torch.set_num_threads(1)
    yield


# Real FSDD-derived tokens for the probe and training tests (tests/fsdd_tokens.py builds them).
@pytest.fixture(scope="session")
def fsdd_train(fsdd_root):
    from tests.fsdd_tokens import fsdd_tokens

    return fsdd_tokens(fsdd_root, takes=(5, 15))


@pytest.fixture(scope="session")
def fsdd_test(fsdd_root):
    from tests.fsdd_tokens import fsdd_tokens

    return fsdd_tokens(fsdd_root, takes=(0, 5))


@pytest.fixture(scope="session")
def fsdd_multilabel(fsdd_root):
    from tests.fsdd_tokens import fsdd_tokens

    return fsdd_tokens(fsdd_root, takes=(5, 15), multilabel=True)

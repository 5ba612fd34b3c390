"""Fixtures of the fine-tuning tests: small FSDD subsets as Datasets (real clips, every digit)."""

from __future__ import annotations

import dataclasses

import pytest

from probekit.datasets.base import Dataset


def fsdd_part(root, n_train: int, n_test: int, *, valid: int = 0) -> Dataset:
    """Every k-th clip of FSDD's train / test split (all ten digits); `valid` more train clips as a valid split."""
    from probekit.datasets import get_dataset

    full = get_dataset("fsdd", root=root)

    def every(split, n, offset=0):
        clips = full.clips(split)
        step = max(1, len(clips) // n)
        return clips[offset::step][:n]

    train, test = every("train", n_train), every("test", n_test)
    val = every("train", valid, offset=1) if valid else []
    spec = dataclasses.replace(full.spec, splits=("train", "valid", "test")) if valid else full.spec
    return Dataset(spec, full.root, lambda s: {"train": train, "test": test, "valid": val}.get(s, []))


@pytest.fixture(scope="session")
def fsdd_part_factory(fsdd_root):
    return lambda n_train, n_test, valid=0: fsdd_part(fsdd_root, n_train, n_test, valid=valid)

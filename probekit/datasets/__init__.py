"""Datasets: specs (metadata), loaders for the official layouts, user manifests, and the registry."""

from probekit.datasets.base import Clip, Dataset, DatasetSpec
from probekit.datasets.registry import (
    DATASET_SPECS,
    DATASETS,
    ENV_VAR,
    data_roots,
    find_root,
    get_dataset,
    get_spec,
    list_datasets,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "DATASET_SPECS",
    "ENV_VAR",
    "Clip",
    "Dataset",
    "DatasetSpec",
    "data_roots",
    "find_root",
    "get_dataset",
    "get_spec",
    "list_datasets",
    "register_dataset",
]

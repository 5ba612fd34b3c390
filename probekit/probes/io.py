"""Save a trained probe and load it back for a backbone, refusing one of another width or depth.

A probe file is safetensors (weights; never unpickled) whose header carries the probe's name, its
shape arguments (layers, width, classes, heads) and keyword hyperparameters as JSON, so
`load_probe` rebuilds exactly the module that was trained. The shape arguments are the guard: a probe
trained on 768-wide tokens of 12 blocks cannot silently run on a 64-wide, 4-block backbone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from probekit._io import atomic_write_bytes
from probekit.errors import ProbeError
from probekit.probes.base import Probe, make_probe

__all__ = ["PROBE_FORMAT_VERSION", "load_probe", "read_probe_header", "save_probe"]

PROBE_FORMAT_VERSION = 1
_META_KEY = "probekit_probe"


def _plain(value: Any) -> Any:
    """Hyperparameters as JSON values (tuples -> lists, numpy scalars -> Python)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, torch.Tensor):
        return value.item()
    return value


def save_probe(probe: Probe, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write `probe` as safetensors with its name, shape arguments and hyperparameters in the header.

    Written atomically (a temporary file renamed into place): a crash never leaves half a probe.

    Args:
        probe: a trained probe (any registered `Probe`).
        path: destination, conventionally `*.safetensors`.
        metadata: extra JSON-serialisable facts to keep (backbone, checkpoint sha256, dataset, metric).

    Returns:
        The written path.
    """
    if not isinstance(probe, Probe) or not probe.name:
        raise ProbeError(f"save_probe takes a registered probe, got {type(probe).__name__}")
    path = Path(path)
    header = {
        "format_version": PROBE_FORMAT_VERSION,
        "probe": probe.name,
        "shape": {k: int(v) for k, v in probe.shape_args.items() if v is not None},
        "hparams": {k: _plain(v) for k, v in probe.hparams.items()},
        "metadata": dict(metadata or {}),
    }
    try:
        text = json.dumps(header, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ProbeError(
            f"{path}: probe hyperparameters or metadata are not JSON-serialisable ({e})"
        ) from None
    # safetensors refuses tensors that share memory; clone so tied weights save too
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in probe.state_dict().items()}
    from safetensors.torch import save

    data = save(tensors, metadata={_META_KEY: text, "format": "probekit-probe"})
    return atomic_write_bytes(path, data)


def read_probe_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a probe file (name, shape, hparams, metadata) without loading weights."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"{path}: probe file not found", hint="check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types by version
        raise ProbeError(
            f"{path}: not a readable probe file ({str(e).strip()[:200]})",
            hint="probe files are written by probekit.probes.save_probe",
        ) from None
    if _META_KEY not in meta:
        raise ProbeError(
            f"{path}: a safetensors file without a probekit probe header",
            hint="probe files are written by probekit.probes.save_probe",
        )
    try:
        header = json.loads(meta[_META_KEY])
        header["probe"], header["shape"], header["hparams"]
    except (ValueError, KeyError, TypeError) as e:
        raise ProbeError(f"{path}: damaged probe header ({e})") from None
    if header.get("format_version", 0) > PROBE_FORMAT_VERSION:
        raise ProbeError(
            f"{path}: probe format {header['format_version']} is newer than this probekit reads "
            f"({PROBE_FORMAT_VERSION})",
            hint="upgrade probekit",
        )
    return header


def load_probe(
    path: str | os.PathLike,
    *,
    embed_dim: int | None = None,
    num_layers: int | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> Probe:
    """Rebuild a saved probe and load its weights, checking it fits the tokens it will read.

    Args:
        path: a file written by `save_probe`.
        embed_dim: the width of the backbone's tokens (`backbone.embed_dim`); refused when different.
        num_layers: the layers of the token data it will read; refused when different.
        num_classes: the classes of the dataset; refused when different.
        device: where to put the probe.

    Returns:
        The probe in eval mode.

    Raises:
        ProbeError: missing or damaged file, unknown probe, or a width/layers/classes mismatch.
    """
    path = Path(path)
    header = read_probe_header(path)
    shape = header["shape"]
    asked = {"embed_dim": embed_dim, "num_layers": num_layers, "num_classes": num_classes}
    wrong = [
        f"{k} {shape.get(k)} (file) vs {v} (asked)"
        for k, v in asked.items()
        if v is not None and shape.get(k) != int(v)
    ]
    if wrong:
        raise ProbeError(
            f"{path}: probe {header['probe']!r} was trained for other tokens: " + "; ".join(wrong),
            hint="a probe only runs on the backbone (width, layers) and classes it was trained for; train one "
            "for this backbone",
        )
    probe = make_probe(header["probe"], **shape, **header["hparams"])
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise ProbeError(f"{path}: unreadable probe weights ({str(e).strip()[:200]})") from None
    try:
        result = probe.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of another shape than the header's sizes build
        raise ProbeError(
            f"{path}: weights do not fit probe {header['probe']!r} ({str(e).strip()[:300]})"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise ProbeError(
            f"{path}: weights do not fit probe {header['probe']!r}: missing {list(result.missing_keys)[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )
    return probe.to(device).eval()

"""One device resolver for every stage (extraction, training, pretraining, backbones)."""

from __future__ import annotations

from probekit.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(device=None):
    """'auto' (or None) -> CUDA when present, else CPU; anything else must name a usable device.

    Raises ConfigError naming the value for an unknown device type ('tpu') or a CUDA device that is
    absent or out of range.
    """
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {str(device)!r}", hint="use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {str(device)!r} is not supported", hint="use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {str(device)!r} requested but CUDA is not available",
                              hint="use device 'auto' or 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s) here",
                              hint="use cuda:0 .. cuda:N-1 or auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {str(device)!r} requested but MPS is not available", hint="use auto or cpu")
    return dev

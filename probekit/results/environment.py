"""What a measured record is stamped with: probekit/torch/python versions, CPU/GPU and the git revision."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from probekit.results.schema import Environment

__all__ = ["capture_environment"]

_GIT_CACHE: dict[str, tuple[str | None, bool | None]] = {}


def _git_revision() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the probekit source tree when it is a git checkout; (None, None) otherwise."""
    src = str(Path(__file__).resolve().parents[2])
    if src in _GIT_CACHE:
        return _GIT_CACHE[src]
    out: tuple[str | None, bool | None] = (None, None)
    try:
        rev = subprocess.run(
            ["git", "-C", src, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", src, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        out = (rev or None, bool(dirty))
    except (OSError, subprocess.SubprocessError):
        pass
    _GIT_CACHE[src] = out
    return out


def _cpu_name() -> str | None:
    cpu = platform.processor() or platform.machine() or None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def capture_environment(device: str | None = None) -> Environment:
    """Versions, CPU/GPU and git revision of this process (what a measured record is stamped with)."""
    import probekit

    torch_version = gpu = None
    try:
        import torch

        torch_version = torch.__version__
        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover
        pass
    rev, dirty = _git_revision()
    return Environment(
        probekit=probekit.__version__,
        torch=torch_version,
        python=platform.python_version(),
        platform=platform.platform(),
        cpu=_cpu_name(),
        cpu_count=os.cpu_count(),
        gpu=gpu,
        device=device,
        git_revision=rev,
        git_dirty=dirty,
    )

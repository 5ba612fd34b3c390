"""Frontend plumbing shared by every backbone class: resolve a frontend spec, run it, describe its config.

A spec is a preset or recipe name (`"bat"`, `"eat-esc50"`), a config (dataclass or dict), or an
already-built Frontend (anything callable with a `.config`, e.g. a family's own frontend).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from probekit.errors import BackboneError

__all__ = ["frontend_config_dict", "native_preset", "resolve_frontend", "run_frontend"]


def frontend_config_dict(config: Any) -> dict:
    """A frontend config as a plain dict (it keys the cache)."""
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if dataclasses.is_dataclass(config):
        d = dataclasses.asdict(config)
        d.setdefault("kind", type(config).__name__)
        return d
    if isinstance(config, dict):
        return dict(config)
    raise BackboneError(f"cannot describe frontend config of type {type(config).__name__}")


# A recipe name as a card holds it ("fbank", "bat", or an alias frontend_for accepts) -> the model's own
# AudioSet recipe at the clip's native length (no fixed frame count: any clip length runs, padded only to
# the patch size), so a fresh backbone works on any input; extraction picks the dataset's recipe instead.
_NATIVE_PRESET = {"fbank": "eat-native", "bat": "bat-native"}


def native_preset(name: str) -> str:
    """The preset a recipe name (card.frontend) stands for; other names are returned unchanged."""
    from probekit.audio import frontends

    recipe = frontends._RECIPE_ALIASES.get(name)
    return _NATIVE_PRESET.get(recipe, name) if recipe else name


def resolve_frontend(spec: Any) -> tuple[Any, Any]:
    """(frontend, config) from a preset/recipe name, a config (dataclass or dict), or a built Frontend."""
    from probekit.audio import frontends as fe

    if isinstance(spec, str):
        config = fe.frontend_preset(native_preset(spec))
    elif isinstance(spec, dict):
        config = fe.config_from_dict(spec)
    elif callable(spec) and hasattr(spec, "config") and not dataclasses.is_dataclass(spec):
        return spec, spec.config  # an already-built Frontend
    else:
        config = spec
    return fe.make_frontend(config), config


def run_frontend(fe, wave: torch.Tensor, lengths) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Frontend output and the frames holding real audio per clip (from `fe.valid_frames(samples)`)."""
    out = fe(wave, lengths) if lengths is not None else fe(wave)
    if isinstance(out, tuple):
        return out[0], out[1]
    if not hasattr(fe, "valid_frames"):
        return out, None
    lens = [wave.shape[-1]] * wave.shape[0] if lengths is None else torch.as_tensor(lengths).reshape(-1).tolist()
    return out, torch.tensor([fe.valid_frames(int(n)) for n in lens], dtype=torch.long)

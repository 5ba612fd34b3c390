"""Backbone registry: `register_backbone` factories, `get_backbone(name, weights=...)`, `list_backbones()`.

This module imports no model family (timm style): each family module registers its names when
`probekit/backbones/__init__.py` imports it. Third-party packages add theirs through the entry-point
group `probekit.backbones`: each entry point names a factory (called with `checkpoint=` and whichever of
the `BACKBONE_OPTIONS` it accepts) or a module that registers factories when imported.

    [project.entry-points."probekit.backbones"]
    mymodel = "mypkg.probekit_plugin:make_backbone"
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata as importlib_metadata

from probekit._registry import Registry
from probekit.backbones.protocol import Backbone, BackboneCard, missing_members
from probekit.errors import BackboneError

__all__ = [
    "BACKBONE_OPTIONS",
    "RegisteredBackbone",
    "backbone_card",
    "check_options",
    "get_backbone",
    "list_backbones",
    "register_backbone",
    "register_backbone_prefix",
]

ENTRY_POINT_GROUP = "probekit.backbones"

#: The keyword options `get_backbone` passes on, with their defaults (an unset option is not passed to a
#: factory that cannot take it; a set one it cannot take is an error).
BACKBONE_OPTIONS: dict[str, object] = {
    "seed": 0,
    "num_heads": None,
    "trust_checkpoint": False,
    "use_ema": False,
    "frontend": None,
    "device": "cpu",
    "chunk_rows": None,
    "allow_nonfinite": False,
}


@dataclass(frozen=True)
class RegisteredBackbone:
    name: str
    factory: Callable[..., Backbone]
    card: BackboneCard | None
    source: str = "builtin"  # the defining module, or the entry point's "module:attr"


_REGISTRY: Registry[RegisteredBackbone] = Registry(
    "backbone", BackboneError, hint="`probekit backbones` lists them"
)
_state = {"entry_points": False}
# "prefix:rest" names resolved on demand (e.g. hf:<model folder>): prefix -> resolve(name, rest) -> factory
_PREFIXES: dict[str, Callable[[str, str], Callable[..., Backbone]]] = {}


def register_backbone(fn: Callable | None = None, *, name: str | None = None, card: BackboneCard | None = None):
    """Register a factory `fn(checkpoint=None, **options) -> Backbone`.

    Usable bare (`@register_backbone`, name = function name with '_' -> '-'), with arguments
    (`@register_backbone(name="bat", card=BackboneCard(...))`) or as a call
    (`register_backbone(partial(build, "bat"), name="bat", card=...)`).
    """

    def deco(f: Callable) -> Callable:
        key = name or f.__name__.replace("_", "-")
        if key in _REGISTRY and _REGISTRY.get(key).factory is not f:
            raise BackboneError(f"backbone name {key!r} is already registered by {_REGISTRY.get(key).source}",
                                hint="pick another name")
        source = getattr(f, "__module__", None) or getattr(getattr(f, "func", None), "__module__", "builtin")
        _REGISTRY.register(key, RegisteredBackbone(key, f, card, source=source), replace=True)
        return f

    return deco(fn) if fn is not None else deco


def check_options(name: str, options: dict, accepted=None) -> dict:
    """`options` with every BACKBONE_OPTIONS default filled in; unknown or badly typed ones -> BackboneError.

    The one place factory options are validated (families call it with their `**options`).
    `accepted`: the option names this family understands (default all); setting another one is an error.
    """
    unknown = sorted(set(options) - set(BACKBONE_OPTIONS))
    if unknown:
        raise BackboneError(f"backbone {name!r}: unknown option(s) {unknown}",
                            hint=f"known: {', '.join(BACKBONE_OPTIONS)}")
    out = {**BACKBONE_OPTIONS, **options}
    if accepted is not None:
        refused = [k for k in options if k not in accepted and options[k] != BACKBONE_OPTIONS[k]]
        if refused:
            raise BackboneError(f"backbone {name!r} does not accept option(s) {refused}")
    for key in ("num_heads", "chunk_rows"):
        v = out[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise BackboneError(f"backbone {name!r}: {key} must be an integer or None, got {v!r}")
    if isinstance(out["seed"], bool) or not isinstance(out["seed"], int):
        raise BackboneError(f"backbone {name!r}: seed must be an integer, got {out['seed']!r}")
    return out


def _load_entry_points() -> None:
    if _state["entry_points"] or os.environ.get("PROBEKIT_NO_PLUGINS"):
        return
    _state["entry_points"] = True
    try:
        eps = importlib_metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # noqa: BLE001 - broken metadata in some unrelated distribution
        return
    for ep in eps:
        if ep.name in _REGISTRY:
            continue
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the built-ins
            _REGISTRY.register(ep.name, RegisteredBackbone(ep.name, _broken_plugin(ep.value, e), None, source=ep.value))
            continue
        if callable(obj) and not inspect.ismodule(obj) and ep.name not in _REGISTRY:
            card = getattr(obj, "card", None)
            _REGISTRY.register(
                ep.name, RegisteredBackbone(ep.name, obj, card if isinstance(card, BackboneCard) else None, ep.value)
            )


def _broken_plugin(value: str, err: Exception):
    def factory(*_a, **_k):
        raise BackboneError(f"backbone plugin {value} failed to import: {type(err).__name__}: {err}")

    return factory


def list_backbones(pattern: str | None = None) -> list[str]:
    """Registered backbone names, sorted (optionally filtered by an fnmatch pattern such as 'eat*')."""
    _load_entry_points()
    return _REGISTRY.names(pattern)


def register_backbone_prefix(prefix: str, resolve: Callable[[str, str], Callable[..., Backbone]]) -> None:
    """Names `prefix:<rest>` (not listed) build through `resolve(name, rest)`, which returns a factory."""
    _PREFIXES[prefix] = resolve


def is_prefixed_name(name: str) -> bool:
    """True for a `prefix:<rest>` name a registered prefix builds (e.g. hf:<folder>)."""
    head, sep, _ = name.partition(":")
    return bool(sep) and head in _PREFIXES


def _entry(name: str) -> RegisteredBackbone:
    _load_entry_points()
    head, sep, rest = name.partition(":")
    if sep and head in _PREFIXES and name not in _REGISTRY:
        resolve = _PREFIXES[head]
        return RegisteredBackbone(name, resolve(name, rest), None, source=getattr(resolve, "__module__", head))
    return _REGISTRY.get(name)


def backbone_card(name: str) -> BackboneCard:
    """The registry card of a backbone (without instantiating it where the card is static)."""
    entry = _entry(name)
    if entry.card is not None:
        return entry.card
    card = getattr(entry.factory(), "card", None)
    if not isinstance(card, BackboneCard):
        raise BackboneError(f"backbone {name!r} ({entry.source}) has no BackboneCard")
    return card


def get_backbone(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    num_heads: int | None = None,
    trust_checkpoint: bool = False,
    use_ema: bool = False,
    frontend=None,
    device: str = "cpu",
    chunk_rows: int | None = None,
    allow_nonfinite: bool = False,
    weights=None,
    progress: bool = True,
) -> Backbone:
    """Build a registered backbone, frozen and in eval mode.

    Args:
        name: registry name (`probekit backbones` lists them).
        checkpoint: weights file (any accepted format) or HF folder: an alias of `weights=PATH`.
        seed: init seed of `weights="random"`.
        num_heads: override the attention heads (default: the file's config, else width // 64).
        trust_checkpoint: allow full unpickling of files that need it (prints a warning).
        use_ema: load the EMA teacher where the file has one.
        frontend: frontend config or preset name (default: the model's own recipe).
        device: "cpu", "cuda", "cuda:1" or "auto".
        chunk_rows: time rows per independent sequence (default: the positional table's capacity;
            BAT: 64).
        allow_nonfinite: load a checkpoint whose weights hold NaN/Inf (refused by default).
        weights: "pretrained" (default where the name has published weights, else "random"), "random",
            a path, "hf:owner/repo[@revision][/file]" or an https URL (probekit.backbones.weights).
        progress: show a download progress bar.
    """
    entry = _entry(name)
    options = {"seed": seed, "num_heads": num_heads, "trust_checkpoint": trust_checkpoint, "use_ema": use_ema,
               "frontend": frontend, "device": device, "chunk_rows": chunk_rows, "allow_nonfinite": allow_nonfinite}
    try:
        params = inspect.signature(entry.factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    passed = {k: v for k, v in options.items() if takes_var_kw or k in params}
    # An option a third-party factory cannot take must not be silently dropped when the user set it.
    dropped = [k for k, v in options.items() if k not in passed and v != BACKBONE_OPTIONS[k]]
    if dropped:
        raise BackboneError(f"backbone {name!r} ({entry.source}) does not accept option(s) {dropped}")
    from probekit.backbones.weights import converter, resolve_weights, safe_load_path

    if is_prefixed_name(name):  # hf:<folder or id>: the name itself says where the weights are
        if weights not in (None, "pretrained"):
            raise BackboneError(f"backbone {name!r} takes its weights from the name, not --weights {weights!r}",
                                hint="point the name at another folder or Hub id instead")
        bb = entry.factory(checkpoint, **passed) if checkpoint is not None else entry.factory(**passed)
        missing = missing_members(bb)
        if missing:
            raise BackboneError(f"backbone {name!r} returned {type(bb).__name__}, missing {missing}")
        return bb
    resolved = resolve_weights(name, weights, checkpoint=checkpoint, progress=progress)
    if resolved.kind in ("random", "none"):
        bb = entry.factory(**passed)
    else:
        if not use_ema:  # a converted copy holds one encoder: EMA files are read as they are
            resolved = safe_load_path(resolved, trust_checkpoint=trust_checkpoint,
                                      convert=converter(entry.card.family if entry.card else None))
        bb = entry.factory(resolved.load_path or resolved.path, **passed)
    missing = missing_members(bb)
    if missing:
        raise BackboneError(f"backbone {name!r} ({entry.source}) returned {type(bb).__name__}, missing {missing}",
                            hint="derive from probekit.backbones.protocol.BackboneBase for defaults")
    if resolved.sha256 and getattr(bb, "checkpoint_sha256", None) and resolved.load_path is not None:
        bb.checkpoint_sha256 = resolved.sha256  # the file as published names the weights, not our converted copy
    elif resolved.kind not in ("random", "none") and resolved.sha256 is None:
        resolved = dataclasses.replace(resolved, sha256=getattr(bb, "checkpoint_sha256", None))
    try:
        bb.weights = resolved  # provenance: records and cache keys name source, revision and sha256
    except AttributeError:
        pass  # a third-party class with __slots__: the sha256 still keys its cache
    return bb

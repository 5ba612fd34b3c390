"""The probe contract, the registry and the factory.

A probe is an `nn.Module` with explicit keyword hyperparameters (scikit-learn style) that declares which
tokens it reads (`request`), maps a `TokenBatch` to logits, and says which of its parameters get weight
decay. Probes register themselves with `@register_probe` into `PROBES` (a `probekit._registry.Registry`);
`make_probe(name, ...)` builds one with the shape arguments that come from the data (layers, width,
classes, heads) plus its own hyperparameters.

A probe also declares what readers of its results need, so nothing outside `probes/` tests probe names:
`display_name` (tables), `head_names()` (one name per output head: the layer sweep's "block1", ...) and
`report()` (extra facts for records, e.g. CGP's learned gates).

Importing this module imports the package `probekit.probes` first (Python imports parents first), and
the package imports every built-in probe module, so the registry is always filled; no import cycle.

Parameter names follow the official BAT heads (`prototype_vectors`, `block_attention`, `fc`, `ln`), so an
official head's state dict loads with `probe.load_state_dict(...)` (4-D prototype tensors are reshaped).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from probekit._registry import Registry
from probekit.errors import ProbeError, suggest
from probekit.probes.constraints import BOOL, Interval, Options, check_params, check_space
from probekit.probes.space import Choice, Float, Int, Param
from probekit.tokens import TokenBatch, TokenRequest


class _ProbeRegistry(Registry):
    """The probe Registry; `PROBES[name]` still reads as the dict it used to be."""

    def __getitem__(self, name: str):
        return self.get(name)


PROBES: Registry[type[Probe]] = _ProbeRegistry("probe", ProbeError, hint="probekit.probes.list_probes() names them")

# Constructor arguments that come from the data, not from the user.
SHAPE_ARGS = ("num_layers", "embed_dim", "num_classes", "num_heads")


def register_probe(cls: type[Probe]) -> type[Probe]:
    """Class decorator: add a probe class to `PROBES` under `cls.name`."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    if cls.name in PROBES and PROBES.get(cls.name) is not cls:
        raise TypeError(
            f"probe name {cls.name!r} registered twice ({PROBES.get(cls.name).__name__}, {cls.__name__})"
        )
    hp = cls.hparam_names()
    unknown = (set(cls.search_space) | set(cls.param_constraints)) - set(hp)
    if unknown:
        raise TypeError(f"{cls.__name__}.search_space names non-constructor arguments: {sorted(unknown)}")
    check_space(cls.__name__, cls.search_space, cls.param_constraints_of(), TypeError)
    PROBES.register(cls.name, cls)
    return cls


class Probe(nn.Module):
    """Base class of every probe.

    Subclasses set `name`, `description`, `search_space` (tunable constructor args) and implement
    `forward(batch) -> logits (B, C)` (or (B, H, C) for probes with several heads, `num_outputs = H`).
    They store their keyword hyperparameters with `self._store_hparams(locals())`.
    """

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""  # the name in tables (default: `name`)
    description: ClassVar[str] = ""
    search_space: ClassVar[dict[str, Param]] = {}
    # What each hyperparameter accepts (`probekit.probes.constraints`); the rest is derived from
    # `search_space` and the defaults' types by `param_constraints_of`.
    param_constraints: ClassVar[dict[str, list]] = {}
    num_outputs: int = 1  # >1: forward returns (B, num_outputs, C), one head per output (the layer sweep)

    request: TokenRequest

    # ---- construction helpers -------------------------------------------------------------------
    @classmethod
    def hparam_names(cls) -> tuple[str, ...]:
        sig = inspect.signature(cls.__init__)
        return tuple(
            p.name
            for p in sig.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in SHAPE_ARGS
        )

    @classmethod
    def hparam_defaults(cls) -> dict[str, Any]:
        sig = inspect.signature(cls.__init__)
        return {n: sig.parameters[n].default for n in cls.hparam_names()}

    def _store_hparams(self, local_vars: dict[str, Any]) -> None:
        self.shape_args = {k: local_vars[k] for k in SHAPE_ARGS if k in local_vars}
        self.hparams = {k: local_vars[k] for k in self.hparam_names()}

    @classmethod
    def param_constraints_of(cls) -> dict[str, list]:
        """Declared constraints per hyperparameter: explicit ones, else the search space's kind (Int,
        Float, Choice), else the default's type (bool, int, float). Other hyperparameters (strings,
        layer lists) are checked by the constructor."""
        out: dict[str, list] = {}
        for key, default in cls.hparam_defaults().items():
            spec = cls.search_space.get(key)
            if key in cls.param_constraints:
                out[key] = list(cls.param_constraints[key])
            elif isinstance(spec, Choice):
                out[key] = [Options(tuple(spec.choices))]
            elif isinstance(default, bool):
                out[key] = [BOOL]
            elif isinstance(spec, Int) or (spec is None and isinstance(default, int)):
                out[key] = [Interval("int")]
            elif isinstance(spec, Float) or isinstance(default, float):
                out[key] = [Interval("real")]
        return out

    def head_names(self) -> list[str]:
        """One name per output head, in output order (single-head probes: their own name)."""
        if self.num_outputs == 1:
            return [self.name]
        return [f"head{i + 1}" for i in range(self.num_outputs)]

    def report(self) -> dict[str, Any]:
        """Facts of the trained probe worth keeping in a result record (JSON values); none by default."""
        return {}

    @classmethod
    def label(cls) -> str:
        """The name shown in tables."""
        return cls.display_name or cls.name

    def get_params(self) -> dict[str, Any]:
        """Shape arguments and hyperparameters: `type(p)(**p.get_params())` builds an untrained twin."""
        return {**self.shape_args, **self.hparams}

    # ---- training contract ----------------------------------------------------------------------
    def forward(self, batch: TokenBatch) -> Tensor:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must implement forward")

    def extra_loss(self) -> Tensor | None:
        """A regulariser added to the task loss by the training loop (proto: orthogonality; h2t: group
        lasso); None if none."""
        return None

    def decayed_parameters(self) -> list[nn.Parameter]:
        """Classifier weights: every nn.Linear weight. Prototypes, gates, queries, norms, biases: none."""
        out = []
        for m in self.modules():
            if isinstance(m, nn.Linear) and m.weight.requires_grad:
                out.append(m.weight)
        return out

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: weight decay only on the classifier weights (as the official probe optimiser)."""
        decay_ids = {id(p) for p in self.decayed_parameters()}
        decay = [p for p in self.parameters() if p.requires_grad and id(p) in decay_ids]
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in decay_ids]
        groups = [
            {"params": decay, "weight_decay": float(weight_decay)},
            {"params": rest, "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ---- input checks ---------------------------------------------------------------------------
    def _patch(self, batch: TokenBatch) -> Tensor:
        if batch.patch is None:
            raise ProbeError(
                f"probe {self.name!r} reads patch tokens but the batch has none",
                hint="extract the cache with patch tokens, or pick a probe that reads only cls tokens",
            )
        return batch.patch

    def _cls(self, batch: TokenBatch) -> Tensor:
        if batch.cls is None:
            raise ProbeError(
                f"probe {self.name!r} reads cls tokens but the batch has none",
                hint="for models without a cls token use pooling='mean' (linear, mlp, lcgp, layers), "
                "use_cls=False (cgp) or subtract_cls=False (proto)",
            )
        return batch.cls

    # Official BAT heads store prototypes as (K, D, 1, 1) conv kernels; accept those state dicts as-is.
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "prototype_vectors"
        if key in state_dict and state_dict[key].ndim == 4 and hasattr(self, "prototype_vectors"):
            state_dict[key] = state_dict[key].reshape(state_dict[key].shape[0], -1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())


# ---- factory ------------------------------------------------------------------------------------
def patch_request(layer: int, num_layers: int) -> TokenRequest:
    """One block's patch tokens, no cls: the request of every single-layer token-map head (checked
    against `num_layers` here, so a bad `layer` fails at construction)."""
    req = TokenRequest(layers=(int(layer),), patch=True, cls=False)
    req.resolve(num_layers)
    return req


def list_probes() -> list[str]:
    """Registered probe names, sorted."""
    return PROBES.names()


def get_probe_class(name: str) -> type[Probe]:
    return PROBES.get(name)


def make_probe(
    name: str,
    *,
    num_layers: int,
    embed_dim: int,
    num_classes: int,
    num_heads: int | None = None,
    seed: int | None = None,
    **hparams: Any,
) -> Probe:
    """Build a registered probe.

    Args:
        name: registry name (`list_probes()`).
        num_layers, embed_dim, num_classes: from the token data (`TokenData.num_layers` etc.).
        num_heads: attention heads of the backbone (attentive probes); default embed_dim // 64.
        seed: if given, parameters are initialised under `torch.manual_seed(seed)` without touching
            the global RNG state.
        **hparams: the probe's keyword hyperparameters (see `PROBES[name].hparam_defaults()`).

    Raises:
        ProbeError: unknown probe, unknown hyperparameter, or a value of the wrong kind/range.
    """
    cls = get_probe_class(name)
    known = cls.hparam_names()
    for key, value in hparams.items():
        if key not in known:
            raise ProbeError(
                f"probe {name!r} has no hyperparameter {key!r}",
                hint=suggest(key, known) if known else "it takes no hyperparameters",
            )
    defaults = cls.hparam_defaults()
    for key, allowed in cls.param_constraints_of().items():
        if key in hparams:
            check_params(f"probe {name!r}", {key: hparams[key]}, {key: allowed}, ProbeError,
                         hint=f"default is {defaults[key]!r}")
    for key, value in (("num_layers", num_layers), ("embed_dim", embed_dim), ("num_classes", num_classes)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ProbeError(f"probe {name!r}: {key}={value!r} must be a positive integer")
    sig = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {
        "num_layers": int(num_layers),
        "embed_dim": int(embed_dim),
        "num_classes": int(num_classes),
    }
    if "num_heads" in sig:
        kwargs["num_heads"] = int(num_heads) if num_heads else max(1, int(embed_dim) // 64)
    kwargs = {k: v for k, v in kwargs.items() if k in sig}
    kwargs.update({k: (v.item() if isinstance(v, np.generic) else v) for k, v in hparams.items()})

    def build() -> Probe:
        try:
            return cls(**kwargs)
        except ProbeError:
            raise
        except (ValueError, TypeError) as e:
            raise ProbeError(f"probe {name!r}: {e}") from e

    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()

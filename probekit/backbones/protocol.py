"""The backbone contract every stage downstream reads from, declared whole in one place.

A backbone turns 16 kHz mono waveforms into per-layer tokens. Anything that has every member of
`Backbone` works everywhere (registered models, probekit's own pretrain checkpoints, a user's adapted
module); callers use the members directly, never `hasattr`. Nothing needs to subclass anything:
`BackboneBase` only supplies defaults (frontend handling, `to`/`eval`, a card built from the sizes).

`is_backbone(obj)` / `missing_members(obj)` are the one conformance test (the registry, `adapt_module`,
`check_backbone` and `probekit.api` all use it); they look members up statically, so lazy properties
such as `frontend` are not evaluated.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from probekit.errors import BackboneError

__all__ = [
    "PROTOCOL_MEMBERS",
    "Backbone",
    "BackboneBase",
    "BackboneCard",
    "LayerTokens",
    "QueryTokens",
    "is_backbone",
    "missing_members",
]


@dataclass
class LayerTokens:
    """Per-layer tokens of one batch, blocks 1..L (the pre-norm output is not included).

    patch: (B, L, N, D) patch tokens, time-major (n = t * F + f).
    cls:   (B, L, D) cls token per block (models without cls: mean of the patch tokens).
    grid:  (T, F) token grid; N == T * F.
    valid_rows: (B,) int64, number of time rows holding real audio; rows >= valid_rows[b] are padding.
    """

    patch: torch.Tensor
    cls: torch.Tensor
    grid: tuple[int, int]
    valid_rows: torch.Tensor

    @property
    def num_layers(self) -> int:
        return self.patch.shape[1]

    def select(self, layers) -> "LayerTokens":
        """Keep only the given 0-based layer indices (in that order)."""
        idx = torch.as_tensor(list(layers), dtype=torch.long, device=self.patch.device)
        return LayerTokens(self.patch.index_select(1, idx), self.cls.index_select(1, idx), self.grid, self.valid_rows)


@dataclass
class QueryTokens:
    """What a frozen encoder gives visual query tuning (VQT, `Backbone.encode_queries`).

    queries: (B, L, q, D) each block's outputs at the q query tokens it was given.
    cls:     (B, D) the last block's cls token (models without one: mean of its valid patch tokens).
    """

    queries: torch.Tensor
    cls: torch.Tensor


@dataclass(frozen=True)
class BackboneCard:
    """The one source of truth for a model's facts: shown by `probekit backbones`, stored in cache and
    result provenance, read by the leaderboard (params, training data)."""

    name: str
    family: str  # "eat" | "bat" | "custom" ...
    embed_dim: int
    num_layers: int
    num_heads: int
    frontend: str  # frontend recipe name, e.g. "fbank", "bat"; "" = the backbone's own frontend only
    params: int = 0
    training_data: tuple[str, ...] = ()  # dataset names seen in (pre)training; flags in-domain results
    checkpoint_formats: tuple[str, ...] = ()
    citation: str = ""
    url: str = ""
    notes: str = ""
    extra: dict = field(default_factory=dict)


class FrontendLike(Protocol):
    """What the cache reads of a backbone's frontend (probekit's `Frontend`, or a family's own, e.g. hf:).

    config: a frozen dataclass with `target_frames` (None: native length) and `to_dict()` (part of the key).
    """

    config: Any
    num_bins: int

    def num_frames(self, num_samples: int) -> int: ...  # frames of a clip after pad/crop to target_frames

    def valid_frames(self, num_samples: int) -> int: ...  # frames that hold real audio

    def features(self, wave: torch.Tensor) -> torch.Tensor: ...  # (samples,) -> (1, frames, bins)

    def to(self, device) -> "FrontendLike": ...  # the cache computes features on the CPU in its workers


@runtime_checkable
class Backbone(Protocol):
    """What extraction, online probing and evaluate() need from a model: every member, always present."""

    name: str
    sample_rate: int  # Hz of the waves forward_tokens reads; the cache decodes clips at this rate (Bird-MAE: 32000)
    num_layers: int
    embed_dim: int
    num_heads: int  # 0 = unknown (adapted modules)
    checkpoint_sha256: str | None  # sha256 of the weights; None for random init (then `seed` keys it)
    seed: int | None  # the init seed of random weights; None when the weights come from a file
    card: BackboneCard

    @property
    def frontend(self) -> FrontendLike:
        ...

    def encode(
        self, features: torch.Tensor, valid_frames: torch.Tensor | None = None, *, layers: Sequence[int] | None = None
    ) -> LayerTokens:
        """Frontend output -> per-layer tokens (blocks 1..L, or only `layers`, 0-based, negatives from the end)."""
        ...

    def forward_tokens(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None, *, layers: Sequence[int] | None = None
    ) -> LayerTokens:
        """(B, samples) float32 at 16 kHz (+ valid sample counts) -> per-layer tokens."""
        ...

    def cache_key(self) -> dict:
        """Everything that changes the tokens: family, sizes, checkpoint sha256 (or seed), frontend config."""
        ...

    def with_frontend(self, config: Any) -> Backbone:
        """The same frozen weights behind another frontend config or preset name."""
        ...

    def to(self, device) -> Backbone:
        ...

    def eval(self) -> Backbone:
        ...


#: The members `is_backbone` requires (the cache and api read exactly these without probing).
PROTOCOL_MEMBERS: tuple[str, ...] = (
    "name", "sample_rate", "num_layers", "embed_dim", "num_heads", "checkpoint_sha256", "seed", "card",
    "frontend", "encode", "forward_tokens", "cache_key", "with_frontend", "to", "eval",
)


def missing_members(obj) -> list[str]:
    """Protocol members `obj` lacks, looked up statically (isinstance would evaluate lazy properties)."""
    out = []
    for member in PROTOCOL_MEMBERS:
        try:
            inspect.getattr_static(obj, member)
        except AttributeError:
            out.append(member)
    return out


def is_backbone(obj) -> bool:
    """True when `obj` (an instance) has every member of the `Backbone` protocol."""
    return not isinstance(obj, type) and not missing_members(obj)


class BackboneBase:
    """Defaults for backbone classes: subclasses set `name`, `num_layers`, `embed_dim` and `model`
    (the frozen torch module), and define `encode` and `cache_key`.

    Gives: `sample_rate` 16 kHz, `num_heads` 0, `seed`/`checkpoint_sha256` None, a lazily built
    `frontend` (from `frontend=` at construction, else `default_frontend()`), `with_frontend`,
    `forward_tokens` (frontend then `encode`), `to`/`eval` on `model`, and a `card` built from the sizes
    unless one is assigned.
    """

    sample_rate = 16000
    num_heads = 0
    seed: int | None = None
    checkpoint_sha256: str | None = None
    model: torch.nn.Module | None = None
    _frontend_spec: Any = None
    _frontend: Any = None
    _frontend_config: Any = None

    #: Optional capability, not a protocol member: True where `encode_queries` feeds learnable query tokens
    #: into every block (VQT); the audio ViTs (BAT, EAT, SSLAM) and BEATs set it.
    supports_queries: bool = False

    def encode_queries(self, features: torch.Tensor, valid_frames: torch.Tensor | None,
                       queries: torch.Tensor) -> QueryTokens:
        """(B, ...) frontend output + (B, L, q, D) query tokens -> QueryTokens, differentiable in the queries
        (the weights stay frozen). Families without query support refuse."""
        raise BackboneError(
            f"backbone {self.name!r} (family {self.card.family!r}) cannot take query tokens (VQT)",
            hint="VQT runs on the BAT, EAT, SSLAM and BEATs families (e.g. bat, eat, sslam, beats-iter3)",
        )

    # ------------------------------------------------------------------ card
    @property
    def card(self) -> BackboneCard:
        card = self.__dict__.get("_card")
        if card is None:
            params = sum(p.numel() for p in self.model.parameters()) if self.model is not None else 0
            card = BackboneCard(name=self.name, family="custom", embed_dim=self.embed_dim,
                                num_layers=self.num_layers, num_heads=self.num_heads, frontend="", params=params)
        return card

    @card.setter
    def card(self, value: BackboneCard) -> None:
        self.__dict__["_card"] = value

    # ------------------------------------------------------------------ frontend
    def default_frontend(self) -> Any:
        """What `frontend=None` means: a preset/recipe name, a config, or a built Frontend (default: the
        card's recipe, i.e. the model's own recipe at the clip's native length)."""
        return self.card.frontend

    def _build_frontend(self) -> None:
        from probekit.backbones._frontend import resolve_frontend

        spec = self._frontend_spec if self._frontend_spec is not None else self.default_frontend()
        self._frontend, self._frontend_config = resolve_frontend(spec)

    @property
    def frontend(self):
        """The Frontend turning (B, samples) 16 kHz waves into what `encode` reads."""
        if self._frontend is None:
            self._build_frontend()
        return self._frontend

    @property
    def frontend_config(self):
        if self._frontend is None:
            self._build_frontend()
        return self._frontend_config

    def with_frontend(self, config: Any):
        """The same (shared, frozen) weights behind another frontend config or preset name."""
        other = copy.copy(self)
        other._frontend_spec, other._frontend, other._frontend_config = config, None, None
        return other

    # ------------------------------------------------------------------ device
    @property
    def device(self) -> torch.device:
        if self.model is not None:
            for t in (*self.model.parameters(), *self.model.buffers()):
                return t.device
        return torch.device("cpu")

    def to(self, device):
        from probekit._device import resolve_device

        dev = resolve_device(device)
        if self.model is not None:
            self.model.to(dev)
        if self._frontend is not None and callable(getattr(self._frontend, "to", None)):
            self._frontend.to(dev)
        return self

    def eval(self):
        if self.model is not None:
            self.model.eval()
        return self

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def forward_tokens(self, wave: torch.Tensor, lengths: torch.Tensor | None = None, *, layers=None) -> LayerTokens:
        """(B, samples) float32 at 16 kHz (+ valid sample counts) -> per-layer tokens."""
        from probekit.backbones._frontend import run_frontend

        if wave.ndim == 1:
            wave = wave.unsqueeze(0)
        if wave.ndim != 2:
            raise BackboneError(f"wave must be (B, samples), got shape {tuple(wave.shape)}")
        features, valid_frames = run_frontend(self.frontend, wave.to(self.device), lengths)
        return self.encode(features, valid_frames, layers=layers)

    def __call__(self, wave: torch.Tensor, lengths: torch.Tensor | None = None, *, layers=None) -> LayerTokens:
        return self.forward_tokens(wave, lengths, layers=layers)


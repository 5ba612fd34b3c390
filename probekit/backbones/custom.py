"""Any torch model as a probekit backbone, and a conformance check for any backbone.

Two ways to adapt a module (`adapt_module`):

1. The module returns per-layer tokens itself: a `LayerTokens`, a list/tuple of L tensors (B, S, D), or
   one tensor (B, L, S, D).
2. The module plus the names of its blocks (`blocks=["encoder.layers.0", ...]`): each block's output is
   captured with a forward hook (the first element when a block returns a tuple); the module's own
   return value is ignored.

Token rows: with `cls="first"` row 0 of every layer is the cls token and the rest are patches; with
`cls=None` all rows are patches and "cls" is their mean (as the official code does for BEATs).
Patches are read as a (T, F) grid, time-major, with F = `freq_patches` (1 for 1-D sequence models).

    from probekit.backbones.custom import adapt_module, check_backbone
    bb = adapt_module(my_model, name="mymodel", blocks=[f"blocks.{i}" for i in range(12)],
                      frontend="fbank", freq_patches=8)
    check_backbone(bb)          # raises BackboneError listing every failed check
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from probekit._device import resolve_device
from probekit.backbones._frontend import frontend_config_dict
from probekit.backbones.protocol import BackboneBase, BackboneCard, LayerTokens, missing_members
from probekit.errors import BackboneError

__all__ = ["CheckResult", "ModuleBackbone", "WaveformFrontend", "adapt_module", "check_backbone"]


@dataclasses.dataclass(frozen=True)
class WaveformConfig:
    kind: str = "waveform"
    sample_rate: int = 16000

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class WaveformFrontend:
    """The identity frontend of modules that read raw 16 kHz waveforms: (B, samples) -> (B, samples)."""

    config = WaveformConfig()

    def __call__(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        valid = None if lengths is None else torch.as_tensor(lengths, dtype=torch.long)
        return wave, valid

    def to(self, device):
        return self


def state_sha256(module: nn.Module) -> str:
    """Content hash of a module's state dict (names, dtypes, shapes, values): keys the cache of adapted models."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        t = v.detach().to("cpu").contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.numpy().tobytes())
    return h.hexdigest()


def _recipe_of(frontend: Any) -> str:
    """The frontend recipe ("fbank" or "bat") of a preset name or config, for the card (cache keys use the config)."""
    if isinstance(frontend, str):
        if frontend.startswith("bat-") or frontend in ("bat", "mel"):
            return "bat"
        return "fbank"
    kind = type(getattr(frontend, "config", frontend)).__name__
    return "bat" if "BatMel" in kind else "fbank"


class ModuleBackbone(BackboneBase):
    """A user's torch module adapted to the `Backbone` protocol (build it with `adapt_module`)."""

    def __init__(
        self,
        module: nn.Module,
        *,
        name: str,
        blocks: Sequence[str] | None,
        frontend: Any,
        input: str,
        cls: str | None,
        freq_patches: int,
        num_heads: int,
        embed_dim: int | None,
        num_layers: int | None,
        citation: str,
        training_data: tuple[str, ...],
    ):
        self.model = module.eval().requires_grad_(False)
        self.name = name
        self.input = input
        self.cls_mode = cls
        self.freq_patches = freq_patches
        self.num_heads = num_heads
        self.blocks = tuple(blocks) if blocks else None
        self._frontend_spec = frontend
        self._frontend = WaveformFrontend() if input == "wave" else None
        self._frontend_config = self._frontend.config if self._frontend is not None else None
        self.checkpoint_sha256 = state_sha256(module)
        self.seed = None
        self._hooked: list[nn.Module] = []
        if self.blocks:
            mods = dict(module.named_modules())
            unknown = [b for b in self.blocks if b not in mods]
            if unknown:
                close = [n for n in mods if n and any(u.split(".")[-1] in n for u in unknown)][:5]
                raise BackboneError(
                    f"{name}: no submodule named {unknown} in {type(module).__name__}",
                    hint=f"block names are paths from named_modules(), e.g. {close or list(mods)[1:6]}",
                )
            self._hooked = [mods[b] for b in self.blocks]
        # sizes: probe once with a short input when not given
        if embed_dim is None or num_layers is None:
            probe = self._layers(self._probe_input())
            num_layers = num_layers or len(probe)
            embed_dim = embed_dim or probe[0].shape[-1]
        self.num_layers = int(num_layers)
        self.embed_dim = int(embed_dim)
        self.card = BackboneCard(
            name=name,
            family="custom",
            embed_dim=self.embed_dim,
            num_layers=self.num_layers,
            num_heads=num_heads,
            frontend="waveform" if input == "wave" else _recipe_of(frontend),
            params=sum(p.numel() for p in module.parameters()),
            training_data=training_data,
            checkpoint_formats=("torch module",),
            citation=citation,
            notes=f"adapted {type(module).__module__}.{type(module).__qualname__}"
            + (f" with {len(self.blocks)} hooked blocks" if self.blocks else ""),
        )

    @property
    def module(self) -> nn.Module:
        """The adapted torch module."""
        return self.model

    def default_frontend(self):
        return "fbank"

    # ------------------------------------------------------------------ inference
    def _probe_input(self) -> torch.Tensor:
        if self.input == "wave":
            return torch.zeros(1, 16000, device=self.device)
        return torch.zeros(1, 1, 128, 128, device=self.device)

    def _layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self._hooked:
            captured: dict[int, torch.Tensor] = {}

            def make_hook(i):
                def hook(_m, _inp, out):
                    captured[i] = out[0] if isinstance(out, (tuple, list)) else out

                return hook

            handles = [m.register_forward_hook(make_hook(i)) for i, m in enumerate(self._hooked)]
            try:
                with torch.set_grad_enabled(torch.is_grad_enabled()):  # encode's no_grad freezes; fine-tuning lifts it
                    self.module(x)
            finally:
                for h in handles:
                    h.remove()
            missing = [self.blocks[i] for i in range(len(self._hooked)) if i not in captured]
            if missing:
                raise BackboneError(f"{self.name}: blocks {missing} did not run during forward")
            layers = [captured[i] for i in range(len(self._hooked))]
        else:
            with torch.set_grad_enabled(torch.is_grad_enabled()):  # encode's no_grad freezes; fine-tuning lifts it
                out = self.module(x)
            if isinstance(out, LayerTokens):
                return [out]  # handled by the caller
            if torch.is_tensor(out):
                if out.ndim != 4:
                    raise BackboneError(
                        f"{self.name}: the module returned a tensor of shape {tuple(out.shape)}; expected "
                        f"(B, L, S, D) per-layer tokens",
                        hint="return a list of per-layer (B, S, D) tensors, or pass blocks=[...] to hook them",
                    )
                layers = list(out.unbind(1))
            elif isinstance(out, (list, tuple)) and out and all(torch.is_tensor(t) for t in out):
                layers = list(out)
            else:
                raise BackboneError(
                    f"{self.name}: the module returned {type(out).__name__}; expected per-layer tokens",
                    hint="return LayerTokens, a list of (B, S, D) tensors or a (B, L, S, D) tensor, or pass blocks=[...]",
                )
        for i, t in enumerate(layers):
            if not torch.is_tensor(t) or t.ndim != 3:
                shape = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
                raise BackboneError(f"{self.name}: layer {i} output is {shape}; expected (B, S, D) tokens")
        if len({tuple(t.shape[1:]) for t in layers}) > 1:
            # stacking them would fail with torch's bare "stack expects each tensor to be equal size"
            names = self.blocks or [f"layer {i}" for i in range(len(layers))]
            sizes = ", ".join(f"{n}: {t.shape[1]} tokens x {t.shape[2]} wide" for n, t in zip(names, layers))
            raise BackboneError(
                f"{self.name}: the layers differ in shape ({sizes}); every layer must give (B, S, D) tokens of "
                f"one width D and one length S",
                hint="hook only the blocks of one stage (blocks=[...]) or project every layer to one width",
            )
        return layers

    @torch.no_grad()
    def encode(self, features: torch.Tensor, valid_frames: torch.Tensor | None = None, *, layers=None) -> LayerTokens:
        x = features.to(self.device)
        raw = self._layers(x)
        if len(raw) == 1 and isinstance(raw[0], LayerTokens):
            out = raw[0]
        else:
            stack = torch.stack([t.float() for t in raw], dim=1)  # (B, L, S, D)
            if self.cls_mode == "first":
                cls, patch = stack[:, :, 0], stack[:, :, 1:]
            else:
                patch = stack
                cls = patch.mean(dim=2)
            n = patch.shape[2]
            if n % self.freq_patches:
                raise BackboneError(
                    f"{self.name}: {n} patch tokens do not form a grid with {self.freq_patches} frequency columns"
                )
            t_rows = n // self.freq_patches
            total = x.shape[-1] if self.input == "wave" else x.shape[2]
            if valid_frames is None:
                valid_rows = torch.full((x.shape[0],), t_rows, dtype=torch.long)
            else:
                vf = torch.as_tensor(valid_frames, dtype=torch.float64).reshape(-1).cpu()
                valid_rows = torch.clamp(torch.ceil(vf / total * t_rows), 0, t_rows).long()
            out = LayerTokens(patch=patch, cls=cls, grid=(t_rows, self.freq_patches), valid_rows=valid_rows)
        if layers is not None:
            out = out.select([int(i) % out.num_layers for i in layers])
        return out

    def cache_key(self) -> dict:
        return {
            "backbone": self.name,
            "family": "custom",
            "module": f"{type(self.module).__module__}.{type(self.module).__qualname__}",
            "blocks": list(self.blocks or ()),
            "cls": self.cls_mode,
            "freq_patches": self.freq_patches,
            "weights": {"sha256": self.checkpoint_sha256},
            "frontend": frontend_config_dict(self.frontend_config),
        }


def adapt_module(
    module: nn.Module,
    *,
    name: str,
    blocks: Sequence[str] | None = None,
    frontend: Any = "fbank",
    input: str = "features",
    cls: str | None = "first",
    freq_patches: int = 1,
    num_heads: int = 0,
    embed_dim: int | None = None,
    num_layers: int | None = None,
    citation: str = "",
    training_data: Sequence[str] = (),
    device: str = "cpu",
) -> ModuleBackbone:
    """Adapt any torch module to the Backbone protocol (frozen, eval mode).

    Args:
        module: the model.
        name: a name for tables, caches and results.
        blocks: submodule names whose outputs are the layers (forward hooks); None -> the module returns
            per-layer tokens itself.
        frontend: frontend preset name or config for `input="features"` (the module gets (B, 1, frames, 128)).
        input: "features" (frontend output) or "wave" ((B, samples) at 16 kHz, no frontend).
        cls: "first" (row 0 is a cls token) or None (no cls: cls = mean of the patch tokens).
        freq_patches: F of the (T, F) token grid (8 for 16x16 patches over 128 mel bins; 1 for 1-D models).
        num_heads: for the card only (0 = unknown).
        embed_dim, num_layers: sizes; probed with a short input when None.
    """
    if input not in ("features", "wave"):
        raise BackboneError(f"input must be 'features' or 'wave', got {input!r}")
    if cls not in ("first", None):
        raise BackboneError(f"cls must be 'first' or None, got {cls!r}")
    if freq_patches < 1:
        raise BackboneError(f"freq_patches must be >= 1, got {freq_patches}")
    if not isinstance(module, nn.Module):
        raise BackboneError(f"adapt_module needs a torch.nn.Module, got {type(module).__name__}")
    module.to(resolve_device(device))
    return ModuleBackbone(
        module,
        name=name,
        blocks=blocks,
        frontend=frontend,
        input=input,
        cls=cls,
        freq_patches=freq_patches,
        num_heads=num_heads,
        embed_dim=embed_dim,
        num_layers=num_layers,
        citation=citation,
        training_data=tuple(training_data),
    )


# ---------------------------------------------------------------------------------------------- check
@dataclasses.dataclass
class CheckResult:
    check: str
    ok: bool
    detail: str


def _test_waves(batch: int, seconds: float, seed: int, sample_rate: int = 16000) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic speech-like test signal: harmonic chirps with noise, second clip shorter (padded)."""
    n = int(sample_rate * seconds)
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    waves = []
    for b in range(batch):
        f0 = 120 + 40 * b + 30 * torch.sin(2 * math.pi * 1.5 * t)
        phase = 2 * math.pi * torch.cumsum(f0, 0) / sample_rate
        w = sum(torch.sin(k * phase) / k for k in range(1, 6)) * 0.2
        waves.append((w + 0.01 * torch.randn(n, generator=g, dtype=torch.float64)).float())
    wave = torch.stack(waves)
    lengths = torch.full((batch,), n, dtype=torch.long)
    if batch > 1:
        lengths[-1] = n // 2
        wave[-1, n // 2 :] = 0
    return wave, lengths


def check_backbone(
    backbone, *, batch: int = 2, seconds: float = 1.0, seed: int = 0, raise_on_fail: bool = True, wave=None, lengths=None
) -> list[CheckResult]:
    """Conformance of any backbone: protocol members, shapes, dtypes, no NaN/Inf, determinism, batch independence.

    Like timm's registry-wide tests, for one model. Returns every check's result; raises BackboneError
    listing the failures when `raise_on_fail`.
    """
    results: list[CheckResult] = []

    def add(check, ok, detail=""):
        results.append(CheckResult(check, bool(ok), detail))
        return ok

    missing = missing_members(backbone)
    if not add("protocol members", not missing, f"missing: {missing}" if missing else "all present"):
        return _finish(results, backbone, raise_on_fail)
    # the cache decodes audio at the backbone's declared rate (16 kHz for most; Bird-MAE 32 kHz)
    rate = backbone.sample_rate
    rate_ok = isinstance(rate, int) and not isinstance(rate, bool) and rate > 0
    add("sample_rate (Hz, positive int)", rate_ok, str(rate))
    sizes_ok = isinstance(backbone.num_layers, int) and backbone.num_layers > 0 and isinstance(backbone.embed_dim, int) and backbone.embed_dim > 0
    add("sizes", sizes_ok, f"L={backbone.num_layers}, D={backbone.embed_dim}, heads={getattr(backbone, 'num_heads', '?')}")
    generated = wave is None
    if generated:
        wave, lengths = _test_waves(batch, seconds, seed, rate if rate_ok else 16000)
    try:
        a = backbone.forward_tokens(wave, lengths)
    except Exception as e:  # noqa: BLE001 - reported as a failed check
        add("forward_tokens runs", False, f"{type(e).__name__}: {e}")
        return _finish(results, backbone, raise_on_fail)
    add("forward_tokens runs", isinstance(a, LayerTokens), type(a).__name__)
    if not isinstance(a, LayerTokens):
        return _finish(results, backbone, raise_on_fail)
    b_, L, D = wave.shape[0], backbone.num_layers, backbone.embed_dim
    t_rows, f_cols = a.grid
    ok = a.patch.ndim == 4 and tuple(a.patch.shape) == (b_, L, t_rows * f_cols, D)
    add("patch shape (B, L, T*F, D)", ok, f"{tuple(a.patch.shape)} with grid {a.grid}")
    add("cls shape (B, L, D)", tuple(a.cls.shape) == (b_, L, D), str(tuple(a.cls.shape)))
    add("dtype float32", a.patch.dtype == torch.float32 and a.cls.dtype == torch.float32, f"{a.patch.dtype}, {a.cls.dtype}")
    vr = a.valid_rows
    vr_ok = torch.is_tensor(vr) and vr.dtype == torch.long and tuple(vr.shape) == (b_,) and bool((vr >= 0).all() and (vr <= t_rows).all())
    add("valid_rows (B,) int64 in [0, T]", vr_ok, str(vr.tolist() if torch.is_tensor(vr) else vr))
    if b_ > 1 and vr_ok and lengths is not None:
        lens = torch.as_tensor(lengths).reshape(-1).tolist()
        order_ok = all(int(vr[i]) <= int(vr[j]) for i in range(b_) for j in range(b_) if lens[i] < lens[j])
        if generated:  # the second test clip is half silence: its padding must show
            order_ok = order_ok and int(vr[-1]) < int(vr[0])
        add("padding reflected in valid_rows", order_ok, f"lengths {lens} -> rows {vr.tolist()}")
    finite = bool(torch.isfinite(a.patch).all() and torch.isfinite(a.cls).all())
    add("no NaN/Inf", finite, "finite" if finite else "non-finite values found")
    b = backbone.forward_tokens(wave, lengths)
    diff = max((a.patch - b.patch).abs().max().item(), (a.cls - b.cls).abs().max().item())
    add("deterministic (two runs)", diff <= 1e-6, f"max |diff| {diff:.2e}")
    single = backbone.forward_tokens(wave[:1], None if lengths is None else lengths[:1])
    d1 = max((single.patch[0] - a.patch[0]).abs().max().item(), (single.cls[0] - a.cls[0]).abs().max().item())
    add("batch independent (clip alone vs in batch)", d1 <= 1e-4, f"max |diff| {d1:.2e}")
    try:
        key = backbone.cache_key()
        s1 = json.dumps(key, sort_keys=True, default=str)
        s2 = json.dumps(backbone.cache_key(), sort_keys=True, default=str)
        add("cache_key JSON and stable", s1 == s2 and isinstance(key, dict), f"{len(s1)} chars")
    except Exception as e:  # noqa: BLE001
        add("cache_key JSON and stable", False, f"{type(e).__name__}: {e}")
    return _finish(results, backbone, raise_on_fail)


def _finish(results, backbone, raise_on_fail):
    failed = [r for r in results if not r.ok]
    if failed and raise_on_fail:
        name = getattr(backbone, "name", type(backbone).__name__)
        raise BackboneError(
            f"backbone {name!r} fails {len(failed)} conformance check(s): "
            + "; ".join(f"{r.check} ({r.detail})" for r in failed)
        )
    return results

"""Configs of BAT self-supervised pretraining, as plain dataclasses.

`bat-base` is the recipe of the paper / official `configs/ssl.yaml` (REFERENCE.md section 6.3);
the `bat-tiny-*` configs keep every mechanism of it but shrink the model, grid and schedule so a run
fits on a laptop CPU in minutes. `get_config(name, **overrides)` returns a fresh copy; overrides use
dotted names (`optim.lr=1e-3`) or bare unique field names (`lr=1e-3`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from probekit._registry import Registry
from probekit.errors import ConfigError, suggest

#: Time rows BAT's positional table covers (1,024 frames); longer inputs are chunked at evaluation, so a
#: pretraining clip never has more rows than this.
BAT_TABLE_ROWS = 64


@dataclass
class EncoderConfig:
    """The student/teacher encoder: probekit's audio ViT with BAT's gated attention."""

    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    n_mels: int = 128  # 128 mel bins / 16 = 8 frequency columns, as every BAT checkpoint assumes
    frames: int = 1024  # spectrogram frames per clip (a multiple of patch_size); 1024 -> 64 x 8 = 512 patches


@dataclass
class DecoderConfig:
    """The student's decoder that predicts the teacher's targets at every position."""

    dim: int = 768  # != encoder dim adds a bias-free input projection (as the official decoder does)
    depth: int = 6
    num_heads: int = 12
    mlp_ratio: float = 4.0


@dataclass
class MaskingConfig:
    """Inverse block masking: a few 5x5 KEPT blocks, then exact keep counts per view."""

    mask_ratio: float = 0.8  # 80% of patches hidden from the student; 512 -> 102 kept
    num_views: int = 16  # clone views per clip, each with its own mask; the teacher runs once per clip
    block_size: int = 5  # side of each kept block (odd: it is centred on the drawn position)
    centre_prob_adjust: float = 0.07  # official over-provisioning of centres before the exact adjustment


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine decay, as the official trainer runs it."""

    lr: float = 5e-4  # peak learning rate per optimizer step (batch 24 x 4 GPUs in the paper)
    min_lr: float = 1e-6  # floor of the schedule; also the lr of the very first step (warmup starts at 0)
    warmup_steps: int = 53_000
    steps: int = 400_000  # optimizer steps in total (cosine reaches min_lr here)
    weight_decay: float = 0.05  # on ALL parameters, one group (the official trainer does not split)
    beta1: float = 0.9
    beta2: float = 0.95  # short second-moment memory: the targets drift as the teacher moves
    eps: float = 1e-8
    grad_accum: int = 1  # micro-batches per optimizer step; simulates more GPUs on one
    clip_norm: float | None = None  # the official recipe does not clip


@dataclass
class EmaConfig:
    """Teacher = EMA of the student encoder; its decay rises linearly, then stays."""

    decay_start: float = 0.9998
    decay_end: float = 0.99999
    warmup_steps: int = 100_000  # optimizer steps over which the decay rises linearly


@dataclass
class DataConfig:
    """Where clips come from and how they become spectrograms (BAT mel / dB / min-max)."""

    dataset: str = "audioset"  # a probekit.datasets name
    data_root: str | None = None  # None: the dataset's default location
    split: str = "train"  # pretraining only ever reads this split (never the test split)
    sample_rate: int = 16_000
    n_fft: int = 1024
    hop_length: int = 160  # 10 ms frames
    top_db: float = 80.0
    random_roll: bool = True  # circular shift of the whole waveform, the official recipe's only augmentation
    # "pad": zero-pad short clips (official; AudioSet clips fill the 1,024 frames anyway). "repeat": loop them
    # over the input, so short-clip datasets keep the official regime of no dead patches. Zero padding on
    # FSDD (0.44 s clips in 2.56 s) left ~80% of the tokens identical padding; the local loss then fell to
    # 0.05 within 200 steps (mostly trivially predictable padding targets) vs 0.11-0.12 with "repeat".
    fill: str = "pad"
    batch_size: int = 24  # clips per process per micro-batch (each becomes num_views student views)
    num_workers: int = 8  # decoding workers; 0 decodes in the training process
    preload: bool = False  # decode the whole split once into memory (small datasets such as FSDD)
    max_seconds: float | None = None  # crop decoded clips (saves memory/time on long files)


@dataclass
class RunConfig:
    """Bookkeeping: seeds, precision, logging, checkpoints, probe-in-the-loop."""

    seed: int = 0
    precision: str = "bf16"  # "bf16" autocast on CUDA (official); CPU always runs float32
    compile: bool = False  # torch.compile the student/teacher (CUDA only)
    log_every: int = 10  # steps between CSV/TensorBoard rows (losses are averaged over them)
    save_every: int = 5_000  # steps between resumable training checkpoints (and at the end)
    keep_checkpoints: int = 2  # resumable checkpoints kept on disk (the newest ones)
    probe_every: int = 0  # steps between probe-in-the-loop evaluations; 0 disables
    probe_dataset: str | None = None  # dataset of the in-loop probe; None: the training dataset
    probe_clips: int = 400  # train-split clips the fast probes are fitted on
    probe_val_clips: int = 200  # other train-split clips they are scored on (the test split stays unseen)
    probe_prototypes: int = 32  # CGP prototypes in the fast probe (few: fast, still tracks quality)
    probe_steps: int = 300  # optimizer steps of each fast probe
    export: str = "student"  # encoder written to the output checkpoint: "student" (as BAT releases) or "ema"


@dataclass
class PretrainConfig:
    """Everything a pretraining run depends on; stored in every checkpoint it writes."""

    name: str = "bat-base"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    description: str = ""

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        """(time rows, frequency columns) of the patch grid."""
        e = self.encoder
        return e.frames // e.patch_size, e.n_mels // e.patch_size

    @property
    def num_patches(self) -> int:
        t, f = self.grid
        return t * f

    @property
    def num_kept(self) -> int:
        """Patches each student view sees (the official int() truncation: 512 x 0.2 -> 102)."""
        return int(self.num_patches * (1 - self.masking.mask_ratio))

    def validate(self) -> PretrainConfig:
        """Raise ConfigError on settings that cannot train; returns self."""
        e, d, m, o = self.encoder, self.decoder, self.masking, self.optim
        checks = [
            (
                e.frames % e.patch_size == 0,
                f"encoder.frames={e.frames} is not a multiple of patch_size={e.patch_size}",
            ),
            (
                e.n_mels % e.patch_size == 0,
                f"encoder.n_mels={e.n_mels} is not a multiple of patch_size={e.patch_size}",
            ),
            (
                e.frames // max(e.patch_size, 1) <= BAT_TABLE_ROWS,
                f"encoder.frames={e.frames} exceeds BAT's positional table ({BAT_TABLE_ROWS} rows of {e.patch_size} frames)",
            ),
            (e.dim % 4 == 0, f"encoder.dim={e.dim} must be a multiple of 4 (2-D sin-cos positions)"),
            (d.dim % 4 == 0, f"decoder.dim={d.dim} must be a multiple of 4 (2-D sin-cos positions)"),
            (e.dim % e.num_heads == 0, f"encoder.dim={e.dim} is not divisible by num_heads={e.num_heads}"),
            (d.dim % d.num_heads == 0, f"decoder.dim={d.dim} is not divisible by num_heads={d.num_heads}"),
            (
                0.0 < m.mask_ratio < 1.0,
                f"masking.mask_ratio={m.mask_ratio} must lie strictly between 0 and 1",
            ),
            (m.num_views >= 1, f"masking.num_views={m.num_views} must be >= 1"),
            (m.block_size >= 1 and m.block_size % 2 == 1, f"masking.block_size={m.block_size} must be odd"),
            (o.steps >= 1, f"optim.steps={o.steps} must be >= 1"),
            (
                0 <= o.warmup_steps <= o.steps,
                f"optim.warmup_steps={o.warmup_steps} must lie in [0, steps={o.steps}]",
            ),
            (o.grad_accum >= 1, f"optim.grad_accum={o.grad_accum} must be >= 1"),
            (self.data.batch_size >= 1, f"data.batch_size={self.data.batch_size} must be >= 1"),
            (self.num_kept >= 1, f"mask_ratio={m.mask_ratio} keeps no patch of {self.num_patches}"),
            (self.ema.warmup_steps >= 1, f"ema.warmup_steps={self.ema.warmup_steps} must be >= 1"),
            (self.data.fill in ("pad", "repeat"), f"data.fill={self.data.fill!r}: use 'pad' or 'repeat'"),
            (
                self.run.precision in ("bf16", "fp32"),
                f"run.precision={self.run.precision!r}: use 'bf16' or 'fp32'",
            ),
            (
                self.run.export in ("student", "ema"),
                f"run.export={self.run.export!r}: use 'student' or 'ema'",
            ),
            (self.run.save_every >= 1, f"run.save_every={self.run.save_every} must be >= 1"),
            (self.run.log_every >= 1, f"run.log_every={self.run.log_every} must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"config {self.name!r}: {msg}")
        return self

    # ---- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        """Inverse of to_dict; unknown keys raise ConfigError (a config from a newer probekit)."""
        kwargs: dict[str, Any] = {}
        sections = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in d.items():
            if key not in sections:
                raise ConfigError(f"unknown pretrain config section {key!r}", hint=suggest(key, sections))
            sub = _SECTION_TYPES.get(key)
            if sub is None:
                kwargs[key] = value
                continue
            names = {f.name for f in dataclasses.fields(sub)}
            bad = set(value) - names
            if bad:
                raise ConfigError(
                    f"unknown field(s) {sorted(bad)} in pretrain config section {key!r}",
                    hint=f"known: {', '.join(sorted(names))}",
                )
            kwargs[key] = sub(**value)
        return cls(**kwargs)

    def with_overrides(self, **overrides: Any) -> PretrainConfig:
        """A copy with fields replaced: `{"optim.lr": 1e-3}` or `{"lr": 1e-3}` (unique leaf names)."""
        cfg = copy.deepcopy(self)
        for key, value in overrides.items():
            section, leaf = _resolve_field(key)
            if section is None:
                setattr(cfg, leaf, value)
            else:
                setattr(getattr(cfg, section), leaf, value)
        return cfg


_SECTION_TYPES: dict[str, type] = {
    "encoder": EncoderConfig,
    "decoder": DecoderConfig,
    "masking": MaskingConfig,
    "optim": OptimConfig,
    "ema": EmaConfig,
    "data": DataConfig,
    "run": RunConfig,
}


def _resolve_field(key: str) -> tuple[str | None, str]:
    if "." in key:
        section, leaf = key.split(".", 1)
        sub = _SECTION_TYPES.get(section)
        if sub is None:
            raise ConfigError(
                f"unknown pretrain config section {section!r} in {key!r}",
                hint=suggest(section, _SECTION_TYPES),
            )
        names = [f.name for f in dataclasses.fields(sub)]
        if leaf not in names:
            raise ConfigError(f"unknown field {leaf!r} in section {section!r}", hint=suggest(leaf, names))
        return section, leaf
    if key in ("name", "description"):
        return None, key
    owners = [s for s, t in _SECTION_TYPES.items() if key in {f.name for f in dataclasses.fields(t)}]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        raise ConfigError(
            f"field {key!r} is ambiguous", hint=f"write one of {', '.join(f'{o}.{key}' for o in owners)}"
        )
    every = [f"{s}.{f.name}" for s, t in _SECTION_TYPES.items() for f in dataclasses.fields(t)]
    raise ConfigError(f"unknown pretrain config field {key!r}", hint=suggest(key, every))


# ---- named configs ---------------------------------------------------------------------------------


def _bat_base() -> PretrainConfig:
    # Exactly the official configs/ssl.yaml: ViT-B/16 on AS-2M at 1024 frames, 4 GPUs x 24 clips x 16 views.
    return PretrainConfig(
        name="bat-base",
        description="BAT ViT-B/16 on AudioSet-2M (the paper's recipe; 4 GPUs x 24 clips, 400k steps)",
        data=DataConfig(dataset="audioset", batch_size=24, num_workers=12),
    )


def _bat_tiny_fsdd() -> PretrainConfig:
    # CPU-sized: 4 blocks of width 128 on 256 frames (16 x 8 = 128 patches, 25 kept per view), the frames
    # probekit's FSDD spec pads to for the "bat" frontend, so the probe sees the positions pretraining used.
    # FSDD digits last 0.44 s on average: they are looped over the 2.56 s input (data.fill="repeat").
    # A narrow 2-block decoder (width 64) keeps the student's cost in the encoder. One idle CPU core runs
    # ~1.2-1.8 steps/s (12 clips x 4 views); a shared one 0.15-0.5. 500 steps did not beat the random init on
    # FSDD, ~1,000 did (+8 linear, +10 CGP). The teacher must move within the run, so its EMA decay (horizon
    # 100 -> 500 steps) is far below the paper's (5k -> 100k steps).
    return PretrainConfig(
        name="bat-tiny-fsdd",
        description="tiny BAT (D=128, 4 blocks, 256 frames) on the FSDD train split; ~15-20 min on one idle CPU core",
        encoder=EncoderConfig(dim=128, depth=4, num_heads=4, mlp_ratio=4.0, frames=256),
        decoder=DecoderConfig(dim=64, depth=2, num_heads=4, mlp_ratio=4.0),
        masking=MaskingConfig(mask_ratio=0.8, num_views=4),
        optim=OptimConfig(lr=1e-3, min_lr=1e-5, warmup_steps=150, steps=1500, weight_decay=0.05),
        ema=EmaConfig(decay_start=0.99, decay_end=0.998, warmup_steps=750),
        data=DataConfig(dataset="fsdd", batch_size=12, num_workers=0, preload=True, fill="repeat"),
        run=RunConfig(precision="fp32", log_every=10, save_every=50),
    )


def _bat_micro_fsdd() -> PretrainConfig:
    # Smoke-test size: seconds per run; used by the tests and `probekit pretrain --config bat-micro-fsdd`.
    return PretrainConfig(
        name="bat-micro-fsdd",
        description="micro BAT (D=32, 2 blocks, 128 frames) for smoke tests and CI",
        encoder=EncoderConfig(dim=32, depth=2, num_heads=2, mlp_ratio=2.0, frames=128),
        decoder=DecoderConfig(dim=32, depth=1, num_heads=2, mlp_ratio=2.0),
        masking=MaskingConfig(mask_ratio=0.8, num_views=2),
        optim=OptimConfig(lr=1e-3, min_lr=1e-5, warmup_steps=2, steps=20),
        ema=EmaConfig(decay_start=0.9, decay_end=0.99, warmup_steps=10),
        data=DataConfig(dataset="fsdd", batch_size=4, num_workers=0, preload=False, max_seconds=1.28),
        run=RunConfig(precision="fp32", log_every=1, save_every=10),
    )


# name -> factory of a fresh PretrainConfig
CONFIGS: Registry[Callable[[], PretrainConfig]] = Registry(
    "pretrain config", ConfigError, hint="`probekit pretrain-configs` lists them")
CONFIGS.register("bat-base", _bat_base)
CONFIGS.register("bat-tiny-fsdd", _bat_tiny_fsdd)
CONFIGS.register("bat-micro-fsdd", _bat_micro_fsdd)


def list_configs() -> list[str]:
    """Names of the built-in pretraining configs."""
    return CONFIGS.names()


def get_config(name: str, **overrides: Any) -> PretrainConfig:
    """A fresh copy of a named config with `overrides` applied (see `PretrainConfig.with_overrides`)."""
    cfg = CONFIGS.get(name)()
    if overrides:
        cfg = cfg.with_overrides(**overrides)
    return cfg.validate()

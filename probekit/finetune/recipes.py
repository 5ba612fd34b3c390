"""The official fine-tuning recipes (BAT code, `configs/<task>/<task>_finetune_config.yaml`) as presets.

Every value of each official file is a field of `FinetuneRecipe`, under the official key, so
`--set lr=1e-4` reads like the official YAML. probekit's own keys (how the run is scored and checkpointed)
follow them. Values of the data section (sr, n_fft, hop, n_mels, time_frame_size) are kept for the
record: probekit feeds each backbone its own frontend (the recipe the backbone was pretrained with),
padded/cropped to the dataset's frame count, as the probes see it.

Notes on the official files:
- as2m_finetune_config.yaml is an empty file in the official repository: the `as2m` preset takes the
  AS-20k values and the AS-2M data path of the official `data/factory.py` (class-balanced weighted
  sampling of 200,000 clips per pass without replacement); it says so in `source`.
- no official fine-tuning recipe uses an EMA of the weights (`ema_decay` None); it is available.
- dcase2016_task2 is frame-wise (event detection): its preset is listed, the loop refuses it (clip-level only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from probekit.errors import ConfigError

__all__ = ["FinetuneRecipe", "RECIPES", "DATASET_RECIPE", "get_recipe", "recipe_for", "list_recipes"]

_OFFICIAL = "BAT code (houtan-ghaffari/BAT_ICML2026), configs/{task}/{file}"


@dataclass(frozen=True)
class FinetuneRecipe:
    """One fine-tuning recipe: every value of an official `*_finetune_config.yaml`, plus probekit's keys."""

    name: str = "as20k"
    source: str = ""
    # ---- data & features (official; informational, see the module docstring)
    task: str = "as20k"
    sr: int = 16000
    n_fft: int = 1024
    hop_length: int = 160
    frame_length: float = 25.0
    frame_shift: float = 10.0
    n_mels: int = 128
    f_min: int = 0
    time_frame_size: int = 1024
    # ---- system (official)
    compile: bool = True
    train_num_workers: int = 48
    val_num_workers: int = 0
    test_num_workers: int = 32
    save_model: bool = False
    # ---- head (official)
    head: str = "linear"
    use_cls_in_head: bool = True
    frame_wise_task: bool = False
    head_norm: bool = True
    head_dropout: float = 0.2
    # ---- training & optimisation (official)
    train_batch_size: int = 48
    val_batch_size: int = 0
    val_frequency: int = 0
    test_batch_size: int = 64
    test_frequency: int = 40000
    optimization_steps: int = 40000
    lr: float = 5.0e-5
    min_lr: float = 1.0e-6
    lr_layer_decay: float | None = 0.75
    lr_warmup_steps: int = 4000
    weight_decay: float = 0.05
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    grad_accumulation_steps: int = 1
    grad_clip_norm: float | None = None
    use_asymmetric_loss: bool = True
    # ---- augmentation & regularisation (official)
    dropout: float = 0.0
    path_dropout_rate: float = 0.1
    label_smoothing: float | None = None
    lasso_weight: float = 0.0
    augment: bool = True
    use_mixup: bool = True
    mixup_chance: float = 0.9
    mixup_beta: float = 0.8
    mixup_hard_label: bool = False
    use_random_gain: bool = False
    use_color_noise: bool = False
    color_noise_chance: float = 0.0
    use_time_roll: bool = False
    use_tf_mask: bool = True
    freq_mask_param: int = 16
    time_mask_param: int = 64
    tf_mask_repeats: int = 2
    mask_ratio: float = 0.0
    # ---- probekit keys
    # selection: "last" (score the model after the last step: as20k, as2m, hsn, esc50 per fold),
    # "best_val" (keep the best validation model, every val_frequency steps: sc2), "cv" (one run per fold,
    # each fold tested once, mean over folds: esc50's 5 folds)
    selection: str = "last"
    # sampler: "shuffle" (every clip once per pass), "balanced_200k" (AS-2M: class-balanced weights,
    # 200,000 clips per pass without replacement), "balanced_first_label" (HSN: weight 1/count of the
    # clip's first label, with replacement)
    sampler: str = "shuffle"
    loss: str = "auto"  # "auto": asl when use_asymmetric_loss, else ce (multi-class) / bce (multi-label)
    ema_decay: float | None = None  # EMA of the weights (evaluated instead of the raw weights); None: off
    # autocast on CUDA: "bf16", "fp16" (float16 with torch.amp.GradScaler, as the official EAT/SSLAM/BEATs
    # fine-tuning runs; CUDA only) or "none" (float32); CPU runs float32 (bf16) or refuses (fp16)
    amp: str = "bf16"
    checkpoint_every: int = 500  # optimizer steps between resumable checkpoints (0: none)
    eval_batch_size: int = 64

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> FinetuneRecipe:
        def bad(key: str, why: str, hint: str | None = None):
            raise ConfigError(f"finetune recipe {self.name!r}: {key}={getattr(self, key)!r} {why}",
                              hint=hint or f"fix it with --set {key}=...")

        for k in ("optimization_steps", "train_batch_size", "grad_accumulation_steps", "eval_batch_size"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                bad(k, "must be an integer >= 1")
        for k in ("lr_warmup_steps", "val_frequency", "checkpoint_every", "tf_mask_repeats", "freq_mask_param",
                  "time_mask_param"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 0:
                bad(k, "must be an integer >= 0")
        for k in ("lr", "min_lr", "weight_decay"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
                bad(k, "must be a finite number >= 0")
        if not self.lr > 0:
            bad("lr", "must be > 0")
        for k in ("mixup_chance", "color_noise_chance", "head_dropout", "path_dropout_rate", "adam_beta1",
                  "adam_beta2"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                bad(k, "must be in [0, 1]")
        if self.head_dropout >= 1.0 or self.path_dropout_rate >= 1.0:
            bad("head_dropout" if self.head_dropout >= 1 else "path_dropout_rate", "must be below 1")
        if self.use_mixup and self.augment and not self.mixup_beta > 0:
            bad("mixup_beta", "must be > 0 when use_mixup is on", "--set mixup_beta=0.8 or --set use_mixup=false")
        if self.lr_layer_decay is not None and not 0.0 < self.lr_layer_decay <= 1.0:
            bad("lr_layer_decay", "must be in (0, 1] (or none: one rate for every layer)")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            bad("grad_clip_norm", "must be > 0 (or none: no clipping)")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            bad("ema_decay", "must be in (0, 1) (or none: no EMA)")
        if self.label_smoothing is not None and not 0.0 <= self.label_smoothing < 1.0:
            bad("label_smoothing", "must be in [0, 1)")
        if self.selection not in ("last", "best_val", "cv"):
            bad("selection", "is not one of last, best_val, cv")
        if self.sampler not in ("shuffle", "balanced_200k", "balanced_first_label"):
            bad("sampler", "is not one of shuffle, balanced_200k, balanced_first_label")
        if self.loss not in ("auto", "asl", "bce", "ce"):
            bad("loss", "is not one of auto, asl, bce, ce")
        if self.amp not in ("bf16", "fp16", "none"):
            bad("amp", "is not one of bf16, fp16, none")
        if self.selection == "best_val" and self.val_frequency < 1:
            bad("val_frequency", "must be >= 1 with selection=best_val")
        if self.head != "linear" or not self.use_cls_in_head:
            bad("head" if self.head != "linear" else "use_cls_in_head",
                "is not supported: fine-tuning trains the official linear head on the cls token")
        return self

    # ------------------------------------------------------------------ changes
    def replace(self, **changes: Any) -> FinetuneRecipe:
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            from probekit.errors import suggest

            raise ConfigError(f"unknown finetune recipe key {unknown[0]!r}",
                              hint=suggest(unknown[0], [f.name for f in dataclasses.fields(self)]))
        return dataclasses.replace(self, **changes)

    def with_sets(self, sets: Mapping[str, Any] | list[str]) -> FinetuneRecipe:
        """Apply overrides in one step: `--set key=value` texts (each cast to the type of the field it
        replaces) or a {key: value} mapping (texts cast the same way, other values kept)."""
        from probekit.cli._parse import parse_set, split_set

        items = list(sets.items()) if isinstance(sets, Mapping) else [split_set(s, example="--set lr=1e-4")
                                                                     for s in sets]
        changes: dict[str, Any] = {}
        for key, raw in items:
            if key not in {f.name for f in dataclasses.fields(self)}:
                self.replace(**{key: None})  # the unknown-key error with a suggestion
            if not isinstance(raw, str):
                changes[key] = raw
                continue
            current = getattr(self, key)
            if current is None:  # optional numbers (grad_clip_norm, label_smoothing, ema_decay, lr_layer_decay)
                value = parse_set(raw, 0.0, name=key) if raw.strip().lower() not in ("none", "null") else None
            else:
                value = parse_set(raw, current, name=key)
            changes[key] = value
        return self.replace(**changes)

    @property
    def loss_name(self) -> str:
        return "asl" if self.loss == "auto" and self.use_asymmetric_loss else self.loss

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _official(folder: str, file: str, **values) -> FinetuneRecipe:
    return FinetuneRecipe(source=_OFFICIAL.format(task=folder, file=file), **values)


#: The presets, every value as in the official file (keys the official file sets and FinetuneRecipe's
#: defaults share are written out anyway, so each preset reads as its YAML).
RECIPES: dict[str, FinetuneRecipe] = {
    "as20k": _official(
        "as20k", "as20k_finetune_config.yaml", name="as20k", task="as20k", sr=16000, n_fft=1024, hop_length=160,
        frame_length=25.0, frame_shift=10.0, n_mels=128, f_min=0, time_frame_size=1024, compile=True,
        train_num_workers=48, val_num_workers=0, test_num_workers=32, save_model=False, head="linear",
        use_cls_in_head=True, frame_wise_task=False, head_norm=True, head_dropout=0.2, train_batch_size=48,
        val_batch_size=0, val_frequency=0, test_batch_size=64, test_frequency=40000, optimization_steps=40000,
        lr=5.0e-5, min_lr=1.0e-6, lr_layer_decay=0.75, lr_warmup_steps=4000, weight_decay=0.05, adam_beta1=0.9,
        adam_beta2=0.95, grad_accumulation_steps=1, grad_clip_norm=None, use_asymmetric_loss=True, dropout=0.0,
        path_dropout_rate=0.1, label_smoothing=None, lasso_weight=0.0, augment=True, use_mixup=True,
        mixup_chance=0.9, mixup_beta=0.8, mixup_hard_label=False, use_random_gain=False, use_color_noise=False,
        color_noise_chance=0.0, use_time_roll=False, use_tf_mask=True, freq_mask_param=16, time_mask_param=64,
        tf_mask_repeats=2, mask_ratio=0.0, selection="last", sampler="shuffle", eval_batch_size=64,
    ),
    "esc50": _official(
        "esc50", "esc50_finetune_config.yaml", name="esc50", task="esc50", sr=16000, n_fft=1024, hop_length=160,
        frame_length=25.0, frame_shift=10.0, n_mels=128, f_min=0, time_frame_size=512, compile=True,
        train_num_workers=16, val_num_workers=0, test_num_workers=0, save_model=False, head="linear",
        use_cls_in_head=True, frame_wise_task=False, head_norm=True, head_dropout=0.2, train_batch_size=48,
        val_batch_size=0, val_frequency=0, test_frequency=0, test_batch_size=128, optimization_steps=4000,
        lr=5.0e-5, min_lr=1.0e-6, lr_layer_decay=0.75, lr_warmup_steps=400, weight_decay=0.05, adam_beta1=0.9,
        adam_beta2=0.95, grad_accumulation_steps=1, grad_clip_norm=None, use_asymmetric_loss=False, dropout=0.0,
        path_dropout_rate=0.1, label_smoothing=None, lasso_weight=0.0, augment=True, use_mixup=False,
        mixup_chance=0.0, mixup_beta=0.0, mixup_hard_label=False, use_random_gain=False, use_color_noise=True,
        color_noise_chance=0.3, use_time_roll=True, use_tf_mask=True, freq_mask_param=16, time_mask_param=32,
        tf_mask_repeats=1, mask_ratio=0.0, selection="cv", sampler="shuffle", eval_batch_size=128,
    ),
    "sc2": _official(
        "scv2", "scv2_finetune_config.yaml", name="sc2", task="scv2", sr=16000, n_fft=1024, hop_length=160,
        frame_length=25.0, frame_shift=10.0, n_mels=128, f_min=0, time_frame_size=112, compile=True,
        train_num_workers=48, val_num_workers=32, test_num_workers=8, save_model=False, head="linear",
        use_cls_in_head=True, frame_wise_task=False, head_norm=True, head_dropout=0.0, train_batch_size=256,
        val_batch_size=128, val_frequency=500, test_batch_size=128, test_frequency=10000,
        optimization_steps=10000, lr=5.0e-5, min_lr=1.0e-6, lr_layer_decay=0.75, lr_warmup_steps=1000,
        weight_decay=0.05, adam_beta1=0.9, adam_beta2=0.95, grad_accumulation_steps=1, grad_clip_norm=None,
        use_asymmetric_loss=False, dropout=0.0, path_dropout_rate=0.1, label_smoothing=None, lasso_weight=0.0,
        augment=True, use_mixup=False, mixup_chance=0.0, mixup_beta=0.0, mixup_hard_label=False,
        use_random_gain=False, use_color_noise=True, color_noise_chance=0.3, use_time_roll=True, use_tf_mask=True,
        freq_mask_param=16, time_mask_param=32, tf_mask_repeats=1, mask_ratio=0.0, selection="best_val",
        sampler="shuffle", eval_batch_size=128,
    ),
    "hsn": _official(
        "hsn", "hsn_finetune_config.yaml", name="hsn", task="hsn", sr=32000, n_fft=2048, hop_length=320,
        frame_length=25.0, frame_shift=10.0, n_mels=128, f_min=0, time_frame_size=512, compile=True,
        train_num_workers=60, val_num_workers=32, test_num_workers=8, save_model=False, head="linear",
        use_cls_in_head=True, frame_wise_task=False, head_norm=True, head_dropout=0.0, train_batch_size=64,
        val_batch_size=0, val_frequency=0, test_batch_size=128, test_frequency=10000, optimization_steps=10000,
        lr=5.0e-5, min_lr=1.0e-6, lr_layer_decay=0.75, lr_warmup_steps=1000, weight_decay=0.05, adam_beta1=0.9,
        adam_beta2=0.95, grad_accumulation_steps=1, grad_clip_norm=None, use_asymmetric_loss=False, dropout=0.0,
        path_dropout_rate=0.1, label_smoothing=None, lasso_weight=0.0, augment=True, use_mixup=True,
        mixup_chance=0.9, mixup_beta=0.8, mixup_hard_label=False, use_random_gain=False, use_color_noise=True,
        color_noise_chance=0.3, use_time_roll=True, use_tf_mask=True, freq_mask_param=16, time_mask_param=32,
        tf_mask_repeats=1, mask_ratio=0.0, selection="last", sampler="balanced_first_label", eval_batch_size=128,
    ),
    "dcase2016_task2": _official(
        "dcase2016_task2", "sed_finetune_config.yaml", name="dcase2016_task2", task="dcase2016_task2", sr=16000,
        n_fft=1024, hop_length=160, frame_length=25.0, frame_shift=10.0, n_mels=128, f_min=0,
        time_frame_size=12000, compile=True, train_num_workers=11, val_num_workers=4, test_num_workers=0,
        save_model=True, head="linear", use_cls_in_head=True, frame_wise_task=True, head_norm=True,
        head_dropout=0.2, train_batch_size=4, val_batch_size=4, val_frequency=50, test_batch_size=0,
        test_frequency=0, optimization_steps=4000, lr=5.0e-5, min_lr=1.0e-6, lr_layer_decay=0.75,
        lr_warmup_steps=400, weight_decay=0.05, adam_beta1=0.9, adam_beta2=0.95, grad_accumulation_steps=1,
        grad_clip_norm=None, use_asymmetric_loss=False, dropout=0.0, path_dropout_rate=0.1, label_smoothing=None,
        lasso_weight=0.0, augment=True, use_mixup=True, mixup_chance=0.9, mixup_beta=0.8, mixup_hard_label=False,
        use_random_gain=False, use_color_noise=True, color_noise_chance=0.3, use_time_roll=False,
        use_tf_mask=True, freq_mask_param=16, time_mask_param=64, tf_mask_repeats=2, mask_ratio=0.0,
        selection="best_val", sampler="shuffle", eval_batch_size=4,
    ),
}
RECIPES["as2m"] = dataclasses.replace(
    RECIPES["as20k"], name="as2m", task="as2m", sampler="balanced_200k",
    source=_OFFICIAL.format(task="as2m", file="as2m_finetune_config.yaml") + " is empty: the as20k values with "
    "the AS-2M sampling of data/factory.py (class-balanced weights, 200,000 clips per pass, no replacement)",
)

#: probekit dataset name -> preset; other datasets get "as20k" (multi-label) or "esc50-single" (multi-class)
DATASET_RECIPE = {"as20k": "as20k", "as2m": "as2m", "esc50": "esc50", "sc2": "sc2", "sc2-35": "sc2", "hsn": "hsn"}
# Datasets without an official recipe (FSDD, a manifest): the ESC-50 values, scored once on the test split.
RECIPES["default-multiclass"] = dataclasses.replace(
    RECIPES["esc50"], name="default-multiclass", task="", selection="last",
    source="probekit: the ESC-50 official values, scored on the dataset's test split (no official recipe)",
)
RECIPES["default-multilabel"] = dataclasses.replace(
    RECIPES["as20k"], name="default-multilabel", task="", selection="last",
    source="probekit: the AS-20k official values (no official recipe for this dataset)",
)


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def get_recipe(name: str) -> FinetuneRecipe:
    if name not in RECIPES:
        from probekit.errors import suggest

        raise ConfigError(f"unknown finetune recipe {name!r}", hint=suggest(name, list_recipes()))
    return RECIPES[name]


def recipe_for(spec) -> FinetuneRecipe:
    """The preset of a dataset (by its spec): its official recipe, else the default for its label kind."""
    name = DATASET_RECIPE.get(spec.name)
    if name is None:
        name = "default-multilabel" if spec.multilabel else "default-multiclass"
    return RECIPES[name]

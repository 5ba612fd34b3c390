"""`finetune(backbone, dataset, ...)`: every seed (and fold) of a recipe, scored and recorded as probe "finetune".

The record is like any probe's: per-seed metrics (and per-class AP/F1), mean/std/CI over seeds, the
recipe in `hyperparameters`, protocol `finetune:<recipe>`; the leaderboard shows it in the FT column.
Protocols follow the recipe's `selection`:
- "last": train on the train split, score the model after the last step on the test split;
- "best_val": validate every `val_frequency` steps on the valid split, score the best (official SC-2);
- "cv": one run per fold (train on the other folds, test on it), the mean over folds (official ESC-50).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probekit.errors import ConfigError

__all__ = ["FinetuneOutcome", "finetune", "finetune_record", "resolve_recipe"]

PROBE_NAME = "finetune"


@dataclass
class FinetuneOutcome:
    record: Any
    path: Path | None
    runs: dict[int, list] = field(default_factory=dict)  # seed -> [RunResult per fold (or one)]
    run_dir: Path | None = None


def resolve_recipe(spec, recipe=None, sets: Mapping[str, Any] | Sequence[str] | None = None):
    """The dataset's preset (or the named / given one) with overrides: {key: value} or ["key=value", ...]."""
    from probekit.finetune.recipes import FinetuneRecipe, get_recipe, recipe_for

    r = recipe if isinstance(recipe, FinetuneRecipe) else get_recipe(recipe) if recipe else recipe_for(spec)
    if not sets:
        return r
    return r.with_sets(dict(sets) if isinstance(sets, Mapping) else list(sets))


def _split(ds, split: str, spec):
    from probekit.cache.pipeline import clip_labels
    from probekit.finetune.loop import SplitData

    clips = list(ds.clips(split))
    if not clips:
        raise ConfigError(f"dataset {spec.name!r} split {split!r} has no clips", hint="check the data root")
    return SplitData(clips, clip_labels(clips, spec))


def _subset(s, keep: np.ndarray):
    from probekit.finetune.loop import SplitData

    idx = np.flatnonzero(keep)
    return SplitData([s.clips[i] for i in idx], s.labels[idx])


def _mean_metrics(results) -> dict[str, Any]:
    """Fold runs -> one metrics dict: every scalar metric averaged, per-class lists averaged, primary kept."""
    ms = [r.metrics for r in results]
    out: dict[str, Any] = {"primary": ms[0]["primary"]}
    for k, v in ms[0].items():
        if k in ("primary", "per_class", "num_examples") or isinstance(v, (bool, str)):
            continue
        if isinstance(v, (int, float, np.number)):
            out[k] = float(np.mean([m[k] for m in ms]))
    pcs = [m.get("per_class") or {} for m in ms]
    out["per_class"] = {k: np.mean([p[k] for p in pcs], axis=0).tolist() for k in ("ap", "f1") if all(k in p for p in pcs)}
    return out


def finetune(
    backbone: Any,
    dataset: Any,
    *,
    recipe: Any = None,
    sets: Mapping[str, Any] | Sequence[str] | None = None,
    seeds: int | Sequence[int] = 1,
    device: str = "auto",
    workers: int = 0,
    run_dir: str | Path | None = None,
    results_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    write: bool = True,
    resume: bool = True,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = None,
    backbone_options: Mapping[str, Any] | None = None,
) -> FinetuneOutcome:
    """Fine-tune `backbone` (name, Backbone or module) on `dataset` with the dataset's official recipe.

    Args:
        recipe: a preset name (`probekit.finetune.list_recipes()`) or a FinetuneRecipe; None: the dataset's.
        sets: recipe overrides, {"lr": 1e-4} or ["lr=1e-4"] (the CLI's --set).
        seeds: number of seeds (0..N-1) or the seeds.
        run_dir: checkpoints and best/last weights (default RESULTS/finetune/<backbone>-<dataset>-<recipe>);
            one sub-folder per seed (and fold). An unfinished run there is resumed unless resume=False.
        stop_after: stop every run after this many optimizer steps (resumable); no record is made.
    """
    from probekit._device import resolve_device
    from probekit._evaluate import parse_seeds
    from probekit.api import resolve_backbone, resolve_dataset
    from probekit.results.environment import capture_environment

    bb = resolve_backbone(backbone, device=device, **dict(backbone_options or {}))
    ds = resolve_dataset(dataset, data_root=data_root) if isinstance(dataset, (str, Path)) else resolve_dataset(dataset)
    env = capture_environment(device=str(resolve_device(device)))
    return finetune_record(bb, ds, recipe=recipe, sets=sets, seeds=parse_seeds(seeds), device=device,
                           workers=workers, run_dir=run_dir, results_dir=results_dir, write=write, env=env,
                           resume=resume, stop_after=stop_after, log=log)


def finetune_record(bb, ds, *, recipe=None, sets=None, seeds: Sequence[int] = (0,), device: str = "auto",
                    workers: int = 0, run_dir=None, results_dir=None, write: bool = False, env=None,
                    resume: bool = True, stop_after: int | None = None,
                    log: Callable[[str], None] | None = None) -> FinetuneOutcome:
    """The runs of one (backbone, dataset) and their record (written when `write`)."""
    from probekit._device import resolve_device
    from probekit._evaluate import backbone_ref, scalar_metrics
    from probekit.cache.planning import dataset_frontend
    from probekit.finetune.loop import RunData, train_run
    from probekit.results.records import SeedRun, Timings, make_record
    from probekit.results.schema import safe_name
    from probekit.results.store import dataset_identity, results_dir as _results_dir, write_record

    spec = ds.spec
    r = resolve_recipe(spec, recipe, sets)
    if r.frame_wise_task:
        raise ConfigError(f"finetune recipe {r.name!r} is frame-wise (event detection)",
                          hint="fine-tuning scores clip-level datasets; use a clip-level recipe")
    dev = resolve_device(device)
    if r.selection == "cv":
        split = "all" if "all" in spec.splits else "train"
        pool = _split(ds, split, spec)
        folds = np.asarray([-1 if c.fold is None else c.fold for c in pool.clips])
        fold_ids = sorted(int(f) for f in set(folds.tolist()) if f >= 0)
        if len(fold_ids) < 2:
            raise ConfigError(f"finetune recipe {r.name!r} cross-validates over folds, but dataset {spec.name!r} "
                              f"split {split!r} has {len(fold_ids)} fold(s)", hint="--set selection=last")
        record_split, used = split, pool.clips
        val = None
    else:
        if "test" not in spec.splits:
            raise ConfigError(f"dataset {spec.name!r} has no test split to score fine-tuning on",
                              hint=f"its splits: {', '.join(spec.splits)}")
        train, test = _split(ds, "train", spec), _split(ds, "test", spec)
        val = None
        if r.selection == "best_val":
            if "valid" not in spec.splits:
                raise ConfigError(f"finetune recipe {r.name!r} selects the best validation model, but dataset "
                                  f"{spec.name!r} has no 'valid' split", hint="--set selection=last")
            val = _split(ds, "valid", spec)
        record_split, used = "test", train.clips + test.clips + (val.clips if val else [])
    # one frontend for every split: the backbone's own recipe, padded to the longest clip used
    config = dataset_frontend(bb, ds, used, None)
    try:
        current = bb.frontend.config
    except Exception:  # noqa: BLE001 - a frontend the backbone cannot build alone: the dataset's replaces it
        current = None
    fbb = bb.with_frontend(config) if config != current else bb
    frontend = fbb.frontend
    base = Path(run_dir) if run_dir is not None else (
        _results_dir(results_dir) / "finetune" / safe_name(f"{bb.name}-{spec.name}-{r.name}"))

    def data_for(tr, te, va, tag):
        return RunData(fbb, frontend, spec.num_classes, spec.multilabel, tr, te, va, tag=tag)

    t0 = time.perf_counter()
    runs: dict[int, list] = {}
    seed_runs, notes = [], []
    for seed in seeds:
        if r.selection == "cv":
            results = []
            for f in fold_ids:
                d = data_for(_subset(pool, folds != f), _subset(pool, folds == f), None, f"{ds.identity}|fold{f}")
                if log:
                    log(f"{bb.name} / {spec.name}: seed {seed}, fold {f}")
                results.append(train_run(d, r, seed=seed, run_dir=base / f"seed{seed}" / f"fold{f}", device=dev,
                                         workers=workers, resume=resume, stop_after=stop_after, log=log))
        else:
            d = data_for(train, test, val, ds.identity)
            if log:
                log(f"{bb.name} / {spec.name}: seed {seed}")
            results = [train_run(d, r, seed=seed, run_dir=base / f"seed{seed}", device=dev, workers=workers,
                                 resume=resume, stop_after=stop_after, log=log)]
        runs[seed] = results
        if any(x.stopped for x in results):
            continue
        m = _mean_metrics(results) if r.selection == "cv" else results[0].metrics
        metrics, dropped = scalar_metrics(m)
        if dropped:
            notes.append(f"seed {seed}: undefined metrics left out: {', '.join(dropped)}")
        extras: dict[str, Any] = {"steps": results[0].steps, "drop_path_applied": results[0].drop_path_applied}
        if r.selection == "cv":
            extras["folds"] = [float(x.metrics[x.metrics["primary"]]) for x in results]
            extras["fold_ids"] = fold_ids
        if r.selection == "best_val":
            extras.update(best_val=results[0].best_val, best_step=results[0].best_step)
        extras["weights"] = [str(x.best_path or x.last_path) for x in results]
        per_class = m.get("per_class") or {}
        seed_runs.append(SeedRun(seed=seed, metrics=metrics, extras=extras,
                                 per_class={k: [float(v) for v in per_class[k]] for k in ("ap", "f1") if k in per_class},
                                 train_s=float(sum(x.seconds for x in results))))
    out = FinetuneOutcome(None, None, runs, base)
    if len(seed_runs) < len(list(seeds)):  # stopped early (stop_after): resumable, nothing to record
        return out
    if not any(x.drop_path_applied for rs in runs.values() for x in rs) and r.path_dropout_rate > 0:
        notes.append(f"drop path {r.path_dropout_rate} not applied: family {bb.card.family!r} has no drop-path hook")
    if dev.type != "cuda":
        notes.append("float32 on CPU (the recipe's bf16 autocast runs on CUDA only)")
    total = time.perf_counter() - t0
    train_s = sum(s.train_s or 0.0 for s in seed_runs)
    primary = (_mean_metrics(runs[seeds[0]]) if r.selection == "cv" else runs[seeds[0]][0].metrics)["primary"]
    record = make_record(
        backbone=backbone_ref(bb),
        dataset=spec.name,
        dataset_id=dataset_identity(ds),
        split=record_split,
        probe=PROBE_NAME,
        protocol=f"finetune:{r.name}",
        metric=primary,
        seeds=seed_runs,
        class_names=list(spec.classes),
        hyperparameters={"recipe": r.to_dict(), "frontend": dict(config.to_dict()), "selection": r.selection},
        cache_key=None,
        clips={s: {"scored": n, "failed": 0} for s, n in (
            {record_split: len(used)} if r.selection == "cv" else {"train": len(train.clips), "test": len(test.clips),
                                                                  **({"valid": len(val.clips)} if val else {})}
        ).items()},
        timings=Timings(extract_s=0.0, train_s=train_s, eval_s=max(0.0, total - train_s), cache_reused=False),
        environment=env if env is not None else "auto",
        notes="; ".join(sorted(set(notes))),
    )
    out.record = record
    if write:
        out.path = write_record(record, results_dir)
    return out

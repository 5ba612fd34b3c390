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
    from probekit.backbones import get_backbone, is_backbone
    from probekit.datasets import get_dataset
    from probekit.results.environment import capture_environment

    if isinstance(backbone, str):
        bb = get_backbone(backbone, device=device, **dict(backbone_options or {}))
    elif is_backbone(backbone):
        bb = backbone
    else:
        raise ConfigError(f"finetune() needs a backbone name or a Backbone, got {type(backbone).__name__}",
                          hint="adapt a torch module first: probekit.backbones.custom.adapt_module(module, ...)")
    ds = get_dataset(str(dataset), data_root=data_root) if isinstance(dataset, (str, Path)) else dataset
    env = capture_environment(device=str(resolve_device(device)))
    return finetune_record(bb, ds, recipe=recipe, sets=sets, seeds=parse_seeds(seeds), device=device,
                           workers=workers, run_dir=run_dir, results_dir=results_dir, write=write, env=env,
                           resume=resume, stop_after=stop_after, log=log)


def _prepare(bb, ds, r):
    """(data_for, runs_of_seed plan): the splits of the recipe's protocol and the one frontend of the run."""
    from probekit.cache.planning import dataset_frontend

    spec = ds.spec
    plan: dict[str, Any] = {"val": None}
    if r.selection == "cv":
        split = "all" if "all" in spec.splits else "train"
        pool = _split(ds, split, spec)
        folds = np.asarray([-1 if c.fold is None else c.fold for c in pool.clips])
        fold_ids = sorted(int(f) for f in set(folds.tolist()) if f >= 0)
        if len(fold_ids) < 2:
            raise ConfigError(f"finetune recipe {r.name!r} cross-validates over folds, but dataset {spec.name!r} "
                              f"split {split!r} has {len(fold_ids)} fold(s)", hint="--set selection=last")
        plan.update(split=split, used=pool.clips, pool=pool, folds=folds, fold_ids=fold_ids,
                    clips={split: len(pool.clips)})
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
        plan.update(split="test", used=train.clips + test.clips + (val.clips if val else []), train=train,
                    test=test, val=val, clips={"train": len(train.clips), "test": len(test.clips),
                                               **({"valid": len(val.clips)} if val else {})})
    # one frontend for every split: the backbone's own recipe, padded to the longest clip used
    config = dataset_frontend(bb, ds, plan["used"], None)
    try:
        current = bb.frontend.config
    except Exception:  # noqa: BLE001 - a frontend the backbone cannot build alone: the dataset's replaces it
        current = None
    plan["backbone"] = bb.with_frontend(config) if config != current else bb
    plan["config"] = config
    return plan


def _seed_runs(plan, ds, r, seed, base, *, dev, workers, resume, stop_after, log) -> list:
    """The RunResults of one seed: one per fold (cv) or one."""
    from probekit.finetune.loop import RunData, train_run

    fbb, spec = plan["backbone"], ds.spec

    def data_for(tr, te, va, tag):
        return RunData(fbb, fbb.frontend, spec.num_classes, spec.multilabel, tr, te, va, tag=tag)

    kw = dict(seed=seed, device=dev, workers=workers, resume=resume, stop_after=stop_after, log=log,
              rank=plan.get("rank", 0), world_size=plan.get("world_size", 1))
    if r.selection != "cv":
        if log:
            log(f"{fbb.name} / {spec.name}: seed {seed}")
        d = data_for(plan["train"], plan["test"], plan["val"], ds.identity)
        return [train_run(d, r, run_dir=base / f"seed{seed}", **kw)]
    out, pool, folds = [], plan["pool"], plan["folds"]
    for f in plan["fold_ids"]:
        if log:
            log(f"{fbb.name} / {spec.name}: seed {seed}, fold {f}")
        d = data_for(_subset(pool, folds != f), _subset(pool, folds == f), None, f"{ds.identity}|fold{f}")
        out.append(train_run(d, r, run_dir=base / f"seed{seed}" / f"fold{f}", **kw))
    return out


def _seed_record(seed, results, r, plan):
    """(SeedRun, notes) of one seed's finished runs."""
    from probekit._evaluate import scalar_metrics
    from probekit.results.records import SeedRun

    m = _mean_metrics(results) if r.selection == "cv" else results[0].metrics
    metrics, dropped = scalar_metrics(m)
    notes = [f"seed {seed}: undefined metrics left out: {', '.join(dropped)}"] if dropped else []
    extras: dict[str, Any] = {"steps": results[0].steps, "drop_path_applied": results[0].drop_path_applied}
    if r.selection == "cv":
        extras["folds"] = [float(x.metrics[x.metrics["primary"]]) for x in results]
        extras["fold_ids"] = plan["fold_ids"]
    if r.selection == "best_val":
        extras.update(best_val=results[0].best_val, best_step=results[0].best_step)
    extras["weights"] = [str(x.best_path or x.last_path) for x in results]
    per_class = m.get("per_class") or {}
    run = SeedRun(seed=seed, metrics=metrics, extras=extras,
                  per_class={k: [float(v) for v in per_class[k]] for k in ("ap", "f1") if k in per_class},
                  train_s=float(sum(x.seconds for x in results)))
    return run, notes, m["primary"]


def _join(device: str):
    """(device, rank, world size): under torchrun (WORLD_SIZE > 1) join the job (NCCL on CUDA, one GPU per
    rank at LOCAL_RANK; gloo on CPU); else (device, 0, 1)."""
    import torch

    from probekit import distributed
    from probekit._device import resolve_device

    dev = resolve_device(device)
    if distributed.world_size() <= 1:
        return dev, 0, 1
    env = distributed.init_from_env(str(dev))
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", env.local_rank)
    return dev, env.rank, env.world_size


def finetune_record(bb, ds, *, recipe=None, sets=None, seeds: Sequence[int] = (0,), device: str = "auto",
                    workers: int = 0, run_dir=None, results_dir=None, write: bool = False, env=None,
                    resume: bool = True, stop_after: int | None = None,
                    log: Callable[[str], None] | None = None) -> FinetuneOutcome:
    """The runs of one (backbone, dataset) and their record (written when `write`)."""
    from probekit._evaluate import backbone_ref
    from probekit.results.records import Timings, make_record
    from probekit.results.schema import safe_name
    from probekit.results.store import dataset_identity, results_dir as _results_dir, write_record

    spec = ds.spec
    r = resolve_recipe(spec, recipe, sets)
    if r.frame_wise_task:
        raise ConfigError(f"finetune recipe {r.name!r} is frame-wise (event detection)",
                          hint="fine-tuning scores clip-level datasets; use a clip-level recipe")
    dev, rank, world = _join(device)
    if r.amp == "fp16":
        from probekit.finetune.loop import _scaler

        _scaler(r, dev)  # refused off CUDA before any data is read
    if rank:  # data-parallel rank other than 0: trains its part, writes and prints nothing
        write, log = False, None
    plan = _prepare(bb, ds, r)
    plan.update(rank=rank, world_size=world)
    base = Path(run_dir) if run_dir is not None else (
        _results_dir(results_dir) / "finetune" / safe_name(f"{bb.name}-{spec.name}-{r.name}"))
    t0 = time.perf_counter()
    out = FinetuneOutcome(None, None, {}, base)
    seed_runs, notes, primary = [], [], None
    for seed in seeds:
        out.runs[seed] = _seed_runs(plan, ds, r, seed, base, dev=dev, workers=workers, resume=resume,
                                    stop_after=stop_after, log=log)
        if any(x.stopped for x in out.runs[seed]):
            continue
        run, more, p = _seed_record(seed, out.runs[seed], r, plan)
        seed_runs.append(run)
        notes += more
        primary = primary or p
    if len(seed_runs) < len(list(seeds)):  # stopped early (stop_after): resumable, nothing to record
        return out
    if r.path_dropout_rate > 0 and not any(x.drop_path_applied for rs in out.runs.values() for x in rs):
        notes.append(f"drop path {r.path_dropout_rate} not applied: family {bb.card.family!r} has no drop-path hook")
    if world > 1:
        notes.append(f"data-parallel on {world} ranks (global batch {r.train_batch_size})")
    if dev.type != "cuda":
        notes.append("float32 on CPU (the recipe's bf16 autocast runs on CUDA only)")
    total = time.perf_counter() - t0
    train_s = sum(s.train_s or 0.0 for s in seed_runs)
    out.record = make_record(
        backbone=backbone_ref(bb),
        dataset=spec.name,
        dataset_id=dataset_identity(ds),
        split=plan["split"],
        probe=PROBE_NAME,
        protocol=f"finetune:{r.name}",
        metric=primary,
        seeds=seed_runs,
        class_names=list(spec.classes),
        hyperparameters={"recipe": r.to_dict(), "frontend": dict(plan["config"].to_dict()), "selection": r.selection},
        cache_key=None,
        clips={s: {"scored": n, "failed": 0} for s, n in plan["clips"].items()},
        timings=Timings(extract_s=0.0, train_s=train_s, eval_s=max(0.0, total - train_s), cache_reused=False),
        environment=env if env is not None else "auto",
        notes="; ".join(sorted(set(notes))),
    )
    if write:
        out.path = write_record(out.record, results_dir)
    return out

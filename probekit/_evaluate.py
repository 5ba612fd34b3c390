"""The machinery behind `probekit.evaluate` and `probekit.prepare`: option objects, one plan per split,
tokens from the cache (or live), training runs per seed, and the fields of a result record."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probekit.cache.spec import RunOptions, TokenSpec, split_options
from probekit.errors import CacheError, ConfigError
from probekit.results.records import BackboneRef, SeedRun, Timings, TuningSummary, dataset_identity, make_record

__all__ = ["EvalOptions", "Prepared", "TrainOptions", "TuneOptions", "backbone_ref", "collect_options",
           "evaluate_dataset", "parse_seeds", "plan_split", "prepare_planned", "probe_hparams", "protocol_for",
           "scalar_metrics"]


# ---- options ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainOptions:
    """How each probe is trained and scored.

    protocol: training preset (`probekit.train.list_protocols()`); None: the dataset's own.
    seeds: number of seeds (0..N-1) or explicit seeds; records keep each and mean/std/CI.
    hparams: probe hyperparameters, flat for every probe or {probe: {...}}.
    overrides: TrainConfig fields to change (e.g. {"steps": 300, "lr": 3e-4}).
    test_split: evaluate on this split (default "test").
    """

    protocol: str | None = None
    seeds: int | Sequence[int] = 1
    hparams: Mapping[str, Any] | None = None
    overrides: Mapping[str, Any] | None = None
    test_split: str | None = None


@dataclass(frozen=True)
class TuneOptions:
    """An Optuna search before training (validation data only): `trials`, and further `probekit.tune.tune`
    options (`options`, e.g. {"sampler": "tpe"})."""

    trials: int = 50
    options: Mapping[str, Any] | None = None


# flat 0.1 keywords -> where they live now
_BACKBONE_KEYS = frozenset({"checkpoint", "seed", "trust_checkpoint", "use_ema", "num_heads", "chunk_rows", "name",
                            "adapt"})
_TRAIN_KEYS = {"protocol": "protocol", "seeds": "seeds", "hparams": "hparams", "train_overrides": "overrides",
               "test_split": "test_split"}
_TUNE_KEYS = {"trials": "trials", "tune_options": "options"}


@dataclass(frozen=True)
class EvalOptions:
    """Every option of one evaluate/prepare call, as value objects (`collect_options` builds it)."""

    tokens: TokenSpec
    run: RunOptions
    backbone: dict
    train: TrainOptions
    tune: TuneOptions | None


def collect_options(flat: Mapping[str, Any], *, tokens=None, run=None, backbone_options=None, train=None, tune=None,
                    where: str) -> EvalOptions:
    """The one place flat keywords are mapped into the value objects (they win over the objects' fields)."""
    flat = dict(flat)
    bb = {**dict(backbone_options or {}), **{k: flat.pop(k) for k in list(flat) if k in _BACKBONE_KEYS}}
    tr = {_TRAIN_KEYS[k]: flat.pop(k) for k in list(flat) if k in _TRAIN_KEYS}
    tu = {_TUNE_KEYS[k]: flat.pop(k) for k in list(flat) if k in _TUNE_KEYS}
    if (tr or tu) and where != "evaluate":
        raise TypeError(f"{where}() got unexpected keyword argument(s): {', '.join(sorted({*tr, *tu}))}")
    tokens, run = split_options(flat, tokens, run, where=where)
    train = dataclasses.replace(train or TrainOptions(), **tr)
    if tune is True:  # trials=/tune_options= alone do not switch tuning on
        tune = TuneOptions()
    tune = dataclasses.replace(tune, **tu) if isinstance(tune, TuneOptions) else None
    return EvalOptions(tokens, run, bb, train, tune)


# ---- tokens ---------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """Tokens of one (backbone, dataset, split) and where they came from."""

    tokens: Any  # TokenData: a CacheReader, or OnlineTokens with online=True
    backbone: Any
    dataset: Any
    split: str
    cache_key: str  # digest of the store's content key
    cache_path: Path | None  # None when online
    extract_s: float  # seconds spent extracting now (0 when the cache was reused or online)
    reused: bool
    online: bool = False


def plan_split(bb, ds, split: str, o: EvalOptions, online: bool):
    """The one plan of a split. Online tokens are keyed as float32 tokens of every layer under the plain
    encoder (what OnlineTokens computes), whatever the cache would store."""
    from probekit.cache.planning import plan

    tokens = TokenSpec(frontend_style=o.tokens.frontend_style, dtype="float32") if online else o.tokens
    return plan(bb, ds, split, tokens, o.run)


def prepare_planned(p, run: RunOptions, *, online: bool, confirm: Callable[[str], bool] | None) -> Prepared:
    """The tokens of plan `p`: live, from its finished cache, or extracted now (after `confirm`)."""
    from probekit.cache.extraction import run_extraction
    from probekit.cache.keys import key_digest
    from probekit.cache.reader import CacheReader, open_cache

    bb, ds, split = p.backbone, p.dataset, p.split
    if online:
        from probekit.cache.online import OnlineTokens

        tokens = OnlineTokens(p, run)
        return Prepared(tokens, tokens.backbone, ds, split, key_digest(tokens.cache_key()), None, 0.0, False, True)
    try:
        reader = open_cache(p)
        return Prepared(reader, bb, ds, split, key_digest(reader.store.key), Path(reader.path), 0.0, True)
    except CacheError as missing:
        reason = str(missing)
    if confirm is not None:
        msg = (f"No finished token cache of {bb.name} on {ds.name}/{split} ({len(p.clips)} clips). "
               "Extract it now?")
        if not confirm(msg):
            raise CacheError(f"no cache of {bb.name} on {ds.name}/{split}: extraction declined ({reason})",
                             hint=f"run `probekit extract --backbone {bb.name} --dataset {ds.name} --split {split}`")
    t0 = time.perf_counter()
    store = run_extraction(p, run).store
    seconds = time.perf_counter() - t0
    reader = CacheReader(store.path)
    return Prepared(reader, bb, ds, split, key_digest(reader.store.key), Path(reader.path), seconds, False)


# ---- runs ---------------------------------------------------------------------------------------------
def protocol_for(protocol: str | None, spec) -> Any:
    """The training protocol: the given one, else the dataset's own (`spec.protocol`)."""
    from probekit.train.protocols import PROTOCOLS, get_protocol

    if protocol is not None:
        return get_protocol(protocol)
    if spec.protocol not in PROTOCOLS:
        raise ConfigError(
            f"dataset {spec.name!r} names protocol {spec.protocol!r}, which is not a training protocol",
            hint=f"pass protocol= (one of: {', '.join(PROTOCOLS)}) or fix the DatasetSpec's protocol field",
        )
    return PROTOCOLS[spec.protocol]


def _splits(spec, proto, test_split: str | None) -> tuple[str, str | None, str | None]:
    """(train, test, val) split names for a protocol: cv reads every fold from one split."""
    if proto.selection == "cv":
        return ("all" if "all" in spec.splits else "train"), None, None
    test = test_split or ("test" if "test" in spec.splits else None)
    if test is None or test not in spec.splits:
        raise ConfigError(f"dataset {spec.name!r} has no split {test!r} to test on",
                          hint=f"its splits: {', '.join(spec.splits)}")
    val = "valid" if "valid" in spec.splits and proto.train.selection == "best_val" else None
    return "train", test, val


def parse_seeds(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {seeds}")
        return list(range(int(seeds)))
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise ConfigError(f"seeds must be distinct integers, got {list(seeds)}")
    return out


def probe_hparams(hparams: Mapping[str, Any] | None, probes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-probe hyperparameters: {"cgp": {...}} by probe name, or one flat dict for every probe."""
    hp = dict(hparams or {})
    if hp and all(k in probes and isinstance(v, Mapping) for k, v in hp.items()):
        return {p: dict(hp.get(p, {})) for p in probes}
    return {p: dict(hp) for p in probes}


def scalar_metrics(m: Mapping[str, Any]) -> tuple[dict[str, float], list[str]]:
    out, dropped = {}, []
    for k, v in m.items():
        if k in ("num_examples", "fold") or isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
            continue
        if math.isfinite(float(v)):
            out[k] = float(v)
        else:
            dropped.append(k)  # e.g. cmAP5 when no class has 5 positives
    return out, dropped


def _seed_run(res, probe_name: str, seed: int) -> tuple[SeedRun, list[str]]:
    """A ProtocolResult as one SeedRun: metrics, per-class scores and what the probe reports of itself.

    For a probe with several heads (the layer sweep) the metrics are those of the head chosen on
    validation data (`layer_selection` says how); `layer_scores` is the per-head TEST curve, for plots.
    """
    m = res.metrics
    extras: dict[str, Any] = {}
    if m is not None and m.heads:
        names = list(m.heads)
        extras.update(layer_scores=[float(h.primary) for h in m.heads.values()], layer_scores_split="test",
                      head_names=names, layer_selection=m.head_selection)
        if m.selected_head is not None:
            extras["best_layer"] = names.index(m.selected_head)
        elif res.fold_metrics:  # cv: each fold chose its own head on its training folds
            extras["best_layer_per_fold"] = [names.index(f.selected_head) for f in res.fold_metrics]
    per_class = m.per_class if m is not None else None
    if per_class is None and res.fold_metrics:
        folds = [f.per_class for f in res.fold_metrics if f.per_class]
        if folds:
            per_class = {k: np.mean([f[k] for f in folds], axis=0).tolist() for k in ("ap", "f1") if k in folds[0]}
    if res.fold_metrics:
        extras["folds"] = [float(f.primary) for f in res.fold_metrics]
    extras.update(res.probe.report())  # e.g. CGP's gates and the blocks they weigh
    metrics, dropped = scalar_metrics(m.metrics if m is not None else {})
    train_s = float(sum(f.seconds for f in res.fits))
    run = SeedRun(
        seed=seed,
        metrics=metrics,
        per_class={k: [float(x) for x in v] for k, v in (per_class or {}).items() if k in ("ap", "f1")},
        extras=extras,
        train_s=train_s,
    )
    return run, dropped


def backbone_ref(bb) -> BackboneRef:
    card = bb.card
    sha = bb.checkpoint_sha256
    random_init = not sha
    return BackboneRef(
        name=bb.name,
        checkpoint_sha256=sha,
        init_seed=bb.seed if random_init else None,
        family=card.family,
        params=card.params or None,
        # random weights saw nothing, whatever the card says the trained model saw
        training_data=[] if random_init else list(card.training_data or ()),
    )


def evaluate_dataset(bb, ds, probes, o: EvalOptions, seed_list, per_probe, env, *, online, confirm, results_dir):
    """(probe, record) for each probe on one dataset; every split is planned once."""
    spec = ds.spec
    proto = protocol_for(o.train.protocol, spec)
    train_split, test_split_, val_split = _splits(spec, proto, o.train.test_split)
    prepared = {s: prepare_planned(plan_split(bb, ds, s, o, online), o.run, online=online, confirm=confirm)
                for s in (train_split, test_split_, val_split) if s}
    train, test = prepared[train_split].tokens, prepared[test_split_].tokens if test_split_ else None
    val = prepared[val_split].tokens if val_split else None
    record_split = test_split_ or train_split  # cv protocols score every fold of one split
    cache_key = ",".join(f"{s}:{p.cache_key}" for s, p in prepared.items()) + (" (online)" if online else "")
    timings_extract = sum(p.extract_s for p in prepared.values())
    reused = all(p.reused for p in prepared.values())
    progress = o.run.progress
    for probe_name in probes:
        overrides = dict(o.train.overrides or {})
        overrides.setdefault("device", o.run.device)
        if "steps" in overrides and "epochs" not in overrides:
            overrides["epochs"] = None  # an explicit step count wins over an epoch-based preset
        t0 = time.perf_counter()
        if o.tune is not None:
            study = f"{probe_name}-{bb.name}-{spec.name}-{proto.name}"
            runs, notes, tuning, used = _tune_runs(probe_name, train, test, val, proto, per_probe[probe_name],
                                                   overrides, seed_list, o.tune.trials, o.tune.options, progress,
                                                   study=study, results_dir=results_dir)
        else:
            runs, notes, tuning, used = _plain_runs(probe_name, train, test, val, proto, per_probe[probe_name],
                                                    overrides, seed_list, progress)
        total = time.perf_counter() - t0
        train_s = sum(r.train_s or 0.0 for r in runs)
        yield probe_name, make_record(
            backbone=backbone_ref(bb),
            dataset=spec.name,
            dataset_id=dataset_identity(ds),
            split=record_split,
            probe=probe_name,
            protocol=proto.name,
            metric=used["metric"],
            seeds=runs,
            class_names=list(spec.classes),
            hyperparameters=used["hyperparameters"],
            tuning=tuning,
            cache_key=cache_key,
            timings=Timings(extract_s=timings_extract, train_s=train_s, eval_s=max(0.0, total - train_s),
                            cache_reused=reused),
            environment=env,
            notes="; ".join(notes),
        )


def _plain_runs(probe_name, train, test, val, proto, hparams, overrides, seeds, progress):
    from probekit.train.protocols import run_protocol

    runs, notes, last = [], [], None
    for seed in seeds:
        res = run_protocol(probe_name, train, test, protocol=proto, hparams=hparams, train_overrides=overrides,
                           seed=seed, val=val, progress=progress)
        if res.metrics is None:
            raise ConfigError(f"protocol {proto.name!r} produced no test metrics for {probe_name!r}",
                              hint="give a test split, or use a cross-validation protocol")
        run, dropped = _seed_run(res, probe_name, seed)
        runs.append(run)
        if dropped:
            notes.append(f"seed {seed}: undefined metrics left out: {', '.join(dropped)}")
        last = res
    cfg = dataclasses.asdict(last.config)
    cfg.pop("seed", None)
    used = dict(
        metric=last.metrics["primary"],
        hyperparameters={"probe": dict(last.hparams), "train": cfg, "selection": last.selection,
                         "validation": last.val_source, "val_fraction": last.val_fraction},
    )
    return runs, sorted(set(notes)), None, used


def _tune_runs(probe_name, train, test, val, proto, hparams, overrides, seeds, trials, tune_options, progress,
               *, study: str, results_dir):
    """Search with probekit.tune (validation data only), then train the best configuration with every seed
    through the same path as untuned runs (so records carry the same per-class scores, gates and curves)."""
    from probekit.probes import get_probe_class
    from probekit.results.schema import safe_name as _safe
    from probekit.results.records import results_dir as _results_dir
    from probekit.tune import tune as tune_fn

    opts = dict(tune_options or {})
    if "storage" not in opts:  # studies live beside the records they produce
        folder = _results_dir(results_dir) / "studies"
        folder.mkdir(parents=True, exist_ok=True)
        opts["storage"] = f"sqlite:///{(folder / f'{_safe(study)}.db').resolve()}"
    opts.setdefault("study_name", _safe(study))
    fixed_train = {k: v for k, v in overrides.items() if k != "device"}
    result = tune_fn(probe_name, train, val=val, test=None, protocol=proto.name, hparams=hparams,
                     train_overrides=fixed_train, n_trials=trials, seeds=0, progress=progress, **opts)
    names = set(get_probe_class(probe_name).hparam_names())
    best_probe = {k: v for k, v in result.best_params.items() if k in names}
    best_train = {k: v for k, v in result.best_params.items() if k not in names}
    runs, notes, _, used = _plain_runs(probe_name, train, test, val, proto, {**hparams, **best_probe},
                                       {**overrides, **best_train}, seeds, progress)
    d = result.to_dict()
    trials_done = d.get("trials", {})
    tuning = TuningSummary(
        trials=int(sum(v for k, v in trials_done.items() if k in ("complete", "pruned", "failed"))),
        best_params=dict(result.best_params),
        best_value=d.get("best_value"),
        search_space=dict(d.get("search_space", {})),
        study=d.get("study_name"),
        storage=d.get("storage"),
        validation=d.get("validation"),
        trial_states=trials_done,
        total_steps=d.get("total_steps"),
        metric=d.get("metric"),
    )
    return runs, notes, tuning, used



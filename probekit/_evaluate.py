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
    allow_partial_test: score the test clips that were extracted when some failed (the record's `clips`
        and notes say how many); without it such a run is refused before training.
    """

    protocol: str | None = None
    seeds: int | Sequence[int] = 1
    hparams: Mapping[str, Any] | None = None
    overrides: Mapping[str, Any] | None = None
    test_split: str | None = None
    allow_partial_test: bool = False


@dataclass(frozen=True)
class TuneOptions:
    """An Optuna search before training (validation data only): `trials`, and further `probekit.tune.tune`
    options (`options`, e.g. {"sampler": "tpe"})."""

    trials: int = 50
    options: Mapping[str, Any] | None = None


# flat 0.1 keywords -> where they live now
_BACKBONE_KEYS = frozenset({"checkpoint", "weights", "seed", "trust_checkpoint", "use_ema", "num_heads", "chunk_rows",
                            "name",
                            "adapt"})
_TRAIN_KEYS = {"protocol": "protocol", "seeds": "seeds", "hparams": "hparams", "train_overrides": "overrides",
               "test_split": "test_split", "allow_partial_test": "allow_partial_test"}
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
    planned: Any = None  # a cache.planning.DryRun when a dry run found no cache (tokens is then None)


def plan_split(bb, ds, split: str, o: EvalOptions, online: bool):
    """The one plan of a split. Online tokens are keyed as float32 tokens of every layer under the plain
    encoder (what OnlineTokens computes), whatever the cache would store."""
    from probekit.cache.planning import plan

    tokens = TokenSpec(frontend_style=o.tokens.frontend_style, dtype="float32") if online else o.tokens
    return plan(bb, ds, split, tokens, o.run)


def prepare_planned(p, run: RunOptions, *, online: bool, confirm: Callable[[str], bool] | None,
                    dry_run: bool = False) -> Prepared:
    """The tokens of plan `p`: live, from its finished cache, or extracted now (after `confirm`).

    With `dry_run` a missing cache is planned, not extracted: `planned` holds its projected size."""
    from probekit.cache.extraction import run_extraction
    from probekit.cache.keys import key_digest
    from probekit.cache.reader import CacheReader, open_cache

    from probekit.train.events import with_frame_targets  # event tasks: frame targets on the tokens

    bb, ds, split = p.backbone, p.dataset, p.split
    if online:
        from probekit.cache.online import OnlineTokens

        tokens = OnlineTokens(p, run)
        return Prepared(with_frame_targets(tokens, p), tokens.backbone, ds, split, key_digest(tokens.cache_key()),
                        None, 0.0, False, True)
    from probekit.distributed import barrier

    try:
        reader = open_cache(p)
        barrier()  # under torchrun: one barrier per split on every rank, whichever way it got the tokens
        return Prepared(with_frame_targets(reader, p), bb, ds, split, key_digest(reader.store.key), reader.path,
                        0.0, True)
    except CacheError as missing:
        reason = str(missing)
    if dry_run:
        from probekit.cache.extraction import dry_run_of

        return Prepared(None, bb, ds, split, key_digest(p.key), p.path, 0.0, False, planned=dry_run_of(p, run))
    if confirm is not None:
        msg = (f"No finished token cache of {bb.name} on {ds.name}/{split} ({len(p.clips)} clips). "
               "Extract it now?")
        if not confirm(msg):
            raise CacheError(f"no cache of {bb.name} on {ds.name}/{split}: extraction declined ({reason})",
                             hint=f"run `probekit extract --backbone {bb.name} --dataset {ds.name} --split {split}`")
    t0 = time.perf_counter()
    store = run_extraction(p, run).store
    barrier()  # under torchrun each rank extracted its shards: all must be done before anyone reads
    seconds = time.perf_counter() - t0
    reader = CacheReader(store.path)
    return Prepared(with_frame_targets(reader, p), bb, ds, split, key_digest(reader.store.key), reader.path,
                    seconds, False)


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


F1_THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)


def val_threshold_f1(res, train, test, val, proto, seed: int):
    """Multi-label F1 at the one threshold that maximises micro-F1 on validation data (the official
    validation split, else the protocol's held-out part of train), applied to the test scores.

    A fixed 0.5 leaves F1 at 0 for a probe whose scores are well ranked (mAP 28) but never reach 0.5.
    Returns (metrics, per-class F1, extras) or None (multi-class, cross-validation, several heads)."""
    from sklearn.metrics import f1_score

    from probekit.train import holdout_split
    from probekit.train.fit import predict

    if test is None or not test.multilabel or res.scores is None or np.ndim(res.scores) != 2 or res.fold_metrics:
        return None
    if val is not None:
        vdata, vidx, where = val, None, "the official validation split"
    else:
        frac = float(res.val_fraction if res.val_fraction is not None else proto.val_fraction)
        _, vidx = holdout_split(train.labels, multilabel=True, fraction=frac, seed=seed)
        vdata = train
        where = f"holdout {frac:.0%} of train (seed {seed})"
        if res.val_source != "holdout":
            where += ", clips the probe also trained on"
    if vidx is not None and not len(vidx):
        return None
    vs = predict(res.probe, vdata, vidx, batch_size=res.config.eval_batch_size, amp=res.config.amp)
    vy = np.asarray(vdata.labels if vidx is None else vdata.labels[vidx]) > 0
    f1s = [f1_score(vy, vs >= t, average="micro", zero_division=0) for t in F1_THRESHOLDS]
    t = float(F1_THRESHOLDS[int(np.argmax(f1s))])  # the first (lowest) on ties
    y, pred = np.asarray(test.labels) > 0, np.asarray(res.scores) >= t
    metrics = {"f1_macro": float(f1_score(y, pred, average="macro", zero_division=0) * 100),
               "f1_micro": float(f1_score(y, pred, average="micro", zero_division=0) * 100)}
    per_class = (np.asarray(f1_score(y, pred, average=None, zero_division=0)) * 100).tolist()
    old = res.metrics.metrics
    extras = {"f1_threshold": t, "f1_threshold_chosen_on": where,
              "f1_at_0.5": {k: float(old[k]) for k in ("f1_macro", "f1_micro") if k in old}}
    return metrics, [float(x) for x in per_class], extras


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


def clip_counts(prepared: Mapping[str, Prepared]) -> dict[str, dict[str, Any]]:
    """Per split: clips scored (readable tokens), failed (extraction failed) and the first failed ids.
    Online tokens fail loudly on a bad clip, so what they hold was all scored."""
    out = {}
    for split, p in prepared.items():
        t = p.tokens
        if t is None:  # a dry run: the cache is planned, not made
            out[split] = {"scored": int(p.planned.clips), "failed": 0, "ids": []}
            continue
        fc = t.failed_counts() if callable(getattr(t, "failed_counts", None)) else None
        failed = int(fc["failed"]) if fc else 0
        out[split] = {"scored": int(t.num_clips), "failed": failed, "ids": list(fc["ids"]) if fc else []}
    return out


def check_clips(dataset: str, counts: Mapping[str, Mapping[str, Any]], scored_split: str,
                allow_partial: bool) -> list[str]:
    """Notes on failed clips; refuses (CacheError, before training) a test split with failed clips unless
    `allow_partial`, and always one with no clip left to score."""
    notes = []
    for split, c in counts.items():
        if not c["failed"]:
            continue
        total = c["scored"] + c["failed"]
        what = (f"{dataset}/{split}: {c['failed']} of {total} clips failed to extract "
                f"(first: {', '.join(c['ids'][:3]) or '?'})")
        if split != scored_split:
            notes.append(f"{what}; trained on the other {c['scored']}")
        elif not c["scored"]:
            raise CacheError(f"{what}: no clip of split {split!r} of {dataset} is left to score",
                             hint="fix the files, then rerun `probekit extract` (it retries failed clips)")
        elif not allow_partial:
            raise CacheError(f"{what}: the score would cover only the other {c['scored']}",
                             hint="fix the files and rerun `probekit extract` (it retries failed clips), or pass "
                             "--allow-partial-test (allow_partial_test=True) to score the clips that remain")
        else:
            notes.append(f"partial test set: {what}; scored on the other {c['scored']} (allow_partial_test)")
    return notes


def _train_config(proto, overrides: Mapping[str, Any]):
    return proto.train.replace(**overrides)


def prototype_warning(probe_name: str, hparams: Mapping[str, Any], train_clips: int, num_classes: int) -> str | None:
    """CGP/Protobin keep the BAT paper's K=10,000 prototypes by default; say so when K dwarfs the data."""
    from probekit.probes import get_probe_class

    cls = get_probe_class(probe_name)
    if "prototypes" not in cls.hparam_names():
        return None
    k = int(hparams.get("prototypes", cls.hparam_defaults()["prototypes"]))
    if int(hparams.get("prototypes_per_class", 0) or 0) > 0:
        k = int(hparams["prototypes_per_class"]) * num_classes
    if k <= train_clips:
        return None
    return (f"{probe_name}: K={k:,} prototypes for {train_clips:,} training clips (the default is the BAT paper's "
            f"AudioSet setting, 10,000 prototypes); for data this small try --prototypes "
            f"{max(16, train_clips // 4)} (hparams={{'prototypes': ...}})")


def estimate_fit(probe_name, train, proto, hparams, overrides, *, warmup_steps: int = 5) -> dict[str, Any]:
    """Steps of one fit and seconds per step from a short timed warm-up: a few real steps of the probe on
    the real tokens (an estimate: data loading, evaluation and caches change the real figure)."""
    import torch

    from probekit.probes import make_probe
    from probekit.train import fit

    config = _train_config(proto, overrides)
    total, _, per_epoch = config.schedule(train.num_clips)
    n = max(1, min(warmup_steps, total))
    probe = make_probe(probe_name, num_layers=train.num_layers, embed_dim=train.embed_dim,
                       num_classes=train.num_classes, num_heads=getattr(train, "num_heads", None), seed=0,
                       **hparams)
    cfg = config.replace(steps=n + 1, epochs=None, selection="last", eval_every=None, warmup_steps=0,
                         warmup_fraction=None)
    cuda = torch.cuda.is_available() and str(cfg.device) != "cpu"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fit(probe, train, config=cfg.replace(steps=1), progress=False)  # first step: lazy setup, not timed
    t1 = time.perf_counter()
    fit(probe, train, config=cfg.replace(steps=n), progress=False)
    per_step = (time.perf_counter() - t1) / n
    peak = int(torch.cuda.max_memory_allocated()) if cuda else None
    return {"steps": int(total), "batch_size": int(config.batch_size), "per_step_s": per_step,
            "setup_s": max(0.0, (t1 - t0) - per_step), "peak_bytes": peak, "warmup_steps": n}


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def plan_lines(bb, spec, proto, probe_name, counts, prepared, est, n_seeds: int, trials: int | None,
               warning: str | None, sampling: Mapping[str, Any] | None = None) -> list[str]:
    """The plan of one (probe, dataset) run in words: clips per split, steps, an estimated time, memory."""
    lines = [f"plan: {probe_name} on {bb.name} / {spec.name} (protocol {proto.name})"]
    if sampling is not None:  # which clips an epoch draws and how they are windowed (probekit.train.sampling)
        s = sampling["sampler"] + (f" ({sampling['epoch_draws']} draws per epoch, "
                                   f"{'with' if sampling['replacement'] else 'without'} replacement; "
                                   f"{sampling['source']})" if sampling["sampler"] != "shuffle" else "")
        lines.append(f"  sampler: {s}; training windows: {sampling['crop']}")
    lines.append("  clips: " + ", ".join(f"{s} {c['scored']}" + (f" ({c['failed']} failed)" if c["failed"] else "")
                                        for s, c in counts.items()))
    for s, p in prepared.items():
        if p.planned is not None:
            d = p.planned
            lines.append(f"  {s}: no token cache yet; extraction planned: {d.clips} clips, projected "
                         f"{_human(d.needed)} at {d.path} ({_human(d.free)} free)")
    if est is not None:
        fits = n_seeds + (trials or 0)
        total = est["setup_s"] + est["per_step_s"] * est["steps"]
        lines.append(f"  steps: {est['steps']} per fit (batch {est['batch_size']}), {fits} fit(s)"
                     + (f" ({trials} tuning trials + {n_seeds} seed(s))" if trials else ""))
        lines.append(f"  estimated training time: ~{_seconds(total * fits)} (an estimate, from a timed warm-up "
                     f"of {est['warmup_steps']} real steps: {est['per_step_s'] * 1000:.1f} ms/step)")
        if est["peak_bytes"]:
            lines.append(f"  peak GPU memory in the warm-up: {_human(est['peak_bytes'])}")
    elif any(p.planned is not None for p in prepared.values()):
        lines.append("  training time: estimated once the tokens exist (extract first, or run without --dry-run)")
    if warning:
        lines.append(f"  warning: {warning}")
    return lines


def evaluate_dataset(bb, ds, probes, o: EvalOptions, seed_list, per_probe, env, *, online, confirm, results_dir,
                     log: Callable[[str], None] | None = None, dry_run: bool = False, plans: list | None = None,
                     trained: list | None = None):
    """(probe, record) for each probe on one dataset; every split is planned once. With `trained` (a list),
    the first seed's probe of each record is appended to it before the record is yielded
    (`probekit.predict.trained_probe`: what `store_probe` saves beside the record).

    Before any training: failed clips are counted (a test split with failed clips is refused unless
    `allow_partial_test`), class coverage is checked (warnings, kept in the notes) and, with `log` or
    `dry_run`, the plan (clips, steps, an estimated time) is given to `log` / appended to `plans`."""
    import warnings

    from probekit.cache.live import check_live_probes
    from probekit.probes import get_probe_class

    # VQT and the like run the encoder themselves: online only, on a backbone that takes query tokens
    check_live_probes([get_probe_class(p) for p in probes], bb, online)

    from probekit.train.events import check_probes_for

    check_probes_for(ds, probes)  # event tasks take frame-wise heads only; refused before any extraction
    spec = ds.spec
    proto = protocol_for(o.train.protocol, spec)
    from probekit.train.ctc import check_probe_fits_dataset

    for name in probes:  # an ASR dataset takes the ASR probe only, and the other way round: say so before extraction
        check_probe_fits_dataset(name, spec)
    train_split, test_split_, val_split = _splits(spec, proto, o.train.test_split)
    prepared = {s: prepare_planned(plan_split(bb, ds, s, o, online), o.run, online=online, confirm=confirm,
                                   dry_run=dry_run)
                for s in (train_split, test_split_, val_split) if s}
    record_split = test_split_ or train_split  # cv protocols score every fold of one split
    counts = clip_counts(prepared)
    clip_notes = check_clips(spec.name, counts, record_split, o.train.allow_partial_test)
    coverage = ds.class_coverage(train_split, test_split_) if test_split_ else []
    for msg in [*clip_notes, *coverage]:
        warnings.warn(msg, UserWarning, stacklevel=3)
    train, test = prepared[train_split].tokens, prepared[test_split_].tokens if test_split_ else None
    val = prepared[val_split].tokens if val_split else None
    from probekit.train.metrics import attach_score_metrics

    attach_score_metrics(spec, train, test, val)  # HEAR's d_prime/aucroc/chroma where the dataset asks
    cache_key = ",".join(f"{s}:{p.cache_key}" for s, p in prepared.items()) + (" (online)" if online else "")
    from probekit.train.sampling import crop_warning, record_sampling

    crop = getattr(ds, "train_crop", None)  # a dataset's random training crop: online only
    crop_note = crop_warning(spec.name, crop, online)
    if crop_note:
        warnings.warn(crop_note, UserWarning, stacklevel=3)
    timings_extract = sum(p.extract_s for p in prepared.values())
    reused = all(p.reused for p in prepared.values())
    progress = o.run.progress
    for probe_name in probes:
        overrides = dict(o.train.overrides or {})
        overrides.setdefault("device", o.run.device)
        if "steps" in overrides and "epochs" not in overrides:
            overrides["epochs"] = None  # an explicit step count wins over an epoch-based preset
        sampling = record_sampling(_train_config(proto, overrides), counts[train_split]["scored"], crop, online)
        if log is not None or dry_run:
            warning = prototype_warning(probe_name, per_probe[probe_name], counts[train_split]["scored"],
                                        spec.num_classes)
            warning = "; ".join(w for w in (warning, crop_note) if w) or None
            est = (estimate_fit(probe_name, train, proto, per_probe[probe_name], overrides)
                   if train is not None else None)
            lines = plan_lines(bb, spec, proto, probe_name, counts, prepared, est, len(seed_list),
                               o.tune.trials if o.tune is not None else None, warning, sampling)
            if plans is not None:
                plans.append(lines)
            if log is not None:
                for line in lines:
                    log(line)
        if dry_run:
            continue
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
        record = make_record(
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
            clips={s: {"scored": c["scored"], "failed": c["failed"]} for s, c in counts.items()},
            timings=Timings(extract_s=timings_extract, train_s=train_s, eval_s=max(0.0, total - train_s),
                            cache_reused=reused),
            environment=env,
            notes="; ".join([*clip_notes, *coverage, *([crop_note] if crop_note else []), *notes]),
        )
        from probekit.results.schema import Sampling

        record = record.model_copy(update={"sampling": Sampling(**sampling)})
        if trained is not None:
            from probekit.predict import trained_probe

            t = prepared[record_split].tokens  # its content key says how the scored tokens were made
            key = t.cache_key() if online else t.store.key
            trained.append(trained_probe(used["first"], record, key, multilabel=bool(train.multilabel),
                                         cv=proto.selection == "cv"))
        yield probe_name, record


def _plain_runs(probe_name, train, test, val, proto, hparams, overrides, seeds, progress):
    from probekit.train.protocols import run_protocol

    runs, notes, last, first = [], [], None, None
    for seed in seeds:
        res = run_protocol(probe_name, train, test, protocol=proto, hparams=hparams, train_overrides=overrides,
                           seed=seed, val=val, progress=progress)
        if res.metrics is None:
            raise ConfigError(f"protocol {proto.name!r} produced no test metrics for {probe_name!r}",
                              hint="give a test split, or use a cross-validation protocol")
        run, dropped = _seed_run(res, probe_name, seed)
        if res.metrics.primary_name in dropped:  # e.g. HEAR's d_prime/aucroc: NaN when a class lacks positives
            raise ConfigError(f"{res.metrics.primary_name} is undefined on the test split (a class has no positive "
                              f"or no negative clip there; HEAR reports NaN)",
                              hint="score on a split where every class occurs, or choose another test fold")
        tuned = val_threshold_f1(res, train, test, val, proto, seed)
        if tuned is not None:  # F1 at a threshold chosen on validation data, never on test
            metrics, f1_per_class, extras = tuned
            run = run.model_copy(update={"metrics": {**run.metrics, **metrics},
                                         "per_class": {**run.per_class, "f1": f1_per_class},
                                         "extras": {**run.extras, **extras}})
        runs.append(run)
        if first is None:
            first = (seed, res)
        if dropped:
            notes.append(f"seed {seed}: undefined metrics left out: {', '.join(dropped)}")
        last = res
    cfg = dataclasses.asdict(last.config)
    cfg.pop("seed", None)
    used = dict(
        metric=last.metrics["primary"],
        hyperparameters={"probe": dict(last.hparams), "train": cfg, "selection": last.selection,
                         "validation": last.val_source, "val_fraction": last.val_fraction},
        first=first,  # (seed, ProtocolResult) of the first seed: the probe `probekit predict` applies
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
    # no study_name: probekit.tune names it `<probe>-<protocol>-<digest of its study key>` (weights, data,
    # search space, ...), so a changed input starts a new study instead of joining an old one
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



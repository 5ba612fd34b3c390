"""`probekit.evaluate`: from a model to result records and a leaderboard in a few lines.

    import probekit
    res = probekit.evaluate(my_torch_module, datasets=["fsdd"], probes=["linear", "cgp"], seeds=3,
                            adapt={"blocks": [f"blocks.{i}" for i in range(4)], "freq_patches": 8})
    print(res.to_dataframe())
    res.leaderboard()                       # pandas pivot; probekit.results.leaderboard.render(...) prints it
    res.plot_gates("gates.png")             # needs "cgp" (or "lcgp") and "layers" among the probes

`prepare()` / `token_data()` make sure the tokens of a (backbone, dataset, split) exist — reusing the
content-addressed cache, extracting when it is missing (after `confirm`, if given), or running the
backbone live (`online=True`) — and return them as `TokenData`. The CLI's `probe` and `tune` commands
call the same functions.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probekit.errors import BackboneError, CacheError, ConfigError
from probekit.results.records import (
    BackboneRef,
    ResultRecord,
    SeedRun,
    Timings,
    TuningSummary,
    capture_environment,
    dataset_identity,
    make_record,
    write_record,
)

__all__ = ["Prepared", "Results", "evaluate", "prepare", "protocol_for", "resolve_backbone", "resolve_dataset", "token_data"]


# ---- backbones and datasets ---------------------------------------------------------------------------
def resolve_backbone(
    model: Any,
    *,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    device: str = "auto",
    trust_checkpoint: bool = False,
    name: str | None = None,
    adapt: Mapping[str, Any] | None = None,
    weights: str | Path | None = None,
):
    """A Backbone from a registered name, a Backbone object, or any torch module.

    Args:
        model: registry name ("bat", "eat", ...), an object satisfying `probekit.backbones.Backbone`, or a
            `torch.nn.Module` (adapted with `probekit.backbones.custom.adapt_module(model, **adapt)`).
        checkpoint: weights for a registered name: an alias of `weights` (evaluate/prepare pass any
            `weights` value through it: "random", a path, "hf:owner/repo", an https URL).
        weights: "pretrained" (default where the name has published weights), "random" (with `seed`), a path,
            "hf:owner/repo[@rev][/file]" or an https URL (probekit.backbones.weights).
        name: the name of an adapted module in tables and caches (default: its class name, lowercased).
        adapt: keyword arguments of `adapt_module` (blocks, frontend, input, cls, freq_patches, ...).
    """
    import torch

    if isinstance(model, str):
        from probekit.backbones import get_backbone

        return get_backbone(model, checkpoint, seed=seed, device=device, trust_checkpoint=trust_checkpoint,
                            weights=weights)
    if checkpoint is not None or weights is not None:
        raise ConfigError("checkpoint= applies to registered backbone names only",
                          hint="load the weights into your module first, or pass the backbone's name")
    from probekit.backbones.protocol import is_backbone, missing_members

    if is_backbone(model):  # the one conformance test (static: lazy properties such as `frontend` are not run)
        return model
    if isinstance(model, torch.nn.Module):
        from probekit.backbones.custom import adapt_module

        opts = dict(adapt or {})
        opts.setdefault("device", device)
        return adapt_module(model, name=name or type(model).__name__.lower(), **opts)
    raise BackboneError(
        f"cannot use {type(model).__name__} as a backbone (missing {', '.join(missing_members(model))})",
        hint="pass a registered name (`probekit backbones`), a Backbone (see probekit.backbones.BackboneBase), "
        "or a torch.nn.Module",
    )


def resolve_dataset(dataset: Any, *, data_root: str | Path | None = None, **options):
    """A Dataset from a name (`probekit datasets`, or `manifest:PATH.csv`) or a Dataset object."""
    from probekit.datasets import get_dataset
    from probekit.datasets.base import Dataset

    if isinstance(dataset, Dataset):
        return dataset
    if isinstance(dataset, (str, Path)):
        return get_dataset(str(dataset), data_root, **options)
    raise ConfigError(f"cannot use {type(dataset).__name__} as a dataset", hint="pass a dataset name or a Dataset")


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


def prepare(
    backbone: Any,
    dataset: Any,
    split: str,
    *,
    cache_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    checkpoint: str | Path | None = None,
    layers: str | Sequence[int] = "all",
    dtype: str = "float16",
    batch_size: int = 32,
    device: str = "auto",
    workers: int | None = None,
    online: bool = False,
    frontend_style: str | None = "model",
    confirm: Callable[[str], bool] | None = None,
    progress: bool = True,
    name: str | None = None,
    adapt: Mapping[str, Any] | None = None,
) -> Prepared:
    """Make sure the tokens of `backbone` on `dataset`/`split` are available and return them.

    Reuses a finished cache with the same content key (other weights, frontend or data never match);
    otherwise asks `confirm(message)` (when given; False aborts with a CacheError) and extracts. With
    `online=True` nothing is cached: the backbone runs on every batch (`OnlineTokens`). `backbone`,
    `checkpoint`, `name` and `adapt` are as in `resolve_backbone`.
    """
    from probekit.cache.extract import extract
    from probekit.cache.reader import CacheReader, open_cache
    from probekit.cache.store import key_digest

    bb = resolve_backbone(backbone, checkpoint=checkpoint, device=device, name=name, adapt=adapt)
    ds = resolve_dataset(dataset, data_root=data_root)
    if online:
        from probekit.cache.online import OnlineTokens

        tokens = OnlineTokens(bb, ds, split, device=device, frontend_style=frontend_style, workers=workers or 0)
        return Prepared(tokens, tokens.backbone, ds, split, key_digest(tokens.cache_key()), None, 0.0, False, True)
    try:
        reader = open_cache(bb, ds, split, cache_dir=cache_dir, layers=layers, dtype=dtype,
                            frontend_style=frontend_style)
        return Prepared(reader, bb, ds, split, key_digest(reader.store.key), Path(reader.path), 0.0, True)
    except CacheError as missing:
        reason = str(missing)
    if confirm is not None:
        msg = (f"No finished token cache of {bb.name} on {ds.name}/{split} ({len(ds.clips(split))} clips). "
               "Extract it now?")
        if not confirm(msg):
            raise CacheError(f"no cache of {bb.name} on {ds.name}/{split}: extraction declined ({reason})",
                             hint=f"run `probekit extract --backbone {bb.name} --dataset {ds.name} --split {split}`")
    t0 = time.perf_counter()
    store = extract(bb, ds, split, cache_dir=cache_dir, layers=layers, dtype=dtype, batch_size=batch_size,
                    device=device, workers=workers, frontend_style=frontend_style, progress=progress)
    seconds = time.perf_counter() - t0
    reader = CacheReader(store.path)
    return Prepared(reader, bb, ds, split, key_digest(reader.store.key), Path(reader.path), seconds, False)


def token_data(backbone: Any, dataset: Any, split: str, **kwargs):
    """`prepare(...).tokens`: the TokenData of a (backbone, dataset, split), extracted if needed."""
    return prepare(backbone, dataset, split, **kwargs).tokens


# ---- results ----------------------------------------------------------------------------------------------
@dataclass
class Results:
    """What `evaluate` produced: the records (written to `paths` unless write=False)."""

    records: list[ResultRecord] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def to_dataframe(self):
        """One row per record: backbone, dataset, split, probe, protocol, metric, mean, std, n, CI, seconds."""
        import pandas as pd

        rows = []
        for r in self.records:
            st = r.aggregate[r.metric]
            rows.append(dict(
                backbone=r.backbone.label, dataset=r.dataset, split=r.split, probe=r.probe, protocol=r.protocol,
                metric=r.metric, mean=st.mean, std=st.std, n=st.n, ci_low=st.ci_low, ci_high=st.ci_high,
                seeds=[s.metrics[r.metric] for s in r.seeds], train_s=r.timings.train_s,
                extract_s=r.timings.extract_s, source=r.source,
            ))
        return pd.DataFrame(rows)

    def leaderboard(self, *, published: bool = False, **filters):
        """The leaderboard pivot of these records (plus the published figures with `published=True`)."""
        from probekit.results.leaderboard import leaderboard
        from probekit.results.reported import published_records

        recs = list(self.records) + (published_records() if published else [])
        return leaderboard(recs, **filters)

    def table(self, fmt: str = "table", **kwargs) -> str:
        """The leaderboard rendered as text (see `probekit.results.leaderboard.FORMATS`)."""
        from probekit.results.leaderboard import render

        return render(self.leaderboard(**kwargs), fmt)

    def plot_gates(self, path: str | Path, *, dataset: str | None = None) -> Path:
        """CGP gates next to the per-layer linear curve (needs cgp/lcgp and layers records)."""
        from probekit.results.plots import plot_gates

        if dataset is None:
            with_gates = [r.dataset for r in self.records
                          if any({"gates", "layer_scores"} & set(s.extras) for s in r.seeds)]
            dataset = with_gates[0] if with_gates else None
        return plot_gates(self.records, path, dataset=dataset)

    def plot_heatmap(self, path: str | Path, **filters) -> Path:
        from probekit.results.plots import plot_heatmap

        return plot_heatmap(self.leaderboard(**filters), path)

    def __repr__(self) -> str:
        cells = ", ".join(f"{r.probe}@{r.dataset}={r.score:.2f}" for r in self.records[:6])
        more = f", ... ({len(self.records)} records)" if len(self.records) > 6 else ""
        return f"Results({cells}{more})"


# ---- evaluate ---------------------------------------------------------------------------------------------
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


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {seeds}")
        return list(range(int(seeds)))
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise ConfigError(f"seeds must be distinct integers, got {list(seeds)}")
    return out


def _probe_hparams(hparams: Mapping[str, Any] | None, probes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-probe hyperparameters: {"cgp": {...}} by probe name, or one flat dict for every probe."""
    hp = dict(hparams or {})
    if hp and all(k in probes and isinstance(v, Mapping) for k, v in hp.items()):
        return {p: dict(hp.get(p, {})) for p in probes}
    return {p: dict(hp) for p in probes}


def _scalar_metrics(m: Mapping[str, Any]) -> tuple[dict[str, float], list[str]]:
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
    metrics, dropped = _scalar_metrics(m.metrics if m is not None else {})
    train_s = float(sum(f.seconds for f in res.fits))
    run = SeedRun(
        seed=seed,
        metrics=metrics,
        per_class={k: [float(x) for x in v] for k, v in (per_class or {}).items() if k in ("ap", "f1")},
        extras=extras,
        train_s=train_s,
    )
    return run, dropped


def _backbone_ref(bb) -> BackboneRef:
    card = getattr(bb, "card", None)
    sha = getattr(bb, "checkpoint_sha256", None)
    random_init = not sha
    return BackboneRef(
        name=bb.name,
        checkpoint_sha256=sha,
        init_seed=getattr(bb, "seed", None) if random_init else None,
        family=getattr(card, "family", None),
        params=getattr(card, "params", None) or None,
        # random weights saw nothing, whatever the card says the trained model saw
        training_data=[] if random_init else list(getattr(card, "training_data", ()) or ()),
    )


def evaluate(
    model: Any,
    datasets: str | Sequence[Any] = ("fsdd",),
    probes: str | Sequence[str] = ("linear",),
    *,
    tune: bool = False,
    protocol: str | None = None,
    seeds: int | Sequence[int] = 1,
    hparams: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    results_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    device: str = "auto",
    checkpoint: str | Path | None = None,
    name: str | None = None,
    adapt: Mapping[str, Any] | None = None,
    layers: str | Sequence[int] = "all",
    dtype: str = "float16",
    batch_size: int = 32,
    workers: int | None = None,
    test_split: str | None = None,
    online: bool = False,
    trials: int = 50,
    tune_options: Mapping[str, Any] | None = None,
    confirm: Callable[[str], bool] | None = None,
    write: bool = True,
    progress: bool = True,
) -> Results:
    """Probe a model's frozen tokens on datasets and record the results.

    For each dataset: extract (or reuse) the token cache of the train/test (and validation) splits, then
    for each probe train under the dataset's protocol with every seed (or tune it first with
    `tune=True`), score the test split, and write one result record per probe.

    Args:
        model: a registered backbone name, a Backbone, or any torch module (see `resolve_backbone`).
        datasets: dataset names (or Dataset objects); `manifest:PATH.csv` for your own data.
        probes: probe names (`probekit.probes.list_probes()`).
        tune: search hyperparameters with Optuna first (on validation data only), then retrain with seeds.
        protocol: training preset (`probekit.train.list_protocols()`); default: the dataset's own.
        seeds: number of seeds (0..N-1) or explicit seeds; records keep each seed and mean/std/CI.
        hparams: probe hyperparameters, flat for every probe or {probe: {...}}.
        train_overrides: TrainConfig fields to change (e.g. {"steps": 300, "lr": 3e-4}).
        cache_dir, results_dir, data_root: where caches, records and data live (defaults: env/platform).
        device: "auto" (CUDA when present), "cpu", "cuda:1".
        checkpoint: weights file when `model` is a registered name.
        name, adapt: name and `adapt_module` options when `model` is a torch module.
        layers, dtype, batch_size, workers: what and how to extract (workers: decoding processes).
        test_split: evaluate on this split (default "test").
        online: run the backbone live per batch instead of caching tokens.
        trials, tune_options: study size and further `probekit.tune.tune` options.
        confirm: asked before extracting a missing cache; returning False aborts.
        write: write the records to `results_dir`.
        progress: progress bars.

    Returns:
        Results with `.records`, `.to_dataframe()`, `.leaderboard()`, `.plot_gates()`.
    """
    datasets = [datasets] if isinstance(datasets, (str, Path)) else list(datasets)
    probes = [probes] if isinstance(probes, str) else list(probes)
    if not datasets or not probes:
        raise ConfigError("evaluate() needs at least one dataset and one probe")
    from probekit.probes import get_probe_class

    for p in probes:
        get_probe_class(p)  # unknown names fail before any extraction
    seed_list = _seed_list(seeds)
    per_probe = _probe_hparams(hparams, probes)
    bb = resolve_backbone(model, checkpoint=checkpoint, device=device, name=name, adapt=adapt)
    env = capture_environment(device=_device_name(device))
    if confirm is not None:  # ask once per call, not once per split
        answers: dict[str, bool] = {}
        ask = confirm
        confirm = lambda msg: answers.setdefault("ok", bool(ask(msg)))
    out = Results()
    for ds_name in datasets:
        ds = resolve_dataset(ds_name, data_root=data_root)
        spec = ds.spec
        proto = protocol_for(protocol, spec)
        train_split, test_split_, val_split = _splits(spec, proto, test_split)
        prep_kw = dict(cache_dir=cache_dir, layers=layers, dtype=dtype, batch_size=batch_size, device=device,
                       workers=workers, online=online, confirm=confirm, progress=progress)
        prepared = {s: prepare(bb, ds, s, **prep_kw) for s in (train_split, test_split_, val_split) if s}
        train, test = prepared[train_split].tokens, prepared[test_split_].tokens if test_split_ else None
        val = prepared[val_split].tokens if val_split else None
        record_split = test_split_ or train_split  # cv protocols score every fold of one split
        cache_key = ",".join(f"{s}:{p.cache_key}" for s, p in prepared.items()) + (" (online)" if online else "")
        timings_extract = sum(p.extract_s for p in prepared.values())
        reused = all(p.reused for p in prepared.values())
        for probe_name in probes:
            overrides = dict(train_overrides or {})
            overrides.setdefault("device", device)
            if "steps" in overrides and "epochs" not in overrides:
                overrides["epochs"] = None  # an explicit step count wins over an epoch-based preset
            t0 = time.perf_counter()
            if tune:
                study = f"{probe_name}-{bb.name}-{spec.name}-{proto.name}"
                runs, notes, tuning, used = _tune_runs(probe_name, train, test, val, proto, per_probe[probe_name],
                                                       overrides, seed_list, trials, tune_options, progress,
                                                       study=study, results_dir=results_dir)
            else:
                runs, notes, tuning, used = _plain_runs(probe_name, train, test, val, proto, per_probe[probe_name],
                                                        overrides, seed_list, progress)
            total = time.perf_counter() - t0
            train_s = sum(r.train_s or 0.0 for r in runs)
            record = make_record(
                backbone=_backbone_ref(bb),
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
            out.records.append(record)
            if write:
                out.paths.append(write_record(record, results_dir))
    return out


def _device_name(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


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
    from probekit.results.records import _safe
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


def record_from_tune(
    result: Any,
    *,
    backbone: Any,
    dataset: Any,
    split: str = "test",
    cache_key: str | None = None,
    extract_s: float | None = None,
    data_root: str | Path | None = None,
) -> ResultRecord:
    """A result record from a `probekit.tune.TuneResult` whose best configuration was retrained with seeds
    (what `probekit tune` can write with `write_record`). Per-seed test metrics come from the result."""
    bb = resolve_backbone(backbone)
    ds = resolve_dataset(dataset, data_root=data_root)
    if not result.seeds:
        raise ConfigError("the tuning result has no seed runs to record",
                          hint="retrain the best configuration with seeds >= 1 and a test split")
    runs = [SeedRun(seed=int(s.seed), metrics=_scalar_metrics(s.metrics or {result.metric: s.score})[0])
            for s in result.seeds]
    d = result.to_dict()
    tuning = TuningSummary(
        trials=int(sum(v for k, v in d["trials"].items() if k in ("complete", "pruned", "failed"))),
        best_params=dict(result.best_params), best_value=result.best_value, search_space=dict(result.search_space),
        study=result.study_name, storage=result.storage, validation=result.validation, trial_states=d["trials"],
        total_steps=result.total_steps, metric=result.metric,
    )
    return make_record(
        backbone=_backbone_ref(bb), dataset=ds.spec.name, dataset_id=dataset_identity(ds), split=split, probe=result.probe,
        protocol=result.protocol, metric=result.metric, seeds=runs, class_names=list(ds.spec.classes),
        hyperparameters={"probe_and_train": dict(result.best_params)}, tuning=tuning, cache_key=cache_key,
        timings=Timings(extract_s=extract_s), environment=capture_environment(),
    )

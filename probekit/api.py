"""`probekit.evaluate`: from a model to result records and a leaderboard in a few lines.

    import probekit
    res = probekit.evaluate(my_torch_module, datasets=["fsdd"], probes=["linear", "cgp"],
                            train=probekit.api.TrainOptions(seeds=3),
                            backbone_options={"adapt": {"blocks": [f"blocks.{i}" for i in range(4)]}})
    print(res.to_dataframe())
    res.leaderboard()                       # pandas pivot; probekit.results.leaderboard.render(...) prints it
    res.plot_gates("gates.png")             # needs "cgp" (or "lcgp") and "layers" among the probes

Options travel as a few frozen value objects instead of loose keywords: `TokenSpec` (what the tokens are:
layers, dtype, frontend style, autocast), `RunOptions` (device, workers, batch size, cache dir,
progress), `TrainOptions` (protocol, seeds, hyperparameters) and `TuneOptions`; `backbone_options` go to
`get_backbone` / `adapt_module` (checkpoint, trust_checkpoint, use_ema, seed, name, adapt, ...). The flat
keywords of 0.1 (`seeds=3, layers="last", checkpoint=..., trust_checkpoint=True`) still work: `_options`
maps them, in one place.

`prepare()` / `token_data()` make sure the tokens of a (backbone, dataset, split) exist — reusing the
content-addressed cache, extracting when it is missing (after `confirm`, if given), or running the
backbone live (`online=True`) — and return them as `TokenData`. The CLI's `probe` and `tune` commands
call the same functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probekit._device import resolve_device
from probekit._evaluate import (
    Prepared,
    TrainOptions,
    TuneOptions,
    backbone_ref,
    collect_options,
    evaluate_dataset,
    parse_seeds,
    plan_split,
    prepare_planned,
    probe_hparams,
    protocol_for,
    scalar_metrics,
)
from probekit.cache.spec import RunOptions, TokenSpec
from probekit.errors import BackboneError, ConfigError
from probekit.results.records import (
    ResultRecord,
    SeedRun,
    Timings,
    TuningSummary,
    capture_environment,
    dataset_identity,
    make_record,
    write_record,
)

__all__ = ["Prepared", "Results", "RunOptions", "TokenSpec", "TrainOptions", "TuneOptions", "evaluate", "prepare",
           "protocol_for", "record_from_tune", "resolve_backbone", "resolve_dataset", "token_data"]


# ---- backbones and datasets ---------------------------------------------------------------------------
def resolve_backbone(
    model: Any,
    *,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    name: str | None = None,
    adapt: Mapping[str, Any] | None = None,
    weights: str | Path | None = None,
    **options,
):
    """A Backbone from a registered name, a Backbone object, or any torch module.

    Args:
        model: registry name ("bat", "eat", ...), an object satisfying `probekit.backbones.Backbone`, or a
            `torch.nn.Module` (adapted with `probekit.backbones.custom.adapt_module(model, **adapt)`).
        checkpoint: weights for a registered name: an alias of `weights` (evaluate/prepare pass any
            `weights` value through it: "random", a path, "hf:owner/repo", an https URL).
        weights: "pretrained" (default where the name has published weights), "random" (with `seed`), a path,
            "hf:owner/repo[@rev][/file]" or an https URL (probekit.backbones.weights).
        device: where the model is built.
        name: the name of an adapted module in tables and caches (default: its class name, lowercased).
        adapt: keyword arguments of `adapt_module` (blocks, frontend, input, cls, freq_patches, ...).
        **options: further `get_backbone` options for a registered name: seed, trust_checkpoint, use_ema,
            num_heads, chunk_rows, frontend.
    """
    import torch

    from probekit.backbones.protocol import is_backbone, missing_members

    if isinstance(model, str):
        from probekit.backbones import get_backbone

        return get_backbone(model, checkpoint, device=device, weights=weights, **options)
    if checkpoint is not None or weights is not None:
        raise ConfigError("checkpoint= applies to registered backbone names only",
                          hint="load the weights into your module first, or pass the backbone's name")
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
def prepare(
    backbone: Any,
    dataset: Any,
    split: str,
    *,
    tokens: TokenSpec | None = None,
    run: RunOptions | None = None,
    backbone_options: Mapping[str, Any] | None = None,
    data_root: str | Path | None = None,
    online: bool = False,
    confirm: Callable[[str], bool] | None = None,
    **options,
) -> Prepared:
    """Make sure the tokens of `backbone` on `dataset`/`split` are available and return them.

    Reuses a finished cache with the same content key (other weights, frontend or data never match);
    otherwise asks `confirm(message)` (when given; False aborts with a CacheError) and extracts. With
    `online=True` nothing is cached: the backbone runs on every batch (`OnlineTokens`). `backbone` and
    `backbone_options` are as in `resolve_backbone`; `tokens`/`run` as in `probekit.cache.extract`. Flat
    keywords of 0.1 (layers=, dtype=, cache_dir=, device=, checkpoint=, name=, adapt=, ...) still work.
    """
    o = collect_options(options, tokens=tokens, run=run, backbone_options=backbone_options, where="prepare")
    bb = resolve_backbone(backbone, device=o.run.device, **o.backbone)
    ds = resolve_dataset(dataset, data_root=data_root)
    return prepare_planned(plan_split(bb, ds, split, o, online), o.run, online=online, confirm=confirm)


def token_data(backbone: Any, dataset: Any, split: str, **kwargs):
    """`prepare(...).tokens`: the TokenData of a (backbone, dataset, split), extracted if needed."""
    return prepare(backbone, dataset, split, **kwargs).tokens


# ---- results ----------------------------------------------------------------------------------------------
@dataclass
class Results:
    """What `evaluate` produced: the records (written to `paths` unless write=False)."""

    records: list[ResultRecord] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    plans: list[list[str]] = field(default_factory=list)  # the plan of each run, in words (log / dry_run)
    backbone: Any = field(default=None, repr=False, compare=False)  # what evaluate probed (reused by predict)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def to_dataframe(self):
        """One row per record, the answer first: backbone, dataset, probe, score (the mean over seeds of the
        record's metric), metric; then split, protocol, mean, std, n, CI, per-seed scores, seconds."""
        import pandas as pd

        rows = []
        for r in self.records:
            st = r.aggregate[r.metric]
            rows.append(dict(
                backbone=r.backbone.label, dataset=r.dataset, probe=r.probe, score=st.mean, metric=r.metric,
                split=r.split, protocol=r.protocol, mean=st.mean, std=st.std, n=st.n, ci_low=st.ci_low, ci_high=st.ci_high,
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

    def predict(self, paths: Sequence[str | Path], *, record: int | str | None = None, device: str = "auto",
                batch_size: int = 16, **options):
        """Apply a saved probe to audio files: a pandas DataFrame, one row per file (path, prediction,
        score, error, one score column per class; see `probekit.predict.Predictor.predict`).

        record: which record's probe (an index, or a probe name) when these Results hold several. Uses the
        probe saved beside the written record (evaluate(write=True, save_probe=True)) and the backbone
        evaluate probed; **options go to `Predictor` (checkpoint=, trust_checkpoint=)."""
        from probekit.predict import Predictor

        if not self.paths:
            raise ConfigError("these results have no written record, so no saved probe to predict with",
                              hint="run evaluate(..., write=True, save_probe=True)")
        if record is None:
            if len(self.paths) > 1:
                raise ConfigError(f"these results hold {len(self.paths)} records: say which probe predicts",
                                  hint="record=0, or record='<probe name>': "
                                  + ", ".join(f"{r.probe}@{r.dataset}" for r in self.records))
            record = 0
        if isinstance(record, str):
            hits = [i for i, r in enumerate(self.records) if r.probe == record]
            if len(hits) != 1:
                raise ConfigError(f"record={record!r} matches {len(hits)} records",
                                  hint="use an index: " + ", ".join(f"{i}: {r.probe}@{r.dataset}"
                                                                   for i, r in enumerate(self.records)))
            record = hits[0]
        if "backbone" not in options and "checkpoint" not in options:
            options["backbone"] = self.backbone
        return Predictor(self.paths[record], device=device, batch_size=batch_size, **options).predict(paths)

    def __repr__(self) -> str:
        cells = ", ".join(f"{r.probe}@{r.dataset}={r.score:.2f}" for r in self.records[:6])
        more = f", ... ({len(self.records)} records)" if len(self.records) > 6 else ""
        return f"Results({cells}{more})"


# ---- evaluate ---------------------------------------------------------------------------------------------
def evaluate(
    model: Any,
    datasets: str | Sequence[Any] = ("fsdd",),
    probes: str | Sequence[str] = ("linear",),
    *,
    tokens: TokenSpec | None = None,
    run: RunOptions | None = None,
    train: TrainOptions | None = None,
    tune: bool | TuneOptions = False,
    backbone_options: Mapping[str, Any] | None = None,
    online: bool = False,
    confirm: Callable[[str], bool] | None = None,
    results_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    write: bool = True,
    dry_run: bool = False,
    log: Callable[[str], None] | None = None,
    save_probe: bool = True,
    **options,
) -> Results:
    """Probe a model's frozen tokens on datasets and record the results.

    For each dataset: extract (or reuse) the token cache of the train/test (and validation) splits, then
    for each probe train under the dataset's protocol with every seed (or tune it first with
    `tune=True`), score the test split, and write one result record per probe.

    Args:
        model: a registered backbone name, a Backbone, or any torch module (see `resolve_backbone`).
        datasets: dataset names (or Dataset objects); `manifest:PATH.csv` for your own data.
        probes: probe names (`probekit.probes.list_probes()`).
        tokens: what to extract (`TokenSpec`: layers, dtype, frontend style, autocast).
        run: how to run (`RunOptions`: device, workers, batch size, cache dir, progress).
        train: protocol, seeds, probe hyperparameters, TrainConfig overrides, test split (`TrainOptions`).
        tune: search hyperparameters with Optuna first (on validation data only), then retrain with
            seeds; True or a `TuneOptions` (trials, further `probekit.tune.tune` options).
        backbone_options: `resolve_backbone` options: checkpoint, trust_checkpoint, use_ema, seed, name, adapt.
        online: run the backbone live per batch instead of caching tokens.
        confirm: asked before extracting a missing cache; returning False aborts.
        results_dir, data_root: where records and data live (defaults: env/platform).
        write: write the records to `results_dir`.
        dry_run: plan only: resolve every split (a missing cache is planned with its projected size, not
            extracted), time a short warm-up on existing tokens, and return `Results.plans`; no records.
        log: called with each line of the plan (clips per split, steps, an estimated training time, peak
            memory, warnings) before training starts; None prints nothing (warnings still go to `warnings`).
        save_probe: save the first seed's trained probe beside each written record
            (`<record>.probe.safetensors`, for `probekit predict` / `Results.predict`); False removes one
            an earlier run left there.
        **options: the 0.1 flat keywords (seeds=, hparams=, train_overrides=, protocol=, test_split=,
            trials=, tune_options=, layers=, dtype=, cache_dir=, device=, batch_size=, workers=, progress=,
            checkpoint=, trust_checkpoint=, name=, adapt=, ...), mapped onto the objects above.

    Returns:
        Results with `.records`, `.to_dataframe()`, `.leaderboard()`, `.plot_gates()`.
    """
    o = collect_options(options, tokens=tokens, run=run, backbone_options=backbone_options, train=train, tune=tune,
                        where="evaluate")
    datasets = [datasets] if isinstance(datasets, (str, Path)) else list(datasets)
    probes = [probes] if isinstance(probes, str) else list(probes)
    if not datasets or not probes:
        raise ConfigError("evaluate() needs at least one dataset and one probe")
    # "finetune" is no probe: it trains the whole encoder (probekit.finetune), after the probes of each dataset
    finetune_too = "finetune" in probes
    probes = [p for p in probes if p != "finetune"]
    ft_sets = _finetune_sets(o) if finetune_too else {}
    if finetune_too:  # a bad recipe override fails now, before any extraction or training
        from probekit.finetune import resolve_recipe

        resolve_recipe(None, "as20k", ft_sets)
    if finetune_too and isinstance(o.train.hparams, Mapping) and "finetune" in o.train.hparams:
        import dataclasses as _dc

        rest = {k: v for k, v in o.train.hparams.items() if k != "finetune"}
        o = _dc.replace(o, train=_dc.replace(o.train, hparams=rest or None))
    # everything a user can get wrong is checked before any extraction or training
    if probes:
        check_settings(probes, o)
    seed_list = parse_seeds(o.train.seeds)
    per_probe = probe_hparams(o.train.hparams, probes)
    # a manifest's absent files stay listed (as `probekit extract --on-error skip` does): extraction records
    # them as failed clips, and the failed-clip check below refuses or (allow_partial_test) warns
    resolved = [resolve_dataset(d, data_root=data_root,
                                **({"keep_missing": True} if str(d).startswith("manifest:") else {}))
                if isinstance(d, (str, Path)) else resolve_dataset(d) for d in datasets]
    bb = resolve_backbone(model, device=o.run.device, **o.backbone)
    env = capture_environment(device=str(resolve_device(o.run.device)))
    if confirm is not None:  # ask once per call, not once per split
        answers: dict[str, bool] = {}
        ask = confirm
        confirm = lambda msg: answers.setdefault("ok", bool(ask(msg)))
    out = Results(backbone=bb)
    from probekit.distributed import is_main

    write = write and is_main()  # data-parallel ranks train alongside; rank 0 alone writes records and probes
    trained: list | None = [] if write and save_probe else None
    for ds in resolved:
        for probe_name, record in (evaluate_dataset(bb, ds, probes, o, seed_list, per_probe, env, online=online,
                                                     confirm=confirm, results_dir=results_dir, log=log,
                                                     dry_run=dry_run, plans=out.plans, trained=trained)
                                   if probes else ()):
            out.records.append(record)
            if write:
                from probekit.predict import probe_path_for, store_probe
                from probekit.results.store import beside_record

                out.paths.append(write_record(record, results_dir))
                with beside_record(out.paths[-1], [probe_path_for(out.paths[-1].name).name]) as rec_path:
                    store_probe(rec_path, trained.pop() if trained else None)  # (records on object stores too)
        if finetune_too and not dry_run:  # hparams={"finetune": {...}}: recipe overrides (`--set` keys)
            from probekit.finetune import finetune_record

            ft = finetune_record(bb, ds, sets=ft_sets, seeds=seed_list, device=o.run.device,
                                 workers=o.run.workers or 0, results_dir=results_dir, write=write, env=env, log=log)
            out.records.append(ft.record)
            if write:
                out.paths.append(ft.path)
    return out


def _finetune_sets(o) -> dict:
    """Recipe overrides of probes=["finetune"]: hparams={"finetune": {"lr": 1e-4, ...}}."""
    hp = o.train.hparams
    if isinstance(hp, Mapping) and isinstance(hp.get("finetune"), Mapping):
        return dict(hp["finetune"])
    return {}


def check_settings(probes: Sequence[str], o) -> None:
    """Probe names, training settings and tuning search spaces, checked up front (ConfigError naming the key)."""
    from probekit.probes import get_probe_class
    from probekit.train import TrainConfig
    from probekit.train.fit import check_search_space

    classes = [get_probe_class(p) for p in probes]  # unknown names fail before any extraction
    overrides = dict(o.train.overrides or {})
    if "steps" in overrides and "epochs" not in overrides:
        overrides["epochs"] = None
    TrainConfig().replace(**overrides).validate()  # lr="abc" is refused now, not mid-training
    if o.tune is not None:  # the space `probekit.tune` would search, resolved and checked now
        from probekit.tune.plan import search_space

        opts = dict(o.tune.options or {})
        per_probe = probe_hparams(o.train.hparams, probes)
        fixed = {k: v for k, v in overrides.items() if k not in ("device", "epochs")}
        for name, cls in zip(probes, classes):
            space = search_space(cls, name, per_probe[name], fixed, opts.get("space"), opts.get("space_file"),
                                 opts.get("only"))
            check_search_space(cls, space)


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
    runs = [SeedRun(seed=int(s.seed), metrics=scalar_metrics(s.metrics or {result.metric: s.score})[0])
            for s in result.seeds]
    d = result.to_dict()
    tuning = TuningSummary(
        trials=int(sum(v for k, v in d["trials"].items() if k in ("complete", "pruned", "failed"))),
        best_params=dict(result.best_params), best_value=result.best_value, search_space=dict(result.search_space),
        study=result.study_name, storage=result.storage, validation=result.validation, trial_states=d["trials"],
        total_steps=result.total_steps, metric=result.metric,
    )
    return make_record(
        backbone=backbone_ref(bb), dataset=ds.spec.name, dataset_id=dataset_identity(ds), split=split,
        probe=result.probe,
        protocol=result.protocol, metric=result.metric, seeds=runs, class_names=list(ds.spec.classes),
        hyperparameters={"probe_and_train": dict(result.best_params)}, tuning=tuning, cache_key=cache_key,
        timings=Timings(extract_s=extract_s), environment=capture_environment(),
    )

"""Hyperparameter tuning of probes with Optuna (Sobol start + TPE, successive halving, seeds, shared storage)."""

from probekit.tune.logs import route_optuna_logging
from probekit.tune.plan import TuneOptions, TuningPlan, default_study_name, plan_tuning, token_source
from probekit.tune.progress import print_summary, summarize_study
from probekit.tune.sampler import StartupThenTPESampler
from probekit.tune.space import load_space_file, parse_space_override, resolve_space
from probekit.tune.storage import redact
from probekit.tune.study import (
    SeedScore,
    TuneResult,
    confidence_interval,
    finish,
    make_pruner,
    optimize_study,
    retrain_best,
    run_search,
    tune,
)

__all__ = [
    "SeedScore",
    "StartupThenTPESampler",
    "TuneOptions",
    "TuneResult",
    "TuningPlan",
    "confidence_interval",
    "default_study_name",
    "finish",
    "load_space_file",
    "make_pruner",
    "optimize_study",
    "parse_space_override",
    "plan_tuning",
    "print_summary",
    "redact",
    "resolve_space",
    "retrain_best",
    "route_optuna_logging",
    "run_search",
    "summarize_study",
    "token_source",
    "tune",
]

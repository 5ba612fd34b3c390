"""Training: one loop for every probe (`fit`), losses, metrics and the named protocols."""

from probekit.train.data import ConcatTokens, holdout_split
from probekit.train.fit import FitResult, TrainConfig, evaluate_scores, fit, lr_at, predict
from probekit.train.losses import AsymmetricLoss, make_loss
from probekit.train.metrics import EvalResult, compute_metrics, primary_value
from probekit.train.protocols import (
    PROTOCOLS,
    Protocol,
    ProtocolResult,
    get_protocol,
    list_protocols,
    run_protocol,
)
from probekit.train.schedule import warmup_cosine

__all__ = [
    "PROTOCOLS",
    "AsymmetricLoss",
    "ConcatTokens",
    "EvalResult",
    "FitResult",
    "Protocol",
    "ProtocolResult",
    "TrainConfig",
    "compute_metrics",
    "evaluate_scores",
    "fit",
    "get_protocol",
    "holdout_split",
    "list_protocols",
    "lr_at",
    "make_loss",
    "predict",
    "primary_value",
    "run_protocol",
    "warmup_cosine",
]

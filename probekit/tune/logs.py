"""Optuna's log lines go through Python logging under probekit's control, not straight to stderr.

Optuna prints `[I 2026-...] A new study created ...` with its own handler. `route_optuna_logging`
removes that handler and sends its records to the `probekit.optuna` logger at a level the user sets
(argument, else $PROBEKIT_LOG_LEVEL, else warning). Applications configure `logging` as usual; the CLI
adds one stderr handler (`optuna: message`).
"""

from __future__ import annotations

import logging
import os

import optuna

from probekit._console import LOG_LEVELS, StderrHandler, current_log_level, log_level_of

__all__ = ["LEVELS", "cli_log_handler", "route_optuna_logging"]

LEVELS = LOG_LEVELS
_configured: dict[str, int] = {}
_level = log_level_of  # one parser of level names (probekit._console)


class _Forward(logging.Handler):
    """Hands optuna's records to the `probekit.optuna` logger (and whatever handlers it reaches)."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger("probekit.optuna")
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def route_optuna_logging(level: str | int | None = None) -> None:
    """Optuna logs through `probekit.optuna` at `level`; the first call (or a call with a level) sets it."""
    if level is None and "level" in _configured:
        return
    lvl = _level(level)
    optuna.logging.disable_default_handler()
    optuna.logging.set_verbosity(lvl)
    source = logging.getLogger("optuna")
    source.propagate = False
    if not any(isinstance(h, _Forward) for h in source.handlers):
        source.addHandler(_Forward())
    logging.getLogger("probekit.optuna").setLevel(lvl)
    _configured["level"] = lvl


_StderrHandler = StderrHandler  # one stderr line format for every logger (probekit._console)


def cli_log_handler(level: str | int | None = None) -> None:
    """For the CLI: route optuna at `level` (default $PROBEKIT_LOG_LEVEL, else warning) and print
    probekit's log records to stderr (the handler is added once)."""
    if level is None:  # the root --log-level, else $PROBEKIT_LOG_LEVEL, else warning
        level = current_log_level() or os.environ.get("PROBEKIT_LOG_LEVEL") or "warning"
    route_optuna_logging(level)
    logger = logging.getLogger("probekit")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.propagate = False

"""Optuna's log lines go through Python logging under probekit's control, not straight to stderr.

Optuna prints `[I 2026-...] A new study created ...` with its own handler. `route_optuna_logging`
removes that handler and sends its records to the `probekit.optuna` logger at a level the user sets
(argument, else $PROBEKIT_LOG_LEVEL, else warning). Applications configure `logging` as usual; the CLI
adds one stderr handler (`optuna: message`).
"""

from __future__ import annotations

import logging
import os
import sys

import optuna

from probekit.errors import ConfigError

__all__ = ["LEVELS", "cli_log_handler", "route_optuna_logging"]

LEVELS = ("debug", "info", "warning", "error", "critical")
_configured: dict[str, int] = {}


def _level(level: str | int | None) -> int:
    if isinstance(level, int):
        return level
    text = (level or os.environ.get("PROBEKIT_LOG_LEVEL") or "warning").strip().lower()
    if text not in LEVELS:
        raise ConfigError(f"log level {text!r} is unknown", hint=f"use one of: {', '.join(LEVELS)}")
    return getattr(logging, text.upper())


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


class _StderrHandler(logging.Handler):
    """One line per record on the current sys.stderr (looked up at each record: tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"{record.name.split('.')[0]}: {record.getMessage()}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never break a run
            self.handleError(record)


def cli_log_handler(level: str | int | None = None) -> None:
    """For the CLI: route optuna at `level` (default $PROBEKIT_LOG_LEVEL, else warning) and print
    probekit's log records to stderr (the handler is added once)."""
    route_optuna_logging(level if level is not None else (os.environ.get("PROBEKIT_LOG_LEVEL") or "warning"))
    logger = logging.getLogger("probekit")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.propagate = False

"""Terminal and log output, one home: progress of long runs, and tables that are never cut.

Progress (`Bar`), used by extraction, probe training (`fit`), tuning and pretraining:

* on a terminal (stderr is a TTY): a rich live bar with done/total, rate, elapsed and ETA;
* anywhere else (a pipe, a log file, a cluster job): one plain line on stderr every
  `PROBEKIT_PROGRESS_INTERVAL` seconds (default 30) or every 5 % of the work, whichever comes first (5 %
  lines at most every interval/10 s, so a task of a few seconds stays quiet), and one at the end, each
  with done/total, the measured rate and the ETA it implies;
* nothing at all under `set_quiet(True)` (the CLI's --quiet) or with `enabled=False` (--no-progress).

The rate is measured over this run's own work (a resumed run does not count the steps it skipped).

Tables (`print_table`): piped or written to a file, a rich table is printed at its full natural width
(rich would squeeze it to 80 columns and cut cells to "d…"); on a terminal too narrow for it, its cells
wrap between words, and when even that does not fit, it is printed as several tables of whole columns
(the first `keep` columns repeated in each), so an identifier is never cut.
"""

from __future__ import annotations

import io
import logging
import math
import os
import sys
import time
from typing import Any

# imported with the module, not when the first bar starts: a run's timing then starts with its work
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["Bar", "StderrHandler", "current_log_level", "interval", "log_level_of", "natural_width", "print_table",
           "quiet", "route_logs", "set_quiet"]

ENV_INTERVAL = "PROBEKIT_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0
PERCENT_STEP = 5  # a heartbeat line at least every 5 % of the work

_state: dict[str, Any] = {"quiet": False}


def set_quiet(value: bool = True) -> None:
    """Silence every progress display of this process (the CLI's --quiet)."""
    _state["quiet"] = bool(value)


def quiet() -> bool:
    return bool(_state["quiet"])


def interval() -> float:
    """Seconds between heartbeat lines off a terminal: $PROBEKIT_PROGRESS_INTERVAL, default 30."""
    raw = os.environ.get(ENV_INTERVAL, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:
        from probekit.errors import ConfigError

        raise ConfigError(f"${ENV_INTERVAL}={raw!r} is not a number of seconds >= 0", hint="e.g. 30, or unset it")
    return value


def _clock(seconds: float) -> str:
    """1:02:03 / 2:03 (h:mm:ss or m:ss)."""
    s = int(round(max(0.0, seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _rate(r: float) -> str:
    return f"{r:,.0f}" if r >= 100 else f"{r:.2f}" if r < 10 else f"{r:.1f}"


def _per_second(r: float | None, unit: str) -> str:
    """'12.3 steps/s', or '41.0 s/trial' for slow units (a rate of 0.02 trials/s reads badly)."""
    if not r:
        return f"- {unit}/s"
    if r < 0.5:
        return f"{1 / r:.1f} s/{unit.removesuffix('es') if unit.endswith('ches') else unit.removesuffix('s')}"
    return f"{_rate(r)} {unit}/s"


def _stderr_is_terminal() -> bool:
    return Console(stderr=True).is_terminal


class Bar:
    """Progress of one long loop: a live bar on a terminal, heartbeat lines in a log, nothing when quiet.

    Use as a context manager (or call `close()`); `update(completed=..., advance=..., info=...)` as often
    as convenient (each call is a clock read off a terminal).

    Args:
        description: what runs, e.g. "cgp" or "extract fsdd/train".
        total: units of work (None: unknown, then no percentage or ETA).
        completed: units already done before this run (a resumed run); not counted in the rate.
        unit: the name of a unit ("steps", "clips", "trials").
        enabled: False prints nothing (--no-progress).
        transient: on a terminal, remove the bar when done.
    """

    def __init__(self, description: str, total: int | None, *, completed: int = 0, unit: str = "steps",
                 enabled: bool = True, transient: bool = False):
        self.description, self.total, self.unit = description, total, unit
        self.completed = self.start = int(completed)
        self.info = ""
        self.t0 = time.perf_counter()
        self.mode = "off" if (not enabled or quiet()) else ("live" if _stderr_is_terminal() else "lines")
        self._closed = False
        if self.mode == "live":
            self._start_live(transient)
        elif self.mode == "lines":
            self.every = interval()
            self.floor = min(self.every / 10, 3.0)  # 5 % lines at most this often: a quick task stays quiet
            self._last_t, self._last_bucket = self.t0, self._bucket()
            self._lines = 0

    # ---- a terminal: rich
    def _start_live(self, transient: bool) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(self.unit),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(stderr=True),
            transient=transient,
        )
        self._task = self._progress.add_task(self.description, total=self.total, completed=self.completed,
                                             info="", rate="")
        self._progress.start()

    # ---- anywhere else: plain lines
    def _bucket(self) -> int:
        if not self.total:
            return 0
        return int(100 * self.completed / self.total) // PERCENT_STEP

    def rate(self) -> float | None:
        """Units per second over this run's own work (None before any)."""
        elapsed = time.perf_counter() - self.t0
        done = self.completed - self.start
        return done / elapsed if done > 0 and elapsed > 0 else None

    def status(self) -> str:
        """'300/1500 steps (20%), 2.41 steps/s, elapsed 2:04, ETA 8:18' (measured, nothing guessed)."""
        elapsed = time.perf_counter() - self.t0
        parts = [f"{self.completed}/{self.total}" if self.total else f"{self.completed}"]
        parts[0] += f" {self.unit}"
        if self.total:
            parts[0] += f" ({100 * self.completed / self.total:.0f}%)"
        r = self.rate()
        parts.append(_per_second(r, self.unit))
        parts.append(f"elapsed {_clock(elapsed)}")
        if self.total:
            left = max(0, self.total - self.completed)
            parts.append(f"ETA {_clock(left / r)}" if r else ("ETA 0:00" if not left else "ETA -"))
        return ", ".join(parts)

    def _line(self, what: str | None = None) -> None:
        text = f"[probekit] {self.description}" + (f" {what}" if what else "") + f": {self.status()}"
        if self.info:
            text += f" | {self.info}"
        print(text, file=sys.stderr, flush=True)
        self._last_t, self._last_bucket = time.perf_counter(), self._bucket()
        self._lines += 1

    def update(self, completed: int | None = None, *, advance: int = 0, info: str | None = None,
               total: int | None = None) -> None:
        if self.mode == "off" or self._closed:
            return
        if total is not None:
            self.total = total
        self.completed = (self.completed if completed is None else int(completed)) + int(advance)
        if info is not None:
            self.info = info
        if self.mode == "live":
            r = self.rate()
            self._progress.update(self._task, completed=self.completed, total=self.total, info=self.info,
                                  rate=_per_second(r, self.unit) if r else "")
            return
        now = time.perf_counter()
        unfinished = not self.total or self.completed < self.total  # the end gets its own "done" line
        since = now - self._last_t
        if unfinished and (since >= self.every or (self._bucket() > self._last_bucket and since >= self.floor)):
            self._line()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.mode == "live":
            self._progress.stop()
        elif self.mode == "lines" and (self._lines or time.perf_counter() - self.t0 >= self.floor):
            finished = bool(self.total) and self.completed >= self.total
            self._line("done" if finished else "stopped")

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- tables
def natural_width(renderable) -> int:
    """The width a rich renderable needs to print without cutting or folding anything."""
    return max(20, Console(file=io.StringIO(), width=100_000).measure(renderable).maximum)


def _plain(console, renderable, width: int) -> None:
    buf = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    buf.print(renderable)
    console.print(buf.export_text(), markup=False, highlight=False, soft_wrap=True, end="")


def _sub_table(table, cols: list[int], title: str | None, caption: bool):
    """A copy of `table` with only the columns at `cols` (same cells, styles and settings)."""
    import copy

    from rich.table import Table

    out = Table(title=title, caption=table.caption if caption else None, show_header=table.show_header,
                header_style=table.header_style, box=table.box, show_lines=table.show_lines,
                title_style=table.title_style, caption_style=table.caption_style)
    for i in cols:
        out.columns.append(copy.copy(table.columns[i]))
        out.columns[-1]._index = len(out.columns) - 1
    out.rows = list(table.rows)
    return out


def _fit(table, width: int) -> bool:
    """Fix the column widths of `table` so that it fits `width` without breaking a word or cutting an
    identifier (columns with no_wrap keep their full width); False when that is impossible."""
    wide = Console(file=io.StringIO(), width=100_000)
    ranges = [table._measure_column(wide, wide.options, c) for c in table.columns]
    lows = [r.maximum if c.no_wrap else r.minimum for r, c in zip(ranges, table.columns)]
    highs = [r.maximum for r in ranges]
    room = width - table._extra_width - sum(lows)
    if room < 0:
        return False
    slack = [h - lo for h, lo in zip(highs, lows)]
    total = sum(slack) or 1
    for i, col in enumerate(table.columns):  # the room left is shared in proportion to what each would use
        w = min(highs[i], lows[i] + slack[i] * room // total)
        col.width = max(1, w - table._get_padding_width(i))
    return True


def print_table(table, console=None, *, keep: int = 1) -> None:
    """Print a rich Table so that no cell is ever cut to "x…" (see the module docstring).

    Args:
        table: a rich Table.
        console: where (default: a stdout Console).
        keep: the leading identifier columns, kept on one line and repeated in each part when the table
            must be split.
    """
    console = console or Console()
    full = natural_width(table)
    if not console.is_terminal:
        _plain(console, table, full)
        return
    if full <= console.width:
        console.print(table)
        return
    for i, col in enumerate(table.columns):  # identifiers on one line; other cells wrap between words
        col.no_wrap = i < keep
    if _fit(table, console.width) or len(table.columns) <= keep + 1:
        console.print(table)
        return
    keys = list(range(min(keep, len(table.columns))))
    parts: list[list[int]] = [[]]
    for i in range(len(keys), len(table.columns)):
        trial = parts[-1] + [i]
        if parts[-1] and not _fit(_sub_table(table, keys + trial, None, False), console.width):
            parts.append([i])
        else:
            parts[-1] = trial
    title = table.title if isinstance(table.title, str) else "table"
    for n, cols in enumerate(parts, 1):
        part = _sub_table(table, keys + cols, f"{title} ({n}/{len(parts)}; a file or pipe gets one table)",
                          n == len(parts))
        for col in part.columns:
            col.width = None
        _fit(part, console.width)
        console.print(part)


# ---------------------------------------------------------------------------------------------- log lines
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
ENV_LOG_LEVEL = "PROBEKIT_LOG_LEVEL"


def log_level_of(level: str | int | None = None) -> int:
    """A logging level from a name (argument, else $PROBEKIT_LOG_LEVEL, else warning); ConfigError naming it."""
    if isinstance(level, int):
        return level
    text = (level or os.environ.get(ENV_LOG_LEVEL) or "warning").strip().lower()
    if text not in LOG_LEVELS:
        from probekit.errors import ConfigError

        raise ConfigError(f"log level {text!r} is unknown", hint=f"use one of: {', '.join(LOG_LEVELS)}")
    return getattr(logging, text.upper())


class StderrHandler(logging.Handler):
    """One line per record on the current sys.stderr (looked up at each record: tests swap it):
    `optuna: message`, `probekit: message`, or `warning: message` for a Python warning."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.name == "py.warnings":  # 'file.py:12: UserWarning: text\n  source line' -> the text
                first = record.getMessage().splitlines()[0] if record.getMessage() else ""
                text = "warning: " + first.split(": ", 2)[-1] if first.count(": ") >= 2 else f"warning: {first}"
            else:
                text = f"{record.name.split('.')[0]}: {record.getMessage()}"
            print(text, file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never break a run
            self.handleError(record)


def route_logs(level: str | int | None = None) -> int:
    """For the CLI: probekit's log records and Python warnings (torch, zarr, ...) as one stderr line each,
    shown from `level` up (default $PROBEKIT_LOG_LEVEL, else warning). Optuna joins when tuning
    (`probekit.tune.logs.route_optuna_logging`). Returns the level."""
    lvl = log_level_of(level)
    _state["log_level"] = lvl
    logging.captureWarnings(True)
    for name in ("probekit", "py.warnings"):
        logger = logging.getLogger(name)
        handler = next((h for h in logger.handlers if isinstance(h, StderrHandler)), None)
        if handler is None:
            handler = StderrHandler()
            logger.addHandler(handler)
        handler.setLevel(lvl)
        logger.setLevel(lvl)
    return lvl


def current_log_level() -> int | None:
    """The level `route_logs` set in this process (None when it was not called)."""
    return _state.get("log_level")

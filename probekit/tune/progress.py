"""Live and after-the-fact views of a study: a rich table of trials and the best so far."""

from __future__ import annotations

import math
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from probekit._console import Bar, print_table, quiet
from probekit.tune.runner import count_trials, failure_reasons, trial_error, trial_steps
from probekit.tune.storage import INTERRUPTED_ATTR, redact, requeued_numbers

_STATE_STYLE = {
    "COMPLETE": "green",
    "PRUNED": "yellow",
    "FAIL": "red",
    "RUNNING": "cyan",
    "WAITING": "magenta",
    "REQUEUED": "dim",
}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
            return f"{v:.2e}"
        return f"{v:.4g}"
    return str(v)


def _state(t: FrozenTrial, gone: set[int]) -> str:
    if t.state == TrialState.FAIL and t.number in gone:
        return "REQUEUED"
    return t.state.name


def trials_table(
    trials: list[FrozenTrial], *, title: str | None = None, max_rows: int | None = None, live: dict[int, tuple[int, float]] | None = None,
    errors: bool = False,
) -> Table:
    """Trials as a rich table: number, state, value, steps, sampler, params (newest last).

    live: trial number -> (step, value) of the latest validation of trials still running here.
    errors: add a column with why each failed trial failed.
    """
    gone = requeued_numbers(trials)
    names = sorted({k for t in trials for k in t.params})
    table = Table(title=title, show_lines=False, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("state")
    table.add_column("value", justify="right")
    table.add_column("steps", justify="right")
    table.add_column("sampler")
    for n in names:
        table.add_column(n, justify="right")
    errors = errors and any(trial_error(t) for t in trials if t.state == TrialState.FAIL)
    if errors:
        table.add_column("error", overflow="ellipsis", no_wrap=True, max_width=48)  # in full below the table
    shown = trials if max_rows is None else trials[-max_rows:]
    for t in shown:
        state = _state(t, gone)
        value = t.value if t.value is not None else None
        steps = trial_steps(t)
        if live and t.number in live and t.state == TrialState.RUNNING:
            steps, value = live[t.number]
        note = ""
        if state == "REQUEUED":
            note = " (interrupted)" if t.system_attrs.get(INTERRUPTED_ATTR) else " (worker died)"
        elif t.number != t.system_attrs.get("failed_trial", t.number):
            note = f" (retry of #{t.system_attrs['failed_trial']})"
        table.add_row(
            str(t.number),
            Text(state.lower() + note, style=_STATE_STYLE.get(state, "")),
            "" if value is None else _fmt(value),
            str(steps),
            str(t.system_attrs.get("probekit:sampler", "")),
            *[_fmt(t.params[n]) if n in t.params else "" for n in names],
            *([(trial_error(t) or "") if state == "FAIL" else ""] if errors else []),
        )
    return table


def best_line(study: optuna.Study, trials: list[FrozenTrial]) -> Text:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]
    if not done:
        return Text("best: none yet", style="dim")
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    b = pick(done, key=lambda t: t.value)
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(b.params.items()))
    return Text.assemble(("best: ", "bold"), (f"{_fmt(b.value)}", "bold green"), f"  (trial #{b.number}; {params})")


class LiveStudy:
    """A live view while this worker runs trials: progress bar (rate, ETA), recent trials, best so far.

    Pass `on_event` to run_trials and `on_eval` from inside the objective.
    """

    def __init__(self, study: optuna.Study, n_trials: int, *, enabled: bool = True, console: Console | None = None, max_rows: int = 15):
        self.study, self.n_trials, self.enabled, self.max_rows = study, n_trials, enabled, max_rows
        self.console = console or Console(stderr=True)
        self._live_values: dict[int, tuple[int, float]] = {}
        self._trials: list[FrozenTrial] = []
        self._last_refresh = 0.0
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("trials"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        self._task = self._progress.add_task(f"study {study.study_name}", total=n_trials)
        self._live: Live | None = None
        self._bar = None  # off a terminal: heartbeat lines (probekit._console.Bar) instead of the live panel

    def _render(self):
        counts = count_trials(self._trials)
        summary = Text(
            f"complete {counts.complete}  pruned {counts.pruned}  failed {counts.failed}  "
            f"running {counts.running}  waiting {counts.waiting}  requeued {counts.requeued}  "
            f"steps {sum(trial_steps(t) for t in self._trials)}"
        )
        table = trials_table(self._trials, max_rows=self.max_rows, live=self._live_values)
        return Panel(Group(self._progress, summary, best_line(self.study, self._trials), table), title="probekit tune")

    def _line_info(self) -> str:
        c = count_trials(self._trials)
        running = "; ".join(f"trial #{n} step {s} val {_fmt(v)}" for n, (s, v) in sorted(self._live_values.items()))
        return (f"complete {c.complete} pruned {c.pruned} failed {c.failed} | {best_line(self.study, self._trials).plain}"
                + (f" | {running}" if running else ""))

    def refresh(self, *, reload: bool = True) -> None:
        if reload:
            self._trials = self.study.get_trials(deepcopy=False)
            self._progress.update(self._task, completed=min(count_trials(self._trials).results, self.n_trials))
        if self._live is not None:
            self._live.update(self._render())
        if self._bar is not None:
            self._bar.update(min(count_trials(self._trials).results, self.n_trials), info=self._line_info())

    def __enter__(self) -> LiveStudy:
        self._trials = self.study.get_trials(deepcopy=False)
        # The bar's rate and ETA measure this run: trials already done before it start the bar.
        self._progress.reset(self._task, total=self.n_trials, completed=min(count_trials(self._trials).results, self.n_trials))
        if self.enabled and not quiet():
            if self.console.is_terminal:
                self._live = Live(self._render(), console=self.console, refresh_per_second=2, transient=False)
                self._live.__enter__()
            else:
                done = min(count_trials(self._trials).results, self.n_trials)
                self._bar = Bar(f"tune {self.study.study_name}", self.n_trials, completed=done, unit="trials")
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self.refresh()
            self._live.__exit__(*exc)
            self._live = None
        if self._bar is not None:
            self.refresh()
            self._bar.close()
            self._bar = None

    def on_event(self, kind: str, trial: FrozenTrial | None) -> None:
        if kind == "end" and trial is not None:
            self._live_values.pop(trial.number, None)
        if kind == "wait" and time.monotonic() - self._last_refresh < 5:
            return
        self._last_refresh = time.monotonic()
        self.refresh()

    def on_eval(self, number: int, step: int, value: float) -> None:
        self._live_values[number] = (step, value)
        self.refresh(reload=False)


def summarize_study(storage: str, study_name: str) -> dict[str, Any]:
    """What `probekit tune --show` prints: counts, steps, best trial and params, stored metadata.

    Args:
        storage: an Optuna RDB URL.
        study_name: the study's name in that storage.

    Raises:
        ConfigError: no such study there (the message lists the studies it holds).
    """
    from probekit.errors import ConfigError, suggest
    from probekit.tune.storage import open_storage

    st = open_storage(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(st, include_best_trial=False)]
    if study_name not in names:
        raise ConfigError(f"no study {study_name!r} in {redact(storage, storage)}", hint=suggest(study_name, names) if names else "the storage holds no studies")
    study = optuna.load_study(study_name=study_name, storage=st)
    trials = study.get_trials(deepcopy=False)
    counts = count_trials(trials)
    out: dict[str, Any] = {
        "study_name": study_name,
        "storage": redact(storage, storage),
        "direction": study.direction.name.lower(),
        "counts": counts.as_dict(),
        "total_steps": sum(trial_steps(t) for t in trials),
        "attrs": dict(study.user_attrs),
        "trials": trials,
        "best_trial": None,
        "best_value": None,
        "best_params": None,
    }
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if done:
        b = study.best_trial
        out.update(best_trial=b.number, best_value=b.value, best_params=dict(b.params))
    return out


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """Render `summarize_study`'s result: trials table, best params, and the seed retrain if recorded."""
    trials = summary["trials"]
    print_table(trials_table(trials, title=f"study {summary['study_name']} ({summary['storage']})", errors=True),
                console, keep=2)
    c = summary["counts"]
    console.print(
        f"trials: {c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed"
        f" ({c['requeued']} re-queued after a crash, {c['running']} running, {c['waiting']} waiting); "
        f"training steps: {summary['total_steps']}"
    )
    for why, n in failure_reasons(trials):
        console.print(f"failed: {n}x {why}", highlight=False, markup=False, soft_wrap=True)
    if summary["best_params"] is None:
        console.print("[dim]no complete trial yet[/]")
        return
    best = Table(title=f"best trial #{summary['best_trial']}: value {_fmt(summary['best_value'])}", header_style="bold")
    best.add_column("parameter")
    best.add_column("value", justify="right")
    for k, v in sorted(summary["best_params"].items()):
        best.add_row(k, _fmt(v))
    print_table(best, console)
    final = summary["attrs"].get("probekit:final")
    if final:
        seeds = Table(title=f"retrained best with {len(final['seeds'])} seeds: {final['metric']} on test", header_style="bold")
        seeds.add_column("seed", justify="right")
        seeds.add_column(final["metric"], justify="right")
        for s in final["seeds"]:
            seeds.add_row(str(s["seed"]), _fmt(s["score"]))
        seeds.add_row("mean ± std", f"{_fmt(final['mean'])} ± {_fmt(final['std'])}")
        if final.get("ci95") and len(final["seeds"]) >= 2:
            lo, hi = final["ci95"]
            seeds.add_row("95% CI", f"[{_fmt(lo)}, {_fmt(hi)}]")
        else:  # one seed has no spread: say so instead of printing an empty interval
            seeds.add_row("95% CI", "- (needs >= 2 seeds: --seeds 2 or more)")
        print_table(seeds, console)

"""The worker loop: run trials of one study until it holds `n_trials` results, with any number of workers.

A result is a COMPLETE, PRUNED or genuinely FAILED trial. Trials that died with their worker (or were
interrupted by Ctrl-C) are re-queued with the same parameters and do not count, so a study resumed after
a crash reaches exactly `n_trials` results: none lost, none duplicated.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from probekit.probes.space import Param
from probekit.tune.space import suggest_params
from probekit.tune.storage import (
    INTERRUPTED_ATTR,
    WORKER_ATTR,
    Heartbeat,
    quiet_optuna,
    reap_dead_workers,
    requeue,
    requeued_numbers,
    study_lock,
    worker_identity,
)

STEPS_ATTR = "steps"  # user attr: training steps a trial used (the efficiency benchmark sums it)
ERROR_ATTR = "error"  # user attr of a failed trial: why it failed (shown by `tune --show` and the final error)
_LEGACY_ERROR_ATTR = "probekit:error"  # system attr where probekit 0.1.0 kept it

Objective = Callable[[optuna.Trial, dict[str, Any]], float]


@dataclass
class TrialCounts:
    """Results of a study so far. `requeued`: dead trials whose parameters ran (or will run) again."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    requeued: int = 0

    @property
    def results(self) -> int:
        return self.complete + self.pruned + self.failed

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("complete", "pruned", "failed", "running", "waiting", "requeued")}


def count_trials(trials: list[FrozenTrial]) -> TrialCounts:
    gone = requeued_numbers(trials)
    c = TrialCounts()
    for t in trials:
        if t.state == TrialState.COMPLETE:
            c.complete += 1
        elif t.state == TrialState.PRUNED:
            c.pruned += 1
        elif t.state == TrialState.RUNNING:
            c.running += 1
        elif t.state == TrialState.WAITING:
            c.waiting += 1
        elif t.state == TrialState.FAIL:
            if t.number in gone:
                c.requeued += 1
            else:
                c.failed += 1
    return c


def trial_error(trial: FrozenTrial) -> str | None:
    """Why a trial failed (the exception's type and message), when it was recorded."""
    return trial.user_attrs.get(ERROR_ATTR) or trial.system_attrs.get(_LEGACY_ERROR_ATTR)


def failure_reasons(trials: list[FrozenTrial], limit: int = 3) -> list[tuple[str, int]]:
    """The first distinct reasons trials failed, with how many failed so (numbers aside)."""
    counts: Counter[str] = Counter()
    example: dict[str, str] = {}
    for t in trials:
        why = trial_error(t) if t.state == TrialState.FAIL else None
        if why:
            shape = re.sub(r"[-+]?\d[\d.e+-]*", "#", why)
            counts[shape] += 1
            example.setdefault(shape, why)
    return [(example[s], n) for s, n in list(counts.items())[:limit]]


def _record_error(study: optuna.Study, trial: optuna.Trial, why: str) -> None:
    study._storage.set_trial_user_attr(trial._trial_id, ERROR_ATTR, why[:1000])


def trial_steps(trial: FrozenTrial) -> int:
    """Training steps a trial used: its user attr, else its last reported step."""
    if STEPS_ATTR in trial.user_attrs:
        return int(trial.user_attrs[STEPS_ATTR])
    return max(trial.intermediate_values, default=0)


def run_trials(
    study: optuna.Study,
    space: Mapping[str, Param],
    objective: Objective,
    *,
    n_trials: int,
    timeout: float | None = None,
    poll_interval: float = 2.0,
    on_event: Callable[[str, FrozenTrial | None], None] | None = None,
    catch: tuple[type[Exception], ...] = (),
    max_failures_in_a_row: int = 3,
) -> TrialCounts:
    """Run trials until the study holds `n_trials` results (counting other workers' too).

    Args:
        study: the study (its storage must be an RDBStorage: the default SQLite file or a URL).
        space: parameters every trial suggests (sampled under the study lock, so workers never collide).
        objective: `objective(trial, params) -> value`; raise optuna.TrialPruned to prune. It should set
            the user attr "steps"; otherwise the last reported step counts.
        n_trials: the study's total number of results wanted (not this worker's share).
        timeout: stop starting new trials after this many seconds.
        poll_interval: seconds between checks while only other workers' trials are left running.
        on_event: called with ("start" | "end" | "wait", trial) for progress displays.
        catch: exceptions that fail one trial (recorded on it) without stopping the study, e.g. a
            diverging learning rate; other exceptions fail the trial and propagate.
        max_failures_in_a_row: re-raise a caught exception when this many trials in a row failed here
            (a broken setup, not an unlucky configuration).

    Returns:
        the study's counts when this worker stopped.
    """
    storage = study._storage
    me = worker_identity()
    deadline = None if timeout is None else time.monotonic() + timeout
    failures = 0
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            break
        trial = None
        with study_lock(storage, study.study_name):
            reap_dead_workers(study)
            trials = study.get_trials(deepcopy=False)
            counts = count_trials(trials)
            # WAITING trials already hold a budget slot (re-queued or enqueued): popping one costs nothing.
            if counts.waiting > 0 or counts.results + counts.running < n_trials:
                with quiet_optuna():
                    trial = study.ask()
                storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, me)
                storage.record_heartbeat(trial._trial_id)
                params = suggest_params(trial, space)
        if trial is None:
            if counts.running == 0:
                break
            # Other workers hold the last trials; wait so a dead one's trial is re-run here, not lost.
            if on_event:
                on_event("wait", None)
            time.sleep(poll_interval)
            continue
        if on_event:
            on_event("start", storage.get_trial(trial._trial_id))
        try:
            _run_one(study, trial, params, objective)
            failures = 0
        except catch:
            failures += 1
            if failures >= max_failures_in_a_row:
                raise
        if on_event:
            on_event("end", storage.get_trial(trial._trial_id))
    return count_trials(study.get_trials(deepcopy=False))


def _run_one(study: optuna.Study, trial: optuna.Trial, params: dict[str, Any], objective: Objective) -> None:
    storage = study._storage
    with Heartbeat(storage, trial._trial_id):
        try:
            value = objective(trial, params)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            return
        except KeyboardInterrupt:
            # Ctrl-C: this trial is no result; queue its parameters so a resumed study re-runs them.
            with study_lock(storage, study.study_name):  # FAIL + requeue seen by other workers as one step
                storage.set_trial_system_attr(trial._trial_id, INTERRUPTED_ATTR, True)
                study.tell(trial, state=TrialState.FAIL)
                requeue(study, storage.get_trial(trial._trial_id))
            raise
        except Exception as e:
            _record_error(study, trial, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
            study.tell(trial, state=TrialState.FAIL)
            raise
    if value is None or not math.isfinite(float(value)):
        # A diverged run (NaN loss) is a result: a failed trial, recorded with its reason.
        _record_error(study, trial, f"objective returned {value} (diverged: lower the learning rate?)")
        study.tell(trial, state=TrialState.FAIL)
        return
    study.tell(trial, float(value))

"""Crash safety and concurrency of tuning: SIGKILL / Ctrl-C then resume, two workers on one study.

Each runs real worker processes (tests/tune/_worker.py: softmax regression on real FSDD tokens) against
a SQLite file and against a PostgreSQL server the test suite starts itself.
"""

from __future__ import annotations

import json
import signal
import time
import uuid

import optuna
import pytest
from tests.tune.conftest import start_worker, wait_for  # by package path: another folder's conftest may hold the name
from optuna.trial import TrialState

from probekit.tune.runner import count_trials
from probekit.tune.storage import DIED_ATTR, INTERRUPTED_ATTR, WORKER_ATTR, open_storage, requeued_numbers


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return request.getfixturevalue("postgres_url")


def _starts(log) -> list[tuple[int, int, str]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("start "):
            _, number, pid, params = line.split(" ", 3)
            out.append((int(number), int(pid), params))
    return out


def _check_study(url: str, name: str, n_trials: int) -> optuna.Study:
    """Exactly n_trials results; every configuration evaluated to a result once; dead trials re-run."""
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    trials = study.get_trials(deepcopy=False)
    counts = count_trials(trials)
    assert counts.results == n_trials, counts
    assert counts.running == 0 and counts.waiting == 0, counts
    gone = requeued_numbers(trials)
    results = [t for t in trials if t.state.is_finished() and t.number not in gone]
    keys = [json.dumps(t.params, sort_keys=True) for t in results]
    assert len(set(keys)) == len(keys), "a configuration was evaluated twice"
    for t in trials:
        if t.number in gone:  # lost nothing: the dead trial's configuration has exactly one result
            assert keys.count(json.dumps(t.params, sort_keys=True)) == 1
    # the sampler sequence continued: 4 Sobol configurations, the rest TPE (retries are not drawn again)
    drawn = [t for t in trials if "failed_trial" not in t.system_attrs]
    assert [t.system_attrs["probekit:sampler"] for t in drawn] == ["qmc"] * 4 + ["tpe"] * (len(drawn) - 4)
    return study


def _interrupt_mid_trial(url, name, n, tokens, log, sig) -> tuple[int, str]:
    """Start a worker, let it begin a new trial, send `sig` mid-trial; the trial's (number, params)."""
    before = len(_starts(log))
    proc = start_worker(url, name, n, tokens, log, step_sleep=0.02)
    assert wait_for(lambda: len(_starts(log)) >= before + 2 or proc.poll() is not None, timeout=120), "no progress"
    assert proc.poll() is None, proc.stdout.read().decode()
    time.sleep(0.3)  # mid-trial: 40 steps x 20 ms
    proc.send_signal(sig)
    proc.wait(timeout=60)
    number, _, params = _starts(log)[-1]
    return number, params


def test_killed_worker_resumes_without_lost_or_duplicated_trials(storage_url, worker_tokens, tmp_path):
    name, log, n = f"kill-{uuid.uuid4().hex[:8]}", tmp_path / "log.txt", 5
    storage = open_storage(storage_url)

    # Ctrl-C: the trial is marked interrupted and its parameters queued again at once
    stopped, stopped_params = _interrupt_mid_trial(storage_url, name, n, worker_tokens, log, signal.SIGINT)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert trials[stopped].state == TrialState.FAIL and trials[stopped].system_attrs.get(INTERRUPTED_ATTR)
    assert [t.params for t in trials if t.state == TrialState.WAITING] == [trials[stopped].params]

    # SIGKILL: nobody can tell the storage; the trial is left RUNNING until a worker notices
    killed, killed_params = _interrupt_mid_trial(storage_url, name, n, worker_tokens, log, signal.SIGKILL)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert trials[killed].state == TrialState.RUNNING
    assert trials[stopped].params in [t.params for t in trials if t.state == TrialState.COMPLETE]  # re-run

    last = start_worker(storage_url, name, n, worker_tokens, log)
    out = last.communicate(timeout=180)[0].decode()
    assert last.returncode == 0, out

    study = _check_study(storage_url, name, n)
    assert {stopped, killed} <= requeued_numbers(study.trials)
    # the dead worker was on this host: noticed at once by its pid, not after the heartbeat grace period
    assert study.trials[killed].system_attrs[DIED_ATTR].startswith("process ")
    runs = [p for _, _, p in _starts(log)]
    assert runs.count(stopped_params) == 2 and runs.count(killed_params) == 2  # cut once, re-run once
    assert len(runs) == n + 2


def test_two_workers_share_one_study(storage_url, worker_tokens, tmp_path):
    name, n, barrier = f"pair-{uuid.uuid4().hex[:8]}", 6, tmp_path / "go"
    logs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    procs = [start_worker(storage_url, name, n, worker_tokens, log, step_sleep=0.02, barrier=barrier) for log in logs]
    ready = lambda: all(log.exists() and "ready" in log.read_text() for log in logs)
    assert wait_for(lambda: ready() or any(p.poll() is not None for p in procs), timeout=120)
    barrier.touch()
    for p in procs:
        out = p.communicate(timeout=240)[0].decode()
        assert p.returncode == 0, out
    study = _check_study(storage_url, name, n)
    pids = {p.pid for p in procs}
    ran = {t.system_attrs[WORKER_ATTR]["pid"] for t in study.trials}
    assert ran == pids, "both workers must run trials"
    per_log = [len(_starts(log)) for log in logs]
    assert all(k >= 1 for k in per_log) and sum(per_log) == n

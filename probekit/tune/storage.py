"""Where studies live and how workers share them safely.

One SQLite file per study by default (`results/studies/<name>.db`, opened by `optuna-dashboard
sqlite:///results/studies/<name>.db`), or any Optuna RDB URL (PostgreSQL, MySQL) for many machines.

Crash safety: every trial carries its worker's identity (host, pid, process start time) and a heartbeat.
A trial left RUNNING by a worker that died (SIGKILL, power loss) is marked FAIL and its parameters are
queued again as a WAITING trial — immediately when the dead worker was on this host, after the heartbeat
grace period otherwise. Workers take a per-study lock (a lock file for SQLite, an advisory lock for
PostgreSQL/MySQL) while they count the budget and start a trial, so N workers run exactly n_trials.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from probekit.errors import ConfigError

WORKER_ATTR = "probekit:worker"
INTERRUPTED_ATTR = "probekit:interrupted"
DIED_ATTR = "probekit:died"  # why a RUNNING trial was declared dead by this module (process gone)
RETRY_REASON_ATTR = "probekit:retry_reason"  # on a re-queued trial: which trial it re-runs and why
HEARTBEAT_INTERVAL = 10  # seconds between heartbeats of a running trial
GRACE_PERIOD = 60  # a trial silent this long on another host counts as dead

__all__ = [
    "Heartbeat",
    "default_storage_url",
    "redact",
    "resolve_driver",
    "studies_dir",
    "open_storage",
    "reap_dead_workers",
    "requeue",
    "study_lock",
    "worker_identity",
]


def studies_dir(results_dir: str | os.PathLike | None = None) -> Path:
    """The folder of default study files: RESULTS_DIR/studies, else $PROBEKIT_RESULTS/studies, else
    ./results/studies (studies live beside the records they produce)."""
    root = results_dir if results_dir is not None else os.environ.get("PROBEKIT_RESULTS", "results")
    return Path(root).expanduser() / "studies"


def default_storage_url(study_name: str, results_dir: str | os.PathLike | None = None) -> str:
    """`sqlite:///<studies_dir>/<study_name>.db` (the folder is created).

    Raises:
        ConfigError: the name is no file name, or the folder cannot be created.
    """
    if not study_name or any(c in study_name for c in "/\\\0") or study_name.startswith("."):
        raise ConfigError(f"study name {study_name!r} cannot be a file name", hint="use letters, digits, '-', '_' or '.'")
    folder = studies_dir(results_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"cannot create the study folder {folder}: {e.strerror or e}",
            hint="pick a writable --results-dir (or $PROBEKIT_RESULTS), or pass --storage URL",
        ) from None
    return f"sqlite:///{(folder / f'{study_name}.db').resolve()}"


_PASSWORD_IN_QUERY = re.compile(r"((?:password|passwd|pwd)=)[^&;\s]*", re.IGNORECASE)
_USERINFO = re.compile(r"(\w[\w+.-]*://[^/@:\s]*:)[^@/\s]*@")


def redact(text: str, url: str | None = None) -> str:
    """`text` (a storage URL, or a message about one) with every password replaced by '***'.

    Every URL or storage error that probekit prints or stores goes through here: records are shared,
    and terminals are logged.
    """
    if not text:
        return text
    out = _USERINFO.sub(r"\1***@", str(text))
    out = _PASSWORD_IN_QUERY.sub(r"\1***", out)
    if url:
        try:
            from sqlalchemy.engine import make_url

            password = make_url(url).password
        except Exception:  # noqa: BLE001 - an unparsable URL has no password sqlalchemy could find
            password = None
        if password and len(str(password)) >= 3:  # also inside driver messages that quote it
            out = out.replace(str(password), "***")
    return out


def resolve_driver(url: str) -> str:
    """`postgresql://` with the driver this install has.

    SQLAlchemy 2 maps a bare `postgresql://` to psycopg (v3); probekit's test extra installs psycopg2.
    When only psycopg2 is importable the URL is read as `postgresql+psycopg2://`.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("postgresql", "postgres"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return url


def _sqlite_path(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return None
    return u.database or ":memory:"


def storage_problem(e: BaseException, url: str) -> str:
    """Which part of opening a storage failed, in words: driver, auth, network, missing database, schema."""
    first = redact(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, url)
    low = str(e).lower()
    if isinstance(e, ImportError) or "no module named" in low or "can't load plugin" in low:
        return f"database driver missing ({first})"
    if "password authentication failed" in low or "access denied" in low or "authentication failed" in low \
            or "no password supplied" in low or "role" in low and "does not exist" in low:
        return f"authentication failed ({first})"
    if "database" in low and ("does not exist" in low or "unknown database" in low):
        return f"database missing ({first})"
    if any(k in low for k in ("connection refused", "could not connect", "could not translate host", "timeout expired",
                              "timed out", "name or service not known", "no route to host", "network is unreachable",
                              "can't connect")):
        return f"server unreachable ({first})"
    if any(k in low for k in ("alembic", "no such table", "no such column", "undefinedtable", "undefined column",
                              "schema", "version_info", "relation")):
        return f"schema not usable by this Optuna ({first})"
    return f"cannot open ({type(e).__name__}: {first})"


_HINTS = {
    "database driver missing": "pip install psycopg2-binary for PostgreSQL (postgresql:// uses it when psycopg 3 is absent)",
    "authentication failed": "check the user and password in the URL",
    "database missing": "create the database first (createdb NAME)",
    "server unreachable": "check host, port and that the server runs",
    "schema not usable by this Optuna": "use a new database, or the Optuna version that made it",
}


def open_storage(url: str, *, heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD) -> RDBStorage:
    """An RDBStorage with heartbeats, whose stale trials are re-queued, not lost.

    Raises:
        ConfigError: the URL cannot be opened; says which of driver, authentication, network, missing
            database or schema failed (password redacted).
    """
    engine_kwargs: dict = {}
    if "://" not in url:
        raise ConfigError(f"storage {redact(url)!r} is not a database URL", hint="use sqlite:///path/study.db or postgresql://user@host/db")
    shown = redact(url, url)
    url = resolve_driver(url)
    try:
        path = _sqlite_path(url)
    except Exception as e:  # noqa: BLE001 - sqlalchemy ArgumentError: not a URL it can read
        raise ConfigError(f"storage {shown}: not a database URL ({redact(str(e), url)})",
                          hint="use sqlite:///path/study.db or postgresql://user@host/db") from None
    if path is not None:
        if path != ":memory:":
            parent = Path(path).parent
            if not parent.is_dir():
                raise ConfigError(f"storage {shown}: folder {parent} does not exist", hint="create it or pick another path")
        # Several local workers write one file: wait for SQLite's write lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    def create() -> RDBStorage:
        with warnings.catch_warnings():  # heartbeats: "experimental" since 2.9, what Optuna's own retry uses
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=requeue,
            )

    try:
        # Workers starting together on a new database would all create its tables ("UNIQUE constraint
        # failed: alembic_version"): SQLite serialises them with the study file's lock, servers retry once
        # the winner has made the schema.
        for attempt in range(5):
            try:
                if path is not None and path != ":memory:":
                    from filelock import FileLock

                    with FileLock(path + ".lock", timeout=-1):
                        storage = create()
                else:
                    storage = create()
                break
            except ImportError:
                raise
            except Exception as e:  # noqa: BLE001 - a concurrent schema creation; the last attempt reports it
                # no point retrying what another worker cannot fix (driver, password, host, database)
                if attempt == 4 or not storage_problem(e, url).startswith(("cannot open", "schema")):
                    raise
                import time

                time.sleep(0.5 * (attempt + 1))
    except Exception as e:  # noqa: BLE001 - ImportError, sqlalchemy OperationalError, ...
        problem = storage_problem(e, url)
        raise ConfigError(f"storage {shown}: {problem}", hint=_HINTS.get(problem.split(" (")[0])) from None
    if path is not None and path != ":memory:":
        _sqlite_wal(storage)
    return storage


def _sqlite_wal(storage: RDBStorage) -> None:
    """Write-ahead logging with synchronous=NORMAL: a commit no longer waits for an fsync (3-4x faster
    trial bookkeeping) and stays atomic when a process is killed; readers never block the writer."""
    from sqlalchemy import event

    def pragmas(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections opened while creating the tables predate the listener


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's notes that heartbeats are "experimental" and "meant for Study.optimize": probekit
    runs its own ask/tell loop with its own heartbeat thread, which is what those notes warn about."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used", category=UserWarning)
        yield


_local_locks: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def study_lock(storage: RDBStorage, study_name: str) -> Iterator[None]:
    """Serialise budget counting and trial creation of all workers of one study (processes and hosts)."""
    storage = getattr(storage, "_backend", storage)  # a study's storage is Optuna's cache around the RDBStorage
    url = str(storage.url)
    path = _sqlite_path(url)
    if path is not None:
        if path == ":memory:":
            lock = _local_locks.setdefault(url + study_name, threading.Lock())
            with lock:
                yield
            return
        from filelock import FileLock

        # One lock file per database (SQLite serialises writers per file anyway).
        with FileLock(path + ".lock", timeout=-1):
            yield
        return
    backend = storage.engine.dialect.name
    key = zlib.crc32(f"probekit-study:{study_name}".encode())
    from sqlalchemy import text

    with storage.engine.connect() as conn:
        if backend == "postgresql":
            # Session-level advisory lock: released by unlock or when this connection dies with its worker.
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        elif backend in ("mysql", "mariadb"):
            conn.execute(text("SELECT GET_LOCK(:k, -1)"), {"k": f"probekit-{key}"})
            try:
                yield
            finally:
                conn.execute(text("SELECT RELEASE_LOCK(:k)"), {"k": f"probekit-{key}"})
        else:
            raise ConfigError(f"storage {redact(url, url)}: no cross-worker lock for {backend!r}", hint="use SQLite, PostgreSQL or MySQL")


def _process_start(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (tells a recycled pid from the original)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def worker_identity() -> dict:
    """Who runs a trial: host, pid and process start, stored on the trial."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def _alive_here(worker: dict) -> bool | None:
    """True/False for a worker of this host; None when it ran elsewhere (only heartbeats can tell)."""
    if worker.get("host") != socket.gethostname():
        return None
    pid = int(worker.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = worker.get("start")
    return start is None or _process_start(pid) in (None, start)


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue the parameters of a dead trial again (a WAITING trial; same attributes as Optuna's retry)."""
    if trial.system_attrs.get(INTERRUPTED_ATTR):
        why = "interrupted (Ctrl-C)"
    else:  # without a reason of ours, Optuna's stale-trial check called: that worker stopped beating
        why = trial.system_attrs.get(DIED_ATTR, "no heartbeat within the grace period")
    history = list(trial.system_attrs.get("retry_history", [])) + [trial.number]
    system_attrs = {
        "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
        "retry_history": history,
        RETRY_REASON_ATTR: f"trial {trial.number}: {why}",
    }
    for k in ("probekit:sampler", "fixed_params"):
        if k in trial.system_attrs:
            system_attrs[k] = trial.system_attrs[k]
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions, system_attrs=system_attrs
        )
    )


def requeued_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of trials that died and were queued again (they are not results and use no budget)."""
    out: set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", []))
    return out


def reap_dead_workers(study: optuna.Study) -> list[int]:
    """Fail and re-queue RUNNING trials whose worker is dead. Call while holding `study_lock`.

    Dead means: a worker of this host whose process is gone, or (under the lock, where every probekit
    worker tags its trial before releasing it) a trial with no worker tag at all, or a heartbeat older than
    the grace period (Optuna's own check, for other hosts).

    Returns:
        numbers of the trials re-queued.
    """
    storage = study._storage
    reaped: list[int] = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        raw = t.system_attrs.get(WORKER_ATTR)
        if isinstance(raw, str):
            raw = json.loads(raw)
        alive = False if raw is None else _alive_here(raw)
        if alive is False:
            why = "no worker tag" if raw is None else f"process {raw.get('pid')} on {raw.get('host')} is gone"
            try:
                storage.set_trial_system_attr(t._trial_id, DIED_ATTR, why)
                if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                    requeue(study, storage.get_trial(t._trial_id))
                    reaped.append(t.number)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # its worker finished it after all
    with quiet_optuna():
        optuna.storages.fail_stale_trials(study)  # other hosts: heartbeat too old -> FAIL + requeue callback
    return reaped


class Heartbeat:
    """Records a running trial's heartbeat every `interval` seconds in a daemon thread."""

    def __init__(self, storage: RDBStorage, trial_id: int, interval: float = HEARTBEAT_INTERVAL):
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception:  # noqa: BLE001, S110 - a missed beat is retried; the trial must not die of it
                pass

    def __enter__(self) -> Heartbeat:
        self._storage.record_heartbeat(self._trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

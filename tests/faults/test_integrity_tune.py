"""Hostile inputs to `probekit tune` (red-team #65-#79, newcomer problem 1). Each test fails on 0.1.0.

Everything runs the real CLI on real FSDD clips with the tiny backbones (no mocks); the PostgreSQL cases
start their own password-protected server.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from probekit.cli import main

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT = REPO / "probekit" / "data" / "bat-tiny-fsdd.safetensors"
PASSWORD = "sekritpw"


@pytest.fixture(scope="module")
def work(tmp_path_factory, fsdd_root) -> Path:
    """A 3-digit FSDD manifest in a subfolder (base/m.csv, as in the red-team runs) and a shared cache."""
    root = tmp_path_factory.mktemp("tune_faults")
    sub = root / "base"
    sub.mkdir()
    rows = ["path,labels,split"]
    for digit in (0, 1, 2):
        for take, split in ((0, "test"), (1, "test"), (5, "train"), (6, "train"), (7, "train"), (8, "train")):
            name = f"{digit}_jackson_{take}.wav"
            shutil.copy(fsdd_root / "recordings" / name, sub / name)
            rows.append(f"{name},d{digit},{split}")
    (sub / "m.csv").write_text("\n".join(rows) + "\n")
    return root


def tune_args(work: Path, *extra: str, backbone: str = "bat-tiny") -> list[str]:
    return ["tune", "linear", "--backbone", backbone, "--dataset", "manifest:base/m.csv",
            "--cache-dir", str(work / "cache"), "--trials", "2", "--startup", "2", "--pruner", "none",
            "--seeds", "1", "--only", "lr", "--set", "steps=4", "--set", "batch_size=4", "--val-fraction", "0.34",
            "--no-progress", *extra]


@pytest.fixture
def in_work(work, tmp_path, monkeypatch) -> Path:
    """cwd = the work folder (the manifest is `base/m.csv`), results of this test in tmp_path."""
    monkeypatch.chdir(work)
    monkeypatch.setenv("PROBEKIT_RESULTS", str(tmp_path / "results"))
    return work


def _dbs(*folders: Path) -> list[Path]:
    return sorted(p for f in folders for p in Path(f).rglob("*.db"))


# ---- 1. a study is keyed by what its trials measured (issue 14 item 9, newcomer problem 1) --------------
def test_other_weights_never_resume_a_study(in_work, tmp_path, capfd):
    res = tmp_path / "r"
    base = tune_args(in_work, "--results-dir", str(res), backbone="bat-tiny-fsdd")
    random_init = [*base, "--weights", "random"]  # the name alone means the shipped weights (issue 15)
    assert main([*random_init, "--study", "k"]) == 0
    capfd.readouterr()
    # the same explicit study with the trained checkpoint: refused, naming both weights
    assert main([*base, "--study", "k", "--checkpoint", str(CHECKPOINT)]) == 2
    err = capfd.readouterr().err
    assert "study 'k' was made with weights random-init seed 0, this run uses sha256" in err
    assert "--fresh" in err and err.strip().count("\n") == 0
    # default names: one study per weights, never the random-init one resumed
    assert main(random_init) == 0
    assert main([*base, "--checkpoint", str(CHECKPOINT)]) == 0
    names = [p.stem for p in _dbs(res / "studies")]
    assert len(names) == 3 and "k" in names, names
    # --fresh starts the named study again with the new weights
    assert main([*base, "--study", "k", "--checkpoint", str(CHECKPOINT), "--fresh"]) == 0


# ---- 3. named errors instead of crashes; nothing left behind -----------------------------------------
@pytest.mark.parametrize(("extra", "says"), [
    (["--startup", "-1"], "--startup -1"),  # 71
    (["--reduction-factor", "0"], "--reduction-factor 0"),  # 72
    (["--seeds", "-1"], "--seeds -1"),  # 73
    (["--timeout", "-5"], "--timeout -5"),  # 74
    (["--space", "lr=abc"], "'abc' is not a number"),  # 77
])
def test_bad_options_are_named_and_leave_no_study(in_work, tmp_path, capfd, extra, says):
    args = tune_args(in_work, "--study", "s1")
    if extra[0] in args:  # replace the default of that option
        i = args.index(extra[0])
        args[i + 1] = extra[1]
    else:
        args += extra
    assert main(args) == 2
    err = capfd.readouterr().err
    assert says in err and "internal error" not in err and err.strip().count("\n") == 0, err
    assert _dbs(tmp_path, in_work) == []  # 79: a rejected run leaves no study file


def test_default_study_name_of_a_manifest_in_a_subfolder_and_its_place(in_work, tmp_path, capfd):
    # 78: no --study -> a safe derived name; 79: the study goes under --results-dir, no ./results appears
    res = tmp_path / "rT"
    assert main(tune_args(in_work, "--results-dir", str(res))) == 0
    out = capfd.readouterr().out
    dbs = _dbs(res)
    assert len(dbs) == 1 and dbs[0].parent == res / "studies"
    assert dbs[0].stem.startswith("linear-bat-tiny-manifest-base-m.csv-") and ":" not in dbs[0].stem
    assert not (in_work / "results").exists() and not (tmp_path / "results").exists()
    assert "record:" in out
    assert main(["tune", "--show", dbs[0].stem, "--results-dir", str(res)]) == 0


def test_unwritable_results_folder_is_named(in_work, tmp_path, monkeypatch, capfd):
    # 69: the study folder cannot be made ($PROBEKIT_RESULTS under a file: refused for root too)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    monkeypatch.setenv("PROBEKIT_RESULTS", str(blocker / "results"))
    assert main(tune_args(in_work)) == 2
    err = capfd.readouterr().err
    assert "cannot create the study folder" in err and str(blocker) in err and "internal error" not in err


def test_why_every_trial_failed_is_said_and_shown(in_work, tmp_path, capfd):
    # 76: a range that makes every trial fail: the error and --show give the reason
    res = tmp_path / "r"
    args = tune_args(in_work, "--results-dir", str(res), "--study", "sp5", "--space", "dropout=5:10")
    args[args.index("--only") + 1] = "lr,dropout"
    args[args.index("--trials") + 1] = "3"
    assert main(args) == 2
    err = capfd.readouterr().err
    assert "dropout probability has to be between 0 and 1" in err and "3x" in err, err
    assert "--pruner none" not in err  # the 0.1.0 hint blamed the pruner
    assert main(["tune", "--show", "sp5", "--results-dir", str(res)]) == 0
    shown = capfd.readouterr().out
    assert "dropout probability has to be between 0 and 1" in shown


# ---- 4. optuna's own log lines stay out of the output ---------------------------------------------------
def test_optuna_log_lines_do_not_leak(in_work, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env["PROBEKIT_RESULTS"] = str(tmp_path / "results")
    env.pop("PROBEKIT_LOG_LEVEL", None)
    run = subprocess.run([sys.executable, "-m", "probekit", *tune_args(in_work)], cwd=in_work, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "A new study created" not in run.stderr + run.stdout and "[I " not in run.stderr
    # the user can ask for them
    env["PROBEKIT_LOG_LEVEL"] = "info"
    run = subprocess.run([sys.executable, "-m", "probekit", *tune_args(in_work, "--study", "loud")], cwd=in_work,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "optuna: A new study created" in run.stderr


# ---- 2. credentials and PostgreSQL ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_with_password():
    """A throwaway PostgreSQL server with password (scram) authentication: (host:port, user)."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins and shutil.which("initdb") is None:
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install -y postgresql)")
    bindir = Path(bins[-1]).parent if bins else Path(shutil.which("initdb")).parent
    pytest.importorskip("psycopg2")
    run_as: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="probekit-pgpw-"))
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    os.chmod(pwfile, 0o644)
    data, port = root / "data", _free_port()
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "pk", "--auth=scram-sha-256",
                    f"--pwfile={pwfile}", "-E", "UTF8"], check=True, capture_output=True)
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "-t", "60",
                    "start"], check=True, capture_output=True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_postgresql_url_works_and_the_password_is_never_shown(in_work, tmp_path, capfd, pg_with_password):
    # 65: the documented postgresql:// form with psycopg2 installed; 67: the password nowhere
    res = tmp_path / "rPG"
    url = f"postgresql://pk:{PASSWORD}@{pg_with_password}/postgres"
    assert main(tune_args(in_work, "--results-dir", str(res), "--study", "pg1", "--storage", url)) == 0
    assert main(["tune", "--show", "pg1", "--storage", url]) == 0
    out = capfd.readouterr()
    assert "pg1" in out.out and PASSWORD not in out.out + out.err
    records = list(res.rglob("*.json"))
    assert records and all(PASSWORD not in p.read_text() for p in records)
    assert "pk:***@" in records[0].read_text()


@pytest.mark.parametrize(("url", "says"), [
    (f"postgresql://pk:wrong{PASSWORD}@HOSTPORT/postgres", "authentication failed"),  # 66
    (f"postgresql://pk:{PASSWORD}@127.0.0.1:1/postgres", "server unreachable"),  # 66
    (f"postgresql://pk:{PASSWORD}@HOSTPORT/nodb", "database missing"),  # 65
    (f"postgresql+psycopg://pk:{PASSWORD}@HOSTPORT/postgres", "database driver missing"),  # 65
])
def test_storage_errors_say_what_failed_without_the_password(in_work, capfd, pg_with_password, url, says):
    assert main(["tune", "--show", "pg1", "--storage", url.replace("HOSTPORT", pg_with_password)]) == 2
    err = capfd.readouterr().err
    assert says in err and PASSWORD not in err and "***" in err, err


def test_a_schema_from_another_optuna_is_named(tmp_path, capfd):
    import sqlite3

    db = tmp_path / "future.db"
    with sqlite3.connect(db) as c:  # an Optuna schema version this Optuna does not know
        c.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        c.execute("INSERT INTO alembic_version VALUES ('v99.0.0.z')")
        c.execute("CREATE TABLE version_info (version_info_id INTEGER PRIMARY KEY, schema_version INTEGER, library_version VARCHAR(256))")
        c.execute("INSERT INTO version_info VALUES (1, 99, '99.0.0')")
    assert main(["tune", "--show", "x", "--storage", f"sqlite:///{db}"]) == 2
    err = capfd.readouterr().err
    assert "schema not usable by this Optuna" in err and "use a new database" in err, err


# ---- #14 item 8: a selection that sees test clips is said, never silent --------------------------------
def test_tuning_under_cross_validation_says_its_score_saw_test_folds(fsdd_train):
    from probekit.tune.plan import plan_tuning

    with pytest.warns(UserWarning, match="saw its test clips"):
        plan = plan_tuning("linear", fsdd_train, protocol="esc50")
    assert "also CV test clips" in plan.validation  # it travels into the record's tuning summary
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain held-out validation warns about nothing
        assert "CV" not in plan_tuning("linear", fsdd_train, protocol="default").validation

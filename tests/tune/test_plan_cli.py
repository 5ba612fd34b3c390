"""probekit tune prints its plan before the study starts; --dry-run prints it and creates nothing."""

from __future__ import annotations

import optuna

import probekit.cli.tune as cli_tune
from probekit.cli import main


def _fsdd_splits(monkeypatch, train, test):
    # the token source (cache extraction) is another area's; here the splits are real FSDD tokens
    monkeypatch.setattr(cli_tune, "token_splits", lambda backbone, dataset, protocol, **kw: (train, None, test, "fsdd"))


def test_dry_run_prints_the_plan_and_creates_no_study(fsdd_train, fsdd_test, tmp_path, monkeypatch, capsys):
    _fsdd_splits(monkeypatch, fsdd_train, fsdd_test)
    results = tmp_path / "results"
    args = ["tune", "protobin", "--backbone", "bat-tiny", "--dataset", "fsdd", "--results-dir", str(results),
            "--trials", "7", "--startup", "3", "--seeds", "2", "--set", "steps=64", "--set", "eval_every=4",
            "--no-progress", "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "plan: tune protobin" in out
    assert "clips: train 270, validation (held out of train) 30, test 120" in out  # 10% held out of 300
    assert "trials: 7 (3 quasi-random, then TPE)" in out
    assert "at most 64 per trial" in out and "rungs at step(s) 4, 16" in out
    assert "seed retrains of the best: 2" in out
    assert "estimated training time: at most" in out and "an upper bound" in out and "ms/step" in out
    assert "warning: protobin: K=16,384 prototypes for 270 training clips" in out and "--space prototypes=int:16:67:log" in out
    assert not list(results.rglob("*.db")) and not list(results.rglob("*.json"))
    assert not (results / "studies").exists()


def test_quiet_dry_run_prints_nothing(fsdd_train, fsdd_test, tmp_path, monkeypatch, capsys):
    _fsdd_splits(monkeypatch, fsdd_train, fsdd_test)
    args = ["tune", "linear", "--backbone", "bat-tiny", "--dataset", "fsdd", "--results-dir", str(tmp_path / "r"),
            "--set", "steps=8", "--pruner", "none", "--dry-run", "--quiet"]
    assert main(args) == 0
    assert capsys.readouterr().out == ""
    assert not (tmp_path / "r").exists()


def test_dry_run_plans_a_missing_cache_without_extracting(fsdd_root, tmp_path, capsys):
    # end to end: a 2-digit FSDD manifest and a tiny random-init backbone, no token cache yet
    rows = ["path,labels,split"]
    for digit in (0, 1):
        for take, split in ((0, "test"), (5, "train"), (6, "train"), (7, "train")):
            name = f"{digit}_jackson_{take}.wav"
            (tmp_path / name).write_bytes((fsdd_root / "recordings" / name).read_bytes())
            rows.append(f"{name},d{digit},{split}")
    manifest = tmp_path / "digits.csv"
    manifest.write_text("\n".join(rows) + "\n")
    cache, results = tmp_path / "cache", tmp_path / "records"
    args = ["tune", "linear", "--backbone", "bat-tiny", "--dataset", f"manifest:{manifest}", "--cache-dir", str(cache),
            "--results-dir", str(results), "--trials", "2", "--seeds", "1", "--no-progress", "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "clips: train 6, test 2" in out
    assert "train: no token cache yet; extraction planned: 6 clips, projected" in out
    assert "test: no token cache yet; extraction planned: 2 clips" in out
    assert "trials: 2" in out and "estimated once the tokens exist" in out
    assert not [p for p in cache.rglob("*") if p.is_file()] and not results.exists()


def test_tune_prints_the_plan_before_the_first_trial(fsdd_train, fsdd_test, fsdd_root, tmp_path, monkeypatch, capsys):
    _fsdd_splits(monkeypatch, fsdd_train, fsdd_test)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trained = []
    real_run_search = __import__("probekit.tune", fromlist=["run_search"]).run_search

    def run_search(plan, **kw):
        trained.append(capsys.readouterr().out)  # what was printed before the first trial
        return real_run_search(plan, **kw)

    monkeypatch.setattr("probekit.tune.run_search", run_search)
    args = ["tune", "linear", "--backbone", "bat-tiny", "--dataset", "fsdd", "--data-root", str(fsdd_root.parent),
            "--results-dir", str(tmp_path / "r"), "--trials", "2", "--startup", "2", "--pruner", "none", "--seeds", "1", "--only", "lr",
            "--set", "steps=20", "--set", "eval_every=10", "--no-progress"]
    assert main(args) == 0
    before = trained[0]
    assert "plan: tune linear" in before and "trials: 2" in before and "no pruning" in before
    assert "estimated training time: ~" in before and "2 trial(s) x 20 steps" in before
    assert "warning" not in before  # linear has no prototypes
    assert "best trial" in capsys.readouterr().out

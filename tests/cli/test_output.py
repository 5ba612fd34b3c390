"""Output that is not a terminal (a pipe, a cluster log): full-width tables, heartbeat lines with rate and
ETA, --quiet and --json. Real commands on real FSDD clips; nothing mocked."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probekit.cli import main

ROOT = Path(__file__).resolve().parents[2]
# '[probekit] linear: 40/200 steps (20%), 812 steps/s, elapsed 0:00, ETA 0:00 | loss ...'
HEARTBEAT = re.compile(r"^\[probekit\] (?P<what>.+?): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) \(\d+%\), "
                       r"(?P<rate>[\d.,]+ \w+/s|[\d.]+ s/\w+), elapsed \d+:\d\d, ETA \d+:\d\d")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, fsdd_root):
    """A manifest of 40 real FSDD clips (30 train, 10 test) and folders for its cache and records."""
    d = tmp_path_factory.mktemp("output")
    rows = ["path,labels,split"]
    for digit in range(10):
        for take in range(4):
            name = f"{digit}_jackson_{take}.wav"
            shutil.copyfile(fsdd_root / "recordings" / name, d / name)
            rows.append(f"{name},d{digit},{'test' if take == 0 else 'train'}")
    (d / "m.csv").write_text("\n".join(rows) + "\n")
    return d


def _probe_args(tiny: Path, *more: str) -> list[str]:
    return ["probe", "linear", "--backbone", "bat-tiny", "--dataset", f"manifest:{tiny / 'm.csv'}", "--yes",
            "--cache-dir", str(tiny / "cache"), "--results-dir", str(tiny / "results"), "--device", "cpu",
            "--batch-size", "8", "--set", "steps=200", "--set", "batch_size=8", *more]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TERM")}
    env.update(PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), **extra)
    return env


def test_a_piped_run_prints_heartbeats_with_rate_and_eta(tiny):
    """Through a pipe (no TTY anywhere), extraction and training each print lines with done/total, a measured
    rate and an ETA while they run, and the result table is printed whole."""
    r = subprocess.run([sys.executable, "-m", "probekit", *_probe_args(tiny)], capture_output=True, text=True,
                       env=_env(PROBEKIT_PROGRESS_INTERVAL="0.05"), cwd=tiny, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    beats = [m for m in map(HEARTBEAT.match, r.stderr.splitlines()) if m]
    train = [m for m in beats if m["what"].startswith("linear") and m["unit"] == "steps"]
    extract = [m for m in beats if m["what"].startswith("extract") and m["unit"] == "clips"]
    assert len(train) >= 5, r.stderr  # at least every 5 % of 200 steps, and every 0.05 s
    assert {int(m["total"]) for m in train} == {200} and int(train[-1]["done"]) == 200
    done = [int(m["done"]) for m in train]
    assert done == sorted(done) and len(set(done)) >= 5  # lines while it ran, not all at the end
    assert extract and {int(m["total"]) for m in extract} <= {30, 10}
    assert all(not m["rate"].startswith("-") for m in train[1:])  # measured once steps are done
    assert "\x1b[" not in r.stderr and "\x1b[" not in r.stdout  # no terminal codes in a log
    assert "…" not in r.stdout
    for word in ("backbone", "protocol", "accuracy", "bat-tiny"):
        assert re.search(rf"\b{word}\b", r.stdout), r.stdout  # whole words, not 'backbon'/'e'
    assert "record:" in r.stdout


def test_quiet_prints_only_the_result(tiny, capsys):
    assert main(_probe_args(tiny, "--quiet")) == 0
    out, err = capsys.readouterr()
    assert "[probekit]" not in err and "record:" not in out and "figure" not in out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert any("linear" in ln and "accuracy" in ln for ln in lines), out
    assert len(lines) <= 8  # the result table (title, header, one row, borders) and nothing else


def test_json_prints_the_record_and_nothing_else(tiny, capsys):
    assert main(_probe_args(tiny, "--json")) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["probe"] == "linear" and doc["metric"] == "accuracy" and len(doc["seeds"]) == 1
    assert "[probekit]" not in err
    recs = list((tiny / "results").rglob("*.json"))
    assert any(json.loads(p.read_text())["seeds"] == doc["seeds"] for p in recs)  # the record as written


def test_cache_ls_piped_keeps_every_store_id_whole(tiny, capsys):
    assert main(["cache", "ls", "--cache-dir", str(tiny / "cache")]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    stores = sorted((tiny / "cache").glob("*.zarr"))
    assert stores
    for p in stores:
        assert p.stem.rsplit("__", 1)[-1][:12] in out  # the id `cache rm` takes, whole
    assert main(["cache", "ls", "--cache-dir", str(tiny / "cache"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {Path(r["path"]).name for r in rows} == {p.name for p in stores}


def test_wide_listings_are_not_cut_in_a_pipe(capsys):
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and "training data" in out and "Ghaffari et al., ICML 2026" in out
    assert main(["probes"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and "prototypes=10000" in out and "Protobin" in out
    assert main(["probes", "--json"]) == 0
    probes = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert probes["cgp"]["display_name"] == "CGP" and probes["cgp"]["hyperparameters"]["prototypes"] == 10000


def test_narrow_terminal_wraps_between_words_or_splits_columns():
    """On an 80-column terminal a wide table is never cut: words stay whole, identifiers stay on one line."""
    import io

    from rich.console import Console
    from rich.table import Table

    from probekit._console import print_table

    t = Table(title="result")
    for c in ("backbone", "dataset", "probe", "protocol", "metric", "score", "seeds", "train s"):
        t.add_column(c)
    t.add_row("bat-tiny-fsdd (random init, seed 0)", "fsdd/test", "protobin", "default", "accuracy",
              "89.83 ± 0.24", "89.59 90.07", "321.1")
    term = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    print_table(t, term)
    text = term.file.getvalue()
    assert "…" not in text and max(len(ln) for ln in text.splitlines()) <= 80
    assert "bat-tiny-fsdd (random init, seed 0)" in text  # the identifier column on one line
    for word in ("backbone", "protocol", "accuracy", "protobin"):
        assert re.search(rf"\b{word}\b", text), text


def test_heartbeat_interval_and_percent_steps(monkeypatch, capsys):
    """PROBEKIT_PROGRESS_INTERVAL sets the seconds between lines; every 5 % also gets one (no more)."""
    from probekit._console import Bar

    monkeypatch.setenv("PROBEKIT_PROGRESS_INTERVAL", "0.05")
    with Bar("wait", None, unit="items") as bar:  # no total: lines by time only
        for _ in range(12):
            time.sleep(0.02)
            bar.update(advance=1)
    lines = capsys.readouterr().err.splitlines()
    assert 3 <= len(lines) <= 9 and all("items/s" in ln for ln in lines[1:]), lines
    monkeypatch.setenv("PROBEKIT_PROGRESS_INTERVAL", "5")  # 5 % lines at most every 0.5 s
    with Bar("count", 1000) as bar:
        for i in range(1000):
            bar.update(i + 1)
    assert capsys.readouterr().err == ""  # done in well under 0.5 s: nothing to report in a log
    monkeypatch.setenv("PROBEKIT_PROGRESS_INTERVAL", "0.5")  # 5 % lines at most every 0.05 s
    with Bar("count", 100) as bar:
        for i in range(100):
            time.sleep(0.012)
            bar.update(i + 1)
    lines = capsys.readouterr().err.splitlines()
    assert 12 <= len(lines) <= 24, lines  # ~19 steps of 5 % (+ a few by time), and the end
    assert lines[-1].startswith("[probekit] count done: 100/100 steps (100%)")


def test_help_is_consistent(capsys):
    assert main(["--help"]) == 0
    assert "<bool>" not in capsys.readouterr().out
    assert main(["pretrain", "--help"]) == 0
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert re.search(r"--output -o", text) and "--run-dir,--out" in text and "Seed of the" in text
    for cmd in ("extract", "probe", "tune", "pretrain", "demo"):
        assert main([cmd, "--help"]) == 0
        text = capsys.readouterr().out
        assert "--no-progress" in text and "--quiet" in text, cmd
    assert main(["check-backbone", "--help"]) == 0
    assert "[default: auto]" in capsys.readouterr().out


def _tune_args(tiny: Path, *more: str) -> list[str]:
    return ["tune", "linear", "--backbone", "bat-tiny", "--dataset", f"manifest:{tiny / 'm.csv'}",
            "--cache-dir", str(tiny / "cache"), "--results-dir", str(tiny / "results"), "--trials", "2",
            "--startup", "2", "--pruner", "none", "--seeds", "1", "--only", "lr", "--set", "steps=30",
            "--set", "batch_size=8", *more]


def test_tune_in_a_log_prints_trial_heartbeats_and_says_why_no_ci(tiny, capsys, monkeypatch):
    monkeypatch.setenv("PROBEKIT_PROGRESS_INTERVAL", "0")  # a line at every update
    assert main(_tune_args(tiny, "--study", "log-test")) == 0
    out, err = capsys.readouterr()
    beats = [m for m in map(HEARTBEAT.match, err.splitlines()) if m and m["unit"] == "trials"]
    assert beats and beats[-1]["done"] == "2" and beats[-1]["total"] == "2", err
    assert "best:" in err  # each line carries the best trial so far
    assert "…" not in out and "needs >= 2 seeds" in out  # one seed: no interval, and it says why


def test_tune_json_to_stdout_is_the_result_only(tiny, capsys):
    assert main(_tune_args(tiny, "--study", "json-test", "--json", "-")) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["study_name"] == "json-test" and set(doc["best_params"]) == {"lr"} and len(doc["seeds"]) == 1
    assert "[probekit]" not in err


def test_a_bad_interval_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PROBEKIT_PROGRESS_INTERVAL", "soon")
    assert main(["extract", "--backbone", "bat-tiny", "--dataset", "fsdd", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "PROBEKIT_PROGRESS_INTERVAL='soon'" in err and not list(tmp_path.iterdir())

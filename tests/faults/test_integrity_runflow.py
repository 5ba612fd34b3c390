"""Honest runs of `probe` / `evaluate` on real FSDD clips: failed test clips refuse the run unless
--allow-partial-test (redteam #20, #21, #22), class coverage warnings (#19), a bad record elsewhere does
not turn a successful `probe` into exit 2 (#54), settings checked before any work (#83), the plan and
--dry-run, prototype warnings, F1 at a validation-chosen threshold (issue 21)."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from probekit.api import TrainOptions, TuneOptions, evaluate
from probekit.cli import main
from probekit.errors import CacheError, ConfigError, DatasetError

FAST = {"steps": 6, "batch_size": 8}
RUN = dict(device="cpu", progress=False, workers=0)


def _manifest(root: Path, fsdd_root: Path, *, label=lambda digit, take: str(digit), extra_rows=()) -> str:
    """40 real FSDD clips of one speaker: take 0 is the test split, takes 1-3 train."""
    (root / "audio").mkdir(parents=True)
    rows = ["path,labels,split"]
    for digit in range(10):
        for take in range(4):
            name = f"{digit}_jackson_{take}.wav"
            shutil.copy(fsdd_root / "recordings" / name, root / "audio" / name)
            rows.append(f"audio/{name},{label(digit, take)},{'test' if take == 0 else 'train'}")
    rows += list(extra_rows)
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    return f"manifest:{root / 'm.csv'}"


def _kw(tmp_path: Path) -> dict:
    return dict(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results", train_overrides=FAST, **RUN)


def test_partial_test_set_is_refused_then_recorded_when_allowed(tmp_path, fsdd_root):
    """#22: half the test clips are 0-byte files; the score must not silently cover only the rest."""
    ds = _manifest(tmp_path / "d", fsdd_root)
    for digit in range(5):
        (tmp_path / "d" / "audio" / f"{digit}_jackson_0.wav").write_bytes(b"")
    with pytest.raises(CacheError, match=r"m\.csv/test: 5 of 10 clips failed.*allow-partial-test") as e:
        evaluate("bat-tiny", [ds], ["linear"], **_kw(tmp_path))
    assert "0_jackson_0.wav" in str(e.value) and not (tmp_path / "results").exists()
    with pytest.warns(UserWarning, match="partial test set"):
        res = evaluate("bat-tiny", [ds], ["linear"], allow_partial_test=True, **_kw(tmp_path))
    rec = res.records[0]
    assert rec.clips["test"].scored == 5 and rec.clips["test"].failed == 5
    assert rec.clips["train"].scored == 30 and rec.clips["train"].failed == 0
    assert "partial test set" in rec.notes and "5 of 10" in rec.notes


def test_every_test_clip_failed_is_named_before_training(tmp_path, fsdd_root):
    """#21: every test clip broken: the error names the split and the dataset, not 'no clips to predict'."""
    ds = _manifest(tmp_path / "d", fsdd_root)
    for digit in range(10):
        (tmp_path / "d" / "audio" / f"{digit}_jackson_0.wav").write_bytes(b"")
    with pytest.raises(CacheError) as e:
        evaluate("bat-tiny", [ds], ["linear"], allow_partial_test=True, **_kw(tmp_path))
    msg = str(e.value)
    assert "test" in msg and "m.csv" in msg and "no clips to predict" not in msg


def test_absent_test_files_have_one_coherent_flag(tmp_path, fsdd_root, capsys):
    """#20: `probe` must not point at `extract --on-error skip` and then refuse anyway."""
    ds = _manifest(tmp_path / "d", fsdd_root)
    for digit in (1, 2, 3):
        (tmp_path / "d" / "audio" / f"{digit}_jackson_0.wav").unlink()
    base = ["probe", "linear", "-b", "bat-tiny", "-d", ds, "--set", "steps=6", "--set", "batch_size=8",
            "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--device", "cpu", "--yes"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "3 of 10" in err and "--allow-partial-test" in err
    assert main(base + ["--allow-partial-test"]) == 0
    (path,) = (tmp_path / "r").rglob("*.json")
    rec = json.loads(path.read_text())
    assert rec["clips"]["test"] == {"scored": 7, "failed": 3}


def test_class_only_in_test_is_warned_and_noted(tmp_path, fsdd_root):
    """#19: a label with no training clip cannot be learnt: say so, and keep it in the record."""
    ds = _manifest(tmp_path / "d", fsdd_root, label=lambda d, t: "only_in_test" if (d, t) == (9, 0) else str(d))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = evaluate("bat-tiny", [ds], ["linear"], write=False, **_kw(tmp_path))
    said = [str(w.message) for w in caught if "no clip in split 'train'" in str(w.message)]
    assert said and "only_in_test" in said[0]
    assert "no clip in split 'train'" in res.records[0].notes


def test_probe_succeeds_beside_a_bad_record(tmp_path, fsdd_root, capsys):
    """#54: the board printed after a run skips (and names) an unreadable record; the run exits 0."""
    ds = _manifest(tmp_path / "d", fsdd_root)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "broken.json").write_text("{not json")
    args = ["probe", "linear", "-b", "bat-tiny", "-d", ds, "--set", "steps=6", "--set", "batch_size=8",
            "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--device", "cpu", "--yes"]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "record:" in out.out and "broken.json" in out.err


def test_settings_are_checked_before_any_extraction(tmp_path, fsdd_root):
    """#83 and friends: an unknown dataset, a wrongly typed setting or search space fail first."""
    ds = _manifest(tmp_path / "d", fsdd_root)
    with pytest.raises(DatasetError, match="esc-50-typo"):
        evaluate("bat-tiny", [ds, "esc-50-typo"], ["linear"], **_kw(tmp_path))
    kw = _kw(tmp_path)
    kw["train_overrides"] = {"lr": "abc"}
    with pytest.raises(ConfigError, match="lr"):
        evaluate("bat-tiny", [ds], ["linear"], **kw)
    with pytest.raises(ConfigError, match="lr"):
        evaluate("bat-tiny", [ds], ["linear"], tune=TuneOptions(trials=1, options={"space": {"lr": "abc"}}),
                 **_kw(tmp_path))
    assert not (tmp_path / "cache").exists() and not (tmp_path / "results").exists()


def test_dry_run_plans_without_training(tmp_path, fsdd_root, capsys):
    """issue 21: --dry-run prints the plan (extraction planned with its size when the cache is missing,
    a timed warm-up estimate when it exists) and writes no record."""
    ds = _manifest(tmp_path / "d", fsdd_root)
    args = ["probe", "cgp", "-b", "bat-tiny", "-d", ds, "--set", "steps=6", "--set", "batch_size=8",
            "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--device", "cpu"]
    assert main(args + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "extraction planned: 30 clips" in out and "projected" in out and "dry run" in out
    assert not list((tmp_path / "c").rglob("*.zarr")) and not (tmp_path / "r").exists()
    # with the tokens there: clips, steps, a measured estimate, and the prototype warning (K=10,000 default)
    evaluate("bat-tiny", [ds], ["linear"], write=False, cache_dir=tmp_path / "c", train_overrides=FAST, **RUN)
    assert main(args + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "clips: train 30, test 10" in out and "steps: 6 per fit" in out
    assert re.search(r"estimated training time: ~\d+ s \(an estimate, from a timed warm-up", out)
    assert "K=10,000 prototypes for 30 training clips" in out and "--prototypes" in out
    assert not (tmp_path / "r").exists()


def test_multilabel_f1_uses_a_threshold_chosen_on_validation(tmp_path, fsdd_root):
    """issue 21: F1 at a fixed 0.5 read 0.0 beside mAP 27.9; the threshold now comes from validation data."""
    ds = _manifest(tmp_path / "d", fsdd_root, label=lambda d, t: f"{d};{'odd' if d % 2 else 'even'}")
    res = evaluate("bat-tiny", [ds], ["linear"], write=False, **_kw(tmp_path))
    rec = res.records[0]
    assert rec.metric == "mAP"
    ex = rec.seeds[0].extras
    assert 0.0 < ex["f1_threshold"] < 1.0 and "train" in ex["f1_threshold_chosen_on"]
    assert "test" not in ex["f1_threshold_chosen_on"]
    assert set(ex["f1_at_0.5"]) == {"f1_macro", "f1_micro"}
    assert np.isfinite(rec.seeds[0].metrics["f1_micro"]) and len(rec.seeds[0].per_class["f1"]) == 12


def test_dataframe_shows_the_answer_first(tmp_path, fsdd_root):
    """newcomer 10: print(res.to_dataframe()) must show backbone, dataset, probe and the score."""
    ds = _manifest(tmp_path / "d", fsdd_root)
    res = evaluate("bat-tiny", [ds], ["linear"], write=False, **_kw(tmp_path))
    df = res.to_dataframe()
    assert list(df.columns[:4]) == ["backbone", "dataset", "probe", "score"]
    assert df.score[0] == pytest.approx(res.records[0].score)

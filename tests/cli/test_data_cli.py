"""`probekit datasets` and `probekit doctor` through the real entry point."""

from __future__ import annotations

import pytest

from probekit.cli import console, main


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    # tables wrap cells at the 80 columns of a non-terminal; keep words whole for the assertions
    monkeypatch.setattr(console, "width", 240)


def test_datasets_shows_real_fsdd(shared_data, capsys):
    assert main(["datasets", "--data-root", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "fsdd" in out and "3000" in out and "train 2700, test 300" in out
    assert "esc50" in out and "not found" in out and "meta/esc50.csv" in out


def test_datasets_with_a_manifest(tmp_path, fsdd_root, capsys):
    (tmp_path / "a.wav").write_bytes((fsdd_root / "recordings" / "0_jackson_0.wav").read_bytes())
    (tmp_path / "m.csv").write_text("path,labels,split\na.wav,zero,test\n")
    assert main(["datasets", "-d", f"manifest:{tmp_path / 'm.csv'}", "-d", "nope"]) == 2  # a name that is wrong
    out, err = capsys.readouterr()
    assert "test 1" in out and "unknown dataset 'nope'" in err


def test_doctor_reports_versions_and_data(shared_data, capsys):
    assert main(["doctor", "--data-root", str(shared_data)]) == 0
    out = capsys.readouterr().out
    for word in ("torch", "torchaudio", "zarr", "numcodecs", "optuna", "torch/torchaudio pair", "fsdd"):
        assert word in out


def test_doctor_flags_a_missing_data_root(tmp_path, capsys):
    assert main(["doctor", "--data-root", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().out


def test_usage_errors_exit_2_without_traceback(capsys):
    assert main(["datasets", "--bogus"]) == 2
    assert "Traceback" not in capsys.readouterr().err

"""FT records: written like any probe's, shown in the FT column; the probe-to-FT gap per column."""

from __future__ import annotations

import json
import math

import pytest

from probekit.results.leaderboard import ft_gap, leaderboard, render_gap
from probekit.results.records import SeedRun, make_record


def _rec(backbone, probe, score, dataset="esc50"):
    return make_record(backbone={"name": backbone}, dataset=dataset, split="test", probe=probe, protocol="p",
                       metric="accuracy", seeds=[SeedRun(seed=0, metrics={"accuracy": score})], environment=None)


def test_gap_and_fraction_closed():
    recs = [_rec("m", "finetune", 90.0), _rec("m", "linear", 70.0), _rec("m", "cgp", 85.0),
            _rec("n", "linear", 60.0), _rec("n", "cgp", 61.0)]  # n has no FT: no gap row
    board = leaderboard(recs)
    gap = ft_gap(board)
    row = [r for r in gap.index if r[1] == "m"]
    assert len(row) == 1 and len(gap.index) == 1
    r = row[0]
    assert gap.at[r, ("esc50", "cgp", "gap")] == pytest.approx(5.0)
    assert gap.at[r, ("esc50", "cgp", "closed")] == pytest.approx(0.75)  # (85 - 70) / (90 - 70)
    assert gap.at[r, ("esc50", "linear", "closed")] == pytest.approx(0.0)
    text = render_gap(gap)
    assert "CGP FT-gap" in text and "75%" in text and "5.00" in text


def test_published_bat_claim_on_as20k():
    """'CGP is within 3.8 pp of fine-tuning on AS-20k' (BAT paper), from the shipped published records."""
    board = leaderboard([], dataset="as20k", published=True)
    gap = ft_gap(board)
    r = next(r for r in gap.index if r[1] == "bat")
    assert gap.at[r, ("as20k", "cgp", "gap")] == pytest.approx(3.8, abs=0.01)


def test_cli_leaderboard_gap(tmp_path, capsys):
    from probekit.cli import main
    from probekit.results.store import write_record

    for rec in (_rec("m", "finetune", 90.0), _rec("m", "linear", 70.0), _rec("m", "cgp", 85.0)):
        write_record(rec, tmp_path)
    capsys.readouterr()
    rc = main(["leaderboard", "--results-dir", str(tmp_path), "--source", "measured", "--gap", "-f", "json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    doc = json.loads(out)
    cols = [tuple(c) for c in doc["columns"]]
    i = cols.index(("esc50", "cgp", "closed"))
    assert math.isclose(doc["data"][0][i], 0.75)

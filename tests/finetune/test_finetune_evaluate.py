"""probekit.evaluate(..., probes=["linear", "finetune"]): the FT record beside the LP record, in the FT column."""

from __future__ import annotations

import pytest

import probekit
from probekit.results.leaderboard import _headers, ft_gap, leaderboard
from probekit.results.store import load_records

SETS = dict(optimization_steps=4, lr_warmup_steps=1, train_batch_size=8, checkpoint_every=0, eval_batch_size=32,
            use_color_noise=False, use_time_roll=False)


def test_evaluate_writes_ft_record_beside_lp(fsdd_part_factory, tmp_path):
    data = fsdd_part_factory(24, 12)
    res = probekit.evaluate("bat-tiny", [data], probes=["linear", "finetune"], seeds=2,
                            hparams={"finetune": SETS}, train_overrides={"steps": 20}, device="cpu",
                            progress=False, cache_dir=tmp_path / "cache", results_dir=tmp_path / "res", workers=0)
    assert [r.probe for r in res.records] == ["linear", "finetune"]
    ft = res.records[1]
    assert [s.seed for s in ft.seeds] == [0, 1] and ft.aggregate["accuracy"].n == 2
    assert ft.aggregate["accuracy"].ci_low is not None  # CIs over the seeds, as for every probe
    assert ft.protocol == "finetune:default-multiclass"
    rec = ft.hyperparameters["recipe"]
    assert rec["optimization_steps"] == 4 and rec["lr_layer_decay"] == 0.75 and rec["adam_beta2"] == 0.95
    assert ft.cache_key is None and ft.clips["train"].scored == 24
    # written like any record; the leaderboard shows it in the FT column, with the gap to LP
    recs = load_records(tmp_path / "res")
    assert sorted(r.probe for r in recs) == ["finetune", "linear"]
    board = leaderboard(recs)
    assert ("fsdd", "finetune") in board.columns and "FT" in _headers(board)
    gap = ft_gap(board)
    assert ("fsdd", "linear", "gap") in gap.columns
    lp, ftv = board[("fsdd", "linear")].iloc[0], board[("fsdd", "finetune")].iloc[0]
    assert gap[("fsdd", "linear", "gap")].iloc[0] == pytest.approx(ftv - lp)

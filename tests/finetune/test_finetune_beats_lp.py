"""The issue's acceptance test: a tiny model fine-tuned on FSDD beats the same model's linear probe from the
cache on the FSDD test split, 3 seeds each (means compared, with a margin).

It runs benchmarks/finetune_vs_probe_fsdd.py with its defaults (bat-tiny-fsdd, 200 train / 100 test clips,
the LP by probekit's protocol from the token cache, FT with the default-multiclass recipe and the overrides
the script names). Minutes on a CPU, so it is marked slow; the script prints the same comparison.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_finetuned_tiny_model_beats_its_linear_probe_on_fsdd(fsdd_root):
    spec = importlib.util.spec_from_file_location("ft_vs_lp", REPO / "benchmarks" / "finetune_vs_probe_fsdd.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--data-root", str(fsdd_root), "--device", "cpu", "--seeds", "3"])
    assert len(out["lp"]) == len(out["ft"]) == 3
    assert out["test_clips"] == 100 and out["metric"] == "accuracy"
    # FT's mean over 3 seeds beats LP's by a margin (measured 33.0 vs 22.0: the benchmark's docstring)
    assert out["ft_mean"] > out["lp_mean"] + 3.0, out

"""Leaderboard pivot from a fixture of records, against a table computed by hand; renderers; plots."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from probekit.errors import ConfigError
from probekit.results.leaderboard import in_domain, leaderboard, render, short_source, to_long
from probekit.results.plots import gate_curves, plot_gates, plot_heatmap
from probekit.results.reported import published_records
from probekit.results.records import BackboneRef, SeedRun, make_record

# the fixture holds two records of one key on purpose (checked in the first test); the others need not repeat it
pytestmark = pytest.mark.filterwarnings("ignore:conflicting records")


def rec(bb, ds, probe, values, *, metric="accuracy", source="measured", training=(), date=None, extras=None):
    return make_record(
        backbone=BackboneRef(name=bb, training_data=list(training)),
        dataset=ds, split="test", probe=probe, protocol="default", metric=metric,
        seeds=[SeedRun(seed=i, metrics={metric: v}, extras=extras or {}) for i, v in enumerate(values)],
        source=source, environment=None, date=date,
    )


@pytest.fixture
def fixture_records():
    return [
        rec("alpha", "esc50", "cgp", [80.0, 90.0]),  # mean 85, std 7.0711
        rec("alpha", "esc50", "linear", [70.0]),
        rec("alpha", "as20k", "cgp", [30.0], metric="mAP", training=["AudioSet-2M"]),
        rec("beta", "esc50", "cgp", [88.0]),
        rec("beta", "esc50", "linear", [60.0]),
        rec("beta", "as20k", "cgp", [35.0], metric="mAP"),
        rec("gamma", "esc50", "cgp", [95.0], source="Someone, Other. A paper. ICASSP 2024, Table 2"),
        # an older record of the same key (e.g. a copied folder): the newer one above is shown, with a warning
        rec("beta", "esc50", "linear", [10.0], date="2020-01-01T00:00:00+00:00"),
    ]


def test_leaderboard_equals_hand_computed_table(fixture_records):
    with pytest.warns(UserWarning, match=r"conflicting records for beta/esc50/test/linear/default.*showing"):
        df = leaderboard(fixture_records)
    cols = [("as20k", "cgp"), ("esc50", "cgp"), ("esc50", "linear"), ("mean", ""), ("rank", "")]
    rows = [("measured", "alpha", "measured"), ("measured", "beta", "measured"),
            ("reported", "gamma", "Someone et al. 2024")]
    nan = math.nan
    # hand computed: means in %; rank per column (1 best), averaged over the row's columns
    # as20k/cgp: beta 35 (1), alpha 30 (2); esc50/cgp: gamma 95 (1), beta 88 (2), alpha 85 (3);
    # esc50/linear: alpha 70 (1), beta 60 (2)
    # mean and rank only for rows that fill every column (alpha, beta); gamma fills 1 of 3.
    # Ranks among those rows: as20k/cgp beta 1, alpha 2; esc50/cgp beta 1, alpha 2; esc50/linear alpha 1, beta 2
    expected = pd.DataFrame(
        [[30.0, 85.0, 70.0, (30 + 85 + 70) / 3, (2 + 2 + 1) / 3],
         [35.0, 88.0, 60.0, (35 + 88 + 60) / 3, (1 + 1 + 2) / 3],
         [nan, 95.0, nan, nan, nan]],
        index=pd.MultiIndex.from_tuples(rows, names=["group", "backbone", "source"]),
        columns=pd.MultiIndex.from_tuples(cols, names=["dataset", "probe"]),
    )
    pd.testing.assert_frame_equal(df, expected, check_exact=False, atol=1e-9)
    a = df.attrs
    assert a["std"].loc[rows[0], ("esc50", "cgp")] == pytest.approx(np.std([80.0, 90.0], ddof=1))
    assert a["n"].loc[rows[0], ("esc50", "cgp")] == 2
    best = a["best"]
    assert best.loc[rows[1], ("as20k", "cgp")] and best.loc[rows[2], ("esc50", "cgp")]
    assert best.loc[rows[0], ("esc50", "linear")] and best.loc[rows[1], ("rank", "")]
    assert best.loc[rows[0], ("mean", "")]  # 61.67 against beta's 61.00
    assert int(best.to_numpy().sum()) == 5
    dom = a["in_domain"]
    assert dom.loc[rows[0], ("as20k", "cgp")]  # AS-2M pretraining covers AS-20k
    assert not dom.loc[rows[1], ("as20k", "cgp")] and not dom.loc[rows[0], ("esc50", "cgp")]


def test_filters_and_sources(fixture_records):
    df = leaderboard(fixture_records, dataset="esc50", probe=["cgp"], source="measured")
    assert list(df.columns) == [("esc50", "cgp"), ("mean", ""), ("rank", "")]
    assert [r[1] for r in df.index] == ["alpha", "beta"]
    assert leaderboard(fixture_records, backbone="GAMMA").shape[0] == 1
    empty = leaderboard(fixture_records, dataset="nothing")
    assert empty.empty
    with pytest.raises(ConfigError, match="empty"):
        plot_heatmap(empty, "x.png")


def test_renderers(fixture_records):
    df = leaderboard(fixture_records)
    md = render(df, "markdown")
    assert "| alpha | 30.00† | 85.00 ± 7.07 | **70.00** |" in md
    assert "*reported*" in md and "gamma (Someone et al. 2024)" in md
    tex = render(df, "latex")
    assert r"\textbf{95.00}" in tex and r"85.00 $\pm$ 7.07" in tex and r"30.00$^\dagger$" in tex
    assert r"\multicolumn{2}{c}{ESC-50}" in tex
    html = render(df, "html")
    assert "<b>88.00</b>" not in html and "<b>95.00</b>" in html and "&plusmn;" in html
    table = render(df, "table")
    assert "reproduced (measured)" in table and "85.00 ± 7.07" in table and "ESC-50 CGP" in table
    long = pd.read_csv(__import__("io").StringIO(render(df, "csv")))
    cell = long[(long.backbone == "alpha") & (long.column == "esc50/cgp")].iloc[0]
    assert cell.value == pytest.approx(85.0) and cell["std"] == pytest.approx(7.071068) and cell.n == 2
    js = json.loads(render(df, "json"))
    assert len(js["cells"]) == len(to_long(df)) == 11  # 3 + 3 + 1 cells, plus mean and rank of the 2 full rows
    assert "gamma (Someone et al. 2024) | – | **95.00** | – | 1/3 | – |" in md  # coverage, no mean
    with pytest.raises(ConfigError, match="did you mean 'markdown'"):
        render(df, "markdwon")


def test_published_leaderboard_without_local_runs():
    df = leaderboard(published_records(), dataset=["as2m", "as20k", "esc50", "sc2"],
                     probe=["finetune", "cgp", "linear"], backbone=["eat", "sslam", "bat"])
    bat = ("reported", "bat", "Ghaffari et al. 2026")
    assert df.loc[bat, ("as20k", "cgp")] == pytest.approx(37.52)
    assert df.loc[bat, ("sc2", "linear")] == pytest.approx(72.83)
    assert df.attrs["best"].loc[bat, ("as20k", "cgp")]
    # the original authors' fine-tuning rows sit apart from the BAT paper's reproduction
    assert df.loc[("reported", "sslam", "Alex et al. 2025"), ("as2m", "finetune")] == pytest.approx(50.2)
    assert df.loc[("reported", "sslam", "Ghaffari et al. 2026"), ("as2m", "finetune")] == pytest.approx(47.69)
    # Protobin from Table 1 lands in the same row as Table 5's numbers
    both = leaderboard(published_records(), dataset="as20k", backbone="eat")
    assert both.loc[("reported", "eat", "Ghaffari et al. 2026"), ("as20k", "protobin")] == pytest.approx(31.22)


def test_helpers():
    assert in_domain(["as2m"], "as20k") and in_domain(["AudioSet"], "as2m") and not in_domain(["as20k"], "as2m")
    assert in_domain(["fsdd"], "fsdd") and not in_domain([], "fsdd")
    assert short_source("Chen et al. EAT: ... IJCAI 2024, as cited") == "Chen et al. 2024"


def test_plots_write_files(tmp_path, fixture_records):
    df = leaderboard(fixture_records + published_records(), dataset=["as20k", "esc50"], probe=["cgp", "linear"])
    for suffix in ("png", "svg"):
        p = plot_heatmap(df, tmp_path / f"heat.{suffix}")
        assert p.stat().st_size > 1000
    assert (tmp_path / "heat.svg").read_text().lstrip().startswith("<?xml")
    gates = [0.1, 0.2, 0.3, 0.4]
    records = [
        rec("alpha", "fsdd", "cgp", [90.0], extras={"gates": gates}),
        rec("alpha", "fsdd", "layers", [80.0], extras={"layer_scores": [50.0, 60.0, 80.0, 70.0]}),
    ]
    curves = gate_curves(records, dataset="fsdd")
    assert curves["alpha"]["gates"] == pytest.approx(gates)
    assert curves["alpha"]["layer_scores"] == pytest.approx([50, 60, 80, 70])
    p = plot_gates(records, tmp_path / "gates.png", dataset="fsdd")
    assert p.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match="no CGP gates"):
        plot_gates(records, tmp_path / "none.png", dataset="esc50")
    with pytest.raises(ConfigError, match="unsupported figure type"):
        plot_gates(records, tmp_path / "gates.jpgx", dataset="fsdd")
    assert not list(tmp_path.glob(".*tmp*"))

"""Hostile and unlucky result records (red-team #23, #54, #56, #57, #61, #63, #64; issue 21's dishonest boards).

Each test failed on the commit before the results package was split (01d8ec0) and passes now.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import warnings
from pathlib import Path

import pytest
from _faults import assert_user_error, cli, run_module, write_manifest

from probekit.results.records import BackboneRef, SeedRun, make_record, read_record, write_record


def _rec(bb="tiny", ds="fsdd", probe="linear", acc=50.0, *, seeds=(0,), date=None, training=(), init_seed=0,
         **kw):
    return make_record(
        backbone=BackboneRef(name=bb, init_seed=init_seed, training_data=list(training)), dataset=ds, split="test",
        probe=probe, protocol="default", metric="accuracy",
        seeds=[SeedRun(seed=s, metrics={"accuracy": acc + s}) for s in seeds], environment=None, date=date, **kw)


def _two_digit_project(folder: Path, fsdd_root: Path, digits: tuple[int, int]) -> Path:
    """A project folder with its own `m.csv`: two digits of one speaker, 4 train and 2 test clips each."""
    folder.mkdir(parents=True)
    rows = []
    for d in digits:
        for take, split in ((0, "test"), (1, "test"), (5, "train"), (6, "train"), (7, "train"), (8, "train")):
            name = f"{d}_jackson_{take}.wav"
            shutil.copyfile(fsdd_root / "recordings" / name, folder / name)
            rows.append((name, f"d{d}", split))
    return write_manifest(folder, rows)


# ---- #23: two projects' manifests named m.csv ---------------------------------------------------------------
def test_manifests_with_one_file_name_never_share_a_record(fsdd_root, tmp_path, capsys):
    a = _two_digit_project(tmp_path / "projA", fsdd_root, (0, 1))
    b = _two_digit_project(tmp_path / "projB", fsdd_root, (2, 3))
    results = tmp_path / "r"
    for csv in (a, b):
        rc, _, err = cli(capsys, "probe", "linear", "-b", "bat-tiny", "-d", f"manifest:{csv}", "--cache-dir",
                         tmp_path / "cache", "--results-dir", results, "--device", "cpu", "--yes",
                         "--set", "steps=4", "--set", "batch_size=4")
        assert rc == 0, err
    files = sorted(results.rglob("*.json"))
    assert len(files) == 2, files  # the second run used to replace the first (other classes, other data)
    recs = [read_record(f) for f in files]
    assert {r.dataset for r in recs} == {"manifest:m.csv"}
    assert {tuple(r.class_names) for r in recs} == {("d0", "d1"), ("d2", "d3")}
    assert len({r.dataset_id for r in recs}) == 2 and len({r.key for r in recs}) == 2
    rc, out, err = cli(capsys, "leaderboard", "--results-dir", results, "--source", "measured", "-f", "json")
    assert rc == 0, err
    columns = {c["column"] for c in json.loads(out)["cells"] if c["dataset"]}
    assert len(columns) == 2, columns  # two cells, not one cell hiding the other record


# ---- #56, #57: unreadable files name themselves ---------------------------------------------------------------
@pytest.mark.parametrize("content, words", [
    (None, ("not UTF-8",)),  # a valid record with one Latin-1 byte in it
    (b"[" * 100_000, ("nested too deeply",)),
])
def test_undecodable_record_is_one_line_naming_the_file(tmp_path, capsys, content, words):
    path = write_record(_rec(notes="zero"), tmp_path)
    if content is None:
        content = path.read_bytes().replace(b'"zero"', b'"z\xe9ro"')
    path.write_bytes(content)
    rc, _, err = cli(capsys, "leaderboard", "--results-dir", tmp_path)
    assert_user_error(rc, err, str(path), *words)


# ---- #54: after a successful run, an unrelated bad record is a counted warning, not a failure -------------------
def test_load_records_can_skip_bad_files_with_one_counted_warning(tmp_path):
    good = write_record(_rec(), tmp_path)
    (tmp_path / "cut.json").write_text(good.read_text()[:100])
    (tmp_path / "other" / "summary.json").parent.mkdir()
    (tmp_path / "other" / "summary.json").write_text("{}")
    from probekit.results.store import load_records

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recs = load_records(tmp_path, on_error="warn")
    assert [r.path for r in recs] == [good]
    assert len(caught) == 1, [str(w.message) for w in caught]
    msg = str(caught[0].message)
    assert "skipped 2 unreadable result record(s)" in msg and "cut.json" in msg and "summary.json" in msg


# ---- #61: two files, one key, different numbers ----------------------------------------------------------------
@pytest.mark.parametrize("same_date", [True, False])
def test_conflicting_records_are_named_not_silently_picked(tmp_path, capsys, same_date):
    real = write_record(_rec(acc=16.67, date="2026-01-01T00:00:00+00:00"), tmp_path)
    copy = tmp_path / "copied" / real.relative_to(tmp_path)
    copy.parent.mkdir(parents=True)
    data = json.loads(real.read_text())
    data["seeds"][0]["metrics"]["accuracy"] = 99.0
    data["aggregate"]["accuracy"]["mean"] = 99.0
    if not same_date:
        data["date"] = "2026-02-01T00:00:00+00:00"
    copy.write_text(json.dumps(data))
    (tmp_path / "zz").mkdir()
    shutil.copyfile(real, tmp_path / "zz" / "identical.json")  # an exact copy (read after both) is no conflict
    rc, out, err = cli(capsys, "leaderboard", "--results-dir", tmp_path, "--source", "measured", "-f", "csv")
    assert rc == 0, err
    assert err.count("warning:") == 1, err
    assert str(real) in err and str(copy) in err and "conflicting records" in err
    if not same_date:  # the newer record is the one shown
        assert "fsdd/linear,accuracy,99.0," in out and "(the newest)" in err


# ---- #63: -o that cannot be written ------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["folder", "/proc/version", "file/below_a_file.md"])
def test_leaderboard_output_that_cannot_be_written_is_one_line(tmp_path, capsys, target):
    write_record(_rec(), tmp_path / "r")
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    out = Path(target) if target.startswith("/") else tmp_path / target
    rc, _, err = cli(capsys, "leaderboard", "--results-dir", tmp_path / "r", "-f", "markdown", "-o", out)
    assert_user_error(rc, err, str(out))


def test_plot_into_a_folder_is_one_line(tmp_path, capsys):
    write_record(_rec(), tmp_path / "r")
    (tmp_path / "fig.png").mkdir()
    rc, _, err = cli(capsys, "plot", "heatmap", "--results-dir", tmp_path / "r", "-o", tmp_path / "fig.png")
    assert_user_error(rc, err, "fig.png", "folder")


# ---- #64: records are readable by teammates ----------------------------------------------------------------------
def test_records_get_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_record(_rec(), tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# ---- clip counts per split (#22: a silent partial test set) -------------------------------------------------------
def test_record_carries_clips_scored_and_failed_per_split(tmp_path):
    path = write_record(_rec(clips={"test": {"scored": 10, "failed": 10}, "train": {"scored": 40}}), tmp_path)
    back = read_record(path)
    assert back.clips["test"].scored == 10 and back.clips["test"].failed == 10 and back.clips["train"].failed == 0
    data = json.loads(path.read_text())
    data["clips"]["test"]["failed"] = -1
    path.write_text(json.dumps(data))
    with pytest.raises(Exception, match="clips.test.failed"):
        read_record(path)


# ---- published figures: backbone facts from the card, not a second copy ------------------------------------------
def test_published_backbone_facts_come_from_the_cards():
    from probekit.backbones import backbone_card
    from probekit.results.reported import published_records

    recs = published_records()
    for name in ("eat", "sslam", "bat"):
        card = backbone_card(name)
        mine = [r for r in recs if r.backbone.name == name]
        assert mine and all(r.backbone.params == card.params for r in mine), name
        assert all(r.backbone.training_data == list(card.training_data) for r in mine), name


# ---- issue 21: honest boards ---------------------------------------------------------------------------------------
def test_mean_and_rank_only_for_rows_that_fill_every_column():
    from probekit.results.leaderboard import leaderboard, render

    recs = [_rec("one-cell", "fsdd", "cgp", 15.0)]
    recs += [_rec("full", ds, p, 40.0, init_seed=1) for ds in ("fsdd", "esc50") for p in ("cgp", "linear")]
    df = leaderboard(recs)
    one = ("measured", "one-cell (random init, seed 0)", "measured")
    full = ("measured", "full (random init, seed 1)", "measured")
    assert df.loc[full, ("rank", "")] == 1.0 and df.loc[full, ("mean", "")] == pytest.approx(40.0)
    assert df.loc[one].isna()[["mean", "rank"]].all()  # one cell of four used to rank first on its own
    md = render(df, "markdown")
    assert "| 1/4 | – |" in md and "fill all 4 columns" in md


def test_legend_names_only_the_markers_that_appear():
    from probekit.results.leaderboard import leaderboard, legend

    plain = legend(leaderboard([_rec(), _rec(probe="cgp")]))
    assert "±" not in plain and "†" not in plain
    marked = legend(leaderboard([_rec(seeds=(0, 1)), _rec(ds="as20k", training=["as2m"], probe="cgp")]))
    assert "± std" in marked and "† in-domain" in marked


def test_dataset_and_probe_filters_take_the_plural_too(tmp_path, capsys):
    write_record(_rec(), tmp_path)
    write_record(_rec(ds="esc50"), tmp_path)
    rc, out, err = cli(capsys, "leaderboard", "--results-dir", tmp_path, "--datasets", "esc50", "--probes", "linear",
                       "--source", "measured", "-f", "csv")
    assert rc == 0, err
    assert "esc50/linear" in out and "fsdd" not in out


def test_piped_leaderboard_is_never_cut(tmp_path):
    # a log file or pipe has no width: the full default board (published rows, 26 columns) prints whole
    write_record(_rec("a-backbone-with-a-rather-long-name"), tmp_path)
    proc = run_module("leaderboard", "--results-dir", tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    assert "a-backbone-with-a-rather-long-name (random init, seed 0)" in proc.stdout
    assert "58.27" in proc.stdout and "FSDD LP" in proc.stdout


def test_narrow_terminal_gets_whole_columns_in_several_tables():
    # newcomer #4: at 80 columns the default board printed 29 one-character columns and cut values
    import io

    from rich.console import Console

    from probekit.results.leaderboard import leaderboard, show

    buf = io.StringIO()
    show(leaderboard([_rec("a-backbone-with-a-rather-long-name")], published=True),
         Console(file=buf, force_terminal=True, width=80, color_system=None))
    text = buf.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for value in ("58.27", "48.55", "8.36", "50.00", "a-backbone-with-a-rather-long-name"):
        assert value in text
    flat = " ".join(text.split())
    assert "(1/" in text and flat.count("mean and rank only for rows") == 1  # parts numbered, one legend

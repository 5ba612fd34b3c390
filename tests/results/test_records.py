"""Result records: round-trip, schema errors that name file and field, atomic writes, published figures."""

from __future__ import annotations

import json

import pytest

from probekit.results.reported import published_records
from probekit.results.records import (
    SCHEMA_VERSION,
    BackboneRef,
    RecordError,
    SeedRun,
    aggregate,
    load_records,
    make_record,
    read_record,
    results_dir,
    write_record,
)

SHA = "ab" * 32


def _record(**over):
    kw = dict(
        backbone=BackboneRef(name="bat", checkpoint_sha256=SHA, training_data=["as2m"]),
        dataset="fsdd",
        split="test",
        probe="cgp",
        protocol="default",
        metric="accuracy",
        seeds=[
            SeedRun(seed=0, metrics={"accuracy": 90.0, "f1_macro": 88.0}, per_class={"accuracy": [100.0, 80.0]},
                    extras={"gates": [0.25, 0.75]}),
            SeedRun(seed=1, metrics={"accuracy": 94.0, "f1_macro": 90.0}, per_class={"accuracy": [90.0, 100.0]}),
            SeedRun(seed=2, metrics={"accuracy": 92.0, "f1_macro": 89.0}, per_class={"accuracy": [80.0, 90.0]}),
        ],
        class_names=["zero", "one"],
        hyperparameters={"prototypes": 64, "lr": 1e-3, "layers": (0, 1)},
        cache_key="deadbeef",
        timings={"extract_s": 1.5, "train_s": 3.0, "eval_s": 0.2},
    )
    kw.update(over)
    return make_record(**kw)


def test_aggregate_matches_hand_computed_t_interval():
    st = aggregate([90.0, 94.0, 92.0])
    assert st.mean == pytest.approx(92.0)
    assert st.std == pytest.approx(2.0)  # sample std (ddof=1)
    half = 4.302652729911275 * 2.0 / 3**0.5  # t_{0.975, 2}
    assert (st.ci_low, st.ci_high) == pytest.approx((92.0 - half, 92.0 + half))
    one = aggregate([0.5])
    assert one.n == 1 and one.std == 0 and one.ci_low is None


def test_record_round_trip(tmp_path):
    rec = _record()
    assert rec.aggregate["accuracy"].mean == pytest.approx(92.0)
    assert rec.per_class["accuracy"] == pytest.approx([90.0, 90.0])
    assert rec.environment is not None and rec.environment.python and rec.environment.probekit
    path = write_record(rec, tmp_path)
    assert path == tmp_path / f"bat--{SHA[:12]}" / "fsdd" / "test" / "cgp--default.json"
    back = read_record(path)
    assert back == rec
    assert back.hyperparameters["layers"] == [0, 1]
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["source"] == "measured"
    assert not list(path.parent.glob("*.tmp"))
    # the same key overwrites (one file per backbone/checkpoint, dataset, split, probe, protocol)
    write_record(_record(notes="second run"), tmp_path)
    assert read_record(path).notes == "second run"
    assert len(list(tmp_path.rglob("*.json"))) == 1


def test_odd_names_become_safe_distinct_paths(tmp_path):
    a = write_record(_record(dataset="manifest:/data/birds.csv"), tmp_path)
    b = write_record(_record(dataset="manifest:/data/birds2.csv"), tmp_path)
    assert a != b and a.is_relative_to(tmp_path) and b.is_relative_to(tmp_path)
    assert read_record(a).dataset == "manifest:/data/birds.csv"


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d["seeds"][1]["metrics"].update(accuracy="high"), "seeds.1.metrics.accuracy"),
        (lambda d: d.pop("dataset"), "dataset"),
        (lambda d: d["backbone"].update(checkpoint_sha256="xyz"), "backbone.checkpoint_sha256"),
        (lambda d: d.update(metric="mAP"), "primary metric 'mAP'"),
        (lambda d: d.update(surprise=1), "surprise"),
        (lambda d: d["per_class"].update(accuracy=[0.1]), "per_class.accuracy has 1 scores for 2"),
        (lambda d: d.update(date="yesterday"), "date"),
    ],
)
def test_schema_errors_name_file_and_field(tmp_path, mutate, field):
    path = write_record(_record(), tmp_path)
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError) as e:
        read_record(path)
    assert str(path) in str(e.value) and field in str(e.value)


def test_version_and_json_errors(tmp_path):
    path = write_record(_record(), tmp_path)
    data = json.loads(path.read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match="newer than this probekit"):
        read_record(path)
    del data["schema_version"]
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match="schema_version' is missing"):
        read_record(path)
    path.write_text("{not json")
    with pytest.raises(RecordError, match=r"not valid JSON \(line 1"):
        read_record(path)
    with pytest.raises(RecordError, match=str(path)):
        load_records(tmp_path)
    with pytest.warns(UserWarning):
        assert load_records(tmp_path, on_error="warn") == []


def test_invalid_record_is_refused_before_writing(tmp_path):
    with pytest.raises(RecordError, match="seeds"):
        _record(seeds=[])
    with pytest.raises(RecordError, match="finite"):
        _record(seeds=[SeedRun.model_construct(seed=0, metrics={"accuracy": float("nan")})])
    assert not list(tmp_path.rglob("*"))


def test_results_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEKIT_RESULTS", str(tmp_path / "r"))
    assert results_dir() == tmp_path / "r"
    assert results_dir(tmp_path / "x") == tmp_path / "x"
    write_record(_record())
    assert len(load_records()) == 1


def test_published_numbers_present_with_sources():
    recs = published_records()

    def score(bb, ds, probe, src):
        hits = [r for r in recs if (r.backbone.name, r.dataset, r.probe) == (bb, ds, probe) and src in r.source]
        assert len(hits) == 1, (bb, ds, probe, src)
        return hits[0].score

    # BAT paper Table 5 (FT / CGP / LP) and Table 1 (Protobin, F1)
    assert [score("bat", "as20k", p, "Ghaffari") for p in ("finetune", "cgp", "linear")] == [41.32, 37.52, 25.59]
    assert score("sslam", "sc2", "linear", "Table 5") == 53.51
    assert score("eat", "esc50", "cgp", "Table 5") == 94.05
    assert score("eat", "as2m", "protobin", "Table 1") == 32.58
    assert score("sslam", "as20k", "protobin", "Table 1") == 29.64
    assert score("eat", "as2m", "finetune", "Chen et al") == 48.6
    assert score("sslam", "as20k", "finetune", "Alex et al") == 40.9
    # unmute paper, AS-20k linear / mhca / protobin
    assert [score("audio-mae", "as20k", p, "Unmute") for p in ("linear", "mhca", "protobin")] == [8.36, 17.09, 22.32]
    assert score("beats", "as20k", "mhca", "Unmute") == 21.86
    eat_f1 = [r for r in recs if r.backbone.name == "eat" and r.dataset == "as20k" and r.probe == "cgp"]
    assert eat_f1[0].aggregate["f1_macro"].mean == pytest.approx(26.04)
    assert all(r.reported and r.environment is None for r in recs)
    assert len({(r.key, r.source) for r in recs}) == len(recs)

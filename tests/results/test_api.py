"""probekit.evaluate end to end on real FSDD clips (a 60-clip manifest) with a user-defined torch module,
and `probekit probe` on the same data with a tiny registered backbone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from probekit.api import evaluate, prepare
from probekit.cli import main
from probekit.errors import CacheError
from probekit.results.records import read_record
from probekit.train import run_protocol

STEPS = {"steps": 40, "batch_size": 16}


class TinyEncoder(torch.nn.Module):
    """A user's model: 16x16 patches of the fbank, a cls token, three transformer blocks."""

    def __init__(self, dim: int = 32, depth: int = 3):
        super().__init__()
        self.patch = torch.nn.Conv2d(1, dim, 16, 16)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = torch.nn.ModuleList(
            [torch.nn.TransformerEncoderLayer(dim, 2, 64, dropout=0.0, batch_first=True) for _ in range(depth)]
        )

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(len(t), -1, -1), t], 1)
        for b in self.blocks:
            h = b(h)
        return h


@pytest.fixture(scope="module")
def manifest(fsdd_root, tmp_path_factory):
    """60 real FSDD clips: digits 0-9 of one speaker, takes 0-1 test, 2-5 train."""
    root = tmp_path_factory.mktemp("fsdd_small")
    (root / "audio").mkdir()
    rows = ["path,labels,split"]
    for digit in range(10):
        for take in range(6):
            name = f"{digit}_jackson_{take}.wav"
            shutil.copy(fsdd_root / "recordings" / name, root / "audio" / name)
            rows.append(f"audio/{name},{digit},{'test' if take < 2 else 'train'}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return f"manifest:{root / 'manifest.csv'}"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyEncoder()


ADAPT = {"blocks": [f"blocks.{i}" for i in range(3)], "freq_patches": 8}


def test_evaluate_user_module(manifest, model, tmp_path):
    cache, results = tmp_path / "cache", tmp_path / "results"
    kw = dict(name="tiny", adapt=ADAPT, cache_dir=cache, results_dir=results, train_overrides=STEPS,
              device="cpu", progress=False, workers=0)
    res = evaluate(model, datasets=[manifest], probes=["linear", "cgp", "layers"], seeds=2,
                   hparams={"cgp": {"prototypes": 16}}, **kw)
    assert [r.probe for r in res.records] == ["linear", "cgp", "layers"]
    assert len(res.paths) == 3 and all(p.is_file() for p in res.paths)
    for p, r in zip(res.paths, res.records):
        back = read_record(p)
        assert back == r and back.source == "measured" and back.metric == "accuracy"
        assert [s.seed for s in back.seeds] == [0, 1]
        assert back.backbone.name == "tiny" and len(back.backbone.checkpoint_sha256) == 64
        assert back.backbone.training_data == [] and back.dataset == "manifest:manifest.csv"
        assert len(back.class_names) == 10 and len(back.per_class["ap"]) == 10
        assert back.environment.torch == torch.__version__ and back.timings.cache_reused is False
        assert back.cache_key.startswith("train:") and ",test:" in back.cache_key
        assert back.hyperparameters["train"]["steps"] == 40
        assert 0.0 <= back.score <= 100.0
    cgp = res.records[1]
    assert cgp.hyperparameters["probe"]["prototypes"] == 16
    gates = cgp.seeds[0].extras["gates"]
    assert len(gates) == 3 and sum(gates) == pytest.approx(1.0, abs=1e-5)
    layers = res.records[2]
    curve = layers.seeds[0].extras["layer_scores"]
    # the block is chosen on validation data (never test); its test score is the reported one
    best = layers.seeds[0].extras["best_layer"]
    assert len(curve) == 3 and layers.seeds[0].metrics["accuracy"] == pytest.approx(curve[best])
    assert "validation" in layers.seeds[0].extras["layer_selection"]

    # the same code path as calling the training protocol on the prepared tokens yourself
    same = dict(cache_dir=cache, device="cpu", progress=False, name="tiny", adapt=ADAPT)
    train = prepare(model, manifest, "train", **same)
    test = prepare(model, manifest, "test", **same)
    assert train.reused and test.reused and train.extract_s == 0
    direct = run_protocol("linear", train.tokens, test.tokens, protocol="default",
                          train_overrides={**STEPS, "epochs": None, "device": "cpu"}, seed=1, progress=False)
    assert direct.metrics["accuracy"] == pytest.approx(res.records[0].seeds[1].metrics["accuracy"])

    df = res.to_dataframe()
    assert list(df.probe) == ["linear", "cgp", "layers"] and (df.n == 2).all()
    board = res.leaderboard()
    assert board.loc[("measured", cgp.backbone.label, "measured"), ("manifest:manifest.csv", "cgp")] == (
        pytest.approx(cgp.score))
    assert res.plot_gates(tmp_path / "gates.png").read_bytes()[:4] == b"\x89PNG"

    # a second run reuses the caches and reproduces every seed exactly
    again = evaluate(model, datasets=[manifest], probes=["linear"], seeds=2, write=False, **kw)
    assert again.records[0].timings.cache_reused and again.records[0].timings.extract_s == 0
    assert [s.metrics for s in again.records[0].seeds] == [s.metrics for s in res.records[0].seeds]
    assert not again.paths


def test_online_tokens_match_the_cache(manifest, model, tmp_path):
    kw = dict(name="tiny", adapt=ADAPT, results_dir=tmp_path / "r", device="cpu", progress=False,
              train_overrides={"steps": 20, "batch_size": 16}, write=False, workers=0)
    cached = evaluate(model, datasets=[manifest], probes=["linear"], dtype="float32", cache_dir=tmp_path / "c", **kw)
    online = evaluate(model, datasets=[manifest], probes=["linear"], online=True, cache_dir=tmp_path / "o", **kw)
    assert not (tmp_path / "o").exists()  # nothing cached
    assert online.records[0].cache_key.endswith("(online)")
    a, b = cached.records[0].seeds[0].metrics, online.records[0].seeds[0].metrics
    assert a["accuracy"] == pytest.approx(b["accuracy"], abs=5.0)  # at most one of 20 test clips flips
    assert a["mAP"] == pytest.approx(b["mAP"], abs=1.0)


def test_prepare_asks_before_extracting(manifest, model, tmp_path):
    asked = []
    with pytest.raises(CacheError, match="extraction declined"):
        prepare(model, manifest, "train", cache_dir=tmp_path, device="cpu", progress=False, adapt=ADAPT,
                confirm=lambda msg: asked.append(msg) or False)
    assert "Extract it now?" in asked[0] and not list(tmp_path.glob("*.zarr"))


def test_cli_probe_tiny_backbone(manifest, tmp_path, capsys):
    args = ["probe", "cgp", "-b", "bat-tiny", "-d", manifest, "-k", "8", "--set", "steps=30", "--set",
            "batch_size=16", "--set", "dropout=0.1", "--cache-dir", str(tmp_path / "c"), "--results-dir",
            str(tmp_path / "r"), "--device", "cpu", "--yes"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "record:" in out and "cgp" in out
    (path,) = list((tmp_path / "r").rglob("*.json"))
    rec = json.loads(path.read_text())
    assert rec["probe"] == "cgp" and rec["backbone"]["name"] == "bat-tiny" and rec["backbone"]["init_seed"] == 0
    assert rec["hyperparameters"]["probe"]["prototypes"] == 8 and rec["hyperparameters"]["probe"]["dropout"] == 0.1
    assert rec["hyperparameters"]["train"]["steps"] == 30
    assert len(rec["seeds"][0]["extras"]["gates"]) == 4  # bat-tiny has 4 blocks
    assert main(["leaderboard", "--results-dir", str(tmp_path / "r"), "-d", rec["dataset"], "-f", "csv"]) == 0
    assert "bat-tiny (random init, seed 0)" in capsys.readouterr().out
    # bad settings fail before any work, naming what is wrong
    assert main(args[:-1] + ["--set", "protoypes=3"]) == 2
    assert "did you mean 'prototypes'" in capsys.readouterr().err
    assert main(["probe", "linear", "-b", "bat-tiny", "-d", manifest, "-k", "8", "--yes"]) == 2
    assert "--prototypes does not apply" in capsys.readouterr().err
    assert np.isfinite(rec["aggregate"]["accuracy"]["mean"])


def test_evaluate_with_tuning(manifest, model, tmp_path):
    res = evaluate(model, datasets=[manifest], probes=["linear"], tune=True, trials=2, seeds=2,
                   tune_options={"n_startup": 2, "pruner": "none", "only": ("lr",), "eval_every": 10}, name="tiny", adapt=ADAPT,
                   cache_dir=tmp_path / "c", results_dir=tmp_path / "r", train_overrides={"steps": 20, "batch_size": 16},
                   device="cpu", progress=False, workers=0)
    rec = read_record(res.paths[0])
    assert rec.tuning is not None and rec.tuning.trials == 2 and set(rec.tuning.best_params) == {"lr"}
    assert rec.tuning.validation and "held out" in rec.tuning.validation  # never the test split
    assert rec.hyperparameters["train"]["lr"] == pytest.approx(rec.tuning.best_params["lr"])
    assert [s.seed for s in rec.seeds] == [0, 1]
    assert rec.tuning.storage.startswith("sqlite:///") and list((tmp_path / "r" / "studies").glob("*.db"))
    # the tune package's own study name: its digest changes with the weights, data and search space
    import re

    assert re.fullmatch(rf"linear-{rec.protocol}-[0-9a-f]{{8}}", rec.tuning.study), rec.tuning.study

    # a TuneResult with retrained seeds (what `probekit tune` returns) becomes a record too
    from probekit.api import record_from_tune, resolve_backbone
    from probekit.tune import tune

    bb = resolve_backbone(model, name="tiny", adapt=ADAPT, device="cpu")
    train = prepare(bb, manifest, "train", cache_dir=tmp_path / "c", progress=False)
    test = prepare(bb, manifest, "test", cache_dir=tmp_path / "c", progress=False)
    result = tune("linear", train.tokens, test=test.tokens, n_trials=1, n_startup=1, pruner="none", only=("lr",),
                  seeds=1, train_overrides={"steps": 10, "epochs": None}, eval_every=10, progress=False,
                  storage=f"sqlite:///{tmp_path / 'direct.db'}")
    rec2 = record_from_tune(result, backbone=bb, dataset=manifest, cache_key=train.cache_key)
    assert rec2.tuning.trials == 1 and rec2.seeds[0].metrics["accuracy"] == pytest.approx(result.seeds[0].score)


def test_evaluate_cross_validation_protocol(manifest, tmp_path):
    """The ESC-50 protocol cross-validates over folds: a manifest with a fold column takes that path."""
    src = manifest.split(":", 1)[1]
    lines = Path(src).read_text().strip().split("\n")
    train = [row for row in lines[1:] if row.endswith(",train")]
    folded = Path(src).with_name("manifest_folds.csv")  # beside the audio: manifest paths are relative
    folded.write_text("path,labels,split,fold\n" + "\n".join(f"{row},{i % 3}" for i, row in enumerate(train)) + "\n")
    res = evaluate("bat-tiny", datasets=[f"manifest:{folded}"], probes=["linear"], protocol="esc50",
                   train_overrides={"steps": 5, "batch_size": 16}, cache_dir=tmp_path / "c",
                   results_dir=tmp_path / "r", device="cpu", progress=False, workers=0)
    rec = res.records[0]
    assert rec.protocol == "esc50" and rec.hyperparameters["selection"] == "cv" and rec.split == "train"
    folds = rec.seeds[0].extras["folds"]
    assert len(folds) == 3 and rec.score == pytest.approx(np.mean(folds))
    assert len(rec.per_class["ap"]) == 10


def test_evaluate_trusts_a_pickled_checkpoint_only_when_told(manifest, tmp_path):
    """The loader's refusal says `trust_checkpoint=True`; evaluate must accept it (flat or in backbone_options)."""
    import argparse

    from probekit.api import RunOptions, TrainOptions
    from probekit.backbones import get_backbone
    from probekit.errors import CheckpointError

    sd = get_backbone("bat-tiny", seed=0).model.state_dict()
    ck = tmp_path / "bat.ckpt"  # a BAT lightning file whose extra entry needs full unpickling
    torch.save({"state_dict": {f"student.encoder.{k}": v for k, v in sd.items()},
                "hyper_parameters": argparse.Namespace(lr=1e-3)}, ck)
    opts = dict(datasets=[manifest], probes=["linear"], write=False,
                run=RunOptions(device="cpu", cache_dir=tmp_path / "c", progress=False, workers=0),
                train=TrainOptions(overrides={"steps": 5, "batch_size": 16}))
    with pytest.raises(CheckpointError, match="trust_checkpoint=True"):
        evaluate("bat-tiny", checkpoint=ck, **opts)
    trusted = evaluate("bat-tiny", backbone_options={"checkpoint": ck, "trust_checkpoint": True}, **opts)
    flat = evaluate("bat-tiny", checkpoint=ck, trust_checkpoint=True, **opts)
    sha = trusted.records[0].backbone.checkpoint_sha256
    assert sha and len(sha) == 64 and flat.records[0].backbone.checkpoint_sha256 == sha
    assert flat.records[0].timings.cache_reused  # same weights, same key: the first run's cache


def test_value_objects_match_flat_keywords_and_plan_each_split_once(manifest, model, tmp_path, monkeypatch):
    import probekit.cache.planning as planning
    from probekit.api import RunOptions, TokenSpec, TrainOptions

    calls = []
    real = planning.plan
    monkeypatch.setattr(planning, "plan", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    objects = evaluate(model, [manifest], ["linear"], write=False, tokens=TokenSpec(layers="last", dtype="int8"),
                       run=RunOptions(device="cpu", cache_dir=tmp_path, progress=False, workers=0),
                       train=TrainOptions(seeds=2, overrides={"steps": 10, "batch_size": 16}),
                       backbone_options={"name": "tiny", "adapt": ADAPT})
    assert sorted(calls) == ["test", "train"]  # one plan per split: shared by open_cache and extraction
    flat = evaluate(model, [manifest], ["linear"], write=False, layers="last", dtype="int8", device="cpu",
                    cache_dir=tmp_path, progress=False, workers=0, seeds=2,
                    train_overrides={"steps": 10, "batch_size": 16}, name="tiny", adapt=ADAPT)
    a, b = objects.records[0], flat.records[0]
    assert a.cache_key == b.cache_key and b.timings.cache_reused
    assert [s.metrics for s in a.seeds] == [s.metrics for s in b.seeds]
    with pytest.raises(TypeError, match="layerz"):
        evaluate(model, [manifest], ["linear"], layerz="last")

"""`probekit predict` / `Results.predict`: a probe trained by evaluate, applied to real FSDD clips.

Nothing mocked: a small FSDD manifest, the shipped bat-tiny-fsdd checkpoint, a linear probe trained by
`probekit.evaluate` (which saves it beside its record), then the test clips predicted from the audio files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from probekit.backbones.bat import BAT_TINY_FSDD_WEIGHTS

SPEAKERS = ("jackson", "george")
TRAIN_TAKES, TEST_TAKES = (5, 6, 7, 8, 9), (0, 1)
OVERRIDES = {"steps": 200, "lr": 1e-2, "batch_size": 16}


def _digit(path) -> str:
    return "d" + Path(path).name.split("_")[0]


@pytest.fixture(scope="module")
def trained(fsdd_root, tmp_path_factory):
    import probekit

    tmp = tmp_path_factory.mktemp("predict")
    rows = ["path,labels,split"]
    for d in range(10):
        for s in SPEAKERS:
            for take in TRAIN_TAKES + TEST_TAKES:
                name = f"{d}_{s}_{take}.wav"
                (tmp / name).write_bytes((fsdd_root / "recordings" / name).read_bytes())
                rows.append(f"{name},d{d},{'test' if take in TEST_TAKES else 'train'}")
    manifest = tmp / "digits.csv"
    manifest.write_text("\n".join(rows) + "\n")
    opts = dict(datasets=[f"manifest:{manifest}"], probes=["linear"], checkpoint=BAT_TINY_FSDD_WEIGHTS,
                cache_dir=tmp / "cache", results_dir=tmp / "results", progress=False, device="cpu")
    res = probekit.evaluate("bat-tiny-fsdd", train_overrides=OVERRIDES, **opts)
    tests = [tmp / f"{d}_{s}_{t}.wav" for d in range(10) for s in SPEAKERS for t in TEST_TAKES]
    return {"res": res, "tmp": tmp, "manifest": manifest, "opts": opts, "tests": tests}


def test_evaluate_saves_the_probe_beside_the_record(trained):
    from probekit.predict import probe_path_for
    from probekit.probes.io import read_probe_header

    res = trained["res"]
    path = probe_path_for(res.paths[0])
    assert path.name == "linear--default.probe.safetensors" and path.parent == res.paths[0].parent
    meta = read_probe_header(path)["metadata"]
    rec = res.records[0]
    assert meta["backbone"]["checkpoint_sha256"] == rec.backbone.checkpoint_sha256
    assert meta["classes"] == rec.class_names and meta["multilabel"] is False and meta["threshold"] is None
    assert meta["tokens"]["dtype"] == "float16" and meta["tokens"]["layers"] == list(range(4))
    assert meta["record"]["date"] == rec.date and meta["record"]["key"] == list(rec.key) and meta["seed"] == 0


def test_predict_equals_the_evaluation_scores(trained):
    import probekit
    from probekit.predict import probe_path_for
    from probekit.probes.io import load_probe
    from probekit.train.fit import predict

    res, tests = trained["res"], trained["tests"]
    df = res.predict(tests, device="cpu")
    assert list(df.path) == [str(p) for p in tests] and df.error.isna().all()
    assert list(df.columns) == ["path", "prediction", "score", "error", *res.records[0].class_names]
    # the evaluation's own test scores: the saved probe on the cached test tokens
    opts = {k: v for k, v in trained["opts"].items() if k not in ("datasets", "probes", "results_dir")}
    reader = probekit.prepare("bat-tiny-fsdd", f"manifest:{trained['manifest']}", "test", **opts).tokens
    assert reader.num_clips == len(tests)
    probe = load_probe(probe_path_for(res.paths[0]))
    cached = predict(probe, reader, amp=False)
    by_id = dict(zip([str(c) for c in reader.clip_ids], cached))
    classes = res.records[0].class_names
    for _, row in df.iterrows():
        want = by_id[Path(row.path).name]
        assert row.prediction == classes[int(np.argmax(want))]
        np.testing.assert_allclose(row[classes].to_numpy(float), want, atol=2e-3)
    accuracy = 100 * np.mean([p == _digit(f) for p, f in zip(df.prediction, df.path)])
    assert accuracy == pytest.approx(res.records[0].score, abs=1e-6)


def test_cli_predict_csv_bad_files_and_wrong_weights(trained, tmp_path, capsys):
    import pandas as pd
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from probekit.cli import main

    res, tests = trained["res"], trained["tests"]
    record = str(res.paths[0])
    missing, folder = tmp_path / "nope.wav", tmp_path
    out = tmp_path / "pred.csv"
    args = ["predict", "--record", record, "--checkpoint", str(BAT_TINY_FSDD_WEIGHTS), "--device", "cpu",
            "-o", str(out), str(tests[0]), str(missing), str(folder), *map(str, tests[1:])]
    assert main(args) == 2  # two files failed, the others were predicted
    cap = capsys.readouterr()
    assert f"{missing}: file not found" in cap.err and f"{folder}: a directory" in cap.err
    assert "2 of 42 file(s) could not be read" in cap.err
    df = pd.read_csv(out)
    good = df[df.error.isna()]
    assert len(good) == len(tests) and set(df.error.dropna().str.split(":").str[0]) == {str(missing), str(folder)}
    py = res.predict(tests, device="cpu")
    assert list(good.prediction) == list(py.prediction)
    line = next(ln for ln in cap.out.splitlines() if ln.startswith(f"{tests[0]}:"))
    assert line.split(": ", 1)[1].startswith(py.prediction[0] + " ") and line.count(",") == 2  # --top 3

    assert main(["predict", "--record", record, "--checkpoint", str(BAT_TINY_FSDD_WEIGHTS), "--device", "cpu",
                 *map(str, tests[:2])]) == 0
    capsys.readouterr()

    # other weights (one tensor changed) are refused, naming both sha256
    with safe_open(str(BAT_TINY_FSDD_WEIGHTS), "pt") as f:
        meta = f.metadata()
    state = load_file(str(BAT_TINY_FSDD_WEIGHTS))
    k = sorted(state)[0]
    state[k] = state[k] * 1.01
    wrong = tmp_path / "wrong.safetensors"
    save_file(state, str(wrong), metadata=meta)
    assert main(["predict", "--record", record, "--checkpoint", str(wrong), "--device", "cpu", str(tests[0])]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert res.records[0].backbone.checkpoint_sha256 in err and "given bat-tiny-fsdd weights sha256" in err
    # no weights at all for a record measured with a checkpoint: refused, naming its sha256
    assert main(["predict", "--record", record, "--device", "cpu", str(tests[0])]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert res.records[0].backbone.checkpoint_sha256 in err and "--checkpoint" in err


def test_no_save_probe_removes_a_stale_probe(trained, tmp_path):
    import shutil

    import probekit
    from probekit.errors import ProbeError
    from probekit.predict import Predictor, probe_path_for

    # a copy of the results: a rerun with --no-save-probe must not leave the old probe beside the new record
    opts = dict(trained["opts"], results_dir=tmp_path / "results")
    shutil.copytree(trained["tmp"] / "results", tmp_path / "results")
    old = probe_path_for(next((tmp_path / "results").rglob("*.json")))
    kept = tmp_path / "old.probe.safetensors"
    shutil.copy(old, kept)
    res = probekit.evaluate("bat-tiny-fsdd", train_overrides={**OVERRIDES, "steps": 5}, save_probe=False, **opts)
    assert res.paths[0] == old.with_name("linear--default.json") and not old.exists()
    # a probe file of an earlier run put back beside the new record is refused, not silently applied
    shutil.copy(kept, old)
    with pytest.raises(ProbeError, match="saved by another run"):
        Predictor(res.paths[0], checkpoint=BAT_TINY_FSDD_WEIGHTS, device="cpu")
    old.unlink()
    with pytest.raises(ProbeError, match="no saved probe"):
        res.predict(trained["tests"][:1], device="cpu")


def test_multilabel_predicts_every_class_above_the_recorded_threshold(fsdd_root, tmp_path, capsys):
    import probekit
    from probekit.cli import main
    from probekit.predict import probe_path_for
    from probekit.probes.io import load_probe, read_probe_header
    from probekit.train.fit import predict

    rows, tests = ["path,labels,split"], []
    for d in range(5):
        for s in SPEAKERS:
            for take in TRAIN_TAKES + TEST_TAKES:
                name = f"{d}_{s}_{take}.wav"
                (tmp_path / name).write_bytes((fsdd_root / "recordings" / name).read_bytes())
                rows.append(f"{name},d{d};{s},{'test' if take in TEST_TAKES else 'train'}")
                if take in TEST_TAKES:
                    tests.append(tmp_path / name)
    (tmp_path / "ml.csv").write_text("\n".join(rows) + "\n")
    opts = dict(checkpoint=BAT_TINY_FSDD_WEIGHTS, cache_dir=tmp_path / "cache", progress=False, device="cpu")
    res = probekit.evaluate("bat-tiny-fsdd", datasets=[f"manifest:{tmp_path / 'ml.csv'}"], probes=["linear"],
                            results_dir=tmp_path / "results", train_overrides={**OVERRIDES, "steps": 100}, **opts)
    rec = res.records[0]
    threshold = rec.seeds[0].extras["f1_threshold"]  # chosen on validation data by evaluate
    meta = read_probe_header(probe_path_for(res.paths[0]))["metadata"]
    assert meta["multilabel"] is True and meta["threshold"] == threshold
    df = res.predict(tests, device="cpu")
    reader = probekit.prepare("bat-tiny-fsdd", f"manifest:{tmp_path / 'ml.csv'}", "test", **opts).tokens
    cached = dict(zip(map(str, reader.clip_ids), predict(load_probe(probe_path_for(res.paths[0])), reader, amp=False)))
    classes = rec.class_names
    assert (df.prediction.str.len() > 0).any()  # some file has classes above the threshold
    for _, row in df.iterrows():
        want = cached[Path(row.path).name]
        above = {classes[j] for j in np.flatnonzero(want >= threshold) if abs(want[j] - threshold) > 2e-3}
        got = set(row.prediction.split(";")) if row.prediction else set()
        assert above <= got and all(row[c] >= threshold for c in got)
        np.testing.assert_allclose(row[classes].to_numpy(float), want, atol=2e-3)
    assert main(["predict", "--record", str(res.paths[0]), "--checkpoint", str(BAT_TINY_FSDD_WEIGHTS),
                 "--device", "cpu", str(tests[0])]) == 0
    line = capsys.readouterr().out.strip().replace("\n", "")
    shown = df.prediction[0].split(";") if df.prediction[0] else []
    assert all(c in line for c in shown) and (shown or f"no class >= {threshold:g}" in line)

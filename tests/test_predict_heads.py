"""`probekit predict` / `Results.predict` for the heads that are not clip classifiers: the ASR probe (the
greedy CTC transcript), frame-wise event heads (events in seconds after the recorded post-processing),
VQT (its query tokens run in the live encoder), and records + probe files on an S3 store.

Nothing mocked: real FSDD recordings, the shipped bat-tiny-fsdd weights, probes trained by
`probekit.evaluate`, a real (moto) S3 server. Each check compares prediction with what the evaluation
itself measured on the same files, so a prediction that read other tokens, decoded otherwise or timed
rows otherwise fails.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from probekit.backbones.bat import BAT_TINY_FSDD_WEIGHTS

if "_s3server" not in sys.modules:  # the S3 server fixture lives beside tests/cache/test_object_store.py
    _spec = importlib.util.spec_from_file_location("_s3server", Path(__file__).parent / "cache" / "_s3server.py")
    sys.modules["_s3server"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["_s3server"])
from _s3server import moto_s3  # noqa: E402,F401

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
OPTS = dict(checkpoint=BAT_TINY_FSDD_WEIGHTS, progress=False, device="cpu")


def _fsdd_copy(fsdd_root: Path, dest: Path, takes) -> Path:
    (dest / "recordings").mkdir(parents=True)
    for d in range(10):
        for t in takes:
            name = f"{d}_jackson_{t}.wav"
            shutil.copy(fsdd_root / "recordings" / name, dest / "recordings" / name)
    return dest


@pytest.fixture(scope="module")
def asr_run(fsdd_root, tmp_path_factory):
    """The ASR probe trained by evaluate on fsdd-asr (takes 0-4 are FSDD's test split)."""
    import probekit

    tmp = tmp_path_factory.mktemp("asr")
    root = _fsdd_copy(fsdd_root, tmp / "fsdd", (0, 1, 5, 6, 7, 8, 9, 10, 11, 12))
    res = probekit.evaluate("bat-tiny-fsdd", datasets=["fsdd-asr"], probes=["asr"], data_root=root,
                            cache_dir=tmp / "cache", results_dir=tmp / "results", hparams={"hidden": 32},
                            train_overrides={"steps": 200, "batch_size": 16, "lr": 2e-2, "warmup_steps": 10, "weight_decay": 0.0},
                            **OPTS)
    tests = sorted((root / "recordings").glob("*_jackson_[01].wav"))
    return {"res": res, "tmp": tmp, "root": root, "tests": tests}


def test_asr_predict_gives_the_transcripts_the_evaluation_scored(asr_run):
    import jiwer

    from probekit.predict import Predictor

    res, tests = asr_run["res"], asr_run["tests"]
    rec = res.records[0]
    df = res.predict(tests, device="cpu")
    assert list(df.columns) == ["path", "transcript", "error"] and df.error.isna().all()
    assert all(isinstance(t, str) for t in df.transcript)
    refs = [WORDS[int(Path(p).name[0])] for p in df.path]
    # the record's test WER is this probe's on these very files: the same tokens, frames and decoding
    wer = jiwer.wer(refs, list(df.transcript)) * 100
    assert wer == pytest.approx(rec.seeds[0].metrics["WER"], abs=1e-6), (list(df.transcript), rec.seeds[0].metrics)
    cer = jiwer.cer(refs, list(df.transcript)) * 100
    assert cer == pytest.approx(rec.seeds[0].metrics["CER"], abs=1e-6)
    # and it says something (an untrained CTC head emits only blanks: empty transcripts, CER 100 %)
    assert any(df.transcript) and cer < 100.0, list(zip(refs, df.transcript))
    pred = Predictor(res.paths[0], checkpoint=BAT_TINY_FSDD_WEIGHTS, device="cpu")
    with pytest.raises(Exception, match="transcribes speech"):
        pred.scores(tests[:1])


def test_cli_predict_asr_writes_a_transcript_column(asr_run, tmp_path, capsys):
    import pandas as pd

    from probekit.cli import main

    res, tests = asr_run["res"], asr_run["tests"]
    out = tmp_path / "t.csv"
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not audio")
    rc = main(["predict", "--record", str(res.paths[0]), "--checkpoint", str(BAT_TINY_FSDD_WEIGHTS), "--device",
               "cpu", "-o", str(out), str(tests[0]), str(bad)])
    assert rc == 2  # the unreadable file is named; the other is transcribed
    cap = capsys.readouterr()
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns) == ["path", "transcript", "error"] and df.error.iloc[0] == "" and "bad.wav" in df.error.iloc[1]
    assert f"{tests[0]}: {df.transcript.iloc[0]!r}" in cap.out and "bad.wav" in cap.err


def test_predict_from_a_record_and_probe_on_s3(asr_run, moto_s3, capsys):
    """A record written to s3:// (its probe file beside it) predicts through `--record s3://...`."""
    from probekit.cli import main
    from probekit.predict import Predictor, probe_path_for

    fs, _ = moto_s3
    rec = asr_run["res"].paths[0]
    url = "s3://probekit-test/results/fsdd-asr/" + rec.name
    fs.put_file(str(rec), url)  # the record and its probe file, as evaluate(results_dir="s3://...") leaves them
    fs.put_file(str(probe_path_for(rec)), url.replace(".json", ".probe.safetensors"))
    tests = asr_run["tests"][:4]
    local = asr_run["res"].predict(tests, device="cpu")
    remote = Predictor(url, checkpoint=BAT_TINY_FSDD_WEIGHTS, device="cpu").predict(tests)
    assert list(remote.transcript) == list(local.transcript)
    capsys.readouterr()
    assert main(["predict", "--record", url, "--checkpoint", str(BAT_TINY_FSDD_WEIGHTS), "--device", "cpu",
                 *map(str, tests)]) == 0
    out = capsys.readouterr().out
    for p, t in zip(tests, local.transcript):
        assert f"{p}: {t!r}" in out
    assert main(["predict", "--record", "s3://probekit-test/results/nothing.json", "--device", "cpu",
                 str(tests[0])]) == 2
    assert "nothing.json" in capsys.readouterr().err


# ---- frame-wise (event) heads ----------------------------------------------------------------------------
def _fsdd_events():
    spec = importlib.util.spec_from_file_location("fsdd_events_for_predict", Path(__file__).parent / "datasets" / "fsdd_events.py")
    mod = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))  # dataclasses look it up there
    spec.loader.exec_module(mod)
    return mod.build_fsdd_events


@pytest.fixture(scope="module")
def sed_run(fsdd_root, tmp_path_factory):
    import probekit

    tmp = tmp_path_factory.mktemp("sed")
    built = _fsdd_events()(tmp / "task", fsdd_root, clips={"train": 20, "valid": 4, "test": 6}, digits=("1", "7"),
                           seed=3)
    res = probekit.evaluate("bat-tiny-fsdd", datasets=[f"events:{built['events']}"], probes=["sed-linear"],
                            cache_dir=tmp / "cache", results_dir=tmp / "results",
                            train_overrides={"steps": 120, "batch_size": 8, "lr": 1e-2, "warmup_steps": 10}, **OPTS)
    return {"res": res, "csv": built["events"]}


def test_sed_predict_gives_the_events_the_evaluation_scored(sed_run, tmp_path, capsys):
    import csv

    import pandas as pd

    from probekit.cli import main
    from probekit.train.events import PRIMARY, event_metrics

    res, manifest = sed_run["res"], sed_run["csv"]
    refs: dict[str, list[dict]] = {}
    with open(manifest) as fh:
        for row in csv.DictReader(fh):
            if row["split"] == "test":
                refs.setdefault(str(manifest.parent / row["path"]), []).append(
                    {"event_label": row["label"], "event_onset": float(row["onset"]), "event_offset": float(row["offset"])})
    files = sorted(refs)
    df = res.predict(files, device="cpu")
    assert list(df.columns) == ["path", "onset", "offset", "label", "error"] and df.error.isna().all()
    assert set(df.path) == set(files)
    found = df.dropna(subset=["label"])
    assert len(found) > 0 and (found.onset <= found.offset).all() and (found.onset >= 0).all()
    ests = [[{"event_label": r.label, "event_onset": r.onset, "event_offset": r.offset}
             for r in found[found.path == f].itertuples()] for f in files]
    # the record's onset F1 is this probe's on these files: the same rows, timing, threshold and median filter
    f1 = event_metrics([refs[f] for f in files], ests, ["1", "7"])["metrics"][PRIMARY]
    rec = res.records[0]
    assert f1 == pytest.approx(rec.seeds[0].metrics[PRIMARY], abs=1e-6), (f1, rec.seeds[0].metrics)
    # an event is detected where a digit was placed (label and onset within HEAR's 200 ms collar)
    hits = [e for f, es in zip(files, ests) for e in es
            if any(r["event_label"] == e["event_label"] and abs(r["event_onset"] - e["event_onset"]) <= 0.2
                   for r in refs[f])]
    assert hits, (ests, refs)
    out = tmp_path / "ev.csv"
    assert main(["predict", "--record", str(res.paths[0]), "--checkpoint", str(BAT_TINY_FSDD_WEIGHTS), "--device",
                 "cpu", "-o", str(out), *files]) == 0
    back = pd.read_csv(out)
    assert list(back.columns) == list(df.columns) and len(back) == len(df)
    assert f"{files[0]}: " in capsys.readouterr().out


# ---- VQT: the live encoder with the saved query tokens ------------------------------------------------------
def test_vqt_predict_runs_the_saved_queries_in_the_live_encoder(fsdd_root, tmp_path):
    import probekit

    rows = ["path,labels,split"]
    for d in range(10):
        for take in (0, 1, 5, 6, 7, 8):
            name = f"{d}_george_{take}.wav"
            shutil.copy(fsdd_root / "recordings" / name, tmp_path / name)
            rows.append(f"{name},d{d},{'test' if take < 2 else 'train'}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    res = probekit.evaluate("bat-tiny-fsdd", datasets=[f"manifest:{tmp_path / 'm.csv'}"], probes=["vqt"], online=True,
                            results_dir=tmp_path / "r", cache_dir=tmp_path / "c", workers=0,
                            hparams={"num_queries": 2}, train_overrides={"steps": 40, "batch_size": 8, "lr": 1e-2},
                            **OPTS)
    tests = [tmp_path / f"{d}_george_{t}.wav" for d in range(10) for t in (0, 1)]
    df = res.predict(tests, device="cpu")
    assert df.error.isna().all() and list(df.columns[:4]) == ["path", "prediction", "score", "error"]
    probs = df[res.records[0].class_names].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    acc = float(np.mean([p == "d" + Path(f).name[0] for p, f in zip(df.prediction, df.path)]) * 100)
    assert acc == pytest.approx(res.records[0].seeds[0].metrics["accuracy"], abs=1e-6)

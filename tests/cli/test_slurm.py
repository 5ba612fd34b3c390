"""Cluster launch through submitit's local executor (real job processes, the code path of SLURM jobs):
`extract --slurm` fans the shards out as a job array, `probe --nodes 1 --gpus 2 --slurm` trains on 2
data-parallel ranks (gloo) and only rank 0 writes the record, `tune --workers 2 --slurm` runs 2 workers on
one study. Real FSDD clips through the bat-tiny backbone; nothing mocked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

submitit = pytest.importorskip("submitit")

from probekit.cli import main  # noqa: E402

MANIFEST_OPTS = ("--backbone", "bat-tiny", "--device", "cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, fsdd_root):
    """A manifest of 40 real FSDD clips (30 train, 10 test), extracted once by a 2-task job array."""
    d = tmp_path_factory.mktemp("slurm")
    rows = ["path,labels,split"]
    for digit in range(10):
        for take in range(4):
            name = f"{digit}_jackson_{take}.wav"
            shutil.copyfile(fsdd_root / "recordings" / name, d / name)
            rows.append(f"{name},d{digit},{'test' if take == 0 else 'train'}")
    (d / "m.csv").write_text("\n".join(rows) + "\n")
    return d


def _extract(d: Path, cache: str, *more: str) -> list[str]:
    return ["extract", *MANIFEST_OPTS, "--dataset", f"manifest:{d / 'm.csv'}", "--cache-dir", str(d / cache),
            "--batch-size", "4", "--clips-per-shard", "8", "--workers", "0", "--no-progress", *more]


def _stores(cache: Path) -> dict[str, np.ndarray]:
    from probekit.cache import list_stores
    from probekit.cache.reader import CacheReader
    from probekit.tokens import TokenRequest

    out = {}
    for p in list_stores(cache):
        r = CacheReader(p, preload=False)
        b = next(iter(r.batches(TokenRequest(cls=True, patch=True), r.num_clips)))
        out[r.store.key["dataset"]["split"]] = np.concatenate([b.cls.numpy().ravel(), b.patch.numpy().ravel()])
    return out


def test_extract_fans_shards_out_as_a_job_array(tiny, capsys):
    logs = tiny / "logs-extract"
    assert main(_extract(tiny, "cache", "--slurm", "local", "--slurm", f"folder={logs}", "--jobs", "2")) == 0
    out = capsys.readouterr().out
    assert "submitted extraction as 2 shard job(s)" in out and f"logs: {logs}" in out and "follow: tail -f" in out
    assert "extraction: 2 job(s) done" in out
    task_logs = sorted(logs.glob("*_0_log.err"))
    assert len(task_logs) == 2  # one log pair per array task
    # both tasks extracted: 30 train clips in 4 shards of 8, 10 test clips in 2; every shard done and verified
    assert main(["cache", "verify", "--cache-dir", str(tiny / "cache")]) == 0
    fanned = _stores(tiny / "cache")
    assert sorted(fanned) == ["test", "train"]
    # the same tokens as one process extracting everything
    assert main(_extract(tiny, "cache-one")) == 0
    one = _stores(tiny / "cache-one")
    for split in ("train", "test"):
        np.testing.assert_array_equal(fanned[split], one[split])


def _probe(d: Path, results: str, *more: str) -> list[str]:
    return ["probe", "linear", *MANIFEST_OPTS, "--dataset", f"manifest:{d / 'm.csv'}", "--cache-dir", str(d / "cache"),
            "--results-dir", str(d / results), "--set", "steps=30", "--set", "batch_size=8", "--set", "lr=0.01",
            "--no-progress", *more]


def _records(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.json") if "studies" not in p.parts)


def test_probe_on_two_local_tasks_equals_one_process(tiny, capsys):
    if not list((tiny / "cache").glob("*.zarr")):
        assert main(_extract(tiny, "cache")) == 0
    logs = tiny / "logs-probe"
    assert main(_probe(tiny, "res-ddp", "--nodes", "1", "--gpus", "2", "--slurm", "local",
                       "--slurm", f"folder={logs}")) == 0
    out = capsys.readouterr().out
    assert "a probe on 1 node(s) x 2 rank(s)" in out and f"results: rank 0 writes the record under {tiny / 'res-ddp'}" in out
    assert len(list(logs.glob("*_log.err"))) == 2  # two tasks, two ranks
    ddp = _records(tiny / "res-ddp")
    assert len(ddp) == 1  # only rank 0 wrote a record
    assert len(list((tiny / "res-ddp").rglob("*.probe.safetensors"))) == 1

    assert main(_probe(tiny, "res-one")) == 0
    one = _records(tiny / "res-one")
    a, b = json.loads(ddp[0].read_text()), json.loads(one[0].read_text())
    assert abs(a["seeds"][0]["metrics"][a["metric"]] - b["seeds"][0]["metrics"][b["metric"]]) <= 1e-5
    from safetensors.numpy import load_file

    wa = load_file(next((tiny / "res-ddp").rglob("*.probe.safetensors")))
    wb = load_file(next((tiny / "res-one").rglob("*.probe.safetensors")))
    assert sorted(wa) == sorted(wb)
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_tune_workers_share_one_study(tiny, capsys):
    if not list((tiny / "cache").glob("*.zarr")):
        assert main(_extract(tiny, "cache")) == 0
    logs, res = tiny / "logs-tune", tiny / "res-tune"
    args = ["tune", "linear", "--backbone", "bat-tiny", "--dataset", f"manifest:{tiny / 'm.csv'}", "--cache-dir",
            str(tiny / "cache"), "--results-dir", str(res), "--trials", "4", "--startup", "2", "--seeds", "1",
            "--set", "steps=10", "--study", "s1", "--no-progress"]
    assert main([*args, "--workers", "2", "--slurm", "local", "--slurm", f"folder={logs}"]) == 0
    out = capsys.readouterr().out
    assert "submitted 2 tuning worker(s)" in out and "tuning: 2 job(s) done" in out
    import optuna

    study = optuna.load_study(study_name="s1", storage=f"sqlite:///{res / 'studies' / 's1.db'}")
    done = [t for t in study.trials if t.state.is_finished()]
    assert len(done) == 4  # the budget, shared: not 4 per worker
    import os

    pids = {(t.system_attrs.get("probekit:worker") or {}).get("pid") for t in done}
    assert pids and os.getpid() not in pids and None not in pids  # run by the worker jobs, not by this process
    assert len(_records(res)) == 1  # the seed retrain after the workers wrote the one record

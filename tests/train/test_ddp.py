"""Data-parallel probe training (probekit.distributed): 2 gloo ranks on CPU train to the same losses and
final metric as one process on real FSDD tokens, also after both ranks are SIGKILLed mid-run and resumed.

The ranks are real processes started like torchrun starts them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT); this file is also their program (`python tests/train/test_ddp.py SPEC.json`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

RUNS = {
    # CGP (dropout 0.2 drawn over the global batch), multi-class CE, full batches split 24/24
    "cgp": {"probe": "cgp", "hparams": {"prototypes": 32}, "data": "train",
            "config": {"steps": 20, "batch_size": 48, "lr": 3e-3, "eval_every": 10, "log_every": 5,
                       "checkpoint_every": 5, "warmup_steps": 3}},
    # linear, multi-label BCE, batch 47 (24/23 per rank) and a ragged last batch of 39 (20/19)
    "linear_ml": {"probe": "linear", "hparams": {}, "data": "multilabel",
                  "config": {"epochs": 3, "steps": None, "batch_size": 47, "drop_last": False, "lr": 1e-2,
                             "eval_every": 5, "log_every": 2, "checkpoint_every": 100}},
}


def _tokens(d: dict):
    from probekit.tokens import InMemoryTokens

    return InMemoryTokens(d["patch"], d["cls"], d["labels"], num_classes=d["num_classes"],
                          multilabel=d["multilabel"], grid=(4, 4))


def _pack(t) -> dict:
    return {"patch": t.patch, "cls": t.cls, "labels": t.labels, "num_classes": t.num_classes,
            "multilabel": t.multilabel}


def train_one(name: str, data: dict, *, checkpoint_dir=None, on_eval=None) -> dict:
    """One run of RUNS[name]: logged losses, validation scores, final metric and the weights."""
    from probekit.probes import make_probe
    from probekit.train import TrainConfig, fit

    spec = RUNS[name]
    train = _tokens(data[spec["data"]])
    val = _tokens(data[spec["data"] + "_val"])
    probe = make_probe(spec["probe"], num_layers=train.num_layers, embed_dim=train.embed_dim,
                       num_classes=train.num_classes, seed=0, **spec["hparams"])
    cfg = TrainConfig(device="cpu", seed=3, **spec["config"])
    res = fit(probe, train, config=cfg, val_data=val, progress=False, checkpoint_dir=checkpoint_dir,
              on_eval=on_eval)
    return {"losses": [(h["step"], h["loss"]) for h in res.history],
            "vals": [(h["step"], h["val"]) for h in res.history if "val" in h],
            "final": res.val_score, "steps": res.steps_run, "resumed_from": res.resumed_from,
            "weights": {k: v.detach().numpy().tolist() for k, v in res.probe.state_dict().items()}}


def _worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(1)
    data = torch.load(spec["data"], weights_only=False)
    rank = int(os.environ["RANK"])
    out = {name: train_one(name, data) for name in spec["runs"]}
    Path(spec["out"]).joinpath(f"rank{rank}.json").write_text(json.dumps(out))
    if spec.get("checkpoint_dir"):  # then a checkpointed run, both ranks SIGKILLed at step `kill_at`
        kill = spec.get("kill_at")

        def on_eval(step, value):
            if step == kill:  # after rank 0 saved the checkpoint of this step
                os.kill(os.getpid(), signal.SIGKILL)

        res = train_one("cgp", data, checkpoint_dir=spec["checkpoint_dir"], on_eval=on_eval)
        Path(spec["out"]).joinpath(f"resumed{rank}.json").write_text(json.dumps(res))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp: Path, tag: str, data_path: Path, runs: list[str], world: int = 2, **extra) -> list[int]:
    """Start `world` ranks as torchrun would; their exit codes."""
    out = tmp / tag
    out.mkdir()
    spec = {"data": str(data_path), "runs": runs, "out": str(out), **extra}
    (out / "spec.json").write_text(json.dumps(spec))
    port = _free_port()
    procs = []
    for r in range(world):
        env = {**os.environ, "RANK": str(r), "WORLD_SIZE": str(world), "LOCAL_RANK": str(r),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, __file__, str(out / "spec.json")], env=env, cwd=REPO,
                                      stderr=subprocess.PIPE, text=True))
    deadline = time.time() + 120
    codes = []
    for p in procs:
        try:
            p.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        codes.append(p.returncode)
    if any(c not in (0, -signal.SIGKILL) for c in codes):
        errs = "\n".join((p.stderr.read() or "")[-3000:] for p in procs)
        pytest.fail(f"rank exit codes {codes}:\n{errs}")
    for p in procs:
        p.stderr.close()
    return codes


def _same(a: dict, b: dict, what: str) -> None:
    assert [s for s, _ in a["losses"]] == [s for s, _ in b["losses"]], what
    np.testing.assert_allclose([v for _, v in a["losses"]], [v for _, v in b["losses"]], rtol=1e-5, atol=1e-6,
                               err_msg=f"{what}: logged losses")
    np.testing.assert_allclose([v for _, v in a["vals"]], [v for _, v in b["vals"]], atol=1e-5,
                               err_msg=f"{what}: validation scores")
    assert abs(a["final"] - b["final"]) <= 1e-5, what
    for k in a["weights"]:
        np.testing.assert_allclose(a["weights"][k], b["weights"][k], rtol=1e-4, atol=1e-5, err_msg=f"{what}: {k}")


def _fsdd_tokens():
    # by path: a site-packages `tests` package can shadow this folder's namespace package
    import importlib.util

    spec = importlib.util.spec_from_file_location("ddp_fsdd_tokens", REPO / "tests" / "fsdd_tokens.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fsdd_tokens


@pytest.fixture(scope="module")
def token_file(fsdd_root, tmp_path_factory) -> Path:
    make = _fsdd_tokens()
    # 180 training clips (takes 5-7 of every digit and speaker), 120 validation clips (takes 0-1)
    data = {"train": _pack(make(fsdd_root, takes=(5, 8))), "train_val": _pack(make(fsdd_root, takes=(0, 2))),
            "multilabel": _pack(make(fsdd_root, takes=(5, 8), multilabel=True)),
            "multilabel_val": _pack(make(fsdd_root, takes=(0, 2), multilabel=True))}
    path = tmp_path_factory.mktemp("ddp") / "tokens.pt"
    torch.save(data, path)
    return path


def test_two_ranks_equal_one_process_and_resume_after_kill(token_file, tmp_path):
    data = torch.load(token_file, weights_only=False)
    single = {name: train_one(name, data) for name in RUNS}
    for name in RUNS:  # it learns: the logged loss falls
        assert single[name]["losses"][-1][1] < single[name]["losses"][0][1]

    # 2 gloo ranks, uninterrupted: the same losses per logged step and the same final metric as 1 process;
    # then a checkpointed run whose ranks are both SIGKILLed right after step 10 (rank 0 saved it)
    ckpt = tmp_path / "ckpt"
    codes = _launch(tmp_path, "ddp", token_file, list(RUNS), checkpoint_dir=str(ckpt), kill_at=10)
    assert codes == [-signal.SIGKILL] * 2
    ranks = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in range(2)]
    for name in RUNS:
        assert ranks[0][name]["weights"] == ranks[1][name]["weights"], f"{name}: ranks drifted apart"
        _same(single[name], ranks[0][name], f"{name}: 2 ranks vs 1 process")
    assert sorted(p.name for p in ckpt.iterdir()) == ["fit_state.pt"]  # one checkpoint, no temp left behind

    # restarted: both ranks resume from rank 0's checkpoint and end as the uninterrupted run
    _launch(tmp_path, "resumed", token_file, [], checkpoint_dir=str(ckpt))
    resumed = [json.loads((tmp_path / "resumed" / f"resumed{r}.json").read_text()) for r in range(2)]
    assert resumed[0]["resumed_from"] == resumed[1]["resumed_from"] == 10
    assert resumed[0]["weights"] == resumed[1]["weights"]
    _same(single["cgp"], resumed[0], "cgp: killed + resumed on 2 ranks vs 1 process")


def test_shard_bounds_cover_every_clip_once():
    from probekit.distributed import shard_bounds

    for n in (1, 2, 7, 47, 48):
        for w in (1, 2, 3, 8):
            parts = [shard_bounds(n, r, w) for r in range(w)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [b - a for a, b in parts]
            assert max(sizes) - min(sizes) <= 1


if __name__ == "__main__":
    _worker(sys.argv[1])

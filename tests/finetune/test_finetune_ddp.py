"""Data-parallel fine-tuning: 2 gloo ranks on CPU equal one process on the global batch (losses per step,
final weights, test scores), also after a stop-and-resume on 2 ranks; only rank 0 writes files.

Every random draw of the recipe is on (waveform gain and colour noise, time roll, mixup pairs across the
ranks' halves, SpecAugment masks, head dropout, drop path), with uneven shares (batch 7 on 2 ranks: 4/3, a
ragged last batch of 2: 1/1), gradient accumulation, clipping and EMA. The ranks are real processes started
as torchrun starts them; this file is also their program (`python tests/finetune/test_finetune_ddp.py SPEC`).
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

SETS = dict(optimization_steps=4, lr_warmup_steps=1, train_batch_size=7, grad_accumulation_steps=2,
            checkpoint_every=0, use_mixup=True, mixup_chance=0.9, mixup_beta=0.8, use_tf_mask=True,
            use_time_roll=True, use_color_noise=True, color_noise_chance=0.5, use_random_gain=True,
            head_dropout=0.2, path_dropout_rate=0.1, grad_clip_norm=1.0, ema_decay=0.9, lr=1e-3,
            eval_batch_size=8, lr_layer_decay=0.75)


def _dataset(root: str):
    import importlib.util

    # by path: a site-packages `tests` package can shadow this folder
    spec = importlib.util.spec_from_file_location("ftddp_conftest", REPO / "tests" / "finetune" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.fsdd_part(Path(root), 16, 6)


def _run(root: str, run_dir: Path, results_dir: Path, **kw) -> dict:
    from probekit.backbones import get_backbone
    from probekit.finetune import finetune
    from probekit.finetune.loop import load_weights

    out = finetune(get_backbone("bat-tiny", seed=0), _dataset(root), sets=SETS, device="cpu", write=True,
                   run_dir=run_dir, results_dir=results_dir, **kw)
    (r,) = out.runs[0]
    doc = {"losses": r.losses, "stopped": r.stopped, "resumed_from": r.resumed_from}
    if not r.stopped:
        doc["weights"] = {k: v.numpy().tolist() for k, v in load_weights(r.last_path).items()}
        doc["scores"] = r.scores.tolist()
        doc["record"] = None if out.path is None else str(out.path)
    return doc


def _worker(spec_path: str) -> None:
    import probekit._io as io

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    out = Path(spec["out"])
    written: list[str] = []
    for name in ("atomic_write_bytes", "atomic_write_text"):  # note every file this rank writes
        real = getattr(io, name)

        def noting(path, *a, _real=real, **k):
            written.append(str(path))
            return _real(path, *a, **k)

        setattr(io, name, noting)
    res = {"straight": _run(spec["root"], out / "straight", out / f"results{rank}")}
    res["stopped"] = _run(spec["root"], out / "resumed", out / f"results{rank}", stop_after=2)
    res["resumed"] = _run(spec["root"], out / "resumed", out / f"results{rank}")
    res["written"] = written
    (out / f"rank{rank}.json").write_text(json.dumps(res))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, root: Path, world: int = 2) -> None:
    out.mkdir()
    (out / "spec.json").write_text(json.dumps({"root": str(root), "out": str(out)}))
    port = _free_port()
    procs = []
    for r in range(world):
        env = {**os.environ, "RANK": str(r), "WORLD_SIZE": str(world), "LOCAL_RANK": str(r),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, __file__, str(out / "spec.json")], env=env, cwd=REPO,
                                      stderr=subprocess.PIPE, text=True))
    deadline = time.time() + 180
    for p in procs:
        try:
            p.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
    if any(p.returncode for p in procs):
        errs = "\n".join((p.stderr.read() or "")[-3000:] for p in procs)
        pytest.fail(f"rank exit codes {[p.returncode for p in procs]}:\n{errs}")
    for p in procs:
        p.stderr.close()


def _close(a: dict, b: dict, what: str) -> None:
    assert len(a["losses"]) == len(b["losses"]) == SETS["optimization_steps"], what
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-5, atol=1e-5, err_msg=f"{what}: losses")
    assert a["weights"].keys() == b["weights"].keys()
    for k in a["weights"]:
        np.testing.assert_allclose(a["weights"][k], b["weights"][k], rtol=0, atol=1e-5, err_msg=f"{what}: {k}")
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5, err_msg=f"{what}: test scores")


def test_two_ranks_equal_one_process_and_resume(fsdd_root, tmp_path):
    single = _run(str(fsdd_root), tmp_path / "one", tmp_path / "results1p")
    assert single["losses"][-1] != single["losses"][0] and single["record"]

    _launch(tmp_path / "ddp", fsdd_root)
    ranks = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in range(2)]
    for r in ranks:
        _close(single, r["straight"], f"rank {r is ranks[1] and 1 or 0}: 2 ranks vs 1 process")
        # stopped after 2 steps on 2 ranks, resumed on 2 ranks from rank 0's checkpoint: the straight run
        assert r["stopped"]["stopped"] and r["resumed"]["resumed_from"] == 2
        _close(r["straight"], {**r["resumed"], "losses": r["resumed"]["losses"]}, "resumed on 2 ranks")
    assert ranks[0]["straight"]["weights"] == ranks[1]["straight"]["weights"]  # the ranks never drift apart

    # rank 0 alone writes: weights, checkpoints, the record; rank 1 nothing at all
    assert ranks[1]["written"] == [] and ranks[1]["straight"]["record"] is None
    assert ranks[0]["straight"]["record"] and any(p.endswith("state.pt") for p in ranks[0]["written"])
    assert not (tmp_path / "ddp" / "results1").exists()


def test_too_small_global_batch_is_refused_before_training(fsdd_root, tmp_path):
    """A global batch smaller than the ranks would leave a rank without clips: one-line ConfigError."""
    import torch.distributed as dist

    from probekit.errors import ConfigError
    from probekit.finetune.ddp import Ranks

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        ranks = Ranks(0, 2)
        with pytest.raises(ConfigError, match="leaves a rank without clips"):
            ranks.take(1)
        assert ranks.take(7) == slice(0, 4) and ranks.weight == 4 / 7
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1])

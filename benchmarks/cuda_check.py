"""CUDA paths against the CPU reference: encoders, frontends, extraction and probe training.

    PYTHONPATH=. python benchmarks/cuda_check.py --data-root DIR_WITH_fsdd [--json out.json]

Each check runs the same inputs on the CPU (float32, the reference every parity test uses) and on the
GPU, and prints the deviation and the speed side by side:
- every registered tiny backbone and the ViT-B sized bat/eat/beats/audiomae (random weights): per-block
  token deviation |cuda - cpu| / max|cpu| with TF32 off (exactness of the math) and on (what users get
  by default), and encode throughput on both devices;
- the frontends of each family: max abs difference;
- `probekit.evaluate` on FSDD (linear, cgp) on both devices: test accuracy and wall time (the GPU run uses
  bf16 autocast for training as `TrainConfig` does on CUDA).
On a machine without CUDA it runs the CPU side only and says so.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path

import torch

from probekit.audio.io import load_audio
from probekit.backbones import get_backbone, list_backbones
from probekit.datasets import get_dataset


def _load(clip) -> torch.Tensor:
    return load_audio(clip.path, sample_rate=16000, offset=clip.offset, duration=clip.duration).reshape(-1)


def _batch(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(w.numel() for w in waves)
    out = torch.zeros(len(waves), n)
    for i, w in enumerate(waves):
        out[i, : w.numel()] = w
    return out, torch.tensor([w.numel() for w in waves])


def _tokens(bb, wave, lengths, device):
    bb = bb.to(device).eval()
    with torch.no_grad():
        t0 = time.perf_counter()
        tok = bb.forward_tokens(wave.to(device), lengths.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    return tok.patch.float().cpu(), tok.cls.float().cpu(), dt


def check_encoders(names, wave, lengths, cuda: bool) -> list[dict]:
    rows = []
    for name in names:
        row = {"backbone": name}
        try:
            cpu = torch.device("cpu")
            bb = get_backbone(name, seed=0)
            _tokens(bb, wave[:1], lengths[:1], cpu)  # warm-up
            p_cpu, c_cpu, t_cpu = _tokens(bb, wave, lengths, cpu)
            row.update(cpu_s=round(t_cpu, 4), layers=int(p_cpu.shape[1]))
            if cuda:
                dev = torch.device("cuda")
                for tf32 in (False, True):
                    torch.backends.cuda.matmul.allow_tf32 = tf32
                    torch.backends.cudnn.allow_tf32 = tf32
                    _tokens(bb, wave[:1], lengths[:1], dev)
                    p_gpu, c_gpu, t_gpu = _tokens(bb, wave, lengths, dev)
                    scale = float(p_cpu.abs().max())
                    per_block = ((p_gpu - p_cpu).abs().amax(dim=(0, 2, 3)) / scale).tolist()
                    key = "tf32" if tf32 else "fp32"
                    row[f"{key}_max_rel"] = max(per_block)
                    row[f"{key}_cls_max_rel"] = float((c_gpu - c_cpu).abs().max()) / max(scale, 1e-12)
                    row[f"{key}_cuda_s"] = round(t_gpu, 4)
                torch.backends.cuda.matmul.allow_tf32 = False
                row["speedup"] = round(row["cpu_s"] / max(row["fp32_cuda_s"], 1e-9), 1)
            bb.to("cpu")
        except Exception as e:  # noqa: BLE001 - report and go on to the next check
            row["error"] = f"{type(e).__name__}: {e}"[:300]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def check_evaluate(root: Path, cuda: bool, steps: int) -> list[dict]:
    import probekit

    rows = []
    devices = ["cpu"] + (["cuda"] if cuda else [])
    for dev in devices:
        row = {"device": dev}
        try:
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                res = probekit.evaluate(
                    "bat-tiny-fsdd", datasets=["fsdd"], probes=["linear", "cgp"], data_root=root,
                    cache_dir=Path(tmp) / "cache", results_dir=Path(tmp) / "results", device=dev,
                    hparams={"cgp": {"prototypes": 64}, "linear": {}},
                    train_overrides={"steps": steps, "warmup_steps": max(1, steps // 10)},
                    progress=False, write=False,
                )
            row.update({r.probe: round(float(r.score), 2) for r in res.records})
            row["wall_s"] = round(time.perf_counter() - t0, 1)
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {e}"[:300]
            traceback.print_exc()
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, required=True, help="folder holding fsdd/recordings")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--big", nargs="*", default=["bat", "eat", "beats-iter3", "audiomae"],
                    help="ViT-B sized names to check besides every *-tiny name")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--skip-evaluate", action="store_true")
    ap.add_argument("--skip-encoders", action="store_true")
    a = ap.parse_args()
    cuda = torch.cuda.is_available()
    env = {"torch": torch.__version__, "cuda": cuda,
           "gpu": torch.cuda.get_device_name(0) if cuda else None}
    print(json.dumps(env), flush=True)
    test = get_dataset("fsdd", root=a.data_root / "fsdd").clips("test")
    waves = [_load(c) for c in test[:: max(1, len(test) // a.clips)][: a.clips]]
    wave, lengths = _batch(waves)
    names = [n for n in list_backbones() if n.endswith("-tiny")] + [n for n in a.big if n in list_backbones()]
    out = {"env": env, "encoders": [] if a.skip_encoders else check_encoders(names, wave, lengths, cuda)}
    if not a.skip_evaluate:
        out["evaluate"] = check_evaluate(a.data_root / "fsdd", cuda, a.steps)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Does successive halving pay? The same 50-trial study (25 Sobol + 25 TPE) with and without pruning.

Targets (issue 5/9): with pruning the study uses <= 0.4x the training steps of the unpruned study and its
best validation score is within 0.5 points of the unpruned best.

Data: log-mel patch tokens of all 2,700 real FSDD training clips (tests/tune/fsdd_tokens.py); 20% held out,
stratified, for validation. Probe and protocol: MLP on the cls tokens, FSDD protocol shortened to 300
steps of batch 32 with validation every 30 steps (pruning rungs at 30, 120 steps with the default
reduction factor 4; 30, 90, 270 with 3; 30, 60, 120, 240 with 2). `--pruner-warmup W` puts the first rung
at W validations.

    PYTHONPATH=. python benchmarks/tune_pruning.py [--trials 50] [--probe mlp] [--steps 300] [--hyperband]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import optuna
import torch
from rich.console import Console
from rich.table import Table

from probekit.tune import tune

REPO = Path(__file__).resolve().parents[1]


def _fsdd_tokens():
    spec = importlib.util.spec_from_file_location("fsdd_tokens", REPO / "tests" / "tune" / "fsdd_tokens.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.fsdd_tokens


def _fsdd_root() -> Path:
    for c in (REPO.parent / "shared", REPO.parent.parent / "shared", Path("/work/shared")):
        if (c / "data" / "fsdd" / "recordings").is_dir():
            return c / "data" / "fsdd"
    raise SystemExit("FSDD not found beside the repository (../shared/data/fsdd)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--startup", type=int, default=25)
    ap.add_argument("--probe", default="mlp")
    ap.add_argument("--only", default="lr,weight_decay", help="names searched (the unmute protocol: lr, weight decay)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=30)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--reduction-factor", type=int, default=4)
    ap.add_argument("--pruner-warmup", type=int, default=None,
                    help="validations before the first rung (default: probekit's TuneOptions default)")
    ap.add_argument("--hyperband", action="store_true", help="also run the Hyperband pruner")
    ap.add_argument("--storage-dir", type=Path, default=None,
                    help="keep the studies here; a rerun resumes them (finished ones cost nothing)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console = Console()

    t0 = time.perf_counter()
    train = _fsdd_tokens()(_fsdd_root(), split="train", per_digit_speaker=45)
    console.print(f"tokens: {train.num_clips} FSDD clips, {train.num_layers} layers x {train.grid} x {train.embed_dim} "
                  f"({time.perf_counter() - t0:.1f} s)")
    overrides = {"steps": args.steps, "warmup_steps": args.steps // 10, "batch_size": 32, "eval_every": args.eval_every}
    pruners = ["none", "sha"] + (["hyperband"] if args.hyperband else [])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.storage_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for pruner in pruners:
            t = time.perf_counter()
            tag = pruner if pruner == "none" else f"{pruner}{args.reduction_factor}" + (
                f"w{args.pruner_warmup}" if args.pruner_warmup is not None else "")
            extra = {} if args.pruner_warmup is None else {"pruner_warmup": args.pruner_warmup}
            results[pruner] = r = tune(
                args.probe, train, protocol="fsdd", n_trials=args.trials, n_startup=args.startup, pruner=pruner,
                reduction_factor=args.reduction_factor, only=tuple(args.only.split(",")), train_overrides=overrides,
                val_fraction=args.val_fraction, seeds=0, seed=args.seed, **extra, storage=f"sqlite:///{folder}/{tag}.db",
                study_name=f"bench-{tag}-s{args.seed}", progress=args.progress,
            )
            r.wall = time.perf_counter() - t  # type: ignore[attr-defined]
            console.print(f"{pruner}: {r.trials}, {r.total_steps} steps, best {r.best_value:.2f} ({r.wall:.0f} s)")

    base = results["none"]
    table = Table(title=f"{args.trials}-trial study ({args.startup} Sobol + TPE), {args.probe} on FSDD, "
                        f"{args.steps} steps/trial, validation every {args.eval_every}, "
                        f"reduction factor {args.reduction_factor}, pruner warm-up {args.pruner_warmup or 'default'}", header_style="bold")
    for col in ("pruner", "complete", "pruned", "training steps", "steps ratio", "best val acc", "diff (points)", "wall s"):
        table.add_column(col, justify="right")
    for pruner, r in results.items():
        table.add_row(pruner, str(r.trials["complete"]), str(r.trials["pruned"]), f"{r.total_steps:,}",
                      f"{r.total_steps / base.total_steps:.3f}x", f"{r.best_value:.2f}",
                      f"{r.best_value - base.best_value:+.2f}", f"{r.wall:.0f}")
    console.print(table)
    sha = results["sha"]
    ratio, diff = sha.total_steps / base.total_steps, sha.best_value - base.best_value
    ok_ratio, ok_diff = ratio <= 0.4, diff >= -0.5
    console.print(f"successive halving: steps {ratio:.3f}x (target <= 0.4: {'PASS' if ok_ratio else 'FAIL'}), "
                  f"best validation {diff:+.2f} points (target within 0.5: {'PASS' if ok_diff else 'FAIL'})")


if __name__ == "__main__":
    main()

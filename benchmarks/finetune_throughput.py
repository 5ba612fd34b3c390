"""Fine-tuning throughput: clips/s of one full fine-tuning step vs the bare encoder forward+backward.

Both run at the same batch on the same in-memory features (no decoding), so the ratio is the cost of
what fine-tuning adds around the encoder: the recipe's augmentations (mixup, SpecAugment masks, time
roll), drop path, the head, the loss, gradient clipping (when set), the layer-wise-decay AdamW step and
zeroing the gradients.

    python benchmarks/finetune_throughput.py --backbone bat --recipe as20k --batch 48 --frames 1024 --device cuda
    python benchmarks/finetune_throughput.py --backbone bat-tiny --batch 16 --frames 256 --device cpu

Random weights of the backbone's architecture (speed does not depend on them). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="bat-tiny")
    ap.add_argument("--recipe", default="as20k")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--classes", type=int, default=527)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best of each is kept)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from probekit._device import resolve_device
    from probekit.backbones import get_backbone
    from probekit.finetune import get_recipe
    from probekit.finetune.augment import augment_features
    from probekit.finetune.loop import _amp, _loss_fn, build_optimizer
    from probekit.finetune.model import FinetuneModel
    from probekit.finetune.optim import scheduled_lr

    dev = resolve_device(args.device)
    recipe = get_recipe(args.recipe)
    bb = get_backbone(args.backbone, weights="random", seed=0, device=dev)
    fe = bb.frontend
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, args.frames, fe.num_bins, device=dev) if bb.card.family in ("bat", "eat", "sslam") \
        else fe(torch.randn(args.batch, int(bb.sample_rate * args.frames / 100), device=dev) * 0.1)
    x = x[0] if isinstance(x, tuple) else x
    valid = torch.full((args.batch,), x.shape[-2] if x.ndim == 4 else x.shape[1], dtype=torch.long)
    multilabel = recipe.use_asymmetric_loss or recipe.use_mixup
    y = (torch.rand(args.batch, args.classes, device=dev) < 0.05).float() if multilabel else \
        torch.randint(0, args.classes, (args.batch,), device=dev)
    amp = _amp(recipe, dev)

    # bare: the encoder alone (a trainable copy, no drop path), forward + backward of its last cls
    bare = FinetuneModel(bb, args.classes, head_norm=False, head_dropout=0.0, drop_path=0.0).to(dev).train()

    def bare_step():
        with torch.autocast(device_type=dev.type, dtype=amp, enabled=amp is not None):
            cls = bare._encode(bare.backbone, x, valid, layers=[-1]).cls[:, -1]
        cls.float().square().mean().backward()
        for p in bare.encoder.parameters():
            p.grad = None

    # fine-tuning step: the loop's pieces in the loop's order
    model = FinetuneModel(bb, args.classes, head_norm=recipe.head_norm, head_dropout=recipe.head_dropout,
                          drop_path=recipe.path_dropout_rate).to(dev).train()
    opt = build_optimizer(model, recipe)
    loss_fn = _loss_fn(recipe, multilabel)
    np_rng, py_rng = np.random.RandomState(0), random.Random(0)
    step = {"n": 0}

    def ft_step():
        xa, ya = x, y.float() if multilabel else y
        with torch.no_grad():
            xa, ya = augment_features(xa, ya, recipe, np_rng=np_rng, py_rng=py_rng)
        with torch.autocast(device_type=dev.type, dtype=amp, enabled=amp is not None):
            logits = model(xa, valid)
        loss_fn(logits.float(), ya).backward()
        if recipe.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip_norm)
        for g in opt.param_groups:
            g["lr"] = scheduled_lr(step["n"], lr=recipe.lr, min_lr=recipe.min_lr, warmup=recipe.lr_warmup_steps,
                                   total=recipe.optimization_steps, lr_scale=g["lr_scale"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        step["n"] += 1

    # interleaved rounds, best of each: a shared machine's load hits both alike
    t_bare, t_ft = float("inf"), float("inf")
    for r in range(args.rounds):
        t_bare = min(t_bare, _timed(bare_step, args.steps, args.warmup if r == 0 else 0, dev))
        t_ft = min(t_ft, _timed(ft_step, args.steps, args.warmup if r == 0 else 0, dev))
    out = {
        "backbone": args.backbone, "recipe": recipe.name, "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "batch": args.batch, "steps": args.steps, "rounds": args.rounds, "input": list(x.shape[1:]), "amp": str(amp),
        "bare_fwd_bwd_clips_per_s": args.batch / t_bare, "finetune_step_clips_per_s": args.batch / t_ft,
        "finetune_over_bare_time": t_ft / t_bare,
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()

"""One schedule for probe training and pretraining: bit-identical to each former copy over many steps."""

from __future__ import annotations

import math

import pytest

from probekit.pretrain.model import lr_at as pretrain_lr_at
from probekit.train import lr_at as fit_lr_at
from probekit.train.schedule import warmup_cosine


def _old_fit(step, *, base_lr, warmup_steps, total_steps, min_lr):  # probekit/train/fit.py before
    if warmup_steps > 0 and step <= warmup_steps:
        factor = step / warmup_steps
    elif step <= warmup_steps:
        factor = 1.0
    else:
        decay = total_steps - warmup_steps
        factor = 0.0 if decay == 0 else 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / decay))
    return max(min_lr, base_lr * factor)


def _old_pretrain(step, *, lr, min_lr, warmup_steps, total_steps):  # probekit/pretrain/model.py before
    if warmup_steps > 0 and step <= warmup_steps:
        factor = step / warmup_steps
    else:
        span = total_steps - warmup_steps
        factor = 0.0 if span <= 0 else 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))
    return max(min_lr, lr * factor)


CASES = [(0, 1), (0, 50), (1, 1), (3, 17), (10, 10), (150, 1500), (500, 20000), (1000, 10000), (2000, 200000),
         (0, 4000), (400, 4000), (7, 1001)]


@pytest.mark.parametrize("warmup,total", CASES)
@pytest.mark.parametrize("peak,floor", [(1e-3, 1e-6), (5e-2, 0.0), (3e-4, 1e-5)])
def test_probe_training_schedule_is_bit_identical(warmup, total, peak, floor):
    # fit runs steps 0 .. total-1
    for step in range(total):
        old = _old_fit(step, base_lr=peak, warmup_steps=warmup, total_steps=total, min_lr=floor)
        assert warmup_cosine(step, peak=peak, floor=floor, warmup=warmup, total=total) == old, step
        assert fit_lr_at(step, base_lr=peak, warmup_steps=warmup, total_steps=total, min_lr=floor) == old


@pytest.mark.parametrize("warmup,total", CASES)
@pytest.mark.parametrize("peak,floor", [(1.5e-4, 1e-6), (5e-2, 0.0)])
def test_pretraining_schedule_is_bit_identical(warmup, total, peak, floor):
    # the LambdaLR is stepped once past the last step, and a stopped run may be asked beyond
    for step in range(total + 50):
        old = _old_pretrain(step, lr=peak, min_lr=floor, warmup_steps=warmup, total_steps=total)
        assert warmup_cosine(step, peak=peak, floor=floor, warmup=warmup, total=total) == old, step
        assert pretrain_lr_at(step, lr=peak, min_lr=floor, warmup_steps=warmup, total_steps=total) == old

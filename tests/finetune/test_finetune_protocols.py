"""The recipes' protocols: SC-2 best validation model, ESC-50 folds, the AS-2M / HSN samplers, DDP sharding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from probekit.datasets.base import Dataset
from probekit.finetune import finetune, get_recipe
from probekit.finetune.data import batch_order, shard

SETS = dict(optimization_steps=4, lr_warmup_steps=1, train_batch_size=6, checkpoint_every=0, eval_batch_size=32,
            use_color_noise=False, use_time_roll=False)


def test_recipes_hold_the_official_values():
    a = get_recipe("as20k")
    assert (a.optimization_steps, a.train_batch_size, a.lr, a.min_lr, a.lr_layer_decay, a.lr_warmup_steps) == \
        (40000, 48, 5e-5, 1e-6, 0.75, 4000)
    assert (a.adam_beta1, a.adam_beta2, a.weight_decay, a.path_dropout_rate, a.head_dropout) == (0.9, 0.95, 0.05, 0.1, 0.2)
    assert (a.mixup_chance, a.mixup_beta, a.freq_mask_param, a.time_mask_param, a.tf_mask_repeats) == (0.9, 0.8, 16, 64, 2)
    assert a.loss_name == "asl" and a.head_norm and not a.mixup_hard_label
    e, s = get_recipe("esc50"), get_recipe("sc2")
    assert (e.selection, e.optimization_steps, e.lr_warmup_steps, e.use_mixup, e.time_mask_param) == ("cv", 4000, 400, False, 32)
    assert (s.selection, s.val_frequency, s.train_batch_size, s.head_dropout) == ("best_val", 500, 256, 0.0)
    assert get_recipe("as2m").sampler == "balanced_200k" and get_recipe("hsn").sampler == "balanced_first_label"


def test_best_validation_model_is_scored(fsdd_part_factory, tmp_path):
    ds = fsdd_part_factory(12, 8, valid=8)
    out = finetune("bat-tiny", ds, sets={**SETS, "selection": "best_val", "val_frequency": 2}, device="cpu",
                   write=False, run_dir=tmp_path)
    (run,) = out.runs[0]
    assert [h["step"] for h in run.history] == [2.0, 4.0] and run.best_step in (2, 4)
    assert run.best_path is not None and run.best_path.is_file()
    assert out.record.seeds[0].extras["best_step"] == run.best_step


def test_folds_are_cross_validated(fsdd_root, tmp_path):
    from probekit.datasets import get_dataset

    full = get_dataset("fsdd", root=fsdd_root)
    clips = [dataclasses.replace(c, fold=1 + i % 2, split="all") for i, c in enumerate(full.clips("train")[::90][:20])]
    spec = dataclasses.replace(full.spec, splits=("all",), folds=2)
    ds = Dataset(spec, full.root, lambda s: clips if s == "all" else [])
    out = finetune("bat-tiny", ds, sets={**SETS, "selection": "cv"}, device="cpu", write=False, run_dir=tmp_path)
    runs = out.runs[0]
    assert len(runs) == 2 and all(len(r.scores) == 10 for r in runs)  # each fold tested on its own 10 clips
    folds = out.record.seeds[0].extras["folds"]
    assert out.record.seeds[0].metrics["accuracy"] == pytest.approx(np.mean(folds)) and out.record.split == "all"


def test_samplers_and_sharding():
    labels = np.array([0] * 90 + [1] * 10)
    order = [i for b in batch_order(100, 10, 0, 0, sampler="balanced_first_label", labels=labels) for i in b]
    assert len(order) == 100 and 30 < sum(labels[order] == 1) < 70  # class-balanced, with replacement
    ml = np.zeros((300_000, 3), dtype=np.uint8)
    ml[:, 0] = 1
    ml[:1000, 1] = 1
    order = [i for b in batch_order(len(ml), 1000, 0, 0, sampler="balanced_200k", labels=ml, multilabel=True) for i in b]
    assert len(order) == 200_000 and len(set(order)) == 200_000  # 200,000 per pass, no replacement
    assert batch_order(10, 4, 3, 1) == batch_order(10, 4, 3, 1) != batch_order(10, 4, 4, 1)  # pass-seeded
    assert [len(b) for b in batch_order(10, 4, 0, 0)] == [4, 4, 2]  # the last batch is kept (drop_last=False)
    rows = list(range(8))
    assert sorted(shard(rows, 0, 2) + shard(rows, 1, 2)) == rows and shard(rows, 0, 1) == rows

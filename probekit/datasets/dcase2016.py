"""`dcase2016-task2`: DCASE 2016 task 2 (office sound event detection) as the BAT code reads it, from the
HEAR 2021 task folder (`hear:PATH` of task `dcase2016_task2`; hear-preprocess layout, see `hear.py`).

Facts (BAT_ICML2026 data/factory.py, data/bat_audio_datasets.py, engine/trainer.py, engine/evaluator.py,
configs/dcase2016_task2/*): splits train / valid / test of the HEAR task (`{split}.json`, events in ms),
labels from `labelvocabulary.csv` (11 classes); audio read from the task's `48000/` folder and resampled to
16 kHz (librosa, soxr_hq); 120-s recordings, `time_frame_size` 12,000 frames (10 ms hop); frame-wise
targets on the 750 time patches (160 ms stride); training 4,000 steps, batch 4, lr 1e-3 -> 1e-6, warmup
400, wd 0.05, BCE, validated every 50 steps on `valid` by frame-level micro mAP (best kept); test scored
with sed_eval event-based F1, onset-only, 200 ms collar, after a 3-tap median filter and threshold 0.3
(HEAR's primary score `event_onset_200ms_fms`).

The 48 kHz folder is read when present (BAT's input); else the folder `hear.audio_rate` picks. Option
`sample_rate=` overrides. Event tasks feed frame-wise heads; clip-level probes refuse them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from probekit.datasets import hear
from probekit.datasets._common import check_options
from probekit.datasets.base import Dataset, DatasetSpec, ProtocolDecl

TASK = "dcase2016_task2"
BAT_RATE = 48000

SPEC = DatasetSpec(
    name="dcase2016-task2",
    classes=(),  # read from labelvocabulary.csv
    declared_classes=11,
    multilabel=True,
    clip_seconds=120.0,
    splits=("train", "valid", "test"),
    frames={"fbank": 12000, "fbank@bat-paper": 12000, "bat": 12000},  # configs/dcase2016_task2 time_frame_size
    protocol="dcase2016_task2",
    metric="event_onset_200ms_fms",
    license="DCASE 2016 task 2 development/evaluation data: free for research (see the DCASE 2016 terms); "
    "HEAR 2021 redistribution under the same terms",
    citation="J. Turian et al., HEAR: Holistic Evaluation of Audio Representations, PMLR 176, 2022; "
    "E. Benetos, M. Lagrange, G. Lafay, Sound event detection in synthetic audio (DCASE 2016 task 2), 2016",
    description="DCASE 2016 task 2 office sound events (HEAR 2021 task), 11 classes, 120-s files; "
    "event-based onset F1 (200 ms collar).",
    layout="a hear-preprocess task folder of dcase2016_task2: task_metadata.json, labelvocabulary.csv, "
    "{train,valid,test}.json, 48000/{split}/*.wav (or another rate folder)",
    download="the HEAR 2021 task archive hear2021-dcase2016_task2-hear2021-full-48000.tar.gz (hearbenchmark.com,"
    " 'Download the data'): unpack into <data root>/; it holds tasks/dcase2016_task2-hear2021-full/",
    split_note="HEAR trainvaltest: train; valid selects the checkpoint (frame micro mAP); test: event F1",
)
ROOT_NAMES = (
    "dcase2016_task2-hear2021-full",
    "tasks/dcase2016_task2-hear2021-full",
    "hear-2021.0.6/tasks/dcase2016_task2-hear2021-full",
    "dcase2016_task2",
    "dcase2016-task2",
)
PROTOCOLS = (
    ProtocolDecl(
        "dcase2016_task2",
        "DCASE 2016 task 2 (frame-wise): 4,000 steps, batch 4, warmup 400, wd 0.05, BCE; validate every 50 "
        "steps on valid (frame micro mAP), best -> test (event onset F1, 200 ms)",
        {"batch_size": 4, "steps": 4000, "warmup_steps": 400, "weight_decay": 0.05, "loss": "bce",
         "selection": "best_val", "eval_every": 50},
        False, "mAP",
        source="BAT_ICML2026 configs/dcase2016_task2/sed_cgp_config.yaml + engine/trainer.py",
    ),
    # HEAR k-fold event tasks (`hear:PATH` with nfolds): the same recipe cross-validated over the task's folds,
    # each fold trained to its last step (no validation inside a fold: selection "last")
    ProtocolDecl(
        "events-cv",
        "event tasks with folds (HEAR k-fold): the dcase2016_task2 recipe (4,000 steps, batch 4, warmup 400, "
        "wd 0.05, BCE) cross-validated over the folds, last step per fold; event onset F1 (200 ms)",
        {"batch_size": 4, "steps": 4000, "warmup_steps": 400, "weight_decay": 0.05, "loss": "bce",
         "selection": "last"},
        True, "auto",
        source="BAT_ICML2026 configs/dcase2016_task2/sed_cgp_config.yaml; HEAR fold protocol (hear-eval-kit)",
    ),
)  # fmt: skip


def detect(path: Path) -> Path | None:
    meta = path / "task_metadata.json"
    if not meta.is_file():
        return None
    try:
        return path if json.loads(meta.read_text(encoding="utf-8")).get("task_name") == TASK else None
    except (OSError, ValueError, AttributeError):
        return None


def open_dataset(spec: DatasetSpec, root: Path, *, sample_rate: int | None = None, **options) -> Dataset:
    check_options(spec.name, options, ("sample_rate",))
    if sample_rate is None and (root / str(BAT_RATE)).is_dir():
        sample_rate = BAT_RATE
    ds = hear.open_dataset(root, sample_rate=sample_rate)
    # the named preset: its own name (no path digest: a registered name is its identity), BAT's frames/protocol
    ds.spec = replace(spec, classes=ds.spec.classes, class_ids=ds.spec.class_ids,
                      multilabel=ds.spec.multilabel)  # fmt: skip
    return ds

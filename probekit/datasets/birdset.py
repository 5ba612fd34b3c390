"""BirdSet test sets as named datasets: `birdset-hsn`, `-pow`, `-per`, `-nes`, `-uhh`, `-nbp`, `-ssw`, `-sne`.

Each is one config of the Hugging Face dataset `DBD-research-group/BirdSet` (32 kHz audio), kept as a
`datasets.save_to_disk` folder (the Hub's loading script needs `datasets<3`; see `HOW_TO_GET`) and read
through `probekit.datasets.hfdata` (probekit's own decoder, errors naming split and row):

* `test` = the config's `test_5s` split: soundscapes cut into 5-s files, multi-label
  (`ebird_code_multilabel`, possibly empty), each file whole (padded to 5 s by the frontend), as the
  BAT code (`BirdSet.get_test`) and Bird-MAE (`EvalTransform`) read them.
* `train` = the config's `train` split (the official Xeno-Canto training subset of that test set's species),
  cut into 5-s windows the way BirdSet's datamodule does for the multi-label task (Bird-MAE's training data):
  `XCEventMapping` -- one window per detected event of the recording's biggest event cluster (the noise
  cluster -1 dropped unless it is the only event; no event: the window [0, 5] s) -- then smart sampling
  (`class_limit=500` windows per primary class `ebird_code`, `event_limit=5` per recording, applied only
  to classes above the class limit, exactly as `BaseDataModuleHF._smart_sampling`), labels
  `ebird_code_multilabel`. The official code draws the kept events with an unseeded `random.sample` and
  shifts each window at random every epoch (training augmentation); a token cache needs one fixed window,
  so the kept events are drawn with a seeded generator (`seed=`, default 0) and each window starts at its
  event's onset (`EventDecoding` without time shifting: [start, start + 5] s).
  `train_windows="start"` instead takes one item per recording, the first 5 s in a token cache; online
  (`--online`) each training draw is a fresh random 5-s crop of the whole recording as BAT's `get_train`
  (`TRAIN_CROP`, applied by `probekit.cache.crop`: uniform offset, or a shorter recording zero-padded and
  rolled by a random shift; noise std 0.02), seeded by (seed, epoch, draw). That plus the `hsn` protocol's
  class-balanced sampler is BAT's HSN training recipe. Event windows stay fixed (BirdSet's own event-window
  time shift is not reproduced).

Metric: macro mAP over all classes (the BAT evaluator's `mAP_macro`); cmAP5 (classes with >= 5
positives, BirdSet/Bird-MAE's headline) is reported beside it. Protocol `hsn` (BAT configs/hsn/*_lp_config.yaml,
declared here as `PROTOCOL_HSN`). Frontends: 5 s at a 10 ms hop, padded to 512 frames (`time_frame_size`
of the BAT configs, `target_length` of Bird-MAE's).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np

from probekit.datasets._common import check_options
from probekit.datasets.base import Clip, Dataset, DatasetSpec
from probekit.errors import ConfigError, DatasetError

HF_PATH = "DBD-research-group/BirdSet"
WINDOW_SECONDS = 5.0
SAMPLE_RATE = 32_000  # BirdSet's audio; encoders resample to their own rate in probekit's loader
CLASS_LIMIT, EVENT_LIMIT = 500, 5  # BirdSetDataModule defaults, as Bird-MAE's util/prepare_data/downstream.py
TRAIN_WINDOWS = ("events", "start")
OPTIONS = ("train_windows", "class_limit", "event_limit", "seed", "limit", "audio_dir")

#: config -> (region, train recordings, test_5s windows, classes): the BirdSet dataset card and Bird-MAE's
#: configs/data/dataset/*.yaml (num_classes). UHH's training subset covers 25 of its 27 classes.
SETS = {
    "HSN": ("High Sierra Nevada", 5_460, 12_000, 21),
    "POW": ("Powdermill Nature Reserve", 14_911, 4_560, 48),
    "PER": ("Amazon Basin (Peru)", 16_802, 15_120, 132),
    "NES": ("Colombia and Costa Rica", 16_117, 24_480, 89),
    "UHH": ("Hawaiian Islands", 3_626, 36_637, 27),
    "NBP": ("NIPS4BPlus", 24_327, 563, 51),
    "SSW": ("Sapsucker Woods", 28_403, 205_200, 81),
    "SNE": ("Sierra Nevada", 19_390, 23_756, 56),
}
LICENSE = "CC BY-NC 4.0 (BirdSet; recordings keep their Xeno-Canto / Zenodo licences)"
CITATION = ("L. Rauch et al., BirdSet: A Large-Scale Dataset for Audio Classification in Avian Bioacoustics, "
            "ICLR 2025 (arXiv:2403.10380)")  # fmt: skip
HOW_TO_GET = ("with datasets<3: python -c \"import datasets; datasets.load_dataset('DBD-research-group/BirdSet', "
              "'{config}', trust_remote_code=True).save_to_disk('<data_root>/birdset/{config}')\" "
              "(or pass root= / --data-root to that folder)")  # fmt: skip
LAYOUT = ("<root> = a datasets.save_to_disk folder of DBD-research-group/BirdSet config {config} "
          "(dataset_dict.json with splits train and test_5s)")  # fmt: skip

#: BAT_ICML2026 configs/hsn/hsn_lp_config.yaml + engine/trainer.py (BCE without ASL; last step; the other heads'
#: configs share these optimiser settings). probekit.train.protocols registers it as protocol "hsn".
#: sampler: BAT data/factory.py (hsn), WeightedRandomSampler with 1/count of each clip's first label, len(train)
#: draws with replacement (probekit.train.sampling "class_balanced").
PROTOCOL_HSN = dict(batch_size=64, steps=10_000, warmup_steps=1_000, lr=1e-3, min_lr=1e-6, weight_decay=0.05,
                    betas=(0.9, 0.999), loss="bce", selection="last", checkpoint_every=1_000,
                    sampler="class_balanced", drop_last=False)  # fmt: skip (the DataLoader keeps the ragged batch)


#: BAT data/bat_audio_datasets.py BirdSet.get_train: a random 5-s window of the whole recording per draw
#: (shorter ones padded and rolled at random) + Gaussian noise std 0.02; `Dataset.train_crop` of train_windows=start.
TRAIN_CROP = {"seconds": WINDOW_SECONDS, "noise_std": 0.02, "source": "BAT BirdSet.get_train"}


def _spec(config: str) -> DatasetSpec:
    region, n_train, n_test, n_classes = SETS[config]
    return DatasetSpec(
        name=f"birdset-{config.lower()}",
        classes=(),  # the config's ebird codes, read from its ClassLabel feature when opened
        multilabel=True,
        clip_seconds=WINDOW_SECONDS,
        splits=("train", "test"),
        frames={"fbank": 512, "fbank@bat-paper": 512, "bat": 512},
        protocol="hsn",
        metric="mAP",
        license=LICENSE,
        citation=CITATION,
        description=f"BirdSet {config} ({region}): {n_classes} bird species, multi-label; test = test_5s "
        f"({n_test:,} 5-s soundscape windows), train = {n_train:,} Xeno-Canto recordings cut into 5-s event "
        "windows (BirdSet event mapping + smart sampling); 32 kHz; mAP (cmAP5 beside it)",
        layout=LAYOUT.format(config=config),
    )


SPECS: dict[str, DatasetSpec] = {f"birdset-{c.lower()}": _spec(c) for c in SETS}


def config_of(name: str) -> str:
    return name.rpartition("-")[2].upper()


def how_to_get(name: str) -> str:
    return HOW_TO_GET.format(config=config_of(name))


def root_names(name: str) -> tuple[str, ...]:
    c = config_of(name)
    return (f"birdset/{c}", f"BirdSet/{c}", f"birdset/{c.lower()}", name, c)


def detector(name: str):
    def detect(path: Path) -> Path | None:
        meta = path / "dataset_dict.json"
        if not meta.is_file():
            return None
        try:
            splits = json.loads(meta.read_text()).get("splits", [])
        except (OSError, ValueError, AttributeError):
            return None
        return path if {"train", "test_5s"} <= set(splits) else None

    return detect


# ---- training windows: BirdSet's XCEventMapping + smart sampling, re-derived --------------------------------
def event_windows(row: int, events, clusters) -> list[tuple[float, float]]:
    """The event windows XCEventMapping makes of one recording: [(start, end)] (seconds)."""
    ev = np.asarray(events if events is not None else [], dtype=np.float64).reshape(-1, 2)
    cl = np.asarray(clusters if clusters is not None else [], dtype=np.int64).reshape(-1)
    if len(cl) != len(ev):
        raise DatasetError(f"birdset: train row {row}: {len(ev)} detected_events but {len(cl)} event_cluster values",
                           hint="the two columns must have one entry per event")  # fmt: skip
    if not (len(cl) == 1 and cl[0] == -1):  # the noise cluster goes, unless it is the recording's only event
        keep = cl != -1
        ev, cl = ev[keep], cl[keep]
    if len(ev) == 0:
        return [(0.0, WINDOW_SECONDS)]
    values, counts = np.unique(cl, return_counts=True)
    biggest = values[counts.argmax()]  # ties: the smallest cluster id, as np.unique + argmax
    return [(float(s), float(e)) for s, e in ev[cl == biggest]]


def smart_limits(per_file: dict[tuple, int], class_limit: int | None, event_limit: int) -> dict[tuple, int]:
    """Windows kept per (recording, primary class), as `_smart_sampling`: while a class holds more windows than
    `class_limit`, its recordings with the most windows are cut down level by level (never below the
    class limit in total), stopping when the largest recording holds `event_limit`."""
    limit = class_limit if class_limit else -float("inf")
    by_class: dict = defaultdict(dict)
    for key, n in per_file.items():
        by_class[key[1]][key] = n
    out: dict[tuple, int] = {}
    for counts in by_class.values():
        c = dict(counts)
        total, most = sum(c.values()), max(c.values())
        while total > limit or most != event_limit:
            sizes = sorted(c.values(), reverse=True)
            at_max = sizes.count(most)
            to_del = most - (sizes[at_max] if at_max < len(sizes) else most)
            if total - to_del * at_max < limit or most == event_limit or most == 1 or to_del == 0:
                break  # to_del == 0 (every recording at one level) would never end in the official loop
            for k in c:
                if c[k] == most:
                    c[k] -= to_del
            total, most = sum(c.values()), max(c.values())
        out.update(c)
    return out


def _int(name: str, key: str, value, low: int) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        v = low - 1
    if v < low:
        raise ConfigError(f"{name}: {key}={value!r} must be an integer >= {low}")
    return v


def open_dataset(spec: DatasetSpec, root: Path, *, train_windows: str = "events", class_limit=CLASS_LIMIT,
                 event_limit=EVENT_LIMIT, seed=0, limit=None, audio_dir=None, **options) -> Dataset:
    """A BirdSet test set from its save_to_disk folder (see the module docstring)."""
    from probekit.datasets import hfdata

    check_options(spec.name, options, OPTIONS)
    if train_windows not in TRAIN_WINDOWS:
        raise ConfigError(f"{spec.name}: train_windows={train_windows!r}", hint=f"use one of: {', '.join(TRAIN_WINDOWS)}")
    class_limit = None if class_limit in (None, 0, "none", "None") else _int(spec.name, "class_limit", class_limit, 1)
    event_limit = _int(spec.name, "event_limit", event_limit, 1)
    seed = _int(spec.name, "seed", seed, 0)
    src = hfdata.Source(str(root), saved=Path(root))
    primary: dict[str, tuple[int, int]] = {}  # clip id -> (row, primary class) of train windows

    def rows_to_clips(split, hf, row, values, path, labels) -> list[Clip]:
        if split != "train":
            return [Clip(id=f"{hf}/{row}", path=path, labels=labels, split=split)]
        if train_windows == "start":
            return [Clip(id=f"{hf}/{row}", path=path, labels=labels, split=split, offset=0.0,
                         duration=WINDOW_SECONDS)]
        out = []
        for k, (start, _end) in enumerate(event_windows(row, values["detected_events"], values["event_cluster"])):
            cid = f"{hf}/{row}/event{k}"
            primary[cid] = (row, values["ebird_code"])
            # EventDecoding(min_len=5, max_len=5): [start, start + 5] s, whatever the event's length
            out.append(Clip(id=cid, path=path, labels=labels, split=split, offset=max(0.0, start),
                            duration=WINDOW_SECONDS))
        return out

    def finish(split: str, clips: list[Clip]) -> list[Clip]:
        if split != "train" or train_windows != "events":
            return clips
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, c in enumerate(clips):
            groups[primary[c.id]].append(i)
        limits = smart_limits({k: len(v) for k, v in groups.items()}, class_limit, event_limit)
        keep: set[int] = set()
        for key, idx in groups.items():
            rng = random.Random(f"{seed}/{key[0]}/{key[1]}")  # str seeds are stable across runs and platforms
            keep.update(idx if limits[key] >= len(idx) else rng.sample(idx, limits[key]))
        return [c for i, c in enumerate(clips) if i in keep]

    fields = dict(name=spec.name, frames=spec.frames, protocol=spec.protocol, metric=spec.metric,
                  license=spec.license, citation=spec.citation, description=spec.description, layout=spec.layout,
                  clip_seconds=spec.clip_seconds, source="")  # fmt: skip
    extra = ("ebird_code", "detected_events", "event_cluster") if train_windows == "events" else ()
    ds = hfdata.build(spec.name, src, audio_column="audio", label_column="ebird_code_multilabel", multilabel=True,
                      splits={"train": "train", "test": "test_5s"}, limit=limit, audio_dir=audio_dir,
                      extra_columns=extra, rows_to_clips=rows_to_clips, finish=finish, spec_fields=fields)
    if len(ds.spec.classes) != SETS[config_of(spec.name)][3]:
        ds.warnings.append(f"{spec.name}: {len(ds.spec.classes)} classes in the folder's ClassLabel, BirdSet "
                           f"{config_of(spec.name)} has {SETS[config_of(spec.name)][3]} (another config saved here?)")
    ds.how_to_get = how_to_get(spec.name)
    ds.train_crop = dict(TRAIN_CROP) if train_windows == "start" else None  # used online only (probekit.cache.crop)
    return ds

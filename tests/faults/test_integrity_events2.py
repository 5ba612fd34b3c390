"""Hostile event annotations (second pass): each is a one-line error naming the file and the event, or a
documented handling as the official BAT code does (overlapping events of one label)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from probekit.datasets import get_dataset
from probekit.errors import ConfigError, DatasetError

pytest.importorskip("sed_eval")


def _hear(root: Path, files: dict, *, meta: dict | None = None, seconds: float = 3.0, splits=None) -> Path:
    """A tiny HEAR event task: silent 16 kHz wavs, `files` = {split: {fname: [event dicts]}}."""
    import soundfile as sf

    root.mkdir(parents=True)
    m = {"task_name": "hostile", "version": "t", "embedding_type": "event", "prediction_type": "multilabel",
         "split_mode": "trainvaltest", "evaluation": ["event_onset_200ms_fms"], **(meta or {})}
    (root / "task_metadata.json").write_text(json.dumps(m))
    (root / "labelvocabulary.csv").write_text("idx,label\n0,dog\n1,cat\n")
    for split in splits or ("train", "valid", "test"):
        (root / "16000" / split).mkdir(parents=True)
        data = files.get(split, {"x.wav": [{"label": "dog", "start": 100.0, "end": 900.0}]})
        for fname in data:
            sf.write(str(root / "16000" / split / fname), np.zeros(int(seconds * 16000), np.float32), 16000)
        (root / f"{split}.json").write_text(json.dumps(data))
    return root


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


def test_hear_times_in_seconds_are_named(tmp_path):
    # seconds where HEAR writes milliseconds: read as ms every event would sit in the first 3 ms of 3-s clips
    files = {"test": {"a.wav": [{"label": "dog", "start": 0.5, "end": 1.25}], "b.wav": [
        {"label": "cat", "start": 1.0, "end": 2.5}]}}
    root = _hear(tmp_path / "t", files, meta={"sample_duration": 3.0})
    with pytest.raises(DatasetError, match="look like seconds") as e:
        get_dataset(f"hear:{root}")
    msg = _one_line(e)
    assert "test.json" in msg and "'a.wav'" in msg and "'dog'" in msg and "multiply" in e.value.hint


def test_hear_event_past_the_file_end_without_sample_duration(tmp_path):
    files = {"test": {"a.wav": [{"label": "dog", "start": 2000.0, "end": 4500.0}]}}
    root = _hear(tmp_path / "t", files)  # no sample_duration: the wav's own 3 s bound the events
    with pytest.raises(DatasetError, match="after the file's end") as e:
        get_dataset(f"hear:{root}")
    assert "'a.wav'" in _one_line(e) and "'dog'" in str(e.value)


def test_hear_zero_length_event_and_unknown_label_are_named(tmp_path):
    root = _hear(tmp_path / "z", {"valid": {"a.wav": [{"label": "cat", "start": 500.0, "end": 500.0}]}})
    with pytest.raises(DatasetError, match="onset 0.5 >= offset 0.5") as e:
        get_dataset(f"hear:{root}")
    assert "valid.json" in _one_line(e) and "'a.wav'" in str(e.value) and "'cat'" in str(e.value)
    root = _hear(tmp_path / "u", {"train": {"a.wav": [{"label": "bird", "start": 100.0, "end": 900.0}]}})
    with pytest.raises(DatasetError, match="'bird', not in labelvocabulary.csv") as e:
        get_dataset(f"hear:{root}")
    assert "train.json" in _one_line(e)


def test_manifest_times_in_milliseconds_get_a_hint(tmp_path):
    import soundfile as sf

    sf.write(str(tmp_path / "a.wav"), np.zeros(16000 * 3, np.float32), 16000)
    (tmp_path / "m.csv").write_text("path,label,onset,offset,split\na.wav,dog,500,1250,train\n")
    with pytest.raises(DatasetError, match="after the file's end") as e:
        get_dataset(f"events:{tmp_path / 'm.csv'}")
    assert "m.csv line 2" in _one_line(e) and "milliseconds" in e.value.hint


def test_kfold_event_task_checks_test_fold(tmp_path):
    files = {f"fold{k:02d}": {f"f{k}.wav": [{"label": "dog", "start": 100.0, "end": 900.0}]} for k in range(3)}
    root = _hear(tmp_path / "k", files, meta={"split_mode": "new_split_kfold", "nfolds": 3},
                 splits=list(files))
    ds = get_dataset(f"hear:{root}")
    assert ds.spec.splits == ("all", "train", "valid", "test") and [c.fold for c in ds.clips("all")] == [1, 2, 3]
    with pytest.raises(ConfigError, match="test_fold=7 must be 1..3"):
        get_dataset(f"hear:{root}", test_fold=7)


def test_overlapping_events_of_one_label_are_kept_as_the_official_code(tmp_path):
    from probekit.datasets.events import Event
    from probekit.tokens import InMemoryTokens
    from probekit.train.events import FrameTokens, frame_targets

    pytest.importorskip("psds_eval")
    overlap = (Event(0, 0.32, 0.96), Event(0, 0.64, 1.6), Event(1, 2.0, 2.4))
    y = frame_targets(overlap, 20, 2, 0.16)
    assert y[:, 0].nonzero()[0].tolist() == list(range(2, 11))  # the union of both events' rows
    base = InMemoryTokens(np.zeros((2, 1, 40, 4), np.float32), None, np.zeros((2, 2), np.float32), num_classes=2,
                          multilabel=True, grid=(20, 2))
    data = FrameTokens(base, [overlap, overlap], 0.16, classes=("dog", "cat"), durations=[3.2, 3.2])
    m = data.event_task.evaluate(data.labels.astype(np.float64), None, psds=True)
    # sed_eval: two reference dog events, the decoded union matches one onset -> dog recall 1/2 per file
    assert m.metrics["event_onset_200ms_recall"] == pytest.approx(200 / 3)
    assert 0 <= m.metrics["psds1"] <= 100 and "psds2" in m.metrics  # psds_eval alone refuses such references

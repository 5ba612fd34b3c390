"""Hostile copies of the named official layouts and of user folders/manifests (issue 18): each problem is one
line naming the file (and line) with a hint, exit 2, no traceback. Built from real FSDD recordings.

Each test failed on the commit before this work (7a591f4): the names did not exist, an empty class folder
was dropped without a word (shifting every later class index), `root=` was refused as unknown."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from _faults import assert_user_error, cli

from probekit.datasets import get_dataset
from probekit.errors import DatasetError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
import named_layouts as L  # noqa: E402 - the builders of tests/datasets


def _datasets(capsys, base, name):
    return cli(capsys, "datasets", "--brief", "--data-root", base, "-d", name)


def test_fsd50k_clip_listed_twice(tmp_path, fsdd_root, capsys):
    root = L.fsd50k(tmp_path, fsdd_root)
    dev = root / "FSD50K.ground_truth" / "dev.csv"
    lines = dev.read_text().splitlines()
    dev.write_text("\n".join(lines + [lines[1]]) + "\n")
    rc, _, err = _datasets(capsys, tmp_path, "fsd50k")
    assert_user_error(rc, err, "dev.csv line 14", "clip '1000' listed twice")


def test_fsd50k_vocabulary_with_a_gap(tmp_path, fsdd_root, capsys):
    root = L.fsd50k(tmp_path, fsdd_root)
    voc = root / "FSD50K.ground_truth" / "vocabulary.csv"
    voc.write_text(voc.read_text().replace("3,Child", "7,Child"))
    rc, _, err = _datasets(capsys, tmp_path, "fsd50k")
    assert_user_error(rc, err, "vocabulary.csv", "indices must be 0..3")


def test_urbansound8k_fold_out_of_range(tmp_path, fsdd_root, capsys):
    root = L.urbansound8k(tmp_path, fsdd_root)
    meta = root / "metadata" / "UrbanSound8K.csv"
    meta.write_text(meta.read_text().replace(",1,0,air_conditioner", ",11,0,air_conditioner", 1))
    rc, _, err = _datasets(capsys, tmp_path, "urbansound8k")
    assert_user_error(rc, err, "UrbanSound8K.csv line 2", "fold 11")


def test_gtzan_file_in_the_wrong_genre_folder(tmp_path, fsdd_root, capsys):
    root = L.gtzan(tmp_path, fsdd_root)
    shutil.copyfile(root / "genres/blues/blues.00000.wav", root / "genres/blues/rock.00001.wav")
    rc, _, err = _datasets(capsys, tmp_path, "gtzan")
    assert_user_error(rc, err, "genres/blues/rock.00001.wav", "<genre>.000NN")


def test_gtzan_filtered_clip_in_two_splits(tmp_path, fsdd_root, capsys):
    root = L.gtzan(tmp_path, fsdd_root)
    test = root / "GTZAN_split" / "test_filtered.txt"
    test.write_text(test.read_text() + "blues/blues.00090.wav\n")  # also in train
    rc, _, err = _datasets(capsys, tmp_path, "gtzan-filtered")
    assert_user_error(rc, err, "test_filtered.txt line 10", "already in split 'train'")


@pytest.mark.parametrize("edit, words", [
    (lambda ex: "{not json", ["nsynth-valid/examples.json", "not readable JSON"]),
    (lambda ex: json.dumps({k: {**v, "instrument_family_str": "flute"} for k, v in json.loads(ex).items()}),
     ["nsynth-valid/examples.json", "instrument_family 0 is 'flute', expected 'bass'"]),
])  # fmt: skip
def test_nsynth_bad_examples(tmp_path, fsdd_root, capsys, edit, words):
    root = L.nsynth(tmp_path, fsdd_root)
    ex = root / "nsynth-valid" / "examples.json"
    ex.write_text(edit(ex.read_text()))
    rc, _, err = _datasets(capsys, tmp_path, "nsynth-family")
    assert_user_error(rc, err, *words)


def test_dcase_preset_ignores_another_hear_task(tmp_path, fsdd_root):
    root = L.dcase2016_task2(tmp_path, fsdd_root)
    meta = json.loads((root / "task_metadata.json").read_text())
    (root / "task_metadata.json").write_text(json.dumps({**meta, "task_name": "other_task"}))
    with pytest.raises(DatasetError, match="dataset 'dcase2016-task2' not found") as info:
        get_dataset("dcase2016-task2", tmp_path)
    assert "dcase2016_task2" in info.value.hint


def test_folder_empty_class_is_named_not_dropped(tmp_path, fsdd_root, capsys):
    """ImageFolder refuses an empty class folder; 0.2 dropped it, so every later class changed index."""
    root = tmp_path / "classes"
    for c in ("a", "c"):
        (root / c).mkdir(parents=True)
        shutil.copyfile(fsdd_root / "recordings" / "0_theo_0.wav", root / c / "x.wav")
    (root / "b").mkdir()
    rc, _, err = cli(capsys, "datasets", "--brief", "-d", f"folder:{root}")
    assert_user_error(rc, err, f"folder {root}", "class folder 'b' holds no audio files", "allow_empty=True")


def test_folder_symlink_loop_is_walked_once(tmp_path, fsdd_root):
    root = tmp_path / "classes"
    (root / "a" / "sub").mkdir(parents=True)
    shutil.copyfile(fsdd_root / "recordings" / "0_theo_0.wav", root / "a" / "sub" / "x.wav")
    (root / "a" / "sub" / "up").symlink_to(root / "a", target_is_directory=True)
    ds = get_dataset(f"folder:{root}")
    assert [c.id for s in ds.spec.splits for c in ds.clips(s)] == ["a/sub/x.wav"]


def test_manifest_root_that_is_a_file_or_given_twice(tmp_path, fsdd_root, capsys):
    shutil.copyfile(fsdd_root / "recordings" / "0_theo_0.wav", tmp_path / "a.wav")
    csv = tmp_path / "m.csv"
    csv.write_text("path,labels,split\na.wav,zero,train\na.wav,zero,test\n".replace("a.wav,zero,test", "b.wav,zero,test"))
    rc, _, err = cli(capsys, "datasets", "--brief", "-d", f"manifest:{csv}?root={tmp_path / 'a.wav'}")
    assert_user_error(rc, err, f"manifest {csv}", "is not a folder")
    with pytest.raises(DatasetError, match="root given twice"):
        get_dataset(f"manifest:{csv}?root={tmp_path}", root=tmp_path / "x")

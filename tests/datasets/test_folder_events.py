"""folder:DIR (class subfolders), events:CSV (strong labels) and their `probekit datasets` rows, on real FSDD audio."""

from __future__ import annotations

import shutil

import pytest
import soundfile as sf

from probekit.datasets import get_dataset
from probekit.datasets.events import EventDataset
from probekit.errors import DatasetError


def _fsdd(fsdd_root, digit, speaker, take):
    return fsdd_root / "recordings" / f"{digit}_{speaker}_{take}.wav"


@pytest.fixture()
def one_folder(tmp_path, fsdd_root):
    root = tmp_path / "digits"
    for d in range(3):
        (root / f"d{d}").mkdir(parents=True)
        for t in range(10):
            shutil.copyfile(_fsdd(fsdd_root, d, "theo", t), root / f"d{d}" / f"theo_{t}.wav")
    return root


def test_one_folder_gets_a_seeded_stratified_split(one_folder):
    ds = get_dataset(f"folder:{one_folder}")
    assert ds.spec.classes == ("d0", "d1", "d2") and ds.spec.splits == ("train", "valid", "test")
    for split, per_class in (("train", 7), ("valid", 1), ("test", 2)):
        clips = ds.clips(split)
        assert sorted(c.labels[0] for c in clips) == sorted([0, 1, 2] * per_class), split
    ids = {s: {c.id for c in ds.clips(s)} for s in ds.spec.splits}
    assert get_dataset(f"folder:{one_folder}").fingerprint("test") == ds.fingerprint("test")  # stable
    other = get_dataset(f"folder:{one_folder}", seed=1)
    assert {c.id for c in other.clips("test")} != ids["test"] and other.identity != ds.identity
    # adding a file never moves another between splits
    shutil.copyfile(one_folder / "d0" / "theo_0.wav", one_folder / "d0" / "zzz_new.wav")
    again = get_dataset(f"folder:{one_folder}")
    moved = [i for s in ds.spec.splits for i in ids[s] if i not in {c.id for c in again.clips(s)}]
    assert len(moved) <= 1  # at most the one displaced by the class's new 20%/10% counts


def test_split_folders(tmp_path, fsdd_root):
    root = tmp_path / "sf"
    for split, takes in (("train", range(4)), ("val", range(4, 5)), ("test", range(5, 7))):
        for d in (1, 2):
            (root / split / str(d)).mkdir(parents=True)
            for t in takes:
                shutil.copyfile(_fsdd(fsdd_root, d, "lucas", t), root / split / str(d) / f"{t}.wav")
    ds = get_dataset(f"folder:{root}")
    assert ds.spec.splits == ("train", "valid", "test")
    assert [len(ds.clips(s)) for s in ds.spec.splits] == [8, 2, 4]
    assert ds.clips("valid")[0].id.startswith("val/")


def test_empty_folder_is_named(tmp_path):
    (tmp_path / "e" / "cls").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no audio files"):
        get_dataset(f"folder:{tmp_path / 'e'}")


def _events_csv(tmp_path, fsdd_root, rows):
    (tmp_path / "audio").mkdir(exist_ok=True)
    for name in {r[0] for r in rows}:
        shutil.copyfile(_fsdd(fsdd_root, 4, "george", int(name[1])), tmp_path / "audio" / name)
    path = tmp_path / "strong.csv"
    path.write_text("path,label,onset,offset,split\n" + "".join(f"audio/{p},{lab},{a},{b},{s}\n"
                                                               for p, lab, a, b, s in rows))  # fmt: skip
    return path


def test_strong_label_manifest(tmp_path, fsdd_root):
    rows = [("t1.wav", "four", 0.1, 0.3, "train"), ("t1.wav", "click", 0.0, 0.05, "train"),
            ("t2.wav", "four", 0.05, 0.2, "test")]  # fmt: skip
    ds = get_dataset(f"events:{_events_csv(tmp_path, fsdd_root, rows)}")
    assert (
        isinstance(ds, EventDataset)
        and ds.spec.classes == ("click", "four")
        and ds.spec.splits == ("train", "test")
    )
    (clip,) = ds.events("train")
    assert [(ds.spec.classes[e.label], e.onset, e.offset) for e in clip.events] == [
        ("click", 0.0, 0.05),
        ("four", 0.1, 0.3),
    ]
    assert ds.identity.startswith("events:strong.csv@")
    # files listed for extraction, labelled with the classes they hold (frame targets come from the events)
    assert [(c.id, c.labels) for c in ds.clips("train")] == [("audio/t1.wav", (0, 1))]


@pytest.mark.parametrize("bad, words", [
    (("t1.wav", "four", 0.3, 0.3, "train"), "onset 0.3 >= offset 0.3"),
    (("t1.wav", "four", -0.1, 0.3, "train"), "before 0 s"),
    (("t1.wav", "four", 0.1, 30.0, "train"), "after the file's end"),
    (("t1.wav", "four", 0.1, "x", "train"), "offset 'x' is not a number"),
    (("t1.wav", "four", 0.1, 0.2, "dev"), "split 'dev'"),
])  # fmt: skip
def test_strong_label_manifest_refuses_impossible_events(tmp_path, fsdd_root, bad, words):
    path = _events_csv(tmp_path, fsdd_root, [("t2.wav", "four", 0.05, 0.2, "test"), bad])
    with pytest.raises(DatasetError) as e:
        get_dataset(f"events:{path}")
    assert words in str(e.value) and "strong.csv line 3" in str(e.value)
    assert sf.info(str(tmp_path / "audio" / "t1.wav")).duration < 30


def test_datasets_command_shows_paths(one_folder, tmp_path, fsdd_root, capsys):
    from probekit.cli import main

    csv = _events_csv(
        tmp_path, fsdd_root, [("t1.wav", "four", 0.1, 0.3, "train"), ("t2.wav", "four", 0.0, 0.2, "test")]
    )
    capsys.readouterr()
    rc = main(["datasets", "--data-root", str(fsdd_root.parent), "-d", "fsdd", "-d", f"folder:{one_folder}",
               "-d", f"events:{csv}", "-d", "esc50"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    flat = " ".join(out.split())
    assert "train 2700, test 300" in flat and "0.36" in flat  # FSDD: 3,000 clips, 0.36 hours
    assert "train 21, valid 3, test 6" in flat
    assert "event (timestamp)" in flat and "train 1 (1 events)" in flat
    assert "licence CC BY-SA 4.0" in flat and "looked in" in flat  # esc50 is not there: where it looked

"""Manifests as users write them (absolute paths, paths outside the CSV's folder, option `root`) and
`folder:DIR` with torchvision ImageFolder's semantics, on real FSDD recordings."""

from __future__ import annotations

import shutil

import pytest

from probekit.datasets import get_dataset, get_spec
from probekit.errors import DatasetError

NAMES = ["0_jackson_0.wav", "1_nicolas_1.wav", "0_theo_2.wav", "1_lucas_3.wav"]


@pytest.fixture()
def audio(tmp_path, fsdd_root):
    d = tmp_path / "corpus" / "wavs"
    d.mkdir(parents=True)
    for n in NAMES:
        shutil.copyfile(fsdd_root / "recordings" / n, d / n)
    return d


def _csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("path,labels,split\n" + "".join(f"{p},{lab},{s}\n" for p, lab, s in rows))
    return path


def test_absolute_paths_and_paths_outside_the_csv_folder(audio, tmp_path):
    """NeMo/ESPnet-style lists: absolute paths, and relative ones leaving the CSV's folder."""
    csv = _csv(tmp_path / "lists" / "deep" / "m.csv", [
        (audio / NAMES[0], "zero", "train"), (f"../../corpus/wavs/{NAMES[1]}", "one", "train"),
        (audio / NAMES[2], "zero", "test"), (f"../../corpus/wavs/{NAMES[3]}", "one", "test")])  # fmt: skip
    ds = get_dataset(f"manifest:{csv}")
    assert [c.path for c in ds.clips("train")] == [audio / NAMES[0], audio / NAMES[1]]
    assert ds.missing == {"train": 0, "test": 0} and not ds.warnings


def test_root_option_resolves_relative_paths(audio, tmp_path):
    csv = _csv(tmp_path / "lists" / "m.csv", [(NAMES[0], "zero", "train"), (NAMES[1], "one", "train"),
                                              (NAMES[2], "zero", "test"), (audio / NAMES[3], "one", "test")])  # fmt: skip
    with pytest.raises(DatasetError, match="none of its 3 listed|listed audio file"):
        get_dataset(f"manifest:{csv}")  # relative to lists/: not there
    ds = get_dataset(f"manifest:{csv}", root=audio)
    assert [c.path for c in ds.clips("test")] == [audio / NAMES[2], audio / NAMES[3]] and ds.root == audio
    by_name = get_dataset(f"manifest:{csv}?root={audio}")  # where only a name can be given (the CLI)
    assert [c.path for c in by_name.clips("train")] == [c.path for c in ds.clips("train")]
    assert by_name.identity == ds.identity != get_dataset(f"manifest:{csv}", root=audio.parent, allow_missing=True).identity
    assert get_spec(f"manifest:{csv}?root={audio}").identity == ds.identity
    with pytest.raises(DatasetError, match=r"root '.*nowhere' is not found") as info:
        get_dataset(f"manifest:{csv}", root=tmp_path / "nowhere")
    assert "relative paths start from" in info.value.hint


def test_root_is_relative_to_the_current_folder(audio, tmp_path, monkeypatch):
    csv = _csv(tmp_path / "m.csv", [(NAMES[0], "zero", "train"), (NAMES[2], "zero", "test")])
    monkeypatch.chdir(audio.parent)
    assert get_dataset(f"manifest:{csv}", root="wavs").clips("train")[0].path == audio / NAMES[0]


def test_one_file_twice_or_in_two_splits_is_refused(audio, tmp_path):
    """Duplicate and cross-split checks hold across spellings: absolute vs relative to root."""
    csv = _csv(tmp_path / "m.csv", [(NAMES[0], "zero", "train"), (NAMES[1], "one", "train"),
                                    (audio / NAMES[0], "zero", "test")])  # fmt: skip
    with pytest.raises(DatasetError, match=f"line 4: duplicate path '{audio / NAMES[0]}' \\(first on line 2\\)"):
        get_dataset(f"manifest:{csv}", root=audio)


# ---- folder:DIR as torchvision's ImageFolder --------------------------------------------------------------
@pytest.fixture()
def tree(tmp_path, fsdd_root):
    """b/ (nested subfolders and a symlinked folder), a/ (upper-case suffix), B/ (upper-case class name)."""
    root = tmp_path / "tree"
    rec = fsdd_root / "recordings"
    files = {"b/x.wav": "0_george_0.wav", "b/deep/er/y.wav": "0_george_1.wav", "a/z.WAV": "1_george_0.wav",
             "a/w.wav": "1_george_1.wav", "B/v.wav": "2_george_0.wav", "B/u.wav": "2_george_1.wav",
             "a/.hidden.wav": "1_george_2.wav", ".ipynb_checkpoints/t.wav": "1_george_3.wav",
             "outside/s.wav": "0_george_2.wav"}  # fmt: skip
    for rel, src in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(rec / src, root / rel)
    (root / "b" / "link").symlink_to(root / "outside", target_is_directory=True)
    (root / "b" / "deep" / "loop").symlink_to(root / "b", target_is_directory=True)  # walked once
    (root / "a" / "notes.txt").write_text("not audio")
    shutil.move(str(root / "outside"), str(tmp_path / "outside"))
    (root / "b" / "link").unlink()
    (root / "b" / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    return root


def test_folder_matches_image_folder_classes_and_files(tree):
    ds = get_dataset(f"folder:{tree}", seed=0)
    # find_classes: sorted(entry.name for entry in scandir if is_dir) -> 'B' < 'a' < 'b'; class index = position
    assert ds.spec.classes == ("B", "a", "b")
    every = sorted((c.id, c.labels[0]) for s in ds.spec.splits for c in ds.clips(s))
    assert every == [("B/u.wav", 0), ("B/v.wav", 0), ("a/w.wav", 1), ("a/z.WAV", 1),
                     ("b/deep/er/y.wav", 2), ("b/link/s.wav", 2), ("b/x.wav", 2)]  # fmt: skip


def test_empty_class_folder_is_an_error_unless_allowed(tree):
    (tree / "c_empty").mkdir()
    with pytest.raises(DatasetError, match="class folder 'c_empty' holds no audio files") as info:
        get_dataset(f"folder:{tree}")
    assert "allow_empty=True" in info.value.hint
    ds = get_dataset(f"folder:{tree}", allow_empty=True)  # ImageFolder(allow_empty=True): a class, no clips
    assert ds.spec.classes == ("B", "a", "b", "c_empty") and not ds.clips("train")[-1].id.startswith("c_empty")
    (tree / "c_empty").rmdir()
    assert get_spec(f"folder:{tree}").identity != ds.identity  # another class list: other records

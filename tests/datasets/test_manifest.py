"""User manifests: `manifest:PATH.csv` with path,labels,split[,fold]."""

from __future__ import annotations

import shutil

import pytest

from probekit.audio.frontends import frontend_for
from probekit.datasets import get_dataset, get_spec
from probekit.errors import DatasetError


@pytest.fixture()
def manifest_dir(tmp_path, real_clips):
    root = tmp_path / "mydata"
    (root / "clips" / "a").mkdir(parents=True)
    for i, src in enumerate(real_clips[:6]):
        shutil.copyfile(src, root / "clips" / "a" / f"{i}.wav")
    return root


def write(root, text, name="set.csv"):
    (root / name).write_text(text)
    return root / name


def test_multiclass_manifest_with_folds(manifest_dir):
    csv = write(manifest_dir, "path,labels,split,fold\n"
                "clips/a/0.wav,dog,train,1\nclips/a/1.wav,cat,train,2\nclips/a/2.wav,dog,test,1\n"
                "./clips/a/3.wav,bird,valid,2\n")  # fmt: skip
    ds = get_dataset(f"manifest:{csv}")
    assert (
        ds.spec.classes == ("bird", "cat", "dog") and not ds.spec.multilabel and ds.spec.metric == "accuracy"
    )
    assert ds.spec.splits == ("train", "valid", "test") and ds.spec.folds == 2
    assert [(c.id, c.labels, c.fold) for c in ds.clips("train")] == [
        ("clips/a/0.wav", (2,), 1),
        ("clips/a/1.wav", (1,), 2),
    ]
    assert ds.clips("valid")[0].path == (manifest_dir / "clips/a/3.wav").resolve()
    assert frontend_for("fbank", ds.spec).target_frames is None  # native length for user data
    assert get_spec(f"manifest:{csv}") == ds.spec
    fp = ds.fingerprint("train")
    write(manifest_dir, csv.read_text().replace("0.wav,dog", "0.wav,cat"))
    assert get_dataset(f"manifest:{csv}").fingerprint("train") != fp


def test_multilabel_manifest_relative_to_data_root(manifest_dir, monkeypatch, tmp_path):
    write(manifest_dir, "path,labels,split\nclips/a/0.wav,speech;music,train\nclips/a/1.wav,music,test\n")
    monkeypatch.chdir(tmp_path)
    ds = get_dataset("manifest:set.csv", data_root=manifest_dir)
    assert ds.spec.multilabel and ds.spec.metric == "mAP" and ds.clips("train")[0].labels == (0, 1)


@pytest.mark.parametrize(
    "text,words",
    [
        ("path,labels,split,speaker\nclips/a/0.wav,dog,train,x\n", "unknown column(s) speaker"),
        ("path,split\nclips/a/0.wav,train\n", "missing column(s) labels"),
        ("path,labels,split\nclips/a/0.wav,,train\n", "line 2: no labels"),
        ("path,labels,split\nclips/a/0.wav,dog,train\nclips/a/0.wav,cat,test\n", "line 3: duplicate path"),
        ("path,labels,split\nclips/a/0.wav,dog,\n", "line 2: empty split"),
        ("path,labels,split\nclips/a/0.wav,dog,validation\n", "line 2: split 'validation'"),
        ("path,labels,split,fold\nclips/a/0.wav,dog,train,one\n", "line 2: fold 'one'"),
        (
            "path,labels,split\nclips/a/9.wav,dog,train\n",
            "1 listed audio file(s) not found, e.g. clips/a/9.wav",
        ),
        ("path,labels,split\n", "no rows"),
    ],
)
def test_bad_manifests_name_the_row_or_column(manifest_dir, text, words):
    csv = write(manifest_dir, text)
    with pytest.raises(DatasetError) as info:
        get_dataset(f"manifest:{csv}")
    assert words in str(info.value) and str(csv) in str(info.value)


def test_missing_files_can_be_skipped(manifest_dir):
    csv = write(manifest_dir, "path,labels,split\nclips/a/0.wav,dog,train\nclips/a/9.wav,dog,train\n")
    ds = get_dataset(f"manifest:{csv}", allow_missing=True)
    assert len(ds.clips("train")) == 1 and ds.missing == {"train": 1}


def test_missing_manifest(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        get_dataset(f"manifest:{tmp_path / 'nope.csv'}")


def test_keep_missing_lists_absent_files_and_all_absent_is_refused(manifest_dir):
    csv = write(manifest_dir, "path,labels,split\nclips/a/0.wav,dog,train\nclips/a/9.wav,cat,train\n")
    ds = get_dataset(f"manifest:{csv}", keep_missing=True)
    # the absent file stays a clip: extraction records it as a failed clip naming the file
    assert [c.id for c in ds.clips("train")] == ["clips/a/0.wav", "clips/a/9.wav"] and ds.missing == {"train": 1}
    gone = write(manifest_dir, "path,labels,split\nclips/b/0.wav,dog,train\nclips/b/1.wav,cat,test\n")
    for opts in ({"keep_missing": True}, {"allow_missing": True}):
        with pytest.raises(DatasetError, match="none of its 2 listed audio files exist, e.g. clips/b/0.wav"):
            get_dataset(f"manifest:{gone}", **opts)


def test_paths_may_leave_the_folder_through_dotdot_symlinks_or_absolute(manifest_dir, tmp_path):
    """The README says paths are relative to the CSV: `..`, a symlinked audio folder and an absolute path
    all name real files and are read as such."""
    (manifest_dir / "linked").symlink_to(manifest_dir / "clips" / "a", target_is_directory=True)
    sub = manifest_dir / "lists"
    sub.mkdir()
    absolute = (manifest_dir / "clips" / "a" / "2.wav").resolve()
    csv = write(sub, f"path,labels,split\n../clips/a/0.wav,dog,train\n../linked/1.wav,cat,train\n{absolute},dog,test\n")
    ds = get_dataset(f"manifest:{csv}")
    assert [c.path for c in ds.clips("train")] == [(manifest_dir / "clips/a" / n).resolve() for n in ("0.wav", "1.wav")]
    assert ds.clips("test")[0].path == absolute and ds.warnings == [
        "manifest:set.csv: 1 class(es) have no clip in split 'test' (they are never scored): 'cat'"]


@pytest.mark.parametrize(
    "text",
    [
        "path,labels,split\r\nclips/a/0.wav,dog,train\r\nclips/a/1.wav,cat,test\r\n",  # CRLF
        "path,labels,split,\nclips/a/0.wav,dog,train,\nclips/a/1.wav,cat,test,\n",  # spreadsheet padding
        "split,path,labels\ntrain,clips/a/0.wav,dog\n\n\ntest,clips/a/1.wav,cat\n",  # order, blank lines
    ],
    ids=["crlf", "unnamed-empty-column", "column-order"],
)
def test_harmless_spreadsheet_shapes_are_read(manifest_dir, text):
    ds = get_dataset(f"manifest:{write(manifest_dir, text)}")
    assert [(c.id, c.labels) for s in ("train", "test") for c in ds.clips(s)] == [
        ("clips/a/0.wav", (1,)), ("clips/a/1.wav", (0,))]  # fmt: skip

"""Bad manifests and dataset metadata through `probekit extract`: one error line naming the file and row.

tests/datasets/test_manifest.py checks the parser's messages; here each case runs the command a user
types and must exit 2 with one line and no traceback, before any model is built or anything written.
"""

from __future__ import annotations

import shutil

import pytest
from _faults import OTHERS, SOURCE, assert_user_error, cli

from probekit.datasets._audioset_classes import AUDIOSET_CLASSES


@pytest.fixture
def folder(tmp_path, fsdd_root):
    d = tmp_path / "data"
    (d / "clips").mkdir(parents=True)
    for n in [SOURCE, *OTHERS[:2]]:
        shutil.copyfile(fsdd_root / "recordings" / n, d / "clips" / n)
    return d


A, B, C = (f"clips/{n}" for n in [SOURCE, *OTHERS[:2]])

MANIFESTS = {
    "unknown column": (f"path,labels,split,speaker\n{A},three,train,nicolas\n", "unknown column(s) speaker"),
    "labels column missing": (f"path,split\n{A},train\n", "missing column(s) labels"),
    "row without labels": (f"path,labels,split\n{A},three,train\n{B},,train\n", "line 3: no labels"),
    "duplicate id": (f"path,labels,split\n{A},three,train\n./{A},zero,test\n", "line 3: duplicate path"),
    "empty split value": (f"path,labels,split\n{A},three,\n", "line 2: empty split"),
    "unknown split": (f"path,labels,split\n{A},three,training\n", "split 'training' is not one of"),
    "no rows": ("path,labels,split\n", "no rows"),
    "every file absent": ("path,labels,split\nwrong/a.wav,x,train\nwrong/b.wav,y,test\n", "none of its 2 listed audio files exist"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MANIFESTS))
def test_bad_manifest_is_one_line_naming_the_csv(folder, tmp_path, capsys, case):
    text, words = MANIFESTS[case]
    csv = folder / "m.csv"
    csv.write_text(text)
    cache = tmp_path / "cache"
    rc, _, err = cli(capsys, "extract", "--backbone", "bat-tiny", "--dataset", f"manifest:{csv}",
                     "--cache-dir", cache, "--workers", "0", "--no-progress")
    assert_user_error(rc, err, str(csv), words)
    assert not cache.exists() or not any(cache.iterdir())  # refused before anything was written


def test_asking_for_a_split_the_manifest_does_not_have(folder, tmp_path, capsys):
    csv = folder / "m.csv"
    csv.write_text(f"path,labels,split\n{A},three,train\n{B},zero,train\n")
    rc, _, err = cli(capsys, "extract", "--backbone", "bat-tiny", "--dataset", f"manifest:{csv}",
                     "--split", "valid", "--cache-dir", tmp_path / "c", "--no-progress")
    assert_user_error(rc, err, "has no split 'valid'", "use one of: train")


def _esc50(root, fsdd_root, rows):
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for name, fold, target, cat in rows:
        lines.append(f"{name},{fold},{target},{cat},False,x,A")
        shutil.copyfile(fsdd_root / "recordings" / SOURCE, root / "audio" / name)
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return root / "meta" / "esc50.csv"


@pytest.mark.parametrize(
    "row,words",
    [
        (("2-1-A-0.wav", 2, 50, "dog"), "line 3: fold 2 / target 50 out of range"),  # label past the 50 classes
        (("2-1-A-0.wav", 2, 0, "cat"), "line 3: target 0 is 'cat', expected 'dog'"),  # a name not in the list
        (("2-1-A-0.wav", 6, 0, "dog"), "line 3: fold 6 / target 0 out of range"),
    ],
)
def test_esc50_labels_outside_the_class_list(tmp_path, fsdd_root, capsys, row, words):
    meta = _esc50(tmp_path / "ESC-50-master", fsdd_root, [("1-1-A-0.wav", 1, 0, "dog"), row])
    rc, _, err = cli(capsys, "extract", "--backbone", "bat-tiny", "--dataset", "esc50", "--data-root", tmp_path,
                     "--cache-dir", tmp_path / "c", "--no-progress")
    assert_user_error(rc, err, str(meta), words)


def test_audioset_unknown_class_id_and_unlabelled_segment(tmp_path, fsdd_root, capsys):
    root = tmp_path / "audioset"
    (root / "eval_segments").mkdir(parents=True)
    (root / "class_labels_indices.csv").write_text(
        "index,mid,display_name\n" + "".join(f'{i},{m},"{n}"\n' for i, (m, n) in enumerate(AUDIOSET_CLASSES))
    )
    shutil.copyfile(fsdd_root / "recordings" / SOURCE, root / "eval_segments" / "Yabcdefghijk.wav")
    seg = root / "eval_segments.csv"
    head = "# header\n# num_ytids=2\n# YTID, start_seconds, end_seconds, positive_labels\n"
    speech = AUDIOSET_CLASSES[0][0]
    for bad, words in ((' "/m/not_a_class"', "line 5: unknown class id '/m/not_a_class'"),
                       (' ""', "line 5: segment zzzzzzzzzzz has no labels")):  # fmt: skip
        seg.write_text(head + f'abcdefghijk, 0.000, 10.000, "{speech}"\nzzzzzzzzzzz, 0.000, 10.000,{bad}\n')
        rc, _, err = cli(capsys, "extract", "--backbone", "bat-tiny", "--dataset", "as-eval", "--data-root",
                         tmp_path, "--cache-dir", tmp_path / "c", "--no-progress")
        assert_user_error(rc, err, str(seg), words)
    # a class list that is not AudioSet's own
    (root / "class_labels_indices.csv").write_text("index,mid,display_name\n0,/m/x,X\n")
    seg.write_text(head + f'abcdefghijk, 0.000, 10.000, "{speech}"\n')
    rc, _, err = cli(capsys, "extract", "--backbone", "bat-tiny", "--dataset", "as-eval", "--data-root", tmp_path,
                     "--cache-dir", tmp_path / "c", "--no-progress")
    assert_user_error(rc, err, "class_labels_indices.csv", "differ from AudioSet's 527")

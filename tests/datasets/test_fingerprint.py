"""Content fingerprints: what each mode notices, and the stat-keyed memo that makes reruns cheap."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from probekit.datasets import fingerprint as fp
from probekit.datasets import get_dataset, list_datasets, register_dataset
from probekit.datasets.fsdd import SPEC as FSDD_SPEC
from probekit.errors import DatasetError


@pytest.fixture(autouse=True)
def memo(tmp_path, monkeypatch):
    path = tmp_path / "memo" / "fp.sqlite"
    monkeypatch.setenv(fp.MEMO_ENV, str(path))
    monkeypatch.delenv(fp.MODE_ENV, raising=False)
    monkeypatch.setattr(fp, "_RECENT_S", 0.0)  # memoise files written a moment ago
    return path


@pytest.fixture
def clips(tmp_path, real_clips):
    out = []
    for src in real_clips[:3]:
        out.append(tmp_path / src.name)
        shutil.copyfile(src, out[-1])
    return out


@pytest.fixture
def big_wav(tmp_path, real_clips):
    """A real-audio WAV of about 0.5 MB (FSDD clips end to end), far above the 3 x 64 KiB sampled."""
    data = np.concatenate([sf.read(p, dtype="int16")[0] for p in real_clips] * 6)
    path = tmp_path / "long.wav"
    sf.write(path, data, 8000, subtype="PCM_16")
    assert path.stat().st_size > 6 * fp.SAMPLE  # so 2 x SAMPLE lies between the first and middle blocks
    return path


def _flip(path, offset):
    b = bytearray(path.read_bytes())
    b[offset] ^= 0x10
    path.write_bytes(bytes(b))


def test_memo_serves_unchanged_files_without_reading_them(clips, monkeypatch, memo):
    first = fp.content_digests(clips)
    assert memo.is_file() and len(set(first)) == 3

    def no_reading(*a, **k):
        raise AssertionError("a memoised file was read again")

    monkeypatch.setattr(fp, "file_digest", no_reading)
    assert fp.content_digests(clips) == first


def test_memo_is_bypassed_when_the_file_changed(clips, memo):
    first = fp.content_digests(clips)
    st = os.stat(clips[0])
    _flip(clips[0], st.st_size - 10)
    os.utime(clips[0], ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: ctime still moves
    assert fp.content_digests(clips)[0] != first[0]


def test_damaged_or_unusable_memo_only_costs_time(clips, memo, monkeypatch, tmp_path):
    want = fp.content_digests(clips)
    memo.write_bytes(b"not a database at all" * 100)
    assert fp.content_digests(clips) == want and fp.content_digests(clips) == want
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    monkeypatch.setenv(fp.MEMO_ENV, str(blocker / "memo.sqlite"))  # its folder is a file
    assert fp.content_digests(clips) == want
    monkeypatch.setenv(fp.MEMO_ENV, "off")
    assert fp.content_digests(clips) == want


def test_modes_agree_on_small_files_and_sampled_sees_the_sampled_blocks(clips, big_wav):
    assert fp.content_digests(clips, "sampled") == fp.content_digests(clips, "full")
    full, sampled = fp.file_digest(big_wav, "full"), fp.file_digest(big_wav, "sampled")
    assert full != sampled
    size = big_wav.stat().st_size
    _flip(big_wav, size - 100)  # inside the last sampled block: both modes notice
    assert fp.file_digest(big_wav, "full") != full and fp.file_digest(big_wav, "sampled") != sampled
    full, sampled = fp.file_digest(big_wav, "full"), fp.file_digest(big_wav, "sampled")
    _flip(big_wav, 2 * fp.SAMPLE)  # between the blocks: the documented blind spot of sampled mode
    assert fp.file_digest(big_wav, "full") != full and fp.file_digest(big_wav, "sampled") == sampled


def test_files_that_cannot_be_hashed_get_markers(tmp_path, clips):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    assert fp.content_digests([tmp_path / "gone.wav", fifo, tmp_path]) == [
        "missing", "not-regular:fifo", "not-regular:directory"]  # fmt: skip


def test_fingerprint_is_versioned_and_stable_across_copies(tmp_path, real_clips):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        for src in real_clips[:4]:
            shutil.copyfile(src, tmp_path / d / src.name)
        (tmp_path / d / "m.csv").write_text(
            "path,labels,split\n" + "".join(f"{p.name},{p.name[0]},train\n" for p in real_clips[:4]))
    a, b = (get_dataset(f"manifest:{tmp_path / d / 'm.csv'}") for d in ("a", "b"))
    assert a.fingerprint("train") == b.fingerprint("train") and a.fingerprint("train").startswith("v2-")
    assert a.identity != b.identity  # same content, two sources: records stay apart, caches are shared
    assert fp.is_current(a.fingerprint("train"))


def test_dataset_registry_is_sorted_and_guards_names():
    assert list_datasets() == sorted(list_datasets()) and list_datasets("as*") == ["as-eval", "as20k", "as2m"]
    with pytest.raises(DatasetError, match="registered twice"):
        register_dataset(FSDD_SPEC, lambda *a, **k: None, detect=lambda p: None)
    with pytest.raises(DatasetError, match=r"unknown dataset 'fsd'.*did you mean 'fsdd'"):
        get_dataset("fsd")

"""Property-based fuzzing of what users hand probekit: manifests, records, --set values, audio headers and
checkpoint files. The promise under test is the fault suite's: bad input ends in a ProbekitError (one line
naming the file/value, exit 2 in the CLI), never in another exception type. Found by hand in 0.1.0:
UTF-16 manifests (UnicodeDecodeError), over-long fields (csv.Error), bad record bytes (UnicodeDecodeError,
RecursionError), `--set lr=abc` (TypeError), garbage checkpoints (IndexError).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probekit.errors import ProbekitError

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

_cell = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["0_jackson_0.wav", "1_theo_3.wav", "missing.wav", "../x.wav", "/abs.wav", "train", "test",
                     "valid", "trian", "d0;d1", '"q,uo""te"', "\x00", "", " ", "\ufeff", "é", "🎵"]),
)
_row = st.lists(_cell, min_size=0, max_size=5).map(lambda cells: ",".join(cells))
_header = st.sampled_from(["path,labels,split", "path,labels,split,fold", "split,path,labels", "path,labels",
                           "path,labels,split,split", "path;labels;split", ""])
_encoding = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "utf-32"])


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory, fsdd_root):
    d = tmp_path_factory.mktemp("fuzz_manifest")
    for name in ("0_jackson_0.wav", "1_theo_3.wav"):
        shutil.copy(Path(fsdd_root) / "recordings" / name, d / name)
    return d


@FUZZ
@given(header=_header, rows=st.lists(_row, max_size=6), encoding=_encoding, newline=st.sampled_from(["\n", "\r\n"]))
def test_any_manifest_loads_or_is_refused_by_name(manifest_dir, header, rows, encoding, newline):
    from probekit.datasets import get_dataset

    text = newline.join([header, *rows]) + newline
    path = manifest_dir / "m.csv"
    try:
        path.write_bytes(text.encode(encoding))
    except UnicodeEncodeError:
        return  # latin-1 cannot hold every fuzzed character; nothing to test
    try:
        ds = get_dataset(f"manifest:{path}")
        for split in ds.spec.splits:
            ds.clips(split)
    except ProbekitError as e:
        assert "m.csv" in str(e) or "manifest" in str(e), e


_json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.integers(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)


@FUZZ
@given(doc=_json_like, raw=st.binary(max_size=64), mode=st.sampled_from(["json", "bytes", "nested", "cut"]))
def test_any_record_file_reads_or_is_refused_by_name(tmp_path_factory, doc, raw, mode):
    from probekit.results.store import read_record

    path = tmp_path_factory.mktemp("fuzz_record") / "r.json"
    if mode == "json":
        data = json.dumps({"schema_version": 2, "x": doc}).encode()
    elif mode == "bytes":
        data = raw
    elif mode == "nested":
        data = b"[" * (1000 + len(raw) * 1000)
    else:
        data = json.dumps({"schema_version": 1, "backbone": doc}).encode()[: max(1, len(raw))]
    path.write_bytes(data)
    try:
        read_record(path)
    except ProbekitError as e:
        assert "r.json" in str(e), e


@FUZZ
@given(text=st.text(max_size=20), like=st.sampled_from([None, 1e-3, 10, True, "mean", (1, 2)]))
def test_any_set_value_parses_or_is_refused(text, like):
    from probekit.cli._parse import parse_set

    try:
        parse_set(text, like, name="lr")
    except ProbekitError as e:
        assert "lr" in str(e), e


@FUZZ
@given(key=st.sampled_from(["lr", "steps", "batch_size", "weight_decay", "warmup_steps", "dropout"]),
       value=st.one_of(st.text(max_size=6), st.floats(allow_nan=True), st.integers(-10**6, 10**6), st.none(),
                       st.booleans()))
def test_any_training_setting_is_validated_or_refused(key, value):
    from probekit.train.fit import TrainConfig

    try:
        TrainConfig().replace(**{key: value}).validate()
    except ProbekitError as e:
        assert key in str(e), e


@pytest.fixture(scope="module")
def wav_bytes(fsdd_root):
    return (Path(fsdd_root) / "recordings" / "3_nicolas_27.wav").read_bytes()


@FUZZ
@given(offset=st.integers(0, 43), value=st.binary(min_size=1, max_size=4),
       field=st.sampled_from([None, 22, 24, 28, 32, 34, 40]), number=st.integers(0, 2**32 - 1))
def test_any_wav_header_decodes_or_is_refused_by_name(tmp_path_factory, wav_bytes, offset, value, field, number):
    from probekit.audio.io import audio_info, load_audio

    b = bytearray(wav_bytes)
    if field is None:
        b[offset:offset + len(value)] = value
    else:  # a plausible header field (channels, rate, byte rate, block align, bits, data size) set to anything
        width = 2 if field in (22, 32, 34) else 4
        b[field:field + width] = struct.pack("<I", number)[:width]
    path = tmp_path_factory.mktemp("fuzz_wav") / "clip.wav"
    path.write_bytes(bytes(b))
    try:
        audio_info(path)
        wave = load_audio(path)
        assert np.isfinite(wave.numpy()).all()
    except ProbekitError as e:
        assert "clip.wav" in str(e), e


@FUZZ
@given(raw=st.binary(max_size=256), prefix=st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02", b"\x08\x00\x00\x00"]))
def test_any_checkpoint_file_loads_or_is_refused_by_name(tmp_path_factory, raw, prefix):
    from probekit.backbones.checkpoint_io import read_checkpoint

    path = tmp_path_factory.mktemp("fuzz_ckpt") / "w.pt"
    path.write_bytes(prefix + raw)
    try:
        read_checkpoint(path)
    except ProbekitError as e:
        assert "w.pt" in str(e), e

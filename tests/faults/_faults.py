"""Helpers of the fault suite: the CLI as a user runs it, real FSDD clips broken in every common way.

Every user-facing failure must come back as exit code 2 with one line on stderr that names the file,
key or value, and no traceback (`assert_user_error`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[2]
SOURCE = "3_nicolas_27.wav"  # the clip every re-encoding below is made from
OTHERS = ["0_jackson_5.wav", "1_nicolas_7.wav", "2_theo_9.wav", "4_george_6.wav", "5_lucas_8.wav"]

#: broken files and the words their error must contain (besides the file's name)
BROKEN = {
    "missing.wav": "not found",
    "empty.wav": "empty file",
    "header_only.wav": "not a readable audio file",
    "truncated.wav": "truncated",
    "random_bytes.wav": "not a readable audio file",
    "nan.wav": "NaN/Inf",
    "inf.wav": "NaN/Inf",
}
#: unusual but valid files: each must be processed (not failed) with finite tokens
ODD = ["silence.wav", "one_sample.wav", "stereo_48k.wav", "pcm_u8.wav", "pcm_24.wav", "float.wav",
       "clip.flac", "clip.ogg"]  # fmt: skip
#: re-encodings of SOURCE whose tokens must match SOURCE's
SAME_AUDIO = ["stereo_48k.wav", "pcm_u8.wav", "pcm_24.wav", "float.wav", "clip.flac", "clip.ogg"]





def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `probekit ARGS` in-process as the console script does: (exit code, stdout, stderr)."""
    from probekit.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_user_error(rc: int, err: str, *words: str) -> str:
    """Exit 2, exactly one line on stderr, starting 'error:', holding every word; no traceback."""
    line = err.strip()
    assert rc == 2, f"exit {rc}: {err}"
    assert "Traceback" not in err and "internal error" not in err, err
    assert line.count("\n") == 0, f"more than one line:\n{err}"
    assert line.startswith("error:"), line
    for w in words:
        assert str(w) in line, f"{w!r} not in: {line}"
    return line


def run_module(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """`python -m probekit ARGS` in a fresh process (signals, exit codes, what reaches the terminal)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", COLUMNS="250")
    return subprocess.run([sys.executable, "-m", "probekit", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False, **kw)


def popen_module(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", COLUMNS="250")
    return subprocess.Popen([sys.executable, "-m", "probekit", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def write_manifest(folder: Path, rows: list[tuple[str, str, str]], name: str = "m.csv") -> Path:
    path = folder / name
    path.write_text("path,labels,split\n" + "".join(f"{p},{lab},{s}\n" for p, lab, s in rows))
    return path


def make_bad_audio(folder: Path, fsdd_root: Path) -> dict[str, Path]:
    """Real FSDD clips plus every broken and unusual file of BROKEN/ODD in `folder` (missing.wav absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    rec = fsdd_root / "recordings"
    for n in [SOURCE, *OTHERS]:
        shutil.copyfile(rec / n, folder / n)
    good = (rec / SOURCE).read_bytes()
    data, sr = sf.read(rec / SOURCE, dtype="float32")
    (folder / "empty.wav").write_bytes(b"")
    (folder / "header_only.wav").write_bytes(good[:30])  # cut inside the RIFF header
    (folder / "truncated.wav").write_bytes(good[: len(good) // 2])  # header promises twice the data
    (folder / "random_bytes.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    for name, pos, value in (("nan.wav", 100, np.nan), ("inf.wav", -1, np.inf)):
        x = data.copy()
        x[pos] = value
        sf.write(folder / name, x, sr, subtype="FLOAT")
    sf.write(folder / "silence.wav", np.zeros(sr, np.float32), sr)
    sf.write(folder / "one_sample.wav", data[1000:1001], sr)
    import torchaudio.functional as AF

    up = AF.resample(torch.from_numpy(data), sr, 48000).numpy()
    sf.write(folder / "stereo_48k.wav", np.stack([up, up], 1), 48000, subtype="PCM_16")
    sf.write(folder / "pcm_u8.wav", data, sr, subtype="PCM_U8")
    sf.write(folder / "pcm_24.wav", data, sr, subtype="PCM_24")
    sf.write(folder / "float.wav", data, sr, subtype="FLOAT")
    sf.write(folder / "clip.flac", data, sr, format="FLAC")
    sf.write(folder / "clip.ogg", data, sr, format="OGG", subtype="VORBIS")
    return {p.name: p for p in folder.iterdir()}


def fsdd_manifest(folder: Path, fsdd_root: Path, n: int = 32) -> Path:
    """`n` real FSDD test clips (every digit, several speakers) copied under `folder` with a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in (fsdd_root / "recordings").glob("*.wav") if int(p.stem.split("_")[2]) < 5)
    chosen = names[:: max(1, len(names) // n)][:n]
    for name in chosen:
        shutil.copyfile(fsdd_root / "recordings" / name, folder / name)
    return write_manifest(folder, [(name, f"d{name[0]}", "train") for name in chosen])


def store_snapshot(path: Path) -> dict[str, bytes]:
    """Every file of a store that must be bitwise reproducible (provenance times and lock files aside)."""
    import json

    out = {}
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path).as_posix()
        if f.is_dir() or rel.startswith(".probekit/lock-"):
            continue
        if rel == "zarr.json":
            meta = json.loads(f.read_bytes())
            prov = meta["attributes"]["probekit"].pop("provenance")
            for k in ("created", "completed", "host"):
                prov.pop(k, None)
            out[rel] = json.dumps(meta, sort_keys=True).encode() + json.dumps(prov, sort_keys=True).encode()
        else:
            out[rel] = f.read_bytes()
    return out


def assert_same_store(a: Path, b: Path) -> None:
    """Same files with the same bytes, and no temporaries left beside or inside the store."""
    sa, sb = store_snapshot(a), store_snapshot(b)
    assert sorted(sa) == sorted(sb), set(sa) ^ set(sb)
    different = [k for k in sa if sa[k] != sb[k]]
    if "zarr.json" in different:  # name the field that differs, not only the file
        import difflib

        diff = difflib.unified_diff(sb["zarr.json"].decode().split(", "), sa["zarr.json"].decode().split(", "), lineterm="")
        raise AssertionError(f"zarr.json differs: {' | '.join(list(diff)[2:12])}")
    assert not different, different[:5]
    assert not list(a.parent.glob(".*.tmp")) and not list(a.rglob("*.partial")) and not list(a.rglob(".*.tmp"))

"""Decode audio files into the one waveform format every frontend expects.

`load_audio` returns a 1-D float32 mono tensor at the requested rate (16 kHz by default): soundfile
decodes (wav, flac, ogg, mp3 where libsndfile supports it), channels are averaged, and
`torchaudio.functional.resample` converts the rate (the resampler the EAT code uses). Every way a file
can be unusable raises `AudioError` naming the file and the cause, never a half-decoded clip.

Crop/pad policies are plain names (`FIT_POLICIES`) so caches and result records can store them.
"""

from __future__ import annotations

import math
import os
import stat
import struct
from pathlib import Path

import numpy as np
import torch

from probekit.errors import AudioError, ConfigError, suggest

__all__ = [
    "FIT_POLICIES",
    "RESAMPLERS",
    "MAX_SECONDS_ENV",
    "MIN_SAMPLE_RATE",
    "audio_info",
    "fit_length",
    "max_audio_seconds",
    "load_audio",
    "split_windows",
]

#: How a waveform is brought to a fixed number of samples (recorded in frontend configs and caches).
#:   pad_end:  shorter clips get zeros at the end; longer clips keep their first `num_samples`
#:             (crop from the start) -- the rule of the official EAT/BAT evaluation code.
#:   center:   zeros split evenly before/after; longer clips keep their middle `num_samples`.
#:   repeat:   shorter clips are tiled (looped) then cut; longer clips keep their first `num_samples`.
FIT_POLICIES: tuple[str, ...] = ("pad_end", "center", "repeat")

#: Sample-rate converters. "torchaudio" (default): `torchaudio.functional.resample`, as EAT/SSLAM load
#: audio. "soxr_hq" / "soxr_vhq": libsoxr as the BAT code loads it through librosa (AudioSet: soxr_hq;
#: ESC-50, Speech Commands: soxr_vhq), for reproducing the BAT paper's inputs sample for sample;
#: needs the `soxr` package (pip install soxr).
RESAMPLERS: tuple[str, ...] = ("torchaudio", "soxr_hq", "soxr_vhq")

#: Headers outside these bounds are damage, not audio: a WAV whose header says 1 Hz "lasts" 85 minutes
#: at 16 kHz, and since a split pads every clip to its longest, one such file blows up the whole store.
MIN_SAMPLE_RATE = 1000  # Hz; real recordings start around 4-8 kHz
MAX_SECONDS_ENV = "PROBEKIT_MAX_AUDIO_SECONDS"
DEFAULT_MAX_SECONDS = 3600.0  # one hour per file; raise it with $PROBEKIT_MAX_AUDIO_SECONDS


def max_audio_seconds() -> float:
    """The longest file accepted, in seconds: `$PROBEKIT_MAX_AUDIO_SECONDS`, default one hour."""
    raw = os.environ.get(MAX_SECONDS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or math.isinf(value):
        raise ConfigError(f"${MAX_SECONDS_ENV} is {raw!r}", hint="give a positive number of seconds, e.g. 7200")
    return value


def _wav_truncation(path: Path) -> str | None:
    """For RIFF/WAVE files: say so when the header promises more sample bytes than the file holds.

    libsndfile silently clamps such files to what is there, which would hide a broken download.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"data":
                    available = size - (pos + 8)
                    # 0 and 0xFFFFFFFF are placeholders some streaming writers leave; not truncation
                    if csize not in (0, 0xFFFFFFFF) and csize > available:
                        return (
                            f"truncated: header declares {csize} data bytes but only {available} are present"
                        )
                    return None
                pos += 8 + csize + (csize & 1)
    except OSError:
        return None
    return None


def audio_info(path: str | os.PathLike, *, max_seconds: float | None = None) -> tuple[int, int, int]:
    """(native sample rate, frames, channels) of a file without decoding it; AudioError if unreadable.

    Headers that cannot be real audio are refused here, before anything is decoded or padded: a rate
    below `MIN_SAMPLE_RATE` Hz, or a length above `max_seconds` (default `max_audio_seconds()`).
    """
    import soundfile as sf

    p = Path(path)
    _check_file(p)
    try:
        info = sf.info(str(p))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError by version
        raise AudioError(
            p, f"not a readable audio file ({_short(e)})", hint="re-encode it as wav or flac"
        ) from e
    rate, frames, channels = int(info.samplerate), int(info.frames), int(info.channels)
    if 0 < rate < MIN_SAMPLE_RATE:
        raise AudioError(
            p, f"header says {rate} Hz, below the {MIN_SAMPLE_RATE} Hz of any real recording (damaged header?)",
            hint="re-encode the file from its source, or drop it",
        )
    limit = max_audio_seconds() if max_seconds is None else max_seconds
    if rate > 0 and frames / rate > limit:
        raise AudioError(
            p, f"header says {frames / rate:.1f} s of audio, above the {limit:g} s limit per file",
            hint=f"cut it into clips, or raise the limit: ${MAX_SECONDS_ENV}=SECONDS",
        )
    return rate, frames, channels


def _short(e: Exception) -> str:
    msg = str(e).strip().replace("\n", " ")
    return msg if len(msg) < 160 else msg[:157] + "..."


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))  # fmt: skip


def _check_file(p: Path) -> None:
    """Name what is wrong with the file itself before libsndfile sees it (it says only "System error")."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise AudioError(
            p, "file not found", hint="check the dataset root and that the download finished"
        ) from None
    except PermissionError:
        raise AudioError(p, "permission denied: cannot reach the file",
                         hint="check the modes of the folders above it") from None  # fmt: skip
    except OSError as e:
        raise AudioError(p, f"cannot stat the file ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(p, "is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):  # never opened: reading a FIFO would block
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "a special file")
        raise AudioError(
            p, f"is {kind}, not a regular audio file", hint="point the dataset at the audio file itself"
        )
    if st.st_size == 0:
        raise AudioError(p, "empty file (0 bytes)", hint="re-download or remove it")
    try:
        with open(p, "rb"):
            pass
    except PermissionError:
        raise AudioError(p, "permission denied: the file cannot be read",
                         hint="check the file's mode and owner, e.g. chmod a+r FILE") from None  # fmt: skip
    except OSError as e:
        raise AudioError(
            p, f"cannot open the file ({e.strerror})", hint="check the disk or the network mount"
        ) from None


def load_audio(
    path: str | os.PathLike,
    *,
    sample_rate: int = 16000,
    offset: float = 0.0,
    duration: float | None = None,
    resampler: str = "torchaudio",
) -> torch.Tensor:
    """Decode one clip to a 1-D float32 mono waveform at `sample_rate`.

    Integer PCM decodes to [-1, 1); float files keep their stored values. Channels are averaged, then
    the rate is converted with `torchaudio.functional.resample` (default sinc/Hann filter).

    Args:
        path: audio file (anything libsndfile reads: wav, flac, ogg, ...).
        sample_rate: output rate in Hz.
        offset: start of the segment, seconds into the file.
        duration: segment length in seconds; None reads to the end.
        resampler: one of `RESAMPLERS`; record it with the frontend config wherever features are cached.

    Returns:
        Tensor of shape (samples,), dtype float32, on the CPU.

    Raises:
        AudioError: missing, empty, truncated or non-audio file; NaN/Inf samples; or no samples left
            after applying offset/duration.
    """
    import soundfile as sf

    p = Path(path)
    if resampler not in RESAMPLERS:
        raise ConfigError(f"unknown resampler {resampler!r}", hint=suggest(resampler, RESAMPLERS))
    if offset < 0 or (duration is not None and duration <= 0):
        raise AudioError(
            p, f"bad segment offset={offset} duration={duration} (need offset >= 0, duration > 0)"
        )
    native_sr, frames, channels = audio_info(p)
    cause = _wav_truncation(p)
    if cause:
        raise AudioError(p, cause, hint="re-download or re-encode the file")
    if native_sr <= 0 or channels <= 0:
        raise AudioError(p, f"invalid header (rate {native_sr} Hz, {channels} channels)")
    if frames <= 0:
        raise AudioError(p, "no audio samples in the file (empty or truncated stream)")
    # seconds -> samples (Speech Commands silence crops are whole seconds, so any rounding agrees)
    start = round(offset * native_sr)
    stop = frames if duration is None else min(frames, start + round(duration * native_sr))
    if start >= frames or stop <= start:
        raise AudioError(
            p,
            f"nothing left after offset={offset}s duration={duration}: the file holds {frames / native_sr:.3f}s",
        )
    try:
        data, _ = sf.read(str(p), start=start, stop=stop, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(p, f"decoding failed, the file is corrupt or truncated ({_short(e)})") from e
    if data.shape[0] == 0:
        raise AudioError(p, "nothing decoded (corrupt or truncated stream)")
    if data.shape[0] < stop - start:
        raise AudioError(p, f"truncated: expected {stop - start} samples, decoded {data.shape[0]}")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(p, f"{bad} NaN/Inf samples", hint="the file is corrupt; re-encode or drop it")
    mono = np.ascontiguousarray(data.mean(axis=1, dtype=np.float32))
    if native_sr != sample_rate and resampler != "torchaudio":
        wave = torch.from_numpy(_soxr_resample(mono, native_sr, sample_rate, resampler))
    elif native_sr != sample_rate:
        import torchaudio.functional as AF

        _check_resample_cost(p, native_sr, sample_rate)
        wave = AF.resample(torch.from_numpy(mono), native_sr, sample_rate)
    else:
        wave = torch.from_numpy(mono)
    if wave.numel() == 0:
        raise AudioError(p, f"nothing left after resampling {data.shape[0]} samples from {native_sr} Hz")
    return wave.to(torch.float32).contiguous()


#: torchaudio's exact polyphase resampler builds a (target/g) x (native/g + 2*width) filter, g = gcd of the
#: rates: 44.1 kHz -> 16 kHz needs 160 x 475 taps, but a header saying 44101 Hz needs 16000 x 44135
#: (2.8 GB as float32, more during the convolution). Such a rate is refused per clip instead of exhausting
#: memory (found by tests/faults/test_fuzz.py).
MAX_RESAMPLE_TAPS = 20_000_000


def _check_resample_cost(path, native: int, target: int) -> None:
    import math

    g = math.gcd(int(native), int(target))
    width = math.ceil(6 * native / (min(native, target) * 0.99))  # torchaudio's lowpass_filter_width=6
    taps = (target // g) * (native // g + 2 * width)
    if taps > MAX_RESAMPLE_TAPS:
        raise AudioError(path, f"sample rate {native} Hz cannot be converted to {target} Hz exactly without a "
                               f"{taps * 4 / 1e9:.1f} GB filter (the rates share no common factor)",
                         hint="re-encode it at a standard rate (8, 16, 22.05, 32, 44.1 or 48 kHz), "
                              "or check its header")


def _soxr_resample(mono: np.ndarray, orig: int, target: int, quality: str) -> np.ndarray:
    """libsoxr resampling exactly as librosa.resample(res_type=quality) does it (length fixed to ceil(n * ratio))."""
    try:
        import soxr
    except ImportError:
        raise ConfigError(f"resampler {quality!r} needs the soxr package", hint="pip install soxr") from None
    out = soxr.resample(mono, orig, target, quality=quality)
    n = math.ceil(mono.shape[0] * target / orig)
    out = out[:n] if out.shape[0] >= n else np.pad(out, (0, n - out.shape[0]))
    return np.ascontiguousarray(out, dtype=np.float32)


def fit_length(wave: torch.Tensor, num_samples: int, policy: str = "pad_end") -> torch.Tensor:
    """Pad or crop the last dimension of `wave` to exactly `num_samples` (see `FIT_POLICIES`)."""
    if policy not in FIT_POLICIES:
        raise ConfigError(f"unknown crop/pad policy {policy!r}", hint=suggest(policy, FIT_POLICIES))
    if num_samples <= 0:
        raise ConfigError(f"num_samples must be positive, got {num_samples}")
    n = wave.shape[-1]
    if n == num_samples:
        return wave
    if n > num_samples:
        start = (n - num_samples) // 2 if policy == "center" else 0
        return wave[..., start : start + num_samples]
    missing = num_samples - n
    if policy == "repeat" and n > 0:
        reps = math.ceil(num_samples / n)
        return wave.repeat(*([1] * (wave.dim() - 1)), reps)[..., :num_samples]
    before = missing // 2 if policy == "center" else 0
    return torch.nn.functional.pad(wave, (before, missing - before))


def split_windows(
    wave: torch.Tensor, window_samples: int, *, hop_samples: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a 1-D waveform into windows for clips longer than a model's input.

    Windows start every `hop_samples` (default: `window_samples`, no overlap) and cover the whole
    clip; the last one is zero-padded at the end. Returns `(windows (W, window_samples), lengths (W,))`
    where `lengths` counts the real samples of each window, so frontends never treat the padding as audio.
    """
    if wave.dim() != 1:
        raise ConfigError(f"split_windows takes a 1-D waveform, got shape {tuple(wave.shape)}")
    if window_samples <= 0:
        raise ConfigError(f"window_samples must be positive, got {window_samples}")
    hop = window_samples if hop_samples is None else hop_samples
    if hop <= 0:
        raise ConfigError(f"hop_samples must be positive, got {hop_samples}")
    n = wave.shape[0]
    count = 1 if n <= window_samples else 1 + math.ceil((n - window_samples) / hop)
    total = (count - 1) * hop + window_samples
    padded = torch.nn.functional.pad(wave, (0, total - n))
    windows = padded.unfold(0, window_samples, hop)[:count].contiguous()
    starts = torch.arange(count) * hop
    lengths = (n - starts).clamp(min=0, max=window_samples)
    return windows, lengths

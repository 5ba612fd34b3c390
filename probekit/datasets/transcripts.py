"""Transcripts of ASR datasets: the official character vocabulary and the padded target rows.

As BAT's `CharTokenizer` (data/bat_audio_datasets.py): lower case, characters outside [a-z ' space] dropped,
ids 1..28 for space, apostrophe and a-z, 0 the CTC blank. This module imports nothing else of probekit but
its errors, so dataset modules and the cache can use it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from probekit.errors import DatasetError

#: The official character vocabulary: index 0 the CTC blank, then space, apostrophe, a-z (29 symbols).
CHARS: tuple[str, ...] = ("<blank>", " ", "'", *(chr(i) for i in range(97, 123)))
BLANK = 0
_CHAR_ID = {c: i for i, c in enumerate(CHARS)}
_DROP = re.compile(r"[^a-z ']")


def normalize_transcript(text: str) -> str:
    """Lower case, every character outside [a-z ' space] removed (the official `CharTokenizer.encode`)."""
    return _DROP.sub("", str(text).lower())


def encode(text: str) -> list[int]:
    """Character ids of a transcript (blank-free)."""
    return [_CHAR_ID[c] for c in normalize_transcript(text)]


def decode(ids: Sequence[int]) -> str:
    """Ids -> text, blanks dropped (the official `decode(ignore_blanks=True)`)."""
    return "".join(CHARS[int(i)] for i in ids if int(i) != BLANK)


def transcript_targets(clips, spec_name: str = "") -> np.ndarray:
    """(clips, S) int64 character ids padded with 0, S = the longest transcript (at least 1).

    A clip without a transcript, or whose transcript keeps no character of the vocabulary (WER has no
    reference words then), is refused by name."""
    rows = []
    for c in clips:
        text = getattr(c, "transcript", None)
        if text is None:
            raise DatasetError(f"{spec_name}: clip {c.id!r} ({c.path}) has no transcript",
                               hint="an ASR dataset needs a transcript for every clip")
        if not normalize_transcript(text).strip():
            raise DatasetError(f"{spec_name}: clip {c.id!r} ({c.path}) has transcript {text!r} with no character of "
                               "the vocabulary [a-z ']", hint="fix or remove that transcript")
        rows.append(encode(text))
    out = np.zeros((len(rows), max([1, *map(len, rows)])), dtype=np.int64)
    for i, ids in enumerate(rows):
        out[i, : len(ids)] = ids
    return out

"""Published numbers: the JSON records in ``probekit/data/published``, validated like measured ones.

Each file is one figure of a paper, with its citation and table as `source` (values in percent, as
printed). Transcribed from:

- BAT paper: Ghaffari, Rauch, Scholz, Devos, "BAT: Better Audio Transformer Guided by Convex Gated
  Probing" (ICML 2026 submission, arXiv v1), Table 5 (FT / CGP / LP) and Table 1 (F1, Protobin), plus
  the original EAT and SSLAM authors' fine-tuning figures it cites.
- Unmute paper: Rauch et al., "Unmute the Patch Tokens: Rethinking Probing in Multi-Label Audio
  Classification" (ICLR 2026).

Backbone facts are not copied into these files for registered backbones: `params`, `family` and
`training_data` come from `probekit.backbones.backbone_card(name)` when the files are loaded (one source
of truth); a paper's own figure (e.g. its rounded parameter count) stays in the record's notes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from probekit.results.schema import RecordError, ResultRecord
from probekit.results.store import read_records

__all__ = ["PUBLISHED_DIR", "published_records"]

PUBLISHED_DIR = Path(__file__).resolve().parents[1] / "data" / "published"


def _with_card(record: ResultRecord) -> ResultRecord:
    from probekit.backbones import backbone_card
    from probekit.errors import BackboneError

    try:
        card = backbone_card(record.backbone.name)
    except BackboneError:  # not registered here (audio-mae, beats, dasheng): the file's own facts
        return record
    ref = record.backbone.model_copy(update=dict(
        family=card.family, params=card.params or None, training_data=list(card.training_data)))
    out = record.model_copy(update={"backbone": ref})
    out._path = record.path
    return out


@lru_cache(maxsize=1)
def _load(folder: Path = PUBLISHED_DIR) -> tuple[ResultRecord, ...]:
    out = []
    for r in read_records(sorted(folder.rglob("*.json"))):
        if not r.reported:
            raise RecordError(f"{r.path}: a published figure must cite its source, not say 'measured'")
        out.append(_with_card(r))
    return tuple(out)


def published_records() -> list[ResultRecord]:
    """Every published figure probekit ships, as validated records (source = citation and table)."""
    out = []
    for r in _load():
        copy = r.model_copy(deep=True)
        copy._path = r.path
        out.append(copy)
    return out

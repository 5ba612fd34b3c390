"""Result records, leaderboards and figures.

- `probekit.results.schema`: the record models (JSON in and out); `records.make_record` builds one.
- `probekit.results.store`: where records live (`results_dir`), `write_record`, `load_records`.
- `probekit.results.reported`: the published figures shipped as records (`published_records`).
- `probekit.results.leaderboard` / `probekit.results.plots`: tables and figures rebuilt from records.

The `leaderboard()` function is `probekit.results.leaderboard.leaderboard` (or `probekit.leaderboard`): a
function here of the same name as the submodule would be shadowed by it. Names are imported on first use, so importing a submodule stays cheap (no pandas until a board is built).
"""

from __future__ import annotations

_LAZY = {
    "ResultRecord": "probekit.results.schema",
    "BackboneRef": "probekit.results.schema",
    "SeedRun": "probekit.results.schema",
    "ClipCount": "probekit.results.schema",
    "RecordError": "probekit.results.schema",
    "make_record": "probekit.results.records",
    "aggregate": "probekit.results.stats",
    "capture_environment": "probekit.results.environment",
    "results_dir": "probekit.results.store",
    "write_record": "probekit.results.store",
    "read_record": "probekit.results.store",
    "load_records": "probekit.results.store",
    "filter_records": "probekit.results.store",
    "dataset_identity": "probekit.results.store",
    "published_records": "probekit.results.reported",
    "render": "probekit.results.leaderboard",
    "plot_gates": "probekit.results.plots",
    "plot_heatmap": "probekit.results.plots",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'probekit.results' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

"""probekit: probe frozen self-supervised audio models.

    import probekit
    res = probekit.evaluate("bat", datasets=["fsdd"], probes=["linear", "cgp"], checkpoint="bat.safetensors")
    res.leaderboard()

The public verbs are imported lazily (``import probekit`` stays cheap; torch loads on first use).
"""

__version__ = "0.3.0"

_LAZY = {
    "evaluate": ("probekit.api", "evaluate"),
    "Results": ("probekit.api", "Results"),
    "prepare": ("probekit.api", "prepare"),
    "token_data": ("probekit.api", "token_data"),
    "get_backbone": ("probekit.backbones", "get_backbone"),
    "list_backbones": ("probekit.backbones", "list_backbones"),
    "adapt_module": ("probekit.backbones.custom", "adapt_module"),
    "get_dataset": ("probekit.datasets", "get_dataset"),
    "list_datasets": ("probekit.datasets", "list_datasets"),
    "extract": ("probekit.cache", "extract"),
    "open_cache": ("probekit.cache", "open_cache"),
    "make_probe": ("probekit.probes", "make_probe"),
    "list_probes": ("probekit.probes", "list_probes"),
    "load_records": ("probekit.results.records", "load_records"),
    "leaderboard": ("probekit.results.leaderboard", "leaderboard"),
}

__all__ = ["__version__", *_LAZY.keys()]  # noqa: PLE0604 - the keys are strings


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'probekit' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)

"""The FSDD-derived event task of the tests: the user-facing builder (`probekit.datasets.events.build_fsdd_events`,
defined in probekit/datasets/fsdd_events.py) on the full FSDD recordings the tests use."""

from __future__ import annotations

from probekit.datasets.fsdd_events import RATE, SPEAKERS, Placed, build_fsdd_events

__all__ = ["RATE", "SPEAKERS", "Placed", "build_fsdd_events"]

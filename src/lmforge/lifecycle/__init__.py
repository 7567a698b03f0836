"""A model after training: the registry, continual updates, the prediction log and drift monitoring.

    db.py            the one SQLite connection helper (WAL, busy timeout, lock retry) and transactions
    versions.py      the registry's tables, `Version`, model names and references (intents:v3)
    registry.py      `Registry`: add, list, promote, roll back, archive, diff, verify
    artefacts.py     version folders on disk: staging, copying a run, read-only, crash leftovers
    register.py      `register_run`: a run plus replay data and evaluation sets (what `update` needs)
    reference.py     the monitoring reference and vocabulary kept in a version folder
    examples.py      the JSONL examples a version keeps, balanced sampling, word statistics
    update.py        `update`: continual fine-tune of the production version -> a gated candidate
    gate.py          the promotion gate: does the candidate keep the old and learn the new?
    predlog.py       the prediction log and feedback (tables in the registry database)
    drift.py         `build_report`: drift checks of logged traffic against the reference
    drift_stats.py   PSI, chi-square and KS tests behind the checks
    drift_render.py  the report as a terminal table or a self-contained HTML page

The registry names are imported at once; those whose modules import numpy or the config (drift,
rendering, registering) on first use, so that `lmforge --help` stays fast. `update` is imported from
`lmforge.lifecycle.update`.
"""

from __future__ import annotations

import importlib
from typing import Any

from .gate import GateThresholds
from .registry import DEFAULT_ROOT_ENV, Registry
from .versions import MAX_VERSION, STAGES, Version, check_name, check_version, parse_ref

_ON_FIRST_USE = {
    "DriftThresholds": "drift", "build_report": "drift", "gauges": "drift",
    "chi_square": "drift_stats", "ks": "drift_stats", "psi": "drift_stats",
    "render_table": "drift_render", "write_html": "drift_render",
    "register_run": "register",
}

__all__ = ["DEFAULT_ROOT_ENV", "GateThresholds", "MAX_VERSION", "STAGES", "Registry", "Version", "check_name",
           "check_version", "parse_ref", *_ON_FIRST_USE]


def __getattr__(name: str) -> Any:
    if name in _ON_FIRST_USE:
        return getattr(importlib.import_module(f".{_ON_FIRST_USE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

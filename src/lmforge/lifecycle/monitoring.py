"""The monitoring report of a registered model over a window of recent traffic: what `lmforge
monitor` prints and the studio's Monitor page shows (one function, so both show the same numbers)."""

from __future__ import annotations

import re
import time

from ..errors import UserError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_since(text: str) -> float:
    """'24h' / '30m' / '7d' / '90s' / 'all' -> unix time of the window's start."""
    if text == "all":
        return 0.0
    match = _DURATION.match(text.strip())
    if not match:
        raise UserError(f"--since {text!r}: give a duration like 90s, 30m, 24h or 7d, or 'all'")
    seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return time.time() - seconds


def monitor_report(registry, name: str, version: int | None, since: str, *, store=None):
    """(the version, its report) for traffic of `name` (version None: production) since `since`.
    `store`: a `columns.TrafficStore` of the registry's log to read the predictions from (kept in memory
    between reports); without one they are read from the log."""
    from .drift import build_report
    from .columns import read_columns
    from .predlog import feedback_since
    from .reference import load_reference

    v = registry.get(name, version)
    reference = load_reference(v.path)
    if reference is None:
        raise UserError(f"{v.ref} has no monitoring reference (only text-classification versions have one)")
    start = parse_since(since)
    if store is None:
        traffic = read_columns(registry.db_path, name, since=start, version=v.version)[0]
    else:
        traffic = store.columns(name).window(start, v.version)
    feedback = feedback_since(registry.db_path, name, start, version=v.version)
    return v, build_report(reference, traffic, feedback, model=name, version=v.ref, window=since)

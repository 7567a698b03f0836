"""Monitoring: drift of recent served traffic against the model's training-time reference.

- `build_report`: label, confidence, length, OOV and feedback-accuracy checks, volume and latency.
- `psi` / `chi_square` / `ks`: the statistics behind the checks.
- `render_table` (terminal, rich) and `write_html` (self-contained page with inline plots).
"""

from __future__ import annotations

from lmforge.monitoring.drift import DriftThresholds, build_report, chi_square, ks, psi
from lmforge.monitoring.report import render_table, write_html

__all__ = ["DriftThresholds", "build_report", "chi_square", "ks", "psi", "render_table", "write_html"]

"""Evaluation: metrics for the three task families and the on-disk report.

- `classification_report` / `multilabel_report` / `expected_calibration_error`: text classification.
- `entity_report`: token classification (NER), entity-level with seqeval in strict IOB2 mode.
- `write_report`: `report.json`, `report.md` and plots (`confusion_matrix.png`, `reliability.png`).
"""

from __future__ import annotations

import importlib

_HOME = {"classification_report": "classification_metrics", "expected_calibration_error": "classification_metrics",
         "multilabel_report": "classification_metrics", "entity_report": "ner_metrics", "write_report": "report"}


def __getattr__(name: str):
    # lazy: the metrics pull in scikit-learn (~3 s), which importing the report layout must not
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_HOME)

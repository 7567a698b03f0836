"""Evaluation: metrics for the three task families and the on-disk report.

- `classification_report` / `multilabel_report` / `expected_calibration_error`: text classification.
- `entity_report`: token classification (NER), entity-level with seqeval in strict IOB2 mode.
- `write_report`: `report.json`, `report.md` and plots (`confusion_matrix.png`, `reliability.png`).
"""

from __future__ import annotations

from lmforge.evaluation.classification_metrics import (
    classification_report,
    expected_calibration_error,
    multilabel_report,
)
from lmforge.evaluation.ner_metrics import entity_report
from lmforge.evaluation.report import write_report

__all__ = [
    "classification_report",
    "entity_report",
    "expected_calibration_error",
    "multilabel_report",
    "write_report",
]

"""Write an evaluation report to disk: JSON for machines, Markdown and PNG plots for people.

`write_report` takes a dict from `classification_report`, `multilabel_report` or `entity_report`
(or the same dict read back from `report.json`) and writes into `out_dir`:

- `report.json`: the dict itself, pretty-printed;
- `report.md`: headline metrics, the per-class/per-type table, averages, calibration and (for
  multi-class with at most `MD_CONFUSION_MAX_CLASSES` classes) the confusion matrix;
- `confusion_matrix.png`: when the report has a confusion matrix;
- `reliability.png`: when the report has a calibration section;
- `entity_scores.png`: NER, precision / recall / F1 bars per entity type (with each type's support).

Every file is written to a temporary name in `out_dir` and then `os.replace`d, so a reader never
sees a half-written file and an interrupted run leaves the previous report intact.
matplotlib is imported only when a plot is drawn (and forced onto the Agg backend) so that
importing this module stays cheap and works on machines without a display.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import write_text_atomic
from .plots import plot_confusion_matrix, plot_entity_scores, plot_reliability

MD_CONFUSION_MAX_CLASSES = 50  # wider Markdown tables stop being readable

JSON_NAME = "report.json"
MD_NAME = "report.md"
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability.png"
ENTITY_PNG = "entity_scores.png"


@dataclass(frozen=True)
class ReportStyle:
    """How one kind of report is laid out; each task supplies its own (`TaskSpec.report_style`)."""

    kind: str  # shown as "Task: `kind`"
    headlines: tuple[tuple[str, tuple[str, ...]], ...]  # (display name, key path into the report)
    per_heading: str = "Per class"  # the per-class/per-type section and its first column
    per_column: str = "Class"
    per_key: str = "per_class"
    per_empty: str = "No per-class scores in this report."
    count_key: str = "num_examples"
    unit: str = "examples"
    entity_plot: bool = False  # NER: precision / recall / F1 bars per type
    binary_calibration: bool = False  # multi-label: calibration over (example, label) pairs


def _json_default(obj: Any) -> Any:
    # Reports built by our metrics hold only builtins, but a caller may add numpy values or paths.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _scalar_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def pretty_json(value: Any, level: int = 0) -> str:
    """Indented JSON, except that lists of scalars stay on one line.

    `json.dumps(indent=2)` puts every number of a confusion matrix on its own line (22,500 lines
    for 150 classes); one line per matrix row keeps the file readable and diffable.
    """
    pad, end = "  " * (level + 1), "  " * level
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad}{json.dumps(str(k), ensure_ascii=False)}: {pretty_json(v, level + 1)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{end}}}"
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return _scalar_json(list(value))
        items = [f"{pad}{pretty_json(v, level + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{end}]"
    return _scalar_json(value)


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _cell(text: Any) -> str:
    # A "|" would split a table cell and a newline would end the row.
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]], align_right_from: int = 1) -> list[str]:
    sep = ["---" if i < align_right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(_cell(_fmt(v)) for v in row) + " |" for row in rows]
    return lines


def _get(report: dict, path: tuple[str, ...]) -> Any:
    node: Any = report
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _headline_lines(report: dict, style: ReportStyle) -> list[str]:
    rows = [[name, _get(report, path)] for name, path in style.headlines]
    rows = [r for r in rows if r[1] is not None]
    if "calibration" in report:
        rows.append(["Expected calibration error (ECE)", report["calibration"]["ece"]])
    return ["## Headline metrics", "", *_table(["Metric", "Value"], rows), ""]


def _per_class_lines(report: dict, style: ReportStyle) -> list[str]:
    per = report.get(style.per_key) or {}
    if not per:
        return [f"## {style.per_heading}", "", style.per_empty, ""]
    rows = [[name, m["precision"], m["recall"], m["f1"], m["support"]] for name, m in per.items()]
    header = [style.per_column, "Precision", "Recall", "F1", "Support"]
    plot = [f"Plot: `{ENTITY_PNG}`.", ""] if style.entity_plot else []
    return [f"## {style.per_heading}", "", *plot, *_table(header, rows), ""]


def _average_lines(report: dict) -> list[str]:
    rows = [
        [name, report[name]["precision"], report[name]["recall"], report[name]["f1"],
         report[name]["support"]]
        for name in ("micro", "macro", "weighted", "samples")
        if isinstance(report.get(name), dict)
    ]
    if not rows:
        return []
    header = ["Average", "Precision", "Recall", "F1", "Support"]
    return ["## Averages", "", *_table(header, rows), ""]


def _calibration_lines(report: dict, style: ReportStyle) -> list[str]:
    cal = report.get("calibration")
    if not cal:
        return []
    what = (
        "each (example, label) pair's probability against whether the label is present"
        if style.binary_calibration
        else "the top class's probability against whether the top class is correct"
    )
    acc_name = "Fraction positive" if style.binary_calibration else "Accuracy"
    last = len(cal["bins"]) - 1
    rows = [
        # The last bin is closed on the right: it holds confidence 1.0.
        [f"[{b['lo']:.3f}, {b['hi']:.3f}{']' if i == last else ')'}", b["count"],
         b["confidence"], b["accuracy"]]
        for i, b in enumerate(cal["bins"])
        if b["count"] > 0
    ]
    return [
        "## Calibration",
        "",
        f"Expected calibration error (ECE): **{cal['ece']:.4f}** over {len(cal['bins'])} "
        f"equal-width bins, comparing {what}. Reliability diagram: `{RELIABILITY_PNG}`.",
        "",
        *_table(["Bin", "Count", "Mean confidence", acc_name], rows),
        "",
    ]


def _confusion_lines(report: dict) -> list[str]:
    cm = report.get("confusion_matrix")
    if not cm:
        return []
    labels, matrix = cm["labels"], cm["matrix"]
    lines = ["## Confusion matrix", ""]
    if len(labels) > MD_CONFUSION_MAX_CLASSES:
        lines += [
            f"{len(labels)} classes are too many for a readable table; see `{CONFUSION_PNG}` "
            f"(the full matrix is in `{JSON_NAME}`).",
            "",
        ]
        return lines
    lines += [f"Rows are true classes, columns predicted classes. Plot: `{CONFUSION_PNG}`.", ""]
    rows = [[label, *row] for label, row in zip(labels, matrix)]
    lines += [*_table(["true \\ predicted", *labels], rows), ""]
    return lines


def render_markdown(report: dict, *, style: ReportStyle, title: str) -> str:
    """The Markdown text of `report.md` (exposed for callers that want it without files)."""
    count = report.get(style.count_key)
    intro = f"Task: `{style.kind}`" + (f" · {count} {style.unit}" if count is not None else "")
    lines = [f"# {title}", "", intro, ""]
    lines += _headline_lines(report, style)
    lines += _per_class_lines(report, style)
    lines += _average_lines(report)
    lines += _calibration_lines(report, style)
    lines += _confusion_lines(report)
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def write_report(report: dict, out_dir: Path, *, style: ReportStyle, title: str) -> dict[str, Path]:
    """Write `report.json`, `report.md` and the plots that apply into `out_dir` (created if
    missing). Returns the paths written, keyed "json", "markdown", and when drawn
    "confusion_matrix", "reliability" and "entity_scores"."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    # Serialise before touching the disk so an unserialisable report leaves nothing behind.
    text = pretty_json(report) + "\n"
    write_text_atomic(out_dir / JSON_NAME, text)
    written["json"] = out_dir / JSON_NAME

    write_text_atomic(out_dir / MD_NAME, render_markdown(report, style=style, title=title))
    written["markdown"] = out_dir / MD_NAME

    cm = report.get("confusion_matrix")
    if cm and cm.get("labels"):
        written["confusion_matrix"] = plot_confusion_matrix(
            cm["labels"], cm["matrix"], out_dir / CONFUSION_PNG, title=f"{title}: confusion matrix"
        )
    cal = report.get("calibration")
    if cal and cal.get("bins"):
        written["reliability"] = plot_reliability(
            cal["bins"], cal["ece"], out_dir / RELIABILITY_PNG, title=f"{title}: reliability",
            binary=style.binary_calibration,
        )
    if style.entity_plot and report.get(style.per_key):
        written["entity_scores"] = plot_entity_scores(
            report[style.per_key], out_dir / ENTITY_PNG, title=f"{title}: entity scores"
        )
    return written

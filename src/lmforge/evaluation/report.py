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
from pathlib import Path
from typing import Any

from ..files import atomic_target, write_text_atomic

TASKS = ("text-classification", "multi-label", "token-classification")
MD_CONFUSION_MAX_CLASSES = 50  # wider Markdown tables stop being readable
PLOT_COUNTS_MAX_CLASSES = 30  # beyond this, numbers in cells are too small to read
_LABEL_MAX_CHARS = 24  # long label names are shortened on plot axes (not in the Markdown)

JSON_NAME = "report.json"
MD_NAME = "report.md"
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability.png"
ENTITY_PNG = "entity_scores.png"

# Headline rows per task: (display name, key path into the report).
_HEADLINES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "text-classification": [
        ("Accuracy", ("accuracy",)),
        ("Macro F1", ("macro", "f1")),
        ("Micro F1", ("micro", "f1")),
        ("Weighted F1", ("weighted", "f1")),
    ],
    "multi-label": [
        ("Exact match (subset accuracy)", ("exact_match",)),
        ("Micro F1", ("micro", "f1")),
        ("Macro F1", ("macro", "f1")),
        ("Samples F1", ("samples", "f1")),
        ("Average precision (micro, threshold-free)", ("average_precision",)),
        ("Decision threshold (a label is predicted at probability >= this)", ("threshold",)),
        ("Examples with no predicted label (share)", ("empty_predictions",)),
    ],
    "token-classification": [
        ("Entity precision (micro)", ("precision",)),
        ("Entity recall (micro)", ("recall",)),
        ("Entity F1 (micro)", ("f1",)),
        ("Entity macro F1", ("macro", "f1")),
        ("Token accuracy", ("token_accuracy",)),
    ],
}


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


def _headline_lines(report: dict, task: str) -> list[str]:
    rows = [[name, _get(report, path)] for name, path in _HEADLINES[task]]
    rows = [r for r in rows if r[1] is not None]
    if "calibration" in report:
        rows.append(["Expected calibration error (ECE)", report["calibration"]["ece"]])
    return ["## Headline metrics", "", *_table(["Metric", "Value"], rows), ""]


def _per_class_lines(report: dict, task: str) -> list[str]:
    heading, first = {
        "text-classification": ("Per class", "Class"),
        "multi-label": ("Per label", "Label"),
        "token-classification": ("Per entity type", "Type"),
    }[task]
    per = report.get("per_type" if task == "token-classification" else "per_class") or {}
    if not per:
        empty = "No entities in the references or predictions." if task == "token-classification" \
            else "No per-class scores in this report."
        return [f"## {heading}", "", empty, ""]
    rows = [[name, m["precision"], m["recall"], m["f1"], m["support"]] for name, m in per.items()]
    header = [first, "Precision", "Recall", "F1", "Support"]
    plot = [f"Plot: `{ENTITY_PNG}`.", ""] if task == "token-classification" else []
    return [f"## {heading}", "", *plot, *_table(header, rows), ""]


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


def _calibration_lines(report: dict, task: str) -> list[str]:
    cal = report.get("calibration")
    if not cal:
        return []
    what = (
        "each (example, label) pair's probability against whether the label is present"
        if task == "multi-label"
        else "the top class's probability against whether the top class is correct"
    )
    acc_name = "Fraction positive" if task == "multi-label" else "Accuracy"
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


def render_markdown(report: dict, *, task: str, title: str) -> str:
    """The Markdown text of `report.md` (exposed for callers that want it without files)."""
    _check_task(task)
    count = report.get("num_sentences") if task == "token-classification" else report.get(
        "num_examples"
    )
    unit = "sentences" if task == "token-classification" else "examples"
    intro = f"Task: `{task}`" + (f" · {count} {unit}" if count is not None else "")
    lines = [f"# {title}", "", intro, ""]
    lines += _headline_lines(report, task)
    lines += _per_class_lines(report, task)
    lines += _average_lines(report)
    lines += _calibration_lines(report, task)
    lines += _confusion_lines(report)
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines; must precede pyplot's import
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig: Any, path: Path, dpi: int) -> None:
    plt = _pyplot()
    try:
        with atomic_target(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)  # figures are global pyplot state; leaking them grows memory per eval


def _short(label: str) -> str:
    label = str(label)
    return label if len(label) <= _LABEL_MAX_CHARS else label[: _LABEL_MAX_CHARS - 1] + "…"


def _confusion_geometry(k: int) -> tuple[float, float, float]:
    """(figure side in inches, tick font size, cell font size) for `k` classes."""
    if k <= PLOT_COUNTS_MAX_CLASSES:
        # Room for a count in every cell.
        side = max(6.0, 0.55 * k + 3.0)
        tick = 10.0 if k <= 20 else 9.0
        cell = 10.0 if k <= 12 else 8.0
    else:
        # Colour only; ~0.26 in per class keeps 8-pt tick labels apart (150 classes -> 42 in).
        side = min(0.26 * k + 3.0, 45.0)
        tick = 8.0
        cell = 0.0
    return side, tick, cell


def plot_confusion_matrix(labels: list[str], matrix: list[list[int]], path: Path,
                          title: str = "Confusion matrix") -> Path:
    """Row-normalised colour (share of each true class), raw counts in cells when few classes."""
    import numpy as np

    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.int64).reshape(len(labels), len(labels))
    row_sums = counts.sum(axis=1, keepdims=True)
    # Row normalisation makes rare classes as visible as frequent ones; empty rows stay 0.
    share = np.divide(counts, row_sums, out=np.zeros(counts.shape, dtype=float),
                      where=row_sums > 0)
    k = len(labels)
    side, tick, cell = _confusion_geometry(k)

    fig, ax = plt.subplots(figsize=(side + 1.5, side), layout="constrained")
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, shrink=0.8)
    bar.set_label("share of true class (row-normalised)", fontsize=max(10.0, side * 0.35))
    bar.ax.tick_params(labelsize=max(9.0, side * 0.3))

    names = [_short(lab) for lab in labels]
    ax.set_xticks(range(k), names, fontsize=tick, rotation=45 if k <= 30 else 90,
                  ha="right" if k <= 30 else "center", rotation_mode="anchor" if k <= 30 else
                  "default")
    ax.set_yticks(range(k), names, fontsize=tick)
    # On a poster-sized figure the default 10-pt titles vanish; grow them with the figure.
    heading = max(11.0, side * 0.45)
    ax.set_xlabel("Predicted label", fontsize=heading)
    ax.set_ylabel("True label", fontsize=heading)
    ax.set_title(f"{title}  (n = {int(counts.sum())})", fontsize=heading * 1.1)
    # Thin white grid separates cells; it helps most when there are no numbers in them.
    ax.set_xticks(np.arange(-0.5, k, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, k, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.5 if k > 30 else 1.0)
    ax.tick_params(which="minor", length=0)

    if cell:
        for i in range(k):
            for j in range(k):
                value = int(counts[i, j])
                colour = "white" if share[i, j] > 0.5 else ("#999999" if value == 0 else "black")
                ax.text(j, i, str(value), ha="center", va="center", fontsize=cell, color=colour)

    _save_figure(fig, path, dpi=100 if k > 60 else 120)
    return path


def plot_reliability(bins: list[dict], ece: float, path: Path, *, title: str = "Reliability",
                     binary: bool = False) -> Path:
    """Reliability diagram (per-bin accuracy vs confidence, diagonal = perfect calibration) over
    a histogram of how many predictions fall in each bin. `binary`: multi-label wording."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(6.5, 7.5), sharex=True, height_ratios=[3, 1], layout="constrained"
    )
    widths = [b["hi"] - b["lo"] for b in bins]
    lefts = [b["lo"] for b in bins]
    filled = [b for b in bins if b["count"] > 0]

    top.bar(lefts, [b["accuracy"] if b["count"] else 0.0 for b in bins], width=widths,
            align="edge", color="#4C72B0", alpha=0.85, edgecolor="black", linewidth=0.6,
            label="fraction positive" if binary else "accuracy", zorder=2)
    # Drawn over the bars: the gap between bar top and diagonal is what ECE measures.
    top.plot([0, 1], [0, 1], linestyle="--", color="#333333", label="perfect calibration",
             zorder=3)
    # Each bin's mean confidence (x) shows where in the bin its predictions actually lie.
    top.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o",
             color="#DD8452", markeredgecolor="black", markersize=5, label="bin mean confidence",
             zorder=4, clip_on=False)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("Fraction of positives" if binary else "Accuracy")
    top.set_title(f"{title}  (ECE = {ece:.4f})")
    top.legend(loc="upper left", fontsize=9)
    top.grid(alpha=0.3)

    bottom.bar(lefts, [b["count"] for b in bins], width=widths, align="edge", color="#8C8C8C",
               edgecolor="black", linewidth=0.6)
    bottom.set_xlabel("Predicted probability" if binary else "Confidence (max probability)")
    bottom.set_ylabel("Count")
    bottom.grid(alpha=0.3, axis="y")
    _save_figure(fig, path, dpi=120)
    return path


def plot_entity_scores(per_type: dict[str, dict], path: Path, title: str = "Entity scores") -> Path:
    """Horizontal bars of precision, recall and F1 per entity type, most frequent type on top; the
    support (true entities) is in each type's tick label, so a weak but rare type reads as such."""
    import numpy as np

    plt = _pyplot()
    names = sorted(per_type, key=lambda t: (-per_type[t]["support"], t))
    k = len(names)
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.75 * k + 1.5)), layout="constrained")
    rows = np.arange(k)
    height = 0.26
    for offset, (metric, colour) in enumerate((("precision", "#4C72B0"), ("recall", "#DD8452"), ("f1", "#55A868"))):
        values = [per_type[t][metric] for t in names]
        bars = ax.barh(rows + (offset - 1) * height, values, height=height, color=colour, edgecolor="black",
                       linewidth=0.5, label="F1" if metric == "f1" else metric)
        if metric == "f1":
            for bar, value in zip(bars, values):
                ax.text(value + 0.01, bar.get_y() + bar.get_height() / 2, f"{value:.3f}", va="center", fontsize=8)
    ax.set_yticks(rows, [f"{_short(t)}  (n={per_type[t]['support']})" for t in names])
    ax.invert_yaxis()  # the most frequent type first
    ax.set_xlim(0, 1.1)  # room for the F1 value after a full bar
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel("score (strict span and type match)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=9, frameon=False)
    _save_figure(fig, path, dpi=120)
    return path


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")


def write_report(report: dict, out_dir: Path, *, task: str, title: str) -> dict[str, Path]:
    """Write `report.json`, `report.md` and the plots that apply into `out_dir` (created if
    missing). Returns the paths written, keyed "json", "markdown", and when drawn
    "confusion_matrix", "reliability" and "entity_scores"."""
    _check_task(task)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    # Serialise before touching the disk so an unserialisable report leaves nothing behind.
    text = pretty_json(report) + "\n"
    write_text_atomic(out_dir / JSON_NAME, text)
    written["json"] = out_dir / JSON_NAME

    write_text_atomic(out_dir / MD_NAME, render_markdown(report, task=task, title=title))
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
            binary=task == "multi-label",
        )
    if task == "token-classification" and report.get("per_type"):
        written["entity_scores"] = plot_entity_scores(
            report["per_type"], out_dir / ENTITY_PNG, title=f"{title}: entity scores"
        )
    return written

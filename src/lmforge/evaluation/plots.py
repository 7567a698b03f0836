"""The report's plots as PNG files: confusion matrix, reliability diagram, entity scores.

matplotlib is imported only when a plot is drawn (and forced onto the Agg backend), so importing
this module stays cheap and works on machines without a display. Every PNG is written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..files import atomic_target

PLOT_COUNTS_MAX_CLASSES = 30  # beyond this, numbers in cells are too small to read
_LABEL_MAX_CHARS = 24  # long label names are shortened on plot axes (not in the Markdown)

def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines; must precede pyplot's import
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int) -> None:
    plt = pyplot()
    try:
        with atomic_target(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)  # figures are global pyplot state; leaking them grows memory per eval


def short_label(label: str) -> str:
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

    plt = pyplot()
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

    names = [short_label(lab) for lab in labels]
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

    save_figure(fig, path, dpi=100 if k > 60 else 120)
    return path


def plot_reliability(bins: list[dict], ece: float, path: Path, *, title: str = "Reliability",
                     binary: bool = False) -> Path:
    """Reliability diagram (per-bin accuracy vs confidence, diagonal = perfect calibration) over
    a histogram of how many predictions fall in each bin. `binary`: multi-label wording."""
    plt = pyplot()
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
    save_figure(fig, path, dpi=120)
    return path


def plot_entity_scores(per_type: dict[str, dict], path: Path, title: str = "Entity scores") -> Path:
    """Horizontal bars of precision, recall and F1 per entity type, most frequent type on top; the
    support (true entities) is in each type's tick label, so a weak but rare type reads as such."""
    import numpy as np

    plt = pyplot()
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
    ax.set_yticks(rows, [f"{short_label(t)}  (n={per_type[t]['support']})" for t in names])
    ax.invert_yaxis()  # the most frequent type first
    ax.set_xlim(0, 1.1)  # room for the F1 value after a full bar
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel("score (strict span and type match)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=9, frameon=False)
    save_figure(fig, path, dpi=120)
    return path

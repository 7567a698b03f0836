"""Showing a monitoring report (`drift.build_report`): a rich table for the terminal and a self-contained
HTML page with inline plots (matplotlib, imported only when a page is written)."""

from __future__ import annotations

import base64
import html
import io
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..files import write_text_atomic

STATUS_STYLES = {"ok": "green", "warn": "bold red", "insufficient": "dim"}
STATUS_COLOURS = {"ok": "#1a7f37", "warn": "#cf222e", "insufficient": "#6e7781"}
TOP_LABELS = 20
LABEL_MAX_CHARS = 40


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _title(report: dict) -> str:
    name = " ".join(str(x) for x in (report.get("model"), report.get("version")) if x) or "model"
    window = f" (last {report['window']})" if report.get("window") else ""
    return f"Monitoring {name}{window}"


def _utc(t: Any) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(float(t), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f} ms"


# --------------------------------------------------------------------------------------------
# Terminal
# --------------------------------------------------------------------------------------------


def render_table(report: dict) -> Any:
    """A rich Table, one row per check: check, status (coloured), detail. Text is never read as markup."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(_title(report)), show_lines=False)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for check in report.get("checks", []):
        status = str(check.get("status", ""))
        table.add_row(Text(str(check.get("name", ""))), Text(status, style=STATUS_STYLES.get(status, "")),
                      Text(str(check.get("detail", ""))))
    return table


# --------------------------------------------------------------------------------------------
# Plots (inline PNG)
# --------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot's import
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    """The figure as base64 PNG; the figure is closed."""
    plt = _pyplot()
    try:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # missing glyphs for exotic labels
            fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plain(label: str) -> str:
    """A label safe for matplotlib text: shortened, `$` escaped so it is not read as mathtext."""
    label = str(label)
    if len(label) > LABEL_MAX_CHARS:
        label = label[: LABEL_MAX_CHARS - 1] + "…"
    return label.replace("$", r"\$")


def top_labels(distribution: dict, k: int = TOP_LABELS) -> list[str]:
    """The `k` labels with the largest reference or recent proportion, largest first."""
    ref, rec = distribution.get("reference", {}), distribution.get("recent", {})
    labels = set(ref) | set(rec)
    return sorted(labels, key=lambda lab: (-max(ref.get(lab, 0.0), rec.get(lab, 0.0)), lab))[:k]


def _label_plot(distribution: dict) -> str | None:
    import numpy as np

    labels = top_labels(distribution)
    if not labels:
        return None
    plt = _pyplot()
    ref, rec = distribution.get("reference", {}), distribution.get("recent", {})
    y = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * len(labels)), layout="constrained")
    ax.barh(y - 0.2, [ref.get(lab, 0.0) for lab in labels], height=0.4, label="reference", color="#8c959f")
    ax.barh(y + 0.2, [rec.get(lab, 0.0) for lab in labels], height=0.4, label="recent", color="#0969da")
    ax.set_yticks(y, [_plain(lab) for lab in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of predictions")
    ax.set_title(f"Predicted labels (top {len(labels)})")
    ax.legend(loc="lower right")
    return _png(fig)


def _hist_plot(samples: dict, title: str, xlabel: str, integer: bool) -> str | None:
    import numpy as np

    ref = np.asarray(samples.get("reference") or [], dtype=float)
    rec = np.asarray(samples.get("recent") or [], dtype=float)
    both = np.concatenate([ref, rec])
    if both.size == 0:
        return None
    lo, hi = float(both.min()), float(both.max())
    if integer:
        hi = max(hi, lo + 1)
        width = max(1.0, np.ceil((hi - lo + 1) / 40))
        bins = np.arange(lo - 0.5, hi + width + 0.5, width)
    else:
        lo, hi = min(lo, 0.0), max(hi, 1.0)  # confidences: show the whole [0, 1] range
        bins = np.linspace(lo, hi, 26)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5), layout="constrained")
    for values, name, colour in ((ref, "reference", "#8c959f"), (rec, "recent", "#0969da")):
        if values.size:
            ax.hist(values, bins=bins, density=True, alpha=0.55, label=f"{name} (n={values.size})", color=colour)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    return _png(fig)


def _volume_plot(per_hour: list) -> str | None:
    if not per_hour:
        return None
    plt = _pyplot()
    times = [datetime.fromtimestamp(float(h), tz=timezone.utc) for h, _ in per_hour]
    counts = [c for _, c in per_hour]
    fig, ax = plt.subplots(figsize=(8, 3), layout="constrained")
    ax.bar(times, counts, width=1 / 24, align="edge", color="#0969da")
    ax.set_ylabel("predictions per hour")
    ax.set_title("Traffic (UTC)")
    fig.autofmt_xdate()
    return _png(fig)


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:60em;color:#1f2328}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #d0d7de;padding:.35em .6em;text-align:left;vertical-align:top}
th{background:#f6f8fa}.status{font-weight:bold;color:#fff;border-radius:.3em;padding:.1em .5em;white-space:nowrap}
.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}.note{color:#6e7781}
"""


def _figure(title: str, png: str | None, missing: str) -> str:
    body = (f'<img src="data:image/png;base64,{png}" alt="{_esc(title)}">' if png
            else f'<p class="note">{_esc(missing)}</p>')
    return f"<h2>{_esc(title)}</h2>\n{body}"


def _status_badge(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#6e7781")
    return f'<span class="status" style="background:{colour}">{_esc(status)}</span>'


def _summary_html(report: dict) -> str:
    volume = report.get("volume", {})
    latency = report.get("latency_ms", {})
    rows = [
        ("model", report.get("model") or "-"),
        ("version", report.get("version") or "-"),
        ("window", report.get("window") or "-"),
        ("overall status", None),
        ("predictions", report.get("predictions", 0)),
        ("feedback", report.get("feedback", 0)),
        ("first / last prediction", f"{_utc(volume.get('first'))} / {_utc(volume.get('last'))}"),
        ("latency p50 / p95 / p99", " / ".join(_ms(latency.get(k)) for k in ("p50", "p95", "p99"))),
    ]
    cells = []
    for key, value in rows:
        shown = _status_badge(str(report.get("status", ""))) if key == "overall status" else _esc(value)
        cells.append(f"<tr><th>{_esc(key)}</th><td>{shown}</td></tr>")
    return "<table>\n" + "\n".join(cells) + "\n</table>"


def _checks_html(report: dict) -> str:
    rows = [f"<tr><td>{_esc(c.get('name'))}</td><td>{_status_badge(str(c.get('status', '')))}</td>"
            f"<td>{_esc(c.get('detail'))}</td></tr>" for c in report.get("checks", [])]
    return ("<table>\n<tr><th>check</th><th>status</th><th>detail</th></tr>\n" + "\n".join(rows)
            + "\n</table>")


def _labels_html(distribution: dict) -> str:
    ref, rec = distribution.get("reference", {}), distribution.get("recent", {})
    rows = [f"<tr><td>{_esc(lab)}</td><td class=num>{ref.get(lab, 0.0):.1%}</td>"
            f"<td class=num>{rec.get(lab, 0.0):.1%}</td></tr>" for lab in top_labels(distribution)]
    if not rows:
        return ""
    return ("<table>\n<tr><th>label</th><th>reference</th><th>recent</th></tr>\n" + "\n".join(rows)
            + "\n</table>")


def tables_html(report: dict) -> str:
    """The report's summary, checks (with thresholds) and label distribution as HTML tables (escaped);
    the studio's Monitor page shows these beside its own charts."""
    return "\n".join([_summary_html(report), "<h2>Checks</h2>", _checks_html(report), "<h2>Labels</h2>",
                      _labels_html(report.get("label_distribution") or {})])


def render_html(report: dict) -> str:
    """The report as one self-contained HTML page (plots inline, every text HTML-escaped)."""
    samples = report.get("samples") or {}
    distribution = report.get("label_distribution") or {}
    no_samples = "no values (the report has no samples)"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(_title(report))}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(_title(report))}</h1>",
        _summary_html(report),
        "<h2>Checks</h2>",
        _checks_html(report),
        _figure("Label distribution", _label_plot(distribution), "no labels"),
        _labels_html(distribution),
        _figure("Confidence", _hist_plot(samples.get("confidences") or {}, "Confidence of the predicted label",
                                         "confidence", integer=False), no_samples),
        _figure("Text length", _hist_plot(samples.get("lengths") or {}, "Text length", "words", integer=True),
                no_samples),
        _figure("Predictions per hour", _volume_plot((report.get("volume") or {}).get("per_hour") or []),
                "no predictions"),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_html(report: dict, path: Path) -> Path:
    """Write the self-contained HTML report to `path` atomically; returns the path."""
    path = Path(path)
    write_text_atomic(path, render_html(report))
    return path

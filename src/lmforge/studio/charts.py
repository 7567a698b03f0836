"""Server-made SVG charts (no JavaScript library, nothing fetched): line charts of logged series.
Every text placed in the SVG is escaped; numbers are formatted, never interpolated raw."""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:.3g}"
    return f"{value:.2e}" if magnitude < 1e-3 else f"{value:.3g}"


def _thin(points: list[tuple[float, float]], limit: int = 400) -> list[tuple[float, float]]:
    """At most `limit` points (every k-th, and always the last) so long logs stay light."""
    if len(points) <= limit:
        return points
    k = math.ceil(len(points) / limit)
    return points[::k] + ([points[-1]] if (len(points) - 1) % k else [])


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, *, width: int = 460, height: int = 220,
               x_label: str = "step") -> str:
    """An SVG line chart of several named series sharing the axes."""
    finite = {name: [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)] for name, pts in series.items()}
    finite = {name: _thin(pts) for name, pts in finite.items() if pts}
    left, right, top, bottom = 56, 12, 26, 34
    head = (f'<svg class="chart" role="img" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><title>{escape(title)}</title>'
            f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>')
    if not finite:
        return head + f'<text x="{left}" y="{height // 2}" class="chart-empty">no data</text></svg>'
    xs = [x for pts in finite.values() for x, _ in pts]
    ys = [y for pts in finite.values() for _, y in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.05 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [head, f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="chart-frame"/>']
    for frac in (0.0, 0.5, 1.0):
        yv = y0 + frac * (y1 - y0)
        parts.append(f'<text x="{left - 4}" y="{sy(yv) + 4:.1f}" class="chart-tick" text-anchor="end">{escape(_fmt(yv))}</text>')
        xv = x0 + frac * (x1 - x0)
        parts.append(f'<text x="{sx(xv):.1f}" y="{height - bottom + 14}" class="chart-tick" text-anchor="middle">{escape(_fmt(xv))}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" class="chart-tick" text-anchor="middle">{escape(x_label)}</text>')
    for i, (name, pts) in enumerate(finite.items()):
        colour = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        shape = (f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{path}"/>' if len(pts) > 1 else
                 f'<circle cx="{sx(pts[0][0]):.1f}" cy="{sy(pts[0][1]):.1f}" r="3" fill="{colour}"/>')
        parts.append(f'<g class="series" data-name="{escape(name, quote=True)}">{shape}</g>')
        parts.append(f'<text x="{left + 6 + (i % 3) * (plot_w // 3)}" y="{top + 14 + (i // 3) * 13}" class="chart-legend" '
                     f'fill="{colour}">{escape(name[:28])}</text>')
    parts.append("</svg>")
    return "".join(parts)

"""Bar charts as inline SVG, drawn on the server.

No JavaScript charting library: the page works in an air-gapped network (no CDN), with scripts off,
and needs no front-end build; a bar chart of 24 numbers is a few rectangles. Each bar carries its
value in a ``<title>`` (a hover tooltip) and ``data-value`` (what tests read).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT, PAD = 480, 140, 22


def bar_chart(name: str, labels: Sequence[str], values: Sequence[int], *, color: str = "#2f6fb0") -> str:
    """An SVG bar chart of *values* (one bar per label), scaled to the largest value."""
    top = max(values, default=0) or 1
    n = max(len(values), 1)
    slot = (WIDTH - 2 * PAD) / n
    bars = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        height = (HEIGHT - 2 * PAD) * value / top
        x = PAD + i * slot + slot * 0.1
        y = HEIGHT - PAD - height
        bars.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" height="{height:.1f}" '
            f'fill="{color}" data-value="{value}"><title>{escape(label)}: {value}</title></rect>'
        )
    axis = (
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>'
        f'<text x="{PAD}" y="{PAD - 6}" font-size="11" fill="#555">max {top if any(values) else 0}</text>'
        f'<text x="{PAD}" y="{HEIGHT - 6}" font-size="11" fill="#555">{escape(labels[0] if labels else "")}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 6}" font-size="11" fill="#555" text-anchor="end">'
        f"{escape(labels[-1] if labels else '')}</text>"
    )
    return (
        f'<svg class="chart" id="chart-{escape(name)}" data-chart="{escape(name)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" xmlns="http://www.w3.org/2000/svg">{axis}{"".join(bars)}</svg>'
    )

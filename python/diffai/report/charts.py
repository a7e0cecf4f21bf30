"""Inline SVG charts for the HTML report: horizontal bars, two overlaid histograms and a heatmap
with labelled axes. Every label is escaped; long names are cut in the middle with the full name
in the tooltip."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

from .format import number
from .text import esc, shorten, visible

BLUE, ORANGE, GREY = "#3b6fb6", "#e07b39", "#d0d0d0"
CHAR_W = 6.6  # px per character of an 11 px label, for sizing the label margins
MAX_LABEL = 48  # characters of a name shown in a chart label


def _label_width(labels: Sequence[str], limit: int = MAX_LABEL) -> int:
    return int(min(max((len(visible(x)) for x in labels), default=0), limit) * CHAR_W) + 12


def _svg(width: float, height: float, body: List[str], title: str, note: str = "") -> str:
    caption = f"<figcaption>{esc(title)}</figcaption>"
    note_html = f'<p class="note">{esc(note)}</p>' if note else ""
    return (f'<figure>{caption}<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{esc(title)}">'
            + "".join(body) + f"</svg>{note_html}</figure>")


def bar_chart(labels: Sequence[str], values: Sequence[Optional[float]], title: str, note: str = "") -> str:
    """Horizontal bars in the order given, scaled to the largest value; a missing value is
    written "n/a" with no bar."""
    row, bar_w = 20, 420
    label_w = _label_width(labels)
    top = max((v for v in values if v is not None and math.isfinite(v)), default=0.0) or 1.0
    body = []
    for i, (label, v) in enumerate(zip(labels, values)):
        y = 4 + i * row
        w = bar_w * v / top if v is not None and math.isfinite(v) else 0.0
        name = esc(shorten(visible(label), MAX_LABEL))
        body.append(f'<text x="{label_w - 8}" y="{y + 13}" text-anchor="end" class="label">{name}'
                    f'<title>{esc(label)}</title></text>'
                    f'<rect class="bar" x="{label_w}" y="{y + 2}" width="{w:.2f}" height="{row - 6}" fill="{BLUE}">'
                    f'<title>{esc(label)}: {number(v)}</title></rect>'
                    f'<text x="{label_w + w + 5:.2f}" y="{y + 13}" class="value">{number(v)}</text>')
    return _svg(label_w + bar_w + 80, 8 + row * len(labels), body, title, note)


def histogram_chart(counts_a: Sequence[int], counts_b: Sequence[int], lo: float, hi: float, title: str) -> str:
    """Two overlaid histograms on the same bins: a (blue) and b (orange, the colours of the report's
    a/b marks), with the value range on the x axis and the tallest bin's count on the y axis."""
    w, h, left, right, top_pad, bottom = 470, 190, 56, 34, 26, 34
    bins = len(counts_a)
    top = max(max(counts_a, default=0), max(counts_b, default=0)) or 1
    bw = (w - left - right) / max(bins, 1)
    base = h - bottom
    body = [f'<line x1="{left}" y1="{base}" x2="{w - right}" y2="{base}" stroke="#888"/>'
            f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{base}" stroke="#888"/>']
    for counts, colour, cls in ((counts_a, BLUE, "hist-a"), (counts_b, ORANGE, "hist-b")):
        for i, c in enumerate(counts):
            bh = (base - top_pad) * c / top
            body.append(f'<rect class="{cls}" x="{left + i * bw:.2f}" y="{base - bh:.2f}" width="{bw:.2f}" '
                        f'height="{bh:.2f}" fill="{colour}" fill-opacity="0.5"><title>{c}</title></rect>')
    mid = (lo + hi) / 2
    body.append(f'<text x="{left}" y="{base + 14}" class="value" text-anchor="middle">{number(lo)}</text>'
                f'<text x="{(left + w - right) / 2:.1f}" y="{base + 14}" class="value" text-anchor="middle">{number(mid)}</text>'
                f'<text x="{w - right}" y="{base + 14}" class="value" text-anchor="middle">{number(hi)}</text>'
                f'<text x="{(left + w - right) / 2:.1f}" y="{h - 4}" class="value" text-anchor="middle">value</text>'
                f'<text x="{left - 4}" y="{top_pad + 4}" class="value" text-anchor="end">{top}</text>'
                f'<text x="{left - 4}" y="{base}" class="value" text-anchor="end">0</text>'
                f'<text x="{left - 40}" y="{(top_pad + base) / 2:.1f}" class="value" '
                f'transform="rotate(-90 {left - 40} {(top_pad + base) / 2:.1f})" text-anchor="middle">count</text>'
                f'<rect x="{left + 8}" y="6" width="10" height="10" fill="{BLUE}" fill-opacity="0.5"/>'
                f'<text x="{left + 22}" y="15" class="value">a</text>'
                f'<rect x="{left + 44}" y="6" width="10" height="10" fill="{ORANGE}" fill-opacity="0.5"/>'
                f'<text x="{left + 58}" y="15" class="value">b</text>')
    return _svg(w, h, body, title)


def _shade(t: float) -> str:
    """Pale blue (t=0, still apart from the white page) to blue (t=1)."""
    return f"rgb({int(238 - 179 * t)},{int(243 - 132 * t)},{int(251 - 69 * t)})"


def heatmap(matrix: Sequence[Sequence[Optional[float]]], rows: Sequence[str], cols: Sequence[str], title: str,
            row_axis: str, col_axis: str) -> str:
    """Cells shaded from pale blue (lowest value) to blue (highest), missing values grey; row labels on
    the left under the row axis title, column labels above at 45 degrees under the column axis
    title, a colour scale with the min and max below."""
    n_cols = len(cols)
    cell = max(12, min(24, 560 // max(n_cols, 1)))
    flat = [v for r in matrix for v in r if v is not None and math.isfinite(v)]
    lo, hi = (min(flat), max(flat)) if flat else (0.0, 1.0)
    span = (hi - lo) or 1.0
    label_w = _label_width(rows)
    col_label = _label_width(cols)
    top = int(col_label * 0.72) + 22  # rotated labels rise at 45 degrees
    grid_w = cell * n_cols
    body = [f'<text x="{label_w + grid_w / 2:.1f}" y="12" class="axis" text-anchor="middle">{esc(col_axis)}</text>']
    for j, label in enumerate(cols):
        x, y = label_w + j * cell + cell / 2, top - 6
        body.append(f'<text class="label col" x="{x:.1f}" y="{y}" transform="rotate(-45 {x:.1f} {y})">'
                    f'{esc(shorten(visible(label), MAX_LABEL))}<title>{esc(label)}</title></text>')
    for i, (label, r) in enumerate(zip(rows, matrix)):
        y = top + i * cell
        body.append(f'<text class="label row" x="{label_w - 6}" y="{y + cell / 2 + 4:.1f}" text-anchor="end">'
                    f'{esc(shorten(visible(label), MAX_LABEL))}<title>{esc(label)}</title></text>')
        for j, v in enumerate(r):
            fill = GREY if v is None or not math.isfinite(v) else _shade((v - lo) / span)
            body.append(f'<rect class="cell" x="{label_w + j * cell}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                        f'fill="{fill}"><title>{esc(label)} / {esc(cols[j])}: {number(v)}</title></rect>')
    y = top + len(rows) * cell + 14
    body.append(f'<text x="{label_w - 6}" y="{top - 6}" class="axis" text-anchor="end">{esc(row_axis)}</text>'
                f'<defs><linearGradient id="heat-scale"><stop offset="0" stop-color="{_shade(0)}"/>'
                f'<stop offset="1" stop-color="{_shade(1)}"/></linearGradient></defs>'
                f'<rect x="{label_w}" y="{y}" width="160" height="12" fill="url(#heat-scale)" stroke="#999"/>'
                f'<text x="{label_w}" y="{y + 26}" class="value">{number(lo)}</text>'
                f'<text x="{label_w + 160}" y="{y + 26}" class="value" text-anchor="end">{number(hi)}</text>'
                f'<text x="{label_w + 170}" y="{y + 10}" class="value">grey: n/a</text>')
    width = label_w + grid_w + col_label * 0.72 + 20
    return _svg(max(width, label_w + 240), y + 34, body, title)

"""One way to write each kind of value in the HTML report: numbers as the text output writes them
(``output.num``: four decimals, or four significant digits) except that a float that happens to be
whole keeps its decimals (a column of cosines reads 0.9888, 1.0000, not 0.9888, 1); counts as
integers; fractions as percentages; a missing value as a grey n/a; every string escaped."""

from __future__ import annotations

import math
from typing import Any, Optional

from ..output import num
from .text import esc

NA = '<span class="na">n/a</span>'


def cell(v: Any) -> str:
    """HTML for one value of an analysis summary or table."""
    if v is None:
        return NA
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return number(v)
    if isinstance(v, (list, tuple)):
        return ", ".join(cell(x) for x in v) if v else '<span class="na">none</span>'
    if isinstance(v, dict):
        return ", ".join(f"{esc(k)}: {cell(x)}" for k, x in v.items()) if v else '<span class="na">none</span>'
    return esc(v)


def number(x: Optional[float]) -> str:
    """Plain text (charts write it inside SVG too)."""
    if isinstance(x, float) and x != 0 and x.is_integer() and abs(x) < 1e5:
        return f"{x:.4f}"
    return num(x)


def name_html(name: str) -> str:
    """An escaped tensor name that may wrap after its dots (``encoder.layer.3.`` / ``weight``)."""
    return esc(name).replace(".", ".<wbr>")


def pct(x: Optional[float]) -> str:
    if x is None or not math.isfinite(x):
        return NA if x is None else num(x)
    if 0 < abs(x) < 5e-4:
        return "&lt;0.1%"
    return f"{100 * x:.1f}%"


def data_value(x: Optional[float]) -> str:
    """A number as the table's sorting script reads it (``Number()``), in full precision."""
    if x is None:
        return ""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return repr(x)

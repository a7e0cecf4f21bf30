"""Reports: Markdown tables of every analysis and record, and one self-contained HTML file with
inline SVG charts (no scripts, no network): per-layer change bars, weight histograms of the most
changed tensors (counted by the Rust histogram kernel), similarity heatmaps and update trends."""

from __future__ import annotations

import html
import math
from typing import Any, List, Optional, Sequence

from . import _core
from .analyses import Analysis, AnalysisConfig, SeriesResult, Table
from .analyses.common import Context, fmt, ranked_groups
from .analyses.representation import similarity_matrix
from .output import record_line, summary_line

BLUE, ORANGE = "#3b6fb6", "#e07b39"


# --- Markdown ---------------------------------------------------------------------------------

def _md_cell(v: Any) -> str:
    return fmt(v).replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> str:
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.columns) + " |",
             "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def _md_analysis(a: Analysis) -> str:
    out = [f"### {a.name}", ""]
    if a.not_applicable is not None:
        return "\n".join(out + [f"n/a: {a.not_applicable}", ""])
    out.append(_md_table(Table("Summary", ["key", "value"], [[k, v] for k, v in a.summary.items()])))
    out += [_md_table(t) for t in a.tables if t.rows]
    return "\n".join(out)


def _md_pair(result) -> str:
    out = [f"## {result.a_label} -> {result.b_label}", "", summary_line(result), ""]
    out += [_md_analysis(a) for a in result.analyses]
    if result.records:
        out.append(_md_table(Table("Differences", ["record", "detail"],
                                   [[r.kind, record_line(r).strip()] for r in result.records])))
    return "\n".join(out)


def markdown(result) -> str:
    if isinstance(result, SeriesResult):
        parts = ["# diffai report: checkpoint series", ""]
        parts += [_md_analysis(a) for a in result.trajectory]
        parts += [_md_pair(p) for p in result.pairs]
    else:
        parts = ["# diffai report", "", _md_pair(result)]
    return "\n".join(parts).rstrip() + "\n"


# --- SVG charts -------------------------------------------------------------------------------

def _svg(width: int, height: int, body: List[str], title: str) -> str:
    return (f'<figure><figcaption>{html.escape(title)}</figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">'
            + "".join(body) + "</svg></figure>")


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str, unit: str = "") -> str:
    """Horizontal bars, one per label, scaled to the largest value."""
    row, label_w, bar_w = 18, 260, 360
    top = max(values, default=0.0) or 1.0
    body = []
    for i, (label, v) in enumerate(zip(labels, values)):
        y = 4 + i * row
        w = bar_w * v / top
        body.append(f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end" font-size="11">{html.escape(label)}</text>'
                    f'<rect class="bar" x="{label_w}" y="{y}" width="{w:.2f}" height="{row - 4}" fill="{BLUE}">'
                    f'<title>{html.escape(label)}: {fmt(v)}{unit}</title></rect>'
                    f'<text x="{label_w + w + 4:.2f}" y="{y + 12}" font-size="10">{fmt(v)}{unit}</text>')
    return _svg(label_w + bar_w + 90, 8 + row * len(labels), body, title)


def histogram_chart(counts_a: Sequence[int], counts_b: Sequence[int], lo: float, hi: float, title: str) -> str:
    """Two overlaid histograms on the same bins: a (blue) and b (orange)."""
    w, h, pad = 420, 160, 24
    bins = len(counts_a)
    top = max(max(counts_a, default=0), max(counts_b, default=0)) or 1
    bw = (w - 2 * pad) / bins
    body = [f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#888"/>']
    for counts, colour, cls in ((counts_a, BLUE, "hist-a"), (counts_b, ORANGE, "hist-b")):
        for i, c in enumerate(counts):
            bh = (h - 2 * pad) * c / top
            body.append(f'<rect class="{cls}" x="{pad + i * bw:.2f}" y="{h - pad - bh:.2f}" width="{bw:.2f}" '
                        f'height="{bh:.2f}" fill="{colour}" fill-opacity="0.5"/>')
    body.append(f'<text x="{pad}" y="{h - 6}" font-size="10">{fmt(lo)}</text>'
                f'<text x="{w - pad}" y="{h - 6}" font-size="10" text-anchor="end">{fmt(hi)}</text>'
                f'<text x="{pad}" y="12" font-size="10" fill="{BLUE}">a</text>'
                f'<text x="{pad + 14}" y="12" font-size="10" fill="{ORANGE}">b</text>')
    return _svg(w, h, body, title)


def heatmap(matrix: Sequence[Sequence[Optional[float]]], rows: Sequence[str], cols: Sequence[str], title: str) -> str:
    """Cells shaded from white (lowest value) to blue (highest); missing values grey."""
    cell, label_w = 16, 280
    flat = [v for r in matrix for v in r if v is not None and math.isfinite(v)]
    lo, hi = (min(flat), max(flat)) if flat else (0.0, 1.0)
    span = (hi - lo) or 1.0
    body = []
    for i, (label, r) in enumerate(zip(rows, matrix)):
        body.append(f'<text x="{label_w - 6}" y="{i * cell + 12}" text-anchor="end" font-size="10">'
                    f'{html.escape(label)}</text>')
        for j, v in enumerate(r):
            if v is None or not math.isfinite(v):
                colour = "#ccc"
            else:
                t = (v - lo) / span
                colour = f"rgb({int(255 - 196 * t)},{int(255 - 144 * t)},{int(255 - 73 * t)})"
            body.append(f'<rect class="cell" x="{label_w + j * cell}" y="{i * cell}" width="{cell - 1}" '
                        f'height="{cell - 1}" fill="{colour}"><title>{html.escape(label)} / '
                        f'{html.escape(cols[j])}: {fmt(v)}</title></rect>')
    body.append(f'<text x="{label_w}" y="{len(rows) * cell + 14}" font-size="10">min {fmt(lo)}, max {fmt(hi)}; '
                f'columns: b in the same order</text>')
    return _svg(label_w + cell * len(cols) + 20, len(rows) * cell + 22, body, title)


def _histograms(result, config: AnalysisConfig, count: int = 3) -> List[str]:
    ctx = Context(result, config)
    floats = [c for c in ctx.paired if c.a.min is not None and c.b.min is not None and c.change.rel_l2]
    floats.sort(key=lambda c: c.change.rel_l2, reverse=True)
    charts = []
    for c in floats[:count]:
        lo, hi = min(c.a.min, c.b.min), max(c.a.max, c.b.max)
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo == hi:
            continue
        counts: List[List[int]] = []
        for side in ("a", "b"):
            src, local = ctx.source(c.name, side)
            counts.append(_core.histogram(src.model, local, config.histogram_bins, lo, hi))
        charts.append(histogram_chart(counts[0], counts[1], lo, hi,
                                      f"Weights of {c.name} (rel change {fmt(c.change.rel_l2)})"))
    return charts


def _pair_charts(result, config: AnalysisConfig) -> List[str]:
    ctx = Context(result, config)
    if result.options.shape_only or not ctx.paired:
        return []
    groups = [g for g in ranked_groups(ctx.paired) if g["update_norm"] > 0]
    charts = []
    if groups:
        charts.append(bar_chart([g["layer"] for g in groups], [g["rel_update"] or 0.0 for g in groups],
                                "Relative change ||delta||/||W|| per layer group"))
    charts += _histograms(result, config)
    sim = next((a for a in result.analyses if a.name == "SimilarityMatrix"), None) or similarity_matrix(ctx)
    matrix = sim.details.get("matrix", {}) if sim.not_applicable is None else {}
    if matrix.get("cosine_a_rows_b_cols"):
        names = matrix["tensors"]
        charts.append(heatmap(matrix["cosine_a_rows_b_cols"], names, names,
                              "Cosine similarity: tensors of a (rows) vs b (columns), same shape"))
    return charts


def _series_charts(series: SeriesResult) -> List[str]:
    charts = []
    for a in series.trajectory:
        if a.not_applicable is not None:
            continue
        if a.name == "TrajectoryAnalysis":
            charts.append(bar_chart([f"step {i + 1}" for i in range(len(a.summary["update_norms"]))],
                                    a.summary["update_norms"], "Update norm ||w_(i+1) - w_i|| per step"))
        if a.name == "CheckpointSimilarity":
            labels = [f"{i + 1}: {c}" for i, c in enumerate(a.details["checkpoints"])]
            charts.append(heatmap(a.details["cosine"], labels, labels, "Cosine between checkpoints"))
    return charts


# --- HTML -------------------------------------------------------------------------------------

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px;
text-align:left}th{background:#f2f2f2}figure{margin:1em 0}figcaption{font-weight:600;margin-bottom:4px}
.na{color:#888}h3{margin-top:1.6em}"""


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>" for row in table.rows)
    return f"<p><b>{html.escape(table.title)}</b></p><table><tr>{head}</tr>{body}</table>"


def _html_analysis(a: Analysis) -> str:
    if a.not_applicable is not None:
        return f'<h3>{a.name}</h3><p class="na">n/a: {html.escape(a.not_applicable)}</p>'
    parts = [f"<h3>{a.name}</h3>", _html_table(Table("Summary", ["key", "value"],
                                                     [[k, v] for k, v in a.summary.items()]))]
    parts += [_html_table(t) for t in a.tables if t.rows]
    return "".join(parts)


def _html_pair(result, config: AnalysisConfig, include_charts: bool) -> str:
    parts = [f"<h2>{html.escape(result.a_label)} &rarr; {html.escape(result.b_label)}</h2>",
             f"<p>{html.escape(summary_line(result))}</p>"]
    if include_charts:
        parts += _pair_charts(result, config)
    parts += [_html_analysis(a) for a in result.analyses]
    if result.records:
        parts.append(_html_table(Table("Differences", ["record", "detail"],
                                       [[r.kind, record_line(r).strip()] for r in result.records])))
    return "".join(parts)


def html_report(result, include_charts: bool = True, config: Optional[AnalysisConfig] = None) -> str:
    config = config or AnalysisConfig()
    if isinstance(result, SeriesResult):
        title = f"diffai report: {len(result.checkpoints)} checkpoints"
        body = [f"<h1>{html.escape(title)}</h1>"]
        if include_charts:
            body += _series_charts(result)
        body += [_html_analysis(a) for a in result.trajectory]
        body += [_html_pair(p, config, include_charts) for p in result.pairs]
    else:
        title = f"diffai report: {result.a_label} vs {result.b_label}"
        body = ["<h1>diffai report</h1>", _html_pair(result, config, include_charts)]
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>" + "".join(body) + "</body></html>\n")


def write_report(path: str, result, include_charts: bool, config: Optional[AnalysisConfig] = None) -> None:
    """HTML, or Markdown when the file name ends in .md."""
    text = markdown(result) if path.lower().endswith(".md") else html_report(result, include_charts, config)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)

"""The HTML report, laid out to be read top to bottom: the verdicts and what changed most on the
first screen, a table of contents, then per-layer change, the per-tensor table, the charts, every
analysis, and the other differences. One self-contained file: inline CSS, SVG and a short script,
nothing fetched."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .. import _core
from ..analyses import Analysis, AnalysisConfig, SeriesResult, Table
from ..analyses.common import Context
from ..analyses.representation import similarity_matrix
from ..analyses.training import tensor_updates
from ..output import model_parameters, record_line
from .charts import bar_chart, heatmap, histogram_chart
from .format import cell
from .style import CSS
from .tensor_table import SCRIPT, tensor_records, tensor_table
from .text import esc, how_read
from .verdicts import (VERDICTS, anomaly_severities, change_rank, changed_most, first_screen_analyses, review_summary,
                       tone, verdict_cards)

MAX_BARS = 40  # layer groups drawn in the per-layer chart; all of them are in the LayerImpact table
HISTOGRAMS = 3  # most-changed tensors whose weight histograms are drawn


@dataclass
class Section:
    id: str
    title: str
    body: str
    children: List["Section"] = field(default_factory=list)
    badge: str = ""  # HTML after the heading

    def html(self, level: int = 2) -> str:
        inner = "".join(c.html(min(level + 1, 4)) for c in self.children)
        return (f'<section id="{self.id}"><h{level}>{esc(self.title)}{self.badge}</h{level}>'
                f"{self.body}{inner}</section>")


def _toc(sections: List[Section], depth: int = 2) -> str:
    if not sections or depth == 0:
        return ""
    items = "".join(f'<li><a href="#{s.id}">{esc(s.title)}</a>{_toc(s.children, depth - 1)}</li>'
                    for s in sections)
    return f"<ol>{items}</ol>"


def _badge(word) -> str:
    return f' <span class="badge tone-{tone(word)}">{esc(word)}</span>'


# --- analyses ---------------------------------------------------------------------------------

def _html_table(table: Table) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(
        f'<td class="num">{cell(v)}</td>' if isinstance(v, (int, float)) and not isinstance(v, bool)
        else f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in table.rows)
    rows = len(table.rows)
    opened = " open" if rows <= 12 else ""
    return (f"<details{opened}><summary>{esc(table.title)} ({rows} row{'s' if rows != 1 else ''})</summary>"
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div></details>')


def _verdict_word(a: Analysis) -> Optional[str]:
    """The analysis's plain-word verdict: its first summary value when that is one word."""
    first = next(iter(a.summary.values()), None)
    return first if isinstance(first, str) and first and " " not in first else None


def _summary_list(a: Analysis) -> str:
    items = "".join(
        f'<div class="{"wide" if len(str(v)) > 70 else ""}"><dt>{esc(k)}</dt><dd>{cell(v)}</dd></div>'
        for k, v in a.summary.items())
    return f'<dl class="kv">{items}</dl>'


def _analysis_section(a: Analysis, prefix: str) -> Section:
    sid = f"{prefix}an-{a.name}"
    if a.not_applicable is not None:
        return Section(sid, a.name, f'<p class="na">n/a: {esc(a.not_applicable)}</p>', badge=_badge("n/a"))
    failed = "".join(f"<li>{esc(f)}</li>" for f in a.failed)
    body = (_summary_list(a) + (f'<ul class="failed">{failed}</ul>' if failed else "")
            + "".join(_html_table(t) for t in a.tables if t.rows))
    word = _verdict_word(a)
    badge = _badge("failed") if a.failed else _badge(word) if word else ""
    return Section(sid, a.name, body, badge=badge)


def _analyses_section(analyses: List[Analysis], prefix: str) -> Optional[Section]:
    if not analyses:
        return None
    return Section(f"{prefix}analyses", "Analyses",
                   '<p class="note">Every analysis of the run, with its summary and tables '
                   "(docs/analyses.md gives each formula and threshold).</p>",
                   [_analysis_section(a, prefix) for a in analyses])


# --- charts -----------------------------------------------------------------------------------

def _layer_chart(ctx: Context) -> str:
    groups = [g for g in ctx.paired_groups if g.get("update_norm")]
    groups.sort(key=lambda g: g.get("rel_update") if g.get("rel_update") is not None else -math.inf, reverse=True)
    if not groups:
        return "<p>No layer group changed values.</p>"
    shown = groups[:MAX_BARS]
    note = (f"The {len(shown)} largest of {len(groups)} changed layer groups; all are in the LayerImpact table."
            if len(groups) > len(shown) else "")
    return bar_chart([g.get("layer", "?") for g in shown], [g.get("rel_update") for g in shown],
                     "Relative change ||\u0394|| / ||W|| per layer group, largest first", note)


def _histograms(ctx: Context, config: AnalysisConfig) -> List[str]:
    """Weight histograms of the tensors that moved most, ranked as "What changed most" ranks them:
    a tensor all zero in a (no relative change) that moved comes first, titled with its absolute
    update ||delta|| (the training analyses' ``update_norm``)."""
    updates = {r["name"]: r for r in tensor_updates(ctx).rows()}
    floats = [c for c in ctx.paired if c.a.min is not None and c.b.min is not None and change_rank(c) > 0]
    floats.sort(key=change_rank, reverse=True)
    charts = []
    for c in floats[:HISTOGRAMS]:
        lo, hi = min(c.a.min, c.b.min), max(c.a.max, c.b.max)
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo == hi:
            continue
        counts: List[List[int]] = []
        for side in ("a", "b"):
            src, local = ctx.source(c.name, side)
            counts.append(_core.histogram(src.model, local, config.histogram_bins, lo, hi, ctx.threads))
        update = updates[c.name]
        how = (f"rel change {cell(update['update_ratio'])}" if update["update_ratio"] is not None
               else f"all zero in a, moved by ||\u0394|| = {cell(update['update_norm'])}")
        charts.append(histogram_chart(counts[0], counts[1], lo, hi, f"{c.name}: {how}"))
    return charts


def _similarity_heatmap(found: Dict[str, Analysis], ctx: Context) -> str:
    sim = found.get("SimilarityMatrix") or similarity_matrix(ctx)
    matrix = sim.details.get("matrix", {}) if sim.not_applicable is None else {}
    cosines, names = matrix.get("cosine_a_rows_b_cols"), matrix.get("tensors")
    if not cosines or not names:
        return f'<p class="na">n/a: {esc(sim.not_applicable or "no matrix")}</p>'
    return heatmap(cosines, names, names, "Cosine similarity of same-shape tensors: a (rows) vs b (columns)",
                   "a \u2193", "b \u2192")


# --- one pair ---------------------------------------------------------------------------------

def _counts(result) -> str:
    s = result.summary
    parts = [(getattr(s, k, None), label) for k, label in
             (("changed", "changed"), ("unchanged", "unchanged"), ("not_compared", "not compared"),
              ("added", "added"), ("removed", "removed"), ("renamed", "renamed"), ("reshaped", "reshaped"))]
    items = "".join(f"<li><b>{cell(n)}</b> {label}</li>" for n, label in parts
                    if n or label in ("changed", "unchanged"))
    pa, pb, opt_a, opt_b = model_parameters(result)
    optimizer = (f"<li>optimizer state left out <b>{cell(opt_a)}</b> \u2192 <b>{cell(opt_b)}</b> values</li>"
                 if opt_a or opt_b else "")
    return (f'<ul class="counts">{items}<li>parameters <b>{cell(pa)}</b> \u2192 <b>{cell(pb)}</b> ({pb - pa:+d})</li>'
            f"{optimizer}</ul>")


def _files(result) -> str:
    return (f'<p class="files"><span class="side a">a</span> {esc(result.a_label)} \u2192 '
            f'<span class="side b">b</span> {esc(result.b_label)}</p>')


def _how_read(result) -> str:
    lines = how_read(result)
    if not lines:
        return ""
    items = "".join(f"<li>{esc(line)}</li>" for line in lines)
    return f'<ul class="how-read" aria-label="How the files were read">{items}</ul>'


def _first_screen(result, found: Dict[str, Analysis], ctx: Context, config: AnalysisConfig) -> str:
    return (_counts(result) + _how_read(result) + verdict_cards(found) + review_summary(found)
            + f'<h3 class="most-title">What changed most</h3>{changed_most(ctx, config.top_k)}')


def _pair_sections(result, config: AnalysisConfig, include_charts: bool, found: Dict[str, Analysis],
                   ctx: Context, prefix: str) -> List[Section]:
    sections: List[Section] = []
    charts = include_charts and ctx.has_stats and bool(ctx.paired)
    if charts:
        sections.append(Section(f"{prefix}layers", "Per-layer change", _layer_chart(ctx)))
    in_table = tensor_records(result.records)
    unchanged, not_compared = (getattr(result.summary, k, 0) for k in ("unchanged", "not_compared"))
    unlisted = f"{unchanged} unchanged tensors" + (f", {not_compared} not compared (headers only)" if not_compared else "")
    sections.append(Section(f"{prefix}tensors", f"Tensors that differ ({len(in_table)})",
                            tensor_table(in_table, anomaly_severities(found), f"{prefix}tensor-table", unlisted)))
    if charts:
        hists = _histograms(ctx, config)
        if hists:
            sections.append(Section(f"{prefix}histograms", "Weight histograms of the most-changed tensors",
                                    '<div class="charts">' + "".join(hists) + "</div>"))
        sections.append(Section(f"{prefix}similarity", "Similarity heatmap", _similarity_heatmap(found, ctx)))
    analyses = _analyses_section(result.analyses, prefix)
    if analyses:
        sections.append(analyses)
    listed = {id(r) for r in in_table}
    others = [r for r in result.records if id(r) not in listed]
    if others:
        lines = "".join(f"<li>{esc(record_line(r).strip())}</li>" for r in others)
        sections.append(Section(f"{prefix}other", f"Other differences ({len(others)})",
                                f'<ul class="records">{lines}</ul>'))
    return sections


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>{body}<script>{SCRIPT}</script></body></html>\n")


def _pair_page(result, config: AnalysisConfig, include_charts: bool) -> str:
    found = first_screen_analyses(result, config)
    ctx = Context(result, config)
    sections = _pair_sections(result, config, include_charts, found, ctx, "")
    body = (f'<header id="verdicts" class="first-screen"><h1>diffai report</h1>{_files(result)}'
            f"{_first_screen(result, found, ctx, config)}</header>"
            f'<nav class="toc"><h2>Contents</h2>{_toc(sections)}</nav>'
            + "".join(s.html() for s in sections))
    return _page(f"diffai report: {result.a_label} vs {result.b_label}", body)


# --- a checkpoint series ----------------------------------------------------------------------

def _short_names(paths: List[str]) -> List[str]:
    """The checkpoints' paths without the folder they all share (the tables keep the full paths)."""
    folders = {os.path.dirname(p) for p in paths}
    return [os.path.basename(p) for p in paths] if len(folders) == 1 else list(paths)


def _series_charts(series: SeriesResult) -> List[str]:
    charts = []
    names = _short_names(series.checkpoints)
    for a in series.trajectory:
        if a.not_applicable is not None:
            continue
        if a.name == "TrajectoryAnalysis" and a.summary.get("update_norms"):
            norms = a.summary["update_norms"]
            charts.append(bar_chart([f"step {i + 1}: {names[i]} \u2192 {names[i + 1]}"
                                     if i + 1 < len(names) else f"step {i + 1}" for i in range(len(norms))],
                                    norms, "Update norm ||w(i+1) - w(i)|| per step"))
        if a.name == "CheckpointSimilarity" and a.details.get("cosine") and a.details.get("checkpoints"):
            labels = [f"{i + 1}: {c}" for i, c in enumerate(_short_names(a.details["checkpoints"]))]
            charts.append(heatmap(a.details["cosine"], labels, labels, "Cosine between checkpoints",
                                  "checkpoint \u2193", "checkpoint \u2192"))
    return charts


def _series_overview(series: SeriesResult, founds: List[Dict[str, Analysis]]) -> str:
    head = "<th>pair</th>" + "".join(f"<th>{esc(title)}</th>" for title, *_ in VERDICTS)
    rows = []
    for i, (p, found) in enumerate(zip(series.pairs, founds)):
        cells = []
        for _, _, name, key in VERDICTS:
            a = found.get(name)
            value = a.summary.get(key) if a is not None and a.not_applicable is None else None
            cells.append(f"<td>{_badge(value if value is not None else 'n/a')}</td>")
        rows.append(f'<tr><td><a href="#p{i + 1}-pair">{esc(p.a_label)} \u2192 {esc(p.b_label)}</a></td>'
                    + "".join(cells) + "</tr>")
    trend = "".join(f'<h3>{esc(a.name)}</h3>' + (_summary_list(a) if a.not_applicable is None else
                                                  f'<p class="na">n/a: {esc(a.not_applicable)}</p>')
                    for a in series.trajectory)
    return f'<table class="compact overview"><tr>{head}</tr>{"".join(rows)}</table>{trend}'


def _series_page(series: SeriesResult, config: AnalysisConfig, include_charts: bool) -> str:
    founds = [first_screen_analyses(p, config) for p in series.pairs]
    trajectory_body = "".join(_series_charts(series)) if include_charts else ""
    sections = [Section("trajectory", "Trajectory", trajectory_body,
                        [_analysis_section(a, "trajectory-") for a in series.trajectory])]
    for i, (p, found) in enumerate(zip(series.pairs, founds)):
        prefix = f"p{i + 1}-"
        ctx = Context(p, config)
        sections.append(Section(f"{prefix}pair", f"{p.a_label} \u2192 {p.b_label}",
                                _files(p) + _first_screen(p, found, ctx, config),
                                _pair_sections(p, config, include_charts, found, ctx, prefix)))
    title = f"diffai report: {len(series.checkpoints)} checkpoints"
    body = (f'<header id="verdicts" class="first-screen"><h1>{esc(title)}</h1>'
            f"{_series_overview(series, founds)}</header>"
            f'<nav class="toc"><h2>Contents</h2>{_toc(sections)}</nav>' + "".join(s.html() for s in sections))
    return _page(title, body)


def html_report(result, include_charts: bool = True, config: Optional[AnalysisConfig] = None) -> str:
    config = config or AnalysisConfig()
    if isinstance(result, SeriesResult):
        return _series_page(result, config, include_charts)
    return _pair_page(result, config, include_charts)

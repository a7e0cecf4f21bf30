"""The Markdown report: every analysis as tables, then every record (``--markdown-output``, or
``--generate-report FILE.md``)."""

from __future__ import annotations

from typing import Any

from ..analyses import Analysis, SeriesResult, Table
from ..analyses.common import fmt
from ..output import escape_controls, record_line, summary_line
from .text import how_read, visible


def _md_cell(v: Any) -> str:
    return visible(fmt(v)).replace("|", "\\|")


def _md_table(table: Table) -> str:
    lines = [f"**{visible(table.title)}**", "", "| " + " | ".join(table.columns) + " |",
             "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def _md_analysis(a: Analysis) -> str:
    out = [f"### {a.name}", ""]
    if a.not_applicable is not None:
        return "\n".join(out + [f"n/a: {visible(a.not_applicable)}", ""])
    out.append(_md_table(Table("Summary", ["key", "value"], [[k, v] for k, v in a.summary.items()])))
    out += [_md_table(t) for t in a.tables if t.rows]
    return "\n".join(out)


def _md_pair(result) -> str:
    out = [f"## {visible(result.a_label)} -> {visible(result.b_label)}", "", summary_line(result), ""]
    notes = how_read(result)
    if notes:
        out += [f"- {visible(line)}" for line in notes] + [""]
    out += [_md_analysis(a) for a in result.analyses]
    if result.records:
        out.append(_md_table(Table("Differences", ["record", "detail"],
                                   [[r.kind, record_line(r).strip()] for r in result.records])))
    return "\n".join(out)


def markdown(result) -> str:
    """The document, with every control character from a file (ESC, CR, bidirectional overrides)
    shown as an escape whatever path wrote it (--markdown-output, --generate-report FILE.md); its
    own line breaks stay."""
    if isinstance(result, SeriesResult):
        parts = ["# diffai report: checkpoint series", ""]
        parts += [_md_analysis(a) for a in result.trajectory]
        parts += [_md_pair(p) for p in result.pairs]
    else:
        parts = ["# diffai report", "", _md_pair(result)]
    return escape_controls("\n".join(parts).rstrip(), keep="\n") + "\n"

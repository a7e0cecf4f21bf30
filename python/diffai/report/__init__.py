"""Reports: the Markdown tables (markdown.py) and the self-contained HTML report (page.py, built
from verdicts.py, tensor_table.py, charts.py and style.py)."""

from __future__ import annotations

from typing import Optional

from ..analyses import AnalysisConfig
from .markdown import markdown
from .page import html_report


def write_report(path: str, result, include_charts: bool, config: Optional[AnalysisConfig] = None) -> None:
    """HTML, or Markdown when the file name ends in .md."""
    text = markdown(result) if path.lower().endswith(".md") else html_report(result, include_charts, config)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


__all__ = ["html_report", "markdown", "write_report"]

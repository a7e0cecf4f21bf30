"""Names and strings from a file, made safe to show: control characters, bidirectional marks and
lone surrogates become visible escapes such as ``\\x1b`` (``output.escape_controls``, the same as
the text output); then HTML-escaped for the HTML report. And the lines both reports open with
on how the files were read."""

from __future__ import annotations

import html
from typing import Any, List, Optional

from ..output import escape_controls


def visible(value: Any) -> str:
    return escape_controls(str(value))


def esc(value: Any) -> str:
    """``visible`` and HTML-escaped (quotes too: the result may go in an attribute)."""
    return html.escape(visible(value))


def shorten(text: str, limit: Optional[int]) -> str:
    """At most ``limit`` characters, cut in the middle (the start and the end of a tensor name say
    the most: its module and whether it is a weight or a bias)."""
    if limit is None or len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "\u2026" + text[len(text) - (limit - 1 - head):]


def how_read(result) -> List[str]:
    """How names were matched and what could not be read, as the text output and stderr say it:
    the alignment line, the notes on filters and on reading (classes kept inert, colliding names),
    and the entries neither file lets diffai read. Empty when there is nothing to say."""
    lines = [a.text_line() for a in result.alignments] + list(result.notes) + result.reading_notes()
    if result.unread:
        count = len(result.unread)
        lines.append(f"{count} entr{'y' if count == 1 else 'ies'} unreadable in both files (not compared, not "
                     "counted as changes): " + "; ".join(f"{r.name}: {r.reason}" for r in result.unread))
    return lines

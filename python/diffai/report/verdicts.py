"""The first screen of the HTML report: the verdicts (risk, deployment readiness, anomalies, and
the convergence and CI checks when they ran) with every reason, the review summary, and what
changed most. Fields are read defensively: one an analysis does not give shows n/a."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

from ..analyses import REGISTRY, Analysis, AnalysisConfig
from ..analyses.common import Context
from .format import cell, name_html, pct
from .text import esc

# The verdicts every report shows: (title, CLI flag, analysis name, summary key). When the run did
# not include one, the report computes it (they read statistics only).
VERDICTS = [
    ("Risk", "risk-assessment", "RiskAssessment", "risk"),
    ("Deployment readiness", "deployment-readiness", "DeploymentReadiness", "verdict"),
    ("Anomalies", "anomaly-detection", "AnomalyDetection", "severity"),
]
REVIEW = ("review-friendly", "ReviewFriendly")
# Shown only when the run included them.
OPTIONAL_VERDICTS = [("Convergence", "ConvergenceAnalysis", "verdict")]
CHECKS = ("RegressionTest", "AlertOnDegradation")

_TONES = {
    "good": {"low", "ready", "none", "passed", "converged", "minimal", "easy", "similar", "faster"},
    "warn": {"medium", "review", "moderate", "large_jump", "slower"},
    "bad": {"high", "critical", "blocked", "severe", "failed", "hard"},
}
SHOWN_REASONS = 5  # reasons listed on a card; the rest behind "N more"


def tone(value: Any) -> str:
    """CSS class of a verdict word: good (green), warn (amber), bad (red), na (grey), or plain."""
    if value is None or value == "n/a":
        return "na"
    return next((t for t, words in _TONES.items() if str(value).lower() in words), "plain")


def first_screen_analyses(result, config: AnalysisConfig) -> Dict[str, Analysis]:
    """The analyses of the run by name, plus the first-screen verdicts it did not include."""
    found = {a.name: a for a in result.analyses}
    ctx: Optional[Context] = None
    for flag, name in [(flag, name) for _, flag, name, _ in VERDICTS] + [REVIEW]:
        if name not in found and flag in REGISTRY:
            ctx = ctx or Context(result, config)
            found[name] = REGISTRY[flag](ctx)
    return found


def _summary(a: Optional[Analysis], key: str) -> Any:
    if a is None or a.not_applicable is not None:
        return None
    return a.summary.get(key)


def _reason_text(reason: Any) -> str:
    if isinstance(reason, dict):  # an anomaly: {name, severity, issues, ...}
        issues = reason.get("issues")
        issues = "; ".join(map(str, issues)) if isinstance(issues, list) else issues
        return f"{reason.get('name', '?')} ({reason.get('severity', 'n/a')}): {issues if issues is not None else 'n/a'}"
    return str(reason)


def _reasons(a: Optional[Analysis]) -> List[str]:
    if a is None or a.not_applicable is not None:
        return []
    listed = a.details.get("reasons", a.details.get("anomalies"))
    return [_reason_text(r) for r in listed] if isinstance(listed, list) else []


def _reason_list(reasons: List[str]) -> str:
    if not reasons:
        return ""
    items = "".join(f"<li>{esc(r)}</li>" for r in reasons[:SHOWN_REASONS])
    more = reasons[SHOWN_REASONS:]
    extra = (f'<details><summary>{len(more)} more</summary><ul class="reasons">'
             + "".join(f"<li>{esc(r)}</li>" for r in more) + "</ul></details>") if more else ""
    return f'<ul class="reasons">{items}</ul>{extra}'


def anomaly_severities(found: Dict[str, Analysis]) -> Dict[str, str]:
    """Tensor name -> severity of its anomaly in b, for marking the rows of the tensor table."""
    a = found.get("AnomalyDetection")
    listed = a.details.get("anomalies") if a is not None and a.not_applicable is None else None
    return {str(f["name"]): str(f.get("severity", "anomaly")) for f in listed or []
            if isinstance(f, dict) and "name" in f}


def _card(title: str, value: Any, sub: str, reasons: List[str]) -> str:
    shown = "n/a" if value is None else str(value)
    return (f'<div class="card tone-{tone(value)}"><div class="card-title">{esc(title)}</div>'
            f'<div class="card-value">{esc(shown)}</div><div class="card-sub">{esc(sub)}</div>'
            f"{_reason_list(reasons)}</div>")


def _sub(a: Optional[Analysis], reasons: List[str], noun: str, nouns: str) -> str:
    if a is None:
        return "not computed"
    if a.not_applicable is not None:
        return f"n/a: {a.not_applicable}"
    return f"{len(reasons)} {noun if len(reasons) == 1 else nouns}"


def verdict_cards(found: Dict[str, Analysis]) -> str:
    cards = []
    for title, _, name, key in VERDICTS:
        a = found.get(name)
        reasons = _reasons(a)
        nouns = ("anomaly", "anomalies") if name == "AnomalyDetection" else ("reason", "reasons")
        cards.append(_card(title, _summary(a, key), _sub(a, reasons, *nouns), reasons))
    for title, name, key in OPTIONAL_VERDICTS:
        if name in found:
            a = found[name]
            cards.append(_card(title, _summary(a, key), _sub(a, [], "reason", "reasons") if a.not_applicable else
                               f"relative update {cell(_summary(a, 'rel_update'))}", []))
    ran = [found[n] for n in CHECKS if n in found and found[n].not_applicable is None]
    if ran:
        failed = [f"{a.name}: {f}" for a in ran for f in a.failed]
        cards.append(_card("CI checks", "failed" if failed else "passed",
                           f"{', '.join(a.name for a in ran)}: {len(failed)} failed", failed))
    return f'<div class="cards">{"".join(cards)}</div>'


def review_summary(found: Dict[str, Analysis]) -> str:
    a = found.get(REVIEW[1])
    text = _summary(a, "summary")
    if text is None:
        why = a.not_applicable if a is not None and a.not_applicable else "not computed"
        return f'<p class="review na">Review summary: n/a ({esc(why)})</p>'
    return f'<p class="review"><b>Review summary.</b> {esc(text)}</p>'


def change_rank(c) -> float:
    """Ranks the tensors: by relative change; one whose a is all zero and that moved has no
    relative change and goes first rather than vanishing."""
    rel, moved = getattr(c.change, "rel_l2", None), getattr(c.change, "l2_diff", 0.0) or 0.0
    if rel is None or (isinstance(rel, float) and math.isnan(rel)):
        return math.inf if moved > 0 else -1.0
    return rel


def _structure(ctx: Context, top: int) -> str:
    """Added, removed, renamed and reshaped tensors by name (the first ``top`` of each)."""
    by_status = {status: [c.name for c in ctx.with_status(status)] for status in ("added", "removed")}
    by_status["renamed"] = [f"{old} \u2192 {new}" for old, new in ctx.renamed.items()]
    by_status["reshaped"] = [c.name for c in ctx.with_status("reshaped")]
    parts = []
    for status, names in by_status.items():
        if names:
            more = f" and {len(names) - top} more (in the table)" if len(names) > top else ""
            parts.append(f"<li><b>{len(names)} {status}:</b> {esc(', '.join(names[:top]))}{more}</li>")
    return f'<ul class="structure">{"".join(parts)}</ul>' if parts else ""


def changed_most(ctx: Context, top: int) -> str:
    """The most-changed layer groups (share of the squared update) and tensors (relative change),
    then the structural changes."""
    if not ctx.has_stats:
        return '<p class="na">n/a (headers only: no values were read)</p>' + _structure(ctx, top)
    groups = [g for g in ctx.paired_groups if g.get("update_norm")]
    moved = [c for c in ctx.paired if change_rank(c) > 0]
    moved.sort(key=change_rank, reverse=True)
    if not groups and not moved:
        changed = len(ctx.with_status("changed"))
        return (f"<p>No float tensor's values moved (measured over finite elements); {changed} tensors differ in "
                "other ways (see the table).</p>" + _structure(ctx, top))
    layer_rows = "".join(
        f"<tr><td class=\"name\">{name_html(g.get('layer'))}</td><td class=\"num\">{pct(g.get('share'))}</td>"
        f"<td class=\"num\">{cell(g.get('rel_update'))}</td></tr>" for g in groups[:top])
    tensor_rows = "".join(
        f"<tr><td class=\"name\">{name_html(c.name)}</td><td class=\"num\">"
        f"{cell(c.change.rel_l2) if c.change.rel_l2 is not None else 'n/a (a is all zero)'}</td>"
        f"<td class=\"num\">{cell(c.change.cosine)}</td></tr>" for c in moved[:top])
    return ('<div class="most">'
            f'<table class="compact"><caption>Layers that moved most ({len(groups)} moved)</caption>'
            '<tr><th>layer</th><th>share of update</th><th>rel change</th></tr>'
            f'{layer_rows}</table>'
            f'<table class="compact"><caption>Tensors that moved most ({len(moved)} moved)</caption>'
            '<tr><th>tensor</th><th>rel change</th><th>cosine</th></tr>'
            f'{tensor_rows}</table></div>' + _structure(ctx, top))

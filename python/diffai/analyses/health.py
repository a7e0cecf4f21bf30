"""Is checkpoint b healthy, and is it safe to ship: anomalies, CI checks, and the verdicts
derived from them."""

from __future__ import annotations

import re
from bisect import bisect_left
from statistics import median
from typing import Any, Dict, List, Optional

from .common import Analysis, Context, Table, is_float
from .training import NO_STATS

SEVERITY = ["none", "medium", "high", "critical"]


def _max_abs(st) -> Optional[float]:
    """Largest magnitude of a float tensor (integer tensors hold codes or indices, not weights)."""
    if st is None or st.min is None or not is_float(st.dtype):
        return None
    return max(abs(st.min), abs(st.max))


def _median_without(ordered: List[float], value: float) -> Optional[float]:
    """The median of `ordered` (sorted) with one occurrence of `value` taken out, without copying:
    each tensor is compared with the median of the others in O(log n), not O(n log n)."""
    k = bisect_left(ordered, value)
    n = len(ordered) - (k < len(ordered) and ordered[k] == value)
    if n == 0:
        return None
    skip = k if n < len(ordered) else len(ordered)

    def at(j: int) -> float:
        return ordered[j] if j < skip else ordered[j + 1]

    return at(n // 2) if n % 2 else (at(n // 2 - 1) + at(n // 2)) / 2


def find_anomalies(ctx: Context) -> List[Dict[str, Any]]:
    """One entry per model tensor of b with something wrong: {name, severity, issues, new}.
    Several analyses ask; it is computed once per context."""
    return ctx.memo("anomalies", lambda: _find_anomalies(ctx))


def _find_anomalies(ctx: Context) -> List[Dict[str, Any]]:
    cfg = ctx.config
    tensors = [c for c in ctx.model if c.b is not None]
    peaks = {side: {c.name: _max_abs(getattr(c, side)) for c in ctx.model if getattr(c, side) is not None}
             for side in ("a", "b")}
    # The median of the other tensors' nonzero peaks, per side.
    ordered = {side: sorted(v for v in peaks[side].values() if v) for side in ("a", "b")}

    def median_of_others(name: str, side: str) -> Optional[float]:
        peak = peaks[side].get(name)
        return _median_without(ordered[side], peak) if peak else median(ordered[side]) if ordered[side] else None

    def exploding(name: str, side: str) -> bool:
        peak = peaks[side].get(name)
        if peak is None:
            return False
        others = median_of_others(name, side)
        return peak > cfg.explode_abs or (others is not None and peak > cfg.outlier_factor * others)

    out = []
    for c in tensors:
        a, b = c.a, c.b
        issues: List[str] = []
        severity = 0
        new = False
        if (b.nan_count or 0) or (b.inf_count or 0):
            issues.append(f"nan={b.nan_count} inf={b.inf_count}")
            severity = 3
            new = a is None or (b.nan_count, b.inf_count) != (a.nan_count, a.inf_count)
        if exploding(c.name, "b"):
            others = median_of_others(c.name, "b")
            issues.append(f"exploding max|x|={peaks['b'][c.name]:.4g}"
                          + (f" (median of the other tensors {others:.4g})" if others is not None else ""))
            severity = max(severity, 2)
            new = new or not exploding(c.name, "a")
        if b.numel > 1 and b.std == 0 and not (a is not None and a.std == 0):
            issues.append("collapsed to zero" if b.zero_count == b.numel else "collapsed to a constant")
            severity = max(severity, 2)
            new = True
        elif a is not None and a.std and b.std is not None and b.std > 0 and is_float(a.dtype) == is_float(b.dtype):
            ratio = b.std / a.std
            if ratio > cfg.std_factor or ratio < 1 / cfg.std_factor:
                issues.append(f"std x{ratio:.4g}")
                severity = max(severity, 1)
                new = True
        if issues:
            out.append({"name": c.name, "severity": SEVERITY[severity], "issues": issues, "new": new})
    return out


def anomaly_detection(ctx: Context) -> Analysis:
    if not ctx.has_stats:
        return Analysis.na("AnomalyDetection", NO_STATS)
    found = find_anomalies(ctx)
    worst = max((SEVERITY.index(f["severity"]) for f in found), default=0)
    return Analysis(
        "AnomalyDetection",
        summary={
            "severity": SEVERITY[worst],
            "anomalies": len(found),
            "nan_inf_tensors": sum(1 for f in found if f["severity"] == "critical"),
            "affected_layers": [f["name"] for f in found],
        },
        details={"anomalies": found},
        tables=[Table("Anomalies in b", ["tensor", "severity", "new vs a", "issues"],
                      [[f["name"], f["severity"], f["new"], "; ".join(f["issues"])] for f in found])],
    )


def _weight_mb(ctx: Context) -> float:
    return sum(c.b.nbytes for c in ctx.model if c.b is not None) / 2 ** 20


def regression_checks(ctx: Context) -> List[Dict[str, Any]]:
    """The configured CI checks, each {check, passed, detail}."""
    cfg = ctx.config
    checks = []
    if ctx.has_stats:
        bad = [c.name for c in ctx.model if c.b is not None and ((c.b.nan_count or 0) or (c.b.inf_count or 0))]
        checks.append({"check": "no NaN/Inf in b", "passed": not bad, "detail": ", ".join(bad)})
        if cfg.max_relative_change is not None:
            over = [f"{c.name} ({c.change.rel_l2:.4g})" for c in ctx.paired
                    if c.change.rel_l2 is not None and c.change.rel_l2 > cfg.max_relative_change]
            checks.append({"check": f"no tensor rel change > {cfg.max_relative_change}", "passed": not over,
                           "detail": ", ".join(over)})
    if cfg.protected_shapes:
        pattern = re.compile(cfg.protected_shapes)
        moved = [f"{c.name} ({c.status})" for c in ctx.model
                 if pattern.search(c.name) and c.status in ("reshaped", "removed", "added")]
        checks.append({"check": f"shapes kept on /{cfg.protected_shapes}/", "passed": not moved,
                       "detail": ", ".join(moved)})
    if cfg.memory_budget_mb is not None:
        mb = _weight_mb(ctx)
        checks.append({"check": f"weights of b <= {cfg.memory_budget_mb} MiB", "passed": mb <= cfg.memory_budget_mb,
                       "detail": f"{mb:.4g} MiB"})
    return checks


def regression_test(ctx: Context) -> Analysis:
    checks = regression_checks(ctx)
    if not checks:
        return Analysis.na("RegressionTest", "no check can run: --shape-only and no shape/memory check configured")
    failed = [f"{c['check']}: {c['detail']}" for c in checks if not c["passed"]]
    return Analysis("RegressionTest",
                    summary={"passed": not failed, "checks": len(checks), "failed": len(failed)},
                    details={"checks": checks}, failed=failed,
                    tables=[Table("Regression checks", ["check", "passed", "detail"],
                                  [[c["check"], c["passed"], c["detail"]] for c in checks])])


def alert_on_degradation(ctx: Context) -> Analysis:
    if not ctx.has_stats:
        return Analysis.na("AlertOnDegradation", NO_STATS)
    new = [f for f in find_anomalies(ctx) if f["new"] and f["severity"] in ("high", "critical")]
    failed = [f"{f['name']}: {'; '.join(f['issues'])}" for f in new]
    return Analysis("AlertOnDegradation", summary={"alert": bool(new), "degraded_tensors": [f["name"] for f in new]},
                    details={"degradations": new}, failed=failed)


def assess_risk(ctx: Context) -> Dict[str, Any]:
    """Risk level with every reason: high for NaN/Inf, exploding, collapsed or reshaped/removed
    tensors; medium for std shifts, dtype changes, added tensors or a large jump; low otherwise."""
    cfg = ctx.config
    high: List[str] = []
    medium: List[str] = []
    if ctx.has_stats:
        for f in find_anomalies(ctx):
            (high if f["severity"] in ("high", "critical") else medium).append(f"{f['name']}: {'; '.join(f['issues'])}")
        jumps = [c.name for c in ctx.paired if (c.change.rel_l2 or 0) > cfg.large_jump_above]
        if jumps:
            medium.append(f"{len(jumps)} tensors changed by more than {cfg.large_jump_above} relative: "
                          + ", ".join(jumps[: cfg.top_k]))
    for status, bucket in (("reshaped", high), ("removed", high), ("added", medium)):
        names = [c.name for c in ctx.model if c.status == status]
        if names:
            bucket.append(f"{len(names)} tensors {status}: " + ", ".join(names[: cfg.top_k]))
    retyped = [c.name for c in ctx.model if c.a is not None and c.b is not None and c.a.dtype != c.b.dtype]
    if retyped:
        medium.append(f"{len(retyped)} tensors changed dtype")
    level = "high" if high else "medium" if medium else "low"
    return {"level": level, "reasons": high + medium}


def risk_assessment(ctx: Context) -> Analysis:
    if not ctx.has_stats:
        return Analysis.na("RiskAssessment", NO_STATS)
    risk = assess_risk(ctx)
    return Analysis("RiskAssessment", summary={"risk": risk["level"], "reasons": len(risk["reasons"])},
                    details={"reasons": risk["reasons"]},
                    tables=[Table("Risk reasons", ["reason"], [[r] for r in risk["reasons"]])])


def deployment_readiness(ctx: Context) -> Analysis:
    """blocked when a regression check fails, review when the risk is medium or high, else ready."""
    if not ctx.has_stats:
        return Analysis.na("DeploymentReadiness", NO_STATS)
    failed = [f"{c['check']}: {c['detail']}" for c in regression_checks(ctx) if not c["passed"]]
    risk = assess_risk(ctx)
    verdict = "blocked" if failed else "review" if risk["level"] != "low" else "ready"
    reasons = failed + risk["reasons"]
    return Analysis("DeploymentReadiness", summary={"verdict": verdict, "risk": risk["level"],
                                                    "failed_checks": len(failed)},
                    details={"reasons": reasons},
                    tables=[Table("Why", ["reason"], [[r] for r in reasons])])

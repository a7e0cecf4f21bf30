"""Is checkpoint b healthy, and is it safe to ship: anomalies, CI checks, and the verdicts
derived from them."""

from __future__ import annotations

import re
from bisect import bisect_left
from operator import attrgetter
from statistics import median
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .common import Analysis, Context, Table
from .roles import EMBEDDING, LEARNED, NORM_SCALE, QUANT_CODES, ROLES, WEIGHT, roles
from .training import NO_STATS, tensor_updates

SEVERITY = ["none", "medium", "high", "critical"]

# rule -> (severity, roles it applies to). docs/analyses.md ("Health rules") lists the same.
RULES: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "non_finite": ("critical", ROLES),
    "above_abs_limit": ("high", LEARNED),
    "grew_vs_a": ("high", (WEIGHT, EMBEDDING, NORM_SCALE, QUANT_CODES)),
    "outlier_in_role": ("high", (WEIGHT, EMBEDDING)),
    "collapsed": ("high", LEARNED + (QUANT_CODES,)),
    "reinitialised": ("high", (WEIGHT, EMBEDDING)),
    "swapped": ("high", LEARNED),
    "copied": ("high", LEARNED),
    "std_shift": ("medium", (WEIGHT, EMBEDDING, QUANT_CODES)),
    "unrelated_to_a": ("medium", (WEIGHT, EMBEDDING)),
}
MIN_COSINE_NUMEL = 256  # cosines of smaller tensors are too noisy to call "unrelated" (1/sqrt(n) > 0.06)
MIN_SWAP_NUMEL = 16
# A tensor whose max|x| in a is below this share of the median max|x| of a's learned tensors was
# already zero in effect (e.g. 1e-8 attention key biases, which get no gradient): reaching exactly
# zero (an fp16 cast flushes it) is not a collapse.
NEGLIGIBLE_SHARE = 1e-3
MAX_SWAP_GROUP = 256  # same-shape tensors compared with each candidate (a larger group is not searched)


def _max_abs(st) -> Optional[float]:
    """Largest finite magnitude (of the dequantized values for integer codes with a scale)."""
    if st is None or st.min is None:
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
    """One entry per model tensor of b with something wrong: {name, role, severity, rules, issues,
    new}, each issue naming its rule. Several analyses ask; it is computed once per context."""
    return ctx.memo("anomalies", lambda: _find_anomalies(ctx))


class _Findings:
    def __init__(self) -> None:
        self.by_name: Dict[str, List[Dict[str, Any]]] = {}

    def add(self, name: str, rule: str, detail: str, new: bool = True) -> None:
        self.by_name.setdefault(name, []).append({"rule": rule, "severity": RULES[rule][0], "detail": detail,
                                                  "new": new})


def _applies(rule: str, role: str) -> bool:
    return role in RULES[rule][1]


def _candidates(ctx: Context) -> List[Any]:
    """The model tensors of b that a rule of the loop in `_find_anomalies` may fire on, screened
    over the table's columns at once with looser limits (the rules decide per tensor): those with
    NaN/Inf, added, a std of 0, or a magnitude or std beyond a limit. Every tensor of b when the
    result has no table for its comparisons."""
    t = ctx.columns
    if t is None or not len(ctx.model_rows):
        return [c for c in ctx.model if c.b is not None]
    cfg = ctx.config
    col = {k: t[k][ctx.model_rows] for k in ("nan_count_b", "inf_count_b", "numel_a", "numel_b", "min_a", "max_a",
                                             "min_b", "max_b", "std_a", "std_b")}
    slack = 1 - 1e-9  # the limits a little looser than the rules' own (float rounding)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        peak_a = np.maximum(np.abs(col["min_a"]), np.abs(col["max_a"]))
        peak_b = np.maximum(np.abs(col["min_b"]), np.abs(col["max_b"]))
        ratio = col["std_b"] / col["std_a"]
        hit = ((col["nan_count_b"] > 0) | (col["inf_count_b"] > 0) | (col["numel_a"] < 0)
               | (peak_b > cfg.explode_abs * slack) | (peak_b > cfg.outlier_factor * slack * peak_a)
               | (col["std_b"] == 0) | (ratio > cfg.std_factor * slack) | (ratio * cfg.std_factor < 1 / slack))
    hit &= col["numel_b"] >= 0
    return [ctx.model[i] for i in np.flatnonzero(hit)]


def _find_anomalies(ctx: Context) -> List[Dict[str, Any]]:
    cfg = ctx.config
    role = roles(ctx)
    found = _Findings()
    candidates = _candidates(ctx)

    def peaks_by_role() -> Dict[str, List[float]]:  # only the outlier rule needs them
        out: Dict[str, List[float]] = {}
        for c in ctx.model:
            peak = _max_abs(c.b)
            if peak:
                out.setdefault(role[c.name], []).append(peak)
        for values in out.values():
            values.sort()
        return out

    def negligible() -> float:  # only the collapse rule needs it
        learned_a = [p for p in (_max_abs(c.a) for c in ctx.model if role[c.name] in LEARNED) if p]
        return NEGLIGIBLE_SHARE * median(learned_a) if learned_a else 0.0

    for c in candidates:
        a, b, r = c.a, c.b, role[c.name]
        if (b.nan_count or 0) or (b.inf_count or 0):
            new = a is None or (b.nan_count, b.inf_count) != (a.nan_count, a.inf_count)
            found.add(c.name, "non_finite", f"nan={b.nan_count} inf={b.inf_count}", new)
        peak_b, peak_a = _max_abs(b), _max_abs(a)
        # Integer codes are values only where the diff dequantized both sides (else raw codes).
        if r == QUANT_CODES and c.name not in ctx.result.dequantized:
            continue
        if peak_b is not None and _applies("above_abs_limit", r) and peak_b > cfg.explode_abs:
            found.add(c.name, "above_abs_limit", f"max|x|={peak_b:.4g} > --explode-abs {cfg.explode_abs:g}",
                      not (peak_a is not None and peak_a > cfg.explode_abs))
        if peak_b is not None and peak_a and _applies("grew_vs_a", r) and peak_b > cfg.outlier_factor * peak_a:
            found.add(c.name, "grew_vs_a", f"max|x| {peak_a:.4g} -> {peak_b:.4g} (x{peak_b / peak_a:.4g} > "
                                           f"--outlier-factor {cfg.outlier_factor:g})")
        if a is None and peak_b and _applies("outlier_in_role", r):
            peaks = ctx.memo("peaks by role", peaks_by_role)[r]
            others = _median_without(peaks, peak_b)
            if others and len(peaks) > 3 and peak_b > cfg.outlier_factor * others:
                found.add(c.name, "outlier_in_role", f"added with max|x|={peak_b:.4g}, x{peak_b / others:.4g} the "
                                                     f"median of the other {r} tensors ({others:.4g})")
        if a is not None and _applies("collapsed", r) and b.numel > 1 and b.std == 0 and a.std \
                and (peak_a or 0) > ctx.memo("negligible peak", negligible):
            found.add(c.name, "collapsed", f"std {a.std:.4g} -> 0 ("
                      + ("every element 0)" if b.zero_count == b.numel else f"every element {b.mean:.4g})"))
        elif a is not None and a.std and b.std and _applies("std_shift", r) and c.status != "reshaped":
            ratio = b.std / a.std
            if ratio > cfg.std_factor or ratio < 1 / cfg.std_factor:
                found.add(c.name, "std_shift", f"std x{ratio:.4g} (beyond --std-factor {cfg.std_factor:g})")
    _relations(ctx, role, found)
    out = []
    for name, items in found.by_name.items():
        worst = max(SEVERITY.index(f["severity"]) for f in items)
        out.append({"name": name, "role": role[name], "severity": SEVERITY[worst],
                    "rules": [f["rule"] for f in items], "issues": [f"{f['rule']}: {f['detail']}" for f in items],
                    "new": any(f["new"] for f in items),
                    "new_high": [f["rule"] for f in items if f["new"] and f["severity"] in ("high", "critical")]})
    return out


def _relations(ctx: Context, role: Dict[str, str], found: _Findings) -> None:
    """Rules on how b's contents relate to a's: re-initialised (most weights unrelated to a),
    swapped/copied between same-shape tensors, or one tensor unrelated to a."""
    cfg = ctx.config
    # Screened over the paired tensors' columns: (index, role, numel, cosine) of those with a cosine.
    paired = ctx.paired
    measured = [(i, role[name], numel, cos) for i, (name, numel, cos)
                in enumerate(zip(ctx.paired_columns.names, ctx.paired_columns.numel,
                                 map(attrgetter("change.cosine"), paired))) if cos is not None]
    reinitialised = RULES["reinitialised"][1]
    eligible = [(i, cos) for i, r, numel, cos in measured if r in reinitialised and numel >= MIN_COSINE_NUMEL]
    low = [paired[i] for i, cos in eligible if cos < cfg.unrelated_cosine]
    if len(eligible) >= 2 and 2 * len(low) >= len(eligible):
        for c in low:
            found.add(c.name, "reinitialised", f"cos(a, b)={c.change.cosine:.3g} < {cfg.unrelated_cosine:g}, "
                                               f"as for {len(low)} of {len(eligible)} weight tensors (re-initialised "
                                               "or another run, or trained far from a)")
        return
    candidates = [paired[i] for i, r, numel, cos in measured
                  if r in LEARNED and numel >= MIN_SWAP_NUMEL and cos < cfg.swap_cosine]
    matches = _best_matches(ctx, role, candidates) if candidates else {}
    for c in candidates:
        j, cos = matches.get(c.name, (None, None))
        if j is not None and cos >= cfg.swap_cosine and cos > c.change.cosine:
            back = matches.get(j, (None, None))[0] == c.name
            rule = "swapped" if back else "copied"
            found.add(c.name, rule, f"b holds a's {j} (cos {cos:.4g}; with its own a: {c.change.cosine:.3g})"
                      + (f": swapped with {j}" if back else f": {j}'s contents duplicated here"))
        elif c.change.cosine < cfg.unrelated_cosine and c.a.numel >= MIN_COSINE_NUMEL \
                and _applies("unrelated_to_a", role[c.name]):
            found.add(c.name, "unrelated_to_a", f"cos(a, b)={c.change.cosine:.3g} < --unrelated-cosine "
                                                f"{cfg.unrelated_cosine:g} (re-initialised or replaced)")


def _best_matches(ctx: Context, role: Dict[str, str], candidates) -> Dict[str, Tuple[str, float]]:
    """For each candidate i: the other same-shape tensor j of a with the largest cos(b_i, a_j),
    the dot products summed a block at a time (non-finite values count as 0)."""
    by_shape: Dict[Tuple[int, ...], List[str]] = {}
    for c in ctx.paired:
        if role[c.name] in LEARNED:
            by_shape.setdefault(c.a.shape, []).append(c.name)
    out: Dict[str, Tuple[str, float]] = {}
    for shape, names in by_shape.items():
        cands = [c.name for c in candidates if c.a.shape == shape]
        if not cands or len(names) < 2 or len(names) > MAX_SWAP_GROUP:
            continue
        readers = [ctx.blocks(n, "b", len(cands) + len(names)) for n in cands] + \
                  [ctx.blocks(n, "a", len(cands) + len(names)) for n in names]
        dot = np.zeros((len(cands), len(names)))
        nb2, na2 = np.zeros(len(cands)), np.zeros(len(names))
        for blocks in zip(*readers):
            vb = np.nan_to_num(np.stack(blocks[:len(cands)]), nan=0.0, posinf=0.0, neginf=0.0)
            va = np.nan_to_num(np.stack(blocks[len(cands):]), nan=0.0, posinf=0.0, neginf=0.0)
            dot += vb @ va.T
            nb2 += np.einsum("ij,ij->i", vb, vb)
            na2 += np.einsum("ij,ij->i", va, va)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = dot / np.sqrt(nb2)[:, None] / np.sqrt(na2)[None, :]
        for i, name in enumerate(cands):
            row = [(cos[i, j], other) for j, other in enumerate(names) if other != name and np.isfinite(cos[i, j])]
            if row:
                best, other = max(row)
                out[name] = (other, float(best))
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
            "nan_inf_tensors": sum(1 for f in found if "non_finite" in f["rules"]),
            "rules_fired": sorted({r for f in found for r in f["rules"]}),
            "affected_layers": [f["name"] for f in found],
        },
        details={"anomalies": found},
        tables=[Table("Anomalies in b (rule: detail)", ["tensor", "role", "severity", "new vs a", "issues"],
                      [[f["name"], f["role"], f["severity"], f["new"], "; ".join(f["issues"])] for f in found])],
    )


def _weight_mb(ctx: Context) -> float:
    return sum(c.b.nbytes for c in ctx.model if c.b is not None) / 2 ** 20


def regression_checks(ctx: Context) -> List[Dict[str, Any]]:
    """The configured CI checks, each {check, passed, detail}, run once per context."""
    return ctx.memo("regression checks", lambda: _regression_checks(ctx))


def _regression_checks(ctx: Context) -> List[Dict[str, Any]]:
    cfg = ctx.config
    checks = []
    if ctx.has_stats:
        bad = [f["name"] for f in find_anomalies(ctx) if "non_finite" in f["new_high"]]
        checks.append({"check": "no NaN/Inf in b beyond a's", "passed": not bad, "detail": ", ".join(bad)})
        if cfg.max_relative_change is not None:
            over = [f"{c.name} ({c.change.rel_l2:.4g})" for c in ctx.paired
                    if c.change.rel_l2 is not None and c.change.rel_l2 > cfg.max_relative_change]
            checks.append({"check": f"no tensor rel change > {cfg.max_relative_change}", "passed": not over,
                           "detail": ", ".join(over)})
    if cfg.protected_shapes:
        pattern = re.compile(cfg.protected_shapes)
        moved = [f"{c.name} ({c.status})" for c in ctx.model
                 if pattern.search(c.name) and c.status in ("reshaped", "removed", "added")]
        moved += [f"{old} (renamed to {new})" for old, new in ctx.renamed.items()
                  if pattern.search(old) or pattern.search(new)]
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
                    summary={"result": "fail" if failed else "pass", "passed": not failed, "checks": len(checks),
                             "failed": len(failed)},
                    details={"checks": checks}, failed=failed,
                    tables=[Table("Regression checks", ["check", "passed", "detail"],
                                  [[c["check"], c["passed"], c["detail"]] for c in checks])])


def alert_on_degradation(ctx: Context) -> Analysis:
    if not ctx.has_stats:
        return Analysis.na("AlertOnDegradation", NO_STATS)
    new = [f for f in find_anomalies(ctx) if f["new_high"]]
    failed = [f"{f['name']}: {'; '.join(i for i in f['issues'] if i.split(':')[0] in f['new_high'])}" for f in new]
    return Analysis("AlertOnDegradation", summary={"status": "degraded" if new else "ok", "alert": bool(new),
                                                   "degraded_tensors": [f["name"] for f in new]},
                    details={"degradations": new}, failed=failed)


def assess_risk(ctx: Context) -> Dict[str, Any]:
    """Risk level with every reason: high for NaN/Inf, exploding, collapsed or reshaped/removed
    tensors; medium for std shifts, dtype changes, added or renamed tensors or a large jump; low
    otherwise. Computed once per context (three analyses report it)."""
    return ctx.memo("risk", lambda: _assess_risk(ctx))


def _assess_risk(ctx: Context) -> Dict[str, Any]:
    cfg = ctx.config
    high: List[str] = []
    medium: List[str] = []
    notes: List[str] = []  # listed, not raising the level
    if ctx.has_stats:
        for f in find_anomalies(ctx):
            (high if f["severity"] in ("high", "critical") else medium).append(f"{f['name']}: {'; '.join(f['issues'])}")
        updates = tensor_updates(ctx)
        jumps = updates.jumping
        if jumps:
            medium.append(f"{len(jumps)} weight tensors changed by more than {cfg.large_jump_above} relative: "
                          + ", ".join(updates.names[i] for i in jumps[: cfg.top_k]))
        from_zero = updates.from_zero_by_norm()
        if from_zero:
            notes.append(f"{len(from_zero)} tensors moved from all-zero (absolute update ||delta||): "
                         + ", ".join(f"{updates.names[i]} ({updates.norms[i]:.4g})" for i in from_zero[: cfg.top_k]))
    for status, bucket in (("reshaped", high), ("removed", high), ("added", medium)):
        names = [c.name for c in ctx.with_status(status)]
        if names:
            bucket.append(f"{len(names)} tensors {status}: " + ", ".join(names[: cfg.top_k]))
    if ctx.renamed:  # same values under a new name: loading needs a key remap, nothing was lost
        medium.append(f"{len(ctx.renamed)} tensors renamed: "
                      + ", ".join(f"{old} -> {new}" for old, new in list(ctx.renamed.items())[: cfg.top_k]))
    retyped = [] if ctx.sides_alike else [c.name for c in ctx.model if c.a is not None and c.b is not None
                                          and c.a.dtype != c.b.dtype]
    if retyped:
        medium.append(f"{len(retyped)} tensors changed dtype")
    level = "high" if high else "medium" if medium else "low"
    return {"level": level, "reasons": high + medium + notes}


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

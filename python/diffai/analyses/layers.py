"""Where the change is: counts by record type, change per layer group, and a plain-language
summary for a pull request."""

from __future__ import annotations

from collections import Counter
from typing import List

from .common import Analysis, Context, Table, safe_div
from .health import assess_risk
from .training import NO_STATS, convergence_verdict, requantized_reason


def change_summary(ctx: Context) -> Analysis:
    kinds = Counter(ctx.result.record_kinds())
    s = ctx.result.summary
    structural = kinds["TensorAdded"] + kinds["TensorRemoved"] + kinds["TensorRenamed"] + kinds["TensorShapeChanged"]
    # With --shape-only no value was read: no record does not mean no change.
    change = "structure" if structural else "values" if ctx.result.has_differences else "none" if ctx.has_stats \
        else "unknown"
    # Model parameters: optimizer state (Adam moments) is counted apart.
    params = {side: sum(ctx.side(side).numel) for side in "ab"}
    optimizer = {side: sum(getattr(c, side).numel for c in ctx.optimizer if getattr(c, side) is not None)
                 for side in "ab"}
    return Analysis("ChangeSummary",
                    summary={"change": change, **{k: kinds[k] for k in sorted(kinds)},
                             "unchanged_tensors": s.unchanged, "params_a": params["a"], "params_b": params["b"],
                             "optimizer_state_values": [optimizer["a"], optimizer["b"]]},
                    tables=[Table("Records by type", ["record", "count"], [[k, v] for k, v in sorted(kinds.items())])])


CONCENTRATED_SHARE = 0.5  # one layer group with this share of the squared update: "concentrated"


def layer_impact(ctx: Context) -> Analysis:
    if not ctx.has_stats:
        return Analysis.na("LayerImpact", NO_STATS)
    requantized = requantized_reason(ctx)
    if requantized:
        return Analysis.na("LayerImpact", requantized)
    if not ctx.paired:
        return Analysis.na("LayerImpact", "no tensor is present with the same shape in both files")
    groups = ctx.paired_groups
    moved = [g for g in groups if g["update_norm"] > 0]
    return Analysis(
        "LayerImpact",
        summary={"concentration": "none" if not moved else "concentrated"
                 if moved[0]["share"] >= CONCENTRATED_SHARE else "spread",
                 "layers": len(groups), "changed_layers": len(moved),
                 "ranking": [f"{g['layer']}:{g['share']:.3f}" for g in moved[: ctx.config.top_k]]},
        details={"layers": groups, "formula": "share = ||delta_layer||^2 / sum over layers of ||delta||^2"},
        tables=[Table("Layer impact (share of the squared update, largest first)",
                      ["layer", "share", "rel update", "update norm", "changed fraction"],
                      [[g["layer"], g["share"], g["rel_update"], g["update_norm"], g["changed_fraction"]]
                       for g in groups])],
    )


def review_friendly(ctx: Context) -> Analysis:
    if not ctx.has_stats:
        return Analysis.na("ReviewFriendly", NO_STATS)
    s = ctx.result.summary
    sentences: List[str] = []
    structure = [f"{n} {what}" for n, what in ((s.added, "added"), (s.removed, "removed"), (s.renamed, "renamed"),
                                               (s.reshaped, "reshaped")) if n]
    sentences.append(f"{s.changed} of {s.changed + s.unchanged + s.reshaped + s.removed + s.renamed} tensors "
                     "changed values"
                     + (f"; {', '.join(structure)}" if structure else "; no structural change") + ".")
    requantized = requantized_reason(ctx)
    if requantized:
        sentences.append(requantized[0].upper() + requantized[1:] + ".")
    elif ctx.has_stats and ctx.paired:
        delta, weight = ctx.paired_update
        rel = safe_div(delta, weight)
        groups = [g for g in ctx.paired_groups if g["update_norm"] > 0]
        if groups:
            top = groups[0]
            sentences.append(f"Overall relative change {rel:.3g} ({convergence_verdict(rel, ctx)}); "
                             f"{top['share']:.0%} of it is in {top['layer']}.")
    risk = assess_risk(ctx)
    sentences.append(f"Risk {risk['level']}" + (": look at " + "; ".join(risk["reasons"][:3]) if risk["reasons"]
                                                 else ": nothing unusual found") + ".")
    text = " ".join(sentences)
    return Analysis("ReviewFriendly", summary={"risk": risk["level"], "summary": text}, details={"risk_reasons": risk["reasons"]},
                    tables=[Table("Review summary", ["summary"], [[text]])])

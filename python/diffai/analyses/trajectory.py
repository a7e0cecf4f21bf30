"""Three or more checkpoints: consecutive pairs are diffed, then the updates are compared with
each other (norm trend, oscillation, where learning happens over time) and every checkpoint with
every other (cosine of the flattened parameters)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from ..output import json_records, to_text
from ..records import json_safe
from .common import Analysis, AnalysisConfig, Context, Table, fmt, ranked_groups, safe_div
from .representation import similarity_verdict

TRAJECTORY_FLAGS = {"learning-progress", "convergence-analysis", "gradient-analysis"}


@dataclass
class SeriesResult:
    """``pairs[i]`` is the DiffResult of checkpoints[i] -> checkpoints[i+1]; ``trajectory`` holds
    the analyses across all of them."""

    checkpoints: List[str]
    pairs: List[Any]
    trajectory: List[Analysis] = field(default_factory=list)

    @property
    def has_differences(self) -> bool:
        return any(p.has_differences for p in self.pairs)

    @property
    def analyses(self) -> List[Analysis]:
        return [a for p in self.pairs for a in p.analyses] + self.trajectory

    def to_json_obj(self) -> Dict[str, Any]:
        return json_safe({
            "checkpoints": self.checkpoints,
            "pairs": [{"a": p.a_label, "b": p.b_label, "records": json_records(p)} for p in self.pairs],
            "trajectory": [a.to_json() for a in self.trajectory],
        })

    def to_text(self, style) -> str:
        out = []
        for p in self.pairs:
            out.append(style(f"=== {p.a_label} -> {p.b_label}", "bold") + "\n")
            out.append(to_text(p, style))
        out.append(style("=== trajectory", "bold") + "\n")
        for a in self.trajectory:
            out.append(a.text_line() + "\n")
            for table in a.tables:
                out.append(_text_table(table))
        return "".join(out)


def _text_table(table: Table) -> str:
    cells = [table.columns] + [[fmt(v) for v in row] for row in table.rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(table.columns))]
    lines = [f"  {table.title}"] + ["  " + "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()
                                    for r in cells]
    return "\n".join(lines) + "\n"


def diff_series(inputs: List[Any], selected: Optional[List[str]], config: Optional[AnalysisConfig],
                analyse: bool = True, **diff_kwargs) -> SeriesResult:
    from ..api import diff
    from . import run_analyses

    config = config or AnalysisConfig()
    pairs = [diff(a, b, **diff_kwargs) for a, b in zip(inputs, inputs[1:])]
    series = SeriesResult([str(x) for x in inputs], pairs)
    if not analyse:
        return series
    for p in pairs:
        run_analyses(p, selected, config)
    wanted = [(f, flags) for f, flags in ((trajectory, TRAJECTORY_FLAGS), (checkpoint_similarity, {"similarity-matrix"}))
              if selected is None or flags & set(selected)]
    if wanted:
        products = _series_products(pairs, config)  # every tensor of every checkpoint: read once
        series.trajectory.extend(f(pairs, products) for f, _ in wanted)
    return series


@dataclass
class _Products:
    """What both series analyses are computed from (see ``_gram``)."""

    contexts: List[Context]
    names: List[str]
    gram: np.ndarray
    updates: np.ndarray


def _series_products(pairs, config: AnalysisConfig):
    """The series' Contexts, common tensors and inner products, or why there are none."""
    if pairs[0].options.shape_only:
        return "only headers were read (--shape-only)"
    contexts = [Context(p, config) for p in pairs]
    names = _common_names(contexts)
    if not names:
        return "no tensor with the same shape in every checkpoint"
    return _Products(contexts, names, *_gram(contexts, names))


def _common_names(contexts: List[Context]) -> List[str]:
    """Model tensors with the same shape in every checkpoint."""
    sets = [{c.name for c in ctx.paired} for ctx in contexts]
    return [c.name for c in contexts[0].paired if all(c.name in s for s in sets)]


def _gram(contexts: List[Context], names: List[str]):
    """(G, U): G[i,j] = <w_i, w_j> between checkpoints and U[i,j] = <u_i, u_j> between updates
    u_i = w_{i+1} - w_i, over ``names`` at positions finite in every checkpoint. Updates are
    subtracted per tensor (not expanded from G) so small updates keep their precision; a block of
    one tensor at a time is read, so memory stays at one block times the number of checkpoints."""
    n = len(contexts) + 1
    gram, upd = np.zeros((n, n)), np.zeros((n - 1, n - 1))
    for name in names:
        readers = [ctx.blocks(name, "a" if i == 0 else "b", n) for i, ctx in enumerate([contexts[0]] + contexts)]
        for vals in zip(*readers):  # the same positions of every checkpoint
            finite = np.logical_and.reduce([np.isfinite(v) for v in vals])
            w = np.stack([v[finite] for v in vals])
            u = np.diff(w, axis=0)
            gram += w @ w.T
            upd += u @ u.T
    return gram, upd


def trajectory(pairs, products) -> Analysis:
    if isinstance(products, str):
        return Analysis.na("TrajectoryAnalysis", products)
    contexts, names, g, u = products.contexts, products.names, products.gram, products.updates
    k = len(pairs)
    norms = [math.sqrt(u[i, i]) for i in range(k)]
    cosines = [safe_div(u[i, i + 1], norms[i] * norms[i + 1]) for i in range(k - 1)]
    rel = [safe_div(norms[i], math.sqrt(g[i, i])) for i in range(k)]
    common = set(names)
    tops = []
    for ctx in contexts:
        ranked = [r for r in ranked_groups([c for c in ctx.paired if c.name in common]) if r["update_norm"] > 0]
        tops.append(ranked[0]["layer"] if ranked else None)
    if all(b < a for a, b in zip(norms, norms[1:])):
        trend = "shrinking"
    elif all(b > a for a, b in zip(norms, norms[1:])):
        trend = "growing"
    else:
        trend = "mixed"
    negative = [i + 1 for i, c in enumerate(cosines) if c is not None and c < 0]
    return Analysis(
        "TrajectoryAnalysis",
        summary={"trend": trend, "steps": k, "update_norms": norms,
                 "last_over_first": safe_div(norms[-1], norms[0]),
                 "successive_update_cosines": cosines, "oscillating_steps": negative,
                 "top_layer_per_step": tops},
        details={"rel_updates": rel, "tensors": len(names),
                 "formula": "update_i = w_{i+1} - w_i over tensors with one shape in every checkpoint; "
                            "cos_i = <update_i, update_{i+1}> / (||update_i|| ||update_{i+1}||); "
                            "oscillation: cos_i < 0"},
        tables=[Table("Checkpoint series", ["step", "from", "to", "update norm", "rel update", "cos with next",
                                            "top layer"],
                      [[i + 1, p.a_label, p.b_label, norms[i], rel[i], cosines[i] if i < k - 1 else None, tops[i]]
                       for i, p in enumerate(pairs)])],
    )


def checkpoint_similarity(pairs, products) -> Analysis:
    if isinstance(products, str):
        return Analysis.na("CheckpointSimilarity", products)
    g = products.gram
    d = np.sqrt(np.diag(g))
    with np.errstate(invalid="ignore", divide="ignore"):
        m = g / np.outer(d, d)
    labels = [pairs[0].a_label] + [p.b_label for p in pairs]
    matrix = [[None if not np.isfinite(v) else float(v) for v in row] for row in m]
    return Analysis("CheckpointSimilarity",
                    summary={"similarity": similarity_verdict(matrix[0][-1], matrix[0][-1]),
                             "checkpoints": len(labels), "first_vs_last_cosine": matrix[0][-1]},
                    details={"checkpoints": labels, "cosine": matrix},
                    tables=[Table("Cosine between checkpoints (flattened common parameters)",
                                  ["checkpoint"] + [str(i + 1) for i in range(len(labels))],
                                  [[f"{i + 1}: {lab}"] + row for i, (lab, row) in enumerate(zip(labels, matrix))])])

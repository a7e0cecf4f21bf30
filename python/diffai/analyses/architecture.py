"""What the models are built from and what they cost: layer families, parameter budgets,
memory, and FLOPs/bandwidth estimates derived from the weight shapes."""

from __future__ import annotations

import re
from typing import Any, Dict, List

from .common import Analysis, Context, Table, families, grade, group_sums, safe_div
from .roles import QUANT_SCALE, TRAINABLE, roles
from .training import requantized_reason

MIB = 2 ** 20


def _families(ctx: Context, side: str) -> Dict[str, str]:
    def compute() -> Dict[str, str]:
        tensors = ctx.side(side)
        if side == "b":
            a = ctx.side("a")
            if a.names == tensors.names and a.shapes == tensors.shapes:  # the same tensors: the same families
                return _families(ctx, "a")
        return families(dict(zip(tensors.names, tensors.shapes)), roles(ctx))

    return ctx.memo(f"families {side}", compute)


def _family_params(ctx: Context, side: str) -> Dict[str, int]:
    def count() -> Dict[str, int]:
        if side == "b" and ctx.sides_alike:
            return _family_params(ctx, "a")
        fam, tensors = _families(ctx, side), ctx.side(side)
        return {f: sums[0] for f, sums in group_sums(list(map(fam.__getitem__, tensors.names)), tensors.numel).items()}

    return ctx.memo(f"family params {side}", count)


_BLOCK = re.compile(r"^(.*?)\.(\d+)(?:\.|$)")
# The same on each line of the names joined ([^\n] is what . matches; the text before the digits
# taken a whole component at a time, which is faster).
_BLOCKS = re.compile(r"^((?:[^.\n]*\.)*?[^.\n]*)\.(\d+)(?=\.|$)", re.MULTILINE)


def _depth(names: List[str]) -> Dict[str, int]:
    """Repeated blocks: container (text before a numeric component) -> distinct indices."""
    joined = "\n".join(names)
    if joined.count("\n") == len(names) - 1:  # no name holds a line break: one pass over all
        found = dict.fromkeys(_BLOCKS.findall(joined))  # (container, index) once each, in order
    else:
        found = dict.fromkeys(m.groups() for m in map(_BLOCK.match, names) if m)
    blocks: Dict[str, set] = {}
    for container, index in found:
        blocks.setdefault(container, set()).add(int(index))
    return {k: len(v) for k, v in blocks.items() if len(v) > 1}


def _widths(ctx: Context, side: str) -> List[int]:
    def compute() -> List[int]:
        if side == "b" and ctx.sides_alike:
            return _widths(ctx, "a")
        tensors = ctx.side(side)
        fam = _families(ctx, side)
        return sorted({shape[0] for n, shape in zip(tensors.names, tensors.shapes)
                       if len(shape) == 2 and fam[n] in ("linear", "attention")})

    return list(ctx.memo(f"widths {side}", compute))


MIGRATION_EASY_SHARE = 0.1  # added + removed + renamed tensors up to this share of a's: migration "easy"


def migration_verdict(names_moved: int, reshaped: int, tensors_a: int) -> str:
    """none: no structural change; easy: only added, removed or renamed tensors (``names_moved``),
    at most MIGRATION_EASY_SHARE of a's tensors (a non-strict load, or a key remap for renames,
    works); hard: a reshaped tensor, or more of the others."""
    if not (names_moved or reshaped):
        return "none"
    return "easy" if not reshaped and names_moved <= MIGRATION_EASY_SHARE * max(tensors_a, 1) else "hard"


def architecture_comparison(ctx: Context) -> Analysis:
    fa, fb = _family_params(ctx, "a"), _family_params(ctx, "b")
    names_a, names_b = ctx.side("a").names, ctx.side("b").names
    da = _depth(names_a)
    db = da if names_b == names_a else _depth(names_b)
    added = [c.name for c in ctx.with_status("added")]
    removed = [c.name for c in ctx.with_status("removed")]
    renamed = [f"{old} -> {new}" for old, new in ctx.renamed.items()]
    # Quantization scales come with the storage format, not the architecture.
    role = roles(ctx)
    structural = sum(1 for n in [*added, *removed, *ctx.renamed] if role[n] != QUANT_SCALE)
    reshaped = [f"{c.name} {list(c.a.shape)}->{list(c.b.shape)}" for c in ctx.with_status("reshaped")]
    fams = sorted(set(fa) | set(fb))
    return Analysis(
        "ArchitectureComparison",
        summary={
            "migration": migration_verdict(structural, len(reshaped), len(ctx.side("a"))),
            "families_inferred": {f: fb.get(f, 0) for f in fams},
            "depth_a": da, "depth_b": db,
            "widths_b": _widths(ctx, "b"),
            "added": len(added), "removed": len(removed), "renamed": len(renamed), "reshaped": len(reshaped),
            "same_architecture": not (added or removed or renamed or reshaped),
        },
        details={"params_per_family_a": fa, "params_per_family_b": fb, "widths_a": _widths(ctx, "a"),
                 "added_tensors": added, "removed_tensors": removed, "renamed_tensors": renamed,
                 "reshaped_tensors": reshaped, "note": "families are inferred from tensor names and shapes"},
        tables=[Table("Parameters per layer family (inferred from names and shapes)", ["family", "a", "b", "delta"],
                      [[f, fa.get(f, 0), fb.get(f, 0), fb.get(f, 0) - fa.get(f, 0)] for f in fams]),
                Table("Structural changes", ["change", "tensor"],
                      [["added", n] for n in added] + [["removed", n] for n in removed]
                      + [["renamed", n] for n in renamed] + [["reshaped", n] for n in reshaped])],
    )


def param_efficiency(ctx: Context) -> Analysis:
    fb = _family_params(ctx, "b")
    side_b = ctx.side("b")
    per_dtype = {dtype: {"params": params, "bytes": nbytes}
                 for dtype, (params, nbytes) in group_sums(side_b.dtypes, side_b.numel, side_b.nbytes).items()}
    summary: Dict[str, Any] = {"sparsity": "unknown", "params_b": sum(fb.values()), "params_per_family_b": fb}
    tables = [Table("Parameters and bytes by dtype (b)", ["dtype", "params", "bytes"],
                    [[dt, v["params"], v["bytes"]] for dt, v in per_dtype.items()])]
    if ctx.has_stats:
        zeros = sum(st.zero_count or 0 for st in side_b.stats)
        total = sum(side_b.numel)
        summary["sparsity_b"] = safe_div(zeros, total)
        summary["sparsity"] = grade(summary["sparsity_b"], [(0.1, "dense"), (0.5, "partly_sparse")], "sparse")
        pairs = ctx.paired_columns
        requantized = requantized_reason(ctx)  # their every element differs by quantization error
        summary["changed_share"] = f"n/a ({requantized})" if requantized \
            else safe_div(sum(pairs.changed), sum(pairs.numel))

        def per_layer() -> List[List[Any]]:
            b = [c.b for c in ctx.paired]
            groups = group_sums(pairs.layers, [st.numel for st in b], pairs.changed, [st.zero_count or 0 for st in b])
            return [[k, params, safe_div(changed, params), safe_div(zeros, params)]
                    for k, (params, changed, zeros) in groups.items()]

        tables.append(Table("Per layer group (b)", ["layer", "params", "changed share", "zero fraction"], per_layer))
    return Analysis("ParamEfficiency", summary=summary, details={"dtypes_b": per_dtype}, tables=tables)


def _bytes_per_dtype(ctx: Context, side: str) -> Dict[str, int]:
    """Bytes of the model tensors of a side per dtype."""
    if side == "b" and ctx.sides_alike:
        return _bytes_per_dtype(ctx, "a")
    tensors = ctx.side(side)
    return {dtype: sums[0] for dtype, sums in group_sums(tensors.dtypes, tensors.nbytes).items()}


def memory_estimates(ctx: Context, side: str) -> Dict[str, Any]:
    """Exact weight bytes (every model tensor as stored) and the training estimate:
    weight_bytes + trainable_bytes (gradients in the weights' dtype) + 8 * trainable (Adam m and v in
    fp32) + 4 * trainable_below_fp32 (an fp32 master copy of weights stored in fewer than 32 bits:
    f16, bf16, f8 and integer codes). Trainable = the learned roles (roles.TRAINABLE): not index or
    counter buffers, norm running statistics or quantization scales."""
    if side == "b" and ctx.sides_alike:
        return memory_estimates(ctx, "a")
    return dict(ctx.memo(f"memory estimates {side}", lambda: _memory_estimates(ctx, side)))


def _memory_estimates(ctx: Context, side: str) -> Dict[str, Any]:
    role = roles(ctx)
    tensors = ctx.side(side)
    trainable = [(numel, nbytes, dtype) for n, numel, nbytes, dtype
                 in zip(tensors.names, tensors.numel, tensors.nbytes, tensors.dtypes) if role[n] in TRAINABLE]
    weights = sum(tensors.nbytes)
    params = sum(numel for numel, _, _ in trainable)
    trainable_bytes = sum(nbytes for _, nbytes, _ in trainable)
    low = sum(numel for numel, _, dtype in trainable if dtype not in ("f32", "f64"))
    return {"weights": weights, "params": params, "trainable_bytes": trainable_bytes, "low_precision_params": low,
            "training": weights + trainable_bytes + 8 * params + 4 * low}


def memory(ctx: Context) -> Analysis:
    ma, mb = memory_estimates(ctx, "a"), memory_estimates(ctx, "b")
    ba, bb = _bytes_per_dtype(ctx, "a"), _bytes_per_dtype(ctx, "b")
    oa, ob = (sum(getattr(c, s).nbytes for c in ctx.optimizer if getattr(c, s) is not None) for s in ("a", "b"))
    formula = ("training ~= weight_bytes + trainable_bytes + 8 * trainable_params + 4 * trainable_params_below_fp32 "
               "(weights, grads, Adam m+v fp32, fp32 master copy)")
    return Analysis(
        "MemoryAnalysis",
        summary={
            "memory": grade(safe_div(mb["weights"], ma["weights"]), [(0.99, "smaller"), (1.01, "same")], "larger"),
            "weights_a_bytes": ma["weights"], "weights_b_bytes": mb["weights"],
            "delta_bytes": mb["weights"] - ma["weights"],
            "inference_estimate_b_mib": mb["weights"] / MIB,
            "training_estimate_b_mib": mb["training"] / MIB,
            "optimizer_state_bytes": [oa, ob],
        },
        details={"bytes_per_dtype_a": ba, "bytes_per_dtype_b": bb,
                 "training_estimate_a_bytes": ma["training"], "training_estimate_b_bytes": mb["training"],
                 "formula": formula,
                 "not_included": "activations, KV cache and framework overhead (depend on batch and sequence)"},
        tables=[Table("Bytes per dtype (exact, model tensors)", ["dtype", "a", "b", "delta"],
                      [[d, ba.get(d, 0), bb.get(d, 0), bb.get(d, 0) - ba.get(d, 0)] for d in sorted(set(ba) | set(bb))]),
                Table("Estimates (" + formula + ")", ["side", "inference MiB (weights)", "training MiB"],
                      [["a", ma["weights"] / MIB, ma["training"] / MIB], ["b", mb["weights"] / MIB, mb["training"] / MIB]])],
    )


def compute_cost(ctx: Context, side: str) -> Dict[str, Any]:
    """FLOPs per token from linear/attention projections (2*out*in per 2-D weight; embeddings are
    lookups) and per output position of each conv (2*out*in_per_group*prod(kernel)); bytes read
    per forward pass at batch 1 = every weight once."""
    def compute() -> Dict[str, Any]:
        if side == "b" and ctx.sides_alike:
            return compute_cost(ctx, "a")
        tensors = ctx.side(side)
        fam = _families(ctx, side)
        columns = list(zip(tensors.names, tensors.shapes, tensors.numel))
        linear = sum(2 * numel for n, shape, numel in columns
                     if len(shape) == 2 and n.endswith("weight") and fam[n] in ("linear", "attention", "recurrent"))
        conv = sum(2 * numel for n, shape, numel in columns if len(shape) >= 3 and fam[n] == "conv")
        return {"linear_flops_per_token": linear, "conv_flops_per_output_position": conv,
                "bytes_per_forward": sum(tensors.nbytes)}

    return dict(ctx.memo(f"compute cost {side}", compute))


def speed_verdict(memory_bound_ratio) -> str:
    """faster / similar / slower: the memory-bound latency ratio below 0.95, within, above 1.05."""
    return grade(memory_bound_ratio, [(0.95, "faster"), (1.05 + 1e-12, "similar")], "slower")


def inference_speed(ctx: Context) -> Analysis:
    ca, cb = compute_cost(ctx, "a"), compute_cost(ctx, "b")
    if not (ca["linear_flops_per_token"] or ca["conv_flops_per_output_position"]
            or cb["linear_flops_per_token"] or cb["conv_flops_per_output_position"]):
        return Analysis.na("InferenceSpeedEstimate", "no linear or conv weight matrices to count FLOPs from")
    return Analysis(
        "InferenceSpeedEstimate",
        summary={"speed": speed_verdict(safe_div(cb["bytes_per_forward"], ca["bytes_per_forward"])),
                 "estimate": True,
                 "flops_per_token_a": ca["linear_flops_per_token"], "flops_per_token_b": cb["linear_flops_per_token"],
                 "conv_flops_per_position_b": cb["conv_flops_per_output_position"],
                 "bytes_per_forward_b": cb["bytes_per_forward"],
                 "memory_bound_latency_ratio": safe_div(cb["bytes_per_forward"], ca["bytes_per_forward"])},
        details={"a": ca, "b": cb, "formula": "FLOPs/token = sum 2*out*in over 2-D weights; conv per output position "
                                              "= 2*numel(weight); latency ratio (memory-bound, batch 1) = bytes_b/bytes_a",
                 "not_included": "attention score FLOPs (depend on sequence length), conv output sizes, kernels"},
    )


def performance_impact(ctx: Context) -> Analysis:
    ca, cb = compute_cost(ctx, "a"), compute_cost(ctx, "b")
    flops_a = ca["linear_flops_per_token"] + ca["conv_flops_per_output_position"]
    flops_b = cb["linear_flops_per_token"] + cb["conv_flops_per_output_position"]
    mem_ratio = safe_div(cb["bytes_per_forward"], ca["bytes_per_forward"])
    flop_ratio = safe_div(flops_b, flops_a)
    return Analysis(
        "PerformanceImpactEstimate",
        summary={"verdict": speed_verdict(mem_ratio), "estimate": True, "compute_ratio": flop_ratio,
                 "memory_bound_latency_ratio": mem_ratio,
                 "bytes_delta": cb["bytes_per_forward"] - ca["bytes_per_forward"]},
        details={"formula": "compute_ratio = FLOPs_b/FLOPs_a; memory_bound_latency_ratio = bytes_b/bytes_a; "
                            "verdict on the memory-bound ratio (+-5%)",
                 "not_included": "hardware support for the dtype (e.g. int8 kernels), batch size, sequence length"},
    )

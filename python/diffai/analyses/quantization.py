"""Precision changes: which tensors changed dtype, the real size saving, and the error of the
lower-precision side against the higher-precision one, per tensor, per quantization type and per
layer, with tensors whose error is an outlier for their type flagged. The elementwise sums come
from the diff's own comparisons (GGUF blocks dequantized by the core, integer codes read as
code * scale by diffai.dequantized, GGUF q/k rows unpermuted by diffai.gguf_names), so nothing is
read twice."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Dict, List, Optional

import numpy as np

from .. import dequantized
from .common import Analysis, Context, Table, grade, is_float, layer_group, safe_div
from .training import NO_STATS

_FLOAT_BITS = {"f64": 64, "f32": 32, "f16": 16, "bf16": 16, "f8_e4m3": 8, "f8_e5m2": 8}

SNR_MINIMAL_FROM = 40.0  # dB: error power below 1e-4 of the signal's
SNR_SEVERE_BELOW = 20.0  # dB: error power above 1e-2 of the signal's
# Outliers for their type: SNR below the type's median by more than OUTLIER_MADS robust standard
# deviations (1.4826 * MAD) and by at least OUTLIER_MIN_DB, among at least OUTLIER_MIN_TENSORS.
OUTLIER_MADS = 3.5
OUTLIER_MIN_DB = 3.0  # dB: error power twice the type's median
OUTLIER_MIN_TENSORS = 5


def _bits(st, logical: bool) -> float:
    """Precision order: floats by width, block-quantized types and quantized logical weights
    (``logical``: diffai.quantized, every stored part counted) by their stored bits per value
    (q8_0: 8.5, q4_k: 4.5, gptq-int4 g128: ~4.3), integer codes below every float."""
    if st.dtype in _FLOAT_BITS:
        return _FLOAT_BITS[st.dtype]
    return 8 * st.nbytes / st.numel if (logical or is_float(st.dtype)) and st.numel else 0.0


def _sum_squares(st) -> float:
    """Σx² of a side over its finite values, from its statistics: n·(std² + mean²)."""
    n = st.numel - st.nan_count - st.inf_count
    return n * (st.std ** 2 + st.mean ** 2) if n and st.mean is not None else 0.0


def snr_db(signal2: float, noise2: float) -> Optional[float]:
    if noise2 == 0:
        return math.inf if signal2 else None
    return 10 * math.log10(signal2 / noise2) if signal2 else None


def _measure(c, hi: str) -> Dict[str, Any]:
    """The error of the lower-precision side against side ``hi`` from the comparison's sums."""
    ch = c.change
    err2 = ch.l2_diff ** 2
    ref2 = ch.l2_a ** 2 if hi == "a" else _sum_squares(c.b)
    lo = c.b if hi == "a" else c.a
    return {"name": c.name, "type": lo.dtype, "transition": f"{c.a.dtype}->{c.b.dtype}",
            "layer": layer_group(c.name), "numel": lo.numel, "bytes_hi": getattr(c, hi).nbytes, "bytes_lo": lo.nbytes,
            "err2": err2, "ref2": ref2, "sum_abs": (ch.mean_abs_diff or 0.0) * ch.compared, "compared": ch.compared,
            "snr_db": snr_db(ref2, err2), "rel_l2_error": math.sqrt(err2 / ref2) if ref2 else None,
            "cosine": ch.cosine, "max_abs_error": ch.max_abs_diff, "mean_abs_error": ch.mean_abs_diff}


def _group(rows: List[Dict[str, Any]], key: str) -> List[Dict[str, Any]]:
    """Per value of ``key``: error over the group's elements together (sums of squares and of
    absolute errors added), the worst max error and cosine, stored bits per value."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    out = []
    for value, rs in groups.items():
        e2, r2 = sum(r["err2"] for r in rs), sum(r["ref2"] for r in rs)
        compared = sum(r["compared"] for r in rs)
        cosines = [r["cosine"] for r in rs if r["cosine"] is not None]
        out.append({key: value, "tensors": len(rs), "params": sum(r["numel"] for r in rs),
                    "bits_per_value": safe_div(8 * sum(r["bytes_lo"] for r in rs), sum(r["numel"] for r in rs)),
                    "snr_db": snr_db(r2, e2), "rel_l2_error": math.sqrt(e2 / r2) if r2 else None,
                    "min_cosine": min(cosines, default=None),
                    "max_abs_error": max((r["max_abs_error"] or 0.0 for r in rs), default=None),
                    "mean_abs_error": safe_div(sum(r["sum_abs"] for r in rs), compared)})
    return out


def _depth(layer: str) -> float:
    """Sort key of a layer label: its block number, blocks before the rest."""
    last = layer.rsplit(".", 1)[-1]
    return int(last) if last.isdigit() else math.inf


def _outliers(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Tensors whose SNR is far below the others of their type (median / MAD over the type)."""
    out = []
    by_type: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        if r["snr_db"] is not None and math.isfinite(r["snr_db"]):
            by_type.setdefault(r["type"], []).append(r)
    for qtype, rs in by_type.items():
        if len(rs) < OUTLIER_MIN_TENSORS:
            continue
        snrs = np.array([r["snr_db"] for r in rs])
        median = float(np.median(snrs))
        spread = 1.4826 * float(np.median(np.abs(snrs - median)))
        limit = median - max(OUTLIER_MADS * spread, OUTLIER_MIN_DB)
        out += [{"name": r["name"], "type": qtype, "snr_db": r["snr_db"], "type_median_snr_db": median,
                 "below_db": median - r["snr_db"]} for r in rs if r["snr_db"] < limit]
    return sorted(out, key=lambda o: -o["below_db"])


def quantization(ctx: Context) -> Analysis:
    retyped = [c for c in ctx.model if c.a is not None and c.b is not None and c.a.dtype != c.b.dtype]
    if not retyped:
        return Analysis.na("QuantizationAnalysis", "no tensor changed dtype")
    if not ctx.has_stats:
        return Analysis.na("QuantizationAnalysis", NO_STATS)
    transitions = Counter(f"{c.a.dtype}->{c.b.dtype}" for c in retyped)
    bytes_a = sum(c.a.nbytes for c in ctx.model if c.a is not None)
    bytes_b = sum(c.b.nbytes for c in ctx.model if c.b is not None)
    rows: List[Dict[str, Any]] = []
    skipped: List[str] = []
    for c in retyped:
        logical = {side: ctx.logical(c.name, side) is not None for side in "ab"}
        hi = "a" if _bits(c.a, logical["a"]) >= _bits(c.b, logical["b"]) else "b"
        lo = "b" if hi == "a" else "a"
        lo_dtype = getattr(c, lo).dtype
        if c.a.shape != c.b.shape:
            skipped.append(f"{c.name}: shape changed too, {list(c.a.shape)} -> {list(c.b.shape)}")
        elif not is_float(lo_dtype) and not logical[lo] and ctx.scales(c.name, lo) is None:
            suffix = ctx.metadata("b" if hi == "a" else "a").get("scale_suffix", dequantized.DEFAULT_SCALE_SUFFIX)
            skipped.append(f"{c.name}: {lo_dtype} without a usable '{suffix}' scale tensor")
        elif c.change is None:
            skipped.append(f"{c.name}: not compared elementwise")
        else:
            rows.append(_measure(c, hi))
    e2 = sum(r["err2"] for r in rows)
    r2 = sum(r["ref2"] for r in rows)
    rows.sort(key=lambda r: r["rel_l2_error"] or 0.0, reverse=True)
    types = sorted(_group(rows, "type"), key=lambda t: t["snr_db"] if t["snr_db"] is not None else math.inf)
    layers = sorted(_group(rows, "layer"), key=lambda g: (_depth(g["layer"]), g["layer"]))
    worst = sorted((g for g in layers if g["snr_db"] is not None), key=lambda g: g["snr_db"])
    outliers = _outliers(rows)
    measured_hi, measured_lo = sum(r["bytes_hi"] for r in rows), sum(r["bytes_lo"] for r in rows)
    for r in rows:
        for key in ("err2", "ref2", "sum_abs", "compared", "bytes_hi"):
            del r[key]
    return Analysis(
        "QuantizationAnalysis",
        summary={
            "precision_loss": "unmeasured" if not rows else grade(snr_db(r2, e2), [
                (SNR_SEVERE_BELOW, "severe"), (SNR_MINIMAL_FROM, "moderate")], "minimal"),
            "transitions": dict(transitions),
            "compression_ratio": safe_div(bytes_a, bytes_b),
            "bytes_a": bytes_a, "bytes_b": bytes_b,
            "quantized_compression_ratio": safe_div(measured_hi, measured_lo),
            "rel_l2_error": math.sqrt(e2 / r2) if r2 else None,
            "max_abs_error": max((r["max_abs_error"] or 0.0 for r in rows), default=None),
            "snr_db": snr_db(r2, e2),
            "snr_db_by_type": {t["type"]: t["snr_db"] for t in types},
            "worst_layers": [g["layer"] for g in worst[: ctx.config.top_k]],
            "outliers": [o["name"] for o in outliers],
            "measured_tensors": len(rows),
        },
        details={"tensors": rows, "types": types, "layers": layers, "outliers": outliers, "not_measured": skipped},
        tables=[Table("Precision loss per tensor (against the higher-precision side, worst first)",
                      ["tensor", "transition", "SNR dB", "rel L2 error", "cosine", "max abs error", "mean abs error"],
                      [[r["name"], r["transition"], r["snr_db"], r["rel_l2_error"], r["cosine"], r["max_abs_error"],
                        r["mean_abs_error"]] for r in rows]),
                Table("Precision loss per quantization type (worst first)",
                      ["type", "tensors", "params", "bits per value", "SNR dB", "rel L2 error", "max abs error"],
                      [[t["type"], t["tensors"], t["params"], t["bits_per_value"], t["snr_db"], t["rel_l2_error"],
                        t["max_abs_error"]] for t in types]),
                Table("Precision loss per layer (by depth)",
                      ["layer", "tensors", "SNR dB", "rel L2 error", "min cosine", "max abs error", "mean abs error"],
                      [[g["layer"], g["tensors"], g["snr_db"], g["rel_l2_error"], g["min_cosine"], g["max_abs_error"],
                        g["mean_abs_error"]] for g in layers])],
    )

"""Precision changes: which tensors changed dtype, the real size saving, and the error measured
elementwise against the higher-precision side (integer tensors dequantized with their scale)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Dict, List, Optional

import numpy as np

from .. import dequantized
from .common import Analysis, Context, Table, grade, safe_div
from .training import NO_STATS

_FLOAT_BITS = {"f64": 64, "f32": 32, "f16": 16, "bf16": 16, "f8_e4m3": 8, "f8_e5m2": 8}


def _precision(dtype: str) -> int:
    """Ordering of precision: floats by width, any integer below every float."""
    return _FLOAT_BITS.get(dtype, 0)


def _measured(change) -> Dict[str, Optional[float]]:
    """`_error`'s figures from the diff's own change metrics of a logical quantized weight
    (diffai.quantized compared it elementwise, a being the reference)."""
    e2, r2 = change.l2_diff ** 2, change.l2_a ** 2
    return {"err2": e2, "ref2": r2, "rel_l2_error": math.sqrt(e2 / r2) if r2 else None,
            "max_abs_error": change.max_abs_diff, "snr_db": _snr(r2, e2)}


def _error(ctx: Context, name: str, hi: str, lo: str) -> Dict[str, Optional[float]]:
    """The error of side ``lo`` (integer codes read as code * scale) against side ``hi`` over the
    elements finite on both, read a block of rows at a time."""
    e2 = r2 = 0.0
    worst: Optional[float] = None
    for ref, approx in zip(ctx.row_blocks(name, hi), ctx.row_blocks(name, lo)):
        finite = np.isfinite(ref) & np.isfinite(approx)
        r, d = ref[finite], approx[finite] - ref[finite]
        e2 += float((d * d).sum())
        r2 += float((r * r).sum())
        if d.size:
            worst = max(worst or 0.0, float(np.abs(d).max()))
    return {"err2": e2, "ref2": r2, "rel_l2_error": math.sqrt(e2 / r2) if r2 else None,
            "max_abs_error": worst, "snr_db": _snr(r2, e2)}


def _snr(signal2: float, noise2: float) -> Optional[float]:
    if noise2 == 0:
        return math.inf if signal2 else None
    return 10 * math.log10(signal2 / noise2) if signal2 else None


SNR_MINIMAL_FROM = 40.0  # dB: error power below 1e-4 of the signal's
SNR_SEVERE_BELOW = 20.0  # dB: error power above 1e-2 of the signal's


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
        hi, lo = ("a", "b") if _precision(c.a.dtype) >= _precision(c.b.dtype) else ("b", "a")
        lo_dtype = getattr(c, lo).dtype
        if c.a.shape != c.b.shape:
            skipped.append(f"{c.name}: shape changed too, {list(c.a.shape)} -> {list(c.b.shape)}")
            continue
        if c.name in ctx.result.quantized:  # a logical quantized weight: the diff measured it
            if hi != "a" or c.change is None:
                skipped.append(f"{c.name}: the quantized side is a; its error is measured with it as b")
                continue
            rows.append({"name": c.name, "transition": f"{c.a.dtype}->{c.b.dtype}", **_measured(c.change)})
            continue
        if lo_dtype not in _FLOAT_BITS and ctx.scales(c.name, lo) is None:
            suffix = ctx.metadata(lo).get("scale_suffix", dequantized.DEFAULT_SCALE_SUFFIX)
            skipped.append(f"{c.name}: {lo_dtype} without a usable '{suffix}' scale tensor")
            continue
        err = _error(ctx, c.name, hi, lo)
        rows.append({"name": c.name, "transition": f"{c.a.dtype}->{c.b.dtype}", **err})
    e2 = sum(r["err2"] for r in rows)
    r2 = sum(r["ref2"] for r in rows)
    rows.sort(key=lambda r: r["rel_l2_error"] or 0.0, reverse=True)
    for r in rows:
        del r["err2"], r["ref2"]
    return Analysis(
        "QuantizationAnalysis",
        summary={
            "precision_loss": "unmeasured" if not rows else grade(_snr(r2, e2), [
                (SNR_SEVERE_BELOW, "severe"), (SNR_MINIMAL_FROM, "moderate")], "minimal"),
            "transitions": dict(transitions),
            "compression_ratio": safe_div(bytes_a, bytes_b),
            "bytes_a": bytes_a, "bytes_b": bytes_b,
            "rel_l2_error": math.sqrt(e2 / r2) if r2 else None,
            "max_abs_error": max((r["max_abs_error"] or 0.0 for r in rows), default=None),
            "snr_db": _snr(r2, e2),
            "worst_layers": [r["name"] for r in rows[: ctx.config.top_k]],
            "measured_tensors": len(rows),
        },
        details={"tensors": rows, "not_measured": skipped},
        tables=[Table("Precision loss per tensor (against the higher-precision side, worst first)",
                      ["tensor", "transition", "rel L2 error", "max abs error", "SNR dB"],
                      [[r["name"], r["transition"], r["rel_l2_error"], r["max_abs_error"], r["snr_db"]]
                       for r in rows])],
    )

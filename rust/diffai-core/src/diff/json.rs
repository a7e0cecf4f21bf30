//! The diff records of a `ModelDiff` as JSON text, one line each, straight from the rows: the
//! same text the Python records write (`{"Kind": [name, values...]}`, statistics in the schema's
//! key order), without a Python object per tensor.

use super::{Row, Status};
use crate::json::{push_count, push_number, push_str};
use crate::stats::{PairStats, TensorStats};
use crate::Tensor;
use std::fmt::Write;

/// A tensor's statistics (None: known from its header only).
pub fn push_stats(out: &mut String, t: &Tensor, s: Option<&TensorStats>, ensure_ascii: bool) {
    let f = |g: fn(&TensorStats) -> Option<f64>| s.and_then(g);
    for (key, x) in [
        ("{\"mean\": ", f(TensorStats::mean)),
        (", \"std\": ", f(TensorStats::std)),
        (", \"min\": ", f(TensorStats::min)),
        (", \"max\": ", f(TensorStats::max)),
    ] {
        out.push_str(key);
        push_number(out, x);
    }
    out.push_str(", \"shape\": [");
    for (j, d) in t.shape.iter().enumerate() {
        if j > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{d}");
    }
    out.push_str("], \"dtype\": ");
    push_str(out, t.shown_dtype(), ensure_ascii);
    let _ = write!(out, ", \"numel\": {}, \"nan_count\": ", t.numel());
    push_count(out, s.map(|s| s.nan_count));
    out.push_str(", \"inf_count\": ");
    push_count(out, s.map(|s| s.inf_count));
    out.push('}');
}

/// The change between the two sides, or `null` when values were not read; `dequantized`: a
/// side was read as its decoded values (a PyTorch quantized tensor), which the change says.
pub fn push_change(out: &mut String, p: Option<&PairStats>, dequantized: bool) {
    let Some(p) = p else {
        out.push_str("null");
        return;
    };
    out.push_str("{\"max_abs_diff\": ");
    push_number(out, (p.compared > 0).then_some(p.max_abs_diff));
    out.push_str(", \"mean_abs_diff\": ");
    push_number(out, p.mean_abs_diff());
    out.push_str(", \"rel_l2\": ");
    push_number(out, p.rel_l2());
    out.push_str(", \"cosine\": ");
    push_number(out, p.cosine());
    let _ = write!(
        out,
        ", \"changed_elements\": {}, \"compared\": {}",
        p.diff_count, p.compared
    );
    out.push_str(if dequantized {
        ", \"dequantized\": true}"
    } else {
        "}"
    });
}

/// The record line of `row` (names `prefix` + each side's own), or None when the row is no
/// record (unchanged, not compared) or was compared by the caller.
pub fn record_line(
    row: &Row,
    a: &[Tensor],
    b: &[Tensor],
    prefix: &str,
    ensure_ascii: bool,
) -> Option<String> {
    if !row.status.is_record() || row.elsewhere {
        return None;
    }
    let mut out = String::with_capacity(512);
    let kind = match row.status {
        Status::Changed => "TensorStatsChanged",
        Status::Reshaped => "TensorShapeChanged",
        Status::Renamed => "TensorRenamed",
        Status::Removed => "TensorRemoved",
        _ => "TensorAdded",
    };
    let _ = write!(out, "{{\"{kind}\": [");
    let name = |t: &Tensor| format!("{prefix}{}", t.name);
    let (ta, tb) = (row.a.map(|i| &a[i]), row.b.map(|j| &b[j]));
    push_str(&mut out, &name(ta.or(tb)?), ensure_ascii);
    out.push_str(", ");
    match row.status {
        Status::Renamed => {
            push_str(&mut out, &name(tb?), ensure_ascii);
            out.push_str(", ");
            push_stats(&mut out, ta?, row.stats_a.as_ref(), ensure_ascii);
        }
        Status::Removed => push_stats(&mut out, ta?, row.stats_a.as_ref(), ensure_ascii),
        Status::Added => push_stats(&mut out, tb?, row.stats_b.as_ref(), ensure_ascii),
        _ => {
            push_stats(&mut out, ta?, row.stats_a.as_ref(), ensure_ascii);
            out.push_str(", ");
            push_stats(&mut out, tb?, row.stats_b.as_ref(), ensure_ascii);
            if row.status == Status::Changed {
                out.push_str(", ");
                let decoded = ta.is_some_and(|t| t.encoded.is_some())
                    || tb.is_some_and(|t| t.encoded.is_some());
                push_change(&mut out, row.change.as_ref(), decoded);
            }
        }
    }
    out.push_str("]}");
    Some(out)
}

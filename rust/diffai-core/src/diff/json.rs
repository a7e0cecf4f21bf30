//! The diff records of a `ModelDiff` as JSON text, one line each, straight from the rows: the
//! same text the Python records write (`{"Kind": [name, values...]}`, statistics in the schema's
//! key order), without a Python object per tensor. The schema itself (what a row's record holds,
//! each object's members in order) is laid out here once, for this writer and `super::yaml`.

use super::{Row, Status};
use crate::json::{push_count, push_number, push_str};
use crate::stats::{PairStats, TensorStats};
use crate::Tensor;
use std::fmt::Write;

/// A record of the schema: its kind, its name (with the caller's prefix), then its items.
pub struct Record<'a> {
    pub kind: &'static str,
    pub name: String,
    pub items: Vec<Item<'a>>,
}

/// What follows a record's name.
pub enum Item<'a> {
    /// b's name of a renamed tensor (with the prefix).
    Name(String),
    /// A tensor's statistics object (statistics None: known from its header only).
    Stats(&'a Tensor, Option<&'a TensorStats>),
    /// The change object, or null when values were not read; `true`: a side was read as its
    /// decoded values (a PyTorch quantized tensor), which the change says.
    Change(Option<&'a PairStats>, bool),
}

/// A member's value in an object of the schema.
pub enum Value<'a> {
    Float(Option<f64>),
    Count(Option<u64>),
    Shape(&'a [usize]),
    Str(&'a str),
    True,
}

/// The record of `row` (names `prefix` + each side's own), or None when the row is no record
/// (unchanged, not compared) or was compared by the caller.
pub fn record<'a>(
    row: &'a Row,
    a: &'a [Tensor],
    b: &'a [Tensor],
    prefix: &str,
) -> Option<Record<'a>> {
    if !row.status.is_record() || row.elsewhere {
        return None;
    }
    let name = |t: &Tensor| format!("{prefix}{}", t.name);
    let (ta, tb) = (row.a.map(|i| &a[i]), row.b.map(|j| &b[j]));
    let (sa, sb) = (row.stats_a.as_ref(), row.stats_b.as_ref());
    let (kind, items) = match row.status {
        Status::Changed => {
            let decoded =
                ta.is_some_and(|t| t.encoded.is_some()) || tb.is_some_and(|t| t.encoded.is_some());
            let change = Item::Change(row.change.as_ref(), decoded);
            (
                "TensorStatsChanged",
                vec![Item::Stats(ta?, sa), Item::Stats(tb?, sb), change],
            )
        }
        Status::Reshaped => (
            "TensorShapeChanged",
            vec![Item::Stats(ta?, sa), Item::Stats(tb?, sb)],
        ),
        Status::Renamed => (
            "TensorRenamed",
            vec![Item::Name(name(tb?)), Item::Stats(ta?, sa)],
        ),
        Status::Removed => ("TensorRemoved", vec![Item::Stats(ta?, sa)]),
        _ => ("TensorAdded", vec![Item::Stats(tb?, sb)]),
    };
    Some(Record {
        kind,
        name: name(ta.or(tb)?),
        items,
    })
}

/// A tensor's statistics object, in the schema's order.
pub fn stats_members<'a>(t: &'a Tensor, s: Option<&TensorStats>) -> [(&'static str, Value<'a>); 9] {
    let f = |g: fn(&TensorStats) -> Option<f64>| Value::Float(s.and_then(g));
    [
        ("mean", f(TensorStats::mean)),
        ("std", f(TensorStats::std)),
        ("min", f(TensorStats::min)),
        ("max", f(TensorStats::max)),
        ("shape", Value::Shape(&t.shape)),
        ("dtype", Value::Str(t.shown_dtype())),
        ("numel", Value::Count(Some(t.numel() as u64))),
        ("nan_count", Value::Count(s.map(|s| s.nan_count))),
        ("inf_count", Value::Count(s.map(|s| s.inf_count))),
    ]
}

/// The change object's members, in the schema's order (`dequantized` only when true).
pub fn change_members(
    p: &PairStats,
    dequantized: bool,
) -> impl Iterator<Item = (&'static str, Value<'static>)> {
    [
        (
            "max_abs_diff",
            Value::Float((p.compared > 0).then_some(p.max_abs_diff)),
        ),
        ("mean_abs_diff", Value::Float(p.mean_abs_diff())),
        ("rel_l2", Value::Float(p.rel_l2())),
        ("cosine", Value::Float(p.cosine())),
        ("changed_elements", Value::Count(Some(p.diff_count))),
        ("compared", Value::Count(Some(p.compared))),
        ("dequantized", Value::True),
    ]
    .into_iter()
    .take(if dequantized { 7 } else { 6 })
}

/// A shape as a list of its dimensions (the same text in JSON and in YAML's flow style).
pub fn push_shape(out: &mut String, shape: &[usize]) {
    out.push('[');
    for (j, d) in shape.iter().enumerate() {
        if j > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{d}");
    }
    out.push(']');
}

/// The record line of `row`, or None as for `record`.
pub fn record_line(
    row: &Row,
    a: &[Tensor],
    b: &[Tensor],
    prefix: &str,
    ensure_ascii: bool,
) -> Option<String> {
    let r = record(row, a, b, prefix)?;
    let mut out = String::with_capacity(512);
    let _ = write!(out, "{{\"{}\": [", r.kind);
    push_str(&mut out, &r.name, ensure_ascii);
    for item in &r.items {
        out.push_str(", ");
        match item {
            Item::Name(n) => push_str(&mut out, n, ensure_ascii),
            Item::Stats(t, s) => push_object(&mut out, stats_members(t, *s), ensure_ascii),
            Item::Change(Some(p), dequantized) => {
                push_object(&mut out, change_members(p, *dequantized), ensure_ascii)
            }
            Item::Change(None, _) => out.push_str("null"),
        }
    }
    out.push_str("]}");
    Some(out)
}

fn push_object<'a>(
    out: &mut String,
    members: impl IntoIterator<Item = (&'static str, Value<'a>)>,
    ensure_ascii: bool,
) {
    out.push('{');
    for (j, (key, value)) in members.into_iter().enumerate() {
        out.push_str(if j > 0 { ", \"" } else { "\"" });
        out.push_str(key);
        out.push_str("\": ");
        match value {
            Value::Float(x) => push_number(out, x),
            Value::Count(n) => push_count(out, n),
            Value::Shape(s) => push_shape(out, s),
            Value::Str(s) => push_str(out, s, ensure_ascii),
            Value::True => out.push_str("true"),
        }
    }
    out.push('}');
}

//! The diff records of a `ModelDiff` as block YAML list items, from the schema `super::json`
//! lays out: the text `diffai.output.to_yaml` writes for their JSON lines (kept byte for byte,
//! a test in tests/test_yaml_core.py compares them), without a Python object per tensor:
//!
//! ```yaml
//! - TensorStatsChanged:
//!   - fc1.weight
//!   - mean: 0.1
//!     std: 1.0e-05
//!     ...
//! ```
//!
//! Names and dtypes are plain where they read back as themselves, else their JSON string
//! (YAML's double-quoted style takes JSON's escapes). A record holding a character YAML does
//! not take raw inside quotes is left to the caller (PyYAML escapes it).

use super::json::{change_members, push_shape, record, stats_members, Item, Value};
use super::Row;
use crate::json::{push_count, push_float, push_str};
use crate::Tensor;

/// The YAML list item of `row` (its lines, each ending "\n"), or None when the row is no record
/// (as `json::record`) or holds a string that needs PyYAML's escapes (see `needs_pyyaml`).
pub fn record_item(row: &Row, a: &[Tensor], b: &[Tensor], prefix: &str) -> Option<String> {
    let r = record(row, a, b, prefix)?;
    let strings_fit = !needs_pyyaml(&r.name)
        && r.items.iter().all(|item| match item {
            Item::Name(n) => !needs_pyyaml(n),
            // A dtype with a quote or a backslash is a case the Python rewrite treats apart.
            Item::Stats(t, _) => {
                let d = t.shown_dtype();
                !needs_pyyaml(d) && !d.contains(['"', '\\'])
            }
            Item::Change(..) => true,
        });
    if !strings_fit {
        return None;
    }
    let mut out = String::with_capacity(512);
    out.push_str("- ");
    out.push_str(r.kind);
    out.push_str(":\n  - ");
    push_plain_or_quoted(&mut out, &r.name);
    for item in &r.items {
        out.push_str("\n  - ");
        match item {
            // b's name stays quoted, as the Python rewrite leaves every value but the first.
            Item::Name(n) => push_str(&mut out, n, false),
            Item::Stats(t, s) => push_members(&mut out, stats_members(t, *s)),
            Item::Change(Some(p), dequantized) => {
                push_members(&mut out, change_members(p, *dequantized))
            }
            Item::Change(None, _) => out.push_str("null"),
        }
    }
    out.push('\n');
    Some(out)
}

/// An object's members as `key: value` lines under a list item's "- ".
fn push_members<'a>(
    out: &mut String,
    members: impl IntoIterator<Item = (&'static str, Value<'a>)>,
) {
    for (j, (key, value)) in members.into_iter().enumerate() {
        if j > 0 {
            out.push_str("\n    ");
        }
        out.push_str(key);
        out.push_str(": ");
        match value {
            Value::Float(x) => push_number(out, x),
            Value::Count(n) => push_count(out, n),
            Value::Shape(s) => push_shape(out, s),
            Value::Str(s) => push_plain_or_quoted(out, s),
            Value::True => out.push_str("true"),
        }
    }
}

/// An optional float as the JSON writer's value reads in YAML: `null`, the strings nan and inf
/// plain (YAML 1.1 reads `.nan`, not `nan`, as a float), "-inf" quoted, and a float's repr with
/// a decimal point before its exponent (YAML 1.1 reads 1e-05 as a string, 1.0e-05 as a float).
fn push_number(out: &mut String, x: Option<f64>) {
    match x {
        None => out.push_str("null"),
        Some(x) if x.is_nan() => out.push_str("nan"),
        Some(x) if x.is_infinite() => out.push_str(if x > 0.0 { "inf" } else { "\"-inf\"" }),
        Some(x) => {
            let start = out.len();
            push_float(out, x);
            let text = &out.as_bytes()[start..];
            if let Some(e) = text.iter().position(|&c| c == b'e') {
                if !text[..e].contains(&b'.') {
                    out.insert_str(start + e, ".0");
                }
            }
        }
    }
}

/// A string written plain when YAML reads it back as the same string (a letter or '_', then
/// letters, digits and `_./-`, and no YAML 1.1 boolean or null word), else as its JSON text.
/// The Python rewrite's `_PLAIN_NAME` and `_YAML_WORDS` say the same.
fn push_plain_or_quoted(out: &mut String, s: &str) {
    let b = s.as_bytes();
    let plain = b
        .first()
        .is_some_and(|&c| c.is_ascii_alphabetic() || c == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'-'))
        && !(b.len() <= 5 && is_yaml_word(s));
    if plain {
        out.push_str(s);
    } else {
        push_str(out, s, false);
    }
}

fn is_yaml_word(s: &str) -> bool {
    ["y", "n", "yes", "no", "true", "false", "on", "off", "null"]
        .iter()
        .any(|w| s.eq_ignore_ascii_case(w))
}

/// Whether `s` holds a character YAML does not take raw in a double-quoted scalar (or reads as
/// a line break) and JSON leaves raw: DEL, C1 controls, U+2028/U+2029, U+FFFE/U+FFFF (the
/// Python rewrite's `_needs_pyyaml`; JSON escapes the C0 controls, Rust strings hold no
/// surrogates).
fn needs_pyyaml(s: &str) -> bool {
    s.bytes().any(|c| c >= 0x7f)
        && s.chars().any(|c| {
            matches!(
                c,
                '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}'
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_by_yaml_1_1_as_the_json_writer_writes_them() {
        // PyYAML's safe_load of each gives the float (or the string) json.loads gives.
        for (x, want) in [
            (Some(1e-5), "1.0e-05"),
            (Some(-5e-324), "-5.0e-324"),
            (Some(1e16), "1.0e+16"),
            (Some(1.5e16), "1.5e+16"),
            (Some(0.0001), "0.0001"),
            (Some(-0.0), "-0.0"),
            (Some(f64::NAN), "nan"),
            (Some(f64::INFINITY), "inf"),
            (Some(f64::NEG_INFINITY), "\"-inf\""),
            (None, "null"),
        ] {
            let mut s = String::new();
            push_number(&mut s, x);
            assert_eq!(s, want);
        }
    }

    #[test]
    fn strings_plain_only_when_they_read_back_as_themselves() {
        for (s, want) in [
            ("fc1.weight", "fc1.weight"),
            ("a/b-c_0", "a/b-c_0"),
            ("nan", "nan"),
            ("Yes", "\"Yes\""),
            ("NULL", "\"NULL\""),
            ("1e3", "\"1e3\""),
            ("", "\"\""),
            ("a b", "\"a b\""),
            ("q\"\\", "\"q\\\"\\\\\""),
            ("caf\u{e9}", "\"caf\u{e9}\""),
            ("model.safetensors::w", "\"model.safetensors::w\""),
        ] {
            let mut out = String::new();
            push_plain_or_quoted(&mut out, s);
            assert_eq!(out, want);
        }
        assert!(needs_pyyaml("a\u{85}") && needs_pyyaml("\u{2028}") && needs_pyyaml("\u{7f}"));
        assert!(!needs_pyyaml("caf\u{e9}\u{1F600}\u{feff}") && !needs_pyyaml("\t\"\\"));
    }
}

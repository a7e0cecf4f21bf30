//! GGUF metadata key-values, rendered as text so they are diffed like safetensors metadata:
//! numbers in their shortest exact spelling, strings as they are, arrays as `[a, b, ...]`.
//! A long array (a tokenizer's vocabulary) is summarised by its length, element type, first
//! elements and a 64-bit FNV-1a hash of its bytes, so any change to it still shows.

use super::cursor::{Cursor, Read};

/// Arrays up to this many elements are written out in full.
const FULL_ARRAY: u64 = 64;
/// Elements shown before the summary of a longer array.
const ARRAY_HEAD: u64 = 8;
/// Arrays of arrays deeper than this are refused (a hostile file could recurse without end).
const MAX_DEPTH: u32 = 4;

pub(super) struct Value {
    pub text: String,
    /// The value as an unsigned integer, when it is one (for `general.alignment`).
    pub uint: Option<u64>,
}

pub(super) fn read_kv(c: &mut Cursor) -> Read<(String, Value)> {
    let key = c.string()?;
    let ty = c.u32().map_err(|e| format!("metadata {key}: {e}"))?;
    let value = read_value(c, ty, 0).map_err(|e| format!("metadata {key}: {e}"))?;
    Ok((key, value))
}

/// `general.alignment`: a non-zero power of two.
pub(super) fn alignment(v: &Value) -> Read<u64> {
    v.uint
        .filter(|a| a.is_power_of_two())
        .ok_or_else(|| format!("general.alignment {} is not a power of two", v.text))
}

fn type_name(ty: u32) -> &'static str {
    match ty {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => "?",
    }
}

/// Smallest encoded size of a value of type `ty`, to bound array lengths by the file size.
fn min_size(ty: u32) -> u64 {
    match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        _ => 12, // an array: element type and length
    }
}

fn read_value(c: &mut Cursor, ty: u32, depth: u32) -> Read<Value> {
    let uint = |v: u64| Value {
        text: v.to_string(),
        uint: Some(v),
    };
    let text = |text: String| Value { text, uint: None };
    Ok(match ty {
        0 => uint(c.u8()? as u64),
        1 => text((c.u8()? as i8).to_string()),
        2 => uint(c.u16()? as u64),
        3 => text((c.u16()? as i16).to_string()),
        4 => uint(c.u32()? as u64),
        5 => text((c.u32()? as i32).to_string()),
        6 => text(f32::from_bits(c.u32()?).to_string()),
        7 => match c.u8()? {
            0 => text("false".into()),
            1 => text("true".into()),
            b => return Err(format!("bool value {b} is neither 0 nor 1")),
        },
        8 => text(c.string()?),
        9 => text(read_array(c, depth)?),
        10 => uint(c.u64()?),
        11 => text((c.u64()? as i64).to_string()),
        12 => text(f64::from_bits(c.u64()?).to_string()),
        other => return Err(format!("unknown value type {other}")),
    })
}

fn read_array(c: &mut Cursor, depth: u32) -> Read<String> {
    if depth >= MAX_DEPTH {
        return Err(format!("arrays nested deeper than {MAX_DEPTH}"));
    }
    let ty = c.u32()?;
    let len = c.u64()?;
    if !(0..=12).contains(&ty) {
        return Err(format!("array of unknown value type {ty}"));
    }
    c.check_count(len, min_size(ty), "array elements")?;
    let start = c.position();
    let mut shown = Vec::new();
    for i in 0..len {
        let v = read_value(c, ty, depth + 1)?;
        if len <= FULL_ARRAY || i < ARRAY_HEAD {
            shown.push(if ty == 8 {
                serde_json::Value::String(v.text).to_string()
            } else {
                v.text
            });
        }
    }
    if len <= FULL_ARRAY {
        return Ok(format!("[{}]", shown.join(", ")));
    }
    let raw = &c.bytes_between(start);
    Ok(format!(
        "[{len} {}s, fnv1a64 {:016x}: {}, ...]",
        type_name(ty),
        fnv1a64(raw),
        shown.join(", ")
    ))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

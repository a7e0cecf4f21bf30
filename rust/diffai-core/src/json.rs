//! JSON text exactly as Python's `json.dumps` writes it (", " and ": " separators, its string
//! escapes, floats as `repr`), with non-finite floats as the strings "nan", "inf" and "-inf"
//! (JSON has no such numbers): the records the core writes read the same as those Python wrote.

/// A JSON string with `json.dumps`' escapes (`ensure_ascii`: everything past ASCII as \uXXXX).
pub fn push_str(out: &mut String, s: &str, ensure_ascii: bool) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            '\u{7f}'.. if !ensure_ascii => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// A finite float as Python's `repr` writes it: the fewest digits that read back as `x` (of
/// those, the closest to `x`, ties to even), positional when 1e-4 <= |x| < 1e16 (with ".0" if
/// whole), else one digit, the rest after a point, and a signed exponent of at least two digits.
pub fn push_float(out: &mut String, x: f64) {
    // The same digits from zmij (shortest, closest), whose layout ("0.001", "1.5e16") differs.
    let mut buffer = zmij::Buffer::new();
    let text = buffer.format_finite(x.abs());
    let (mantissa, exp) = text.split_once(['e', 'E']).unwrap_or((text, "0"));
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = whole.bytes().chain(fraction.bytes());
    let leading = all.clone().take_while(|&b| b == b'0').count();
    let mut buf = [0u8; 40]; // at most 17 significant digits, plus zeros zmij may pad with
    let mut len = 0;
    for b in all.skip(leading).take(buf.len()) {
        buf[len] = b;
        len += 1;
    }
    let digits = match buf[..len].iter().rposition(|&b| b != b'0') {
        Some(last) => &buf[..=last],
        None => b"0".as_slice(), // zero
    };
    // The value is 0.d1d2... x 10^point.
    let point = if digits == b"0" {
        1
    } else {
        (whole.len() - leading) as i32 + exp.parse::<i32>().unwrap_or(0)
    };
    let digits = std::str::from_utf8(digits).unwrap_or("0");
    if x.is_sign_negative() {
        out.push('-');
    }
    let n = digits.len() as i32;
    if -4 < point && point <= 16 {
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-point) as usize));
            out.push_str(digits);
        } else if point >= n {
            out.push_str(digits);
            out.extend(std::iter::repeat_n('0', (point - n) as usize));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..point as usize]);
            out.push('.');
            out.push_str(&digits[point as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = point - 1;
        out.push_str(if e < 0 { "e-" } else { "e+" });
        if e.abs() < 10 {
            out.push('0');
        }
        out.push_str(&e.abs().to_string());
    }
}

/// An optional float: `null`, "nan"/"inf"/"-inf", or its repr.
pub fn push_number(out: &mut String, x: Option<f64>) {
    match x {
        None => out.push_str("null"),
        Some(x) if x.is_nan() => out.push_str("\"nan\""),
        Some(x) if x.is_infinite() => out.push_str(if x > 0.0 { "\"inf\"" } else { "\"-inf\"" }),
        Some(x) => push_float(out, x),
    }
}

/// An optional count: `null` or its digits.
pub fn push_count(out: &mut String, n: Option<u64>) {
    use std::fmt::Write;
    match n {
        None => out.push_str("null"),
        Some(n) => {
            let _ = write!(out, "{n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(x: f64) -> String {
        let mut s = String::new();
        push_number(&mut s, Some(x));
        s
    }

    #[test]
    fn floats_as_python_repr() {
        // Python: repr(x) for each.
        let cases = [
            (0.1, "0.1"),
            (1.0, "1.0"),
            (1e16, "1e+16"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (-2.5, "-2.5"),
            (-0.0, "-0.0"),
            (f64::NAN, "\"nan\""),
            (f64::NEG_INFINITY, "\"-inf\""),
            (5e-324, "5e-324"),
        ];
        for (x, want) in cases {
            assert_eq!(float(x), want);
        }
    }

    #[test]
    fn strings_as_json_dumps() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\\n\u{7f}\u{e9}\u{1F600}\u{1}", true);
        assert_eq!(s, r#""a\"b\\\n\u007f\u00e9\ud83d\ude00\u0001""#);
        s.clear();
        push_str(&mut s, "\u{e9}", false);
        assert_eq!(s, "\"\u{e9}\"");
    }
}

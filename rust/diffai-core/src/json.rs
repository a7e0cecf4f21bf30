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
    // The same digits from zmij (shortest, closest), whose layout ("0.001", "1.5e16") differs:
    // its text is read once, byte by byte (this runs for every figure of every record).
    let mut buffer = zmij::Buffer::new();
    let text = buffer.format_finite(x.abs()).as_bytes();
    let (mut digits, mut len) = ([0u8; 40], 0); // significant digits: at most 17, plus padding
    let (mut before_point, mut leading, mut in_fraction, mut exp) = (0i32, 0i32, false, 0i32);
    let mut rest = text.iter();
    for &c in rest.by_ref() {
        match c {
            b'.' => in_fraction = true,
            b'e' | b'E' => break,
            _ => {
                before_point += i32::from(!in_fraction);
                if len == 0 && c == b'0' {
                    leading += 1;
                } else if len < digits.len() {
                    digits[len] = c;
                    len += 1;
                }
            }
        }
    }
    let mut negative = false;
    for &c in rest {
        match c {
            b'-' => negative = true,
            b'0'..=b'9' => exp = exp * 10 + i32::from(c - b'0'),
            _ => {}
        }
    }
    if negative {
        exp = -exp;
    }
    while len > 0 && digits[len - 1] == b'0' {
        len -= 1;
    }
    let zero = len == 0;
    if zero {
        digits[0] = b'0';
        len = 1;
    }
    // The value is 0.d1d2... x 10^point.
    let point = if zero {
        1
    } else {
        before_point - leading + exp
    };
    let digits = std::str::from_utf8(&digits[..len]).unwrap_or("0");
    if x.is_sign_negative() {
        out.push('-');
    }
    let n = len as i32;
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
        let e = e.unsigned_abs();
        if e < 10 {
            out.push('0');
        }
        if e >= 100 {
            out.push(char::from(b'0' + (e / 100) as u8));
        }
        if e >= 10 {
            out.push(char::from(b'0' + (e / 10 % 10) as u8));
        }
        out.push(char::from(b'0' + (e % 10) as u8));
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
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (1e-100, "1e-100"),
            (1.5e16, "1.5e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.00012, "0.00012"),
            (0.000012, "1.2e-05"),
            (100.0, "100.0"),
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

//! Python's `float(str)`: what it accepts (surrounding whitespace, `inf`/`infinity`/`nan` in any case, exponents,
//! underscores between digits, any Unicode decimal digits) and what it refuses (`0x10`, `²`, `$5`).

/// The value of a Unicode decimal digit (general category Nd), as Python's `int()` / `float()` read it.
fn decimal_digit(c: char) -> Option<u32> {
    if c.is_ascii_digit() {
        return Some(c as u32 - '0' as u32);
    }
    // Nd digits come in runs of ten starting at a code point whose value is 0; these are the Nd zeros of Unicode 15.
    const ZEROS: &[u32] = &[
        0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66,
        0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
        0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
        0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650, 0x116C0,
        0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x11F50, 0x16A60, 0x16AC0, 0x16B50, 0x1D7CE,
        0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E4F0, 0x1E950, 0x1FBF0,
    ];
    let cp = c as u32;
    ZEROS.iter().find(|&&z| cp >= z && cp < z + 10).map(|&z| cp - z)
}

/// True for a Unicode decimal digit (Python's `\d` in a str pattern).
pub fn is_decimal(c: char) -> bool {
    decimal_digit(c).is_some()
}

/// `float(text)` as Python computes it, or `None` where Python raises `ValueError`.
pub fn py_float(text: &str) -> Option<f64> {
    let s = text.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c));
    let (sign, body) = match s.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, s.strip_prefix('+').unwrap_or(s)),
    };
    let lower = body.to_ascii_lowercase();
    if lower == "inf" || lower == "infinity" {
        return Some(sign * f64::INFINITY);
    }
    if lower == "nan" {
        return Some(f64::NAN);
    }
    // Digits (ASCII after mapping), one optional '.', an optional exponent; '_' only between digits.
    let mut ascii = String::with_capacity(body.len());
    let chars: Vec<char> = body.chars().collect();
    let mut seen_digit = false;
    let mut seen_dot = false;
    let mut seen_exp = false;
    let mut exp_digits = false;
    for (i, &c) in chars.iter().enumerate() {
        if let Some(d) = decimal_digit(c) {
            ascii.push(char::from_digit(d, 10).expect("digit"));
            if seen_exp {
                exp_digits = true;
            } else {
                seen_digit = true;
            }
        } else if c == '_' {
            let between = i > 0
                && i + 1 < chars.len()
                && decimal_digit(chars[i - 1]).is_some()
                && decimal_digit(chars[i + 1]).is_some();
            if !between {
                return None;
            }
        } else if c == '.' && !seen_dot && !seen_exp {
            seen_dot = true;
            ascii.push('.');
        } else if (c == 'e' || c == 'E') && seen_digit && !seen_exp {
            seen_exp = true;
            ascii.push('e');
            if let Some(&s) = chars.get(i + 1) {
                if s == '+' || s == '-' {
                    continue;
                }
            }
        } else if (c == '+' || c == '-') && i > 0 && (chars[i - 1] == 'e' || chars[i - 1] == 'E') {
            ascii.push(c);
        } else {
            return None;
        }
    }
    if !seen_digit || (seen_exp && !exp_digits) {
        return None;
    }
    ascii.parse::<f64>().ok().map(|v| sign * v)
}

#[cfg(test)]
mod tests {
    use super::py_float;

    #[test]
    fn follows_python() {
        assert_eq!(py_float(" 45 "), Some(45.0));
        assert_eq!(py_float("1e3"), Some(1000.0));
        assert_eq!(py_float("1e400"), Some(f64::INFINITY));
        assert_eq!(py_float("Infinity"), Some(f64::INFINITY));
        assert!(py_float("nan").unwrap().is_nan());
        assert_eq!(py_float("٣"), Some(3.0));
        assert_eq!(py_float("１２"), Some(12.0));
        assert_eq!(py_float("1_000"), Some(1000.0));
        assert_eq!(py_float("-.5"), Some(-0.5));
        assert_eq!(py_float("5."), Some(5.0));
        for bad in [
            "0x10", "²", "$5", "", ".", "1__0", "_1", "1e", "e5", "1.2.3", "--1",
        ] {
            assert_eq!(py_float(bad), None, "{bad}");
        }
    }
}

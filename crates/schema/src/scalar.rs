//! Exact parsing of numeric text. Numbers never pass through a binary float unless the target
//! column is a float, so decimals and 64-bit integers keep every digit the client sent.

/// A number as written: sign, digits and the power of ten they are scaled by.
struct DecimalText {
    negative: bool,
    /// Significant digits, leading zeros stripped.
    digits: Vec<u8>,
    /// Digits after the decimal point as written, adjusted by any exponent (may be negative).
    fraction_digits: i64,
}

fn parse_decimal_text(text: &str) -> Option<DecimalText> {
    let b = text.as_bytes();
    let mut i = 0;
    let negative = match b.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let mut digits = Vec::with_capacity(b.len());
    let mut seen_digit = false;
    let mut fraction_digits: i64 = 0;
    let mut in_fraction = false;
    while i < b.len() {
        match b[i] {
            c @ b'0'..=b'9' => {
                seen_digit = true;
                if !(digits.is_empty() && c == b'0') {
                    digits.push(c - b'0');
                }
                if in_fraction {
                    fraction_digits += 1;
                }
            }
            b'.' if !in_fraction => in_fraction = true,
            b'e' | b'E' => break,
            _ => return None,
        }
        i += 1;
    }
    if !seen_digit {
        return None;
    }
    if i < b.len() {
        // Exponent: e[+-]digits.
        let exp_text = &text[i + 1..];
        if exp_text.is_empty() || exp_text.len() > 6 {
            return None;
        }
        let exp: i64 = exp_text.parse().ok()?;
        fraction_digits -= exp;
    }
    Some(DecimalText {
        negative,
        digits,
        fraction_digits,
    })
}

/// Parses `text` as a `Decimal(precision, scale)` unscaled value. Refuses more fraction
/// digits than `scale` (as written) and more than `precision` digits in all.
pub fn parse_decimal(text: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let d = parse_decimal_text(text).ok_or_else(|| "not a decimal number".to_string())?;
    let scale = scale as i64;
    if d.fraction_digits > scale {
        return Err(format!(
            "has {} fraction digits, Decimal({precision},{scale}) allows {scale}",
            d.fraction_digits
        ));
    }
    // Unscaled value = digits * 10^(scale - fraction_digits).
    let pad = scale - d.fraction_digits;
    let total_digits = d.digits.len() as i64 + if d.digits.is_empty() { 0 } else { pad };
    if total_digits > precision as i64 {
        return Err(format!(
            "has more than {precision} digits in all (Decimal({precision},{scale}))"
        ));
    }
    let mut v: i128 = 0;
    for &digit in &d.digits {
        v = v * 10 + digit as i128;
    }
    if !d.digits.is_empty() {
        for _ in 0..pad {
            v *= 10;
        }
    }
    Ok(if d.negative { -v } else { v })
}

/// An integral number as i128 (so every Int/UInt range can be checked from it).
pub fn parse_integer(text: &str) -> Result<i128, String> {
    if let Ok(v) = text.parse::<i64>() {
        return Ok(v as i128);
    }
    let d = parse_decimal_text(text).ok_or_else(|| "not a number".to_string())?;
    let mut zeros_needed: i64 = -d.fraction_digits;
    let mut digits: &[u8] = &d.digits;
    // Digits below the units place must all be zero for the value to be integral.
    while zeros_needed < 0 {
        match digits.split_last() {
            Some((0, rest)) => {
                digits = rest;
                zeros_needed += 1;
            }
            Some(_) => return Err("must be an integer".into()),
            None => {
                zeros_needed = 0;
            }
        }
    }
    if digits.len() as i64 + zeros_needed > 39 {
        return Err("out of range".into());
    }
    let mut v: i128 = 0;
    for &digit in digits {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(digit as i128))
            .ok_or("out of range")?;
    }
    for _ in 0..zeros_needed {
        v = v.checked_mul(10).ok_or("out of range")?;
    }
    Ok(if d.negative { -v } else { v })
}

/// A finite float. Rust's parser also reads `NaN`, `inf` and `infinity`: all refused, as is
/// anything that overflows to infinity (`1e400`).
pub fn parse_float(text: &str) -> Result<f64, String> {
    let first = text.as_bytes().first().copied().unwrap_or(b'x');
    if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.') {
        return Err("not a number".into());
    }
    let v: f64 = text.parse().map_err(|_| "not a number".to_string())?;
    if !v.is_finite() {
        return Err("must be a finite number".into());
    }
    Ok(v)
}

/// Formats an unscaled decimal exactly, e.g. (12345, 2) → "123.45".
pub fn format_decimal(unscaled: i128, scale: i8) -> String {
    if scale <= 0 {
        let mut s = unscaled.to_string();
        for _ in 0..(-scale) {
            s.push('0');
        }
        return s;
    }
    let scale = scale as usize;
    let neg = unscaled < 0;
    let digits = unscaled.unsigned_abs().to_string();
    let padded = if digits.len() <= scale {
        format!("{}{}", "0".repeat(scale - digits.len() + 1), digits)
    } else {
        digits
    };
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{}{}.{}", if neg { "-" } else { "" }, int, frac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decimals_are_exact() {
        assert_eq!(parse_decimal("10.5", 10, 2), Ok(1050));
        assert_eq!(parse_decimal("-0.01", 10, 2), Ok(-1));
        assert_eq!(parse_decimal("12345678", 10, 2), Ok(1_234_567_800));
        assert_eq!(parse_decimal("1.5e2", 10, 2), Ok(15_000));
        assert_eq!(parse_decimal("0", 3, 3), Ok(0));
        assert_eq!(
            parse_decimal("12345678901234567890123456.789012345678", 38, 12),
            Ok(12_345_678_901_234_567_890_123_456_789_012_345_678_i128)
        );
        assert!(parse_decimal("10.555", 10, 2).is_err());
        assert!(parse_decimal("123456789", 10, 2).is_err());
        assert!(parse_decimal("abc", 10, 2).is_err());
        assert!(parse_decimal("1..2", 10, 2).is_err());
        assert!(parse_decimal("", 10, 2).is_err());
        assert!(parse_decimal("NaN", 10, 2).is_err());
    }

    #[test]
    fn integers() {
        assert_eq!(parse_integer("5"), Ok(5));
        assert_eq!(parse_integer("5.0"), Ok(5));
        assert_eq!(parse_integer("5e2"), Ok(500));
        assert_eq!(parse_integer("-9223372036854775808"), Ok(i64::MIN as i128));
        assert_eq!(parse_integer("18446744073709551615"), Ok(u64::MAX as i128));
        assert!(parse_integer("5.5").is_err());
        assert!(parse_integer("1e400").is_err());
        assert!(parse_integer("x").is_err());
    }

    #[test]
    fn floats() {
        assert_eq!(parse_float("10.5"), Ok(10.5));
        assert_eq!(parse_float("-1e3"), Ok(-1000.0));
        for bad in ["NaN", "inf", "-inf", "infinity", "1e400", "", "0x10", " 1"] {
            assert!(parse_float(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decimal_formatting() {
        assert_eq!(format_decimal(12345, 2), "123.45");
        assert_eq!(format_decimal(-5, 3), "-0.005");
        assert_eq!(format_decimal(7, 0), "7");
    }

    proptest! {
        #[test]
        fn decimal_round_trips(v in -99_999_999_999_999i128..99_999_999_999_999i128, scale in 0i8..6) {
            let text = format_decimal(v, scale);
            prop_assert_eq!(parse_decimal(&text, 38, scale), Ok(v));
        }

        #[test]
        fn integer_round_trips(v in any::<i64>()) {
            prop_assert_eq!(parse_integer(&v.to_string()), Ok(v as i128));
        }

        #[test]
        fn never_panics(s in "[-+0-9.eE]{0,30}") {
            let _ = parse_decimal(&s, 38, 10);
            let _ = parse_integer(&s);
            let _ = parse_float(&s);
        }
    }
}

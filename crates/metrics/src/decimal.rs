//! Exact subtraction of decimal texts (`"0.1000"`, `"-12"`), of any length: the difference of
//! two exact decimal values must stay exact, and Decimal256 values do not fit any machine
//! integer once subtracted.

struct Parsed {
    negative: bool,
    /// Integer and fraction digits, most significant first, as values 0-9.
    digits: Vec<u8>,
    scale: usize,
}

fn parse(text: &str) -> Option<Parsed> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty()
        || !all_digits(int)
        || !all_digits(frac)
        || (rest.contains('.') && frac.is_empty())
    {
        return None;
    }
    Some(Parsed {
        negative,
        digits: int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect(),
        scale: frac.len(),
    })
}

/// Magnitudes of equal length: `a - b`, assuming `a >= b`.
fn sub_mag(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; a.len()];
    let mut borrow = 0i8;
    for i in (0..a.len()).rev() {
        let mut d = a[i] as i8 - b[i] as i8 - borrow;
        borrow = i8::from(d < 0);
        if d < 0 {
            d += 10;
        }
        out[i] = d as u8;
    }
    out
}

/// Magnitudes of equal length: `a + b`, one digit longer.
fn add_mag(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; a.len() + 1];
    let mut carry = 0u8;
    for i in (0..a.len()).rev() {
        let d = a[i] + b[i] + carry;
        carry = d / 10;
        out[i + 1] = d % 10;
    }
    out[0] = carry;
    out
}

/// `a - b` exactly, at the larger of the two scales (`"0.1000" - "0.006"` is `"0.0940"`);
/// `None` unless both are plain decimal texts (`-?digits[.digits]`).
pub fn subtract(a: &str, b: &str) -> Option<String> {
    let (mut a, mut b) = (parse(a)?, parse(b)?);
    let scale = a.scale.max(b.scale);
    for p in [&mut a, &mut b] {
        p.digits.resize(p.digits.len() + scale - p.scale, 0);
    }
    let width = a.digits.len().max(b.digits.len());
    for p in [&mut a, &mut b] {
        let mut padded = vec![0u8; width - p.digits.len()];
        padded.append(&mut p.digits);
        p.digits = padded;
    }
    // a - b = a + (-b)
    let b_negative = !b.negative;
    let (negative, magnitude) = if a.negative == b_negative {
        (a.negative, add_mag(&a.digits, &b.digits))
    } else if a.digits >= b.digits {
        (a.negative, sub_mag(&a.digits, &b.digits))
    } else {
        (b_negative, sub_mag(&b.digits, &a.digits))
    };
    let split = magnitude.len() - scale;
    let int: String = {
        let s: String = magnitude[..split]
            .iter()
            .map(|d| char::from(b'0' + d))
            .collect();
        let trimmed = s.trim_start_matches('0');
        if trimmed.is_empty() {
            "0".into()
        } else {
            trimmed.into()
        }
    };
    let frac: String = magnitude[split..]
        .iter()
        .map(|d| char::from(b'0' + d))
        .collect();
    let zero = magnitude.iter().all(|&d| d == 0);
    let sign = if negative && !zero { "-" } else { "" };
    Some(if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(subtract("0.1000", "0.0060").as_deref(), Some("0.0940"));
        assert_eq!(subtract("0.0060", "0.1000").as_deref(), Some("-0.0940"));
        assert_eq!(subtract("0", "0.006").as_deref(), Some("-0.006"));
        assert_eq!(subtract("1.5", "1.50").as_deref(), Some("0.00"));
        assert_eq!(subtract("-2", "-3").as_deref(), Some("1"));
        assert_eq!(subtract("-2.5", "3").as_deref(), Some("-5.5"));
        assert_eq!(subtract("999", "-1").as_deref(), Some("1000"));
        let big = "9".repeat(76);
        assert_eq!(
            subtract(&big, &format!("-{big}")),
            Some(format!("1{}8", "9".repeat(75)))
        );
        for bad in ["", "-", "1.", ".5", "1e3", "1,5", "--1", "+1", "NaN"] {
            assert_eq!(subtract(bad, "1"), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn agrees_with_integer_arithmetic(a in any::<i64>(), b in any::<i64>(), sa in 0u32..6, sb in 0u32..6) {
            let text = |v: i64, s: u32| {
                let m = v.unsigned_abs();
                let p = 10u64.pow(s);
                let sign = if v < 0 { "-" } else { "" };
                if s == 0 { format!("{sign}{m}") } else { format!("{sign}{}.{:0w$}", m / p, m % p, w = s as usize) }
            };
            let scale = sa.max(sb);
            let exact = i128::from(a) * 10i128.pow(scale - sa) - i128::from(b) * 10i128.pow(scale - sb);
            let m = exact.unsigned_abs();
            let p = 10u128.pow(scale);
            let sign = if exact < 0 { "-" } else { "" };
            let want = if scale == 0 { format!("{sign}{m}") } else { format!("{sign}{}.{:0w$}", m / p, m % p, w = scale as usize) };
            prop_assert_eq!(subtract(&text(a, sa), &text(b, sb)), Some(want));
        }
    }
}

//! `ExactSum`: the exact sum of binary64 values and of binary64 × integer products, kept as a
//! wide fixed-point integer so that addition is exact, hence associative and commutative:
//! the total depends only on the multiset of values added, never on their order, their
//! partitioning or how partial sums are merged. Only the final conversion rounds, once,
//! to the nearest binary64 (ties to even), which is the correctly rounded exact result.
//!
//! Float addition is not associative, so DataFusion's `sum` gives different last bits for
//! the same rows under different thread counts, file layouts or merge orders; Kahan-style
//! compensation narrows that but stays order dependent. An invoice recomputed `as_of` must
//! reproduce its number exactly, which only exact accumulation guarantees.
//!
//! Representation: 32-bit digits held in `i64` limbs ("carry-save"), so an addition touches
//! a few limbs with no carry propagation; carries are settled every `SETTLE_EVERY` additions.
//! Limb `k` of the full frame weighs 2^(32k − 1074): bit 0 is the smallest subnormal and the
//! frame reaches past the largest product of a finite binary64 and an `i64`, with headroom
//! for 2^64 additions. Most groups see values of a narrow range of magnitudes, so a sum
//! starts in a window of `NARROW` limbs anchored where its first value lands and widens to
//! the full frame only when a value falls outside the window.

/// Limbs of the full frame: bit positions 0 ..= 2239 cover 2^-1074 ..= 2^1165, above the
/// largest product (< 2^1087) times 2^64 additions.
const WIDE: usize = 70;
/// Limbs of the window most sums live in: 256 bits, e.g. 2^-30 … 2^200 around a first value
/// of 1.
const NARROW: usize = 8;
/// Additions between carry settlements: each adds less than 2^33 to a limb, so limbs stay
/// below 2^33 × 2^27 = 2^60 in magnitude.
const SETTLE_EVERY: u32 = 1 << 27;
/// Exponent of bit 0 of limb 0 of the full frame.
const FRAME_EXP: i64 = -1074;
const DIGIT: i64 = 1 << 32;
const DIGIT_MASK: u64 = 0xffff_ffff;
const STATE_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq)]
enum Limbs {
    /// `limbs[k]` weighs 2^(32 (lo + k) − 1074).
    Narrow {
        lo: usize,
        limbs: [i64; NARROW],
    },
    Wide(Box<[i64; WIDE]>),
}

/// An exact sum; see the module comment.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactSum {
    limbs: Limbs,
    unsettled: u32,
    nan: u64,
    pos_inf: u64,
    neg_inf: u64,
}

impl Default for ExactSum {
    fn default() -> Self {
        ExactSum {
            limbs: Limbs::Narrow {
                lo: 0,
                limbs: [0; NARROW],
            },
            unsettled: 0,
            nan: 0,
            pos_inf: 0,
            neg_inf: 0,
        }
    }
}

/// Why a serialized sum could not be read back (partial aggregates travel between operators
/// in this form).
#[derive(Debug, thiserror::Error)]
#[error("exact sum state is malformed: {0}")]
pub struct StateError(&'static str);

impl ExactSum {
    pub fn new() -> ExactSum {
        ExactSum::default()
    }

    #[inline]
    pub fn add(&mut self, value: f64) {
        self.add_signed(value, 1, 1);
    }

    /// Takes `value` back out (a sliding window frame moving on).
    #[inline]
    pub fn subtract(&mut self, value: f64) {
        self.add_signed(value, 1, -1);
    }

    /// Adds the exact product `value × weight`.
    #[inline]
    pub fn add_product(&mut self, value: f64, weight: i64) {
        self.add_signed(value, weight, 1);
    }

    #[inline]
    pub fn subtract_product(&mut self, value: f64, weight: i64) {
        self.add_signed(value, weight, -1);
    }

    #[inline]
    fn add_signed(&mut self, value: f64, weight: i64, sign: i8) {
        let bits = value.to_bits();
        let biased = ((bits >> 52) & 0x7ff) as usize;
        let negative = (bits >> 63 == 1) ^ (weight < 0) ^ (sign < 0);
        if biased == 0x7ff {
            let count = if bits & ((1 << 52) - 1) != 0 || weight == 0 {
                &mut self.nan // NaN, or ∞ × 0
            } else if negative {
                &mut self.neg_inf
            } else {
                &mut self.pos_inf
            };
            if sign < 0 {
                *count = count.saturating_sub(1);
            } else {
                *count += 1;
            }
            return;
        }
        let fraction = bits & ((1 << 52) - 1);
        let (mantissa, position) = if biased == 0 {
            (fraction, 0)
        } else {
            (fraction | (1 << 52), biased - 1)
        };
        if mantissa == 0 || weight == 0 {
            return;
        }
        let product = mantissa as u128 * weight.unsigned_abs() as u128;
        let (limb, shift) = (position / 32, position % 32);
        let mut chunks = [0i64; 5];
        let mut top = 0;
        for k in 0..4 {
            let piece = ((product >> (32 * k)) as u64 & DIGIT_MASK) << shift;
            if piece != 0 {
                chunks[k] += (piece & DIGIT_MASK) as i64;
                chunks[k + 1] += (piece >> 32) as i64;
                top = k + 1;
            }
        }
        if negative {
            for c in &mut chunks {
                *c = -*c;
            }
        }
        self.add_chunks(limb, &chunks[..=top]);
    }

    /// Adds signed chunks to the limbs from absolute limb `first` on.
    fn add_chunks(&mut self, first: usize, chunks: &[i64]) {
        if !self.fits(first, chunks.len()) {
            self.make_room(first, chunks.len());
        }
        let (base, limbs): (usize, &mut [i64]) = match &mut self.limbs {
            Limbs::Narrow { lo, limbs } => (*lo, limbs),
            Limbs::Wide(limbs) => (0, limbs.as_mut_slice()),
        };
        for (k, c) in chunks.iter().enumerate() {
            limbs[first + k - base] += c;
        }
        self.unsettled += 1;
        if self.unsettled >= SETTLE_EVERY {
            self.settle();
        }
    }

    /// Whether `len` limbs from `first` fall inside the window, below its top limb (which
    /// only takes carries).
    fn fits(&self, first: usize, len: usize) -> bool {
        match &self.limbs {
            Limbs::Narrow { lo, .. } => first >= *lo && first + len < lo + NARROW,
            Limbs::Wide(_) => true,
        }
    }

    /// Re-anchors an empty window at the new value, or widens to the full frame.
    fn make_room(&mut self, first: usize, len: usize) {
        if let Limbs::Narrow { lo, limbs } = &mut self.limbs
            && limbs.iter().all(|&l| l == 0)
        {
            // Leave two limbs below for smaller values and the rest above for larger.
            let anchor = first.saturating_sub(2).min(WIDE - NARROW);
            if first >= anchor && first + len < anchor + NARROW {
                *lo = anchor;
                return;
            }
        }
        self.widen();
    }

    fn widen(&mut self) {
        if let Limbs::Narrow { lo, limbs } = &self.limbs {
            let mut wide = Box::new([0i64; WIDE]);
            wide[*lo..*lo + NARROW].copy_from_slice(limbs);
            self.limbs = Limbs::Wide(wide);
        }
    }

    /// Propagates carries so every limb but the top holds a digit in [0, 2^32).
    fn settle(&mut self) {
        self.unsettled = 0;
        let overflowing = match &mut self.limbs {
            Limbs::Narrow { limbs, .. } => {
                settle(limbs);
                // The window's top limb keeps the signed carry; once it grows past a digit
                // the value no longer fits the window's meaning of "top = carries only".
                limbs[NARROW - 1].abs() >= DIGIT
            }
            Limbs::Wide(limbs) => {
                settle(limbs.as_mut_slice());
                false
            }
        };
        if overflowing {
            self.widen();
        }
    }

    /// Adds another exact sum to this one.
    pub fn merge(&mut self, other: &ExactSum) {
        self.nan += other.nan;
        self.pos_inf += other.pos_inf;
        self.neg_inf += other.neg_inf;
        let mut other = other.clone();
        other.settle();
        self.settle();
        let (base, limbs): (usize, &[i64]) = match &other.limbs {
            Limbs::Narrow { lo, limbs } => (*lo, limbs),
            Limbs::Wide(limbs) => (0, limbs.as_slice()),
        };
        let last = limbs.iter().rposition(|&l| l != 0);
        let first = limbs.iter().position(|&l| l != 0);
        if let (Some(first), Some(last)) = (first, last) {
            // A settled digit is < 2^32 and the top carry < 2^32 in a window, < 2^18 in the
            // full frame: the same bound as an addition's chunks.
            self.add_chunks(base + first, &limbs[first..=last]);
        }
    }

    /// The full frame, settled, as sign and magnitude digits (digit k weighs
    /// 2^(32k − 1074)); `None` when the sum is not finite.
    fn magnitude(&self) -> (bool, Vec<u64>) {
        let mut frame = vec![0i64; WIDE + 1];
        match &self.limbs {
            Limbs::Narrow { lo, limbs } => frame[*lo..*lo + NARROW].copy_from_slice(limbs),
            Limbs::Wide(limbs) => frame[..WIDE].copy_from_slice(limbs.as_slice()),
        }
        settle(&mut frame);
        let negative = frame[WIDE] < 0;
        if negative {
            for l in &mut frame {
                *l = -*l;
            }
            settle(&mut frame);
        }
        (negative, frame.iter().map(|&l| l as u64).collect())
    }

    fn special(&self) -> Option<f64> {
        if self.nan > 0 || (self.pos_inf > 0 && self.neg_inf > 0) {
            Some(f64::NAN)
        } else if self.pos_inf > 0 {
            Some(f64::INFINITY)
        } else if self.neg_inf > 0 {
            Some(f64::NEG_INFINITY)
        } else {
            None
        }
    }

    /// The exact sum rounded once to the nearest binary64, ties to even (±∞ past the range,
    /// NaN when NaN or both infinities were added).
    pub fn to_f64(&self) -> f64 {
        if let Some(s) = self.special() {
            return s;
        }
        let (negative, digits) = self.magnitude();
        round(negative, &digits, FRAME_EXP, false)
    }

    /// The exact sum divided by `divisor`, rounded once (for `avg` and per-hour weights).
    pub fn divided_by(&self, divisor: u64) -> f64 {
        if let Some(s) = self.special() {
            return s;
        }
        if divisor == 0 {
            return f64::NAN;
        }
        let (negative, digits) = self.magnitude();
        // One guard digit below the frame: the quotient's rounding bit never lies below
        // 2^-1075, so the digits plus a non-zero remainder as sticky bit round exactly.
        let mut quotient = vec![0u64; digits.len() + 1];
        let mut remainder: u128 = 0;
        for k in (0..quotient.len()).rev() {
            let digit = if k == 0 { 0 } else { digits[k - 1] };
            let current = (remainder << 32) | digit as u128;
            quotient[k] = (current / divisor as u128) as u64;
            remainder = current % divisor as u128;
        }
        round(negative, &quotient, FRAME_EXP - 32, remainder != 0)
    }

    /// Serialized form for partial aggregates: version, special counts, then the settled
    /// limbs with the absolute index of the first.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut settled = self.clone();
        settled.settle();
        let (base, limbs): (usize, &[i64]) = match &settled.limbs {
            Limbs::Narrow { lo, limbs } => (*lo, limbs),
            Limbs::Wide(limbs) => (0, limbs.as_slice()),
        };
        let first = limbs.iter().position(|&l| l != 0).unwrap_or(limbs.len());
        let last = limbs.iter().rposition(|&l| l != 0).map_or(first, |l| l + 1);
        let mut out = Vec::with_capacity(27 + 8 * (last - first));
        out.push(STATE_VERSION);
        for count in [self.nan, self.pos_inf, self.neg_inf] {
            out.extend_from_slice(&count.to_le_bytes());
        }
        out.extend_from_slice(&((base + first) as u16).to_le_bytes());
        for l in &limbs[first..last] {
            out.extend_from_slice(&l.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<ExactSum, StateError> {
        let (&version, rest) = bytes.split_first().ok_or(StateError("empty"))?;
        if version != STATE_VERSION {
            return Err(StateError("unknown version"));
        }
        if rest.len() < 26 || (rest.len() - 26) % 8 != 0 {
            return Err(StateError("bad length"));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rest[at..at + 8]);
            b
        };
        let mut sum = ExactSum {
            nan: u64::from_le_bytes(u64_at(0)),
            pos_inf: u64::from_le_bytes(u64_at(8)),
            neg_inf: u64::from_le_bytes(u64_at(16)),
            ..ExactSum::default()
        };
        let first = u16::from_le_bytes([rest[24], rest[25]]) as usize;
        let limbs: Vec<i64> = rest[26..]
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                i64::from_le_bytes(b)
            })
            .collect();
        if first + limbs.len() > WIDE || limbs.iter().any(|l| l.abs() >= DIGIT * 2) {
            return Err(StateError("limbs out of range"));
        }
        if !limbs.is_empty() {
            sum.add_chunks(first, &limbs);
        }
        Ok(sum)
    }

    /// Heap bytes held, for memory accounting.
    pub fn heap_size(&self) -> usize {
        match self.limbs {
            Limbs::Narrow { .. } => 0,
            Limbs::Wide(_) => WIDE * 8,
        }
    }
}

fn settle(limbs: &mut [i64]) {
    for k in 0..limbs.len() - 1 {
        let carry = limbs[k] >> 32;
        limbs[k] -= carry << 32;
        limbs[k + 1] += carry;
    }
}

fn bit(digits: &[u64], index: i64) -> bool {
    index >= 0
        && (index as usize / 32) < digits.len()
        && (digits[index as usize / 32] >> (index % 32)) & 1 == 1
}

/// Whether any bit below `index` is set.
fn any_below(digits: &[u64], index: i64) -> bool {
    if index <= 0 {
        return false;
    }
    let whole = (index as usize / 32).min(digits.len());
    if digits[..whole].iter().any(|&d| d != 0) {
        return true;
    }
    let partial = index % 32;
    whole < digits.len() && partial > 0 && digits[whole] & ((1u64 << partial) - 1) != 0
}

/// Rounds the magnitude `digits` (digit k weighs 2^(32k + exp0)), plus a non-zero tail below
/// them when `sticky`, to the nearest binary64, ties to even.
fn round(negative: bool, digits: &[u64], exp0: i64, sticky: bool) -> f64 {
    let Some(top_digit) = digits.iter().rposition(|&d| d != 0) else {
        // Only a tail below 2^-1106 can remain: it rounds to zero.
        return if negative && sticky { -0.0 } else { 0.0 };
    };
    let top_bit = 32 * top_digit as i64 + 63 - digits[top_digit].leading_zeros() as i64;
    let leading_exp = top_bit + exp0;
    // Lowest kept bit: 53 significant bits, but never below the subnormal quantum.
    let mut low_exp = (leading_exp - 52).max(FRAME_EXP);
    let low = low_exp - exp0;
    let mut mantissa: u64 = 0;
    for index in (low..=top_bit).rev() {
        mantissa = (mantissa << 1) | bit(digits, index) as u64;
    }
    let round_bit = bit(digits, low - 1);
    let rest = sticky || any_below(digits, low - 1);
    if round_bit && (rest || mantissa & 1 == 1) {
        mantissa += 1;
        if mantissa == 1 << 53 {
            mantissa >>= 1;
            low_exp += 1;
        }
    }
    let magnitude = if mantissa >= 1 << 52 {
        let biased = low_exp + 52 + 1023;
        if biased >= 0x7ff {
            f64::INFINITY
        } else {
            f64::from_bits(((biased as u64) << 52) | (mantissa & ((1 << 52) - 1)))
        }
    } else {
        // Subnormal (or the smallest normal reached by rounding up): the raw bits are the
        // mantissa in units of 2^-1074.
        f64::from_bits(mantissa)
    };
    if negative { -magnitude } else { magnitude }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sum_of(values: &[f64]) -> f64 {
        let mut s = ExactSum::new();
        values.iter().for_each(|&v| s.add(v));
        s.to_f64()
    }

    /// An independent reference by another method: Shewchuk's exact partials with the final
    /// half-way correction, as CPython's `math.fsum` (valid while no partial overflows).
    fn fsum(values: &[f64]) -> f64 {
        let mut partials: Vec<f64> = Vec::new();
        let mut special = 0.0f64;
        for &x0 in values {
            if !x0.is_finite() {
                special += x0;
                continue;
            }
            let mut x = x0;
            let mut i = 0;
            for j in 0..partials.len() {
                let mut y = partials[j];
                if x.abs() < y.abs() {
                    std::mem::swap(&mut x, &mut y);
                }
                let hi = x + y;
                let lo = y - (hi - x);
                if lo != 0.0 {
                    partials[i] = lo;
                    i += 1;
                }
                x = hi;
            }
            partials.truncate(i);
            partials.push(x);
        }
        if special != 0.0 || special.is_nan() {
            return special;
        }
        // Sum partials from the top with the half-way correction of CPython's math.fsum.
        let mut n = partials.len();
        let mut hi = 0.0;
        if n > 0 {
            n -= 1;
            hi = partials[n];
            let mut lo = 0.0;
            while n > 0 {
                let x = hi;
                n -= 1;
                let y = partials[n];
                hi = x + y;
                let yr = hi - x;
                lo = y - yr;
                if lo != 0.0 {
                    break;
                }
            }
            if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0))
            {
                let y = lo * 2.0;
                let x = hi + y;
                let yr = x - hi;
                if y == yr {
                    hi = x;
                }
            }
        }
        hi
    }

    #[test]
    fn adversarial_values_sum_exactly() {
        assert_eq!(sum_of(&[1e308, 1e308, -1e308, -1e308, 1.0]), 1.0);
        assert_eq!(sum_of(&[1e308, 1e308]), f64::INFINITY);
        assert_eq!(sum_of(&[f64::MAX, f64::MAX, -f64::MAX]), f64::MAX);
        let tiny = f64::from_bits(1);
        assert_eq!(sum_of(&[tiny, tiny, tiny]), f64::from_bits(3));
        assert_eq!(sum_of(&[1.0, tiny, -1.0]), tiny);
        // 10^6 × 0.1000000000000000055511… = 100000.0000000000055511…: nearest is 100000.
        assert_eq!(sum_of(&vec![0.1; 1_000_000]), 100000.0);
        assert_eq!(sum_of(&vec![0.1; 1_000_000]), fsum(&vec![0.1; 1_000_000]));
        assert_eq!(sum_of(&[]), 0.0);
        assert!(sum_of(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert!(sum_of(&[f64::NAN, 1.0]).is_nan());
        assert_eq!(sum_of(&[f64::INFINITY, 1.0]), f64::INFINITY);
        // Ties round to even: 2^53 + 1 is halfway between 2^53 and 2^53 + 2.
        assert_eq!(sum_of(&[9007199254740992.0, 1.0]), 9007199254740992.0);
        assert_eq!(sum_of(&[9007199254740992.0, 1.0, tiny]), 9007199254740994.0);
    }

    #[test]
    fn products_and_quotients_round_once() {
        let mut s = ExactSum::new();
        s.add_product(0.1, 3);
        assert_eq!(s.to_f64(), fsum(&[0.1, 0.1, 0.1]));
        let mut s = ExactSum::new();
        s.add(1.0);
        assert_eq!(s.divided_by(3), 1.0 / 3.0);
        let mut s = ExactSum::new();
        s.add(f64::from_bits(1));
        assert_eq!(s.divided_by(2), 0.0); // half the smallest subnormal ties to even: 0
        let mut s = ExactSum::new();
        s.add(f64::from_bits(3));
        assert_eq!(s.divided_by(2), f64::from_bits(2)); // 1.5 ulp ties to even: 2
        let mut s = ExactSum::new();
        s.add_product(2.5, 3_600_000_000);
        s.add_product(-0.5, 7_200_000_000);
        assert_eq!(s.divided_by(3_600_000_000), 1.5);
        let mut s = ExactSum::new();
        s.add_product(f64::INFINITY, 0);
        assert!(s.to_f64().is_nan());
    }

    /// An exact integer divided once is IEEE division of the two (both exact as binary64).
    #[test]
    fn quotients_of_integers_are_ieee_quotients() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let random: Vec<i64> = (0..20_000).map(|_| (next() >> 31) as i64).collect();
        for n in [14_262_388i64, 1, 3599, 3601, 7_199_999]
            .into_iter()
            .chain(random)
        {
            // Hours from value × seconds summed in parts, as the time-weighted sum adds them.
            let mut s = ExactSum::new();
            let mut seconds = 0i64;
            let parts = 1 + (next() % 90) as usize;
            for _ in 0..parts {
                let (v, secs) = (1 + (next() % 99) as i64, (next() % 400_000) as i64);
                s.add_product(v as f64, secs * 1_000_000);
                seconds += v * secs;
            }
            assert_eq!(
                s.divided_by(3_600_000_000),
                seconds as f64 / 3600.0,
                "{seconds} value-seconds in {parts} parts"
            );
            for (weight, divisor) in [(1_000_000i64, 3_600_000_000u64), (1, 3), (1, 7)] {
                let mut s = ExactSum::new();
                s.add_product(n as f64, weight);
                let want = (n * weight) as f64 / divisor as f64;
                assert_eq!(s.divided_by(divisor), want, "{n} × {weight} / {divisor}");
            }
        }
    }

    #[test]
    fn windows_widen_and_state_round_trips() {
        let mut s = ExactSum::new();
        s.add(1.0);
        s.add(1e300);
        s.add(1e-300);
        s.add(-1e300);
        assert!(matches!(s.limbs, Limbs::Wide(_)));
        assert_eq!(s.to_f64(), 1.0);
        let back = ExactSum::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back.to_f64(), 1.0);
        assert!(ExactSum::from_bytes(&[9]).is_err());
        assert!(ExactSum::from_bytes(&[]).is_err());
    }

    fn adversarial() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
            (-1000i64..1000).prop_map(|v| v as f64 * 0.1),
            (0u64..1 << 20).prop_map(f64::from_bits),
            prop::sample::select(vec![1e308, -1e308, f64::MAX, -f64::MAX, 1e-308, 0.0, -0.0]),
        ]
    }

    proptest! {
        /// Shuffled and re-partitioned inputs give bit-identical sums, equal to an exact
        /// reference (Shewchuk partials, as Python's math.fsum).
        #[test]
        fn order_and_partitioning_never_change_the_bits(
            values in prop::collection::vec(adversarial(), 0..200),
            cut in 0usize..200,
            seed in any::<u64>(),
        ) {
            let whole = sum_of(&values);
            let mut shuffled = values.clone();
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let cut = cut.min(shuffled.len());
            let mut left = ExactSum::new();
            shuffled[..cut].iter().for_each(|&v| left.add(v));
            let right = ExactSum::from_bytes(&{
                let mut r = ExactSum::new();
                shuffled[cut..].iter().for_each(|&v| r.add(v));
                r.to_bytes()
            }).unwrap();
            left.merge(&right);
            prop_assert_eq!(left.to_f64().to_bits(), whole.to_bits());
            let reference = fsum(&values);
            if reference.is_finite() {
                prop_assert_eq!(whole, reference);
            }
        }

        /// Subtracting what was added (a sliding window frame) leaves exactly the rest.
        #[test]
        fn retraction_is_exact(values in prop::collection::vec(adversarial(), 1..100), keep in 0usize..100) {
            let keep = keep.min(values.len());
            let mut s = ExactSum::new();
            values.iter().for_each(|&v| s.add(v));
            values[keep..].iter().for_each(|&v| s.subtract(v));
            prop_assert_eq!(s.to_f64().to_bits(), sum_of(&values[..keep]).to_bits());
        }
    }
}

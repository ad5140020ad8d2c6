//! Fixed-point accumulation: exact, associative sums of `f32` vectors.
//!
//! Floating-point addition is not associative, so f64 partial sums merged in a different order
//! (another split of the rows into shards, another number of workers) differ in the last bits
//! and can change later assignments. We quantise every value once to an integer multiple of
//! `2^-exponent` and add integers: the sum is then exactly the same in any order and any split.
//! The exponent is chosen from the data (its largest magnitude and row count) so that no sum
//! can overflow `i64`, and so that values are kept to about `2^-(62 - log2 n)` of the largest
//! magnitude: finer than an `f32` mantissa for any realistic dataset.

use crate::error::{CoreError, Result};
use multiversion::multiversion;

/// Values are represented as `q * 2^-exponent` with integer `q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedScale {
    pub exponent: i32,
}

/// `1.5 * 2^52`: adding it to a double of magnitude < 2^51 rounds it to an integer (ties to
/// even) held in the low mantissa bits, which a 64-bit integer subtraction then extracts.
const MAGIC: f64 = 6_755_399_441_055_744.0;
const MAGIC_BITS: i64 = 0x4338_0000_0000_0000;

impl FixedScale {
    /// The scale for sums of up to `n_rows` values of magnitude at most `max_abs`.
    pub fn for_data(max_abs: f32, n_rows: u64) -> Result<Self> {
        if !max_abs.is_finite() {
            return Err(CoreError::Data(format!(
                "largest magnitude {max_abs} is not finite: remove NaN/inf values from the embeddings"
            )));
        }
        let rows_bits = 64 - n_rows.max(1).leading_zeros() as i32; // >= ceil(log2(n+1))
        // Largest |q| per value: 2^(61 - rows_bits) keeps any sum of n_rows values below 2^61,
        // and stays below 2^51, the range of the MAGIC conversion.
        let q_bits = (61 - rows_bits).min(51);
        let max_exp = if max_abs > 0.0 { frexp_exponent(max_abs as f64) } else { 0 };
        // max_abs < 2^max_exp, so max_abs * 2^(q_bits - max_exp) < 2^q_bits.
        Ok(FixedScale { exponent: q_bits - max_exp })
    }

    /// The factor `2^exponent` that turns values into integers.
    #[inline]
    pub fn factor(self) -> f64 {
        pow2(self.exponent)
    }

    /// The factor `2^-exponent` that turns integers back into values.
    #[inline]
    pub fn inverse(self) -> f64 {
        pow2(-self.exponent)
    }

    #[inline]
    pub fn quantize(self, x: f32) -> i64 {
        quantize_with(x, self.factor())
    }

    #[inline]
    pub fn dequantize(self, q: i64) -> f64 {
        q as f64 * self.inverse()
    }

    /// The scale used for inertia (sums of squared distances), as `u128` fixed point: fine
    /// enough for tiny distances, and provably without overflow (see the module docs).
    pub fn inertia_factor(self) -> f64 {
        pow2(2 * self.exponent - 40)
    }
}

/// Exponent `e` with `x < 2^e` and `x >= 2^(e-1)` for positive finite `x`.
fn frexp_exponent(x: f64) -> i32 {
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: x < 2^-1022.
        -1021
    } else {
        biased - 1022
    }
}

/// `2^e` for any `e` in a range that never over- or underflows the uses here.
fn pow2(e: i32) -> f64 {
    (2.0f64).powi(e)
}

#[inline(always)]
fn quantize_with(x: f32, factor: f64) -> i64 {
    let v = x as f64 * factor + MAGIC;
    (v.to_bits() as i64).wrapping_sub(MAGIC_BITS)
}

/// `acc[j] += quantize(x[j])`, vectorised for the CPU it runs on.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn accumulate(acc: &mut [i64], x: &[f32], scale: FixedScale) {
    let factor = scale.factor();
    for (a, &v) in acc.iter_mut().zip(x) {
        *a = a.wrapping_add(quantize_with(v, factor));
    }
}

/// `acc[j] -= quantize(x[j])`: exact removal of a previously added vector.
pub fn subtract(acc: &mut [i64], x: &[f32], scale: FixedScale) {
    let factor = scale.factor();
    for (a, &v) in acc.iter_mut().zip(x) {
        *a = a.wrapping_sub(quantize_with(v, factor));
    }
}

/// Inertia contribution of one squared distance, as fixed point (`as` saturates, never wraps).
#[inline]
pub fn quantize_inertia(sq_dist: f64, inertia_factor: f64) -> u128 {
    (sq_dist.max(0.0) * inertia_factor).round() as u128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_bounds_sums() {
        let s = FixedScale::for_data(16.0, 1797).unwrap();
        // 16 = 2^4 needs max_exp 5; 1797 rows need 11 bits: q_bits = 50.
        assert_eq!(s.exponent, 45);
        assert!(16.0 * s.factor() * 1797.0 < 2f64.powi(62));
        let s = FixedScale::for_data(1.0, 200_000).unwrap();
        assert!(1.0 * s.factor() * 200_000.0 < 2f64.powi(62));
        assert!(FixedScale::for_data(f32::NAN, 1).is_err());
        assert!(FixedScale::for_data(f32::INFINITY, 1).is_err());
    }

    #[test]
    fn quantize_round_trips_f32_exactly_when_in_range() {
        let s = FixedScale::for_data(300.0, 1000).unwrap();
        for x in [0.0f32, 1.0, -1.0, 0.1, 123.456, -299.99, 1e-3] {
            assert_eq!(s.dequantize(s.quantize(x)) as f32, x);
        }
    }

    #[test]
    fn accumulate_matches_scalar_and_is_order_free() {
        let s = FixedScale::for_data(5.0, 100).unwrap();
        let rows: Vec<Vec<f32>> = (0..100)
            .map(|i| (0..33).map(|j| ((i * 31 + j * 7) % 97) as f32 / 19.7 - 2.4).collect())
            .collect();
        let mut fwd = vec![0i64; 33];
        for r in &rows {
            accumulate(&mut fwd, r, s);
        }
        let mut rev = vec![0i64; 33];
        for r in rows.iter().rev() {
            accumulate(&mut rev, r, s);
        }
        assert_eq!(fwd, rev);
        let want: Vec<i64> = (0..33).map(|j| rows.iter().map(|r| s.quantize(r[j])).sum()).collect();
        assert_eq!(fwd, want);
        for r in &rows {
            subtract(&mut fwd, r, s);
        }
        assert!(fwd.iter().all(|&v| v == 0));
    }
}

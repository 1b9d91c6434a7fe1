//! Requantization as the TFLite int8 spec defines it: a real multiplier `M` is stored as an int32
//! fixed-point `multiplier` in [2^30, 2^31) (Q0.31) and a power-of-two `shift`, so that
//! `M = multiplier / 2^31 * 2^shift`, and `x * M` is computed as
//! `RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x << max(shift, 0), multiplier), max(-shift, 0))`.
//!
//! The host computes `(multiplier, shift)` with [`quantize_multiplier`] from this crate, so host and
//! MCU agree on every bit.

/// Smallest `shift` a plan may carry: a right shift of 31.
pub const MIN_SHIFT: i32 = -31;
/// Largest `shift` a plan may carry: a left shift of 30.
pub const MAX_SHIFT: i32 = 30;

/// gemmlowp's `SaturatingRoundingDoublingHighMul`: `round(a * b / 2^31)`, ties toward +infinity
/// (so -50.5 becomes -50 and 50.5 becomes 51), saturating the single overflowing case
/// `a == b == i32::MIN` to `i32::MAX`.
#[inline(always)]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    // gemmlowp adds a sign-dependent nudge (2^30 or 1 - 2^30) and divides truncating toward zero;
    // for every product that equals adding 2^30 and shifting right arithmetically (floor).
    ((ab + (1 << 30)) >> 31) as i32
}

/// gemmlowp's `RoundingDivideByPOT`: `x / 2^exponent` rounded to nearest, ties away from zero.
/// `exponent` must be in `0..=31`.
#[inline(always)]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    debug_assert!((0..=31).contains(&exponent));
    let mask = (1u32 << exponent).wrapping_sub(1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + (x < 0) as i32;
    (x >> exponent) + (remainder > threshold) as i32
}

/// TFLite's `MultiplyByQuantizedMultiplier`: `x * multiplier / 2^31 * 2^shift` with the spec's
/// rounding. `shift` must be in [`MIN_SHIFT`]`..=`[`MAX_SHIFT`] (plans are validated for it). A left
/// shift that overflows int32 wraps, where TFLite's C++ is undefined.
#[inline(always)]
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    Requantizer::new(multiplier, shift).scale(x)
}

/// A `(multiplier, shift)` pair split once into its left and right shifts, for kernels that
/// requantize many accumulators of one channel. Same results as
/// [`multiply_by_quantized_multiplier`], which is built on it.
#[derive(Clone, Copy, Debug)]
pub struct Requantizer {
    multiplier: i32,
    left: u32,
    right: i32,
}

impl Requantizer {
    #[inline(always)]
    pub fn new(multiplier: i32, shift: i32) -> Self {
        Requantizer {
            multiplier,
            left: shift.max(0) as u32,
            right: (-shift).max(0),
        }
    }

    /// `x * multiplier / 2^31 * 2^shift`, TFLite's rounding.
    #[inline(always)]
    pub fn scale(&self, x: i32) -> i32 {
        rounding_divide_by_pot(
            saturating_rounding_doubling_high_mul(x.wrapping_shl(self.left), self.multiplier),
            self.right,
        )
    }

    /// [`requantize`] with this channel's constants.
    #[inline(always)]
    pub fn requantize(&self, acc: i32, output_zp: i32, act_min: i8, act_max: i8) -> i8 {
        // max then min: `clamp` for a valid range (`act_min <= act_max`, which plans are validated
        // for), without its panic on an invalid one.
        self.scale(acc)
            .wrapping_add(output_zp)
            .max(act_min as i32)
            .min(act_max as i32) as i8
    }
}

/// One int32 accumulator to an int8 output: scale, add the output zero point, clamp to the fused
/// activation range `[act_min, act_max]`.
#[inline(always)]
pub fn requantize(
    acc: i32,
    multiplier: i32,
    shift: i32,
    output_zp: i32,
    act_min: i8,
    act_max: i8,
) -> i8 {
    Requantizer::new(multiplier, shift).requantize(acc, output_zp, act_min, act_max)
}

/// TFLite's `QuantizeMultiplier`: splits a non-negative real multiplier into a Q0.31 `multiplier`
/// in [2^30, 2^31) and a power-of-two `shift`, `real ~= multiplier / 2^31 * 2^shift`.
///
/// Zero, negative, NaN and multipliers below 2^-32 give `(0, 0)` (the product is then always 0, as
/// in TFLite); multipliers of 2^31 or more saturate to `(i32::MAX, 30)`. The rounding of the Q0.31
/// mantissa is half away from zero, as TFLite's `TfLiteRound`. Pure integer/bit manipulation, so it
/// gives the same answer in no_std firmware as on the host.
pub fn quantize_multiplier(real: f64) -> (i32, i32) {
    if real.is_nan() || real <= 0.0 {
        return (0, 0);
    }
    if real.is_infinite() {
        return (i32::MAX, MAX_SHIFT);
    }
    let (mantissa, mut shift) = frexp(real);
    // mantissa is in [0.5, 1): mantissa * 2^31 is exact in f64 and in [2^30, 2^31].
    let scaled = mantissa * (1u64 << 31) as f64;
    let mut q = (scaled + 0.5) as i64; // round half away from zero (scaled > 0)
    if q == 1 << 31 {
        q /= 2;
        shift += 1;
    }
    if shift < MIN_SHIFT {
        return (0, 0);
    }
    if shift > MAX_SHIFT {
        return (i32::MAX, MAX_SHIFT);
    }
    (q as i32, shift)
}

/// `frexp` for finite positive `x`: `x = m * 2^e` with `m` in [0.5, 1).
fn frexp(x: f64) -> (f64, i32) {
    let bits = x.to_bits();
    let exp_field = ((bits >> 52) & 0x7ff) as i32;
    if exp_field == 0 {
        // Subnormal: scale into the normal range first.
        let (m, e) = frexp(x * (1u64 << 54) as f64);
        return (m, e - 54);
    }
    let mantissa_bits = (bits & !(0x7ffu64 << 52)) | (1022u64 << 52);
    (f64::from_bits(mantissa_bits), exp_field - 1022)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference from the gemmlowp C++ source, with its sign-dependent nudge and C's truncating
    /// division, to check the shift form above.
    fn srdhm_gemmlowp(a: i32, b: i32) -> i32 {
        let overflow = a == b && a == i32::MIN;
        let ab = a as i64 * b as i64;
        let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
        let r = ((ab + nudge) / (1i64 << 31)) as i32;
        if overflow { i32::MAX } else { r }
    }

    #[test]
    fn high_mul_golden() {
        // 0.5 in Q0.31 times odd numbers: ties.
        let half = 1 << 30;
        assert_eq!(saturating_rounding_doubling_high_mul(-101, half), -50); // -50.5 -> -50
        assert_eq!(saturating_rounding_doubling_high_mul(101, half), 51); // 50.5 -> 51
        assert_eq!(saturating_rounding_doubling_high_mul(-1, half), 0); // -0.5 -> 0
        assert_eq!(saturating_rounding_doubling_high_mul(1, half), 1); // 0.5 -> 1
        assert_eq!(saturating_rounding_doubling_high_mul(-3, half), -1); // -1.5 -> -1
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MAX),
            -i32::MAX
        );
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MAX, i32::MAX),
            i32::MAX - 1
        );
        assert_eq!(saturating_rounding_doubling_high_mul(0, i32::MIN), 0);
    }

    #[test]
    fn high_mul_matches_gemmlowp_nudge_form() {
        let edge = [
            i32::MIN,
            i32::MIN + 1,
            -(1 << 30),
            -101,
            -3,
            -1,
            0,
            1,
            3,
            101,
            1 << 30,
            i32::MAX - 1,
            i32::MAX,
        ];
        for &a in &edge {
            for &b in &edge {
                assert_eq!(
                    saturating_rounding_doubling_high_mul(a, b),
                    srdhm_gemmlowp(a, b),
                    "{a} {b}"
                );
            }
        }
        let mut s = 0x1234_5678u32;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let a = s as i32;
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let b = s as i32;
            assert_eq!(
                saturating_rounding_doubling_high_mul(a, b),
                srdhm_gemmlowp(a, b),
                "{a} {b}"
            );
        }
    }

    #[test]
    fn divide_by_pot_golden() {
        // Ties away from zero.
        assert_eq!(rounding_divide_by_pot(5, 1), 3);
        assert_eq!(rounding_divide_by_pot(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot(3, 1), 2);
        assert_eq!(rounding_divide_by_pot(-3, 1), -2);
        assert_eq!(rounding_divide_by_pot(-1, 1), -1);
        assert_eq!(rounding_divide_by_pot(1, 1), 1);
        assert_eq!(rounding_divide_by_pot(-6, 2), -2); // -1.5
        assert_eq!(rounding_divide_by_pot(-5, 2), -1); // -1.25
        assert_eq!(rounding_divide_by_pot(-7, 2), -2); // -1.75
        assert_eq!(rounding_divide_by_pot(6, 2), 2); // 1.5
        assert_eq!(rounding_divide_by_pot(100, 0), 100);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 1), 1 << 30);
    }

    #[test]
    fn multiply_golden() {
        // 0.5 as (2^30, 0): the -50.5 case of the spec goes through the high-mul.
        assert_eq!(multiply_by_quantized_multiplier(-101, 1 << 30, 0), -50);
        // 0.25 as (2^30, -1): -101 * 0.25 = -25.25 -> -25; -102 * 0.25 = -25.5 -> -26 (POT step).
        assert_eq!(multiply_by_quantized_multiplier(-101, 1 << 30, -1), -25);
        assert_eq!(multiply_by_quantized_multiplier(-102, 1 << 30, -1), -26);
        assert_eq!(multiply_by_quantized_multiplier(102, 1 << 30, -1), 26);
        // 1.5 as (0.75 * 2^31, 1).
        assert_eq!(multiply_by_quantized_multiplier(10, 3 << 29, 1), 15);
        assert_eq!(multiply_by_quantized_multiplier(-11, 3 << 29, 1), -16); // -16.5: high-mul ties up
    }

    #[test]
    fn quantize_multiplier_golden() {
        assert_eq!(quantize_multiplier(0.5), (1 << 30, 0));
        assert_eq!(quantize_multiplier(1.0), (1 << 30, 1));
        assert_eq!(quantize_multiplier(0.25), (1 << 30, -1));
        assert_eq!(quantize_multiplier(0.75), (3 << 29, 0));
        assert_eq!(quantize_multiplier(0.0), (0, 0));
        assert_eq!(quantize_multiplier(-1.0), (0, 0));
        assert_eq!(quantize_multiplier(f64::NAN), (0, 0));
        assert_eq!(quantize_multiplier(1e-12), (0, 0)); // below 2^-32
        assert_eq!(quantize_multiplier(1e12), (i32::MAX, MAX_SHIFT));
        // Mantissa that rounds up to 2^31 renormalizes.
        let just_below_one = 1.0 - 1e-12;
        assert_eq!(quantize_multiplier(just_below_one), (1 << 30, 1));
        // 0.1: frexp = 0.8 * 2^-3, 0.8 * 2^31 = 1717986918.4 -> 1717986918.
        assert_eq!(quantize_multiplier(0.1), (1_717_986_918, -3));
        // A subnormal-free tiny value near the edge: 2^-31 = 0.5 * 2^-30.
        assert_eq!(quantize_multiplier(2f64.powi(-31)), (1 << 30, -30));
        assert_eq!(quantize_multiplier(2f64.powi(-32)), (1 << 30, -31));
        assert_eq!(quantize_multiplier(2f64.powi(-33)), (0, 0));
        assert_eq!(quantize_multiplier(f64::MIN_POSITIVE / 4.0), (0, 0));
    }

    #[test]
    fn quantize_multiplier_is_accurate() {
        let mut r = 1e-9;
        while r < 1e6 {
            let (m, s) = quantize_multiplier(r);
            assert!((1 << 30..=i32::MAX).contains(&m), "{r}: {m}");
            let back = m as f64 / 2f64.powi(31) * 2f64.powi(s);
            assert!(((back - r) / r).abs() < 1e-9, "{r}: {back}");
            r *= 1.37;
        }
    }

    #[test]
    fn requantize_clamps() {
        assert_eq!(requantize(1000, 1 << 30, 0, 0, -128, 127), 127);
        assert_eq!(requantize(-1000, 1 << 30, 0, 0, -128, 127), -128);
        assert_eq!(requantize(-1000, 1 << 30, 0, -5, -5, 127), -5); // ReLU with zp -5
        assert_eq!(requantize(20, 1 << 30, 0, 3, -128, 127), 13);
    }
}

//! Element-wise f32 passes (activations, residual sums) and a 16-lane dot product, in explicit SIMD
//! on aarch64.
//!
//! Plain loops are not enough for the board's binary: in `[profile.device]` the link-time
//! optimization runs at perch-run's opt-level "s", where rustc turns LLVM's loop and SLP
//! vectorizers off, and under fat LTO LLVM leaves vectorization to that link, so perch-runtime's
//! opt-level 3 does not vectorize them either. Measured on fashion-cnn-s's float plan under
//! `qemu-aarch64 -cpu cortex-a72`: the Swish's scaling and multiplication of each tile ran one value per
//! iteration, 325,000 of the device build's 1,620,000 instructions per inference (none of them in
//! the all-opt-level-3 release build). Elsewhere the loops are plain Rust, which opt-level 3
//! vectorizes; both compute the same values (no fused multiply-adds).

/// `v = max(v, 0)` in place, 0 for NaN and -0.0 (what the SIMD maximum answers).
pub fn relu(v: &mut [f32]) {
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::aarch64::*;
        // SAFETY (each intrinsic here): NEON is in every aarch64 target's baseline.
        let zero = unsafe { vdupq_n_f32(0.0) };
        neon::unary(v, |v| unsafe { vmaxnmq_f32(v, zero) }, relu1);
    }
    #[cfg(not(target_arch = "aarch64"))]
    v.iter_mut().for_each(|v| *v = relu1(*v));
}

/// `y = y + r` in place.
///
/// # Panics
/// When `r` is shorter than `y`.
pub fn add(y: &mut [f32], r: &[f32]) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is in every aarch64 target's baseline.
    neon::binary(y, r, |y, r| unsafe { std::arch::aarch64::vaddq_f32(y, r) }, |y, r| y + r);
    #[cfg(not(target_arch = "aarch64"))]
    zip_in_place(y, r, |y, r| y + r);
}

/// `y = max(y + r, 0)` in place (tract's `Add` then its Relu, value for value).
///
/// # Panics
/// When `r` is shorter than `y`.
pub fn add_relu(y: &mut [f32], r: &[f32]) {
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::aarch64::*;
        // SAFETY (each intrinsic here): NEON is in every aarch64 target's baseline.
        let zero = unsafe { vdupq_n_f32(0.0) };
        neon::binary(y, r, |y, r| unsafe { vmaxnmq_f32(vaddq_f32(y, r), zero) }, |y, r| relu1(y + r));
    }
    #[cfg(not(target_arch = "aarch64"))]
    zip_in_place(y, r, |y, r| relu1(y + r));
}

/// `y = y * s` in place.
///
/// # Panics
/// When `s` is shorter than `y`.
pub fn mul(y: &mut [f32], s: &[f32]) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is in every aarch64 target's baseline.
    neon::binary(y, s, |y, s| unsafe { std::arch::aarch64::vmulq_f32(y, s) }, |y, s| y * s);
    #[cfg(not(target_arch = "aarch64"))]
    zip_in_place(y, s, |y, s| y * s);
}

/// `y = x * by`.
///
/// # Panics
/// When `x` is shorter than `y`.
pub fn scaled(y: &mut [f32], x: &[f32], by: f32) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is in every aarch64 target's baseline.
    neon::binary(y, x, |_, x| unsafe { std::arch::aarch64::vmulq_n_f32(x, by) }, |_, x| x * by);
    #[cfg(not(target_arch = "aarch64"))]
    zip_in_place(y, x, |_, x| x * by);
}

/// The sum of `a[i] * b[i]`, in 16 lanes (lane `i % 16` takes the products of `i`, in order), then
/// the lanes in order, then the products past the last whole 16.
///
/// # Panics
/// When the slices differ in length.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot of slices of different lengths");
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = a16.remainder().iter().zip(b16.remainder()).map(|(x, y)| x * y).sum();
    let mut lanes = [0f32; 16];
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::aarch64::*;
        // SAFETY: NEON is in every aarch64 target's baseline.
        let mut acc = [unsafe { vdupq_n_f32(0.0) }; 4];
        for (a, b) in a16.zip(b16) {
            for (q, acc) in acc.iter_mut().enumerate() {
                // SAFETY: NEON as above; 4 values from 4 * q < 16 in chunks of 16. A multiplication
                // then an addition, as the scalar loop (not a fused FMLA).
                unsafe { *acc = vaddq_f32(*acc, vmulq_f32(vld1q_f32(a.as_ptr().add(4 * q)), vld1q_f32(b.as_ptr().add(4 * q)))) };
            }
        }
        for (lanes, acc) in lanes.chunks_exact_mut(4).zip(acc) {
            // SAFETY: 4 values.
            unsafe { vst1q_f32(lanes.as_mut_ptr(), acc) };
        }
    }
    #[cfg(not(target_arch = "aarch64"))]
    for (a, b) in a16.zip(b16) {
        for i in 0..16 {
            lanes[i] += a[i] * b[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `y = f(y, x)` value by value over `y`'s length.
///
/// # Panics
/// When `x` is shorter than `y`.
#[inline(always)]
fn zip_in_place(y: &mut [f32], x: &[f32], f: impl Fn(f32, f32) -> f32) {
    let n = y.len();
    y.iter_mut().zip(&x[..n]).for_each(|(y, &x)| *y = f(*y, x));
}

/// `max(v, 0)` as FMAXNM answers it: 0 for NaN and for -0.0.
#[inline(always)]
pub(super) fn relu1(v: f32) -> f32 {
    if v > 0.0 { v } else { 0.0 }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    /// `v = f(v)` in place, eight values (two registers) an iteration, then four, then one by one
    /// with `f1`.
    #[inline(always)]
    pub fn unary(v: &mut [f32], f: impl Fn(float32x4_t) -> float32x4_t, f1: impl Fn(f32) -> f32) {
        let mut eights = v.chunks_exact_mut(8);
        for c in &mut eights {
            let p = c.as_mut_ptr();
            // SAFETY: 8 values at `p`.
            unsafe {
                let (a, b) = (f(vld1q_f32(p)), f(vld1q_f32(p.add(4))));
                vst1q_f32(p, a);
                vst1q_f32(p.add(4), b);
            }
        }
        let rest = eights.into_remainder();
        let mut fours = rest.chunks_exact_mut(4);
        for c in &mut fours {
            // SAFETY: 4 values.
            unsafe { vst1q_f32(c.as_mut_ptr(), f(vld1q_f32(c.as_ptr()))) };
        }
        fours.into_remainder().iter_mut().for_each(|v| *v = f1(*v));
    }

    /// `y = f(y, x)` in place over `y`'s length, as [`unary`].
    ///
    /// # Panics
    /// When `x` is shorter than `y`.
    #[inline(always)]
    pub fn binary(y: &mut [f32], x: &[f32], f: impl Fn(float32x4_t, float32x4_t) -> float32x4_t, f1: impl Fn(f32, f32) -> f32) {
        let x = &x[..y.len()];
        let (mut y8, mut x8) = (y.chunks_exact_mut(8), x.chunks_exact(8));
        for (c, x) in (&mut y8).zip(&mut x8) {
            let (p, q) = (c.as_mut_ptr(), x.as_ptr());
            // SAFETY: 8 values at `p` and at `q`.
            unsafe {
                let (a, b) = (f(vld1q_f32(p), vld1q_f32(q)), f(vld1q_f32(p.add(4)), vld1q_f32(q.add(4))));
                vst1q_f32(p, a);
                vst1q_f32(p.add(4), b);
            }
        }
        let (y, x) = (y8.into_remainder(), x8.remainder());
        let (mut y4, mut x4) = (y.chunks_exact_mut(4), x.chunks_exact(4));
        for (c, x) in (&mut y4).zip(&mut x4) {
            // SAFETY: 4 values at each.
            unsafe { vst1q_f32(c.as_mut_ptr(), f(vld1q_f32(c.as_ptr()), vld1q_f32(x.as_ptr()))) };
        }
        super::zip_in_place(y4.into_remainder(), x4.remainder(), f1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Values with the cases that matter: NaN, both zeros, infinities, subnormals.
    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            8 => -1e3f32..1e3,
            1 => prop::sample::select(vec![f32::NAN, 0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1e-40, -1e-40, f32::MIN, f32::MAX]),
        ]
    }

    fn same(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()))
    }

    proptest! {
        /// Every length (whole eights, a four, single values) gives the scalar loop's values, bit
        /// for bit.
        #[test]
        fn passes_are_the_scalar_loops(pairs in prop::collection::vec((value(), value()), 0..40), by in value()) {
            let (y, x): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
            let check = |pass: &dyn Fn(&mut [f32]), scalar: &dyn Fn(f32, f32) -> f32| {
                let mut got = y.clone();
                pass(&mut got);
                let want: Vec<f32> = y.iter().zip(&x).map(|(&y, &x)| scalar(y, x)).collect();
                assert!(same(&got, &want), "{got:?} != {want:?}");
            };
            check(&|v| relu(v), &|y, _| if y > 0.0 { y } else { 0.0 });
            check(&|v| add(v, &x), &|y, x| y + x);
            check(&|v| add_relu(v, &x), &|y, x| if y + x > 0.0 { y + x } else { 0.0 });
            check(&|v| mul(v, &x), &|y, x| y * x);
            check(&|v| scaled(v, &x, by), &|_, x| x * by);
        }

        /// The dot product sums in the documented order.
        #[test]
        fn dot_sums_in_lanes(pairs in prop::collection::vec((-1e3f32..1e3, -1e3f32..1e3), 0..70)) {
            let (a, b): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
            let whole = a.len() / 16 * 16;
            let mut lanes = [0f32; 16];
            for (i, (x, y)) in a[..whole].iter().zip(&b[..whole]).enumerate() {
                lanes[i % 16] += x * y;
            }
            let tail: f32 = a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum();
            prop_assert_eq!(dot(&a, &b).to_bits(), (lanes.iter().sum::<f32>() + tail).to_bits());
        }
    }

    #[test]
    fn short_second_operands_panic() {
        assert!(std::panic::catch_unwind(|| add(&mut [1.0, 2.0], &[1.0])).is_err());
        assert!(std::panic::catch_unwind(|| dot(&[1.0, 2.0], &[1.0])).is_err());
    }
}

//! Max pooling over NCHW planes (int8 or f32), without padding: the 2x2 pooling of stride 2 in one
//! pass; other int8 pools per output row, the column-wise maximum of the kernel's input rows
//! (contiguous, so vectorized), then the maximum along each output's window of that row; other f32
//! pools window by window, in tract's order (see [`Pooled::ORDER_FREE`]). tract 0.23.9's
//! `OptMaxPool` walks every window through a generic patch iterator: on fashion-cnn-s its three
//! int8 pools took 18 us of a 75 us inference on x86-64, its three f32 pools 58 us of 161 us.

use super::conv::Geometry;

/// Whether [`max_pool`] takes this geometry: no padding, at least one output, every output's window
/// inside the input.
pub fn fits(g: &Geometry) -> bool {
    g.pad_before == [0, 0] && g.pad_after == [0, 0] && !g.output.contains(&0) && g.check().is_ok()
}

/// A value max pooling takes, with tract's generic maximum: `v` where `m < v`, else `m`, folded from
/// the type's lowest value. For f32 that skips NaNs and gives `f32::MIN` for a window of `-inf`, as
/// tract's does.
pub trait Pooled: Copy + PartialOrd {
    const LOWEST: Self;
    /// Whether the fold's order never changes its result (no NaN, no signed zero). For f32 it
    /// does where a window's maximum is a zero of both signs: the first one met is kept, and
    /// tract meets them row by row.
    const ORDER_FREE: bool;
    #[inline(always)]
    fn max_of(self, v: Self) -> Self {
        if self < v { v } else { self }
    }

    /// One output row of the 2x2 pooling of stride 2 from its two input rows: `out[i]` folds
    /// `a[2i]`, `a[2i + 1]`, `b[2i]`, `b[2i + 1]` in that order (on aarch64 in NEON: the device
    /// build's link-time optimization at opt-level "s" would leave the loop scalar, see
    /// [`super::vector`]).
    ///
    /// # Panics
    /// When a row holds fewer than `2 * out.len()` values.
    #[inline(always)]
    fn pool_2x2(a: &[Self], b: &[Self], out: &mut [Self]) {
        pool_2x2_scalar(a, b, out, 0);
    }
}

/// [`Pooled::pool_2x2`] from output `from` on.
#[inline(always)]
fn pool_2x2_scalar<T: Pooled>(a: &[T], b: &[T], out: &mut [T], from: usize) {
    let (a, b) = (&a[..2 * out.len()], &b[..2 * out.len()]);
    for (ox, o) in out.iter_mut().enumerate().skip(from) {
        *o = T::LOWEST.max_of(a[2 * ox]).max_of(a[2 * ox + 1]).max_of(b[2 * ox]).max_of(b[2 * ox + 1]);
    }
}

impl Pooled for i8 {
    const LOWEST: i8 = i8::MIN;
    const ORDER_FREE: bool = true;

    #[cfg(target_arch = "aarch64")]
    fn pool_2x2(a: &[i8], b: &[i8], out: &mut [i8]) {
        use std::arch::aarch64::*;
        let (a, b) = (&a[..2 * out.len()], &b[..2 * out.len()]);
        let n = out.len();
        // 16 outputs at a time, then 8; a last step that would run past the row starts earlier,
        // overlapping the one before (an output depends on its inputs only); rows of fewer than
        // 8 outputs value by value.
        let mut i = 0;
        while i < n && n >= 16 {
            let at = i.min(n - 16);
            // SAFETY: 32 values from 2at, at + 16 <= n, in each row; 16 outputs from at.
            unsafe {
                let (x, y) = (vld2q_s8(a.as_ptr().add(2 * at)), vld2q_s8(b.as_ptr().add(2 * at)));
                // No NaN in integers: the maximum is the fold's in any order.
                vst1q_s8(out.as_mut_ptr().add(at), vmaxq_s8(vmaxq_s8(x.0, x.1), vmaxq_s8(y.0, y.1)));
            }
            i += 16;
        }
        while i < n && n >= 8 {
            let at = i.min(n - 8);
            // SAFETY: 16 values from 2at, at + 8 <= n, in each row; 8 outputs from at.
            unsafe {
                let (x, y) = (vld2_s8(a.as_ptr().add(2 * at)), vld2_s8(b.as_ptr().add(2 * at)));
                vst1_s8(out.as_mut_ptr().add(at), vmax_s8(vmax_s8(x.0, x.1), vmax_s8(y.0, y.1)));
            }
            i += 8;
        }
        pool_2x2_scalar(a, b, out, i.min(n));
    }
}

impl Pooled for f32 {
    const LOWEST: f32 = f32::MIN;
    const ORDER_FREE: bool = false;

    #[cfg(target_arch = "aarch64")]
    fn pool_2x2(a: &[f32], b: &[f32], out: &mut [f32]) {
        use std::arch::aarch64::*;
        let (a, b) = (&a[..2 * out.len()], &b[..2 * out.len()]);
        let n = out.len();
        // `max_of`, lane by lane: v where m < v, else m (NaNs skipped, the first zero kept).
        // SAFETY: NEON is in every aarch64 target's baseline.
        let max_of = |m: float32x4_t, v: float32x4_t| unsafe { vbslq_f32(vcltq_f32(m, v), v, m) };
        // 4 outputs at a time; a last step that would run past the row starts earlier, overlapping
        // the one before (an output depends on its inputs only); rows of fewer than 4 value by value.
        let mut i = 0;
        while i < n && n >= 4 {
            let at = i.min(n - 4);
            // SAFETY: 8 values from 2at, at + 4 <= n, in each row; 4 outputs from at.
            unsafe {
                let (x, y) = (vld2q_f32(a.as_ptr().add(2 * at)), vld2q_f32(b.as_ptr().add(2 * at)));
                let m = max_of(max_of(max_of(max_of(vdupq_n_f32(Self::LOWEST), x.0), x.1), y.0), y.1);
                vst1q_f32(out.as_mut_ptr().add(at), m);
            }
            i += 4;
        }
        pool_2x2_scalar(a, b, out, i.min(n));
    }
}

/// Max-pools `x` (whole `[h][w]` planes) into `y` (whole `[oh][ow]` planes), plane by plane.
///
/// # Panics
/// When the geometry does not [`fit`](fits) or the buffers do not hold the same number of whole
/// planes.
pub fn max_pool<T: Pooled>(g: &Geometry, x: &[T], y: &mut [T]) {
    let ([h, w], [oh, ow]) = (g.input, g.output);
    assert!(fits(g) && x.len().is_multiple_of(h * w) && y.len() == x.len() / (h * w) * oh * ow, "max pool geometry");
    let ([kh, kw], [sy, sx], [dy, dx]) = (g.kernel, g.stride, g.dilation);
    if g.kernel == [2, 2] && g.stride == [2, 2] && g.dilation == [1, 1] {
        // The common 2x2 pooling: each output from two pairs, one pass, no row buffer.
        for (x, y) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(oh * ow)) {
            for (oy, out) in y.chunks_exact_mut(ow).enumerate() {
                T::pool_2x2(&x[2 * oy * w..][..2 * ow], &x[(2 * oy + 1) * w..][..2 * ow], out);
            }
        }
        return;
    }
    if !T::ORDER_FREE {
        // Each window in tract's order, row by row.
        for (x, y) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(oh * ow)) {
            for (oy, out) in y.chunks_exact_mut(ow).enumerate() {
                for (ox, o) in out.iter_mut().enumerate() {
                    let row = |ky: usize| &x[(oy * sy + ky * dy) * w + ox * sx..];
                    *o = (0..kh).fold(T::LOWEST, |m, ky| (0..kw).fold(m, |m, kx| m.max_of(row(ky)[kx * dx])));
                }
            }
        }
        return;
    }
    let mut columns = vec![T::LOWEST; w];
    for (x, y) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(oh * ow)) {
        for (oy, out) in y.chunks_exact_mut(ow).enumerate() {
            let row = |ky: usize| &x[(oy * sy + ky * dy) * w..][..w];
            columns.fill(T::LOWEST);
            for ky in 0..kh {
                columns.iter_mut().zip(row(ky)).for_each(|(m, &v)| *m = m.max_of(v));
            }
            if [kw, sx, dx] == [2, 2, 1] {
                out.iter_mut().zip(columns.chunks_exact(2)).for_each(|(o, p)| *o = p[0].max_of(p[1]));
            } else {
                for (ox, o) in out.iter_mut().enumerate() {
                    *o = (0..kw).fold(T::LOWEST, |m, kx| m.max_of(columns[ox * sx + kx * dx]));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A window whose maximum is a zero of both signs: the one met first row by row, as tract's
    /// pooling answers (columns first would give -0.0).
    #[test]
    fn f32_windows_keep_tracts_zero() {
        let g = Geometry { input: [2, 2], kernel: [2, 2], stride: [1, 1], dilation: [1, 1], pad_before: [0, 0], pad_after: [0, 0], output: [1, 1] };
        let mut y = [f32::NAN];
        max_pool(&g, &[-1.0, 0.0, -0.0, -2.0], &mut y);
        assert_eq!(y[0].to_bits(), 0f32.to_bits());
        max_pool(&g, &[-1.0, -0.0, 0.0, -2.0], &mut y);
        assert_eq!(y[0].to_bits(), (-0f32).to_bits());
    }

    fn f32_value() -> impl Strategy<Value = f32> {
        prop_oneof![
            6 => -10f32..10.0,
            1 => prop::sample::select(vec![f32::NAN, 0.0, -0.0, f32::NEG_INFINITY, f32::INFINITY, f32::MIN]),
        ]
    }

    proptest! {
        /// The 2x2 rows (NEON on aarch64: whole vectors, the last one overlapping the one before,
        /// value by value in rows shorter than a vector) answer the scalar fold,
        /// bit for bit, NaNs, zeros of both signs and infinities included.
        #[test]
        fn rows_2x2_are_the_fold(
            f in prop::collection::vec((f32_value(), f32_value()), 0..80),
            i in prop::collection::vec((any::<i8>(), any::<i8>()), 0..80),
        ) {
            fn check<T: Pooled + std::fmt::Debug>(pairs: Vec<(T, T)>, bits: impl Fn(T) -> u32) {
                let (a, b): (Vec<T>, Vec<T>) = pairs.into_iter().unzip();
                let n = a.len() / 2;
                let mut got = vec![T::LOWEST; n];
                T::pool_2x2(&a, &b, &mut got);
                let mut want = vec![T::LOWEST; n];
                pool_2x2_scalar(&a, &b, &mut want, 0);
                assert_eq!(got.iter().map(|&v| bits(v)).collect::<Vec<_>>(), want.iter().map(|&v| bits(v)).collect::<Vec<_>>(), "{got:?} != {want:?}");
            }
            check(f, f32::to_bits);
            check(i, |v: i8| v as u8 as u32);
        }
    }
}

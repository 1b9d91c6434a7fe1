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
    /// [`super::vector`]; x86-64's AVX-512 rows run through [`Pooled::pool_planes_2x2`]).
    ///
    /// `a` and `b` may hold more values than the row's `2 * out.len()` (the rest of the input):
    /// NEON reads a whole vector where a short row leaves room for it, and uses only the row's.
    ///
    /// # Panics
    /// When a row holds fewer than `2 * out.len()` values.
    #[inline(always)]
    fn pool_2x2(a: &[Self], b: &[Self], out: &mut [Self]) {
        pool_2x2_scalar(a, b, out, 0);
    }

    /// The 2x2 pooling of stride 2 of whole `[h][w]` planes of `x` into `[oh][ow]` planes of `y`,
    /// row by row with [`Pooled::pool_2x2`] (on x86-64 with AVX-512, the instruction set checked
    /// once for all rows: fashion-cnn-s's pools are 7 to 14 outputs a row).
    #[inline(always)]
    fn pool_planes_2x2(x: &[Self], y: &mut [Self], [h, w]: [usize; 2], [oh, ow]: [usize; 2]) {
        planes_2x2(x, y, [h, w], [oh, ow], Self::pool_2x2);
    }
}

/// [`Pooled::pool_planes_2x2`] with `row` for each output row, given its two input rows from
/// their first value to the input's end.
#[inline(always)]
fn planes_2x2<T>(x: &[T], y: &mut [T], [h, w]: [usize; 2], [oh, ow]: [usize; 2], mut row: impl FnMut(&[T], &[T], &mut [T])) {
    for (p, y) in y.chunks_exact_mut(oh * ow).enumerate() {
        for (oy, out) in y.chunks_exact_mut(ow).enumerate() {
            let first = p * h * w + 2 * oy * w;
            row(&x[first..], &x[first + w..], out);
        }
    }
}

/// [`Pooled::pool_2x2`] from output `from` on.
/// `out`'s length of a vector's `lanes` into `out` (at most all of them), lane by lane: a fixed
/// count, where a copy of `out.len()` values would be a memcpy call.
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
#[inline(always)]
fn keep<T: Copy, const L: usize>(lanes: &[T; L], out: &mut [T]) {
    for (l, &v) in lanes.iter().enumerate() {
        if l < out.len() {
            out[l] = v;
        }
    }
}

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
        let n = out.len();
        if n < 8 && a.len() >= 16 && b.len() >= 16 {
            // A short row, with room in the input for a whole vector: 8 outputs computed, n kept.
            let mut lanes = [0i8; 8];
            // SAFETY: 16 values in each of a and b (checked), 8 in `lanes`.
            unsafe {
                let (x, y) = (vld2_s8(a.as_ptr()), vld2_s8(b.as_ptr()));
                vst1_s8(lanes.as_mut_ptr(), vmax_s8(vmax_s8(x.0, x.1), vmax_s8(y.0, y.1)));
            }
            keep(&lanes, out);
            return;
        }
        let (a, b) = (&a[..2 * n], &b[..2 * n]);
        // 16 outputs at a time, then 8; a last step that would run past the row starts earlier,
        // overlapping the one before (an output depends on its inputs only); rows of fewer than
        // 8 outputs at the input's end value by value.
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

    #[cfg(target_arch = "x86_64")]
    fn pool_planes_2x2(x: &[i8], y: &mut [i8], input: [usize; 2], output: [usize; 2]) {
        if std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("avx512vl") {
            // SAFETY: AVX-512BW and VL are here (checked).
            unsafe { x86::planes_i8(x, y, input, output) };
        } else {
            planes_2x2(x, y, input, output, Self::pool_2x2);
        }
    }

    #[cfg(target_arch = "arm")]
    fn pool_planes_2x2(x: &[i8], y: &mut [i8], input: [usize; 2], output: [usize; 2]) {
        if super::Isa::best() == super::Isa::Armv7Neon {
            // SAFETY: `Isa::Armv7Neon` is only chosen where the CPU has NEON.
            planes_2x2(x, y, input, output, |a, b, out| unsafe { arm::pool_2x2_i8(a, b, out) });
        } else {
            planes_2x2(x, y, input, output, Self::pool_2x2);
        }
    }
}

/// 32-bit ARM NEON's rows: int8 eight outputs a step (VLD2 splits each row's even and odd values,
/// three VMAX), f32 four (see [`arm::pool_2x2_f32`]), in inline assembly as [`super::micro`]'s
/// 32-bit kernels; the last step of a row overlaps the one before, and a row shorter than a step
/// takes one where the input goes on past it.
#[cfg(target_arch = "arm")]
mod arm {
    use super::{keep, pool_2x2_scalar};

    /// Eight outputs from 16 values of each row.
    ///
    /// # Safety
    /// 16 values readable from `a` and from `b`, 8 writable at `out`; the CPU has NEON.
    #[inline(always)]
    unsafe fn eight(a: *const i8, b: *const i8, out: *mut i8) {
        // SAFETY: the caller's contract.
        unsafe {
            std::arch::asm!(
                ".fpu neon",
                "vld2.8 {{d0, d1}}, [{a}]",
                "vld2.8 {{d2, d3}}, [{b}]",
                "vmax.s8 d0, d0, d1",
                "vmax.s8 d2, d2, d3",
                "vmax.s8 d0, d0, d2",
                "vst1.8 {{d0}}, [{out}]",
                a = in(reg) a,
                b = in(reg) b,
                out = in(reg) out,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _,
                options(nostack),
            );
        }
    }

    /// [`super::Pooled::pool_2x2`] for int8 on NEON.
    ///
    /// # Safety
    /// The CPU has NEON.
    #[inline]
    pub unsafe fn pool_2x2_i8(a: &[i8], b: &[i8], out: &mut [i8]) {
        let n = out.len();
        if n < 8 && a.len() >= 16 && b.len() >= 16 {
            let mut lanes = [0i8; 8];
            // SAFETY: 16 values in each of a and b (checked), 8 in `lanes`; NEON by the contract.
            unsafe { eight(a.as_ptr(), b.as_ptr(), lanes.as_mut_ptr()) };
            keep(&lanes, out);
            return;
        }
        let (a, b) = (&a[..2 * n], &b[..2 * n]);
        let mut i = 0;
        while i < n && n >= 8 {
            let at = i.min(n - 8);
            // SAFETY: 16 values from 2at, at + 8 <= n, in each row; 8 outputs from at.
            unsafe { eight(a.as_ptr().add(2 * at), b.as_ptr().add(2 * at), out.as_mut_ptr().add(at)) };
            i += 8;
        }
        pool_2x2_scalar(a, b, out, i.min(n));
    }

    /// Four f32 outputs from 8 values of each row: VLD2 splits the even and odd values, and each
    /// step of the fold is VCGT then VBSL (`m < v` picks v, bit for bit: NaNs skipped, the first of
    /// two zeros kept, as `max_of`). 32-bit NEON flushes subnormals to zero in its comparisons, so
    /// the inputs are checked for them on the way (zero as a float, not zero as bits, once the sign
    /// is shifted out): returns nonzero where one is, and the caller then folds the row in scalar
    /// code.
    ///
    /// # Safety
    /// 8 values readable from `a` and from `b`, 4 writable at `out`; the CPU has NEON.
    #[inline(always)]
    unsafe fn four_f32(a: *const f32, b: *const f32, out: *mut f32) -> u32 {
        let (low, high): (u32, u32);
        // SAFETY: the caller's contract.
        unsafe {
            std::arch::asm!(
                ".fpu neon",
                "vld2.32 {{d0, d1, d2, d3}}, [{a}]",
                "vld2.32 {{d4, d5, d6, d7}}, [{b}]",
                "vdup.32 q4, {lowest}",
                "vceq.f32 q7, q0, #0",
                "vand q7, q7, q0",
                "vceq.f32 q6, q1, #0",
                "vand q6, q6, q1",
                "vorr q7, q7, q6",
                "vceq.f32 q6, q2, #0",
                "vand q6, q6, q2",
                "vorr q7, q7, q6",
                "vceq.f32 q6, q3, #0",
                "vand q6, q6, q3",
                "vorr q7, q7, q6",
                "vshl.i32 q7, q7, #1",
                "vorr d14, d14, d15",
                "vmov {low}, {high}, d14",
                "vcgt.f32 q5, q0, q4",
                "vbsl q5, q0, q4",
                "vcgt.f32 q4, q1, q5",
                "vbsl q4, q1, q5",
                "vcgt.f32 q5, q2, q4",
                "vbsl q5, q2, q4",
                "vcgt.f32 q4, q3, q5",
                "vbsl q4, q3, q5",
                "vst1.32 {{d8, d9}}, [{out}]",
                a = in(reg) a,
                b = in(reg) b,
                out = in(reg) out,
                lowest = in(reg) f32::MIN.to_bits(),
                low = out(reg) low,
                high = out(reg) high,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _, out("d14") _, out("d15") _,
                options(nostack),
            );
        }
        low | high
    }

    /// [`super::Pooled::pool_2x2`] for f32 on NEON: four outputs a step as the int8 rows, the row
    /// folded again in scalar code where an input is subnormal.
    ///
    /// # Safety
    /// The CPU has NEON.
    #[inline]
    pub unsafe fn pool_2x2_f32(a: &[f32], b: &[f32], out: &mut [f32]) {
        let n = out.len();
        if n < 4 && a.len() >= 8 && b.len() >= 8 {
            let mut lanes = [0f32; 4];
            // SAFETY: 8 values in each of a and b (checked), 4 in `lanes`; NEON by the contract.
            if unsafe { four_f32(a.as_ptr(), b.as_ptr(), lanes.as_mut_ptr()) } == 0 {
                keep(&lanes, out);
                return;
            }
        }
        let (a, b) = (&a[..2 * n], &b[..2 * n]);
        let (mut i, mut subnormal) = (0, 0);
        while i < n && n >= 4 {
            let at = i.min(n - 4);
            // SAFETY: 8 values from 2at, at + 4 <= n, in each row; 4 outputs from at.
            subnormal |= unsafe { four_f32(a.as_ptr().add(2 * at), b.as_ptr().add(2 * at), out.as_mut_ptr().add(at)) };
            i += 4;
        }
        pool_2x2_scalar(a, b, out, if subnormal != 0 { 0 } else { i.min(n) });
    }
}

impl Pooled for f32 {
    const LOWEST: f32 = f32::MIN;
    const ORDER_FREE: bool = false;

    #[cfg(target_arch = "aarch64")]
    fn pool_2x2(a: &[f32], b: &[f32], out: &mut [f32]) {
        use std::arch::aarch64::*;
        let n = out.len();
        // `max_of`, lane by lane: v where m < v, else m (NaNs skipped, the first zero kept).
        // SAFETY: NEON is in every aarch64 target's baseline.
        let max_of = |m: float32x4_t, v: float32x4_t| unsafe { vbslq_f32(vcltq_f32(m, v), v, m) };
        if n < 4 && a.len() >= 8 && b.len() >= 8 {
            // A short row, with room in the input for a whole vector: 4 outputs computed, n kept.
            let mut lanes = [0f32; 4];
            // SAFETY: 8 values in each of a and b (checked), 4 in `lanes`.
            unsafe {
                let (x, y) = (vld2q_f32(a.as_ptr()), vld2q_f32(b.as_ptr()));
                vst1q_f32(lanes.as_mut_ptr(), max_of(max_of(max_of(max_of(vdupq_n_f32(Self::LOWEST), x.0), x.1), y.0), y.1));
            }
            keep(&lanes, out);
            return;
        }
        let (a, b) = (&a[..2 * n], &b[..2 * n]);
        // 4 outputs at a time; a last step that would run past the row starts earlier, overlapping
        // the one before (an output depends on its inputs only); rows of fewer than 4 at the
        // input's end value by value.
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

    #[cfg(target_arch = "x86_64")]
    fn pool_planes_2x2(x: &[f32], y: &mut [f32], input: [usize; 2], output: [usize; 2]) {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is here (checked).
            unsafe { x86::planes_f32(x, y, input, output) };
        } else {
            planes_2x2(x, y, input, output, Self::pool_2x2);
        }
    }

    #[cfg(target_arch = "arm")]
    fn pool_planes_2x2(x: &[f32], y: &mut [f32], input: [usize; 2], output: [usize; 2]) {
        if super::Isa::best() == super::Isa::Armv7Neon {
            // SAFETY: `Isa::Armv7Neon` is only chosen where the CPU has NEON.
            planes_2x2(x, y, input, output, |a, b, out| unsafe { arm::pool_2x2_f32(a, b, out) });
        } else {
            planes_2x2(x, y, input, output, Self::pool_2x2);
        }
    }
}

/// The 2x2 rows on AVX-512, a whole row in one step or a few: masked loads and stores, so rows of
/// any length (fashion-cnn-s's are 14 and 7 outputs) run no scalar tail.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{planes_2x2, Pooled};
    use std::arch::x86_64::*;

    /// [`Pooled::pool_planes_2x2`] for int8.
    ///
    /// # Safety
    /// AVX-512BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn planes_i8(x: &[i8], y: &mut [i8], input: [usize; 2], output: [usize; 2]) {
        // SAFETY: the features are here by this function's contract.
        planes_2x2(x, y, input, output, |a, b, out| unsafe { pool_2x2_i8(a, b, out) });
    }

    /// [`Pooled::pool_planes_2x2`] for f32.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn planes_f32(x: &[f32], y: &mut [f32], input: [usize; 2], output: [usize; 2]) {
        // SAFETY: the feature is here by this function's contract.
        planes_2x2(x, y, input, output, |a, b, out| unsafe { pool_2x2_f32(a, b, out) });
    }

    /// 32 outputs a step: the two rows' maximum byte by byte, then each pair's as 16-bit lanes
    /// (both bytes sign-extended), narrowed back to bytes.
    ///
    /// # Safety
    /// AVX-512BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    pub unsafe fn pool_2x2_i8(a: &[i8], b: &[i8], out: &mut [i8]) {
        let n = out.len();
        let (a, b) = (&a[..2 * n], &b[..2 * n]);
        for i in (0..n).step_by(32) {
            let m = (n - i).min(32);
            let (inputs, outputs) = (u64::MAX >> (64 - 2 * m), u32::MAX >> (32 - m));
            // SAFETY: the masked lanes are inputs 2i .. 2i + 2m <= 2n of each row and outputs
            // i .. i + m <= n; masked-off lanes are not accessed.
            unsafe {
                let (x, y) = (_mm512_maskz_loadu_epi8(inputs, a.as_ptr().add(2 * i)), _mm512_maskz_loadu_epi8(inputs, b.as_ptr().add(2 * i)));
                // No NaN in integers: the maximum is the fold's in any order.
                let v = _mm512_max_epi8(x, y);
                let (even, odd) = (_mm512_srai_epi16::<8>(_mm512_slli_epi16::<8>(v)), _mm512_srai_epi16::<8>(v));
                _mm256_mask_storeu_epi8(out.as_mut_ptr().add(i), outputs, _mm512_cvtepi16_epi8(_mm512_max_epi16(even, odd)));
            }
        }
    }

    /// 16 outputs a step: each row's even and odd values apart (VPERMT2PS), then the fold's
    /// `max_of(m, v)`, `v` where `m < v` else `m`, which is VMAXPS(v, m) (the second operand
    /// for NaN and for zeros of both signs), in the fold's order.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn pool_2x2_f32(a: &[f32], b: &[f32], out: &mut [f32]) {
        let n = out.len();
        let (a, b) = (&a[..2 * n], &b[..2 * n]);
        let lanes: [i32; 16] = std::array::from_fn(|l| 2 * l as i32);
        // SAFETY: 16 values.
        let evens = unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) };
        let odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
        for i in (0..n).step_by(16) {
            let m = (n - i).min(16);
            let low = (u32::MAX >> (32 - 2 * m.min(8))) as u16;
            let high = if m > 8 { (u32::MAX >> (32 - 2 * (m - 8))) as u16 } else { 0 };
            // SAFETY: the masked lanes are inputs 2i .. 2i + 2m <= 2n of each row (16 from 2i, the
            // rest from 2i + 16) and outputs i .. i + m <= n; masked-off lanes are not accessed.
            unsafe {
                let row = |r: &[f32]| {
                    let p = r.as_ptr().add(2 * i);
                    let (lo, hi) = (_mm512_maskz_loadu_ps(low, p), _mm512_maskz_loadu_ps(high, p.wrapping_add(16)));
                    (_mm512_permutex2var_ps(lo, evens, hi), _mm512_permutex2var_ps(lo, odds, hi))
                };
                let ((a0, a1), (b0, b1)) = (row(a), row(b));
                let v = [a0, a1, b0, b1].into_iter().fold(_mm512_set1_ps(f32::LOWEST), |m, v| _mm512_max_ps(v, m));
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), (u32::MAX >> (32 - m)) as u16, v);
            }
        }
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
        T::pool_planes_2x2(x, y, [h, w], [oh, ow]);
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
            // Subnormals, which 32-bit NEON's comparisons flush to zero.
            1 => prop::sample::select(vec![f32::from_bits(1), -f32::from_bits(1), f32::from_bits(0x007f_ffff), -1e-39, 1e-39, f32::MIN_POSITIVE]),
        ]
    }

    proptest! {
        /// The 2x2 rows as planes run them (NEON on aarch64: whole vectors, the last one
        /// overlapping the one before; rows shorter than a vector by one vector where the input
        /// goes on past them, else value by value; AVX-512 masked rows on x86-64), with input
        /// values past them that they must not use, answer the scalar fold,
        /// bit for bit, NaNs, zeros of both signs and infinities included.
        #[test]
        fn rows_2x2_are_the_fold(
            f in prop::collection::vec((f32_value(), f32_value()), 0..80),
            i in prop::collection::vec((any::<i8>(), any::<i8>()), 0..80),
            past in [0usize..24, 0usize..24],
        ) {
            fn check<T: Pooled + std::fmt::Debug>(pairs: Vec<(T, T)>, past: usize, bits: impl Fn(T) -> u32) {
                let (a, b): (Vec<T>, Vec<T>) = pairs.into_iter().unzip();
                let (w, n) = (a.len(), (a.len() - past.min(a.len())) / 2);
                // One plane of the two rows, each `past` values (or one) longer than the row the
                // pooling reads, which it must not use: the first row followed by the second.
                let mut got = vec![T::LOWEST; n];
                if n > 0 {
                    T::pool_planes_2x2(&[a.as_slice(), b.as_slice()].concat(), &mut got, [2, w], [1, n]);
                }
                let mut want = vec![T::LOWEST; n];
                pool_2x2_scalar(&a, &b, &mut want, 0);
                assert_eq!(got.iter().map(|&v| bits(v)).collect::<Vec<_>>(), want.iter().map(|&v| bits(v)).collect::<Vec<_>>(), "{got:?} != {want:?}");
            }
            check(f, past[0], f32::to_bits);
            check(i, past[1], |v: i8| v as u8 as u32);
        }
    }
}

//! Element-wise f32 passes (activations, residual sums), a 16-lane dot product and int8 table
//! lookups, in explicit SIMD on aarch64 (and the lookups in AVX-512 VBMI on x86-64).
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

/// Swish in place, `v * sigmoid(beta * v)` value for value, with tract-linalg 0.23.9's aarch64
/// sigmoid computed in registers ([`neon::sigmoid`]): the values that scaling, tract's sigmoid
/// over the scaled copy and a multiplication give, without the copy and the call (in fashion-cnn-s's
/// float plan the sigmoid's loop alone was 147,000 of 836,000 instructions per inference under
/// qemu on Cortex-A72).
#[cfg(target_arch = "aarch64")]
pub fn swish(v: &mut [f32], beta: f32) {
    use std::arch::aarch64::*;
    // SAFETY (each intrinsic here): NEON is in every aarch64 target's baseline.
    let f = |v: float32x4_t| unsafe { vmulq_f32(v, neon::sigmoid(vmulq_n_f32(v, beta))) };
    let mut fours = v.chunks_exact_mut(4);
    for c in &mut fours {
        // SAFETY: 4 values.
        unsafe { vst1q_f32(c.as_mut_ptr(), f(vld1q_f32(c.as_ptr()))) };
    }
    // The last values as tract's kernel takes a tail: in a register of four, the rest zeros.
    let rest = fours.into_remainder();
    if !rest.is_empty() {
        let mut lanes = [0f32; 4];
        lanes[..rest.len()].copy_from_slice(rest);
        // SAFETY: 4 values each way.
        unsafe { vst1q_f32(lanes.as_mut_ptr(), f(vld1q_f32(lanes.as_ptr()))) };
        rest.copy_from_slice(&lanes[..rest.len()]);
    }
}

/// `out[i] = table[x[i] + 128]`: an int8 -> int8 function as a 256-entry table. On aarch64 16
/// values at a time with four 64-byte table lookups (TBL, then TBX for each further quarter), on
/// x86-64 with AVX-512 VBMI 64 at a time (two VPERMI2B), the last step overlapping the one
/// before; a plain loop elsewhere and for fewer values than a step.
///
/// # Panics
/// When `out` and `x` differ in length.
pub fn lookup(x: &[i8], table: &[i8; 256], out: &mut [i8]) {
    assert_eq!(x.len(), out.len(), "a lookup into an output of another length");
    #[cfg(target_arch = "aarch64")]
    if x.len() >= 16 {
        let n = x.len();
        use std::arch::aarch64::*;
        // SAFETY (each intrinsic): NEON is in every aarch64 target's baseline; the table's four
        // quarters are 64 of its 256 values each; every step reads and writes 16 values from
        // at <= n - 16.
        unsafe {
            let quarter = |q: usize| vld1q_s8_x4(table.as_ptr().add(64 * q));
            let (t0, t1, t2, t3) = (quarter(0), quarter(1), quarter(2), quarter(3));
            let (flip, step) = (vdupq_n_u8(0x80), vdupq_n_u8(64));
            let mut i = 0;
            while i < n {
                let at = i.min(n - 16);
                // x + 128 as an index: the sign bit flipped. An index past a quarter's 64 bytes
                // leaves the lane as it is (TBX; TBL gives 0).
                let index = veorq_u8(vreinterpretq_u8_s8(vld1q_s8(x.as_ptr().add(at))), flip);
                let r = vqtbl4q_s8(t0, index);
                let index = vsubq_u8(index, step);
                let r = vqtbx4q_s8(r, t1, index);
                let index = vsubq_u8(index, step);
                let r = vqtbx4q_s8(r, t2, index);
                let r = vqtbx4q_s8(r, t3, vsubq_u8(index, step));
                vst1q_s8(out.as_mut_ptr().add(at), r);
                i += 16;
            }
        }
        return;
    }
    #[cfg(target_arch = "arm")]
    if x.len() >= 16 && super::Isa::best() == super::Isa::Armv7Neon {
        let n = x.len();
        // SAFETY: NEON is here (`Isa::Armv7Neon` is only chosen where the CPU has it); whole steps
        // of 16 from 0, then one more ending at n where n is not a multiple of 16 (n >= 16).
        unsafe {
            arm::lookup(x.as_ptr(), table, out.as_mut_ptr(), n / 16);
            if !n.is_multiple_of(16) {
                arm::lookup(x.as_ptr().add(n - 16), table, out.as_mut_ptr().add(n - 16), 1);
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if x.len() >= 64 && std::arch::is_x86_feature_detected!("avx512vbmi") && std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: AVX-512 VBMI and BW are here (checked); equal lengths of at least 64 (asserted
        // and checked).
        unsafe { x86::lookup(x, table, out) };
        return;
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = table[(v as u8 ^ 0x80) as usize];
    }
}

#[cfg(target_arch = "arm")]
mod arm {
    /// [`super::lookup`] 16 values a step, `steps` steps, in inline assembly as
    /// [`super::super::micro`]'s 32-bit kernels: VTBL/VTBX take a table of at most 32 bytes, so
    /// the 256 values are eight segments. The first four stay in d16-d31 (which the compiler never
    /// allocates on this target), the last four are loaded into d0-d3 in turn at each step. The
    /// index (the value with its sign bit flipped, x + 128) is lowered by 32 for each segment; an
    /// index past a segment's 32 bytes leaves the lane as it is (VTBX).
    ///
    /// # Safety
    /// `16 * steps` values readable from `x` and writable at `out`; `steps > 0`; the CPU has NEON.
    pub unsafe fn lookup(x: *const i8, table: &[i8; 256], out: *mut i8, steps: usize) {
        // SAFETY: the caller's contract; the table's 256 bytes read.
        unsafe {
            std::arch::asm!(
                ".fpu neon",
                "vld1.8 {{d16, d17, d18, d19}}, [{t}]!",
                "vld1.8 {{d20, d21, d22, d23}}, [{t}]!",
                "vld1.8 {{d24, d25, d26, d27}}, [{t}]!",
                "vld1.8 {{d28, d29, d30, d31}}, [{t}]!",
                "vmov.i8 q2, #0x80",
                "vmov.i8 q3, #32",
                "2:",
                "vld1.8 {{d8, d9}}, [{x}]!",
                "veor q4, q4, q2",
                "vtbl.8 d10, {{d16, d17, d18, d19}}, d8",
                "vtbl.8 d11, {{d16, d17, d18, d19}}, d9",
                "vsub.i8 q4, q4, q3",
                "vtbx.8 d10, {{d20, d21, d22, d23}}, d8",
                "vtbx.8 d11, {{d20, d21, d22, d23}}, d9",
                "vsub.i8 q4, q4, q3",
                "vtbx.8 d10, {{d24, d25, d26, d27}}, d8",
                "vtbx.8 d11, {{d24, d25, d26, d27}}, d9",
                "vsub.i8 q4, q4, q3",
                "vtbx.8 d10, {{d28, d29, d30, d31}}, d8",
                "vtbx.8 d11, {{d28, d29, d30, d31}}, d9",
                "vld1.8 {{d0, d1, d2, d3}}, [{t}]!",
                "vsub.i8 q4, q4, q3",
                "vtbx.8 d10, {{d0, d1, d2, d3}}, d8",
                "vtbx.8 d11, {{d0, d1, d2, d3}}, d9",
                "vld1.8 {{d0, d1, d2, d3}}, [{t}]!",
                "vsub.i8 q4, q4, q3",
                "vtbx.8 d10, {{d0, d1, d2, d3}}, d8",
                "vtbx.8 d11, {{d0, d1, d2, d3}}, d9",
                "vld1.8 {{d0, d1, d2, d3}}, [{t}]!",
                "vsub.i8 q4, q4, q3",
                "vtbx.8 d10, {{d0, d1, d2, d3}}, d8",
                "vtbx.8 d11, {{d0, d1, d2, d3}}, d9",
                "vld1.8 {{d0, d1, d2, d3}}, [{t}]",
                "sub {t}, {t}, #96",
                "vsub.i8 q4, q4, q3",
                "vtbx.8 d10, {{d0, d1, d2, d3}}, d8",
                "vtbx.8 d11, {{d0, d1, d2, d3}}, d9",
                "vst1.8 {{d10, d11}}, [{out}]!",
                "subs {n}, {n}, #1",
                "bne 2b",
                t = inout(reg) table.as_ptr() => _,
                x = inout(reg) x => _,
                out = inout(reg) out => _,
                n = inout(reg) steps => _,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                out("d8") _, out("d9") _, out("d10") _, out("d11") _,
                options(nostack),
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::lookup`] 64 values at a time: VPERMI2B picks each from one half of the table by
    /// its low 7 bits, and the sign bit picks the half (a negative value, x + 128 < 128, the lower);
    /// the last 64 overlapping the ones before.
    ///
    /// # Safety
    /// AVX-512 VBMI and BW; `x` and `out` of the same length, at least 64.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub unsafe fn lookup(x: &[i8], table: &[i8; 256], out: &mut [i8]) {
        let n = x.len();
        assert!(n >= 64 && out.len() == n, "lookup lengths");
        // SAFETY: 4 x 64 bytes of the table; every step reads and writes 64 values from at <= n - 64.
        unsafe {
            let t: [__m512i; 4] = std::array::from_fn(|q| _mm512_loadu_si512(table.as_ptr().add(64 * q).cast()));
            let mut i = 0;
            while i < n {
                let at = i.min(n - 64);
                let v = _mm512_loadu_si512(x.as_ptr().add(at).cast());
                let (low, high) = (_mm512_permutex2var_epi8(t[0], v, t[1]), _mm512_permutex2var_epi8(t[2], v, t[3]));
                let negative = _mm512_movepi8_mask(v);
                _mm512_storeu_si512(out.as_mut_ptr().add(at).cast(), _mm512_mask_blend_epi8(negative, high, low));
                i += 64;
            }
        }
    }
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
pub(super) mod neon {
    use std::arch::aarch64::*;

    /// tract-linalg 0.23.9's `arm64simd_sigmoid_f32_4n`, instruction for instruction: the input
    /// clamped to [-14.5, 14.5] (FMAX and FMIN: NaN stays NaN), then `x p(x^2) / q(x^2) + 0.5`,
    /// both polynomials by fused multiply-adds from the highest coefficient, so each value is
    /// tract's to the bit.
    #[inline(always)]
    pub fn sigmoid(v: float32x4_t) -> float32x4_t {
        const NUM: [f32; 7] = [-4.433153405e-18, 1.169974371e-14, -1.875289645e-11, 4.257889523e-8, 0.00004811817576, 0.008163842030, 0.2499999971];
        const DEN: [f32; 4] = [3.922935744e-6, 0.001524872358, 0.1159886749, 1.0];
        // SAFETY (each intrinsic here): NEON is in every aarch64 target's baseline.
        unsafe {
            let x = vminq_f32(vmaxq_f32(v, vdupq_n_f32(-14.5)), vdupq_n_f32(14.5));
            let x2 = vmulq_f32(x, x);
            // FMLA acc, x2, c: acc + x2 * c, fused; tract starts each polynomial from its second
            // coefficient plus x2 times the first.
            let p = NUM[1..].iter().fold(vdupq_n_f32(NUM[0]), |p, &c| vfmaq_f32(vdupq_n_f32(c), x2, p));
            let q = DEN[1..].iter().fold(vdupq_n_f32(DEN[0]), |q, &c| vfmaq_f32(vdupq_n_f32(c), x2, q));
            vaddq_f32(vdivq_f32(vmulq_f32(x, p), q), vdupq_n_f32(0.5))
        }
    }

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

        /// Swish in registers is what the direct path computed with tract's sigmoid (a scaled
        /// copy, tract-linalg's `Sigmoid` over it, a multiplication), bit for bit, at every length
        /// (a tail of 1 to 3 values included), across the sigmoid's clamp and at NaN, zeros,
        /// infinities and subnormals.
        #[cfg(target_arch = "aarch64")]
        #[test]
        fn swish_in_registers_is_tracts(v in prop::collection::vec(prop_oneof![3 => value(), 2 => -16f32..16.0, 1 => prop::sample::select(vec![14.5, -14.5, 14.499999, -14.500001])], 0..40), beta in prop_oneof![Just(1.0f32), 0.25f32..3.0]) {
            let mut got = v.clone();
            swish(&mut got, beta);
            let mut scaled_copy = vec![0f32; v.len()];
            scaled(&mut scaled_copy, &v, beta);
            tract_nnef::tract_core::tract_linalg::Func::Sigmoid.ew_f32().unwrap().run(&mut scaled_copy).unwrap();
            let mut want = v.clone();
            mul(&mut want, &scaled_copy);
            prop_assert!(same(&got, &want), "{:?} != {:?}", got, want);
        }

        /// The lookup (NEON on aarch64 and 32-bit ARM: whole vectors, the last overlapping) answers the table at
        /// every length.
        #[test]
        fn lookups_are_the_table(x in prop::collection::vec(any::<i8>(), 0..200), seed in any::<u64>()) {
            let table: [i8; 256] = std::array::from_fn(|i| (seed.rotate_left(i as u32 % 64) as i8).wrapping_add(i as i8));
            let mut got = vec![0i8; x.len()];
            lookup(&x, &table, &mut got);
            let want: Vec<i8> = x.iter().map(|&v| table[(v as i16 + 128) as usize]).collect();
            prop_assert_eq!(got, want);
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

//! The int8 residual Add of two tensors with their own quantization, requantized to the output's,
//! with exactly tract 0.23.9's arithmetic for a quantized `Add`: each operand dequantized in f32
//! (`(q - zero_point) * scale`), summed, divided by the output scale, the output zero point added,
//! rounded to nearest even and saturated to int8. tract does this element by element through
//! temporary f32 tensors; these kernels do it in registers.

use super::Isa;

/// The zero point and scale of an int8 tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quant {
    pub zero_point: i32,
    pub scale: f32,
}

/// `out[i] = a[i] + b[i]` in the real numbers the int8 values stand for. All three have one length.
pub fn qadd(isa: Isa, a: &[i8], qa: Quant, b: &[i8], qb: Quant, qc: Quant, out: &mut [i8]) {
    let n = out.len().min(a.len()).min(b.len());
    let (a, b, out) = (&a[..n], &b[..n], &mut out[..n]);
    let done = match isa {
        // SAFETY: equal lengths; NEON is architectural on aarch64, AVX2 was detected.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDot => unsafe { aarch64::qadd(a, qa, b, qb, qc, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => unsafe { x86::qadd(a, qa, b, qb, qc, out) },
        // SAFETY: equal lengths; `Isa::Armv7Neon` is only chosen where the CPU has NEON.
        #[cfg(target_arch = "arm")]
        Isa::Armv7Neon if arm::exact(qa, qb, qc) => unsafe { arm::qadd(a, qa, b, qb, qc, out) },
        _ => 0,
    };
    for ((o, &a), &b) in out[done..].iter_mut().zip(&a[done..]).zip(&b[done..]) {
        *o = qadd_one(a, qa, b, qb, qc);
    }
}

/// The reference: one element.
#[inline]
pub fn qadd_one(a: i8, qa: Quant, b: i8, qb: Quant, qc: Quant) -> i8 {
    let a = (a as f32 - qa.zero_point as f32) * qa.scale;
    let b = (b as f32 - qb.zero_point as f32) * qb.scale;
    let c = (a + b) / qc.scale + qc.zero_point as f32;
    super::round_saturating(c).clamp(-128, 127) as i8
}

#[cfg(target_arch = "aarch64")]
mod aarch64 {
    use super::Quant;
    use std::arch::aarch64::*;

    /// 8 elements at a time; returns how many were done.
    ///
    /// # Safety
    /// Equal lengths.
    #[target_feature(enable = "neon")]
    pub unsafe fn qadd(a: &[i8], qa: Quant, b: &[i8], qb: Quant, qc: Quant, out: &mut [i8]) -> usize {
        unsafe {
            let dequant = |v: int16x4_t, q: Quant| {
                vmulq_n_f32(vsubq_f32(vcvtq_f32_s32(vmovl_s16(v)), vdupq_n_f32(q.zero_point as f32)), q.scale)
            };
            let (sc, zc) = (vdupq_n_f32(qc.scale), vdupq_n_f32(qc.zero_point as f32));
            let requant = |x: float32x4_t, y: float32x4_t| vcvtnq_s32_f32(vaddq_f32(vdivq_f32(vaddq_f32(x, y), sc), zc));
            let mut i = 0;
            while i + 8 <= out.len() {
                let (va, vb) = (vmovl_s8(vld1_s8(a.as_ptr().add(i))), vmovl_s8(vld1_s8(b.as_ptr().add(i))));
                let lo = requant(dequant(vget_low_s16(va), qa), dequant(vget_low_s16(vb), qb));
                let hi = requant(dequant(vget_high_s16(va), qa), dequant(vget_high_s16(vb), qb));
                vst1_s8(out.as_mut_ptr().add(i), vqmovn_s16(vcombine_s16(vqmovn_s32(lo), vqmovn_s32(hi))));
                i += 8;
            }
            i
        }
    }
}

#[cfg(target_arch = "arm")]
mod arm {
    use super::Quant;

    /// Whether NEON gives the reference's bytes with these scales. NEON flushes subnormals to zero
    /// where the scalar code (VFP) keeps them: with every scale normal and the operands' at least
    /// 2^-100, each dequantized value, and each sum of two, is 0 or normal (a sum is a multiple of
    /// the smaller operand's unit in the last place, at least 2^-123), and the quotient goes
    /// through VFP as in the scalar code; a subnormal quotient then rounds to the same integer
    /// whether flushed or not.
    pub fn exact(qa: Quant, qb: Quant, qc: Quant) -> bool {
        let operand = |s: f32| s.is_normal() && s >= 2f32.powi(-100);
        operand(qa.scale) && operand(qb.scale) && qc.scale.is_normal()
    }

    /// 8 elements at a time, [`super::qadd_one`]'s steps in NEON but for the division, which
    /// 32-bit NEON does not have: VFP's VDIV per lane (the S registers alias the quad registers'
    /// lanes). The constants live in d16-d31, which the compiler never allocates on this target
    /// (see [`crate::kernels::micro`]'s 32-bit kernel). Returns how many were done.
    ///
    /// # Safety
    /// Equal lengths; the CPU has NEON; [`exact`] holds for the scales.
    pub unsafe fn qadd(a: &[i8], qa: Quant, b: &[i8], qb: Quant, qc: Quant, out: &mut [i8]) -> usize {
        let steps = out.len() / 8;
        if steps == 0 {
            return 0;
        }
        let consts: [f32; 8] = [qa.zero_point as f32, qa.scale, qb.zero_point as f32, qb.scale, qc.zero_point as f32, 4_194_304.0, 12_582_912.0, qc.scale];
        // SAFETY: `steps * 8` bytes of `a` and `b` read, of `out` written; `consts` read.
        unsafe {
            std::arch::asm!(
                ".fpu neon",
                // consts: [zero point a, scale a, zero point b, scale b, zero point c, 2^22, 1.5 * 2^23, scale c].
                "vldr s31, [{consts}, #28]",
                "vld1.32 {{d30, d31}}, [{consts}]!",
                "vld1.32 {{d28, d29}}, [{consts}]",
                "vdup.32 q8, d30[0]",
                "vdup.32 q9, d30[1]",
                "vdup.32 q10, d31[0]",
                "vdup.32 q11, d31[1]",
                "vdup.32 q12, d28[0]",
                "vdup.32 q13, d28[1]",
                "vdup.32 q15, d29[0]",
                "vneg.f32 q14, q13",
                "2:",
                "vld1.8 {{d0}}, [{a}]!",
                "vld1.8 {{d4}}, [{b}]!",
                "vmovl.s8 q0, d0",
                "vmovl.s8 q2, d4",
                "vmovl.s16 q1, d1",
                "vmovl.s16 q0, d0",
                "vmovl.s16 q3, d5",
                "vmovl.s16 q2, d4",
                "vcvt.f32.s32 q0, q0",
                "vcvt.f32.s32 q1, q1",
                "vcvt.f32.s32 q2, q2",
                "vcvt.f32.s32 q3, q3",
                "vsub.f32 q0, q0, q8",
                "vsub.f32 q1, q1, q8",
                "vsub.f32 q2, q2, q10",
                "vsub.f32 q3, q3, q10",
                "vmul.f32 q0, q0, q9",
                "vmul.f32 q1, q1, q9",
                "vmul.f32 q2, q2, q11",
                "vmul.f32 q3, q3, q11",
                "vadd.f32 q0, q0, q2",
                "vadd.f32 q1, q1, q3",
                "vdiv.f32 s0, s0, s31",
                "vdiv.f32 s1, s1, s31",
                "vdiv.f32 s2, s2, s31",
                "vdiv.f32 s3, s3, s31",
                "vdiv.f32 s4, s4, s31",
                "vdiv.f32 s5, s5, s31",
                "vdiv.f32 s6, s6, s31",
                "vdiv.f32 s7, s7, s31",
                "vadd.f32 q0, q0, q12",
                "vadd.f32 q1, q1, q12",
                "vmax.f32 q0, q0, q14",
                "vmax.f32 q1, q1, q14",
                "vmin.f32 q0, q0, q13",
                "vmin.f32 q1, q1, q13",
                "vadd.f32 q0, q0, q15",
                "vadd.f32 q1, q1, q15",
                "vsub.f32 q0, q0, q15",
                "vsub.f32 q1, q1, q15",
                "vcvt.s32.f32 q0, q0",
                "vcvt.s32.f32 q1, q1",
                "vqmovn.s32 d0, q0",
                "vqmovn.s32 d1, q1",
                "vqmovn.s16 d0, q0",
                "vst1.8 {{d0}}, [{out}]!",
                "subs {n}, {n}, #1",
                "bne 2b",
                consts = inout(reg) consts.as_ptr() => _,
                a = inout(reg) a.as_ptr() => _,
                b = inout(reg) b.as_ptr() => _,
                out = inout(reg) out.as_mut_ptr() => _,
                n = inout(reg) steps => _,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                out("d14") _, out("d15") _,
                options(nostack),
            );
        }
        steps * 8
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Quant;
    use std::arch::x86_64::*;

    /// 8 elements at a time; returns how many were done.
    ///
    /// # Safety
    /// Equal lengths; the CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn qadd(a: &[i8], qa: Quant, b: &[i8], qb: Quant, qc: Quant, out: &mut [i8]) -> usize {
        unsafe {
            let dequant = |p: *const i8, q: Quant| {
                let v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i));
                _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(q.zero_point as f32)), _mm256_set1_ps(q.scale))
            };
            // CVTPS2DQ gives i32::MIN out of range where Rust's `as` saturates: clamp first.
            let (lo, hi) = (_mm256_set1_ps(-2147483520.0), _mm256_set1_ps(2147483520.0));
            let mut i = 0;
            while i + 8 <= out.len() {
                let c = _mm256_div_ps(_mm256_add_ps(dequant(a.as_ptr().add(i), qa), dequant(b.as_ptr().add(i), qb)), _mm256_set1_ps(qc.scale));
                let c = _mm256_add_ps(c, _mm256_set1_ps(qc.zero_point as f32));
                // Round to nearest even: the default MXCSR mode, which Rust never changes.
                let c = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(c, lo), hi));
                let c16 = _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256::<1>(c));
                _mm_storel_epi64(out.as_mut_ptr().add(i) as *mut __m128i, _mm_packs_epi16(c16, c16));
                i += 8;
            }
            i
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn quant() -> impl Strategy<Value = Quant> {
        // The tiny scales (below 2^-100, and subnormal) take 32-bit NEON's scalar path (`arm::exact`).
        (-128i32..128, prop_oneof![8 => 0.001f32..0.5, 1 => Just(1e-6f32), 1 => Just(40.0f32), 1 => Just(1e-35f32), 1 => Just(1e-40f32)])
            .prop_map(|(zero_point, scale)| Quant { zero_point, scale })
    }

    proptest! {
        /// Every kernel this CPU runs gives the reference's bytes.
        #[test]
        fn every_kernel_matches_the_reference(
            ab in proptest::collection::vec((any::<i8>(), any::<i8>()), 0..50),
            qa in quant(), qb in quant(), qc in quant(),
        ) {
            let (a, b): (Vec<i8>, Vec<i8>) = ab.into_iter().unzip();
            let expected: Vec<i8> = a.iter().zip(&b).map(|(&x, &y)| qadd_one(x, qa, y, qb, qc)).collect();
            for isa in Isa::available() {
                let mut out = vec![0i8; a.len()];
                qadd(isa, &a, qa, &b, qb, qc, &mut out);
                prop_assert_eq!(&out, &expected, "{:?}", isa);
            }
        }
    }
}

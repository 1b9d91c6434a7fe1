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
        (-128i32..128, prop_oneof![0.001f32..0.5, Just(1e-6f32), Just(40.0f32)]).prop_map(|(zero_point, scale)| Quant { zero_point, scale })
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

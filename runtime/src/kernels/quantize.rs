//! The float input's quantization to int8, with exactly tract 0.23.9's arithmetic for a `Cast` from
//! f32 to a quantized int8 type: `x / scale + zero_point` in f32, rounded to nearest even, saturated
//! to int8, NaN to 0. tract does it element by element through a generic cast; on MobileNetV2's
//! 224x224x3 input that took about 7% of the int8 plan's time on x86 and 1.7 M instructions on a
//! Cortex-A76.

use super::Isa;

/// `out[i]`, the int8 value standing for `x[i]` with this zero point and scale. Both have one length.
pub fn quantize(isa: Isa, x: &[f32], zero_point: i32, scale: f32, out: &mut [i8]) {
    let n = out.len().min(x.len());
    let (x, out) = (&x[..n], &mut out[..n]);
    let done = match isa {
        // SAFETY: equal lengths; NEON is architectural on aarch64, AVX2 was detected.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDot => unsafe { aarch64::quantize(x, zero_point, scale, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => unsafe { x86::quantize(x, zero_point, scale, out) },
        _ => 0,
    };
    for (o, &v) in out[done..].iter_mut().zip(&x[done..]) {
        *o = quantize_one(v, zero_point, scale);
    }
}

/// The reference: one element.
#[inline]
pub fn quantize_one(x: f32, zero_point: i32, scale: f32) -> i8 {
    super::round_saturating(x / scale + zero_point as f32).clamp(-128, 127) as i8
}

#[cfg(target_arch = "aarch64")]
mod aarch64 {
    use std::arch::aarch64::*;

    /// 8 elements at a time (FDIV, FADD, then FCVTNS: round to nearest even, saturating, NaN to 0;
    /// SQXTN twice); returns how many were done.
    ///
    /// # Safety
    /// Equal lengths.
    #[target_feature(enable = "neon")]
    pub unsafe fn quantize(x: &[f32], zero_point: i32, scale: f32, out: &mut [i8]) -> usize {
        unsafe {
            let (s, z) = (vdupq_n_f32(scale), vdupq_n_f32(zero_point as f32));
            let q = |p: *const f32| vqmovn_s32(vcvtnq_s32_f32(vaddq_f32(vdivq_f32(vld1q_f32(p), s), z)));
            let mut i = 0;
            while i + 8 <= out.len() {
                let p = x.as_ptr().add(i);
                vst1_s8(out.as_mut_ptr().add(i), vqmovn_s16(vcombine_s16(q(p), q(p.add(4)))));
                i += 8;
            }
            i
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 8 elements at a time; returns how many were done. NaN lanes are zeroed, the rest clamped to
    /// the int8 range (integers, so clamping before rounding changes nothing) and rounded to nearest
    /// even by CVTPS2DQ (the default MXCSR mode, which Rust never changes).
    ///
    /// # Safety
    /// Equal lengths; the CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize(x: &[f32], zero_point: i32, scale: f32, out: &mut [i8]) -> usize {
        unsafe {
            let (s, z) = (_mm256_set1_ps(scale), _mm256_set1_ps(zero_point as f32));
            let (lo, hi) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
            let mut i = 0;
            while i + 8 <= out.len() {
                let v = _mm256_add_ps(_mm256_div_ps(_mm256_loadu_ps(x.as_ptr().add(i)), s), z);
                let v = _mm256_and_ps(v, _mm256_cmp_ps::<_CMP_ORD_Q>(v, v));
                let v = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
                let v16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                _mm_storel_epi64(out.as_mut_ptr().add(i) as *mut __m128i, _mm_packs_epi16(v16, v16));
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
    use tract_nnef::internal::*;

    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            -3f32..3.0,
            any::<f32>(),
            Just(f32::NAN),
            Just(f32::INFINITY),
            Just(f32::NEG_INFINITY),
            Just(-0.0f32),
            (-300i32..300).prop_map(|k| k as f32 + 0.5),
        ]
    }

    proptest! {
        /// Every kernel this CPU runs gives tract's cast from f32 to its int8 type, byte for byte
        /// (ties, NaN, infinities and huge values included).
        #[test]
        fn every_kernel_matches_tracts_cast(
            x in proptest::collection::vec(value(), 0..40),
            zero_point in -128i32..128,
            scale in prop_oneof![0.001f32..0.5, Just(1e-6f32), Just(0.5f32), Just(40.0f32)],
        ) {
            let to = DatumType::QI8(QParams::ZpScale { zero_point, scale });
            let cast = tensor1(&x).cast_to_dt(to).unwrap().into_owned();
            // SAFETY: quantized int8 is stored as i8.
            let expected = unsafe { cast.try_as_plain_ram().unwrap().as_slice_unchecked::<i8>().to_vec() };
            let reference: Vec<i8> = x.iter().map(|&v| quantize_one(v, zero_point, scale)).collect();
            prop_assert_eq!(&reference, &expected);
            for isa in Isa::available() {
                let mut out = vec![0i8; x.len()];
                quantize(isa, &x, zero_point, scale, &mut out);
                prop_assert_eq!(&out, &expected, "{:?}", isa);
            }
        }
    }
}

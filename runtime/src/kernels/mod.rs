//! Perch's int8 convolution kernels: what [`crate::ops::qconv`] runs inside an optimized plan.
//!
//! tract 0.23.9's quantized convolution materializes a whole im2col matrix, packs it, and leaves the
//! per-channel requantization unfused: on a Raspberry Pi 4 class core an int8 plan executes more
//! instructions than the float one. These kernels pack only a few output pixels at a time from a
//! channels-last copy of the input (or read it in place for pointwise convolutions), run an
//! architecture microkernel on a tile of output channels by pixels, and requantize each tile as it
//! leaves the registers.
//!
//! One reference ([`micro::portable`] and the scalar requantization here) defines the results; the
//! NEON (SMULL/SADALP), NEON dot-product (SDOT, chosen at run time) and AVX2 microkernels are
//! property-tested against it, and the whole convolution against tract's own quantized `Conv`.

pub mod add;
pub mod conv;
pub mod depthwise;
pub mod fconv;
pub mod layout;
pub mod micro;
pub mod pool;
pub mod quantize;
pub mod vector;
pub mod winograd;
#[cfg(test)]
mod tests;

pub use conv::{ConvKernelError, Geometry, Layout, QConvKernel};

use tract_nnef::internal::tract_linalg::Scaler;

/// An instruction set the microkernels are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust: any CPU, and the reference.
    Portable,
    /// aarch64 Advanced SIMD: SMULL/SMLAL2 into int16, SADALP into int32 (Cortex-A53, A72).
    Neon,
    /// aarch64 with the ARMv8.2 dot product: SDOT (Cortex-A55, A76, Neoverse).
    NeonDot,
    /// x86-64 with AVX2.
    Avx2,
    /// x86-64 with AVX-512 VNNI (VPDPBUSD), AVX512VL and AVX512BW (Ice Lake and later, Zen 4): 256-bit
    /// registers, 512-bit ones for the channels-last lane kernel; AVX2 elsewhere.
    Avx512Vnni,
    /// 32-bit ARM with NEON (Raspberry Pi 2/3 and Zero 2 running a 32-bit OS).
    Armv7Neon,
}

impl Isa {
    /// Every instruction set this CPU runs, the reference first.
    pub fn available() -> Vec<Isa> {
        let mut isas = vec![Isa::Portable];
        #[cfg(target_arch = "aarch64")]
        {
            isas.push(Isa::Neon);
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                isas.push(Isa::NeonDot);
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            isas.push(Isa::Avx2);
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                isas.push(Isa::Avx512Vnni);
            }
        }
        #[cfg(all(target_arch = "arm", target_os = "linux"))]
        {
            // `is_arm_feature_detected!` is not stable: the kernel's HWCAP says whether NEON is there.
            const HWCAP_NEON: libc::c_ulong = 1 << 12;
            // SAFETY: getauxval has no preconditions.
            if unsafe { libc::getauxval(libc::AT_HWCAP) } & HWCAP_NEON != 0 {
                isas.push(Isa::Armv7Neon);
            }
        }
        isas
    }

    /// The fastest instruction set this CPU runs, unless `PERCH_KERNELS` names another one this CPU
    /// runs (`portable`, `neon`, `neon-dot`, `avx2`, `avx512-vnni`: for benchmarks and tests).
    pub fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(Isa::choose)
    }

    fn choose() -> Isa {
        let available = Isa::available();
        if let Ok(name) = std::env::var("PERCH_KERNELS")
            && let Some(isa) = available.iter().find(|isa| isa.name() == name)
        {
            return *isa;
        }
        *available.last().expect("the portable kernel is always available")
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Neon => "neon",
            Isa::NeonDot => "neon-dot",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::Armv7Neon => "armv7-neon",
        }
    }
}

/// `v` rounded to the nearest integer, ties to even, for a result that is then clamped to int8: the
/// same int8 as `v.round_ties_even() as i32` (saturating) once clamped. aarch64 rounds with one
/// instruction (FRINTN); 32-bit ARM has none and calls libm's `rintf` (15% of fashion-resnet's int8
/// instructions on Cortex-A7), and baseline x86-64 (without SSE4.1) calls `roundevenf`, so
/// elsewhere the rounding is done by adding and subtracting 1.5 * 2^23 (exact under the default
/// round-to-nearest-even mode for |v| <= 2^22, and `v` is first clamped to that range, which changes
/// no result after the clamp to int8).
#[inline(always)]
pub fn round_saturating(v: f32) -> i32 {
    #[cfg(not(target_arch = "aarch64"))]
    {
        const SHIFT: f32 = 12_582_912.0;
        let v = v.clamp(-4_194_304.0, 4_194_304.0);
        ((v + SHIFT) - SHIFT) as i32
    }
    #[cfg(target_arch = "aarch64")]
    {
        v.round_ties_even() as i32
    }
}

/// `v` rounded to the nearest integer, ties to even, as an i32, for `|v| < 2^30` (what
/// [`micro::Uniform::row`] gives it): adding 1.5 * 2^52 rounds `v` to an integer (in the default
/// round-to-nearest-even mode, exact for |v| < 2^51) that the low 32 bits of the sum's mantissa hold
/// in two's complement. No libm call, no saturating conversion: it vectorizes.
#[inline(always)]
pub fn round_f64(v: f64) -> i32 {
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    (v + SHIFT).to_bits() as u32 as i32
}

/// How int32 accumulators become int8 outputs, exactly as tract 0.23.9 requantizes a quantized
/// convolution: the combined scale `kernel_scale * input_scale / output_scale` multiplies the
/// accumulator in f32 with ties rounded to even when it differs between channels; a single scale is
/// applied in fixed point (tract's `Scaler`, ties to even). The output zero point is added and the
/// result saturated to int8.
#[derive(Debug, Clone)]
pub enum Requant {
    PerChannel(Vec<f32>),
    Uniform(micro::Uniform),
}

impl Requant {
    /// From the combined scale of each output channel.
    pub fn new(scales: &[f32]) -> Requant {
        match scales.first() {
            Some(&s) if scales.iter().all(|&x| x == s) => Requant::Uniform(micro::Uniform::new(Scaler::new(s, tract_nnef::internal::tract_linalg::mmm::RoundingPolicy::Even))),
            _ => Requant::PerChannel(scales.to_vec()),
        }
    }

    /// The int8 output of channel `channel` for accumulator `acc` (bias included).
    #[inline]
    pub fn apply(&self, channel: usize, acc: i32, zero_point: i32) -> i8 {
        let scaled = match self {
            Requant::PerChannel(scales) => round_saturating(acc as f32 * scales[channel]),
            Requant::Uniform(uniform) => uniform.scaler * acc,
        };
        scaled.saturating_add(zero_point).clamp(-128, 127) as i8
    }
}

/// `count` items in groups of at most `most`, as even as they come (49 by at most 8: seven of 7;
/// by at most 5: nine of 5 and one of 4), as `(first, length)` in order.
pub(crate) fn even_groups(count: usize, most: usize) -> impl Iterator<Item = (usize, usize)> {
    let groups = count.div_ceil(most.max(1));
    (0..groups).scan(0, move |first, g| {
        let n = count / groups + usize::from(g < count % groups);
        *first += n;
        Some((*first - n, n))
    })
}

//! A depthwise int8 convolution on a channels-last input: sixteen channels of one output pixel at a
//! time, every kernel tap one 16-byte read of the input and one of the weights, products widened to
//! int16 two taps at a time (|x * w| <= 128 * 127, so two fit) and added into int32 lanes, then
//! requantized across the sixteen channels at once. NEON on aarch64 and AVX2 on x86-64; the
//! portable loop over fixed-size arrays is the reference they are property-tested against.
//!
//! The per-plane loop this replaces (still used for channel multipliers and narrow layers) walks
//! each channel's plane once per tap, its accumulators in memory, and a strided plane one element at
//! a time: on MobileNetV2 it spent about five instructions per multiply-accumulate.

use super::conv::Geometry;
use super::micro::Uniform;
use super::{Isa, Requant};

/// Channels computed together.
pub const LANES: usize = 16;
/// Output pixels requantized before being scattered to their channel planes.
const BLOCK: usize = 2 * LANES;
const _: () = assert!(LANES == 16);

/// A packed depthwise convolution (channel multiplier 1; or a dense one of a single input channel,
/// run on that channel replicated across the output channels).
#[derive(Debug, Clone)]
pub struct Depthwise {
    channels: usize,
    /// `[tap][channel]`, then [`LANES`] spare bytes so a last partial group reads inside.
    weights: Vec<i8>,
    /// Per channel, then [`LANES`] spare values.
    bias: Vec<i32>,
    scales: Vec<f32>,
    /// 3x3 kernels, for the SDOT and VPDPBUSD kernels (`dot::run3x3`, `vnni::run3x3`):
    /// `[kx][channel][ky]`, each channel's column of three weights and a zero, then [`LANES`] spare
    /// channels.
    #[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
    columns: Option<Vec<i8>>,
    /// For VPDPBUSD, which multiplies unsigned bytes by signed ones and so reads each input `x` as
    /// `x ^ 0x80` (`x + 128`): the bias less `128 * sum(w)`, per channel, then [`LANES`] spare values.
    #[cfg(target_arch = "x86_64")]
    unsigned_bias: Vec<i32>,
}

impl Depthwise {
    /// From OIHW weights of a depthwise kernel (`[channel][kh * kw]`, `shape` being `[kh, kw]`), the
    /// bias with the input zero point folded in, and the combined scale per channel (empty for a
    /// uniform [`Requant`]).
    pub fn new(channels: usize, shape: [usize; 2], kernel: &[i8], bias: &[i32], scales: &[f32]) -> Depthwise {
        let taps = shape[0] * shape[1];
        #[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
        let columns = (shape == [3, 3]).then(|| {
            let stride = 4 * (channels + LANES);
            let mut columns = vec![0i8; 3 * stride];
            for (ch, row) in kernel.chunks_exact(taps).enumerate() {
                for (t, &w) in row.iter().enumerate() {
                    columns[t % 3 * stride + 4 * ch + t / 3] = w;
                }
            }
            columns
        });
        let mut weights = vec![0i8; taps * channels + LANES];
        for (ch, row) in kernel.chunks_exact(taps).enumerate() {
            for (t, &w) in row.iter().enumerate() {
                weights[t * channels + ch] = w;
            }
        }
        let mut bias = bias.to_vec();
        bias.resize(channels + LANES, 0);
        #[cfg(target_arch = "x86_64")]
        let unsigned_bias = bias.iter().enumerate().map(|(ch, &b)| {
            let sum: i32 = kernel.chunks_exact(taps).nth(ch).map_or(0, |row| row.iter().map(|&w| i32::from(w)).sum());
            b.wrapping_sub(128 * sum)
        }).collect();
        let mut scales = scales.to_vec();
        scales.resize(channels + LANES, 0.0);
        Depthwise {
            channels,
            weights,
            bias,
            scales,
            #[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
            columns,
            #[cfg(target_arch = "x86_64")]
            unsigned_bias,
        }
    }

    /// Whether [`Depthwise::run`] reads its input as `x ^ 0x80` (`x + 128` unsigned: VPDPBUSD's column
    /// kernel, [`vnni::run3x3`]), as the caller must then store it, padding included.
    pub fn reads_unsigned(&self, isa: Isa, g: &Geometry, requant: &Requant) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            isa == Isa::Avx512Vnni && self.columns.is_some() && Self::columns_apply(g, requant)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (isa, g, requant);
            false
        }
    }

    /// Where the column kernels (SDOT, VPDPBUSD) run: a 3x3 kernel with per-channel scales, dilation
    /// 1, stride 1 or 2 along the row.
    #[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
    fn columns_apply(g: &Geometry, requant: &Requant) -> bool {
        matches!(requant, Requant::PerChannel(_)) && g.kernel == [3, 3] && g.dilation == [1, 1] && g.stride[1] <= 2
    }

    /// Channels `first..` of one image (`y` holds whole output planes, or with `nhwc` is the whole
    /// channels-last output, `first` being 0) from `padded`, the zero-point-padded channels-last input
    /// (`[h][w][c]`) followed by at least [`LANES`] bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn run(&self, isa: Isa, g: &Geometry, padded: &[i8], requant: &Requant, y_zero_point: i8, first: usize, y: &mut [i8], nhwc: bool) {
        debug_assert!(!nhwc || first == 0);
        let wp = g.input[1] + g.pad_before[1] + g.pad_after[1];
        let c = self.channels;
        let taps: Vec<usize> = (0..g.kernel[0]).flat_map(|ky| (0..g.kernel[1]).map(move |kx| (ky * g.dilation[0] * wp + kx * g.dilation[1]) * c)).collect();
        let job = Job { dw: self, isa, g, taps: &taps, wp, padded, requant, y_zero_point, nhwc };
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: these ISAs are only chosen where the CPU has them (`Isa::available`).
            Isa::Avx2 => unsafe { job.run_avx2(first, y) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx512Vnni => unsafe { job.run_vnni(first, y) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => job.run::<NEON>(first, y),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => job.run::<DOT>(first, y),
            _ => job.run::<PORTABLE>(first, y),
        }
    }
}

const PORTABLE: u8 = 0;
#[cfg(target_arch = "aarch64")]
const NEON: u8 = 1;
/// NEON with the dot product (SDOT): [`NEON`]'s kernels, and [`dot::run3x3`] for 3x3 kernels.
#[cfg(target_arch = "aarch64")]
const DOT: u8 = 3;
#[cfg(target_arch = "x86_64")]
const AVX2: u8 = 2;
/// AVX2 with AVX512-VNNI: [`AVX2`]'s kernels, and [`vnni::run3x3`] for 3x3 kernels.
#[cfg(target_arch = "x86_64")]
const VNNI: u8 = 4;

struct Job<'a> {
    dw: &'a Depthwise,
    /// The instruction set the job runs (its `ISA` constant), for the requantization it calls.
    isa: Isa,
    g: &'a Geometry,
    /// Offset of each kernel tap from a pixel's top-left input, in bytes.
    taps: &'a [usize],
    wp: usize,
    padded: &'a [i8],
    requant: &'a Requant,
    y_zero_point: i8,
    /// The output is channels-last (`[pixels][channels]`), not channel planes.
    nhwc: bool,
}

impl Job<'_> {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2(&self, first: usize, y: &mut [i8]) {
        self.run::<AVX2>(first, y)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn run_vnni(&self, first: usize, y: &mut [i8]) {
        self.run::<VNNI>(first, y)
    }

    /// With `ISA` one of [`PORTABLE`], `NEON`, `DOT`, `AVX2`, `VNNI`: a loop for each kind of requantization.
    /// 3x3 kernels get their own copy of the loop, where the tap count is a constant: the taps
    /// unroll, and their offsets and weights stay in registers across a channel group's pixels.
    #[inline(always)]
    fn run<const ISA: u8>(&self, first: usize, y: &mut [i8]) {
        match (self.requant, self.taps.len()) {
            (Requant::PerChannel(_), 9) => self.blocks::<ISA, 9>(first, y, None),
            (Requant::PerChannel(_), _) => self.blocks::<ISA, 0>(first, y, None),
            (Requant::Uniform(uniform), _) => self.blocks::<ISA, 0>(first, y, Some(uniform)),
        }
    }

    /// With `TAPS` the kernel's tap count, or 0 for any: channel groups outside for channel planes
    /// (each plane written a run at a time), pixel blocks outside channels-last (each pixel's
    /// channels written while its cache line is at hand).
    #[inline(always)]
    fn blocks<const ISA: u8, const TAPS: usize>(&self, first: usize, y: &mut [i8], uniform: Option<&Uniform>) {
        let pixels = self.g.output[0] * self.g.output[1];
        let channels = y.len() / pixels;
        let mut tile = [[0i8; LANES]; BLOCK];
        let (groups, blocks) = ((0..channels).step_by(LANES), (0..pixels).step_by(BLOCK));
        if self.nhwc {
            for b0 in blocks {
                for g0 in groups.clone() {
                    self.block::<ISA, TAPS>(first, g0, b0, y, uniform, &mut tile);
                }
            }
        } else {
            for g0 in groups {
                for b0 in blocks.clone() {
                    self.block::<ISA, TAPS>(first, g0, b0, y, uniform, &mut tile);
                }
            }
        }
    }

    /// Channels `first + g0..` (a group of up to [`LANES`]) of pixels `b0..` (a block of up to
    /// [`BLOCK`]), through `tile`.
    #[inline(always)]
    fn block<const ISA: u8, const TAPS: usize>(&self, first: usize, g0: usize, b0: usize, y: &mut [i8], uniform: Option<&Uniform>, tile: &mut [[i8; LANES]; BLOCK]) {
        let taps = if TAPS == 0 { self.taps } else { &self.taps[..TAPS] };
        let g = self.g;
        let (c, ow) = (self.dw.channels, g.output[1]);
        let pixels = g.output[0] * ow;
        let channels = y.len() / pixels;
        let c0 = first + g0;
        let lanes = LANES.min(channels - g0);
        let bias: &[i32; LANES] = self.dw.bias[c0..c0 + LANES].try_into().expect("bias has LANES spare values");
        let scales: &[f32; LANES] = self.dw.scales[c0..c0 + LANES].try_into().expect("scales have LANES spare values");
        let w = &self.dw.weights[c0..(taps.len() - 1) * c + c0 + LANES];
        // The column kernels (SDOT, VPDPBUSD): a 3x3 kernel with per-channel scales, dilation 1,
        // stride 1 or 2 along the row.
        #[cfg(target_arch = "aarch64")]
        let column_isa = ISA == DOT;
        #[cfg(target_arch = "x86_64")]
        let column_isa = ISA == VNNI;
        #[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
        let columns = match &self.dw.columns {
            Some(columns) if column_isa && TAPS == 9 && Depthwise::columns_apply(g, self.requant) => Some(&columns[4 * c0..]),
            _ => None,
        };
        let valid = BLOCK.min(pixels - b0);
        let (mut oy, mut ox) = (b0 / ow, b0 % ow);
        // Runs of pixels along an output row: the column kernels, or on NEON any 3x3 with
        // per-channel scales (`neon::run9`); everything else pixel by pixel below.
        #[cfg(target_arch = "aarch64")]
        let runs = (ISA == NEON || ISA == DOT) && TAPS == 9 && uniform.is_none();
        #[cfg(target_arch = "x86_64")]
        let runs = columns.is_some();
        #[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
        let runs = false;
        #[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
        if runs {
            let taps: &[usize; 9] = taps.try_into().expect("nine taps");
            let mut j = 0;
            while j < valid {
                let n = (valid - j).min(ow - ox);
                let at = (oy * g.stride[0] * self.wp + ox * g.stride[1]) * c + c0;
                let step = g.stride[1] * c;
                // Every tap of every pixel of the run reads LANES bytes inside `padded` (the
                // last pixel's last tap is the farthest), every tap's weights lie in `w`.
                assert!(at + (n - 1) * step + taps[8] + LANES <= self.padded.len(), "depthwise run out of bounds");
                let (x, out) = (self.padded.as_ptr(), tile[j..j + n].as_mut_ptr());
                match columns {
                    Some(columns) => {
                        // Each column's three rows of 16 channels lie in `columns` (its
                        // [`LANES`] spare channels cover the last group).
                        let wstride = 4 * (c + LANES);
                        assert!(2 * wstride + 4 * LANES <= columns.len(), "depthwise columns out of bounds");
                        // SAFETY: the input reads are those of `run9` (dilation 1: the
                        // columns are `c` bytes apart, the rows `taps[3]`), asserted
                        // above; the weights asserted here; the outputs as below.
                        #[cfg(target_arch = "aarch64")]
                        unsafe {
                            if g.stride[1] == 1 {
                                dot::run3x3::<1>(x.add(at), n, c, taps[3], columns.as_ptr(), wstride, bias, scales, self.y_zero_point, out)
                            } else {
                                dot::run3x3::<2>(x.add(at), n, c, taps[3], columns.as_ptr(), wstride, bias, scales, self.y_zero_point, out)
                            }
                        }
                        #[cfg(target_arch = "x86_64")]
                        {
                            let bias: &[i32; LANES] = self.dw.unsigned_bias[c0..c0 + LANES].try_into().expect("bias has LANES spare values");
                            // (And `run_vnni` is only called where the CPU has AVX512-VNNI.)
                            unsafe {
                                if g.stride[1] == 1 {
                                    vnni::run3x3::<1>(x.add(at), n, c, taps[3], columns.as_ptr(), wstride, bias, scales, self.y_zero_point, out)
                                } else {
                                    vnni::run3x3::<2>(x.add(at), n, c, taps[3], columns.as_ptr(), wstride, bias, scales, self.y_zero_point, out)
                                }
                            }
                        }
                    }
                    // SAFETY: asserted above; `tile[j..j + n]` holds the n outputs (j + n <= valid <= BLOCK).
                    #[cfg(target_arch = "aarch64")]
                    None => unsafe { neon::run9(x.add(at), step, n, taps, w, c, bias, scales, self.y_zero_point, out) },
                    #[cfg(target_arch = "x86_64")]
                    None => unreachable!("x86-64 runs only on the column kernel"),
                }
                j += n;
                (oy, ox) = if ox + n == ow { (oy + 1, 0) } else { (oy, ox + n) };
            }
        }
        for out in tile.iter_mut().take(if runs { 0 } else { valid }) {
            let at = (oy * g.stride[0] * self.wp + ox * g.stride[1]) * c + c0;
            let x = &self.padded[at..*taps.last().expect("a kernel has taps") + at + LANES];
            let zp = self.y_zero_point;
            // SAFETY (NEON, AVX2): every tap's LANES bytes lie in `x` (the last tap is the
            // farthest), every tap's weights in `w`; NEON is architectural on aarch64, and
            // `run_avx2` is only called where the CPU has AVX2.
            *out = match (ISA, uniform) {
                #[cfg(target_arch = "aarch64")]
                (NEON | DOT, None) => unsafe { neon::pixel(x, taps, w, c, bias, scales, zp) },
                #[cfg(target_arch = "x86_64")]
                (AVX2 | VNNI, None) => unsafe { avx2::pixel(x, taps, w, c, bias, scales, zp.into()) },
                (_, None) => requant(&pixel(x, taps, w, c, bias), scales, zp.into()),
                (_, Some(uniform)) => {
                    let acc = match ISA {
                        #[cfg(target_arch = "aarch64")]
                        NEON | DOT => unsafe { neon::pixel_sums(x, taps, w, c, bias) },
                        #[cfg(target_arch = "x86_64")]
                        AVX2 | VNNI => unsafe { avx2::pixel_sums(x, taps, w, c, bias) },
                        _ => pixel(x, taps, w, c, bias),
                    };
                    let mut out = [0i8; LANES];
                    // In NEON, AVX-512 or 32-bit NEON where the CPU has them: with the plain
                    // row (a scalar range check, then f64 value by value) fashion-resnet's
                    // per-tensor depthwise stem took 0.75 M instructions on Cortex-A72, 0.26 M
                    // without.
                    super::micro::requant_uniform_row(self.isa, uniform, &acc, 0, zp.into(), &mut out);
                    out
                }
            };
            ox += 1;
            if ox == ow {
                (oy, ox) = (oy + 1, 0);
            }
        }
        if self.nhwc {
            // Already pixel-major: each pixel's channels of the group in place.
            for (j, px) in tile.iter().enumerate().take(valid) {
                let out = &mut y[(b0 + j) * channels + g0..];
                if lanes == LANES {
                    // One 16-byte load and store (copy_from_slice, even of a fixed length,
                    // called memcpy; building a u128 from the bytes went byte by byte).
                    let out = &mut out[..LANES];
                    // SAFETY: `px` and `out` hold LANES = 16 bytes.
                    unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast::<u128>(), std::ptr::read_unaligned(px.as_ptr().cast::<u128>())) };
                } else {
                    out[..lanes].copy_from_slice(&px[..lanes]);
                }
            }
            return;
        }
        // Pixel-major to channel-major, then each channel's run into its plane.
        let planes: [[i8; BLOCK]; LANES] = match ISA {
            // SAFETY: NEON is architectural on aarch64.
            #[cfg(target_arch = "aarch64")]
            NEON | DOT => unsafe { neon::transpose(&tile) },
            // SAFETY: SSE2 is architectural on x86-64.
            #[cfg(target_arch = "x86_64")]
            AVX2 | VNNI => unsafe { avx2::transpose(&tile) },
            _ => {
                let mut planes = [[0i8; BLOCK]; LANES];
                for (j, pixel) in tile.iter().enumerate() {
                    for (plane, &v) in planes.iter_mut().zip(pixel) {
                        plane[j] = v;
                    }
                }
                planes
            }
        };
        for (l, plane) in planes.iter().enumerate().take(lanes) {
            let out = &mut y[(g0 + l) * pixels + b0..][..valid];
            if valid == BLOCK {
                out.copy_from_slice(plane);
            } else {
                super::layout::copy_short(out, plane);
            }
        }
    }
}

/// The int32 sums (bias included) of sixteen channels of one pixel: `x` starts at the pixel's
/// receptive field (its first channel), `taps` are byte offsets into it, and tap `t`'s weights start at
/// `w[t * stride]`.
#[inline(always)]
fn pixel(x: &[i8], taps: &[usize], w: &[i8], stride: usize, bias: &[i32; LANES]) -> [i32; LANES] {
    let x = |t: usize| -> &[i8; LANES] { x[taps[t]..][..LANES].try_into().expect("LANES bytes") };
    let w = |t: usize| -> &[i8; LANES] { w[t * stride..][..LANES].try_into().expect("LANES bytes") };
    let mut acc = *bias;
    let mut t = 0;
    while t + 2 <= taps.len() {
        let (x0, w0, x1, w1) = (x(t), w(t), x(t + 1), w(t + 1));
        for l in 0..LANES {
            let p = (x0[l] as i16).wrapping_mul(w0[l] as i16).wrapping_add((x1[l] as i16).wrapping_mul(w1[l] as i16));
            acc[l] = acc[l].wrapping_add(p as i32);
        }
        t += 2;
    }
    if t < taps.len() {
        let (x0, w0) = (x(t), w(t));
        for l in 0..LANES {
            acc[l] = acc[l].wrapping_add((x0[l] as i16).wrapping_mul(w0[l] as i16) as i32);
        }
    }
    acc
}

/// Per-channel requantization of sixteen accumulators (bias included), as
/// [`super::micro::requant_one`] does one.
#[inline(always)]
fn requant(acc: &[i32; LANES], scales: &[f32; LANES], zero_point: i32) -> [i8; LANES] {
    std::array::from_fn(|l| super::round_saturating(acc[l] as f32 * scales[l]).saturating_add(zero_point).clamp(-128, 127) as i8)
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{BLOCK, LANES};
    use std::arch::aarch64::*;

    /// `tile[j][l]` as `[l][j]`: two 16x16 byte transposes, four rounds of TRN1/TRN2 each (bytes,
    /// halfwords, words, doublewords: round `s` pairs rows `i` and `i + s`).
    #[inline(always)]
    pub unsafe fn transpose(tile: &[[i8; LANES]; BLOCK]) -> [[i8; BLOCK]; LANES] {
        unsafe {
            // Every byte is stored below: no zeroing first.
            let mut out = std::mem::MaybeUninit::<[[i8; BLOCK]; LANES]>::uninit();
            let rows = out.as_mut_ptr().cast::<[i8; BLOCK]>();
            for half in 0..BLOCK / LANES {
                let r: [int8x16_t; LANES] = std::array::from_fn(|j| vld1q_s8(tile[half * LANES + j].as_ptr()));
                let mut t = r;
                macro_rules! round {
                    ($s:expr, $as:ident, $back:ident, $trn1:ident, $trn2:ident) => {
                        for i in (0..LANES).filter(|i| i & $s == 0) {
                            let (a, b) = ($as(t[i]), $as(t[i + $s]));
                            (t[i], t[i + $s]) = ($back($trn1(a, b)), $back($trn2(a, b)));
                        }
                    };
                }
                let same = |v: int8x16_t| v;
                round!(1, same, same, vtrn1q_s8, vtrn2q_s8);
                round!(2, vreinterpretq_s16_s8, vreinterpretq_s8_s16, vtrn1q_s16, vtrn2q_s16);
                round!(4, vreinterpretq_s32_s8, vreinterpretq_s8_s32, vtrn1q_s32, vtrn2q_s32);
                round!(8, vreinterpretq_s64_s8, vreinterpretq_s8_s64, vtrn1q_s64, vtrn2q_s64);
                for (l, &t) in t.iter().enumerate() {
                    vst1q_s8(rows.add(l).cast::<i8>().add(half * LANES), t);
                }
            }
            out.assume_init()
        }
    }

    /// Sixteen int16 products (two vectors) added into the sixteen int32 sums (SADDW, SADDW2).
    #[inline(always)]
    fn widen_add(acc: &mut [int32x4_t; 4], lo: int16x8_t, hi: int16x8_t) {
        // SAFETY: NEON is architectural on aarch64.
        unsafe {
            acc[0] = vaddw_s16(acc[0], vget_low_s16(lo));
            acc[1] = vaddw_high_s16(acc[1], lo);
            acc[2] = vaddw_s16(acc[2], vget_low_s16(hi));
            acc[3] = vaddw_high_s16(acc[3], hi);
        }
    }

    /// [`super::requant`] of sixteen sums (bias included): [`micro::requant8`] twice (FCVTNS, SQXTN,
    /// SQADD of the zero point `z` in int16), then SQXTN to int8.
    ///
    /// [`micro::requant8`]: super::super::micro::requant8
    #[inline(always)]
    pub fn requant(acc: [int32x4_t; 4], s: [float32x4_t; 4], z: int16x8_t) -> int8x16_t {
        use super::super::micro::requant8;
        // SAFETY: NEON is architectural on aarch64.
        unsafe { vqmovn_high_s16(vqmovn_s16(requant8([acc[0], acc[1]], [s[0], s[1]], z)), requant8([acc[2], acc[3]], [s[2], s[3]], z)) }
    }

    /// The sixteen scales at `scales`.
    #[inline(always)]
    pub fn scales(scales: &[f32; LANES]) -> [float32x4_t; 4] {
        // SAFETY: NEON is architectural on aarch64; `scales` holds LANES values.
        std::array::from_fn(|i| unsafe { vld1q_f32(scales.as_ptr().add(4 * i)) })
    }

    /// SMULL2 and SMLAL2 as instructions: with the intrinsics, LLVM hoists the high halves of
    /// loop-invariant weights into registers of their own and then extracts each input's high half
    /// with an EXT to use SMULL.
    #[inline(always)]
    unsafe fn smull2(a: int8x16_t, b: int8x16_t) -> int16x8_t {
        let r: int16x8_t;
        unsafe {
            std::arch::asm!("smull2 {r:v}.8h, {a:v}.16b, {b:v}.16b", r = lateout(vreg) r, a = in(vreg) a, b = in(vreg) b, options(pure, nomem, nostack, preserves_flags));
        }
        r
    }

    #[inline(always)]
    unsafe fn smlal2(mut acc: int16x8_t, a: int8x16_t, b: int8x16_t) -> int16x8_t {
        unsafe {
            std::arch::asm!("smlal2 {acc:v}.8h, {a:v}.16b, {b:v}.16b", acc = inout(vreg) acc, a = in(vreg) a, b = in(vreg) b, options(pure, nomem, nostack, preserves_flags));
        }
        acc
    }

    /// A 3x3 kernel's sixteen channels for `n` pixels `step` bytes apart, the first one's receptive
    /// field at `x` (taps at `taps`), into `out[0..n]`: [`pixel`] with the nine weight vectors loaded
    /// once.
    ///
    /// # Safety
    /// `x + p * step + taps[t]` is readable for LANES bytes for every pixel p < n and tap t, `w +
    /// t * stride` for every tap; `out` is writable for n outputs.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub unsafe fn run9(x: *const i8, step: usize, n: usize, taps: &[usize; 9], w: &[i8], stride: usize, bias: &[i32; LANES], scales: &[f32; LANES], zero_point: i8, out: *mut [i8; LANES]) {
        unsafe {
            let w: [int8x16_t; 9] = std::array::from_fn(|t| vld1q_s8(w.as_ptr().add(t * stride)));
            let z = vdupq_n_s16(zero_point.into());
            for p in 0..n {
                let at = x.add(p * step);
                let x: [int8x16_t; 9] = std::array::from_fn(|t| vld1q_s8(at.add(taps[t])));
                let mut acc = [0, 4, 8, 12].map(|l| vld1q_s32(bias.as_ptr().add(l)));
                let mut add = |lo: int16x8_t, hi: int16x8_t| widen_add(&mut acc, lo, hi);
                for t in [0, 2, 4, 6] {
                    // |x * w| <= 128 * 127: two products fit int16.
                    let lo = vmlal_s8(vmull_s8(vget_low_s8(x[t]), vget_low_s8(w[t])), vget_low_s8(x[t + 1]), vget_low_s8(w[t + 1]));
                    let hi = smlal2(smull2(x[t], w[t]), x[t + 1], w[t + 1]);
                    add(lo, hi);
                }
                add(vmull_s8(vget_low_s8(x[8]), vget_low_s8(w[8])), smull2(x[8], w[8]));
                vst1q_s8(out.add(p) as *mut i8, requant(acc, self::scales(scales), z));
            }
        }
    }

    /// [`super::pixel`] then [`super::requant`]: SMULL/SMLAL of two taps into int16, SADDW into
    /// int32, FCVTNS (round to nearest even, saturating), SQADD of the zero point, SQXTN twice.
    ///
    /// # Safety
    /// `x[taps[t]..][..LANES]` and `w[t * stride..][..LANES]` lie inside `x` and `w` for every tap.
    /// (NEON is architectural on aarch64: no `target_feature`, so that it inlines into the loop.)
    #[inline(always)]
    pub unsafe fn pixel(x: &[i8], taps: &[usize], w: &[i8], stride: usize, bias: &[i32; LANES], scales: &[f32; LANES], zero_point: i8) -> [i8; LANES] {
        unsafe {
            let acc = sums(x, taps, w, stride, bias);
            let mut out = [0i8; LANES];
            vst1q_s8(out.as_mut_ptr(), requant(acc, self::scales(scales), vdupq_n_s16(zero_point.into())));
            out
        }
    }

    /// [`super::pixel`]: the int32 sums alone, for a uniform requantization.
    ///
    /// # Safety
    /// As [`pixel`]'s.
    #[inline(always)]
    pub unsafe fn pixel_sums(x: &[i8], taps: &[usize], w: &[i8], stride: usize, bias: &[i32; LANES]) -> [i32; LANES] {
        unsafe {
            let acc = sums(x, taps, w, stride, bias);
            let mut out = [0i32; LANES];
            for (i, a) in acc.iter().enumerate() {
                vst1q_s32(out.as_mut_ptr().add(4 * i), *a);
            }
            out
        }
    }

    #[inline(always)]
    unsafe fn sums(x: &[i8], taps: &[usize], w: &[i8], stride: usize, bias: &[i32; LANES]) -> [int32x4_t; 4] {
        unsafe {
            let (x, w) = (x.as_ptr(), w.as_ptr());
            let mut acc = [0, 4, 8, 12].map(|l| vld1q_s32(bias.as_ptr().add(l)));
            let mut add = |lo: int16x8_t, hi: int16x8_t| widen_add(&mut acc, lo, hi);
            let mut t = 0;
            while t + 2 <= taps.len() {
                let x0 = vld1q_s8(x.add(*taps.get_unchecked(t)));
                let x1 = vld1q_s8(x.add(*taps.get_unchecked(t + 1)));
                let w0 = vld1q_s8(w.add(t * stride));
                let w1 = vld1q_s8(w.add((t + 1) * stride));
                // |x * w| <= 128 * 127: two products fit int16.
                let lo = vmlal_s8(vmull_s8(vget_low_s8(x0), vget_low_s8(w0)), vget_low_s8(x1), vget_low_s8(w1));
                let hi = vmlal_high_s8(vmull_high_s8(x0, w0), x1, w1);
                add(lo, hi);
                t += 2;
            }
            if t < taps.len() {
                let x0 = vld1q_s8(x.add(*taps.get_unchecked(t)));
                let w0 = vld1q_s8(w.add(t * stride));
                add(vmull_s8(vget_low_s8(x0), vget_low_s8(w0)), vmull_high_s8(x0, w0));
            }
            acc
        }
    }
}

/// The SDOT depthwise kernel for 3x3: each input column's three rows of sixteen channels are
/// interleaved once (ZIP1/ZIP2: per channel, its rows 0, 1, 2 and 2 again, which meets a zero weight),
/// so that one SDOT does three taps of four channels; a pixel is then 12 SDOTs over three columns, and
/// along the row each column serves the next pixels too (one new column per pixel at stride 1, two at
/// stride 2). Against [`neon::run9`]'s 18 multiplies and 20 widening adds: 8 ZIPs and 12 SDOTs.
#[cfg(target_arch = "aarch64")]
mod dot {
    use super::LANES;
    use std::arch::aarch64::*;

    /// `acc.4s += a.16b . b.16b`: each lane the dot product of four byte pairs.
    #[inline(always)]
    unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        unsafe {
            std::arch::asm!(
                ".arch_extension dotprod",
                "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) acc, a = in(vreg) a, b = in(vreg) b,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }

    /// The column at `p` (rows `row` bytes apart), interleaved: vector `q` holds channels `4q..4q + 4`,
    /// each as its bytes of rows 0, 1, 2, 2.
    #[inline(always)]
    unsafe fn column(p: *const i8, row: usize) -> [int8x16_t; 4] {
        unsafe {
            let (r0, r1, r2) = (vld1q_s8(p), vld1q_s8(p.add(row)), vld1q_s8(p.add(2 * row)));
            let (a, b) = (vreinterpretq_s16_s8(vzip1q_s8(r0, r1)), vreinterpretq_s16_s8(vzip2q_s8(r0, r1)));
            let (c, d) = (vreinterpretq_s16_s8(vzip1q_s8(r2, r2)), vreinterpretq_s16_s8(vzip2q_s8(r2, r2)));
            [vzip1q_s16(a, c), vzip2q_s16(a, c), vzip1q_s16(b, d), vzip2q_s16(b, d)].map(|v| vreinterpretq_s8_s16(v))
        }
    }

    /// Sixty-four bytes at `p` with two LDPs, which the compiler may neither hoist out of a loop nor
    /// merge (not `pure`): hoisted, the bias and scales took registers the loop needs, and it spilled.
    #[inline(always)]
    unsafe fn load64(p: *const u8) -> [int32x4_t; 4] {
        let (a, b, c, d);
        unsafe {
            std::arch::asm!(
                "ldp {a:q}, {b:q}, [{p}]",
                "ldp {c:q}, {d:q}, [{p}, #32]",
                p = in(reg) p, a = out(vreg) a, b = out(vreg) b, c = out(vreg) c, d = out(vreg) d,
                options(readonly, nostack, preserves_flags)
            );
        }
        [a, b, c, d]
    }

    /// One output pixel from its three interleaved columns: the bias, 12 SDOTs, then
    /// [`super::neon::requant`].
    #[inline(always)]
    unsafe fn pixel(z: [&[int8x16_t; 4]; 3], w: &[[int8x16_t; 4]; 3], bias: &[i32; LANES], scales: &[f32; LANES], zero_point: int16x8_t) -> int8x16_t {
        unsafe {
            let mut acc = load64(bias.as_ptr() as *const u8);
            for (z, w) in z.iter().zip(w) {
                for q in 0..4 {
                    acc[q] = sdot(acc[q], z[q], w[q]);
                }
            }
            super::neon::requant(acc, load64(scales.as_ptr() as *const u8).map(|v| vreinterpretq_f32_s32(v)), zero_point)
        }
    }

    /// Sixteen channels of `n` output pixels of a 3x3 kernel with dilation 1 and `STRIDE` (1 or 2)
    /// along the row: the first pixel's receptive field at `x` (channels `c` bytes apart, rows `row`
    /// bytes apart), the weights as [`super::Depthwise`]'s `columns` from `w` (`wstride` bytes between
    /// kx), outputs into `out[0..n]`: the sums of [`super::pixel`], requantized as [`super::requant`].
    ///
    /// # Safety
    /// `x + p * STRIDE * c + kx * c + ky * row` is readable for LANES bytes for p < n and kx, ky < 3;
    /// `w + kx * wstride` for 64 bytes; `out` is writable for n outputs; the CPU has `dotprod`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub unsafe fn run3x3<const STRIDE: usize>(x: *const i8, n: usize, c: usize, row: usize, w: *const i8, wstride: usize, bias: &[i32; LANES], scales: &[f32; LANES], zero_point: i8, out: *mut [i8; LANES]) {
        unsafe {
            let w: [[int8x16_t; 4]; 3] = std::array::from_fn(|kx| std::array::from_fn(|q| vld1q_s8(w.add(kx * wstride + 16 * q))));
            let zp = vdupq_n_s16(zero_point.into());
            let px = |z0: &[int8x16_t; 4], z1: &[int8x16_t; 4], z2: &[int8x16_t; 4]| pixel([z0, z1, z2], &w, bias, scales, zp);
            let mut z0 = column(x, row);
            let mut p = 0;
            if STRIDE == 1 {
                // Two pixels per step: the two columns carried over swap registers with the new
                // ones instead of being moved.
                let mut z1 = column(x.add(c), row);
                while p < n {
                    let at = x.add(p * c);
                    let z2 = column(at.add(2 * c), row);
                    vst1q_s8(out.add(p) as *mut i8, px(&z0, &z1, &z2));
                    if p + 1 == n {
                        break;
                    }
                    let z3 = column(at.add(3 * c), row);
                    vst1q_s8(out.add(p + 1) as *mut i8, px(&z1, &z2, &z3));
                    (z0, z1) = (z2, z3);
                    p += 2;
                }
            } else {
                while p < n {
                    let at = x.add(p * STRIDE * c);
                    let (z1, z2) = (column(at.add(c), row), column(at.add(2 * c), row));
                    vst1q_s8(out.add(p) as *mut i8, px(&z0, &z1, &z2));
                    z0 = z2;
                    p += 1;
                }
            }
        }
    }
}

/// [`dot`]'s column kernel on AVX512-VNNI: each input column's three rows of sixteen channels,
/// read as `x ^ 0x80` (VPDPBUSD multiplies unsigned bytes by signed ones; the bias is less `128 *
/// sum(w)`), interleaved once with PUNPCKLBW/PUNPCKHBW and PUNPCKLWD/PUNPCKHWD, so that one
/// VPDPBUSD does three taps of eight channels: 6 per pixel, and a column serves the next pixels too.
#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::LANES;
    use std::arch::x86_64::*;

    /// The column at `p` (rows `row` bytes apart, stored `x ^ 0x80`: [`super::Depthwise::reads_unsigned`]),
    /// interleaved: sixteen channels, each as its unsigned bytes of rows 0, 1, 2, 2.
    #[inline(always)]
    unsafe fn column(p: *const i8, row: usize) -> __m512i {
        unsafe {
            let load = |p: *const i8| _mm_loadu_si128(p as *const __m128i);
            let (r0, r1, r2) = (load(p), load(p.add(row)), load(p.add(2 * row)));
            let (a, b) = (_mm_unpacklo_epi8(r0, r1), _mm_unpackhi_epi8(r0, r1));
            let (c, d) = (_mm_unpacklo_epi8(r2, r2), _mm_unpackhi_epi8(r2, r2));
            let lo = _mm256_set_m128i(_mm_unpackhi_epi16(a, c), _mm_unpacklo_epi16(a, c));
            let hi = _mm256_set_m128i(_mm_unpackhi_epi16(b, d), _mm_unpacklo_epi16(b, d));
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
        }
    }

    /// [`super::dot::run3x3`] on VPDPBUSD, sixteen channels in a 512-bit register: the same reads,
    /// weights and outputs; `bias` is [`super::Depthwise`]'s `unsigned_bias`. Requantized as `micro`'s
    /// channels-last VNNI lane kernel does.
    ///
    /// # Safety
    /// As [`super::dot::run3x3`]'s; the CPU has AVX2, AVX512F, AVX512VL, AVX512BW and AVX512-VNNI.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub unsafe fn run3x3<const STRIDE: usize>(x: *const i8, n: usize, c: usize, row: usize, w: *const i8, wstride: usize, bias: &[i32; LANES], scales: &[f32; LANES], zero_point: i8, out: *mut [i8; LANES]) {
        unsafe {
            let w: [__m512i; 3] = std::array::from_fn(|kx| _mm512_loadu_si512(w.add(kx * wstride) as *const __m512i));
            let init = _mm512_loadu_si512(bias.as_ptr() as *const __m512i);
            let scale = _mm512_loadu_ps(scales.as_ptr());
            let zp = _mm256_set1_epi16(zero_point.into());
            // (A function, not a closure: a closure does not inherit the caller's target features,
            // and its intrinsics then stay calls.)
            #[inline(always)]
            unsafe fn px(z: [&__m512i; 3], w: &[__m512i; 3], init: __m512i, scale: __m512, zp: __m256i) -> __m128i {
                unsafe {
                    let acc = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(init, *z[0], w[0]), *z[1], w[1]), *z[2], w[2]);
                    super::super::micro::requant16_512(acc, scale, zp)
                }
            }
            let pixel = |z: [&__m512i; 3]| px(z, &w, init, scale, zp);
            let mut z0 = column(x, row);
            let mut p = 0;
            if STRIDE == 1 {
                let mut z1 = column(x.add(c), row);
                while p < n {
                    let z2 = column(x.add((p + 2) * c), row);
                    _mm_storeu_si128(out.add(p) as *mut __m128i, pixel([&z0, &z1, &z2]));
                    (z0, z1) = (z1, z2);
                    p += 1;
                }
            } else {
                while p < n {
                    let at = x.add(p * STRIDE * c);
                    let (z1, z2) = (column(at.add(c), row), column(at.add(2 * c), row));
                    _mm_storeu_si128(out.add(p) as *mut __m128i, pixel([&z0, &z1, &z2]));
                    z0 = z2;
                    p += 1;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BLOCK, LANES};
    use std::arch::x86_64::*;

    /// `tile[j][l]` as `[l][j]`: two 16x16 byte transposes, each four rounds of PUNPCKLBW/PUNPCKHBW
    /// pairing rows `i` and `i + 8` into rows `2i` and `2i + 1`.
    ///
    /// # Safety
    /// None beyond SSE2, which is architectural on x86-64.
    #[inline(always)]
    pub unsafe fn transpose(tile: &[[i8; LANES]; BLOCK]) -> [[i8; BLOCK]; LANES] {
        unsafe {
            // Every byte is stored below: no zeroing first.
            let mut out = std::mem::MaybeUninit::<[[i8; BLOCK]; LANES]>::uninit();
            let rows = out.as_mut_ptr().cast::<[i8; BLOCK]>();
            for half in 0..BLOCK / LANES {
                let mut r: [__m128i; LANES] = std::array::from_fn(|j| _mm_loadu_si128(tile[half * LANES + j].as_ptr() as *const __m128i));
                // Written out: with `array::from_fn` LLVM kept a loop over the array in memory.
                macro_rules! round {
                    ($($i:literal)*) => {
                        r = [$(_mm_unpacklo_epi8(r[$i], r[$i + 8]), _mm_unpackhi_epi8(r[$i], r[$i + 8])),*]
                    };
                }
                for _ in 0..4 {
                    round!(0 1 2 3 4 5 6 7);
                }
                for (l, &v) in r.iter().enumerate() {
                    _mm_storeu_si128(rows.add(l).cast::<i8>().add(half * LANES) as *mut __m128i, v);
                }
            }
            out.assume_init()
        }
    }

    /// [`super::pixel`] then [`super::requant`]: int8 widened to int16, VPMULLW of two taps added in
    /// int16, widened to int32 and added; requantized as `micro`'s AVX2 row (clamped before
    /// CVTPS2DQ, which rounds to nearest even).
    ///
    /// # Safety
    /// As [`super::neon::pixel`]'s, and the CPU has AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn pixel(x: &[i8], taps: &[usize], w: &[i8], stride: usize, bias: &[i32; LANES], scales: &[f32; LANES], zero_point: i32) -> [i8; LANES] {
        unsafe {
            let acc = sums(x, taps, w, stride, bias);
            let (z, lo, hi) = (_mm256_set1_epi32(zero_point), _mm256_set1_ps(-2147483520.0), _mm256_set1_ps(2147483520.0));
            let q = |i: usize| {
                let v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[i]), _mm256_loadu_ps(scales.as_ptr().add(8 * i)));
                let v = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi)), z);
                _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v))
            };
            let mut out = [0i8; LANES];
            _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, _mm_packs_epi16(q(0), q(1)));
            out
        }
    }

    /// [`super::pixel`]: the int32 sums alone, for a uniform requantization.
    ///
    /// # Safety
    /// As [`pixel`]'s.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn pixel_sums(x: &[i8], taps: &[usize], w: &[i8], stride: usize, bias: &[i32; LANES]) -> [i32; LANES] {
        unsafe {
            let acc = sums(x, taps, w, stride, bias);
            let mut out = [0i32; LANES];
            _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, acc[0]);
            _mm256_storeu_si256(out.as_mut_ptr().add(8) as *mut __m256i, acc[1]);
            out
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sums(x: &[i8], taps: &[usize], w: &[i8], stride: usize, bias: &[i32; LANES]) -> [__m256i; 2] {
        unsafe {
            let (x, w) = (x.as_ptr(), w.as_ptr());
            let load = |p: *const i8| _mm256_cvtepi8_epi16(_mm_loadu_si128(p as *const __m128i));
            let mut acc = [0, 8].map(|l| _mm256_loadu_si256(bias.as_ptr().add(l) as *const __m256i));
            let mut add = |p: __m256i| {
                acc[0] = _mm256_add_epi32(acc[0], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(p)));
                acc[1] = _mm256_add_epi32(acc[1], _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(p)));
            };
            let mut t = 0;
            while t + 2 <= taps.len() {
                let p0 = _mm256_mullo_epi16(load(x.add(*taps.get_unchecked(t))), load(w.add(t * stride)));
                let p1 = _mm256_mullo_epi16(load(x.add(*taps.get_unchecked(t + 1))), load(w.add((t + 1) * stride)));
                add(_mm256_add_epi16(p0, p1));
                t += 2;
            }
            if t < taps.len() {
                add(_mm256_mullo_epi16(load(x.add(*taps.get_unchecked(t))), load(w.add(t * stride))));
            }
            acc
        }
    }
}

//! The int8 microkernels: a tile of `MR` output channels by `NR` output pixels, each output the dot
//! product of a weight row of `kp` bytes and the pixel's receptive field, read in place as runs of
//! `len` bytes (a multiple of [`KU`]) at each of the `taps` offsets from the pixel (channels-last
//! input: one run per kernel position; or one run over a packed row).
//!
//! Every kernel computes exactly what [`portable`] computes: integer arithmetic, no rounding (the
//! lane kernels, [`lane_tiles`], on their own weight layout; the VNNI one `128 * sum(w)` more, which
//! its caller takes off the bias). The
//! NEON kernel multiplies pairs of int8 into int16 (SMULL + SMLAL2) before widening into int32
//! (SADALP), which cannot overflow because weights are in `-127..=127` ([`super::conv`] refuses
//! -128); the AVX2 one has no such limit (int16 products, int32 sums). CPUs with a dot product (SDOT,
//! VPDPBUSD) run the lane kernels instead of these tiles.

use super::{Isa, Layout};
use tract_nnef::internal::tract_linalg::Scaler;

/// Output channels per tile.
pub const MR: usize = 4;
/// Output pixels per tile.
pub const NR: usize = 4;
/// Runs are a multiple of this many bytes.
pub const KU: usize = 16;

/// One tile of int32 accumulators: `[channel][pixel]`.
pub type Tile = [[i32; NR]; MR];

/// Where a tile reads: pixel `j`'s runs start at `x[j] + taps[t]`, each `len` bytes; weight row `i`
/// is `w[i * kp..]` with `kp = taps.len() * len`, the runs in the same order.
#[derive(Clone, Copy)]
pub struct Operands<'a> {
    pub w: *const i8,
    pub x: [*const i8; NR],
    pub taps: &'a [usize],
    pub len: usize,
}

impl Operands<'_> {
    fn kp(&self) -> usize {
        self.taps.len() * self.len
    }
}

/// A row of tiles: the same weight rows against the pixels whose reads start at `src + starts[p]`
/// (for [`tiles`], `starts.len()` a multiple of [`NR`], tile `t` taking pixels `t * NR..(t + 1) *
/// NR`; the lane kernels take any number, laid out by [`LanePlan`]).
#[derive(Clone, Copy)]
pub struct Row<'a> {
    pub w: *const i8,
    pub src: *const i8,
    pub starts: &'a [usize],
    pub taps: &'a [usize],
    pub len: usize,
}

impl<'a> Row<'a> {
    /// The operands of tile `t`.
    ///
    /// # Safety
    /// `src + starts[..]` stay inside one allocation (the contract of [`tiles`]).
    #[inline(always)]
    pub unsafe fn tile(&self, t: usize) -> Operands<'a> {
        Operands { w: self.w, x: std::array::from_fn(|j| unsafe { self.src.add(self.starts[t * NR + j]) }), taps: self.taps, len: self.len }
    }
}

/// Every tile of `row`: tile `t` stored at `out[i * stride + t * NR + j]`.
///
/// # Safety
/// [`tile`]'s contract for every tile's operands.
#[inline]
pub unsafe fn tiles(isa: Isa, row: Row, out: *mut i32, stride: usize) {
    unsafe {
        match isa {
            // (The dot-product ISAs run their lane kernels; here, the plain NEON ones.)
            #[cfg(target_arch = "aarch64")]
            Isa::Neon | Isa::NeonDot => aarch64::smull_tiles(row, out, stride),
            #[cfg(target_arch = "arm")]
            Isa::Armv7Neon => {
                // The pixels' addresses, a block of them at a time, for one run of the kernel.
                const PIXELS: usize = 32;
                let mut pixels = [std::ptr::null::<i8>(); PIXELS];
                for (k, starts) in row.starts[..row.starts.len() / NR * NR].chunks(PIXELS).enumerate() {
                    for (p, &s) in pixels.iter_mut().zip(starts) {
                        *p = row.src.add(s);
                    }
                    arm::pairs(row.w, row.taps, row.len, &pixels[..starts.len()], out.add(k * PIXELS), stride);
                }
            }
            _ => {
                for t in 0..row.starts.len() / NR {
                    tile(isa, row.tile(t), out.add(t * NR), stride);
                }
            }
        }
    }
}

/// Computes the tile with the kernel of `isa` and stores it: `out[i * stride + j]`.
///
/// # Safety
/// `len % KU == 0`; `w` is readable for `MR * kp` bytes, rows of `kp` bytes or, where
/// [`tiles_interleaved`], those rows as [`interleave_tiles`] lays them; for every tap `t` and pixel `j`,
/// `x[j] + taps[t]` is readable for `len` bytes; `out` is writable at every `i * stride + j`; `isa` is
/// one of [`Isa::available`]; for [`Isa::Neon`] and [`Isa::Armv7Neon`], weights are in `-127..=127`.
#[inline]
pub unsafe fn tile(isa: Isa, ops: Operands, out: *mut i32, stride: usize) {
    debug_assert!(ops.len.is_multiple_of(KU));
    unsafe {
        match isa {
            #[cfg(target_arch = "aarch64")]
            Isa::Neon | Isa::NeonDot => aarch64::smull(ops, out, stride),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512Vnni => x86::avx2(ops, out, stride),
            #[cfg(target_arch = "arm")]
            Isa::Armv7Neon => arm::pairs(ops.w, ops.taps, ops.len, &ops.x, out, stride),
            _ => {
                let t = portable(ops);
                for (i, row) in t.iter().enumerate() {
                    std::ptr::copy_nonoverlapping(row.as_ptr(), out.add(i * stride), NR);
                }
            }
        }
    }
}

/// The most output channels a lane kernel's tile has ([`lane_tile`]).
pub const MR_LANES: usize = 16;
/// Output pixels per tile of the lane kernels.
pub const NR_LANES: usize = 8;

/// The tile (output channels, output pixels) of `isa`'s lane kernel, if it has one: weights packed
/// four reduction bytes per channel, side by side across channels ([`pack_lanes`]), each pixel's
/// four bytes multiplied with the four bytes of each of several channels at once (SDOT by lane;
/// VPDPBUSD on a broadcast), so that a tile needs no horizontal reduction. The tile has at most
/// [`MR_LANES`] channels and [`NR_LANES`] pixels.
pub fn lane_tile(isa: Isa) -> Option<(usize, usize)> {
    match isa {
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDot => Some((8, NR_LANES)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => Some((16, NR_LANES)),
        _ => None,
    }
}

/// How a lane kernel covers a row of `pixels` pixels: `tiles` tiles of [`NR_LANES`] (the last one
/// repeating the row's last pixel where the row ends inside it), then pixels `columns..` one by one.
/// A rest of at most half a tile goes pixel by pixel (a matrix-vector product, a classifier head on
/// one pixel, would otherwise compute seven copies of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanePlan {
    pub tiles: usize,
    pub columns: usize,
}

impl LanePlan {
    pub fn new(pixels: usize) -> LanePlan {
        let tiles = if pixels % NR_LANES <= NR_LANES / 2 { pixels / NR_LANES } else { pixels.div_ceil(NR_LANES) };
        LanePlan { tiles, columns: (tiles * NR_LANES).min(pixels) }
    }

    /// Where tile `t`'s pixels read, from `src`: the row's last pixel past its end.
    #[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
    #[inline(always)]
    fn tile(src: *const i8, starts: &[usize], t: usize) -> [*const i8; NR_LANES] {
        match starts.get(t * NR_LANES..(t + 1) * NR_LANES) {
            // A whole tile: one bounds check, no clamping per pixel.
            Some(tile) => std::array::from_fn(|j| src.wrapping_add(tile[j])),
            None => std::array::from_fn(|j| src.wrapping_add(starts[(t * NR_LANES + j).min(starts.len() - 1)])),
        }
    }
}

/// Whether `isa`'s lane kernel reads its input as unsigned bytes (VPDPBUSD multiplies unsigned by
/// signed): the caller then stores each input byte `x` as `x ^ 0x80` (`x + 128` unsigned) and the
/// kernel's sums are `sum(w * (x + 128))`, `128 * sum(w)` more than the signed ones.
pub fn lanes_read_unsigned(isa: Isa) -> bool {
    matches!(isa, Isa::Avx512Vnni)
}

/// Whether `isa`'s 4x4 tiles read their weights interleaved ([`interleave_tiles`]) rather than as
/// rows of `kp` bytes: 32-bit NEON, where the four rows' 16 bytes then come in two loads.
pub fn tiles_interleaved(isa: Isa) -> bool {
    matches!(isa, Isa::Armv7Neon)
}

/// Dense weights `[rows][kp]` with each group of [`MR`] rows from row 0 (as many as `groups`)
/// interleaved by [`KU`] bytes: `[kp / KU][MR][KU]` in the group's place, the rows after the
/// groups as they are.
///
/// # Panics
/// When `dense` holds fewer than `groups * MR` rows of `kp`, or `kp` is not a multiple of [`KU`].
pub fn interleave_tiles(dense: &[i8], kp: usize, groups: usize) -> Vec<i8> {
    assert!(kp.is_multiple_of(KU) && dense.len() >= groups * MR * kp, "interleaving out of bounds");
    let mut out = dense.to_vec();
    for g in 0..groups {
        let (src, dst) = (&dense[g * MR * kp..(g + 1) * MR * kp], &mut out[g * MR * kp..(g + 1) * MR * kp]);
        for k in 0..kp / KU {
            for i in 0..MR {
                dst[(k * MR + i) * KU..][..KU].copy_from_slice(&src[i * kp + k * KU..][..KU]);
            }
        }
    }
    out
}

/// Dense weights `[channels][kp]` (as [`tile`] reads them) repacked for the lane kernels:
/// `[kp / 4][channels + MR_LANES][4]`, the spare channels zero. Group `g` of channel `o` is at
/// `(g * (channels + MR_LANES) + o) * 4`: any [`MR_LANES`] consecutive channels of a group are one
/// contiguous run, wherever the first one is.
pub fn pack_lanes(dense: &[i8], channels: usize, kp: usize) -> Vec<i8> {
    debug_assert!(kp.is_multiple_of(KU) && dense.len() >= channels * kp);
    let width = channels + MR_LANES;
    let mut out = vec![0i8; kp / 4 * width * 4];
    for o in 0..channels {
        for (g, four) in dense[o * kp..(o + 1) * kp].chunks_exact(4).enumerate() {
            out[(g * width + o) * 4..][..4].copy_from_slice(four);
        }
    }
    out
}

/// Every pixel of `row` on the lane kernel of `isa` ([`lane_tile`]: `mr` channels by `nr` pixels, as
/// [`LanePlan`] lays them out): `row.w` points at the first channel's group 0 in weights packed by
/// [`pack_lanes`] for `channels` channels; pixel `j`'s sums are stored at `out[i * stride + j]` for
/// the `mr` channels. Input bytes are read as [`lanes_read_unsigned`] says.
///
/// # Safety
/// `row.len` is a non-zero multiple of KU and `row.taps` is not empty; `row.w` is readable for `mr` channels of every group of `row.taps.len() *
/// row.len` bytes in that layout; for every tap and pixel, the run is readable for `row.len` bytes;
/// `out` is writable at every `i * stride + j` of `mr` rows and `row.starts.len()` columns rounded
/// up to `nr`; `isa` is one of [`Isa::available`] and has a lane kernel.
#[inline]
pub unsafe fn lane_tiles(isa: Isa, row: Row, channels: usize, out: *mut i32, stride: usize) {
    debug_assert!(lane_tile(isa).is_some() && !row.starts.is_empty() && !row.taps.is_empty() && row.len >= KU && row.len.is_multiple_of(KU));
    let group_stride = (channels + MR_LANES) * 4;
    match isa {
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDot => unsafe { aarch64::sdot_lane_tiles(row, group_stride, out, stride) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { x86::vnni_lane_tiles(row, group_stride, out, stride) },
        _ => {
            let _ = (row, group_stride, out, stride);
            unreachable!("{isa:?} has no lane kernel")
        }
    }
}

/// Whether `isa`'s lane kernel also requantizes ([`lane_tiles_requant`]).
pub fn lanes_requantize(isa: Isa) -> bool {
    matches!(isa, Isa::NeonDot | Isa::Avx512Vnni)
}

/// Whether `isa`'s requantizing lane kernels also take a uniform scale ([`Scales::Uniform`]): on
/// AVX-512, where the f64 path is 8 lanes wide.
pub fn lanes_requantize_uniform(isa: Isa) -> bool {
    isa == Isa::Avx512Vnni
}

/// The scales a requantizing lane kernel applies: one f32 per channel, or one fixed-point scale for
/// all ([`Uniform`], only where it has an f64 factor and [`lanes_requantize_uniform`]).
#[derive(Debug, Clone, Copy)]
pub enum Scales<'a> {
    PerChannel(*const f32),
    Uniform(&'a Uniform),
}

/// [`lane_tiles`] with the requantization fused in: the sums start from the channels' `bias` and are
/// requantized by their `scales` (as [`requant_rows`] or, for [`Scales::Uniform`],
/// [`requant_uniform_rows`] does), and pixel `j`'s int8
/// output of channel `i` is stored at `out[i * stride + j]` ([`Layout::Nchw`]: channel rows, each
/// tile transposed), or at `out[j * stride + i]` ([`Layout::Nhwc`]: each pixel's channels stored as
/// they leave the registers).
///
/// # Safety
/// [`lane_tiles`]'s contract, `out` being int8 and writable at those places for `mr` channels and
/// `row.starts.len()` pixels rounded up to `nr`; `bias` and per-channel `scales` are readable for
/// `mr` channels; [`lanes_requantize`] for `isa` ([`lanes_requantize_uniform`] for a uniform scale,
/// which has an f64 factor).
#[inline]
#[allow(clippy::too_many_arguments)]
pub unsafe fn lane_tiles_requant(isa: Isa, row: Row, channels: usize, bias: *const i32, scales: Scales, zero_point: i8, out: *mut i8, stride: usize, layout: Layout) {
    debug_assert!(lanes_requantize(isa) && !row.starts.is_empty() && !row.taps.is_empty() && row.len >= KU && row.len.is_multiple_of(KU));
    let group_stride = (channels + MR_LANES) * 4;
    match (isa, layout, scales) {
        #[cfg(target_arch = "aarch64")]
        (Isa::NeonDot, Layout::Nchw, Scales::PerChannel(scales)) => unsafe { aarch64::sdot_lane_tiles_requant::<false>(row, group_stride, bias, scales, zero_point, out, stride) },
        #[cfg(target_arch = "aarch64")]
        (Isa::NeonDot, Layout::Nhwc, Scales::PerChannel(scales)) => unsafe { aarch64::sdot_lane_tiles_requant::<true>(row, group_stride, bias, scales, zero_point, out, stride) },
        // One copy of each kernel per kind of scale: no test of the kind per store.
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512Vnni, Layout::Nchw, Scales::PerChannel(scales)) => unsafe { x86::vnni_lane_tiles_requant::<false>(row, group_stride, bias, scales, None, zero_point, out, stride) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512Vnni, Layout::Nchw, Scales::Uniform(uniform)) => unsafe { x86::vnni_lane_tiles_requant::<true>(row, group_stride, bias, std::ptr::null(), Some(uniform), zero_point, out, stride) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512Vnni, Layout::Nhwc, Scales::PerChannel(scales)) => unsafe { x86::vnni_lane_tiles_requant_pixels::<false>(row, group_stride, bias, scales, None, zero_point, out, stride) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512Vnni, Layout::Nhwc, Scales::Uniform(uniform)) => unsafe { x86::vnni_lane_tiles_requant_pixels::<true>(row, group_stride, bias, std::ptr::null(), Some(uniform), zero_point, out, stride) },
        _ => {
            let _ = (row, group_stride, bias, scales, zero_point, out, stride);
            unreachable!("{isa:?} has no requantizing lane kernel")
        }
    }
}

/// The reference kernel.
///
/// # Safety
/// As [`tile`].
pub unsafe fn portable(ops: Operands) -> Tile {
    let kp = ops.kp();
    let mut out = [[0i32; NR]; MR];
    for (i, row) in out.iter_mut().enumerate() {
        // SAFETY: the caller's contract.
        let w = unsafe { std::slice::from_raw_parts(ops.w.add(i * kp), kp) };
        for (acc, &x) in row.iter_mut().zip(&ops.x) {
            for (t, &tap) in ops.taps.iter().enumerate() {
                let x = unsafe { std::slice::from_raw_parts(x.add(tap), ops.len) };
                *acc += w[t * ops.len..(t + 1) * ops.len].iter().zip(x).map(|(&a, &b)| a as i32 * b as i32).sum::<i32>();
            }
        }
    }
    out
}

/// Requantizes one channel's accumulators with a per-channel f32 scale, as
/// [`super::Requant::apply`] does for `Requant::PerChannel`: `out[i] = sat8(round_even((acc[i] + bias) *
/// scale) + zero_point)`. `out` and `acc` have the same length.
#[inline]
pub fn requant_row(isa: Isa, acc: &[i32], bias: i32, scale: f32, zero_point: i32, out: &mut [i8]) {
    let n = acc.len().min(out.len());
    let (acc, out) = (&acc[..n], &mut out[..n]);
    let done = match isa {
        // SAFETY: lengths equal; NEON is architectural on aarch64, AVX2 detected at run time.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDot => unsafe { aarch64::requant_row(acc, bias, scale, zero_point, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => unsafe { x86::requant_row(acc, bias, scale, zero_point, out) },
        // SAFETY: lengths equal; `Isa::Armv7Neon` is only chosen where the CPU has NEON.
        #[cfg(target_arch = "arm")]
        Isa::Armv7Neon => unsafe { arm::requant_row(acc, bias, scale, zero_point, out) },
        _ => 0,
    };
    for (o, &a) in out[done..].iter_mut().zip(&acc[done..]) {
        *o = requant_one(a, bias, scale, zero_point);
    }
}

/// [`requant_row`] for `acc.len()` channels at once: channel `i`'s first `valid` accumulators into
/// `out[i * stride..][..valid]`.
///
/// # Panics
/// When `bias` or `scales` has fewer entries than `acc`, `valid` exceeds a row, or `out` is too short.
#[allow(clippy::too_many_arguments)]
pub fn requant_rows<const N: usize>(
    isa: Isa,
    acc: &[[i32; N]],
    valid: usize,
    bias: &[i32],
    scales: &[f32],
    zero_point: i32,
    out: &mut [i8],
    stride: usize,
) {
    let rows = acc.len();
    if rows == 0 || valid == 0 {
        return;
    }
    assert!(bias.len() >= rows && scales.len() >= rows && valid <= N && (rows - 1) * stride + valid <= out.len(), "requantization out of bounds");
    #[cfg(target_arch = "aarch64")]
    if matches!(isa, Isa::Neon | Isa::NeonDot) {
        // SAFETY: bounds asserted above; NEON is architectural on aarch64.
        unsafe { aarch64::requant_rows(acc, valid, bias, scales, zero_point, out, stride) };
        return;
    }
    for (i, acc) in acc.iter().enumerate() {
        requant_row(isa, &acc[..valid], bias[i], scales[i], zero_point, &mut out[i * stride..i * stride + valid]);
    }
}

/// A uniform scale's requantization: tract's fixed-point [`Scaler`] (an int32 multiplier, a right
/// shift, ties to even), computed as one f64 multiplication where that is exact (the product of an
/// accumulator below 2^22 and a multiplier of 24 significant bits fits f64's 53, and the shift is a
/// power of two), element by element through the `Scaler` otherwise.
#[derive(Debug, Clone)]
pub struct Uniform {
    pub scaler: Scaler,
    /// The f64 factor equal to the scaler on accumulators below 2^22, where there is one: ties to
    /// even, a right shift, results well inside int32.
    factor: Option<f64>,
}

impl Uniform {
    /// The f64 factor, where the scaler has one (see the type).
    pub fn factor(&self) -> Option<f64> {
        self.factor
    }

    pub fn new(scaler: Scaler) -> Uniform {
        use tract_nnef::internal::tract_linalg::mmm::RoundingPolicy;
        let (multiplier, shift) = match scaler.mult {
            Some(m) => (m as f64, scaler.shift + 31),
            None => (1.0, scaler.shift),
        };
        // tract shifts an i64 by `shift`: from 64 on, its result is not defined, so neither is ours.
        let factor = (scaler.policy == RoundingPolicy::Even && shift > 0 && shift < 64)
            .then(|| multiplier * 2f64.powi(-(shift as i32)))
            .filter(|&f| f < 256.0);
        Uniform { scaler, factor }
    }

    /// The factor as `(m, s)`, `m * 2^-s` (the scaler's multiplier, or 1, and its shift), where there
    /// is one.
    #[cfg(any(target_arch = "arm", target_arch = "aarch64"))]
    fn integer_factor(&self) -> Option<(i32, u32)> {
        self.factor?;
        let (m, shift) = match self.scaler.mult {
            Some(m) => (m, self.scaler.shift + 31),
            None => (1, self.scaler.shift),
        };
        Some((m, shift as u32))
    }

    /// The int8 outputs of `acc` (bias added) with `zero_point`.
    #[inline(always)]
    pub fn row(&self, acc: &[i32], bias: i32, zero_point: i32, out: &mut [i8]) {
        match self.factor {
            Some(factor) if acc.iter().all(|&a| a.wrapping_add(bias).unsigned_abs() < 1 << 22) => {
                for (o, &a) in out.iter_mut().zip(acc) {
                    *o = super::round_f64(a.wrapping_add(bias) as f64 * factor).saturating_add(zero_point).clamp(-128, 127) as i8;
                }
            }
            _ => {
                for (o, &a) in out.iter_mut().zip(acc) {
                    *o = (self.scaler * a.wrapping_add(bias)).saturating_add(zero_point).clamp(-128, 127) as i8;
                }
            }
        }
    }
}

/// [`Uniform::row`], with its f64 loop (rounded by adding 1.5 * 2^52) vectorized with AVX2 on CPUs
/// that have it, and written out in AVX-512 (16 sums per step) and aarch64 NEON (8) on those.
pub fn requant_uniform_row(isa: Isa, uniform: &Uniform, acc: &[i32], bias: i32, zero_point: i32, out: &mut [i8]) {
    match isa {
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is architectural on aarch64.
        Isa::Neon | Isa::NeonDot => unsafe { aarch64::uniform_row(uniform, acc, bias, zero_point, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512Vnni` is only chosen where the CPU has AVX-512F and AVX2.
        Isa::Avx512Vnni => unsafe { x86::uniform_row_512(uniform, acc, bias, zero_point, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only chosen where the CPU has AVX2.
        Isa::Avx2 => unsafe { x86::uniform_row(uniform, acc, bias, zero_point, out) },
        #[cfg(target_arch = "arm")]
        Isa::Armv7Neon => match arm::Uniform8::new(uniform) {
            // SAFETY: `Isa::Armv7Neon` is only chosen where the CPU has NEON.
            Some(eight) => unsafe { eight.row(acc, bias, zero_point, out) },
            None => uniform.row(acc, bias, zero_point, out),
        },
        _ => uniform.row(acc, bias, zero_point, out),
    }
}

/// [`requant_uniform_row`] on each of `acc`'s rows (`valid` sums each), row `i` with `bias[i]` into
/// `out[i * stride..][..valid]`: one call per tile, not per row (on AVX-512 the rows' steps then
/// overlap; a row is only a block of 32 pixels).
///
/// # Panics
/// When `bias` has fewer entries than `acc`, `valid` exceeds a row, or `out` is too short.
#[allow(clippy::too_many_arguments)]
pub fn requant_uniform_rows<const N: usize>(isa: Isa, uniform: &Uniform, acc: &[[i32; N]], valid: usize, bias: &[i32], zero_point: i32, out: &mut [i8], stride: usize) {
    let rows = acc.len();
    if rows == 0 || valid == 0 {
        return;
    }
    assert!(bias.len() >= rows && valid <= N && (rows - 1) * stride + valid <= out.len(), "requantization out of bounds");
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni {
        for (i, acc) in acc.iter().enumerate() {
            // SAFETY: `Isa::Avx512Vnni` is only chosen where the CPU has AVX-512F and AVX2.
            unsafe { x86::uniform_row_512(uniform, &acc[..valid], bias[i], zero_point, &mut out[i * stride..][..valid]) };
        }
        return;
    }
    #[cfg(target_arch = "arm")]
    if let (Isa::Armv7Neon, Some(eight)) = (isa, arm::Uniform8::new(uniform)) {
        for (i, acc) in acc.iter().enumerate() {
            // SAFETY: `Isa::Armv7Neon` is only chosen where the CPU has NEON.
            unsafe { eight.row(&acc[..valid], bias[i], zero_point, &mut out[i * stride..][..valid]) };
        }
        return;
    }
    for (i, acc) in acc.iter().enumerate() {
        requant_uniform_row(isa, uniform, &acc[..valid], bias[i], zero_point, &mut out[i * stride..][..valid]);
    }
}

/// The reference requantization of one accumulator (f32 scale).
#[inline]
pub fn requant_one(acc: i32, bias: i32, scale: f32, zero_point: i32) -> i8 {
    let scaled = super::round_saturating(acc.wrapping_add(bias) as f32 * scale);
    scaled.saturating_add(zero_point).clamp(-128, 127) as i8
}

#[cfg(target_arch = "aarch64")]
pub(super) use aarch64::requant8;
#[cfg(target_arch = "x86_64")]
pub(super) use x86::requant16_512;

#[cfg(target_arch = "aarch64")]
mod aarch64 {
    use super::{KU, LanePlan, MR, NR, NR_LANES, Operands};
    use std::arch::aarch64::*;

    /// Four sums (bias included) requantized as [`super::requant_one`] does them, still int32 (the
    /// callers narrow with SQXTN): f32 conversion, multiplication by `scale`, FCVTNS (round to
    /// nearest even, saturating), SQADD of the zero point.
    #[inline(always)]
    pub fn requant4(acc: int32x4_t, scale: float32x4_t, zero_point: int32x4_t) -> int32x4_t {
        // SAFETY: NEON is architectural on aarch64.
        unsafe { vqaddq_s32(scaled(acc, scale), zero_point) }
    }

    /// FCVTNS of the scaled sums: round to nearest even, saturating.
    #[inline(always)]
    fn scaled(acc: int32x4_t, scale: float32x4_t) -> int32x4_t {
        // SAFETY: NEON is architectural on aarch64.
        unsafe { vcvtnq_s32_f32(vmulq_f32(vcvtq_f32_s32(acc), scale)) }
    }

    /// Eight sums (bias included) requantized as [`super::requant_one`] does them, still int16 (the
    /// callers narrow with SQXTN): the scaled sums narrowed to int16 (SQXTN), then the int8 zero
    /// point added there (SQADD), one instruction per eight sums instead of per four. The bytes are
    /// [`requant4`]'s: a sum past int16 is past int8 either way, on the same side.
    #[inline(always)]
    pub fn requant8([lo, hi]: [int32x4_t; 2], [slo, shi]: [float32x4_t; 2], zero_point: int16x8_t) -> int16x8_t {
        // SAFETY: NEON is architectural on aarch64.
        unsafe { vqaddq_s16(vqmovn_high_s32(vqmovn_s32(scaled(lo, slo)), scaled(hi, shi)), zero_point) }
    }

    /// Runs `$step(acc, w_i, x_j)` over the 4x4 tile for each 16-byte block of each run, then folds
    /// each accumulator's lanes and stores the tile.
    macro_rules! tile_4x4 {
        ($ops:expr, $out:expr, $stride:expr, |$acc:ident, $wv:ident, $xv:ident| $step:expr) => {{
            let ops: Operands = $ops;
            let kp = ops.taps.len() * ops.len;
            let z = vdupq_n_s32(0);
            let mut a = [[z; NR]; MR];
            let mut w = ops.w;
            for &tap in ops.taps {
                let x: [*const i8; NR] = std::array::from_fn(|j| ops.x[j].add(tap));
                let mut k = 0;
                while k < ops.len {
                    let wv = [vld1q_s8(w), vld1q_s8(w.add(kp)), vld1q_s8(w.add(2 * kp)), vld1q_s8(w.add(3 * kp))];
                    let xv = [vld1q_s8(x[0].add(k)), vld1q_s8(x[1].add(k)), vld1q_s8(x[2].add(k)), vld1q_s8(x[3].add(k))];
                    for i in 0..MR {
                        for j in 0..NR {
                            let ($acc, $wv, $xv) = (a[i][j], wv[i], xv[j]);
                            a[i][j] = $step;
                        }
                    }
                    k += KU;
                    w = w.add(KU);
                }
            }
            for i in 0..MR {
                // Pairwise adds fold the 16 lane sets into one vector of 4 pixels per channel.
                let lo = vpaddq_s32(a[i][0], a[i][1]);
                let hi = vpaddq_s32(a[i][2], a[i][3]);
                vst1q_s32($out.add(i * $stride), vpaddq_s32(lo, hi));
            }
        }};
    }

    /// SMULL + SMLAL2 (two int8 products summed in int16) + SADALP (into int32): 16 MACs in 3
    /// instructions, Cortex-A53/A72 class cores.
    ///
    /// # Safety
    /// [`super::tile`]'s contract.
    #[target_feature(enable = "neon")]
    pub unsafe fn smull(ops: Operands, out: *mut i32, stride: usize) {
        unsafe {
            tile_4x4!(ops, out, stride, |acc, wv, xv| smull_step(acc, wv, xv))
        }
    }

    /// SMULL + SMLAL2 (two int8 products summed in int16) + SADALP (into int32) on 16 bytes.
    #[inline(always)]
    unsafe fn smull_step(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
        unsafe { vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(w), vget_low_s8(x)), w, x)) }
    }

    /// [`smull`] over every tile of a row of tiles.
    ///
    /// # Safety
    /// [`super::tiles`]'s contract.
    #[target_feature(enable = "neon")]
    pub unsafe fn smull_tiles(row: super::Row, out: *mut i32, stride: usize) {
        unsafe {
            for t in 0..row.starts.len() / NR {
                let ops = row.tile(t);
                tile_4x4!(ops, out.add(t * NR), stride, |acc, wv, xv| smull_step(acc, wv, xv))
            }
        }
    }

    /// SDOT by element into channel vectors: `acc.4s += w.16b . x.4b[L]` (four channels, each the dot
    /// product of its four weight bytes with the pixel's four input bytes of lane `L`).
    #[inline(always)]
    unsafe fn sdot_lane<const L: i32>(mut acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
        unsafe {
            std::arch::asm!(
                ".arch_extension dotprod",
                "sdot {acc:v}.4s, {w:v}.16b, {x:v}.4b[{l}]",
                acc = inout(vreg) acc, w = in(vreg) w, x = in(vreg) x, l = const L,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }

    /// The weights of 8 channels for 16 bytes of reduction: the four groups of four bytes (`ks` bytes
    /// apart), each as the low and high four channels.
    #[inline(always)]
    unsafe fn weight_groups(w: *const i8, ks: usize) -> [[int8x16_t; 2]; 4] {
        unsafe { std::array::from_fn(|g| [vld1q_s8(w.add(g * ks)), vld1q_s8(w.add(g * ks + 16))]) }
    }

    /// One pixel's 16 input bytes (`xv`) against [`weight_groups`]: 8 SDOTs by element, lane `g` of
    /// `xv` meeting group `g`, into the low and high four channels' sums.
    #[inline(always)]
    unsafe fn sdot_groups([mut lo, mut hi]: [int32x4_t; 2], w: &[[int8x16_t; 2]; 4], xv: int8x16_t) -> [int32x4_t; 2] {
        unsafe {
            lo = sdot_lane::<0>(lo, w[0][0], xv);
            hi = sdot_lane::<0>(hi, w[0][1], xv);
            lo = sdot_lane::<1>(lo, w[1][0], xv);
            hi = sdot_lane::<1>(hi, w[1][1], xv);
            lo = sdot_lane::<2>(lo, w[2][0], xv);
            hi = sdot_lane::<2>(hi, w[2][1], xv);
            lo = sdot_lane::<3>(lo, w[3][0], xv);
            hi = sdot_lane::<3>(hi, w[3][1], xv);
        }
        [lo, hi]
    }

    /// The four pixels' vectors of four channels each, transposed into four channels' vectors of four
    /// pixels each.
    #[inline(always)]
    unsafe fn transpose_4x4(v: [int32x4_t; 4]) -> [int32x4_t; 4] {
        unsafe {
            let t0 = vreinterpretq_s64_s32(vtrn1q_s32(v[0], v[1]));
            let t1 = vreinterpretq_s64_s32(vtrn2q_s32(v[0], v[1]));
            let t2 = vreinterpretq_s64_s32(vtrn1q_s32(v[2], v[3]));
            let t3 = vreinterpretq_s64_s32(vtrn2q_s32(v[2], v[3]));
            [vtrn1q_s64(t0, t2), vtrn1q_s64(t1, t3), vtrn2q_s64(t0, t2), vtrn2q_s64(t1, t3)].map(|r| vreinterpretq_s32_s64(r))
        }
    }

    /// One tile of the SDOT lane kernel: 8 channels (two vectors of four) by the 8 pixels `x`, 16
    /// accumulators starting from `init` (low and high four channels). Each 16-byte block of a
    /// pixel's run is one load whose four lanes meet the four groups' weight vectors: 8 weight loads
    /// and 8 input loads per 64 SDOTs (1024 MACs), no horizontal reduction. Returns, per pixel, the
    /// low and high four channels' sums.
    ///
    /// # Safety
    /// [`super::lane_tiles`]'s contract for the tile, with `ks` the byte stride between weight groups.
    #[inline(always)]
    unsafe fn sdot_lane_tile(row: &super::Row, ks: usize, x: [*const i8; NR_LANES], init: [int32x4_t; 2]) -> [[int32x4_t; NR_LANES]; 2] {
        unsafe {
            let mut lo = [init[0]; NR_LANES];
            let mut hi = [init[1]; NR_LANES];
            let mut w = row.w;
            // Loops that test at their end (there is a tap, and a run is at least KU bytes): with
            // tests at the start, LLVM copied `init` into the accumulators twice per tile, once
            // for a row with nothing to sum.
            debug_assert!(!row.taps.is_empty() && row.len >= KU);
            let mut t = 0;
            loop {
                let tap = *row.taps.get_unchecked(t);
                let mut k = tap;
                let end = tap + row.len;
                loop {
                    let wv = weight_groups(w, ks);
                    // Unrolled by hand: LLVM keeps a loop over the asm blocks, with the
                    // accumulators spilled to the stack and reloaded per pixel.
                    macro_rules! pixel {
                        ($($j:literal)*) => {$(
                            [lo[$j], hi[$j]] = sdot_groups([lo[$j], hi[$j]], &wv, vld1q_s8(x[$j].add(k)));
                        )*};
                    }
                    const _: () = assert!(NR_LANES == 8);
                    pixel!(0 1 2 3 4 5 6 7);
                    w = w.add(4 * ks);
                    k += KU;
                    if k >= end {
                        break;
                    }
                }
                t += 1;
                if t == row.taps.len() {
                    break;
                }
            }
            [lo, hi]
        }
    }

    /// The SDOT lane kernel ([`super::lane_tiles`]): [`sdot_lane_tile`] over the row, each tile
    /// transposed to channel rows once, at the end.
    ///
    /// # Safety
    /// [`super::lane_tiles`]'s contract, with `ks` the byte stride between weight groups; the CPU has
    /// the `dotprod` feature.
    #[target_feature(enable = "neon,dotprod")]
    pub unsafe fn sdot_lane_tiles(row: super::Row, ks: usize, out: *mut i32, stride: usize) {
        unsafe {
            let z = vdupq_n_s32(0);
            let plan = LanePlan::new(row.starts.len());
            for t in 0..plan.tiles {
                let x = LanePlan::tile(row.src, row.starts, t);
                let acc = sdot_lane_tile(&row, ks, x, [z, z]);
                let o = out.add(t * NR_LANES);
                for (half, acc) in acc.iter().enumerate() {
                    for q in 0..NR_LANES / 4 {
                        let rows = transpose_4x4([acc[4 * q], acc[4 * q + 1], acc[4 * q + 2], acc[4 * q + 3]]);
                        for (c, r) in rows.into_iter().enumerate() {
                            vst1q_s32(o.add((4 * half + c) * stride + 4 * q), r);
                        }
                    }
                }
            }
            for j in plan.columns..row.starts.len() {
                let [lo, hi] = sdot_lane_column(&row, ks, row.src.add(row.starts[j]), [z, z]);
                let mut sums = [0i32; 8];
                vst1q_s32(sums.as_mut_ptr(), lo);
                vst1q_s32(sums.as_mut_ptr().add(4), hi);
                for (c, v) in sums.into_iter().enumerate() {
                    *out.add(c * stride + j) = v;
                }
            }
        }
    }

    /// One pixel against 8 channels ([`sdot_lane_tile`]'s column): per 16 bytes of reduction, 8
    /// weight loads and one input load for 8 SDOTs.
    ///
    /// # Safety
    /// As [`sdot_lane_tile`]'s, for the one pixel at `x`.
    #[inline(always)]
    unsafe fn sdot_lane_column(row: &super::Row, ks: usize, x: *const i8, init: [int32x4_t; 2]) -> [int32x4_t; 2] {
        unsafe {
            let [mut lo, mut hi] = init;
            let mut w = row.w;
            for &tap in row.taps {
                let mut k = tap;
                while k < tap + row.len {
                    [lo, hi] = sdot_groups([lo, hi], &weight_groups(w, ks), vld1q_s8(x.add(k)));
                    w = w.add(4 * ks);
                    k += KU;
                }
            }
            [lo, hi]
        }
    }

    /// [`super::lane_tiles_requant`] on SDOT: [`sdot_lane_tile`] from the bias, each pixel's eight
    /// channels requantized as [`requant_rows`] does (FCVTNS, SQADD, SQXTN twice), then stored as
    /// they are when `PIXELS` (channels-last), or the 8x8 bytes transposed to channel rows: no int32
    /// tile is stored.
    ///
    /// # Safety
    /// [`super::lane_tiles_requant`]'s contract (channels-last when `PIXELS`); the CPU has the
    /// `dotprod` feature.
    #[target_feature(enable = "neon,dotprod")]
    pub unsafe fn sdot_lane_tiles_requant<const PIXELS: bool>(row: super::Row, ks: usize, bias: *const i32, scales: *const f32, zero_point: i8, out: *mut i8, stride: usize) {
        unsafe {
            let init = [vld1q_s32(bias), vld1q_s32(bias.add(4))];
            let scale = [vld1q_f32(scales), vld1q_f32(scales.add(4))];
            let z = vdupq_n_s16(zero_point.into());
            let q = |lo: int32x4_t, hi: int32x4_t| vqmovn_s16(requant8([lo, hi], scale, z));
            let plan = LanePlan::new(row.starts.len());
            for t in 0..plan.tiles {
                let x = LanePlan::tile(row.src, row.starts, t);
                let [lo, hi] = sdot_lane_tile(&row, ks, x, init);
                let pixels: [int8x8_t; NR_LANES] = std::array::from_fn(|j| q(lo[j], hi[j]));
                if PIXELS {
                    for (j, p) in pixels.into_iter().enumerate() {
                        vst1_s8(out.add((t * NR_LANES + j) * stride), p);
                    }
                } else {
                    let o = out.add(t * NR_LANES);
                    for (c, r) in super::super::layout::transpose_8x8(pixels).into_iter().enumerate() {
                        vst1_s8(o.add(c * stride), r);
                    }
                }
            }
            for j in plan.columns..row.starts.len() {
                let [lo, hi] = sdot_lane_column(&row, ks, row.src.add(row.starts[j]), init);
                if PIXELS {
                    vst1_s8(out.add(j * stride), q(lo, hi));
                } else {
                    let mut bytes = [0i8; 8];
                    vst1_s8(bytes.as_mut_ptr(), q(lo, hi));
                    for (c, v) in bytes.into_iter().enumerate() {
                        *out.add(c * stride + j) = v;
                    }
                }
            }
        }
    }

    /// [`super::requant_rows`]: 8 at a time, then 4, then one by one.
    ///
    /// # Safety
    /// [`super::requant_rows`]'s bounds.
    #[target_feature(enable = "neon")]
    pub unsafe fn requant_rows<const N: usize>(acc: &[[i32; N]], valid: usize, bias: &[i32], scales: &[f32], zero_point: i32, out: &mut [i8], stride: usize) {
        unsafe {
            let z = vdupq_n_s32(zero_point);
            for (i, row) in acc.iter().enumerate() {
                let (b, scale) = (vdupq_n_s32(*bias.get_unchecked(i)), *scales.get_unchecked(i));
                let s = vdupq_n_f32(scale);
                let step = |p: *const i32| requant4(vaddq_s32(vld1q_s32(p), b), s, z);
                let (a, o) = (row.as_ptr(), out.as_mut_ptr().add(i * stride));
                let mut k = 0;
                while k + 8 <= valid {
                    let n = vqmovn_s16(vcombine_s16(vqmovn_s32(step(a.add(k))), vqmovn_s32(step(a.add(k + 4)))));
                    vst1_s8(o.add(k), n);
                    k += 8;
                }
                if k + 4 <= valid {
                    let r = vqmovn_s32(step(a.add(k)));
                    let n = vqmovn_s16(vcombine_s16(r, r));
                    std::ptr::write_unaligned(o.add(k) as *mut u32, vget_lane_u32::<0>(vreinterpret_u32_s8(n)));
                    k += 4;
                }
                while k < valid {
                    *o.add(k) = super::requant_one(*a.add(k), *bias.get_unchecked(i), scale, zero_point);
                    k += 1;
                }
            }
        }
    }

    /// [`super::Uniform::row`] 8 sums at a time, with tract's own integer arithmetic (its `Scaler`
    /// times an i32, as 32-bit ARM's `Uniform8`): SMULL gives `sum * m` in 64 bits,
    /// `(p + 2^(s-1) - 1 + ((p >> s) & 1)) >> s` (SSHL by a negative count) rounds `p / 2^s` to
    /// nearest even, the low 32 bits are kept (tract's `as i32`), and the zero point is added and the
    /// result narrowed to int8 with saturation (the clamp); the last few through `row`. Exact for
    /// every sum: no range check. The f64 version before it, with its check pass, took 0.42 M of
    /// fashion-resnet's per-tensor 4.10 M instructions on Cortex-A72.
    ///
    /// # Safety
    /// None beyond the target's (NEON is architectural on aarch64).
    #[target_feature(enable = "neon")]
    pub unsafe fn uniform_row(uniform: &super::Uniform, acc: &[i32], bias: i32, zero_point: i32, out: &mut [i8]) {
        let n = acc.len().min(out.len());
        let Some((m, s)) = uniform.integer_factor() else {
            return uniform.row(acc, bias, zero_point, out);
        };
        let mut i = 0;
        // SAFETY: the loads read acc[i..i + 8] and the stores write out[i..i + 8], i + 8 <= n.
        unsafe {
            let (b, z, mul) = (vdupq_n_s32(bias), vdupq_n_s32(zero_point), vdupq_n_s32(m));
            let (shift, half, one) = (vdupq_n_s64(-(s as i64)), vdupq_n_s64((1i64 << (s - 1)) - 1), vdupq_n_s64(1));
            let round = |p: int64x2_t| vshlq_s64(vaddq_s64(vaddq_s64(p, half), vandq_s64(vshlq_s64(p, shift), one)), shift);
            let four = |p: *const i32| {
                let v = vaddq_s32(vld1q_s32(p), b);
                let low = vmovn_s64(round(vmull_s32(vget_low_s32(v), vget_low_s32(mul))));
                let scaled = vmovn_high_s64(low, round(vmull_high_s32(v, mul)));
                vqmovn_s32(vqaddq_s32(scaled, z))
            };
            while i + 8 <= n {
                vst1_s8(out.as_mut_ptr().add(i), vqmovn_s16(vcombine_s16(four(acc.as_ptr().add(i)), four(acc.as_ptr().add(i + 4)))));
                i += 8;
            }
        }
        uniform.row(&acc[i..n], bias, zero_point, &mut out[i..n]);
    }

    /// [`super::requant_row`] 8 at a time; returns how many it did.
    ///
    /// # Safety
    /// `acc` and `out` have the same length.
    #[target_feature(enable = "neon")]
    pub unsafe fn requant_row(acc: &[i32], bias: i32, scale: f32, zero_point: i32, out: &mut [i8]) -> usize {
        unsafe {
            let (b, s, z) = (vdupq_n_s32(bias), vdupq_n_f32(scale), vdupq_n_s32(zero_point));
            // Wrapping add of the bias, then `requant4`.
            let step = |p: *const i32| requant4(vaddq_s32(vld1q_s32(p), b), s, z);
            let mut i = 0;
            while i + 8 <= acc.len() {
                let lo = vqmovn_s32(step(acc.as_ptr().add(i)));
                let hi = vqmovn_s32(step(acc.as_ptr().add(i + 4)));
                vst1_s8(out.as_mut_ptr().add(i), vqmovn_s16(vcombine_s16(lo, hi)));
                i += 8;
            }
            i
        }
    }
}

#[cfg(target_arch = "arm")]
mod arm {
    use super::{KU, MR};

    /// 32-bit ARM NEON (Cortex-A7, A9, A53 in 32-bit mode): VMULL.S8 + VMLAL.S8 into int16, VPADAL.S16
    /// into int32, 4 channels by 2 pixels at a time in the 16 quad registers. Inline assembly: Rust's
    /// 32-bit ARM NEON intrinsics and `neon` target feature are not stable; the assembler is told
    /// `.fpu neon` and the registers the compiler knows (d0-d15) are declared clobbered. The
    /// accumulators live in d16-d31, which the armv7-unknown-linux-gnueabihf target (`-d32`) never
    /// allocates and the ABI does not preserve across calls.
    ///
    /// One block of assembly runs every pair of `pixels` (their reads' starting addresses) through
    /// every tap: the accumulators stay in registers from a pair's first tap to its last, are summed
    /// across their lanes by VPADD and stored as two int32 per channel, `out[i * stride + j]` for the
    /// pair's pixels `j`. The weights are interleaved ([`super::interleave_tiles`]): the four rows'
    /// 16 bytes of each block are two 32-byte loads (as rows of `kp` bytes they were four loads and
    /// the address arithmetic between them, 2 of the loop's 32 instructions); what does not change
    /// from pair to pair (the weights' start, the taps, the blocks per tap, the stride) is read from
    /// a small block in memory, the general registers being short.
    ///
    /// # Safety
    /// [`super::tile`]'s contract for each pair's pixels (two of a tile's four), `pixels.len()` even,
    /// and the CPU has NEON ([`super::super::Isa::available`] checks the kernel's HWCAP).
    pub unsafe fn pairs(w: *const i8, taps: &[usize], len: usize, pixels: &[*const i8], out: *mut i32, stride: usize) {
        debug_assert!(pixels.len().is_multiple_of(2));
        let blocks = len / KU;
        if pixels.is_empty() {
            return;
        }
        if blocks == 0 || taps.is_empty() {
            for i in 0..MR {
                for j in 0..pixels.len() {
                    // SAFETY: the caller's contract.
                    unsafe { *out.add(i * stride + j) = 0 };
                }
            }
            return;
        }
        let range = pixels.as_ptr_range();
        let taps_range = taps.as_ptr_range();
        // [weights, blocks per tap, first tap, past the last tap, stride in bytes, past the last pixel]
        let block: [usize; 6] = [w as usize, blocks, taps_range.start as usize, taps_range.end as usize, 4 * stride, range.end as usize];
        // SAFETY: the caller's contract: every tap's run of `len` bytes from each pixel, the four
        // weight rows' `MR * kp` interleaved bytes, and two int32 of each channel's row of `out` per pair; `taps`
        // holds `taps.len()` offsets and `pixels` the pairs' addresses (usize and pointers are 32
        // bits here, one word each).
        unsafe {
            std::arch::asm!(
                ".fpu neon",
                "4:",
                "ldr {w}, [{prm}]",
                "ldr {taps}, [{prm}, #8]",
                "vmov.i32 q8, #0",
                "vmov.i32 q9, #0",
                "vmov.i32 q10, #0",
                "vmov.i32 q11, #0",
                "vmov.i32 q12, #0",
                "vmov.i32 q13, #0",
                "vmov.i32 q14, #0",
                "vmov.i32 q15, #0",
                "3:",
                "ldr {n}, [{taps}], #4",
                "ldr {x0}, [{px}]",
                "ldr {x1}, [{px}, #4]",
                "add {x0}, {x0}, {n}",
                "add {x1}, {x1}, {n}",
                "ldr {n}, [{prm}, #4]",
                "2:",
                "vld1.8 {{d8, d9}}, [{x0}]!",
                "vld1.8 {{d10, d11}}, [{x1}]!",
                "vld1.8 {{d0, d1, d2, d3}}, [{w}]!",
                "vld1.8 {{d4, d5, d6, d7}}, [{w}]!",
                "vmull.s8 q6, d0, d8",
                "vmull.s8 q7, d0, d10",
                "vmlal.s8 q6, d1, d9",
                "vmlal.s8 q7, d1, d11",
                "vpadal.s16 q8, q6",
                "vpadal.s16 q9, q7",
                "vmull.s8 q6, d2, d8",
                "vmull.s8 q7, d2, d10",
                "vmlal.s8 q6, d3, d9",
                "vmlal.s8 q7, d3, d11",
                "vpadal.s16 q10, q6",
                "vpadal.s16 q11, q7",
                "vmull.s8 q6, d4, d8",
                "vmull.s8 q7, d4, d10",
                "vmlal.s8 q6, d5, d9",
                "vmlal.s8 q7, d5, d11",
                "vpadal.s16 q12, q6",
                "vpadal.s16 q13, q7",
                "vmull.s8 q6, d6, d8",
                "vmull.s8 q7, d6, d10",
                "vmlal.s8 q6, d7, d9",
                "vmlal.s8 q7, d7, d11",
                "vpadal.s16 q14, q6",
                "vpadal.s16 q15, q7",
                "subs {n}, {n}, #1",
                "bne 2b",
                "ldr {x1}, [{prm}, #12]",
                "cmp {taps}, {x1}",
                "bne 3b",
                // Channel i's two pixels, [i][0] and [i][1], into d(i), stored at its row.
                "vpadd.i32 d16, d16, d17",
                "vpadd.i32 d18, d18, d19",
                "vpadd.i32 d0, d16, d18",
                "vpadd.i32 d20, d20, d21",
                "vpadd.i32 d22, d22, d23",
                "vpadd.i32 d1, d20, d22",
                "vpadd.i32 d24, d24, d25",
                "vpadd.i32 d26, d26, d27",
                "vpadd.i32 d2, d24, d26",
                "vpadd.i32 d28, d28, d29",
                "vpadd.i32 d30, d30, d31",
                "vpadd.i32 d3, d28, d30",
                "ldr {x1}, [{prm}, #16]",
                "mov {x0}, {out}",
                "vst1.32 {{d0}}, [{x0}], {x1}",
                "vst1.32 {{d1}}, [{x0}], {x1}",
                "vst1.32 {{d2}}, [{x0}], {x1}",
                "vst1.32 {{d3}}, [{x0}]",
                "add {out}, {out}, #8",
                "add {px}, {px}, #8",
                "ldr {x1}, [{prm}, #20]",
                "cmp {px}, {x1}",
                "bne 4b",
                prm = in(reg) block.as_ptr(),
                w = out(reg) _,
                taps = out(reg) _,
                px = inout(reg) range.start => _,
                out = inout(reg) out => _,
                x0 = out(reg) _,
                x1 = out(reg) _,
                n = out(reg) _,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _, out("d14") _, out("d15") _,
                options(nostack),
            );
        }
    }

    /// [`super::Uniform::row`] 8 sums at a time, with tract's own integer arithmetic (its `Scaler`
    /// times an i32) where the f64 path stands in for it: VMULL.S32 gives `sum * m` in 64 bits (the
    /// scaler's multiplier, or 1) and `(p + 2^(s-1) - 1 + ((p >> s) & 1)) >> s` (arithmetic shifts,
    /// VSHL.S64 by a negative count) rounds `p / 2^s` to nearest even, as tract's magnitude-and-sign
    /// rounding does: a remainder of exactly half rounds up only where the floor quotient is odd.
    /// The low 32 bits are kept (tract's `as i32`), the zero point is added with saturation and two
    /// saturating narrowings clamp to int8. Exact for every sum, so no range check. Made once per
    /// call of the requantization, for all its rows.
    pub struct Uniform8<'a> {
        uniform: &'a super::Uniform,
        m: i32,
        /// [-s as i64 x2, 2^(s-1) - 1 as i64 x2, 1 as i64 x2], 32-bit words.
        block: [u32; 12],
    }

    impl<'a> Uniform8<'a> {
        /// None where the scaler has no f64 factor (ties to even, a right shift below 64: `row`
        /// runs then).
        pub fn new(uniform: &'a super::Uniform) -> Option<Uniform8<'a>> {
            let (m, s) = uniform.integer_factor()?;
            // An i64 as the two 32-bit words NEON loads it from (little-endian: low word first).
            let words = |v: i64| [v as u32, (v >> 32) as u32];
            let ([s0, s1], [h0, h1], [o0, o1]) = (words(-(s as i64)), words((1i64 << (s - 1)) - 1), words(1));
            Some(Uniform8 { uniform, m, block: [s0, s1, s0, s1, h0, h1, h0, h1, o0, o1, o0, o1] })
        }

        /// One row: `out[i]` from `acc[i] + bias`.
        ///
        /// # Safety
        /// The CPU has NEON.
        pub unsafe fn row(&self, acc: &[i32], bias: i32, zero_point: i32, out: &mut [i8]) {
            let n = acc.len().min(out.len());
            let steps = n / 8;
            if steps > 0 {
                // SAFETY: `steps * 8` sums read from `acc` and bytes written to `out`; `block` read whole.
                unsafe {
                    std::arch::asm!(
                        ".fpu neon",
                        "vld1.32 {{d18, d19, d20, d21}}, [{c}]!",
                        "vld1.32 {{d22, d23}}, [{c}]",
                        "vdup.32 q8, {bias}",
                        "vdup.32 q13, {zp}",
                        "vdup.32 d28, {m}",
                        "2:",
                        "vld1.32 {{d0, d1, d2, d3}}, [{acc}]!",
                        "vadd.i32 q0, q0, q8",
                        "vadd.i32 q1, q1, q8",
                        "vmull.s32 q2, d0, d28",
                        "vmull.s32 q3, d1, d28",
                        "vmull.s32 q4, d2, d28",
                        "vmull.s32 q5, d3, d28",
                        "vshl.s64 q0, q2, q9",
                        "vshl.s64 q1, q3, q9",
                        "vshl.s64 q6, q4, q9",
                        "vshl.s64 q7, q5, q9",
                        "vand q0, q0, q11",
                        "vand q1, q1, q11",
                        "vand q6, q6, q11",
                        "vand q7, q7, q11",
                        "vadd.i64 q2, q2, q10",
                        "vadd.i64 q3, q3, q10",
                        "vadd.i64 q4, q4, q10",
                        "vadd.i64 q5, q5, q10",
                        "vadd.i64 q2, q2, q0",
                        "vadd.i64 q3, q3, q1",
                        "vadd.i64 q4, q4, q6",
                        "vadd.i64 q5, q5, q7",
                        "vshl.s64 q2, q2, q9",
                        "vshl.s64 q3, q3, q9",
                        "vshl.s64 q4, q4, q9",
                        "vshl.s64 q5, q5, q9",
                        "vmovn.i64 d0, q2",
                        "vmovn.i64 d1, q3",
                        "vmovn.i64 d2, q4",
                        "vmovn.i64 d3, q5",
                        "vqadd.s32 q0, q0, q13",
                        "vqadd.s32 q1, q1, q13",
                        "vqmovn.s32 d0, q0",
                        "vqmovn.s32 d1, q1",
                        "vqmovn.s16 d0, q0",
                        "vst1.8 {{d0}}, [{out}]!",
                        "subs {n}, {n}, #1",
                        "bne 2b",
                        c = inout(reg) self.block.as_ptr() => _,
                        acc = inout(reg) acc.as_ptr() => _,
                        out = inout(reg) out.as_mut_ptr() => _,
                        n = inout(reg) steps => _,
                        bias = in(reg) bias,
                        zp = in(reg) zero_point,
                        m = in(reg) self.m,
                        out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                        out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _, out("d14") _, out("d15") _,
                        options(nostack),
                    );
                }
            }
            self.uniform.row(&acc[steps * 8..n], bias, zero_point, &mut out[steps * 8..n]);
        }
    }

    /// [`super::requant_row`] 8 at a time with [`super::requant_one`]'s steps in NEON: the bias added
    /// (wrapping), f32 conversion, multiplication by `scale`, the clamp to 2^22, the rounding by
    /// adding and taking off 1.5 * 2^23 (NEON rounds to nearest even, as the scalar code's default
    /// mode), truncation of the now whole value, the zero point added with saturation, and two
    /// saturating narrowings (the clamp to int8). NEON flushes subnormals to zero; the only ones
    /// here are products below 2^-126, which round to 0 either way, and a NaN gives 0 both ways.
    /// Returns how many it did.
    ///
    /// # Safety
    /// `acc` and `out` have the same length; the CPU has NEON.
    pub unsafe fn requant_row(acc: &[i32], bias: i32, scale: f32, zero_point: i32, out: &mut [i8]) -> usize {
        let steps = acc.len().min(out.len()) / 8;
        if steps == 0 {
            return 0;
        }
        // SAFETY: `steps * 8` values of `acc` read and of `out` written.
        unsafe {
            std::arch::asm!(
                ".fpu neon",
                "vdup.32 q2, {bias}",
                "vdup.32 q3, {scale}",
                "vdup.32 q4, {zp}",
                "vdup.32 q5, {limit}",
                "vneg.f32 q6, q5",
                "vdup.32 q7, {shift}",
                "2:",
                "vld1.32 {{d0, d1, d2, d3}}, [{acc}]!",
                "vadd.i32 q0, q0, q2",
                "vadd.i32 q1, q1, q2",
                "vcvt.f32.s32 q0, q0",
                "vcvt.f32.s32 q1, q1",
                "vmul.f32 q0, q0, q3",
                "vmul.f32 q1, q1, q3",
                "vmax.f32 q0, q0, q6",
                "vmax.f32 q1, q1, q6",
                "vmin.f32 q0, q0, q5",
                "vmin.f32 q1, q1, q5",
                "vadd.f32 q0, q0, q7",
                "vadd.f32 q1, q1, q7",
                "vsub.f32 q0, q0, q7",
                "vsub.f32 q1, q1, q7",
                "vcvt.s32.f32 q0, q0",
                "vcvt.s32.f32 q1, q1",
                "vqadd.s32 q0, q0, q4",
                "vqadd.s32 q1, q1, q4",
                "vqmovn.s32 d0, q0",
                "vqmovn.s32 d1, q1",
                "vqmovn.s16 d0, q0",
                "vst1.8 {{d0}}, [{out}]!",
                "subs {n}, {n}, #1",
                "bne 2b",
                acc = inout(reg) acc.as_ptr() => _,
                out = inout(reg) out.as_mut_ptr() => _,
                n = inout(reg) steps => _,
                bias = in(reg) bias,
                scale = in(reg) scale.to_bits(),
                zp = in(reg) zero_point,
                limit = in(reg) 4_194_304f32.to_bits(),
                shift = in(reg) 12_582_912f32.to_bits(),
                out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _, out("d14") _, out("d15") _,
                options(nostack),
            );
        }
        steps * 8
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{KU, MR, NR, Operands};
    use std::arch::x86_64::*;

    /// [`super::Uniform::row`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn uniform_row(uniform: &super::Uniform, acc: &[i32], bias: i32, zero_point: i32, out: &mut [i8]) {
        uniform.row(acc, bias, zero_point, out)
    }

    /// [`super::Uniform::row`] 16 sums at a time: the bias added (wrapping), every sum checked
    /// below 2^22 in magnitude (else the whole row goes through `row`, as there), each eight
    /// widened to f64, multiplied by the factor, converted back rounding to nearest even (the
    /// default MXCSR mode: `round_f64`'s result, the products being below 2^30), the zero point
    /// added and narrowed to int8 with saturation (the clamp). LLVM left `row`'s loop (the check, a
    /// 1.5 * 2^52 addition and a clamp per value) a third of fashion-resnet's per-tensor int8 time.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX2.
    #[target_feature(enable = "avx512f,avx2")]
    #[inline]
    pub unsafe fn uniform_row_512(uniform: &super::Uniform, acc: &[i32], bias: i32, zero_point: i32, out: &mut [i8]) {
        let n = acc.len().min(out.len());
        // The zero point's addition cannot wrap below 2^30 (an int8 zero point always is).
        let Some(factor) = uniform.factor.filter(|_| zero_point.unsigned_abs() < 1 << 30) else {
            return uniform.row(acc, bias, zero_point, out);
        };
        let lanes = |i: usize| if n - i >= 16 { u16::MAX } else { (1u16 << (n - i)) - 1 };
        // SAFETY (the loads and stores): masked to lanes below n, within `acc` and `out`.
        unsafe {
            let (b, limit) = (_mm512_set1_epi32(bias), _mm512_set1_epi32(1 << 22));
            for i in (0..n).step_by(16) {
                let v = _mm512_add_epi32(_mm512_maskz_loadu_epi32(lanes(i), acc.as_ptr().add(i)), b);
                // Unsigned, as `unsigned_abs`: |i32::MIN| is 2^31.
                if _mm512_mask_cmpge_epu32_mask(lanes(i), _mm512_abs_epi32(v), limit) != 0 {
                    return uniform.row(acc, bias, zero_point, out);
                }
            }
            let (f, z) = (_mm512_set1_pd(factor), _mm512_set1_epi32(zero_point));
            for i in (0..n).step_by(16) {
                let v = _mm512_add_epi32(_mm512_maskz_loadu_epi32(lanes(i), acc.as_ptr().add(i)), b);
                let low = _mm512_cvtpd_epi32(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(v)), f));
                let high = _mm512_cvtpd_epi32(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_extracti64x4_epi64::<1>(v)), f));
                let r = _mm512_add_epi32(_mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high), z);
                _mm512_mask_cvtsepi32_storeu_epi8(out.as_mut_ptr().add(i), lanes(i), r);
            }
        }
    }

    /// [`super::requant_row`] 8 at a time; returns how many it did.
    ///
    /// # Safety
    /// `acc` and `out` have the same length; the CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn requant_row(acc: &[i32], bias: i32, scale: f32, zero_point: i32, out: &mut [i8]) -> usize {
        unsafe {
            let (b, z, s) = (_mm256_set1_epi32(bias), _mm256_set1_epi32(zero_point), _mm256_set1_ps(scale));
            // CVTPS2DQ gives i32::MIN out of range where Rust's `as` saturates: clamp first, to
            // bounds that also keep the zero point's addition from wrapping.
            let (lo, hi) = (_mm256_set1_ps(-2147483520.0), _mm256_set1_ps(2147483520.0));
            let mut i = 0;
            while i + 8 <= acc.len() {
                let v = _mm256_add_epi32(_mm256_loadu_si256(acc.as_ptr().add(i) as *const __m256i), b);
                let v = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v), s), lo), hi);
                // Round to nearest even (the default MXCSR mode, which Rust never changes).
                let v = _mm256_add_epi32(_mm256_cvtps_epi32(v), z);
                let v16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                let v8 = _mm_packs_epi16(v16, v16);
                _mm_storel_epi64(out.as_mut_ptr().add(i) as *mut __m128i, v8);
                i += 8;
            }
            i
        }
    }

    /// One tile of the VPDPBUSD lane kernel: 16 channels (two vectors of eight) by the 8 pixels `x`,
    /// 16 accumulators starting from `init` (low and high eight channels). For every four bytes of
    /// reduction, two weight loads, then per pixel one broadcast of its four (unsigned) input bytes
    /// and two VPDPBUSD: 256 MACs per 26 instructions, no horizontal reduction. Returns, per pixel,
    /// the low and high eight channels' sums.
    ///
    /// # Safety
    /// [`super::lane_tiles`]'s contract for the tile, with `ks` the byte stride between weight
    /// groups; the CPU has AVX2, AVX512F, AVX512VL and AVX512-VNNI.
    #[inline(always)]
    unsafe fn vnni_lane_tile(row: &super::Row, ks: usize, x: [*const i8; super::NR_LANES], init: [__m256i; 2]) -> [[__m256i; super::NR_LANES]; 2] {
        use super::NR_LANES;
        unsafe {
            let mut lo = [init[0]; NR_LANES];
            let mut hi = [init[1]; NR_LANES];
            let mut w = row.w;
            for &tap in row.taps {
                let mut k = tap;
                let end = tap + row.len;
                while k < end {
                    let w0 = _mm256_loadu_si256(w as *const __m256i);
                    let w1 = _mm256_loadu_si256(w.add(32) as *const __m256i);
                    for j in 0..NR_LANES {
                        let xv = _mm256_set1_epi32(std::ptr::read_unaligned(x[j].add(k) as *const i32));
                        lo[j] = _mm256_dpbusd_epi32(lo[j], xv, w0);
                        hi[j] = _mm256_dpbusd_epi32(hi[j], xv, w1);
                    }
                    w = w.add(ks);
                    k += 4;
                }
            }
            [lo, hi]
        }
    }

    /// One pixel against 16 channels ([`vnni_lane_tile`]'s column): two weight loads, a broadcast
    /// and two VPDPBUSD per four bytes.
    ///
    /// # Safety
    /// As [`vnni_lane_tile`]'s, for the one pixel at `x`.
    #[inline(always)]
    unsafe fn vnni_lane_column(row: &super::Row, ks: usize, x: *const i8, [mut lo, mut hi]: [__m256i; 2]) -> [__m256i; 2] {
        unsafe {
            let mut w = row.w;
            for &tap in row.taps {
                for k in (tap..tap + row.len).step_by(4) {
                    let xv = _mm256_set1_epi32(std::ptr::read_unaligned(x.add(k) as *const i32));
                    lo = _mm256_dpbusd_epi32(lo, xv, _mm256_loadu_si256(w as *const __m256i));
                    hi = _mm256_dpbusd_epi32(hi, xv, _mm256_loadu_si256(w.add(32) as *const __m256i));
                    w = w.add(ks);
                }
            }
            [lo, hi]
        }
    }

    /// The VPDPBUSD lane kernel ([`super::lane_tiles`]): [`vnni_lane_tile`] over the row, each tile
    /// transposed to channel rows at the end; the rest pixel by pixel ([`vnni_lane_column`]).
    ///
    /// # Safety
    /// [`super::lane_tiles`]'s contract, with `ks` the byte stride between weight groups; the CPU has
    /// AVX2, AVX512F, AVX512VL and AVX512-VNNI.
    #[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
    pub unsafe fn vnni_lane_tiles(row: super::Row, ks: usize, out: *mut i32, stride: usize) {
        use super::{LanePlan, NR_LANES};
        unsafe {
            let z = _mm256_setzero_si256();
            let plan = LanePlan::new(row.starts.len());
            for t in 0..plan.tiles {
                let acc = vnni_lane_tile(&row, ks, LanePlan::tile(row.src, row.starts, t), [z, z]);
                // Each accumulator holds 8 channels of one pixel: 8x8 transposes into channel rows.
                let o = out.add(t * NR_LANES);
                for (half, acc) in acc.iter().enumerate() {
                    for (c, r) in transpose_8x8(*acc).into_iter().enumerate() {
                        _mm256_storeu_si256(o.add((8 * half + c) * stride) as *mut __m256i, r);
                    }
                }
            }
            for j in plan.columns..row.starts.len() {
                let [lo, hi] = vnni_lane_column(&row, ks, row.src.add(row.starts[j]), [z, z]);
                let mut sums = [0i32; 16];
                _mm256_storeu_si256(sums.as_mut_ptr() as *mut __m256i, lo);
                _mm256_storeu_si256(sums.as_mut_ptr().add(8) as *mut __m256i, hi);
                for (c, v) in sums.into_iter().enumerate() {
                    *out.add(c * stride + j) = v;
                }
            }
        }
    }

    /// Eight sums (bias included) requantized as [`super::requant_one`] does them, into the low 8
    /// bytes: scaled in f32, clamped (CVTPS2DQ gives i32::MIN out of range, as [`requant_row`]
    /// explains), rounded to nearest even, narrowed to int16 with saturation (VPMOVSDW), the zero
    /// point added there with saturation, narrowed to int8 (a sum past int16 is past int8 either way,
    /// on the same side).
    ///
    /// # Safety
    /// The CPU has AVX2, AVX512F and AVX512VL.
    #[inline(always)]
    pub unsafe fn requant8(acc: __m256i, scale: __m256, zero_point: __m128i) -> __m128i {
        unsafe {
            let (lo, hi) = (_mm256_set1_ps(-2147483520.0), _mm256_set1_ps(2147483520.0));
            let v = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), scale), lo), hi);
            let v = _mm_adds_epi16(_mm256_cvtsepi32_epi16(_mm256_cvtps_epi32(v)), zero_point);
            _mm_packs_epi16(v, v)
        }
    }

    /// [`super::lane_tiles_requant`] on VPDPBUSD: [`vnni_lane_tile`] from the bias, each tile
    /// transposed to channel rows and each row of eight pixels requantized by its channel's scale
    /// ([`requant8`]) or, where `UNIFORM`, by `uniform` ([`uniform8`]): no int32 tile is stored.
    ///
    /// # Safety
    /// [`super::lane_tiles_requant`]'s contract, with `ks` the byte stride between weight groups and
    /// `uniform` a uniform scale with an f64 factor where `UNIFORM` (`scales` is then not read); the
    /// CPU has AVX2, AVX512F, AVX512VL and AVX512-VNNI.
    #[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn vnni_lane_tiles_requant<const UNIFORM: bool>(row: super::Row, ks: usize, bias: *const i32, scales: *const f32, uniform: Option<&super::Uniform>, zero_point: i8, out: *mut i8, stride: usize) {
        use super::{LanePlan, NR_LANES};
        unsafe {
            let init = [_mm256_loadu_si256(bias as *const __m256i), _mm256_loadu_si256(bias.add(8) as *const __m256i)];
            let z = _mm_set1_epi16(zero_point.into());
            // Eight sums, by the scale of channel `ch` (`Some`: eight pixels of it) or those of
            // channels `at..at + 8` (`None`: one pixel), or by the uniform scale (`exact`: its
            // check done for the whole tile).
            let requant = |acc: __m256i, ch: Option<usize>, at: usize, exact: bool| match (UNIFORM, uniform) {
                (true, Some(uniform)) => uniform8(acc, uniform, zero_point, exact),
                _ => requant8(acc, ch.map_or_else(|| _mm256_loadu_ps(scales.add(at)), |ch| _mm256_set1_ps(*scales.add(ch))), z),
            };
            let plan = LanePlan::new(row.starts.len());
            for t in 0..plan.tiles {
                let acc = vnni_lane_tile(&row, ks, LanePlan::tile(row.src, row.starts, t), init);
                let exact = UNIFORM && exact(or_of_abs(acc.iter().flatten()));
                let o = out.add(t * NR_LANES);
                for (half, acc) in acc.iter().enumerate() {
                    for (c, r) in transpose_8x8(*acc).into_iter().enumerate() {
                        let ch = 8 * half + c;
                        _mm_storel_epi64(o.add(ch * stride) as *mut __m128i, requant(r, Some(ch), 0, exact));
                    }
                }
            }
            for j in plan.columns..row.starts.len() {
                let [lo, hi] = vnni_lane_column(&row, ks, row.src.add(row.starts[j]), init);
                let mut bytes = [0i8; 16];
                _mm_storel_epi64(bytes.as_mut_ptr() as *mut __m128i, requant(lo, None, 0, false));
                _mm_storel_epi64(bytes.as_mut_ptr().add(8) as *mut __m128i, requant(hi, None, 8, false));
                for (c, v) in bytes.into_iter().enumerate() {
                    *out.add(c * stride + j) = v;
                }
            }
        }
    }

    /// Sixteen channels' sums of one pixel (bias included), in one 512-bit register, requantized by
    /// their scales into 16 int8 values as [`requant8`] does each eight: VPMOVSDW and VPMOVSWB narrow
    /// with saturation, in order. Only the upper clamp: CVTPS2DQ's i32::MIN for a sum past the low
    /// end saturates to -128 anyway.
    ///
    /// # Safety
    /// The CPU has AVX512F, AVX512VL and AVX512BW.
    #[inline(always)]
    pub unsafe fn requant16_512(acc: __m512i, scale: __m512, zero_point: __m256i) -> __m128i {
        unsafe {
            let v = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), scale), _mm512_set1_ps(2147483520.0)));
            _mm256_cvtsepi16_epi8(_mm256_adds_epi16(_mm512_cvtsepi32_epi16(v), zero_point))
        }
    }

    /// Whether every sum of a tile is below 2^22 in magnitude, from the OR of their absolute values
    /// (|i32::MIN| is 2^31, as `unsigned_abs` has it): then [`uniform8`] needs no check of its own.
    ///
    /// # Safety
    /// The CPU has AVX2, AVX512F and AVX512VL.
    #[inline(always)]
    unsafe fn exact(or_of_abs: __m256i) -> bool {
        unsafe { _mm256_cmpge_epu32_mask(or_of_abs, _mm256_set1_epi32(1 << 22)) == 0 }
    }

    /// Eight sums (bias included) requantized by a uniform scale as [`super::Uniform::row`] does
    /// them, into the low 8 bytes: where all are below 2^22 in magnitude (`exact`, or checked
    /// here), widened to f64, multiplied by the factor, rounded to nearest even (VCVTPD2DQ), the
    /// zero point added and narrowed with saturation (VPMOVSDB); else each through the `Scaler`
    /// (the same bytes).
    ///
    /// # Safety
    /// The CPU has AVX2, AVX512F and AVX512VL; `uniform` has a factor; where `exact`, every sum is
    /// below 2^22 in magnitude.
    #[inline(always)]
    pub unsafe fn uniform8(acc: __m256i, uniform: &super::Uniform, zero_point: i8, exact: bool) -> __m128i {
        unsafe {
            let factor = uniform.factor().unwrap_or(f64::NAN);
            if !(exact || self::exact(_mm256_abs_epi32(acc))) || factor.is_nan() {
                let mut sums = [0i32; 8];
                _mm256_storeu_si256(sums.as_mut_ptr() as *mut __m256i, acc);
                let bytes = sums.map(|v| (uniform.scaler * v).saturating_add(zero_point.into()).clamp(-128, 127) as i8);
                return _mm_loadl_epi64(bytes.as_ptr() as *const __m128i);
            }
            let v = _mm512_cvtpd_epi32(_mm512_mul_pd(_mm512_cvtepi32_pd(acc), _mm512_set1_pd(factor)));
            _mm256_cvtsepi32_epi8(_mm256_add_epi32(v, _mm256_set1_epi32(zero_point.into())))
        }
    }

    /// Sixteen sums (one pixel's channels, bias included) requantized by a uniform scale: two
    /// [`uniform8`]s' bytes.
    ///
    /// # Safety
    /// As [`uniform8`]'s.
    #[inline(always)]
    pub unsafe fn uniform16_512(acc: __m512i, uniform: &super::Uniform, zero_point: i8, exact: bool) -> __m128i {
        unsafe {
            let low = uniform8(_mm512_castsi512_si256(acc), uniform, zero_point, exact);
            let high = uniform8(_mm512_extracti64x4_epi64::<1>(acc), uniform, zero_point, exact);
            _mm_unpacklo_epi64(low, high)
        }
    }

    /// The OR of the absolute values of a tile's sums (see [`exact`]), eight lanes wide.
    ///
    /// # Safety
    /// The CPU has AVX2, AVX512F and AVX512VL.
    #[inline(always)]
    unsafe fn or_of_abs<'a>(sums: impl Iterator<Item = &'a __m256i>) -> __m256i {
        unsafe { sums.fold(_mm256_setzero_si256(), |m, v| _mm256_or_si256(m, _mm256_abs_epi32(*v))) }
    }

    /// [`vnni_lane_tile`] on 512-bit registers: sixteen channels in one register, so per four bytes
    /// of reduction one weight load, then per pixel a broadcast and one VPDPBUSD (17 instructions
    /// for 256 MACs, not 26). Returns each pixel's sixteen sums.
    ///
    /// # Safety
    /// As [`vnni_lane_tile`]'s; the CPU has AVX512F and AVX512-VNNI.
    #[inline(always)]
    unsafe fn vnni512_lane_tile(row: &super::Row, ks: usize, x: [*const i8; super::NR_LANES], init: __m512i) -> [__m512i; super::NR_LANES] {
        unsafe {
            let mut acc = [init; super::NR_LANES];
            let mut w = row.w;
            for &tap in row.taps {
                let mut k = tap;
                let end = tap + row.len;
                while k < end {
                    let wv = _mm512_loadu_si512(w as *const __m512i);
                    for (acc, x) in acc.iter_mut().zip(x) {
                        *acc = _mm512_dpbusd_epi32(*acc, _mm512_set1_epi32(std::ptr::read_unaligned(x.add(k) as *const i32)), wv);
                    }
                    w = w.add(ks);
                    k += 4;
                }
            }
            acc
        }
    }

    /// One pixel against 16 channels ([`vnni512_lane_tile`]'s column).
    ///
    /// # Safety
    /// As [`vnni512_lane_tile`]'s, for the one pixel at `x`.
    #[inline(always)]
    unsafe fn vnni512_lane_column(row: &super::Row, ks: usize, x: *const i8, mut acc: __m512i) -> __m512i {
        unsafe {
            let mut w = row.w;
            for &tap in row.taps {
                for k in (tap..tap + row.len).step_by(4) {
                    let xv = _mm512_set1_epi32(std::ptr::read_unaligned(x.add(k) as *const i32));
                    acc = _mm512_dpbusd_epi32(acc, xv, _mm512_loadu_si512(w as *const __m512i));
                    w = w.add(ks);
                }
            }
            acc
        }
    }

    /// [`super::lane_tiles_requant`] storing channels-last, on VPDPBUSD: [`vnni512_lane_tile`] from the bias, each
    /// pixel's sixteen channels requantized ([`requant16_512`], or [`uniform16_512`] where `UNIFORM`)
    /// and stored as they are.
    ///
    /// # Safety
    /// [`super::lane_tiles_requant`]'s contract (channels-last), with `ks` the byte stride between weight
    /// groups and `uniform` as [`vnni_lane_tiles_requant`]'s; the CPU has AVX2, AVX512F, AVX512VL,
    /// AVX512BW and AVX512-VNNI.
    #[target_feature(enable = "avx2,avx512f,avx512vl,avx512bw,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn vnni_lane_tiles_requant_pixels<const UNIFORM: bool>(row: super::Row, ks: usize, bias: *const i32, scales: *const f32, uniform: Option<&super::Uniform>, zero_point: i8, out: *mut i8, stride: usize) {
        use super::{LanePlan, NR_LANES};
        unsafe {
            let init = _mm512_loadu_si512(bias as *const __m512i);
            let z = _mm256_set1_epi16(zero_point.into());
            // `exact`: a uniform scale's check done for the whole tile.
            let requant = |acc: __m512i, exact: bool| match (UNIFORM, uniform) {
                (true, Some(uniform)) => uniform16_512(acc, uniform, zero_point, exact),
                _ => requant16_512(acc, _mm512_loadu_ps(scales), z),
            };
            let plan = LanePlan::new(row.starts.len());
            for t in 0..plan.tiles {
                let acc = vnni512_lane_tile(&row, ks, LanePlan::tile(row.src, row.starts, t), init);
                let exact = UNIFORM && {
                    let or = acc.iter().fold(_mm512_setzero_si512(), |m, v| _mm512_or_si512(m, _mm512_abs_epi32(*v)));
                    exact(_mm256_or_si256(_mm512_castsi512_si256(or), _mm512_extracti64x4_epi64::<1>(or)))
                };
                for (j, acc) in acc.into_iter().enumerate() {
                    _mm_storeu_si128(out.add((t * NR_LANES + j) * stride) as *mut __m128i, requant(acc, exact));
                }
            }
            for j in plan.columns..row.starts.len() {
                let acc = vnni512_lane_column(&row, ks, row.src.add(row.starts[j]), init);
                _mm_storeu_si128(out.add(j * stride) as *mut __m128i, requant(acc, false));
            }
        }
    }

    /// Eight vectors of eight int32 lanes, transposed.
    #[inline(always)]
    unsafe fn transpose_8x8(v: [__m256i; 8]) -> [__m256i; 8] {
        unsafe {
            let v = v.map(|v| _mm256_castsi256_ps(v));
            let t: [__m256; 8] = [
                _mm256_unpacklo_ps(v[0], v[1]),
                _mm256_unpackhi_ps(v[0], v[1]),
                _mm256_unpacklo_ps(v[2], v[3]),
                _mm256_unpackhi_ps(v[2], v[3]),
                _mm256_unpacklo_ps(v[4], v[5]),
                _mm256_unpackhi_ps(v[4], v[5]),
                _mm256_unpacklo_ps(v[6], v[7]),
                _mm256_unpackhi_ps(v[6], v[7]),
            ];
            let u: [__m256; 8] = [
                _mm256_shuffle_ps::<0x44>(t[0], t[2]),
                _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
                _mm256_shuffle_ps::<0x44>(t[1], t[3]),
                _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
                _mm256_shuffle_ps::<0x44>(t[4], t[6]),
                _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
                _mm256_shuffle_ps::<0x44>(t[5], t[7]),
                _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
            ];
            [
                _mm256_permute2f128_ps::<0x20>(u[0], u[4]),
                _mm256_permute2f128_ps::<0x20>(u[1], u[5]),
                _mm256_permute2f128_ps::<0x20>(u[2], u[6]),
                _mm256_permute2f128_ps::<0x20>(u[3], u[7]),
                _mm256_permute2f128_ps::<0x31>(u[0], u[4]),
                _mm256_permute2f128_ps::<0x31>(u[1], u[5]),
                _mm256_permute2f128_ps::<0x31>(u[2], u[6]),
                _mm256_permute2f128_ps::<0x31>(u[3], u[7]),
            ]
            .map(|r| _mm256_castps_si256(r))
        }
    }

    /// int8 widened to int16, VPMADDWD (pairs of int16 products summed into int32) and VPADDD. A 4x2
    /// half tile at a time: AVX2 has 16 registers.
    ///
    /// # Safety
    /// [`super::tile`]'s contract, and the CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn avx2(ops: Operands, out: *mut i32, stride: usize) {
        unsafe {
            let kp = ops.taps.len() * ops.len;
            let load = |p: *const i8| _mm256_cvtepi8_epi16(_mm_loadu_si128(p as *const __m128i));
            for half in 0..NR / 2 {
                let z = _mm256_setzero_si256();
                let mut a = [[z; 2]; MR];
                let mut w = ops.w;
                for &tap in ops.taps {
                    let xs = [ops.x[2 * half].add(tap), ops.x[2 * half + 1].add(tap)];
                    let mut k = 0;
                    while k < ops.len {
                        let xv = [load(xs[0].add(k)), load(xs[1].add(k))];
                        for (i, acc) in a.iter_mut().enumerate() {
                            let wv = load(w.add(i * kp));
                            for j in 0..2 {
                                acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(wv, xv[j]));
                            }
                        }
                        k += KU;
                        w = w.add(KU);
                    }
                }
                for (i, acc) in a.iter().enumerate() {
                    for (j, &v) in acc.iter().enumerate() {
                        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                        let s = _mm_hadd_epi32(s, s);
                        let s = _mm_hadd_epi32(s, s);
                        *out.add(i * stride + 2 * half + j) = _mm_cvtsi128_si32(s);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tract_nnef::internal::tract_linalg::mmm::RoundingPolicy;

    proptest! {
        /// A uniform scale gives tract's fixed-point `Scaler` bytes on every instruction set: on
        /// powers of two (every other value a tie), ordinary scales, scales of 1 and more (left
        /// shifts, kept on the `Scaler`), and accumulators beyond the f64 path's 2^22.
        #[test]
        fn uniform_requantization_matches_tracts_scaler(
            scale in prop_oneof![(1u32..20).prop_map(|k| 2f32.powi(-(k as i32))), 1e-5f32..0.9, 0.9f32..300.0],
            acc in prop_oneof![
                3 => proptest::collection::vec(-5000i32..5000, 1..40),
                1 => proptest::collection::vec(-(1i32 << 23)..(1 << 23), 1..40),
                1 => proptest::collection::vec(any::<i32>(), 1..40),
            ],
            bias in prop_oneof![Just(0i32), -100000i32..100000],
            zero_point in -128i32..128,
        ) {
            let scaler = Scaler::new(scale, RoundingPolicy::Even);
            let expected: Vec<i8> = acc.iter().map(|&a| (scaler * a.wrapping_add(bias)).saturating_add(zero_point).clamp(-128, 127) as i8).collect();
            let uniform = Uniform::new(scaler);
            for isa in Isa::available() {
                let mut out = vec![0i8; acc.len()];
                requant_uniform_row(isa, &uniform, &acc, bias, zero_point, &mut out);
                prop_assert_eq!(&out, &expected, "{:?} scale {}", isa, scale);
            }
        }
    }

    /// One sum past 2^22 anywhere in a row of small ones (each lane of a vector step, and the tail),
    /// whose product wraps past 32 bits, gives the scaler's bytes on every instruction set (the f64
    /// paths send the row to the scaler; 32-bit NEON's integers are the scaler's own arithmetic).
    #[test]
    fn one_large_sum_anywhere_gives_the_scalers_bytes() {
        let uniform = Uniform::new(Scaler::new(100.0, RoundingPolicy::Even));
        assert!(uniform.factor().is_some());
        for large in [1 << 28, -(1 << 28), i32::MIN, i32::MAX] {
            for at in 0..27 {
                let mut acc: Vec<i32> = (0..27).map(|i| (i * 37 % 200) - 100).collect();
                acc[at] = large;
                let expected: Vec<i8> = acc.iter().map(|&a| (uniform.scaler * a.wrapping_add(5)).saturating_add(3).clamp(-128, 127) as i8).collect();
                for isa in Isa::available() {
                    let mut out = vec![0i8; acc.len()];
                    requant_uniform_row(isa, &uniform, &acc, 5, 3, &mut out);
                    assert_eq!(out, expected, "{isa:?}: {large} at {at}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Every kernel this CPU runs gives the reference's integers, at the extremes of int8 too,
        /// over several runs per pixel at scattered offsets.
        #[test]
        fn every_kernel_matches_the_reference(blocks in 1usize..5, taps in 1usize..5, seed in any::<u64>(), extreme in any::<bool>()) {
            let len = blocks * KU;
            let kp = taps * len;
            let mut s = seed;
            let mut next = |lo: i32| { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); if extreme { if (s >> 40) & 1 == 0 { lo } else { 127 } } else { lo + ((s >> 33) % (128 - lo as i64) as u64) as i32 } };
            let w: Vec<i8> = (0..MR * kp).map(|_| next(-127) as i8).collect();
            let offsets: Vec<usize> = (0..taps).map(|t| t * (len + 3) + (t % 2) * 5).collect();
            let span = offsets.last().unwrap() + len;
            // The pixels' data, one after the other in one buffer.
            let x: Vec<i8> = (0..NR * span).map(|_| next(-128) as i8).collect();
            let ops = Operands { w: w.as_ptr(), x: std::array::from_fn(|j| x[j * span..].as_ptr()), taps: &offsets, len };
            let expected = unsafe { portable(ops) };
            let interleaved = interleave_tiles(&w, kp, 1);
            for isa in Isa::available() {
                let w = if tiles_interleaved(isa) { &interleaved } else { &w };
                let ops = Operands { w: w.as_ptr(), ..ops };
                let mut out = vec![0i32; MR * 7];
                unsafe { tile(isa, ops, out.as_mut_ptr(), 7) };
                let got: Tile = std::array::from_fn(|i| std::array::from_fn(|j| out[i * 7 + j]));
                prop_assert_eq!(got, expected, "{:?}", isa);
                // The same pixels as the second of two tiles of a row (the first: pixel 0 four times).
                let starts: Vec<usize> = [0, 0, 0, 0].into_iter().chain((0..NR).map(|j| j * span)).collect();
                let row = Row { w: w.as_ptr(), src: x.as_ptr(), starts: &starts, taps: &offsets, len };
                let mut out = vec![0i32; MR * 9];
                unsafe { tiles(isa, row, out.as_mut_ptr(), 9) };
                let got: Tile = std::array::from_fn(|i| std::array::from_fn(|j| out[i * 9 + NR + j]));
                prop_assert_eq!(got, expected, "{:?} (row of tiles)", isa);
            }
        }

        /// The lane kernels give the reference's integers for any run of channels of their packed
        /// weights (the spare channels past the last one give zeros), over several runs per pixel
        /// at scattered offsets, for any number of pixels (whole tiles, a last partial tile, single
        /// pixels: `LanePlan`).
        #[test]
        fn lane_kernels_match_the_reference(
            pixels in 1usize..20,
            blocks in 1usize..5,
            taps in 1usize..4,
            channels in 1usize..20,
            first in 0usize..20,
            seed in any::<u64>(),
            extreme in any::<bool>(),
        ) {
            let (len, first) = (blocks * KU, first % channels);
            let kp = taps * len;
            let mut s = seed;
            let mut next = |lo: i32| { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); if extreme { if (s >> 40) & 1 == 0 { lo } else { 127 } } else { lo + ((s >> 33) % (128 - lo as i64) as u64) as i32 } };
            let w: Vec<i8> = (0..channels * kp).map(|_| next(-127) as i8).collect();
            let offsets: Vec<usize> = (0..taps).map(|t| t * (len + 3) + (t % 2) * 5).collect();
            let span = offsets.last().unwrap() + len;
            let x: Vec<i8> = (0..pixels * span).map(|_| next(-128) as i8).collect();
            let expected: Vec<Vec<i32>> = (0..MR_LANES).map(|i| (0..pixels).map(|j| {
                let o = first + i;
                if o >= channels { return 0; }
                offsets.iter().enumerate().map(|(t, &tap)| (0..len).map(|b| w[o * kp + t * len + b] as i32 * x[j * span + tap + b] as i32).sum::<i32>()).sum()
            }).collect()).collect();
            let lanes = pack_lanes(&w, channels, kp);
            for isa in Isa::available() {
                let Some((mr, nr)) = lane_tile(isa) else { continue };
                // Unsigned readers get x ^ 0x80 and give 128 * sum(w) more.
                let unsigned = lanes_read_unsigned(isa);
                let x: Vec<i8> = x.iter().map(|&v| if unsigned { v ^ i8::MIN } else { v }).collect();
                let expected: Vec<Vec<i32>> = (0..mr).map(|i| expected[i].iter().map(|&e| {
                    let o = first + i;
                    if unsigned && o < channels { e + 128 * w[o * kp..(o + 1) * kp].iter().map(|&v| v as i32).sum::<i32>() } else { e }
                }).collect()).collect();
                let starts: Vec<usize> = (0..pixels).map(|j| j * span).collect();
                let row = Row { w: lanes[first * 4..].as_ptr(), src: x.as_ptr(), starts: &starts, taps: &offsets, len };
                let stride = pixels.next_multiple_of(nr) + 3;
                let mut out = vec![0i32; mr * stride];
                unsafe { lane_tiles(isa, row, channels, out.as_mut_ptr(), stride) };
                let got: Vec<Vec<i32>> = (0..mr).map(|i| out[i * stride..][..pixels].to_vec()).collect();
                prop_assert_eq!(&got, &expected, "{:?}", isa);
            }
        }

        /// The requantizing lane kernels give the bytes of the plain lane kernel's sums requantized
        /// by [`requant_one`]: bias added first, per-channel scales, the zero point, saturation.
        #[test]
        fn requantizing_lane_kernels_match_requant_one(
            pixels in 1usize..20,
            blocks in 1usize..4,
            taps in 1usize..4,
            seed in any::<u64>(),
            zero_point in any::<i8>(),
        ) {
            let (len, channels) = (blocks * KU, MR_LANES);
            let kp = taps * len;
            let mut s = seed;
            let mut next = |n: u64| { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (s >> 33) % n };
            let w: Vec<i8> = (0..channels * kp).map(|_| (next(255) as i32 - 127) as i8).collect();
            let offsets: Vec<usize> = (0..taps).map(|t| t * (len + 1)).collect();
            let span = offsets.last().unwrap() + len;
            let x: Vec<i8> = (0..pixels * span).map(|_| next(256) as u8 as i8).collect();
            let bias: Vec<i32> = (0..channels).map(|_| next(200_001) as i32 - 100_000).collect();
            // Scales from tiny to ones that saturate int8, and int16 (sums up to about 2.4 million).
            let scales: Vec<f32> = (0..channels).map(|_| 1e-5 * (1 << next(15)) as f32 * (1.0 + next(1000) as f32 / 1000.0)).collect();
            let lanes = pack_lanes(&w, channels, kp);
            for isa in Isa::available().into_iter().filter(|&isa| lanes_requantize(isa)) {
                let Some((mr, nr)) = lane_tile(isa) else { continue };
                let starts: Vec<usize> = (0..pixels).map(|j| j * span).collect();
                let row = Row { w: lanes.as_ptr(), src: x.as_ptr(), starts: &starts, taps: &offsets, len };
                let stride = pixels.next_multiple_of(nr) + 3;
                let mut sums = vec![0i32; mr * stride];
                let mut out = vec![0i8; mr * stride];
                // Channels-last: each pixel's mr channels, pixels `mr + 5` bytes apart.
                let pixel_stride = mr + 5;
                let mut pixels_out = vec![0i8; stride * pixel_stride];
                unsafe {
                    lane_tiles(isa, row, channels, sums.as_mut_ptr(), stride);
                    lane_tiles_requant(isa, row, channels, bias.as_ptr(), Scales::PerChannel(scales.as_ptr()), zero_point, out.as_mut_ptr(), stride, Layout::Nchw);
                    lane_tiles_requant(isa, row, channels, bias.as_ptr(), Scales::PerChannel(scales.as_ptr()), zero_point, pixels_out.as_mut_ptr(), pixel_stride, Layout::Nhwc);
                }
                for i in 0..mr {
                    let expected: Vec<i8> = sums[i * stride..][..pixels].iter().map(|&a| requant_one(a, bias[i], scales[i], zero_point.into())).collect();
                    prop_assert_eq!(&out[i * stride..][..pixels], &expected[..], "{:?} channel {}", isa, i);
                    let channels_last: Vec<i8> = (0..pixels).map(|j| pixels_out[j * pixel_stride + i]).collect();
                    prop_assert_eq!(&channels_last, &expected, "{:?} channels-last, channel {}", isa, i);
                }
                // One uniform scale (tract's fixed point), where the kernels take it; in half the
                // cases every third channel's sums pushed past the f64 path's 2^22 by its bias, so
                // that they go through the `Scaler` lane by lane (and no tile takes the fast path).
                let uniform = Uniform::new(Scaler::new(scales[0], RoundingPolicy::Even));
                if !lanes_requantize_uniform(isa) || uniform.factor().is_none() {
                    continue;
                }
                let push = |i: usize| seed % 2 == 0 && i % 3 == 0;
                let bias: Vec<i32> = bias.iter().enumerate().map(|(i, &b)| if push(i) { b.signum() * (1 << 22) + b } else { b }).collect();
                unsafe {
                    lane_tiles_requant(isa, row, channels, bias.as_ptr(), Scales::Uniform(&uniform), zero_point, out.as_mut_ptr(), stride, Layout::Nchw);
                    lane_tiles_requant(isa, row, channels, bias.as_ptr(), Scales::Uniform(&uniform), zero_point, pixels_out.as_mut_ptr(), pixel_stride, Layout::Nhwc);
                }
                for i in 0..mr {
                    let mut expected = vec![0i8; pixels];
                    uniform.row(&sums[i * stride..][..pixels], bias[i], zero_point.into(), &mut expected);
                    prop_assert_eq!(&out[i * stride..][..pixels], &expected[..], "{:?} uniform, channel {}", isa, i);
                    let channels_last: Vec<i8> = (0..pixels).map(|j| pixels_out[j * pixel_stride + i]).collect();
                    prop_assert_eq!(&channels_last, &expected, "{:?} uniform channels-last, channel {}", isa, i);
                }
            }
        }

        /// A lane plan covers every pixel once, in tiles or columns, with at most half a tile of
        /// columns and no tile wholly past the end.
        #[test]
        fn lane_plans_cover_every_pixel(pixels in 1usize..100) {
            let plan = LanePlan::new(pixels);
            prop_assert!(plan.columns <= pixels && plan.tiles * NR_LANES < pixels + NR_LANES);
            prop_assert_eq!(plan.columns, (plan.tiles * NR_LANES).min(pixels));
            prop_assert!(pixels - plan.columns <= NR_LANES / 2);
        }

        /// Whole blocks of rows, as the convolution requantizes them, give the reference's bytes.
        #[test]
        fn requantized_rows_match_the_reference(
            acc in proptest::collection::vec(proptest::array::uniform8(-40_000i32..40_000), 1..5),
            valid in 0usize..9,
            stride in 8usize..12,
            bias in proptest::collection::vec(-1000i32..1000, 4),
            scales in proptest::collection::vec(0.0005f32..0.05, 4),
            zero_point in -128i32..128,
        ) {
            let rows = acc.len();
            let mut expected = vec![0i8; rows * stride];
            for (i, row) in acc.iter().enumerate() {
                for k in 0..valid {
                    expected[i * stride + k] = requant_one(row[k], bias[i], scales[i], zero_point);
                }
            }
            for isa in Isa::available() {
                let mut out = vec![0i8; rows * stride];
                requant_rows(isa, &acc, valid, &bias, &scales, zero_point, &mut out, stride);
                prop_assert_eq!(&out, &expected, "{:?}", isa);
            }
        }

        /// Whole blocks of rows with a uniform scale, as the convolution requantizes them, give
        /// tract's scaler's bytes (each row with its bias, only the `valid` first sums).
        #[test]
        fn uniform_rows_match_the_scaler(
            acc in proptest::collection::vec(proptest::array::uniform16(-3000i32..3000), 1..5),
            valid in 0usize..17,
            stride in 16usize..20,
            bias in proptest::collection::vec(-1000i32..1000, 4),
            scale in prop_oneof![(1u32..20).prop_map(|k| 2f32.powi(-(k as i32))), 1e-5f32..0.9],
            zero_point in -128i32..128,
        ) {
            let uniform = Uniform::new(Scaler::new(scale, RoundingPolicy::Even));
            let rows = acc.len();
            let mut expected = vec![0i8; rows * stride];
            for (i, row) in acc.iter().enumerate() {
                for k in 0..valid {
                    expected[i * stride + k] = (uniform.scaler * row[k].wrapping_add(bias[i])).saturating_add(zero_point).clamp(-128, 127) as i8;
                }
            }
            for isa in Isa::available() {
                let mut out = vec![0i8; rows * stride];
                requant_uniform_rows(isa, &uniform, &acc, valid, &bias, zero_point, &mut out, stride);
                prop_assert_eq!(&out, &expected, "{:?}", isa);
            }
        }

        /// Every requantization this CPU runs gives the reference's bytes, saturation and ties included.
        #[test]
        fn every_requantization_matches_the_reference(
            acc in proptest::collection::vec(any::<i32>(), 0..40),
            small in proptest::collection::vec(-3000i32..3000, 0..40),
            bias in -100_000i32..100_000,
            scale in prop_oneof![0.0001f32..0.1, 0.5f32..4.0, Just(0.5f32), Just(1e9f32)],
            zero_point in -128i32..128,
        ) {
            for acc in [acc, small] {
                let expected: Vec<i8> = acc.iter().map(|&a| requant_one(a, bias, scale, zero_point)).collect();
                for isa in Isa::available() {
                    let mut out = vec![0i8; acc.len()];
                    requant_row(isa, &acc, bias, scale, zero_point, &mut out);
                    prop_assert_eq!(&out, &expected, "{:?}", isa);
                }
            }
        }
    }
}

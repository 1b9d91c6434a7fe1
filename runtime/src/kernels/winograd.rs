//! Winograd's F(2x2, 3x3) for [`super::fconv`]'s 3x3 stride-1 convolutions on AVX-512 and aarch64
//! NEON ([`Winograd::runs_on`]): each 2x2
//! block of outputs from a 4x4 block of the padded input, in 16 multiplications per input and
//! output channel where the direct convolution spends 36 (Lavin and Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016).
//!
//! Per image (AVX-512; NEON's steps, in the aarch64 `impl` at the end, are the same by 4x4
//! transposes and 4 lanes): the input goes channels-last into a zero-padded buffer (16 channels per gather); each
//! tile's 4x4 block becomes `V = B^T d B` (adds only), 16 values per channel; 16 independent matrix
//! products `M[xi] = U[xi] V[xi]` over the input channels, `U = G g G^T` the kernel transformed at
//! load (in f64); each tile's outputs are `A^T M A` plus the bias, then the activation in
//! registers, stored channels-last and transposed to NCHW 16 by 16 in registers (scatters cost
//! twice as much). Only chosen where every weight vector serves enough tiles for the products to
//! stay bound by arithmetic, not by fetching the 16/9 larger weights.
//!
//! The sums are not the direct kernel's to the bit (other roundings, in another order); they stay
//! within the same bound of the exact convolution (`winograd_computes_the_convolution`).

#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use std::cell::RefCell;

use super::conv::Geometry;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::fconv::Activation;
use super::Isa;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
thread_local! {
    /// One scratch per thread for every Winograd layer (a plan runs its layers one at a time, and
    /// each writes all it reads of it): a smaller working set than one per layer.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Tiles per tile of the products (one broadcast each) at most, by vectors of output channels:
/// 24 accumulators at most, two or four weight loads and 12 or 6 broadcasts per input channel.
#[cfg(target_arch = "x86_64")]
const fn tiles_per_tile(vectors: usize) -> usize {
    if vectors == 4 { 6 } else { 12 }
}
/// Channels per vector (AVX-512), and the granule of the output channels' padding, and of the
/// pixels' in the channels-last outputs.
const L: usize = 16;
/// The granule of the input channels' padding: a vector's channels on AVX-512, four (one q
/// register's, four `k` of the products) on NEON.
const CL: usize = if cfg!(target_arch = "aarch64") { 4 } else { L };

/// A packed F(2x2, 3x3) convolution (run on x86-64 and aarch64, see [`Winograd::runs_on`]).
#[derive(Debug, Clone)]
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
pub struct Winograd {
    in_channels: usize,
    out_channels: usize,
    input: [usize; 2],
    pad: [usize; 2],
    output: [usize; 2],
    /// Tile rows and columns: each tile is 2x2 outputs.
    tiles: [usize; 2],
    /// Output channels per tile of the products: on AVX-512 64 (four zmm) where they come in 64s,
    /// else 32; on NEON 16 (four q registers).
    oc: usize,
    /// Rows of `U` per tile of output channels: the input channels, rounded up to a multiple of 4
    /// on NEON (zeros past the last), whose products take them four at a time.
    ck: usize,
    /// `U`: `[xi][output tile of oc][ck][oc]`, zeros past the last output channel.
    weights: Vec<f32>,
    /// One per output channel, padded with zeros to a multiple of L.
    bias: Vec<f32>,
}

impl Winograd {
    /// Whether this build runs F(2x2, 3x3) on `isa`: AVX-512 on x86-64, NEON on aarch64. The
    /// channels layout of [`super::fconv`] runs on the same.
    pub fn runs_on(isa: Isa) -> bool {
        match isa {
            Isa::Avx512Vnni => cfg!(target_arch = "x86_64"),
            Isa::Neon | Isa::NeonDot => cfg!(target_arch = "aarch64"),
            _ => false,
        }
    }

    /// Whether F(2x2, 3x3) serves `geometry` with `in_channels` better than the direct kernel:
    /// 3x3, stride and dilation 1, enough input channels for the transforms to pay (the sums
    /// shrink from 9 to 4 products per input value) and enough tiles (each `U` vector serves
    /// every tile: with few, the 16/9 larger weights are fetched for too little work; fashion-resnet's
    /// 4x4 layer, 4 tiles, stays direct).
    pub fn serves(geometry: &Geometry, in_channels: usize) -> bool {
        let [oh, ow] = geometry.output;
        geometry.kernel == [3, 3] && geometry.stride == [1, 1] && geometry.dilation == [1, 1] && in_channels >= 8 && oh.div_ceil(2) * ow.div_ceil(2) >= 16
    }

    /// Transforms `weights` (`[out][in][3][3]`) and `bias` (one per output channel, or one for all).
    pub fn new(geometry: &Geometry, in_channels: usize, out_channels: usize, weights: &[f32], bias: &[f32]) -> Winograd {
        const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
        let c = in_channels;
        let oc = if cfg!(target_arch = "aarch64") {
            16
        } else if out_channels.is_multiple_of(64) {
            64
        } else {
            32
        };
        let ck = if cfg!(target_arch = "aarch64") { c.div_ceil(CL) * CL } else { c };
        let otiles = out_channels.div_ceil(oc);
        let mut u = vec![0f32; 16 * otiles * ck * oc];
        for o in 0..out_channels {
            for i in 0..c {
                let g = &weights[(o * c + i) * 9..][..9];
                // G g G^T, in f64: one rounding per value.
                for (a, ga) in G.iter().enumerate() {
                    for (b, gb) in G.iter().enumerate() {
                        let v: f64 = (0..3).flat_map(|y| (0..3).map(move |x| (y, x))).map(|(y, x)| ga[y] * g[y * 3 + x] as f64 * gb[x]).sum();
                        u[((((a * 4 + b) * otiles + o / oc) * ck + i) * oc) + o % oc] = v as f32;
                    }
                }
            }
        }
        let mut packed_bias = vec![0f32; out_channels.div_ceil(L) * L];
        for (o, b) in packed_bias.iter_mut().enumerate().take(out_channels) {
            *b = bias[if bias.len() == 1 { 0 } else { o }];
        }
        let [oh, ow] = geometry.output;
        Winograd { in_channels, out_channels, oc, ck, input: geometry.input, pad: geometry.pad_before, output: geometry.output, tiles: [oh.div_ceil(2), ow.div_ceil(2)], weights: u, bias: packed_bias }
    }

    /// Output channels rounded up to whole tiles of the products.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn op(&self) -> usize {
        self.out_channels.div_ceil(self.oc) * self.oc
    }

    /// Input channels rounded up to a multiple of [`CL`].
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn channels(&self) -> usize {
        self.in_channels.div_ceil(CL) * CL
    }

    /// The padded channels-last input: rows and columns.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn padded(&self) -> [usize; 2] {
        self.tiles.map(|t| 2 * t + 2)
    }

    /// The distance between rows of V and M: either's values, and one vector more, so that the
    /// 16 rows a tile reads or writes do not lie a multiple of 4 KB apart (where loads wait on
    /// unrelated stores: 64 channels by 16 tiles is 4 KB).
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn row(&self) -> usize {
        self.tiles[0] * self.tiles[1] * self.channels().max(self.op()) + L
    }

    /// The scratch's two parts, each a multiple of L: the padded channels-last input, which the
    /// outputs channels-last (pixels rounded up to whole vectors) then overwrite; and 17 rows, V
    /// in rows 1 to 16, M in rows 0 to 15 (M's row xi overwrites V's row xi - 1, read before it).
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn parts(&self) -> [usize; 2] {
        let [ph, pw] = self.padded();
        let pixels = (self.output[0] * self.output[1]).div_ceil(L) * L;
        [(ph * pw * self.channels()).max(pixels * self.op()), 17 * self.row()]
    }

    /// One NCHW image `x` into `y`, with `activation`; then, with a `residual` (`(r, relu)`, r of
    /// y's shape), `r` added in the stores and a Relu after it where `relu`.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    pub fn run(&self, x: &[f32], y: &mut [f32], activation: Activation, residual: Option<(&[f32], bool)>) {
        let ([h, w], [oh, ow]) = (self.input, self.output);
        assert!(
            x.len() == self.in_channels * h * w && y.len() == self.out_channels * oh * ow && self.in_channels * h * w < i32::MAX as usize && residual.is_none_or(|(r, _)| r.len() == y.len()),
            "Winograd buffers of the wrong size"
        );
        let [first, rows] = self.parts();
        SCRATCH.with_borrow_mut(|scratch| {
            // L more, to start on 64 bytes.
            if scratch.len() < first + rows + L {
                scratch.resize(first + rows + L, 0.0);
            }
            let skip = scratch.as_ptr().align_offset(64).min(L);
            let (first, rows) = scratch[skip..].split_at_mut(first);
            let row = self.row();
            // SAFETY: AVX-512F and FMA are here (the caller chose this kernel on
            // `Isa::Avx512Vnni`, which `FConvKernel::new` checks FMA for); every access is
            // within the slices, whose lengths each step asserts.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                self.gather(x, first);
                self.transform_input(first, &mut rows[row..]);
                self.products(rows);
                self.transform_output(rows, first, activation);
                self.transpose(first, y, residual);
            }
            #[cfg(target_arch = "aarch64")]
            {
                self.gather(x, first);
                self.transform_input(first, &mut rows[row..]);
                self.products(rows);
                self.transform_output(rows, first, activation);
                match activation {
                    // Swish over y (tract's sigmoid, see `vector::swish`), then the residual.
                    Activation::Swish { beta } => {
                        self.transpose(first, y, None);
                        super::vector::swish(y, beta);
                        match residual {
                            Some((r, true)) => super::vector::add_relu(y, r),
                            Some((r, false)) => super::vector::add(y, r),
                            None => {}
                        }
                    }
                    _ => self.transpose(first, y, residual),
                }
            }
        });
    }

    /// The padded input channels-last: the image at (row + pad, column + pad), zeros around it
    /// and in the channels past the last (all of it written: the scratch is shared).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn gather(&self, x: &[f32], input: &mut [f32]) {
        let ([h, w], [pt, pl], [ph, pw], cp) = (self.input, self.pad, self.padded(), self.channels());
        assert!(input.len() >= ph * pw * cp, "padded input out of bounds");
        let plane = (h * w) as i32;
        let lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        let index = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(plane));
        for py in 0..ph {
            for px in 0..pw {
                let inside = (pt..pt + h).contains(&py) && (pl..pl + w).contains(&px);
                for cb in 0..cp / L {
                    let at = (py * pw + px) * cp + cb * L;
                    // SAFETY: lane l reads channel cb * L + l < in_channels (the mask) at the
                    // image's (py - pt, px - pl), inside it: within x (asserted in `run`); the store
                    // is within `input` (asserted above).
                    unsafe {
                        let v = if inside {
                            let mask = if (cb + 1) * L <= self.in_channels { u16::MAX } else { (1u16 << (self.in_channels - cb * L)) - 1 };
                            let base = x.as_ptr().add(cb * L * h * w + (py - pt) * w + px - pl);
                            _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, index, base)
                        } else {
                            _mm512_setzero_ps()
                        };
                        _mm512_storeu_ps(input.as_mut_ptr().add(at), v);
                    }
                }
            }
        }
    }

    /// `V[xi][tile][channel] = (B^T d B)[xi]`, d the tile's 4x4 block, 16 channels at a time.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn transform_input(&self, input: &[f32], v: &mut [f32]) {
        let ([th, tw], [_, pw], cp, vrow) = (self.tiles, self.padded(), self.channels(), self.row());
        assert!(input.len() >= (2 * th + 2) * pw * cp && v.len() >= 16 * vrow, "Winograd input transform out of bounds");
        for ty in 0..th {
            for tx in 0..tw {
                let tile = ty * tw + tx;
                for cb in (0..cp).step_by(L) {
                    // SAFETY: rows 2ty..2ty+4 and columns 2tx..2tx+4 of the padded input, channels
                    // cb..cb+L: within `input`; V's row xi, tile, channels: within `v` (asserted).
                    unsafe {
                        let d: [[__m512; 4]; 4] = std::array::from_fn(|r| std::array::from_fn(|s| _mm512_loadu_ps(input.as_ptr().add(((2 * ty + r) * pw + 2 * tx + s) * cp + cb))));
                        // B^T d: rows.
                        let e: [[__m512; 4]; 4] = std::array::from_fn(|s| {
                            let [d0, d1, d2, d3] = [d[0][s], d[1][s], d[2][s], d[3][s]];
                            [_mm512_sub_ps(d0, d2), _mm512_add_ps(d1, d2), _mm512_sub_ps(d2, d1), _mm512_sub_ps(d1, d3)]
                        });
                        // (B^T d) B: columns. e[s][i] is row i, column s.
                        for i in 0..4 {
                            let [e0, e1, e2, e3] = [e[0][i], e[1][i], e[2][i], e[3][i]];
                            let row = [_mm512_sub_ps(e0, e2), _mm512_add_ps(e1, e2), _mm512_sub_ps(e2, e1), _mm512_sub_ps(e1, e3)];
                            for (j, value) in row.into_iter().enumerate() {
                                _mm512_storeu_ps(v.as_mut_ptr().add((i * 4 + j) * vrow + tile * cp + cb), value);
                            }
                        }
                    }
                }
            }
        }
    }

    /// `M[xi][tile][out] = sum over channels of U[xi][out][channel] V[xi][tile][channel]`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    fn products(&self, rows: &mut [f32]) {
        let (c, cp, t, oc, op, row) = (self.in_channels, self.channels(), self.tiles[0] * self.tiles[1], self.oc, self.op(), self.row());
        assert!(rows.len() >= 17 * row && self.weights.len() == 16 * op * self.ck && self.ck == c, "Winograd products out of bounds");
        let most = tiles_per_tile(oc / L);
        for xi in 0..16 {
            // V's row xi (the scratch's xi + 1) into M's row xi (the scratch's xi, V's row xi - 1,
            // read already).
            let (m, v) = rows[xi * row..].split_at_mut(row);
            for ot in 0..op / oc {
                let u = &self.weights[(xi * op + ot * oc) * c..][..c * oc];
                // Groups of tiles as even as they come (49 tiles by 32 channels: 10, 10, 10, 10, 9).
                for (first, n) in super::even_groups(t, most) {
                    let src = v[first * cp..].as_ptr();
                    let dst = m[first * op + ot * oc..].as_mut_ptr();
                    // SAFETY: tiles first..first+n of row xi, channels below c: within `v`; their
                    // outputs ot * oc.. + oc: within `m` (asserted above).
                    unsafe {
                        macro_rules! dispatch {
                            ($v:literal: $($n:literal)*) => {
                                match n {
                                    $($n => tile::<$v, $n>(u, src, cp, dst, op),)*
                                    _ => unreachable!("{n} tiles in a group of at most {most}"),
                                }
                            };
                        }
                        if oc == 64 {
                            dispatch!(4: 1 2 3 4 5 6)
                        } else {
                            dispatch!(2: 1 2 3 4 5 6 7 8 9 10 11 12)
                        }
                    }
                }
            }
        }
    }

    /// Each tile's `A^T M A` plus the bias, then the activation, into the image's outputs
    /// channels-last (`outputs[pixel][op]`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn transform_output(&self, m: &[f32], outputs: &mut [f32], activation: Activation) {
        let ([th, tw], [oh, ow], op, row) = (self.tiles, self.output, self.op(), self.row());
        assert!(m.len() >= 16 * row && outputs.len() >= oh * ow * op && self.bias.len() >= self.out_channels.div_ceil(L) * L, "Winograd output transform out of bounds");
        for ty in 0..th {
            for tx in 0..tw {
                let tile = ty * tw + tx;
                for ob in (0..self.out_channels).step_by(L) {
                    // SAFETY: M's rows at this tile, outputs ob..ob+L <= op: within `m`; the bias
                    // within its padding; the stores are to outputs inside the image, channels
                    // ob..ob+L <= op: within `outputs` (asserted above).
                    unsafe {
                        let mv: [__m512; 16] = std::array::from_fn(|xi| _mm512_loadu_ps(m.as_ptr().add(xi * row + tile * op + ob)));
                        // A^T M: rows (mv[i * 4 + j] is row i, column j).
                        let r: [[__m512; 4]; 2] = [
                            std::array::from_fn(|j| _mm512_add_ps(_mm512_add_ps(mv[j], mv[4 + j]), mv[8 + j])),
                            std::array::from_fn(|j| _mm512_sub_ps(_mm512_sub_ps(mv[4 + j], mv[8 + j]), mv[12 + j])),
                        ];
                        let bias = _mm512_loadu_ps(self.bias.as_ptr().add(ob));
                        let mut out = r.map(|[r0, r1, r2, r3]| [_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(r0, r1), r2), bias), _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(r1, r2), r3), bias)]);
                        super::fconv::x86::activate_zmm(&mut out, activation);
                        for (i, row) in out.iter().enumerate() {
                            for (j, value) in row.iter().enumerate() {
                                let (oy, ox) = (2 * ty + i, 2 * tx + j);
                                if oy < oh && ox < ow {
                                    _mm512_storeu_ps(outputs.as_mut_ptr().add((oy * ow + ox) * op + ob), *value);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Winograd {
    /// `outputs[pixel][op]` to NCHW `y`, in blocks of 16 pixels by 16 channels transposed in
    /// registers; plus `residual`'s `r` and then, where its flag says so, a Relu (tract's `Add`
    /// then `Max` with zero, value for value, as `vector::add_relu`), saving a pass over `y`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn transpose(&self, outputs: &[f32], y: &mut [f32], residual: Option<(&[f32], bool)>) {
        let (plane, op, o) = (self.output[0] * self.output[1], self.op(), self.out_channels);
        assert!(outputs.len() >= plane.div_ceil(L) * L * op && y.len() == o * plane && residual.is_none_or(|(r, _)| r.len() == y.len()), "Winograd transpose out of bounds");
        for pb in (0..plane).step_by(L) {
            let mask = if pb + L <= plane { u16::MAX } else { (1u16 << (plane - pb)) - 1 };
            for ob in (0..o).step_by(L) {
                // SAFETY: pixels pb..pb+L of `outputs` (rounded up to whole vectors), channels
                // ob..ob+L <= op: within it; the stores write channels below `o`, pixels below
                // `plane` (the mask): within `y` (asserted above).
                unsafe {
                    let mut r: [__m512; 16] = std::array::from_fn(|p| _mm512_loadu_ps(outputs.as_ptr().add((pb + p) * op + ob)));
                    transpose16(&mut r);
                    for (c, v) in r.iter().enumerate().take(o - ob) {
                        let at = (ob + c) * plane + pb;
                        let v = match residual {
                            None => *v,
                            // (The same lanes of `r`, which has y's length.)
                            Some((r, relu)) => {
                                let sum = _mm512_add_ps(*v, _mm512_maskz_loadu_ps(mask, r.as_ptr().add(at)));
                                // max(sum, 0) answers the second operand, 0, for -0.0 and NaN.
                                if relu { _mm512_max_ps(sum, _mm512_setzero_ps()) } else { sum }
                            }
                        };
                        _mm512_mask_storeu_ps(y.as_mut_ptr().add(at), mask, v);
                    }
                }
            }
        }
    }
}

/// A 16x16 transpose: `r[i][l]` becomes `r[l][i]`. At each level b (8, 4, 2, 1) the rows i and
/// i + b (bit b of i clear) swap their off-diagonal b x b blocks in every 2b x 2b block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512; 16]) {
    for b in [8usize, 4, 2, 1] {
        let low: [i32; 16] = std::array::from_fn(|l| if l & b == 0 { l as i32 } else { (16 + l - b) as i32 });
        let high: [i32; 16] = std::array::from_fn(|l| if l & b == 0 { (l + b) as i32 } else { (16 + l) as i32 });
        // SAFETY: 16 i32 each.
        let (low, high) = unsafe { (_mm512_loadu_si512(low.as_ptr().cast()), _mm512_loadu_si512(high.as_ptr().cast())) };
        for i in (0..16).filter(|i| i & b == 0) {
            let (a, c) = (r[i], r[i + b]);
            r[i] = _mm512_permutex2var_ps(a, low, c);
            r[i + b] = _mm512_permutex2var_ps(a, high, c);
        }
    }
}

/// N tiles by V vectors of output channels: `dst[p][..16 V] = sum over k of u[k][..16 V] * src[p *
/// pitch + k]`.
///
/// # Safety
/// AVX-512F and FMA; `src + p * pitch + k` readable for p < N, k < u.len() / (16 V); `dst + p *
/// stride .. + 16 V` writable for p < N.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn tile<const V: usize, const N: usize>(u: &[f32], src: *const f32, pitch: usize, dst: *mut f32, stride: usize) {
    let mut acc = [[_mm512_setzero_ps(); V]; N];
    let bases: [*const f32; N] = std::array::from_fn(|p| src.wrapping_add(p * pitch));
    for (k, w) in u.chunks_exact(16 * V).enumerate() {
        // SAFETY: in bounds by the caller's contract.
        unsafe {
            let w: [__m512; V] = std::array::from_fn(|i| _mm512_loadu_ps(w.as_ptr().add(16 * i)));
            for (a, base) in acc.iter_mut().zip(bases) {
                let x = _mm512_set1_ps(*base.add(k));
                for (a, w) in a.iter_mut().zip(w) {
                    *a = _mm512_fmadd_ps(w, x, *a);
                }
            }
        }
    }
    for (p, a) in acc.iter().enumerate() {
        for (i, a) in a.iter().enumerate() {
            // SAFETY: in bounds by the caller's contract.
            unsafe { _mm512_storeu_ps(dst.add(p * stride + 16 * i), *a) };
        }
    }
}

/// NEON's steps, as AVX-512's: 4 lanes, 4x4 transposes where AVX-512 gathers and transposes 16 by
/// 16, products of 16 output channels (four q registers) by up to 5 tiles, 4 `k` per load of
/// each tile's values (by-lane FMLAs).
#[cfg(target_arch = "aarch64")]
impl Winograd {
    /// The padded input channels-last, as AVX-512's `gather`: rows of 4 pixels by 4 channels
    /// transposed in registers, the rest value by value.
    fn gather(&self, x: &[f32], input: &mut [f32]) {
        let ([h, w], [pt, pl], [ph, pw], cp, c) = (self.input, self.pad, self.padded(), self.channels(), self.in_channels);
        let input = &mut input[..ph * pw * cp];
        input.fill(0.0);
        assert!(x.len() == c * h * w && (pt + h) * pw <= ph * pw, "padded input out of bounds");
        let (plane, whole) = (h * w, (c / 4) * 4);
        for row in 0..h {
            let out = (row + pt) * pw + pl;
            for cb in (0..whole).step_by(4) {
                let mut col = 0;
                while col + 4 <= w {
                    // SAFETY: channels cb..cb+4 < c, columns col..col+4 <= w of this row: within
                    // x; pixels out+col..+4 of the padded row, channels cb..cb+4 <= cp: within
                    // `input` (sliced above, asserted).
                    unsafe {
                        let src = x.as_ptr().add(cb * plane + row * w + col);
                        let r = transpose4([0, 1, 2, 3].map(|i| vld1q_f32(src.add(i * plane))));
                        for (p, v) in r.into_iter().enumerate() {
                            vst1q_f32(input.as_mut_ptr().add((out + col + p) * cp + cb), v);
                        }
                    }
                    col += 4;
                }
                for col in col..w {
                    for ch in cb..cb + 4 {
                        input[(out + col) * cp + ch] = x[ch * plane + row * w + col];
                    }
                }
            }
            for ch in whole..c {
                for col in 0..w {
                    input[(out + col) * cp + ch] = x[ch * plane + row * w + col];
                }
            }
        }
    }

    /// `V[xi][tile][channel] = (B^T d B)[xi]`, as AVX-512's, 4 channels at a time.
    fn transform_input(&self, input: &[f32], v: &mut [f32]) {
        let ([th, tw], [_, pw], cp, vrow) = (self.tiles, self.padded(), self.channels(), self.row());
        assert!(input.len() >= (2 * th + 2) * pw * cp && v.len() >= 16 * vrow && cp % 4 == 0, "Winograd input transform out of bounds");
        for ty in 0..th {
            for tx in 0..tw {
                let tile = ty * tw + tx;
                for cb in (0..cp).step_by(4) {
                    // SAFETY: rows 2ty..2ty+4 and columns 2tx..2tx+4 of the padded input, channels
                    // cb..cb+4 <= cp: within `input`; V's row xi, tile, channels: within `v`
                    // (asserted).
                    unsafe {
                        let d: [[float32x4_t; 4]; 4] = std::array::from_fn(|r| std::array::from_fn(|s| vld1q_f32(input.as_ptr().add(((2 * ty + r) * pw + 2 * tx + s) * cp + cb))));
                        let e: [[float32x4_t; 4]; 4] = std::array::from_fn(|s| {
                            let [d0, d1, d2, d3] = [d[0][s], d[1][s], d[2][s], d[3][s]];
                            [vsubq_f32(d0, d2), vaddq_f32(d1, d2), vsubq_f32(d2, d1), vsubq_f32(d1, d3)]
                        });
                        for i in 0..4 {
                            let [e0, e1, e2, e3] = [e[0][i], e[1][i], e[2][i], e[3][i]];
                            let row = [vsubq_f32(e0, e2), vaddq_f32(e1, e2), vsubq_f32(e2, e1), vsubq_f32(e1, e3)];
                            for (j, value) in row.into_iter().enumerate() {
                                vst1q_f32(v.as_mut_ptr().add((i * 4 + j) * vrow + tile * cp + cb), value);
                            }
                        }
                    }
                }
            }
        }
    }

    /// `M[xi][tile][out] = sum over channels of U[xi][out][channel] V[xi][tile][channel]`, 16
    /// output channels by up to 5 tiles at a time.
    fn products(&self, rows: &mut [f32]) {
        const MOST: usize = 5;
        let (ck, t, oc, op, row) = (self.ck, self.tiles[0] * self.tiles[1], self.oc, self.op(), self.row());
        assert!(rows.len() >= 17 * row && self.weights.len() == 16 * op * ck && ck == self.channels() && oc == 16, "Winograd products out of bounds");
        for xi in 0..16 {
            let (m, v) = rows[xi * row..].split_at_mut(row);
            for ot in 0..op / oc {
                let u = &self.weights[(xi * op + ot * oc) * ck..][..ck * oc];
                // Groups of tiles as even as they come (49 tiles: 5, ..., 5, 4).
                for (first, n) in super::even_groups(t, MOST) {
                    let src = v[first * ck..].as_ptr();
                    let dst = m[first * op + ot * oc..].as_mut_ptr();
                    // SAFETY: tiles first..first+n of row xi, channels below ck: within `v`; their
                    // outputs ot * oc.. + oc: within `m` (asserted above).
                    unsafe {
                        match n {
                            1 => tile::<1>(u, src, ck, dst, op),
                            2 => tile::<2>(u, src, ck, dst, op),
                            3 => tile::<3>(u, src, ck, dst, op),
                            4 => tile::<4>(u, src, ck, dst, op),
                            5 => tile::<5>(u, src, ck, dst, op),
                            _ => unreachable!("{n} tiles in a group of at most {MOST}"),
                        }
                    }
                }
            }
        }
    }

    /// Each tile's `A^T M A` plus the bias, then a Relu (Swish is `run`'s, after the transpose),
    /// into the image's outputs channels-last (`outputs[pixel][op]`).
    fn transform_output(&self, m: &[f32], outputs: &mut [f32], activation: Activation) {
        let ([th, tw], [oh, ow], op, row) = (self.tiles, self.output, self.op(), self.row());
        assert!(m.len() >= 16 * row && outputs.len() >= oh * ow * op && self.bias.len() >= self.out_channels.div_ceil(L) * L, "Winograd output transform out of bounds");
        // SAFETY: NEON is in every aarch64 target's baseline.
        let zero = unsafe { vdupq_n_f32(0.0) };
        for ty in 0..th {
            for tx in 0..tw {
                let tile = ty * tw + tx;
                for ob in (0..self.out_channels).step_by(4) {
                    // SAFETY: M's rows at this tile, outputs ob..ob+4 <= op: within `m`; the bias
                    // within its padding; the stores are to outputs inside the image, channels
                    // ob..ob+4 <= op: within `outputs` (asserted above).
                    unsafe {
                        let mv: [float32x4_t; 16] = std::array::from_fn(|xi| vld1q_f32(m.as_ptr().add(xi * row + tile * op + ob)));
                        let r: [[float32x4_t; 4]; 2] = [
                            std::array::from_fn(|j| vaddq_f32(vaddq_f32(mv[j], mv[4 + j]), mv[8 + j])),
                            std::array::from_fn(|j| vsubq_f32(vsubq_f32(mv[4 + j], mv[8 + j]), mv[12 + j])),
                        ];
                        let bias = vld1q_f32(self.bias.as_ptr().add(ob));
                        let out = r.map(|[r0, r1, r2, r3]| {
                            let pair = [vaddq_f32(vaddq_f32(vaddq_f32(r0, r1), r2), bias), vaddq_f32(vsubq_f32(vsubq_f32(r1, r2), r3), bias)];
                            // max(v, 0) answers 0 for -0.0 and NaN, as `vector::relu`.
                            if activation == Activation::Relu { pair.map(|v| vmaxnmq_f32(v, zero)) } else { pair }
                        });
                        for (i, row) in out.iter().enumerate() {
                            for (j, value) in row.iter().enumerate() {
                                let (oy, ox) = (2 * ty + i, 2 * tx + j);
                                if oy < oh && ox < ow {
                                    vst1q_f32(outputs.as_mut_ptr().add((oy * ow + ox) * op + ob), *value);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `outputs[pixel][op]` to NCHW `y`, 4 pixels by 4 channels transposed in registers; plus
    /// `residual`'s `r` and then, where its flag says so, a Relu (as `vector::add_relu`).
    fn transpose(&self, outputs: &[f32], y: &mut [f32], residual: Option<(&[f32], bool)>) {
        let (plane, op, o) = (self.output[0] * self.output[1], self.op(), self.out_channels);
        assert!(outputs.len() >= plane.div_ceil(L) * L * op && y.len() == o * plane && residual.is_none_or(|(r, _)| r.len() == y.len()), "Winograd transpose out of bounds");
        // SAFETY: NEON is in every aarch64 target's baseline.
        let zero = unsafe { vdupq_n_f32(0.0) };
        for pb in (0..plane).step_by(4) {
            let pixels = 4.min(plane - pb);
            for ob in (0..o).step_by(4) {
                // SAFETY: pixels pb..pb+4 of `outputs` (rounded up to whole vectors of L),
                // channels ob..ob+4 <= op: within it.
                let r = unsafe { transpose4([0, 1, 2, 3].map(|p| vld1q_f32(outputs.as_ptr().add((pb + p) * op + ob)))) };
                for (c, v) in r.into_iter().enumerate().take(o - ob) {
                    let at = (ob + c) * plane + pb;
                    if pixels == 4 {
                        // SAFETY: pixels pb..pb+4 <= plane of channel ob + c < o: within y and r
                        // (asserted above).
                        unsafe {
                            let v = match residual {
                                None => v,
                                Some((r, relu)) => {
                                    let sum = vaddq_f32(v, vld1q_f32(r.as_ptr().add(at)));
                                    if relu { vmaxnmq_f32(sum, zero) } else { sum }
                                }
                            };
                            vst1q_f32(y.as_mut_ptr().add(at), v);
                        }
                    } else {
                        let mut lanes = [0f32; 4];
                        // SAFETY: 4 values.
                        unsafe { vst1q_f32(lanes.as_mut_ptr(), v) };
                        for (p, &value) in lanes.iter().enumerate().take(pixels) {
                            y[at + p] = match residual {
                                None => value,
                                Some((r, true)) => super::vector::relu1(value + r[at + p]),
                                Some((r, false)) => value + r[at + p],
                            };
                        }
                    }
                }
            }
        }
    }
}

/// A 4x4 transpose: `r[i][l]` becomes `r[l][i]`.
#[cfg(target_arch = "aarch64")]
fn transpose4(r: [float32x4_t; 4]) -> [float32x4_t; 4] {
    // SAFETY: NEON is in every aarch64 target's baseline.
    unsafe {
        let (t0, t1) = (vtrn1q_f32(r[0], r[1]), vtrn2q_f32(r[0], r[1]));
        let (t2, t3) = (vtrn1q_f32(r[2], r[3]), vtrn2q_f32(r[2], r[3]));
        let pairs = |a: float32x4_t, b: float32x4_t| (vreinterpretq_f64_f32(a), vreinterpretq_f64_f32(b));
        let ((a0, b0), (a1, b1)) = (pairs(t0, t2), pairs(t1, t3));
        [vtrn1q_f64(a0, b0), vtrn1q_f64(a1, b1), vtrn2q_f64(a0, b0), vtrn2q_f64(a1, b1)].map(|v| vreinterpretq_f32_f64(v))
    }
}

/// N tiles by 16 output channels: `dst[p][..16] = sum over k of u[k][..16] * src[p * pitch + k]`,
/// `k` four at a time: one load of each tile's four values, 16 by-lane FMLAs per tile.
///
/// # Safety
/// `src + p * pitch + k` readable for p < N, k < u.len() / 16 (a multiple of 4); `dst + p * stride
/// .. + 16` writable for p < N.
#[cfg(target_arch = "aarch64")]
unsafe fn tile<const N: usize>(u: &[f32], src: *const f32, pitch: usize, dst: *mut f32, stride: usize) {
    // SAFETY (the intrinsics): NEON is in every aarch64 target's baseline.
    let mut acc = [[unsafe { vdupq_n_f32(0.0) }; 4]; N];
    let bases: [*const f32; N] = std::array::from_fn(|p| src.wrapping_add(p * pitch));
    for (k4, u) in u.chunks_exact(64).enumerate() {
        // SAFETY: in bounds by the caller's contract.
        unsafe {
            let x: [float32x4_t; N] = std::array::from_fn(|p| vld1q_f32(bases[p].add(4 * k4)));
            // `k` = 4 k4 + lane: its 16 weights by lane `lane` of each tile's values (a macro, so
            // that the lane is a constant).
            macro_rules! lanes {
                ($($lane:literal)*) => {$(
                    let w: [float32x4_t; 4] = std::array::from_fn(|i| vld1q_f32(u.as_ptr().add(16 * $lane + 4 * i)));
                    for (a, x) in acc.iter_mut().zip(x) {
                        for (a, w) in a.iter_mut().zip(w) {
                            *a = vfmaq_laneq_f32::<$lane>(*a, w, x);
                        }
                    }
                )*};
            }
            lanes!(0 1 2 3);
        }
    }
    for (p, a) in acc.iter().enumerate() {
        for (i, a) in a.iter().enumerate() {
            // SAFETY: in bounds by the caller's contract.
            unsafe { vst1q_f32(dst.add(p * stride + 4 * i), *a) };
        }
    }
}

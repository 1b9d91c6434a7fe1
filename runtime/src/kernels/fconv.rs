//! An f32 2D convolution (one group) on NCHW tensors: what float plans run in place of tract 0.23.9's
//! (`LazyIm2col` + `OptMatMul`, 2-3x ONNX Runtime's `Conv` time on the example models, with a
//! separate `Pad` in front).
//!
//! The input is copied once per image into a zero-padded buffer, split by stride phase: with stride
//! (sy, sx), phase (py, px) holds the padded input's rows `py + sy * i` and columns `px + sx * j`, so
//! every kernel tap of a strided convolution reads one phase with stride 1 (stride 1 has one phase:
//! the padded input itself). Outputs are computed [`NB`] pixels by [`MR`] output channels at a time,
//! over pixels laid out with the phase's row pitch (the columns past the output width are computed
//! and dropped): a microkernel starts from the bias and, for each (input channel, kernel row, kernel
//! column) `k`, adds MR broadcast weights times one contiguous run of NB values of the buffer. No
//! im2col, no gathers. Weights are packed at plan load, `[K][MR]` per tile of MR channels (zeros
//! past the last channel). On AVX-512 and on aarch64 NEON, small images take a layout vectorized
//! over output channels instead ([`CR`] by up to [`CP`] pixels), and 3x3 stride-1 layers Winograd's
//! F(2x2, 3x3) ([`super::winograd`]); on AVX-512 the split also runs by [`Piece`]s whose masks are
//! worked out at load, and a convolution whose output only the next one reads can write it into
//! that one's phases as it computes it ([`FConvKernel::run_fed`]).

use super::conv::{ConvKernelError, Geometry};
use super::winograd::Winograd;
use super::{vector, Isa};

/// Output channels per microkernel tile.
pub const MR: usize = 8;
/// Output pixels per microkernel tile.
pub const NB: usize = 32;
/// Output channels per tile of the channels-vectorized kernel: two zmm on AVX-512, four q
/// registers on NEON.
pub const CR: usize = if cfg!(target_arch = "aarch64") { 16 } else { 32 };
/// Output pixels per tile of the channels-vectorized kernel, at most (the pixels are split into
/// groups as even as they come: 49 as 7 of 7). AVX-512: 16 accumulators (groups of 12 spill
/// accumulators and base pointers to the stack: fashion-resnet s0.conv1 ran 20% slower); NEON: 24
/// of its 32 registers.
pub const CP: usize = if cfg!(target_arch = "aarch64") { 6 } else { 8 };
/// Packed weights up to this size are read from L1 for every block (half of a 48 KB L1, leaving
/// room for the block's input).
const WEIGHTS_IN_L1: usize = 24 * 1024;

/// What is applied to the sums (bias included) before they are stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    None,
    /// `max(y, 0)`, as SIMD max instructions answer: 0 for -0.0 and NaN.
    Relu,
    /// `y * sigmoid(beta * y)` (Swish; SiLU at beta 1), the sigmoid the caller's, except on
    /// AVX-512 and on aarch64, which compute tract-linalg's sigmoid for them in registers (see
    /// `x86::sigmoid` and `vector::swish`).
    Swish { beta: f32 },
}

/// A packed f32 convolution, ready to run.
#[derive(Debug, Clone)]
pub struct FConvKernel {
    geometry: Geometry,
    in_channels: usize,
    out_channels: usize,
    /// `[tile][k][MR]`.
    weights: Vec<f32>,
    /// `[tile][MR]`.
    bias: Vec<f32>,
    /// Per `k`: where its run starts in the phase buffer, for the output's first pixel.
    offsets: Vec<usize>,
    /// The largest offset.
    reach: usize,
    /// Rows and columns of a phase.
    phase: [usize; 2],
    activation: Activation,
    /// Per block of NB computed pixels, its runs of outputs (see [`runs`]).
    blocks: Vec<Vec<(usize, usize, usize)>>,
    /// The split of channel 0 (see [`Move`]); channel c's moves are `c * h * w` further in the
    /// input and `c * phase rows * phase columns` further in the buffer.
    moves: Vec<Move>,
    /// The moves in pieces of one masked load or two (see [`Piece`]), for AVX-512's split at
    /// strides 1 and 2 (empty elsewhere).
    pieces: Vec<Piece>,
    /// The channels-vectorized layout, where AVX-512 runs it (see [`ByChannels`]).
    by_channels: Option<ByChannels>,
    /// F(2x2, 3x3), where AVX-512 runs it and it serves (see [`Winograd::serves`]); it then
    /// replaces both layouts.
    winograd: Option<Winograd>,
    isa: Isa,
}

/// One input row's values for one phase: `n` values, every stride-th from `src` in the input, to
/// `dst..dst + n` in the phase buffer (channel 0's offsets). Only phases a tap reads are filled.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Move {
    src: usize,
    dst: usize,
    n: usize,
}

/// Up to 16 values of a row (stride 1) or 32 (stride 2) for AVX-512's split, its masks worked out
/// once at load: the `load` lanes from `src`; at stride 1 all of them to `dst[0]`, at stride 2 the
/// even ones to `dst[0]` and the odd ones to `dst[1]`, each under its `store` mask (0 where a row's
/// odd values go nowhere). Channel 0's offsets, as [`Move`]'s.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Piece {
    src: usize,
    dst: [usize; 2],
    load: u32,
    store: [u16; 2],
}

/// The move after `moves[i]` that takes the rest of the same row at stride 2: it starts one value
/// on, into another phase (the moves are sorted by row, then first column). Both splits then read
/// the row once for the two.
fn odd_partner(moves: &[Move], i: usize) -> Option<Move> {
    let m = moves[i];
    moves.get(i + 1).filter(|next| next.src == m.src + 1 && next.dst != m.dst).copied()
}

/// The pieces of `moves` (sorted by row, a row's two stride-2 moves one value apart consecutive),
/// at stride 1 or 2; none at another.
fn pieces(moves: &[Move], step: usize) -> Vec<Piece> {
    // Lanes below n, of 16 or 32.
    let below = |n: usize| if n >= 32 { u32::MAX } else { (1u32 << n) - 1 };
    let mut pieces = Vec::new();
    let mut i = 0;
    while i < moves.len() && step <= 2 {
        let m = moves[i];
        if step == 1 {
            i += 1;
            for at in (0..m.n).step_by(16) {
                let lanes = below(16.min(m.n - at));
                pieces.push(Piece { src: m.src + at, dst: [m.dst + at; 2], load: lanes, store: [lanes as u16, 0] });
            }
            continue;
        }
        // A row's odd values to the next move's phase where it starts one value on.
        let next = odd_partner(moves, i);
        i += 1 + usize::from(next.is_some());
        let (n2, dst2) = next.map_or((0, m.dst), |next| (next.n, next.dst));
        // Values 0, 2, .., 2 (n - 1) read, and 1, .., 2 n2 - 1.
        let read = (2 * m.n - 1).max(2 * n2);
        for at in (0..read).step_by(32) {
            let (evens, odds) = (m.n.saturating_sub(at / 2), n2.saturating_sub(at / 2));
            pieces.push(Piece { src: m.src + at, dst: [m.dst + at / 2, dst2 + at / 2], load: below(read - at), store: [below(evens.min(16)) as u16, below(odds.min(16)) as u16] });
        }
    }
    pieces
}

/// The layout for small images on AVX-512 and NEON (where Winograd runs, [`Winograd::runs_on`]):
/// a tile is [`CR`] output channels (two zmm or four q registers of weights per `k`) by [`CP`]
/// output pixels (each input value broadcast), and only output pixels are computed, where the
/// pixel layout also computes the far columns of each phase row (half the work on a 4x4 output
/// from a 6-wide padded input). Tiles are stored channel by channel (a group's pixels are
/// consecutive in each plane): transposed in registers on AVX-512.
#[derive(Debug, Clone)]
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
struct ByChannels {
    /// `[tile][k][CR]` (zeros past the last channel), on cache lines: each `k`'s two zmm loads
    /// are aligned, not split across lines.
    weights: Lines,
    /// `[tile][CR]`.
    bias: Vec<f32>,
    /// Per output pixel, where its runs start in the phase buffer (`oy * pitch + ox`).
    pixels: Vec<usize>,
    /// `(first pixel, count)`: the pixels in groups of at most CP, as even as they come.
    groups: Vec<(usize, usize)>,
}

impl FConvKernel {
    /// Packs `weights` (`[out][in][kh][kw]`) and `bias` (one per output channel, or one for all).
    pub fn new(geometry: Geometry, in_channels: usize, weights: &[f32], bias: &[f32], isa: Isa) -> Result<FConvKernel, ConvKernelError> {
        geometry.check()?;
        let [kh, kw] = geometry.kernel;
        let k = in_channels * kh * kw;
        if k == 0 || weights.is_empty() || !weights.len().is_multiple_of(k) {
            return Err(ConvKernelError::Shapes { weights: weights.len(), bias: bias.len(), scales: 0, out: 0 });
        }
        let out_channels = weights.len() / k;
        if bias.len() != out_channels && bias.len() != 1 {
            return Err(ConvKernelError::Shapes { weights: weights.len(), bias: bias.len(), scales: 0, out: out_channels });
        }
        let tiles = out_channels.div_ceil(MR);
        let mut packed = vec![0f32; tiles * k * MR];
        let mut packed_bias = vec![0f32; tiles * MR];
        for o in 0..out_channels {
            let (tile, r) = (o / MR, o % MR);
            for (i, &w) in weights[o * k..][..k].iter().enumerate() {
                packed[(tile * k + i) * MR + r] = w;
            }
            packed_bias[o] = bias[if bias.len() == 1 { 0 } else { o }];
        }
        let ([sy, sx], [dy, dx]) = (geometry.stride, geometry.dilation);
        let isa = match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512Vnni if !std::arch::is_x86_feature_detected!("fma") => Isa::Portable,
            Isa::NeonDot => Isa::Neon,
            Isa::Armv7Neon => Isa::Portable,
            isa => isa,
        };
        let mut phase = [0, 1].map(|a| geometry.padded()[a].div_ceil(geometry.stride[a]));
        // On AVX-512, phase rows on whole vectors (zeros past the padded width) where that costs
        // at most one block in 25: a block of NB pixels is then whole rows (one run to store per
        // row), and a tap at an even column of its phase loads whole cache lines (the buffer
        // starts on one). (Not measured on ARM, so not done there.)
        let blocks = |pitch: usize| ((geometry.output[0].max(1) - 1) * pitch + geometry.output[1]).div_ceil(NB);
        let wide = phase[1].next_multiple_of(16);
        if isa == Isa::Avx512Vnni && blocks(wide) * 25 <= blocks(phase[1]) * 26 {
            phase[1] = wide;
        }
        let plane = phase[0] * phase[1];
        let mut used = vec![false; sy * sx];
        let mut offsets = Vec::with_capacity(k);
        for c in 0..in_channels {
            for y in 0..kh {
                for x in 0..kw {
                    let ([py, iy], [px, ix]) = ([(y * dy) % sy, (y * dy) / sy], [(x * dx) % sx, (x * dx) / sx]);
                    used[py * sx + px] = true;
                    offsets.push(((py * sx + px) * in_channels + c) * plane + iy * phase[1] + ix);
                }
            }
        }
        let reach = offsets.iter().copied().max().unwrap_or(0);
        // Columns x with (x + pad) % sx == px land in phase px, at phase column (x + pad) / sx;
        // padded row y = r + pad is phase row y / sy of row phase y % sy.
        let ([h, w], [pad_y, pad_x]) = (geometry.input, geometry.pad_before);
        let mut columns: Vec<_> = (0..sx)
            .map(|px| (px, (px + sx - pad_x % sx) % sx))
            .filter(|&(_, first)| first < w)
            .map(|(px, first)| (px, first, (first + pad_x) / sx))
            .collect();
        // A row's moves by first column: at stride 2 the AVX-512 split reads a row once for two
        // moves one value apart.
        columns.sort_by_key(|&(_, first, _)| first);
        let moves: Vec<Move> = (0..h)
            .flat_map(|r| columns.iter().map(move |&column| (r, column)))
            .map(|(r, (px, first, column))| (((r + pad_y) % sy) * sx + px, r * w + first, ((r + pad_y) / sy) * phase[1] + column, (w - first).div_ceil(sx)))
            .filter(|&(phase, ..)| used[phase])
            .map(|(phase, src, at, n)| Move { src, dst: phase * in_channels * plane + at, n })
            .collect();
        let pieces = if cfg!(target_arch = "x86_64") && isa == Isa::Avx512Vnni { pieces(&moves, sx) } else { Vec::new() };
        let mut kernel = FConvKernel { geometry, in_channels, out_channels, weights: packed, bias: packed_bias, offsets, reach, phase, activation: Activation::None, blocks: Vec::new(), moves, pieces, by_channels: None, winograd: None, isa };
        // The last channel's moves lie within the input and the buffer (the others below them): the
        // AVX-512 split relies on it.
        let (last, buffer) = (in_channels - 1, kernel.buffer_len());
        let within = |m: &Move| m.n > 0 && last * h * w + m.src + (m.n - 1) * sx < in_channels * h * w && last * plane + m.dst + m.n <= buffer;
        assert!(kernel.moves.iter().all(within), "a phase split out of bounds");
        // And so do its pieces' masked lanes (the highest of each mask).
        let top = |mask: u32| (32 - mask.leading_zeros() as usize).saturating_sub(1);
        let whole = |p: &Piece| {
            let stores = (0..2).filter(|&j| p.store[j] != 0).all(|j| last * plane + p.dst[j] + top(p.store[j] as u32) < buffer);
            p.load != 0 && last * h * w + p.src + top(p.load) < in_channels * h * w && stores
        };
        assert!(kernel.pieces.iter().all(whole), "a phase split out of bounds");
        let (count, [oh, ow], pitch) = (kernel.extent().0, geometry.output, phase[1]);
        kernel.blocks = (0..count).step_by(NB).map(|first| runs(first, NB.min(count - first), pitch, ow)).collect();
        // Values computed per image by each layout (channels: exactly the outputs, in groups of
        // up to CP pixels). Measured on fashion-resnet and fashion-cnn-s (Xeon, AVX-512): channels
        // win where they compute a fifth less (4x4 outputs: 35.9 against 59.8 us; since the groups
        // are exact, also fashion-resnet s1.conv1, 7x7 at stride 2: 13.5-16.2 against 14.5-18.2 us
        // in plans), and an eighth less at stride 1 (7x7: 17.0 against 18.6 us); at stride 2 a
        // seventh less loses (s0.conv1, 14x14: 31.7 against 27.6 us in a plan), as do the stem and
        // the pointwise shortcuts (14.2 against 9.1 us, 7.6 against 5.3 us).
        let by_pixels = tiles * MR * kernel.blocks.len() * NB;
        let by_channels = out_channels.div_ceil(CR) * CR * oh * ow;
        let saves = by_channels * 5 <= by_pixels * 4 || (geometry.stride == [1, 1] && by_channels * 8 < by_pixels * 7);
        if Winograd::runs_on(kernel.isa) && saves {
            kernel.by_channels = Some(ByChannels::new(&kernel, weights, bias));
        }
        // F(2x2, 3x3) on AVX-512 where it serves. Measured on the Xeon: 0.67x to 0.76x the direct
        // kernel on the example models' layers it serves, alone (`fconv_layers`); fashion-cnn-s
        // 0.88x and fashion-resnet 0.96x in plans.
        if Winograd::runs_on(kernel.isa) && Winograd::serves(&geometry, in_channels) {
            kernel.winograd = Some(Winograd::new(&geometry, in_channels, out_channels, weights, bias));
        }
        Ok(kernel)
    }

    /// This kernel in each layout its instruction set runs (pixels; on AVX-512 also channels,
    /// whichever `new` chose).
    #[cfg(test)]
    fn layouts(&self, weights: &[f32], bias: &[f32]) -> Vec<FConvKernel> {
        let pixels = FConvKernel { by_channels: None, winograd: None, ..self.clone() };
        let channels = Winograd::runs_on(self.isa).then(|| FConvKernel { by_channels: Some(ByChannels::new(self, weights, bias)), winograd: None, ..self.clone() });
        let winograd = (Winograd::runs_on(self.isa) && self.geometry.kernel == [3, 3] && self.geometry.stride == [1, 1] && self.geometry.dilation == [1, 1])
            .then(|| FConvKernel { by_channels: None, winograd: Some(Winograd::new(&self.geometry, self.in_channels, self.out_channels, weights, bias)), ..self.clone() });
        std::iter::once(pixels).chain(channels).chain(winograd).collect()
    }

    /// This pointwise convolution (1x1, unpadded: a ResNet's strided shortcut) run on the phases
    /// `first` splits, where one of `first`'s taps reads exactly its input (a 3x3 convolution of the
    /// same stride padded by 1: the centre tap): it then needs no split of its own and reads what
    /// `first` has just loaded (see [`FConvKernel::run_pair`]). `None` where it does not apply.
    pub fn sharing_phases(&self, first: &FConvKernel) -> Option<FConvKernel> {
        let (g, f) = (&self.geometry, &first.geometry);
        let [kh, kw] = f.kernel;
        let tap = [0, 1].map(|a| (f.dilation[a] > 0 && f.pad_before[a].is_multiple_of(f.dilation[a])).then(|| f.pad_before[a] / f.dilation[a]).filter(|&t| t < f.kernel[a]));
        let [Some(ty), Some(tx)] = tap else { return None };
        let same = g.kernel == [1, 1] && g.pad_before == [0, 0] && g.stride == f.stride && g.input == f.input && g.output == f.output;
        if !same || self.in_channels != first.in_channels || self.isa != first.isa || first.winograd.is_some() || self.winograd.is_some() {
            return None;
        }
        let offsets: Vec<usize> = (0..self.in_channels).map(|c| first.offsets[(c * kh + ty) * kw + tx]).collect();
        let reach = offsets.iter().copied().max().unwrap_or(0);
        let mut kernel = FConvKernel { offsets, reach, phase: first.phase, blocks: first.blocks.clone(), moves: Vec::new(), pieces: Vec::new(), by_channels: None, winograd: None, ..self.clone() };
        // The layout `new` would choose, on these phases.
        if self.by_channels.is_some() {
            let k = self.in_channels;
            let mut weights = vec![0f32; self.out_channels * k];
            for (o, row) in weights.chunks_exact_mut(k).enumerate() {
                for (i, w) in row.iter_mut().enumerate() {
                    *w = self.weights[((o / MR) * k + i) * MR + o % MR];
                }
            }
            kernel.by_channels = Some(ByChannels::new(&kernel, &weights, &self.bias[..self.out_channels]));
        }
        Some(kernel)
    }

    /// `first` (this kernel) and `second`, from [`FConvKernel::sharing_phases`] on it, on the same
    /// `batch` images: one split per image, into `buffer` (as [`FConvKernel::run_with`]'s).
    #[allow(clippy::too_many_arguments)]
    pub fn run_pair(&self, second: &FConvKernel, x: &[f32], batch: usize, y: &mut [f32], y2: &mut [f32], buffer: &mut Vec<f32>, sigmoid: &mut dyn FnMut(&mut [f32])) -> Result<(), ConvKernelError> {
        let (image, out_image) = self.sizes(x, batch, y)?;
        let (_, out2) = second.sizes(x, batch, y2)?;
        assert!(self.winograd.is_none() && second.phase == self.phase && second.reach <= self.reach && second.geometry.output == self.geometry.output, "a pair that does not share its phases");
        if batch == 0 || out_image == 0 {
            return Ok(());
        }
        let buffer = self.phases(buffer);
        for ((x, y), y2) in x.chunks_exact(image).zip(y.chunks_exact_mut(out_image)).zip(y2.chunks_exact_mut(out2)) {
            self.split(x, buffer);
            self.compute(buffer, y, sigmoid);
            second.compute(buffer, y2, sigmoid);
        }
        Ok(())
    }

    /// Whether Perch's float convolutions beat tract's where `isa` runs: not on 32-bit ARM, where
    /// they would run the portable loops, which LLVM leaves scalar there (NEON's f32 arithmetic is
    /// not IEEE, so it does not vectorize it) while tract has NEON assembly: fashion-resnet float
    /// 59.3 M instructions per inference against tract's 6.9 M on a Cortex-A7, fashion-cnn-s 9.8 M
    /// against 1.9 M (`insncount`, device builds).
    pub fn pays_on(isa: Isa) -> bool {
        !(cfg!(target_arch = "arm") && matches!(isa, Isa::Armv7Neon | Isa::Portable))
    }

    /// Whether this kernel's outputs can go straight into `next`'s phases as it computes them (see
    /// [`FConvKernel::run_fed`]): where `next` convolves exactly this kernel's output, and this
    /// kernel runs AVX-512's pixel layout in blocks of whole output rows, with its weights in L1.
    pub fn can_feed(&self, next: &FConvKernel) -> bool {
        // (A constant false off x86-64, which lets the compiler drop the feeding code there.)
        cfg!(target_arch = "x86_64")
            && self.isa == Isa::Avx512Vnni
            && next.isa == self.isa
            && self.by_channels.is_none()
            && self.winograd.is_none()
            && next.winograd.is_none()
            && NB.is_multiple_of(self.phase[1])
            && self.weights.len() * size_of::<f32>() <= WEIGHTS_IN_L1
            && next.in_channels == self.out_channels
            && next.geometry.input == self.geometry.output
            && next.geometry.stride[1] <= 2
    }

    /// `source` then this kernel (and `second`, from [`FConvKernel::sharing_phases`] on it, into
    /// `y2`), on `batch` images of `x`, where `source.can_feed(self)`: each block of `source`'s
    /// output rows goes from registers to `rows` (a few rows, which stay in L1) and is split from
    /// there into this kernel's phases, so `source`'s output is never written whole nor read back
    /// (fashion-resnet's stem into its first stage). `buffers`: `source`'s phases, this kernel's and
    /// `rows`, kept from run to run. The outputs are those of `source.run` then `run_pair` to the bit.
    #[allow(clippy::too_many_arguments)]
    pub fn run_fed(&self, source: &FConvKernel, second: Option<&FConvKernel>, x: &[f32], batch: usize, y: &mut [f32], y2: &mut [f32], buffers: &mut [Vec<f32>; 3], sigmoid: &mut dyn FnMut(&mut [f32])) -> Result<(), ConvKernelError> {
        if !source.can_feed(self) {
            return Err(ConvKernelError::CannotFeed);
        }
        let [h, w] = source.geometry.input;
        let image = source.in_channels * h * w;
        if x.len() != batch * image {
            return Err(ConvKernelError::Input { got: vec![x.len()], expected: vec![batch, source.in_channels, h, w] });
        }
        let [oh, ow] = self.geometry.output;
        let out_image = self.out_channels * oh * ow;
        if y.len() != batch * out_image {
            return Err(ConvKernelError::Output { got: y.len(), expected: batch * out_image });
        }
        let out2 = second.map_or(0, |s| s.out_channels * s.geometry.output[0] * s.geometry.output[1]);
        if y2.len() != batch * out2 {
            return Err(ConvKernelError::Output { got: y2.len(), expected: batch * out2 });
        }
        if let Some(second) = second {
            assert!(second.phase == self.phase && second.reach <= self.reach && second.geometry.output == self.geometry.output, "a pair that does not share its phases");
        }
        if batch == 0 || out_image == 0 {
            return Ok(());
        }
        let [own, phases, rows] = buffers;
        let (own, phases) = (source.phases(own), self.phases(phases));
        for (i, x) in x.chunks_exact(image).enumerate() {
            source.split(x, own);
            source.compute_into(own, self, phases, rows);
            self.compute(phases, &mut y[i * out_image..][..out_image], sigmoid);
            if let Some(second) = second {
                second.compute(phases, &mut y2[i * out2..][..out2], sigmoid);
            }
        }
        Ok(())
    }

    /// One image's outputs from the phases in `buffer`, block by block through `rows` into `next`'s
    /// `phases` (see [`FConvKernel::run_fed`]).
    #[cfg(target_arch = "x86_64")]
    fn compute_into(&self, buffer: &[f32], next: &FConvKernel, phases: &mut [f32], rows: &mut Vec<f32>) {
        let ([oh, ow], k, far) = (self.geometry.output, self.offsets.len(), self.extent().1);
        // Output rows per block, and a channel's values in `rows`.
        let per_block = NB / self.phase[1];
        let channel = per_block * ow;
        if rows.len() < self.out_channels * channel {
            rows.resize(self.out_channels * channel, 0.0);
        }
        let (w, plane, sx) = (next.geometry.input[1], next.phase[0] * next.phase[1], next.geometry.stride[1]);
        assert!(phases.len() == next.buffer_len() && w == ow, "phases for another convolution");
        for (block, block_runs) in self.blocks.iter().enumerate() {
            let (first, top) = (block * NB, block * per_block);
            for (t, (weights, bias)) in self.weights.chunks_exact(k * MR).zip(self.bias.chunks_exact(MR)).enumerate() {
                assert!(base_in_bounds(self, first, far, buffer.len()), "tile out of bounds");
                let n = MR.min(self.out_channels - t * MR);
                // Channel c's output row oy lands at rows[c * channel + (oy - top) * ow].
                let mut planes = [std::ptr::null_mut(); MR];
                for (r, plane) in planes.iter_mut().enumerate().take(n) {
                    *plane = rows.as_mut_ptr().wrapping_add((t * MR + r) * channel).wrapping_sub(top * ow);
                }
                // SAFETY: AVX-512F and FMA are here (`can_feed`, FMA checked in `new`); the reads
                // are in bounds (asserted); the block's runs lie in its output rows, top..top +
                // per_block, so each of the first n planes' writes lies in its channel's rows.
                unsafe { x86::tile_avx512(weights, bias, buffer.as_ptr().add(first), &self.offsets, self.activation, &planes, n, block_runs) };
            }
            // The pieces of the block's rows (sorted by row), from `rows` as if it were the image.
            let count = per_block.min(oh - top);
            let (low, high) = (next.pieces.partition_point(|p| p.src / w < top), next.pieces.partition_point(|p| p.src / w < top + count));
            // SAFETY: AVX-512F is here; every piece reads within its row of each channel's rows in
            // `rows` (channel stride `channel`) and writes within `phases` (asserted in `new`).
            unsafe { x86::split_avx512(rows.as_ptr().wrapping_sub(top * w), phases.as_mut_ptr(), &next.pieces[low..high], next.in_channels, channel, plane, sx) };
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn compute_into(&self, _: &[f32], _: &FConvKernel, _: &mut [f32], _: &mut Vec<f32>) {
        unreachable!("can_feed holds on AVX-512 only");
    }

    /// Whether this kernel runs F(2x2, 3x3) (see [`Winograd::serves`]).
    pub fn is_winograd(&self) -> bool {
        self.winograd.is_some()
    }

    /// This kernel on the direct layout it would run without F(2x2, 3x3) (a benchmark's
    /// comparison; its phase buffer differs, see [`FConvKernel::scratch`]).
    pub fn without_winograd(self) -> FConvKernel {
        FConvKernel { winograd: None, ..self }
    }

    /// This kernel with `activation` applied to its sums.
    pub fn with_activation(self, activation: Activation) -> FConvKernel {
        FConvKernel { activation, ..self }
    }

    pub fn activation(&self) -> Activation {
        self.activation
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn output_dims(&self, batch: usize) -> [usize; 4] {
        [batch, self.out_channels, self.geometry.output[0], self.geometry.output[1]]
    }

    /// Multiply-accumulates per image.
    pub fn macs(&self) -> usize {
        let g = &self.geometry;
        self.out_channels * g.output[0] * g.output[1] * self.in_channels * g.kernel[0] * g.kernel[1]
    }

    /// Copies one NCHW image into the phases of `buffer` (its padding stays zero).
    fn split(&self, x: &[f32], buffer: &mut [f32]) {
        let g = &self.geometry;
        let ([h, w], sx, plane) = (g.input, g.stride[1], self.phase[0] * self.phase[1]);
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512Vnni && sx <= 2 {
            assert!(x.len() == self.in_channels * h * w && buffer.len() == self.buffer_len(), "split out of bounds");
            // SAFETY: AVX-512F is here (`Isa::available`); every piece of every channel is in
            // bounds of an input and a buffer of those lengths (asserted in `new`).
            unsafe { x86::split_avx512(x.as_ptr(), buffer.as_mut_ptr(), &self.pieces, self.in_channels, h * w, plane, sx) };
            return;
        }
        for (c, image) in x.chunks_exact(h * w).enumerate() {
            let buffer = &mut buffer[c * plane..];
            let mut i = 0;
            while i < self.moves.len() {
                let Move { src, dst, n } = self.moves[i];
                i += 1;
                match sx {
                    1 => buffer[dst..][..n].copy_from_slice(&image[src..][..n]),
                    // A row's even values to this move's phase and, where the next move starts one
                    // value on, its odd values to that one's, in one pass of pairs (which vectorize,
                    // as de-interleaving loads on NEON; a step_by loop does not).
                    2 => {
                        let Some(next) = odd_partner(&self.moves, i - 1) else {
                            let pairs = image[src..][..2 * n - 1].chunks(2);
                            buffer[dst..][..n].iter_mut().zip(pairs).for_each(|(d, pair)| *d = pair[0]);
                            continue;
                        };
                        i += 1;
                        let (evens, odds) = two_runs(buffer, (dst, n), (next.dst, next.n));
                        let both = n.min(next.n);
                        let pairs = image[src..][..2 * both].chunks_exact(2);
                        for ((e, o), pair) in evens.iter_mut().zip(odds.iter_mut()).zip(pairs) {
                            (*e, *o) = (pair[0], pair[1]);
                        }
                        // The one value more of either (n and n' differ by at most one).
                        for (k, e) in evens.iter_mut().enumerate().skip(both) {
                            *e = image[src + 2 * k];
                        }
                        for (k, o) in odds.iter_mut().enumerate().skip(both) {
                            *o = image[src + 1 + 2 * k];
                        }
                    }
                    _ => buffer[dst..][..n].iter_mut().zip(image[src..].iter().step_by(sx)).for_each(|(d, &v)| *d = v),
                }
            }
        }
    }

    /// Pixels computed per image (rows at the phase's pitch, the last one cut at the output width)
    /// and the end of the last block's runs.
    fn extent(&self) -> (usize, usize) {
        let [oh, ow] = self.geometry.output;
        let count = (oh.max(1) - 1) * self.phase[1] + ow;
        (count, self.reach + count.div_ceil(NB) * NB)
    }

    /// The phases, and room for the last block's runs past them.
    fn buffer_len(&self) -> usize {
        if self.winograd.is_some() {
            // (Its scratch is its own, see `Winograd::run`.)
            return 0;
        }
        // Up to the last phase a tap reads (where reach lies): a strided pointwise convolution
        // without padding reads one phase of four.
        let channel_phases = self.in_channels * self.phase[0] * self.phase[1];
        ((self.reach / channel_phases + 1) * channel_phases).max(self.extent().1)
    }

    /// A zeroed phase buffer for [`FConvKernel::run_with`], to reuse across runs.
    pub fn scratch(&self) -> Vec<f32> {
        // 16 more: `run_with` starts the phases on 64 bytes.
        vec![0f32; self.buffer_len() + 16]
    }

    /// [`FConvKernel::run_with`], then `residual` (y's shape) added and, where `relu`, a Relu
    /// after it (a ResNet block's `Add` and `Max` with zero, value for value as
    /// [`vector::add_relu`]): in Winograd's stores, else in a pass over `y`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_with_residual(&self, x: &[f32], batch: usize, y: &mut [f32], residual: &[f32], relu: bool, buffer: &mut Vec<f32>, sigmoid: &mut dyn FnMut(&mut [f32])) -> Result<(), ConvKernelError> {
        if residual.len() != y.len() {
            return Err(ConvKernelError::Output { got: residual.len(), expected: y.len() });
        }
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if let Some(winograd) = &self.winograd {
            let (image, out_image) = self.sizes(x, batch, y)?;
            for ((x, y), r) in x.chunks_exact(image).zip(y.chunks_exact_mut(out_image)).zip(residual.chunks_exact(out_image)) {
                winograd.run(x, y, self.activation, Some((r, relu)));
            }
            return Ok(());
        }
        self.run_with(x, batch, y, buffer, sigmoid)?;
        match relu {
            true => vector::add_relu(y, residual),
            false => vector::add(y, residual),
        }
        Ok(())
    }

    /// Convolves `batch` NCHW images of `x` into `y`, with the logistic function in f32 as the
    /// sigmoid of [`Activation::Swish`] (except on AVX-512 and aarch64, see [`Activation`]).
    pub fn run(&self, x: &[f32], batch: usize, y: &mut [f32]) -> Result<(), ConvKernelError> {
        self.run_with(x, batch, y, &mut Vec::new(), &mut logistic)
    }

    /// [`FConvKernel::run`] with a phase buffer from [`FConvKernel::scratch`], which it keeps zero
    /// outside the image (one of another length is replaced), and `sigmoid` (applied in place, to
    /// 64-byte aligned slices) for [`Activation::Swish`] (not called on AVX-512 and aarch64, see
    /// [`Activation`]).
    pub fn run_with(&self, x: &[f32], batch: usize, y: &mut [f32], buffer: &mut Vec<f32>, sigmoid: &mut dyn FnMut(&mut [f32])) -> Result<(), ConvKernelError> {
        let (image, out_image) = self.sizes(x, batch, y)?;
        if batch == 0 || out_image == 0 {
            return Ok(());
        }
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if let Some(winograd) = &self.winograd {
            for (x, y) in x.chunks_exact(image).zip(y.chunks_exact_mut(out_image)) {
                winograd.run(x, y, self.activation, None);
            }
            return Ok(());
        }
        let buffer = self.phases(buffer);
        for (x, y) in x.chunks_exact(image).zip(y.chunks_exact_mut(out_image)) {
            self.split(x, buffer);
            self.compute(buffer, y, sigmoid);
        }
        Ok(())
    }

    /// Values per input image and per output image, where `x` and `y` hold `batch` of them.
    fn sizes(&self, x: &[f32], batch: usize, y: &[f32]) -> Result<(usize, usize), ConvKernelError> {
        let ([h, w], [oh, ow]) = (self.geometry.input, self.geometry.output);
        let image = self.in_channels * h * w;
        if x.len() != batch * image {
            return Err(ConvKernelError::Input { got: vec![x.len()], expected: vec![batch, self.in_channels, h, w] });
        }
        let out_image = self.out_channels * oh * ow;
        if y.len() != batch * out_image {
            return Err(ConvKernelError::Output { got: y.len(), expected: batch * out_image });
        }
        Ok((image, out_image))
    }

    /// The phases in `buffer` (replaced by [`FConvKernel::scratch`] where its length differs),
    /// from its first 64-byte boundary.
    fn phases<'a>(&self, buffer: &'a mut Vec<f32>) -> &'a mut [f32] {
        if buffer.len() != self.buffer_len() + 16 {
            *buffer = self.scratch();
        }
        let skip = buffer.as_ptr().align_offset(64).min(16);
        &mut buffer[skip..][..self.buffer_len()]
    }

    /// One image's outputs `y` from the phases in `buffer`: its own split, or, for a kernel from
    /// [`FConvKernel::sharing_phases`], the other kernel's.
    fn compute(&self, buffer: &[f32], y: &mut [f32], sigmoid: &mut dyn FnMut(&mut [f32])) {
        let [oh, ow] = self.geometry.output;
        let (k, plane, tiles, far) = (self.offsets.len(), oh * ow, self.bias.len() / MR, self.extent().1);
        // A tile, and NB values past it: a run is copied NB values at a time where its plane has room.
        let mut tile = Tile([0f32; MR * NB + NB]);
        let mut scaled = Tile([0f32; MR * NB + NB]);
        // Blocks in the outer loop reuse each block's input from L1 for every tile, and read all
        // weights once per block (from L1 where they fit); tiles there, each tile's weights for
        // every block, and the whole buffer once per tile: that order where all weights would not
        // fit in L1 and (measured on AVX-512 only) where it reads less.
        let reads_less = self.isa != Isa::Avx512Vnni || tiles * buffer.len() < self.blocks.len() * self.weights.len();
        let tiles_outer = self.weights.len() * size_of::<f32>() > WEIGHTS_IN_L1 && reads_less;
        let order = |i: usize| if tiles_outer { (i / self.blocks.len(), i % self.blocks.len()) } else { (i % tiles, i / tiles) };
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if let Some(by) = &self.by_channels {
            // Every read lies below the last pixel's start + reach, within the buffer.
            assert!(by.pixels.len() == plane && by.pixels.iter().all(|&q| q + self.reach < buffer.len()) && by.weights.as_slice().len() == by.bias.len() * k, "tile out of bounds");
            for (t, (weights, bias)) in by.weights.as_slice().chunks_exact(k * CR).zip(by.bias.chunks_exact(CR)).enumerate() {
                let channels = CR.min(self.out_channels - t * CR);
                let out = &mut y[t * CR * plane..][..channels * plane];
                for &(first, n) in &by.groups {
                    let group = &by.pixels[first..first + n];
                    #[cfg(target_arch = "x86_64")]
                    {
                        let (out, activation) = (out.as_mut_ptr().wrapping_add(first), self.activation);
                        // SAFETY: AVX-512F and FMA are here (`Isa::available`, FMA checked in
                        // `new`); reads in bounds (asserted above); the stores write channel c <
                        // channels of output pixel first + p < plane: within `out`.
                        unsafe {
                            macro_rules! dispatch {
                                ($($n:literal)*) => {
                                    match n {
                                        $($n => x86::channels_avx512::<$n>(weights, bias, buffer.as_ptr(), &self.offsets, group, activation, out, plane, channels),)*
                                        _ => unreachable!("a group of {n} pixels"),
                                    }
                                };
                            }
                            dispatch!(1 2 3 4 5 6 7 8)
                        }
                    }
                    #[cfg(target_arch = "aarch64")]
                    {
                        let values = &mut tile.0[..n * CR];
                        // SAFETY: reads in bounds (asserted above); `values` holds n * CR.
                        unsafe {
                            macro_rules! dispatch {
                                ($($n:literal)*) => {
                                    match n {
                                        $($n => neon::channels::<$n>(weights, bias, buffer.as_ptr(), &self.offsets, group, values),)*
                                        _ => unreachable!("a group of {n} pixels"),
                                    }
                                };
                            }
                            dispatch!(1 2 3 4 5 6)
                        }
                        match self.activation {
                            Activation::None => {}
                            Activation::Relu => vector::relu(values),
                            Activation::Swish { beta } => vector::swish(values, beta),
                        }
                        // `values[p][c]` to channel c's plane, pixel first + p.
                        for (c, out) in out.chunks_exact_mut(plane).enumerate() {
                            for (p, out) in out[first..first + n].iter_mut().enumerate() {
                                *out = values[p * CR + c];
                            }
                        }
                    }
                }
            }
            return;
        }
        for (t, block) in (0..tiles * self.blocks.len()).map(order) {
            let (first, block_runs) = (block * NB, &self.blocks[block]);
            {
                let weights = &self.weights[t * k * MR..][..k * MR];
                let bias = &self.bias[t * MR..][..MR];
                let planes = y[t * MR * plane..].chunks_exact_mut(plane).take(MR);
                #[cfg(target_arch = "x86_64")]
                if self.isa == Isa::Avx512Vnni {
                    // Read bounds as in `tile`; the stores are to `planes`, at the runs.
                    assert!(base_in_bounds(self, first, far, buffer.len()) && weights.len() == k * MR, "tile out of bounds");
                    let mut rows = [std::ptr::null_mut(); MR];
                    let n = planes.len();
                    for (row, plane) in rows.iter_mut().zip(planes) {
                        *row = plane.as_mut_ptr();
                    }
                    // SAFETY: AVX-512F and FMA are here (`Isa::available`, FMA checked in
                    // `new`); the reads are in bounds (asserted); each run lies within a plane
                    // of `plane` values (`runs`), and `rows[..n]` are those planes.
                    unsafe { x86::tile_avx512(weights, bias, buffer.as_ptr().add(first), &self.offsets, self.activation, &rows, n, block_runs) };
                    continue;
                }
                let computed: &mut [f32; MR * NB] = (&mut tile.0[..MR * NB]).try_into().expect("MR * NB values");
                let scaled: &mut [f32; MR * NB] = (&mut scaled.0[..MR * NB]).try_into().expect("MR * NB values");
                self.tile(weights, bias, buffer, first, far, computed);
                activate(self.activation, computed, scaled, sigmoid);
                for (r, y) in planes.enumerate() {
                    for &(j, at, n) in block_runs {
                        // Values past the run land on this plane's later pixels, which later
                        // runs and blocks overwrite: a fixed-size copy, not a memcpy call.
                        if at + NB <= plane {
                            y[at..][..NB].copy_from_slice(&tile.0[r * NB + j..][..NB]);
                        } else {
                            y[at..][..n].copy_from_slice(&tile.0[r * NB + j..][..n]);
                        }
                    }
                }
            }
        }
    }

    /// One tile: `out[r][j] = bias[r] + sum over k of weights[k][r] * src[base + offsets[k] + j]`,
    /// every read below `far` (AVX-512 stores its tiles itself: `run_with`).
    fn tile(&self, weights: &[f32], bias: &[f32], src: &[f32], base: usize, far: usize, out: &mut [f32; MR * NB]) {
        assert!(base_in_bounds(self, base, far, src.len()) && weights.len() == self.offsets.len() * MR && bias.len() == MR, "tile out of bounds");
        match self.isa {
            // SAFETY: the CPU runs the instruction set (`Isa::available`, FMA checked in `new`), and
            // the reads are in bounds (asserted above).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::tile_avx2(weights, bias, src.as_ptr().add(base), &self.offsets, out) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { neon::tile(weights, bias, src.as_ptr().add(base), &self.offsets, out) },
            _ => tile_portable(weights, bias, &src[base..], &self.offsets, out),
        }
    }
}

/// `buffer[a.0..a.0 + a.1]` and `buffer[b.0..b.0 + b.1]`, two runs that do not overlap, both
/// mutable.
fn two_runs(buffer: &mut [f32], a: (usize, usize), b: (usize, usize)) -> (&mut [f32], &mut [f32]) {
    if a.0 < b.0 {
        let (low, high) = buffer.split_at_mut(b.0);
        (&mut low[a.0..][..a.1], &mut high[..b.1])
    } else {
        let (low, high) = buffer.split_at_mut(a.0);
        (&mut high[..a.1], &mut low[b.0..][..b.1])
    }
}

/// The logistic function, `1 / (1 + e^-v)`, in place.
pub fn logistic(v: &mut [f32]) {
    v.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
}

/// Every read of a microkernel from `base` lies within a buffer of `len`: below base + reach + NB
/// <= far <= len.
fn base_in_bounds(kernel: &FConvKernel, base: usize, far: usize, len: usize) -> bool {
    base + kernel.reach + NB <= far && far <= len
}

/// `activation` on a tile in place (`scaled`: room for Swish's sigmoid).
fn activate(activation: Activation, tile: &mut [f32; MR * NB], scaled: &mut [f32; MR * NB], sigmoid: &mut dyn FnMut(&mut [f32])) {
    match activation {
        Activation::None => {}
        Activation::Relu => vector::relu(tile),
        // tract's aarch64 sigmoid in registers, to the bit.
        #[cfg(target_arch = "aarch64")]
        Activation::Swish { beta } => {
            let _ = (scaled, sigmoid);
            vector::swish(tile, beta);
        }
        #[cfg(not(target_arch = "aarch64"))]
        Activation::Swish { beta } => {
            vector::scaled(scaled, tile, beta);
            sigmoid(scaled);
            vector::mul(tile, scaled);
        }
    }
}

impl ByChannels {
    fn new(kernel: &FConvKernel, weights: &[f32], bias: &[f32]) -> ByChannels {
        let (k, out) = (kernel.offsets.len(), kernel.out_channels);
        let tiles = out.div_ceil(CR);
        let mut lines = Lines(vec![Line([0.0; 16]); tiles * k * CR / 16]);
        let packed = lines.as_mut_slice();
        let mut packed_bias = vec![0f32; tiles * CR];
        for o in 0..out {
            let (tile, r) = (o / CR, o % CR);
            for (i, &w) in weights[o * k..][..k].iter().enumerate() {
                packed[(tile * k + i) * CR + r] = w;
            }
            packed_bias[o] = bias[if bias.len() == 1 { 0 } else { o }];
        }
        let [oh, ow] = kernel.geometry.output;
        let pixels: Vec<usize> = (0..oh).flat_map(|oy| (0..ow).map(move |ox| oy * kernel.phase[1] + ox)).collect();
        let groups = super::even_groups(pixels.len(), CP).collect();
        ByChannels { weights: lines, bias: packed_bias, pixels, groups }
    }
}

/// Values on whole 64-byte cache lines.
#[derive(Debug, Clone)]
struct Lines(Vec<Line>);

#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
struct Line([f32; 16]);

// SAFETY: sixteen f32, 64 bytes at an alignment of 64: no padding, and any bits are valid.
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above.
unsafe impl bytemuck::Pod for Line {}

impl Lines {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn as_slice(&self) -> &[f32] {
        bytemuck::cast_slice(&self.0)
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        bytemuck::cast_slice_mut(&mut self.0)
    }
}

/// A tile's values, aligned for the SIMD kernels an activation runs on it (tract-linalg's take
/// slices on 64 bytes without a detour through a scratch buffer).
#[repr(C, align(64))]
struct Tile([f32; MR * NB + NB]);

/// The runs of a block of `n` computed pixels from `first` (row pitch `pitch`) that are outputs (rows
/// of `ow`): `(pixel in the block, output pixel, length)`.
fn runs(first: usize, n: usize, pitch: usize, ow: usize) -> Vec<(usize, usize, usize)> {
    let mut runs = Vec::new();
    let mut j = 0;
    while j < n {
        let q = first + j;
        let (oy, ox) = (q / pitch, q % pitch);
        let run = (pitch - ox).min(n - j);
        if ox < ow {
            runs.push((j, oy * ow + ox, (ow - ox).min(run)));
        }
        j += run;
    }
    runs
}

/// The reference microkernel.
fn tile_portable(weights: &[f32], bias: &[f32], src: &[f32], offsets: &[usize], out: &mut [f32; MR * NB]) {
    let mut acc = [[0f32; NB]; MR];
    for (a, &b) in acc.iter_mut().zip(bias) {
        a.fill(b);
    }
    for (w, &offset) in weights.chunks_exact(MR).zip(offsets) {
        let x: &[f32; NB] = src[offset..][..NB].try_into().expect("NB values");
        for (a, &w) in acc.iter_mut().zip(w) {
            a.iter_mut().zip(x).for_each(|(a, &x)| *a += w * x);
        }
    }
    for (o, a) in out.chunks_exact_mut(NB).zip(&acc) {
        o.copy_from_slice(a);
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::{Activation, CR, MR, NB};
    use std::arch::x86_64::*;

    /// tract-linalg 0.23.9's AVX-512 sigmoid (`avx512_sigmoid_f32`, which tract's `Sigmoid` runs
    /// where AVX-512F is) in registers, operation for operation: its clamp to [-14.5, 14.5], its
    /// rational approximation's coefficients and its order of multiplies, FMAs and the division,
    /// so that a fused Swish gives tract's bit for bit. (tract's kernel also sets DAZ, which
    /// changes no result: a denormal anywhere in it is lost in the final `+ 0.5`.)
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn sigmoid(v: __m512) -> __m512 {
        const ALPHA: [f32; 5] = [4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05, 8.51377133304701e-03, 2.48287947061529e-01];
        const BETA: [f32; 6] = [6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06, 1.70198817374094e-03, 1.16817656904453e-01, 9.93151921023180e-01];
        // max then min answer their second operand for NaN, as tract's vmaxps and vminps do.
        let x = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-14.5)), _mm512_set1_ps(14.5));
        let x2 = _mm512_mul_ps(x, x);
        let p = ALPHA[1..].iter().fold(_mm512_set1_ps(ALPHA[0]), |p, &a| _mm512_fmadd_ps(p, x2, _mm512_set1_ps(a)));
        let q = BETA[1..].iter().fold(_mm512_set1_ps(BETA[0]), |q, &b| _mm512_fmadd_ps(q, x2, _mm512_set1_ps(b)));
        _mm512_add_ps(_mm512_div_ps(_mm512_mul_ps(x, p), q), _mm512_set1_ps(0.5))
    }

    /// `$body` for each `$i` below `$count` (at most 8), written out: no loop for LLVM to keep.
    macro_rules! unrolled {
        ($count:expr, |$i:ident| $body:expr) => {{
            const { assert!($count <= 8, "unrolled! runs up to 8 times") };
            unrolled!(@ $count, $i, $body, 0 1 2 3 4 5 6 7)
        }};
        (@ $count:expr, $i:ident, $body:expr, $($k:literal)*) => {{
            $(
                if $k < $count {
                    let $i: usize = $k;
                    $body;
                }
            )*
        }};
    }

    /// `activation` on a tile's accumulators in registers (Swish's sigmoid: [`sigmoid`]).
    ///
    /// # Safety
    /// AVX-512F. (Always inlined, so without a target feature of its own, which Rust does not
    /// allow on an always-inlined function: it is compiled with its caller's, and a call left
    /// out of line passes the accumulators through memory.)
    #[inline(always)]
    pub(in crate::kernels) unsafe fn activate_zmm<const N: usize>(acc: &mut [[__m512; 2]; N], activation: Activation) {
        match activation {
            Activation::None => {}
            // Unrolled by hand: over `flatten()`, or an indexed loop around Swish's sigmoid, LLVM
            // kept a loop through memory and the accumulators went to the stack around it (a
            // fifth of the stem's time).
            // SAFETY (both arms): AVX-512F is here (this function's contract).
            Activation::Relu => unrolled!(N, |i| unsafe {
                // max(a, 0) answers the second operand, 0, for -0.0 and NaN.
                acc[i][0] = _mm512_max_ps(acc[i][0], _mm512_setzero_ps());
                acc[i][1] = _mm512_max_ps(acc[i][1], _mm512_setzero_ps());
            }),
            Activation::Swish { beta } => unsafe {
                let beta = _mm512_set1_ps(beta);
                unrolled!(N, |i| {
                    acc[i][0] = _mm512_mul_ps(acc[i][0], sigmoid(_mm512_mul_ps(acc[i][0], beta)));
                    acc[i][1] = _mm512_mul_ps(acc[i][1], sigmoid(_mm512_mul_ps(acc[i][1], beta)));
                });
            },
        }
    }

    /// Splits an image into phases: for each piece and each channel c, the piece's masked lanes
    /// from `x + c * image + p.src` to `buffer + c * plane + p.dst[..]` (see [`super::Piece`]),
    /// at `step` 1 or 2; pieces outside and channels inside, so each piece's masks are set once.
    ///
    /// # Safety
    /// AVX-512F; every piece of every channel within `x` and `buffer`; `step` 1 or 2.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn split_avx512(x: *const f32, buffer: *mut f32, pieces: &[super::Piece], channels: usize, image: usize, plane: usize, step: usize) {
        let evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        let odds = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
        for p in pieces {
            let (mut src, mut even, mut odd) = (x.wrapping_add(p.src), buffer.wrapping_add(p.dst[0]), buffer.wrapping_add(p.dst[1]));
            let (low, high) = (p.load as u16, (p.load >> 16) as u16);
            for _ in 0..channels {
                // SAFETY: the loads read (masked) within the piece's values, the stores write its
                // destinations (the caller's contract); masked-off lanes are not accessed.
                unsafe {
                    let a = _mm512_maskz_loadu_ps(low, src);
                    if step == 1 {
                        _mm512_mask_storeu_ps(even, p.store[0], a);
                    } else {
                        let b = _mm512_maskz_loadu_ps(high, src.wrapping_add(16));
                        _mm512_mask_storeu_ps(even, p.store[0], _mm512_permutex2var_ps(a, evens, b));
                        _mm512_mask_storeu_ps(odd, p.store[1], _mm512_permutex2var_ps(a, odds, b));
                    }
                }
                (src, even, odd) = (src.wrapping_add(image), even.wrapping_add(plane), odd.wrapping_add(plane));
            }
        }
    }

    /// MR rows by two zmm of pixels: 16 accumulators, two loads and MR broadcasts per `k`; then
    /// the activation in registers and masked stores of each run straight to the rows' planes: no
    /// tile in between.
    ///
    /// # Safety
    /// AVX-512F and FMA; `src + offsets[k] + NB` within one allocation for every `k`; for each run
    /// `(j, at, len)` and each of the first `n` row pointers `p`, `p + at .. p + at + len` writable
    /// (j + len <= NB).
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile_avx512(
        weights: &[f32],
        bias: &[f32],
        src: *const f32,
        offsets: &[usize],
        activation: Activation,
        rows: &[*mut f32; MR],
        n: usize,
        runs: &[(usize, usize, usize)],
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for (a, &b) in acc.iter_mut().zip(bias) {
            *a = [_mm512_set1_ps(b); 2];
        }
        for (w, &offset) in weights.chunks_exact(MR).zip(offsets) {
            // SAFETY: in bounds by the caller's contract.
            let (x0, x1) = unsafe { (_mm512_loadu_ps(src.add(offset)), _mm512_loadu_ps(src.add(offset + 16))) };
            for (a, &w) in acc.iter_mut().zip(w) {
                let w = _mm512_set1_ps(w);
                a[0] = _mm512_fmadd_ps(w, x0, a[0]);
                a[1] = _mm512_fmadd_ps(w, x1, a[1]);
            }
        }
        // SAFETY: AVX-512F is here (this function's contract).
        unsafe { activate_zmm(&mut acc, activation) };
        // Runs outside, rows inside (a fixed count, unrolled): the accumulators stay in registers.
        for &(j, at, len) in runs {
            // Lanes j .. j + len of each pair, to row[at ..]: the pair's lane 0 lands at at - j.
            let mask = ((1u64 << len) - 1) << j;
            for (r, (a, &row)) in acc.iter().zip(rows).enumerate() {
                if r < n {
                    let base = row.wrapping_add(at).wrapping_sub(j);
                    // SAFETY: the masked stores write only the run's lanes, in bounds by the
                    // caller's contract; masked-off lanes are not accessed.
                    unsafe {
                        _mm512_mask_storeu_ps(base, mask as u16, a[0]);
                        _mm512_mask_storeu_ps(base.wrapping_add(16), (mask >> 16) as u16, a[1]);
                    }
                }
            }
        }
    }

    /// A tile of [`CR`] channels by N <= [`CP`] pixels: 2N accumulators, two weight loads and N
    /// broadcasts per `k`; the activation in registers, then the tile transposed and stored to
    /// `out + c * plane + p` (`p < N`, `c < channels`).
    ///
    /// # Safety
    /// AVX-512F and FMA; `pixels` holds N values; `src + pixels[p] + offsets[k]` within one
    /// allocation; those writes within another; `weights` holds `offsets.len() * CR` values and
    /// `bias` CR.
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn channels_avx512<const N: usize>(
        weights: &[f32],
        bias: &[f32],
        src: *const f32,
        offsets: &[usize],
        pixels: &[usize],
        activation: Activation,
        out: *mut f32,
        plane: usize,
        channels: usize,
    ) {
        // SAFETY: CR = 32 values of bias; the reads are in bounds by the caller's contract.
        let b = unsafe { [_mm512_loadu_ps(bias.as_ptr()), _mm512_loadu_ps(bias.as_ptr().add(16))] };
        let mut acc = [b; N];
        let bases: [*const f32; N] = std::array::from_fn(|p| src.wrapping_add(pixels[p]));
        for (w, &offset) in weights.chunks_exact(CR).zip(offsets) {
            // SAFETY: in bounds by the caller's contract.
            unsafe {
                let (w0, w1) = (_mm512_loadu_ps(w.as_ptr()), _mm512_loadu_ps(w.as_ptr().add(16)));
                // The weights 16 `k` ahead, into L1: in a plan the large layers' weights come
                // from L3 (fashion-resnet s2.conv2, chained: 41-45 -> 35-36 us). A prefetch
                // past the end of the weights touches nothing.
                let ahead = w.as_ptr().wrapping_add(16 * CR);
                _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16) as *const i8);
                for (a, base) in acc.iter_mut().zip(bases) {
                    let x = _mm512_set1_ps(*base.add(offset));
                    a[0] = _mm512_fmadd_ps(w0, x, a[0]);
                    a[1] = _mm512_fmadd_ps(w1, x, a[1]);
                }
            }
        }
        // SAFETY: AVX-512F is here (this function's contract).
        unsafe { activate_zmm(&mut acc, activation) };
        // Each half's 16 channels by N pixels, transposed in registers: a channel's N pixels are
        // consecutive in its plane, one masked store each (with 2N scatters instead, s1.conv1 took 8%
        // longer alone).
        let pixels = ((1u32 << N) - 1) as u16;
        for half in 0..channels.div_ceil(16) {
            let rows = std::array::from_fn(|p| if p < N { acc[p][half] } else { _mm512_setzero_ps() });
            // SAFETY: AVX-512F is here (this function's contract).
            let by_channel = unsafe { transpose_8x16(rows) };
            for (j, v) in by_channel.iter().enumerate() {
                let c = 16 * half + 2 * j;
                // SAFETY: the masked stores write pixels below N of channels below `channels`, in
                // bounds by the caller's contract; masked-off lanes are not accessed (the second
                // store's lanes 8.. land on channel c + 1's pixels 0..).
                unsafe {
                    if c < channels {
                        _mm512_mask_storeu_ps(out.wrapping_add(c * plane), pixels, *v);
                    }
                    if c + 1 < channels {
                        _mm512_mask_storeu_ps(out.wrapping_add((c + 1) * plane).wrapping_sub(8), pixels << 8, *v);
                    }
                }
            }
        }
    }

    /// The lane indices of [`transpose_8x16`]'s three steps, `[step][which of the pair]`.
    static TRANSPOSE: [[[i32; 16]; 2]; 3] = [
        [transpose_index(0, false), transpose_index(0, true)],
        [transpose_index(1, false), transpose_index(1, true)],
        [transpose_index(2, false), transpose_index(2, true)],
    ];

    /// For `_mm512_permutex2var_ps(x, index, y)` (lanes 16.. are y's): steps 0 and 1 swap a bit of
    /// the register number (pixel bit 2, then 1) with a lane bit (channel bit 3, then 2), from the
    /// pair of registers differing in it (`upper`: the one with the bit set). Step 2 swaps pixel bit
    /// 0 with channel bit 1 and puts the lanes in their final order: channel bit 0, then the pixel.
    const fn transpose_index(step: usize, upper: bool) -> [i32; 16] {
        let mut index = [0i32; 16];
        let mut l = 0;
        while l < 16 {
            let from = if step < 2 {
                let bit = 8 >> step;
                match (l & bit == 0, upper) {
                    (true, false) => l,
                    (false, false) => 16 + l - bit,
                    (true, true) => l + bit,
                    (false, true) => 16 + l,
                }
            } else {
                // Lane l holds channel bit 0 = l >> 3 and pixel p = l & 7; before this step its
                // value is in the register of p's bit 0, at lane (p2 p1 c1 c0).
                let (c0, p) = (l >> 3, l & 7);
                let lane = ((p >> 1) << 2) | ((upper as usize) << 1) | c0;
                if p & 1 == 0 { lane } else { 16 + lane }
            };
            index[l] = from as i32;
            l += 1;
        }
        index
    }

    /// 8 rows (pixels) of 16 lanes (channels) into 8 registers, register j holding channel 2j's
    /// 8 pixels in lanes 0..8 and channel 2j + 1's in lanes 8..16: three steps of 8 two-register
    /// permutes.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(in crate::kernels) unsafe fn transpose_8x16(mut rows: [__m512; 8]) -> [__m512; 8] {
        for (step, [lower, upper]) in TRANSPOSE.iter().enumerate() {
            // SAFETY: 16 values each.
            let (lower, upper) = unsafe { (_mm512_loadu_si512(lower.as_ptr().cast()), _mm512_loadu_si512(upper.as_ptr().cast())) };
            let bit = 4 >> step;
            for i in (0..8).filter(|i| i & bit == 0) {
                let (x, y) = (rows[i], rows[i | bit]);
                rows[i] = _mm512_permutex2var_ps(x, lower, y);
                rows[i | bit] = _mm512_permutex2var_ps(x, upper, y);
            }
        }
        rows
    }

    /// Four passes, each of half the rows by half the pixels (two ymm): 8 accumulators.
    ///
    /// # Safety
    /// AVX2 and FMA; `src + offsets[k] + NB` within one allocation for every `k`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile_avx2(weights: &[f32], bias: &[f32], src: *const f32, offsets: &[usize], out: &mut [f32; MR * NB]) {
        const ROWS: usize = MR / 2;
        for rows in 0..2 {
            for half in 0..2 {
                let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
                for (a, &b) in acc.iter_mut().zip(&bias[rows * ROWS..]) {
                    *a = [_mm256_set1_ps(b); 2];
                }
                for (w, &offset) in weights.chunks_exact(MR).zip(offsets) {
                    // SAFETY: in bounds by the caller's contract.
                    let (x0, x1) = unsafe {
                        let s = src.add(offset + half * 16);
                        (_mm256_loadu_ps(s), _mm256_loadu_ps(s.add(8)))
                    };
                    for (a, &w) in acc.iter_mut().zip(&w[rows * ROWS..]) {
                        let w = _mm256_set1_ps(w);
                        a[0] = _mm256_fmadd_ps(w, x0, a[0]);
                        a[1] = _mm256_fmadd_ps(w, x1, a[1]);
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    let o = &mut out[(rows * ROWS + r) * NB + half * 16..][..16];
                    // SAFETY: 16 values.
                    unsafe {
                        _mm256_storeu_ps(o.as_mut_ptr(), a[0]);
                        _mm256_storeu_ps(o.as_mut_ptr().add(8), a[1]);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{CR, MR, NB};
    use std::arch::aarch64::*;

    /// Three passes of MR rows by 12, 12 and 8 pixels (three or two q registers): up to 24
    /// accumulators, three pixel loads, two weight loads and 24 by-lane FMLAs per `k` (passes of 8
    /// took 4 weight loads and 4 loops per 64 FMLAs instead of 3).
    ///
    /// # Safety
    /// `src + offsets[k] + NB` within one allocation for every `k`.
    #[target_feature(enable = "neon")]
    pub unsafe fn tile(weights: &[f32], bias: &[f32], src: *const f32, offsets: &[usize], out: &mut [f32; MR * NB]) {
        const { assert!(NB == 32) };
        // SAFETY: pixels 0..12, 12..24 and 24..32 of each run: in bounds by the caller's contract.
        unsafe {
            pass::<3>(weights, bias, src, offsets, out, 0);
            pass::<3>(weights, bias, src, offsets, out, 12);
            pass::<2>(weights, bias, src, offsets, out, 24);
        }
    }

    /// A tile of [`CR`] = 16 channels (four q registers of weights per `k`) by N <= [`CP`]
    /// pixels, each input value broadcast: `values[p][c] = bias[c] + sum over k of
    /// weights[k][c] * src[pixels[p] + offsets[k]]`, in `k`'s order as the pixel tile's sums.
    ///
    /// # Safety
    /// `pixels` holds N values; `src + pixels[p] + offsets[k]` within one allocation; `weights`
    /// holds `offsets.len() * CR` values, `bias` CR and `values` N * CR.
    #[target_feature(enable = "neon")]
    pub unsafe fn channels<const N: usize>(weights: &[f32], bias: &[f32], src: *const f32, offsets: &[usize], pixels: &[usize], values: &mut [f32]) {
        const { assert!(CR == 16) };
        // SAFETY: CR values of bias.
        let b: [float32x4_t; 4] = std::array::from_fn(|i| unsafe { vld1q_f32(bias.as_ptr().add(4 * i)) });
        let mut acc = [b; N];
        let bases: [*const f32; N] = std::array::from_fn(|p| src.wrapping_add(pixels[p]));
        for (w, &offset) in weights.chunks_exact(CR).zip(offsets) {
            // SAFETY: in bounds by the caller's contract.
            unsafe {
                let w: [float32x4_t; 4] = std::array::from_fn(|i| vld1q_f32(w.as_ptr().add(4 * i)));
                for (a, base) in acc.iter_mut().zip(bases) {
                    let x = *base.add(offset);
                    for (a, w) in a.iter_mut().zip(w) {
                        *a = vfmaq_n_f32(*a, w, x);
                    }
                }
            }
        }
        assert!(values.len() >= N * CR, "tile out of bounds");
        for (p, a) in acc.iter().enumerate() {
            for (i, a) in a.iter().enumerate() {
                // SAFETY: 4 values at p * CR + 4i < N * CR (asserted).
                unsafe { vst1q_f32(values.as_mut_ptr().add(p * CR + 4 * i), *a) };
            }
        }
    }

    /// MR rows by 4Q pixels from pixel `first`.
    ///
    /// # Safety
    /// `src + offsets[k] + first + 4Q` within one allocation for every `k`; first + 4Q <= NB.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn pass<const Q: usize>(weights: &[f32], bias: &[f32], src: *const f32, offsets: &[usize], out: &mut [f32; MR * NB], first: usize) {
        let mut acc = [[vdupq_n_f32(0.0); Q]; MR];
        for (a, &b) in acc.iter_mut().zip(bias) {
            *a = [vdupq_n_f32(b); Q];
        }
        for (w, &offset) in weights.chunks_exact(MR).zip(offsets) {
            // SAFETY: in bounds by the caller's contract; `w` holds MR = 8 values.
            let (x, w0, w1) = unsafe {
                let s = src.add(offset + first);
                let x: [float32x4_t; Q] = std::array::from_fn(|q| vld1q_f32(s.add(4 * q)));
                (x, vld1q_f32(w.as_ptr()), vld1q_f32(w.as_ptr().add(4)))
            };
            // Row r: lane r % 4 of w0 or w1 (a macro, so the intrinsics keep this function's features).
            macro_rules! rows {
                ($($r:literal $w:ident $lane:literal),*) => {$(
                    for (a, x) in acc[$r].iter_mut().zip(x) {
                        *a = vfmaq_laneq_f32::<$lane>(*a, x, $w);
                    }
                )*};
            }
            rows!(0 w0 0, 1 w0 1, 2 w0 2, 3 w0 3, 4 w1 0, 5 w1 1, 6 w1 2, 7 w1 3);
        }
        for (r, a) in acc.iter().enumerate() {
            let o = &mut out[r * NB + first..][..4 * Q];
            for (q, a) in a.iter().enumerate() {
                // SAFETY: 4 values at 4q < 4Q.
                unsafe { vst1q_f32(o.as_mut_ptr().add(4 * q), *a) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The convolution by its definition, in f64.
    fn reference(g: &Geometry, c: usize, weights: &[f32], bias: &[f32], x: &[f32]) -> Vec<f64> {
        let ([h, w], [kh, kw], [oh, ow]) = (g.input, g.kernel, g.output);
        let out = weights.len() / (c * kh * kw);
        let mut y = vec![0f64; out * oh * ow];
        for o in 0..out {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias[if bias.len() == 1 { 0 } else { o }] as f64;
                    for i in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize - g.pad_before[0] as isize;
                                let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize - g.pad_before[1] as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    s += weights[((o * c + i) * kh + ky) * kw + kx] as f64 * x[(i * h + iy as usize) * w + ix as usize] as f64;
                                }
                            }
                        }
                    }
                    y[(o * oh + oy) * ow + ox] = s;
                }
            }
        }
        y
    }

    /// Each image of `y` against the definition on `x`'s, then `activation`: within f32 rounding of
    /// a sum of `K` products (relative to the sum of their magnitudes).
    #[allow(clippy::too_many_arguments)]
    fn check(g: &Geometry, c: usize, weights: &[f32], bias: &[f32], activation: Activation, x: &[f32], y: &[f32], what: &str) -> Result<(), TestCaseError> {
        let ([h, w], [oh, ow]) = (g.input, g.output);
        let k = c * g.kernel[0] * g.kernel[1];
        let out = weights.len() / k;
        let abs_weights: Vec<f32> = weights.iter().map(|v| v.abs()).collect();
        for (b, (x, y)) in x.chunks_exact(c * h * w).zip(y.chunks_exact(out * oh * ow)).enumerate() {
            let want = reference(g, c, weights, bias, x);
            let abs_x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            let scale = reference(g, c, &abs_weights, &[1.0], &abs_x);
            for (i, ((&got, &sum), &scale)) in y.iter().zip(&want).zip(&scale).enumerate() {
                // The activations' slopes are at most 1.1: the sum's error passes on scaled by
                // that, plus the activation's own f32 rounding.
                let want = match activation {
                    Activation::None => sum,
                    Activation::Relu => sum.max(0.0),
                    Activation::Swish { beta } => sum / (1.0 + (-(beta as f64) * sum).exp()),
                };
                prop_assert!((got as f64 - want).abs() <= 1.1e-6 * (k as f64 + 1.0) * scale + 1e-6 * want.abs(), "{what} {activation:?} image {b} value {i}: {got} vs {want}");
            }
        }
        Ok(())
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    proptest! {
        /// Every instruction set against the definition, on random geometries: within f32 rounding
        /// of a sum of `K` products (relative to the sum of their magnitudes).
        #[test]
        fn every_isa_computes_the_convolution(
            c in 1usize..6, out in 1usize..40, h in 1usize..12, w in 1usize..40,
            kernel in [1usize..4, 1usize..4], stride in [1usize..4, 1usize..4], dilation in [1usize..3, 1usize..3],
            pad_before in [0usize..3, 0usize..3], pad_after in [0usize..3, 0usize..3],
            batch in 1usize..3, one_bias in any::<bool>(), seed in any::<u64>(),
            activation in prop_oneof![Just(Activation::None), Just(Activation::Relu), (0.25f32..3.0).prop_map(|beta| Activation::Swish { beta })],
        ) {
            let padded = [h + pad_before[0] + pad_after[0], w + pad_before[1] + pad_after[1]];
            let span = [0, 1].map(|a| (kernel[a] - 1) * dilation[a] + 1);
            prop_assume!(padded[0] >= span[0] && padded[1] >= span[1]);
            let output = [0, 1].map(|a| (padded[a] - span[a]) / stride[a] + 1);
            let g = Geometry { input: [h, w], kernel, stride, dilation, pad_before, pad_after, output };
            let k = c * kernel[0] * kernel[1];
            let weights = values(out * k, seed);
            let bias = values(if one_bias { 1 } else { out }, seed ^ 1);
            let x = values(batch * c * h * w, seed ^ 2);
            for isa in Isa::available() {
                for kernel in FConvKernel::new(g, c, &weights, &bias, isa).unwrap().with_activation(activation).layouts(&weights, &bias) {
                let layout = if kernel.winograd.is_some() { "winograd" } else if kernel.by_channels.is_some() { "channels" } else { "pixels" };
                let mut y = vec![f32::NAN; batch * out * output[0] * output[1]];
                // The buffer as a plan reuses it: after another image.
                let mut buffer = kernel.scratch();
                kernel.run_with(&values(x.len(), seed ^ 3), batch, &mut y, &mut buffer, &mut logistic).unwrap();
                kernel.run_with(&x, batch, &mut y, &mut buffer, &mut logistic).unwrap();
                check(&g, c, &weights, &bias, activation, &x, &y, &format!("{isa:?} {layout}"))?;
                }
            }
        }
    }

    proptest! {
        /// F(2x2, 3x3) against the definition on random 3x3 stride-1 geometries (any padding,
        /// odd sizes, channel counts off the vector and tile widths), within the bound above.
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        #[test]
        fn winograd_computes_the_convolution(
            c in 1usize..40, out in 1usize..80, h in 1usize..18, w in 1usize..18,
            pad_before in [0usize..3, 0usize..3], pad_after in [0usize..3, 0usize..3],
            batch in 1usize..3, one_bias in any::<bool>(), seed in any::<u64>(),
            activation in prop_oneof![Just(Activation::None), Just(Activation::Relu), (0.25f32..3.0).prop_map(|beta| Activation::Swish { beta })],
        ) {
            let Some(isa) = Isa::available().into_iter().rfind(|&isa| Winograd::runs_on(isa)) else {
                return Ok(());
            };
            let padded = [h + pad_before[0] + pad_after[0], w + pad_before[1] + pad_after[1]];
            prop_assume!(padded[0] >= 3 && padded[1] >= 3);
            let output = padded.map(|p| p - 2);
            let g = Geometry { input: [h, w], kernel: [3, 3], stride: [1, 1], dilation: [1, 1], pad_before, pad_after, output };
            let k = c * 9;
            let weights = values(out * k, seed);
            let bias = values(if one_bias { 1 } else { out }, seed ^ 1);
            let x = values(batch * c * h * w, seed ^ 2);
            let kernel = FConvKernel::new(g, c, &weights, &bias, isa).unwrap().with_activation(activation);
            let kernel = FConvKernel { winograd: Some(Winograd::new(&g, c, out, &weights, &bias)), ..kernel };
            let mut y = vec![f32::NAN; batch * out * output[0] * output[1]];
            // The scratch as a plan leaves it: after another image (and other layers, elsewhere).
            kernel.run(&values(x.len(), seed ^ 3), batch, &mut y).unwrap();
            kernel.run(&x, batch, &mut y).unwrap();
            check(&g, c, &weights, &bias, activation, &x, &y, "winograd")?;
        }
    }

    proptest! {
        /// A strided shortcut on the phases of the 3x3 convolution beside it (`run_pair`) gives,
        /// like that convolution, what it gives alone, bit for bit: the same sums in the same order.
        #[test]
        fn a_shortcut_on_anothers_phases_is_the_shortcut(
            c in 1usize..12, out in 1usize..40, out2 in 1usize..40, h in 1usize..16, w in 1usize..16,
            stride in 1usize..4, batch in 1usize..3, seed in any::<u64>(),
        ) {
            let output = [(h - 1) / stride + 1, (w - 1) / stride + 1];
            let g = Geometry { input: [h, w], kernel: [3, 3], stride: [stride; 2], dilation: [1, 1], pad_before: [1, 1], pad_after: [1, 1], output };
            let g2 = Geometry { kernel: [1, 1], pad_before: [0, 0], pad_after: [0, 0], ..g };
            let (weights, bias) = (values(out * c * 9, seed), values(out, seed ^ 1));
            let (weights2, bias2) = (values(out2 * c, seed ^ 2), values(out2, seed ^ 3));
            let x = values(batch * c * h * w, seed ^ 4);
            for isa in Isa::available() {
                let first = FConvKernel::new(g, c, &weights, &bias, isa).unwrap().with_activation(Activation::Relu);
                let alone = FConvKernel::new(g2, c, &weights2, &bias2, isa).unwrap();
                let Some(shared) = alone.sharing_phases(&first) else {
                    prop_assert!(first.is_winograd(), "{isa:?}: no pair for a direct 3x3 convolution");
                    continue;
                };
                let plane = output[0] * output[1];
                let (mut y, mut y2) = (vec![f32::NAN; batch * out * plane], vec![f32::NAN; batch * out2 * plane]);
                first.run_pair(&shared, &x, batch, &mut y, &mut y2, &mut Vec::new(), &mut logistic).unwrap();
                let (mut want, mut want2) = (vec![0f32; y.len()], vec![0f32; y2.len()]);
                first.run(&x, batch, &mut want).unwrap();
                alone.run(&x, batch, &mut want2).unwrap();
                prop_assert!(y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa:?}: the first convolution");
                prop_assert!(y2.iter().zip(&want2).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa:?}: the shortcut");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// A convolution fed another's output rows as they are computed (`run_fed`), alone and with
        /// a shortcut on its phases, gives what it gives on that output written whole, to the bit.
        #[test]
        fn a_convolution_fed_rows_as_they_come_is_the_convolution(
            c in 1usize..4, mid in 1usize..20, out in 1usize..40, out2 in 1usize..40, side in prop::sample::select(vec![6usize, 14, 28, 30]),
            stride in 1usize..3, batch in 1usize..3, relu in any::<bool>(), seed in any::<u64>(),
        ) {
            let output = (side - 1) / stride + 1;
            let g0 = Geometry { input: [side; 2], kernel: [3, 3], stride: [1, 1], dilation: [1, 1], pad_before: [1, 1], pad_after: [1, 1], output: [side; 2] };
            let g = Geometry { input: [side; 2], stride: [stride; 2], output: [output; 2], ..g0 };
            let g2 = Geometry { kernel: [1, 1], pad_before: [0, 0], pad_after: [0, 0], ..g };
            let (weights0, bias0) = (values(mid * c * 9, seed), values(mid, seed ^ 5));
            let (weights, bias) = (values(out * mid * 9, seed ^ 6), values(out, seed ^ 1));
            let (weights2, bias2) = (values(out2 * mid, seed ^ 2), values(out2, seed ^ 3));
            let x = values(batch * c * side * side, seed ^ 4);
            let mut fed = 0;
            for isa in Isa::available() {
                let activation = if relu { Activation::Relu } else { Activation::None };
                let source = FConvKernel::new(g0, c, &weights0, &bias0, isa).unwrap().with_activation(activation);
                let first = FConvKernel::new(g, mid, &weights, &bias, isa).unwrap().with_activation(Activation::Relu);
                let shared = FConvKernel::new(g2, mid, &weights2, &bias2, isa).unwrap().sharing_phases(&first);
                if !source.can_feed(&first) {
                    let mut y = vec![0f32; batch * out * output * output];
                    prop_assert_eq!(first.run_fed(&source, None, &x, batch, &mut y, &mut [], &mut Default::default(), &mut logistic), Err(ConvKernelError::CannotFeed));
                    continue;
                }
                fed += 1;
                let mut between = vec![0f32; batch * mid * side * side];
                source.run(&x, batch, &mut between).unwrap();
                let plane = output * output;
                for second in [None, shared.as_ref()] {
                    let out2 = second.map_or(0, |_| out2);
                    let (mut y, mut y2) = (vec![f32::NAN; batch * out * plane], vec![f32::NAN; batch * out2 * plane]);
                    let mut buffers = Default::default();
                    // Twice on the same buffers: what the first run leaves changes nothing.
                    for _ in 0..2 {
                        first.run_fed(&source, second, &x, batch, &mut y, &mut y2, &mut buffers, &mut logistic).unwrap();
                    }
                    let (mut want, mut want2) = (vec![0f32; y.len()], vec![0f32; y2.len()]);
                    match second {
                        Some(second) => first.run_pair(second, &between, batch, &mut want, &mut want2, &mut Vec::new(), &mut logistic).unwrap(),
                        None => first.run(&between, batch, &mut want).unwrap(),
                    }
                    prop_assert!(y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{:?}: the fed convolution", isa);
                    prop_assert!(y2.iter().zip(&want2).all(|(a, b)| a.to_bits() == b.to_bits()), "{:?}: the shortcut", isa);
                }
            }
            // A 28x28 image into a stride-2 convolution (fashion-resnet's stem into its first
            // stage) is fed wherever AVX-512 runs.
            #[cfg(target_arch = "x86_64")]
            if side == 28 && stride == 2 && Isa::available().contains(&Isa::Avx512Vnni) {
                prop_assert!(fed > 0, "a 28x28 stem was not fed");
            }
            let _ = fed;
        }
    }

    /// The channels layout's store transpose: register j holds channel 2j's pixels 0..8, then
    /// channel 2j + 1's.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_store_transpose_puts_each_channels_pixels_together() {
        use std::arch::x86_64::*;
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let value = |p: usize, c: usize| (p * 16 + c) as f32;
        let rows: [[f32; 16]; 8] = std::array::from_fn(|p| std::array::from_fn(|c| value(p, c)));
        let mut got = [[0f32; 16]; 8];
        // SAFETY: AVX-512F is here (checked above); 16 values each way.
        unsafe {
            let t = x86::transpose_8x16(std::array::from_fn(|p| _mm512_loadu_ps(rows[p].as_ptr())));
            for (g, t) in got.iter_mut().zip(t) {
                _mm512_storeu_ps(g.as_mut_ptr(), t);
            }
        }
        for (j, lanes) in got.iter().enumerate() {
            let want: [f32; 16] = std::array::from_fn(|l| value(l % 8, 2 * j + l / 8));
            assert_eq!(lanes, &want, "register {j}");
        }
    }

    /// The in-register sigmoid against tract-linalg's AVX-512 kernel, bit for bit, across its
    /// clamp, at zeros of both signs, denormals, infinities and NaN.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_register_sigmoid_is_tracts() {
        use std::arch::x86_64::*;
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut v: Vec<f32> = (-4000..4000).map(|i| i as f32 * 0.0061).collect();
        v.extend([0.0, -0.0, 14.5, -14.5, 14.499999, -14.500001, 1e-40, -1e-40, f32::MIN_POSITIVE, 88.0, -88.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN]);
        v.resize(v.len().div_ceil(16) * 16, 0.5);
        let mut want = v.clone();
        tract_nnef::tract_core::tract_linalg::Func::Sigmoid.ew_f32().unwrap().run(&mut want).unwrap();
        for (x, want) in v.chunks_exact(16).zip(want.chunks_exact(16)) {
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F is here (checked above); 16 values each way.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), x86::sigmoid(_mm512_loadu_ps(x.as_ptr()))) };
            for ((g, w), x) in got.iter().zip(want).zip(x) {
                assert_eq!(g.to_bits(), w.to_bits(), "sigmoid({x:e}): {g:e} against tract's {w:e}");
            }
        }
    }

    #[test]
    fn bad_buffers_are_errors() {
        let g = Geometry { input: [4, 4], kernel: [3, 3], stride: [1, 1], dilation: [1, 1], pad_before: [1, 1], pad_after: [1, 1], output: [4, 4] };
        let kernel = FConvKernel::new(g, 2, &values(3 * 18, 1), &[0.5], Isa::best()).unwrap();
        assert!(matches!(kernel.run(&[0.0; 31], 1, &mut [0.0; 48]), Err(ConvKernelError::Input { .. })));
        assert!(matches!(kernel.run(&[0.0; 32], 1, &mut [0.0; 47]), Err(ConvKernelError::Output { .. })));
        assert!(matches!(FConvKernel::new(g, 2, &values(17, 1), &[0.5], Isa::best()), Err(ConvKernelError::Shapes { .. })));
        assert!(matches!(FConvKernel::new(g, 2, &values(36, 1), &[0.5; 3], Isa::best()), Err(ConvKernelError::Shapes { .. })));
    }
}

//! An int8 2D convolution (dense, pointwise or depthwise) with its requantization, on NCHW tensors.
//!
//! Dense convolutions: the input is copied once into a zero-point-padded channels-last buffer; for
//! each run of [`NR`] output pixels, each pixel's receptive field is then one contiguous copy per
//! kernel row (or, for a pointwise convolution, read in place): no im2col matrix. Weights are packed
//! at plan load in the same (kernel row, kernel column, channel) order, rows padded to [`KU`] bytes.
//! The zero point of the input is folded into the bias (padding holds the zero point, so it adds
//! nothing), and each tile of [`MR`] channels by [`NR`] pixels is requantized as it leaves the
//! microkernel. Depthwise convolutions run channels-last sixteen channels at a time ([`depthwise`]), or
//! per channel plane when they have few channels or a channel multiplier.

use super::depthwise::{self, Depthwise};
use super::layout;
use super::micro::{self, KU, MR, MR_LANES, NR, NR_LANES};

/// Output pixels packed and requantized together (a multiple of [`NR`] and of [`NR_LANES`]).
const BLOCK: usize = 32;
const _: () = assert!(BLOCK.is_multiple_of(NR) && BLOCK.is_multiple_of(NR_LANES));
use super::{Isa, Requant};

/// Packs each pixel's receptive field into a row of `kp` bytes of `packed`: pixel `j`'s top-left input
/// is channels-last pixel `at[j]` of `padded`, its runs of `span` bytes start `rows` bytes from there
/// and follow one another in the row. `packed` holds `at.len()` rows and 16 spare bytes, `padded` ends
/// in 16 spare bytes. Bytes of a row past its runs are left as they are: their weights are zero.
///
/// Kept out of line: inlined into [`QConvKernel::dense_channels`] it ran out of registers.
#[inline(never)]
fn pack(padded: &[i8], at: &[usize], c: usize, rows: &[usize], span: usize, kp: usize, packed: &mut [i8]) {
    let (Some(&far), Some(&last_row)) = (at.iter().max(), rows.iter().max()) else { return };
    let copy = span.max(16);
    // Every read and write below lies inside these bounds (at[j] <= far, each row <= last_row; the
    // writes of a pixel end with its last run).
    assert!(far * c + last_row + copy <= padded.len() && (at.len() - 1) * kp + (rows.len() - 1) * span + copy <= packed.len(), "packing out of bounds");
    let (src, dst) = (padded.as_ptr(), packed.as_mut_ptr());
    for (j, &at) in at.iter().enumerate() {
        // SAFETY: within the bounds asserted above.
        unsafe {
            let (from, to) = (src.add(at * c), dst.add(j * kp));
            for (r, &row) in rows.iter().enumerate() {
                if span < 16 {
                    // One 16-byte copy (a stem's kernel row of 3, 5 or 7 bytes): the excess lands on
                    // the next run or row (written after this one), on the row's zero-weight padding
                    // up to kp, or in the spare bytes.
                    std::ptr::copy_nonoverlapping(from.add(row), to.add(r * span), 16);
                } else {
                    std::ptr::copy_nonoverlapping(from.add(row), to.add(r * span), span);
                }
            }
        }
    }
}

/// How a convolution's input or output tensor lies in memory: channel planes (tract's NCHW), or
/// channels-last (NHWC), which Perch's kernels work in. Between two of Perch's convolutions a
/// channels-last tensor saves the transposes on both sides ([`QConvKernel::with_layouts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    #[default]
    Nchw,
    Nhwc,
}

/// Why a convolution cannot run on these kernels (the plan then keeps tract's own).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvKernelError {
    #[error("groups other than 1 or depthwise ({groups} groups, {channels} input channels) are not supported")]
    Groups { groups: usize, channels: usize },
    #[error("weight -128 found: Perch's int8 kernels take symmetric weights in -127..=127")]
    WeightRange,
    #[error("kernel of {weights} values, {bias} biases and {scales} scales do not match {out} output channels")]
    Shapes { weights: usize, bias: usize, scales: usize, out: usize },
    #[error("zero stride, dilation or kernel size")]
    Geometry,
    #[error("input {got:?} does not match the convolution's {expected:?} (N, C, H, W)")]
    Input { got: Vec<usize>, expected: Vec<usize> },
    #[error("output buffer of {got} values, {expected} needed")]
    Output { got: usize, expected: usize },
    #[error("the first convolution cannot write into the second's phases (FConvKernel::can_feed)")]
    CannotFeed,
}

/// The spatial geometry of a convolution, paddings resolved for its input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Input height and width.
    pub input: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub pad_before: [usize; 2],
    pub pad_after: [usize; 2],
    /// Output height and width.
    pub output: [usize; 2],
}

impl Geometry {
    pub(super) fn padded(&self) -> [usize; 2] {
        [0, 1].map(|a| self.input[a] + self.pad_before[a] + self.pad_after[a])
    }

    pub(super) fn check(&self) -> Result<(), ConvKernelError> {
        let zero = |v: [usize; 2]| v.contains(&0);
        if zero(self.kernel) || zero(self.stride) || zero(self.dilation) {
            return Err(ConvKernelError::Geometry);
        }
        // The last output's receptive field must lie inside the padded input.
        let padded = self.padded();
        for (a, &padded) in padded.iter().enumerate() {
            if self.output[a] > 0 && (self.output[a] - 1) * self.stride[a] + (self.kernel[a] - 1) * self.dilation[a] >= padded {
                return Err(ConvKernelError::Geometry);
            }
        }
        Ok(())
    }
}

/// A packed int8 convolution, ready to run.
#[derive(Debug, Clone)]
pub struct QConvKernel {
    geometry: Geometry,
    in_channels: usize,
    out_channels: usize,
    depthwise: bool,
    /// Depthwise with one output per input channel, or dense with one input channel, and enough
    /// channels for the channels-last kernel ([`depthwise`]); the other depthwise convolutions run
    /// per channel plane.
    channels_last: Option<Depthwise>,
    /// Reduction length of the dense form (kernel height x width x input channels), and padded.
    k: usize,
    kp: usize,
    /// Dense: `[out_channels + MR][kp]`, zero-padded, or for a lane kernel ([`micro::lane_tile`]) the
    /// same repacked by [`micro::pack_lanes`]. Depthwise: `[channels][kh * kw]`.
    weights: Vec<i8>,
    /// `weights` are packed for the lane kernel of `isa` (and, where it reads unsigned bytes, the
    /// padded input is stored `x ^ 0x80` and `bias` is less `128 * sum(w)`).
    lanes: bool,
    /// The int32 bias minus the input zero point times the channel's weight sum (and less `128 *
    /// sum(w)` for an unsigned-reading lane kernel, as `lanes` says).
    bias: Vec<i32>,
    requant: Requant,
    x_zero_point: i8,
    y_zero_point: i8,
    isa: Isa,
    /// XORed into every byte of the padded input: 0x80 where the kernel reads unsigned bytes
    /// (VPDPBUSD: the lane kernel, and the depthwise column kernel), else 0.
    flip: i8,
    input_layout: Layout,
    output_layout: Layout,
}

impl QConvKernel {
    /// Packs an OIHW int8 kernel of `groups` groups (1, or one per input channel) with an int32
    /// bias and the combined scale of each output channel (`kernel * input / output`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        geometry: Geometry,
        in_channels: usize,
        groups: usize,
        kernel: &[i8],
        bias: &[i32],
        scales: &[f32],
        x_zero_point: i8,
        y_zero_point: i8,
        isa: Isa,
    ) -> Result<QConvKernel, ConvKernelError> {
        geometry.check()?;
        let out_channels = bias.len();
        // One input channel per group (depthwise, with any channel multiplier): per-plane loops.
        let depthwise = groups == in_channels && out_channels.is_multiple_of(groups) && groups > 1;
        if !(groups == 1 || depthwise) {
            return Err(ConvKernelError::Groups { groups, channels: in_channels });
        }
        let [kh, kw] = geometry.kernel;
        let per_out = if depthwise { kh * kw } else { in_channels * kh * kw };
        if kernel.len() != out_channels * per_out || scales.len() != out_channels || out_channels == 0 || in_channels == 0 {
            return Err(ConvKernelError::Shapes { weights: kernel.len(), bias: bias.len(), scales: scales.len(), out: out_channels });
        }
        if kernel.contains(&-128) {
            return Err(ConvKernelError::WeightRange);
        }
        let requant = Requant::new(scales);
        let sums = kernel.chunks(per_out).map(|row| row.iter().map(|&w| w as i32).sum::<i32>());
        let bias: Vec<i32> = bias.iter().zip(sums).map(|(&b, s)| b.wrapping_sub((x_zero_point as i32).wrapping_mul(s))).collect();
        let (k, kp, weights) = if depthwise {
            (per_out, per_out, kernel.to_vec())
        } else {
            let kp = per_out.div_ceil(KU) * KU;
            let mut packed = vec![0i8; (out_channels + MR) * kp];
            for o in 0..out_channels {
                for c in 0..in_channels {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            packed[o * kp + (ky * kw + kx) * in_channels + c] = kernel[((o * in_channels + c) * kh + ky) * kw + kx];
                        }
                    }
                }
            }
            (per_out, kp, packed)
        };
        // A dense convolution of a single input channel (a stem) is a depthwise one on that channel
        // replicated across the output channels (`pad` replicates it), where the depthwise kernel is
        // vectorized (32-bit ARM runs its portable loop: packing is cheaper there). Where there is a
        // lane kernel, packing each pixel's few bytes and running it costs less (fashion-resnet's
        // 32-channel stem on A76: 1.698 -> 1.663 M instructions per inference; x86 p50 -5%).
        let stem = groups == 1 && in_channels == 1 && matches!(isa, Isa::Neon | Isa::Avx2);
        let channels_last = ((depthwise && out_channels == in_channels || stem) && out_channels >= depthwise::LANES).then(|| {
            let scales = match &requant {
                Requant::PerChannel(scales) => scales.as_slice(),
                Requant::Uniform(_) => &[],
            };
            Depthwise::new(out_channels, [kh, kw], kernel, &bias, scales)
        });
        let lanes = !depthwise && channels_last.is_none() && micro::lane_tile(isa).is_some();
        let unsigned = (lanes && micro::lanes_read_unsigned(isa)) || channels_last.as_ref().is_some_and(|dw| dw.reads_unsigned(isa, &geometry, &requant));
        let weights = if lanes {
            micro::pack_lanes(&weights, out_channels, kp)
        } else if !depthwise && channels_last.is_none() && micro::tiles_interleaved(isa) {
            // Every group of MR channels that a tile reads (from 0, MR at a time).
            micro::interleave_tiles(&weights, kp, out_channels.div_ceil(MR))
        } else {
            weights
        };
        let mut bias = bias;
        if lanes && micro::lanes_read_unsigned(isa) {
            // The kernel sums w * (x + 128): take 128 * sum(w) off each channel's bias.
            for (b, row) in bias.iter_mut().zip(kernel.chunks(per_out)) {
                *b = b.wrapping_sub(row.iter().map(|&w| w as i32).sum::<i32>().wrapping_mul(128));
            }
        }
        Ok(QConvKernel {
            geometry,
            in_channels,
            out_channels,
            depthwise,
            channels_last,
            k,
            kp,
            weights,
            lanes,
            bias,
            requant,
            x_zero_point,
            y_zero_point,
            isa,
            flip: if unsigned { i8::MIN } else { 0 },
            input_layout: Layout::Nchw,
            output_layout: Layout::Nchw,
        })
    }

    /// Whether the dense weights are interleaved for the 4x4 tiles ([`micro::interleave_tiles`]).
    fn interleaved(&self) -> bool {
        !self.depthwise && self.channels_last.is_none() && !self.lanes && micro::tiles_interleaved(self.isa)
    }

    /// Whether the input may be channels-last: everything but the per-plane depthwise loop, which
    /// reads channel planes.
    pub fn reads_channels_last(&self) -> bool {
        !(self.depthwise && self.channels_last.is_none())
    }

    /// Whether the output may be channels-last: the channels-last depthwise kernel, and the
    /// requantizing lane kernels (SDOT, VPDPBUSD), which then store each pixel's channels as they leave
    /// their registers ([`micro::lane_tiles_requant`]).
    pub fn writes_channels_last(&self) -> bool {
        self.channels_last.is_some() || self.fuses_requantization()
    }

    /// Whether the lane kernel requantizes in registers: per-channel scales where it requantizes at
    /// all, a uniform one where it also takes those and the scale has an f64 factor.
    fn fuses_requantization(&self) -> bool {
        let scales = match &self.requant {
            Requant::PerChannel(_) => true,
            Requant::Uniform(uniform) => micro::lanes_requantize_uniform(self.isa) && uniform.factor().is_some(),
        };
        self.lanes && micro::lanes_requantize(self.isa) && scales
    }

    /// This convolution reading and writing tensors in these layouts, where it can
    /// ([`QConvKernel::reads_channels_last`], [`QConvKernel::writes_channels_last`]). A channels-last
    /// output runs on one thread (threads split output channel planes).
    pub fn with_layouts(&self, input: Layout, output: Layout) -> Option<QConvKernel> {
        let ok = (input == Layout::Nchw || self.reads_channels_last()) && (output == Layout::Nchw || self.writes_channels_last());
        ok.then(|| QConvKernel { input_layout: input, output_layout: output, ..self.clone() })
    }

    pub fn input_layout(&self) -> Layout {
        self.input_layout
    }

    pub fn output_layout(&self) -> Layout {
        self.output_layout
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Multiply-accumulates per image.
    pub fn macs(&self) -> usize {
        self.out_channels * self.k * self.geometry.output[0] * self.geometry.output[1]
    }

    /// The output shape for `batch` images: (N, C, H, W).
    pub fn output_shape(&self, batch: usize) -> [usize; 4] {
        [batch, self.out_channels, self.geometry.output[0], self.geometry.output[1]]
    }

    /// The output tensor's dimensions in its layout: (N, C, H, W), or (N, H, W, C) channels-last.
    pub fn output_dims(&self, batch: usize) -> [usize; 4] {
        let [n, c, h, w] = self.output_shape(batch);
        match self.output_layout {
            Layout::Nchw => [n, c, h, w],
            Layout::Nhwc => [n, h, w, c],
        }
    }

    /// Convolves `x`, `batch` images in the input layout (NCHW unless [`QConvKernel::with_layouts`]
    /// said otherwise), into `y` in the output layout, splitting output channels across the threads
    /// of tract's executor when the plan runs with several and the output is NCHW.
    pub fn run(&self, x: &[i8], batch: usize, y: &mut [i8]) -> Result<(), ConvKernelError> {
        let [h, w] = self.geometry.input;
        let expected = [batch, self.in_channels, h, w];
        if x.len() != expected.iter().product::<usize>() {
            return Err(ConvKernelError::Input { got: vec![x.len()], expected: expected.to_vec() });
        }
        let out_len = self.output_shape(batch).iter().product::<usize>();
        if y.len() != out_len {
            return Err(ConvKernelError::Output { got: y.len(), expected: out_len });
        }
        let image_in = self.in_channels * h * w;
        let pixels = self.geometry.output[0] * self.geometry.output[1];
        if pixels == 0 {
            return Ok(());
        }
        for (x, y) in x.chunks_exact(image_in.max(1)).zip(y.chunks_exact_mut(self.out_channels * pixels)) {
            let padded = self.pad(x);
            let work = self.macs();
            let nhwc = self.output_layout == Layout::Nhwc;
            let chunk = |first: usize, y: &mut [i8]| -> tract_nnef::internal::TractResult<()> {
                if let Some(dw) = &self.channels_last {
                    dw.run(self.isa, &self.geometry, &padded, &self.requant, self.y_zero_point, first, y, nhwc);
                } else if self.depthwise {
                    self.depthwise_channels(&padded, first, y);
                } else {
                    self.dense_channels(&padded, first, y);
                }
                Ok(())
            };
            use tract_nnef::internal::tract_linalg::multithread::par_chunks_mut;
            if nhwc {
                // Every channel of each pixel is written together: one chunk.
                chunk(0, y).expect("the kernels do not fail");
            } else if self.interleaved() {
                // Interleaved weights are read MR channels at a time from channel 0: the planes
                // are split MR at a time, where that divides them, else not at all.
                if self.out_channels.is_multiple_of(MR) {
                    par_chunks_mut(y, MR * pixels, work, |group, y| chunk(group * MR, y)).expect("the kernels do not fail");
                } else {
                    chunk(0, y).expect("the kernels do not fail");
                }
            } else {
                par_chunks_mut(y, pixels, work, chunk).expect("the kernels do not fail");
            }
        }
        Ok(())
    }

    /// The input with its padding filled with the zero point: channels-last (`[h][w][c]`, then
    /// [`depthwise::LANES`] spare bytes; a stem's one channel repeated for each output channel), or
    /// planes (`[c][h][w]`) for the per-plane depthwise loop.
    fn pad(&self, x: &[i8]) -> Vec<i8> {
        let [h, w] = self.geometry.input;
        let [hp, wp] = self.geometry.padded();
        let [pt, pl] = self.geometry.pad_before;
        if self.in_channels == 1 && self.channels_last.is_some() {
            // One channel, replicated across the output channels.
            let c = self.out_channels;
            let mut out = vec![self.x_zero_point ^ self.flip; hp * wp * c + depthwise::LANES];
            for (row, src) in x.chunks_exact(w.max(1)).enumerate() {
                for (col, &v) in src.iter().enumerate() {
                    out[((row + pt) * wp + pl + col) * c..][..c].fill(v ^ self.flip);
                }
            }
            return out;
        }
        let c = self.in_channels;
        if self.input_layout == Layout::Nhwc {
            // Already channels-last: row copies, flipped to unsigned on the way for VPDPBUSD.
            let flip = self.flip;
            let (zp, len) = (self.x_zero_point ^ flip, w * c);
            if [hp, wp] == [h, w] {
                // No padding (pointwise layers): one pass, not one per row (about 0.2 M of MobileNetV2's
                // 56 M instructions on Cortex-A76).
                let mut out = Vec::with_capacity(h * len + depthwise::LANES);
                extend_flipped(&mut out, x, flip);
                out.resize(h * len + depthwise::LANES, zp);
                return out;
            }
            // Row by row, each byte written once: the padding around each row, the row between.
            let (before, after) = (pl * c, (wp - pl - w) * c);
            let mut out = Vec::with_capacity(hp * wp * c + depthwise::LANES);
            out.resize(pt * wp * c, zp);
            for src in x.chunks_exact(len.max(1)).take(h) {
                out.resize(out.len() + before, zp);
                extend_flipped(&mut out, src, flip);
                out.resize(out.len() + after, zp);
            }
            out.resize(hp * wp * c + depthwise::LANES, zp);
            return out;
        }
        let mut out = vec![self.x_zero_point; hp * wp * c + depthwise::LANES];
        if self.depthwise && self.channels_last.is_none() {
            for (plane, src) in out.chunks_exact_mut(hp * wp).zip(x.chunks_exact(h * w)) {
                for (row, src) in src.chunks_exact(w).enumerate() {
                    plane[(row + pt) * wp + pl..][..w].copy_from_slice(src);
                }
            }
        } else {
            for row in 0..h {
                layout::row_to_channels_last(x, c, h, w, row, &mut out, ((row + pt) * wp + pl) * c);
            }
            if self.flip != 0 {
                out.iter_mut().for_each(|v| *v ^= self.flip);
            }
        }
        out
    }

    /// Output channels `first..` of one image (`y` holds whole channel planes) of a dense convolution.
    fn dense_channels(&self, padded: &[i8], first: usize, y: &mut [i8]) {
        let g = &self.geometry;
        let [ow, wp] = [g.output[1], g.padded()[1]];
        let pixels = g.output[0] * ow;
        let channels = y.len() / pixels;
        let (c, kp, [kh, kw]) = (self.in_channels, self.kp, g.kernel);
        // With a multiple of 16 channels, each kernel position of a pixel is one run of the
        // channels-last input, read in place; otherwise each pixel's receptive field is packed.
        let in_place = c % KU == 0;
        // Without dilation along the width, a kernel row's positions are one run.
        let row_runs = g.dilation[1] == 1;
        let taps: Vec<usize> = match (in_place, row_runs) {
            (true, true) => (0..kh).map(|ky| ky * g.dilation[0] * wp * c).collect(),
            (true, false) => (0..kh).flat_map(|ky| (0..kw).map(move |kx| (ky * g.dilation[0] * wp + kx * g.dilation[1]) * c)).collect(),
            (false, _) => vec![0],
        };
        let len = match (in_place, row_runs) {
            (true, true) => kw * c,
            (true, false) => c,
            (false, _) => kp,
        };
        let mut packed = if in_place { Vec::new() } else { vec![0i8; BLOCK * kp + 16] };
        // Tiles of MR x NR on the 4x4 kernels, MR_LANES x NR_LANES on a lane kernel.
        let (mr, nr) = micro::lane_tile(self.isa).filter(|_| self.lanes).unwrap_or((MR, NR));
        let mut acc = [[0i32; BLOCK]; MR_LANES];
        // Requantizing lane kernels: a block's partial tiles, and a last channel group's bias and scales.
        let mut block = [[0i8; BLOCK]; MR_LANES];
        // Channels-last output: `y` is `[pixels][channels]`, a block's partial tiles go through `pixels_block`.
        let nhwc = self.output_layout == Layout::Nhwc;
        let mut pixels_block = [[0i8; MR_LANES]; BLOCK];
        let (mut tail_bias, mut tail_scales) = ([0i32; MR_LANES], [0f32; MR_LANES]);
        // Whether the lane kernel requantizes in registers. (A uniform scale into channel planes is
        // cheaper through the int32 tile and `requant_uniform_rows`, 16 sums a step: fashion-cnn-s
        // per-tensor 0.558x against 0.536x ORT.)
        let fused = self.fuses_requantization() && (nhwc || matches!(self.requant, Requant::PerChannel(_)));
        let span = kw * c;
        // Where each kernel row starts from a pixel's top-left input (in bytes), when packed.
        let rows: Vec<usize> = (0..kh).map(|ky| ky * g.dilation[0] * wp * c).collect();
        // With dilation along the width, each kernel position is packed alone (a run of c bytes).
        let (rows, span) = if g.dilation[1] == 1 {
            (rows, span)
        } else {
            (rows.iter().flat_map(|&r| (0..kw).map(move |kx| r + kx * g.dilation[1] * c)).collect(), c)
        };
        for b0 in (0..pixels).step_by(BLOCK) {
            let valid = BLOCK.min(pixels - b0);
            // The top-left input pixel of each output pixel of the block (the last one repeated to
            // fill the block), walked without divisions.
            let mut at = [0usize; BLOCK];
            let (mut oy, mut ox) = (b0 / ow, b0 % ow);
            for (j, at) in at.iter_mut().enumerate() {
                if j < valid {
                    *at = oy * g.stride[0] * wp + ox * g.stride[1];
                    ox += 1;
                    if ox == ow {
                        (oy, ox) = (oy + 1, 0);
                    }
                }
            }
            let last = at[valid - 1];
            at[valid..].fill(last);
            if !in_place {
                // Lane kernels read the block's `valid` pixels (`micro::LanePlan`), the 4x4 tiles a
                // multiple of NR.
                let count = if self.lanes { valid } else { valid.next_multiple_of(nr) };
                pack(padded, &at[..count], c, &rows, span, kp, &mut packed);
            }
            // Where each pixel of the block reads from.
            let (src, start): (*const i8, [usize; BLOCK]) =
                if in_place { (padded.as_ptr(), at.map(|a| a * c)) } else { (packed.as_ptr(), std::array::from_fn(|j| j * kp)) };
            for c0 in (0..channels).step_by(mr) {
                let o0 = first + c0;
                // Lane kernels take the block's pixels as they are (`micro::LanePlan`), the 4x4 tiles a
                // multiple of NR (the last pixel repeated).
                let starts = &start[..if self.lanes { valid } else { valid.next_multiple_of(nr) }];
                // SAFETY: dense weights hold MR rows of kp bytes from `o0` (packed with MR spare
                // rows); lane weights hold MR_LANES channels of every group from `o0` (MR_LANES spare
                // channels). In place, every pixel's receptive field lies inside the padded input
                // (`Geometry::check`: the last output's field ends inside it), each tap a run of `len`
                // bytes; packed, rows of kp bytes among the BLOCK rows (`valid` rounded up to NR or
                // NR_LANES is at most BLOCK, a multiple of both). Tile t lands in `acc` at
                // [i][t * nr + j], inside its MR_LANES x BLOCK values. Weights are in -127..=127
                // (`QConvKernel::new`), the ISA from `Isa::available`, `lanes` only where it has them.
                let rows = mr.min(channels - c0);
                if fused {
                    // Full tiles straight into the output planes, a block's last ones through `block`.
                    let full = valid == BLOCK && rows == mr;
                    let bias = if rows == mr {
                        self.bias[o0..o0 + mr].as_ptr()
                    } else {
                        tail_bias[..rows].copy_from_slice(&self.bias[o0..o0 + rows]);
                        tail_bias.as_ptr()
                    };
                    let scales = match &self.requant {
                        Requant::PerChannel(scales) if rows == mr => micro::Scales::PerChannel(scales[o0..o0 + mr].as_ptr()),
                        Requant::PerChannel(scales) => {
                            tail_scales[..rows].copy_from_slice(&scales[o0..o0 + rows]);
                            micro::Scales::PerChannel(tail_scales.as_ptr())
                        }
                        Requant::Uniform(uniform) => micro::Scales::Uniform(uniform),
                    };
                    let row = micro::Row { w: self.weights[o0 * 4..].as_ptr(), src, starts, taps: &taps, len };
                    if nhwc {
                        // SAFETY: as below, the outputs pixel by pixel: a full tile group writes mr
                        // channels from c0 of each of its BLOCK pixels (c0 + mr <= channels), the
                        // others `pixels_block`'s BLOCK rows of MR_LANES >= mr.
                        let (out, stride) =
                            if full { (y[b0 * channels + c0..].as_mut_ptr(), channels) } else { (pixels_block.as_mut_ptr().cast::<i8>(), MR_LANES) };
                        unsafe { micro::lane_tiles_requant(self.isa, row, self.out_channels, bias, scales, self.y_zero_point, out, stride, Layout::Nhwc) };
                        if !full {
                            for (j, px) in pixels_block.iter().enumerate().take(valid) {
                                y[(b0 + j) * channels + c0..][..rows].copy_from_slice(&px[..rows]);
                            }
                        }
                        continue;
                    }
                    let (out, stride) = if full { (y[c0 * pixels + b0..].as_mut_ptr(), pixels) } else { (block.as_mut_ptr().cast::<i8>(), BLOCK) };
                    // SAFETY: as below for the tiles; `bias` and `scales` hold mr channels (the
                    // tail's zero-padded copies); a full tile group writes mr rows of BLOCK bytes
                    // at channel c0 + i's plane from b0 (c0 + mr <= channels, b0 + BLOCK <= pixels),
                    // the others `block`'s mr rows of BLOCK.
                    unsafe { micro::lane_tiles_requant(self.isa, row, self.out_channels, bias, scales, self.y_zero_point, out, stride, Layout::Nchw) };
                    if !full {
                        for (i, r) in block.iter().enumerate().take(rows) {
                            layout::copy_short(&mut y[(c0 + i) * pixels + b0..][..valid], r);
                        }
                    }
                    continue;
                }
                unsafe {
                    if self.lanes {
                        let row = micro::Row { w: self.weights[o0 * 4..].as_ptr(), src, starts, taps: &taps, len };
                        micro::lane_tiles(self.isa, row, self.out_channels, acc.as_mut_ptr().cast::<i32>(), BLOCK);
                    } else {
                        let weights = &self.weights[o0 * kp..(o0 + MR) * kp];
                        let row = micro::Row { w: weights.as_ptr(), src, starts, taps: &taps, len };
                        micro::tiles(self.isa, row, acc.as_mut_ptr().cast::<i32>(), BLOCK);
                    }
                }
                if let Requant::PerChannel(scales) = &self.requant {
                    let (bias, scales) = (&self.bias[o0..o0 + rows], &scales[o0..o0 + rows]);
                    micro::requant_rows(self.isa, &acc[..rows], valid, bias, scales, self.y_zero_point.into(), &mut y[c0 * pixels + b0..], pixels);
                    continue;
                }
                if let Requant::Uniform(uniform) = &self.requant {
                    micro::requant_uniform_rows(self.isa, uniform, &acc[..rows], valid, &self.bias[o0..o0 + rows], self.y_zero_point.into(), &mut y[c0 * pixels + b0..], pixels);
                }
            }
        }
    }

    /// Requantizes output channel `o`'s accumulators (bias not yet added).
    fn requantize(&self, o: usize, acc: &[i32], out: &mut [i8]) {
        match &self.requant {
            Requant::PerChannel(scales) => micro::requant_row(self.isa, acc, self.bias[o], scales[o], self.y_zero_point.into(), out),
            Requant::Uniform(uniform) => micro::requant_uniform_row(self.isa, uniform, acc, self.bias[o], self.y_zero_point.into(), out),
        }
    }

    /// Channels `first..` of one image of a depthwise convolution.
    fn depthwise_channels(&self, padded: &[i8], first: usize, y: &mut [i8]) {
        let g = &self.geometry;
        let [oh, ow] = g.output;
        let [hp, wp] = g.padded();
        let [kh, kw] = g.kernel;
        let mut acc = vec![0i32; ow];
        for (i, out) in y.chunks_exact_mut(oh * ow).enumerate() {
            let ch = first + i;
            let input = ch / (self.out_channels / self.in_channels);
            let plane = &padded[input * hp * wp..(input + 1) * hp * wp];
            let weights = &self.weights[ch * kh * kw..(ch + 1) * kh * kw];
            for (oy, out) in out.chunks_exact_mut(ow).enumerate() {
                acc.fill(0);
                if ow == 1 && kw == wp && g.dilation == [1, 1] {
                    // The kernel spans whole rows (a global pooling): one dot product.
                    let field = &plane[oy * g.stride[0] * wp..][..kh * kw];
                    acc[0] = field.iter().zip(weights).map(|(&x, &w)| x as i32 * w as i32).sum::<i32>();
                    self.requantize(ch, &acc, out);
                    continue;
                }
                if ow == 1 && g.dilation[1] == 1 {
                    // One output per row: a dot product per kernel row.
                    for ky in 0..kh {
                        let row = &plane[(oy * g.stride[0] + ky * g.dilation[0]) * wp..][..kw];
                        acc[0] += row.iter().zip(&weights[ky * kw..(ky + 1) * kw]).map(|(&x, &w)| x as i32 * w as i32).sum::<i32>();
                    }
                    self.requantize(ch, &acc, out);
                    continue;
                }
                for ky in 0..kh {
                    let row = &plane[(oy * g.stride[0] + ky * g.dilation[0]) * wp..];
                    for kx in 0..kw {
                        let wv = weights[ky * kw + kx] as i32;
                        let row = &row[kx * g.dilation[1]..];
                        if g.stride[1] == 1 {
                            // int8 x int8 fits int16: widening multiplies (SMULL), then widening adds.
                            let wv = wv as i16;
                            acc.iter_mut().zip(&row[..ow]).for_each(|(a, &x)| *a += (x as i16 * wv) as i32);
                        } else {
                            acc.iter_mut().zip(row.iter().step_by(g.stride[1])).for_each(|(a, &x)| *a += x as i32 * wv);
                        }
                    }
                }
                self.requantize(ch, &acc, out);
            }
        }
    }
}

/// `out` extended by `src`, each byte `^ flip`: a plain copy where nothing flips (every ARM kernel;
/// only VPDPBUSD's unsigned inputs flip), which the device build would otherwise run a byte at a
/// time (its link at opt-level "s" vectorizes nothing, see [`super::vector`]: 350,000 of
/// fashion-resnet's int8 instructions per inference on Cortex-A72).
fn extend_flipped(out: &mut Vec<i8>, src: &[i8], flip: i8) {
    if flip == 0 {
        out.extend_from_slice(src);
    } else {
        out.extend(src.iter().map(|&v| v ^ flip));
    }
}

//! Parameter types shared by the kernels and the plan.

use crate::Problem;
use crate::requantize::{MAX_SHIFT, MIN_SHIFT};

/// Height, width and channels of an NHWC activation with batch 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Shape {
    pub const fn new(h: usize, w: usize, c: usize) -> Self {
        Shape { h, w, c }
    }

    /// Number of elements, `None` on overflow.
    pub fn elements(&self) -> Option<usize> {
        self.h.checked_mul(self.w)?.checked_mul(self.c)
    }

    fn check_len(&self, len: usize) -> Result<(), Problem> {
        if self.h == 0 || self.w == 0 || self.c == 0 {
            return Err(Problem::BadShape);
        }
        if self.elements() != Some(len) {
            return Err(Problem::BadLength);
        }
        Ok(())
    }
}

/// Explicit zero padding, in input pixels, on each side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Padding {
    pub top: usize,
    pub left: usize,
    pub bottom: usize,
    pub right: usize,
}

/// A sliding window: kernel size, stride and padding (dilation 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub padding: Padding,
}

impl Window {
    /// Output height and width for an input of `h` x `w`, or `None` when the window is invalid:
    /// zero kernel or stride, padding not smaller than the kernel on some side (every window must
    /// overlap the input), or a kernel larger than the padded input.
    pub fn output_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let p = &self.padding;
        if self.kernel_h == 0 || self.kernel_w == 0 || self.stride_h == 0 || self.stride_w == 0 {
            return None;
        }
        if p.top >= self.kernel_h
            || p.bottom >= self.kernel_h
            || p.left >= self.kernel_w
            || p.right >= self.kernel_w
        {
            return None;
        }
        let ph = h
            .checked_add(p.top)?
            .checked_add(p.bottom)?
            .checked_sub(self.kernel_h)?;
        let pw = w
            .checked_add(p.left)?
            .checked_add(p.right)?
            .checked_sub(self.kernel_w)?;
        Some((ph / self.stride_h + 1, pw / self.stride_w + 1))
    }

    pub(crate) fn check(&self, input: &Shape, output: &Shape) -> Result<(), Problem> {
        match self.output_hw(input.h, input.w) {
            None => Err(Problem::BadParameter),
            Some((oh, ow)) if (oh, ow) == (output.h, output.w) => Ok(()),
            Some(_) => Err(Problem::BadShape),
        }
    }

    /// The valid kernel rows (or columns) for output coordinate `o`: `(first tap, end tap, input
    /// coordinate of tap 0)`, the last possibly negative.
    #[inline(always)]
    pub(crate) fn taps(
        o: usize,
        stride: usize,
        pad_before: usize,
        kernel: usize,
        input: usize,
    ) -> (usize, usize, isize) {
        let origin = (o * stride) as isize - pad_before as isize;
        let first = if origin < 0 { (-origin) as usize } else { 0 };
        // max/min, not clamp: the same for a kernel size from a plan (< 2^16), without clamp's
        // panic on `min > max`.
        let end = (input as isize - origin).min(kernel as isize).max(0) as usize;
        (first, end.max(first), origin)
    }
}

/// Fused activation as a clamp of the int8 output (ReLU: `min = output zero point`; ReLU6: `max` =
/// the quantized 6.0; none: `-128..=127`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clamp {
    pub min: i8,
    pub max: i8,
}

impl Clamp {
    pub const NONE: Clamp = Clamp {
        min: -128,
        max: 127,
    };

    fn check(&self) -> Result<(), Problem> {
        if self.min > self.max {
            Err(Problem::BadParameter)
        } else {
            Ok(())
        }
    }
}

/// An array of little-endian 32-bit integers read in place from plan bytes.
#[derive(Clone, Copy, Debug)]
pub struct I32Le<'a>(&'a [u8]);

impl<'a> I32Le<'a> {
    /// `None` when the length is not a multiple of 4.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        if bytes.len().is_multiple_of(4) {
            Some(I32Le(bytes))
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Element `i`; 0 when out of range, which kernels never ask for (`ChannelQuant::check` and the
    /// parser check lengths first): the compare is the one a bounds check costs, without a panic
    /// path in inference (firmware/app/no-panic.sh).
    #[inline(always)]
    pub fn get(&self, i: usize) -> i32 {
        // One (unaligned-tolerant) word load where the core allows it.
        match self.0.get(i * 4..i * 4 + 4) {
            Some(&[a, b, c, d]) => i32::from_le_bytes([a, b, c, d]),
            _ => 0,
        }
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }

    pub fn iter(&self) -> impl Iterator<Item = i32> + 'a {
        self.0
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Per-output-channel bias and requantization (`multiplier`, `shift` as in
/// [`crate::requantize::quantize_multiplier`]). A per-tensor scale is the same value repeated.
#[derive(Clone, Copy, Debug)]
pub struct ChannelQuant<'a> {
    pub bias: I32Le<'a>,
    pub multiplier: I32Le<'a>,
    pub shift: I32Le<'a>,
}

impl ChannelQuant<'_> {
    pub(crate) fn check(&self, channels: usize) -> Result<(), Problem> {
        if self.bias.len() != channels
            || self.multiplier.len() != channels
            || self.shift.len() != channels
        {
            return Err(Problem::BadLength);
        }
        if self.multiplier.iter().any(|m| m < 0)
            || self
                .shift
                .iter()
                .any(|s| !(MIN_SHIFT..=MAX_SHIFT).contains(&s))
        {
            return Err(Problem::BadQuantization);
        }
        Ok(())
    }
}

pub(crate) fn check_zero_point(zp: i32) -> Result<(), Problem> {
    if (-128..=127).contains(&zp) {
        Ok(())
    } else {
        Err(Problem::BadQuantization)
    }
}

pub(crate) fn check_requant(multiplier: i32, shift: i32) -> Result<(), Problem> {
    if multiplier < 0 || !(MIN_SHIFT..=MAX_SHIFT).contains(&shift) {
        Err(Problem::BadQuantization)
    } else {
        Ok(())
    }
}

/// Conv2d: `out[y, x, o] = clamp(requantize(bias[o] + sum (in[iy, ix, i] - input_zp) * w[o, ky, kx, i]) + output_zp)`
/// over the taps inside the input (padding contributes nothing).
#[derive(Clone, Copy, Debug)]
pub struct ConvParams<'a> {
    pub input: Shape,
    pub output: Shape,
    pub window: Window,
    pub input_zp: i32,
    pub output_zp: i32,
    pub clamp: Clamp,
    /// Packed layout, see [`crate::kernels::pack_conv_weights`], with `K = kernel_h * kernel_w * input.c`.
    pub weights: &'a [i8],
    pub quant: ChannelQuant<'a>,
}

impl ConvParams<'_> {
    /// Reduction depth `K = kernel_h * kernel_w * input channels`.
    pub fn depth(&self) -> usize {
        self.window.kernel_h * self.window.kernel_w * self.input.c
    }

    /// Scratch words every build reserves for this op: the DSP kernel's widened im2col of two
    /// output pixels and its table of 4 requantization words per output channel.
    pub fn scratch_words(&self) -> usize {
        Self::scratch_words_for(self.depth(), self.output.c)
    }

    pub(crate) fn scratch_words_for(depth: usize, channels: usize) -> usize {
        // Saturating: an impossible size fails the scratch check instead of wrapping past it.
        depth
            .checked_add(3)
            .map_or(usize::MAX, |d| d & !3)
            .saturating_add(channels.saturating_mul(4))
    }

    pub fn check(
        &self,
        input_len: usize,
        output_len: usize,
        scratch_len: usize,
    ) -> Result<(), Problem> {
        self.input.check_len(input_len)?;
        self.output.check_len(output_len)?;
        self.window.check(&self.input, &self.output)?;
        self.clamp.check()?;
        check_zero_point(self.input_zp)?;
        check_zero_point(self.output_zp)?;
        let k = self
            .window
            .kernel_h
            .checked_mul(self.window.kernel_w)
            .and_then(|k| k.checked_mul(self.input.c));
        let expected = k.and_then(|k| super::conv::checked_weights_len(self.output.c, k));
        if expected != Some(self.weights.len()) {
            return Err(Problem::BadLength);
        }
        self.quant.check(self.output.c)?;
        if scratch_len < self.scratch_words() {
            return Err(Problem::ScratchTooSmall);
        }
        Ok(())
    }
}

/// Depthwise conv2d, TFLite's: output channel `o = i * multiplier + m` sees only input channel `i`;
/// weights `[KH, KW, C * multiplier]`.
#[derive(Clone, Copy, Debug)]
pub struct DepthwiseParams<'a> {
    pub input: Shape,
    pub output: Shape,
    pub window: Window,
    pub multiplier: usize,
    pub input_zp: i32,
    pub output_zp: i32,
    pub clamp: Clamp,
    pub weights: &'a [i8],
    pub quant: ChannelQuant<'a>,
}

impl DepthwiseParams<'_> {
    /// Scratch words every build reserves for this op: the DSP kernel's `kernel_h` tables of
    /// widened weights and tap offsets (3 words per tap) and its ring of `kernel_h` padded input
    /// rows (one word per pixel).
    pub fn scratch_words(&self) -> usize {
        let (w, p) = (&self.window, &self.window.padding);
        let padded_width = self.input.w.saturating_add(p.left).saturating_add(p.right);
        Self::scratch_words_for(w.kernel_h, w.kernel_w, padded_width)
    }

    pub(crate) fn scratch_words_for(
        kernel_h: usize,
        kernel_w: usize,
        padded_width: usize,
    ) -> usize {
        // Saturating, as for conv.
        kernel_h.saturating_mul(
            kernel_h
                .saturating_mul(kernel_w)
                .saturating_mul(3)
                .saturating_add(padded_width),
        )
    }

    pub fn check(
        &self,
        input_len: usize,
        output_len: usize,
        scratch_len: usize,
    ) -> Result<(), Problem> {
        self.input.check_len(input_len)?;
        self.output.check_len(output_len)?;
        self.window.check(&self.input, &self.output)?;
        self.clamp.check()?;
        check_zero_point(self.input_zp)?;
        check_zero_point(self.output_zp)?;
        if self.multiplier == 0 || self.input.c.checked_mul(self.multiplier) != Some(self.output.c)
        {
            return Err(Problem::BadShape);
        }
        let len = self
            .window
            .kernel_h
            .checked_mul(self.window.kernel_w)
            .and_then(|k| k.checked_mul(self.output.c));
        if len != Some(self.weights.len()) {
            return Err(Problem::BadLength);
        }
        self.quant.check(self.output.c)?;
        if scratch_len < self.scratch_words() {
            return Err(Problem::ScratchTooSmall);
        }
        Ok(())
    }
}

/// Fully connected: `out[o] = clamp(requantize(bias[o] + sum_i (in[i] - input_zp) * w[o, i]) + output_zp)`.
/// The input is read flat (any shape), the output has `output_len` channels.
#[derive(Clone, Copy, Debug)]
pub struct FullyConnectedParams<'a> {
    pub input_zp: i32,
    pub output_zp: i32,
    pub clamp: Clamp,
    /// Packed layout, see [`crate::kernels::pack_conv_weights`], with `K = input length`.
    pub weights: &'a [i8],
    pub quant: ChannelQuant<'a>,
}

impl FullyConnectedParams<'_> {
    /// Scratch words every build reserves: the DSP kernel's widened input.
    pub fn scratch_words(input_len: usize) -> usize {
        input_len.checked_add(3).map_or(usize::MAX, |k| k & !3) / 2
    }

    pub fn check(
        &self,
        input_len: usize,
        output_len: usize,
        scratch_len: usize,
    ) -> Result<(), Problem> {
        if input_len == 0 || output_len == 0 {
            return Err(Problem::BadShape);
        }
        self.clamp.check()?;
        check_zero_point(self.input_zp)?;
        check_zero_point(self.output_zp)?;
        if super::conv::checked_weights_len(output_len, input_len) != Some(self.weights.len()) {
            return Err(Problem::BadLength);
        }
        self.quant.check(output_len)?;
        if scratch_len < Self::scratch_words(input_len) {
            return Err(Problem::ScratchTooSmall);
        }
        Ok(())
    }
}

/// Max or average pooling. Input and output share scale and zero point (as TFLite requires), so no
/// requantization: max takes the largest valid input, average rounds the mean of the valid inputs
/// half away from zero; then the clamp.
#[derive(Clone, Copy, Debug)]
pub struct PoolParams {
    pub input: Shape,
    pub output: Shape,
    pub window: Window,
    pub clamp: Clamp,
}

impl PoolParams {
    pub fn check(&self, input_len: usize, output_len: usize) -> Result<(), Problem> {
        self.input.check_len(input_len)?;
        self.output.check_len(output_len)?;
        self.window.check(&self.input, &self.output)?;
        self.clamp.check()?;
        if self.input.c != self.output.c {
            return Err(Problem::BadShape);
        }
        Ok(())
    }
}

/// Global average pooling over height and width:
/// `out[c] = clamp(requantize(sum_{y,x} (in[y, x, c] - input_zp)) + output_zp)`, the multiplier
/// carrying `input_scale / (output_scale * H * W)`.
#[derive(Clone, Copy, Debug)]
pub struct GlobalPoolParams {
    pub input: Shape,
    pub input_zp: i32,
    pub output_zp: i32,
    pub multiplier: i32,
    pub shift: i32,
    pub clamp: Clamp,
}

impl GlobalPoolParams {
    /// Requantization for the given scales and input size.
    pub fn requant(input_scale: f32, output_scale: f32, h: usize, w: usize) -> (i32, i32) {
        crate::requantize::quantize_multiplier(
            input_scale as f64 / (output_scale as f64 * (h * w) as f64),
        )
    }

    pub fn check(&self, input_len: usize, output_len: usize) -> Result<(), Problem> {
        self.input.check_len(input_len)?;
        if output_len != self.input.c {
            return Err(Problem::BadLength);
        }
        // Keeps sum (x - zp) inside i32: 255 * H * W < 2^31.
        if self.input.h * self.input.w > (1 << 23) {
            return Err(Problem::BadShape);
        }
        self.clamp.check()?;
        check_zero_point(self.input_zp)?;
        check_zero_point(self.output_zp)?;
        check_requant(self.multiplier, self.shift)
    }
}

/// Element-wise add of two int8 tensors of the same shape, TFLite's scheme: each input, offset by
/// its zero point and shifted left by [`AddParams::LEFT_SHIFT`], is rescaled to a common scale
/// (`multiplier_1/2`, `shift_1/2`), the sum rescaled to the output (`output_multiplier/shift`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddParams {
    pub input1_zp: i32,
    pub input2_zp: i32,
    pub output_zp: i32,
    pub multiplier1: i32,
    pub shift1: i32,
    pub multiplier2: i32,
    pub shift2: i32,
    pub output_multiplier: i32,
    pub output_shift: i32,
    pub clamp: Clamp,
}

impl AddParams {
    pub const LEFT_SHIFT: u32 = 20;

    /// The requantization constants as TFLite's `PrepareGeneralSubOp` computes them.
    pub fn new(
        (scale1, zp1): (f32, i32),
        (scale2, zp2): (f32, i32),
        (output_scale, output_zp): (f32, i32),
        clamp: Clamp,
    ) -> Self {
        use crate::requantize::quantize_multiplier;
        let twice_max = 2.0 * f64::max(scale1 as f64, scale2 as f64);
        let (multiplier1, shift1) = quantize_multiplier(scale1 as f64 / twice_max);
        let (multiplier2, shift2) = quantize_multiplier(scale2 as f64 / twice_max);
        let (output_multiplier, output_shift) = quantize_multiplier(
            twice_max / ((1u64 << Self::LEFT_SHIFT) as f64 * output_scale as f64),
        );
        AddParams {
            input1_zp: zp1,
            input2_zp: zp2,
            output_zp,
            multiplier1,
            shift1,
            multiplier2,
            shift2,
            output_multiplier,
            output_shift,
            clamp,
        }
    }

    pub fn check(&self, len1: usize, len2: usize, output_len: usize) -> Result<(), Problem> {
        if len1 != len2 || len1 != output_len {
            return Err(Problem::BadLength);
        }
        self.clamp.check()?;
        check_zero_point(self.input1_zp)?;
        check_zero_point(self.input2_zp)?;
        check_zero_point(self.output_zp)?;
        check_requant(self.multiplier1, self.shift1)?;
        check_requant(self.multiplier2, self.shift2)?;
        check_requant(self.output_multiplier, self.output_shift)?;
        // The scaled inputs must not overflow: TFLite only uses right shifts here.
        if self.shift1 > 0 || self.shift2 > 0 {
            return Err(Problem::BadQuantization);
        }
        Ok(())
    }
}

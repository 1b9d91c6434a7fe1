//! Cortex-M DSP kernels: the same bytes as the portable kernels, faster. Conv2d and fully
//! connected widen the activations once (im2col of two output pixels into int16 pairs, the input
//! zero point folded in by SXTAB16) and stream the packed weights through SMLAD, two channels x
//! two pixels per pass; depthwise conv (multiplier 1, channels a multiple of 4) runs four channels
//! per pass with SMLABB/SMLATT. Other shapes fall back to the portable kernels.

use core::num::NonZeroUsize;

use super::conv::padded_depth;
use super::{ConvParams, DepthwiseParams, FullyConnectedParams, Window, portable};
use crate::Problem;
use crate::arm_dsp::{
    ChannelRq, DwRow, conv_pairs, conv_table, dot_1x1, dot_1x2, dot_2x1, fc_quads, gather_words,
    requantize, sxtab16, sxtab16_ror8, widen, widen_strided,
};

/// `v` in both int16 lanes.
#[inline(always)]
fn lanes(v: i32) -> u32 {
    (v as u16 as u32) * 0x0001_0001
}

/// Writes the widened reduction vector of output pixel `pixel` into slot `SLOT` (0 or 1) of the
/// two-pixel im2col `cols` (group `g` at words `4g + 2 SLOT` and `4g + 2 SLOT + 1`). Padding taps
/// widen to 0 (the zero point minus itself).
///
/// `ConvParams::check` (called by [`conv2d`]) makes every valid tap a pixel of the input and the
/// whole vector fit `cols`: the `get`s below cost what a bounds check does and never fail; if one
/// did, the kernel would return the error instead of panicking.
fn im2col<const SLOT: usize>(
    p: &ConvParams,
    input: &[i8],
    pixel: usize,
    ow: NonZeroUsize,
    cols: &mut [u32],
) -> Result<(), Problem> {
    let (ih, iw, ic) = (p.input.h, p.input.w, p.input.c);
    let win = &p.window;
    let (oy, ox) = (pixel / ow, pixel % ow);
    let offset = lanes(-p.input_zp);
    let dst = cols.get_mut(SLOT * 2..).ok_or(Problem::ScratchTooSmall)?;
    let (kx0, kx1, ix0) = Window::taps(ox, win.stride_w, win.padding.left, win.kernel_w, iw);
    let iy0 = (oy * win.stride_h) as isize - win.padding.top as isize;
    if ic.is_multiple_of(4) {
        let per_tap = ic / 4;
        let mut g = 0;
        for ky in 0..win.kernel_h {
            let iy = iy0 + ky as isize;
            if iy < 0 || iy as usize >= ih {
                g = zero_groups(dst, g, win.kernel_w * per_tap);
                continue;
            }
            g = zero_groups(dst, g, kx0 * per_tap);
            let start = (iy as usize * iw + (ix0 + kx0 as isize) as usize) * ic;
            let src = input
                .get(start..start + (kx1 - kx0) * ic)
                .ok_or(Problem::BadLength)?;
            let at = dst.get_mut(4 * g..).ok_or(Problem::ScratchTooSmall)?;
            g += widen_strided(src, offset, at)?;
            g = zero_groups(dst, g, (win.kernel_w - kx1) * per_tap);
        }
        return Ok(());
    }
    // Fewer than 4 channels, or not a multiple of 4: gather the bytes, then widen. Small depths
    // (the first layer of an image model) go through a staging buffer on the stack.
    let zp_byte = p.input_zp;
    let kp = padded_depth(p.depth());
    if kp <= STAGE {
        let mut stage = [zp_byte as i8; STAGE];
        let row_len = (kx1 - kx0) * ic;
        let mut pos = kx0 * ic;
        for ky in 0..win.kernel_h {
            let iy = iy0 + ky as isize;
            if iy >= 0 && (iy as usize) < ih {
                let start = (iy as usize * iw + (ix0 + kx0 as isize) as usize) * ic;
                let to = stage.get_mut(pos..pos + row_len);
                let from = input.get(start..start + row_len);
                let (Some(to), Some(from)) = (to, from) else {
                    return Err(Problem::BadLength);
                };
                for (d, &s) in to.iter_mut().zip(from) {
                    *d = s;
                }
            }
            pos += win.kernel_w * ic;
        }
        widen_strided(&stage[..kp], offset, dst)?;
        return Ok(());
    }
    let mut words = ByteWords {
        word: 0,
        n: 0,
        g: 0,
        offset,
    };
    for ky in 0..win.kernel_h {
        let iy = iy0 + ky as isize;
        let row_ok = iy >= 0 && (iy as usize) < ih;
        for kx in 0..win.kernel_w {
            if row_ok && kx >= kx0 && kx < kx1 {
                let base = (iy as usize * iw + (ix0 + kx as isize) as usize) * ic;
                for &b in input.get(base..base + ic).ok_or(Problem::BadLength)? {
                    words.push(b as u8, dst);
                }
            } else {
                for _ in 0..ic {
                    words.push(zp_byte as u8, dst);
                }
            }
        }
    }
    // The padded tail meets zero weights; any value would do.
    while words.n != 0 {
        words.push(zp_byte as u8, dst);
    }
    Ok(())
}

/// Reduction depths up to this many bytes are gathered on the stack before widening.
const STAGE: usize = 64;

/// Writes `n` widened zero groups (padding) at group `g` of one im2col slot; returns the next group.
#[inline(always)]
fn zero_groups(dst: &mut [u32], g: usize, n: usize) -> usize {
    let start = (4 * g).min(dst.len());
    for d in dst[start..].chunks_mut(4).take(n) {
        d[0] = 0;
        if let Some(d1) = d.get_mut(1) {
            *d1 = 0;
        }
    }
    g + n
}

/// Packs bytes into words and widens each full word into one im2col slot.
struct ByteWords {
    word: u32,
    n: u32,
    g: usize,
    offset: u32,
}

impl ByteWords {
    #[inline(always)]
    fn push(&mut self, byte: u8, dst: &mut [u32]) {
        self.word |= (byte as u32) << (8 * self.n);
        self.n += 1;
        if self.n == 4 {
            if let Some(d) = dst.get_mut(4 * self.g..4 * self.g + 2) {
                d[0] = sxtab16(self.offset, self.word);
                d[1] = sxtab16_ror8(self.offset, self.word);
            }
            self.g += 1;
            self.word = 0;
            self.n = 0;
        }
    }
}

pub fn conv2d(
    p: &ConvParams,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u32],
) -> Result<(), Problem> {
    p.check(input.len(), output.len(), scratch.len())?;
    let kp = padded_depth(p.depth());
    let groups = kp / 4;
    let oc = p.output.c;
    let (cols, table) = scratch
        .split_at_mut_checked(kp)
        .ok_or(Problem::ScratchTooSmall)?;
    let q = &p.quant;
    conv_table(table, oc, |o| {
        (q.bias.get(o), q.multiplier.get(o), q.shift.get(o))
    });
    let pairs = oc / 2;
    let clamp = (p.output_zp, p.clamp.min, p.clamp.max);
    // Non-zero by `ConvParams::check`; the types carry it to the divisions and chunks below.
    let ow = NonZeroUsize::new(p.output.w).ok_or(Problem::BadShape)?;
    let two_pixels = (2 * oc).max(1);
    // Two output pixels per pass (the output is `oh * ow` pixels of `oc` channels: checked), the
    // last chunk one pixel when the count is odd.
    for (i, chunk) in output.chunks_mut(two_pixels).enumerate() {
        let px = 2 * i;
        let (row0, row1) = chunk.split_at_mut(oc.min(chunk.len()));
        let two = !row1.is_empty();
        im2col::<0>(p, input, px, ow, cols)?;
        im2col::<1>(p, input, if two { px + 1 } else { px }, ow, cols)?;
        if oc % 2 == 1 {
            // The odd last channel (its plain row follows the pairs).
            let o = oc - 1;
            let b = q.bias.get(o);
            let w = p.weights.get(o * kp..).unwrap_or(&[]);
            let [a0, a1] = dot_2x1(cols, w, groups, [b, b])?;
            let rq = ChannelRq::new(q.multiplier.get(o), q.shift.get(o));
            let (zp, lo, hi) = (p.output_zp, p.clamp.min as i32, p.clamp.max as i32);
            if let Some(y) = row0.get_mut(o) {
                *y = requantize(a0, rq, zp, lo, hi);
            }
            if let Some(y) = row1.get_mut(o) {
                *y = requantize(a1, rq, zp, lo, hi);
            }
        }
        let row1 = if two { Some(row1) } else { None };
        conv_pairs(cols, groups, p.weights, pairs, table, clamp, row0, row1)?;
    }
    Ok(())
}

pub fn fully_connected(
    p: &FullyConnectedParams,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u32],
) -> Result<(), Problem> {
    p.check(input.len(), output.len(), scratch.len())?;
    if !(p.weights.as_ptr() as usize).is_multiple_of(4) {
        // Weights off a 4-byte boundary (never from a plan): the portable kernel.
        return portable::fully_connected(p, input, output, scratch);
    }
    let k = input.len();
    let kp = padded_depth(k);
    let groups = kp / 4;
    let n = output.len();
    let x = scratch.get_mut(..kp / 2).ok_or(Problem::ScratchTooSmall)?;
    let offset = lanes(-p.input_zp);
    let (body, tail) = input.as_chunks::<4>();
    widen(body.as_flattened(), offset, x)?;
    if !tail.is_empty() {
        // The tail group meets zero weights past k; any value would do there.
        let word = tail
            .iter()
            .enumerate()
            .fold(0u32, |w, (i, &b)| w | ((b as u8 as u32) << (8 * i)));
        let last = x
            .get_mut(body.len() * 2..)
            .and_then(|x| x.first_chunk_mut::<2>())
            .ok_or(Problem::ScratchTooSmall)?;
        *last = [sxtab16(offset, word), sxtab16_ror8(offset, word)];
    }
    let q = &p.quant;
    let quads = n / 4;
    let arrays = (q.bias.bytes(), q.multiplier.bytes(), q.shift.bytes());
    let clamp = (p.output_zp, p.clamp.min, p.clamp.max);
    fc_quads(x, groups, p.weights, quads, arrays, clamp, output)?;
    // The last 0 to 3 channels: a pair, then a single one.
    let (zp, lo, hi) = (p.output_zp, p.clamp.min as i32, p.clamp.max as i32);
    let rq = |o: usize| ChannelRq::new(q.multiplier.get(o), q.shift.get(o));
    let weights = |o: usize| p.weights.get(o * kp..).unwrap_or(&[]);
    let mut o = quads * 4;
    let mut rest = output.get_mut(o..).unwrap_or(&mut []);
    if let [y0, y1, more @ ..] = rest {
        let bias = [q.bias.get(o), q.bias.get(o + 1)];
        let [a0, a1] = dot_1x2(x, weights(o), groups, bias)?;
        *y0 = requantize(a0, rq(o), zp, lo, hi);
        *y1 = requantize(a1, rq(o + 1), zp, lo, hi);
        o += 2;
        rest = more;
    }
    if let [y, ..] = rest {
        let acc = dot_1x1(x, weights(o), groups, q.bias.get(o))?;
        *y = requantize(acc, rq(o), zp, lo, hi);
    }
    Ok(())
}

pub fn depthwise_conv2d(
    p: &DepthwiseParams,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u32],
) -> Result<(), Problem> {
    if p.multiplier != 1 || !p.input.c.is_multiple_of(4) {
        return portable::depthwise_conv2d(p, input, output, scratch);
    }
    p.check(input.len(), output.len(), scratch.len())?;
    let (ih, iw, c) = (p.input.h, p.input.w, p.input.c);
    let win = &p.window;
    let pad = &win.padding;
    let (kh, kw) = (win.kernel_h, win.kernel_w);
    let (oh, ow) = (p.output.h, p.output.w);
    // `DepthwiseParams::check`: a non-empty kernel, every valid tap a pixel of the input, the
    // output `oh * ow * c`, scratch for the tables and the strip. The `get`s below cost what a
    // bounds check does and never fail; if one did, the kernel would return the error.
    let ring = NonZeroUsize::new(kh).ok_or(Problem::BadParameter)?;
    let strip_w = iw + pad.left + pad.right;
    let (table, strip) = scratch
        .split_at_mut_checked(kh * 3 * kh * kw)
        .ok_or(Problem::ScratchTooSmall)?;
    let strip = strip
        .get_mut(..kh * strip_w)
        .ok_or(Problem::ScratchTooSmall)?;
    let zp4 = (p.input_zp as u8 as u32) * 0x0101_0101;
    let q = &p.quant;
    // Channel groups outermost: each group's weights are widened once.
    for ch in (0..c).step_by(4) {
        let quant = core::array::from_fn(|i| {
            (
                q.bias.get(ch + i),
                q.multiplier.get(ch + i),
                q.shift.get(ch + i),
            )
        });
        let clamp = (p.output_zp, p.clamp.min, p.clamp.max);
        let mut row = DwRow::new(
            table,
            p.weights,
            (kh, kw, c, ch),
            strip_w,
            win.stride_w,
            quant,
            clamp,
            lanes(-p.input_zp),
        )?;
        // The strip is a ring of kh padded input rows (this group's 4 channels, the zero point
        // in the padding); padded row `r` lives in ring row `r % kh`, and each output row only
        // fetches the rows it does not share with the previous one.
        let mut next_row = 0;
        for oy in 0..oh {
            let top = oy * win.stride_h;
            for r in top.max(next_row)..top + kh {
                let at = (r % ring) * strip_w;
                let srow = strip
                    .get_mut(at..at + strip_w)
                    .ok_or(Problem::ScratchTooSmall)?;
                let iy = r as isize - pad.top as isize;
                if iy < 0 || iy as usize >= ih {
                    srow.fill(zp4);
                    continue;
                }
                let (left, rest) = srow
                    .split_at_mut_checked(pad.left)
                    .ok_or(Problem::ScratchTooSmall)?;
                let (mid, right) = rest
                    .split_at_mut_checked(iw)
                    .ok_or(Problem::ScratchTooSmall)?;
                left.fill(zp4);
                right.fill(zp4);
                let src = input
                    .get(iy as usize * iw * c + ch..)
                    .ok_or(Problem::BadLength)?;
                gather_words(src, c, iw, mid)?;
            }
            next_row = next_row.max(top + kh);
            row.rotate(top);
            let out = output
                .get_mut(oy * ow * c + ch..)
                .ok_or(Problem::BadLength)?;
            row.run(strip, 0, ow, out)?;
        }
    }
    Ok(())
}

//! Cortex-M DSP kernels: the same bytes as the portable kernels, faster. Conv2d and fully
//! connected widen the activations once (im2col of two output pixels into int16 pairs, the input
//! zero point folded in by SXTAB16) and stream the packed weights through SMLAD, two channels x
//! two pixels per pass; depthwise conv (multiplier 1, channels a multiple of 4) runs four channels
//! per pass with SMLABB/SMLATT. Other shapes fall back to the portable kernels.

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
fn im2col<const SLOT: usize>(p: &ConvParams, input: &[i8], pixel: usize, cols: &mut [u32]) {
    let (ih, iw, ic) = (p.input.h, p.input.w, p.input.c);
    let win = &p.window;
    let (oy, ox) = (pixel / p.output.w, pixel % p.output.w);
    let offset = lanes(-p.input_zp);
    let dst = &mut cols[SLOT * 2..];
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
            g += widen_strided(
                &input[start..start + (kx1 - kx0) * ic],
                offset,
                &mut dst[4 * g..],
            );
            g = zero_groups(dst, g, (win.kernel_w - kx1) * per_tap);
        }
        return;
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
                for (d, &s) in stage[pos..pos + row_len]
                    .iter_mut()
                    .zip(&input[start..start + row_len])
                {
                    *d = s;
                }
            }
            pos += win.kernel_w * ic;
        }
        widen_strided(&stage[..kp], offset, dst);
        return;
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
                for &b in &input[base..base + ic] {
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
    let (cols, table) = scratch.split_at_mut(kp);
    let q = &p.quant;
    conv_table(table, oc, |o| {
        (q.bias.get(o), q.multiplier.get(o), q.shift.get(o))
    });
    let pairs = oc / 2;
    let clamp = (p.output_zp, p.clamp.min, p.clamp.max);
    let pixels = p.output.h * p.output.w;
    let mut px = 0;
    while px < pixels {
        let two = px + 1 < pixels;
        im2col::<0>(p, input, px, cols);
        im2col::<1>(p, input, if two { px + 1 } else { px }, cols);
        let (row0, rest) = output[px * oc..].split_at_mut(oc);
        if oc % 2 == 1 {
            // The odd last channel (its plain row follows the pairs).
            let o = oc - 1;
            let b = q.bias.get(o);
            let [a0, a1] = dot_2x1(cols, &p.weights[o * kp..], groups, [b, b]);
            let rq = ChannelRq::new(q.multiplier.get(o), q.shift.get(o));
            let (zp, lo, hi) = (p.output_zp, p.clamp.min as i32, p.clamp.max as i32);
            row0[o] = requantize(a0, rq, zp, lo, hi);
            if two {
                rest[o] = requantize(a1, rq, zp, lo, hi);
            }
        }
        let row1 = if two { Some(&mut rest[..oc]) } else { None };
        conv_pairs(cols, groups, p.weights, pairs, table, clamp, row0, row1);
        px += 2;
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
    let k = input.len();
    let kp = padded_depth(k);
    let groups = kp / 4;
    let n = output.len();
    let x = &mut scratch[..kp / 2];
    let offset = lanes(-p.input_zp);
    let full = k & !3;
    widen(&input[..full], offset, x);
    if full < k {
        // The tail group meets zero weights past k; any value would do there.
        let word = (0..4).fold(0u32, |w, i| {
            w | (input.get(full + i).map_or(0, |&b| b as u8 as u32) << (8 * i))
        });
        x[full / 2] = sxtab16(offset, word);
        x[full / 2 + 1] = sxtab16_ror8(offset, word);
    }
    let q = &p.quant;
    let quads = n / 4;
    let arrays = (q.bias.bytes(), q.multiplier.bytes(), q.shift.bytes());
    if !fc_quads(
        x,
        groups,
        p.weights,
        quads,
        arrays,
        (p.output_zp, p.clamp.min, p.clamp.max),
        output,
    ) {
        // Weights off a 4-byte boundary (never from a plan): the portable kernel.
        return portable::fully_connected(p, input, output, scratch);
    }
    let (zp, lo, hi) = (p.output_zp, p.clamp.min as i32, p.clamp.max as i32);
    let rq = |o: usize| ChannelRq::new(q.multiplier.get(o), q.shift.get(o));
    let mut o = quads * 4;
    if o + 1 < n {
        let [a0, a1] = dot_1x2(
            x,
            &p.weights[o * kp..],
            groups,
            [q.bias.get(o), q.bias.get(o + 1)],
        );
        output[o] = requantize(a0, rq(o), zp, lo, hi);
        output[o + 1] = requantize(a1, rq(o + 1), zp, lo, hi);
        o += 2;
    }
    if o < n {
        output[o] = requantize(
            dot_1x1(x, &p.weights[o * kp..], groups, q.bias.get(o)),
            rq(o),
            zp,
            lo,
            hi,
        );
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
    let strip_w = iw + pad.left + pad.right;
    let (table, strip) = scratch.split_at_mut(kh * 3 * kh * kw);
    let strip = &mut strip[..kh * strip_w];
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
        );
        // The strip is a ring of kh padded input rows (this group's 4 channels, the zero point
        // in the padding); padded row `r` lives in ring row `r % kh`, and each output row only
        // fetches the rows it does not share with the previous one.
        let mut next_row = 0;
        for oy in 0..oh {
            let top = oy * win.stride_h;
            for r in top.max(next_row)..top + kh {
                let srow = &mut strip[(r % kh) * strip_w..][..strip_w];
                let iy = r as isize - pad.top as isize;
                if iy < 0 || iy as usize >= ih {
                    srow.fill(zp4);
                    continue;
                }
                let (left, rest) = srow.split_at_mut(pad.left);
                let (mid, right) = rest.split_at_mut(iw);
                left.fill(zp4);
                right.fill(zp4);
                gather_words(&input[iy as usize * iw * c + ch..], c, iw, mid);
            }
            next_row = next_row.max(top + kh);
            row.rotate(top);
            row.run(strip, 0, ow, &mut output[oy * ow * c + ch..]);
        }
    }
    Ok(())
}

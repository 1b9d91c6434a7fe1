//! Conv2d: the packed weight layout and the portable kernel.
//!
//! Packed layout (conv and fully connected): each output channel's OHWI row of `K` weights is padded
//! with zeros to `Kp = padded_depth(K)` (a multiple of 4), and output channels go in pairs, their
//! rows interleaved in groups of 4: pair `p` holds, for each group `g`, the 4 bytes of channel
//! `2p` then the 4 bytes of channel `2p + 1`. An odd last channel keeps its plain padded row. The
//! DSP kernels load one word per channel per group with a single pointer; the portable kernel
//! indexes the same bytes.

use super::{ConvParams, Window};
use crate::Problem;
use crate::requantize::requantize;

/// `K` rounded up to a multiple of 4.
pub const fn padded_depth(k: usize) -> usize {
    (k + 3) & !3
}

/// Bytes of packed weights for `channels` output channels of depth `k`.
pub const fn conv_weights_len(channels: usize, k: usize) -> usize {
    channels * padded_depth(k)
}

pub(crate) fn checked_weights_len(channels: usize, k: usize) -> Option<usize> {
    channels.checked_mul(k.checked_add(3)? & !3)
}

/// Index in the packed weights of weight `k` of output channel `channel`.
#[inline(always)]
pub const fn conv_weight_index(channel: usize, k: usize, channels: usize, depth: usize) -> usize {
    let kp = padded_depth(depth);
    let base = (channel & !1) * kp;
    if (channel | 1) < channels {
        base + (k >> 2) * 8 + (channel & 1) * 4 + (k & 3)
    } else {
        base + k
    }
}

/// Packs OHWI weights (`channels` rows of `depth` weights) into `packed`, which must be
/// [`conv_weights_len`] long. Returns `false` (and writes nothing) on a length mismatch.
pub fn pack_conv_weights(ohwi: &[i8], channels: usize, depth: usize, packed: &mut [i8]) -> bool {
    if Some(ohwi.len()) != channels.checked_mul(depth)
        || Some(packed.len()) != checked_weights_len(channels, depth)
    {
        return false;
    }
    packed.fill(0);
    for o in 0..channels {
        for k in 0..depth {
            packed[conv_weight_index(o, k, channels, depth)] = ohwi[o * depth + k];
        }
    }
    true
}

/// Dot products of one reduction vector (`row`, each element mapped by `value`) with the packed
/// weights of output channels `o` and `o + 1` (or `o` alone when it is the odd last channel).
/// `row` may be shorter than `kp`: the padding meets zero weights. Weights missing past the end
/// (never, after the kernels' checks) count as zeros: no panic path.
#[inline(always)]
fn dot_pair<T: Copy>(
    row: &[T],
    value: impl Fn(T) -> i32,
    weights: &[i8],
    kp: usize,
    o: usize,
    channels: usize,
) -> (i32, i32) {
    let (mut a0, mut a1) = (0i32, 0i32);
    let w = weights.get(o * kp..).unwrap_or(&[]);
    if o + 1 < channels {
        let (groups, tail) = row.as_chunks::<4>();
        let (w, _) = w.get(..2 * kp).unwrap_or(&[]).as_chunks::<8>();
        for (x, w) in groups.iter().zip(w) {
            for j in 0..4 {
                let x = value(x[j]);
                a0 = a0.wrapping_add(x * w[j] as i32);
                a1 = a1.wrapping_add(x * w[4 + j] as i32);
            }
        }
        if !tail.is_empty()
            && let Some(w) = w.get(groups.len())
        {
            for ((&x, &w0), &w1) in tail.iter().zip(&w[..4]).zip(&w[4..]) {
                a0 = a0.wrapping_add(value(x) * w0 as i32);
                a1 = a1.wrapping_add(value(x) * w1 as i32);
            }
        }
    } else {
        for (&x, &w) in row.iter().zip(w.get(..kp).unwrap_or(&[])) {
            a0 = a0.wrapping_add(value(x) * w as i32);
        }
    }
    (a0, a1)
}

/// Portable conv2d: for each output pixel, its reduction vector (input minus zero point, 0 in the
/// padding) goes to `scratch` as int32, then meets each channel pair's packed weights.
pub fn conv2d(
    p: &ConvParams,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u32],
) -> Result<(), Problem> {
    p.check(input.len(), output.len(), scratch.len())?;
    let (ih, iw, ic) = (p.input.h, p.input.w, p.input.c);
    let (oh, ow, oc) = (p.output.h, p.output.w, p.output.c);
    let win = &p.window;
    let kp = padded_depth(p.depth());
    let row = scratch.get_mut(..kp).ok_or(Problem::ScratchTooSmall)?;
    // `ConvParams::check` sized the output (`oh * ow` pixels of `oc > 0` channels) and made every
    // valid tap a pixel of the input and every row fit `kp`: the `get`s below cost what a bounds
    // check does and never fail; if they did, the kernel would return an error, not panic.
    if oc == 0 {
        return Err(Problem::BadShape);
    }
    let mut pixels = output.chunks_exact_mut(oc);
    for oy in 0..oh {
        let (ky0, ky1, iy0) = Window::taps(oy, win.stride_h, win.padding.top, win.kernel_h, ih);
        for ox in 0..ow {
            let (kx0, kx1, ix0) =
                Window::taps(ox, win.stride_w, win.padding.left, win.kernel_w, iw);
            row.fill(0);
            for ky in ky0..ky1 {
                let iy = (iy0 + ky as isize) as usize;
                let n = (kx1 - kx0) * ic;
                let at = (iy * iw + (ix0 + kx0 as isize) as usize) * ic;
                let src = input.get(at..at + n).ok_or(Problem::BadLength)?;
                let at = (ky * win.kernel_w + kx0) * ic;
                let dst = row.get_mut(at..at + n).ok_or(Problem::BadLength)?;
                for (d, &x) in dst.iter_mut().zip(src) {
                    *d = (x as i32 - p.input_zp) as u32;
                }
            }
            let out = pixels.next().ok_or(Problem::BadLength)?;
            for (i, pair) in out.chunks_mut(2).enumerate() {
                let o = 2 * i;
                let (a0, a1) = dot_pair(row, |x| x as i32, p.weights, kp, o, oc);
                for ((y, acc), c) in pair.iter_mut().zip([a0, a1]).zip(o..) {
                    let acc = acc.wrapping_add(p.quant.bias.get(c));
                    *y = requantize(
                        acc,
                        p.quant.multiplier.get(c),
                        p.quant.shift.get(c),
                        p.output_zp,
                        p.clamp.min,
                        p.clamp.max,
                    );
                }
            }
        }
    }
    Ok(())
}

/// Portable fully connected: the input is the reduction vector. `scratch` is only checked for size.
pub fn fully_connected(
    p: &super::FullyConnectedParams,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u32],
) -> Result<(), Problem> {
    p.check(input.len(), output.len(), scratch.len())?;
    let (k, n) = (input.len(), output.len());
    let kp = padded_depth(k);
    let zp = p.input_zp;
    for (i, pair) in output.chunks_mut(2).enumerate() {
        let o = 2 * i;
        let (a0, a1) = dot_pair(input, |x| x as i32 - zp, p.weights, kp, o, n);
        for ((y, acc), c) in pair.iter_mut().zip([a0, a1]).zip(o..) {
            let acc = acc.wrapping_add(p.quant.bias.get(c));
            *y = requantize(
                acc,
                p.quant.multiplier.get(c),
                p.quant.shift.get(c),
                p.output_zp,
                p.clamp.min,
                p.clamp.max,
            );
        }
    }
    Ok(())
}

//! Portable depthwise conv2d.

use core::num::NonZeroUsize;

use super::{DepthwiseParams, Window};
use crate::Problem;
use crate::requantize::requantize;

/// Output channels accumulated together (their int32 sums live on the stack).
const BLOCK: usize = 64;

/// Portable depthwise conv2d. `scratch` is only checked for size.
///
/// Per output pixel and block of up to [`BLOCK`] output channels, each valid tap streams its
/// input pixel and its weights through the block's sums (the same sums, in the same tap order,
/// as one channel at a time).
pub fn depthwise_conv2d(
    p: &DepthwiseParams,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u32],
) -> Result<(), Problem> {
    p.check(input.len(), output.len(), scratch.len())?;
    let (ih, iw, ic) = (p.input.h, p.input.w, p.input.c);
    let (oh, ow, oc) = (p.output.h, p.output.w, p.output.c);
    let win = &p.window;
    // `DepthwiseParams::check`: multiplier > 0, `oc = ic * multiplier > 0`, every valid tap a
    // pixel of the input, weights `[kh, kw, oc]`, output `oh * ow * oc`. The `get`s below cost
    // what a bounds check does and never fail; if they did, the kernel would return an error.
    let mult = NonZeroUsize::new(p.multiplier).ok_or(Problem::BadShape)?;
    if oc == 0 || ic == 0 {
        return Err(Problem::BadShape);
    }
    let offset = -p.input_zp;
    let mut pixels = output.chunks_exact_mut(oc);
    for oy in 0..oh {
        let (ky0, ky1, iy0) = Window::taps(oy, win.stride_h, win.padding.top, win.kernel_h, ih);
        for ox in 0..ow {
            let (kx0, kx1, ix0) =
                Window::taps(ox, win.stride_w, win.padding.left, win.kernel_w, iw);
            let out = pixels.next().ok_or(Problem::BadLength)?;
            for (block, out) in out.chunks_mut(BLOCK).enumerate() {
                let o0 = block * BLOCK;
                // Input channel and position in its multiplier group of output channel o0.
                let (i0, m0) = (o0 / mult, o0 % mult);
                let mut acc = [0i32; BLOCK];
                for (a, o) in acc.iter_mut().zip(o0..o0 + out.len()) {
                    *a = p.quant.bias.get(o);
                }
                for ky in ky0..ky1 {
                    let iy = (iy0 + ky as isize) as usize;
                    for kx in kx0..kx1 {
                        let ix = (ix0 + kx as isize) as usize;
                        let x = (iy * iw + ix) * ic + i0;
                        let w = (ky * win.kernel_w + kx) * oc + o0;
                        let x = input.get(x..(iy * iw + ix + 1) * ic);
                        let w = p.weights.get(w..w + out.len());
                        let (Some(x), Some(w)) = (x, w) else {
                            return Err(Problem::BadLength);
                        };
                        if mult.get() == 1 {
                            for ((a, &x), &w) in acc.iter_mut().zip(x).zip(w) {
                                *a = a.wrapping_add((x as i32 + offset) * w as i32);
                            }
                        } else {
                            // Output channel o reads input channel o / mult: step through x
                            // once per mult weights.
                            let (mut x, mut m) = (x.iter(), m0);
                            let mut xv = x.next().map_or(0, |&v| v as i32 + offset);
                            for (a, &w) in acc.iter_mut().zip(w) {
                                if m == mult.get() {
                                    m = 0;
                                    xv = x.next().map_or(0, |&v| v as i32 + offset);
                                }
                                *a = a.wrapping_add(xv * w as i32);
                                m += 1;
                            }
                        }
                    }
                }
                for ((y, &acc), o) in out.iter_mut().zip(&acc).zip(o0..) {
                    *y = requantize(
                        acc,
                        p.quant.multiplier.get(o),
                        p.quant.shift.get(o),
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

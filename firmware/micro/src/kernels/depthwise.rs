//! Portable depthwise conv2d.

use super::{DepthwiseParams, Window};
use crate::Problem;
use crate::requantize::requantize;

/// Portable depthwise conv2d. `scratch` is only checked for size.
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
    let mult = p.multiplier;
    let offset = -p.input_zp;
    for oy in 0..oh {
        let (ky0, ky1, iy0) = Window::taps(oy, win.stride_h, win.padding.top, win.kernel_h, ih);
        for ox in 0..ow {
            let (kx0, kx1, ix0) =
                Window::taps(ox, win.stride_w, win.padding.left, win.kernel_w, iw);
            for o in 0..oc {
                let i = o / mult;
                let mut acc = p.quant.bias.get(o);
                for ky in ky0..ky1 {
                    let iy = (iy0 + ky as isize) as usize;
                    for kx in kx0..kx1 {
                        let ix = (ix0 + kx as isize) as usize;
                        let x = input[(iy * iw + ix) * ic + i] as i32 + offset;
                        let w = p.weights[(ky * win.kernel_w + kx) * oc + o] as i32;
                        acc = acc.wrapping_add(x * w);
                    }
                }
                output[(oy * ow + ox) * oc + o] = requantize(
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
    Ok(())
}

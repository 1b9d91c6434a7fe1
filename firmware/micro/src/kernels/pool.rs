//! Max, average and global average pooling.

use super::{GlobalPoolParams, PoolParams, Window};
use crate::Problem;
use crate::requantize::requantize;

/// Channels reduced together in one pass of average pooling (its int32 sums live on the stack).
const CHUNK: usize = 64;

/// For every output pixel: `start(state, its channels)`, `tap(state, its channels, input pixel's
/// channels)` for each valid tap, `end(state, its channels, valid tap count)`.
#[inline(always)]
fn for_each_tap<S>(
    p: &PoolParams,
    input: &[i8],
    output: &mut [i8],
    state: &mut S,
    start: impl Fn(&mut S, &mut [i8]),
    tap: impl Fn(&mut S, &mut [i8], &[i8]),
    end: impl Fn(&mut S, &mut [i8], usize),
) {
    let (ih, iw, c) = (p.input.h, p.input.w, p.input.c);
    let win = &p.window;
    // `PoolParams::check` made the output `output.h * output.w` pixels of `c > 0` channels and
    // every valid tap a pixel of the input; the `get` below costs what a bounds check does, and a
    // row outside the input (impossible after the check) is skipped instead of panicking.
    if c == 0 {
        return;
    }
    let mut pixels = output.chunks_exact_mut(c);
    for oy in 0..p.output.h {
        let (ky0, ky1, iy0) = Window::taps(oy, win.stride_h, win.padding.top, win.kernel_h, ih);
        for ox in 0..p.output.w {
            let (kx0, kx1, ix0) =
                Window::taps(ox, win.stride_w, win.padding.left, win.kernel_w, iw);
            let Some(out) = pixels.next() else { return };
            let count = (ky1 - ky0) * (kx1 - kx0);
            start(state, out);
            for ky in ky0..ky1 {
                // The row's valid taps are contiguous pixels of the input.
                let first = (iy0 + ky as isize) as usize * iw + (ix0 + kx0 as isize) as usize;
                if let Some(taps) = input.get(first * c..(first + kx1 - kx0) * c) {
                    for x in taps.chunks_exact(c) {
                        tap(state, out, x);
                    }
                }
            }
            end(state, out, count);
        }
    }
}

/// Max pooling over the valid taps (padding never wins), then the clamp.
pub fn max_pool(p: &PoolParams, input: &[i8], output: &mut [i8]) -> Result<(), Problem> {
    p.check(input.len(), output.len())?;
    let (lo, hi) = (p.clamp.min, p.clamp.max);
    for_each_tap(
        p,
        input,
        output,
        &mut (),
        |_, out| out.fill(i8::MIN),
        |_, out, x| {
            for (o, &x) in out.iter_mut().zip(x) {
                *o = (*o).max(x);
            }
        },
        |_, out, _| {
            for o in out {
                *o = (*o).max(lo).min(hi);
            }
        },
    );
    Ok(())
}

/// Average pooling: sum of the valid taps divided by their count, rounded half away from zero
/// (TFLite's `(sum +- count / 2) / count` with truncating division), then the clamp.
pub fn average_pool(p: &PoolParams, input: &[i8], output: &mut [i8]) -> Result<(), Problem> {
    p.check(input.len(), output.len())?;
    let c = p.input.c;
    let (lo, hi) = (p.clamp.min as i32, p.clamp.max as i32);
    // Channel chunks outermost, so that the sums fit a fixed array.
    for c0 in (0..c).step_by(CHUNK) {
        let mut sums = [0i32; CHUNK];
        // The chunk's channels of a pixel: at most CHUNK (zip stops at the shorter side).
        fn chunk(px: &[i8], c0: usize) -> &[i8] {
            px.get(c0..).unwrap_or(&[])
        }
        for_each_tap(
            p,
            input,
            output,
            &mut sums,
            |sums, _| sums.fill(0),
            |sums, _, x| {
                for (s, &x) in sums.iter_mut().zip(chunk(x, c0)) {
                    *s += x as i32;
                }
            },
            |sums, out, count| {
                // Every window overlaps the input (checked), so count >= 1; max(1) after the cast
                // keeps the division from a zero or a -1 divisor (no panic path).
                let count = (count as i32).max(1);
                let out = out.get_mut(c0..).unwrap_or(&mut []);
                for (o, &sum) in out.iter_mut().zip(&sums[..]) {
                    let avg = if sum > 0 {
                        (sum + count / 2) / count
                    } else {
                        (sum - count / 2) / count
                    };
                    *o = avg.max(lo).min(hi) as i8;
                }
            },
        );
    }
    Ok(())
}

/// Global average pooling, see [`GlobalPoolParams`].
pub fn global_average_pool(
    p: &GlobalPoolParams,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Problem> {
    p.check(input.len(), output.len())?;
    let Some(c) = core::num::NonZeroUsize::new(p.input.c) else {
        return Err(Problem::BadShape);
    };
    for (ch, out) in output.iter_mut().enumerate() {
        let sum: i32 = input
            .get(ch..)
            .unwrap_or(&[])
            .iter()
            .step_by(c.get())
            .map(|&x| x as i32 - p.input_zp)
            .sum();
        *out = requantize(
            sum,
            p.multiplier,
            p.shift,
            p.output_zp,
            p.clamp.min,
            p.clamp.max,
        );
    }
    Ok(())
}

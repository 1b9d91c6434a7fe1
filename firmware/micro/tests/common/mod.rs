//! Naive references (i64 / i128 / f64 math, OHWI weights) the kernels are checked against.
#![allow(dead_code)]

use perch_micro::kernels::{Clamp, I32Le, Padding, Shape, Window};
use perch_micro::requantize::quantize_multiplier;
use proptest::prelude::*;

/// `x * multiplier * 2^(shift - 31)`: high-mul rounding half up, then power-of-two division
/// rounding half away from zero, written independently of the crate with i128 arithmetic.
pub fn ref_scale(x: i32, multiplier: i32, shift: i32) -> i32 {
    let x = if shift > 0 {
        x.wrapping_shl(shift as u32)
    } else {
        x
    };
    let hm = if x == i32::MIN && multiplier == i32::MIN {
        i32::MAX as i128
    } else {
        let p = x as i128 * multiplier as i128;
        (p + (1 << 30)).div_euclid(1 << 31)
    };
    let e = (-shift).max(0) as u32;
    if e == 0 {
        return hm as i32;
    }
    let half = 1i128 << (e - 1);
    // Ties away from zero on both sides.
    let r = if hm >= 0 {
        (hm + half) >> e
    } else {
        -((-hm + half) >> e)
    };
    r as i32
}

pub fn ref_requant(acc: i64, m: i32, s: i32, zp: i32, clamp: Clamp) -> i8 {
    let acc = acc as i32; // the accumulators are int32 by definition
    (ref_scale(acc, m, s) as i64 + zp as i64).clamp(clamp.min as i64, clamp.max as i64) as i8
}

pub fn le(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn arr(b: &[u8]) -> I32Le<'_> {
    I32Le::new(b).unwrap()
}

/// Naive conv over OHWI weights.
#[allow(clippy::too_many_arguments)]
pub fn ref_conv(
    input: &[i8],
    s: Shape,
    win: &Window,
    ohwi: &[i8],
    cout: usize,
    bias: &[i32],
    m: &[i32],
    sh: &[i32],
    in_zp: i32,
    out_zp: i32,
    clamp: Clamp,
) -> Vec<i8> {
    let (oh, ow) = win.output_hw(s.h, s.w).unwrap();
    let mut out = vec![0; oh * ow * cout];
    for oy in 0..oh {
        for ox in 0..ow {
            for o in 0..cout {
                let mut acc = bias[o] as i64;
                for ky in 0..win.kernel_h {
                    for kx in 0..win.kernel_w {
                        let iy = (oy * win.stride_h + ky) as i64 - win.padding.top as i64;
                        let ix = (ox * win.stride_w + kx) as i64 - win.padding.left as i64;
                        if iy < 0 || ix < 0 || iy >= s.h as i64 || ix >= s.w as i64 {
                            continue;
                        }
                        for i in 0..s.c {
                            let x = input[(iy as usize * s.w + ix as usize) * s.c + i] as i64
                                - in_zp as i64;
                            let w = ohwi[((o * win.kernel_h + ky) * win.kernel_w + kx) * s.c + i]
                                as i64;
                            acc += x * w;
                        }
                    }
                }
                out[(oy * ow + ox) * cout + o] = ref_requant(acc, m[o], sh[o], out_zp, clamp);
            }
        }
    }
    out
}

/// Naive depthwise conv, weights [kh, kw, c * mult].
#[allow(clippy::too_many_arguments)]
pub fn ref_depthwise(
    input: &[i8],
    s: Shape,
    win: &Window,
    mult: usize,
    weights: &[i8],
    bias: &[i32],
    m: &[i32],
    sh: &[i32],
    in_zp: i32,
    out_zp: i32,
    clamp: Clamp,
) -> Vec<i8> {
    let (oh, ow) = win.output_hw(s.h, s.w).unwrap();
    let oc = s.c * mult;
    let mut out = vec![0; oh * ow * oc];
    for oy in 0..oh {
        for ox in 0..ow {
            for o in 0..oc {
                let mut acc = bias[o] as i64;
                for ky in 0..win.kernel_h {
                    for kx in 0..win.kernel_w {
                        let iy = (oy * win.stride_h + ky) as i64 - win.padding.top as i64;
                        let ix = (ox * win.stride_w + kx) as i64 - win.padding.left as i64;
                        if iy < 0 || ix < 0 || iy >= s.h as i64 || ix >= s.w as i64 {
                            continue;
                        }
                        let x = input[(iy as usize * s.w + ix as usize) * s.c + o / mult] as i64
                            - in_zp as i64;
                        acc += x * weights[(ky * win.kernel_w + kx) * oc + o] as i64;
                    }
                }
                out[(oy * ow + ox) * oc + o] = ref_requant(acc, m[o], sh[o], out_zp, clamp);
            }
        }
    }
    out
}

/// A random window valid for an input of `h` x `w`.
pub fn window_for(
    h: usize,
    w: usize,
    max_kernel: usize,
    max_stride: usize,
) -> impl Strategy<Value = Window> {
    (
        1..=max_kernel.min(h + 2),
        1..=max_kernel.min(w + 2),
        1..=max_stride,
        1..=max_stride,
    )
        .prop_flat_map(move |(kh, kw, sh, sw)| (Just((kh, kw, sh, sw)), 0..kh, 0..kh, 0..kw, 0..kw))
        .prop_filter_map(
            "kernel larger than padded input",
            move |((kh, kw, sh, sw), pt, pb, pl, pr)| {
                let win = Window {
                    kernel_h: kh,
                    kernel_w: kw,
                    stride_h: sh,
                    stride_w: sw,
                    padding: Padding {
                        top: pt,
                        left: pl,
                        bottom: pb,
                        right: pr,
                    },
                };
                win.output_hw(h, w).map(|_| win)
            },
        )
}

/// Random per-channel requantization constants from random real scales.
pub fn requant_strategy(channels: usize) -> impl Strategy<Value = (Vec<i32>, Vec<i32>)> {
    prop::collection::vec(-14.0f64..1.0, channels).prop_map(|exps| {
        exps.iter()
            .map(|e| quantize_multiplier(2f64.powf(*e)))
            .unzip()
    })
}

pub fn clamp_strategy() -> impl Strategy<Value = Clamp> {
    prop_oneof![
        Just(Clamp::NONE),
        (any::<i8>(), any::<i8>()).prop_map(|(a, b)| Clamp {
            min: a.min(b),
            max: a.max(b)
        }),
    ]
}

pub fn i8s(n: usize) -> impl Strategy<Value = Vec<i8>> {
    prop::collection::vec(any::<i8>(), n)
}

pub fn zp() -> impl Strategy<Value = i32> {
    -128i32..=127
}

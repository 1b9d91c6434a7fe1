//! Every kernel against a naive reference, on random shapes, zero points and scales.

mod common;

use common::*;
use perch_micro::kernels::{
    self, AddParams, ChannelQuant, Clamp, ConvParams, DepthwiseParams, FullyConnectedParams,
    GlobalPoolParams, Padding, PoolParams, Shape, Window, conv_weights_len, pack_conv_weights,
    portable,
};
use proptest::prelude::*;

fn conv_case() -> impl Strategy<Value = (Shape, Window, usize)> {
    (1usize..9, 1usize..9, 1usize..11, 1usize..10).prop_flat_map(|(h, w, c, cout)| {
        (
            Just(Shape::new(h, w, c)),
            window_for(h, w, 4, 3),
            Just(cout),
        )
    })
}

#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn run_conv(
    s: Shape,
    win: Window,
    cout: usize,
    input: &[i8],
    ohwi: &[i8],
    bias: &[i32],
    (m, sh): &(Vec<i32>, Vec<i32>),
    in_zp: i32,
    out_zp: i32,
    clamp: Clamp,
) -> (Vec<i8>, Vec<i8>, Vec<i8>) {
    let depth = win.kernel_h * win.kernel_w * s.c;
    let mut packed = vec![0i8; conv_weights_len(cout, depth)];
    assert!(pack_conv_weights(ohwi, cout, depth, &mut packed));
    let (bb, mb, sb) = (le(bias), le(m), le(sh));
    let (oh, ow) = win.output_hw(s.h, s.w).unwrap();
    let p = ConvParams {
        input: s,
        output: Shape::new(oh, ow, cout),
        window: win,
        input_zp: in_zp,
        output_zp: out_zp,
        clamp,
        weights: &packed,
        quant: ChannelQuant {
            bias: arr(&bb),
            multiplier: arr(&mb),
            shift: arr(&sb),
        },
    };
    let mut scratch = vec![0u32; p.scratch_words()];
    let mut a = vec![0i8; oh * ow * cout];
    let mut b = a.clone();
    portable::conv2d(&p, input, &mut a, &mut scratch).unwrap();
    kernels::conv2d(&p, input, &mut b, &mut scratch).unwrap();
    let r = ref_conv(
        input, s, &win, ohwi, cout, bias, m, sh, in_zp, out_zp, clamp,
    );
    (a, b, r)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn conv2d_matches_reference(
        (s, win, cout) in conv_case(),
        in_zp in zp(), out_zp in zp(), clamp in clamp_strategy(),
        data in i8s(8 * 8 * 10), wdata in i8s(9 * 4 * 4 * 10), bdata in prop::collection::vec(-20000i32..20000, 9),
        q in requant_strategy(9),
    ) {
        let depth = win.kernel_h * win.kernel_w * s.c;
        let input = &data[..s.h * s.w * s.c];
        let ohwi = &wdata[..cout * depth];
        let bias = &bdata[..cout];
        let q = (q.0[..cout].to_vec(), q.1[..cout].to_vec());
        let (a, b, r) = run_conv(s, win, cout, input, ohwi, bias, &q, in_zp, out_zp, clamp);
        prop_assert_eq!(&a, &r);
        prop_assert_eq!(&b, &r);
    }

    #[test]
    fn depthwise_matches_reference(
        (s, win, mult) in (1usize..8, 1usize..8, 1usize..10, 1usize..4).prop_flat_map(|(h, w, c, m)| (Just(Shape::new(h, w, c)), window_for(h, w, 4, 3), Just(m))),
        in_zp in zp(), out_zp in zp(), clamp in clamp_strategy(),
        data in i8s(8 * 8 * 10), wdata in i8s(4 * 4 * 10 * 3), bdata in prop::collection::vec(-5000i32..5000, 30),
        q in requant_strategy(30),
    ) {
        let oc = s.c * mult;
        let input = &data[..s.h * s.w * s.c];
        let weights = &wdata[..win.kernel_h * win.kernel_w * oc];
        let (bias, m, sh) = (&bdata[..oc], &q.0[..oc], &q.1[..oc]);
        let (bb, mb, sb) = (le(bias), le(m), le(sh));
        let (oh, ow) = win.output_hw(s.h, s.w).unwrap();
        let p = DepthwiseParams {
            input: s, output: Shape::new(oh, ow, oc), window: win, multiplier: mult,
            input_zp: in_zp, output_zp: out_zp, clamp, weights,
            quant: ChannelQuant { bias: arr(&bb), multiplier: arr(&mb), shift: arr(&sb) },
        };
        let mut a = vec![0i8; oh * ow * oc];
        let mut b = a.clone();
        let mut scratch = vec![0u32; p.scratch_words()];
        portable::depthwise_conv2d(&p, input, &mut a, &mut scratch).unwrap();
        kernels::depthwise_conv2d(&p, input, &mut b, &mut scratch).unwrap();
        let r = ref_depthwise(input, s, &win, mult, weights, bias, m, sh, in_zp, out_zp, clamp);
        prop_assert_eq!(&a, &r);
        prop_assert_eq!(&b, &r);
    }

    #[test]
    fn fully_connected_matches_reference(
        (k, n) in (1usize..300, 1usize..12),
        in_zp in zp(), out_zp in zp(), clamp in clamp_strategy(),
        data in i8s(300), wdata in i8s(300 * 12), bdata in prop::collection::vec(-50000i32..50000, 12),
        q in requant_strategy(12),
    ) {
        let input = &data[..k];
        let w = &wdata[..k * n];
        let mut packed = vec![0i8; conv_weights_len(n, k)];
        prop_assert!(pack_conv_weights(w, n, k, &mut packed));
        let (bb, mb, sb) = (le(&bdata[..n]), le(&q.0[..n]), le(&q.1[..n]));
        let p = FullyConnectedParams {
            input_zp: in_zp, output_zp: out_zp, clamp, weights: &packed,
            quant: ChannelQuant { bias: arr(&bb), multiplier: arr(&mb), shift: arr(&sb) },
        };
        let mut scratch = vec![0u32; FullyConnectedParams::scratch_words(k)];
        let mut a = vec![0i8; n];
        let mut b = a.clone();
        portable::fully_connected(&p, input, &mut a, &mut scratch).unwrap();
        kernels::fully_connected(&p, input, &mut b, &mut scratch).unwrap();
        let r: Vec<i8> = (0..n).map(|o| {
            let acc: i64 = bdata[o] as i64 + (0..k).map(|i| (input[i] as i64 - in_zp as i64) * w[o * k + i] as i64).sum::<i64>();
            ref_requant(acc, q.0[o], q.1[o], out_zp, clamp)
        }).collect();
        prop_assert_eq!(&a, &r);
        prop_assert_eq!(&b, &r);
    }

    #[test]
    fn pools_match_reference(
        (s, win) in (1usize..9, 1usize..9, 1usize..6).prop_flat_map(|(h, w, c)| (Just(Shape::new(h, w, c)), window_for(h, w, 4, 3))),
        clamp in clamp_strategy(), data in i8s(8 * 8 * 5),
    ) {
        let input = &data[..s.h * s.w * s.c];
        let (oh, ow) = win.output_hw(s.h, s.w).unwrap();
        let p = PoolParams { input: s, output: Shape::new(oh, ow, s.c), window: win, clamp };
        let mut mx = vec![0i8; oh * ow * s.c];
        let mut av = mx.clone();
        portable::max_pool(&p, input, &mut mx).unwrap();
        portable::average_pool(&p, input, &mut av).unwrap();
        for oy in 0..oh { for ox in 0..ow { for c in 0..s.c {
            let mut vals = vec![];
            for ky in 0..win.kernel_h { for kx in 0..win.kernel_w {
                let iy = (oy * win.stride_h + ky) as i64 - win.padding.top as i64;
                let ix = (ox * win.stride_w + kx) as i64 - win.padding.left as i64;
                if iy >= 0 && ix >= 0 && iy < s.h as i64 && ix < s.w as i64 {
                    vals.push(input[(iy as usize * s.w + ix as usize) * s.c + c] as f64);
                }
            }}
            let o = (oy * ow + ox) * s.c + c;
            let max = vals.iter().cloned().fold(f64::MIN, f64::max) as i64;
            prop_assert_eq!(mx[o] as i64, max.clamp(clamp.min as i64, clamp.max as i64));
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let avg = mean.round() as i64; // f64::round: half away from zero
            prop_assert_eq!(av[o] as i64, avg.clamp(clamp.min as i64, clamp.max as i64));
        }}}
    }

    #[test]
    fn global_pool_matches_reference(
        (h, w, c) in (1usize..12, 1usize..12, 1usize..8),
        in_zp in zp(), out_zp in zp(), clamp in clamp_strategy(), data in i8s(12 * 12 * 8),
        (si, so) in (0.001f32..1.0, 0.001f32..1.0),
    ) {
        let input = &data[..h * w * c];
        let (multiplier, shift) = GlobalPoolParams::requant(si, so, h, w);
        let p = GlobalPoolParams { input: Shape::new(h, w, c), input_zp: in_zp, output_zp: out_zp, multiplier, shift, clamp };
        let mut out = vec![0i8; c];
        portable::global_average_pool(&p, input, &mut out).unwrap();
        for ch in 0..c {
            let sum: i64 = (0..h * w).map(|i| input[i * c + ch] as i64 - in_zp as i64).sum();
            prop_assert_eq!(out[ch], ref_requant(sum, multiplier, shift, out_zp, clamp));
            // And within one step of the real mean.
            let real = sum as f64 * si as f64 / (h * w) as f64 / so as f64 + out_zp as f64;
            let real = real.clamp(clamp.min as f64, clamp.max as f64);
            prop_assert!((out[ch] as f64 - real).abs() <= 1.0);
        }
    }

    #[test]
    fn add_matches_reference(
        n in 1usize..64, a in i8s(64), b in i8s(64),
        (z1, z2, zo) in (zp(), zp(), zp()), clamp in clamp_strategy(),
        (s1, s2, so) in (0.001f32..1.0, 0.001f32..1.0, 0.001f32..1.0),
    ) {
        let p = AddParams::new((s1, z1), (s2, z2), (so, zo), clamp);
        let mut out = vec![0i8; n];
        portable::add(&p, &a[..n], &b[..n], &mut out).unwrap();
        for i in 0..n {
            let x1 = ref_scale((a[i] as i32 - z1) << 20, p.multiplier1, p.shift1);
            let x2 = ref_scale((b[i] as i32 - z2) << 20, p.multiplier2, p.shift2);
            let v = ref_scale(x1 + x2, p.output_multiplier, p.output_shift) + zo;
            prop_assert_eq!(out[i] as i32, v.clamp(clamp.min as i32, clamp.max as i32));
            // Within one step of the real sum.
            let real = ((a[i] as f64 - z1 as f64) * s1 as f64 + (b[i] as f64 - z2 as f64) * s2 as f64) / so as f64 + zo as f64;
            let real = real.clamp(clamp.min as f64, clamp.max as f64);
            prop_assert!((out[i] as f64 - real).abs() <= 1.0, "{} vs {}", out[i], real);
        }
    }

    #[test]
    fn softmax_close_to_float(
        depth in 1usize..40, rows in 1usize..3, data in i8s(120), scale in 0.01f32..0.5,
    ) {
        let input = &data[..depth * rows];
        let table: Vec<i32> = perch_micro::tables::softmax_table(scale, 1.0).iter().map(|&v| v as i32).collect();
        let tb = le(&table);
        let mut out = vec![0i8; input.len()];
        kernels::softmax(&arr(&tb), depth, input, &mut out).unwrap();
        for (x, y) in input.chunks(depth).zip(out.chunks(depth)) {
            let m = *x.iter().max().unwrap() as f64;
            let e: Vec<f64> = x.iter().map(|&v| ((v as f64 - m) * scale as f64).exp()).collect();
            let s: f64 = e.iter().sum();
            for (ei, &yi) in e.iter().zip(y) {
                let real = (ei / s * 256.0 - 128.0).clamp(-128.0, 127.0);
                prop_assert!((yi as f64 - real).abs() <= 1.0, "{} vs {}", yi, real);
            }
        }
    }
}

#[test]
fn lookup_and_reshape() {
    let table: [i8; 256] = core::array::from_fn(|i| (255 - i) as u8 as i8);
    let input = [-128i8, -1, 0, 127];
    let mut out = [0i8; 4];
    kernels::lookup(&table, &input, &mut out).unwrap();
    assert_eq!(out, [table[0], table[127], table[128], table[255]]);
    let mut copy = [0i8; 4];
    kernels::reshape(&input, &mut copy).unwrap();
    assert_eq!(copy, input);
    assert_eq!(
        kernels::reshape(&input, &mut [0i8; 3]),
        Err(perch_micro::Problem::BadLength)
    );
}

#[test]
fn lookup_table_for_activations() {
    use perch_micro::tables::{activation, lookup_table};
    let t = lookup_table(activation::sigmoid, (0.1, 0), (1.0 / 256.0, -128));
    assert_eq!(t[128], 0); // sigmoid(0) = 0.5 -> 128 - 128
    assert_eq!(t[255], 127); // sigmoid(12.7) saturates
    let relu6ish = lookup_table(activation::hard_swish, (0.05, 10), (0.05, 10));
    assert_eq!(relu6ish[(10 + 128) as usize], 10); // hard_swish(0) = 0
}

#[test]
fn kernels_refuse_bad_parameters() {
    use perch_micro::Problem;
    let (bb, mb, sb) = (le(&[0]), le(&[1 << 30]), le(&[40]));
    let p = ConvParams {
        input: Shape::new(2, 2, 1),
        output: Shape::new(2, 2, 1),
        window: Window {
            kernel_h: 1,
            kernel_w: 1,
            stride_h: 1,
            stride_w: 1,
            padding: Default::default(),
        },
        input_zp: 0,
        output_zp: 0,
        clamp: Clamp::NONE,
        weights: &[1, 0, 0, 0],
        quant: ChannelQuant {
            bias: arr(&bb),
            multiplier: arr(&mb),
            shift: arr(&sb),
        },
    };
    let mut scratch = [0u32; 8];
    assert_eq!(
        kernels::conv2d(&p, &[0; 4], &mut [0; 4], &mut scratch),
        Err(Problem::BadQuantization)
    );
    let sb = le(&[0]);
    let p = ConvParams {
        quant: ChannelQuant {
            bias: arr(&bb),
            multiplier: arr(&mb),
            shift: arr(&sb),
        },
        ..p
    };
    assert_eq!(
        kernels::conv2d(&p, &[0; 3], &mut [0; 4], &mut scratch),
        Err(Problem::BadLength)
    );
    assert_eq!(
        kernels::conv2d(&p, &[0; 4], &mut [0; 4], &mut []),
        Err(Problem::ScratchTooSmall)
    );
    let bad_window = Window {
        stride_h: 0,
        ..p.window
    };
    assert_eq!(
        kernels::conv2d(
            &ConvParams {
                window: bad_window,
                ..p
            },
            &[0; 4],
            &mut [0; 4],
            &mut scratch
        ),
        Err(Problem::BadParameter)
    );
    let mut out = [0; 4];
    kernels::conv2d(&p, &[1, 2, -3, 4], &mut out, &mut scratch).unwrap();
    assert_eq!(out, [1, 1, -1, 2]); // x * 0.5: 0.5 -> 1 and -1.5 -> -1 (high-mul ties go up)
}

/// Scratch sizes saturate instead of wrapping (on a 32-bit MCU these products can pass 2^32), so
/// an impossible shape fails the scratch check instead of passing it with a wrapped size.
#[test]
fn scratch_sizes_saturate() {
    assert_eq!(
        FullyConnectedParams::scratch_words(usize::MAX),
        usize::MAX / 2
    );
    let (bb, mb, sb) = (le(&[0]), le(&[1 << 30]), le(&[0]));
    let quant = ChannelQuant {
        bias: arr(&bb),
        multiplier: arr(&mb),
        shift: arr(&sb),
    };
    let huge = 1 << (usize::BITS / 2 - 10);
    let window = Window {
        kernel_h: huge,
        kernel_w: huge,
        stride_h: 1,
        stride_w: 1,
        padding: Padding::default(),
    };
    let conv = ConvParams {
        input: Shape::new(1, 1, 1),
        output: Shape::new(1, 1, usize::MAX / 2),
        window: Window {
            kernel_h: 1,
            kernel_w: 1,
            ..window
        },
        input_zp: 0,
        output_zp: 0,
        clamp: Clamp::NONE,
        weights: &[],
        quant,
    };
    assert_eq!(conv.scratch_words(), usize::MAX);
    let depthwise = DepthwiseParams {
        input: Shape::new(huge, huge, 1),
        output: Shape::new(1, 1, 1),
        window,
        multiplier: 1,
        input_zp: 0,
        output_zp: 0,
        clamp: Clamp::NONE,
        weights: &[],
        quant,
    };
    assert_eq!(depthwise.scratch_words(), usize::MAX);
}

/// Average pooling sums channels in chunks of 64: a layer wider than two chunks.
#[test]
fn average_pool_many_channels() {
    let (h, w, c) = (3, 4, 130);
    let input: Vec<i8> = (0..h * w * c).map(|i| (i * 37 % 256) as u8 as i8).collect();
    let win = Window {
        kernel_h: 2,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 1,
        padding: Padding {
            top: 1,
            left: 0,
            bottom: 0,
            right: 2,
        },
    };
    let (oh, ow) = win.output_hw(h, w).unwrap();
    let p = PoolParams {
        input: Shape::new(h, w, c),
        output: Shape::new(oh, ow, c),
        window: win,
        clamp: Clamp::NONE,
    };
    let mut out = vec![0i8; oh * ow * c];
    kernels::average_pool(&p, &input, &mut out).unwrap();
    for oy in 0..oh {
        for ox in 0..ow {
            for ch in 0..c {
                let mut vals = vec![];
                for ky in 0..2 {
                    for kx in 0..3 {
                        let (iy, ix) = ((oy + ky) as i64 - 1, (ox + kx) as i64);
                        if iy >= 0 && ix < w as i64 && iy < h as i64 {
                            vals.push(input[(iy as usize * w + ix as usize) * c + ch] as f64);
                        }
                    }
                }
                let avg = (vals.iter().sum::<f64>() / vals.len() as f64).round() as i8;
                assert_eq!(out[(oy * ow + ox) * c + ch], avg);
            }
        }
    }
}

/// The portable depthwise kernel sums output channels in blocks of 64: more than one block, with a
/// block boundary inside a multiplier group (90 = 30 channels x 3; channel 64 is the second of
/// input channel 21's group), and a plain multiplier of 1 over 130 channels.
#[test]
fn depthwise_many_channels() {
    let win = Window {
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 2,
        padding: Padding {
            top: 1,
            left: 1,
            bottom: 1,
            right: 1,
        },
    };
    for (c, mult) in [(30, 3), (130, 1)] {
        let (h, w, oc) = (4, 5, c * mult);
        let s = Shape::new(h, w, c);
        let input: Vec<i8> = (0..h * w * c).map(|i| (i * 37 % 256) as u8 as i8).collect();
        let weights: Vec<i8> = (0..9 * oc).map(|i| (i * 53 % 256) as u8 as i8).collect();
        let bias: Vec<i32> = (0..oc as i32).map(|o| o * 17 - 700).collect();
        let m = vec![1 << 30; oc];
        let sh: Vec<i32> = (0..oc as i32).map(|o| -(o % 7)).collect();
        let (bb, mb, sb) = (le(&bias), le(&m), le(&sh));
        let (oh, ow) = win.output_hw(h, w).unwrap();
        let p = DepthwiseParams {
            input: s,
            output: Shape::new(oh, ow, oc),
            window: win,
            multiplier: mult,
            input_zp: 3,
            output_zp: -2,
            clamp: Clamp::NONE,
            weights: &weights,
            quant: ChannelQuant {
                bias: arr(&bb),
                multiplier: arr(&mb),
                shift: arr(&sb),
            },
        };
        let mut a = vec![0i8; oh * ow * oc];
        let mut b = a.clone();
        let mut scratch = vec![0u32; p.scratch_words()];
        portable::depthwise_conv2d(&p, &input, &mut a, &mut scratch).unwrap();
        kernels::depthwise_conv2d(&p, &input, &mut b, &mut scratch).unwrap();
        let r = ref_depthwise(
            &input,
            s,
            &win,
            mult,
            &weights,
            &bias,
            &m,
            &sh,
            3,
            -2,
            Clamp::NONE,
        );
        assert_eq!(a, r, "{c} channels x {mult}");
        assert_eq!(b, r, "{c} channels x {mult}");
    }
}

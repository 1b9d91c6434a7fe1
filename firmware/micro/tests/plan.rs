//! The `.pmc` format: round trip through the writer and parser, the interpreter against direct
//! kernel calls, and bad bytes that must give errors, never panics.

mod common;

use common::*;
use perch_micro::kernels::{self, Clamp, Padding, Shape, Window};
use perch_micro::plan::{AlignedBytes, Op, PlanBuilder, TensorDesc};
use perch_micro::{Error, Plan, Problem, run};
use proptest::prelude::*;

fn same() -> Window {
    Window {
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 1,
        padding: Padding {
            top: 1,
            left: 1,
            bottom: 1,
            right: 1,
        },
    }
}

fn t(h: usize, w: usize, c: usize, scale: f32, zero_point: i32) -> TensorDesc {
    TensorDesc {
        shape: Shape::new(h, w, c),
        scale,
        zero_point,
        offset: None,
    }
}

/// A small CNN using every op: conv -> depthwise -> maxpool -> add -> lookup -> avgpool ->
/// global pool -> reshape -> fc -> softmax.
fn small_net(seed: u8, in_zp: i32) -> AlignedBytes {
    let v = |n: usize, k: u8| -> Vec<i8> {
        (0..n)
            .map(|i| {
                (i as u8)
                    .wrapping_mul(37)
                    .wrapping_add(k)
                    .wrapping_add(seed) as i8
            })
            .collect()
    };
    let mut b = PlanBuilder::new();
    let x = b.tensor(t(8, 8, 3, 0.02, in_zp));
    let c1 = b.tensor(t(8, 8, 8, 0.05, -3));
    let d1 = b.tensor(t(8, 8, 8, 0.06, 5));
    let p1 = b.tensor(t(4, 4, 8, 0.06, 5));
    let p2 = b.tensor(t(4, 4, 8, 0.06, 5));
    let a1 = b.tensor(t(4, 4, 8, 0.1, -1));
    let l1 = b.tensor(t(4, 4, 8, 0.1, -1));
    let q1 = b.tensor(t(2, 2, 8, 0.1, -1));
    let g1 = b.tensor(t(1, 1, 8, 0.05, 0));
    let f1 = b.tensor(t(1, 1, 8, 0.05, 0));
    let fc = b.tensor(t(1, 1, 10, 0.2, 7));
    let sm = b.tensor(t(1, 1, 10, 1.0 / 256.0, -128));
    let pool2 = Window {
        kernel_h: 2,
        kernel_w: 2,
        stride_h: 2,
        stride_w: 2,
        padding: Padding::default(),
    };
    let pool3 = Window {
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 1,
        padding: Padding {
            top: 0,
            left: 0,
            bottom: 0,
            right: 0,
        },
    };
    let scales = |n| vec![0.01f32; n];
    let sigmoid = perch_micro::tables::lookup_table(
        perch_micro::tables::activation::sigmoid,
        (0.1, -1),
        (0.1, -1),
    );
    b.set_input(x).set_output(sm).set_label_count(10);
    b.conv2d(
        x,
        c1,
        same(),
        Clamp { min: -3, max: 127 },
        &v(8 * 9 * 3, 1),
        &[100, -50, 0, 7, 9, 11, -300, 2],
        &scales(8),
    )
    .depthwise_conv2d(
        c1,
        d1,
        same(),
        1,
        Clamp::NONE,
        &v(9 * 8, 2),
        &[5; 8],
        &scales(8),
    )
    .max_pool(d1, p1, pool2, Clamp::NONE)
    .average_pool(d1, p2, pool2, Clamp::NONE)
    .add(p1, p2, a1, Clamp::NONE)
    .lookup(a1, l1, &sigmoid)
    .average_pool(l1, q1, pool3, Clamp::NONE)
    .global_average_pool(q1, g1, Clamp::NONE)
    .reshape(g1, f1)
    .fully_connected(
        f1,
        fc,
        Clamp::NONE,
        &v(10 * 8, 3),
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        &scales(10),
    )
    .softmax(fc, sm, 1.0);
    b.build().unwrap()
}

#[test]
fn small_net_runs_and_matches_kernels_called_directly() {
    let plan_bytes = small_net(0, 3);
    let plan = Plan::parse(&plan_bytes).unwrap();
    assert_eq!(plan.op_count(), 11);
    assert_eq!(plan.label_count(), 10);
    let input: Vec<i8> = (0..8 * 8 * 3).map(|i| (i * 7 % 256) as u8 as i8).collect();
    let mut arena = vec![0u8; plan.arena_size()];
    let out = run(&plan, &mut arena, &input).unwrap().to_vec();
    assert_eq!(out.len(), 10);
    // Softmax output sums to ~256 (scale 1/256, zero point -128).
    let total: i32 = out.iter().map(|&q| q as i32 + 128).sum();
    assert!((250..=262).contains(&total), "{total}");

    // Replay op by op with the kernels and separate buffers.
    let mut bufs: Vec<Vec<i8>> = (0..plan.tensor_count() as u16)
        .map(|i| vec![0; plan.tensor(i).unwrap().size])
        .collect();
    bufs[plan.input_id() as usize] = input.clone();
    for i in 0..plan.op_count() {
        let d = plan.op(i).unwrap();
        let x = bufs[d.inputs[0] as usize].clone();
        let mut y = vec![0i8; bufs[d.output as usize].len()];
        let mut scratch = vec![0u32; 1 << 12];
        match d.op {
            Op::Conv2d(p) => kernels::portable::conv2d(&p, &x, &mut y, &mut scratch).unwrap(),
            Op::DepthwiseConv2d(p) => {
                kernels::portable::depthwise_conv2d(&p, &x, &mut y, &mut scratch).unwrap()
            }
            Op::FullyConnected(p) => {
                kernels::portable::fully_connected(&p, &x, &mut y, &mut scratch).unwrap()
            }
            Op::MaxPool(p) => kernels::max_pool(&p, &x, &mut y).unwrap(),
            Op::AveragePool(p) => kernels::average_pool(&p, &x, &mut y).unwrap(),
            Op::GlobalAveragePool(p) => kernels::global_average_pool(&p, &x, &mut y).unwrap(),
            Op::Add(p) => kernels::add(&p, &x, &bufs[d.inputs[1] as usize], &mut y).unwrap(),
            Op::Lookup(table) => kernels::lookup(table, &x, &mut y).unwrap(),
            Op::Reshape => kernels::reshape(&x, &mut y).unwrap(),
            Op::Softmax { table, depth } => kernels::softmax(&table, depth, &x, &mut y).unwrap(),
            _ => unreachable!(),
        }
        bufs[d.output as usize] = y;
    }
    assert_eq!(bufs[plan.output_id() as usize], out);

    // Same result in an unaligned arena (the scratch area carries slack for aligning).
    let mut big = vec![0u8; plan.arena_size() + 1];
    assert_eq!(run(&plan, &mut big[1..], &input).unwrap(), &out[..]);
}

#[test]
fn run_errors() {
    let bytes = small_net(1, 0);
    let plan = Plan::parse(&bytes).unwrap();
    let mut arena = vec![0u8; plan.arena_size() - 1];
    assert_eq!(
        run(&plan, &mut arena, &[0; 192]),
        Err(Error::ArenaTooSmall {
            needed: plan.arena_size() as u32,
            given: plan.arena_size() as u32 - 1
        })
    );
    let mut arena = vec![0u8; plan.arena_size()];
    assert_eq!(
        run(&plan, &mut arena, &[0; 191]),
        Err(Error::InputSize {
            expected: 192,
            given: 191
        })
    );
}

#[test]
fn header_errors() {
    let bytes = small_net(2, 0).to_vec();
    let parse = |b: &[u8]| Plan::parse(&AlignedBytes::from(b)).map(|_| ());
    assert_eq!(parse(&bytes[..3]), Err(Error::Truncated));
    assert_eq!(parse(b"ELF\x7f and more bytes"), Err(Error::BadMagic));
    assert_eq!(parse(&bytes[..40]), Err(Error::Truncated));
    assert_eq!(parse(&bytes[..bytes.len() - 4]), Err(Error::Truncated));
    let mut v2 = bytes.clone();
    v2[4] = 2;
    assert_eq!(parse(&v2), Err(Error::UnsupportedVersion(2)));
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert!(matches!(parse(&flipped), Err(Error::Checksum { .. })));
    // Misaligned start.
    let mut shifted = AlignedBytes::from(&[&[0u8][..], &bytes].concat()[..]);
    assert_eq!(
        Plan::parse(&shifted.as_bytes_mut()[1..]).map(|_| ()),
        Err(Error::Misaligned)
    );
    // Trailing bytes are ignored.
    assert_eq!(parse(&[&bytes[..], &[0xAA; 8]].concat()), Ok(()));
}

/// Rewrites bytes of a valid plan and fixes the CRC, to reach the checks behind it.
fn patch(bytes: &[u8], at: usize, new: &[u8]) -> AlignedBytes {
    let mut v = bytes.to_vec();
    v[at..at + new.len()].copy_from_slice(new);
    let crc = perch_micro::crc32(&v[16..]);
    v[12..16].copy_from_slice(&crc.to_le_bytes());
    AlignedBytes::from(&v[..])
}

#[test]
fn semantic_errors_after_a_valid_crc() {
    let bytes = small_net(3, 0).to_vec();
    let aligned = AlignedBytes::from(&bytes[..]);
    let plan = Plan::parse(&aligned).unwrap();
    let tensors = u32::from_le_bytes(bytes[40..44].try_into().unwrap()) as usize;
    let ops = u32::from_le_bytes(bytes[44..48].try_into().unwrap()) as usize;
    let parse = |b: AlignedBytes| Plan::parse(&b).map(|_| ()).err();
    // Arena offset of tensor 1 past the arena.
    assert_eq!(
        parse(patch(
            &bytes,
            tensors + 32 + 16,
            &(plan.arena_size() as u32).to_le_bytes()
        )),
        Some(Error::Tensor {
            index: 1,
            problem: Problem::OutsideArena
        })
    );
    // Zero point out of int8.
    assert_eq!(
        parse(patch(&bytes, tensors + 12, &200i32.to_le_bytes())),
        Some(Error::Tensor {
            index: 0,
            problem: Problem::BadQuantization
        })
    );
    // Unknown op kind.
    assert_eq!(
        parse(patch(&bytes, ops, &77u16.to_le_bytes())),
        Some(Error::Op {
            index: 0,
            problem: Problem::UnknownOp(77)
        })
    );
    // Conv stride 0.
    assert_eq!(
        parse(patch(&bytes, ops + 16, &0u16.to_le_bytes())),
        Some(Error::Op {
            index: 0,
            problem: Problem::BadParameter
        })
    );
    // Conv output written over its input.
    let input_offset = &bytes[tensors + 16..tensors + 20].to_vec();
    assert_eq!(
        parse(patch(&bytes, tensors + 32 + 16, input_offset)),
        Some(Error::Op {
            index: 0,
            problem: Problem::Overlap
        })
    );
    // Weights reference past the constants.
    assert_eq!(
        parse(patch(&bytes, ops + 32, &0x00F0_0000u32.to_le_bytes())),
        Some(Error::Op {
            index: 0,
            problem: Problem::ConstOutOfBounds
        })
    );
    // Weights length inconsistent with the shapes.
    assert_eq!(
        parse(patch(&bytes, ops + 36, &4u32.to_le_bytes())),
        Some(Error::Op {
            index: 0,
            problem: Problem::BadLength
        })
    );
    // Op referencing a tensor past the table.
    assert_eq!(
        parse(patch(&bytes, ops + 8, &500u16.to_le_bytes())),
        Some(Error::Op {
            index: 0,
            problem: Problem::BadTensorId
        })
    );
    // Scratch area shrunk below what the conv needs.
    assert_eq!(
        parse(patch(&bytes, 24, &4u32.to_le_bytes())),
        Some(Error::Op {
            index: 0,
            problem: Problem::ScratchTooSmall
        })
    );
}

/// The parser's checks that the kernels' panic-free forms lean on (firmware/app/no-panic.sh proves
/// that no panic is reachable from `run` on the MCU): the clamp is applied as max then min, every
/// window overlaps the input, depthwise divides by its multiplier, softmax by its row sum.
#[test]
fn fields_the_kernels_rely_on_are_refused() {
    let bytes = small_net(4, 0).to_vec();
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let op = |index: usize| u32_at(44) + 64 * index;
    let parse = |b: AlignedBytes| Plan::parse(&b).map(|_| ()).err();
    let refused = |index: u16, problem| Some(Error::Op { index, problem });
    // Conv clamp min above max.
    assert_eq!(
        parse(patch(&bytes, op(0) + 28, &[10, 5])),
        refused(0, Problem::BadParameter)
    );
    // Conv top padding as large as the kernel: a window row entirely in the padding.
    assert_eq!(
        parse(patch(&bytes, op(0) + 20, &3u16.to_le_bytes())),
        refused(0, Problem::BadParameter)
    );
    // Depthwise multiplier 0.
    assert_eq!(
        parse(patch(&bytes, op(1) + 30, &0u16.to_le_bytes())),
        refused(1, Problem::BadShape)
    );
    // Max pool stride 0.
    assert_eq!(
        parse(patch(&bytes, op(2) + 16, &0u16.to_le_bytes())),
        refused(2, Problem::BadParameter)
    );
    // Softmax exponential table with entry 0 of zero: a row sum could be 0.
    let table = u32_at(48) + u32_at(op(10) + 32);
    assert_eq!(
        parse(patch(&bytes, table, &0u32.to_le_bytes())),
        refused(10, Problem::BadParameter)
    );
}

fn random_window(max_k: usize) -> impl Strategy<Value = (usize, usize, usize, usize)> {
    (1..=max_k, 1..=max_k, 1usize..3, 1usize..3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Writer -> parser keeps every tensor and op parameter.
    #[test]
    fn round_trip(
        (h, w, c, cout) in (3usize..10, 3usize..10, 1usize..6, 1usize..6),
        (kh, kw, sh, sw) in random_window(3),
        (zi, zo) in (zp(), zp()), (si, so) in (0.001f32..1.0, 0.001f32..1.0),
        clamp in clamp_strategy(), wdata in i8s(5 * 9 * 5), labels in 0u32..1000,
        ws in prop::collection::vec(0.0001f32..0.1, 5), bias in prop::collection::vec(any::<i32>(), 5),
    ) {
        let win = Window { kernel_h: kh, kernel_w: kw, stride_h: sh, stride_w: sw, padding: Padding { top: kh - 1, left: 0, bottom: 0, right: kw - 1 } };
        let (oh, ow) = win.output_hw(h, w).unwrap();
        let mut b = PlanBuilder::new();
        let x = b.tensor(t(h, w, c, si, zi));
        let y = b.tensor(TensorDesc { offset: Some(4096), ..t(oh, ow, cout, so, zo) });
        let weights = &wdata[..cout * kh * kw * c];
        b.set_input(x).set_output(y).set_label_count(labels);
        b.conv2d(x, y, win, clamp, weights, &bias[..cout], &ws[..cout]);
        let bytes = b.build().unwrap();
        let plan = Plan::parse(&bytes).unwrap();
        prop_assert_eq!(plan.label_count(), labels);
        prop_assert_eq!(plan.input().shape, Shape::new(h, w, c));
        prop_assert_eq!(plan.input().zero_point, zi);
        prop_assert_eq!(plan.input().scale, si);
        prop_assert_eq!(plan.output().offset, 4096);
        prop_assert_eq!(plan.output().shape, Shape::new(oh, ow, cout));
        let Op::Conv2d(p) = plan.op(0).unwrap().op else { panic!("not a conv") };
        prop_assert_eq!(p.window, win);
        prop_assert_eq!(p.clamp, clamp);
        prop_assert_eq!(p.input_zp, zi);
        prop_assert_eq!(p.output_zp, zo);
        prop_assert_eq!(p.quant.bias.iter().collect::<Vec<_>>(), bias[..cout].to_vec());
        for o in 0..cout {
            let (m, s) = perch_micro::requantize::quantize_multiplier(si as f64 * ws[o] as f64 / so as f64);
            prop_assert_eq!((p.quant.multiplier.get(o), p.quant.shift.get(o)), (m, s));
            for k in 0..kh * kw * c {
                let i = perch_micro::kernels::conv_weight_index(o, k, cout, kh * kw * c);
                prop_assert_eq!(p.weights[i], weights[o * kh * kw * c + k]);
            }
        }
        prop_assert!(plan.arena_size() >= 4096 + oh * ow * cout);
    }

    /// Truncated, bit-flipped (with and without a fixed CRC) and random bytes: errors, no panic;
    /// whatever still parses also runs without panicking.
    #[test]
    fn bad_bytes_never_panic(
        seed in 0u8..4, cut in any::<prop::sample::Index>(), flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
        fix_crc in any::<bool>(), random in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let good = small_net(seed, 1).to_vec();
        let _ = Plan::parse(&AlignedBytes::from(&good[..cut.index(good.len())]));
        let mut bad = good.clone();
        for (at, bit) in &flips {
            let at = at.index(bad.len());
            bad[at] ^= 1 << bit;
        }
        if fix_crc {
            let crc = perch_micro::crc32(&bad[16..]);
            bad[12..16].copy_from_slice(&crc.to_le_bytes());
        }
        let bad = AlignedBytes::from(&bad[..]);
        if let Ok(plan) = Plan::parse(&bad)
            && plan.arena_size() < 1 << 20 {
                let mut arena = vec![0u8; plan.arena_size()];
                let input = vec![3i8; plan.input().size];
                // A plan that parses must also run: no kernel may refuse what the parser accepted.
                prop_assert!(run(&plan, &mut arena, &input).is_ok());
            }
        let mut random = random;
        if random.len() >= 4 && seed % 2 == 0 {
            random[..4].copy_from_slice(b"PMC\0");
        }
        let _ = Plan::parse(&AlignedBytes::from(&random[..]));
    }
}

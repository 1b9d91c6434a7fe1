//! Perch's int8 convolution against tract's own quantized `Conv`, on random shapes, strides,
//! dilations, paddings, zero points and scales: identical int8 outputs, for every kernel this CPU runs.

use super::{Geometry, Isa, Layout, QConvKernel};
use crate::ops::qconv::{Engine, QConv};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_core::ops::nn::DataFormat;
use tract_nnef::internal::*;

#[derive(Debug, Clone)]
struct Case {
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    depthwise: bool,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad_before: [usize; 2],
    pad_after: [usize; 2],
    x_zero_point: i8,
    y_zero_point: i8,
    x_scale: f32,
    y_scale: f32,
    k_scales: Vec<f32>,
    weights: Vec<i8>,
    bias: Vec<i32>,
    x: Vec<i8>,
}

impl Case {
    fn output(&self) -> [usize; 2] {
        [0, 1].map(|a| (self.input[a] + self.pad_before[a] + self.pad_after[a] - self.dilation[a] * (self.kernel[a] - 1) - 1) / self.stride[a] + 1)
    }

    fn groups(&self) -> usize {
        if self.depthwise { self.in_channels } else { 1 }
    }

    fn x_dt(&self) -> DatumType {
        DatumType::QI8(QParams::ZpScale { zero_point: self.x_zero_point as i32, scale: self.x_scale })
    }

    fn op(&self, engine: Engine) -> QConv {
        let spec = PoolSpec::new(
            DataFormat::NCHW,
            tvec!(self.kernel[0], self.kernel[1]),
            PaddingSpec::Explicit(tvec!(self.pad_before[0], self.pad_before[1]), tvec!(self.pad_after[0], self.pad_after[1])),
            Some(tvec!(self.dilation[0], self.dilation[1])),
            Some(tvec!(self.stride[0], self.stride[1])),
            self.in_channels,
            self.out_channels,
        );
        let y_dt = DatumType::QI8(QParams::ZpScale { zero_point: self.y_zero_point as i32, scale: self.y_scale });
        QConv { conv: Conv::new(spec, KernelFormat::OIHW, self.groups(), Some(y_dt)), x_zero_point: self.x_zero_point as i32, x_scale: self.x_scale, engine }
    }

    /// The optimized plan's output with the convolution on `engine`, and whether Perch's kernel ran.
    fn run_model(&self, engine: Engine) -> (Vec<i8>, bool) {
        self.run_model_downsampled(engine, [1, 1])
    }

    /// As [`Case::run_model`], the input going through tract `Downsample`s of these strides first.
    fn run_model_downsampled(&self, engine: Engine, downsample: [usize; 2]) -> (Vec<i8>, bool) {
        let mut model = TypedModel::default();
        let full = [0, 1].map(|a| self.input[a] * downsample[a]);
        let mut x = model.add_source("x", self.x_dt().fact([self.batch, self.in_channels, full[0], full[1]])).unwrap();
        for (a, &stride) in downsample.iter().enumerate() {
            if stride > 1 {
                let op = tract_core::ops::Downsample { axis: 2 + a, stride: stride as isize, modulo: 0 };
                x = model.wire_node(format!("ds{a}"), op, &[x]).unwrap()[0];
            }
        }
        let per_out = self.weights.len() / self.out_channels;
        let kshape = [self.out_channels, per_out / (self.kernel[0] * self.kernel[1]), self.kernel[0], self.kernel[1]];
        let k = model.add_const("k", Tensor::from_shape(&kshape, &self.weights).unwrap()).unwrap();
        let b = model.add_const("b", Tensor::from_shape(&[self.out_channels], &self.bias).unwrap()).unwrap();
        let scales = if self.k_scales.len() == 1 { tensor0(self.k_scales[0]) } else { Tensor::from_shape(&[self.out_channels], &self.k_scales).unwrap() };
        let s = model.add_const("s", scales).unwrap();
        let y = model.wire_node("conv", self.op(engine), &[x, k, b, s]).unwrap();
        model.select_output_outlets(&y).unwrap();
        let plan = model.into_optimized().unwrap();
        let perch = plan.nodes().iter().any(|n| n.op_is::<crate::ops::qconv::QConvExec>());
        let n = self.batch * self.in_channels * full[0] * full[1];
        let values: Vec<i8> = (0..n).map(|i| self.x[i % self.x.len()].wrapping_add((i / self.x.len()) as i8)).collect();
        let mut input = Tensor::from_shape(&[self.batch, self.in_channels, full[0], full[1]], &values).unwrap();
        unsafe { input.set_datum_type(self.x_dt()) };
        let out = plan.into_runnable().unwrap().run(tvec!(input.into_tvalue())).unwrap();
        let out = out[0].try_as_plain_ram().unwrap();
        (unsafe { out.as_slice_unchecked::<i8>() }.to_vec(), perch)
    }

    fn run_kernel(&self, isa: Isa) -> Vec<i8> {
        self.run_kernel_in(isa, Layout::Nchw, Layout::Nchw).expect("NCHW always runs")
    }

    /// The kernel reading and writing these layouts, its output turned back into NCHW; None where
    /// it cannot ([`QConvKernel::with_layouts`]).
    fn run_kernel_in(&self, isa: Isa, input: Layout, output: Layout) -> Option<Vec<i8>> {
        let geometry = Geometry {
            input: self.input,
            kernel: self.kernel,
            stride: self.stride,
            dilation: self.dilation,
            pad_before: self.pad_before,
            pad_after: self.pad_after,
            output: self.output(),
        };
        let scales: Vec<f32> =
            (0..self.out_channels).map(|o| (self.k_scales[if self.k_scales.len() == 1 { 0 } else { o }] * self.x_scale) * self.y_scale.recip()).collect();
        let kernel = QConvKernel::new(
            geometry,
            self.in_channels,
            self.groups(),
            &self.weights,
            &self.bias,
            &scales,
            self.x_zero_point,
            self.y_zero_point,
            isa,
        )
        .unwrap()
        .with_layouts(input, output)?;
        let [h, w] = self.input;
        let x = if input == Layout::Nhwc { nchw_to_nhwc(&self.x, self.in_channels, h * w) } else { self.x.clone() };
        let mut y = vec![0i8; kernel.output_shape(self.batch).iter().product()];
        kernel.run(&x, self.batch, &mut y).unwrap();
        let [_, c, oh, ow] = kernel.output_shape(self.batch);
        Some(if output == Layout::Nhwc { nchw_to_nhwc(&y, oh * ow, c) } else { y })
    }
}

/// Images of `c` planes of `hw` values each, made channels-last (and the other way with the
/// arguments swapped).
fn nchw_to_nhwc(x: &[i8], c: usize, hw: usize) -> Vec<i8> {
    let mut out = vec![0i8; x.len()];
    for (image, out) in x.chunks_exact(c * hw).zip(out.chunks_exact_mut(c * hw)) {
        for ch in 0..c {
            for p in 0..hw {
                out[p * c + ch] = image[ch * hw + p];
            }
        }
    }
    out
}

fn case() -> impl Strategy<Value = Case> {
    let shape = (1usize..3, prop_oneof![1usize..24, Just(16usize), Just(32usize)], 1usize..20, any::<bool>(), [1usize..4, 1usize..4], [1usize..3, 1usize..3], [1usize..3, 1usize..3]);
    let pads = ([0usize..3, 0usize..3], [0usize..3, 0usize..3], [0usize..10, 0usize..10]);
    let quant = (any::<i8>(), any::<i8>(), 0.005f32..0.1, 0.02f32..0.5, any::<bool>(), any::<u64>());
    (shape, pads, quant).prop_map(|((batch, ci, co, depthwise, kernel, stride, dilation), (pad_before, pad_after, extra), (xz, yz, xs, ys, uniform, seed))| {
        let out_channels = if depthwise { ci.max(2) } else { co };
        let in_channels = if depthwise { out_channels } else { ci };
        // Big enough for at least one output.
        let input = [0, 1].map(|a| ((dilation[a] * (kernel[a] - 1) + 1).saturating_sub(pad_before[a] + pad_after[a])).max(1) + extra[a]);
        let mut s = seed;
        let mut next = move |n: u64| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) % n
        };
        let per_out = if depthwise { kernel[0] * kernel[1] } else { in_channels * kernel[0] * kernel[1] };
        let weights = (0..out_channels * per_out).map(|_| (next(255) as i32 - 127) as i8).collect();
        let bias = (0..out_channels).map(|_| next(20001) as i32 - 10000).collect();
        let k_scales = if uniform { vec![0.001 + next(1000) as f32 * 0.00005] } else { (0..out_channels).map(|_| 0.001 + next(1000) as f32 * 0.00005).collect() };
        let x = (0..batch * in_channels * input[0] * input[1]).map(|_| next(256) as u8 as i8).collect();
        Case {
            batch,
            in_channels,
            out_channels,
            depthwise,
            input,
            kernel,
            stride,
            dilation,
            pad_before,
            pad_after,
            x_zero_point: xz,
            y_zero_point: yz,
            x_scale: xs,
            y_scale: ys,
            k_scales,
            weights,
            bias,
            x,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Each kernel this CPU runs gives the reference's bytes exactly, and the reference gives tract's
    /// quantized convolution's (but for the rare per-channel f32 tie [`tract_within_one_on_ties`]
    /// allows).
    #[test]
    fn every_kernel_matches_tract(case in case()) {
        let (expected, perch) = case.run_model(Engine::Tract);
        prop_assert!(!perch);
        let reference = case.run_kernel(Isa::Portable);
        for isa in Isa::available() {
            prop_assert_eq!(&case.run_kernel(isa), &reference, "{:?}", isa);
        }
        tract_within_one_on_ties(&reference, &expected)?;
    }

    /// The plan-level op: a `perch` engine convolution runs Perch's kernel and gives tract's outputs.
    #[test]
    fn perch_engine_plan_matches_tract(case in case()) {
        let (expected, _) = case.run_model(Engine::Tract);
        let (got, perch) = case.run_model(Engine::Perch);
        prop_assert!(perch, "Perch's kernel was not chosen");
        tract_within_one_on_ties(&got, &expected)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// 3x3 depthwise convolutions with channels enough for the channels-last kernels (NEON's row
    /// runs, the SDOT column kernel, AVX2): rows longer than a block of pixels, strides 1 and 2,
    /// dilations, a last partial group of channels, per-channel and uniform scales.
    #[test]
    fn depthwise_3x3_kernels_match_tract(
        base in case(),
        channels in 16usize..40,
        input in (1usize..6, 1usize..45),
        stride in [1usize..3, 1usize..3],
        dilation in prop_oneof![3 => Just([1usize, 1]), 1 => [1usize..3, 1usize..3]],
        seed in any::<u64>(),
    ) {
        let mut case = base;
        (case.depthwise, case.in_channels, case.out_channels, case.kernel, case.stride, case.dilation) = (true, channels, channels, [3, 3], stride, dilation);
        // Inputs big enough for one output with the case's paddings.
        case.input = [0, 1].map(|a| (2 * dilation[a] + 1).saturating_sub(case.pad_before[a] + case.pad_after[a]).max(1) + [input.0, input.1][a]);
        let mut s = seed;
        let mut next = move |n: u64| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) % n
        };
        case.weights = (0..channels * 9).map(|_| (next(255) as i32 - 127) as i8).collect();
        case.bias = (0..channels).map(|_| next(20001) as i32 - 10000).collect();
        if case.k_scales.len() > 1 {
            case.k_scales = (0..channels).map(|_| 0.001 + next(1000) as f32 * 0.00005).collect();
        }
        case.x = (0..case.batch * channels * case.input[0] * case.input[1]).map(|_| next(256) as u8 as i8).collect();
        let (expected, _) = case.run_model(Engine::Tract);
        // Every kernel gives the reference's bytes exactly.
        let reference = case.run_kernel(Isa::Portable);
        for isa in Isa::available() {
            prop_assert_eq!(&case.run_kernel(isa), &reference, "{:?}", isa);
        }
        tract_within_one_on_ties(&reference, &expected)?;
    }
}

/// The reference's outputs against tract's: the same, but for a rare f32 tie with per-channel
/// scales: Perch rounds the scaled sum as f32 gives it (-50.5 -> -50), tract's per-channel
/// requantization gives -51 there (its combined scale is one ulp apart; which association it uses is
/// not settled yet, see BENCHMARKS.md and the closing notes of issue 6). Off by one at most, on at most
/// 1% of the outputs (or one output of a small case).
fn tract_within_one_on_ties(reference: &[i8], tract: &[i8]) -> Result<(), TestCaseError> {
    prop_assert_eq!(reference.len(), tract.len());
    let off: Vec<usize> = reference.iter().zip(tract).enumerate().filter(|(_, (a, b))| a != b).map(|(i, _)| i).collect();
    prop_assert!(off.iter().all(|&i| (reference[i] as i32 - tract[i] as i32).abs() <= 1), "differs from tract by more than one at {:?}", off);
    prop_assert!(off.len() * 100 <= reference.len().max(100), "{} of {} outputs differ from tract", off.len(), reference.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Channels-last inputs and outputs, where a kernel takes them, give the NCHW outputs laid out
    /// channels-last, on every kernel this CPU runs: dense and depthwise convolutions with channels
    /// enough for the channels-last depthwise kernel and the lane kernels' tiles.
    #[test]
    fn channels_last_layouts_give_the_same_outputs(base in case(), wide in any::<bool>(), channels in 16usize..40) {
        let mut case = base;
        if wide {
            let per_out = |c: &Case| if c.depthwise { c.kernel[0] * c.kernel[1] } else { c.in_channels * c.kernel[0] * c.kernel[1] };
            case.out_channels = channels;
            if case.depthwise {
                case.in_channels = channels;
            }
            let n = case.out_channels * per_out(&case);
            case.weights = (0..n).map(|i| case.weights[i % case.weights.len()]).collect();
            case.bias = (0..channels).map(|i| case.bias[i % case.bias.len()] + i as i32).collect();
            if case.k_scales.len() > 1 {
                case.k_scales = (0..channels).map(|i| 0.001 + (i * 7 % 50) as f32 * 0.0003).collect();
            }
            case.x = (0..case.batch * case.in_channels * case.input[0] * case.input[1]).map(|i| case.x[i % case.x.len()].wrapping_add((i / case.x.len()) as i8)).collect();
        }
        for isa in Isa::available() {
            let planes = case.run_kernel(isa);
            for (input, output) in [(Layout::Nhwc, Layout::Nchw), (Layout::Nchw, Layout::Nhwc), (Layout::Nhwc, Layout::Nhwc)] {
                if let Some(got) = case.run_kernel_in(isa, input, output) {
                    prop_assert_eq!(&got, &planes, "{:?} {:?} -> {:?}", isa, input, output);
                }
            }
        }
    }
}

/// tract turns a strided 1x1 convolution into `Downsample`s and a stride-1 one: Perch's kernel
/// strides itself instead, with the same outputs.
#[test]
fn strided_pointwise_convolutions_absorb_their_downsamples() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for step in 0..12 {
        let mut case = case().new_tree(&mut runner).unwrap().current();
        (case.kernel, case.stride, case.pad_before, case.pad_after, case.depthwise) = ([1, 1], [1, 1], [0, 0], [0, 0], false);
        case.weights.truncate(case.out_channels * case.in_channels);
        case.weights.resize(case.out_channels * case.in_channels, 3);
        let downsample = [1 + step % 2, 1 + step % 3];
        let (expected, _) = case.run_model_downsampled(Engine::Tract, downsample);
        let (got, perch) = case.run_model_downsampled(Engine::Perch, downsample);
        assert!(perch);
        assert_eq!(got, expected, "{downsample:?}");
    }
}

/// The shapes with their own paths: a global pooling (depthwise, kernel = the whole input), and a
/// single-channel stem with several outputs (packed receptive fields).
#[test]
fn global_pooling_and_single_channel_stems_match_tract() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for step in 0..16 {
        let mut case = case().new_tree(&mut runner).unwrap().current();
        if step % 2 == 0 {
            let c = case.in_channels.max(2);
            (case.in_channels, case.out_channels, case.depthwise) = (c, c, true);
            case.kernel = case.input;
            (case.stride, case.dilation, case.pad_before, case.pad_after) = ([1, 1], [1, 1], [0, 0], [0, 0]);
        } else {
            (case.in_channels, case.depthwise) = (1, false);
        }
        let per_out = case.kernel[0] * case.kernel[1] * if case.depthwise { 1 } else { case.in_channels };
        case.weights = (0..case.out_channels * per_out).map(|i| ((i * 37 % 255) as i32 - 127) as i8).collect();
        case.bias.resize(case.out_channels, 5);
        if case.k_scales.len() > 1 {
            case.k_scales.resize(case.out_channels, 0.01);
        }
        case.x = (0..case.batch * case.in_channels * case.input[0] * case.input[1]).map(|i| (i * 53 % 256) as u8 as i8).collect();
        let (expected, _) = case.run_model(Engine::Tract);
        for isa in Isa::available() {
            assert_eq!(case.run_kernel(isa), expected, "{isa:?} {case:?}");
        }
        let (got, perch) = case.run_model(Engine::Perch);
        assert!(perch);
        assert_eq!(got, expected);
    }
}

#[test]
fn weights_of_minus_128_keep_tracts_convolution() {
    let mut case = case().new_tree(&mut proptest::test_runner::TestRunner::deterministic()).unwrap().current();
    case.weights[0] = -128;
    let (expected, _) = case.run_model(Engine::Tract);
    let (got, perch) = case.run_model(Engine::Perch);
    assert!(!perch, "-128 weights must fall back to tract");
    assert_eq!(got, expected);
}

#[cfg(feature = "multithread")]
#[test]
fn threads_give_the_same_outputs() {
    use tract_nnef::internal::tract_linalg::multithread::{Executor, multithread_tract_scope, set_threading_element_threshold};
    // Split even the smallest convolutions.
    set_threading_element_threshold(0);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..8 {
        let case = case().new_tree(&mut runner).unwrap().current();
        let one = case.run_kernel(Isa::best());
        let many = multithread_tract_scope(Executor::multithread(3), || case.run_kernel(Isa::best()));
        assert_eq!(one, many);
    }
}

proptest! {
    /// The residual Add on Perch's kernel against tract's quantized Add (what it declutters into
    /// when the kernel does not apply).
    #[test]
    fn qadd_matches_tracts_add(
        shape in proptest::collection::vec(1usize..6, 1..5),
        seed in any::<u64>(),
        zps in (any::<i8>(), any::<i8>(), any::<i8>()),
        scales in (0.001f32..0.3, 0.001f32..0.3, 0.001f32..0.6),
    ) {
        use crate::ops::qadd::QAdd;
        let dt = |zp: i8, scale: f32| DatumType::QI8(QParams::ZpScale { zero_point: zp as i32, scale });
        let (da, db, dc) = (dt(zps.0, scales.0), dt(zps.1, scales.1), dt(zps.2, scales.2));
        let n: usize = shape.iter().product();
        let mut s = seed;
        let mut tensor = |d: DatumType| {
            let v: Vec<i8> = (0..n).map(|_| { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (s >> 40) as u8 as i8 }).collect();
            let mut t = Tensor::from_shape(&shape, &v).unwrap();
            unsafe { t.set_datum_type(d) };
            t.into_tvalue()
        };
        let inputs = tvec!(tensor(da), tensor(db));
        let op = QAdd { output: dc };
        let ours = op.eval_out_of_plan(inputs.clone()).unwrap().unwrap();
        let tracts = tract_core::ops::binary::TypedBinOp(Box::new(tract_core::ops::math::Add), Some(dc)).eval_out_of_plan(inputs).unwrap().unwrap();
        prop_assert_eq!(ours[0].datum_type(), tracts[0].datum_type());
        let bytes = |t: &TValue| unsafe { t.try_as_plain_ram().unwrap().as_slice_unchecked::<i8>().to_vec() };
        prop_assert_eq!(bytes(&ours[0]), bytes(&tracts[0]));
    }
}

proptest! {
    /// The requantizations' rounding gives `round_ties_even`'s int8 on every target (32-bit ARM
    /// rounds by adding and subtracting 1.5 * 2^23), ties, huge values and NaN included.
    #[test]
    fn rounding_matches_round_ties_even_once_clamped(
        v in prop_oneof![any::<f32>(), (-300i32..300).prop_map(|k| k as f32 + 0.5), -1e7f32..1e7f32, -200f32..200f32],
        zero_point in -128i32..128,
    ) {
        let want = (v.round_ties_even() as i32).saturating_add(zero_point).clamp(-128, 127);
        prop_assert_eq!(super::round_saturating(v).saturating_add(zero_point).clamp(-128, 127), want);
    }
}

//! The static int8 rewrite: from a decluttered float graph and its calibration ranges to a graph whose
//! convolutions and matrix products run integer kernels (Perch's or tract's, `Scheme::engine`).
//!
//! Scheme (TFLite's int8): weights int8, symmetric, one scale per output channel; activations int8,
//! asymmetric, one scale and zero point per tensor; biases int32 at scale `x_scale * w_scale[o]`.
//! Per-channel `Mul`/`Add` constants after a linear op (folded BatchNorm, bias) are folded into its
//! weights and bias; a following ReLU/ReLU6 is folded into its output range (a zero point of -128
//! makes saturation do the clamp). Ops that only move or select values (max pooling, reshapes,
//! strided slices) run on int8 as they are. Everything else runs in float between a dequantize and a
//! quantize, and is reported.

use std::collections::{HashMap, HashSet};

use tract_onnx::prelude::*;
use anyhow::{Context, bail};
use tract_onnx::tract_core::ops::binary::BinMiniOp;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::downsample::Downsample;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::math::{Add, Max, Min, Mul};
use tract_onnx::tract_core::ops::nn::{DataFormat, Reduce, Reducer};
use perch_runtime::ops::dynamic::DynamicConv;
use perch_runtime::ops::lut::Lut;
use perch_runtime::ops::qadd::QAdd;
use perch_runtime::ops::qconv::QConv;

use super::calibrate::{Scheme, Statistics, WeightScales};

/// What the rewrite did, node by node of the float graph.
#[derive(Clone, Debug, Default)]
pub struct Rewritten {
    /// Linear ops (convolutions, matrix products) now running int8, by float node name.
    pub quantized: Vec<String>,
    /// Float ops kept in float because the int8 scheme has no integer form for them: (name, op).
    pub float_ops: Vec<(String, String)>,
    /// Linear ops kept in float on request (mixed precision).
    pub kept_float: Vec<String>,
    /// Every int8 tensor of the new graph and the float tensor it stands for, in graph order.
    pub taps: Vec<Tap>,
    /// Element-wise float ops replaced by an int8 lookup table, by the name of the last op.
    pub luts: Vec<String>,
}

/// An int8 tensor of the rewritten graph (by node name and slot, stable through serialization) and
/// the float outlet of the source graph whose value it approximates.
#[derive(Clone, Debug)]
pub struct Tap {
    pub float: OutletId,
    pub int8_node: String,
    pub int8_slot: usize,
}

/// int8 quantization parameters covering `range` (which contains 0).
///
/// The scale is one that survives the plan's `graph.quant`: tract-nnef writes scales there with nine
/// decimals (`{:.9}`), and when the plan is read back, every tensor whose op computes another scale
/// than the file states gets a `Cast` after it, an int8-to-int8 requantization of the whole tensor.
/// With scales below 0.01 that was most of them (MobileNetV2: 12 of 30 ms on x86-64 in those casts).
pub fn qparams_for(range: (f32, f32)) -> DatumType {
    let (lo, hi) = (range.0.min(0.0), range.1.max(0.0));
    let scale = as_written_in_graph_quant(((hi - lo) / 255.0).max(1e-8));
    let zero_point = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i32;
    DatumType::QI8(QParams::ZpScale { zero_point, scale })
}

/// `scale` as tract-nnef's `graph.quant` holds it (nine decimals), read back.
fn as_written_in_graph_quant(scale: f32) -> f32 {
    match format!("{scale:.9}").parse::<f32>() {
        Ok(written) if written > 0.0 => written,
        _ => scale,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinearKind {
    /// A convolution (or a pooling expressed as one).
    Conv,
    /// A matrix product with constant weights (Linear, Gemm, MatMul).
    MatMul,
}

/// A linear op found in the float graph, with what it absorbs.
struct Linear {
    kind: LinearKind,
    input: OutletId,
    /// OIHW float weights (matrix products become 1x1 convolutions).
    weights: Tensor,
    bias: Vec<f32>,
    pool_spec: PoolSpec,
    group: usize,
    /// Rank-2 input ([N, K]) lifted to [N, K, 1, 1] for the convolution.
    lift: bool,
    /// Output [N, O, 1, 1] squeezed back to [N, O].
    squeeze: bool,
    /// The float outlet whose value the int8 output stands for (after folded ops).
    output: OutletId,
    absorbed: Vec<usize>,
}

fn konst(model: &TypedModel, outlet: OutletId) -> Option<Arc<Tensor>> {
    model.outlet_fact(outlet).ok()?.konst.clone()
}

fn single_consumer(model: &TypedModel, outlet: OutletId) -> Option<&TypedNode> {
    let succ = &model.outlet_successors(outlet);
    if succ.len() != 1 || model.outputs.contains(&outlet) {
        return None;
    }
    Some(model.node(succ[0].node))
}

/// The constant operand of a binary node and the other input, if exactly one is constant.
fn const_operand(model: &TypedModel, node: &TypedNode) -> Option<(Arc<Tensor>, OutletId)> {
    match (konst(model, node.inputs[0]), konst(model, node.inputs[1])) {
        (Some(c), None) => Some((c, node.inputs[1])),
        (None, Some(c)) => Some((c, node.inputs[0])),
        _ => None,
    }
}

/// `c` as one value per channel (`channels` long), if it broadcasts along axis 1 only.
fn per_channel(c: &Tensor, channels: usize) -> Option<Vec<f32>> {
    let values = c.cast_to::<f32>().ok()?.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec();
    let shape = c.shape();
    let others_one = shape.iter().enumerate().all(|(axis, &d)| d == 1 || (axis == 1 && d == channels));
    match values.len() {
        1 => Some(vec![values[0]; channels]),
        n if n == channels && (shape.len() <= 1 || others_one) => Some(values),
        _ => None,
    }
}

fn is_all(c: &Tensor, value: f32) -> bool {
    c.cast_to::<f32>()
        .ok()
        .and_then(|t| t.try_as_plain_ram().ok().and_then(|p| p.as_slice::<f32>().ok().map(|s| s.iter().all(|&v| v == value))))
        .unwrap_or(false)
}

fn bin_op_is<O: BinMiniOp>(node: &TypedNode) -> bool {
    node.op_as::<TypedBinOp>().is_some_and(|op| op.0.is::<O>())
}

fn find_linear(model: &TypedModel, node: &TypedNode, fold_relu: bool) -> TractResult<Option<Linear>> {
    let (input, weights, bias, pool_spec, group, (lift, squeeze)) = if let Some(conv) = node.op_as::<Conv>() {
        let (Some(kernel), Some(bias)) = (konst(model, node.inputs[1]), konst(model, node.inputs[2])) else { return Ok(None) };
        if conv.q_params.is_some() || conv.kernel_fmt != KernelFormat::OIHW || conv.pool_spec.data_format != DataFormat::NCHW {
            return Ok(None);
        }
        if kernel.datum_type() != f32::datum_type() || kernel.rank() != 4 {
            return Ok(None);
        }
        let outputs = conv.output_channels();
        let Some(bias) = per_channel(&bias, outputs) else { return Ok(None) };
        (node.inputs[0], kernel.into_tensor(), bias, conv.pool_spec.clone(), conv.group, (false, false))
    } else if let Some(einsum) = node.op_as::<EinSum>() {
        if einsum.q_params.is_some() || node.inputs.len() != 2 {
            return Ok(None);
        }
        let Some((w_slot, w)) = (0..2).find_map(|i| konst(model, node.inputs[i]).map(|w| (i, w))) else { return Ok(None) };
        let x_slot = 1 - w_slot;
        if w.datum_type() != f32::datum_type() || konst(model, node.inputs[x_slot]).is_some() {
            return Ok(None);
        }
        let x_rank = model.outlet_fact(node.inputs[x_slot])?.rank();
        if x_rank != 2 && x_rank != 4 {
            return Ok(None);
        }
        // Each weight axis is either the output channel o (at output position 1) or contracted with
        // an x axis (not in the output); x's other axes go to the output in place. A rank-2 x is a
        // matrix product; a rank-4 x contracted on its channel axis is a 1x1 convolution, and on
        // channel, height and width (a flatten folded into the weights) a convolution as large as
        // the image.
        let mut o_at = None;
        let mut contracted = vec![];
        let mut dropped = vec![];
        for axis in einsum.axes.iter_all_axes() {
            let (in_x, in_w, out) = (&axis.inputs[x_slot], &axis.inputs[w_slot], &axis.outputs[0]);
            match (in_x.as_slice(), in_w.as_slice(), out.as_slice()) {
                ([x], [w], []) => contracted.push((*x, *w)),
                ([], [w], [1]) => o_at = Some(*w),
                ([a], [], [b]) if a == b && *a != 1 => {}
                // An image axis of size 1 that the product drops (global pooling before a Linear).
                ([a], [], []) if *a >= 2 && model.outlet_fact(node.inputs[x_slot])?.shape[*a].is_one() => dropped.push(*a),
                _ => return Ok(None),
            }
        }
        dropped.sort();
        contracted.sort();
        let Some(o_at) = o_at else { return Ok(None) };
        let out_rank = node.outputs[0].fact.rank();
        let xs: Vec<usize> = contracted.iter().map(|c| c.0).collect();
        let (lift, squeeze) = match (x_rank, xs.as_slice(), dropped.as_slice(), out_rank) {
            (2, [1], [], 2) => (true, true),
            (4, [1], [], 4) => (false, false),
            (4, [1], [2, 3], 2) | (4, [1, 2, 3], [], 2) => (false, true),
            _ => return Ok(None),
        };
        if w.rank() != 1 + contracted.len() {
            return Ok(None);
        }
        let order: Vec<usize> = std::iter::once(o_at).chain(contracted.iter().map(|c| c.1)).collect();
        let w = w.into_tensor().permute_axes(&order)?;
        let o = w.shape()[0];
        let k = w.shape()[1];
        let (kh, kw) = if contracted.len() == 3 { (w.shape()[2], w.shape()[3]) } else { (1, 1) };
        let w = w.into_shape(&[o, k, kh, kw])?;
        let spec = PoolSpec::new(DataFormat::NCHW, tvec!(kh, kw), PaddingSpec::Valid, None, None, k, o);
        (node.inputs[x_slot], w, vec![0.0; o], spec, 1, (lift, squeeze))
    } else if let Some(reduce) = node.op_as::<Reduce>() {
        // A sum over the whole image (global average pooling is this and a Mul by 1/HW, which the
        // absorption below folds in) is a depthwise convolution with a kernel of ones as large as
        // the image.
        let fact = model.outlet_fact(node.inputs[0])?;
        if reduce.reducer != Reducer::Sum || fact.rank() != 4 || reduce.axes.as_slice() != [2, 3] || fact.datum_type != f32::datum_type() {
            return Ok(None);
        }
        let (Some(c), Some(h), Some(w)) = (fact.shape[1].as_i64(), fact.shape[2].as_i64(), fact.shape[3].as_i64()) else {
            return Ok(None);
        };
        let (c, h, w) = (c as usize, h as usize, w as usize);
        let ones = Tensor::from_shape(&[c, 1, h, w], &vec![1f32; c * h * w])?;
        let spec = PoolSpec::new(DataFormat::NCHW, tvec!(h, w), PaddingSpec::Valid, None, None, c, c);
        (node.inputs[0], ones, vec![0.0; c], spec, c, (false, false))
    } else {
        return Ok(None);
    };
    let kind = if node.op_is::<EinSum>() { LinearKind::MatMul } else { LinearKind::Conv };
    let mut linear = Linear { kind, input, weights, bias, pool_spec, group, lift, squeeze, output: node.id.into(), absorbed: vec![] };
    linear.absorb_successors(model, fold_relu)?;
    Ok(Some(linear))
}

impl Linear {
    fn channels(&self) -> usize {
        self.weights.shape()[0]
    }

    /// Folds per-channel Mul and Add constants, then (if `fold_relu`) a ReLU / ReLU6, that follow the op.
    fn absorb_successors(&mut self, model: &TypedModel, fold_relu: bool) -> TractResult<()> {
        let o = self.channels();
        let per_o = self.weights.len() / o;
        loop {
            let Some(next) = single_consumer(model, self.output) else { return Ok(()) };
            let Some((c, _)) = const_operand(model, next) else { return Ok(()) };
            if bin_op_is::<Add>(next) {
                let Some(c) = per_channel(&c, o) else { return Ok(()) };
                self.bias.iter_mut().zip(&c).for_each(|(b, c)| *b += c);
            } else if bin_op_is::<Mul>(next) {
                let Some(c) = per_channel(&c, o) else { return Ok(()) };
                let mut plain = self.weights.try_as_plain_ram_mut()?;
                let w = plain.as_slice_mut::<f32>()?;
                for (ch, scale) in c.iter().enumerate() {
                    w[ch * per_o..(ch + 1) * per_o].iter_mut().for_each(|v| *v *= scale);
                }
                self.bias.iter_mut().zip(&c).for_each(|(b, c)| *b *= c);
            } else if fold_relu && bin_op_is::<Max>(next) && is_all(&c, 0.0) {
                self.absorbed.push(next.id);
                self.output = next.id.into();
                // ReLU6 is a Min(6) after the ReLU.
                if let Some(min) = single_consumer(model, self.output)
                    && bin_op_is::<Min>(min)
                    && const_operand(model, min).is_some()
                {
                    self.absorbed.push(min.id);
                    self.output = min.id.into();
                }
                return Ok(());
            } else {
                return Ok(());
            }
            self.absorbed.push(next.id);
            self.output = next.id.into();
        }
    }
}

/// Ops that select or move int8 values without arithmetic: they run on the quantized tensor as is.
fn passes_int8(node: &TypedNode) -> bool {
    node.inputs.len() == 1
        && node.outputs.len() == 1
        && (node.op_is::<AxisOp>()
            || node.op_is::<Downsample>()
            || node.op_as::<MaxPool>().is_some_and(|p| p.with_index_outputs.is_none()))
}

fn is_elementwise(node: &TypedNode) -> bool {
    (node.op_is::<ElementWiseOp>() || node.op_is::<TypedBinOp>())
        && node.outputs.len() == 1
        && node.outputs[0].fact.datum_type == f32::datum_type()
}

/// Element-wise float ops computing a function of one int8 tensor (the root) and scalar constants,
/// such as a learnable Swish `x * sigmoid(beta * x)` after a convolution: each sink (an op whose
/// value leaves the island) becomes one int8 lookup table from the root; interior ops disappear.
#[derive(Default)]
struct Islands {
    root: HashMap<usize, OutletId>,
    sinks: HashSet<usize>,
    interior: HashSet<usize>,
}

impl Islands {
    fn find(model: &TypedModel, roots: &HashSet<OutletId>) -> TractResult<Islands> {
        let mut islands = Islands::default();
        for id in model.eval_order()? {
            let node = model.node(id);
            if !is_elementwise(node) {
                continue;
            }
            let mut root = None;
            let mut ok = true;
            for input in &node.inputs {
                if let Some(c) = konst(model, *input) {
                    ok &= c.len() == 1;
                    continue;
                }
                let r = if roots.contains(input) {
                    Some(*input)
                } else {
                    (input.slot == 0).then(|| islands.root.get(&input.node).copied()).flatten()
                };
                match (r, root) {
                    (Some(r), None) => root = Some(r),
                    (Some(r), Some(prev)) if r == prev => {}
                    _ => ok = false,
                }
            }
            if let (true, Some(root)) = (ok, root)
                && node.outputs[0].fact.shape == model.outlet_fact(root)?.shape
            {
                islands.root.insert(id, root);
            }
        }
        for (&id, root) in &islands.root {
            let out = OutletId::new(id, 0);
            let leaves = model.outputs.contains(&out)
                || model.outlet_successors(out).iter().any(|s| islands.root.get(&s.node) != Some(root));
            if leaves {
                islands.sinks.insert(id);
            } else {
                islands.interior.insert(id);
            }
        }
        Ok(islands)
    }

    /// The island nodes `sink` depends on, in graph order.
    fn cone(&self, model: &TypedModel, sink: usize) -> TractResult<Vec<usize>> {
        let root = self.root[&sink];
        let mut seen = HashSet::new();
        let mut stack = vec![sink];
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                for input in &model.node(id).inputs {
                    if *input != root && self.root.contains_key(&input.node) {
                        stack.push(input.node);
                    }
                }
            }
        }
        Ok(model.eval_order()?.into_iter().filter(|id| seen.contains(id)).collect())
    }
}

/// Builds the int8 graph.
pub struct Rewriter<'a> {
    source: &'a TypedModel,
    stats: &'a Statistics,
    scheme: Scheme,
    keep_float: &'a HashSet<String>,
    target: TypedModel,
    float: HashMap<OutletId, OutletId>,
    quant: HashMap<OutletId, OutletId>,
    report: Rewritten,
    islands: Islands,
    /// Dynamic quantization: int8 weights for matrix products, activations quantized at run time.
    dynamic: bool,
}

impl<'a> Rewriter<'a> {
    pub fn new(source: &'a TypedModel, stats: &'a Statistics, scheme: Scheme, keep_float: &'a HashSet<String>) -> Self {
        let target = TypedModel { symbols: source.symbols.clone(), ..Default::default() };
        Rewriter {
            source,
            stats,
            scheme,
            keep_float,
            target,
            float: HashMap::new(),
            quant: HashMap::new(),
            report: Rewritten::default(),
            islands: Islands::default(),
            dynamic: false,
        }
    }

    /// Dynamic quantization instead of static (no calibration statistics needed).
    pub fn dynamic(mut self) -> Self {
        self.dynamic = true;
        self
    }

    fn range(&self, outlet: OutletId) -> TractResult<(f32, f32)> {
        let observer = self
            .stats
            .get(&outlet)
            .with_context(|| format!("no calibration statistics for {}", self.source.node(outlet.node).name))?;
        Ok(observer.range(self.scheme.method))
    }

    fn name(&self, base: &str, suffix: &str) -> String {
        self.target.unique_name(format!("{base}{suffix}")).into_owned()
    }

    /// The float value of a float-graph outlet in the new graph (dequantized if it is int8 there).
    fn float_wire(&mut self, outlet: OutletId) -> TractResult<OutletId> {
        if let Some(w) = self.float.get(&outlet) {
            return Ok(*w);
        }
        let node = self.source.node(outlet.node);
        let wire = if let Some(q) = self.quant.get(&outlet).copied() {
            let name = self.name(&node.name, ".dequantize");
            self.target.wire_node(name, cast(f32::datum_type()), &[q])?[0]
        } else if let Some(c) = konst(self.source, outlet) {
            let name = self.name(&node.name, "");
            self.target.add_const(name, c)?
        } else {
            bail!("{} has no value yet (graph order)", node.name)
        };
        self.float.insert(outlet, wire);
        Ok(wire)
    }

    /// The int8 value of a float-graph outlet (quantized with its calibrated range if it is float).
    fn quant_wire(&mut self, outlet: OutletId) -> TractResult<OutletId> {
        if let Some(w) = self.quant.get(&outlet) {
            return Ok(*w);
        }
        let dt = qparams_for(self.range(outlet)?);
        let f = self.float_wire(outlet)?;
        let name = self.name(&self.source.node(outlet.node).name, ".quantize");
        let wire = self.target.wire_node(name, cast(dt), &[f])?[0];
        self.set_quant(outlet, wire);
        Ok(wire)
    }

    fn set_quant(&mut self, float: OutletId, wire: OutletId) {
        self.quant.insert(float, wire);
        let int8_node = self.target.node(wire.node).name.clone();
        self.report.taps.push(Tap { float, int8_node, int8_slot: wire.slot });
    }

    fn scalar_const(&mut self, base: &str, what: &str, t: Tensor) -> TractResult<OutletId> {
        let name = self.name(base, what);
        self.target.add_const(name, t)
    }

    fn wire_linear(&mut self, node: &TypedNode, linear: Linear) -> TractResult<()> {
        let mut x = self.quant_wire(linear.input)?;
        let (x_zp, x_scale) = self.target.outlet_fact(x)?.datum_type.zp_scale();
        let o = linear.channels();
        let per_o = linear.weights.len() / o;
        let w = linear.weights.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        let mut w_scales = vec![0f32; o];
        let mut w_q = vec![0i8; w.len()];
        let mut bias_q = vec![0i32; o];
        let layer_max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        for ch in 0..o {
            let row = &w[ch * per_o..(ch + 1) * per_o];
            let max = match self.scheme.weights {
                WeightScales::PerChannel => row.iter().fold(0f32, |m, v| m.max(v.abs())),
                WeightScales::PerTensor => layer_max,
            };
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            w_scales[ch] = scale;
            for (q, v) in w_q[ch * per_o..(ch + 1) * per_o].iter_mut().zip(row) {
                *q = (v / scale).round().clamp(-127.0, 127.0) as i8;
            }
            let b = (linear.bias[ch] as f64 / (x_scale as f64 * scale as f64)).round();
            bias_q[ch] = b.clamp(i32::MIN as f64, i32::MAX as f64) as i32;
        }
        let y_dt = qparams_for(self.range(linear.output)?);
        let base = node.name.clone();
        let kernel = self.scalar_const(&base, ".weights_i8", Tensor::from_shape(linear.weights.shape(), &w_q)?)?;
        let bias = self.scalar_const(&base, ".bias_i32", Tensor::from_shape(&[o], &bias_q)?)?;
        // A scalar scale is what lets tract fuse the requantization into its matmul kernel.
        let k_scale = match self.scheme.weights {
            WeightScales::PerChannel => Tensor::from_shape(&[o], &w_scales)?,
            WeightScales::PerTensor => tensor0(w_scales[0]),
        };
        let k_scale = self.scalar_const(&base, ".weight_scales", k_scale)?;
        let mut inputs = tvec!(x, kernel, bias, k_scale);
        if linear.lift {
            for axis in [2, 3] {
                let name = self.name(&base, &format!(".as_image_{axis}"));
                x = self.target.wire_node(name, AxisOp::Add(axis), &[x])?[0];
            }
            inputs[0] = x;
        }
        let conv = Conv::new(linear.pool_spec, KernelFormat::OIHW, linear.group, Some(y_dt));
        let op = QConv { conv, x_zero_point: x_zp, x_scale, engine: self.scheme.engine };
        let name = self.name(&base, ".int8");
        let mut y = self.target.wire_node(name, op, &inputs)?[0];
        if linear.squeeze {
            for axis in [3, 2] {
                let name = self.name(&base, &format!(".as_matrix_{axis}"));
                y = self.target.wire_node(name, AxisOp::Rm(axis), &[y])?[0];
            }
        }
        self.set_quant(linear.output, y);
        self.report.quantized.push(base);
        Ok(())
    }

    /// A matrix product with int8 weights (per output channel) and its input quantized at run time.
    fn wire_dynamic(&mut self, node: &TypedNode, linear: Linear) -> TractResult<()> {
        let mut x = self.float_wire(linear.input)?;
        let o = linear.channels();
        let per_o = linear.weights.len() / o;
        let w = linear.weights.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        let mut scales = vec![1f32; o];
        let mut w_q = vec![0i8; w.len()];
        for ch in 0..o {
            let row = &w[ch * per_o..(ch + 1) * per_o];
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            scales[ch] = if max > 0.0 { max / 127.0 } else { 1.0 };
            for (q, v) in w_q[ch * per_o..(ch + 1) * per_o].iter_mut().zip(row) {
                *q = (v / scales[ch]).round().clamp(-127.0, 127.0) as i8;
            }
        }
        let base = node.name.clone();
        let kernel = self.scalar_const(&base, ".weights_i8", Tensor::from_shape(linear.weights.shape(), &w_q)?)?;
        let k_scale = self.scalar_const(&base, ".weight_scales", Tensor::from_shape(&[o], &scales)?)?;
        let bias = self.scalar_const(&base, ".bias", Tensor::from_shape(&[o], &linear.bias)?)?;
        if linear.lift {
            for axis in [2, 3] {
                let name = self.name(&base, &format!(".as_image_{axis}"));
                x = self.target.wire_node(name, AxisOp::Add(axis), &[x])?[0];
            }
        }
        let op = DynamicConv { pool_spec: linear.pool_spec, group: linear.group };
        let name = self.name(&base, ".dynamic_int8");
        let mut y = self.target.wire_node(name, op, &[x, kernel, k_scale, bias])?[0];
        if linear.squeeze {
            for axis in [3, 2] {
                let name = self.name(&base, &format!(".as_matrix_{axis}"));
                y = self.target.wire_node(name, AxisOp::Rm(axis), &[y])?[0];
            }
        }
        self.float.insert(linear.output, y);
        self.report.quantized.push(base);
        Ok(())
    }

    /// An Add of two int8 tensors (a residual connection), with the ReLU that follows it if any:
    /// the float outlet its int8 output stands for, and the absorbed ReLU node.
    fn residual_add(&self, node: &TypedNode) -> Option<(OutletId, Option<usize>)> {
        if !bin_op_is::<Add>(node) || !node.inputs.iter().all(|i| self.quant.contains_key(i)) {
            return None;
        }
        let out: OutletId = node.id.into();
        match single_consumer(self.source, out) {
            Some(relu) if bin_op_is::<Max>(relu) && const_operand(self.source, relu).is_some_and(|(c, _)| is_all(&c, 0.0)) => {
                Some((relu.id.into(), Some(relu.id)))
            }
            _ => Some((out, None)),
        }
    }

    /// The residual Add on int8 operands: tract dequantizes each operand with its own scale, adds and
    /// requantizes to the output's calibrated range, element by element, int8 in and out.
    fn wire_residual_add(&mut self, node: &TypedNode, output: OutletId) -> TractResult<()> {
        let a = self.quant_wire(node.inputs[0])?;
        let b = self.quant_wire(node.inputs[1])?;
        let dt = qparams_for(self.range(output)?);
        let name = self.name(&node.name, ".int8");
        let op = QAdd { output: dt };
        let y = self.target.wire_node(name, op, &[a, b])?[0];
        self.set_quant(output, y);
        Ok(())
    }

    /// The island ending at `sink` as a lookup table on its root's int8 value.
    fn wire_lut(&mut self, sink: &TypedNode) -> TractResult<()> {
        let root = self.islands.root[&sink.id];
        let x = self.quant_wire(root)?;
        let (x_zp, x_scale) = self.target.outlet_fact(x)?.datum_type.zp_scale();
        // The island's float function, evaluated on the 256 int8 values as one [1, 256, 1...] tensor.
        let rank = self.source.outlet_fact(root)?.rank();
        let mut shape = vec![1usize; rank.max(2)];
        shape[1] = 256;
        let mut f = TypedModel::default();
        let input = f.add_source("x", f32::fact(&shape))?;
        let mut map: HashMap<OutletId, OutletId> = HashMap::from([(root, input)]);
        for id in self.islands.cone(self.source, sink.id)? {
            let node = self.source.node(id);
            let mut inputs = tvec![];
            for i in &node.inputs {
                let w = match (map.get(i), konst(self.source, *i)) {
                    (Some(w), _) => *w,
                    (None, Some(c)) => {
                        let c = c.clone().into_tensor().into_shape(&vec![1; shape.len()])?;
                        f.add_const(format!("c{}", f.nodes().len()), c)?
                    }
                    _ => bail!("{} reads outside its island", node.name),
                };
                inputs.push(w);
            }
            let out = f.wire_node(&node.name, node.op.clone(), &inputs)?[0];
            map.insert(OutletId::new(id, 0), out);
        }
        f.select_output_outlets(&[map[&OutletId::new(sink.id, 0)]])?;
        let xs: Vec<f32> = (-128i32..=127).map(|q| (q - x_zp) as f32 * x_scale).collect();
        let ys = f.into_runnable()?.run(tvec!(Tensor::from_shape(&shape, &xs)?.into_tvalue()))?;
        let ys = ys[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        let y_dt = qparams_for(self.range(sink.id.into())?);
        let (y_zp, y_scale) = y_dt.zp_scale();
        let table: Vec<i8> = ys.iter().map(|y| ((y / y_scale).round() + y_zp as f32).clamp(-128.0, 127.0) as i8).collect();
        let table = self.scalar_const(&sink.name, ".table", Tensor::from_shape(&[256], &table)?)?;
        let name = self.name(&sink.name, ".lut");
        let y = self.target.wire_node(name, Lut { output: y_dt }, &[x, table])?[0];
        self.set_quant(sink.id.into(), y);
        self.report.luts.push(sink.name.clone());
        Ok(())
    }

    fn wire_float(&mut self, node: &TypedNode) -> TractResult<()> {
        let inputs = node.inputs.iter().map(|i| self.float_wire(*i)).collect::<TractResult<TVec<_>>>()?;
        let name = self.name(&node.name, "");
        let outputs = self.target.wire_node(name, node.op.clone(), &inputs)?;
        for (slot, w) in outputs.into_iter().enumerate() {
            self.float.insert(OutletId::new(node.id, slot), w);
        }
        Ok(())
    }

    pub fn run(mut self) -> TractResult<(TypedModel, Rewritten)> {
        let source = self.source;
        let mut roots = HashSet::new();
        for node in source.nodes() {
            if !self.dynamic
                && !self.keep_float.contains(&node.name)
                && let Some(linear) = find_linear(source, node, true)?
            {
                roots.insert(linear.output);
            }
        }
        self.islands = Islands::find(source, &roots)?;
        let mut absorbed = HashSet::new();
        for id in source.eval_order()? {
            let node = source.node(id);
            if absorbed.contains(&id) || node.op_is::<tract_onnx::tract_core::ops::konst::Const>() {
                continue;
            }
            if self.islands.interior.contains(&id) && self.quant.contains_key(&self.islands.root[&id]) {
                continue;
            }
            if self.islands.sinks.contains(&id) && self.quant.contains_key(&self.islands.root[&id]) {
                self.wire_lut(node)?;
                continue;
            }
            if node.op_is::<tract_onnx::tract_core::ops::source::TypedSource>() {
                let name = self.name(&node.name, "");
                let w = self.target.add_source(name, node.outputs[0].fact.clone())?;
                self.float.insert(id.into(), w);
                continue;
            }
            if let Some(linear) = find_linear(source, node, !self.dynamic)? {
                if self.dynamic {
                    if linear.kind == LinearKind::MatMul {
                        absorbed.extend(linear.absorbed.iter().copied());
                        self.wire_dynamic(node, linear)?;
                        continue;
                    }
                } else if self.keep_float.contains(&node.name) {
                    self.report.kept_float.push(node.name.clone());
                } else {
                    absorbed.extend(linear.absorbed.iter().copied());
                    self.wire_linear(node, linear)?;
                    continue;
                }
            } else if let Some((output, relu)) = self.residual_add(node) {
                absorbed.extend(relu);
                self.wire_residual_add(node, output)?;
                continue;
            } else if passes_int8(node) && self.quant.contains_key(&node.inputs[0]) {
                let x = self.quant_wire(node.inputs[0])?;
                let name = self.name(&node.name, "");
                let y = self.target.wire_node(name, node.op.clone(), &[x])?[0];
                self.set_quant(id.into(), y);
                continue;
            } else if !self.dynamic && !passes_int8(node) && node.outputs.iter().any(|o| o.fact.datum_type == f32::datum_type() && o.fact.konst.is_none()) {
                self.report.float_ops.push((node.name.clone(), node.op.name().to_string()));
            }
            self.wire_float(node)?;
        }
        let outputs = source.outputs.iter().map(|o| self.float_wire(*o)).collect::<TractResult<Vec<_>>>()?;
        self.target.select_output_outlets(&outputs)?;
        for (new, old) in outputs.iter().zip(&source.outputs) {
            if let Some(label) = source.outlet_label(*old) {
                self.target.set_outlet_label(*new, label.to_string())?;
            }
        }
        let model = self.target.into_compact()?;
        Ok((model, self.report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cast::Cast;

    /// A residual Add whose int8 output has the parameters `qparams_for` gives, written into a plan's
    /// archive and read back: tract-nnef inserts a `Cast` after any op whose output type differs
    /// from what `graph.quant` states. Ranges of a few tenths give scales below 0.01, which nine
    /// decimals did not hold.
    #[test]
    fn quantized_outputs_read_back_without_casts() {
        let input = qparams_for((-1.0, 1.0));
        for hi in [0.3f32, 0.0777, 1.5, 6.0, 37.5, 0.002] {
            let dt = qparams_for((-hi / 3.0, hi));
            let mut model = TypedModel::default();
            let a = model.add_source("a", input.fact([4])).unwrap();
            let b = model.add_source("b", input.fact([4])).unwrap();
            let y = model.wire_node("add", QAdd { output: dt }, &[a, b]).unwrap();
            model.select_output_outlets(&y).unwrap();
            let nnef = perch_runtime::ops::nnef();
            let tar = nnef.write_to_tar_with_config(&model, Vec::new(), false, true).unwrap();
            let read = nnef.model_for_read(&mut std::io::Cursor::new(tar)).unwrap();
            let casts = read.nodes().iter().filter(|n| n.op_is::<Cast>()).count();
            assert_eq!(casts, 0, "range up to {hi}: {dt:?} came back with a cast");
            assert_eq!(read.output_fact(0).unwrap().datum_type, dt);
        }
    }
}

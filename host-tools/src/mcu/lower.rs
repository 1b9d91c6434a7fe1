//! From Perch's int8 tract graph (what the static int8 rewrite produces, NCHW) to a micro plan
//! (NHWC, batch 1): each int8 op becomes one micro op; layout-only ops become aliases; strided
//! slices feeding a 1x1 convolution become its stride.

use std::collections::HashMap;

use perch_micro::kernels::{Clamp, Padding, Shape, Window};
use perch_micro::plan::{PlanBuilder, TensorDesc, TensorId};
use perch_runtime::ops::lut::Lut;
use perch_runtime::ops::qadd::QAdd;
use perch_runtime::ops::qconv::QConv;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::cnn::{MaxPool, PoolSpec};
use tract_onnx::tract_core::ops::downsample::Downsample;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::source::TypedSource;

use super::McuError;
use super::planner::{self, Lifetime};

/// One micro op, for reports and the budget check.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The float graph's node it comes from (or the int8 graph's).
    pub name: String,
    pub kind: &'static str,
    pub output: Shape,
    pub macs: u64,
    /// Constant bytes it adds to the plan (weights, biases, requantization constants, tables).
    pub weight_bytes: u64,
}

/// A tensor in the making: shape and quantization; the offset comes from the planner.
struct Tensor8 {
    shape: Shape,
    scale: f32,
    zero_point: i32,
}

enum MicroOp {
    Conv {
        input: usize,
        output: usize,
        window: Window,
        weights: Vec<i8>,
        bias: Vec<i32>,
        scales: Vec<f32>,
    },
    Depthwise {
        input: usize,
        output: usize,
        window: Window,
        weights: Vec<i8>,
        bias: Vec<i32>,
        scales: Vec<f32>,
    },
    FullyConnected {
        input: usize,
        output: usize,
        weights: Vec<i8>,
        bias: Vec<i32>,
        scales: Vec<f32>,
    },
    MaxPool {
        input: usize,
        output: usize,
        window: Window,
    },
    Add {
        a: usize,
        b: usize,
        output: usize,
    },
    Lookup {
        input: usize,
        output: usize,
        table: [i8; 256],
    },
}

impl MicroOp {
    fn inputs(&self) -> Vec<usize> {
        match self {
            MicroOp::Conv { input, .. }
            | MicroOp::Depthwise { input, .. }
            | MicroOp::FullyConnected { input, .. }
            | MicroOp::MaxPool { input, .. }
            | MicroOp::Lookup { input, .. } => vec![*input],
            MicroOp::Add { a, b, .. } => vec![*a, *b],
        }
    }
    fn output(&self) -> usize {
        match self {
            MicroOp::Conv { output, .. }
            | MicroOp::Depthwise { output, .. }
            | MicroOp::FullyConnected { output, .. }
            | MicroOp::MaxPool { output, .. }
            | MicroOp::Add { output, .. }
            | MicroOp::Lookup { output, .. } => *output,
        }
    }
}

/// The micro plan and what it is made of.
pub struct Lowered {
    pub bytes: perch_micro::plan::AlignedBytes,
    pub layers: Vec<Layer>,
    /// Arena bytes for the activations (planner), and the lower bound any plan needs.
    pub activations: usize,
    pub lower_bound: usize,
    /// Quantization of the plan's input (the firmware quantizes its frames with it).
    pub input_scale: f32,
    pub input_zero_point: i32,
}

/// A view of an int8 tensor: the micro tensor, and a pending stride from strided slices.
#[derive(Clone, Copy)]
struct View {
    tensor: usize,
    stride: (usize, usize),
}

fn nhwc(shape: &[usize]) -> Option<Shape> {
    match shape {
        [1, c, h, w] => Some(Shape::new(*h, *w, *c)),
        [1, c] => Some(Shape::new(1, 1, *c)),
        _ => None,
    }
}

fn konst_of(model: &TypedModel, outlet: OutletId) -> Option<Arc<Tensor>> {
    model.outlet_fact(outlet).ok()?.konst.clone()
}

fn unsupported(node: &TypedNode, why: impl std::fmt::Display) -> McuError {
    McuError::Unsupported {
        node: node.name.clone(),
        op: node.op.name().to_string(),
        why: why.to_string(),
    }
}

fn window(pool: &PoolSpec, input: Shape, node: &TypedNode) -> Result<Window, McuError> {
    if pool.dilations().iter().any(|&d| d != 1) {
        return Err(unsupported(node, "dilation is not 1"));
    }
    let k = &pool.kernel_shape;
    let s = pool.strides();
    let dims = pool.padding.compute(&[input.h, input.w], k, &[1, 1], &s);
    Ok(Window {
        kernel_h: k[0],
        kernel_w: k[1],
        stride_h: s[0],
        stride_w: s[1],
        padding: Padding {
            top: dims[0].pad_before,
            left: dims[1].pad_before,
            bottom: dims[0].pad_after,
            right: dims[1].pad_after,
        },
    })
}

fn values<T: Datum + Copy>(t: &Tensor) -> Result<Vec<T>, McuError> {
    let t = t
        .cast_to::<T>()
        .map_err(|e| McuError::Model(format!("{e:#}")))?;
    let plain = t
        .try_as_plain_ram()
        .map_err(|e| McuError::Model(format!("{e:#}")))?;
    Ok(plain
        .as_slice::<T>()
        .map_err(|e| McuError::Model(format!("{e:#}")))?
        .to_vec())
}

/// Lowers `model` (Perch's int8 graph, any batch) to a micro plan with `labels` classes.
pub fn lower(model: &TypedModel, labels: usize) -> Result<Lowered, McuError> {
    let model = crate::quantize::calibrate::fix_batch(model, 1)
        .map_err(|e| McuError::Model(format!("{e:#}")))?;
    let mut tensors: Vec<Tensor8> = vec![];
    let mut ops: Vec<(String, MicroOp)> = vec![];
    let mut views: HashMap<OutletId, View> = HashMap::new();
    let mut input: Option<usize> = None;
    let shape_of = |outlet: OutletId| -> Result<Vec<usize>, McuError> {
        let fact = model
            .outlet_fact(outlet)
            .map_err(|e| McuError::Model(format!("{e:#}")))?;
        fact.shape
            .as_concrete()
            .map(|s| s.to_vec())
            .ok_or_else(|| McuError::Model("symbolic shape".into()))
    };
    let new_tensor = |tensors: &mut Vec<Tensor8>,
                      node: &TypedNode,
                      outlet: OutletId|
     -> Result<usize, McuError> {
        let fact = &node.outputs[outlet.slot].fact;
        let shape = fact.shape.as_concrete().and_then(nhwc).ok_or_else(|| {
            unsupported(
                node,
                format!("tensor shape {:?} is not an image or a vector", fact.shape),
            )
        })?;
        let (zero_point, scale) = fact.datum_type.zp_scale();
        if fact.datum_type.unquantized() != DatumType::I8 || !fact.datum_type.is_quantized() {
            return Err(unsupported(
                node,
                format!(
                    "the MCU runs int8 tensors, this one is {:?}",
                    fact.datum_type
                ),
            ));
        }
        tensors.push(Tensor8 {
            shape,
            scale,
            zero_point,
        });
        Ok(tensors.len() - 1)
    };
    let view = |views: &HashMap<OutletId, View>,
                node: &TypedNode,
                outlet: OutletId|
     -> Result<View, McuError> {
        views.get(&outlet).copied().ok_or_else(|| {
            unsupported(
                node,
                "its input is not an int8 tensor of the micro plan (a float op before it?)",
            )
        })
    };
    let plain = |v: View, node: &TypedNode| -> Result<usize, McuError> {
        if v.stride == (1, 1) {
            Ok(v.tensor)
        } else {
            Err(unsupported(
                node,
                "a strided slice feeds it (only 1x1 convolutions absorb one)",
            ))
        }
    };
    for id in model
        .eval_order()
        .map_err(|e| McuError::Model(format!("{e:#}")))?
    {
        let node = model.node(id);
        let out = OutletId::new(id, 0);
        if node.op_is::<Const>() {
            continue;
        }
        if node.op_is::<TypedSource>() {
            continue;
        }
        if let Some(cast) = node.op_as::<Cast>() {
            let from = model
                .outlet_fact(node.inputs[0])
                .map_err(|e| McuError::Model(format!("{e:#}")))?
                .datum_type;
            if cast.to.is_quantized()
                && from == f32::datum_type()
                && model.node(node.inputs[0].node).op_is::<TypedSource>()
            {
                if input.is_some() {
                    return Err(unsupported(node, "the input is quantized twice"));
                }
                let t = new_tensor(&mut tensors, node, out)?;
                input = Some(t);
                views.insert(
                    out,
                    View {
                        tensor: t,
                        stride: (1, 1),
                    },
                );
                continue;
            }
            if cast.to == f32::datum_type() && model.outputs.contains(&out) {
                continue; // the final dequantization happens on the host or in the app
            }
            return Err(unsupported(
                node,
                "a float op sits between int8 layers (the MCU runs int8 only)",
            ));
        }
        if let Some(axis) = node.op_as::<AxisOp>() {
            // Adding or removing unit axes keeps NHWC bytes in place: an alias.
            let v = view(&views, node, node.inputs[0])?;
            let (from, to) = (shape_of(node.inputs[0])?, shape_of(out)?);
            // Adding or removing unit axes keeps the bytes of a vector, or of an image whose
            // channel/height/width order is unchanged.
            let vector = |s: &[usize]| s.iter().filter(|&&d| d > 1).count() <= 1;
            let same = from.iter().product::<usize>() == to.iter().product::<usize>()
                && ((vector(&from) && vector(&to)) || (nhwc(&from).is_some() && nhwc(&from) == nhwc(&to)));
            if !same {
                return Err(unsupported(
                    node,
                    format!("layout change {axis:?} from {from:?} to {to:?} moves bytes in NHWC"),
                ));
            }
            views.insert(out, v);
            continue;
        }
        if let Some(ds) = node.op_as::<Downsample>() {
            let v = view(&views, node, node.inputs[0])?;
            if ds.modulo != 0 || ds.stride < 1 || !(ds.axis == 2 || ds.axis == 3) {
                return Err(unsupported(
                    node,
                    "only positive strides on image axes are supported",
                ));
            }
            let mut stride = v.stride;
            if ds.axis == 2 {
                stride.0 *= ds.stride as usize
            } else {
                stride.1 *= ds.stride as usize
            }
            views.insert(
                out,
                View {
                    tensor: v.tensor,
                    stride,
                },
            );
            continue;
        }
        let name = node.name.trim_end_matches(".int8").to_string();
        let micro = if let Some(q) = node.op_as::<QConv>() {
            let v = view(&views, node, node.inputs[0])?;
            let x = &tensors[v.tensor];
            let (x_zp, x_scale) = (x.zero_point, x.scale);
            if (x_zp, x_scale.to_bits()) != (q.x_zero_point, q.x_scale.to_bits()) {
                return Err(unsupported(
                    node,
                    "its input quantization differs from its producer's",
                ));
            }
            let input_shape = x.shape;
            let (Some(kernel), Some(bias), Some(scales)) = (
                konst_of(&model, node.inputs[1]),
                konst_of(&model, node.inputs[2]),
                konst_of(&model, node.inputs[3]),
            ) else {
                return Err(unsupported(node, "weights are not constant"));
            };
            let k = kernel.shape().to_vec();
            let (o, i_per_g, kh, kw) = (k[0], k[1], k[2], k[3]);
            let w: Vec<i8> = values::<i8>(&kernel)?;
            let bias: Vec<i32> = values::<i32>(&bias)?;
            let mut scales: Vec<f32> = values::<f32>(&scales)?;
            if scales.len() == 1 {
                scales = vec![scales[0]; o];
            }
            let output = new_tensor(&mut tensors, node, out)?;
            let mut win = window(&q.conv.pool_spec, input_shape, node)?;
            if v.stride != (1, 1) {
                if (kh, kw, win.stride_h, win.stride_w) != (1, 1, 1, 1)
                    || win.padding != Padding::default()
                {
                    return Err(unsupported(
                        node,
                        "a strided slice feeds a convolution that is not 1x1",
                    ));
                }
                win.stride_h = v.stride.0;
                win.stride_w = v.stride.1;
            }
            let group = q.conv.group;
            if group == 1 {
                // OIHW -> OHWI.
                let mut ohwi = vec![0i8; w.len()];
                for oc in 0..o {
                    for ic in 0..i_per_g {
                        for y in 0..kh {
                            for xx in 0..kw {
                                ohwi[((oc * kh + y) * kw + xx) * i_per_g + ic] =
                                    w[((oc * i_per_g + ic) * kh + y) * kw + xx];
                            }
                        }
                    }
                }
                let full_image = (kh, kw) == (input_shape.h, input_shape.w)
                    && win.padding == Padding::default()
                    && tensors[output].shape.h * tensors[output].shape.w == 1;
                if full_image {
                    MicroOp::FullyConnected {
                        input: v.tensor,
                        output,
                        weights: ohwi,
                        bias,
                        scales,
                    }
                } else {
                    MicroOp::Conv {
                        input: v.tensor,
                        output,
                        window: win,
                        weights: ohwi,
                        bias,
                        scales,
                    }
                }
            } else if group == input_shape.c && i_per_g == 1 && o == group {
                // [C, 1, kh, kw] -> [kh, kw, C].
                let mut hwc = vec![0i8; w.len()];
                for c in 0..o {
                    for y in 0..kh {
                        for xx in 0..kw {
                            hwc[(y * kw + xx) * o + c] = w[(c * kh + y) * kw + xx];
                        }
                    }
                }
                MicroOp::Depthwise {
                    input: v.tensor,
                    output,
                    window: win,
                    weights: hwc,
                    bias,
                    scales,
                }
            } else {
                return Err(unsupported(
                    node,
                    format!("grouped convolution ({group} groups) that is not depthwise"),
                ));
            }
        } else if node.op_is::<QAdd>() {
            let (a, b) = (
                plain(view(&views, node, node.inputs[0])?, node)?,
                plain(view(&views, node, node.inputs[1])?, node)?,
            );
            if tensors[a].shape != tensors[b].shape {
                return Err(unsupported(
                    node,
                    "the MCU adds tensors of the same shape only (no broadcast)",
                ));
            }
            let output = new_tensor(&mut tensors, node, out)?;
            MicroOp::Add { a, b, output }
        } else if node.op_is::<Lut>() {
            let x = plain(view(&views, node, node.inputs[0])?, node)?;
            let Some(table) = konst_of(&model, node.inputs[1]) else {
                return Err(unsupported(node, "table is not constant"));
            };
            let table: [i8; 256] = values::<i8>(&table)?
                .try_into()
                .map_err(|_| unsupported(node, "table is not 256 entries"))?;
            let output = new_tensor(&mut tensors, node, out)?;
            MicroOp::Lookup {
                input: x,
                output,
                table,
            }
        } else if let Some(pool) = node.op_as::<MaxPool>() {
            let x = plain(view(&views, node, node.inputs[0])?, node)?;
            let win = window(&pool.pool_spec, tensors[x].shape, node)?;
            let output = new_tensor(&mut tensors, node, out)?;
            MicroOp::MaxPool {
                input: x,
                output,
                window: win,
            }
        } else {
            return Err(unsupported(node, "the micro runtime has no such int8 op"));
        };
        views.insert(
            out,
            View {
                tensor: micro.output(),
                stride: (1, 1),
            },
        );
        ops.push((name, micro));
    }
    let input = input.ok_or_else(|| McuError::Model("the graph has no quantized input".into()))?;
    let [model_output] = model.outputs.as_slice() else {
        return Err(McuError::Model("the graph must have one output".into()));
    };
    let output_node = model.node(model_output.node);
    let final_outlet = if output_node.op_is::<Cast>() {
        output_node.inputs[0]
    } else {
        *model_output
    };
    let output = views
        .get(&final_outlet)
        .map(|v| v.tensor)
        .ok_or_else(|| McuError::Model("the output is not int8".into()))?;

    // Liveness, then offsets.
    let mut lifetimes: Vec<Lifetime> = tensors
        .iter()
        .map(|t| Lifetime {
            size: t.shape.elements().unwrap_or(0),
            first: usize::MAX,
            last: 0,
        })
        .collect();
    lifetimes[input].first = 0;
    for (ix, (_, op)) in ops.iter().enumerate() {
        let o = op.output();
        lifetimes[o].first = lifetimes[o].first.min(ix);
        lifetimes[o].last = lifetimes[o].last.max(ix);
        for i in op.inputs() {
            lifetimes[i].last = lifetimes[i].last.max(ix);
            lifetimes[i].first = lifetimes[i].first.min(ix);
        }
    }
    lifetimes[output].last = ops.len().saturating_sub(1);
    let placement = planner::place(&lifetimes);
    let bound = planner::lower_bound(&lifetimes);

    let mut b = PlanBuilder::new();
    let ids: Vec<TensorId> = tensors
        .iter()
        .zip(&placement.offsets)
        .map(|(t, &o)| {
            b.tensor(TensorDesc {
                shape: t.shape,
                scale: t.scale,
                zero_point: t.zero_point,
                offset: Some(o as u32),
            })
        })
        .collect();
    b.set_input(ids[input])
        .set_output(ids[output])
        .set_label_count(labels as u32);
    let mut layers = vec![];
    for (name, op) in &ops {
        let out_shape = tensors[op.output()].shape;
        let (kind, macs, bytes) = match op {
            MicroOp::Conv {
                input,
                output,
                window,
                weights,
                bias,
                scales,
            } => {
                b.conv2d(
                    ids[*input],
                    ids[*output],
                    *window,
                    Clamp::NONE,
                    weights,
                    bias,
                    scales,
                );
                (
                    "conv2d",
                    (out_shape.elements().unwrap_or(0) * weights.len() / bias.len()) as u64,
                    weights.len() + 12 * bias.len(),
                )
            }
            MicroOp::Depthwise {
                input,
                output,
                window,
                weights,
                bias,
                scales,
            } => {
                b.depthwise_conv2d(
                    ids[*input],
                    ids[*output],
                    *window,
                    1,
                    Clamp::NONE,
                    weights,
                    bias,
                    scales,
                );
                (
                    "depthwise",
                    (out_shape.elements().unwrap_or(0) * window.kernel_h * window.kernel_w) as u64,
                    weights.len() + 12 * bias.len(),
                )
            }
            MicroOp::FullyConnected {
                input,
                output,
                weights,
                bias,
                scales,
            } => {
                b.fully_connected(
                    ids[*input],
                    ids[*output],
                    Clamp::NONE,
                    weights,
                    bias,
                    scales,
                );
                (
                    "fully_connected",
                    weights.len() as u64,
                    weights.len() + 12 * bias.len(),
                )
            }
            MicroOp::MaxPool {
                input,
                output,
                window,
            } => {
                b.max_pool(ids[*input], ids[*output], *window, Clamp::NONE);
                ("max_pool", 0, 0)
            }
            MicroOp::Add {
                a,
                b: second,
                output,
            } => {
                b.add(ids[*a], ids[*second], ids[*output], Clamp::NONE);
                ("add", 0, 0)
            }
            MicroOp::Lookup {
                input,
                output,
                table,
            } => {
                b.lookup(ids[*input], ids[*output], table);
                ("lookup", 0, 256)
            }
        };
        layers.push(Layer {
            name: name.clone(),
            kind,
            output: out_shape,
            macs,
            weight_bytes: bytes as u64,
        });
    }
    let bytes = b.build().map_err(|e| McuError::Plan(format!("{e:?}")))?;
    Ok(Lowered {
        bytes,
        layers,
        activations: placement.arena,
        lower_bound: bound,
        input_scale: tensors[input].scale,
        input_zero_point: tensors[input].zero_point,
    })
}

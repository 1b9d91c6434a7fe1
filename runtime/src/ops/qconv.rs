//! `PerchQConv`: an int8 convolution with per-output-channel weight scales.
//!
//! It stands for tract's quantized [`Conv`] (nine inputs: input, kernel, bias, then the zero point
//! and scale of input, kernel and output) in a form that serializes with its per-channel scales
//! intact and with the scalar parameters as attributes rather than tensors. At optimization time it
//! runs on one of two engines, chosen by `perch compile` and written in the plan: Perch's own int8
//! kernels ([`crate::kernels`], the default), into which it turns when the plan is optimized, or
//! tract's, into whose quantized `Conv` it declutters (tract's integer im2col + int8 matmul).

use tract_core::ops::cast::cast;
use tract_core::ops::Downsample;
use tract_core::ops::cnn::{Conv, KernelFormat};
use tract_nnef::internal::*;
use tract_nnef::ops::nnef::deser::read_conv_parameters;
use tract_nnef::ops::nnef::ser::make_conv_named_args;
use tract_nnef::ser::{invocation, numeric, string};

use crate::kernels::{Geometry, Isa, Layout, QConvKernel};

/// Which kernels run a [`QConv`] once the plan is optimized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Engine {
    /// Perch's int8 kernels (NEON, SDOT, AVX2 or portable, chosen at run time); tract's where they do
    /// not apply (grouped convolutions other than depthwise).
    #[default]
    Perch,
    /// tract's quantized convolution.
    Tract,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Perch => "perch",
            Engine::Tract => "tract",
        }
    }
}

/// An int8 convolution: inputs are the int8 input, the int8 OIHW kernel, the int32 bias and the
/// per-output-channel kernel scales (f32); the input and output quantization are constant fields.
#[derive(Debug, Clone, PartialEq)]
pub struct QConv {
    /// The quantized tract convolution this becomes (its `q_params` is the output type).
    pub conv: Conv,
    pub x_zero_point: i32,
    pub x_scale: f32,
    pub engine: Engine,
}

impl std::hash::Hash for QConv {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.conv.hash(state);
        self.x_zero_point.hash(state);
        self.x_scale.to_bits().hash(state);
        self.engine.hash(state);
    }
}

impl Eq for QConv {}

impl QConv {
    fn output_qparams(&self) -> TractResult<(i32, f32)> {
        let dt = self.conv.q_params.context("PerchQConv wraps quantized convolutions only")?;
        ensure!(dt.unquantized() == DatumType::I8 && dt.is_quantized(), "PerchQConv outputs int8, not {dt:?}");
        Ok(dt.zp_scale())
    }

    /// Wires the tract `Conv` with its nine inputs.
    fn wire_conv(&self, model: &mut TypedModel, name: &str, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        ensure!(inputs.len() == 4, "PerchQConv takes input, kernel, bias and kernel scales");
        let (y_zp, y_scale) = self.output_qparams()?;
        let mut wires: TVec<OutletId> = inputs[..3].into();
        for (what, t) in [
            ("x_zero_point", tensor0(self.x_zero_point)),
            ("x_scale", tensor0(self.x_scale)),
            ("k_zero_point", tensor0(0i32)),
        ] {
            wires.push(model.add_const(format!("{name}.{what}"), t)?);
        }
        wires.push(inputs[3]);
        wires.push(model.add_const(format!("{name}.y_zero_point"), tensor0(y_zp))?);
        wires.push(model.add_const(format!("{name}.y_scale"), tensor0(y_scale))?);
        model.wire_node(name, self.conv.clone(), &wires)
    }
}

impl Op for QConv {
    fn name(&self) -> StaticName {
        "PerchQConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = self.conv.info()?;
        info.push(format!("input zero point {} scale {}, output {:?}", self.x_zero_point, self.x_scale, self.conv.q_params));
        info.push(format!("engine: {}", self.engine.name()));
        Ok(info)
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for QConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        super::eval_as_graph(inputs, |model, wires| self.wire_conv(model, "qconv", wires))
    }
}

impl TypedOp for QConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 4, "PerchQConv takes input, kernel, bias and kernel scales");
        ensure!(self.conv.kernel_fmt == KernelFormat::OIHW, "PerchQConv kernels are OIHW");
        self.output_qparams()?;
        super::with_qconv_facts(inputs[0], inputs[1], inputs[2], inputs[3], |facts| self.conv.output_facts(facts))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        super::with_qconv_facts(inputs[0], inputs[1], inputs[2], inputs[3], |facts| self.conv.cost(facts))
    }

    fn declutter(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        if self.engine == Engine::Perch {
            return Ok(None);
        }
        super::declutter_as_graph(model, node, "perch-qconv-to-conv", |patch, inputs| self.wire_conv(patch, &node.name, inputs))
    }

    fn codegen(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        if self.engine != Engine::Perch {
            return Ok(None);
        }
        match self.kernel(model, node)? {
            Some((kernel, input)) => {
                let op = QConvExec { kernel: Arc::new(kernel), output: self.conv.q_params.context("quantized")? };
                Ok(Some(TypedModelPatch::replace_single_op(model, node, &[input], op)?))
            }
            // Not for Perch's kernels: tract's quantized convolution, then tract's own codegen.
            None => super::declutter_as_graph(model, node, "perch-qconv-to-conv", |patch, inputs| self.wire_conv(patch, &node.name, inputs)),
        }
    }

    as_op!();
}

impl QConv {
    /// Perch's kernel for this convolution in `model` and the outlet it reads, or None where it does
    /// not apply (weights not constant, symbolic image size, unsupported groups). A pointwise
    /// convolution reads through the `Downsample`s tract puts in front of strided 1x1 convolutions:
    /// the kernel strides instead.
    fn kernel(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<(QConvKernel, OutletId)>> {
        let spec = &self.conv.pool_spec;
        let pointwise = spec.kernel_shape.iter().all(|&k| k == 1)
            && spec.computed_padding(&[1usize, 1]).iter().all(|p| p.pad_before == 0 && p.pad_after == 0);
        let (mut input, mut folded) = (node.inputs[0], [1usize, 1]);
        while let Some(ds) = model.node(input.node).op_as::<Downsample>().filter(|_| pointwise) {
            if ds.modulo != 0 || ds.stride <= 0 || !(ds.axis == 2 || ds.axis == 3) || model.outlet_successors(input).len() != 1 {
                break;
            }
            folded[ds.axis - 2] *= ds.stride as usize;
            input = model.node(input.node).inputs[0];
        }
        let Some(kernel) = self.kernel_reading(model, node, input, folded)? else { return Ok(None) };
        // The folded strides must give the shape the downsampled input gave.
        let [_, _, h, w] = kernel.output_shape(1);
        let expected = &model.outlet_fact(OutletId::new(node.id, 0))?.shape;
        if expected.len() != 4 || expected[2] != h.to_dim() || expected[3] != w.to_dim() {
            return Ok(self.kernel_reading(model, node, node.inputs[0], [1, 1])?.map(|k| (k, node.inputs[0])));
        }
        Ok(Some((kernel, input)))
    }

    /// Perch's kernel for this convolution reading `input`, with its strides multiplied by `folded`.
    fn kernel_reading(&self, model: &TypedModel, node: &TypedNode, input: OutletId, folded: [usize; 2]) -> TractResult<Option<QConvKernel>> {
        let x = model.outlet_fact(input)?;
        let consts = node.inputs[1..4].iter().map(|i| Ok(model.outlet_fact(*i)?.konst.clone())).collect::<TractResult<Vec<_>>>()?;
        let [Some(kernel), Some(bias), Some(k_scale)] = &consts[..] else { return Ok(None) };
        let spec = &self.conv.pool_spec;
        let Some(hw) = x.shape.iter().skip(2).map(|d| d.to_usize().ok()).collect::<Option<Vec<usize>>>() else { return Ok(None) };
        if x.datum_type.unquantized() != DatumType::I8 || hw.contains(&0) {
            return Ok(None);
        }
        if x.rank() != 4 || spec.data_format != tract_core::ops::nn::DataFormat::NCHW || hw.len() != 2 {
            return Ok(None);
        }
        // Strides folded from `Downsample`s multiply the convolution's, and give the output size.
        let geometry = super::conv_geometry(spec, [hw[0], hw[1]]);
        let geometry = if folded == [1, 1] {
            geometry
        } else {
            let stride = [0, 1].map(|a| geometry.stride[a] * folded[a]);
            Geometry { stride, output: [0, 1].map(|a| (hw[a] - 1) / stride[a] + 1), ..geometry }
        };
        let (_, y_scale) = self.output_qparams()?;
        let k_scale = k_scale.cast_to::<f32>()?;
        let k_scale = k_scale.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        let bias = bias.cast_to::<i32>()?;
        let bias = bias.try_as_plain_ram()?.as_slice::<i32>()?.to_vec();
        // tract's arithmetic, in f32: (kernel scale * input scale) / output scale, the division decluttered
        // into a multiplication by the reciprocal.
        let scales: Vec<f32> = (0..bias.len()).map(|o| (k_scale[if k_scale.len() == 1 { 0 } else { o }] * self.x_scale) * y_scale.recip()).collect();
        let kernel = kernel.try_as_plain_ram()?;
        let Ok(weights) = kernel.as_slice::<i8>() else { return Ok(None) };
        let (y_zp, _) = self.output_qparams()?;
        let (Ok(x_zp), Ok(y_zp)) = (i8::try_from(self.x_zero_point), i8::try_from(y_zp)) else { return Ok(None) };
        let channels = spec.input_channels;
        Ok(QConvKernel::new(geometry, channels, self.conv.group, weights, &bias, &scales, x_zp, y_zp, Isa::best()).ok())
    }
}

/// A [`QConv`] on Perch's kernels: what the optimized plan runs (never serialized).
#[derive(Debug, Clone)]
pub struct QConvExec {
    pub kernel: Arc<QConvKernel>,
    /// The int8 output type.
    pub output: DatumType,
}

impl Op for QConvExec {
    fn name(&self) -> StaticName {
        "PerchQConv#kernels".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let layout = |l: Layout| match l {
            Layout::Nchw => "NCHW",
            Layout::Nhwc => "NHWC",
        };
        let (i, o) = (layout(self.kernel.input_layout()), layout(self.kernel.output_layout()));
        Ok(vec![format!("{:?}, {} kernel, {i} in, {o} out", self.kernel.geometry(), self.kernel.isa().name())])
    }

    op_as_typed_op!();
}

impl PartialEq for QConvExec {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.kernel, &other.kernel) && self.output == other.output
    }
}

impl Eq for QConvExec {}

impl EvalOp for QConvExec {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let batch = x.shape()[0];
        let mut y = unsafe { Tensor::uninitialized_dt(self.output, &self.kernel.output_dims(batch))? };
        {
            let x = x.try_as_plain_ram()?;
            let x = unsafe { x.as_slice_unchecked::<i8>() };
            let mut out = y.try_as_plain_ram_mut()?;
            let out = unsafe { out.as_slice_mut_unchecked::<i8>() };
            self.kernel.run(x, batch, out)?;
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for QConvExec {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type.unquantized() == DatumType::I8, "PerchQConv#kernels takes int8");
        let [_, a, b, c] = self.kernel.output_dims(0);
        let shape: TVec<TDim> = tvec!(inputs[0].shape[0].clone(), a.into(), b.into(), c.into());
        Ok(tvec!(self.output.fact(shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((Cost::FMA(DatumType::I32), inputs[0].shape[0].clone() * self.kernel.macs())))
    }

    as_op!();
}

pub fn register(registry: &mut Registry) {
    registry.register_dumper(dump);
    let mut params = vec![
        TypeName::Scalar.tensor().named("input"),
        TypeName::Scalar.tensor().named("filter"),
        TypeName::Scalar.tensor().named("bias"),
        TypeName::Scalar.tensor().named("filter_scale"),
        TypeName::Integer.spec().named("input_zero_point"),
        TypeName::Scalar.spec().named("input_scale"),
        TypeName::Integer.spec().named("output_zero_point"),
        TypeName::Scalar.spec().named("output_scale"),
        // Plans written before the engine existed ran tract's.
        TypeName::String.spec().named("engine").default("tract"),
    ];
    params.extend(super::conv_geometry_params());
    registry.register_primitive("perch_qconv", &params, &[("output", TypeName::Scalar.tensor())], load);
}

fn dump(ast: &mut IntoAst, node: &TypedNode, op: &QConv) -> TractResult<Option<Arc<RValue>>> {
    let conv = &op.conv;
    ensure!(conv.pool_spec.data_format == tract_core::ops::nn::DataFormat::NCHW, "PerchQConv is NCHW");
    let (y_zp, y_scale) = op.output_qparams()?;
    let mut named = make_conv_named_args(node, &conv.pool_spec, conv.group, false, None)?;
    named.push(("input_zero_point", numeric(op.x_zero_point)));
    named.push(("input_scale", numeric(op.x_scale)));
    named.push(("output_zero_point", numeric(y_zp)));
    named.push(("output_scale", numeric(y_scale)));
    named.push(("filter_scale", (*ast.mapping[&node.inputs[3]]).clone()));
    named.push(("engine", string(op.engine.name())));
    let inputs: TVec<Arc<RValue>> = node.inputs[..3].iter().map(|i| ast.mapping[i].clone()).collect();
    Ok(Some(invocation("perch_qconv", &inputs, &named)))
}

fn load(builder: &mut ModelBuilder, invocation: &ResolvedInvocation) -> TractResult<Value> {
    let input: OutletId = invocation.named_arg_as(builder, "input")?;
    let filter: OutletId = invocation.named_arg_as(builder, "filter")?;
    let bias: OutletId = invocation.named_arg_as(builder, "bias")?;
    let filter_scale: OutletId = invocation.named_arg_as(builder, "filter_scale")?;
    let input_fact = builder.model.outlet_fact(input)?.clone();
    let kernel_fact = builder.model.outlet_fact(filter)?.clone();
    ensure!(
        input_fact.rank() == 4 && kernel_fact.rank() == 4,
        "perch_qconv takes an NCHW input and an OIHW filter, got {input_fact:?} and {kernel_fact:?}"
    );
    let kernel_shape = kernel_fact.shape.as_concrete().context("perch_qconv filter must have a fixed shape")?.to_vec();
    let (group, pool_spec) = read_conv_parameters(builder, invocation, &kernel_shape, &input_fact)?;
    let x_zero_point: i64 = invocation.named_arg_as(builder, "input_zero_point")?;
    let x_scale: f32 = invocation.named_arg_as(builder, "input_scale")?;
    let y_zero_point: i64 = invocation.named_arg_as(builder, "output_zero_point")?;
    let y_scale: f32 = invocation.named_arg_as(builder, "output_scale")?;
    let in_i8 = |v: i64| (-128..=127).contains(&v);
    ensure!(in_i8(x_zero_point) && in_i8(y_zero_point), "perch_qconv zero points must be int8");
    ensure!(x_scale > 0.0 && y_scale > 0.0 && x_scale.is_finite() && y_scale.is_finite(), "perch_qconv scales must be positive");
    let engine: String = invocation.named_arg_as(builder, "engine")?;
    let engine = match engine.as_str() {
        "perch" => Engine::Perch,
        "tract" => Engine::Tract,
        other => bail!("perch_qconv engine must be \"perch\" or \"tract\", not {other:?}"),
    };
    let output = DatumType::QI8(QParams::ZpScale { zero_point: y_zero_point as i32, scale: y_scale });
    let op = QConv {
        conv: Conv::new(pool_spec, KernelFormat::OIHW, group, Some(output)),
        x_zero_point: x_zero_point as i32,
        x_scale,
        engine,
    };
    let bias = builder.wire_as_outlets(cast(i32::datum_type()), &[bias])?[0];
    let filter_scale = builder.wire_as_outlets(cast(f32::datum_type()), &[filter_scale])?[0];
    builder.wire(op, &[input, filter, bias, filter_scale])
}

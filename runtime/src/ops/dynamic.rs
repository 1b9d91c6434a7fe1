//! Dynamic int8 (weights-only) linear layers, as PyTorch's `quantize_dynamic` makes them: int8
//! weights with one scale per output channel; the float input is quantized at run time with the
//! range it actually has (one scale and zero point per tensor, per inference); the product runs
//! tract's integer kernels with int32 accumulators, and the result is scaled back to float.
//!
//! `PerchDynamicConv` is what plans hold (inputs: float input, int8 OIHW kernel, f32 kernel scales,
//! f32 bias). It declutters into `PerchDynamicQuantize` (not serialized: it only exists in the
//! optimized graph), tract's quantized `Conv` with int32 output, and float scaling ops.

use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::cast::cast;
use tract_core::ops::cnn::{Conv, KernelFormat, PoolSpec};
use tract_core::ops::math::{Add, Mul};
use tract_nnef::internal::*;
use tract_nnef::ops::nnef::deser::read_conv_parameters;
use tract_nnef::ops::nnef::ser::make_conv_named_args;
use tract_nnef::ser::invocation;

/// Quantizes a float tensor to int8 with its own min/max (range widened to contain 0). Outputs:
/// the int8 tensor, the zero point (i32 scalar) and the scale (f32, all axes 1, for broadcasting).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DynamicQuantize;

impl Op for DynamicQuantize {
    fn name(&self) -> StaticName {
        "PerchDynamicQuantize".into()
    }

    op_as_typed_op!();
}

impl EvalOp for DynamicQuantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let plain = x.try_as_plain_ram()?;
        let xs = plain.as_slice::<f32>()?;
        let (lo, hi) = xs.iter().filter(|v| v.is_finite()).fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let zero_point = (-128.0 - lo / scale).round().clamp(-128.0, 127.0);
        let q: Vec<i8> = xs.iter().map(|v| (v / scale + zero_point).round().clamp(-128.0, 127.0) as i8).collect();
        let rank = x.rank();
        Ok(tvec!(
            Tensor::from_shape(x.shape(), &q)?.into_tvalue(),
            tensor0(zero_point as i32).into_tvalue(),
            Tensor::from_shape(&vec![1; rank], &[scale])?.into_tvalue(),
        ))
    }
}

impl TypedOp for DynamicQuantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type(), "PerchDynamicQuantize takes f32");
        let rank = inputs[0].rank();
        Ok(tvec!(i8::fact(inputs[0].shape.clone()), i32::scalar_fact(), f32::fact(vec![1; rank])))
    }

    as_op!();
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DynamicConv {
    pub pool_spec: PoolSpec,
    pub group: usize,
}

impl DynamicConv {
    fn conv(&self) -> Conv {
        Conv::new(self.pool_spec.clone(), KernelFormat::OIHW, self.group, Some(i32::datum_type()))
    }

    fn wire(&self, model: &mut TypedModel, name: &str, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let [x, kernel, k_scale, bias] = inputs else { bail!("PerchDynamicConv takes input, kernel, scales and bias") };
        let q = model.wire_node(format!("{name}.quantize"), DynamicQuantize, &[*x])?;
        let one = model.add_const(format!("{name}.one"), tensor0(1f32))?;
        let zero = model.add_const(format!("{name}.zero"), tensor0(0i32))?;
        // Scales of 1 make tract's quantized conv return the zero-point-corrected int32 accumulator.
        let acc = model.wire_node(format!("{name}.int8"), self.conv(), &[q[0], *kernel, zero, q[1], one, zero, one, zero, one])?[0];
        let acc = model.wire_node(format!("{name}.acc_f32"), cast(f32::datum_type()), &[acc])?[0];
        let o = self.pool_spec.output_channels;
        let per_channel = |model: &mut TypedModel, what: &str, w: OutletId| -> TractResult<OutletId> {
            let shape = tvec!(1.to_dim(), o.to_dim(), 1.to_dim(), 1.to_dim());
            let from = model.outlet_fact(w)?.shape.to_tvec();
            model.wire_node(format!("{name}.{what}_nchw"), AxisOp::Reshape(0, from, shape), &[w]).map(|w| w[0])
        };
        let k_scale = per_channel(model, "k_scale", *k_scale)?;
        let bias = per_channel(model, "bias", *bias)?;
        let scale = model.wire_node(format!("{name}.scale"), TypedBinOp(Box::new(Mul), None), &[q[2], k_scale])?[0];
        let y = model.wire_node(format!("{name}.dequantize"), TypedBinOp(Box::new(Mul), None), &[acc, scale])?[0];
        model.wire_node(name, TypedBinOp(Box::new(Add), None), &[y, bias])
    }
}

impl Op for DynamicConv {
    fn name(&self) -> StaticName {
        "PerchDynamicConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        self.conv().info()
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for DynamicConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        super::eval_as_graph(inputs, |model, wires| self.wire(model, "dynamic", wires))
    }
}

impl TypedOp for DynamicConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 4, "PerchDynamicConv takes input, kernel, scales and bias");
        ensure!(inputs[0].datum_type == f32::datum_type() && inputs[0].rank() == 4, "PerchDynamicConv takes f32 NCHW");
        ensure!(inputs[1].datum_type.unquantized() == DatumType::I8, "PerchDynamicConv kernels are int8");
        let o = self.pool_spec.output_channels.to_dim();
        ensure!(inputs[2].shape.volume() == o && inputs[3].shape.volume() == o, "one scale and one bias per output channel");
        // tract's conv sees the int8 input, a scalar bias and scalar scales (the real ones scale the
        // int32 result afterwards).
        let (x, bias, scale) = (i8::fact(inputs[0].shape.clone()), i32::scalar_fact(), f32::scalar_fact());
        let mut fact = super::with_qconv_facts(&x, inputs[1], &bias, &scale, |facts| self.conv().output_facts(facts))?.remove(0);
        fact.datum_type = f32::datum_type();
        Ok(tvec!(fact))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let (x, bias, scale) = (i8::fact(inputs[0].shape.clone()), i32::scalar_fact(), f32::scalar_fact());
        super::with_qconv_facts(&x, inputs[1], &bias, &scale, |facts| self.conv().cost(facts))
    }

    fn declutter(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        super::declutter_as_graph(model, node, "perch-dynamic-conv", |patch, inputs| self.wire(patch, &node.name, inputs))
    }

    as_op!();
}

pub fn register(registry: &mut Registry) {
    registry.register_dumper(dump);
    let mut params = vec![
        TypeName::Scalar.tensor().named("input"),
        TypeName::Scalar.tensor().named("filter"),
        TypeName::Scalar.tensor().named("filter_scale"),
        TypeName::Scalar.tensor().named("bias"),
    ];
    params.extend(super::conv_geometry_params());
    registry.register_primitive("perch_dynamic_conv", &params, &[("output", TypeName::Scalar.tensor())], load);
}

fn dump(ast: &mut IntoAst, node: &TypedNode, op: &DynamicConv) -> TractResult<Option<Arc<RValue>>> {
    ensure!(op.pool_spec.data_format == tract_core::ops::nn::DataFormat::NCHW, "PerchDynamicConv is NCHW");
    let mut named = make_conv_named_args(node, &op.pool_spec, op.group, false, None)?;
    named.push(("filter_scale", (*ast.mapping[&node.inputs[2]]).clone()));
    named.push(("bias", (*ast.mapping[&node.inputs[3]]).clone()));
    let inputs: TVec<Arc<RValue>> = node.inputs[..2].iter().map(|i| ast.mapping[i].clone()).collect();
    Ok(Some(invocation("perch_dynamic_conv", &inputs, &named)))
}

fn load(builder: &mut ModelBuilder, invocation: &ResolvedInvocation) -> TractResult<Value> {
    let input: OutletId = invocation.named_arg_as(builder, "input")?;
    let filter: OutletId = invocation.named_arg_as(builder, "filter")?;
    let filter_scale: OutletId = invocation.named_arg_as(builder, "filter_scale")?;
    let bias: OutletId = invocation.named_arg_as(builder, "bias")?;
    let input_fact = builder.model.outlet_fact(input)?.clone();
    let kernel_fact = builder.model.outlet_fact(filter)?.clone();
    ensure!(
        input_fact.rank() == 4 && kernel_fact.rank() == 4,
        "perch_dynamic_conv takes an NCHW input and an OIHW filter, got {input_fact:?} and {kernel_fact:?}"
    );
    let kernel_shape = kernel_fact.shape.as_concrete().context("perch_dynamic_conv filter must have a fixed shape")?.to_vec();
    let (group, pool_spec) = read_conv_parameters(builder, invocation, &kernel_shape, &input_fact)?;
    let filter_scale = builder.wire_as_outlets(cast(f32::datum_type()), &[filter_scale])?[0];
    let bias = builder.wire_as_outlets(cast(f32::datum_type()), &[bias])?[0];
    builder.wire(DynamicConv { pool_spec, group }, &[input, filter, filter_scale, bias])
}

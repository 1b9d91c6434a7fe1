//! `PerchQConv`: an int8 convolution with per-output-channel weight scales.
//!
//! It stands for tract's quantized [`Conv`] (nine inputs: input, kernel, bias, then the zero point
//! and scale of input, kernel and output) in a form that serializes with its per-channel scales
//! intact and with the scalar parameters as attributes rather than tensors. At optimization time it
//! declutters into that `Conv`, which tract lowers to its integer im2col + int8 matmul kernels with
//! the requantization fused in.

use tract_core::ops::cast::cast;
use tract_core::ops::cnn::{Conv, KernelFormat};
use tract_nnef::internal::*;
use tract_nnef::ops::nnef::deser::read_conv_parameters;
use tract_nnef::ops::nnef::ser::make_conv_named_args;
use tract_nnef::ser::{invocation, numeric};

/// An int8 convolution: inputs are the int8 input, the int8 OIHW kernel, the int32 bias and the
/// per-output-channel kernel scales (f32); the input and output quantization are constant fields.
#[derive(Debug, Clone, PartialEq)]
pub struct QConv {
    /// The quantized tract convolution this becomes (its `q_params` is the output type).
    pub conv: Conv,
    pub x_zero_point: i32,
    pub x_scale: f32,
}

impl std::hash::Hash for QConv {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.conv.hash(state);
        self.x_zero_point.hash(state);
        self.x_scale.to_bits().hash(state);
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
        super::declutter_as_graph(model, node, "perch-qconv-to-conv", |patch, inputs| self.wire_conv(patch, &node.name, inputs))
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
    let output = DatumType::QI8(QParams::ZpScale { zero_point: y_zero_point as i32, scale: y_scale });
    let op = QConv {
        conv: Conv::new(pool_spec, KernelFormat::OIHW, group, Some(output)),
        x_zero_point: x_zero_point as i32,
        x_scale,
    };
    let bias = builder.wire_as_outlets(cast(i32::datum_type()), &[bias])?[0];
    let filter_scale = builder.wire_as_outlets(cast(f32::datum_type()), &[filter_scale])?[0];
    builder.wire(op, &[input, filter, bias, filter_scale])
}

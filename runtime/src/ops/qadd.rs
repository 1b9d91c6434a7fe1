//! `PerchQAdd`: the residual Add of two int8 tensors with their own scales, requantized to the
//! output's. tract's quantized Add does this (dequantize each operand, add, requantize, element by
//! element) but its NNEF reader cannot type an `add` of two differently quantized tensors; this op
//! carries the output type explicitly and declutters into tract's Add.

use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::math::Add;
use tract_nnef::internal::*;
use tract_nnef::ser::{invocation, numeric};

#[derive(Debug, Clone, PartialEq)]
pub struct QAdd {
    pub output: DatumType,
}

impl std::hash::Hash for QAdd {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.output.hash(state);
    }
}

impl Eq for QAdd {}

impl QAdd {
    fn binop(&self) -> TypedBinOp {
        TypedBinOp(Box::new(Add), Some(self.output))
    }
}

impl Op for QAdd {
    fn name(&self) -> StaticName {
        "PerchQAdd".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("output {:?}", self.output)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for QAdd {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        EvalOp::eval(&self.binop(), ctx, inputs)
    }
}

impl TypedOp for QAdd {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 2, "PerchQAdd takes two inputs");
        ensure!(
            inputs.iter().all(|f| f.datum_type.is_quantized()) && self.output.is_quantized(),
            "PerchQAdd adds quantized tensors into a quantized one"
        );
        self.binop().output_facts(inputs)
    }

    fn declutter(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        TypedModelPatch::replace_single_op(model, node, &node.inputs, self.binop()).map(Some)
    }

    as_op!();
}

pub fn register(registry: &mut Registry) {
    registry.register_dumper(dump);
    let params = vec![
        TypeName::Scalar.tensor().named("a"),
        TypeName::Scalar.tensor().named("b"),
        TypeName::Integer.spec().named("output_zero_point"),
        TypeName::Scalar.spec().named("output_scale"),
    ];
    registry.register_primitive("perch_qadd", &params, &[("output", TypeName::Scalar.tensor())], load);
}

fn dump(ast: &mut IntoAst, node: &TypedNode, op: &QAdd) -> TractResult<Option<Arc<RValue>>> {
    ensure!(op.output.unquantized() == DatumType::I8, "PerchQAdd outputs int8");
    let (zp, scale) = op.output.zp_scale();
    let inputs: TVec<Arc<RValue>> = node.inputs.iter().map(|i| ast.mapping[i].clone()).collect();
    Ok(Some(invocation("perch_qadd", &inputs, &[("output_zero_point", numeric(zp)), ("output_scale", numeric(scale))])))
}

fn load(builder: &mut ModelBuilder, invocation: &ResolvedInvocation) -> TractResult<Value> {
    let a: OutletId = invocation.named_arg_as(builder, "a")?;
    let b: OutletId = invocation.named_arg_as(builder, "b")?;
    let zp: i64 = invocation.named_arg_as(builder, "output_zero_point")?;
    let scale: f32 = invocation.named_arg_as(builder, "output_scale")?;
    ensure!((-128..=127).contains(&zp), "perch_qadd zero point must be int8");
    ensure!(scale > 0.0 && scale.is_finite(), "perch_qadd scale must be positive");
    let output = DatumType::QI8(QParams::ZpScale { zero_point: zp as i32, scale });
    builder.wire(QAdd { output }, &[a, b])
}

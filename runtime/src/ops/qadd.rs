//! `PerchQAdd`: the residual Add of two int8 tensors with their own scales, requantized to the
//! output's. tract's quantized Add does this (dequantize each operand, add, requantize, element by
//! element) but its NNEF reader cannot type an `add` of two differently quantized tensors; this op
//! carries the output type explicitly. Between int8 tensors of one shape (residual connections) it
//! stays in the optimized plan and runs Perch's kernel ([`crate::kernels::add`], tract's arithmetic
//! in registers); otherwise (broadcasting) it declutters into tract's Add.

use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::math::Add;
use tract_nnef::internal::*;
use tract_nnef::ser::{invocation, numeric};

use crate::kernels::Isa;
use crate::kernels::add::{Quant, qadd};

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

    /// Whether Perch's kernel applies: int8 operands and output, one shape.
    fn on_kernel(&self, a: (&DatumType, &[TDim]), b: (&DatumType, &[TDim])) -> bool {
        let int8 = |dt: &DatumType| matches!(dt, DatumType::QI8(QParams::ZpScale { .. }));
        int8(a.0) && int8(b.0) && int8(&self.output) && a.1 == b.1
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
        let (a, b) = (&inputs[0], &inputs[1]);
        let shape = |t: &TValue| t.shape().iter().map(|&d| d.to_dim()).collect::<TVec<_>>();
        if !self.on_kernel((&a.datum_type(), &shape(a)), (&b.datum_type(), &shape(b))) {
            return EvalOp::eval(&self.binop(), ctx, inputs);
        }
        let quant = |dt: DatumType| {
            let (zero_point, scale) = dt.zp_scale();
            Quant { zero_point, scale }
        };
        let mut c = unsafe { Tensor::uninitialized_dt(self.output, a.shape())? };
        {
            let (pa, pb) = (a.try_as_plain_ram()?, b.try_as_plain_ram()?);
            let mut pc = c.try_as_plain_ram_mut()?;
            // SAFETY: all three are int8 (checked by `on_kernel`), of one shape.
            let (sa, sb, sc) = unsafe { (pa.as_slice_unchecked::<i8>(), pb.as_slice_unchecked::<i8>(), pc.as_slice_mut_unchecked::<i8>()) };
            qadd(Isa::best(), sa, quant(a.datum_type()), sb, quant(b.datum_type()), quant(self.output), sc);
        }
        Ok(tvec!(c.into_tvalue()))
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
        let (a, b) = (model.outlet_fact(node.inputs[0])?, model.outlet_fact(node.inputs[1])?);
        if self.on_kernel((&a.datum_type, &a.shape), (&b.datum_type, &b.shape)) {
            return Ok(None);
        }
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

//! `PerchLut`: an int8 -> int8 lookup table, the integer form of an element-wise function (sigmoid,
//! tanh, hard-swish, a learnable Swish `x * sigmoid(beta * x)`...) between int8 tensors. The host
//! evaluates the float function on the 256 possible inputs and quantizes the results once.

use tract_nnef::internal::*;
use tract_nnef::ser::{invocation, numeric};

#[derive(Debug, Clone, PartialEq)]
pub struct Lut {
    /// Output type (int8 with its zero point and scale).
    pub output: DatumType,
}

impl std::hash::Hash for Lut {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.output.hash(state);
    }
}

impl Eq for Lut {}

impl Op for Lut {
    fn name(&self) -> StaticName {
        "PerchLut".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("output {:?}", self.output)])
    }

    op_as_typed_op!();
}

impl EvalOp for Lut {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 2, "PerchLut takes an input and a table");
        let (x, table) = (&inputs[0], &inputs[1]);
        let table = table.try_as_plain_ram()?;
        let table = table.as_slice::<i8>()?;
        let Ok(table) = <&[i8; 256]>::try_from(table) else { bail!("PerchLut table has {} entries, not 256", table.len()) };
        let x_plain = x.try_as_plain_ram()?;
        let xs = x_plain.as_slice::<i8>()?;
        let mut out = unsafe { Tensor::uninitialized_dt(self.output, x.shape())? };
        {
            let mut plain = out.try_as_plain_ram_mut()?;
            crate::kernels::vector::lookup(xs, table, plain.as_slice_mut::<i8>()?);
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Lut {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 2, "PerchLut takes an input and a table");
        ensure!(inputs[0].datum_type.unquantized() == DatumType::I8, "PerchLut maps int8, not {:?}", inputs[0].datum_type);
        ensure!(
            inputs[1].datum_type.unquantized() == DatumType::I8 && inputs[1].shape.volume() == 256.to_dim(),
            "PerchLut table must be 256 int8 values"
        );
        ensure!(self.output.unquantized() == DatumType::I8, "PerchLut outputs int8");
        Ok(tvec!(self.output.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

pub fn register(registry: &mut Registry) {
    registry.register_dumper(dump);
    let params = vec![
        TypeName::Scalar.tensor().named("input"),
        TypeName::Scalar.tensor().named("table"),
        TypeName::Integer.spec().named("output_zero_point"),
        TypeName::Scalar.spec().named("output_scale"),
    ];
    registry.register_primitive("perch_lut", &params, &[("output", TypeName::Scalar.tensor())], load);
}

fn dump(ast: &mut IntoAst, node: &TypedNode, op: &Lut) -> TractResult<Option<Arc<RValue>>> {
    let (zp, scale) = op.output.zp_scale();
    let inputs: TVec<Arc<RValue>> = node.inputs.iter().map(|i| ast.mapping[i].clone()).collect();
    Ok(Some(invocation("perch_lut", &inputs, &[("output_zero_point", numeric(zp)), ("output_scale", numeric(scale))])))
}

fn load(builder: &mut ModelBuilder, invocation: &ResolvedInvocation) -> TractResult<Value> {
    let input: OutletId = invocation.named_arg_as(builder, "input")?;
    let table: OutletId = invocation.named_arg_as(builder, "table")?;
    let zp: i64 = invocation.named_arg_as(builder, "output_zero_point")?;
    let scale: f32 = invocation.named_arg_as(builder, "output_scale")?;
    ensure!((-128..=127).contains(&zp), "perch_lut zero point must be int8");
    ensure!(scale > 0.0 && scale.is_finite(), "perch_lut scale must be positive");
    let output = DatumType::QI8(QParams::ZpScale { zero_point: zp as i32, scale });
    builder.wire(Lut { output }, &[input, table])
}

//! `PerchQuantize`: tract's `Cast` of the float input to its int8 type replaced, when a plan is
//! optimized for Perch's kernels, by [`crate::kernels::quantize`] (tract's arithmetic, vectorized).
//! Like [`super::maxpool`], it is not written into plans: [`substitute`] swaps it in at load time in
//! plans whose convolutions run on Perch's kernels (the `perch` engine).

use crate::kernels::Isa;
use crate::kernels::quantize::quantize;
use tract_core::ops::cast::Cast;
use tract_nnef::internal::*;

#[derive(Debug, Clone, PartialEq)]
pub struct QQuantize {
    pub zero_point: i32,
    pub scale: f32,
}

impl std::hash::Hash for QQuantize {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.zero_point.hash(state);
        self.scale.to_bits().hash(state);
    }
}

impl Eq for QQuantize {}

impl QQuantize {
    fn output_type(&self) -> DatumType {
        DatumType::QI8(QParams::ZpScale { zero_point: self.zero_point, scale: self.scale })
    }
}

impl Op for QQuantize {
    fn name(&self) -> StaticName {
        "PerchQuantize".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("zero point {}, scale {}", self.zero_point, self.scale)])
    }

    op_as_typed_op!();
}

impl EvalOp for QQuantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let mut y = unsafe { Tensor::uninitialized_dt(self.output_type(), x.shape())? };
        {
            let x = x.try_as_plain_ram()?;
            let x = x.as_slice::<f32>()?;
            let mut plain = y.try_as_plain_ram_mut()?;
            // SAFETY: quantized int8 is stored as i8.
            let out = unsafe { plain.as_slice_mut_unchecked::<i8>() };
            quantize(Isa::best(), x, self.zero_point, self.scale, out);
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for QQuantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == DatumType::F32, "PerchQuantize quantizes f32, not {:?}", inputs[0].datum_type);
        Ok(tvec!(self.output_type().fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// Replaces tract's casts from f32 to a quantized int8 type by [`QQuantize`] in a decluttered model
/// whose convolutions run on Perch's kernels; returns how many it replaced.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    if !super::on_perch_kernels(model) {
        return Ok(0);
    }
    substitute_casts(model)
}

/// [`substitute`] in any model.
fn substitute_casts(model: &mut TypedModel) -> TractResult<usize> {
    super::replace_ops(model, |model, node| {
        let Some(Cast { to: DatumType::QI8(QParams::ZpScale { zero_point, scale }) }) = node.op_as::<Cast>() else { return Ok(None) };
        let from_f32 = model.outlet_fact(node.inputs[0])?.datum_type == DatumType::F32;
        Ok(from_f32.then_some(QQuantize { zero_point: *zero_point, scale: *scale }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tract_core::ops::cast::cast;

    proptest! {
        /// A plan whose cast is replaced gives tract's outputs.
        #[test]
        fn the_substituted_cast_gives_tracts_outputs(
            x in proptest::collection::vec(-4f32..4.0, 1..60),
            zero_point in -128i32..128,
            scale in 0.001f32..0.5,
        ) {
            let to = DatumType::QI8(QParams::ZpScale { zero_point, scale });
            let mut model = TypedModel::default();
            let source = model.add_source("x", f32::fact([x.len()])).unwrap();
            let y = model.wire_node("q", cast(to), &[source]).unwrap();
            model.select_output_outlets(&y).unwrap();
            let run = |model: TypedModel| {
                let out = model.into_runnable().unwrap().run(tvec!(tensor1(&x).into_tvalue())).unwrap();
                prop_assert_eq!(out[0].datum_type(), to);
                // SAFETY: quantized int8 is stored as i8.
                Ok(unsafe { out[0].try_as_plain_ram().unwrap().as_slice_unchecked::<i8>().to_vec() })
            };
            let expected = run(model.clone())?;
            prop_assert_eq!(substitute_casts(&mut model).unwrap(), 1);
            prop_assert!(model.nodes().iter().any(|n| n.op_is::<QQuantize>()));
            prop_assert_eq!(run(model)?, expected);
        }
    }
}

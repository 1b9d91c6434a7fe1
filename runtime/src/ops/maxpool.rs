//! `PerchMaxPool`: tract's max pooling replaced by [`crate::kernels::pool`]. It is not written into
//! plans: [`substitute`] swaps it in at load time for the NCHW, unpadded max pools of f32 tensors, and
//! of int8 tensors in a plan whose convolutions run on Perch's kernels (the `perch` engine), and leaves
//! every other pooling to tract.

use crate::kernels::Geometry;
use crate::kernels::pool;
use tract_core::ops::cnn::MaxPool;
use tract_core::ops::nn::DataFormat;
use tract_nnef::internal::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QMaxPool {
    /// Without padding ([`pool::fits`]).
    pub geometry: Geometry,
}

impl Op for QMaxPool {
    fn name(&self) -> StaticName {
        "PerchMaxPool".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geometry;
        Ok(vec![format!("kernel {:?}, stride {:?}, dilation {:?}", g.kernel, g.stride, g.dilation)])
    }

    op_as_typed_op!();
}

impl EvalOp for QMaxPool {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let shape = self.output_shape(x.shape())?;
        let mut y = unsafe { Tensor::uninitialized_dt(x.datum_type(), &shape)? };
        {
            let x = x.try_as_plain_ram()?;
            let mut plain = y.try_as_plain_ram_mut()?;
            if x.datum_type() == DatumType::F32 {
                pool::max_pool(&self.geometry, x.as_slice::<f32>()?, plain.as_slice_mut::<f32>()?);
            } else {
                // SAFETY: int8 (quantized or not) is stored as i8 (output_facts admits no other type).
                let (xs, ys) = unsafe { (x.as_slice_unchecked::<i8>(), plain.as_slice_mut_unchecked::<i8>()) };
                pool::max_pool(&self.geometry, xs, ys);
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl QMaxPool {
    fn output_shape(&self, input: &[usize]) -> TractResult<[usize; 4]> {
        let g = &self.geometry;
        ensure!(input.len() == 4 && input[2..] == g.input, "PerchMaxPool expects (N, C, {:?}), got {input:?}", g.input);
        Ok([input[0], input[1], g.output[0], g.output[1]])
    }
}

impl TypedOp for QMaxPool {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        ensure!(pooled(x.datum_type), "PerchMaxPool pools int8 or f32, not {:?}", x.datum_type);
        let shape = x.shape.as_concrete().context("PerchMaxPool needs a concrete input shape")?;
        Ok(tvec!(x.datum_type.fact(self.output_shape(shape)?)))
    }

    as_op!();
}

/// Whether Perch pools tensors of this type.
fn pooled(dt: DatumType) -> bool {
    dt.unquantized() == DatumType::I8 || dt == DatumType::F32
}

/// The Perch pooling standing for `op` on an input of `fact`, where it applies.
fn perch_pool(op: &MaxPool, fact: &TypedFact) -> Option<QMaxPool> {
    let spec = &op.pool_spec;
    let shape = fact.shape.as_concrete()?;
    if op.with_index_outputs.is_some()
        || spec.data_format != DataFormat::NCHW
        || !pooled(fact.datum_type)
        || shape.len() != 4
        || spec.kernel_shape.len() != 2
    {
        return None;
    }
    let padding = spec.computed_padding(&shape[2..]);
    if padding.iter().any(|p| p.pad_before != 0 || p.pad_after != 0) {
        return None;
    }
    let geometry = Geometry {
        input: [shape[2], shape[3]],
        kernel: [spec.kernel_shape[0], spec.kernel_shape[1]],
        stride: [spec.stride(0), spec.stride(1)],
        dilation: [spec.dilation(0), spec.dilation(1)],
        pad_before: [0, 0],
        pad_after: [0, 0],
        output: [padding[0].convoluted, padding[1].convoluted],
    };
    pool::fits(&geometry).then_some(QMaxPool { geometry })
}

/// Replaces tract's f32 max pools, and its int8 ones where the convolutions run on Perch's kernels, by
/// [`QMaxPool`] in a decluttered model; returns how many it replaced.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let int8 = super::on_perch_kernels(model);
    super::replace_ops(model, |model, node| match node.op_as::<MaxPool>() {
        Some(op) => {
            let fact = model.outlet_fact(node.inputs[0])?;
            Ok(perch_pool(op, fact).filter(|_| int8 || fact.datum_type == DatumType::F32))
        }
        None => Ok(None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tract_core::ops::cnn::{PaddingSpec, PoolSpec};

    proptest! {
        /// Perch's pooling against tract's, on every geometry both accept.
        #[test]
        fn perch_max_pool_matches_tracts(
            n in 1usize..3, c in 1usize..5, h in 1usize..13, w in 1usize..13,
            (kernel, stride, dilation) in prop_oneof![
                ([1usize..4, 1usize..4], [1usize..4, 1usize..4], [1usize..3, 1usize..3]),
                // The 2x2 pooling has its own loop.
                Just(([2, 2], [2, 2], [1, 1])),
            ],
            dt in 0..3usize, seed in any::<u64>(),
        ) {
            let spec = PoolSpec::new(DataFormat::NCHW, tvec!(kernel[0], kernel[1]), PaddingSpec::Valid, Some(tvec!(dilation[0], dilation[1])), Some(tvec!(stride[0], stride[1])), c, c);
            let op = MaxPool { pool_spec: spec, with_index_outputs: None };
            let dt = [DatumType::QI8(QParams::ZpScale { zero_point: 3, scale: 0.1 }), DatumType::I8, DatumType::F32][dt];
            let fact = dt.fact([n, c, h, w]);
            let Some(pool) = perch_pool(&op, &fact) else { return Ok(()) };
            let mut s = seed;
            let values: Vec<i8> = (0..n * c * h * w).map(|_| { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (s >> 40) as u8 as i8 }).collect();
            let mut x = Tensor::from_shape(&[n, c, h, w], &values).unwrap();
            if dt == DatumType::F32 {
                // Values with ties, -0.0, and the odd infinity. Not +0.0 beside it: where a window's
                // maximum is a zero of both signs tract's answer depends on the path and the
                // architecture (its 2x2 pooling folds with `f32::max`, which aarch64 runs as
                // `fmaxnm`: +0.0; x86-64 keeps the first), so no pooling can match it bit for bit
                // everywhere. Perch's answer there is pinned by `kernels::pool`'s own test.
                let floats: Vec<f32> = values.iter().map(|&v| match v { -128 => f32::NEG_INFINITY, 127 => f32::INFINITY, 0..=3 => -0.0, v => v as f32 * 0.25 }).collect();
                x = Tensor::from_shape(&[n, c, h, w], &floats).unwrap();
            }
            unsafe { x.set_datum_type(dt) };
            let mut model = TypedModel::default();
            let source = model.add_source("x", fact).unwrap();
            let y = model.wire_node("pool", op, &[source]).unwrap();
            model.select_output_outlets(&y).unwrap();
            let want = model.into_optimized().unwrap().into_runnable().unwrap().run(tvec!(x.clone().into_tvalue())).unwrap().remove(0);
            let got = pool.eval_out_of_plan(tvec!(x.into_tvalue())).unwrap().unwrap().remove(0);
            prop_assert_eq!(got.datum_type(), want.datum_type());
            prop_assert_eq!(got.shape(), want.shape());
            // Bit for bit (a -0.0 where tract gives one too).
            let bytes = |t: &TValue| t.try_as_plain_ram().unwrap().as_bytes().to_vec();
            prop_assert_eq!(bytes(&got), bytes(&want));
        }
    }
}

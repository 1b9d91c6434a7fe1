//! `PerchDownsample`: tract's `Downsample` (every `stride`-th index of one axis, from `modulo`) as a
//! plain strided copy. tract 0.23.9 slices an ndarray view and copies it element by element through
//! the generic iterator: fashion-resnet's three strided shortcut convolutions, which tract turns into
//! two `Downsample`s and a matrix product each, spent 75 us of a 400 us float inference in them on
//! x86-64. It is not written into plans: [`substitute`] swaps it in at load time for positive strides
//! on tensors of a fixed shape and a plain-copy type.

use tract_core::ops::Downsample;
use tract_nnef::internal::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PerchDownsample {
    /// The axis's length, and the product of the dimensions after it.
    pub dim: usize,
    pub inner: usize,
    pub stride: usize,
    pub modulo: usize,
    /// The input's full shape, checked at run time.
    pub shape: TVec<usize>,
    pub axis: usize,
}

impl PerchDownsample {
    /// Indices kept along the axis.
    fn kept(&self) -> usize {
        self.dim.saturating_sub(self.modulo).div_ceil(self.stride)
    }

    fn output_shape(&self) -> TVec<usize> {
        let mut shape = self.shape.clone();
        shape[self.axis] = self.kept();
        shape
    }

    /// The strided copy, on elements of one size.
    fn copy<T: Copy>(&self, x: &[T], y: &mut [T]) {
        let (kept, inner) = (self.kept(), self.inner);
        for (x, y) in x.chunks_exact(self.dim * inner).zip(y.chunks_exact_mut(kept * inner)) {
            if inner == 1 {
                y.iter_mut().zip(x[self.modulo..].iter().step_by(self.stride)).for_each(|(y, &x)| *y = x);
            } else {
                for (i, y) in y.chunks_exact_mut(inner).enumerate() {
                    y.copy_from_slice(&x[(self.modulo + i * self.stride) * inner..][..inner]);
                }
            }
        }
    }
}

/// A tensor's bytes as whole unsigned integers of the element's size (any plain-copy type moves as
/// such).
fn elements<T: bytemuck::Pod>(bytes: &[u8]) -> TractResult<&[T]> {
    bytemuck::try_cast_slice(bytes).map_err(|e| format_err!("tensor storage as {}-byte elements: {e}", size_of::<T>()))
}

fn elements_mut<T: bytemuck::Pod>(bytes: &mut [u8]) -> TractResult<&mut [T]> {
    bytemuck::try_cast_slice_mut(bytes).map_err(|e| format_err!("tensor storage as {}-byte elements: {e}", size_of::<T>()))
}

impl Op for PerchDownsample {
    fn name(&self) -> StaticName {
        "PerchDownsample".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("axis {} of {:?}, stride {}, from {}", self.axis, self.shape, self.stride, self.modulo)])
    }

    op_as_typed_op!();
}

impl EvalOp for PerchDownsample {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        ensure!(x.shape() == &*self.shape, "PerchDownsample expects {:?}, got {:?}", self.shape, x.shape());
        let dt = x.datum_type();
        let mut y = unsafe { Tensor::uninitialized_dt(dt, &self.output_shape())? };
        // Nothing kept (an empty tensor's storage need not be aligned).
        if y.len() > 0 {
            let x = x.try_as_plain_ram()?;
            let mut out = y.try_as_plain_ram_mut()?;
            let (x, out) = (x.as_bytes(), out.as_bytes_mut());
            match dt.size_of() {
                1 => self.copy(x, out),
                2 => self.copy::<u16>(elements(x)?, elements_mut(out)?),
                4 => self.copy::<u32>(elements(x)?, elements_mut(out)?),
                8 => self.copy::<u64>(elements(x)?, elements_mut(out)?),
                n => bail!("PerchDownsample copies elements of 1, 2, 4 or 8 bytes, not {n}"),
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for PerchDownsample {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let dt = inputs[0].datum_type;
        ensure!(dt.is_copy() && [1, 2, 4, 8].contains(&dt.size_of()), "PerchDownsample copies plain numbers, not {dt:?}");
        Ok(tvec!(dt.fact(self.output_shape())))
    }

    as_op!();
}

/// Replaces tract's `Downsample`s of positive stride on fixed-shape tensors of plain numbers by
/// [`PerchDownsample`]; returns how many it replaced.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    super::replace_ops(model, |model, node| {
        let Some(op) = node.op_as::<Downsample>() else { return Ok(None) };
        let fact = model.outlet_fact(node.inputs[0])?;
        let (Some(shape), dt) = (fact.shape.as_concrete(), fact.datum_type) else { return Ok(None) };
        if op.stride <= 0 || op.axis >= shape.len() || !dt.is_copy() || ![1, 2, 4, 8].contains(&dt.size_of()) || fact.konst.is_some() {
            return Ok(None);
        }
        Ok(Some(PerchDownsample {
            dim: shape[op.axis],
            inner: shape[op.axis + 1..].iter().product(),
            stride: op.stride as usize,
            modulo: op.modulo,
            shape: shape.into(),
            axis: op.axis,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Perch's downsampling against tract's, on every axis of 1- to 4-dimensional tensors of
        /// three element sizes.
        #[test]
        fn perch_downsample_matches_tracts(
            shape in proptest::collection::vec(1usize..7, 1..5), axis in 0usize..4, stride in 1isize..4, modulo in 0usize..4, dt in 0..3usize,
        ) {
            // (tract itself fails on a start past the axis: its output fact has a negative length.)
            prop_assume!(axis < shape.len() && modulo < shape[axis]);
            let n: usize = shape.iter().product();
            let x = Tensor::from_shape(&shape, &(0..n as i32).collect::<Vec<_>>()).unwrap();
            let x = x.cast_to_dt([DatumType::I8, DatumType::F32, DatumType::I64][dt]).unwrap().into_owned();
            let mut model = TypedModel::default();
            let source = model.add_source("x", x.datum_type().fact(&shape)).unwrap();
            let y = model.wire_node("down", Downsample { axis, stride, modulo }, &[source]).unwrap();
            model.select_output_outlets(&y).unwrap();
            let want = model.clone().into_runnable().unwrap().run(tvec!(x.clone().into_tvalue())).unwrap().remove(0);
            prop_assert_eq!(substitute(&mut model).unwrap(), 1);
            prop_assert!(model.nodes().iter().any(|n| n.op_is::<PerchDownsample>()));
            let got = model.into_runnable().unwrap().run(tvec!(x.into_tvalue())).map_err(|e| format!("{e:?}")).unwrap().remove(0);
            prop_assert_eq!(got.shape(), want.shape());
            prop_assert_eq!(got.try_as_plain_ram().unwrap().as_bytes(), want.try_as_plain_ram().unwrap().as_bytes());
        }
    }
}

//! `PerchDense#f32`: a classifier's head as one op. tract runs ONNX's `Flatten` + `Gemm` as an
//! `EinSum` with the constant weights, a packing of its input and a bias `Add`, and a global average
//! pooling before it as a `Reduce<Sum>` and a `Mul`: four or five ops of about 1-7 us each (tract
//! 0.23.9, one thread; fashion-resnet's head: 16 us of 250 in one profile) for a few thousand
//! multiply-adds. [`substitute`] swaps this op in at load time, between tract's declutter and its
//! codegen; it is not written into plans.

use tract_core::ops::einsum::EinSum;
use tract_core::ops::math::{Add, Mul};
use tract_core::ops::nn::{Reduce, Reducer};
use tract_nnef::internal::*;

use super::{other_input, replace_chain, scalar, sole_reader};
use crate::kernels::vector::dot;

/// `y[m][n] = bias[n] + sum over k of weights[n][k] * x[m][k]`, where `x[m]` is the input's row m
/// or, with `pool`, the mean of its channels: `x[m][k] = scale * (sum of the pool values of channel
/// k)`.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseExec {
    /// `[n][k]`.
    weights: Arc<[f32]>,
    bias: Arc<[f32]>,
    /// Values summed into each feature, and the scale applied to the sum (`None`: no pooling).
    pool: Option<(usize, f32)>,
}

impl Eq for DenseExec {}

impl std::hash::Hash for DenseExec {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The shapes, of what `eq` compares whole.
        (self.weights.len(), self.bias.len(), self.pool.map(|(values, _)| values)).hash(state);
    }
}

impl DenseExec {
    fn features(&self) -> usize {
        self.weights.len() / self.bias.len()
    }

    /// Input values per row.
    fn row(&self) -> usize {
        self.features() * self.pool.map_or(1, |(n, _)| n)
    }

    fn run(&self, x: &[f32], y: &mut [f32]) {
        let (k, n) = (self.features(), self.bias.len());
        let mut pooled = vec![0f32; if self.pool.is_some() { k } else { 0 }];
        for (x, y) in x.chunks_exact(self.row()).zip(y.chunks_exact_mut(n)) {
            let x = match self.pool {
                Some((values, scale)) => {
                    // As tract's `Reduce<Sum>` then `Mul`: the sum in order, then the scale.
                    pooled.iter_mut().zip(x.chunks_exact(values)).for_each(|(p, c)| *p = c.iter().sum::<f32>() * scale);
                    &pooled[..]
                }
                None => x,
            };
            for ((y, w), &b) in y.iter_mut().zip(self.weights.chunks_exact(k)).zip(self.bias.iter()) {
                *y = b + dot(w, x);
            }
        }
    }
}

impl Op for DenseExec {
    fn name(&self) -> StaticName {
        "PerchDense#f32".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let pool = match self.pool {
            Some((values, scale)) => format!(" of channels pooled from {values} values (times {scale})"),
            None => String::new(),
        };
        Ok(vec![format!("{} features{pool} to {} outputs", self.features(), self.bias.len())])
    }

    op_as_typed_op!();
}

impl EvalOp for DenseExec {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        ensure!(x.len().is_multiple_of(self.row()), "PerchDense#f32: {} values are no whole number of rows of {}", x.len(), self.row());
        let mut y = Tensor::zero::<f32>(&[x.len() / self.row(), self.bias.len()])?;
        self.run(x, y.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?);
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for DenseExec {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        ensure!(x.datum_type == DatumType::F32 && x.rank() >= 1, "PerchDense#f32 takes f32 rows, not {x:?}");
        ensure!(x.shape.iter().skip(1).product::<TDim>() == self.row().into(), "PerchDense#f32: rows of {:?}, not of {}", &x.shape[1..], self.row());
        Ok(tvec!(f32::fact(tvec!(x.shape[0].clone(), self.bias.len().into()))))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((Cost::FMA(DatumType::F32), inputs[0].shape[0].clone() * (self.weights.len() + self.row()))))
    }

    as_op!();
}

/// Fixed dimensions of a fact.
fn dims(fact: &TypedFact) -> Option<Vec<usize>> {
    fact.shape.iter().map(|d| d.to_usize().ok()).collect()
}

/// The head whose product is the `EinSum` at `node`: the op, the wire it reads and the node whose
/// output it gives; `None` for anything else. The product must be `m L S, n L -> m n` (tract's form
/// of `Flatten` + `Gemm` with constant f32 weights `[n, L]`: `mbak,nbak->mn`, or `mkab,nk->mn` after
/// a global pooling, where the `S` axes have size 1). The pooling it takes in is `Reduce<Sum>` on
/// axes 2 and 3 of an `[m, k, h, w]` tensor, then an optional `Mul` by a constant.
fn head_at(model: &TypedModel, node: &TypedNode) -> Option<(DenseExec, OutletId, usize)> {
    let op = node.op_as::<EinSum>()?;
    if op.q_params.is_some() || op.operating_dt != DatumType::F32 || node.inputs.len() != 2 {
        return None;
    }
    let weights = model.outlet_fact(node.inputs[1]).ok()?.konst.clone()?;
    let x = model.outlet_fact(node.inputs[0]).ok()?;
    let (shape, expected) = (dims(x)?, dims(model.outlet_fact(OutletId::new(node.id, 0)).ok()?)?);
    // (No empty weights: the op divides by their row length and count.)
    if weights.datum_type() != DatumType::F32 || x.datum_type != DatumType::F32 || weights.rank() < 2 || weights.len() == 0 {
        return None;
    }
    // The axes: `a` of the input, `b` of the weights, `c` of the output.
    let axes = op.axes.to_string();
    let (inputs, c) = axes.split_once("->")?;
    let (a, b) = inputs.split_once(',')?;
    let (a, b, c): (Vec<char>, Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect(), c.chars().collect());
    let n = weights.shape()[0];
    let shared = weights.rank() - 1;
    let well_formed = c.len() == 2 && a.len() == shape.len() && b.len() == weights.rank() && a.len() > shared && a[0] == c[0] && b[0] == c[1] && a[0] != b[0];
    if !well_formed || a[1..=shared] != b[1..] || shape[1..=shared] != weights.shape()[1..] || shape[shared + 1..].iter().any(|&d| d != 1) || expected != [shape[0], n] {
        return None;
    }
    // Axis letters appear once per operand (no diagonal, no sum over an output axis).
    let distinct = |axes: &[char]| axes.iter().enumerate().all(|(i, x)| !axes[..i].contains(x));
    if !distinct(&a) || !distinct(&b) || a[shared + 1..].iter().any(|x| b.contains(x) || c.contains(x)) || a[1..].contains(&c[1]) {
        return None;
    }
    let weights: Arc<[f32]> = weights.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.into();
    // The bias after the product, where there is one.
    let product = OutletId::new(node.id, 0);
    let added = sole_reader(model, product).and_then(|add| {
        let bias = model.outlet_fact(other_input::<Add>(add, product)?).ok()?.konst.clone()?;
        let fits = bias.datum_type() == DatumType::F32 && bias.shape() == [1, n] && dims(model.outlet_fact(OutletId::new(add.id, 0)).ok()?)? == expected;
        fits.then(|| Some((add.id, bias.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.into())))?
    });
    let (last, bias) = added.unwrap_or_else(|| (node.id, vec![0f32; n].into()));
    // The global average pooling before it, where there is one.
    let pooling = || {
        let features = node.inputs[0];
        let producer = model.node(features.node);
        // The sum, then a `Mul` by a constant, or the sum alone.
        let (sum, scale) = if producer.op_is::<Reduce>() {
            (producer, 1.0)
        } else {
            let (scale, sum) = producer.inputs.iter().find_map(|&i| Some((scalar(model, i)?, other_input::<Mul>(producer, i)?)))?;
            sole_reader(model, sum)?;
            (model.node(sum.node), scale)
        };
        let reduce = sum.op_as::<Reduce>()?;
        let input = model.outlet_fact(*sum.inputs.first()?).ok()?;
        let &[m, k, h, w] = &dims(input)?[..] else { return None };
        let is_pool = reduce.reducer == Reducer::Sum && reduce.axes[..] == [2, 3] && input.datum_type == DatumType::F32 && shape[..2] == [m, k] && shape[2..].iter().all(|&d| d == 1);
        (is_pool && sole_reader(model, features).is_some() && h * w > 0).then_some((sum.inputs[0], (h * w, scale)))
    };
    let (input, pool) = match pooling() {
        Some((input, pool)) => (input, Some(pool)),
        None => (node.inputs[0], None),
    };
    Some((DenseExec { weights, bias, pool }, input, last))
}

/// Replaces each classifier head (see [`head_at`]) by [`DenseExec`]; returns how many it replaced.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        let Some((op, input, last)) = head_at(model, model.node(id)) else { continue };
        let name = model.node(id).name.clone();
        replace_chain(model, &name, op, &[input], last)?;
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tolerance::Tolerance;
    use tract_core::ops::binary::TypedBinOp;

    use crate::ops::{test_konst as konst, test_run, test_values as values};

    /// Substitutes `model`'s heads (expecting `heads`), checks that only Perch's op is left, and
    /// compares its outputs with tract's on `input`.
    fn check(model: TypedModel, input: Tensor, heads: usize) {
        let want = test_run(model.clone(), &input);
        let mut perch = model;
        assert_eq!(substitute(&mut perch).unwrap(), heads, "{perch}");
        let perch = perch.into_optimized().unwrap();
        let others: Vec<_> = perch.nodes().iter().filter(|n| !n.op_is::<DenseExec>() && !n.op_is::<tract_core::ops::source::TypedSource>() && !n.op_is::<tract_core::ops::konst::Const>()).collect();
        assert!(heads == 0 || others.is_empty(), "{perch}");
        let got = test_run(perch, &input);
        assert_eq!(got.0, want.0);
        // Sums of up to 150 products in another order.
        Tolerance::CrossArch.check(&got.1, &want.1).unwrap();
    }

    /// A ResNet's head: global average pooling (`Reduce<Sum>`, `Mul`), `mkab,nk->mn`, bias.
    #[test]
    fn a_pooled_head_gives_tracts_outputs() {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([3, 37, 3, 4])).unwrap();
        let sum = model.wire_node("sum", Reduce::new(tvec!(2, 3), Reducer::Sum), &[x]).unwrap()[0];
        let scale = model.add_const("scale", tensor4(&[[[[1.0f32 / 12.0]]]])).unwrap();
        let mean = model.wire_node("mean", TypedBinOp(Box::new(Mul), None), &[sum, scale]).unwrap()[0];
        let w = konst(&mut model, "w", &[7, 37], 1);
        let product = model.wire_node("gemm", EinSum::new("mkab,nk->mn".parse().unwrap(), DatumType::F32), &[mean, w]).unwrap()[0];
        let b = konst(&mut model, "b", &[1, 7], 2);
        let y = model.wire_node("bias", TypedBinOp(Box::new(Add), None), &[product, b]).unwrap()[0];
        model.select_output_outlets(&[y]).unwrap();
        check(model, Tensor::from_shape(&[3, 37, 3, 4], &values(3 * 37 * 12, 3)).unwrap(), 1);
    }

    /// A flattened head (`mbak,nbak->mn`, bias), and one without a bias; a product of another form
    /// (`mk,kn->mn`, the weights transposed) stays tract's.
    #[test]
    fn flattened_heads_give_tracts_outputs() {
        for bias in [true, false] {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([2, 5, 3, 3])).unwrap();
            let w = konst(&mut model, "w", &[10, 5, 3, 3], 4);
            let mut y = model.wire_node("gemm", EinSum::new("mbak,nbak->mn".parse().unwrap(), DatumType::F32), &[x, w]).unwrap()[0];
            if bias {
                let b = konst(&mut model, "b", &[1, 10], 5);
                y = model.wire_node("bias", TypedBinOp(Box::new(Add), None), &[b, y]).unwrap()[0];
            }
            model.select_output_outlets(&[y]).unwrap();
            check(model, Tensor::from_shape(&[2, 5, 3, 3], &values(90, 6)).unwrap(), 1);
        }
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 6])).unwrap();
        let w = konst(&mut model, "w", &[6, 4], 7);
        let y = model.wire_node("gemm", EinSum::new("mk,kn->mn".parse().unwrap(), DatumType::F32), &[x, w]).unwrap()[0];
        model.select_output_outlets(&[y]).unwrap();
        check(model, Tensor::from_shape(&[2, 6], &values(12, 8)).unwrap(), 0);
    }
}

//! `PerchConv#f32`: tract's float convolution replaced by [`crate::kernels::fconv`]. It is not written
//! into plans: [`substitute`] swaps it in at load time, between tract's declutter and its codegen,
//! for each f32 NCHW convolution of one group with a constant kernel and bias and a fixed image size,
//! and for the strided pointwise ones tract's declutter has turned into `Downsample`s and a matrix
//! product (ResNet shortcuts); the others stay tract's (stride-1 pointwise convolutions, matrix
//! products by then, among them). [`fuse_activations`] then folds a Relu or a Swish after each into
//! the kernel's store, and [`fuse_residuals`] a residual connection's `Add` (and the Relu after it)
//! into the op; [`pair_shortcuts`] runs each strided shortcut on the phases of the convolution
//! beside it (`PerchConvPair#f32`), and [`feed_pairs`] last moves a convolution whose output only
//! such a pair reads (a stem) into the pair, which it then feeds row by row.

use tract_core::ops::cnn::Conv;
use tract_core::ops::element_wise::ElementWiseOp;
use tract_core::ops::math::{Max, Mul};
use tract_core::ops::nn::{DataFormat, Sigmoid};
use tract_core::tract_linalg::element_wise::ElementWise;
use tract_core::tract_linalg::Func;
use tract_nnef::internal::*;

use crate::kernels::conv::Geometry;
use crate::kernels::fconv::{Activation, FConvKernel};
use crate::kernels::Isa;
use super::{other_input, replace_chain, scalar, sole_reader};

/// A float convolution on Perch's kernel, with its activation (never serialized).
#[derive(Debug, Clone)]
pub struct FConvExec {
    pub kernel: Arc<FConvKernel>,
    /// tract-linalg's sigmoid kernel, for [`Activation::Swish`]: tract's `Sigmoid` runs it, so the
    /// fused activation gives tract's result bit for bit.
    sigmoid: Box<dyn ElementWise<f32>>,
    /// A residual connection: the op's second input, of the output's shape, is added to the
    /// convolution's output, then this activation (`None` or `Relu`) applied, as tract's `Add` and
    /// `Max` would (the kernel's own activation is then `None`).
    residual: Option<Activation>,
}

impl FConvExec {
    pub fn new(kernel: FConvKernel) -> TractResult<FConvExec> {
        Ok(FConvExec { kernel: Arc::new(kernel), sigmoid: Func::Sigmoid.ew_f32()?, residual: None })
    }
}

impl Op for FConvExec {
    fn name(&self) -> StaticName {
        "PerchConv#f32".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let activation = match self.kernel.activation() {
            Activation::None => String::new(),
            Activation::Relu => ", then Relu".into(),
            Activation::Swish { beta } => format!(", then Swish (beta {beta})"),
        };
        let activation = match self.residual {
            None => activation,
            Some(Activation::Relu) => format!("{activation}, plus its second input, then Relu"),
            Some(_) => format!("{activation}, plus its second input"),
        };
        let winograd = if self.kernel.is_winograd() { ", Winograd F(2x2, 3x3)" } else { "" };
        Ok(vec![format!("{:?}, {} kernel{winograd}{activation}", self.kernel.geometry(), self.kernel.isa().name())])
    }

    op_as_typed_op!();
}

impl PartialEq for FConvExec {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.kernel, &other.kernel) && self.residual == other.residual
    }
}

impl Eq for FConvExec {}

impl std::hash::Hash for FConvExec {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.kernel).hash(state);
    }
}

impl FConvExec {
    /// `run` with tract's sigmoid kernel as the kernel's sigmoid, its first error the result.
    fn with_sigmoid(&self, run: impl FnOnce(&mut dyn FnMut(&mut [f32])) -> TractResult<()>) -> TractResult<()> {
        let mut failed = None;
        run(&mut |v| {
            if let Err(e) = self.sigmoid.run(v) {
                failed.get_or_insert(e);
            }
        })?;
        failed.map_or(Ok(()), Err)
    }

    fn eval_with(&self, inputs: TVec<TValue>, buffer: &mut Vec<f32>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let batch = x.shape()[0];
        // SAFETY: f32 has no invalid bit patterns, and the kernel writes every value.
        let mut y = unsafe { Tensor::uninitialized::<f32>(&self.kernel.output_dims(batch))? };
        {
            let plain = x.try_as_plain_ram()?;
            let (x, mut out) = (plain.as_slice::<f32>()?, y.try_as_plain_ram_mut()?);
            let y = out.as_slice_mut::<f32>()?;
            match self.residual {
                None => self.with_sigmoid(|sigmoid| Ok(self.kernel.run_with(x, batch, y, buffer, sigmoid)?))?,
                Some(activation) => {
                    let r = inputs.get(1).context("PerchConv#f32 with a residual connection has no second input")?;
                    let r = r.try_as_plain_ram()?;
                    let r = r.as_slice::<f32>()?;
                    ensure!(r.len() == y.len(), "PerchConv#f32: a residual of {} values for an output of {}", r.len(), y.len());
                    // What tract's `Add` then `Max` with zero compute, value for value: max(sum, 0)
                    // as the SIMD max answers (0 for -0.0 and NaN), like the kernel's Relu.
                    let relu = activation == Activation::Relu;
                    self.with_sigmoid(|sigmoid| Ok(self.kernel.run_with_residual(x, batch, y, r, relu, buffer, sigmoid)?))?;
                }
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl EvalOp for FConvExec {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.eval_with(inputs, &mut Vec::new())
    }

    /// In a plan, the padded input buffer is kept from run to run (its padding stays zero): no
    /// allocation and no clearing per image.
    fn state(&self, _ctx: &EvalContext) -> TractResult<Option<Box<dyn OpState>>> {
        Ok(Some(Box::new(FConvState { buffers: [self.kernel.scratch(), Vec::new(), Vec::new()] })))
    }
}

/// The kernel's phase buffer, one per tract state (for [`FConvExec`] and [`FConvPairExec`]); a
/// fed pair's also holds its source's phases and rows (see [`FConvKernel::run_fed`]).
#[derive(Debug, Clone)]
struct FConvState {
    buffers: [Vec<f32>; 3],
}

impl OpState for FConvState {
    fn eval(&mut self, _ctx: &EvalContext, op: &dyn Op, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        if let Some(pair) = op.downcast_ref::<FConvPairExec>() {
            return pair.eval_with(inputs, &mut self.buffers);
        }
        op.downcast_ref::<FConvExec>().context("PerchConv#f32 state on another op")?.eval_with(inputs, &mut self.buffers[0])
    }

    /// The buffer is scratch, rewritten on every run: nothing carries from one turn to the next.
    fn reset_lanes(&mut self, _lanes: &[LaneId]) -> TractResult<()> {
        Ok(())
    }
}

impl TypedOp for FConvExec {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == DatumType::F32, "PerchConv#f32 takes f32, not {:?}", inputs[0].datum_type);
        let [_, a, b, c] = self.kernel.output_dims(0);
        let fact = f32::fact(tvec!(inputs[0].shape[0].clone(), a.into(), b.into(), c.into()));
        if self.residual.is_some() {
            ensure!(inputs.len() == 2 && inputs[1].datum_type == DatumType::F32 && inputs[1].shape == fact.shape, "PerchConv#f32: a residual input of {:?}, for an output of {:?}", inputs.get(1), fact);
        }
        Ok(tvec!(fact))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((Cost::FMA(DatumType::F32), inputs[0].shape[0].clone() * self.kernel.macs())))
    }

    as_op!();
}

/// Perch's kernel for the tract convolution `conv` at `node`, where it applies.
fn perch_conv(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<FConvExec>> {
    let x = model.outlet_fact(node.inputs[0])?;
    let spec = &conv.pool_spec;
    if conv.q_params.is_some() || conv.group != 1 || x.datum_type != DatumType::F32 || spec.data_format != DataFormat::NCHW || x.rank() != 4 || node.inputs.len() != 3 {
        return Ok(None);
    }
    let Some(hw) = x.shape.iter().skip(2).map(|d| d.to_usize().ok()).collect::<Option<Vec<usize>>>() else { return Ok(None) };
    let (Some(kernel), Some(bias)) = (model.outlet_fact(node.inputs[1])?.konst.clone(), model.outlet_fact(node.inputs[2])?.konst.clone()) else {
        return Ok(None);
    };
    if hw.len() != 2 || hw.contains(&0) || kernel.datum_type() != DatumType::F32 || bias.datum_type() != DatumType::F32 {
        return Ok(None);
    }
    let geometry = super::conv_geometry(spec, [hw[0], hw[1]]);
    if x.shape[1].to_usize().ok() != Some(spec.input_channels) {
        return Ok(None);
    }
    // (1, out, in * kh * kw): the (channel, row, column) order the kernel packs. A kernel tract
    // cannot lay out so stays tract's (and fails there, if it must).
    let Ok(weights) = conv.kernel_fmt.kernel_as_group_o_ihw(&kernel, 1) else { return Ok(None) };
    let (weights, bias) = (weights.try_as_plain_ram()?, bias.try_as_plain_ram()?);
    let (weights, bias) = (weights.as_slice::<f32>()?, bias.as_slice::<f32>()?);
    if weights.len() != spec.output_channels * spec.input_channels * geometry.kernel[0] * geometry.kernel[1] {
        return Ok(None);
    }
    FConvKernel::new(geometry, spec.input_channels, weights, bias, Isa::best()).ok().map(FConvExec::new).transpose()
}

/// Replaces tract's float convolutions, and the strided pointwise ones its declutter has turned
/// into matrix products (see [`strided_pointwise`]), by [`FConvExec`]; returns how many it replaced.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        if let Some(conv) = node.op_as::<Conv>() {
            let Some(op) = perch_conv(model, node, conv)? else { continue };
            let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs[..1], op)?;
            patch.apply(model)?;
            replaced += 1;
        } else if let Some((kernel, last)) = strided_pointwise(model, node) {
            let (name, x) = (node.name.clone(), node.inputs[0]);
            replace_chain(model, &name, FConvExec::new(kernel)?, &[x], last)?;
            replaced += 1;
        }
    }
    Ok(replaced)
}

/// A 1x1 convolution of stride s on NCHW f32 (a ResNet's strided shortcut) as tract 0.23.9's
/// declutter leaves it: `Downsample` of axis 2 then of axis 3 by s, then an `EinSum` with constant
/// weights `[n, k]` and a constant bias added, either `NIHW,OI->NOHW` then `Add` of `[1, n, 1, 1]`
/// (a `Conv` decluttered), or `bkcm,nk->acmn`, `Reshape` of axis 1, `Move(1, 2)`, `Add` of
/// `[1, n, 1]` and `Reshape` of axis 2 (a plan, whose NNEF holds the product on `[H'W', k]`
/// matrices): up to eight tract ops, two copies, a packing and a transposition among them, for one
/// of Perch's. From the first `Downsample` at `node`: the kernel, and the last node, whose output
/// it gives; `None` for anything else.
fn strided_pointwise(model: &TypedModel, node: &TypedNode) -> Option<(FConvKernel, usize)> {
    use tract_core::ops::change_axes::AxisOp;
    use tract_core::ops::downsample::Downsample;
    use tract_core::ops::einsum::EinSum;
    use tract_core::ops::math::Add;
    let outputs = model.output_outlets().ok()?;
    // The single reader of `id`'s single output, where that output is not the model's.
    let next = |id: usize| {
        let node = model.node(id);
        match (&node.outputs[..], outputs.contains(&OutletId::new(id, 0))) {
            ([out], false) if out.successors.len() == 1 => Some(model.node(out.successors[0].node)),
            _ => None,
        }
    };
    let down = |node: &TypedNode, axis: usize| node.op_as::<Downsample>().filter(|d| d.axis == axis && d.stride > 0 && d.modulo == 0).map(|d| d.stride as usize);
    let s = down(node, 2)?;
    let x = model.outlet_fact(*node.inputs.first()?).ok()?;
    let shape: Vec<usize> = x.shape.iter().map(|d| d.to_usize().ok()).collect::<Option<_>>()?;
    let &[batch, c, h, w] = &shape[..] else { return None };
    if x.datum_type != DatumType::F32 || h == 0 || w == 0 {
        return None;
    }
    let d1 = next(node.id)?;
    let einsum = next(d1.id)?;
    let op = einsum.op_as::<EinSum>()?;
    if down(d1, 3) != Some(s) || op.q_params.is_some() || op.operating_dt != DatumType::F32 || einsum.inputs.len() != 2 || einsum.inputs[0] != OutletId::new(d1.id, 0) {
        return None;
    }
    let weights = model.outlet_fact(einsum.inputs[1]).ok()?.konst.clone()?;
    let n = weights.shape().first().copied()?;
    if weights.datum_type() != DatumType::F32 || weights.shape() != [n, c] {
        return None;
    }
    let is = |node: &TypedNode, f: &dyn Fn(&AxisOp) -> bool| node.op_as::<AxisOp>().is_some_and(f);
    // The Add, the product it reads, the bias's shape and the last node.
    let (add, product, bias_shape, last) = match op.axes.to_string().as_str() {
        "NIHW,OI->NOHW" => {
            let add = next(einsum.id)?;
            (add, einsum.id, [1, n, 1, 1].to_vec(), add)
        }
        "bkcm,nk->acmn" => {
            let reshape = next(einsum.id)?;
            let moved = next(reshape.id)?;
            let add = next(moved.id)?;
            let unreshape = next(add.id)?;
            let axes_ok = is(reshape, &|op| matches!(op, AxisOp::Reshape(1, ..))) && is(moved, &|op| *op == AxisOp::Move(1, 2)) && is(unreshape, &|op| matches!(op, AxisOp::Reshape(2, ..)));
            if !axes_ok {
                return None;
            }
            (add, moved.id, [1, n, 1].to_vec(), unreshape)
        }
        _ => return None,
    };
    let bias = model.outlet_fact(other_input::<Add>(add, OutletId::new(product, 0))?).ok()?.konst.clone()?;
    if bias.datum_type() != DatumType::F32 || bias.shape() != bias_shape {
        return None;
    }
    let output = [h.div_ceil(s), w.div_ceil(s)];
    let y = model.outlet_fact(OutletId::new(last.id, 0)).ok()?;
    if y.shape.iter().map(|d| d.to_usize().ok()).collect::<Option<Vec<_>>>()? != [batch, n, output[0], output[1]] {
        return None;
    }
    let geometry = Geometry { input: [h, w], kernel: [1, 1], stride: [s, s], dilation: [1, 1], pad_before: [0, 0], pad_after: [0, 0], output };
    let (weights, bias) = (weights.try_as_plain_ram().ok()?, bias.try_as_plain_ram().ok()?);
    let kernel = FConvKernel::new(geometry, c, weights.as_slice::<f32>().ok()?, bias.as_slice::<f32>().ok()?, Isa::best()).ok()?;
    Some((kernel, last.id))
}

/// The activation after the convolution at `node`, and the node whose output it gives, where
/// nothing else reads the convolution's output or the activation's intermediate values.
fn activation_after(model: &TypedModel, node: &TypedNode) -> Option<(Activation, usize)> {
    let y = OutletId::new(node.id, 0);
    let fact = model.outlet_fact(y).ok()?;
    // A successor that reads only this wire's values, one for one.
    let same = |id: usize| {
        let succ = model.node(id);
        let out = OutletId::new(id, 0);
        (succ.outputs.len() == 1 && model.outlet_fact(out).ok()?.shape == fact.shape && !model.output_outlets().ok()?.contains(&out)).then_some(succ)
    };
    let succs: Vec<usize> = node.outputs[0].successors.iter().map(|i| i.node).collect();
    if model.output_outlets().ok()?.contains(&y) {
        return None;
    }
    match succs[..] {
        [max] => {
            let max = model.node(max);
            (scalar(model, other_input::<Max>(max, y)?)? == 0.0 && max.outputs.len() == 1 && model.outlet_fact(max.id.into()).ok()?.shape == fact.shape).then_some((Activation::Relu, max.id))
        }
        [a, b] => {
            // `y * beta`, then `Sigmoid`, then `y * sigmoid`: one successor scales, the other
            // takes the sigmoid, in either order.
            let (scale, beta, last) = [(a, b), (b, a)].into_iter().find_map(|(s, l)| Some((s, scalar(model, other_input::<Mul>(model.node(s), y)?)?, l)))?;
            let sigmoid = same(model.node(same(scale)?.id).outputs[0].successors.first()?.node)?;
            let is_sigmoid = sigmoid.op_as::<ElementWiseOp>().is_some_and(|op| op.0.is::<Sigmoid>());
            let single = |id: usize| model.node(id).outputs[0].successors.len() == 1;
            if !is_sigmoid || !single(scale) || !single(sigmoid.id) || other_input::<Mul>(model.node(last), y)? != OutletId::new(sigmoid.id, 0) {
                return None;
            }
            // The last product may be the model's output: what it gives is the fused op's.
            (model.outlet_fact(OutletId::new(last, 0)).ok()?.shape == fact.shape)
                .then_some((Activation::Swish { beta }, last))
        }
        _ => None,
    }
}

/// Fuses the activation after each of Perch's float convolutions (see [`Activation`]) into it;
/// returns how many it fused. Runs after [`substitute`].
pub fn fuse_activations(model: &mut TypedModel) -> TractResult<usize> {
    fuse_each(model, |model, node, conv| {
        let Some((activation, last)) = activation_after(model, node) else { return Ok(None) };
        Ok(Some((FConvExec::new((*conv.kernel).clone().with_activation(activation))?, tvec!(node.inputs[0]), last)))
    })
}

/// For each of Perch's float convolutions with neither an activation nor a residual yet, `fuse`
/// may give the op it becomes, that op's inputs and the node whose output it gives (what lies
/// between is taken in); returns how many it fused.
#[allow(clippy::type_complexity)]
fn fuse_each(model: &mut TypedModel, fuse: impl Fn(&TypedModel, &TypedNode, &FConvExec) -> TractResult<Option<(FConvExec, TVec<OutletId>, usize)>>) -> TractResult<usize> {
    let mut fused = 0;
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let Some(conv) = node.op_as::<FConvExec>() else { continue };
        if conv.kernel.activation() != Activation::None || conv.residual.is_some() {
            continue;
        }
        let Some((op, inputs, last)) = fuse(model, node, conv)? else { continue };
        let name = node.name.clone();
        replace_chain(model, &name, op, &inputs, last)?;
        fused += 1;
    }
    Ok(fused)
}

/// A residual connection after the convolution at `node`, where its output goes only to an `Add`
/// with another f32 wire of its shape (no broadcasting): that wire, the activation after the sum (a
/// Relu where the sum goes only to a `Max` with zero of its shape, or none), and the node whose
/// output the fused op gives.
fn residual_after(model: &TypedModel, node: &TypedNode) -> Option<(OutletId, Activation, usize)> {
    use tract_core::ops::math::Add;
    let y = OutletId::new(node.id, 0);
    let shape = &model.outlet_fact(y).ok()?.shape;
    let add = sole_reader(model, y)?;
    let residual = other_input::<Add>(add, y)?;
    let sum = OutletId::new(add.id, 0);
    let r = model.outlet_fact(residual).ok()?;
    if residual == y || r.datum_type != DatumType::F32 || &r.shape != shape || add.outputs.len() != 1 || &model.outlet_fact(sum).ok()?.shape != shape {
        return None;
    }
    let relu = sole_reader(model, sum).filter(|max| {
        other_input::<Max>(max, sum).and_then(|zero| scalar(model, zero)) == Some(0.0) && max.outputs.len() == 1 && model.outlet_fact(OutletId::new(max.id, 0)).is_ok_and(|f| &f.shape == shape)
    });
    Some(match relu {
        Some(max) => (residual, Activation::Relu, max.id),
        None => (residual, Activation::None, add.id),
    })
}

/// Fuses the residual connection after each of Perch's float convolutions without an activation
/// (a ResNet block's second convolution: `Add` of the shortcut, then Relu) into it, the shortcut
/// becoming its second input; returns how many it fused. Runs after [`fuse_activations`]. Saves
/// tract's `Add`+`Max` pass over a tensor in memory (fashion-resnet: three, 8 us of 250 in one
/// profile).
pub fn fuse_residuals(model: &mut TypedModel) -> TractResult<usize> {
    fuse_each(model, |model, node, conv| {
        let Some((residual, activation, last)) = residual_after(model, node) else { return Ok(None) };
        Ok(Some((FConvExec { residual: Some(activation), ..conv.clone() }, tvec!(node.inputs[0], residual), last)))
    })
}

/// A strided 3x3 convolution and the pointwise one beside it on the same input (a ResNet stage's
/// first convolution and its shortcut), on one split of the input: the shortcut's kernel reads the
/// first one's phases (see [`FConvKernel::sharing_phases`]). Two outputs, the first convolution's
/// then the shortcut's (never serialized). With a `source`, its input is that convolution's input,
/// and `source`'s output goes into the phases as it is computed (see [`feed_pairs`]).
#[derive(Debug, Clone)]
pub struct FConvPairExec {
    first: FConvExec,
    second: Arc<FConvKernel>,
    source: Option<Arc<FConvKernel>>,
}

impl Op for FConvPairExec {
    fn name(&self) -> StaticName {
        "PerchConvPair#f32".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = self.first.info()?;
        info.push(format!("and on its phases {:?}", self.second.geometry()));
        if let Some(source) = &self.source {
            info.push(format!("fed by {:?} (then {:?}) as it computes", source.geometry(), source.activation()));
        }
        Ok(info)
    }

    op_as_typed_op!();
}

impl PartialEq for FConvPairExec {
    fn eq(&self, other: &Self) -> bool {
        self.first == other.first && Arc::ptr_eq(&self.second, &other.second) && self.source.as_ref().map(Arc::as_ptr) == other.source.as_ref().map(Arc::as_ptr)
    }
}

impl Eq for FConvPairExec {}

impl std::hash::Hash for FConvPairExec {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.first.kernel).hash(state);
        Arc::as_ptr(&self.second).hash(state);
        self.source.as_ref().map(Arc::as_ptr).hash(state);
    }
}

impl FConvPairExec {
    fn eval_with(&self, inputs: TVec<TValue>, buffers: &mut [Vec<f32>; 3]) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let batch = x.shape()[0];
        // SAFETY: f32 has no invalid bit patterns, and the kernels write every value.
        let (mut y, mut y2) = unsafe { (Tensor::uninitialized::<f32>(&self.first.kernel.output_dims(batch))?, Tensor::uninitialized::<f32>(&self.second.output_dims(batch))?) };
        {
            let plain = x.try_as_plain_ram()?;
            let (x, mut out, mut out2) = (plain.as_slice::<f32>()?, y.try_as_plain_ram_mut()?, y2.try_as_plain_ram_mut()?);
            let (y, y2) = (out.as_slice_mut::<f32>()?, out2.as_slice_mut::<f32>()?);
            match &self.source {
                Some(source) => self.first.with_sigmoid(|sigmoid| Ok(self.first.kernel.run_fed(source, Some(&self.second), x, batch, y, y2, buffers, sigmoid)?))?,
                None => self.first.with_sigmoid(|sigmoid| Ok(self.first.kernel.run_pair(&self.second, x, batch, y, y2, &mut buffers[0], sigmoid)?))?,
            }
        }
        Ok(tvec!(y.into_tvalue(), y2.into_tvalue()))
    }
}

impl EvalOp for FConvPairExec {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.eval_with(inputs, &mut Default::default())
    }

    /// The phase buffers kept from run to run, as [`FConvExec`]'s.
    fn state(&self, _ctx: &EvalContext) -> TractResult<Option<Box<dyn OpState>>> {
        Ok(Some(Box::new(FConvState { buffers: [self.first.kernel.scratch(), Vec::new(), Vec::new()] })))
    }
}

impl TypedOp for FConvPairExec {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let first = self.first.output_facts(inputs)?.remove(0);
        let [_, a, b, c] = self.second.output_dims(0);
        Ok(tvec!(first, f32::fact(tvec!(inputs[0].shape[0].clone(), a.into(), b.into(), c.into()))))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let source = self.source.as_ref().map_or(0, |s| s.macs());
        Ok(tvec!((Cost::FMA(DatumType::F32), inputs[0].shape[0].clone() * (self.first.kernel.macs() + self.second.macs() + source))))
    }

    as_op!();
}

/// Runs each strided pointwise `PerchConv#f32` (a shortcut) on the phases of a convolution beside
/// it on the same input (see [`FConvPairExec`]); returns how many it paired. Runs after
/// [`fuse_residuals`]. Saves the shortcut's split and a second pass over its input: fashion-resnet
/// 1.09x -> 1.04x ONNX Runtime on the Xeon (interleaved A/B), 1.2% fewer instructions per inference
/// on a Cortex-A72.
pub fn pair_shortcuts(model: &mut TypedModel) -> TractResult<usize> {
    let mut paired = 0;
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let Some(first) = node.op_as::<FConvExec>() else { continue };
        if first.residual.is_some() || node.inputs.len() != 1 || node.outputs.len() != 1 {
            continue;
        }
        let x = node.inputs[0];
        let sibling = model.outlet_successors(x).iter().map(|i| model.node(i.node)).find_map(|other| {
            let op = other.op_as::<FConvExec>().filter(|op| other.id != id && op.residual.is_none() && op.kernel.activation() == Activation::None && other.inputs.len() == 1)?;
            Some((other.id, op.kernel.sharing_phases(&first.kernel)?))
        });
        let Some((second_id, second)) = sibling else { continue };
        let (name, pair) = (node.name.clone(), FConvPairExec { first: first.clone(), second: Arc::new(second), source: None });
        let mut patch = TypedModelPatch::default();
        let tap = patch.tap_model(model, x)?;
        let outputs = patch.wire_node(name, pair, &[tap])?;
        patch.shunt_outside(model, OutletId::new(id, 0), outputs[0])?;
        patch.shunt_outside(model, OutletId::new(second_id, 0), outputs[1])?;
        patch.apply(model)?;
        paired += 1;
    }
    Ok(paired)
}

/// Moves each `PerchConv#f32` whose output only a `PerchConvPair#f32` reads (fashion-resnet's stem,
/// before its first stage) into that pair, as its source: its output rows then go into the pair's
/// phases as they are computed, and the output is never written whole nor read back (see
/// [`FConvKernel::run_fed`]; AVX-512 only, see [`FConvKernel::can_feed`]). Runs after
/// [`pair_shortcuts`]; returns how many it moved.
pub fn feed_pairs(model: &mut TypedModel) -> TractResult<usize> {
    let outputs = model.output_outlets()?.to_vec();
    let mut fed = 0;
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let Some(pair) = node.op_as::<FConvPairExec>() else { continue };
        let x = node.inputs[0];
        let producer = model.node(x.node);
        let Some(source) = producer.op_as::<FConvExec>() else { continue };
        let sole = model.outlet_successors(x).len() == 1 && !outputs.contains(&x) && producer.outputs.len() == 1;
        if pair.source.is_some() || node.inputs.len() != 1 || !sole || source.residual.is_some() || producer.inputs.len() != 1 || !source.kernel.can_feed(&pair.first.kernel) {
            continue;
        }
        let (name, op) = (node.name.clone(), FConvPairExec { source: Some(source.kernel.clone()), ..pair.clone() });
        let mut patch = TypedModelPatch::default();
        let tap = patch.tap_model(model, producer.inputs[0])?;
        let fed_outputs = patch.wire_node(name, op, &[tap])?;
        patch.shunt_outside(model, OutletId::new(id, 0), fed_outputs[0])?;
        patch.shunt_outside(model, OutletId::new(id, 1), fed_outputs[1])?;
        patch.apply(model)?;
        fed += 1;
    }
    Ok(fed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tolerance::Tolerance;
    use crate::ops::{test_konst as konst, test_run, test_values as values};
    use tract_core::ops::cnn::{KernelFormat, PaddingSpec, PoolSpec};
    use crate::kernels::winograd::Winograd;

    /// A float model of three convolutions (3x3 padded by 1, 3x3 stride 2 padded `SameUpper`, 1x1
    /// stride 2) run by tract and with Perch's kernels swapped in.
    #[test]
    fn substituted_convolutions_give_tracts_outputs() {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 3, 13, 11])).unwrap();
        let mut wire = x;
        for (i, (cin, cout, size, stride, padding)) in [
            (3usize, 20usize, 3usize, 1usize, PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1))),
            (20, 9, 3, 2, PaddingSpec::SameUpper),
            (9, 17, 1, 2, PaddingSpec::Valid),
        ]
        .into_iter()
        .enumerate()
        {
            let spec = PoolSpec::new(DataFormat::NCHW, tvec!(size, size), padding, None, Some(tvec!(stride, stride)), cin, cout);
            let shape = [cout, cin, size, size];
            let k = model.add_const(format!("k{i}"), Tensor::from_shape(&shape, &values(shape.iter().product(), i)).unwrap()).unwrap();
            let b = model.add_const(format!("b{i}"), Tensor::from_shape(&[cout], &values(cout, i + 7)).unwrap()).unwrap();
            wire = model.wire_node(format!("conv{i}"), Conv::new(spec, KernelFormat::OIHW, 1, None), &[wire, k, b]).unwrap()[0];
        }
        model.select_output_outlets(&[wire]).unwrap();
        let input = Tensor::from_shape(&[2, 3, 13, 11], &values(2 * 3 * 13 * 11, 99)).unwrap();
        // tract's own evaluation, op by op, is the reference: its optimized plan of this model differs
        // from it (value 0: -11.94 for -9.59; with explicit padding in place of SameUpper the two
        // agree), a tract 0.23.9 optimizer bug with a strided pointwise convolution after a SameUpper
        // one.
        let want = test_run(model.clone(), &input);
        let mut perch = model;
        assert_eq!(substitute(&mut perch).unwrap(), 3);
        let perch = perch.into_optimized().unwrap();
        assert_eq!(perch.nodes().iter().filter(|n| n.op_is::<FConvExec>()).count(), 3, "{perch}");
        let got = test_run(perch, &input);
        assert_eq!(got.0, want.0);
        // Sums of 180 products in another order.
        Tolerance::CrossArch.check(&got.1, &want.1).unwrap();
    }

    /// Conv, Swish (`Mul` by beta, `Sigmoid`, `Mul`), conv, Relu (`Max` with zero): both
    /// activations fused, bit for bit the plan with tract's activation nodes.
    #[test]
    fn fused_activations_give_tracts_activations() {
        use tract_core::ops::binary::TypedBinOp;
        use tract_core::ops::element_wise::ElementWiseOp;
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 3, 9, 10])).unwrap();
        let spec = |cin, cout| PoolSpec::new(DataFormat::NCHW, tvec!(3, 3), PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1)), None, None, cin, cout);
        let (k, b) = (konst(&mut model, "k0", &[12, 3, 3, 3], 1), konst(&mut model, "b0", &[12], 2));
        let y = model.wire_node("conv0", Conv::new(spec(3, 12), KernelFormat::OIHW, 1, None), &[x, k, b]).unwrap()[0];
        let beta = model.add_const("beta", tensor4(&[[[[1.7f32]]]])).unwrap();
        let scaled = model.wire_node("scale", TypedBinOp(Box::new(Mul), None), &[beta, y]).unwrap()[0];
        let sigmoid = model.wire_node("sigmoid", ElementWiseOp(Box::new(Sigmoid {}), None), &[scaled]).unwrap()[0];
        let swish = model.wire_node("swish", TypedBinOp(Box::new(Mul), None), &[y, sigmoid]).unwrap()[0];
        let (k, b) = (konst(&mut model, "k1", &[9, 12, 3, 3], 3), konst(&mut model, "b1", &[9], 4));
        let y = model.wire_node("conv1", Conv::new(spec(12, 9), KernelFormat::OIHW, 1, None), &[swish, k, b]).unwrap()[0];
        let zero = model.add_const("zero", tensor4(&[[[[0f32]]]])).unwrap();
        let relu = model.wire_node("relu", TypedBinOp(Box::new(Max), None), &[y, zero]).unwrap()[0];
        model.select_output_outlets(&[relu]).unwrap();
        let input = Tensor::from_shape(&[1, 3, 9, 10], &values(270, 5)).unwrap();
        let run = |fuse: bool| {
            let mut model = model.clone();
            assert_eq!(substitute(&mut model).unwrap(), 2);
            if fuse {
                assert_eq!(fuse_activations(&mut model).unwrap(), 2);
            }
            let model = model.into_optimized().unwrap();
            let left = model.nodes().iter().filter(|n| n.op_is::<ElementWiseOp>() || n.op.name().contains("Mul") || n.op.name().contains("Max")).count();
            assert_eq!(left == 0, fuse, "{model}");
            test_run(model, &input).1
        };
        let (fused, unfused) = (run(true), run(false));
        assert!(fused.iter().any(|&v| v == 0.0) && fused.iter().any(|&v| v > 0.0), "the Relu clamps some values and not others");
        Tolerance::Exact.check(&fused, &unfused).unwrap();
        Tolerance::CrossArch.check(&fused, &test_run(model, &input).1).unwrap();
    }

    /// A strided pointwise convolution, which tract's declutter turns into `Downsample`s and a
    /// matrix product (a ResNet's shortcut), runs on Perch's kernel after the declutter too.
    #[test]
    fn decluttered_strided_pointwise_convolutions_are_substituted() {
        for (h, w, stride) in [(14usize, 14usize, 2usize), (9, 6, 2), (7, 11, 3)] {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([1, 5, h, w])).unwrap();
            let spec = PoolSpec::new(DataFormat::NCHW, tvec!(1, 1), PaddingSpec::Valid, None, Some(tvec!(stride, stride)), 5, 19);
            let (k, b) = (konst(&mut model, "k", &[19, 5, 1, 1], 1), konst(&mut model, "b", &[19], 2));
            let y = model.wire_node("shortcut", Conv::new(spec, KernelFormat::OIHW, 1, None), &[x, k, b]).unwrap()[0];
            model.select_output_outlets(&[y]).unwrap();
            let input = Tensor::from_shape(&[1, 5, h, w], &values(5 * h * w, 3)).unwrap();
            let want = test_run(model.clone(), &input);
            let mut perch = model.into_decluttered().unwrap();
            assert!(perch.nodes().iter().all(|n| !n.op_is::<Conv>()), "tract's declutter keeps the Conv: {perch}");
            assert_eq!(substitute(&mut perch).unwrap(), 1, "{perch}");
            let perch = perch.into_optimized().unwrap();
            assert!(perch.nodes().iter().all(|n| n.op_is::<FConvExec>() || n.op_is::<tract_core::ops::source::TypedSource>() || n.op_is::<tract_core::ops::konst::Const>()), "{perch}");
            let got = test_run(perch, &input);
            assert_eq!(got.0, want.0);
            Tolerance::CrossArch.check(&got.1, &want.1).unwrap();
        }
    }

    /// Two residual blocks: `relu(conv(conv(x)) + shortcut(x))`, then `conv(that) + that` as the
    /// model's output; and a convolution plus a broadcast constant, which is no residual. The two
    /// residual `Add`s and the Relu are fused, bit for bit the plan with tract's nodes.
    #[test]
    fn fused_residual_connections_give_tracts_sums() {
        use tract_core::ops::binary::TypedBinOp;
        use tract_core::ops::math::Add;
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 4, 9, 8])).unwrap();
        let conv = |model: &mut TypedModel, name: &str, input: OutletId, cin: usize, cout: usize, size: usize, seed: usize| {
            let spec = PoolSpec::new(DataFormat::NCHW, tvec!(size, size), PaddingSpec::Explicit(tvec!(size / 2, size / 2), tvec!(size / 2, size / 2)), None, None, cin, cout);
            let (k, b) = (konst(model, &format!("{name}.k"), &[cout, cin, size, size], seed), konst(model, &format!("{name}.b"), &[cout], seed + 1));
            model.wire_node(name, Conv::new(spec, KernelFormat::OIHW, 1, None), &[input, k, b]).unwrap()[0]
        };
        // 8 channels: on AVX-512 and NEON, b and d run Winograd's F(2x2, 3x3), which adds the
        // residual in its stores.
        let a = conv(&mut model, "a", x, 4, 8, 3, 1);
        let b = conv(&mut model, "b", a, 8, 8, 3, 3);
        let shortcut = conv(&mut model, "shortcut", x, 4, 8, 1, 5);
        let sum = model.wire_node("sum", TypedBinOp(Box::new(Add), None), &[shortcut, b]).unwrap()[0];
        let zero = model.add_const("zero", tensor4(&[[[[0f32]]]])).unwrap();
        let block = model.wire_node("relu", TypedBinOp(Box::new(Max), None), &[sum, zero]).unwrap()[0];
        let d = conv(&mut model, "d", block, 8, 8, 3, 7);
        let out = model.wire_node("sum2", TypedBinOp(Box::new(Add), None), &[d, block]).unwrap()[0];
        let e = conv(&mut model, "e", block, 8, 8, 1, 9);
        let offset = konst(&mut model, "offset", &[1, 8, 1, 1], 11);
        let biased = model.wire_node("biased", TypedBinOp(Box::new(Add), None), &[e, offset]).unwrap()[0];
        model.select_output_outlets(&[out, biased]).unwrap();
        let input = Tensor::from_shape(&[1, 4, 9, 8], &values(4 * 9 * 8, 13)).unwrap();
        let run = |fuse: bool| {
            let mut model = model.clone();
            assert_eq!(substitute(&mut model).unwrap(), 5);
            assert_eq!(fuse_activations(&mut model).unwrap(), 0);
            if fuse {
                assert_eq!(fuse_residuals(&mut model).unwrap(), 2);
            }
            let model = model.into_optimized().unwrap();
            let sums = model.nodes().iter().filter(|n| n.op.name().contains("Add") || n.op.name().contains("Max")).count();
            // Left: the broadcast constant's Add (tract may fold it into another op).
            assert!(if fuse { sums <= 1 } else { sums >= 3 }, "{model}");
            let winograd = model.nodes().iter().filter(|n| n.op.info().unwrap().concat().contains("Winograd")).count();
            assert_eq!(winograd, if Winograd::runs_on(Isa::best()) { 2 } else { 0 }, "{model}");
            test_run(model, &input).1
        };
        let (fused, unfused) = (run(true), run(false));
        Tolerance::Exact.check(&fused, &unfused).unwrap();
        let want = test_run(model, &input).1;
        assert!(want.iter().any(|&v| v < 0.0), "the unclamped output and the offset one have negative values");
        Tolerance::CrossArch.check(&fused, &want).unwrap();
    }

    /// A float convolution of `size` x `size`, padded by `size / 2`, with random weights and bias.
    fn conv(model: &mut TypedModel, name: &str, input: OutletId, (cin, cout, size, stride): (usize, usize, usize, usize), seed: usize) -> OutletId {
        let spec = PoolSpec::new(DataFormat::NCHW, tvec!(size, size), PaddingSpec::Explicit(tvec!(size / 2, size / 2), tvec!(size / 2, size / 2)), None, Some(tvec!(stride, stride)), cin, cout);
        let (k, b) = (konst(model, &format!("{name}.k"), &[cout, cin, size, size], seed), konst(model, &format!("{name}.b"), &[cout], seed + 1));
        model.wire_node(name, Conv::new(spec, KernelFormat::OIHW, 1, None), &[input, k, b]).unwrap()[0]
    }

    /// A ResNet stage with a strided shortcut: its first convolution and the shortcut become one
    /// `PerchConvPair#f32`, bit for bit the two ops apart, and within rounding of tract's plan.
    #[test]
    fn a_strided_shortcut_pairs_with_its_stages_first_convolution() {
        use tract_core::ops::binary::TypedBinOp;
        use tract_core::ops::math::Add;
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 5, 11, 9])).unwrap();
        let zero = model.add_const("zero", tensor4(&[[[[0f32]]]])).unwrap();
        let a = conv(&mut model, "a", x, (5, 7, 3, 2), 1);
        let a = model.wire_node("a.relu", TypedBinOp(Box::new(Max), None), &[a, zero]).unwrap()[0];
        let b = conv(&mut model, "b", a, (7, 7, 3, 1), 3);
        let shortcut = conv(&mut model, "shortcut", x, (5, 7, 1, 2), 5);
        let sum = model.wire_node("sum", TypedBinOp(Box::new(Add), None), &[b, shortcut]).unwrap()[0];
        let block = model.wire_node("relu", TypedBinOp(Box::new(Max), None), &[sum, zero]).unwrap()[0];
        model.select_output_outlets(&[block]).unwrap();
        let input = Tensor::from_shape(&[2, 5, 11, 9], &values(2 * 5 * 11 * 9, 13)).unwrap();
        let run = |pair: bool| {
            let mut model = model.clone();
            assert_eq!(substitute(&mut model).unwrap(), 3);
            assert_eq!(fuse_activations(&mut model).unwrap(), 1);
            assert_eq!(fuse_residuals(&mut model).unwrap(), 1);
            if pair {
                assert_eq!(pair_shortcuts(&mut model).unwrap(), 1);
            }
            let model = model.into_optimized().unwrap();
            let pairs = model.nodes().iter().filter(|n| n.op_is::<FConvPairExec>()).count();
            assert_eq!(pairs, usize::from(pair), "{model}");
            test_run(model, &input).1
        };
        let (paired, apart) = (run(true), run(false));
        Tolerance::Exact.check(&paired, &apart).unwrap();
        Tolerance::CrossArch.check(&paired, &test_run(model, &input).1).unwrap();
    }

    /// A stem before a ResNet stage: where AVX-512 runs, it moves into the stage's pair (fed),
    /// bit for bit the ops apart, and within rounding of tract's plan.
    #[test]
    fn a_stem_feeds_the_pair_after_it() {
        use tract_core::ops::binary::TypedBinOp;
        use tract_core::ops::math::Add;
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 3, 14, 14])).unwrap();
        let zero = model.add_const("zero", tensor4(&[[[[0f32]]]])).unwrap();
        let stem = conv(&mut model, "stem", x, (3, 6, 3, 1), 1);
        let stem = model.wire_node("stem.relu", TypedBinOp(Box::new(Max), None), &[stem, zero]).unwrap()[0];
        let a = conv(&mut model, "a", stem, (6, 7, 3, 2), 3);
        let a = model.wire_node("a.relu", TypedBinOp(Box::new(Max), None), &[a, zero]).unwrap()[0];
        let shortcut = conv(&mut model, "shortcut", stem, (6, 7, 1, 2), 5);
        let sum = model.wire_node("sum", TypedBinOp(Box::new(Add), None), &[a, shortcut]).unwrap()[0];
        model.select_output_outlets(&[sum]).unwrap();
        let input = Tensor::from_shape(&[2, 3, 14, 14], &values(2 * 3 * 14 * 14, 13)).unwrap();
        let avx512 = Isa::best() == Isa::Avx512Vnni;
        let run = |feed: bool| {
            let mut model = model.clone();
            assert_eq!(substitute(&mut model).unwrap(), 3);
            assert_eq!(fuse_activations(&mut model).unwrap(), 2);
            assert_eq!(pair_shortcuts(&mut model).unwrap(), 1);
            if feed {
                assert_eq!(feed_pairs(&mut model).unwrap(), usize::from(avx512));
            }
            let model = model.into_optimized().unwrap();
            let fed = model.nodes().iter().filter_map(|n| n.op_as::<FConvPairExec>()).filter(|p| p.source.is_some()).count();
            assert_eq!(fed, usize::from(feed && avx512), "{model}");
            assert_eq!(model.nodes().iter().filter(|n| n.op_is::<FConvExec>()).count(), usize::from(!(feed && avx512)), "{model}");
            test_run(model, &input).1
        };
        let (fed, apart) = (run(true), run(false));
        Tolerance::Exact.check(&fed, &apart).unwrap();
        Tolerance::CrossArch.check(&fed, &test_run(model, &input).1).unwrap();
    }

    /// A Relu whose input is also read elsewhere (a residual connection) stays tract's.
    #[test]
    fn an_activation_whose_input_is_read_elsewhere_stays_tracts() {
        use tract_core::ops::binary::TypedBinOp;
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 2, 5, 5])).unwrap();
        let spec = PoolSpec::new(DataFormat::NCHW, tvec!(1, 1), PaddingSpec::Valid, None, None, 2, 2);
        let (k, b) = (konst(&mut model, "k", &[2, 2, 1, 1], 1), konst(&mut model, "b", &[2], 2));
        let y = model.wire_node("conv", Conv::new(spec, KernelFormat::OIHW, 1, None), &[x, k, b]).unwrap()[0];
        let zero = model.add_const("zero", tensor4(&[[[[0f32]]]])).unwrap();
        let relu = model.wire_node("relu", TypedBinOp(Box::new(Max), None), &[y, zero]).unwrap()[0];
        let sum = model.wire_node("sum", TypedBinOp(Box::new(tract_core::ops::math::Add), None), &[y, relu]).unwrap()[0];
        model.select_output_outlets(&[sum]).unwrap();
        assert_eq!(substitute(&mut model).unwrap(), 1);
        assert_eq!(fuse_activations(&mut model).unwrap(), 0);
    }
}

//! Channels-last tensors between Perch's kernels, in an optimized plan.
//!
//! tract's convolutions take and give NCHW tensors; Perch's kernels work channels-last, so each one
//! transposes its input into a channels-last buffer and its output back into channel planes. Where a
//! tensor is made and read only by Perch's convolutions (and by residual Adds, which work element by
//! element in any layout), it can stay channels-last: MobileNetV2's expansion, depthwise and
//! projection layers, and the Adds between its blocks, then run with no transpose at all.

use std::collections::HashSet;

use tract_nnef::internal::*;

use super::qadd::QAdd;
use super::qconv::QConvExec;
use crate::kernels::Layout;

/// Makes channels-last each 4D tensor of `model` (optimized) that Perch's convolutions and Adds
/// alone make and read, where their kernels can ([`crate::kernels::QConvKernel::with_layouts`]); an
/// Add's inputs and output all, or none. The plan must run on one thread (a channels-last output is
/// computed on one). Returns how many tensors became channels-last.
pub(crate) fn channels_last(model: &mut TypedModel) -> TractResult<usize> {
    let outputs = model.output_outlets()?.to_vec();
    let order = model.eval_order()?;
    let conv = |model: &TypedModel, id: usize| model.node(id).op_as::<QConvExec>().cloned();
    // An Add of two tensors of the same shape: element by element, whatever the layout.
    let add = |model: &TypedModel, id: usize| -> TractResult<bool> {
        let node = model.node(id);
        if node.op_as::<QAdd>().is_none() || node.inputs.len() != 2 {
            return Ok(false);
        }
        Ok(model.outlet_fact(node.inputs[0])?.shape == model.outlet_fact(node.inputs[1])?.shape)
    };
    let mut nhwc = HashSet::new();
    for &id in &order {
        let outlet = OutletId::new(id, 0);
        if model.node(id).outputs.len() != 1 || outputs.contains(&outlet) || model.outlet_fact(outlet)?.rank() != 4 {
            continue;
        }
        let writes = conv(model, id).is_some_and(|c| c.kernel.writes_channels_last()) || add(model, id)?;
        let successors = model.outlet_successors(outlet);
        let mut reads = !successors.is_empty();
        for inlet in successors {
            reads &= (inlet.slot == 0 && conv(model, inlet.node).is_some_and(|c| c.kernel.reads_channels_last())) || add(model, inlet.node)?;
        }
        if writes && reads {
            nhwc.insert(outlet);
        }
    }
    // An Add works in one layout: where one of its tensors stays in planes, they all do.
    loop {
        let mut changed = false;
        for &id in &order {
            if !add(model, id)? {
                continue;
            }
            let node = model.node(id);
            let tensors: Vec<OutletId> = node.inputs.iter().copied().chain([OutletId::new(id, 0)]).collect();
            if !tensors.iter().all(|t| nhwc.contains(t)) {
                for t in &tensors {
                    changed |= nhwc.remove(t);
                }
            }
        }
        if !changed {
            break;
        }
    }
    // Each convolution in its layouts, and every output fact from its inputs' (in order).
    for &id in &order {
        let touched = if let Some(c) = conv(model, id) {
            let layout = |o: OutletId| if nhwc.contains(&o) { Layout::Nhwc } else { Layout::Nchw };
            let (input, output) = (layout(model.node(id).inputs[0]), layout(OutletId::new(id, 0)));
            let kernel = c.kernel.with_layouts(input, output).context("a convolution's kernel refused the layouts it offered")?;
            model.node_mut(id).op = Box::new(QConvExec { kernel: Arc::new(kernel), output: c.output });
            true
        } else {
            add(model, id)?
        };
        if touched {
            let node = model.node(id);
            let inputs = node.inputs.iter().map(|&i| model.outlet_fact(i).cloned()).collect::<TractResult<TVec<_>>>()?;
            let facts = node.op.output_facts(&inputs.iter().collect::<TVec<_>>())?;
            for (slot, fact) in facts.into_iter().enumerate() {
                model.node_mut(id).outputs[slot].fact = fact;
            }
        }
    }
    Ok(nhwc.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Isa;
    use crate::ops::qconv::{Engine, QConv};
    use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
    use tract_core::ops::nn::DataFormat;

    fn dt(zero_point: i32, scale: f32) -> DatumType {
        DatumType::QI8(QParams::ZpScale { zero_point, scale })
    }

    /// A convolution on Perch's kernels (per-channel scales, or one for all where `uniform`) from
    /// `from` channels to `to`, `depthwise` (3x3, padded) or pointwise.
    #[allow(clippy::too_many_arguments)]
    fn conv(model: &mut TypedModel, name: &str, x: OutletId, from: usize, to: usize, depthwise: bool, seed: usize, uniform: bool) -> OutletId {
        let (k, group) = if depthwise { (3, from) } else { (1, 1) };
        let spec = PoolSpec::new(DataFormat::NCHW, tvec!(k, k), PaddingSpec::Explicit(tvec!(k / 2, k / 2), tvec!(k / 2, k / 2)), None, None, from, to);
        let per_out = if depthwise { 9 } else { from };
        let w: Vec<i8> = (0..to * per_out).map(|i| ((i * 37 + seed * 11) % 255) as i32 as i8).map(|v| v.max(-127)).collect();
        let kshape = [to, per_out / (k * k), k, k];
        let kernel = model.add_const(format!("{name}.k"), Tensor::from_shape(&kshape, &w).unwrap()).unwrap();
        let bias = model.add_const(format!("{name}.b"), Tensor::from_shape(&[to], &(0..to as i32).map(|i| i * 13 - 50).collect::<Vec<_>>()).unwrap()).unwrap();
        let scales: Vec<f32> = (0..to).map(|i| 0.002 + if uniform { 0.0 } else { (i % 7) as f32 * 0.0004 }).collect();
        let scales = model.add_const(format!("{name}.s"), Tensor::from_shape(&[to], &scales).unwrap()).unwrap();
        let (zp, scale) = model.outlet_fact(x).unwrap().datum_type.zp_scale();
        let op = QConv { conv: Conv::new(spec, KernelFormat::OIHW, group, Some(dt(seed as i32 - 3, 0.05))), x_zero_point: zp, x_scale: scale, engine: Engine::Perch };
        model.wire_node(name, op, &[x, kernel, bias, scales]).unwrap()[0]
    }

    /// MobileNetV2's inverted residual twice over, then a pointwise head: the tensors between
    /// Perch's ops go channels-last, the outputs do not change; with per-channel scales and with
    /// one scale per convolution (tract's fixed point).
    #[test]
    fn channels_last_tensors_give_the_same_outputs() {
        for uniform in [false, true] {
            channels_last_tensors_give_the_same_outputs_with(uniform);
        }
    }

    fn channels_last_tensors_give_the_same_outputs_with(uniform: bool) {
        let mut model = TypedModel::default();
        let x = model.add_source("x", dt(-5, 0.03).fact([2, 16, 7, 9])).unwrap();
        let a = conv(&mut model, "a", x, 16, 24, false, 1, uniform);
        let mut y = a;
        for block in 0..2 {
            let e = conv(&mut model, &format!("e{block}"), y, 24, 48, false, 2 + block, uniform);
            let d = conv(&mut model, &format!("d{block}"), e, 48, 48, true, 4 + block, uniform);
            let p = conv(&mut model, &format!("p{block}"), d, 48, 24, false, 6 + block, uniform);
            y = model.wire_node(format!("add{block}"), QAdd { output: dt(block as i32, 0.07) }, &[y, p]).unwrap()[0];
        }
        let head = conv(&mut model, "head", y, 24, 20, false, 9, uniform);
        model.select_output_outlets(&[head]).unwrap();
        let mut optimized = model.into_optimized().unwrap();
        let input: Vec<i8> = (0..2 * 16 * 7 * 9).map(|i| (i * 53 % 256) as u8 as i8).collect();
        let mut input = Tensor::from_shape(&[2, 16, 7, 9], &input).unwrap();
        unsafe { input.set_datum_type(dt(-5, 0.03)) };
        let run = |m: &TypedModel| m.clone().into_runnable().unwrap().run(tvec!(input.clone().into_tvalue())).unwrap().remove(0);
        let planes = run(&optimized);
        let changed = channels_last(&mut optimized).unwrap();
        // a, and per block the expansion, the depthwise output and the projection, and the sum; on
        // a CPU without the channels-last lane kernel (for a uniform scale: without its uniform
        // requantization) the dense convolutions keep their planes.
        use crate::kernels::micro::{lanes_requantize, lanes_requantize_uniform};
        let isa = Isa::best();
        let lanes = lanes_requantize(isa) && (!uniform || lanes_requantize_uniform(isa));
        let expected = if lanes { 1 + 4 * 2 } else { 2 };
        assert_eq!(changed, expected, "uniform: {uniform}");
        let nhwc = optimized.nodes().iter().filter_map(|n| n.op_as::<QConvExec>()).filter(|c| c.kernel.output_layout() == Layout::Nhwc).count();
        assert!(nhwc > 0);
        assert_eq!(run(&optimized), planes, "uniform: {uniform}");
        assert_eq!(optimized.output_fact(0).unwrap().shape.to_vec(), planes.shape().iter().map(|&d| d.to_dim()).collect::<Vec<_>>());
    }
}

//! Perch's own tract operators and the NNEF registry that writes and reads them.
//!
//! tract's standard NNEF serializer writes a quantized convolution as a plain `conv` whose scales come
//! from the tensors' types, which hold one scale per tensor: per-channel weight scales would be lost.
//! Perch's int8 plans therefore carry their convolutions as `perch_qconv` invocations (and residual
//! Adds of differently quantized tensors, which tract's reader cannot type, as `perch_qadd`; and
//! element-wise functions between int8 tensors as `perch_lut` lookup tables). The registry
//! is compiled into both the writer (host-tools) and the reader (the runtime), through [`nnef`].

pub mod downsample;
pub mod dense;
pub mod dynamic;
pub mod fconv;
pub mod layout;
pub mod lut;
pub mod maxpool;
pub mod qadd;
pub mod qconv;
pub mod quantize;

use tract_nnef::internal::*;

/// The NNEF registry id written into plans that use Perch's operators.
pub const REGISTRY_ID: &str = "perch";

/// The registry holding Perch's operators.
pub fn registry() -> Registry {
    let mut registry = Registry::new(REGISTRY_ID);
    qconv::register(&mut registry);
    qadd::register(&mut registry);
    lut::register(&mut registry);
    dynamic::register(&mut registry);
    registry
}

/// tract's NNEF framework with the ops Perch plans may hold: NNEF's own, tract_core's ops of image
/// classifiers (`tract_core_images`, from Perch's patched tract-nnef: no sequence, signal, sub-graph,
/// scatter or language-model ops) and Perch's. Use it for every plan read or write: what the host can
/// write is then exactly what a device can read, and a device binary links only these ops.
pub fn nnef() -> tract_nnef::framework::Nnef {
    use tract_nnef::resource::{DatLoader, GraphNnefLoader, GraphQuantLoader, TypedModelLoader};
    tract_nnef::framework::Nnef {
        stdlib: tract_nnef::framework::stdlib(),
        registries: vec![tract_nnef::ops::tract_nnef(), tract_nnef::ops::tract_core_images(), registry()],
        resource_loaders: vec![
            GraphNnefLoader.into_boxed(),
            DatLoader.into_boxed(),
            GraphQuantLoader.into_boxed(),
            TypedModelLoader::new(false).into_boxed(),
        ],
        allow_extended_identifier_syntax: false,
        extern_all_constants: false,
    }
}

/// Evaluates an op that is defined as a small graph of tract ops (what it declutters into): wires
/// that graph over sources of the inputs' types and runs it. Used outside optimized plans only
/// (constant folding, tests); optimized plans run the decluttered ops themselves.
pub(crate) fn eval_as_graph(
    inputs: TVec<TValue>,
    wire: impl FnOnce(&mut TypedModel, &[OutletId]) -> TractResult<TVec<OutletId>>,
) -> TractResult<TVec<TValue>> {
    let mut model = TypedModel::default();
    let wires = inputs
        .iter()
        .enumerate()
        .map(|(ix, v)| model.add_source(format!("source.{ix}"), v.datum_type().fact(v.shape())))
        .collect::<TractResult<TVec<_>>>()?;
    let out = wire(&mut model, &wires)?;
    model.select_output_outlets(&out)?;
    model.into_runnable()?.run(inputs)
}

/// The declutter of an op defined as a small graph of tract ops: replaces `node` by that graph.
pub(crate) fn declutter_as_graph(
    model: &TypedModel,
    node: &TypedNode,
    patch_name: &'static str,
    wire: impl FnOnce(&mut TypedModelPatch, &[OutletId]) -> TractResult<TVec<OutletId>>,
) -> TractResult<Option<TypedModelPatch>> {
    let mut patch = TypedModelPatch::new(patch_name);
    let inputs = patch.taps(model, &node.inputs)?;
    let outputs = wire(&mut patch, &inputs)?;
    for (slot, o) in outputs.iter().enumerate() {
        patch.shunt_outside(model, OutletId::new(node.id, slot), *o)?;
    }
    Ok(Some(patch))
}

/// Whether a decluttered model's convolutions run on Perch's kernels (the `perch` engine): the
/// load-time substitutions of int8 ops ([`maxpool::substitute`] for int8 pools,
/// [`quantize::substitute`]) apply only there.
pub(crate) fn on_perch_kernels(model: &TypedModel) -> bool {
    model.nodes().iter().any(|n| n.op_as::<qconv::QConv>().is_some_and(|c| c.engine == qconv::Engine::Perch))
}

/// Replaces, node by node, each op for which `perch` gives Perch's own (same inputs and outputs);
/// returns how many it replaced.
pub(crate) fn replace_ops<O: TypedOp>(model: &mut TypedModel, perch: impl Fn(&TypedModel, &TypedNode) -> TractResult<Option<O>>) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let Some(op) = perch(model, node)? else { continue };
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// The nine input facts of tract's quantized `Conv` (input, kernel, bias, then zero point and scale
/// of input, kernel and output) for an op that takes the first three and the kernel scales, the
/// other quantization parameters being scalar constants: `f` gets them.
pub(crate) fn with_qconv_facts<R>(
    x: &TypedFact,
    kernel: &TypedFact,
    bias: &TypedFact,
    kernel_scale: &TypedFact,
    f: impl FnOnce(&[&TypedFact]) -> R,
) -> R {
    let (i32f, f32f) = (i32::scalar_fact(), f32::scalar_fact());
    f(&[x, kernel, bias, &i32f, &f32f, &i32f, kernel_scale, &i32f, &f32f])
}

/// The geometry of a 2D convolution (or pooling) of `spec` on images of `hw`, paddings resolved.
pub(crate) fn conv_geometry(spec: &tract_core::ops::cnn::PoolSpec, hw: [usize; 2]) -> crate::kernels::Geometry {
    let padding = spec.computed_padding(&hw);
    let pair = |v: &[usize]| [v[0], v[1]];
    crate::kernels::Geometry {
        input: hw,
        kernel: pair(&spec.kernel_shape),
        stride: pair(&spec.strides()),
        dilation: pair(&spec.dilations()),
        pad_before: [padding[0].pad_before, padding[1].pad_before],
        pad_after: [padding[0].pad_after, padding[1].pad_after],
        output: [padding[0].convoluted, padding[1].convoluted],
    }
}

/// NNEF parameters of a convolution's geometry, as tract's own `conv` writes and reads them.
pub(crate) fn conv_geometry_params() -> [Parameter; 5] {
    [
        TypeName::Integer.spec().named("groups"),
        TypeName::Integer.array().named("dilation"),
        TypeName::Integer.array().named("stride"),
        TypeName::Integer.array().array().named("padding"),
        TypeName::String.spec().named("border"),
    ]
}

/// Replaces the nodes from the readers of `inputs` up to `last` by `op` (named `name`) on those
/// inputs: `last`'s output becomes `op`'s, and what only fed `last` is left dead, for tract to drop.
pub(crate) fn replace_chain(model: &mut TypedModel, name: &str, op: impl Into<Box<dyn TypedOp>>, inputs: &[OutletId], last: usize) -> TractResult<()> {
    let mut patch = TypedModelPatch::default();
    let taps = inputs.iter().map(|&i| patch.tap_model(model, i)).collect::<TractResult<TVec<_>>>()?;
    let y = patch.wire_node(name, op, &taps)?[0];
    patch.shunt_outside(model, OutletId::new(last, 0), y)?;
    patch.apply(model)
}

/// The single reader of `outlet`, where it is not one of the model's outputs.
pub(crate) fn sole_reader(model: &TypedModel, outlet: OutletId) -> Option<&TypedNode> {
    match &model.outlet_successors(outlet)[..] {
        [next] if !model.output_outlets().ok()?.contains(&outlet) => Some(model.node(next.node)),
        _ => None,
    }
}

/// `model`'s outputs on `input`: each one's shape, and all their values one after the other.
#[cfg(test)]
pub(crate) fn test_run(model: TypedModel, input: &Tensor) -> (Vec<Vec<usize>>, Vec<f32>) {
    let outputs = model.into_runnable().unwrap().run(tvec!(input.clone().into_tvalue())).unwrap();
    let values = outputs.iter().flat_map(|y| y.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()).collect();
    (outputs.iter().map(|y| y.shape().to_vec()).collect(), values)
}

/// Test values in [-1, 1), spread by `seed`.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 + seed * 104729) % 1999) as f32 / 1000.0 - 1.0).collect()
}

/// A constant of [`test_values`], wired as `name`.
#[cfg(test)]
pub(crate) fn test_konst(model: &mut TypedModel, name: &str, shape: &[usize], seed: usize) -> OutletId {
    model.add_const(name, Tensor::from_shape(shape, &test_values(shape.iter().product(), seed)).unwrap()).unwrap()
}

/// The value of `outlet` where it is a constant of one f32.
pub(crate) fn scalar(model: &TypedModel, outlet: OutletId) -> Option<f32> {
    let konst = model.outlet_fact(outlet).ok()?.konst.clone()?;
    if konst.datum_type() != DatumType::F32 || konst.len() != 1 {
        return None;
    }
    konst.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.first().copied()
}

/// `node`'s input other than `outlet`, for a binary op of the mini-op `M` with `outlet` as one input.
pub(crate) fn other_input<M: tract_core::ops::binary::BinMiniOp>(node: &TypedNode, outlet: OutletId) -> Option<OutletId> {
    let op = node.op_as::<tract_core::ops::binary::TypedBinOp>()?;
    if !op.0.is::<M>() || node.inputs.len() != 2 {
        return None;
    }
    match node.inputs[..] {
        [a, b] if a == outlet => Some(b),
        [a, b] if b == outlet => Some(a),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::dynamic::DynamicConv;
    use super::qconv::QConv;
    use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
    use tract_core::ops::nn::DataFormat;
    use tract_nnef::internal::*;

    fn values<T: Datum + Copy>(n: usize, f: impl Fn(usize) -> T) -> Vec<T> {
        (0..n).map(f).collect()
    }

    fn spec() -> PoolSpec {
        PoolSpec::new(DataFormat::NCHW, tvec!(3, 3), PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1)), None, Some(tvec!(2, 1)), 2, 3)
    }

    /// Runs `model` unoptimized (each Perch op's own eval) and optimized (decluttered into tract's
    /// ops): the same outputs.
    fn same_both_ways(model: TypedModel, input: Tensor) {
        let plain = model.clone().into_runnable().unwrap().run(tvec!(input.clone().into_tvalue())).unwrap();
        let optimized = model.into_optimized().unwrap().into_runnable().unwrap().run(tvec!(input.into_tvalue())).unwrap();
        assert_eq!(plain[0].close_enough(&optimized[0], false).ok(), Some(()), "{:?} vs {:?}", plain[0], optimized[0]);
    }

    #[test]
    fn qconv_eval_matches_the_optimized_plan() {
        let x_dt = DatumType::QI8(QParams::ZpScale { zero_point: -7, scale: 0.02 });
        let y_dt = DatumType::QI8(QParams::ZpScale { zero_point: 3, scale: 0.05 });
        let mut model = TypedModel::default();
        let x = model.add_source("x", x_dt.fact([1, 2, 6, 5])).unwrap();
        let k = model.add_const("k", Tensor::from_shape(&[3, 2, 3, 3], &values(54, |i| ((i * 37) % 255) as i8)).unwrap()).unwrap();
        let b = model.add_const("b", Tensor::from_shape(&[3], &[120i32, -40, 7]).unwrap()).unwrap();
        let s = model.add_const("s", Tensor::from_shape(&[3], &[0.004f32, 0.002, 0.007]).unwrap()).unwrap();
        let op = QConv { conv: Conv::new(spec(), KernelFormat::OIHW, 1, Some(y_dt)), x_zero_point: -7, x_scale: 0.02, engine: super::qconv::Engine::Tract };
        let y = model.wire_node("qconv", op, &[x, k, b, s]).unwrap();
        model.select_output_outlets(&y).unwrap();
        let mut input = Tensor::from_shape(&[1, 2, 6, 5], &values(60, |i| ((i * 53) % 256) as u8 as i8)).unwrap();
        unsafe { input.set_datum_type(x_dt) };
        same_both_ways(model, input);
    }

    #[test]
    fn dynamic_conv_eval_matches_the_optimized_plan() {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 2, 6, 5])).unwrap();
        let k = model.add_const("k", Tensor::from_shape(&[3, 2, 3, 3], &values(54, |i| ((i * 37) % 255) as i8)).unwrap()).unwrap();
        let s = model.add_const("s", Tensor::from_shape(&[3], &[0.004f32, 0.002, 0.007]).unwrap()).unwrap();
        let b = model.add_const("b", Tensor::from_shape(&[3], &[0.5f32, -0.25, 0.0]).unwrap()).unwrap();
        let y = model.wire_node("dyn", DynamicConv { pool_spec: spec(), group: 1 }, &[x, k, s, b]).unwrap();
        model.select_output_outlets(&y).unwrap();
        same_both_ways(model, Tensor::from_shape(&[1, 2, 6, 5], &values(60, |i| (i as f32 * 0.37).sin() * 3.0)).unwrap());
    }

    /// Perch's framework writes and reads image classifiers' ops, and nothing else: a sequence or
    /// signal op (here tract_core's FFT) can neither be written into a plan nor read from one that
    /// tract's full framework wrote. That keeps those ops out of device binaries.
    #[test]
    fn plans_hold_the_ops_of_image_classifiers_only() {
        let model = |op: Box<dyn TypedOp>| {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([3, 8, 2])).unwrap();
            let y = model.wire_node("op", op, &[x]).unwrap();
            model.select_output_outlets(&y).unwrap();
            model
        };
        let fft = model(Box::new(tract_core::ops::fft::Fft { axis: 1, inverse: false }));
        let err = super::nnef().write_to_tar(&fft, std::io::sink()).unwrap_err();
        assert!(format!("{err:#}").contains("No serializer found"), "{err:#}");
        let mut tar = Vec::new();
        tract_nnef::nnef().write_to_tar(&fft, &mut tar).unwrap();
        let err = super::nnef().model_for_read(&mut &*tar).unwrap_err();
        assert!(format!("{err:#}").contains("tract_core_fft"), "{err:#}");

        // A tract_core op of the image set (a strided downsample) goes both ways.
        let down = model(Box::new(tract_core::ops::Downsample { axis: 1, stride: 2, modulo: 0 }));
        let mut tar = Vec::new();
        super::nnef().write_to_tar(&down, &mut tar).unwrap();
        let read = super::nnef().model_for_read(&mut &*tar).unwrap();
        assert!(read.nodes.iter().any(|n| n.op_is::<tract_core::ops::Downsample>()), "{read}");
    }

    /// The patched NNEF parser (vendor/tract-nnef/PERCH.md) reads nested invocations, arrays and
    /// subscripts, and a damaged graph text is refused with the line, the column and the text where
    /// parsing stopped.
    #[test]
    fn graph_text_is_parsed_and_its_errors_located() {
        let good = "version 1.0;\n\ngraph g( input ) -> ( output )\n{\n  input = external<scalar>(shape = [1, 4]);\n  \
                    output = add(mul(input, 2.0), [mul(input, 3.0), neg(input)][1]);\n}\n";
        let model = super::nnef().model_for_read(&mut &*tar_of(good)).unwrap();
        let out = model.into_runnable().unwrap().run(tvec![tensor2(&[[1f32, 2., 3., 4.]]).into()]).unwrap();
        assert_eq!(out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect::<Vec<_>>(), [1., 2., 3., 4.]);

        let bad = good.replace("add(mul(input, 2.0)", "add(mul(input 2.0)");
        let err = super::nnef().model_for_read(&mut &*tar_of(&bad)).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("NNEF parse error at line 6, column 3") && err.contains("output = add(mul(input 2.0)"), "{err}");
    }

    fn tar_of(graph: &str) -> Vec<u8> {
        crate::plan::archive::tests::tar(&[("graph.nnef", graph.as_bytes().to_vec())])
    }
}

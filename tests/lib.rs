//! Shared pieces of Perch's host-side end-to-end tests: where the example models are, how they were
//! trained, and tract-onnx as the reference that plans are compared against.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use perch_host::compile::{self, PreprocessChoice};
use perch_host::import;
use perch_runtime::Plan;
use tract_onnx::prelude::*;

pub fn root() -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_path_buf()
}

/// The two ONNX files each example model ships: legacy exporter (opset 13) and dynamo exporter.
pub const VARIANTS: [&str; 2] = ["onnx", "dynamo.onnx"];
pub const MODELS: [&str; 2] = ["fashion-cnn-s", "fashion-resnet"];

pub fn model_path(model: &str, variant: &str) -> PathBuf {
    root().join("models").join(model).join(format!("{model}.{variant}"))
}

/// `models/<model>/training.json`, the record the training script wrote.
pub fn training_record(model: &str) -> serde_json::Value {
    let path = root().join("models").join(model).join("training.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// How the example models were trained (training/train.py: Fashion-MNIST mean and std).
pub fn fashion_preprocess() -> PreprocessChoice {
    PreprocessChoice { mean: Some(vec![0.2860]), std: Some(vec![0.3530]), ..Default::default() }
}

/// Compiles an example model to a float32 plan, serialized and reloaded as a device would load it.
pub fn compile_plan(path: &Path) -> anyhow::Result<(Vec<u8>, Plan)> {
    let imported = import::import(path, None)?;
    let labels = compile::read_labels(&path.with_file_name("labels.txt"))?;
    let mut manifest = compile::manifest_for(&imported, Some(labels), &fashion_preprocess())?;
    Ok(compile::round_trip(&mut manifest, &imported.model)?)
}

/// The ONNX model run by tract-onnx directly, optimized for `batch` images: the reference.
pub fn onnx_reference(path: &Path, batch: usize) -> anyhow::Result<Arc<TypedRunnableModel>> {
    let model = tract_onnx::onnx().model_for_path(path)?.into_typed()?.into_decluttered()?;
    let mut subs = HashMap::new();
    for dim in model.input_fact(0)?.shape.iter() {
        for sym in dim.symbols() {
            subs.insert(sym, TDim::Val(batch as i64));
        }
    }
    model.set_symbols(&subs)?.into_optimized()?.into_runnable()
}

/// Runs the reference on `batch` preprocessed images (NCHW, concatenated); rows of logits.
pub fn run_reference(model: &Arc<TypedRunnableModel>, values: &[f32], shape: &[usize]) -> anyhow::Result<Vec<Vec<f32>>> {
    let input = Tensor::from_shape(shape, values)?;
    let out = model.run(tvec!(input.into_tvalue()))?;
    let flat = out[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    let per = flat.len() / shape[0];
    Ok(flat.chunks_exact(per).map(<[f32]>::to_vec).collect())
}

/// Compiles an example model to a static int8 plan calibrated on the first `samples` Fashion-MNIST
/// training images with `scheme`, serialized and reloaded. Also returns the rewrite's report and the
/// int8 graph as it was before serialization.
pub fn compile_int8_plan(
    path: &Path,
    scheme: perch_host::quantize::Scheme,
    samples: usize,
) -> anyhow::Result<(Vec<u8>, Plan, perch_host::quantize::Rewritten, TypedModel)> {
    let imported = import::import(path, None)?;
    let labels = compile::read_labels(&path.with_file_name("labels.txt"))?;
    let mut manifest = compile::manifest_for(&imported, Some(labels), &fashion_preprocess())?;
    let data = "fashion-mnist:train";
    let dataset = perch_datasets::Dataset::open(data)?;
    let keep = Default::default();
    let (model, report) =
        perch_host::quantize::int8(&imported.model, &mut manifest, &dataset, data, scheme, samples, &keep, |_| {})?;
    let (bytes, plan) = compile::round_trip(&mut manifest, &model)?;
    Ok((bytes, plan, report, model))
}

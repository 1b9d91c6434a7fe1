//! Post-training int8 quantization of a decluttered float graph: calibration, then the static int8
//! rewrite. See [`rewrite`] for the scheme.

pub mod calibrate;
pub mod debug;
pub mod rewrite;

use std::collections::HashSet;

use tract_onnx::prelude::*;

pub use calibrate::{Method, Observer, Probe, Statistics};
pub use rewrite::Rewritten;

/// Rewrites `model` (decluttered float) to int8 using calibration `stats` gathered on it. Linear ops
/// named in `keep_float` stay float (mixed precision).
pub fn quantize_static(
    model: &TypedModel,
    stats: &Statistics,
    method: Method,
    keep_float: &HashSet<String>,
) -> TractResult<(TypedModel, Rewritten)> {
    rewrite::Rewriter::new(model, stats, method, keep_float).run()
}

/// Why calibration could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalibrationError {
    #[error("the calibration data {0} holds no samples")]
    Empty(String),
    #[error("calibration sample {index}: {why}")]
    Sample { index: usize, why: String },
    #[error("calibration failed: {0}")]
    Model(String),
}

/// Preprocesses the first `n` items of `dataset` as `manifest` says and hands them to `f` in batches
/// of `batch` (values concatenated, number of images). Memory holds one batch.
pub fn for_each_batch(
    manifest: &perch_runtime::Manifest,
    dataset: &perch_datasets::Dataset,
    n: usize,
    batch: usize,
    mut f: impl FnMut(&[f32], usize) -> Result<(), CalibrationError>,
) -> Result<(), CalibrationError> {
    use perch_datasets::Item;
    use perch_runtime::ChannelPolicy;
    let n = n.min(dataset.len());
    if n == 0 {
        return Err(CalibrationError::Empty(dataset.name.clone()));
    }
    let per_image: usize = manifest.input.shape[1..]
        .iter()
        .map(|d| match d {
            perch_runtime::plan::Dim::Fixed(n) => *n,
            perch_runtime::plan::Dim::Symbol(_) => 0,
        })
        .product();
    let mut values = Vec::with_capacity(per_image * batch);
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        values.clear();
        for index in start..end {
            let sample = match dataset.item(index) {
                Item::Image(img) => manifest.preprocess.apply(&img, &manifest.input, ChannelPolicy::Strict).map_err(|e| e.to_string()),
                Item::File(path) => perch_runtime::preprocess::open_image(&path)
                    .and_then(|img| manifest.preprocess.apply(&img, &manifest.input, ChannelPolicy::Strict))
                    .map_err(|e| format!("{}: {e}", path.display())),
                Item::Tensor(v) if v.len() == per_image => Ok(v),
                Item::Tensor(v) => Err(format!("{} values, the model takes {per_image}", v.len())),
            };
            values.extend(sample.map_err(|why| CalibrationError::Sample { index, why })?);
        }
        f(&values, end - start)?;
    }
    Ok(())
}

/// The batch calibration and debugging run with (the plan's own where it is fixed).
fn batch_for(manifest: &perch_runtime::Manifest) -> usize {
    manifest.input.fixed_batch().unwrap_or(32)
}

/// Runs the float `model` on the first `samples` items of `dataset`, preprocessed as `manifest`
/// says, and returns the statistics of every activation. `progress` gets the number of samples done.
pub fn calibrate(
    model: &TypedModel,
    manifest: &perch_runtime::Manifest,
    dataset: &perch_datasets::Dataset,
    samples: usize,
    mut progress: impl FnMut(usize),
) -> Result<Statistics, CalibrationError> {
    let batch = batch_for(manifest);
    let probe = Probe::new(model, batch).map_err(|e| CalibrationError::Model(format!("{e:#}")))?;
    let mut stats = Statistics::new();
    let mut done = 0;
    for_each_batch(manifest, dataset, samples, batch, |values, images| {
        probe.observe(values, images, &mut stats).map_err(|e| CalibrationError::Model(format!("{e:#}")))?;
        done += images;
        progress(done);
        Ok(())
    })?;
    Ok(stats)
}

/// Per-layer error of the int8 graph against the float one (see [`debug`]).
pub fn layer_errors(
    float: &TypedModel,
    int8: &TypedModel,
    taps: &[rewrite::Tap],
    manifest: &perch_runtime::Manifest,
    dataset: &perch_datasets::Dataset,
    samples: usize,
) -> Result<Vec<debug::LayerError>, CalibrationError> {
    let err = |e: TractError| CalibrationError::Model(format!("{e:#}"));
    let batch = batch_for(manifest);
    let pair = debug::Pair::new(float, int8, taps, batch).map_err(err)?;
    let mut acc = pair.accumulators();
    for_each_batch(manifest, dataset, samples, batch, |values, images| pair.observe(values, images, &mut acc).map_err(err))?;
    Ok(pair.finish(acc))
}

/// Calibrates `model` on `samples` items of `dataset` (named `data` in the manifest), rewrites it to
/// int8 and records the scheme in `manifest.quantization`. Linear ops named in `keep_float` stay
/// float (mixed precision).
pub fn int8(
    model: &TypedModel,
    manifest: &mut perch_runtime::Manifest,
    dataset: &perch_datasets::Dataset,
    data: &str,
    method: Method,
    samples: usize,
    keep_float: &HashSet<String>,
    progress: impl FnMut(usize),
) -> Result<(TypedModel, Rewritten), CalibrationError> {
    let samples = samples.min(dataset.len());
    let stats = calibrate(model, manifest, dataset, samples, progress)?;
    let (int8, report) =
        quantize_static(model, &stats, method, keep_float).map_err(|e| CalibrationError::Model(format!("{e:#}")))?;
    let q = &mut manifest.quantization;
    q.scheme = "int8".into();
    q.calibration = Some(format!("{method} on {samples} samples of {data}"));
    q.int8_layers = report.quantized.clone();
    q.float_layers = report.kept_float.clone();
    q.float_ops = report.float_ops.iter().map(|(n, op)| format!("{n} ({op})")).collect();
    Ok((int8, report))
}

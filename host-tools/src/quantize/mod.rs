//! Post-training int8 quantization of a decluttered float graph: calibration, then the static int8
//! rewrite. See [`rewrite`] for the scheme.

pub mod calibrate;
pub mod debug;
pub mod rewrite;

use std::collections::HashSet;

use tract_onnx::prelude::*;

pub use calibrate::{Engine, Method, Observer, Probe, Scheme, Statistics, WeightScales};
pub use rewrite::Rewritten;

/// Rewrites `model` (decluttered float) to int8 using calibration `stats` gathered on it. Linear ops
/// named in `keep_float` stay float (mixed precision).
pub fn quantize_static(
    model: &TypedModel,
    stats: &Statistics,
    scheme: Scheme,
    keep_float: &HashSet<String>,
) -> TractResult<(TypedModel, Rewritten)> {
    rewrite::Rewriter::new(model, stats, scheme, keep_float).run()
}

/// Dynamic int8 quantization (PyTorch's `quantize_dynamic`): the matrix products (Linear, Gemm,
/// MatMul) get int8 weights with per-output-channel scales and quantize their input at run time;
/// everything else stays float. Needs no calibration data.
pub fn quantize_dynamic(model: &TypedModel, manifest: &mut perch_runtime::Manifest) -> TractResult<(TypedModel, Rewritten)> {
    let (stats, keep) = (Statistics::new(), HashSet::new());
    let (int8, report) = rewrite::Rewriter::new(model, &stats, Scheme::default(), &keep).dynamic().run()?;
    let q = &mut manifest.quantization;
    q.scheme = "dynamic-int8".into();
    q.calibration = None;
    q.int8_layers = report.quantized.clone();
    Ok((int8, report))
}

/// Why quantization could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantizeError {
    #[error(
        "the accuracy budget cannot be met: float {float:.2}%, best reached {best:.2}% with {kept} of {layers} layers kept \
         in float (a drop of {:.2} pt, budget {budget} pt); allow a larger --max-accuracy-drop",
        float - best
    )]
    Budget { float: f64, best: f64, budget: f64, kept: usize, layers: usize },
    #[error("measuring accuracy: {0}")]
    Eval(#[from] crate::accuracy::EvalError),
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
    mut f: impl FnMut(&[f32], usize) -> Result<(), QuantizeError>,
) -> Result<(), QuantizeError> {
    use perch_datasets::Item;
    use perch_runtime::ChannelPolicy;
    let n = n.min(dataset.len());
    if n == 0 {
        return Err(QuantizeError::Empty(dataset.name.clone()));
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
            values.extend(sample.map_err(|why| QuantizeError::Sample { index, why })?);
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
) -> Result<Statistics, QuantizeError> {
    let batch = batch_for(manifest);
    let probe = Probe::new(model, batch).map_err(|e| QuantizeError::Model(format!("{e:#}")))?;
    let mut stats = Statistics::new();
    let mut done = 0;
    for_each_batch(manifest, dataset, samples, batch, |values, images| {
        probe.observe(values, images, &mut stats).map_err(|e| QuantizeError::Model(format!("{e:#}")))?;
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
) -> Result<Vec<debug::LayerError>, QuantizeError> {
    let err = |e: TractError| QuantizeError::Model(format!("{e:#}"));
    let batch = batch_for(manifest);
    let pair = debug::Pair::new(float, int8, taps, batch).map_err(err)?;
    let mut acc = pair.accumulators();
    for_each_batch(manifest, dataset, samples, batch, |values, images| pair.observe(values, images, &mut acc).map_err(err))?;
    Ok(pair.finish(acc))
}

/// Records a static int8 rewrite in the manifest.
fn record(manifest: &mut perch_runtime::Manifest, scheme: Scheme, samples: usize, data: &str, report: &Rewritten) {
    let q = &mut manifest.quantization;
    q.scheme = "int8".into();
    q.calibration = Some(format!("{scheme}, {samples} samples of {data}"));
    q.int8_layers = report.quantized.clone();
    q.float_layers = report.kept_float.clone();
    q.float_ops = report.float_ops.iter().map(|(n, op)| format!("{n} ({op})")).collect();
}

/// Calibrates `model` on `samples` items of `dataset` (named `data` in the manifest), rewrites it to
/// int8 and records the scheme in `manifest.quantization`. Linear ops named in `keep_float` stay
/// float (mixed precision).
#[allow(clippy::too_many_arguments)]
pub fn int8(
    model: &TypedModel,
    manifest: &mut perch_runtime::Manifest,
    dataset: &perch_datasets::Dataset,
    data: &str,
    scheme: Scheme,
    samples: usize,
    keep_float: &HashSet<String>,
    progress: impl FnMut(usize),
) -> Result<(TypedModel, Rewritten), QuantizeError> {
    let samples = samples.min(dataset.len());
    let stats = calibrate(model, manifest, dataset, samples, progress)?;
    let (int8, report) =
        quantize_static(model, &stats, scheme, keep_float).map_err(|e| QuantizeError::Model(format!("{e:#}")))?;
    record(manifest, scheme, samples, data, &report);
    Ok((int8, report))
}

/// How much each int8 layer costs in accuracy, and what mixed precision kept in float.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BudgetReport {
    pub float_top1: f64,
    pub all_int8_top1: f64,
    /// Top-1 with only that layer kept in float, for every int8 layer: (layer, top-1), most
    /// sensitive first. Empty when the all-int8 graph met the budget.
    pub sensitivity: Vec<(String, f64)>,
    /// Layers kept in float, in the order they were added.
    pub kept_float: Vec<String>,
    pub final_top1: f64,
}

fn top1_of(model: &TypedModel, manifest: &perch_runtime::Manifest, eval: &perch_datasets::Dataset) -> Result<f64, QuantizeError> {
    let plan = perch_runtime::Plan { manifest: manifest.clone(), graph: model.clone(), checksum: String::new() };
    let batch = manifest.input.fixed_batch().unwrap_or(64);
    let classifier = perch_runtime::Classifier::new(plan, batch).map_err(|e| QuantizeError::Model(e.to_string()))?;
    Ok(crate::accuracy::evaluate(&classifier, eval, perch_runtime::ChannelPolicy::Strict, |_| {})?.top1())
}

/// Static int8 within an accuracy budget: calibrates once, and if the all-int8 graph loses more than
/// `max_drop` top-1 points against the float graph on `eval`, measures each layer's sensitivity
/// (top-1 with that layer alone kept in float) and keeps the most sensitive layers in float, one at
/// a time, until the budget holds. `progress` gets a short description of each step.
#[allow(clippy::too_many_arguments)]
pub fn int8_within_budget(
    model: &TypedModel,
    manifest: &mut perch_runtime::Manifest,
    dataset: &perch_datasets::Dataset,
    data: &str,
    scheme: Scheme,
    samples: usize,
    eval: &perch_datasets::Dataset,
    max_drop: f64,
    mut progress: impl FnMut(&str),
) -> Result<(TypedModel, Rewritten, BudgetReport), QuantizeError> {
    let samples = samples.min(dataset.len());
    progress("calibrating");
    let stats = calibrate(model, manifest, dataset, samples, |_| {})?;
    let rewrite = |keep: &HashSet<String>| quantize_static(model, &stats, scheme, keep).map_err(|e| QuantizeError::Model(format!("{e:#}")));
    let mut report = BudgetReport::default();
    progress("measuring float accuracy");
    report.float_top1 = top1_of(model, manifest, eval)?;
    let mut keep = HashSet::new();
    let (mut best, mut best_report) = rewrite(&keep)?;
    report.all_int8_top1 = top1_of(&best, manifest, eval)?;
    report.final_top1 = report.all_int8_top1;
    if report.float_top1 - report.all_int8_top1 > max_drop {
        let layers = best_report.quantized.clone();
        for (ix, layer) in layers.iter().enumerate() {
            progress(&format!("sensitivity {}/{}: {layer}", ix + 1, layers.len()));
            let (m, _) = rewrite(&HashSet::from([layer.clone()]))?;
            report.sensitivity.push((layer.clone(), top1_of(&m, manifest, eval)?));
        }
        report.sensitivity.sort_by(|a, b| b.1.total_cmp(&a.1));
        // Keeping every layer in float would be a float plan, not an int8 one: at least one stays int8.
        let mut reached = report.sensitivity.iter().map(|s| s.1).fold(report.all_int8_top1, f64::max);
        for (layer, _) in report.sensitivity.clone().into_iter().take(layers.len().saturating_sub(1)) {
            keep.insert(layer.clone());
            report.kept_float.push(layer.clone());
            progress(&format!("keeping {} layer(s) in float", keep.len()));
            let (m, r) = rewrite(&keep)?;
            let top1 = top1_of(&m, manifest, eval)?;
            (best, best_report, report.final_top1) = (m, r, top1);
            reached = reached.max(top1);
            if report.float_top1 - top1 <= max_drop {
                break;
            }
        }
        if report.float_top1 - report.final_top1 > max_drop {
            return Err(QuantizeError::Budget {
                float: report.float_top1,
                best: reached,
                budget: max_drop,
                kept: keep.len(),
                layers: layers.len(),
            });
        }
    }
    record(manifest, scheme, samples, data, &best_report);
    Ok((best, best_report, report))
}

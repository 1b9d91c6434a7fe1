//! Evaluation of a model on every target against a labelled dataset: the raw outputs of each target
//! (the ONNX graph in tract-onnx, `.perch` plans in the runtime, the MCU plan in perch-micro on the
//! host), then top-1 / top-5, per-class accuracy, the confusion matrix, agreement with the float
//! reference and the error of each target's logits against it.

use perch_datasets::{Dataset, Item};
use perch_runtime::{ChannelPolicy, Classifier};
use serde::Serialize;

use crate::accuracy::{EvalError, label_map};
use crate::mcu;

/// Raw outputs (logits or probabilities, as the model ends) of one target, one row per sample.
#[derive(Clone, Debug)]
pub struct Outputs {
    pub target: String,
    pub rows: Vec<Vec<f32>>,
    /// What was adapted to make the data fit the plan's preprocessing (e.g. colour converted).
    pub warnings: Vec<String>,
}

/// Preprocesses `img` as the plan says; images whose channel count the plan does not take are
/// converted (RGB to grey or back), and `adapted` says so once.
pub fn preprocess_adapting(
    preprocess: &perch_runtime::Preprocess,
    input: &perch_runtime::plan::InputSpec,
    img: &image::DynamicImage,
    adapted: &mut Option<String>,
) -> Result<Vec<f32>, perch_runtime::ImageError> {
    match preprocess.apply(img, input, ChannelPolicy::Strict) {
        Err(perch_runtime::ImageError::Channels { found, expected, expected_name }) => {
            adapted.get_or_insert_with(|| {
                format!("images have {found}, the plan takes {expected} channel(s) ({expected_name}): they were converted")
            });
            preprocess.apply(img, input, ChannelPolicy::Convert)
        }
        other => other,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LogitError {
    pub max_abs: f32,
    pub rmse: f64,
    /// Mean cosine similarity of output rows (1 = same direction).
    pub cosine: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClassAccuracy {
    pub class: String,
    pub images: usize,
    pub top1: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Metrics {
    pub target: String,
    pub images: usize,
    pub top1: f64,
    /// Only with more than 5 classes.
    pub top5: Option<f64>,
    pub per_class: Vec<ClassAccuracy>,
    /// `confusion[truth][predicted]`.
    pub confusion: Vec<Vec<u32>>,
    /// Share of samples whose top-1 equals the reference's (the first target), in percent.
    pub agreement: Option<f64>,
    pub logit_error: Option<LogitError>,
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
}

/// The true class of each of the first `n` samples, in the labels' order.
pub fn truth(dataset: &Dataset, labels: &[String], n: usize) -> Result<Vec<u32>, EvalError> {
    let map = label_map(dataset, labels)?;
    if map.is_none()
        && let Some(&max_label) = dataset.labels().iter().take(n).max().filter(|&&m| m as usize >= labels.len())
    {
        return Err(EvalError::Classes { max_label, classes: labels.len() });
    }
    Ok(dataset.labels()[..n].iter().map(|&l| map.as_ref().map_or(l, |m| m[l as usize])).collect())
}

pub fn metrics(outputs: &Outputs, truth: &[u32], labels: &[String], reference: Option<&Outputs>) -> Metrics {
    let classes = labels.len();
    let n = outputs.rows.len().min(truth.len());
    let mut confusion = vec![vec![0u32; classes]; classes];
    let (mut top1, mut top5) = (0usize, 0usize);
    for (row, &t) in outputs.rows.iter().zip(truth) {
        let p = argmax(row);
        let t = t as usize;
        if t < classes && p < classes {
            confusion[t][p] += 1;
        }
        top1 += (p == t) as usize;
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        top5 += order.iter().take(5).any(|&c| c == t) as usize;
    }
    let per_class = (0..classes)
        .map(|c| {
            let images: u32 = confusion[c].iter().sum();
            ClassAccuracy {
                class: labels[c].clone(),
                images: images as usize,
                top1: if images == 0 { 0.0 } else { 100.0 * confusion[c][c] as f64 / images as f64 },
            }
        })
        .collect();
    let pct = |k: usize| if n == 0 { 0.0 } else { 100.0 * k as f64 / n as f64 };
    let (agreement, logit_error) = match reference {
        Some(r) if r.target != outputs.target => {
            let same = r.rows.iter().zip(&outputs.rows).filter(|(a, b)| argmax(a) == argmax(b)).count();
            let (mut max_abs, mut sq, mut count, mut cos) = (0f32, 0f64, 0usize, 0f64);
            for (a, b) in r.rows.iter().zip(&outputs.rows) {
                let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
                for (x, y) in a.iter().zip(b) {
                    max_abs = max_abs.max((x - y).abs());
                    sq += ((x - y) as f64).powi(2);
                    count += 1;
                    dot += (*x as f64) * (*y as f64);
                    na += (*x as f64).powi(2);
                    nb += (*y as f64).powi(2);
                }
                cos += if na > 0.0 && nb > 0.0 { dot / (na.sqrt() * nb.sqrt()) } else { 1.0 };
            }
            let rows = r.rows.len().min(outputs.rows.len()).max(1);
            (Some(pct(same)), Some(LogitError { max_abs, rmse: (sq / count.max(1) as f64).sqrt(), cosine: cos / rows as f64 }))
        }
        _ => (None, None),
    };
    Metrics {
        target: outputs.target.clone(),
        images: n,
        top1: pct(top1),
        top5: (classes > 5).then(|| pct(top5)),
        per_class,
        confusion,
        agreement,
        logit_error,
    }
}

/// Outputs of a classifier (a `.perch` plan, or the ONNX graph wrapped as one) on the first `n` samples.
pub fn run_classifier(
    target: &str,
    classifier: &Classifier,
    dataset: &Dataset,
    n: usize,
    mut progress: impl FnMut(usize),
) -> Result<Outputs, EvalError> {
    let per = classifier.values_per_image();
    let batch = classifier.batch_size();
    let mut rows = Vec::with_capacity(n);
    let mut values = Vec::with_capacity(per * batch);
    let mut adapted = None;
    let (pre, input) = (&classifier.manifest().preprocess, &classifier.manifest().input);
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        values.clear();
        for index in start..end {
            let sample = match dataset.item(index) {
                Item::Image(img) => preprocess_adapting(pre, input, &img, &mut adapted).map_err(perch_runtime::RunError::from),
                Item::File(path) => perch_runtime::preprocess::open_image(&path)
                    .and_then(|img| preprocess_adapting(pre, input, &img, &mut adapted))
                    .map_err(perch_runtime::RunError::from),
                Item::Tensor(v) if v.len() == per => Ok(v),
                Item::Tensor(v) => return Err(EvalError::TensorSize { index, got: v.len(), want: per }),
            };
            values.extend(sample.map_err(|error| EvalError::Sample { index, error })?);
        }
        rows.extend(classifier.run(&values)?);
        progress(end);
    }
    Ok(Outputs { target: target.to_string(), rows, warnings: adapted.into_iter().collect() })
}

/// Outputs of the simulated MCU, dequantized to real values with the plan's output scale.
pub fn run_mcu(
    target: &str,
    sim: &mut mcu::Simulator,
    dataset: &Dataset,
    n: usize,
    mut progress: impl FnMut(usize),
) -> Result<Outputs, mcu::McuError> {
    let (scale, zero_point) = sim.output_quantization();
    let mut rows = Vec::with_capacity(n);
    for index in 0..n {
        let (_, out) = sim.run_item(dataset, index)?;
        rows.push(out.iter().map(|&q| (q as i32 - zero_point) as f32 * scale).collect());
        if index % 64 == 63 || index + 1 == n {
            progress(index + 1);
        }
    }
    Ok(Outputs { target: target.to_string(), rows, warnings: sim.adapted.clone().into_iter().collect() })
}

/// What `perch eval` can evaluate from an ONNX model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The ONNX graph as tract-onnx runs it (the float reference).
    Onnx,
    /// The float `.perch` plan, serialized and reloaded as the runtime loads it.
    SbcF32,
    /// The static int8 `.perch` plan.
    SbcInt8,
    /// The int8 micro plan, simulated on the host.
    Mcu,
}

impl Target {
    pub const ALL: [Target; 4] = [Target::Onnx, Target::SbcF32, Target::SbcInt8, Target::Mcu];

    pub fn name(self) -> &'static str {
        match self {
            Target::Onnx => "onnx",
            Target::SbcF32 => "sbc-f32",
            Target::SbcInt8 => "sbc-int8",
            Target::Mcu => "mcu",
        }
    }

    pub fn needs_calibration(self) -> bool {
        matches!(self, Target::SbcInt8 | Target::Mcu)
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        Target::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| format!("`{s}` is not a target: onnx, sbc-f32, sbc-int8 or mcu"))
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Quantize(#[from] crate::quantize::QuantizeError),
    #[error(transparent)]
    Mcu(#[from] crate::mcu::McuError),
    #[error(transparent)]
    Compile(#[from] crate::compile::CompileError),
    #[error(transparent)]
    Run(#[from] perch_runtime::RunError),
    #[error("target {0} needs --calibration DATA (training images) to quantize")]
    NeedsCalibration(&'static str),
}

/// Everything evaluating an ONNX model produced: each target's outputs, the plans built on the way
/// (so `perch build` can write them) and the int8 debugger's per-tensor errors.
#[derive(Default)]
pub struct Evaluated {
    pub outputs: Vec<Outputs>,
    pub float_plan: Option<Vec<u8>>,
    pub int8_plan: Option<Vec<u8>>,
    pub mcu: Option<crate::mcu::Lowered>,
    pub layer_errors: Option<Vec<crate::quantize::debug::LayerError>>,
}

/// Compiles what `targets` need from `imported` (with `manifest`'s preprocessing and labels) and
/// runs each target on the first `n` samples of `data`. `progress(target, done, total)`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_model(
    imported: &crate::import::Imported,
    manifest: &perch_runtime::Manifest,
    targets: &[Target],
    calibration: Option<(&Dataset, &str)>,
    scheme: crate::quantize::Scheme,
    samples: usize,
    data: &Dataset,
    n: usize,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Evaluated, TargetError> {
    use perch_runtime::Plan;
    let mut done = Evaluated::default();
    let batch = manifest.input.fixed_batch().unwrap_or(64);
    let mut int8: Option<(tract_onnx::prelude::TypedModel, perch_runtime::Manifest)> = None;
    for &target in targets {
        let name = target.name();
        let mut step = |k: usize| progress(name, k, n);
        match target {
            Target::Onnx => {
                let plan = Plan { manifest: manifest.clone(), graph: imported.model.clone(), checksum: String::new() };
                done.outputs.push(run_classifier(name, &Classifier::new(plan, batch)?, data, n, &mut step)?);
            }
            Target::SbcF32 => {
                let mut m = manifest.clone();
                let (bytes, plan) = crate::compile::round_trip(&mut m, &imported.model)?;
                done.outputs.push(run_classifier(name, &Classifier::new(plan, batch)?, data, n, &mut step)?);
                done.float_plan = Some(bytes);
            }
            Target::SbcInt8 | Target::Mcu => {
                let (calib, calib_name) = calibration.ok_or(TargetError::NeedsCalibration(name))?;
                if int8.is_none() {
                    let mut m = manifest.clone();
                    let keep = Default::default();
                    let (graph, report) = crate::quantize::int8(&imported.model, &mut m, calib, calib_name, scheme, samples, &keep, |_| {})?;
                    let debug_samples = samples.min(calib.len()).min(500);
                    done.layer_errors =
                        Some(crate::quantize::layer_errors(&imported.model, &graph, &report.taps, &m, calib, debug_samples)?);
                    int8 = Some((graph, m));
                }
                let (graph, m) = int8.as_ref().expect("quantized above");
                if target == Target::SbcInt8 {
                    let mut m = m.clone();
                    let (bytes, plan) = crate::compile::round_trip(&mut m, graph)?;
                    done.outputs.push(run_classifier(name, &Classifier::new(plan, batch)?, data, n, &mut step)?);
                    done.int8_plan = Some(bytes);
                } else {
                    let lowered = crate::mcu::compile(graph, m)?;
                    let mut sim = crate::mcu::Simulator::new(&lowered, m)?;
                    done.outputs.push(run_mcu(name, &mut sim, data, n, &mut step)?);
                    done.mcu = Some(lowered);
                }
            }
        }
    }
    Ok(done)
}

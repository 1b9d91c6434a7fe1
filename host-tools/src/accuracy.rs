//! Top-1 accuracy of a plan on a labelled dataset, preprocessing each sample as the plan says.

use perch_datasets::{Dataset, Item};
use perch_runtime::classify::argmax;
use perch_runtime::preprocess::open_image;
use perch_runtime::{ChannelPolicy, Classifier, RunError};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("sample {index}: {error}")]
    Sample { index: usize, error: RunError },
    #[error("sample {index} has {got} values, the plan takes {want} per image")]
    TensorSize { index: usize, got: usize, want: usize },
    #[error("the dataset has labels up to {max_label} but the model has {classes} classes")]
    Classes { max_label: u32, classes: usize },
    #[error("the dataset's classes {missing:?} are not among the plan's labels {labels:?}")]
    ClassNames { missing: Vec<String>, labels: Vec<String> },
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Predicted class of a sample whose output is all NaN: never equal to a label.
pub const NO_PREDICTION: u32 = u32::MAX;

/// Maps the dataset's label indices to the plan's class indices. Datasets that name their classes
/// (ImageFolder sorts them alphabetically, which is rarely the model's order) are matched by name;
/// `/` in a label matches `-` in a directory name. Datasets without names, and plans whose labels are
/// only indices, are taken index for index (`None`).
pub fn label_map(dataset: &Dataset, labels: &[String]) -> Result<Option<Vec<u32>>, EvalError> {
    let unnamed_plan = labels.iter().enumerate().all(|(i, l)| *l == format!("class {i}"));
    if dataset.classes.is_empty() || unnamed_plan {
        return Ok(None);
    }
    let norm = |s: &str| s.trim().replace(['/', '\\'], "-").to_lowercase();
    let mut map = Vec::with_capacity(dataset.classes.len());
    let mut missing = Vec::new();
    for class in &dataset.classes {
        match labels.iter().position(|l| norm(l) == norm(class)) {
            Some(i) => map.push(i as u32),
            None => missing.push(class.clone()),
        }
    }
    if missing.is_empty() { Ok(Some(map)) } else { Err(EvalError::ClassNames { missing, labels: labels.to_vec() }) }
}

#[derive(Debug, Clone)]
pub struct Evaluation {
    pub images: usize,
    pub correct: usize,
    /// Predicted class per sample (in the plan's class order).
    pub predicted: Vec<u32>,
    /// True class per sample, in the plan's class order.
    pub truth: Vec<u32>,
}

impl Evaluation {
    /// Top-1 accuracy in percent.
    pub fn top1(&self) -> f64 {
        if self.images == 0 { 0.0 } else { 100.0 * self.correct as f64 / self.images as f64 }
    }
}

/// Runs every sample through `classifier` in batches of its batch size. `progress` is called with the
/// number of samples done after each batch.
pub fn evaluate(
    classifier: &Classifier,
    dataset: &Dataset,
    policy: ChannelPolicy,
    mut progress: impl FnMut(usize),
) -> Result<Evaluation, EvalError> {
    let map = label_map(dataset, &classifier.manifest().labels)?;
    if map.is_none() {
        let classes = classifier.manifest().labels.len();
        if let Some(&max_label) = dataset.labels().iter().max().filter(|&&m| m as usize >= classes) {
            return Err(EvalError::Classes { max_label, classes });
        }
    }
    let truth: Vec<u32> = match &map {
        Some(map) => dataset.labels().iter().map(|&l| map.get(l as usize).copied().unwrap_or(NO_PREDICTION)).collect(),
        None => dataset.labels().to_vec(),
    };
    let per = classifier.values_per_image();
    let batch = classifier.batch_size();
    let mut predicted = Vec::with_capacity(dataset.len());
    let mut values = Vec::with_capacity(per * batch);
    for start in (0..dataset.len()).step_by(batch) {
        let end = (start + batch).min(dataset.len());
        values.clear();
        for index in start..end {
            let sample = match dataset.item(index) {
                Item::Image(img) => classifier.preprocess(&img, policy),
                Item::File(path) => open_image(&path).map_err(RunError::from).and_then(|img| classifier.preprocess(&img, policy)),
                Item::Tensor(v) if v.len() == per => Ok(v),
                Item::Tensor(v) => return Err(EvalError::TensorSize { index, got: v.len(), want: per }),
            };
            values.extend(sample.map_err(|source| EvalError::Sample { index, error: source })?);
        }
        for row in classifier.run(&values)? {
            predicted.push(argmax(&row).map_or(NO_PREDICTION, |c| c as u32));
        }
        progress(end);
    }
    let correct = predicted.iter().zip(&truth).filter(|(p, l)| p == l).count();
    Ok(Evaluation { images: dataset.len(), correct, predicted, truth })
}

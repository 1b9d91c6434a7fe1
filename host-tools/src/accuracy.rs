//! Top-1 accuracy of a plan on a labelled dataset, preprocessing each sample as the plan says.

use perch_datasets::{Dataset, Item};
use perch_runtime::classify::argmax;
use perch_runtime::preprocess::open_image;
use perch_runtime::{ChannelPolicy, Classifier, RunError};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("sample {index}: {source}")]
    Sample { index: usize, source: RunError },
    #[error("sample {index} has {got} values, the plan takes {want} per image")]
    TensorSize { index: usize, got: usize, want: usize },
    #[error("the dataset has labels up to {max_label} but the model has {classes} classes")]
    Classes { max_label: u32, classes: usize },
    #[error(transparent)]
    Run(#[from] RunError),
}

#[derive(Debug, Clone)]
pub struct Evaluation {
    pub images: usize,
    pub correct: usize,
    /// Predicted class per sample.
    pub predicted: Vec<u32>,
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
    let classes = classifier.manifest().output.shape.last().and_then(|d| match d {
        perch_runtime::plan::Dim::Fixed(n) => Some(*n),
        _ => None,
    });
    if let (Some(classes), Some(&max_label)) = (classes, dataset.labels().iter().max()) {
        if max_label as usize >= classes {
            return Err(EvalError::Classes { max_label, classes });
        }
    }
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
            values.extend(sample.map_err(|source| EvalError::Sample { index, source })?);
        }
        for row in classifier.run(&values)? {
            predicted.push(argmax(&row).unwrap_or(0) as u32);
        }
        progress(end);
    }
    let correct = predicted.iter().zip(dataset.labels()).filter(|(p, l)| p == l).count();
    Ok(Evaluation { images: dataset.len(), correct, predicted })
}

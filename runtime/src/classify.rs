//! Running a plan: one optimized tract model per classifier, images in, class probabilities out.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use image::DynamicImage;
use tract_nnef::prelude::*;

use crate::kernels::fconv::FConvKernel;
use crate::kernels::Isa;
use crate::plan::{Dim, Manifest, OutputKind, Plan, PlanError};
use crate::preprocess::{ChannelPolicy, ImageError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("batch size {asked} does not fit this plan: {why}")]
    Batch { asked: usize, why: String },
    #[error("input has {got} values: expected 1 to {batch} image(s) of {per_image} values each")]
    InputLength { got: usize, per_image: usize, batch: usize },
    #[error("plan cannot be prepared for this machine: {0}")]
    Optimize(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("model output has {got} values for {images} image(s): not a multiple of the image count")]
    Output { got: usize, images: usize },
    #[error("{asked} threads: {why}")]
    Threads { asked: usize, why: &'static str },
}

/// One class and its probability.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub class: usize,
    pub label: String,
    pub probability: f32,
}

/// A plan made ready to run: optimized for this CPU at a fixed batch size.
pub struct Classifier {
    manifest: Manifest,
    checksum: String,
    runnable: Arc<TypedRunnableModel>,
    batch: usize,
    per_image: usize,
    /// The input tensor's shape: `batch` then one image's dimensions.
    input_shape: Vec<usize>,
    threads: usize,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier").field("batch", &self.batch).field("checksum", &self.checksum).finish()
    }
}

impl Classifier {
    /// Loads, verifies and optimizes a plan for batches of `batch` images.
    pub fn load(path: impl AsRef<Path>, batch: usize) -> Result<Classifier, RunError> {
        Classifier::new(Plan::load(path)?, batch)
    }

    /// Prepares a plan for batches of `batch` images; inference runs on the calling thread.
    pub fn new(plan: Plan, batch: usize) -> Result<Classifier, RunError> {
        Classifier::with_threads(plan, batch, 1)
    }

    /// Like [`Classifier::new`], with tract's matrix products spread over `threads` threads (a pool
    /// owned by this classifier). With more than one, float convolutions run on tract's kernels
    /// instead of Perch's one-thread ones: it pays off for large layers only, measure with `perch-run
    /// bench --threads N`. More than one thread needs the crate's `multithread` feature (not a default).
    pub fn with_threads(plan: Plan, batch: usize, threads: usize) -> Result<Classifier, RunError> {
        let options = run_options(threads)?;
        let Plan { manifest, mut graph, checksum } = plan;
        if batch == 0 {
            return Err(RunError::Batch { asked: 0, why: "it must be at least 1".into() });
        }
        match manifest.input.shape.first() {
            Some(Dim::Symbol(name)) => {
                let sym = graph.symbols.sym(name);
                graph = graph
                    .set_symbols(&HashMap::from([(sym, TDim::Val(batch as i64))]))
                    .map_err(|e| RunError::Optimize(format!("{e:#}")))?;
            }
            Some(Dim::Fixed(n)) if *n != batch => {
                return Err(RunError::Batch { asked: batch, why: format!("the plan's batch axis is fixed at {n}") });
            }
            _ => {}
        }
        let image_shape = manifest.input.shape[1..]
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Ok(*n),
                Dim::Symbol(s) => Err(RunError::Optimize(format!("input dimension `{s}` is not fixed in the plan"))),
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let per_image = image_shape.iter().product::<usize>();
        if per_image.checked_mul(batch).is_none_or(|n| n as u64 > crate::plan::MAX_TENSOR_ELEMENTS) {
            return Err(RunError::Batch { asked: batch, why: format!("{batch} images of {per_image} values is too large") });
        }
        // tract's `into_optimized`, with Perch's float convolutions, the activations and residual
        // connections after them, the shortcuts beside them and the convolutions that feed a
        // pair (where they beat tract's: not on 32-bit ARM, see `FConvKernel::pays_on`; on one
        // thread: with more, tract's
        // matrix products use them all),
        // classifier heads, max pooling and input quantization taking tract's place between its
        // declutter and its codegen; after the codegen (where Perch's int8 pointwise convolutions
        // take in the `Downsample`s in front of them), Perch's downsampling and, on one thread,
        // channels-last tensors between Perch's int8 convolutions.
        let runnable = graph
            .into_decluttered()
            .and_then(|mut m| if threads == 1 && FConvKernel::pays_on(Isa::best()) { crate::ops::fconv::substitute(&mut m).and_then(|_| crate::ops::fconv::fuse_activations(&mut m)).and_then(|_| crate::ops::fconv::fuse_residuals(&mut m)).and_then(|_| crate::ops::fconv::pair_shortcuts(&mut m)).and_then(|_| crate::ops::fconv::feed_pairs(&mut m)).map(|_| m) } else { Ok(m) })
            .and_then(|mut m| crate::ops::dense::substitute(&mut m).map(|_| m))
            .and_then(|mut m| crate::ops::maxpool::substitute(&mut m).map(|_| m))
            .and_then(|mut m| crate::ops::quantize::substitute(&mut m).map(|_| m))
            .and_then(|mut m| m.optimize().map(|_| m))
            .and_then(|mut m| crate::ops::downsample::substitute(&mut m).map(|_| m))
            .and_then(|mut m| if threads == 1 { crate::ops::layout::channels_last(&mut m).map(|_| m) } else { Ok(m) })
            .and_then(|m| m.into_runnable_with_options(&options))
            .map_err(|e| RunError::Optimize(format!("{e:#}")))?;
        let input_shape = std::iter::once(batch).chain(image_shape).collect();
        Ok(Classifier { manifest, checksum, runnable, batch, per_image, input_shape, threads })
    }

    /// Threads tract's matrix products use (1: the calling thread only).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// A session: the per-run state tract keeps between runs (op states, scratch buffers), reused by
    /// every [`Session::run`]. A server worker or a loop over many images holds one; sessions of one
    /// classifier run independently, one per thread.
    pub fn session(&self) -> Result<Session<'_>, RunError> {
        let state = self.runnable.spawn().map_err(|e| RunError::Optimize(format!("{e:#}")))?;
        Ok(Session { classifier: self, state })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Hex SHA-256 of the plan file's contents, as its header stores it.
    pub fn checksum(&self) -> &str {
        &self.checksum
    }

    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Number of input values for one image (channels x height x width).
    pub fn values_per_image(&self) -> usize {
        self.per_image
    }

    /// The optimized tract model, for listing what runs.
    pub fn optimized_model(&self) -> &TypedModel {
        self.runnable.model()
    }

    /// Preprocesses one image as the manifest says.
    pub fn preprocess(&self, image: &DynamicImage, policy: ChannelPolicy) -> Result<Vec<f32>, RunError> {
        Ok(self.manifest.preprocess.apply(image, &self.manifest.input, policy)?)
    }

    /// Runs up to `batch_size()` preprocessed images (concatenated) and returns each image's raw outputs
    /// (logits, or probabilities when the graph ends in softmax).
    ///
    /// Each call prepares a fresh tract state; a [`Session`] keeps one across runs.
    pub fn run(&self, values: &[f32]) -> Result<Vec<Vec<f32>>, RunError> {
        self.session()?.run(values)
    }

    /// The input tensor for `values` (1 to `batch` images), and how many images it holds.
    fn input(&self, values: &[f32]) -> Result<(TValue, usize), RunError> {
        let images = values.len() / self.per_image.max(1);
        if values.is_empty() || !values.len().is_multiple_of(self.per_image) || images > self.batch {
            return Err(RunError::InputLength { got: values.len(), per_image: self.per_image, batch: self.batch });
        }
        let input = if images == self.batch {
            Tensor::from_shape(&self.input_shape, values)
        } else {
            // A short last batch is padded with zeros: the plan is optimized for one batch size.
            let mut padded = values.to_vec();
            padded.resize(self.per_image * self.batch, 0.0);
            Tensor::from_shape(&self.input_shape, &padded)
        };
        Ok((input.map_err(|e| RunError::Inference(format!("{e:#}")))?.into_tvalue(), images))
    }

    /// Splits the output tensor into the first `images` rows.
    fn rows(&self, outputs: TVec<TValue>, images: usize) -> Result<Vec<Vec<f32>>, RunError> {
        let Some(first) = outputs.first() else {
            return Err(RunError::Output { got: 0, images: self.batch });
        };
        let out = first
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>().map(|s| s.to_vec()))
            .map_err(|e| RunError::Inference(format!("{e:#}")))?;
        if out.is_empty() || out.len() % self.batch != 0 {
            return Err(RunError::Output { got: out.len(), images: self.batch });
        }
        let per = out.len() / self.batch;
        Ok(out.chunks_exact(per).take(images).map(<[f32]>::to_vec).collect())
    }

    /// Class probabilities for one raw output row.
    pub fn probabilities(&self, raw: &[f32]) -> Vec<f32> {
        match self.manifest.output.kind {
            OutputKind::Probabilities => raw.to_vec(),
            OutputKind::Logits => softmax(raw),
        }
    }

    /// The `k` most probable classes of one raw output row, most probable first.
    pub fn top_k(&self, raw: &[f32], k: usize) -> Vec<Prediction> {
        top_k(&self.probabilities(raw), k, &self.manifest.labels)
    }

    /// Preprocesses, runs and ranks one image.
    pub fn classify(&self, image: &DynamicImage, policy: ChannelPolicy, k: usize) -> Result<Vec<Prediction>, RunError> {
        self.session()?.classify(image, policy, k)
    }
}

#[cfg(feature = "multithread")]
fn run_options(threads: usize) -> Result<RunOptions, RunError> {
    use tract_linalg::multithread::Executor;
    match threads {
        0 => Err(RunError::Threads { asked: 0, why: "at least one is needed" }),
        1 => Ok(RunOptions::default()),
        n if n > 256 => Err(RunError::Threads { asked: n, why: "more than 256 is surely a mistake" }),
        n => {
            // rayon panics only when the OS refuses to start threads: say so instead.
            let executor = std::panic::catch_unwind(|| Executor::multithread_with_name(n, "perch-mm"))
                .map_err(|_| RunError::Threads { asked: n, why: "the system refused to start them" })?;
            Ok(RunOptions { executor: Some(executor), ..RunOptions::default() })
        }
    }
}

#[cfg(not(feature = "multithread"))]
fn run_options(threads: usize) -> Result<RunOptions, RunError> {
    match threads {
        0 => Err(RunError::Threads { asked: 0, why: "at least one is needed" }),
        1 => Ok(RunOptions::default()),
        n => Err(RunError::Threads { asked: n, why: "this build has no `multithread` feature: inference runs on one thread" }),
    }
}

/// A classifier with tract's state for one thread of runs: see [`Classifier::session`].
///
/// ```no_run
/// use perch_runtime::{ChannelPolicy, Classifier};
///
/// let classifier = Classifier::load("fashion-cnn-s.perch", 1)?;
/// let mut session = classifier.session()?;
/// for path in ["boot.png", "bag.png"] {
///     let image = perch_runtime::preprocess::open_image(path)?;
///     let best = &session.classify(&image, ChannelPolicy::Strict, 1)?[0];
///     println!("{path}: {} {:.1}%", best.label, 100.0 * best.probability);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Session<'c> {
    classifier: &'c Classifier,
    state: TypedSimpleState,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("classifier", self.classifier).finish_non_exhaustive()
    }
}

impl Session<'_> {
    pub fn classifier(&self) -> &Classifier {
        self.classifier
    }

    /// As [`Classifier::run`], reusing this session's state.
    pub fn run(&mut self, values: &[f32]) -> Result<Vec<Vec<f32>>, RunError> {
        let (input, images) = self.classifier.input(values)?;
        let outputs = self.state.run(tvec!(input)).map_err(|e| RunError::Inference(format!("{e:#}")))?;
        self.classifier.rows(outputs, images)
    }

    /// As [`Session::run`], adding the time each node of the optimized model took to `profile`.
    pub fn run_profiled(&mut self, values: &[f32], profile: &mut crate::profile::Profile) -> Result<Vec<Vec<f32>>, RunError> {
        let (input, images) = self.classifier.input(values)?;
        let outputs = profile.run(&mut self.state, input).map_err(|e| RunError::Inference(format!("{e:#}")))?;
        self.classifier.rows(outputs, images)
    }

    /// Preprocesses, runs and ranks one image.
    pub fn classify(&mut self, image: &DynamicImage, policy: ChannelPolicy, k: usize) -> Result<Vec<Prediction>, RunError> {
        let values = self.classifier.preprocess(image, policy)?;
        let raw = self.run(&values)?;
        Ok(self.classifier.top_k(&raw[0], k))
    }
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// The index of the largest value (the first one on ties); `None` for an empty or all-NaN row.
pub fn argmax(values: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Ranks probabilities; classes without a label are named by their index.
pub fn top_k(probabilities: &[f32], k: usize, labels: &[String]) -> Vec<Prediction> {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|class| Prediction {
            class,
            label: labels.get(class).cloned().unwrap_or_else(|| format!("class {class}")),
            probability: probabilities[class],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_and_sums_to_one() {
        let p = softmax(&[1000.0, 1001.0, 999.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[1] > p[0] && p[0] > p[2]);
    }

    #[test]
    fn top_k_ranks_and_names() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let top = top_k(&[0.1, 0.6, 0.3], 2, &labels);
        assert_eq!(top.iter().map(|p| p.class).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(top[0].label, "b");
        assert_eq!(top[1].label, "class 2");
        assert_eq!(argmax(&[0.1, 0.6, 0.6]), Some(1));
        assert_eq!(argmax(&[]), None);
    }
}

//! `perch compile --target sbc`: an imported model plus labels and preprocessing becomes a `.perch` plan.

use std::path::{Path, PathBuf};

use perch_runtime::plan::{self, Dim, InputSpec, Layout, Manifest, OutputKind, OutputSpec, Plan, Quantization};
use perch_runtime::preprocess::{Color, Filter, Preprocess, Resize};
use tract_onnx::prelude::*;

use crate::import::Imported;

/// Preprocessing choices; `None` takes the default for the model's input.
#[derive(Debug, Clone, Default)]
pub struct PreprocessChoice {
    pub color: Option<Color>,
    pub resize: Option<Resize>,
    pub center_crop: Option<(u32, u32)>,
    pub filter: Option<Filter>,
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    #[error("{0}")]
    Model(String),
    #[error("labels: {0}")]
    Labels(String),
    #[error("preprocessing: {0}")]
    Preprocess(String),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
}

fn dims(shape: &ShapeFact) -> Vec<Dim> {
    shape.iter().map(|d| match d.to_i64() {
        Ok(n) => Dim::Fixed(n as usize),
        Err(_) => Dim::Symbol(d.to_string()),
    }).collect()
}

/// The channel axis: PyTorch models are NCHW; NHWC is recognized when only the last axis looks like
/// channels (1 or 3).
pub fn detect_layout(shape: &[Dim]) -> Result<Layout, CompileError> {
    let is_channels = |d: &Dim| matches!(d, Dim::Fixed(1 | 3 | 4));
    match (shape.get(1).is_some_and(is_channels), shape.get(3).is_some_and(is_channels)) {
        (true, _) => Ok(Layout::Nchw),
        (false, true) => Ok(Layout::Nhwc),
        _ => Err(CompileError::Model(format!(
            "cannot tell the channel axis of input shape [{}]: Perch takes 1 or 3 channel images, NCHW or NHWC",
            plan::manifest::shape_to_string(shape)
        ))),
    }
}

/// Reads a labels file: one label per line, blank lines at the end ignored.
pub fn read_labels(path: &Path) -> Result<Vec<String>, CompileError> {
    let text = std::fs::read_to_string(path).map_err(|e| CompileError::Labels(format!("cannot read {}: {e}", path.display())))?;
    let mut labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while labels.last().is_some_and(|l| l.is_empty()) {
        labels.pop();
    }
    if labels.is_empty() {
        return Err(CompileError::Labels(format!("{} holds no labels", path.display())));
    }
    Ok(labels)
}

/// `labels.txt` beside the model, the file PyTorch users ship with theirs.
pub fn labels_beside(model: &Path) -> Option<PathBuf> {
    let candidate = model.with_file_name("labels.txt");
    candidate.is_file().then_some(candidate)
}

/// Builds the manifest for a float32 SBC plan (hashes are filled in when the plan is written).
pub fn manifest_for(imported: &Imported, labels: Option<Vec<String>>, choice: &PreprocessChoice) -> Result<Manifest, CompileError> {
    let model = &imported.model;
    let in_fact = model.input_fact(0).map_err(|e| CompileError::Model(format!("{e:#}")))?;
    let out_fact = model.output_fact(0).map_err(|e| CompileError::Model(format!("{e:#}")))?;
    let in_shape = dims(&in_fact.shape);
    let out_shape = dims(&out_fact.shape);
    let layout = detect_layout(&in_shape)?;
    let input = InputSpec { name: imported.input_name.clone(), shape: in_shape, layout, dtype: "f32".into() };
    if input.channels() == 4 {
        return Err(CompileError::Model("4-channel (RGBA) model inputs are not supported".into()));
    }
    if out_shape.len() < 2 {
        return Err(CompileError::Model(format!(
            "the output has shape [{}]; a classifier's output is [batch, classes]",
            plan::manifest::shape_to_string(&out_shape)
        )));
    }
    let classes = out_shape[1..]
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => Ok(*n),
            Dim::Symbol(s) => Err(CompileError::Model(format!("the output has a symbolic dimension `{s}` besides the batch"))),
        })
        .product::<Result<usize, _>>()?;
    let labels = match labels {
        Some(l) if l.len() != classes => {
            return Err(CompileError::Labels(format!("{} labels given for a model with {classes} classes", l.len())));
        }
        Some(l) => l,
        None => (0..classes).map(|c| format!("class {c}")).collect(),
    };
    let last = model.node(model.outputs[0].node);
    let kind = if last.op.name() == "Softmax" { OutputKind::Probabilities } else { OutputKind::Logits };

    let defaults = Preprocess::default_for(&input);
    let color = choice.color.unwrap_or(defaults.color);
    let channels = color.channels();
    let spread = |v: &Option<Vec<f32>>, fill: f32, what: &str| -> Result<Vec<f32>, CompileError> {
        match v {
            None => Ok(vec![fill; channels]),
            Some(v) if v.len() == 1 => Ok(vec![v[0]; channels]),
            Some(v) if v.len() == channels => Ok(v.clone()),
            Some(v) => Err(CompileError::Preprocess(format!("{what} has {} values for {channels} channel(s)", v.len()))),
        }
    };
    let preprocess = Preprocess {
        color,
        // A crop without a resize crops the image as it comes (torchvision CenterCrop alone).
        resize: choice.resize.or(if choice.center_crop.is_some() { None } else { defaults.resize }),
        filter: choice.filter.unwrap_or(defaults.filter),
        center_crop: choice.center_crop,
        max_pixel_value: 255.0,
        mean: spread(&choice.mean, 0.0, "--mean")?,
        std: spread(&choice.std, 1.0, "--std")?,
    };
    preprocess.check_against(&input).map_err(CompileError::Preprocess)?;
    Ok(Manifest {
        format_version: plan::FORMAT_VERSION,
        perch_version: env!("CARGO_PKG_VERSION").to_string(),
        tract_version: plan::TRACT_VERSION.to_string(),
        source: imported.source.clone(),
        input,
        output: OutputSpec { name: imported.output_name.clone(), shape: out_shape, kind },
        preprocess,
        labels,
        quantization: Quantization { scheme: "float32".into(), ..Default::default() },
        accuracy: None,
        graph_sha256: String::new(),
    })
}

/// Serializes and reloads the plan, as a device would: what gets evaluated is what ships.
pub fn round_trip(manifest: &mut Manifest, model: &TypedModel) -> Result<(Vec<u8>, Plan), CompileError> {
    let bytes = Plan::to_bytes(manifest, model)?;
    let plan = Plan::from_bytes(&bytes)?;
    Ok((bytes, plan))
}

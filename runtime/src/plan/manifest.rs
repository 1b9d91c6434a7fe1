//! The manifest: everything a device needs to know about a plan besides the graph itself.

use serde::{Deserialize, Serialize};

use crate::preprocess::Preprocess;

/// One dimension of a tensor shape: a fixed size, or a symbol such as `batch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(usize),
    Symbol(String),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbol(s) => f.write_str(s),
        }
    }
}

/// Formats a shape as `batch,1,28,28`.
pub fn shape_to_string(shape: &[Dim]) -> String {
    shape.iter().map(Dim::to_string).collect::<Vec<_>>().join(",")
}

/// Where the image channels sit in the input tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// batch, channels, height, width (PyTorch).
    #[serde(rename = "NCHW")]
    Nchw,
    /// batch, height, width, channels (TensorFlow).
    #[serde(rename = "NHWC")]
    Nhwc,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    pub name: String,
    pub shape: Vec<Dim>,
    pub layout: Layout,
    /// Element type the graph takes; `f32` for every plan Perch writes today.
    pub dtype: String,
}

impl InputSpec {
    fn dims_at(&self) -> (usize, usize, usize) {
        match self.layout {
            Layout::Nchw => (1, 2, 3),
            Layout::Nhwc => (3, 1, 2),
        }
    }

    fn fixed(&self, axis: usize) -> usize {
        match self.shape.get(axis) {
            Some(Dim::Fixed(n)) => *n,
            _ => 0,
        }
    }

    /// Channels of one image (the layout's channel axis). 0 when the plan leaves it symbolic.
    pub fn channels(&self) -> usize {
        self.fixed(self.dims_at().0)
    }

    /// (height, width) of one image. 0 where the plan leaves a dimension symbolic.
    pub fn height_width(&self) -> (usize, usize) {
        let (_, h, w) = self.dims_at();
        (self.fixed(h), self.fixed(w))
    }

    /// The batch size a plan is fixed to, or `None` when its batch axis is symbolic.
    pub fn fixed_batch(&self) -> Option<usize> {
        match self.shape.first() {
            Some(Dim::Fixed(n)) => Some(*n),
            _ => None,
        }
    }
}

/// What the graph's output means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Unnormalized scores: the runtime applies softmax to report probabilities.
    Logits,
    /// The graph ends in a softmax already.
    Probabilities,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputSpec {
    pub name: String,
    pub shape: Vec<Dim>,
    pub kind: OutputKind,
}

/// The ONNX file a plan was compiled from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub file_name: String,
    pub sha256: String,
    /// `producer_name producer_version` from the ONNX file, e.g. `pytorch 2.15.0`.
    pub producer: Option<String>,
    pub opset: Option<i64>,
}

/// How the weights and activations are represented.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantization {
    /// `float32` for unquantized plans, `int8` for static int8 ones.
    pub scheme: String,
    /// Calibration method, sample count and data, for int8 plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<String>,
    /// Linear layers (convolutions, matrix products) that run int8, by source node name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub int8_layers: Vec<String>,
    /// Layers kept in float to hold the accuracy budget (mixed precision).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub float_layers: Vec<String>,
    /// Ops with no int8 form that run in float between int8 layers (`name (op)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub float_ops: Vec<String>,
}

/// Accuracy measured by `perch compile --eval-data` on a labelled dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub dataset: String,
    pub images: usize,
    pub top1: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format of the `.perch` container and manifest; see [`crate::plan::FORMAT_VERSION`].
    pub format_version: u32,
    pub perch_version: String,
    pub tract_version: String,
    pub source: Source,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub preprocess: Preprocess,
    pub labels: Vec<String>,
    pub quantization: Quantization,
    pub accuracy: Option<Accuracy>,
    /// SHA-256 of the NNEF graph archive, hex. The container's checksum also covers this manifest.
    pub graph_sha256: String,
}

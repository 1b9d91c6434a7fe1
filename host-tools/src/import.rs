//! The ONNX front door: read a model as either PyTorch exporter writes it and make it a decluttered
//! tract graph with one image input (batch axis kept symbolic) and one output.

use std::path::Path;

use perch_runtime::plan::{Dim, Source};
use sha2::{Digest, Sha256};
use tract_onnx::pb::ModelProto;
use tract_hir::infer::Factoid;
use tract_onnx::prelude::*;

/// Name given to the batch axis when the model leaves it unnamed or unknown.
pub const BATCH_SYMBOL: &str = "batch";

/// ONNX files above this size are refused before parsing (the protobuf limit is 2 GiB anyway).
pub const MAX_ONNX_BYTES: u64 = 2 << 30;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path} is not an ONNX model ({why})")]
    NotOnnx { path: String, why: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot load the model: {0}")]
    Tract(String),
}

/// Largest size accepted for one dimension of `--input-shape`.
pub const MAX_DIM: usize = 1 << 16;

/// `--input-shape`: each dimension a number or a symbol name (e.g. `batch,1,28,28`).
pub fn parse_shape(text: &str) -> Result<Vec<Dim>, String> {
    text.split(',')
        .map(|d| {
            let d = d.trim();
            if let Ok(n) = d.parse::<usize>() {
                if (1..=MAX_DIM).contains(&n) { Ok(Dim::Fixed(n)) } else { Err(format!("dimensions must be 1 to {MAX_DIM}")) }
            } else if !d.is_empty() && d.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !d.starts_with(|c: char| c.is_ascii_digit()) {
                Ok(Dim::Symbol(d.to_string()))
            } else {
                Err(format!("`{d}` is neither a size nor a symbol name (e.g. batch,3,224,224)"))
            }
        })
        .collect()
}

/// A model ready to compile.
#[derive(Debug, Clone)]
pub struct Imported {
    /// Decluttered, with the batch axis symbolic where the model allows it.
    pub model: TypedModel,
    pub source: Source,
    pub input_name: String,
    pub output_name: String,
}

fn tract_err(e: TractError) -> ImportError {
    ImportError::Tract(format!("{e:#}"))
}

pub fn import(path: &Path, input_shape: Option<&[Dim]>) -> Result<Imported, ImportError> {
    let display = path.display().to_string();
    let read_err = |source| ImportError::Read { path: display.clone(), error: source };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > MAX_ONNX_BYTES {
        return Err(ImportError::Unsupported(format!("{display} is {len} bytes, over the 2 GiB ONNX limit")));
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    import_bytes(&bytes, &display, input_shape)
}

/// [`import`] of a model already in memory; `name` (a path or file name) names it in errors and gives
/// the source file name recorded in the plan.
pub fn import_bytes(bytes: &[u8], name: &str, input_shape: Option<&[Dim]>) -> Result<Imported, ImportError> {
    // tract 0.23.9 indexes past attribute arrays on some malformed models (a Conv whose strides are
    // shorter than its spatial rank panics in tract-core's padding code; fuzz/RESULTS.md): a model that
    // makes it panic is refused like any other it cannot load.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| import_unguarded(bytes, name, input_shape))).unwrap_or_else(|panic| {
        let why = panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str));
        Err(ImportError::Tract(format!("tract-onnx cannot load {name}: {}", why.unwrap_or("it panicked"))))
    })
}

fn import_unguarded(bytes: &[u8], name: &str, input_shape: Option<&[Dim]>) -> Result<Imported, ImportError> {
    let onnx = tract_onnx::onnx().with_ignore_value_info(input_shape.is_some());
    let proto = onnx
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| ImportError::NotOnnx { path: name.to_string(), why: format!("protobuf does not decode: {e}") })?;
    check_looks_like_onnx(&proto).map_err(|why| ImportError::NotOnnx { path: name.to_string(), why })?;

    let mut model = onnx.model_for_proto_model(&proto).map_err(tract_err)?;
    if model.inputs.len() != 1 || model.outputs.len() != 1 {
        return Err(ImportError::Unsupported(format!(
            "Perch compiles image classifiers with one input and one output; this model has {} inputs and {} outputs",
            model.inputs.len(),
            model.outputs.len()
        )));
    }
    let fact = match input_shape {
        Some(shape) => {
            let dims: TVec<TDim> = shape
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => TDim::Val(*n as i64),
                    Dim::Symbol(s) => model.symbols.sym(s).into(),
                })
                .collect();
            InferenceFact::dt_shape(f32::datum_type(), dims)
        }
        None => infer_input_fact(&model)?,
    };
    model.set_input_fact(0, fact).map_err(tract_err)?;
    let input_name = model.node(model.inputs[0].node).name.clone();
    let output_name = model.node(model.outputs[0].node).name.clone();
    let typed = model.into_typed().map_err(|e| {
        let hint = if input_shape.is_some() {
            "does the given --input-shape fit the model?"
        } else {
            "if the input shape is the problem, pass --input-shape, e.g. --input-shape batch,3,224,224"
        };
        ImportError::Tract(format!("{e:#} ({hint})"))
    })?;
    let model = typed.into_decluttered().map_err(tract_err)?;
    let input = model.input_fact(0).map_err(tract_err)?;
    if input.datum_type != f32::datum_type() {
        return Err(ImportError::Unsupported(format!("the input is {:?}; Perch takes float32 image inputs", input.datum_type)));
    }
    if input.rank() != 4 {
        return Err(ImportError::Unsupported(format!(
            "the input has shape {:?}; Perch takes 4-D image batches (NCHW or NHWC)",
            input.shape
        )));
    }
    let opset = proto.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version);
    let producer = (!proto.producer_name.is_empty()).then(|| format!("{} {}", proto.producer_name, proto.producer_version));
    let source = Source {
        file_name: Path::new(name).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        sha256: Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect(),
        producer: producer.map(|p| p.trim().to_string()),
        opset,
    };
    Ok(Imported { model, source, input_name, output_name })
}

fn check_looks_like_onnx(proto: &ModelProto) -> Result<(), String> {
    let Some(graph) = &proto.graph else { return Err("no graph".into()) };
    if proto.ir_version <= 0 {
        return Err("no IR version".into());
    }
    if graph.node.is_empty() {
        return Err("the graph has no nodes".into());
    }
    if graph.input.is_empty() || graph.output.is_empty() {
        return Err("the graph declares no inputs or no outputs".into());
    }
    Ok(())
}

/// The input fact as declared, with an unknown or `-1` batch axis made symbolic. Any other unknown or
/// symbolic dimension is an error naming `--input-shape`: Perch plans take images of one size.
fn infer_input_fact(model: &InferenceModel) -> Result<InferenceFact, ImportError> {
    let fact = model.input_fact(0).map_err(tract_err)?.clone();
    let hint = "pass --input-shape, e.g. --input-shape batch,3,224,224";
    if fact.shape.is_open() {
        return Err(ImportError::Unsupported(format!("the model does not declare its input rank: {hint}")));
    }
    let mut shape: TVec<TDim> = TVec::new();
    for (axis, dim) in fact.shape.dims().enumerate() {
        let known = dim.concretize().filter(|d| d.to_i64().map_or(true, |v| v > 0));
        match known {
            Some(d) if axis == 0 || d.to_i64().is_ok() => shape.push(d),
            None if axis == 0 => shape.push(model.symbols.sym(BATCH_SYMBOL).into()),
            Some(d) => {
                return Err(ImportError::Unsupported(format!(
                    "input axis {axis} is `{d}`: Perch plans take images of one size; {hint}"
                )));
            }
            None => return Err(ImportError::Unsupported(format!("input axis {axis} has no fixed size; {hint}"))),
        }
    }
    let dt = fact.datum_type.concretize().unwrap_or(f32::datum_type());
    Ok(InferenceFact::dt_shape(dt, shape))
}

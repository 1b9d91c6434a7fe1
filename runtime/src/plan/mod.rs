//! `.perch` plans: reading, verifying and writing them. See [`container`] for the byte layout.

pub mod archive;
pub mod container;
pub mod manifest;

use std::io::Write;
use std::path::Path;

use tract_nnef::prelude::*;

pub use manifest::{Accuracy, Dim, InputSpec, Layout, Manifest, OutputKind, OutputSpec, Quantization, Source};

/// The container and manifest format this build reads and writes. Bump it on any change a reader
/// would misread; the runtime refuses every other version with a message saying which side to upgrade.
pub const FORMAT_VERSION: u32 = 1;

/// The tract release this build links (pinned exactly in the workspace Cargo.toml).
pub const TRACT_VERSION: &str = "0.23.9";

/// Plans larger than this are refused before reading: the largest model Perch targets is a few
/// hundred MB, and the whole plan is held in memory while it is verified.
pub const MAX_PLAN_BYTES: u64 = 1 << 30;

/// Bound on the elements of the input and output tensors a plan declares (together): 2^28 f32
/// values is 1 GiB, far above any image classifier's batch.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 28;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("cannot write {path}: {error}")]
    Write { path: String, error: std::io::Error },
    #[error("not a .perch plan (no Perch header): compile one with `perch compile MODEL.onnx -o MODEL.perch`")]
    NotAPlan,
    #[error(
        "plan format version {found} is not the one this build reads ({supported}): recompile the plan with a \
         perch of the same release as this runtime"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("plan is truncated: {found} bytes, the header promises {expected}")]
    Truncated { expected: u64, found: u64 },
    #[error("plan has {found} bytes, the header promises {expected}: trailing data after the graph")]
    TrailingBytes { expected: u64, found: u64 },
    #[error("plan is corrupt: checksum {actual} does not match the stored {stored}")]
    ChecksumMismatch { stored: String, actual: String },
    #[error("plan is {bytes} bytes, over the {max}-byte limit")]
    PlanTooLarge { bytes: u64, max: u64 },
    #[error("{what} is {bytes} bytes, too large for the plan format")]
    TooLarge { what: &'static str, bytes: u64 },
    #[error("plan manifest is invalid: {0}")]
    Manifest(String),
    #[error(
        "plan was written with tract {written}, this runtime has tract {TRACT_VERSION}: a plan loads only in the same \
         0.x release with an equal or newer patch; recompile it"
    )]
    TractVersion { written: String },
    #[error("plan graph cannot be loaded: {0}")]
    Graph(String),
    #[error("plan graph archive is damaged: {0}")]
    GraphArchive(String),
    #[error("plan graph decompresses to more than {max} bytes, the limit")]
    GraphTooLarge { max: u64 },
    #[error("plan graph archive has more than {max} entries, the limit")]
    TooManyEntries { max: u64 },
    #[error("plan graph archive entry {path} is {bytes} bytes, over the {max}-byte limit")]
    EntryTooLarge { path: String, bytes: u64, max: u64 },
    #[error("plan graph archive entry `{0}` points outside the archive (absolute or `..` path): refused")]
    UnsafePath(String),
    #[error("plan tensor {path}: {why}")]
    Tensor { path: String, why: String },
    #[error("plan tensor {path} has {elements} elements, over the limit of {max}")]
    TensorTooLarge { path: String, elements: u64, max: u64 },
    #[error(
        "plan graph cannot be serialized: {0} (a plan holds NNEF's operators, tract_core's operators of image \
         classifiers and Perch's own)"
    )]
    Serialize(String),
}

/// A verified plan: its manifest and its (decluttered, not yet optimized) tract graph.
#[derive(Debug, Clone)]
pub struct Plan {
    pub manifest: Manifest,
    pub graph: TypedModel,
    /// Hex SHA-256 over manifest and graph bytes, as stored in the container header.
    pub checksum: String,
}

impl Plan {
    pub fn load(path: impl AsRef<Path>) -> Result<Plan, PlanError> {
        let path = path.as_ref();
        let read_err = |source| PlanError::Read { path: path.display().to_string(), error: source };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > MAX_PLAN_BYTES {
            return Err(PlanError::PlanTooLarge { bytes: len, max: MAX_PLAN_BYTES });
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        Plan::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Plan, PlanError> {
        let parts = container::decode(bytes, FORMAT_VERSION)?;
        let manifest: Manifest =
            serde_json::from_slice(parts.manifest).map_err(|e| PlanError::Manifest(e.to_string()))?;
        if manifest.format_version != parts.format_version {
            return Err(PlanError::Manifest(format!(
                "manifest says format {} but the header says {}",
                manifest.format_version, parts.format_version
            )));
        }
        check_tract_version(&manifest.tract_version)?;
        let graph_sha = container::hex(&sha256(parts.graph));
        if graph_sha != manifest.graph_sha256 {
            return Err(PlanError::Manifest(format!(
                "graph hash {graph_sha} does not match the manifest's {}",
                manifest.graph_sha256
            )));
        }
        let tar = archive::check(parts.graph, &archive::ArchiveLimits::PLAN)?;
        // tract-nnef 0.23.9 asserts on some invocations instead of returning an error (a `conv` whose
        // `border` is not "constant" panics in read_conv_parameters; fuzz/RESULTS.md): a graph that makes
        // it panic is a damaged plan, refused like any other.
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::ops::nnef().model_for_read(&mut std::io::Cursor::new(&*tar))
        }));
        let graph = read
            .map_err(|panic| PlanError::Graph(format!("tract-nnef cannot read it: {}", one_line(panic_message(&*panic)))))?
            .map_err(|e| PlanError::Graph(one_line(&format!("{e:#}"))))?;
        check_types_built(&graph)?;
        check_graph_matches_manifest(&graph, &manifest)?;
        Ok(Plan { manifest, graph, checksum: container::hex(&parts.checksum) })
    }

    /// The manifest in a few aligned lines, as `perch inspect` and `perch-run info` show it.
    pub fn summary(&self) -> String {
        let m = &self.manifest;
        let shape = manifest::shape_to_string;
        let mut lines = vec![
            format!("format    v{} (perch {}, tract {})", m.format_version, m.perch_version, m.tract_version),
            format!("checksum  sha256:{}", self.checksum),
            format!("source    {} sha256:{} {}", m.source.file_name, m.source.sha256, m.source.producer.as_deref().unwrap_or("")),
            format!("input     {} [{}] {:?} {}", m.input.name, shape(&m.input.shape), m.input.layout, m.input.dtype),
            format!("output    {} [{}] {:?}", m.output.name, shape(&m.output.shape), m.output.kind),
            format!("preproc   {}", serde_json::to_string(&m.preprocess).unwrap_or_default()),
            format!("labels    {}", m.labels.join(", ")),
            format!("quant     {}", quantization_summary(&m.quantization)),
        ];
        if let Some(a) = &m.accuracy {
            lines.push(format!("accuracy  {:.2}% top-1 on {} ({} images)", a.top1, a.dataset, a.images));
        }
        lines.join("\n")
    }

    /// Serializes `graph` (which must be decluttered, not optimized) with `manifest`, filling in the
    /// manifest's format version and graph hash. The output is deterministic for the same inputs.
    pub fn to_bytes(manifest: &mut Manifest, graph: &TypedModel) -> Result<Vec<u8>, PlanError> {
        let tar = crate::ops::nnef()
            .write_to_tar_with_config(graph, Vec::new(), false, true)
            .map_err(|e| PlanError::Serialize(format!("{e:#}")))?;
        // An int8 plan's weights are a quarter of the float ones, so the tar framing (512-byte headers
        // and padding per tensor) and the graph text become a large share: those plans are gzipped
        // (tract's reader detects gzip). Float plans stay plain tar, which loads faster.
        let graph_bytes = if manifest.quantization.scheme == "float32" {
            tar
        } else {
            use flate2::{Compression, write::GzEncoder};
            let mut gz = GzEncoder::new(Vec::new(), Compression::best());
            gz.write_all(&tar).and_then(|_| gz.finish()).map_err(|e| PlanError::Serialize(e.to_string()))?
        };
        Plan::seal(manifest, &graph_bytes)
    }

    /// Puts `manifest` and an already serialized graph into a container, filling in the manifest's
    /// format version and graph hash (a changed manifest needs no new serialization of the graph).
    pub fn seal(manifest: &mut Manifest, graph_bytes: &[u8]) -> Result<Vec<u8>, PlanError> {
        manifest.format_version = FORMAT_VERSION;
        manifest.graph_sha256 = container::hex(&sha256(graph_bytes));
        let manifest_bytes = serde_json::to_vec_pretty(manifest).map_err(|e| PlanError::Manifest(e.to_string()))?;
        container::encode(FORMAT_VERSION, &manifest_bytes, graph_bytes)
    }

    /// Writes a plan so that `path` holds either the complete new plan or what it held before: the
    /// bytes go to a temporary file in the same directory, which is then renamed over `path`.
    pub fn save(path: impl AsRef<Path>, manifest: &mut Manifest, graph: &TypedModel) -> Result<(), PlanError> {
        let bytes = Plan::to_bytes(manifest, graph)?;
        write_atomically(path.as_ref(), &bytes)
    }
}

fn quantization_summary(q: &Quantization) -> String {
    let mut parts = vec![q.scheme.clone()];
    if let Some(c) = &q.calibration {
        parts.push(format!("calibrated with {c}"));
    }
    if !q.int8_layers.is_empty() {
        parts.push(format!("{} int8 layer(s)", q.int8_layers.len()));
    }
    if !q.float_layers.is_empty() {
        parts.push(format!("kept in float: {}", q.float_layers.join(", ")));
    }
    if !q.float_ops.is_empty() {
        parts.push(format!("{} float op(s) between int8 layers", q.float_ops.len()));
    }
    parts.join("; ")
}

pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PlanError> {
    let write_err = |source| PlanError::Write { path: path.display().to_string(), error: source };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".perch-").suffix(".tmp");
    // tempfile creates 0600 files; a plan is as readable as any file the user writes: the mode of the
    // file it replaces, else 0666 less the umask (applied by open(2)).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0o666);
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(write_err)?;
    tmp.write_all(bytes).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    // The rename is durable once the directory entry is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// tract's parse errors quote the source over several lines, and archive errors may quote raw bytes:
/// an error stays one printable line.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("it panicked")
}

fn one_line(message: &str) -> String {
    let printable: String = message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    printable.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

/// tract promises that a model written by 0.x.y loads in 0.x.z for z >= y, and nothing more.
fn check_tract_version(written: &str) -> Result<(), PlanError> {
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let mut it = v.split('.').map(|p| p.parse::<u64>().ok());
        Some((it.next()??, it.next()??, it.next()??))
    };
    let err = || PlanError::TractVersion { written: written.to_string() };
    let (wmaj, wmin, wpatch) = parse(written).ok_or_else(err)?;
    let (rmaj, rmin, rpatch) = parse(TRACT_VERSION).expect("TRACT_VERSION is x.y.z");
    if wmaj == rmaj && wmin == rmin && wpatch <= rpatch { Ok(()) } else { Err(err()) }
}

/// The first node of `graph` holding tensors of a type that builds with the `lean-types` feature have
/// no tract code for (f16, f64, 16-bit and unsigned wide integers: vendor/tract-data/PERCH.md), and
/// that type, whether or not this build has the feature. `perch compile` warns of such plans.
pub fn first_type_left_out_by_lean_types(graph: &TypedModel) -> Option<(&str, DatumType)> {
    graph.nodes().iter().find_map(|node| {
        let dt = node.outputs.iter().map(|o| o.fact.datum_type).find(|dt| !dt.kept_by_lean_types())?;
        Some((node.name.as_str(), dt))
    })
}

/// A device build with `lean-types` refuses a graph holding one of those types here, before it can
/// reach the missing code. Without the feature every type passes.
fn check_types_built(graph: &TypedModel) -> Result<(), PlanError> {
    match first_type_left_out_by_lean_types(graph) {
        Some((node, dt)) if !dt.is_built() => Err(PlanError::Graph(format!(
            "node {node:?} holds {dt:?} tensors, which this perch-run was built without (feature \
             lean-types); a build without that feature runs this plan"
        ))),
        _ => Ok(()),
    }
}

fn check_graph_matches_manifest(graph: &TypedModel, manifest: &Manifest) -> Result<(), PlanError> {
    let inconsistent = |what: String| Err(PlanError::Manifest(what));
    // Everything downstream indexes by these: a manifest that lies about them is refused here.
    if manifest.input.shape.len() != 4 {
        return inconsistent(format!("the input must be a 4-D image batch, not [{}]", manifest::shape_to_string(&manifest.input.shape)));
    }
    if manifest.output.shape.len() < 2 {
        return inconsistent("the output must be [batch, classes]".into());
    }
    let mut elements: u64 = 1;
    for dim in manifest.input.shape.iter().chain(&manifest.output.shape) {
        if let Dim::Fixed(n) = dim {
            elements = elements.saturating_mul(*n as u64);
            if *n == 0 || elements > MAX_TENSOR_ELEMENTS {
                return inconsistent(format!(
                    "shapes [{}] -> [{}] are empty or too large",
                    manifest::shape_to_string(&manifest.input.shape),
                    manifest::shape_to_string(&manifest.output.shape)
                ));
            }
        }
    }
    if graph.inputs.len() != 1 || graph.outputs.len() != 1 {
        return inconsistent(format!(
            "Perch plans have one input and one output; this graph has {} and {}",
            graph.inputs.len(),
            graph.outputs.len()
        ));
    }
    let fact = graph.input_fact(0).map_err(|e| PlanError::Graph(format!("{e:#}")))?;
    if fact.rank() != manifest.input.shape.len() {
        return inconsistent(format!(
            "the graph input has rank {}, the manifest says {}",
            fact.rank(),
            manifest::shape_to_string(&manifest.input.shape)
        ));
    }
    for (axis, (dim, want)) in fact.shape.iter().zip(&manifest.input.shape).enumerate() {
        if let (Some(have), Dim::Fixed(want)) = (dim.as_i64(), want)
            && have as usize != *want
        {
            return inconsistent(format!("the graph input axis {axis} is {have}, the manifest says {want}"));
        }
    }
    manifest.preprocess.check_against(&manifest.input).map_err(PlanError::Manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cross tests (`cargo xtask test`) run this with `lean-types`, as the device binary is built.
    #[test]
    fn lean_builds_refuse_graphs_holding_types_left_out_of_tract() {
        let graph = "version 1.0;\nextension tract_registry tract_core;\n\ngraph g( input ) -> ( output )\n{\n  input = external<scalar>(shape = [1, 4]);\n  \
                     half = tract_core_cast(input, to = \"f16\");\n  output = tract_core_cast(half, to = \"f32\");\n}\n";
        let tar = archive::tests::tar(&[("graph.nnef", graph.as_bytes().to_vec())]);
        let model = crate::ops::nnef().model_for_read(&mut &*tar).unwrap();
        assert_eq!(first_type_left_out_by_lean_types(&model), Some(("half", DatumType::F16)));
        let checked = check_types_built(&model);
        if cfg!(feature = "lean-types") {
            let err = checked.unwrap_err().to_string();
            assert!(err.contains("node \"half\" holds F16 tensors") && err.contains("lean-types"), "{err}");
        } else {
            checked.unwrap();
            let out = model.into_runnable().unwrap().run(tvec![tensor2(&[[1f32, 0.5, -2., 3.]]).into()]).unwrap();
            assert_eq!(out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect::<Vec<_>>(), [1., 0.5, -2., 3.]);
        }
        // The float and int8 plans Perch writes hold none of those types: the golden tests load them.
    }

    #[test]
    fn atomic_write_replaces_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.perch");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        // A target that cannot be replaced (a non-empty directory) fails, and leaves no temporary file.
        let blocker = dir.path().join("blocker");
        std::fs::create_dir(&blocker).unwrap();
        std::fs::write(blocker.join("keep"), b"x").unwrap();
        assert!(matches!(write_atomically(&blocker, b"new"), Err(PlanError::Write { .. })));
        let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, vec!["a.perch", "blocker"]);
    }

    #[test]
    fn tract_version_rule() {
        assert!(check_tract_version("0.23.9").is_ok());
        assert!(check_tract_version("0.23.0").is_ok());
        assert!(check_tract_version("0.23.10").is_err());
        assert!(check_tract_version("0.22.9").is_err());
        assert!(check_tract_version("1.23.9").is_err());
        assert!(check_tract_version("banana").is_err());
    }
}

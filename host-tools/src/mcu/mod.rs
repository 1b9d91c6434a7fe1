//! `--target mcu`: Perch's int8 graph lowered to a `.pmc` micro plan for perch-micro, its memory
//! planned, its budget checked against a chip, and its accuracy measured by running perch-micro on
//! the host (the same code the firmware runs, so the figures are the MCU's, bit for bit).

pub mod chips;
pub mod lower;
pub mod planner;

use perch_datasets::Dataset;
use perch_micro::plan::AlignedBytes;
use perch_runtime::Manifest;
use tract_onnx::prelude::*;

pub use chips::Chip;
pub use lower::{Layer, Lowered};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McuError {
    #[error("{node} ({op}) cannot run on the MCU: {why}")]
    Unsupported {
        node: String,
        op: String,
        why: String,
    },
    #[error("the model cannot be lowered for the MCU: {0}")]
    Model(String),
    #[error("the micro plan is invalid: {0}")]
    Plan(String),
    #[error(
        "the model does not fit {chip}: {what} needs {need} bytes, the chip has {have} (over by {over} bytes); \
         the largest activation is {largest} ({largest_bytes} bytes)"
    )]
    TooBig {
        chip: String,
        what: &'static str,
        need: u64,
        have: u64,
        over: u64,
        largest: String,
        largest_bytes: u64,
    },
    #[error("simulating the MCU on sample {index}: {why}")]
    Simulate { index: usize, why: String },
}

/// Flash the board app takes besides the plan: code for the interpreter, all kernels, startup, and
/// the app (measured: 44,868 bytes of code and tables in the thumbv7em release build of firmware/,
/// `app/sizes.sh`; rounded up).
pub const CODE_FLASH_ESTIMATE: u64 = 46 * 1024;
/// RAM the app takes besides the arena: stack (1,136 to 1,800 bytes measured by painting in qemu)
/// with the reserve the app's linker script keeps, and statics.
pub const STACK_RAM_ESTIMATE: u64 = 4 * 1024;

/// What a micro plan needs.
#[derive(Clone, Debug)]
pub struct Budget {
    pub plan_bytes: u64,
    pub flash: u64,
    pub arena: u64,
    pub ram: u64,
}

pub fn budget(lowered: &Lowered) -> Result<Budget, McuError> {
    let plan = perch_micro::Plan::parse(lowered.bytes.as_bytes())
        .map_err(|e| McuError::Plan(format!("{e:?}")))?;
    let plan_bytes = lowered.bytes.len() as u64;
    let arena = plan.arena_size() as u64;
    Ok(Budget {
        plan_bytes,
        flash: plan_bytes + CODE_FLASH_ESTIMATE,
        arena,
        ram: arena + STACK_RAM_ESTIMATE,
    })
}

/// Refuses a plan that does not fit `chip`, naming the largest activation.
pub fn check_fits(lowered: &Lowered, budget: &Budget, chip: &Chip) -> Result<(), McuError> {
    let largest = lowered
        .layers
        .iter()
        .max_by_key(|l| l.output.elements().unwrap_or(0));
    let (largest, largest_bytes) = largest.map_or((String::new(), 0), |l| {
        (
            format!("{} ({})", l.name, l.kind),
            l.output.elements().unwrap_or(0) as u64,
        )
    });
    let too_big = |what, need: u64, have: u64| McuError::TooBig {
        chip: chip.name.to_string(),
        what,
        need,
        have,
        over: need - have,
        largest: largest.clone(),
        largest_bytes,
    };
    if budget.flash > chip.flash {
        return Err(too_big("flash (plan + code)", budget.flash, chip.flash));
    }
    if budget.ram > chip.ram {
        return Err(too_big("RAM (arena + stack)", budget.ram, chip.ram));
    }
    Ok(())
}

/// The MCU on the host: perch-micro running a plan over its own arena.
pub struct Simulator {
    bytes: AlignedBytes,
    arena: Vec<u8>,
    manifest: Manifest,
    input_scale: f32,
    input_zero_point: i32,
    /// Set when images had to be converted to the plan's channel count (see [`crate::eval::preprocess_adapting`]).
    pub adapted: Option<String>,
}

impl Simulator {
    pub fn new(lowered: &Lowered, manifest: &Manifest) -> Result<Simulator, McuError> {
        let plan = perch_micro::Plan::parse(lowered.bytes.as_bytes())
            .map_err(|e| McuError::Plan(format!("{e:?}")))?;
        Ok(Simulator {
            arena: vec![0; plan.arena_size()],
            bytes: AlignedBytes::from(lowered.bytes.as_bytes()),
            manifest: manifest.clone(),
            input_scale: lowered.input_scale,
            input_zero_point: lowered.input_zero_point,
            adapted: None,
        })
    }

    /// Scale and zero point of the plan's int8 output.
    pub fn output_quantization(&self) -> (f32, i32) {
        match perch_micro::Plan::parse(self.bytes.as_bytes()) {
            Ok(plan) => (plan.output().scale, plan.output().zero_point),
            Err(_) => (1.0, 0),
        }
    }

    /// Quantizes preprocessed float values as the plan's input (what the firmware receives).
    pub fn quantize_input(&self, values: &[f32]) -> Vec<i8> {
        values
            .iter()
            .map(|v| {
                ((v / self.input_scale).round() + self.input_zero_point as f32).clamp(-128.0, 127.0)
                    as i8
            })
            .collect()
    }

    /// The plan's int8 output for one int8 input.
    pub fn run(&mut self, input: &[i8]) -> Result<Vec<i8>, String> {
        let plan = perch_micro::Plan::parse(self.bytes.as_bytes()).map_err(|e| format!("{e:?}"))?;
        perch_micro::run(&plan, &mut self.arena, input)
            .map(|o| o.to_vec())
            .map_err(|e| format!("{e:?}"))
    }

    /// Preprocesses (as the manifest says), quantizes and runs dataset item `index`.
    pub fn run_item(
        &mut self,
        dataset: &Dataset,
        index: usize,
    ) -> Result<(Vec<i8>, Vec<i8>), McuError> {
        let err = |why: String| McuError::Simulate { index, why };
        let (pre, spec) = (&self.manifest.preprocess, &self.manifest.input);
        let values = match dataset.item(index) {
            perch_datasets::Item::Image(img) => {
                crate::eval::preprocess_adapting(pre, spec, &img, &mut self.adapted).map_err(|e| err(e.to_string()))?
            }
            perch_datasets::Item::File(path) => perch_runtime::preprocess::open_image(&path)
                .and_then(|img| crate::eval::preprocess_adapting(pre, spec, &img, &mut self.adapted))
                .map_err(|e| err(format!("{}: {e}", path.display())))?,
            perch_datasets::Item::Tensor(v) => v,
        };
        let input = self.quantize_input(&values);
        let output = self.run(&input).map_err(err)?;
        Ok((input, output))
    }
}

/// Top-1 predictions of the simulated MCU on the first `n` items of `dataset` (class indices; ties go
/// to the lowest index, as `argmax` on the host).
pub fn predictions(
    sim: &mut Simulator,
    dataset: &Dataset,
    n: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<u32>, McuError> {
    let mut out = Vec::with_capacity(n);
    for index in 0..n.min(dataset.len()) {
        let (_, scores) = sim.run_item(dataset, index)?;
        let best =
            scores.iter().enumerate().fold(
                (0, i8::MIN),
                |best, (i, &s)| if s > best.1 { (i, s) } else { best },
            );
        out.push(best.0 as u32);
        if index % 100 == 99 {
            progress(index + 1);
        }
    }
    Ok(out)
}

/// The test-vector file the board app embeds (see firmware/README.md): `PMCV`, version 1, count,
/// input and output lengths, then inputs, expected outputs (from this simulation) and labels.
pub fn test_vectors(
    sim: &mut Simulator,
    dataset: &Dataset,
    count: usize,
) -> Result<Vec<u8>, McuError> {
    let count = count.min(dataset.len());
    let (mut inputs, mut outputs, mut labels) = (vec![], vec![], vec![]);
    let (mut in_len, mut out_len) = (0, 0);
    for index in 0..count {
        let (i, o) = sim.run_item(dataset, index)?;
        (in_len, out_len) = (i.len(), o.len());
        inputs.extend(i.iter().map(|&v| v as u8));
        outputs.extend(o.iter().map(|&v| v as u8));
        labels.push(dataset.label(index).min(255) as u8);
    }
    let mut bytes = b"PMCV".to_vec();
    for v in [1u32, count as u32, in_len as u32, out_len as u32] {
        bytes.extend(v.to_le_bytes());
    }
    bytes.extend(inputs);
    bytes.extend(outputs);
    bytes.extend(labels);
    Ok(bytes)
}

/// Lowers Perch's int8 graph (from [`crate::quantize::int8`]) to a micro plan.
pub fn compile(int8: &TypedModel, manifest: &Manifest) -> Result<Lowered, McuError> {
    lower::lower(int8, manifest.labels.len())
}

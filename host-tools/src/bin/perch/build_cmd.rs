//! `perch build`: from an ONNX model to every artifact in one directory: the float and int8 `.perch`
//! plans, the `.pmc` micro plan (checked against a chip) with its test vectors, the firmware ELF
//! built with that plan, and the evaluation report.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;
use perch_datasets::Dataset;
use perch_host::eval::{self, Metrics, Target};
use perch_host::quantize::Method;
use perch_host::{compile, import, mcu, report};
use perch_runtime::plan::{Accuracy, Plan, write_atomically};

use crate::eval_cmd::{print_table, scheme};
use crate::{Int8KernelsArg, PreprocessArgs, WeightScalesArg};

#[derive(Args)]
pub struct BuildArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Output directory (created): MODEL.perch, MODEL.int8.perch, MODEL.pmc, MODEL.vectors,
    /// MODEL.elf, report/.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Calibration data for int8 (training images).
    #[arg(long, value_name = "DATA")]
    pub calibration: String,
    /// Labelled data to evaluate every target on (the report's dataset).
    #[arg(long, value_name = "DATA")]
    pub eval_data: String,
    /// Evaluate only the first N samples of --eval-data.
    #[arg(long, value_name = "N")]
    pub eval_limit: Option<usize>,
    #[arg(long, value_name = "METHOD", default_value = "minmax")]
    pub calibration_method: Method,
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub calibration_samples: usize,
    #[arg(long, value_enum, default_value = "per-channel")]
    pub weight_scales: WeightScalesArg,
    /// Whose kernels run the int8 plan's convolutions (as for `perch compile`).
    #[arg(long, value_enum, default_value = "perch")]
    pub int8_kernels: Int8KernelsArg,
    /// The microcontroller the .pmc must fit (stm32f411, stm32f405, nrf52840, stm32h743, rp2040).
    #[arg(long, value_name = "CHIP", default_value = "stm32f411")]
    pub chip: String,
    /// The firmware workspace to build the ELF with (Perch's `firmware/`). Default: ./firmware when
    /// it is there; without one, no ELF is built.
    #[arg(long, value_name = "DIR")]
    pub firmware: Option<PathBuf>,
    /// Build the firmware for the chip's real memory layout (default: qemu's mps2-an386 Cortex-M4
    /// board, so the ELF runs under qemu-system-arm as is).
    #[arg(long)]
    pub firmware_for_chip: bool,
    /// Class labels. Default: labels.txt beside the model.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    #[command(flatten)]
    pub pre: PreprocessArgs,
}

fn seal_accuracy(bytes: &[u8], data: &str, m: &Metrics) -> Result<Vec<u8>> {
    let parts = perch_runtime::plan::container::decode(bytes, perch_runtime::plan::FORMAT_VERSION)?;
    let mut manifest: perch_runtime::Manifest = serde_json::from_slice(parts.manifest)?;
    manifest.accuracy = Some(Accuracy { dataset: data.to_string(), images: m.images, top1: m.top1 });
    Ok(Plan::seal(&mut manifest, parts.graph)?)
}

pub fn run(args: &BuildArgs) -> Result<()> {
    let chip = mcu::chips::find(&args.chip).with_context(|| format!("unknown chip `{}`: known are {}", args.chip, mcu::chips::names()))?;
    let stem = args.model.file_stem().and_then(|s| s.to_str()).context("the model needs a file name")?.to_string();
    std::fs::create_dir_all(&args.output).with_context(|| format!("cannot create {}", args.output.display()))?;
    let imported = import::import(&args.model, None)?;
    let labels_path = args.labels.clone().or_else(|| compile::labels_beside(&args.model));
    let labels = labels_path.as_deref().map(compile::read_labels).transpose()?;
    let manifest = compile::manifest_for(&imported, labels, &args.pre.choice())?;
    let calibration = Dataset::open(&args.calibration).with_context(|| format!("opening {}", args.calibration))?;
    let mut data = Dataset::open(&args.eval_data).with_context(|| format!("opening {}", args.eval_data))?;
    if let Some(n) = args.eval_limit {
        data.truncate(n);
    }
    let n = data.len();
    let mut progress = crate::eval_cmd::bar_for(n);
    let done = eval::evaluate_model(
        &imported,
        &manifest,
        &Target::ALL,
        Some((&calibration, &args.calibration)),
        scheme(args.calibration_method, args.weight_scales, args.int8_kernels),
        args.calibration_samples,
        &data,
        n,
        &mut progress,
    )?;
    let truth = eval::truth(&data, &manifest.labels, n)?;
    let metrics: Vec<Metrics> = done.outputs.iter().map(|o| eval::metrics(o, &truth, &manifest.labels, done.outputs.first())).collect();
    print_table(&metrics, &args.eval_data);
    let by_target = |t: Target| metrics.iter().find(|m| m.target == t.name()).expect("every target evaluated");

    let out = |name: String| args.output.join(name);
    let mut written = vec![];
    let float = seal_accuracy(done.float_plan.as_deref().expect("sbc-f32 built"), &args.eval_data, by_target(Target::SbcF32))?;
    write_atomically(&out(format!("{stem}.perch")), &float)?;
    written.push(format!("{stem}.perch (float32, {} bytes)", float.len()));
    let int8 = seal_accuracy(done.int8_plan.as_deref().expect("sbc-int8 built"), &args.eval_data, by_target(Target::SbcInt8))?;
    write_atomically(&out(format!("{stem}.int8.perch")), &int8)?;
    written.push(format!("{stem}.int8.perch (int8, {} bytes)", int8.len()));

    let lowered = done.mcu.as_ref().expect("mcu built");
    let budget = mcu::budget(lowered)?;
    let pmc = out(format!("{stem}.pmc"));
    write_atomically(&pmc, lowered.bytes.as_bytes())?;
    let mut sim = mcu::Simulator::new(lowered, &manifest)?;
    write_atomically(&out(format!("{stem}.vectors")), &mcu::test_vectors(&mut sim, &data, 32)?)?;
    written.push(format!("{stem}.pmc (micro plan, {} bytes; RAM arena {} bytes) and {stem}.vectors (32 test images)", lowered.bytes.len(), budget.arena));
    let fits = mcu::check_fits(lowered, &budget, &chip);
    match &fits {
        Ok(()) => println!("the micro plan fits {}: flash ~{} of {} bytes, RAM ~{} of {} bytes", chip.name, budget.flash, chip.flash, budget.ram, chip.ram),
        Err(e) => eprintln!("warning: {e}"),
    }

    let firmware = args.firmware.clone().or_else(|| Some(PathBuf::from("firmware")).filter(|d| d.join("app/Cargo.toml").is_file()));
    match (firmware, fits) {
        (Some(dir), Ok(())) => {
            let elf = build_firmware(&dir, &pmc, args.firmware_for_chip.then_some(chip.name))?;
            let dest = out(format!("{stem}.elf"));
            // Copied through a temporary file beside `dest` and renamed: an interrupted copy never
            // leaves a truncated ELF that would flash.
            let bytes = std::fs::read(&elf).with_context(|| format!("cannot read the built firmware {}", elf.display()))?;
            write_atomically(&dest, &bytes)?;
            written.push(format!(
                "{stem}.elf (board app with this plan, {}; run it: qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -monitor none -serial none -semihosting-config enable=on,target=native -kernel {})",
                if args.firmware_for_chip { chip.name } else { "qemu mps2-an386 layout" },
                dest.display()
            ));
        }
        (Some(_), Err(_)) => eprintln!("no firmware ELF: the plan does not fit {}", chip.name),
        (None, _) => eprintln!("no firmware ELF: no firmware/ directory here (give --firmware DIR)"),
    }

    let title = format!("Perch build of {}", args.model.display());
    let html = report::write(&out("report".into()), &title, &args.eval_data, &metrics, done.layer_errors.as_deref())?;
    written.push("report/report.html (open in a browser), report/report.md".to_string());
    println!("\nwrote to {}:", args.output.display());
    for w in written {
        println!("  {w}");
    }
    println!("report: {}", html.display());
    Ok(())
}

/// `cargo build --release` of the board app with `pmc` embedded; returns the ELF.
fn build_firmware(dir: &Path, pmc: &Path, chip: Option<&str>) -> Result<PathBuf> {
    let pmc = std::fs::canonicalize(pmc)?;
    let dir = std::fs::canonicalize(dir).with_context(|| format!("firmware directory {}", dir.display()))?;
    let target_dir = dir.join("target");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&dir).args(["build", "--release", "--bin", "perch-app"]).env("PERCH_PMC", &pmc).env("CARGO_TARGET_DIR", &target_dir);
    if let Some(chip) = chip {
        cmd.args(["--features", chip]);
    }
    eprintln!("building the firmware: {:?} in {}", cmd, dir.display());
    let status = cmd.status().context("running cargo for the firmware")?;
    if !status.success() {
        bail!("the firmware build failed ({status}); its output is above");
    }
    Ok(target_dir.join("thumbv7em-none-eabihf/release/perch-app"))
}

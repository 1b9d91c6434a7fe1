//! `perch`: from a trained ONNX classifier to plans for edge devices.

mod build_cmd;
mod eval_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use perch_datasets::{Dataset, Item};
use perch_host::analysis::{self, Target, human};
use perch_host::compile::{self, PreprocessChoice};
use perch_host::quantize::{self, Method, Scheme, WeightScales};
use perch_host::{accuracy, import, mcu};
use perch_runtime::plan::{Accuracy, Dim, Plan, manifest::shape_to_string};
use perch_runtime::preprocess::{Color, Filter, Resize};
use perch_runtime::{ChannelPolicy, Classifier};

const EXAMPLES: &str = "Examples:
  perch inspect models/fashion-cnn-s/fashion-cnn-s.onnx
  perch compile models/fashion-cnn-s/fashion-cnn-s.onnx --target sbc -o fashion-cnn-s.perch \\
      --mean 0.2860 --std 0.3530 --eval-data fashion-mnist:test
  perch-run classify --plan fashion-cnn-s.perch shoe.png";

/// Perch: compile image classifiers trained in PyTorch (exported to ONNX) into plans for ARM boards and
/// microcontrollers, and measure their accuracy on the way.
#[derive(Parser)]
#[command(version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile an ONNX model into a plan for a target.
    Compile(Box<CompileArgs>),
    /// Show a model's or plan's ops, parameters, MACs, tensor shapes and per-target support.
    Inspect {
        /// An ONNX model or a .perch plan.
        model: PathBuf,
        /// Override the input shape (ONNX only), e.g. batch,3,224,224.
        #[arg(long, value_name = "DIMS", value_parser = parse_shape)]
        input_shape: Option<Shape>,
        /// List every node with its output shape, MACs and parameters.
        #[arg(long)]
        nodes: bool,
        /// (plans) List the nodes of the plan as the runtime optimizes it for batch 1, with the kernel
        /// tract picked for each matrix product: proof of what really runs (int8 or f32).
        #[arg(long)]
        optimized: bool,
    },
    /// Accuracy of a model on every target (ONNX, float and int8 plans, the MCU plan simulated),
    /// side by side: top-1/top-5, per class, confusion, agreement, logit error; --report for charts.
    Eval(Box<eval_cmd::EvalArgs>),
    /// From an ONNX model to every artifact: float and int8 plans, the micro plan for a chip with
    /// its test vectors, the firmware ELF, and the evaluation report.
    Build(Box<build_cmd::BuildArgs>),
    /// Work with datasets.
    #[command(subcommand)]
    Dataset(DatasetCommand),
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Write samples of a dataset as PNG files in ImageFolder layout (DIR/<class>/<index>.png).
    Export {
        /// IDX file or directory, `fashion-mnist[:train|:test]`, ImageFolder directory or .npy.
        data: String,
        /// Output directory.
        #[arg(short, long)]
        output: PathBuf,
        /// How many samples to write, from the start of the dataset.
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
    /// ARM single-board computers (Raspberry Pi, Jetson) running tract: writes a .perch plan.
    Sbc,
    /// Cortex-M microcontrollers running perch-micro: writes a .pmc micro plan (int8 only: needs
    /// --quantize int8 --calibration DATA).
    Mcu,
}

#[derive(Clone, Copy, ValueEnum)]
enum ColorArg {
    Grayscale,
    Rgb,
    Bgr,
}

#[derive(Clone, Copy, ValueEnum)]
enum FilterArg {
    Nearest,
    Bilinear,
    Bicubic,
    Lanczos3,
}

/// How images are prepared for the model, as it was trained.
#[derive(Args, Clone)]
struct PreprocessArgs {
    /// Colour the model was trained on. Default: from the input's channel count (1: grayscale, 3: rgb).
    #[arg(long, value_enum)]
    color: Option<ColorArg>,
    /// Resize: N for the shorter side (aspect kept, as torchvision Resize(N)), or WxH exactly.
    /// Default: exactly the model's input size.
    #[arg(long, value_name = "N|WxH", value_parser = parse_resize)]
    resize: Option<Resize>,
    /// Center crop after resizing: N or WxH (torchvision CenterCrop). Without --resize, images are
    /// cropped as they come.
    #[arg(long, value_name = "N|WxH", value_parser = parse_size)]
    center_crop: Option<(u32, u32)>,
    /// Resampling filter for resizing.
    #[arg(long, value_enum)]
    filter: Option<FilterArg>,
    /// Per-channel mean subtracted after scaling pixels to [0, 1] (one value, or one per channel).
    /// Default 0. ImageNet models: 0.485,0.456,0.406.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    mean: Option<Vec<f32>>,
    /// Per-channel std divided by after the mean. Default 1. ImageNet models: 0.229,0.224,0.225.
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
}

impl PreprocessArgs {
    fn choice(&self) -> PreprocessChoice {
        PreprocessChoice {
            color: self.color.map(|c| match c {
                ColorArg::Grayscale => Color::Grayscale,
                ColorArg::Rgb => Color::Rgb,
                ColorArg::Bgr => Color::Bgr,
            }),
            resize: self.resize,
            center_crop: self.center_crop,
            filter: self.filter.map(|f| match f {
                FilterArg::Nearest => Filter::Nearest,
                FilterArg::Bilinear => Filter::Bilinear,
                FilterArg::Bicubic => Filter::Bicubic,
                FilterArg::Lanczos3 => Filter::Lanczos3,
            }),
            mean: self.mean.clone(),
            std: self.std.clone(),
        }
    }
}

#[derive(Args)]
struct CompileArgs {
    /// The ONNX model (either PyTorch exporter; a symbolic or -1 batch axis is kept dynamic).
    model: PathBuf,
    /// What to compile for.
    #[arg(long, value_enum, default_value = "sbc")]
    target: TargetArg,
    /// Where to write the plan (written whole or not at all).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Class labels, one per line in class order. Default: labels.txt beside the model, if present.
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// Override the model's input shape, e.g. batch,3,224,224 (numbers, or names for dynamic axes).
    #[arg(long, value_name = "DIMS", value_parser = parse_shape)]
    input_shape: Option<Shape>,
    #[command(flatten)]
    pre: PreprocessArgs,
    /// Measure top-1 accuracy of the compiled plan on this labelled dataset and record it in the plan
    /// (IDX file or directory, `fashion-mnist[:test]`, ImageFolder directory, or .npy).
    #[arg(long, value_name = "DATA")]
    eval_data: Option<String>,
    /// Evaluate only the first N samples of --eval-data.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    eval_limit: Option<u64>,
    /// Quantize: `int8` (static: int8 weights per output channel and int8 activations, calibrated
    /// on --calibration data; convolutions and matrix products run Perch's int8 kernels, see --int8-kernels), or
    /// `dynamic` (int8 weights for matrix products, activations quantized at run time).
    #[arg(long, value_enum, default_value = "none")]
    quantize: QuantizeArg,
    /// Calibration data for --quantize int8: representative training images (IDX file or
    /// directory, `fashion-mnist:train`, ImageFolder directory, or .npy).
    #[arg(long, value_name = "DATA")]
    calibration: Option<String>,
    /// How activation ranges are chosen: minmax, percentile[=99.99] (clip outliers), or entropy
    /// (minimize the KL divergence, as TensorRT does).
    #[arg(long, value_name = "METHOD", default_value = "minmax")]
    calibration_method: Method,
    /// How many calibration samples to use (from the start of --calibration).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    calibration_samples: u64,
    /// Weight scales: per-channel (one per output channel: accurate and, on Perch's int8 kernels,
    /// fastest: the default) or per-tensor (one per layer: with `--int8-kernels tract`, tract 0.23.9
    /// then fuses requantization into its int8 kernels, ~2x faster there; check the accuracy it
    /// reports).
    #[arg(long, value_enum, default_value = "per-channel")]
    weight_scales: WeightScalesArg,
    /// Whose kernels run the int8 convolutions, matrix products and max pools on the device:
    /// Perch's (NEON with SDOT where the CPU has it, 32-bit NEON, AVX2, AVX512-VNNI, portable;
    /// tract's where they do not apply) or tract's own. Both give the same outputs; see
    /// BENCHMARKS.md for the speed.
    #[arg(long, value_enum, default_value = "perch")]
    int8_kernels: Int8KernelsArg,
    /// The quantization debugger: compare every int8 tensor with its float counterpart on (up to
    /// 500 of) the calibration samples, print a per-layer table (SQNR in dB, max abs error) and
    /// write it to FILE as JSON.
    #[arg(long, value_name = "FILE")]
    quant_report: Option<PathBuf>,
    /// Mixed precision: the most top-1 points int8 may lose against float on --eval-data. If the
    /// all-int8 plan loses more, each layer's sensitivity is measured and the most sensitive layers
    /// stay float until the budget holds (they are listed, and recorded in the plan).
    #[arg(long, value_name = "PTS", requires = "eval_data")]
    max_accuracy_drop: Option<f64>,
    /// (--target mcu) The microcontroller: stm32f411, stm32f405, nrf52840, stm32h743, rp2040. The
    /// plan is refused if it does not fit its flash and RAM. Or give --flash and --ram.
    #[arg(long, value_name = "CHIP")]
    chip: Option<String>,
    /// (--target mcu) Flash available to the application, e.g. 512K or 1M (instead of --chip).
    #[arg(long, value_name = "SIZE", requires = "ram", conflicts_with = "chip")]
    flash: Option<String>,
    /// (--target mcu) RAM available to the application, e.g. 128K (instead of --chip).
    #[arg(long, value_name = "SIZE", requires = "flash", conflicts_with = "chip")]
    ram: Option<String>,
    /// (--target mcu) Also write N test vectors (int8 inputs from --eval-data, the expected outputs
    /// from the host simulation, labels) to FILE, for the board app's self-test.
    #[arg(long, value_names = ["N", "FILE"], num_args = 2, requires = "eval_data")]
    test_vectors: Option<Vec<String>>,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Int8KernelsArg {
    Perch,
    Tract,
}

impl From<Int8KernelsArg> for perch_host::quantize::Engine {
    fn from(arg: Int8KernelsArg) -> Self {
        match arg {
            Int8KernelsArg::Perch => perch_host::quantize::Engine::Perch,
            Int8KernelsArg::Tract => perch_host::quantize::Engine::Tract,
        }
    }
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum WeightScalesArg {
    PerChannel,
    PerTensor,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum QuantizeArg {
    /// Keep float32.
    None,
    /// Static int8 (needs --calibration).
    Int8,
    /// Dynamic int8, as PyTorch's quantize_dynamic: int8 weights for matrix products (Linear,
    /// Gemm, MatMul), their inputs quantized at run time; convolutions stay float. No calibration.
    Dynamic,
}

/// A whole shape as one argument (clap would read `Vec<Dim>` as repeated values).
#[derive(Clone)]
struct Shape(Vec<Dim>);

fn parse_shape(text: &str) -> Result<Shape, String> {
    import::parse_shape(text).map(Shape)
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let parse = |s: &str| s.trim().parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| format!("`{text}` is not N or WxH"));
    match text.split_once(['x', 'X']) {
        Some((w, h)) => Ok((parse(w)?, parse(h)?)),
        None => parse(text).map(|n| (n, n)),
    }
}

fn parse_resize(text: &str) -> Result<Resize, String> {
    if text.contains(['x', 'X']) {
        parse_size(text).map(|(width, height)| Resize::Exact { width, height })
    } else {
        parse_size(text).map(|(n, _)| Resize::ShorterSide(n))
    }
}

fn progress_bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta} left)").expect("valid template").progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn compile_cmd(args: &CompileArgs) -> Result<()> {
    let mcu = matches!(args.target, TargetArg::Mcu);
    if mcu && args.quantize != QuantizeArg::Int8 {
        bail!("--target mcu runs int8 only: add --quantize int8 --calibration DATA (a few hundred training images)");
    }
    if !mcu && (args.chip.is_some() || args.flash.is_some() || args.test_vectors.is_some()) {
        bail!("--chip, --flash, --ram and --test-vectors are for --target mcu");
    }
    let chip = match (&args.chip, &args.flash, &args.ram) {
        (Some(name), _, _) => Some(
            mcu::chips::find(name).with_context(|| format!("unknown chip `{name}`: known are {}; or give --flash and --ram", mcu::chips::names()))?,
        ),
        (None, Some(flash), Some(ram)) => Some(mcu::Chip {
            name: "the given part",
            core: "Cortex-M",
            flash: mcu::chips::parse_size(flash).map_err(anyhow::Error::msg).context("--flash")?,
            ram: mcu::chips::parse_size(ram).map_err(anyhow::Error::msg).context("--ram")?,
        }),
        _ => None,
    };
    let imported = import::import(&args.model, args.input_shape.as_ref().map(|s| s.0.as_slice()))?;
    let labels_path = args.labels.clone().or_else(|| compile::labels_beside(&args.model));
    let labels = labels_path.as_deref().map(compile::read_labels).transpose()?;
    let choice = args.pre.choice();
    let mut manifest = compile::manifest_for(&imported, labels, &choice)?;
    let graph = match args.quantize {
        QuantizeArg::None => {
            if args.calibration.is_some() {
                bail!("--calibration is for --quantize int8");
            }
            if args.max_accuracy_drop.is_some() {
                bail!("--max-accuracy-drop is for --quantize int8");
            }
            imported.model.clone()
        }
        QuantizeArg::Dynamic => {
            if args.calibration.is_some() {
                bail!("--quantize dynamic needs no --calibration: activations are quantized at run time");
            }
            let (model, report) = quantize::quantize_dynamic(&imported.model, &mut manifest).context("quantizing")?;
            if report.quantized.is_empty() {
                bail!("--quantize dynamic found no matrix product (Linear, Gemm, MatMul) with constant weights to quantize");
            }
            eprintln!("note: dynamic int8 for {}", report.quantized.join(", "));
            model
        }
        QuantizeArg::Int8 => {
            let Some(data) = &args.calibration else {
                bail!("--quantize int8 needs --calibration DATA: a few hundred to a few thousand training images");
            };
            let dataset = Dataset::open(data).with_context(|| format!("opening calibration data {data}"))?;
            let weights = match args.weight_scales {
                WeightScalesArg::PerChannel => WeightScales::PerChannel,
                WeightScalesArg::PerTensor => WeightScales::PerTensor,
            };
            let scheme = Scheme { method: args.calibration_method, weights, engine: args.int8_kernels.into() };
            let samples = usize::try_from(args.calibration_samples).unwrap_or(usize::MAX).min(dataset.len());
            let (model, report) = match args.max_accuracy_drop {
                None => {
                    let bar = progress_bar(samples, "calibrating");
                    let done = quantize::int8(
                        &imported.model,
                        &mut manifest,
                        &dataset,
                        data,
                        scheme,
                        samples,
                        &Default::default(),
                        |n| bar.set_position(n as u64),
                    )?;
                    bar.finish_and_clear();
                    done
                }
                Some(budget) => {
                    if !(budget >= 0.0 && budget.is_finite()) {
                        bail!("--max-accuracy-drop must be a number of points >= 0, not {budget}");
                    }
                    let eval_data = args.eval_data.as_deref().expect("clap requires --eval-data");
                    let mut eval = Dataset::open(eval_data).with_context(|| format!("opening {eval_data}"))?;
                    if let Some(n) = args.eval_limit {
                        eval.truncate(usize::try_from(n).unwrap_or(usize::MAX));
                    }
                    let spinner = ProgressBar::new_spinner();
                    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
                    let (model, report, budget_report) = quantize::int8_within_budget(
                        &imported.model,
                        &mut manifest,
                        &dataset,
                        data,
                        scheme,
                        samples,
                        &eval,
                        budget,
                        |step| spinner.set_message(step.to_string()),
                    )?;
                    spinner.finish_and_clear();
                    print_budget(&budget_report, budget, eval_data);
                    (model, report)
                }
            };
            if !report.float_ops.is_empty() {
                eprintln!(
                    "note: {} op(s) run in float between int8 layers: {}",
                    report.float_ops.len(),
                    report.float_ops.iter().map(|(n, op)| format!("{n} ({op})")).collect::<Vec<_>>().join(", ")
                );
            }
            if let Some(path) = &args.quant_report {
                let n = samples.min(500);
                let layers = quantize::layer_errors(&imported.model, &model, &report.taps, &manifest, &dataset, n)?;
                print_layer_errors(&layers, n);
                let json = serde_json::to_vec_pretty(&serde_json::json!({ "samples": n, "layers": layers }))?;
                perch_runtime::plan::write_atomically(path, &json)?;
            }
            model
        }
    };
    if mcu {
        return compile_mcu(args, &graph, &manifest, chip);
    }
    let (mut bytes, plan) = compile::round_trip(&mut manifest, &graph)?;
    if let Some((node, dt)) = perch_runtime::plan::first_type_left_out_by_lean_types(&plan.graph) {
        eprintln!(
            "warning: node {node:?} holds {dt:?} tensors: the small device binary (`cargo xtask device-binary`, \
             feature lean-types) refuses this plan; a perch-run built without that feature runs it"
        );
    }
    if let Some(data) = &args.eval_data {
        let mut dataset = Dataset::open(data)?;
        if let Some(n) = args.eval_limit {
            dataset.truncate(usize::try_from(n).unwrap_or(usize::MAX));
        }
        let batch = plan.manifest.input.fixed_batch().unwrap_or(64);
        let classifier = Classifier::new(plan, batch)?;
        let bar = progress_bar(dataset.len(), "evaluating");
        let eval = accuracy::evaluate(&classifier, &dataset, ChannelPolicy::Strict, |n| bar.set_position(n as u64))
            .with_context(|| format!("evaluating on {data}"))?;
        bar.finish_and_clear();
        manifest.accuracy = Some(Accuracy { dataset: data.clone(), images: eval.images, top1: eval.top1() });
        let graph = perch_runtime::plan::container::decode(&bytes, perch_runtime::plan::FORMAT_VERSION)?.graph.to_vec();
        bytes = Plan::seal(&mut manifest, &graph)?;
    }
    let analysis = analysis::analyze(&imported.model)?;
    perch_runtime::plan::write_atomically(&args.output, &bytes)?;

    let m = &manifest;
    println!("compiled {} -> {} ({} bytes, {})", args.model.display(), args.output.display(), bytes.len(), m.quantization.scheme);
    println!("  input   {} [{}] {:?}, preprocess {}", m.input.name, shape_to_string(&m.input.shape), m.input.layout, serde_json::to_string(&m.preprocess)?);
    let labels_from = labels_path.map_or("none given: named by index".to_string(), |p| format!("from {}", p.display()));
    println!("  output  {} [{}] {:?}, {} labels {labels_from}", m.output.name, shape_to_string(&m.output.shape), m.output.kind, m.labels.len());
    println!("  {} parameters, {} MACs per image", human(analysis.params), human(analysis.macs));
    if let Some(a) = &m.accuracy {
        println!("  accuracy {:.2}% top-1 on {} ({} images)", a.top1, a.dataset, a.images);
    }
    Ok(())
}

fn compile_mcu(args: &CompileArgs, int8: &tract_onnx::prelude::TypedModel, manifest: &perch_runtime::Manifest, chip: Option<mcu::Chip>) -> Result<()> {
    let lowered = mcu::compile(int8, manifest)?;
    let budget = mcu::budget(&lowered)?;
    println!("{:<44} {:<16} {:>12} {:>10} {:>10}", "layer", "micro op", "output HxWxC", "MACs", "consts");
    for l in &lowered.layers {
        let shape = format!("{}x{}x{}", l.output.h, l.output.w, l.output.c);
        println!("{:<44} {:<16} {:>12} {:>10} {:>10}", l.name, l.kind, shape, human(l.macs), l.weight_bytes);
    }
    let macs: u64 = lowered.layers.iter().map(|l| l.macs).sum();
    println!(
        "flash {} bytes = plan {} + code ~{}; RAM {} bytes = arena {} (activations {}, lower bound {}; the rest kernel scratch) + stack ~{}; {} MACs",
        budget.flash, budget.plan_bytes, mcu::CODE_FLASH_ESTIMATE, budget.ram, budget.arena, lowered.activations, lowered.lower_bound,
        mcu::STACK_RAM_ESTIMATE, human(macs)
    );
    match &chip {
        Some(chip) => {
            mcu::check_fits(&lowered, &budget, chip)?;
            println!(
                "fits {} ({}): flash {:.0}% of {} KiB, RAM {:.0}% of {} KiB",
                chip.name, chip.core, 100.0 * budget.flash as f64 / chip.flash as f64, chip.flash / 1024,
                100.0 * budget.ram as f64 / chip.ram as f64, chip.ram / 1024
            );
        }
        None => println!("no --chip (or --flash/--ram): the budget was not checked"),
    }
    if let Some(data) = &args.eval_data {
        let mut dataset = Dataset::open(data)?;
        if let Some(n) = args.eval_limit {
            dataset.truncate(usize::try_from(n).unwrap_or(usize::MAX));
        }
        let mut sim = mcu::Simulator::new(&lowered, manifest)?;
        let bar = progress_bar(dataset.len(), "simulating the MCU");
        let predicted = mcu::predictions(&mut sim, &dataset, dataset.len(), |n| bar.set_position(n as u64))?;
        bar.finish_and_clear();
        let map = accuracy::label_map(&dataset, &manifest.labels)?;
        let correct = (0..dataset.len())
            .filter(|&i| {
                let truth = map.as_ref().map_or(dataset.label(i), |m| m[dataset.label(i) as usize]);
                predicted[i] == truth
            })
            .count();
        println!("  MCU accuracy (host simulation, bit-exact) {:.2}% top-1 on {data} ({} images)", 100.0 * correct as f64 / dataset.len() as f64, dataset.len());
        if let Some([n, file]) = args.test_vectors.as_deref() {
            let n: usize = n.parse().with_context(|| format!("--test-vectors count `{n}`"))?;
            let vectors = mcu::test_vectors(&mut sim, &dataset, n)?;
            perch_runtime::plan::write_atomically(std::path::Path::new(file), &vectors)?;
            println!("  wrote {n} test vectors to {file}");
        }
    }
    perch_runtime::plan::write_atomically(&args.output, lowered.bytes.as_bytes())?;
    println!("compiled {} -> {} ({} bytes, int8 micro plan)", args.model.display(), args.output.display(), lowered.bytes.len());
    Ok(())
}

fn print_budget(r: &quantize::BudgetReport, budget: f64, data: &str) {
    println!("accuracy budget {budget} pt on {data}: float {:.2}%, all int8 {:.2}%", r.float_top1, r.all_int8_top1);
    if !r.sensitivity.is_empty() {
        println!("  sensitivity (top-1 with only that layer in float):");
        for (layer, top1) in &r.sensitivity {
            println!("    {top1:>6.2}%  {layer}");
        }
    }
    if r.kept_float.is_empty() {
        println!("  every layer int8 ({:.2}%)", r.final_top1);
    } else {
        println!("  kept in float: {} -> {:.2}%", r.kept_float.join(", "), r.final_top1);
    }
}

fn print_layer_errors(layers: &[quantize::debug::LayerError], samples: usize) {
    println!("int8 vs float, per tensor, on {samples} calibration samples (SQNR: higher is better; < 20 dB hurts)");
    println!("{:<48} {:<12} {:>9} {:>12} {:>12} {:>10}", "tensor (float node)", "op", "SQNR dB", "max |err|", "max |x|", "int8 step");
    for l in layers {
        println!(
            "{:<48} {:<12} {:>9.1} {:>12.4} {:>12.4} {:>10.5}",
            l.layer, l.op, l.sqnr_db, l.max_abs_error, l.max_abs_value, l.step
        );
    }
}

fn inspect_cmd(path: &Path, input_shape: Option<&[Dim]>, nodes: bool, optimized: bool) -> Result<()> {
    // A plan by its name or by its first bytes (only those are read here: Plan::load checks the size).
    let mut magic = [0u8; perch_runtime::plan::container::MAGIC.len()];
    let starts_as_plan = std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok()
        && magic == perch_runtime::plan::container::MAGIC;
    let is_plan = starts_as_plan || path.extension().is_some_and(|e| e == "perch");
    let model = if is_plan {
        if input_shape.is_some() {
            bail!("--input-shape applies to ONNX models; a plan's input shape is fixed at compile time");
        }
        let plan = Plan::load(path)?;
        println!("plan      {}\n{}", path.display(), plan.summary());
        if optimized {
            let batch = plan.manifest.input.fixed_batch().unwrap_or(1);
            let classifier = Classifier::new(plan.clone(), batch)?;
            println!("\noptimized for batch {batch} ({}):", analysis::kernel_summary(classifier.optimized_model()));
            for line in analysis::optimized_nodes(classifier.optimized_model()) {
                println!("  {line}");
            }
            println!();
        }
        plan.graph
    } else {
        if optimized {
            bail!("--optimized lists a compiled plan's nodes: compile the model first, then inspect the .perch");
        }
        let imported = import::import(path, input_shape)?;
        let s = &imported.source;
        println!("model     {} sha256:{}", path.display(), s.sha256);
        println!("producer  {} (opset {})", s.producer.clone().unwrap_or_else(|| "unknown".into()), s.opset.map_or("?".into(), |o| o.to_string()));
        let fact = imported.model.input_fact(0)?;
        println!("input     {} {:?}", imported.input_name, fact);
        println!("output    {} {:?}", imported.output_name, imported.model.output_fact(0)?);
        imported.model
    };
    let a = analysis::analyze(&model)?;
    println!("params    {} ({} bytes as f32, {} as int8)", human(a.params), human(a.params * 4), human(a.params));
    println!("MACs      {} per image", human(a.macs));
    println!("largest activation {} elements per image", human(a.largest_activation));
    println!("ops       {}", a.ops.iter().map(|(op, n)| format!("{op} x{n}")).collect::<Vec<_>>().join(", "));
    for (target, missing) in &analysis::unsupported(&model, &a) {
        let name = match target {
            Target::Sbc => "sbc (tract, .perch)",
            Target::Mcu => "mcu (micro runtime int8 op set)",
        };
        if missing.is_empty() {
            println!("target    {name}: every op supported");
        } else {
            println!("target    {name}: not supported: {}", missing.join(", "));
        }
    }
    if nodes {
        println!("\n{:<40} {:<14} {:>16} {:>10} {:>10}", "node", "op", "shape (batch 1)", "MACs", "params");
        for n in a.nodes.iter().filter(|n| n.params == 0) {
            println!("{:<40} {:<14} {:>16} {:>10} {:>10}", n.name, n.op, n.shape, human(n.macs), "");
        }
        for n in a.nodes.iter().filter(|n| n.params > 0) {
            println!("{:<40} {:<14} {:>16} {:>10} {:>10}", n.name, n.op, n.shape, "", human(n.params));
        }
    }
    Ok(())
}

fn export_cmd(data: &str, output: &Path, count: usize) -> Result<()> {
    let dataset = Dataset::open(data)?;
    let n = count.min(dataset.len());
    for index in 0..n {
        let label = dataset.label(index) as usize;
        let class = dataset.classes.get(label).cloned().unwrap_or_else(|| label.to_string());
        // Class names such as "T-shirt/top" must not become paths.
        let class = class.replace(['/', '\\'], "-");
        let dir = output.join(&class);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (bytes, ext) = match dataset.item(index) {
            Item::Image(img) => {
                let mut png = Vec::new();
                img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
                (png, "png".to_string())
            }
            Item::File(src) => {
                let ext = src.extension().map_or("img".into(), |e| e.to_string_lossy().to_lowercase());
                (std::fs::read(&src).with_context(|| format!("cannot read {}", src.display()))?, ext)
            }
            Item::Tensor(_) => bail!("{data} holds preprocessed tensors, not images"),
        };
        perch_runtime::plan::write_atomically(&dir.join(format!("{index:05}.{ext}")), &bytes)?;
    }
    println!("wrote {n} image(s) from {data} to {}", output.display());
    Ok(())
}

fn main() -> ExitCode {
    // `perch ... | head` must end quietly, as other Unix tools do, not panic on a closed stdout.
    #[cfg(unix)]
    // SAFETY: called before any thread starts; restores the default disposition of one signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Compile(args) => compile_cmd(args),
        Command::Inspect { model, input_shape, nodes, optimized } => {
            inspect_cmd(model, input_shape.as_ref().map(|s| s.0.as_slice()), *nodes, *optimized)
        }
        Command::Eval(args) => eval_cmd::run(args),
        Command::Build(args) => build_cmd::run(args),
        Command::Dataset(DatasetCommand::Export { data, output, count }) => export_cmd(data, output, *count),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

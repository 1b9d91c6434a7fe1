//! `perch eval`: accuracy of a model on every target, side by side, with an optional report.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::ProgressBar;
use perch_datasets::Dataset;
use perch_host::eval::{self, Metrics, Outputs, Target};
use perch_host::quantize::{Method, Scheme, WeightScales};
use perch_host::{compile, import, report};
use perch_runtime::{Classifier, Plan};

use crate::{Int8KernelsArg, PreprocessArgs, WeightScalesArg, progress_bar};

#[derive(Args)]
pub struct EvalArgs {
    /// ONNX models (compiled on the fly for each --targets) and/or .perch plans (evaluated as they are).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Labelled data: IDX file or directory, `fashion-mnist:test`, ImageFolder directory, or .npy.
    #[arg(long, value_name = "DATA")]
    pub data: String,
    /// Evaluate only the first N samples.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// For ONNX inputs: onnx (tract-onnx, the float reference), sbc-f32, sbc-int8, mcu (host
    /// simulation of the micro plan). Default: onnx and sbc-f32, plus sbc-int8 and mcu with --calibration.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub targets: Option<Vec<Target>>,
    /// Calibration data for the int8 targets (training images).
    #[arg(long, value_name = "DATA")]
    pub calibration: Option<String>,
    /// Calibration method for the int8 targets: minmax, percentile[=P], entropy.
    #[arg(long, value_name = "METHOD", default_value = "minmax")]
    pub calibration_method: Method,
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub calibration_samples: usize,
    #[arg(long, value_enum, default_value = "per-channel")]
    pub weight_scales: WeightScalesArg,
    /// Whose kernels run the int8 plan's convolutions (as for `perch compile`).
    #[arg(long, value_enum, default_value = "perch")]
    pub int8_kernels: Int8KernelsArg,
    /// Class labels for ONNX inputs. Default: labels.txt beside the model.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    #[command(flatten)]
    pub pre: PreprocessArgs,
    /// Print the metrics as JSON on stdout instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write a report (report.html with its charts inline, report.md, SVG charts) into DIR.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
}

pub fn scheme(method: Method, weights: WeightScalesArg, kernels: Int8KernelsArg) -> Scheme {
    let weights = match weights {
        WeightScalesArg::PerChannel => WeightScales::PerChannel,
        WeightScalesArg::PerTensor => WeightScales::PerTensor,
    };
    Scheme { method, weights, engine: kernels.into() }
}

pub fn bar_for(total: usize) -> impl FnMut(&str, usize, usize) {
    let bar: ProgressBar = progress_bar(total, "evaluating");
    move |target: &str, done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_message(format!("evaluating {target}"));
        bar.set_position(done as u64);
        if done >= total {
            bar.reset();
        }
    }
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let mut data = Dataset::open(&args.data).with_context(|| format!("opening {}", args.data))?;
    if let Some(n) = args.limit {
        data.truncate(usize::try_from(n).unwrap_or(usize::MAX));
    }
    let n = data.len();
    let calibration = match &args.calibration {
        Some(c) => Some((Dataset::open(c).with_context(|| format!("opening calibration data {c}"))?, c.clone())),
        None => None,
    };
    let mut outputs: Vec<Outputs> = vec![];
    let mut labels: Option<Vec<String>> = None;
    let mut layer_errors = None;
    let mut progress = bar_for(n);
    for input in &args.inputs {
        let is_plan = std::fs::read(input).ok().is_some_and(|b| b.starts_with(&perch_runtime::plan::container::MAGIC));
        let (these_labels, these) = if is_plan {
            let plan = Plan::load(input)?;
            let name = input.file_name().map_or("plan".into(), |f| f.to_string_lossy().into_owned());
            let labels = plan.manifest.labels.clone();
            let batch = plan.manifest.input.fixed_batch().unwrap_or(64);
            let classifier = Classifier::new(plan, batch)?;
            let out = eval::run_classifier(&name, &classifier, &data, n, |k| progress(&name, k, n))?;
            (labels, vec![out])
        } else {
            let imported = import::import(input, None)?;
            let labels_path = args.labels.clone().or_else(|| compile::labels_beside(input));
            let labels = labels_path.as_deref().map(compile::read_labels).transpose()?;
            let manifest = compile::manifest_for(&imported, labels, &args.pre.choice())?;
            let targets = args.targets.clone().unwrap_or_else(|| {
                Target::ALL.into_iter().filter(|t| calibration.is_some() || !t.needs_calibration()).collect()
            });
            let calib = calibration.as_ref().map(|(d, name)| (d, name.as_str()));
            let scheme = scheme(args.calibration_method, args.weight_scales, args.int8_kernels);
            let done = eval::evaluate_model(&imported, &manifest, &targets, calib, scheme, args.calibration_samples, &data, n, &mut progress)?;
            layer_errors = done.layer_errors.or(layer_errors);
            (manifest.labels.clone(), done.outputs)
        };
        match &labels {
            Some(l) if *l != these_labels => bail!("{} has other class labels than the inputs before it", input.display()),
            _ => labels = Some(these_labels),
        }
        outputs.extend(these);
    }
    for o in &outputs {
        for w in &o.warnings {
            eprintln!("warning: {}: {w}", o.target);
        }
    }
    let labels = labels.expect("at least one input");
    let truth = eval::truth(&data, &labels, n)?;
    let metrics: Vec<Metrics> = outputs.iter().map(|o| eval::metrics(o, &truth, &labels, outputs.first())).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "data": args.data, "images": n, "targets": metrics }))?);
    } else {
        print_table(&metrics, &args.data);
    }
    if let Some(dir) = &args.report {
        let title = format!("Perch evaluation: {}", args.inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
        let path = report::write(dir, &title, &args.data, &metrics, layer_errors.as_deref())?;
        eprintln!("report: {}", path.display());
    }
    Ok(())
}

pub fn print_table(metrics: &[Metrics], data: &str) {
    println!("{} images of {data}; agreement and logit error against {}", metrics.first().map_or(0, |m| m.images), metrics.first().map_or("", |m| m.target.as_str()));
    println!("{:<28} {:>8} {:>8} {:>10} {:>10} {:>9} {:>9}", "target", "top-1", "top-5", "agreement", "max |err|", "RMSE", "cosine");
    for m in metrics {
        let e = m.logit_error.as_ref();
        println!(
            "{:<28} {:>7.2}% {:>8} {:>10} {:>10} {:>9} {:>9}",
            m.target,
            m.top1,
            m.top5.map_or("-".into(), |v| format!("{v:.2}%")),
            m.agreement.map_or("-".into(), |v| format!("{v:.2}%")),
            e.map_or("-".into(), |e| format!("{:.4}", e.max_abs)),
            e.map_or("-".into(), |e| format!("{:.4}", e.rmse)),
            e.map_or("-".into(), |e| format!("{:.5}", e.cosine)),
        );
    }
}

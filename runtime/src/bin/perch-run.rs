//! `perch-run`: runs `.perch` plans on a device.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use perch_runtime::{ChannelPolicy, Classifier, Plan, preprocess::{image_files, open_image}};

/// Run Perch plans (.perch files written by `perch compile`) on this machine.
#[derive(Parser)]
#[command(version, after_help = "Example:\n  perch-run classify --plan fashion-cnn-s.perch shoe.png shirts/ --top 3")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify images: each IMAGE file, and every image file found under each DIR.
    Classify {
        /// The plan to run.
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
        /// Image files (PNG, JPEG, BMP, GIF, WebP, TIFF, PNM) or directories of them.
        #[arg(required = true, value_name = "IMAGE|DIR")]
        inputs: Vec<PathBuf>,
        /// How many classes to report per image.
        #[arg(long, default_value_t = 3, value_name = "K")]
        top: usize,
        /// Print JSON (one array, an object per image) instead of text.
        #[arg(long)]
        json: bool,
        /// Convert images whose channels differ from the model's (colour to grey, grey to colour)
        /// instead of refusing them.
        #[arg(long)]
        convert: bool,
    },
    /// Show a plan's manifest: source model, input, preprocessing, labels, versions, checksum.
    Info {
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
    },
}

fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            out.extend(image_files(input).with_context(|| format!("cannot list {}", input.display()))?);
        } else {
            // Named files are taken whatever their extension; a missing one fails later with its path.
            out.push(input.clone());
        }
    }
    Ok(out)
}

fn classify(plan_path: &Path, inputs: &[PathBuf], top: usize, json: bool, convert: bool) -> Result<bool> {
    let plan = Plan::load(plan_path).with_context(|| format!("{}", plan_path.display()))?;
    // A plan compiled for a fixed batch runs at that size; short batches are padded.
    let batch = plan.manifest.input.fixed_batch().unwrap_or(1);
    let classifier = Classifier::new(plan, batch).with_context(|| format!("{}", plan_path.display()))?;
    let policy = if convert { ChannelPolicy::Convert } else { ChannelPolicy::Strict };
    let images = collect_images(inputs)?;
    if images.is_empty() {
        bail!("no image files found in {}", inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    let mut all_ok = true;
    let mut records = Vec::new();
    for path in &images {
        let result = open_image(path).map_err(anyhow::Error::from).and_then(|img| Ok(classifier.classify(&img, policy, top)?));
        match result {
            Ok(predictions) if json => records.push(serde_json::json!({
                "image": path.display().to_string(),
                "predictions": predictions.iter().map(|p| serde_json::json!({
                    "class": p.class, "label": p.label, "probability": p.probability,
                })).collect::<Vec<_>>(),
            })),
            Ok(predictions) => {
                let ranked: Vec<String> =
                    predictions.iter().map(|p| format!("{} {:.1}%", p.label, 100.0 * p.probability)).collect();
                println!("{}: {}", path.display(), ranked.join(", "));
            }
            Err(e) => {
                all_ok = false;
                eprintln!("error: {}: {e:#}", path.display());
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    }
    Ok(all_ok)
}

fn info(path: &Path) -> Result<()> {
    let plan = Plan::load(path).with_context(|| format!("{}", path.display()))?;
    println!("plan      {}\n{}", path.display(), plan.summary());
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
        Command::Classify { plan, inputs, top, json, convert } => classify(plan, inputs, *top, *json, *convert),
        Command::Info { plan } => info(plan).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

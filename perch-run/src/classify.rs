//! `perch-run classify`: images and folders of images, as text, JSON or CSV, with a progress bar.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use perch_runtime::preprocess::{image_files, open_image};
use perch_runtime::{ChannelPolicy, Classifier, Plan, Prediction};

use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// The plan to run.
    #[arg(long, value_name = "FILE")]
    plan: PathBuf,
    /// Image files (PNG, JPEG, BMP, GIF, WebP, TIFF, PNM) or directories of them.
    #[arg(required = true, value_name = "IMAGE|DIR")]
    inputs: Vec<PathBuf>,
    /// How many classes to report per image.
    #[arg(long, default_value_t = 3, value_name = "K")]
    top: usize,
    /// Print JSON: one array, an object per image ({"image", "predictions": [{"class", "label",
    /// "probability"}]}), written as images are classified.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV: a header, then a row per image: image,label_1,probability_1,...,label_K,probability_K.
    #[arg(long)]
    csv: bool,
    /// Convert images whose channels differ from the model's (colour to grey, grey to colour)
    /// instead of refusing them.
    #[arg(long)]
    convert: bool,
    /// No progress bar (it is shown only when stderr is a terminal anyway).
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Text,
    Json,
    Csv,
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

/// A CSV field, quoted when it must be (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

fn write_record(out: &mut impl Write, format: Format, first: bool, path: &Path, predictions: &[Prediction]) -> std::io::Result<()> {
    match format {
        Format::Text => {
            let ranked: Vec<String> = predictions.iter().map(|p| format!("{} {:.1}%", p.label, 100.0 * p.probability)).collect();
            writeln!(out, "{}: {}", path.display(), ranked.join(", "))
        }
        Format::Json => {
            let record = serde_json::json!({
                "image": path.display().to_string(),
                "predictions": predictions.iter().map(|p| serde_json::json!({
                    "class": p.class, "label": p.label, "probability": p.probability,
                })).collect::<Vec<_>>(),
            });
            write!(out, "{}  {record}", if first { "" } else { ",\n" })
        }
        Format::Csv => {
            let mut row = vec![csv_field(&path.display().to_string())];
            for p in predictions {
                row.push(csv_field(&p.label));
                row.push(p.probability.to_string());
            }
            writeln!(out, "{}", row.join(","))
        }
    }
}

pub fn run(args: &Args) -> Result<Outcome> {
    let plan = Plan::load(&args.plan).with_context(|| format!("{}", args.plan.display()))?;
    // A plan compiled for a fixed batch runs at that size; short batches are padded.
    let batch = plan.manifest.input.fixed_batch().unwrap_or(1);
    let classifier = Classifier::new(plan, batch).with_context(|| format!("{}", args.plan.display()))?;
    let mut session = classifier.session()?;
    let policy = if args.convert { ChannelPolicy::Convert } else { ChannelPolicy::Strict };
    let format = if args.json {
        Format::Json
    } else if args.csv {
        Format::Csv
    } else {
        Format::Text
    };
    let images = collect_images(&args.inputs)?;
    if images.is_empty() {
        bail!(
            "no image files found in {} (looked for {})",
            args.inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            perch_runtime::preprocess::IMAGE_EXTENSIONS.join(", ")
        );
    }
    let progress = if args.quiet || images.len() < 2 { ProgressBar::hidden() } else { ProgressBar::new(images.len() as u64) };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images, {per_sec}, {eta} left")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match format {
        Format::Json => writeln!(out, "[")?,
        Format::Csv => {
            let mut header = vec!["image".to_string()];
            for k in 1..=args.top.min(classifier.manifest().labels.len().max(1)) {
                header.push(format!("label_{k}"));
                header.push(format!("probability_{k}"));
            }
            writeln!(out, "{}", header.join(","))?;
        }
        Format::Text => {}
    }
    let (mut classified, mut skipped) = (0usize, 0usize);
    let mut last_error = None;
    for path in &images {
        let result = open_image(path).map_err(anyhow::Error::from).and_then(|img| Ok(session.classify(&img, policy, args.top)?));
        match result {
            Ok(predictions) => {
                write_record(&mut out, format, classified == 0, path, &predictions)?;
                classified += 1;
            }
            Err(e) => {
                skipped += 1;
                let message = format!("{}: {e:#}", path.display());
                if images.len() > 1 {
                    progress.suspend(|| eprintln!("warning: skipping {message}"));
                }
                last_error = Some(message);
            }
        }
        progress.inc(1);
        // Text lines show up as they come; a pipe reader gets them without waiting for the end.
        if format == Format::Text && images.len() > 1 {
            out.flush()?;
        }
    }
    progress.finish_and_clear();
    if format == Format::Json {
        writeln!(out, "{}]", if classified == 0 { "" } else { "\n" })?;
    }
    out.flush()?;
    match (classified, skipped) {
        (_, 0) => Ok(Outcome::Done),
        (0, 1) => bail!("{}", last_error.unwrap_or_default()),
        (0, n) => bail!("none of the {n} images could be classified (see the warnings above)"),
        (ok, n) => {
            eprintln!("warning: classified {ok} of {} images; skipped {n} that could not be read or classified", ok + n);
            Ok(Outcome::Partial)
        }
    }
}

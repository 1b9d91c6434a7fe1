//! `perch-run`: runs `.perch` plans on a device.

mod bench;
mod classify;
#[cfg(feature = "serve")]
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use perch_runtime::Plan;

/// Run Perch plans (.perch files written by `perch compile`) on this machine: classify images, measure
/// speed, or serve predictions over HTTP as TorchServe does.
#[derive(Parser)]
#[command(
    version,
    after_help = "Examples:
  perch-run classify --plan fashion-cnn-s.perch shoe.png shirts/ --top 3
  perch-run classify --plan fashion-cnn-s.perch photos/ --csv > predictions.csv
  perch-run bench --plan fashion-cnn-s.perch --duration 10 --profile
  perch-run serve --models fashion=fashion-cnn-s.perch --host 0.0.0.0 --port 8080
  curl -T shoe.png http://localhost:8080/predictions/fashion"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify images: each IMAGE file, and every image file found under each DIR (recursively).
    ///
    /// Files that cannot be read or decoded are skipped with a warning, and counted at the end.
    ///
    /// Exit status: 0 when every image was classified, 2 when some were skipped, 1 when none could be
    /// (or on any other error).
    #[command(after_help = "Examples:
  perch-run classify --plan model.perch boot.png
  perch-run classify --plan model.perch photos/ --json > predictions.json
  perch-run classify --plan model.perch photos/ --csv --top 1 > predictions.csv")]
    Classify(classify::Args),
    /// Measure how fast a plan runs here: latency percentiles, throughput, cold start, memory.
    ///
    /// The input is a fixed pseudo-random tensor (or --image), so runs on different machines and tools
    /// see the same numbers. Latency is per run of one batch, from input tensor to output tensor
    /// (no decode or preprocessing), after --warmup runs; tract's state is reused between runs, as
    /// `perch-run serve` and `classify` do.
    #[command(after_help = "Examples:
  perch-run bench --plan model.perch                      5 s of runs, text report
  perch-run bench --plan model.perch --runs 1000 --json   exactly 1000 runs, JSON report
  perch-run bench --plan model.perch --profile            adds the time per node of the optimized model
  perch-run bench --plan model.perch --threads 4          tract's matrix products on 4 threads
                                                          (builds with the `multithread` feature)")]
    Bench(bench::Args),
    /// Serve predictions over HTTP with TorchServe's inference API (and its management API's read side).
    ///
    /// POST or PUT /predictions/NAME with the image as the body answers the 5 most probable classes as
    /// {"label": probability, ...}, as TorchServe's image classifier does. Also: GET /ping,
    /// GET /models, GET /models/NAME, and GET /metrics (Prometheus). Errors are JSON
    /// {"code", "type", "message"}. SIGTERM or Ctrl-C stops accepting connections, finishes the
    /// requests in flight, and exits.
    #[cfg(feature = "serve")]
    #[command(after_help = "Examples:
  perch-run serve --model-store plans/                    every plans/*.perch, named by file stem
  perch-run serve --models fashion=fashion-cnn-s.perch --host 0.0.0.0
  curl -T shoe.png http://localhost:8080/predictions/fashion
  curl -X POST --data-binary @shoe.png http://localhost:8080/predictions/fashion
  curl http://localhost:8080/metrics")]
    Serve(serve::Args),
    /// Show a plan's manifest: source model, input, preprocessing, labels, versions, checksum.
    Info {
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
    },
    /// Internal: load a plan, run it once, print the timings as JSON (bench's cold start measurement).
    #[command(hide = true)]
    ColdStart(bench::ColdStartArgs),
}

fn info(path: &Path) -> Result<()> {
    let plan = Plan::load(path).with_context(|| format!("{}", path.display()))?;
    println!("plan      {}\n{}", path.display(), plan.summary());
    Ok(())
}

/// How a command ended, beyond success.
enum Outcome {
    Done,
    /// Some inputs were skipped; the rest was done.
    Partial,
}

fn main() -> ExitCode {
    let entered = Instant::now();
    // `perch-run ... | head` must end quietly, as other Unix tools do, not panic on a closed stdout.
    #[cfg(unix)]
    // SAFETY: called before any thread starts; restores the default disposition of one signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Classify(args) => classify::run(&args),
        Command::Bench(args) => bench::run(&args, entered).map(|()| Outcome::Done),
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::run(&args).map(|()| Outcome::Done),
        Command::Info { plan } => info(&plan).map(|()| Outcome::Done),
        Command::ColdStart(args) => bench::cold_start(&args, entered).map(|()| Outcome::Done),
    };
    match result {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Partial) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

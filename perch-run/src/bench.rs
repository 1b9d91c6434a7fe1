//! `perch-run bench`: latency, throughput, cold start, memory, and time per node.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use perch_runtime::bench::{Latency, peak_rss_bytes, synthetic_input};
use perch_runtime::preprocess::open_image;
use perch_runtime::profile::Profile;
use perch_runtime::{ChannelPolicy, Classifier, Plan};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// The plan to measure.
    #[arg(long, value_name = "FILE")]
    plan: PathBuf,
    /// Measure exactly N runs (instead of --duration).
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    runs: Option<usize>,
    /// Measure runs for this many seconds (at least 10 runs). Default: 5.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Unmeasured runs first (caches, page faults, lazy allocations).
    #[arg(long, value_name = "N", default_value_t = 10)]
    warmup: usize,
    /// Images per run. Default: the plan's fixed batch size, else 1.
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// Threads for tract's matrix products. More than 1 needs a build with the `multithread` feature,
    /// and runs tract's convolutions instead of Perch's one-thread float ones: it helps large layers
    /// only, measure.
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// Run this image (decoded and preprocessed once, before timing) instead of the synthetic input.
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// Also time each node of the optimized model (in separate runs after the measured ones, so the
    /// latency figures carry no profiling overhead).
    #[arg(long)]
    profile: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Skip the cold start measurement (it starts this program again 5 times).
    #[arg(long)]
    no_cold_start: bool,
}

#[derive(clap::Args)]
pub struct ColdStartArgs {
    #[arg(long)]
    plan: PathBuf,
    #[arg(long)]
    batch: usize,
    #[arg(long)]
    threads: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Load, optimize and one run, timed apart: what the first result costs after `entered`.
struct Startup {
    load: Duration,
    optimize: Duration,
    first_run: Duration,
    /// From `main` to the first result.
    total: Duration,
}

fn start(plan_path: &std::path::Path, batch: Option<usize>, threads: usize, entered: Instant) -> Result<(Classifier, Startup)> {
    let t = Instant::now();
    let plan = Plan::load(plan_path).with_context(|| format!("{}", plan_path.display()))?;
    let load = t.elapsed();
    let batch = batch.or(plan.manifest.input.fixed_batch()).unwrap_or(1);
    let t = Instant::now();
    let classifier = Classifier::with_threads(plan, batch, threads).with_context(|| format!("{}", plan_path.display()))?;
    let optimize = t.elapsed();
    let t = Instant::now();
    let input = synthetic_input(classifier.values_per_image() * batch);
    classifier.session()?.run(&input)?;
    let first_run = t.elapsed();
    Ok((classifier, Startup { load, optimize, first_run, total: entered.elapsed() }))
}

/// The hidden `cold-start` command: what a fresh process needs for its first result.
pub fn cold_start(args: &ColdStartArgs, entered: Instant) -> Result<()> {
    let (_, s) = start(&args.plan, Some(args.batch), args.threads, entered)?;
    println!(
        "{}",
        json!({ "load_ms": ms(s.load), "optimize_ms": ms(s.optimize), "first_run_ms": ms(s.first_run), "main_to_first_result_ms": ms(s.total) })
    );
    Ok(())
}

/// Starts this program `times` times and times each from spawn to its first result on stdout: the cold
/// start a service or a script sees, exec and dynamic loading included. The median run.
fn measure_cold_start(args: &Args, batch: usize, times: usize) -> Result<(Duration, serde_json::Value)> {
    let exe = std::env::current_exe().context("cannot find this program to start it again")?;
    let mut runs = Vec::new();
    for _ in 0..times {
        let started = Instant::now();
        let mut child = Command::new(&exe)
            .args(["cold-start", "--batch", &batch.to_string(), "--threads", &args.threads.to_string(), "--plan"])
            .arg(&args.plan)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let took = started.elapsed();
        let status = child.wait()?;
        if !status.success() || line.is_empty() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            bail!("the cold start run failed ({status}): {}", err.trim());
        }
        let inside: serde_json::Value = serde_json::from_str(&line).context("cold start run printed no timings")?;
        runs.push((took, inside));
    }
    runs.sort_by_key(|(d, _)| *d);
    Ok(runs.swap_remove(runs.len() / 2))
}

pub fn run(args: &Args, entered: Instant) -> Result<()> {
    if args.batch == Some(0) {
        bail!("--batch must be at least 1");
    }
    if let Some(d) = args.duration
        && !(d.is_finite() && d > 0.0 && d <= 86_400.0)
    {
        bail!("--duration must be a number of seconds between 0 and 86400, not {d}");
    }
    if args.runs == Some(0) {
        bail!("--runs must be at least 1");
    }
    let (classifier, startup) = start(&args.plan, args.batch, args.threads, entered)?;
    let batch = classifier.batch_size();
    let input = match &args.image {
        Some(path) => {
            let image = open_image(path).with_context(|| format!("{}", path.display()))?;
            let one = classifier.preprocess(&image, ChannelPolicy::Convert).with_context(|| format!("{}", path.display()))?;
            one.repeat(batch)
        }
        None => synthetic_input(classifier.values_per_image() * batch),
    };
    let mut session = classifier.session()?;
    for _ in 0..args.warmup {
        session.run(&input)?;
    }
    let duration = Duration::from_secs_f64(args.duration.unwrap_or(5.0));
    let mut samples = Vec::with_capacity(args.runs.unwrap_or(1024));
    let measuring = Instant::now();
    loop {
        let t = Instant::now();
        session.run(&input)?;
        samples.push(t.elapsed());
        let done = match args.runs {
            Some(n) => samples.len() >= n,
            None => samples.len() >= 10 && measuring.elapsed() >= duration,
        };
        if done {
            break;
        }
    }
    let wall = measuring.elapsed();
    let latency = Latency::of(&samples).context("no runs")?;
    let throughput = (samples.len() * batch) as f64 / wall.as_secs_f64();
    let peak_rss = peak_rss_bytes();
    let profile = if args.profile {
        let mut profile = Profile::new(classifier.optimized_model());
        for _ in 0..samples.len().min(10_000) {
            session.run_profiled(&input, &mut profile)?;
        }
        Some(profile)
    } else {
        None
    };
    drop(session);
    let cold = if args.no_cold_start { None } else { Some(measure_cold_start(args, batch, 5)) };

    let manifest = classifier.manifest();
    let input_name = args.image.as_ref().map_or("synthetic".to_string(), |p| p.display().to_string());
    if args.json {
        let nodes = profile.as_ref().map(|p| {
            p.nodes(classifier.optimized_model())
                .iter()
                .map(|n| json!({ "node": n.node, "name": n.name, "op": n.op, "us_per_run": us(n.per_run), "share": n.share }))
                .collect::<Vec<_>>()
        });
        let by_op = profile.as_ref().map(|p| {
            p.by_op(classifier.optimized_model())
                .iter()
                .map(|(op, t, share)| json!({ "op": op, "us_per_run": us(*t), "share": share }))
                .collect::<Vec<_>>()
        });
        let (cold_total, cold_inside, cold_error) = match &cold {
            Some(Ok((d, inside))) => (Some(ms(*d)), Some(inside.clone()), None),
            Some(Err(e)) => (None, None, Some(format!("{e:#}"))),
            None => (None, None, None),
        };
        let report = json!({
            "plan": args.plan.display().to_string(),
            "checksum": classifier.checksum(),
            "quantization": manifest.quantization.scheme,
            "input": input_name,
            "batch": batch,
            "threads": classifier.threads(),
            "warmup": args.warmup,
            "runs": latency.runs,
            "latency_us": {
                "min": us(latency.min), "p50": us(latency.p50), "p90": us(latency.p90),
                "p99": us(latency.p99), "max": us(latency.max), "mean": us(latency.mean),
            },
            "throughput_images_per_s": throughput,
            "cold_start_ms": {
                "process_start_to_first_result": cold_total,
                "process_start_to_first_result_breakdown": cold_inside,
                "process_start_error": cold_error,
                "this_process": {
                    "load": ms(startup.load), "optimize": ms(startup.optimize),
                    "first_run": ms(startup.first_run), "main_to_first_result": ms(startup.total),
                },
            },
            "peak_rss_bytes": peak_rss,
            "profile": nodes,
            "profile_by_op": by_op,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let shape = perch_runtime::plan::manifest::shape_to_string(&manifest.input.shape);
    println!("plan        {} ({}, input [{shape}], sha256:{})", args.plan.display(), manifest.quantization.scheme, &classifier.checksum()[..12]);
    println!(
        "setup       batch {batch}, {} tract thread(s), {input_name} input, {} warm-up run(s), {} CPU(s) here",
        classifier.threads(),
        args.warmup,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let inside = format!(
        "load {:.1} ms, optimize {:.1} ms, first run {:.2} ms",
        ms(startup.load),
        ms(startup.optimize),
        ms(startup.first_run)
    );
    match &cold {
        Some(Ok((d, c))) => println!(
            "cold start  {:.1} ms from process start to first result (median of 5: load {:.1} ms, optimize {:.1} ms, first run {:.2} ms)",
            ms(*d),
            c["load_ms"].as_f64().unwrap_or(f64::NAN),
            c["optimize_ms"].as_f64().unwrap_or(f64::NAN),
            c["first_run_ms"].as_f64().unwrap_or(f64::NAN),
        ),
        Some(Err(e)) => println!("cold start  {:.1} ms from main to first result ({inside}); process start not measured: {e:#}", ms(startup.total)),
        None => println!("cold start  {:.1} ms from main to first result ({inside})", ms(startup.total)),
    }
    println!(
        "latency     min {:.1} us, p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, max {:.1} us, mean {:.1} us ({} runs in {:.2} s)",
        us(latency.min),
        us(latency.p50),
        us(latency.p90),
        us(latency.p99),
        us(latency.max),
        us(latency.mean),
        latency.runs,
        wall.as_secs_f64()
    );
    println!("throughput  {throughput:.0} images/s");
    match peak_rss {
        Some(b) => println!("peak RSS    {:.1} MB", b as f64 / 1e6),
        None => println!("peak RSS    not reported by this OS"),
    }
    if let Some(p) = &profile {
        let model = classifier.optimized_model();
        println!("\nprofile: {} runs, mean time per run, slowest first", p.runs());
        println!("{:>10}  {:>6}  {:<28} node", "us/run", "share", "op");
        for n in p.nodes(model) {
            println!("{:>10.2}  {:>5.1}%  {:<28} {} #{}", us(n.per_run), 100.0 * n.share, n.op, n.name, n.node);
        }
        println!("\nby op");
        for (op, t, share) in p.by_op(model) {
            println!("{:>10.2}  {:>5.1}%  {op}", us(t), 100.0 * share);
        }
    }
    Ok(())
}

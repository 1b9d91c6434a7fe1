//! Latency of an int8 plan against its float plan on this machine: batch 1, one thread, the same
//! preprocessed image, rounds interleaved (float, int8, float, int8...) so that machine noise hits
//! both alike. A benchmark, not a test: `cargo xtask bench-int8` runs it and prints the figures.
//!
//! Usage: perch-bench-int8 FLOAT.perch INT8.perch [ROUNDS] [RUNS_PER_ROUND]

use std::time::Instant;

use anyhow::{Context, Result};
use perch_datasets::{Dataset, Item};
use perch_runtime::{ChannelPolicy, Classifier};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [float, int8, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: perch-bench-int8 FLOAT.perch INT8.perch [ROUNDS] [RUNS_PER_ROUND]");
    };
    let rounds: usize = rest.first().map_or(Ok(15), |s| s.parse()).context("ROUNDS")?;
    let runs: usize = rest.get(1).map_or(Ok(200), |s| s.parse()).context("RUNS_PER_ROUND")?;
    let plans = [("float", Classifier::load(float, 1)?), ("int8", Classifier::load(int8, 1)?)];
    let test = Dataset::open("fashion-mnist:test")?;
    let Item::Image(img) = test.item(0) else { anyhow::bail!("IDX items are images") };
    let values = plans[0].1.preprocess(&img, ChannelPolicy::Strict)?;
    let mut per_round = [vec![], vec![]];
    for _ in 0..rounds {
        for (i, (_, c)) in plans.iter().enumerate() {
            for _ in 0..runs / 10 {
                c.run(&values)?;
            }
            let t = Instant::now();
            for _ in 0..runs {
                std::hint::black_box(c.run(&values)?);
            }
            per_round[i].push(t.elapsed().as_secs_f64() * 1e6 / runs as f64);
        }
    }
    let stat = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2])
    };
    let (f_best, f_med) = stat(&mut per_round[0]);
    let (q_best, q_med) = stat(&mut per_round[1]);
    println!("float: best {f_best:.1} us, median {f_med:.1} us per inference (batch 1, {rounds} rounds of {runs})");
    println!("int8:  best {q_best:.1} us, median {q_med:.1} us per inference");
    println!("int8 / float: {:.2} (best), {:.2} (median)", q_best / f_best, q_med / f_med);
    Ok(())
}

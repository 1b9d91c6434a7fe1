//! A load generator for `perch-run serve` (`cargo xtask bench-serve` runs it): CLIENTS threads, each
//! with its own keep-alive connection, PUT the same image for SECS seconds, as `curl -T` would.
//!
//! ```sh
//! cargo run --release -p perch-runtime --example load -- http://127.0.0.1:8080 MODEL IMAGE 64 30
//! ```
//! Prints requests, errors by status, throughput, latency percentiles, and the server's RSS (from its
//! /metrics) every 5 s. Exits 1 if any request failed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use perch_runtime::bench::Latency;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, model, image, clients, secs] = args.as_slice() else {
        eprintln!("usage: load BASE_URL MODEL IMAGE CLIENTS SECONDS");
        std::process::exit(2);
    };
    let body = std::fs::read(image).unwrap_or_else(|e| {
        eprintln!("error: {image}: {e}");
        std::process::exit(2)
    });
    let (clients, secs): (usize, u64) = match (clients.parse(), secs.parse()) {
        (Ok(c), Ok(s)) if c > 0 && s > 0 => (c, s),
        _ => {
            eprintln!("error: CLIENTS and SECONDS must be positive integers");
            std::process::exit(2)
        }
    };
    let url = format!("{base}/predictions/{model}");
    let agent = || -> ureq::Agent {
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(60))).build().into()
    };
    // The server must answer before the clock starts.
    let ready = Instant::now() + Duration::from_secs(60);
    while agent().get(&format!("{base}/ping")).call().is_err() {
        assert!(Instant::now() < ready, "server at {base} does not answer /ping");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let rss = Arc::new(Mutex::new(Vec::new()));
    let monitor = {
        let (stop, rss, metrics_url) = (stop.clone(), rss.clone(), format!("{base}/metrics"));
        std::thread::spawn(move || {
            let agent = agent();
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut r) = agent.get(&metrics_url).call()
                    && let Ok(text) = r.body_mut().read_to_string()
                    && let Some(v) = text.lines().find_map(|l| l.strip_prefix("process_resident_memory_bytes ")?.parse::<f64>().ok())
                {
                    rss.lock().unwrap().push((started.elapsed().as_secs(), v / 1e6));
                }
                std::thread::sleep(Duration::from_secs(5));
            }
        })
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let results: Vec<(Vec<Duration>, BTreeMap<String, usize>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let (url, body) = (&url, &body);
                s.spawn(move || {
                    let agent = agent();
                    let mut times = Vec::new();
                    let mut outcomes = BTreeMap::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let outcome = match agent.put(url).send(&body[..]) {
                            Ok(mut r) => {
                                let status = r.status().as_u16();
                                let text = r.body_mut().read_to_string();
                                match (status, text) {
                                    (200, Ok(t)) if t.trim_start().starts_with('{') => "200".to_string(),
                                    (s, _) => s.to_string(),
                                }
                            }
                            Err(e) => format!("transport error: {e}"),
                        };
                        times.push(t.elapsed());
                        *outcomes.entry(outcome).or_insert(0) += 1;
                    }
                    (times, outcomes)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = monitor.join();
    let mut all = Vec::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (t, o) in results {
        all.extend(t);
        for (k, v) in o {
            *outcomes.entry(k).or_insert(0) += v;
        }
    }
    let l = Latency::of(&all).expect("requests were made");
    let errors: usize = outcomes.iter().filter(|(k, _)| *k != "200").map(|(_, v)| v).sum();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("clients     {clients}, {:.1} s, PUT {} ({} bytes)", wall.as_secs_f64(), url, body.len());
    println!("requests    {} ({:.0} per second), errors {errors} {outcomes:?}", l.runs, l.runs as f64 / wall.as_secs_f64());
    println!(
        "latency     min {:.0} us, p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us, mean {:.0} us",
        us(l.min),
        us(l.p50),
        us(l.p90),
        us(l.p99),
        us(l.max),
        us(l.mean)
    );
    let rss = rss.lock().unwrap();
    println!(
        "server RSS  {}",
        rss.iter().map(|(t, mb)| format!("{t} s: {mb:.1} MB")).collect::<Vec<_>>().join(", ")
    );
    if errors > 0 {
        std::process::exit(1);
    }
}

//! The server's counters, in Prometheus' text exposition format (version 0.0.4) at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histograms' buckets, in seconds.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default)]
struct Histogram {
    /// Per bucket of [`BUCKETS`] (not cumulative), then the overflow bucket.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len() + 1];
        }
        let at = BUCKETS.iter().position(|&b| s <= b).unwrap_or(BUCKETS.len());
        self.counts[at] += 1;
        self.sum += s;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, model: &str) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{model=\"{model}\",le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{model=\"{model}\",le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{model=\"{model}\"}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{model=\"{model}\"}} {}", self.count);
    }
}

#[derive(Default)]
struct Counts {
    /// (model, HTTP status) -> requests.
    requests: BTreeMap<(String, u16), u64>,
    /// (model, error type) -> errors.
    errors: BTreeMap<(String, &'static str), u64>,
    request_seconds: BTreeMap<String, Histogram>,
    inference_seconds: BTreeMap<String, Histogram>,
}

/// What the server counts. Requests for a model that does not exist are counted under `model=""`, so a
/// client cannot grow the label set.
pub struct Metrics {
    counts: Mutex<Counts>,
    /// Jobs waiting for a worker now.
    pub queued: AtomicUsize,
    /// Jobs a worker is running now.
    pub running: AtomicUsize,
    /// Prediction requests between their headers and their answer.
    in_flight: AtomicUsize,
    /// Client connections open now.
    pub connections: AtomicUsize,
    /// Connections answered 503 and closed because `max_connections` were open and none was idle.
    pub refused_connections: AtomicUsize,
    /// Idle keep-alive connections closed to make room for a new one at `max_connections`.
    pub reclaimed_connections: AtomicUsize,
    workers: usize,
    queue_capacity: usize,
}

impl Metrics {
    pub fn new(models: &[String], workers: usize, queue_capacity: usize) -> Metrics {
        let mut counts = Counts::default();
        // Every model shows from the start, so a dashboard sees zeros rather than missing series.
        for m in models {
            counts.request_seconds.insert(m.clone(), Histogram::default());
            counts.inference_seconds.insert(m.clone(), Histogram::default());
        }
        Metrics {
            counts: Mutex::new(counts),
            queued: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            refused_connections: AtomicUsize::new(0),
            reclaimed_connections: AtomicUsize::new(0),
            workers,
            queue_capacity,
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic while holding the lock leaves counts that are still counts.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a prediction request in flight until the guard drops (answered, or abandoned by its client).
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// One answered prediction request: its status, its error type if it failed, and its time.
    pub fn request(&self, model: &str, status: u16, error: Option<&'static str>, took: Duration) {
        let mut c = self.counts();
        *c.requests.entry((model.to_string(), status)).or_default() += 1;
        if let Some(kind) = error {
            *c.errors.entry((model.to_string(), kind)).or_default() += 1;
        }
        if !model.is_empty() {
            c.request_seconds.entry(model.to_string()).or_default().observe(took);
        }
    }

    /// Time a worker spent on one image: decode, preprocess, inference.
    pub fn inference(&self, model: &str, took: Duration) {
        self.counts().inference_seconds.entry(model.to_string()).or_default().observe(took);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let c = self.counts();
        let mut out = String::new();
        out.push_str("# HELP perch_requests_total Prediction requests answered, by model and HTTP status.\n");
        out.push_str("# TYPE perch_requests_total counter\n");
        for ((model, code), n) in &c.requests {
            let _ = writeln!(out, "perch_requests_total{{model=\"{}\",code=\"{code}\"}} {n}", escape(model));
        }
        out.push_str("# HELP perch_request_errors_total Prediction requests that failed, by model and error type.\n");
        out.push_str("# TYPE perch_request_errors_total counter\n");
        for ((model, kind), n) in &c.errors {
            let _ = writeln!(out, "perch_request_errors_total{{model=\"{}\",type=\"{kind}\"}} {n}", escape(model));
        }
        out.push_str("# HELP perch_request_duration_seconds Time from a prediction request's arrival to its answer.\n");
        out.push_str("# TYPE perch_request_duration_seconds histogram\n");
        for (model, h) in &c.request_seconds {
            h.write(&mut out, "perch_request_duration_seconds", &escape(model));
        }
        out.push_str("# HELP perch_inference_duration_seconds Worker time per image: decode, preprocess, inference.\n");
        out.push_str("# TYPE perch_inference_duration_seconds histogram\n");
        for (model, h) in &c.inference_seconds {
            h.write(&mut out, "perch_inference_duration_seconds", &escape(model));
        }
        drop(c);
        let gauges = [
            ("perch_requests_in_flight", "Prediction requests received and not yet answered.", self.in_flight.load(Ordering::Relaxed)),
            ("perch_queue_depth", "Requests waiting for a worker.", self.queued.load(Ordering::Relaxed)),
            ("perch_queue_capacity", "Requests that may wait before the server answers 503.", self.queue_capacity),
            ("perch_busy_workers", "Workers running a request.", self.running.load(Ordering::Relaxed)),
            ("perch_workers", "Inference worker threads.", self.workers),
            ("perch_connections_open", "Client connections open.", self.connections.load(Ordering::Relaxed)),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let counters = [
            (
                "perch_connections_refused_total",
                "Connections answered 503 and closed because --max-connections were open, none of them idle.",
                self.refused_connections.load(Ordering::Relaxed),
            ),
            (
                "perch_connections_reclaimed_total",
                "Idle keep-alive connections closed to make room for a new one at --max-connections.",
                self.reclaimed_connections.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        if let Some(rss) = crate::bench::current_rss_bytes() {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
            );
        }
        out
    }
}

pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = Metrics::new(&["m".to_string()], 2, 8);
        m.request("m", 200, None, Duration::from_micros(300));
        m.request("m", 200, None, Duration::from_millis(20));
        m.request("m", 400, Some("BadRequestException"), Duration::from_millis(2));
        m.request("", 404, Some("ModelNotFoundException"), Duration::from_micros(10));
        let text = m.render();
        for line in [
            "perch_requests_total{model=\"m\",code=\"200\"} 2",
            "perch_requests_total{model=\"m\",code=\"400\"} 1",
            "perch_requests_total{model=\"\",code=\"404\"} 1",
            "perch_request_errors_total{model=\"m\",type=\"BadRequestException\"} 1",
            "perch_request_duration_seconds_bucket{model=\"m\",le=\"0.0005\"} 1",
            "perch_request_duration_seconds_bucket{model=\"m\",le=\"0.0025\"} 2",
            "perch_request_duration_seconds_bucket{model=\"m\",le=\"0.025\"} 3",
            "perch_request_duration_seconds_bucket{model=\"m\",le=\"+Inf\"} 3",
            "perch_request_duration_seconds_count{model=\"m\"} 3",
            "perch_inference_duration_seconds_count{model=\"m\"} 0",
            "perch_workers 2",
            "perch_queue_capacity 8",
        ] {
            assert!(text.lines().any(|l| l == line), "`{line}` missing from:\n{text}");
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

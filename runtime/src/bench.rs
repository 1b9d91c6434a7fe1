//! Latency statistics and process figures for `perch-run bench` (and for anyone timing a plan).

use std::time::Duration;

/// Latency distribution of a set of runs. Percentiles are nearest-rank: p99 of 1,000 runs is the 990th
/// fastest, a time that was really measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    pub runs: usize,
    pub min: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

impl Latency {
    /// `None` when there are no samples.
    pub fn of(samples: &[Duration]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let total: Duration = sorted.iter().sum();
        Some(Latency {
            runs: sorted.len(),
            min: sorted[0],
            p50: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p99: percentile(&sorted, 99.0),
            max: sorted[sorted.len() - 1],
            mean: total / sorted.len() as u32,
        })
    }
}

/// Nearest-rank percentile of sorted, non-empty samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The most resident memory this process has held so far, in bytes (`getrusage`), or `None` where the
/// OS does not say.
pub fn peak_rss_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getrusage writes into the struct we pass and reads nothing else.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
            // Linux reports kilobytes.
            return Some(usage.ru_maxrss as u64 * 1024);
        }
    }
    None
}

/// This process's resident memory now, in bytes (`/proc/self/statm`), where the OS says.
pub fn current_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|p| *p > 0)?)
}

/// Deterministic stand-in input values in [-2, 2): a benchmark must not depend on having an image at
/// hand, and every tool compared must see the same numbers (xorshift32, seed 1).
pub fn synthetic_input(len: usize) -> Vec<f32> {
    let mut x: u32 = 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let l = Latency::of(&samples).unwrap();
        assert_eq!((l.min, l.p50, l.p90, l.p99, l.max), (
            Duration::from_micros(1),
            Duration::from_micros(50),
            Duration::from_micros(90),
            Duration::from_micros(99),
            Duration::from_micros(100)
        ));
        assert_eq!(l.mean, Duration::from_nanos(50_500));
        let one = Latency::of(&[Duration::from_millis(3)]).unwrap();
        assert_eq!((one.p50, one.p99), (Duration::from_millis(3), Duration::from_millis(3)));
        assert!(Latency::of(&[]).is_none());
    }

    #[test]
    fn synthetic_input_is_fixed_and_in_range() {
        let a = synthetic_input(1000);
        assert_eq!(a, synthetic_input(1000));
        assert!(a.iter().all(|v| (-2.0..2.0).contains(v)));
        let mean = a.iter().sum::<f32>() / 1000.0;
        assert!(mean.abs() < 0.2, "mean {mean}");
    }

    #[test]
    fn memory_figures_are_plausible() {
        if cfg!(target_os = "linux") {
            let peak = peak_rss_bytes().unwrap();
            let now = current_rss_bytes().unwrap();
            assert!(peak >= 1 << 20 && now >= 1 << 20 && now <= peak + (16 << 20), "peak {peak}, now {now}");
        }
    }
}

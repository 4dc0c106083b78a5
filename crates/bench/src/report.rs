//! Latency recording and the report: etcd's benchmark summary (total time, slowest, fastest,
//! average, stddev, requests/sec, a response time histogram and the latency distribution), as
//! text or as JSON.
//!
//! Latencies are kept in nanoseconds; percentiles come from an HDR histogram (3 significant
//! digits), the fastest, slowest and average are exact.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The percentiles reported, as etcd's benchmark reports them.
pub const PERCENTILES: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];

/// Per-task latency recorder: the raw latencies (cheap to create and to merge, one per client);
/// the merged samples go into one HDR histogram when the report is made.
#[derive(Clone, Default)]
pub struct Recorder {
    /// Latencies in nanoseconds (at least 1).
    samples: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Records one successful request that took `d`.
    pub fn record(&mut self, d: Duration) {
        self.samples
            .push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
    }

    /// Records one failed request (counted by error message, as etcd's error distribution).
    pub fn error(&mut self, msg: impl Into<String>) {
        *self.errors.entry(msg.into()).or_default() += 1;
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Recorder) {
        self.samples.extend_from_slice(&other.samples);
        for (e, n) in &other.errors {
            *self.errors.entry(e.clone()).or_default() += n;
        }
    }

    pub fn successes(&self) -> u64 {
        self.samples.len() as u64
    }

    pub fn failures(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The report of everything recorded, over a run that took `total`.
    pub fn report(&self, name: &str, total: Duration) -> Report {
        let n = self.samples.len() as u64;
        let secs = total.as_secs_f64();
        let min = self.samples.iter().copied().min().unwrap_or(0);
        let max = self.samples.iter().copied().max().unwrap_or(0);
        // 1 ns .. the slowest request, 3 significant digits (0.1% resolution).
        let mut hist =
            Histogram::<u64>::new_with_bounds(1, max.max(2), 3).expect("valid histogram bounds");
        for &v in &self.samples {
            hist.saturating_record(v);
        }
        let ms = |ns: f64| ns / 1e6;
        let pct = |p: f64| ms(hist.value_at_percentile(p) as f64);
        let sum: u128 = self.samples.iter().map(|&v| v as u128).sum();
        let latency = (n > 0).then(|| Latency {
            fastest_ms: ms(min as f64),
            slowest_ms: ms(max as f64),
            average_ms: ms(sum as f64 / n as f64),
            stddev_ms: ms(hist.stdev()),
            p10_ms: pct(10.0),
            p25_ms: pct(25.0),
            p50_ms: pct(50.0),
            p75_ms: pct(75.0),
            p90_ms: pct(90.0),
            p95_ms: pct(95.0),
            p99_ms: pct(99.0),
            p99_9_ms: pct(99.9),
        });
        Report {
            name: name.to_string(),
            requests: n,
            errors: self.failures(),
            total_secs: secs,
            requests_per_sec: if secs > 0.0 { n as f64 / secs } else { 0.0 },
            latency,
            histogram: if n > 0 {
                buckets(&hist, min, max)
            } else {
                Vec::new()
            },
            error_distribution: self.errors.clone(),
        }
    }
}

/// Ten equal-width buckets between the fastest (`lo`) and slowest (`hi`) request, as etcd's
/// histogram: each is (upper bound in ms, count of requests above the previous bound).
fn buckets(hist: &Histogram<u64>, lo: u64, hi: u64) -> Vec<(f64, u64)> {
    let width = (hi - lo) / 10;
    let bounds: Vec<u64> = (0..=10u64)
        .map(|i| if i == 10 { hi } else { lo + width * i })
        .collect();
    let mut counts = [0u64; 11];
    for v in hist.iter_recorded() {
        // The lowest value of the histogram's bucket is within 0.1% of the recorded ones.
        let x = hist.lowest_equivalent(v.value_iterated_to());
        let i = bounds.iter().position(|b| x <= *b).unwrap_or(10);
        counts[i] += v.count_at_value();
    }
    bounds
        .iter()
        .zip(counts)
        .map(|(b, c)| (*b as f64 / 1e6, c))
        .collect()
}

/// Latency statistics in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub fastest_ms: f64,
    pub slowest_ms: f64,
    pub average_ms: f64,
    pub stddev_ms: f64,
    pub p10_ms: f64,
    pub p25_ms: f64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
}

impl Latency {
    fn percentiles(&self) -> [f64; 8] {
        [
            self.p10_ms,
            self.p25_ms,
            self.p50_ms,
            self.p75_ms,
            self.p90_ms,
            self.p95_ms,
            self.p99_ms,
            self.p99_9_ms,
        ]
    }
}

/// One benchmark's summary.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// e.g. `put`, `range`, `watch-latency-put`, `txn-mixed-read`.
    pub name: String,
    /// Successful requests (the ones with a latency).
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Wall-clock time of the run.
    pub total_secs: f64,
    /// Successful requests per second of wall-clock time.
    pub requests_per_sec: f64,
    /// Absent when no request succeeded.
    pub latency: Option<Latency>,
    /// (upper bound in ms, count).
    pub histogram: Vec<(f64, u64)>,
    /// Error message -> count.
    pub error_distribution: BTreeMap<String, u64>,
}

impl Report {
    /// etcd's text summary, in seconds with four decimals.
    pub fn to_text(&self) -> String {
        let s = |ms: f64| format!("{:.4} secs", ms / 1e3);
        let mut out = String::new();
        let _ = writeln!(out, "\nSummary ({}):", self.name);
        let _ = writeln!(out, "  Total:\t{:.4} secs.", self.total_secs);
        if let Some(l) = &self.latency {
            let _ = writeln!(out, "  Slowest:\t{}.", s(l.slowest_ms));
            let _ = writeln!(out, "  Fastest:\t{}.", s(l.fastest_ms));
            let _ = writeln!(out, "  Average:\t{}.", s(l.average_ms));
            let _ = writeln!(out, "  Stddev:\t{}.", s(l.stddev_ms));
        }
        let _ = writeln!(out, "  Requests/sec:\t{:.4}", self.requests_per_sec);
        if let Some(l) = &self.latency {
            let max = self.histogram.iter().map(|b| b.1).max().unwrap_or(0);
            let _ = writeln!(out, "\nResponse time histogram:");
            for (bound, count) in &self.histogram {
                let bar = "∎".repeat((count * 40).checked_div(max).unwrap_or(0) as usize);
                let _ = writeln!(out, "  {:.4} [{}]\t|{}", bound / 1e3, count, bar);
            }
            let _ = writeln!(out, "\nLatency distribution:");
            for (p, v) in PERCENTILES.iter().zip(l.percentiles()) {
                let _ = writeln!(out, "  {p}% in {}.", s(v));
            }
        }
        if !self.error_distribution.is_empty() {
            let _ = writeln!(out, "\nError distribution:");
            for (e, n) in &self.error_distribution {
                let _ = writeln!(out, "  [{n}]\t{e}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_extremes() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        for i in 1..=1000u64 {
            let r = if i % 2 == 0 { &mut a } else { &mut b };
            r.record(Duration::from_micros(i * 10));
        }
        b.error("boom");
        a.merge(&b);
        let r = a.report("put", Duration::from_secs(2));
        assert_eq!(r.requests, 1000);
        assert_eq!(r.errors, 1);
        assert_eq!(r.requests_per_sec, 500.0);
        let l = r.latency.clone().unwrap();
        assert_eq!(l.fastest_ms, 0.01);
        assert_eq!(l.slowest_ms, 10.0);
        assert!((l.p50_ms - 5.0).abs() < 0.01, "{l:?}");
        assert!((l.p99_ms - 9.9).abs() < 0.01, "{l:?}");
        assert!((l.average_ms - 5.005).abs() < 1e-9, "{l:?}");
        assert_eq!(r.histogram.len(), 11);
        assert_eq!(r.histogram.iter().map(|b| b.1).sum::<u64>(), 1000);
        let text = r.to_text();
        assert!(text.contains("99.9% in 0.0100 secs."), "{text}");
        assert!(text.contains("[1]\tboom"), "{text}");
    }

    #[test]
    fn empty_report_has_no_latency() {
        let r = Recorder::new().report("range", Duration::from_secs(1));
        assert_eq!(r.requests, 0);
        assert!(r.latency.is_none());
        assert!(r.histogram.is_empty());
    }
}

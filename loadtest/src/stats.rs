//! Latency histograms (HDR), per-client counters and the numbers derived from
//! them; the bounded stop every scenario runs under.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Latencies are recorded in microseconds, 1 µs to 10 min, 3 significant digits.
const MAX_US: u64 = 600_000_000;

/// One client's measurements; merged at the end of a scenario.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub hist: Histogram<u64>,
    pub ops: u64,
    pub errors: u64,
    pub rows: u64,
    pub bytes: u64,
    /// The first few error messages (for the report).
    pub error_samples: Vec<String>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        // 3 significant digits over this range always builds.
        #[allow(clippy::unwrap_used)]
        let hist = Histogram::new_with_bounds(1, MAX_US, 3).unwrap();
        Recorder {
            hist,
            ops: 0,
            errors: 0,
            rows: 0,
            bytes: 0,
            error_samples: Vec::new(),
        }
    }

    pub fn record(&mut self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_US);
        self.hist.saturating_record(us);
        self.ops += 1;
    }

    pub fn error(&mut self, msg: impl Into<String>) {
        self.errors += 1;
        if self.error_samples.len() < 5 {
            self.error_samples.push(msg.into());
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides: add cannot fail.
        let _ = self.hist.add(&other.hist);
        self.ops += other.ops;
        self.errors += other.errors;
        self.rows += other.rows;
        self.bytes += other.bytes;
        for e in &other.error_samples {
            if self.error_samples.len() < 5 && !self.error_samples.contains(e) {
                self.error_samples.push(e.clone());
            }
        }
    }

    pub fn latency(&self) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        if self.hist.is_empty() {
            return Latency::default();
        }
        Latency {
            mean_ms: self.hist.mean() / 1000.0,
            p50_ms: ms(self.hist.value_at_quantile(0.50)),
            p99_ms: ms(self.hist.value_at_quantile(0.99)),
            p999_ms: ms(self.hist.value_at_quantile(0.999)),
            max_ms: ms(self.hist.max()),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// `value / base`, when both are meaningful.
pub fn ratio(value: f64, base: f64) -> Option<f64> {
    if value.is_finite() && base.is_finite() && base > 0.0 && value >= 0.0 {
        Some(value / base)
    } else {
        None
    }
}

/// Per second over `secs`, 0 when nothing was measured.
pub fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// When a scenario stops: `duration` after the warm-up, or after `max_ops`
/// measured operations, or when asked (Ctrl-C), whichever comes first.
/// Every client asks before each operation.
#[derive(Debug)]
pub struct Bound {
    pub measure_from: Instant,
    pub deadline: Instant,
    max_ops: Option<u64>,
    issued: AtomicU64,
    stopped: AtomicBool,
    /// Operations completed (measured), for the progress line.
    pub done: AtomicU64,
    pub errors: AtomicU64,
}

/// What a client may do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Go {
    /// Run, unmeasured.
    Warmup,
    /// Run and record.
    Measure,
    Stop,
}

impl Bound {
    pub fn new(start: Instant, warmup: Duration, duration: Duration, max_ops: Option<u64>) -> Bound {
        let measure_from = start + warmup;
        Bound {
            measure_from,
            deadline: measure_from + duration,
            max_ops,
            issued: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// May a client start `n` more operations at `now`?
    pub fn next(&self, now: Instant, n: u64) -> Go {
        if self.stopped.load(Ordering::Relaxed) {
            return Go::Stop;
        }
        if now >= self.deadline {
            self.stop();
            return Go::Stop;
        }
        if now < self.measure_from {
            return Go::Warmup;
        }
        if let Some(max) = self.max_ops {
            let before = self.issued.fetch_add(n, Ordering::Relaxed);
            if before >= max {
                self.stop();
                return Go::Stop;
            }
        }
        Go::Measure
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// The time left before the deadline (zero once past it).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_from_the_histogram() {
        let mut r = Recorder::new();
        for us in 1..=1000u64 {
            r.record(Duration::from_micros(us));
        }
        let l = r.latency();
        assert_eq!(r.ops, 1000);
        assert!((l.p50_ms - 0.5).abs() < 0.002, "{l:?}");
        assert!((l.p99_ms - 0.99).abs() < 0.002, "{l:?}");
        assert!((l.p999_ms - 0.999).abs() < 0.002, "{l:?}");
        assert!((l.mean_ms - 0.5005).abs() < 0.002, "{l:?}");
        assert!((l.max_ms - 1.0).abs() < 0.002, "{l:?}");
    }

    #[test]
    fn merging_adds_up() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(3));
        b.rows = 7;
        b.error("boom");
        b.error("boom");
        a.merge(&b);
        assert_eq!((a.ops, a.rows, a.errors), (2, 7, 2));
        // Samples are kept once each.
        assert_eq!(a.error_samples, vec!["boom".to_string()]);
        assert!((a.latency().mean_ms - 2.0).abs() < 0.01);
        // Out-of-range values are clamped, not dropped.
        a.record(Duration::from_secs(100_000));
        a.record(Duration::ZERO);
        assert_eq!(a.hist.len(), 4);
    }

    #[test]
    fn empty_recorder_has_zero_latency() {
        assert_eq!(Recorder::new().latency(), Latency::default());
    }

    #[test]
    fn ratio_math() {
        assert_eq!(ratio(50.0, 100.0), Some(0.5));
        assert_eq!(ratio(0.0, 100.0), Some(0.0));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(ratio(1.0, f64::INFINITY), None);
        assert_eq!(rate(500, 2.0), 250.0);
        assert_eq!(rate(5, 0.0), 0.0);
    }

    #[test]
    fn bound_stops_at_the_deadline() {
        let t0 = Instant::now();
        let b = Bound::new(t0, Duration::from_secs(1), Duration::from_secs(2), None);
        assert_eq!(b.next(t0, 1), Go::Warmup);
        assert_eq!(b.next(t0 + Duration::from_millis(1500), 1), Go::Measure);
        assert_eq!(
            b.remaining(t0 + Duration::from_millis(1500)),
            Duration::from_millis(1500)
        );
        assert_eq!(b.next(t0 + Duration::from_secs(3), 1), Go::Stop);
        assert!(b.stopped());
        // Once stopped, stays stopped.
        assert_eq!(b.next(t0 + Duration::from_millis(1500), 1), Go::Stop);
    }

    #[test]
    fn bound_stops_at_max_ops() {
        let t0 = Instant::now();
        let b = Bound::new(t0, Duration::ZERO, Duration::from_secs(60), Some(10));
        let mut granted = 0;
        while b.next(t0, 3) == Go::Measure {
            granted += 3;
            assert!(granted < 100);
        }
        // Batches of 3 against 10: 4 batches start (0, 3, 6, 9), the fifth does not.
        assert_eq!(granted, 12);
        assert!(b.stopped());
    }

    #[test]
    fn bound_stops_when_asked() {
        let t0 = Instant::now();
        let b = Bound::new(t0, Duration::ZERO, Duration::from_secs(60), None);
        assert_eq!(b.next(t0, 1), Go::Measure);
        b.stop();
        assert_eq!(b.next(t0, 1), Go::Stop);
    }
}

//! Counters of the data plane, per worker, for the metrics endpoint.
//!
//! Each worker writes only its own cache line, once per session event (open,
//! close, refusal, cancel), never per frame; readers sum over workers.

use super::end::EndReason;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
#[repr(align(128))]
pub struct WorkerCounters {
    pub sessions_opened: AtomicU64,
    pub sessions_closed: AtomicU64,
    pub sessions_refused: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub statements: AtomicU64,
    pub rows: AtomicU64,
    pub masked: AtomicU64,
    pub client_secrets: AtomicU64,
    pub cancels: AtomicU64,
}

impl WorkerCounters {
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// All workers' counters.
pub struct Counters {
    pub workers: Vec<WorkerCounters>,
    /// Sessions ended, by why (indexed by [`EndReason::index`]): a session
    /// event, so one shared array is cheap enough.
    pub ended: [AtomicU64; EndReason::ALL.len()],
}

impl Counters {
    pub fn new(workers: usize) -> Counters {
        Counters {
            workers: (0..workers.max(1)).map(|_| WorkerCounters::default()).collect(),
            ended: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The counters of `worker` (the last one for an out-of-range index).
    pub fn worker(&self, worker: usize) -> &WorkerCounters {
        let i = worker.min(self.workers.len() - 1);
        &self.workers[i]
    }

    /// Counts a session's end.
    pub fn ended(&self, why: EndReason) {
        // `get`: a reason missing from `ALL` is not counted, never a panic.
        if let Some(c) = self.ended.get(why.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn sum(&self, f: impl Fn(&WorkerCounters) -> &AtomicU64) -> u64 {
        self.workers.iter().map(|w| f(w).load(Ordering::Relaxed)).sum()
    }
}

/// Upstream connection pool events, process-wide (session events, not per frame).
pub static UPSTREAM_LOGINS: AtomicU64 = AtomicU64::new(0);
pub static POOL_REUSED: AtomicU64 = AtomicU64::new(0);
pub static POOL_RETURNED: AtomicU64 = AtomicU64::new(0);
pub static POOL_CLOSED: AtomicU64 = AtomicU64::new(0);

pub fn pool_event(e: super::pool::PoolEvent) {
    use super::pool::PoolEvent as P;
    let c = match e {
        P::Reused => &POOL_REUSED,
        P::Returned => &POOL_RETURNED,
        P::Closed => &POOL_CLOSED,
    };
    c.fetch_add(1, Ordering::Relaxed);
}

//! What every protocol's upstream pool shares: the limits a target sets
//! and the events the metrics count.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

/// Limits of one target's pools.
#[derive(Clone, Debug)]
pub struct PoolLimits {
    /// Idle connections the target's pools keep in all (every worker and
    /// key together; 0: no pooling, no deferred login).
    pub max_idle: usize,
    pub idle_timeout: Duration,
    pub lifetime: Duration,
    /// Idle connections kept now, over all workers.
    pub kept: Arc<AtomicUsize>,
}

#[derive(Clone, Copy, Debug)]
pub enum PoolEvent {
    /// A session got a kept connection.
    Reused,
    /// A connection was put back after its reset.
    Returned,
    /// A kept connection was closed (expired, dead, over the limit, old configuration).
    Closed,
}

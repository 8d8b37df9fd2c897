//! Upstream connections kept for reuse, one pool per worker thread.
//!
//! A session gets its upstream connection when its client sends its first
//! message, not at login: idle clients hold no backend (as PgBouncer does),
//! and a connection a session leaves in a clean state (every request
//! answered, no transaction open) is reset with the target's
//! `pool_reset_query` and kept for the next session with the same key:
//! target, upstream account, startup parameters, configuration generation.
//!
//! At login a client is sent the server parameters the last login with its
//! key announced; if the connection it later gets announces others, those
//! are sent as ParameterStatus messages before its first answer.
//!
//! Each worker's pool is its own (thread-local; `core::pool` keeps it).

use super::upstream::Upstream;
use crate::core::pool::{Pool, Pooled};
pub use crate::core::pool::{PoolEvent, PoolLimits};
use crate::proxy::stream::{peek, Peeked};
use std::cell::RefCell;

/// Which upstream connections are interchangeable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The configuration generation (a reload starts new pools).
    pub generation: u64,
    pub target: String,
    pub account: String,
    /// The client's startup parameters passed upstream, sorted.
    pub params: Vec<(String, String)>,
}

impl PoolKey {
    pub fn new(generation: u64, target: &str, account: &str, params: &[(&str, &str)]) -> PoolKey {
        let mut params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        params.sort();
        PoolKey {
            generation,
            target: target.to_string(),
            account: account.to_string(),
            params,
        }
    }
}

impl Pooled for Upstream {
    fn looks_alive(&self) -> bool {
        peek(self.conn.stream.raw_fd()) == Peeked::Nothing
    }

    fn born(&self) -> std::time::Instant {
        self.born
    }

    /// A Terminate when the socket takes it without waiting (plain
    /// sockets), then the close.
    fn close(self) {
        if !self.tls {
            let x = [b'X', 0, 0, 0, 4];
            // SAFETY: the connection's open socket and a live buffer.
            unsafe {
                libc::send(
                    self.conn.stream.raw_fd(),
                    x.as_ptr().cast(),
                    x.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                );
            }
        }
    }
}

thread_local! {
    static POOL: RefCell<Pool<PoolKey, Upstream>> = RefCell::new(Pool::default());
}

/// What the last login with `key` announced, if any.
pub fn announce(key: &PoolKey) -> Option<(std::sync::Arc<PoolKey>, std::sync::Arc<[u8]>)> {
    POOL.with(|p| p.borrow().announce(key))
}

/// Remembers what a login with `key` announced.
pub fn remember(key: &PoolKey, announce: &[u8]) {
    POOL.with(|p| p.borrow_mut().remember(key, announce));
}

/// A kept connection for `key` that still looks alive, newest first.
pub fn take(key: &PoolKey) -> Option<Upstream> {
    POOL.with(|p| p.borrow_mut().take(key))
}

/// Keeps a reset connection for the next session with `key`, if the
/// target's pools have room; closes it otherwise.
pub fn put(key: &PoolKey, mut up: Upstream, limits: &PoolLimits) {
    up.conn.buf = Vec::new();
    POOL.with(|p| p.borrow_mut().put(key, up, limits));
}

/// Closes kept connections that expired, died, or belong to an older
/// configuration than `generation`. Run every few seconds by each worker.
pub fn sweep(generation: u64) {
    POOL.with(|p| p.borrow_mut().sweep(|k| k.generation < generation));
}

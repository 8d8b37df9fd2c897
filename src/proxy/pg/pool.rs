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
//! Each worker's pool is its own (thread-local): a connection never moves
//! between io_uring rings, and nothing here is shared or locked.

use super::upstream::Upstream;
pub use crate::core::pool::{PoolEvent, PoolLimits};
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// One place of a target's `max_idle`, given back when the connection
/// leaves the pool (taken, closed).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn claim(kept: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        kept.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Slot(kept.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct IdleConn {
    up: Upstream,
    since: Instant,
    idle_timeout: Duration,
    lifetime: Duration,
    _slot: Slot,
}

impl IdleConn {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.since) >= self.idle_timeout || now.duration_since(self.up.born) >= self.lifetime
    }
}

#[derive(Default)]
struct Entry {
    idle: Vec<IdleConn>,
    /// What the last login with this key announced (ParameterStatus frames).
    announce: Option<Vec<u8>>,
}

#[derive(Default)]
struct Pool {
    map: HashMap<PoolKey, Entry>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Whether the socket still looks idle and open: no bytes waiting (a
/// terminated backend sends an error before it closes) and no EOF.
fn looks_alive(fd: RawFd) -> bool {
    super::stream::peek(fd) == super::stream::Peeked::Nothing
}

/// Closes an idle connection politely: a Terminate when the socket takes it
/// without waiting (plain sockets), then the close.
fn retire(c: IdleConn) {
    close(c.up);
}

/// What the last login with `key` announced, if any.
pub fn announce(key: &PoolKey) -> Option<Vec<u8>> {
    POOL.with(|p| p.borrow().map.get(key).and_then(|e| e.announce.clone()))
}

/// Keys a worker keeps (each with its announcement and idle connections):
/// clients that vary their startup parameters cannot grow the map further.
const MAX_KEYS: usize = 1024;

impl Pool {
    /// The entry for `key`, made if there is room (after dropping entries
    /// that hold no connection).
    fn entry(&mut self, key: &PoolKey) -> Option<&mut Entry> {
        if !self.map.contains_key(key) && self.map.len() >= MAX_KEYS {
            self.map.retain(|_, e| !e.idle.is_empty());
            if self.map.len() >= MAX_KEYS {
                return None;
            }
        }
        Some(self.map.entry(key.clone()).or_default())
    }
}

/// Remembers what a login with `key` announced.
pub fn remember(key: &PoolKey, announce: &[u8]) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let Some(e) = p.entry(key) else { return };
        if e.announce.as_deref() != Some(announce) {
            e.announce = Some(announce.to_vec());
        }
    });
}

/// A kept connection for `key` that still looks alive, newest first.
pub fn take(key: &PoolKey) -> Option<Upstream> {
    let now = Instant::now();
    loop {
        let c = POOL.with(|p| p.borrow_mut().map.get_mut(key).and_then(|e| e.idle.pop()))?;
        if !c.expired(now) && looks_alive(c.up.conn.stream.raw_fd()) {
            crate::core::counters::pool_event(PoolEvent::Reused);
            return Some(c.up);
        }
        retire(c);
    }
}

/// Closes a connection that is not kept, politely (see `retire`).
fn close(up: Upstream) {
    if !up.tls {
        let x = [b'X', 0, 0, 0, 4];
        // SAFETY: the connection's open socket and a live buffer.
        unsafe {
            libc::send(
                up.conn.stream.raw_fd(),
                x.as_ptr().cast(),
                x.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            );
        }
    }
    crate::core::counters::pool_event(PoolEvent::Closed);
}

/// Keeps a reset connection for the next session with `key`, if the
/// target's pools have room; closes it otherwise.
pub fn put(key: &PoolKey, mut up: Upstream, limits: &PoolLimits) {
    let now = Instant::now();
    up.conn.buf = Vec::new();
    if now.duration_since(up.born) >= limits.lifetime {
        close(up);
        return;
    }
    let Some(slot) = Slot::claim(&limits.kept, limits.max_idle) else {
        close(up);
        return;
    };
    let c = IdleConn {
        up,
        since: now,
        idle_timeout: limits.idle_timeout,
        lifetime: limits.lifetime,
        _slot: slot,
    };
    let over = POOL.with(|p| {
        let mut p = p.borrow_mut();
        let Some(e) = p.entry(key) else { return Some(c) };
        e.idle.push(c);
        None
    });
    match over {
        Some(c) => retire(c),
        None => crate::core::counters::pool_event(PoolEvent::Returned),
    }
}

/// Closes kept connections that expired, died, or belong to an older
/// configuration than `generation`. Run every few seconds by each worker.
pub fn sweep(generation: u64) {
    let now = Instant::now();
    let gone: Vec<IdleConn> = POOL.with(|p| {
        let mut p = p.borrow_mut();
        let mut gone = Vec::new();
        p.map.retain(|k, e| {
            let old = k.generation < generation;
            let mut i = 0;
            while i < e.idle.len() {
                let c = &e.idle[i];
                if old || c.expired(now) || !looks_alive(c.up.conn.stream.raw_fd()) {
                    gone.push(e.idle.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            !old
        });
        gone
    });
    for c in gone {
        retire(c);
    }
}

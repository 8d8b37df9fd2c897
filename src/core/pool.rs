//! Upstream connections kept for reuse: what every protocol's pool shares.
//!
//! A protocol keeps one `Pool` per worker thread (thread-local): a
//! connection never moves between io_uring rings, and nothing here is
//! shared or locked but the count of kept connections a target allows.
//! The protocol decides what makes connections interchangeable (its key)
//! and how a connection is reset before it is kept.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// An upstream connection a pool can keep.
pub trait Pooled {
    /// Whether it still looks idle and open: no bytes waiting (a server
    /// that ends a connection says so before it closes) and no EOF.
    fn looks_alive(&self) -> bool;
    /// When it logged in (`PoolLimits::lifetime` counts from here).
    fn born(&self) -> Instant;
    /// Closes it, politely where that costs no wait (the protocol's
    /// goodbye on a plain socket).
    fn close(self);
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

struct IdleConn<C> {
    conn: C,
    since: Instant,
    idle_timeout: Duration,
    lifetime: Duration,
    _slot: Slot,
}

impl<C: Pooled> IdleConn<C> {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.since) >= self.idle_timeout || now.duration_since(self.conn.born()) >= self.lifetime
    }

    fn retire(self) {
        let IdleConn { conn, _slot, .. } = self;
        close(conn);
    }
}

fn close<C: Pooled>(c: C) {
    c.close();
    crate::core::counters::pool_event(PoolEvent::Closed);
}

struct Entry<C> {
    idle: Vec<IdleConn<C>>,
    /// What the last login with this key announced (protocol bytes the
    /// protocol replays to a client before its connection is known):
    /// shared with every session told it, which keeps it while it lives.
    announce: Option<Arc<[u8]>>,
}

impl<C> Default for Entry<C> {
    fn default() -> Self {
        Entry {
            idle: Vec::new(),
            announce: None,
        }
    }
}

/// Keys a worker keeps (each with its announcement and idle connections):
/// clients that vary what goes into a key cannot grow the map further.
const MAX_KEYS: usize = 1024;

/// One worker's kept connections of one protocol, by key. Keys are
/// shared: a session that waits for its first message holds the map's
/// key rather than a copy of its own.
pub struct Pool<K, C> {
    map: HashMap<Arc<K>, Entry<C>>,
}

impl<K, C> Default for Pool<K, C> {
    fn default() -> Self {
        Pool { map: HashMap::new() }
    }
}

impl<K: Hash + Eq + Clone, C: Pooled> Pool<K, C> {
    /// The entry for `key`, made if there is room (after dropping entries
    /// that hold no connection).
    fn entry(&mut self, key: &K) -> Option<&mut Entry<C>> {
        if !self.map.contains_key(key) && self.map.len() >= MAX_KEYS {
            self.map.retain(|_, e| !e.idle.is_empty());
            if self.map.len() >= MAX_KEYS {
                return None;
            }
        }
        if !self.map.contains_key(key) {
            self.map.insert(Arc::new(key.clone()), Entry::default());
        }
        self.map.get_mut(key)
    }

    /// What the last login with `key` announced, if any, with the map's
    /// own copy of the key.
    pub fn announce(&self, key: &K) -> Option<(Arc<K>, Arc<[u8]>)> {
        let (k, e) = self.map.get_key_value(key)?;
        Some((k.clone(), e.announce.clone()?))
    }

    /// Remembers what a login with `key` announced.
    pub fn remember(&mut self, key: &K, announce: &[u8]) {
        let Some(e) = self.entry(key) else { return };
        if e.announce.as_deref() != Some(announce) {
            e.announce = Some(Arc::from(announce));
        }
    }

    /// A kept connection for `key` that still looks alive, newest first;
    /// the expired and dead ones met on the way are closed.
    pub fn take(&mut self, key: &K) -> Option<C> {
        let now = Instant::now();
        loop {
            let c = self.map.get_mut(key).and_then(|e| e.idle.pop())?;
            if !c.expired(now) && c.conn.looks_alive() {
                crate::core::counters::pool_event(PoolEvent::Reused);
                let IdleConn { conn, _slot, .. } = c;
                return Some(conn);
            }
            c.retire();
        }
    }

    /// Keeps a reset connection for the next session with `key`, if the
    /// target's pools have room; closes it otherwise.
    pub fn put(&mut self, key: &K, conn: C, limits: &PoolLimits) {
        let now = Instant::now();
        if now.duration_since(conn.born()) >= limits.lifetime {
            close(conn);
            return;
        }
        let Some(slot) = Slot::claim(&limits.kept, limits.max_idle) else {
            close(conn);
            return;
        };
        let c = IdleConn {
            conn,
            since: now,
            idle_timeout: limits.idle_timeout,
            lifetime: limits.lifetime,
            _slot: slot,
        };
        match self.entry(key) {
            Some(e) => {
                e.idle.push(c);
                crate::core::counters::pool_event(PoolEvent::Returned);
            }
            None => c.retire(),
        }
    }

    /// Closes kept connections that expired or died, and drops the keys
    /// `stale` names (an older configuration) with their connections.
    pub fn sweep(&mut self, stale: impl Fn(&K) -> bool) {
        let now = Instant::now();
        let mut gone = Vec::new();
        self.map.retain(|k, e| {
            let old = stale(k.as_ref());
            let mut i = 0;
            while i < e.idle.len() {
                let c = &e.idle[i];
                if old || c.expired(now) || !c.conn.looks_alive() {
                    gone.push(e.idle.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            !old
        });
        for c in gone {
            c.retire();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(Instant);

    impl Pooled for Fake {
        fn looks_alive(&self) -> bool {
            true
        }
        fn born(&self) -> Instant {
            self.0
        }
        fn close(self) {}
    }

    fn limits() -> PoolLimits {
        PoolLimits {
            max_idle: 4,
            idle_timeout: Duration::from_secs(60),
            lifetime: Duration::from_secs(600),
            kept: Arc::default(),
        }
    }

    #[test]
    fn sessions_told_an_announcement_share_the_key_and_the_bytes() {
        let mut pool: Pool<String, Fake> = Pool::default();
        assert!(pool.announce(&"a".to_string()).is_none());
        pool.remember(&"a".to_string(), b"params");
        let (k1, a1) = pool.announce(&"a".to_string()).unwrap();
        let (k2, a2) = pool.announce(&"a".to_string()).unwrap();
        assert_eq!((k1.as_str(), &a1[..]), ("a", &b"params"[..]));
        assert!(Arc::ptr_eq(&k1, &k2) && Arc::ptr_eq(&a1, &a2));
        // A new announcement replaces the bytes; the sessions told the old
        // one keep theirs.
        pool.remember(&"a".to_string(), b"changed");
        let (k3, a3) = pool.announce(&"a".to_string()).unwrap();
        assert!(Arc::ptr_eq(&k1, &k3));
        assert_eq!((&a1[..], &a3[..]), (&b"params"[..], &b"changed"[..]));
        // Another key is its own entry.
        assert!(pool.announce(&"b".to_string()).is_none());
    }

    #[test]
    fn a_kept_connection_goes_to_its_key_only_and_a_stale_key_is_swept() {
        let mut pool: Pool<String, Fake> = Pool::default();
        let l = limits();
        pool.put(&"a".to_string(), Fake(Instant::now()), &l);
        assert!(pool.take(&"b".to_string()).is_none());
        assert!(pool.take(&"a".to_string()).is_some());
        assert!(pool.take(&"a".to_string()).is_none());
        pool.put(&"a".to_string(), Fake(Instant::now()), &l);
        pool.remember(&"a".to_string(), b"p");
        pool.sweep(|k| k == "a");
        assert!(pool.take(&"a".to_string()).is_none());
        assert!(pool.announce(&"a".to_string()).is_none());
        assert_eq!(l.kept.load(Ordering::Acquire), 0);
    }
}

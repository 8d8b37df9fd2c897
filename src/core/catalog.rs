//! The per-worker cache of targets' function catalogs, for the policy (see
//! `sql::catalog` for what a snapshot decides; each protocol's session
//! knows how to read one from its server).
//!
//! One snapshot per worker, target, upstream account and catalog epoch.
//! The first statement that needs it waits for one round trip on a
//! connection of its own (logged in like the session's, closed after);
//! every later statement reads it from memory. A DDL statement that
//! gatehouse let through bumps the process-wide epoch when the server
//! confirms it, a reload changes the configuration's generation, and a
//! snapshot older than [`MAX_AGE`] expires: each makes the next statement
//! that needs it load a fresh one. A statement that calls a
//! function the snapshot does not have reloads it (at most every
//! [`REFRESH_AFTER`]) before it is refused as unknown.
//!
//! A snapshot equal to one another worker or key already holds is not
//! kept twice ([`shared`]): workers, and targets or accounts on one
//! database, read the same catalog, and a big one is megabytes.

use crate::sql::Catalog;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

/// A snapshot younger than this is not reloaded for a missing name.
pub const REFRESH_AFTER: Duration = Duration::from_secs(2);
/// A snapshot older than this is read afresh (functions redefined outside
/// the gateway, say by a migration, are seen within this time).
pub const MAX_AGE: Duration = Duration::from_secs(15);
/// After a failed load, statements that need the catalog are refused for
/// this long before the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Which snapshot: configuration generation, target, upstream account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CatalogKey {
    pub generation: u64,
    pub target: String,
    pub account: String,
}

#[derive(Default)]
struct Slot {
    catalog: Option<Arc<Catalog>>,
    epoch: u64,
    loaded_at: Option<Instant>,
    loading: bool,
    failed: Option<(Instant, String)>,
    waiters: Vec<Waker>,
}

thread_local! {
    static SLOTS: RefCell<HashMap<CatalogKey, Slot>> = RefCell::new(HashMap::new());
}

/// Every snapshot some worker holds, process-wide, to share equal ones.
/// Taken when a load ends, briefly: snapshots are compared outside it.
static HELD: Mutex<Vec<Weak<Catalog>>> = Mutex::new(Vec::new());

/// The copy of `fresh` already held, when one is equal to it, or `fresh`
/// (now held). Equal snapshots loaded at the same moment may both be
/// kept; the next load of either shares.
pub fn shared(fresh: Arc<Catalog>) -> Arc<Catalog> {
    let held = || HELD.lock().unwrap_or_else(|e| e.into_inner());
    let candidates: Vec<Arc<Catalog>> = {
        let mut held = held();
        held.retain(|w| w.strong_count() > 0);
        held.iter()
            .filter_map(Weak::upgrade)
            .filter(|c| c.may_equal(&fresh))
            .collect()
    };
    // A full comparison walks the whole snapshot: not under the lock.
    if let Some(same) = candidates.into_iter().find(|c| **c == *fresh) {
        return same;
    }
    held().push(Arc::downgrade(&fresh));
    fresh
}

/// What the worker has for a key now.
pub enum Cached {
    /// The snapshot, and when it expires.
    Ready(Arc<Catalog>, Instant),
    /// Not loaded (or stale): [`load`] it.
    Missing,
    /// The last load failed, recently: why.
    Failed(String),
}

/// The snapshot for `key` at `epoch`, if this worker has it.
pub fn cached(key: &CatalogKey, epoch: u64) -> Cached {
    SLOTS.with(|s| {
        let s = s.borrow();
        let Some(slot) = s.get(key) else { return Cached::Missing };
        let expires = slot.loaded_at.map(|t| t + MAX_AGE);
        let fresh = expires.filter(|e| Instant::now() < *e);
        match (&slot.catalog, &slot.failed, fresh) {
            (Some(c), _, Some(e)) if slot.epoch == epoch => Cached::Ready(c.clone(), e),
            (_, Some((at, why)), _) if at.elapsed() < RETRY_AFTER && !slot.loading => Cached::Failed(why.clone()),
            _ => Cached::Missing,
        }
    })
}

/// Forgets the snapshot for `key` when it is older than [`REFRESH_AFTER`]
/// (a statement named a function it does not have). Returns whether it
/// did: the caller then loads it again and decides with the fresh one.
pub fn expire_if_old(key: &CatalogKey) -> bool {
    SLOTS.with(|s| {
        let mut s = s.borrow_mut();
        match s.get_mut(key) {
            Some(slot) if slot.loaded_at.is_some_and(|t| t.elapsed() >= REFRESH_AFTER) && !slot.loading => {
                slot.catalog = None;
                true
            }
            _ => false,
        }
    })
}

/// Loads the snapshot for `key` (or waits for this worker's load already
/// under way) and caches it for `epoch`.
pub async fn load(
    key: &CatalogKey,
    epoch: u64,
    fetch: impl Future<Output = Result<Arc<Catalog>, String>>,
) -> Result<Arc<Catalog>, String> {
    let leader = SLOTS.with(|s| {
        let mut s = s.borrow_mut();
        let slot = s.entry(key.clone()).or_default();
        if slot.loading {
            false
        } else {
            slot.loading = true;
            true
        }
    });
    if !leader {
        std::future::poll_fn(|cx| {
            SLOTS.with(|s| {
                let mut s = s.borrow_mut();
                match s.get_mut(key) {
                    Some(slot) if slot.loading => {
                        slot.waiters.push(cx.waker().clone());
                        std::task::Poll::Pending
                    }
                    _ => std::task::Poll::Ready(()),
                }
            })
        })
        .await;
        return match cached(key, epoch) {
            Cached::Ready(c, _) => Ok(c),
            Cached::Failed(why) => Err(why),
            Cached::Missing => Err("the catalog changed while it was being read; try again".into()),
        };
    }
    // Waiters must not wait on a load whose session went away.
    let guard = LoadGuard { key };
    let result = fetch.await.map(shared);
    std::mem::forget(guard);
    SLOTS.with(|s| {
        let mut s = s.borrow_mut();
        let slot = s.entry(key.clone()).or_default();
        slot.loading = false;
        match &result {
            Ok(c) => {
                slot.catalog = Some(c.clone());
                slot.epoch = epoch;
                slot.loaded_at = Some(Instant::now());
                slot.failed = None;
            }
            Err(why) => slot.failed = Some((Instant::now(), why.clone())),
        }
        for w in slot.waiters.drain(..) {
            w.wake();
        }
        // Snapshots of older configurations go.
        let generation = key.generation;
        s.retain(|k, _| k.generation >= generation);
    });
    result
}

/// Ends a load that was dropped half-way (its session ended): the next
/// statement that needs the catalog loads it.
struct LoadGuard<'a> {
    key: &'a CatalogKey,
}

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        SLOTS.with(|s| {
            if let Some(slot) = s.borrow_mut().get_mut(self.key) {
                slot.loading = false;
                for w in slot.waiters.drain(..) {
                    w.wake();
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{CatalogRow, Volatility};

    /// A snapshot no other test builds (`HELD` is process-wide).
    fn snapshot(volatility: Volatility) -> Arc<Catalog> {
        Arc::new(rows_of(volatility))
    }

    fn rows_of(volatility: Volatility) -> Catalog {
        Catalog::from_rows([CatalogRow::Function {
            oid: 16_400,
            schema: "core_catalog_tests".into(),
            name: "held_once".into(),
            volatility,
            builtin: false,
            signature: "core_catalog_tests.held_once()".into(),
        }])
    }

    #[test]
    fn equal_snapshots_are_held_once_and_different_ones_apart() {
        let a = shared(snapshot(Volatility::Volatile));
        let b = shared(snapshot(Volatility::Volatile));
        assert!(Arc::ptr_eq(&a, &b));
        // One volatility apart: never the other's copy.
        let c = shared(snapshot(Volatility::Immutable));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.function_by_oid(16_400).map(|f| f.1), Some(Volatility::Immutable));
        assert_eq!(b.function_by_oid(16_400).map(|f| f.1), Some(Volatility::Volatile));
        // Once no worker holds it, the next load's copy is the one held.
        drop((a, b));
        let d = snapshot(Volatility::Volatile);
        assert!(Arc::ptr_eq(&shared(d.clone()), &d));
        assert!(Arc::ptr_eq(&shared(snapshot(Volatility::Volatile)), &d));
    }

    /// Polls a future that must be ready at once (the test's loads are).
    fn at_once<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut std::task::Context::from_waker(Waker::noop())) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the load waited"),
        }
    }

    /// Two keys (targets, accounts) whose servers give the same catalog
    /// hold one copy; a third that differs holds its own.
    #[test]
    fn loads_of_equal_catalogs_for_two_keys_share_one() {
        let key = |target: &str| CatalogKey {
            generation: 0,
            target: target.into(),
            account: "core_catalog_tests".into(),
        };
        let load_of = |target: &str, v: Volatility| {
            let fetched = Arc::new(rows_of(v).with_fingerprint(11));
            at_once(load(&key(target), 1, async { Ok(fetched) })).unwrap()
        };
        let first = load_of("one", Volatility::Stable);
        let second = load_of("two", Volatility::Stable);
        let third = load_of("three", Volatility::Volatile);
        assert!(Arc::ptr_eq(&first, &second));
        assert!(!Arc::ptr_eq(&first, &third));
        for (target, want) in [("one", &first), ("two", &first), ("three", &third)] {
            match cached(&key(target), 1) {
                Cached::Ready(c, _) => assert!(Arc::ptr_eq(&c, want), "{target}"),
                _ => panic!("{target} not cached"),
            }
        }
    }

    /// Fingerprints only rule out: two snapshots whose fingerprints
    /// collide are still compared in full.
    #[test]
    fn a_fingerprint_collision_shares_nothing() {
        let forged = |v| Arc::new(rows_of(v).with_fingerprint(7));
        let volatile = shared(forged(Volatility::Volatile));
        let immutable = shared(forged(Volatility::Immutable));
        assert!(!Arc::ptr_eq(&volatile, &immutable));
        assert_eq!(
            immutable.function_by_oid(16_400).map(|f| f.1),
            Some(Volatility::Immutable)
        );
    }
}

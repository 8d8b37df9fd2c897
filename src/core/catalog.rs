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

use crate::sql::Catalog;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
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
    let result = fetch.await;
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

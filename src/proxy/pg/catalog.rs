//! The target's function catalog, loaded for the policy (see
//! `sql::catalog` for what it decides).
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

use super::upstream;
use crate::core::state::{AccountRt, TargetRt};
use crate::sql::{Catalog, CatalogRow, Volatility};
use crate::wire::pg::{self, Side, HEADER_LEN};
use std::cell::RefCell;
use std::collections::HashMap;
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
/// Largest catalog answer accepted (a big PostGIS-laden database is a few
/// MiB).
const MAX_CATALOG_BYTES: usize = 64 << 20;

/// Every function (signatures of user functions only), user-defined
/// operators, and types. An aggregate is as volatile as the most volatile of
/// its support functions (its own label is `IMMUTABLE` whatever they do);
/// volatility letters order `i` < `s` < `v`.
const CATALOG_SQL: &str = "\
SELECT 'f', n.nspname, p.proname, \
       GREATEST(p.provolatile::text, COALESCE((SELECT max(f.provolatile::text) \
         FROM pg_catalog.pg_aggregate a JOIN pg_catalog.pg_proc f ON f.oid IN (a.aggtransfn, a.aggfinalfn, \
           a.aggcombinefn, a.aggserialfn, a.aggdeserialfn, a.aggmtransfn, a.aggminvtransfn, a.aggmfinalfn) \
         WHERE a.aggfnoid = p.oid), 'i')), \
       (p.oid < 16384)::text, p.oid::int8::text, \
       CASE WHEN p.oid >= 16384 THEN p.oid::regprocedure::text ELSE '' END \
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
UNION ALL \
SELECT 'o', n.nspname, o.oprname, p.provolatile::text, 'false', '0', '' \
  FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace \
  JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode WHERE o.oid >= 16384 \
UNION ALL \
SELECT 't', n.nspname, t.typname, 'i', 'true', '0', '' \
  FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace";

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
    target: &TargetRt,
    account: &AccountRt,
    max_msg: usize,
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
    let result = fetch(target, account, max_msg).await;
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

/// One round trip on a connection of its own.
async fn fetch(target: &TargetRt, account: &AccountRt, max_msg: usize) -> Result<Arc<Catalog>, String> {
    let mut up = upstream::connect(target, account, &[], max_msg)
        .await
        .map_err(|e| e.to_string())?;
    let mut q = Vec::with_capacity(CATALOG_SQL.len() + 8);
    pg::cstring_message(&mut q, b'Q', CATALOG_SQL.as_bytes());
    up.conn.write_all(q).await.map_err(|e| e.to_string())?;
    let mut rows = Vec::with_capacity(4096);
    let mut bytes = 0usize;
    let mut error = None;
    loop {
        let (tag, body) = up
            .conn
            .read_frame(Side::Backend, max_msg)
            .await
            .map_err(|e| e.to_string())?;
        bytes += body.len() + HEADER_LEN;
        if bytes > MAX_CATALOG_BYTES {
            return Err(format!("the catalog is larger than {MAX_CATALOG_BYTES} bytes"));
        }
        match tag {
            b'D' => {
                if let Some(r) = row(&body) {
                    rows.push(r);
                }
            }
            b'E' => {
                let msg = pg::error_fields(&body)
                    .find(|(c, _)| *c == b'M')
                    .map(|(_, m)| String::from_utf8_lossy(m).into_owned())
                    .unwrap_or_default();
                error = Some(msg);
            }
            b'Z' => break,
            _ => {}
        }
    }
    let mut t = Vec::with_capacity(5);
    pg::terminate(&mut t);
    let _ = up.conn.write_all(t).await;
    if let Some(e) = error {
        return Err(format!("reading the catalog failed: {e}"));
    }
    Ok(Arc::new(Catalog::from_rows(rows)))
}

/// One DataRow of [`CATALOG_SQL`] (seven text columns).
fn row(body: &[u8]) -> Option<CatalogRow> {
    let mut c = pg::Cursor::new(body, "DataRow");
    let n = c.i16().ok()?;
    if n != 7 {
        return None;
    }
    let mut cols: Vec<String> = Vec::with_capacity(7);
    for _ in 0..7 {
        let len = c.i32().ok()?;
        if len < 0 {
            cols.push(String::new());
            continue;
        }
        cols.push(String::from_utf8_lossy(c.bytes(len as usize).ok()?).into_owned());
    }
    let mut it = cols.into_iter();
    let (kind, schema, name, vol, builtin, oid, signature) = (
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
    );
    Some(match kind.as_str() {
        "f" => CatalogRow::Function {
            oid: oid.parse().ok()?,
            schema,
            name,
            volatility: Volatility::from_code(&vol),
            builtin: builtin == "true",
            signature,
        },
        "o" => CatalogRow::Operator {
            schema,
            name,
            volatility: Volatility::from_code(&vol),
        },
        _ => CatalogRow::Type { schema, name },
    })
}

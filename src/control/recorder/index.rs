//! The in-memory index of recordings (for the admin API's list), built
//! from the files at start and kept current by the writers.

use super::MAX_INDEX;
use crate::record;
use hashbrown::HashTable;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// A recorded session in the index (for the admin API's list).
///
/// The index keeps up to `MAX_INDEX` of these, so the text most entries
/// repeat (identity, roles, target, end, decisions) is held once and
/// shared: see [`Names`].
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub id: String,
    pub session: u32,
    pub identity: Arc<str>,
    pub roles: Arc<[Arc<str>]>,
    pub target: Arc<str>,
    pub client: String,
    pub started_us: u64,
    pub ended_us: Option<u64>,
    pub end: Option<Arc<str>>,
    pub statements: u64,
    /// Decisions seen: allow, deny, hold.
    pub decisions: Vec<Arc<str>>,
    pub live: bool,
    #[serde(skip)]
    pub path: PathBuf,
    /// The hash of the seal line as the writer made it (this run's
    /// sessions; `None` for files indexed at start).
    #[serde(skip)]
    pub seal_hash: Option<String>,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Stats {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub gaps: AtomicU64,
    pub gap_rows: AtomicU64,
    pub syncs: AtomicU64,
    pub write_errors: AtomicU64,
    pub deleted: AtomicU64,
    /// Sessions an unclean stop left open, sealed at start.
    pub recovered: AtomicU64,
    /// Statements by class and decision.
    pub statements: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

/// Text shared between index entries. Bounded: past `MAX_NAMES` it starts
/// again empty (entries keep what they hold; later ones share anew), so
/// clients that vary their names cannot grow it.
#[derive(Default)]
struct Names {
    text: HashSet<Arc<str>>,
    lists: HashSet<Arc<[Arc<str>]>>,
}

const MAX_NAMES: usize = 4096;

impl Names {
    fn text(&mut self, s: &Arc<str>) -> Arc<str> {
        if let Some(t) = self.text.get(s) {
            return t.clone();
        }
        if self.text.len() >= MAX_NAMES {
            self.text.clear();
        }
        self.text.insert(s.clone());
        s.clone()
    }

    fn list(&mut self, l: &Arc<[Arc<str>]>) -> Arc<[Arc<str>]> {
        if let Some(t) = self.lists.get(l) {
            return t.clone();
        }
        if self.lists.len() >= MAX_NAMES {
            self.lists.clear();
        }
        let shared: Arc<[Arc<str>]> = l.iter().map(|s| self.text(s)).collect();
        self.lists.insert(shared.clone());
        shared
    }

    /// Points the entry's repeated text at the shared copies.
    fn share(&mut self, e: &mut Entry) {
        e.identity = self.text(&e.identity);
        e.target = self.text(&e.target);
        e.roles = self.list(&e.roles);
        if let Some(end) = &e.end {
            e.end = Some(self.text(end));
        }
        for d in e.decisions.iter_mut() {
            *d = self.text(d);
        }
        e.decisions.shrink_to_fit();
    }
}

/// Recorded sessions by id, newest last.
///
/// The index keeps every finished session up to `MAX_INDEX`, and after a
/// storm of short sessions it is most of what the process holds, so an
/// entry costs no more than it must: entries are boxed (a vector that
/// doubles keeps up to as many empty slots as full ones, a pointer each
/// rather than a whole entry), and the map from id to position holds
/// positions only, finding an id by comparing the entry's own (the id is
/// not kept twice).
#[derive(Default)]
pub struct Index {
    pub entries: Vec<Box<Entry>>,
    by_id: HashTable<usize>,
    hasher: RandomState,
    names: Names,
}

impl Index {
    pub(super) fn upsert(&mut self, mut e: Entry) {
        self.names.share(&mut e);
        e.id.shrink_to_fit();
        e.client.shrink_to_fit();
        e.path.shrink_to_fit();
        match self.position(&e.id) {
            Some(i) => *self.entries[i] = e,
            None => {
                if self.entries.len() >= MAX_INDEX {
                    let drop = self.entries.len() / 10;
                    self.entries.drain(..drop);
                    self.reindex();
                }
                self.entries.push(Box::new(e));
                self.index_last();
            }
        }
    }

    /// Where the entry with this id is in `entries`.
    fn position(&self, id: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(id);
        self.by_id.find(hash, |&i| self.entries[i].id == id).copied()
    }

    /// Adds the last entry's position to the map (its id is not there).
    fn index_last(&mut self) {
        let Index {
            entries, by_id, hasher, ..
        } = self;
        let Some(i) = entries.len().checked_sub(1) else { return };
        by_id.insert_unique(hasher.hash_one(entries[i].id.as_str()), i, |&j| {
            hasher.hash_one(entries[j].id.as_str())
        });
    }

    fn reindex(&mut self) {
        let Index {
            entries, by_id, hasher, ..
        } = self;
        by_id.clear();
        by_id.shrink_to(entries.len(), |&j| hasher.hash_one(entries[j].id.as_str()));
        for (i, e) in entries.iter().enumerate() {
            by_id.insert_unique(hasher.hash_one(e.id.as_str()), i, |&j| {
                hasher.hash_one(entries[j].id.as_str())
            });
        }
    }

    /// Brings a live entry's statement count and decisions up to date
    /// (without copying the entry).
    pub(super) fn update_counts(&mut self, e: &Entry) {
        if let Some(i) = self.position(&e.id) {
            let x = &mut self.entries[i];
            x.statements = e.statements;
            if x.decisions.len() != e.decisions.len() {
                x.decisions = e.decisions.iter().map(|d| self.names.text(d)).collect();
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.position(id).map(|i| &*self.entries[i])
    }

    pub(super) fn remove_paths(&mut self, gone: &[PathBuf]) {
        let before = self.entries.len();
        self.entries.retain(|e| !gone.contains(&e.path));
        if self.entries.len() != before {
            self.reindex();
        }
    }
}

/// The index entry of a recording on disk (first and last records).
pub(super) fn entry_from_file(p: &Path) -> Option<Entry> {
    let f = File::open(p).ok()?;
    let mut e: Option<Entry> = None;
    for v in record::records(f) {
        match v["kind"].as_str() {
            Some("open") => {
                e = Some(Entry {
                    id: v["id"].as_str()?.to_string(),
                    session: v["session"].as_u64().unwrap_or(0) as u32,
                    identity: v["identity"].as_str().unwrap_or("").into(),
                    roles: serde_json::from_value::<Vec<String>>(v["roles"].clone())
                        .unwrap_or_default()
                        .into_iter()
                        .map(Arc::from)
                        .collect(),
                    target: v["target"].as_str().unwrap_or("").into(),
                    client: v["client"].as_str().unwrap_or("").to_string(),
                    started_us: v["t"].as_u64().unwrap_or(0),
                    ended_us: None,
                    end: None,
                    statements: 0,
                    decisions: Vec::new(),
                    live: false,
                    seal_hash: None,
                    path: p.to_path_buf(),
                })
            }
            Some("statement") => {
                if let Some(e) = e.as_mut() {
                    e.statements += 1;
                    if let Some(d) = v["decision"].as_str() {
                        if !e.decisions.iter().any(|x| &**x == d) {
                            e.decisions.push(d.into());
                        }
                    }
                }
            }
            Some("close") => {
                if let Some(e) = e.as_mut() {
                    e.ended_us = v["t"].as_u64();
                    e.end = v["end"].as_str().map(Arc::from);
                }
            }
            _ => {}
        }
    }
    if let Some(e) = e.as_mut() {
        if e.end.is_none() {
            e.end = Some("unsealed".into());
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, identity: &str, roles: &[&str], decisions: &[&str]) -> Entry {
        Entry {
            id: id.to_string(),
            session: 1,
            identity: identity.into(),
            roles: roles.iter().map(|r| Arc::from(*r)).collect(),
            target: "main".into(),
            client: "127.0.0.1:5000".into(),
            started_us: 1,
            ended_us: Some(2),
            end: Some("client-terminate".into()),
            statements: 3,
            decisions: decisions.iter().map(|d| Arc::from(*d)).collect(),
            live: false,
            path: PathBuf::from(format!("/r/{id}.jsonl")),
            seal_hash: None,
        }
    }

    #[test]
    fn entries_share_the_text_they_repeat_and_keep_their_own() {
        let mut index = Index::default();
        index.upsert(entry("a", "agent", &["reader", "ops"], &["allow"]));
        index.upsert(entry("b", "agent", &["reader", "ops"], &["allow", "deny"]));
        index.upsert(entry("c", "other", &["ops"], &[]));
        let (a, b, c) = (
            index.get("a").unwrap(),
            index.get("b").unwrap(),
            index.get("c").unwrap(),
        );
        assert!(Arc::ptr_eq(&a.identity, &b.identity));
        assert!(Arc::ptr_eq(&a.target, &c.target));
        assert!(Arc::ptr_eq(&a.roles, &b.roles));
        assert!(Arc::ptr_eq(&a.roles[1], &c.roles[0]));
        assert!(Arc::ptr_eq(a.end.as_ref().unwrap(), c.end.as_ref().unwrap()));
        assert!(Arc::ptr_eq(&a.decisions[0], &b.decisions[0]));
        // What each says is its own.
        assert_eq!(&*c.identity, "other");
        assert_eq!(b.decisions.iter().map(|d| &**d).collect::<Vec<_>>(), ["allow", "deny"]);
        assert_eq!(c.roles.iter().map(|r| &**r).collect::<Vec<_>>(), ["ops"]);
        // The admin API's JSON is unchanged by the sharing.
        let v = serde_json::to_value(b).unwrap();
        assert_eq!(v["roles"], serde_json::json!(["reader", "ops"]));
        assert_eq!(v["identity"], "agent");
        assert_eq!(v["end"], "client-terminate");
        assert_eq!(v["decisions"], serde_json::json!(["allow", "deny"]));
    }

    #[test]
    fn ids_find_their_entries_through_updates_removals_and_the_cap() {
        let mut index = Index::default();
        for i in 0..1000 {
            index.upsert(entry(&format!("s{i}"), "agent", &["r"], &["allow"]));
        }
        // An upsert of a known id replaces its entry in place.
        let mut again = entry("s10", "other", &["r"], &["deny"]);
        again.statements = 42;
        index.upsert(again);
        assert_eq!(index.entries.len(), 1000);
        assert_eq!(
            index.get("s10").map(|e| (e.statements, &*e.identity)),
            Some((42, "other"))
        );
        assert!(index.get("s1000").is_none() && index.get("").is_none());
        // Removed files leave the index; every other id still finds its own.
        let gone: Vec<PathBuf> = (0..1000)
            .step_by(3)
            .map(|i| PathBuf::from(format!("/r/s{i}.jsonl")))
            .collect();
        index.remove_paths(&gone);
        for i in 0..1000 {
            let id = format!("s{i}");
            match index.get(&id) {
                Some(e) => assert!(i % 3 != 0 && e.id == id, "{id} found {}", e.id),
                None => assert_eq!(i % 3, 0, "{id} lost"),
            }
        }
        let mut live = entry("s11", "agent", &["r"], &["allow", "hold"]);
        live.statements = 7;
        index.update_counts(&live);
        assert_eq!(index.get("s11").map(|e| e.statements), Some(7));
        // Positions moved: an id upserted again is still replaced in place.
        let kept = index.entries.len();
        index.upsert(entry("s998", "late", &["r"], &[]));
        assert_eq!(index.entries.len(), kept);
        assert_eq!(index.get("s998").map(|e| &*e.identity), Some("late"));
        assert_eq!(index.by_id.len(), index.entries.len(), "one position per entry");
        // Past the cap the oldest tenth goes, and the rest are found.
        let mut index = Index::default();
        for i in 0..=MAX_INDEX {
            index.upsert(entry(&format!("c{i}"), "agent", &["r"], &[]));
        }
        let dropped = MAX_INDEX / 10;
        assert_eq!(index.entries.len(), MAX_INDEX - dropped + 1);
        assert!(index.get("c0").is_none() && index.get(&format!("c{}", dropped - 1)).is_none());
        for i in dropped..=MAX_INDEX {
            let id = format!("c{i}");
            assert_eq!(index.get(&id).map(|e| e.id.as_str()), Some(id.as_str()));
        }
        assert_eq!(index.by_id.len(), index.entries.len(), "one position per entry");
    }

    #[test]
    fn the_shared_text_is_bounded_whatever_names_clients_use() {
        let mut index = Index::default();
        for i in 0..(3 * MAX_NAMES) {
            index.upsert(entry(
                &format!("s{i}"),
                &format!("agent-{i}"),
                &[&format!("role-{i}")],
                &["allow"],
            ));
            assert!(index.names.text.len() <= MAX_NAMES && index.names.lists.len() <= MAX_NAMES);
        }
        // Every entry still says what it was given.
        let e = index.get("s5000").unwrap();
        assert_eq!((&*e.identity, &*e.roles[0]), ("agent-5000", "role-5000"));
        // Counts brought up to date take shared decisions too.
        let mut live = entry("s7", "agent-7", &["role-7"], &["allow", "hold"]);
        live.statements = 9;
        index.update_counts(&live);
        let e = index.get("s7").unwrap();
        assert_eq!((e.statements, e.decisions.len()), (9, 2));
    }
}

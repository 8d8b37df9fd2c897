//! The in-memory index of recordings (for the admin API's list), built
//! from the files at start and kept current by the writers.

use super::packed::{Packed, View};
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

/// A recorded session in the index (for the admin API's list), as the
/// index takes it and hands it out: it keeps it packed (see [`Packed`]).
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
    /// Decisions seen: allow, deny, approved.
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

/// Recorded sessions by id, newest last.
///
/// The index keeps every finished session up to `MAX_INDEX`, and after a
/// storm of short sessions it is most of what the process holds, so each
/// entry is packed into one allocation (see [`Packed`]) and the map from
/// id to position holds positions only, finding an id by comparing the
/// entry's own (the id is not kept twice). Readers get [`View`]s to filter
/// on and unpack only what they keep.
#[derive(Default)]
pub struct Index {
    /// The recordings' directory: a path under it that the writer's
    /// naming gives is derived, not stored.
    dir: PathBuf,
    entries: Vec<Packed>,
    by_id: HashTable<usize>,
    hasher: RandomState,
    /// Where an entry is packed before it is copied to its own allocation.
    scratch: Vec<u8>,
}

impl Index {
    pub(super) fn new(dir: PathBuf) -> Index {
        Index {
            dir,
            ..Index::default()
        }
    }

    pub(super) fn upsert(&mut self, e: Entry) {
        let packed = Packed::pack(&e, &self.dir, &mut self.scratch);
        match self.position(&e.id) {
            Some(i) => self.entries[i] = packed,
            None => {
                if self.entries.len() >= MAX_INDEX {
                    let drop = self.entries.len() / 10;
                    self.entries.drain(..drop);
                    self.reindex();
                }
                self.entries.push(packed);
                self.index_last();
            }
        }
    }

    /// Where the entry with this id is in `entries`.
    fn position(&self, id: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(id);
        self.by_id.find(hash, |&i| self.entries[i].id() == id).copied()
    }

    /// Adds the last entry's position to the map (its id is not there).
    fn index_last(&mut self) {
        let Index {
            entries, by_id, hasher, ..
        } = self;
        let Some(i) = entries.len().checked_sub(1) else { return };
        by_id.insert_unique(hasher.hash_one(entries[i].id()), i, |&j| {
            hasher.hash_one(entries[j].id())
        });
    }

    fn reindex(&mut self) {
        let Index {
            entries, by_id, hasher, ..
        } = self;
        by_id.clear();
        by_id.shrink_to(entries.len(), |&j| hasher.hash_one(entries[j].id()));
        for (i, e) in entries.iter().enumerate() {
            by_id.insert_unique(hasher.hash_one(e.id()), i, |&j| hasher.hash_one(entries[j].id()));
        }
    }

    /// Brings a live entry's statement count and decisions up to date
    /// (in place, without packing the entry again).
    pub(super) fn update_counts(&mut self, e: &Entry) {
        if let Some(i) = self.position(&e.id) {
            self.entries[i].set_counts(e.statements, &e.decisions);
        }
    }

    /// The entry with this id, unpacked.
    pub fn get(&self, id: &str) -> Option<Entry> {
        self.view(id).map(|v| v.to_entry())
    }

    /// The entry with this id, borrowed.
    pub fn view(&self, id: &str) -> Option<View<'_>> {
        self.position(id).map(|i| self.entries[i].view(&self.dir))
    }

    /// Every entry, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = View<'_>> + ExactSizeIterator {
        self.entries.iter().map(|e| e.view(&self.dir))
    }

    /// The sessions still open (found without reading the finished ones
    /// past their flags).
    pub fn live(&self) -> impl Iterator<Item = View<'_>> {
        self.entries.iter().filter(|e| e.live()).map(|e| e.view(&self.dir))
    }

    /// Drops the entries of these files. A file named as the writer names
    /// them (`ID.ghrec`) is found by its id. Any other can only be an
    /// entry whose path is stored, or whose id is not a plain file name:
    /// those are looked through, without deriving every entry's path.
    pub(super) fn remove_paths(&mut self, gone: &[PathBuf]) {
        let mut doomed: HashSet<usize> = HashSet::new();
        let mut unfound: HashSet<&Path> = HashSet::new();
        for p in gone {
            let by_name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|id| self.position(id))
                .filter(|&i| self.entries[i].view(&self.dir).path() == *p);
            match by_name {
                Some(i) => {
                    doomed.insert(i);
                }
                None => {
                    unfound.insert(p);
                }
            }
        }
        if !unfound.is_empty() {
            for (i, e) in self.entries.iter().enumerate() {
                let found = if e.path_stored() {
                    e.view(&self.dir).stored_path().is_some_and(|p| unfound.contains(p))
                } else {
                    let id = e.id();
                    // Its file's name gives back any other id.
                    let plain = !id.is_empty() && !id.contains('/');
                    !plain && unfound.contains(e.view(&self.dir).path().as_path())
                };
                if found {
                    doomed.insert(i);
                }
            }
        }
        if doomed.is_empty() {
            return;
        }
        let mut i = 0;
        self.entries.retain(|_| {
            i += 1;
            !doomed.contains(&(i - 1))
        });
        self.reindex();
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
    use crate::core::end::EndReason;

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

    /// Everything an entry says, as one comparable value.
    fn said(e: &Entry) -> serde_json::Value {
        let mut v = serde_json::to_value(e).unwrap();
        v["path"] = e.path.display().to_string().into();
        v["seal_hash"] = e.seal_hash.clone().into();
        v
    }

    #[test]
    fn an_entry_comes_back_as_it_went_in_whatever_it_holds() {
        let dir = PathBuf::from("/var/lib/gatehouse/recordings");
        let started_us = 1_765_018_290_123_456;
        let writer_path = |id: &str| dir.join("2025-12-06").join(format!("{id}.{}", record::EXT));
        let hex_seal = "0123456789abcdef".repeat(4);
        let mut cases = Vec::new();
        // A storm's session: the path the writer gives, a seal, a known end.
        let mut e = entry("1765018290-0001e240", "loadtest", &["reader"], &["allow"]);
        e.started_us = started_us;
        e.ended_us = Some(started_us + 1_500);
        e.path = writer_path(&e.id);
        e.seal_hash = Some(hex_seal.clone());
        cases.push(e);
        // A live session: no end, no seal, no decisions, no roles.
        let mut e = entry("1765018290-0001e241-2", "agent", &[], &[]);
        e.started_us = started_us;
        e.ended_us = None;
        e.end = None;
        e.live = true;
        e.path = writer_path(&e.id);
        cases.push(e);
        // Indexed from a file elsewhere, with an end and a seal gatehouse
        // would not write, text past one length byte, and every decision.
        let mut e = entry(
            "odd",
            &"ü".repeat(300),
            &["", "ops", "réviseur"],
            &["approved", "deny", "allow"],
        );
        e.started_us = 0;
        e.end = Some("unsealed".into());
        e.seal_hash = Some(hex_seal.to_uppercase());
        e.path = PathBuf::from("/elsewhere/odd name.ghrec");
        e.statements = u64::MAX - 1;
        e.ended_us = Some(u64::MAX);
        e.session = u32::MAX;
        e.client = "/run/gatehouse.sock".into();
        cases.push(e);
        // Every end gatehouse writes and one it does not, and a seal of
        // the wrong length.
        let others = ["gateway-stopped", "unclean-stop", "unsealed", "made-up"];
        let ends = EndReason::ALL.iter().map(|r| r.as_str()).chain(others);
        for (n, end) in ends.enumerate() {
            let mut e = entry(&format!("end-{n}"), "agent", &["r"], &["deny"]);
            e.end = Some(end.into());
            e.ended_us = Some(0);
            e.seal_hash = Some("abc".into());
            cases.push(e);
        }
        let mut index = Index::new(dir.clone());
        for e in &cases {
            index.upsert(e.clone());
        }
        for e in &cases {
            let got = index.get(&e.id).unwrap();
            let mut want = said(e);
            // Decisions are listed in the API's order: allow, deny, approved.
            let order = ["allow", "deny", "approved"];
            let mut ds: Vec<&str> = e.decisions.iter().map(|d| &**d).collect();
            ds.sort_by_key(|d| order.iter().position(|o| o == d));
            want["decisions"] = serde_json::json!(ds);
            assert_eq!(said(&got), want, "{}", e.id);
        }
        // The writer's path is derived, not stored; any other is stored.
        let size = |id: &str| index.entries[index.position(id).unwrap()].size();
        assert_eq!(size("1765018290-0001e240"), 120);
        assert!(size("odd") > 600 + "/elsewhere/odd name.ghrec".len());
        // The same entry under another directory keeps its path.
        let mut moved = Index::new(PathBuf::from("/other"));
        moved.upsert(cases[0].clone());
        assert_eq!(moved.get(&cases[0].id).unwrap().path, cases[0].path);
    }

    #[test]
    fn a_live_entry_s_counts_change_in_place() {
        let mut index = Index::default();
        let mut live = entry("s", "agent", &["r"], &[]);
        live.live = true;
        index.upsert(live.clone());
        let before = index.entries[0].size();
        live.statements = 1_000_000;
        live.decisions = vec!["deny".into(), "allow".into()];
        index.update_counts(&live);
        let e = index.get("s").unwrap();
        assert_eq!((e.statements, e.live), (1_000_000, true));
        assert_eq!(e.decisions.iter().map(|d| &**d).collect::<Vec<_>>(), ["allow", "deny"]);
        assert_eq!(index.entries[0].size(), before);
        assert_eq!(index.live().map(|v| v.id).collect::<Vec<_>>(), ["s"]);
        // Closing it packs it again.
        live.live = false;
        live.end = Some("client-disconnect".into());
        index.upsert(live);
        assert_eq!(index.live().count(), 0);
        assert_eq!(index.get("s").unwrap().end.as_deref(), Some("client-disconnect"));
        // An unknown id changes nothing.
        index.update_counts(&entry("nobody", "agent", &[], &["allow"]));
        assert_eq!(index.entries.len(), 1);
    }

    #[test]
    fn removed_files_leave_the_index_by_either_kind_of_path() {
        let dir = PathBuf::from("/rec");
        let mut index = Index::new(dir.clone());
        let mut derived = entry("1-00000001", "agent", &[], &[]);
        derived.started_us = 1_000_000;
        derived.path = dir.join("1970-01-01/1-00000001.ghrec");
        let mut renamed = entry("1-00000002", "agent", &[], &[]);
        renamed.path = PathBuf::from("/rec/1970-01-01/copy.ghrec");
        let mut same_stem = entry("1-00000003", "agent", &[], &[]);
        same_stem.path = PathBuf::from("/elsewhere/1-00000003.ghrec");
        // An id that is not a plain file name, its path derived all the same.
        let mut slashed = entry("a/b", "agent", &[], &[]);
        slashed.started_us = 0;
        slashed.path = dir.join("1970-01-01/a/b.ghrec");
        for e in [&derived, &renamed, &same_stem, &slashed] {
            index.upsert(e.clone());
        }
        assert!(!index.entries[index.position("a/b").unwrap()].path_stored());
        index.upsert(entry("keep", "agent", &[], &[]));
        // A path named like an entry's id but not its file removes nothing.
        index.remove_paths(&[PathBuf::from("/rec/1970-01-01/1-00000003.ghrec")]);
        assert_eq!(index.entries.len(), 5);
        index.remove_paths(&[
            derived.path.clone(),
            renamed.path.clone(),
            same_stem.path.clone(),
            slashed.path.clone(),
        ]);
        assert_eq!(index.iter().map(|v| v.id).collect::<Vec<_>>(), ["keep"]);
        assert_eq!(index.get("keep").map(|e| e.id), Some("keep".to_string()));
        assert!(index.get("1-00000001").is_none());
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
            index.get("s10").map(|e| (e.statements, e.identity.to_string())),
            Some((42, "other".to_string()))
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
            match index.view(&id) {
                Some(e) => assert!(i % 3 != 0 && e.id == id, "{id} found {}", e.id),
                None => assert_eq!(i % 3, 0, "{id} lost"),
            }
        }
        let mut live = entry("s11", "agent", &["r"], &["allow", "approved"]);
        live.statements = 7;
        index.update_counts(&live);
        assert_eq!(index.get("s11").map(|e| e.statements), Some(7));
        // Positions moved: an id upserted again is still replaced in place.
        let kept = index.entries.len();
        index.upsert(entry("s998", "late", &["r"], &[]));
        assert_eq!(index.entries.len(), kept);
        assert_eq!(index.view("s998").map(|e| e.identity), Some("late"));
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
            assert_eq!(index.view(&id).map(|e| e.id), Some(id.as_str()));
        }
        assert_eq!(index.by_id.len(), index.entries.len(), "one position per entry");
    }
}

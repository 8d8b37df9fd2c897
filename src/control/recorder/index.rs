//! The in-memory index of recordings (for the admin API's list), built
//! from the files at start and kept current by the writers.

use super::packed::{self, Packed, View};
use super::spill::{Place, Spill, WINDOW};
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
/// The index keeps every finished session up to `MAX_INDEX`. A session
/// still open is kept in memory, packed into one allocation (see
/// [`Packed`]), its counts updated in place; a finished one goes to the
/// spill (see [`Spill`]), and the index keeps only where it is. The map
/// from id to position holds positions and the ids' hashes only, finding
/// an id by comparing the entry's own (the id is not kept twice). Readers
/// get [`View`]s to filter on and unpack only what they keep.
#[derive(Default)]
pub struct Index {
    /// The recordings' directory: a path under it that the writer's
    /// naming gives is derived, not stored; the spill is made in it.
    dir: PathBuf,
    entries: Vec<Slot>,
    by_id: HashTable<Key>,
    hasher: RandomState,
    /// Where an entry is packed before it is copied to its own allocation.
    scratch: Vec<u8>,
    /// Finished sessions' entries; made at the first, `None` when it
    /// could not be (they are then kept in memory).
    spill: Option<Spill>,
    spill_tried: bool,
}

/// Where an entry is.
#[derive(Debug)]
enum Slot {
    /// In memory: a session still open, or a finished one the spill did
    /// not take.
    Here(Packed),
    Spilled(Place),
}

/// A position in `entries` and the low half of its id's hash (so that the
/// map grows, and positions move, without reading ids from the spill).
#[derive(Debug, Clone, Copy)]
struct Key {
    hash: u32,
    at: u32,
}

/// The table's hash of a key: the stored half, in both halves (the table
/// takes its buckets from the low bits and its tags from the high ones).
fn spread(hash: u32) -> u64 {
    (hash as u64) << 32 | hash as u64
}

impl Index {
    pub(super) fn new(dir: PathBuf) -> Index {
        Index {
            dir,
            ..Index::default()
        }
    }

    fn hash(&self, id: &str) -> u32 {
        self.hasher.hash_one(id) as u32
    }

    pub(super) fn upsert(&mut self, e: Entry) {
        let packed = Packed::pack(&e, &self.dir, &mut self.scratch);
        let slot = self.place(packed);
        match self.position(&e.id) {
            Some(i) => {
                let old = std::mem::replace(&mut self.entries[i], slot);
                self.forget(old);
            }
            None => {
                if self.entries.len() >= MAX_INDEX {
                    let drop = self.entries.len() / 10;
                    let gone: Vec<Slot> = self.entries.drain(..drop).collect();
                    gone.into_iter().for_each(|s| self.forget(s));
                    self.by_id.retain(|k| match (k.at as usize).checked_sub(drop) {
                        Some(at) => {
                            k.at = at as u32;
                            true
                        }
                        None => false,
                    });
                }
                let hash = self.hash(&e.id);
                let at = self.entries.len() as u32;
                self.entries.push(slot);
                self.by_id
                    .insert_unique(spread(hash), Key { hash, at }, |k| spread(k.hash));
            }
        }
        self.compact_if_worth_it();
    }

    /// Where a newly packed entry goes: the spill if it is finished and
    /// the spill takes it, memory otherwise.
    fn place(&mut self, packed: Packed) -> Slot {
        if packed.live() {
            return Slot::Here(packed);
        }
        if self.spill.is_none() && !self.spill_tried {
            self.spill_tried = true;
            // No directory (an index made for a test) is no spill.
            if !self.dir.as_os_str().is_empty() {
                match Spill::create(&self.dir) {
                    Ok(s) => self.spill = Some(s),
                    Err(e) => tracing::warn!(target: "gatehouse::recorder", error = %e,
                        "no file for the index's finished sessions: they are kept in memory"),
                }
            }
        }
        match self.spill.as_mut().and_then(|s| s.append(packed.bytes())) {
            Some(place) => Slot::Spilled(place),
            None => Slot::Here(packed),
        }
    }

    /// Lets the spill know an entry it holds is gone.
    fn forget(&mut self, slot: Slot) {
        if let (Slot::Spilled(place), Some(spill)) = (slot, self.spill.as_mut()) {
            spill.forget(place);
        }
    }

    fn compact_if_worth_it(&mut self) {
        let Index {
            dir, entries, spill, ..
        } = self;
        if !spill.as_ref().is_some_and(|s| s.wants_compaction()) {
            return;
        }
        let places = entries.iter_mut().filter_map(|s| match s {
            Slot::Spilled(p) => Some(p),
            Slot::Here(_) => None,
        });
        if let Some(fresh) = spill.as_mut().and_then(|s| s.compacted(dir, places)) {
            *spill = Some(fresh);
        }
    }

    /// The bytes of the entry at `i`: borrowed when it is in memory, read
    /// into `buf` when it is spilled (`None` if that read fails).
    fn bytes_at<'a>(&'a self, i: usize, buf: &'a mut Vec<u8>) -> Option<&'a [u8]> {
        match &self.entries[i] {
            Slot::Here(p) => Some(p.bytes()),
            Slot::Spilled(place) => {
                let spill = self.spill.as_ref()?;
                match spill.read(*place, buf) {
                    Ok(()) => Some(&buf[..]),
                    Err(e) => {
                        tracing::warn!(target: "gatehouse::recorder", error = %e,
                            "the index's file of finished sessions cannot be read");
                        None
                    }
                }
            }
        }
    }

    /// Where the entry with this id is in `entries`. A spilled entry that
    /// cannot be read is not taken for it: with half a hash kept, it may
    /// be another session's, which an upsert must never replace. (A
    /// session's own entry is in memory while it is open, so an upsert at
    /// its close finds it whatever the spill does.)
    fn position(&self, id: &str) -> Option<usize> {
        self.position_or_unreadable(id).ok().flatten()
    }

    /// [`Index::position`], or an error when a spilled entry that could be
    /// this id's cannot be read (so "not indexed" is not said wrongly).
    fn position_or_unreadable(&self, id: &str) -> std::io::Result<Option<usize>> {
        let hash = self.hash(id);
        let mut buf = Vec::new();
        let mut unreadable = false;
        let found = self.by_id.find(spread(hash), |k| {
            if k.hash != hash {
                return false;
            }
            match self.bytes_at(k.at as usize, &mut buf) {
                Some(b) => packed::id_of(b) == id,
                None => {
                    unreadable = true;
                    false
                }
            }
        });
        match found {
            Some(k) => Ok(Some(k.at as usize)),
            None if unreadable => Err(std::io::Error::other(
                "the index's file of finished sessions cannot be read",
            )),
            None => Ok(None),
        }
    }

    /// Brings a live entry's statement count and decisions up to date
    /// (in place, without packing the entry again).
    pub(super) fn update_counts(&mut self, e: &Entry) {
        let Some(i) = self.position(&e.id) else { return };
        match &mut self.entries[i] {
            Slot::Here(p) => p.set_counts(e.statements, &e.decisions),
            // Not the writer's way (a session's counts change while it is
            // open, in memory), but an update is never dropped for it.
            Slot::Spilled(place) => {
                let place = *place;
                let mut buf = Vec::new();
                let Some(spill) = self.spill.as_mut() else { return };
                if spill.read(place, &mut buf).is_ok() {
                    let mut p = Packed::from_bytes(&buf);
                    p.set_counts(e.statements, &e.decisions);
                    if let Err(err) = spill.overwrite(place, p.bytes()) {
                        tracing::warn!(target: "gatehouse::recorder", error = %err,
                            "the index's file of finished sessions cannot be written");
                    }
                }
            }
        }
    }

    /// The entry with this id, unpacked.
    pub fn get(&self, id: &str) -> Option<Entry> {
        self.find(id).ok().flatten()
    }

    /// The entry with this id, unpacked; an error when the spill cannot
    /// be read where it could be (the admin API then says so, rather than
    /// that no recording has this id).
    pub fn find(&self, id: &str) -> std::io::Result<Option<Entry>> {
        let Some(i) = self.position_or_unreadable(id)? else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        match self.bytes_at(i, &mut buf) {
            Some(b) => Ok(Some(packed::view_of(b, &self.dir).to_entry())),
            None => Err(std::io::Error::other(
                "the index's file of finished sessions cannot be read",
            )),
        }
    }

    /// Calls `f` with every entry: those in memory, then the spilled ones
    /// in the spill's order, read a window at a time. A spill that cannot
    /// be read stops it, and says so: some entries were not seen.
    pub fn each(&self, mut f: impl FnMut(View<'_>)) -> std::io::Result<()> {
        self.each_at(|_, v| f(v))
    }

    /// [`Index::each`], with each entry's position.
    fn each_at(&self, mut f: impl FnMut(usize, View<'_>)) -> std::io::Result<()> {
        let mut spilled: Vec<(Place, usize)> = Vec::new();
        for (i, slot) in self.entries.iter().enumerate() {
            match slot {
                Slot::Here(p) => f(i, p.view(&self.dir)),
                Slot::Spilled(place) => spilled.push((*place, i)),
            }
        }
        let Some(spill) = self.spill.as_ref() else {
            return Ok(());
        };
        spilled.sort_unstable_by_key(|(p, _)| p.at);
        let mut window = Vec::new();
        let mut window_at = 0u64;
        for (p, i) in spilled {
            let (at, end) = (p.at as u64, p.at as u64 + p.len as u64);
            if at < window_at || end > window_at + window.len() as u64 {
                spill.read_window(at, WINDOW.max(p.len as usize), &mut window)?;
                window_at = at;
            }
            let from = (at - window_at) as usize;
            match window.get(from..from + p.len as usize) {
                Some(b) => f(i, packed::view_of(b, &self.dir)),
                None => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            }
        }
        Ok(())
    }

    /// The sessions still open (they are all in memory; found without
    /// reading the finished ones past their flags).
    pub fn live(&self) -> impl Iterator<Item = View<'_>> {
        self.entries.iter().filter_map(|s| match s {
            Slot::Here(p) if p.live() => Some(p.view(&self.dir)),
            _ => None,
        })
    }

    /// Drops the entries of these files. A file named as the writer names
    /// them (`ID.ghrec`) is found by its id. Any other can only be an
    /// entry whose path is stored, or whose id is not a plain file name:
    /// those are looked through, without deriving every entry's path.
    pub(super) fn remove_paths(&mut self, gone: &[PathBuf]) {
        let mut doomed: HashSet<usize> = HashSet::new();
        let mut unfound: HashSet<&Path> = HashSet::new();
        let mut buf = Vec::new();
        for p in gone {
            let by_name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|id| self.position(id))
                .filter(|&i| {
                    self.bytes_at(i, &mut buf)
                        .is_some_and(|b| packed::view_of(b, &self.dir).path() == *p)
                });
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
            let read = self.each_at(|i, v| {
                let found = match v.stored_path() {
                    Some(stored) => unfound.contains(stored),
                    None => {
                        // Its file's name gives back any other id.
                        let plain = !v.id.is_empty() && !v.id.contains('/');
                        !plain && unfound.contains(v.path().as_path())
                    }
                };
                if found {
                    doomed.insert(i);
                }
            });
            if let Err(e) = read {
                tracing::warn!(target: "gatehouse::recorder", error = %e,
                    "the index's file of finished sessions cannot be read: removed files may stay listed");
            }
        }
        if doomed.is_empty() {
            return;
        }
        // Where each kept entry moves to.
        let mut moved_to = vec![u32::MAX; self.entries.len()];
        let mut next = 0u32;
        for (i, to) in moved_to.iter_mut().enumerate() {
            if !doomed.contains(&i) {
                *to = next;
                next += 1;
            }
        }
        let mut kept = Vec::with_capacity(next as usize);
        for (i, slot) in std::mem::take(&mut self.entries).into_iter().enumerate() {
            if doomed.contains(&i) {
                self.forget(slot);
            } else {
                kept.push(slot);
            }
        }
        self.entries = kept;
        self.by_id.retain(|k| match moved_to[k.at as usize] {
            u32::MAX => false,
            at => {
                k.at = at;
                true
            }
        });
        self.by_id.shrink_to(self.entries.len(), |k| spread(k.hash));
        self.compact_if_worth_it();
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

    /// Runs `check` on an index that keeps finished entries in memory
    /// (its directory does not exist: no spill can be made there), then
    /// on one that spills them (a directory that does), each with its
    /// recordings' directory.
    fn in_memory_and_spilled(check: impl Fn(Index, &Path, bool)) {
        let memory = PathBuf::from("/nonexistent/gatehouse/recordings");
        check(Index::new(memory.clone()), &memory, false);
        let tmp = tempfile::tempdir().unwrap();
        check(Index::new(tmp.path().to_path_buf()), tmp.path(), true);
        // The spill has no name: nothing in the directory shows it.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    impl Index {
        fn packed(&self, id: &str) -> Packed {
            let mut buf = Vec::new();
            Packed::from_bytes(self.bytes_at(self.position(id).unwrap(), &mut buf).unwrap())
        }

        fn spilled(&self) -> usize {
            self.entries.iter().filter(|s| matches!(s, Slot::Spilled(_))).count()
        }

        fn ids(&self) -> Vec<String> {
            let mut ids = Vec::new();
            self.each(|v| ids.push(v.id.to_string())).unwrap();
            ids
        }

        fn entries(&self) -> Vec<Entry> {
            let mut all = Vec::new();
            self.each(|v| all.push(v.to_entry())).unwrap();
            all
        }
    }

    #[test]
    fn an_entry_comes_back_as_it_went_in_whatever_it_holds() {
        in_memory_and_spilled(|mut index, dir, spills| {
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
            for e in &cases {
                index.upsert(e.clone());
            }
            // Every finished entry is spilled when there is a spill; the
            // live one is in memory.
            assert_eq!(index.spilled(), if spills { cases.len() - 1 } else { 0 });
            let all = index.entries();
            assert_eq!(all.len(), cases.len());
            for e in &cases {
                let got = index.get(&e.id).unwrap();
                let mut want = said(e);
                // Decisions are listed in the API's order: allow, deny, approved.
                let order = ["allow", "deny", "approved"];
                let mut ds: Vec<&str> = e.decisions.iter().map(|d| &**d).collect();
                ds.sort_by_key(|d| order.iter().position(|o| o == d));
                want["decisions"] = serde_json::json!(ds);
                assert_eq!(said(&got), want, "{}", e.id);
                let listed = all.iter().find(|l| l.id == e.id).unwrap();
                assert_eq!(said(listed), want, "{} as every entry", e.id);
            }
            // The writer's path is derived, not stored; any other is stored.
            assert_eq!(index.packed("1765018290-0001e240").size(), 120);
            assert!(index.packed("odd").size() > 600 + "/elsewhere/odd name.ghrec".len());
            // The same entry under another directory keeps its path.
            let mut moved = Index::new(PathBuf::from("/other"));
            moved.upsert(cases[0].clone());
            assert_eq!(moved.get(&cases[0].id).unwrap().path, cases[0].path);
        });
    }

    #[test]
    fn a_live_entry_s_counts_change_in_place() {
        in_memory_and_spilled(|mut index, _, spills| {
            let mut live = entry("s", "agent", &["r"], &[]);
            live.live = true;
            index.upsert(live.clone());
            let before = index.packed("s").size();
            live.statements = 1_000_000;
            live.decisions = vec!["deny".into(), "allow".into()];
            index.update_counts(&live);
            let e = index.get("s").unwrap();
            assert_eq!((e.statements, e.live), (1_000_000, true));
            assert_eq!(e.decisions.iter().map(|d| &**d).collect::<Vec<_>>(), ["allow", "deny"]);
            assert_eq!(index.packed("s").size(), before);
            assert_eq!(index.live().map(|v| v.id).collect::<Vec<_>>(), ["s"]);
            // Closing it packs it again (and spills it).
            live.live = false;
            live.end = Some("client-disconnect".into());
            index.upsert(live.clone());
            assert_eq!(index.live().count(), 0);
            assert_eq!(index.spilled(), spills as usize);
            assert_eq!(index.get("s").unwrap().end.as_deref(), Some("client-disconnect"));
            // A finished entry's counts still change, spilled or not.
            live.statements = 5;
            live.decisions = vec!["approved".into()];
            index.update_counts(&live);
            let e = index.get("s").unwrap();
            assert_eq!((e.statements, e.decisions.len(), e.live), (5, 1, false));
            // An unknown id changes nothing.
            index.update_counts(&entry("nobody", "agent", &[], &["allow"]));
            assert_eq!(index.entries.len(), 1);
        });
    }

    #[test]
    fn removed_files_leave_the_index_by_either_kind_of_path() {
        in_memory_and_spilled(|mut index, dir, spills| {
            let mut derived = entry("1-00000001", "agent", &[], &[]);
            derived.started_us = 1_000_000;
            derived.path = dir.join("1970-01-01/1-00000001.ghrec");
            let mut renamed = entry("1-00000002", "agent", &[], &[]);
            renamed.path = dir.join("1970-01-01/copy.ghrec");
            let mut same_stem = entry("1-00000003", "agent", &[], &[]);
            same_stem.path = PathBuf::from("/elsewhere/1-00000003.ghrec");
            // An id that is not a plain file name, its path derived all the same.
            let mut slashed = entry("a/b", "agent", &[], &[]);
            slashed.started_us = 0;
            slashed.path = dir.join("1970-01-01/a/b.ghrec");
            for e in [&derived, &renamed, &same_stem, &slashed] {
                index.upsert(e.clone());
            }
            assert!(index.packed("a/b").view(dir).stored_path().is_none());
            index.upsert(entry("keep", "agent", &[], &[]));
            assert_eq!(index.spilled(), if spills { 5 } else { 0 });
            // A path named like an entry's id but not its file removes nothing.
            index.remove_paths(&[dir.join("1970-01-01/1-00000003.ghrec")]);
            assert_eq!(index.entries.len(), 5);
            index.remove_paths(&[
                derived.path.clone(),
                renamed.path.clone(),
                same_stem.path.clone(),
                slashed.path.clone(),
            ]);
            assert_eq!(index.ids(), ["keep"]);
            assert_eq!(index.get("keep").map(|e| e.id), Some("keep".to_string()));
            assert!(index.get("1-00000001").is_none());
        });
    }

    #[test]
    fn ids_find_their_entries_through_updates_removals_and_the_cap() {
        in_memory_and_spilled(|mut index, dir, spills| {
            for i in 0..1000 {
                index.upsert(entry(&format!("s{i}"), "agent", &["r"], &["allow"]));
            }
            // An upsert of a known id replaces its entry in place (the
            // spill counts the old one's bytes as dead).
            let dead = |index: &Index| index.spill.as_ref().map_or(0, |s| s.dead);
            assert_eq!(dead(&index), 0);
            let old_len = index.packed("s10").size() as u64;
            let mut again = entry("s10", "other", &["r"], &["deny"]);
            again.statements = 42;
            index.upsert(again);
            assert_eq!(dead(&index), if spills { old_len } else { 0 });
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
                match index.get(&id) {
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
            assert_eq!(
                index.get("s998").map(|e| e.identity.to_string()).as_deref(),
                Some("late")
            );
            assert_eq!(index.by_id.len(), index.entries.len(), "one position per entry");
            assert_eq!(index.spilled(), if spills { kept } else { 0 });
            // Past the cap the oldest tenth goes, and the rest are found.
            let mut index = Index::new(dir.to_path_buf());
            for i in 0..=MAX_INDEX {
                index.upsert(entry(&format!("c{i}"), "agent", &["r"], &[]));
            }
            let dropped = MAX_INDEX / 10;
            assert_eq!(index.entries.len(), MAX_INDEX - dropped + 1);
            // The dropped entries' bytes are dead (a tenth of the file: too
            // few to compact).
            let mut scratch = Vec::new();
            let dropped_bytes: u64 = (0..dropped)
                .map(|i| Packed::pack(&entry(&format!("c{i}"), "agent", &["r"], &[]), dir, &mut scratch).size() as u64)
                .sum();
            assert_eq!(dead(&index), if spills { dropped_bytes } else { 0 });
            assert!(index.get("c0").is_none() && index.get(&format!("c{}", dropped - 1)).is_none());
            for i in dropped..=MAX_INDEX {
                let id = format!("c{i}");
                assert_eq!(index.get(&id).map(|e| e.id), Some(id.clone()));
            }
            assert_eq!(index.by_id.len(), index.entries.len(), "one position per entry");
        });
    }

    /// Finished session `s{i}`.
    fn session(i: usize) -> Entry {
        entry(&format!("s{i}"), "agent", &["r"], &["allow"])
    }

    /// An index in a directory of its own (dropped with the directory)
    /// that has heard of finished sessions `s0` to `s{n-1}`.
    fn finished_sessions(n: usize) -> (tempfile::TempDir, Index) {
        let tmp = tempfile::tempdir().unwrap();
        let mut index = Index::new(tmp.path().to_path_buf());
        for i in 0..n {
            index.upsert(session(i));
        }
        (tmp, index)
    }

    /// A spill whose writes fail keeps what it took, readable, and the
    /// index keeps the next entries in memory: none is lost.
    #[test]
    fn entries_stay_found_when_the_spill_cannot_be_written() {
        let (_tmp, mut index) = finished_sessions(1000);
        assert_eq!(index.spilled(), 1000);
        index.spill.as_mut().unwrap().refuse_writes();
        for i in 1000..3000 {
            index.upsert(session(i));
        }
        let spilled = index.spilled();
        assert!(spilled > 1000 && spilled < 3000, "{spilled} spilled");
        for i in 0..3000 {
            assert_eq!(index.get(&format!("s{i}")).map(|e| e.id), Some(format!("s{i}")), "s{i}");
        }
        assert_eq!(index.ids().len(), 3000);
    }

    /// A spill that cannot be read says so to whoever asks (the admin API
    /// answers 503, not "no such recording" or a short list), and a new
    /// session is still indexed as itself, never over an unreadable entry.
    #[test]
    fn a_spill_that_cannot_be_read_says_so() {
        let (_tmp, mut index) = finished_sessions(2000);
        index.spill.as_mut().unwrap().refuse_reads();
        assert!(index.each(|_| {}).is_err());
        // The first entries were written (the last still wait in memory).
        assert!(index.find("s0").is_err());
        assert!(index.get("s0").is_none());
        assert_eq!(index.find("s1999").unwrap().map(|e| e.id), Some("s1999".to_string()));
        assert!(index.find("nobody").unwrap().is_none());
        let before = index.entries.len();
        let mut live = session(5000);
        live.live = true;
        index.upsert(live);
        assert_eq!(index.entries.len(), before + 1);
        assert!(index.find("s5000").unwrap().unwrap().live);
    }

    /// Entries removed from the spill are dead bytes until there are
    /// enough to write the file again without them; the entries left
    /// come back the same from their new places.
    #[test]
    fn a_spill_written_again_without_its_dead_entries_loses_no_live_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut index = Index::new(dir.to_path_buf());
        let session = |i: usize| {
            let mut e = entry(
                &format!("{i}-{i:08x}"),
                &format!("agent-{}", i % 13),
                &["r"],
                &["allow"],
            );
            e.started_us = i as u64 * 1_000_000;
            e.path = PathBuf::from(format!("/r/{i}.ghrec"));
            e.statements = i as u64;
            e
        };
        let n = 30_000;
        for i in 0..n {
            index.upsert(session(i));
        }
        let size_before = index.spill.as_ref().unwrap().len();
        // Nine in ten go: the spill is written again, smaller.
        let gone: Vec<PathBuf> = (0..n).filter(|i| i % 10 != 0).map(|i| session(i).path).collect();
        index.remove_paths(&gone);
        let size_after = index.spill.as_ref().unwrap().len();
        assert!(size_after * 5 < size_before, "{size_before} -> {size_after}");
        assert_eq!(index.entries.len(), n / 10);
        for i in 0..n {
            match index.get(&session(i).id) {
                Some(e) => assert!(i % 10 == 0 && said(&e) == said(&session(i)), "{i}"),
                None => assert!(i % 10 != 0, "{i} lost"),
            }
        }
        assert_eq!(index.ids().len(), n / 10);
    }
}

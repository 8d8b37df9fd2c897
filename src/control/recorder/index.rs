//! The in-memory index of recordings (for the admin API's list), built
//! from the files at start and kept current by the writers.

use super::MAX_INDEX;
use crate::record;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

/// A recorded session in the index (for the admin API's list).
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub id: String,
    pub session: u32,
    pub identity: String,
    pub roles: Vec<String>,
    pub target: String,
    pub client: String,
    pub started_us: u64,
    pub ended_us: Option<u64>,
    pub end: Option<String>,
    pub statements: u64,
    /// Decisions seen: allow, deny, hold.
    pub decisions: Vec<String>,
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
#[derive(Default)]
pub struct Index {
    pub entries: Vec<Entry>,
    by_id: HashMap<String, usize>,
}

impl Index {
    pub(super) fn upsert(&mut self, e: Entry) {
        match self.by_id.get(&e.id) {
            Some(&i) => self.entries[i] = e,
            None => {
                if self.entries.len() >= MAX_INDEX {
                    let drop = self.entries.len() / 10;
                    self.entries.drain(..drop);
                    self.reindex();
                }
                self.by_id.insert(e.id.clone(), self.entries.len());
                self.entries.push(e);
            }
        }
    }

    fn reindex(&mut self) {
        self.by_id = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.clone(), i))
            .collect();
    }

    /// Brings a live entry's statement count and decisions up to date
    /// (without copying the entry).
    pub(super) fn update_counts(&mut self, e: &Entry) {
        if let Some(&i) = self.by_id.get(&e.id) {
            let x = &mut self.entries[i];
            x.statements = e.statements;
            if x.decisions.len() != e.decisions.len() {
                x.decisions.clone_from(&e.decisions);
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.by_id.get(id).map(|&i| &self.entries[i])
    }

    pub(super) fn remove_paths(&mut self, gone: &[PathBuf]) {
        self.entries.retain(|e| !gone.contains(&e.path));
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
                    identity: v["identity"].as_str().unwrap_or("").to_string(),
                    roles: serde_json::from_value(v["roles"].clone()).unwrap_or_default(),
                    target: v["target"].as_str().unwrap_or("").to_string(),
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
                        if !e.decisions.iter().any(|x| x == d) {
                            e.decisions.push(d.to_string());
                        }
                    }
                }
            }
            Some("close") => {
                if let Some(e) = e.as_mut() {
                    e.ended_us = v["t"].as_u64();
                    e.end = v["end"].as_str().map(str::to_string);
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

//! A writer thread: takes the data path's events from its channel and
//! writes each session's chained records (statements with their results,
//! reviews, rows in `full` mode, the seal), the audit log's records, and
//! keeps the index and live tails current.

use super::index::Entry;
use super::session_file::SessionFile;
use super::{
    civil_day, LiveTail, Recorder, IDLE_POLL, MAX_BINDS, MAX_BIND_BYTES, MAX_PARAMS, MAX_PARAM_BYTES, ROWS_PER_RECORD,
};
use crate::config::ResultsMode;
use crate::record::events::{Ev, OpenInfo, RecordingKey};
use crate::record::{self, json_strs, now_us, Chain, Fields};
use crate::sql::Classifier;
use crate::wire::pg::Cursor;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{self, error::TryRecvError};

/// A record's fields, as a JSON value or written already.
enum Rec {
    V(Value),
    F(Fields),
}

/// Statement texts masked per writer (prepared and repeated statements
/// cost a lookup), bounded.
const MAX_MASKED_SQL: usize = 4096;

fn masked_sql(cache: &mut MaskedSql, s: &Session, sql: &str) -> Arc<str> {
    let engine = s.info.engine.as_ref().map(|e| Arc::as_ptr(e) as usize).unwrap_or(0);
    if let Some(m) = cache.get(&engine).and_then(|c| c.get(sql)) {
        return m.clone();
    }
    if cache.values().map(HashMap::len).sum::<usize>() >= MAX_MASKED_SQL {
        cache.clear();
    }
    let m: Arc<str> = Writer::mask(s, sql).into();
    cache.entry(engine).or_default().insert(Arc::from(sql), m.clone());
    m
}

/// Masked statement texts by scanning engine (its address) and text.
type MaskedSql = HashMap<usize, HashMap<Arc<str>, Arc<str>>>;

/// A statement waiting for its result.
struct Pending {
    n: u64,
    group: u64,
    extended: bool,
    t: u64,
    /// A RowDescription came for this statement: its columns are the
    /// session's `columns`.
    described: bool,
    masked: BTreeMap<String, u64>,
    rows_seen: u64,
    error: Option<Value>,
    results: u32,
}

/// One open session file.
struct Session {
    id: String,
    path: std::path::PathBuf,
    file: SessionFile,
    chain: Chain,
    info: OpenInfo,
    started: u64,
    dirty: bool,
    /// Parameters of the last Bind frames, by ordinal, as the JSON the
    /// statement record carries (masked already); `None`: not parsable.
    binds: VecDeque<(u64, Option<Box<[u8]>>)>,
    /// Bytes held in `binds`.
    bind_bytes: usize,
    /// The last RowDescription: its body, its columns (name, format) and
    /// the names as a JSON array. A prepared statement gets the same one at
    /// every execution: it is parsed once.
    row_description: Vec<u8>,
    columns: Vec<(String, i16)>,
    columns_json: Vec<u8>,
    /// Statements counted since the index last heard of them.
    counts_dirty: bool,
    next_bind: u64,
    queue: VecDeque<Pending>,
    /// Sync/Query messages seen, and ReadyForQuery seen.
    groups: u64,
    readies: u64,
    next_n: u64,
    review: Option<Value>,
    rows: Vec<Value>,
    rows_of: u64,
    live: Option<LiveTail>,
    entry: Entry,
}

pub(super) struct Writer {
    rec: Arc<Recorder>,
    /// The first writer also writes admin actions to the audit log, signs
    /// it at intervals and applies retention.
    lead: bool,
    /// This writer appended to the audit log since its last flush.
    audit_dirty: bool,
    last_checkpoint: Instant,
    /// Open recordings, by key.
    sessions: HashMap<RecordingKey, Session>,
    /// Classes of statements the data path did not classify (no policy),
    /// in each protocol's grammar.
    classifier: Classifier,
    mysql_classifier: crate::sql::mysql::MysqlClassifier,
    masked_sql: MaskedSql,
    last_sync: Instant,
    last_retention: Instant,
    /// Sessions closed in this pass over the channel, their seals made
    /// but held back: written at the pass's end after the audit log's
    /// records of them (`write_sealed`).
    sealing: Vec<Sealing>,
    /// Sealed files not yet synced: made durable together at the next sync.
    sealed: Vec<std::fs::File>,
    /// Sessions whose file could not be created, by session, to be tried
    /// again at their next event.
    unopened: HashMap<RecordingKey, (u64, OpenInfo)>,
    /// The day directory known to exist.
    day_dir: Option<String>,
    /// The record line being written, reused (dropped above `LINE_KEPT`).
    line: Vec<u8>,
}

/// Capacity of the reused line buffer kept between records (a `rows`
/// record of a `full` result can be megabytes).
const LINE_KEPT: usize = 64 << 10;

impl Writer {
    pub(super) fn new(rec: Arc<Recorder>, lead: bool) -> Writer {
        Writer {
            rec,
            lead,
            audit_dirty: false,
            last_checkpoint: Instant::now(),
            sessions: HashMap::new(),
            classifier: Classifier::new(&[]),
            mysql_classifier: crate::sql::mysql::MysqlClassifier::new(&[]),
            masked_sql: HashMap::new(),
            last_sync: Instant::now(),
            last_retention: Instant::now(),
            sealing: Vec::new(),
            sealed: Vec::new(),
            unopened: HashMap::new(),
            day_dir: None,
            line: Vec::new(),
        }
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Ev>) {
        let interval = Duration::from_millis(self.rec.cfg.sync_interval_ms);
        loop {
            let mut stop = false;
            let mut n = 0;
            loop {
                match rx.try_recv() {
                    Ok(Ev::Stop) => {
                        stop = true;
                        break;
                    }
                    Ok(ev) => {
                        self.handle(ev);
                        n += 1;
                        if n % 4096 == 0 {
                            self.flush_buffers();
                            // Under sustained load the channel is never
                            // empty: syncs and checkpoints still come due.
                            if self.last_sync.elapsed() >= interval {
                                break;
                            }
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        stop = true;
                        break;
                    }
                }
            }
            if n > 0 {
                self.flush_buffers();
            }
            if stop {
                self.shutdown();
                return;
            }
            if self.last_sync.elapsed() >= interval {
                self.sync_dirty();
                if self.lead && self.rec.health.failing() {
                    self.rec.probe();
                }
            }
            if self.lead && self.last_retention.elapsed() >= Duration::from_secs(60) {
                self.last_retention = Instant::now();
                self.rec.apply_retention();
            }
            if self.lead && self.last_checkpoint.elapsed() >= Duration::from_secs(self.rec.cfg.checkpoint_interval_secs)
            {
                self.last_checkpoint = Instant::now();
                let r = self.rec.checkpoint();
                if let Err(e) = r {
                    self.write_err("audit log checkpoint", e);
                }
                self.audit_dirty = true;
            }
            if n == 0 {
                std::thread::sleep(IDLE_POLL);
            }
        }
    }

    fn write_err(&self, what: &str, e: std::io::Error) {
        self.rec.failed(what, &e);
    }

    /// Pushes buffered lines to the files (the live tails have them
    /// already), and the sessions' statement counts to the index: once per
    /// pass over the channel, not per event.
    fn flush_buffers(&mut self) {
        self.write_sealed();
        if self.sessions.values().any(|s| s.counts_dirty) {
            let mut index = self.rec.index.lock().unwrap_or_else(|p| p.into_inner());
            for s in self.sessions.values_mut().filter(|s| s.counts_dirty) {
                s.counts_dirty = false;
                index.update_counts(&s.entry);
            }
        }
        let mut errs = Vec::new();
        for s in self.sessions.values_mut() {
            if let Err(e) = s.file.flush() {
                errs.push(e);
            }
        }
        if std::mem::take(&mut self.audit_dirty) {
            if let Err(e) = self.rec.audit_log().flush() {
                errs.push(e);
            }
        }
        for e in errs {
            self.write_err("flush", e);
        }
    }

    /// Seals the sessions closed since the last pass: the audit log's
    /// `sealed` records of all of them, appended and written out together,
    /// then each session's last records with its seal (one write a file,
    /// unless a large `rows` record went before). Whoever sees a seal on
    /// disk finds it in the audit log, and the audit log names no seal
    /// before the pass that writes it. A session whose audit record could
    /// not be written is not sealed: its file ends at its close, as after
    /// an unclean stop, and the next start seals it (with a key, up to the
    /// last signed head), while recording is failing. Once a pass instead
    /// of once a session: a storm seals thousands a second.
    fn write_sealed(&mut self) {
        if self.sealing.is_empty() {
            return;
        }
        let mut recorded = Vec::with_capacity(self.sealing.len());
        let mut errs = Vec::new();
        {
            let mut audit = self.rec.audit_log();
            for s in &self.sealing {
                let r = audit.append_signed(s.t, "sealed", &s.audit);
                recorded.push(r.is_ok());
                errs.extend(r.err());
            }
            // Appended records may sit in the buffer: none counts until
            // the buffer is written out.
            if let Err(e) = audit.flush() {
                recorded.iter_mut().for_each(|r| *r = false);
                errs.push(e);
            }
            // Sealed, so no checkpoint needs to vouch for their heads
            // (dropped under the audit log's lock: a checkpoint after the
            // records does not name them as open).
            if self.rec.signer.is_some() {
                for (s, _) in self.sealing.iter().zip(&recorded).filter(|(_, r)| **r) {
                    self.rec.head_sealed(&s.file_name);
                }
            }
        }
        for e in errs {
            self.write_err("audit log", e);
        }
        // The audit log is written: nothing of the lead writer's waits.
        self.audit_dirty = false;
        let mut ended = Vec::with_capacity(self.sealing.len());
        for (mut s, recorded) in std::mem::take(&mut self.sealing).into_iter().zip(recorded) {
            let seal: &[u8] = if recorded { &s.seal } else { &[] };
            let written = s.file.write_all(seal).and_then(|_| s.file.into_file());
            let written = match written {
                // Durable at the next sync, with the other sealed files.
                Ok(f) => {
                    self.sealed.push(f);
                    true
                }
                Err(e) => {
                    self.write_err("seal", e);
                    false
                }
            };
            // A seal is announced (live tails, the index's hash) only
            // once it is in its file.
            if recorded && written {
                self.rec.stats.records.fetch_add(1, Ordering::Relaxed);
                self.rec.stats.bytes.fetch_add(s.seal.len() as u64, Ordering::Relaxed);
                if let Some(l) = s.live.as_ref().and_then(|l| l.get()) {
                    if l.receiver_count() > 0 {
                        let _ = l.send(String::from_utf8_lossy(&s.seal[..s.seal.len() - 1]).into());
                    }
                }
            } else {
                s.entry.seal_hash = None;
            }
            ended.push(s.entry);
        }
        {
            let mut live = self.rec.live.lock().unwrap_or_else(|p| p.into_inner());
            for e in &ended {
                live.remove(&e.id);
            }
        }
        let mut index = self.rec.index.lock().unwrap_or_else(|p| p.into_inner());
        for entry in ended {
            index.upsert(entry);
        }
    }

    fn sync_dirty(&mut self) {
        self.last_sync = Instant::now();
        self.write_sealed();
        // Nothing written since the last sync: the session has gone quiet,
        // and its buffer is given back until it writes again.
        for s in self.sessions.values_mut().filter(|s| !s.dirty) {
            s.file.release();
        }
        let mut errs = Vec::new();
        // What this sync makes durable is what the next checkpoint may
        // vouch for: heads are published once the sync succeeded (a head is
        // never ahead of its file, even after a power loss).
        let mut heads = Vec::new();
        if self.rec.signer.is_some() {
            for s in self.sessions.values().filter(|s| s.dirty && s.chain.seq() > 0) {
                let file = s
                    .path
                    .strip_prefix(&self.rec.cfg.dir)
                    .unwrap_or(&s.path)
                    .display()
                    .to_string();
                heads.push((
                    file,
                    s.chain.seq() - 1,
                    String::from_utf8_lossy(s.chain.prev()).into_owned(),
                ));
            }
        }
        // The audit log first: a seal made durable is in the audit log
        // made durable, whatever a power loss interrupts.
        if self.lead || !self.sealed.is_empty() {
            if let Err(e) = self.rec.audit_log().sync() {
                errs.push(e);
            }
        }
        let dirty = self.sessions.values().filter(|s| s.dirty).count();
        if self.sealed.len() + dirty > 1 {
            // Many files (a storm of short sessions): one syncfs of the
            // recordings' file system instead of a sync per file.
            for s in self.sessions.values_mut().filter(|s| s.dirty) {
                s.dirty = false;
                if let Err(e) = s.file.flush() {
                    errs.push(e);
                }
            }
            let fd = self.sealed.first().map(|f| f.as_raw_fd()).or_else(|| {
                self.sessions
                    .values()
                    .find_map(|s| s.file.file().ok().map(|f| f.as_raw_fd()))
            });
            if let Some(fd) = fd {
                // SAFETY: `fd` is an open file of this writer's.
                if unsafe { libc::syncfs(fd) } != 0 {
                    errs.push(std::io::Error::last_os_error());
                }
                self.rec.stats.syncs.fetch_add(1, Ordering::Relaxed);
            }
            self.sealed.clear();
        }
        for f in self.sealed.drain(..) {
            if let Err(e) = f.sync_all() {
                errs.push(e);
            }
            self.rec.stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
        for s in self.sessions.values_mut().filter(|s| s.dirty) {
            s.dirty = false;
            if let Err(e) = s.file.flush().and_then(|_| s.file.file()?.sync_data()) {
                errs.push(e);
            }
            self.rec.stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
        if errs.is_empty() {
            for (file, seq, hash) in heads {
                self.rec.head_moved(&file, seq, &hash);
            }
        }
        for e in errs {
            self.write_err("sync", e);
        }
    }

    fn shutdown(&mut self) {
        let ids: Vec<RecordingKey> = self.sessions.keys().copied().collect();
        for id in ids {
            self.close(id, now_us(), "gateway-stopped", json!({}));
        }
        self.sync_dirty();
    }

    fn handle(&mut self, ev: Ev) {
        if !self.unopened.is_empty() {
            if let Some(session) = ev.session().filter(|s| !self.sessions.contains_key(s)) {
                if let Some((t, info)) = self.unopened.remove(&session) {
                    self.open(session, t, info);
                }
                if matches!(ev, Ev::Close { .. }) {
                    // Never opened: nothing to close (and no retry left).
                    self.unopened.remove(&session);
                }
            }
        }
        match ev {
            Ev::Open { session, t, info } => self.open(session, t, *info),
            Ev::Client {
                session,
                t,
                frames,
                refused,
                statements,
            } => self.client(session, t, &frames, &refused, &statements),
            Ev::Server {
                session,
                t,
                frames,
                masked,
                gap_rows,
                gap_bytes,
            } => self.server(session, t, &frames, masked, gap_rows, gap_bytes),
            Ev::Review {
                session,
                t,
                review,
                outcome,
                reason,
                by,
            } => {
                let v = json!({ "review": review, "outcome": outcome, "reason": reason, "approvers": by });
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.review = Some(v.clone());
                }
                self.emit(session, t, "review", v);
            }
            Ev::Close {
                session,
                t,
                end,
                bytes_in,
                bytes_out,
                statements,
                rows,
                masked,
            } => {
                let v = json!({
                    "bytes_in": bytes_in, "bytes_out": bytes_out, "statements": statements,
                    "rows": rows, "masked": masked,
                });
                self.close(session, t, end, v);
            }
            Ev::Audit {
                t,
                who,
                roles,
                action,
                object,
                outcome,
            } => {
                let mut f = Fields::default();
                f.str("who", &who)
                    .strs("roles", roles.iter().map(String::as_str))
                    .str("action", &action)
                    .str("object", &object)
                    .str("outcome", &outcome);
                self.rec.audit_append(t, "admin", &f);
                self.audit_dirty = true;
            }
            Ev::Stop => {}
        }
    }

    /// Opens the recording `session` (its key: see `Ev`) of the session
    /// `info` describes.
    fn open(&mut self, session: RecordingKey, t: u64, info: OpenInfo) {
        let base = format!("{}-{:08x}", t / 1_000_000, info.session);
        let day = civil_day(t / 1_000_000);
        let dir = self.rec.cfg.dir.join(&day);
        let create = |path: &Path| {
            use std::os::unix::fs::OpenOptionsExt;
            // Evidence is for gatehouse and its group (auditors' tools), not
            // the world, whatever the process umask says.
            std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(super::FILE_MODE)
                .open(path)
        };
        // A session id can come back within a second (a server's backend
        // pid, given to the client): the next free name. `create_new` says
        // when a name is taken, so a free name costs no lookup of its own
        // (in a storm of short sessions, a second lookup in a directory of
        // tens of thousands of files was 4 % of the process's time).
        // The day's directory is made once (again if it was removed under
        // the writer: gatehouse removes files, not directories, but an
        // operator may).
        let mut dir_known = self.day_dir.as_deref() == Some(day.as_str());
        let mut dir_made = false;
        let mut id = base.clone();
        let mut taken = 0;
        let opened = loop {
            let path = dir.join(format!("{id}.{}", record::EXT));
            let r = if dir_known {
                create(&path)
            } else {
                Err(std::io::Error::from(std::io::ErrorKind::NotFound))
            };
            match r {
                Ok(f) => break Ok((f, path)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dir_made => {
                    dir_made = true;
                    if let Err(e) = super::create_dirs(&dir) {
                        break Err(e);
                    }
                    self.day_dir = Some(day.clone());
                    dir_known = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && taken < 1000 => {
                    taken += 1;
                    id = format!("{base}-{taken}");
                }
                Err(e) => break Err(e),
            }
        };
        let (file, path) = match opened {
            Ok(x) => x,
            Err(e) => {
                self.write_err("cannot create a session file", e);
                // Tried again at the session's next event: once writing
                // works, the session is recorded from there on.
                self.unopened.insert(session, (t, info));
                return;
            }
        };
        let live = LiveTail::default();
        self.rec
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), live.clone());
        let entry = Entry {
            id: id.clone(),
            session: info.session,
            identity: info.identity.as_str().into(),
            roles: info.roles.iter().map(|r| Arc::from(r.as_str())).collect(),
            target: info.target.as_str().into(),
            client: info.client.clone(),
            started_us: t,
            ended_us: None,
            end: None,
            statements: 0,
            decisions: Vec::new(),
            live: true,
            path: path.clone(),
            seal_hash: None,
        };
        self.rec
            .index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upsert(entry.clone());
        let fields = json!({
            "id": id,
            "session": info.session,
            "identity": info.identity,
            "roles": info.roles,
            "client": info.client,
            "target": info.target,
            "account": info.account,
            "tls": { "client": info.client_tls, "upstream": info.upstream_tls },
            "protocol": info.protocol.as_str(),
            "worker": info.worker,
            "results": format!("{:?}", info.results).to_lowercase(),
        });
        self.sessions.insert(
            session,
            Session {
                id,
                path: path.clone(),
                file: SessionFile::new(file),
                chain: Chain::default(),
                info,
                started: t,
                dirty: true,
                binds: VecDeque::new(),
                bind_bytes: 0,
                row_description: Vec::new(),
                columns: Vec::new(),
                columns_json: Vec::new(),
                counts_dirty: false,
                next_bind: 0,
                queue: VecDeque::new(),
                groups: 0,
                readies: 0,
                next_n: 0,
                review: None,
                rows: Vec::new(),
                rows_of: 0,
                live: Some(live),
                entry,
            },
        );
        self.emit(session, t, "open", fields);
    }

    /// Writes one record (a JSON object's members) to a session's file and
    /// its live tail.
    fn emit(&mut self, session: RecordingKey, t: u64, kind: &str, fields: Value) {
        self.emit_fields(session, t, kind, &Fields::from_object(fields));
    }

    /// Writes a record built with [`Fields`] to a session's file and its
    /// live tail.
    fn emit_fields(&mut self, session: RecordingKey, t: u64, kind: &str, fields: &Fields) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let line = &mut self.line;
        line.clear();
        s.chain.append_line(line, t, kind, fields);
        s.dirty = true;
        self.rec.stats.records.fetch_add(1, Ordering::Relaxed);
        self.rec.stats.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
        if let Some(l) = s.live.as_ref().and_then(|l| l.get()) {
            if l.receiver_count() > 0 {
                let text: Arc<str> = String::from_utf8_lossy(&line[..line.len() - 1]).into();
                let _ = l.send(text);
            }
        }
        if let Err(e) = s.file.write_all(line) {
            self.rec.failed("write", &e);
        }
        if line.capacity() > LINE_KEPT {
            *line = Vec::new();
        }
    }

    fn mask(s: &Session, text: &str) -> String {
        match &s.info.engine {
            Some(e) => e.mask_text(text),
            None => text.to_string(),
        }
    }

    fn client(
        &mut self,
        session: RecordingKey,
        t: u64,
        frames: &[u8],
        refused: &[(u32, &'static str, String)],
        statements: &[crate::record::StatementRef],
    ) {
        let mut records: Vec<Fields> = Vec::new();
        // Statements by class and decision, counted under one lock.
        let mut counted: Vec<(&'static str, &'static str)> = Vec::new();
        {
            let Some(s) = self.sessions.get_mut(&session) else {
                return;
            };
            let mut at = 0;
            let mut idx: u32 = 0;
            while at + 5 <= frames.len() {
                let tag = frames[at];
                let len = i32::from_be_bytes([frames[at + 1], frames[at + 2], frames[at + 3], frames[at + 4]]) as usize;
                let end = (at + 1 + len).min(frames.len());
                let body = &frames[(at + 5).min(end)..end];
                at = end;
                let this = idx;
                idx += 1;
                let refusal = refused.iter().find(|r| r.0 == this);
                match tag {
                    b'B' => {
                        // Parameters by the Bind's ordinal: Executes name it.
                        let params = bind_params(body).map(|(_, _, params)| {
                            let mut json = Vec::with_capacity(16 + params.len() * 16);
                            json.push(b'[');
                            for (i, p) in params.into_iter().enumerate() {
                                if i > 0 {
                                    json.push(b',');
                                }
                                match p {
                                    None => json.extend_from_slice(b"null"),
                                    Some(text) => {
                                        let _ = serde_json::to_writer(&mut json, &Self::mask(s, &text));
                                    }
                                }
                            }
                            json.push(b']');
                            json.into_boxed_slice()
                        });
                        let size = params.as_ref().map_or(0, |p| p.len());
                        while !s.binds.is_empty()
                            && (s.binds.len() >= MAX_BINDS || s.bind_bytes + size > MAX_BIND_BYTES)
                        {
                            if let Some((_, old)) = s.binds.pop_front() {
                                s.bind_bytes -= old.map_or(0, |p| p.len());
                            }
                        }
                        s.bind_bytes += size;
                        s.binds.push_back((s.next_bind, params));
                        s.next_bind += 1;
                    }
                    b'Q' | b'E' | b'F' => {
                        // What the data path resolved: for an Execute, the
                        // statement the server's portal held.
                        let resolved = statements.iter().find(|r| r.frame == this);
                        let protocol = match tag {
                            b'Q' => "simple",
                            b'E' => "extended",
                            _ => "function",
                        };
                        let sql: Arc<str> = match resolved {
                            Some(r) => r.sql.clone(),
                            None if tag == b'Q' => {
                                Arc::from(&*String::from_utf8_lossy(body.split(|&b| b == 0).next().unwrap_or(&[])))
                            }
                            None => Arc::from("<a statement gatehouse did not resolve>"),
                        };
                        let params = resolved
                            .and_then(|r| r.bind)
                            .and_then(|b| s.binds.iter().rev().find(|(n, _)| *n == b))
                            .and_then(|(_, p)| p.as_deref());
                        let known_class = resolved.and_then(|r| r.class);
                        let class = match known_class {
                            Some(c) => c,
                            None if s.info.protocol == crate::config::Protocol::Mysql => {
                                self.mysql_classifier.classify(&sql).class.as_str()
                            }
                            None => self.classifier.classify(&sql).class.as_str(),
                        };
                        let sql = masked_sql(&mut self.masked_sql, s, &sql);
                        let n = s.next_n;
                        s.next_n += 1;
                        let review = s.review.take();
                        let decision = match (refusal, &review) {
                            (Some(_), _) => "deny",
                            (None, Some(_)) => "approved",
                            (None, None) => "allow",
                        };
                        let mut v = Fields::with_capacity(128 + sql.len() + params.map_or(0, <[u8]>::len));
                        v.u64("n", n)
                            .str("protocol", protocol)
                            .str("sql", &sql)
                            .str("class", class)
                            .str("decision", decision);
                        if let Some(params) = params {
                            v.raw("params", params);
                        }
                        if let Some((_, code, msg)) = refusal {
                            v.value("error", &json!({ "code": code, "message": msg }));
                        }
                        if let Some(r) = review {
                            v.value("review", &r);
                        }
                        counted.push((class, decision));
                        s.entry.statements += 1;
                        s.counts_dirty = true;
                        if !s.entry.decisions.iter().any(|d| &**d == decision) {
                            s.entry.decisions.push(decision.into());
                        }
                        s.queue.push_back(Pending {
                            n,
                            group: s.groups,
                            extended: tag == b'E',
                            t,
                            described: false,
                            masked: BTreeMap::new(),
                            rows_seen: 0,
                            error: None,
                            results: 0,
                        });
                        if tag != b'E' {
                            s.groups += 1;
                        }
                        records.push(v);
                    }
                    b'S' => s.groups += 1,
                    _ => {}
                }
            }
        }
        if records.is_empty() {
            return;
        }
        {
            let mut m = self.rec.stats.statements.lock().unwrap_or_else(|p| p.into_inner());
            for (class, decision) in counted.drain(..) {
                *m.entry((class, decision)).or_default() += 1;
            }
        }
        for v in records {
            self.emit_fields(session, t, "statement", &v);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn server(
        &mut self,
        session: RecordingKey,
        t: u64,
        frames: &[u8],
        masked: Vec<(String, u64)>,
        gap_rows: u64,
        gap_bytes: u64,
    ) {
        let mut out: Vec<(&'static str, Rec)> = Vec::new();
        {
            let Some(s) = self.sessions.get_mut(&session) else {
                return;
            };
            let mode = s.info.results;
            if let Some(p) = s.queue.front_mut() {
                for (rule, n) in masked {
                    *p.masked.entry(rule).or_default() += n;
                }
            }
            if gap_rows > 0 || gap_bytes > 0 {
                out.push((
                    "gap",
                    Rec::V(json!({ "rows": gap_rows, "bytes": gap_bytes, "why": "result rows not recorded: the recorder was behind (or past the per-statement cap)" })),
                ));
            }
            let mut at = 0;
            while at + 5 <= frames.len() {
                let tag = frames[at];
                let len = i32::from_be_bytes([frames[at + 1], frames[at + 2], frames[at + 3], frames[at + 4]]) as usize;
                let end = (at + 1 + len).min(frames.len());
                let body = &frames[(at + 5).min(end)..end];
                at = end;
                match tag {
                    b'T' => {
                        // A RowDescription belongs to the group the server
                        // answers now: one that answers a Describe of a
                        // group with no statement of its own (Parse,
                        // Describe, Sync) is not the next statement's.
                        if let Some(p) = s.queue.front_mut().filter(|p| p.group == s.readies) {
                            p.described = true;
                            if s.row_description != body {
                                s.row_description.clear();
                                s.row_description.extend_from_slice(body);
                                s.columns = row_description(body);
                                s.columns_json.clear();
                                json_strs(&mut s.columns_json, s.columns.iter().map(|c| c.0.as_str()));
                            }
                        }
                    }
                    b'D' if mode == ResultsMode::Full => {
                        if let Some(p) = s.queue.front_mut() {
                            p.rows_seen += 1;
                            s.rows_of = p.n;
                            let columns: &[(String, i16)] = if p.described { &s.columns } else { &[] };
                            s.rows.push(data_row(body, columns));
                            if s.rows.len() >= ROWS_PER_RECORD {
                                out.push(("rows", Rec::V(json!({ "n": p.n, "rows": std::mem::take(&mut s.rows) }))));
                            }
                        }
                    }
                    b'C' | b'I' | b's' | b'E' => {
                        if !s.rows.is_empty() {
                            out.push((
                                "rows",
                                Rec::V(json!({ "n": s.rows_of, "rows": std::mem::take(&mut s.rows) })),
                            ));
                        }
                        let Some(p) = s.queue.front_mut() else { continue };
                        p.results += 1;
                        let mut v = Fields::with_capacity(128 + s.columns_json.len());
                        v.u64("n", p.n).u64("duration_us", t.saturating_sub(p.t));
                        match tag {
                            b'C' => {
                                let tag = String::from_utf8_lossy(body.split(|&b| b == 0).next().unwrap_or(&[]));
                                let rows = tag.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok());
                                v.str("tag", &tag);
                                if let Some(r) = rows {
                                    v.u64("rows", r);
                                }
                            }
                            b'I' => {
                                v.str("tag", "");
                            }
                            b's' => {
                                v.value("suspended", &Value::from(true));
                            }
                            _ => {
                                let mut code = String::new();
                                let mut msg = String::new();
                                for (f, val) in crate::wire::pg::error_fields(body) {
                                    match f {
                                        b'C' => code = String::from_utf8_lossy(val).into_owned(),
                                        b'M' => msg = String::from_utf8_lossy(val).into_owned(),
                                        _ => {}
                                    }
                                }
                                let e = json!({ "code": code, "message": msg });
                                v.value("error", &e);
                                p.error = Some(e);
                            }
                        }
                        if mode != ResultsMode::None || tag == b'E' {
                            if p.described && !s.columns.is_empty() && mode != ResultsMode::None {
                                v.raw("columns", &s.columns_json);
                            }
                            if !p.masked.is_empty() {
                                v.value("masked", &json!(std::mem::take(&mut p.masked)));
                            }
                            out.push(("result", Rec::F(v)));
                        }
                        p.described = false;
                        if p.extended {
                            if tag == b'E' {
                                // The server skips to Sync: the rest of the group has no result.
                                let g = p.group;
                                let popped = s.queue.pop_front();
                                let _ = popped;
                                while s.queue.front().is_some_and(|q| q.group == g) {
                                    if let Some(q) = s.queue.pop_front() {
                                        out.push(("result", Rec::V(json!({ "n": q.n, "skipped": "an earlier statement of the pipeline failed" }))));
                                    }
                                }
                            } else {
                                s.queue.pop_front();
                            }
                        }
                    }
                    b'N' | b'A' => {
                        let mut v = json!({});
                        if tag == b'N' {
                            for (f, val) in crate::wire::pg::error_fields(body) {
                                let k = match f {
                                    b'S' => "severity",
                                    b'C' => "code",
                                    b'M' => "message",
                                    _ => continue,
                                };
                                v[k] = Value::from(String::from_utf8_lossy(val).into_owned());
                            }
                            out.push(("notice", Rec::V(v)));
                        } else {
                            let mut c = Cursor::new(body, "Notification");
                            let _ = c.i32();
                            let ch = c
                                .cstr()
                                .map(|x| String::from_utf8_lossy(x).into_owned())
                                .unwrap_or_default();
                            let pl = c
                                .cstr()
                                .map(|x| String::from_utf8_lossy(x).into_owned())
                                .unwrap_or_default();
                            out.push(("notification", Rec::V(json!({ "channel": ch, "payload": pl }))));
                        }
                    }
                    b'Z' => {
                        s.readies += 1;
                        // Statements of groups now answered that got no result.
                        while s.queue.front().is_some_and(|q| q.group < s.readies) {
                            if let Some(q) = s.queue.pop_front() {
                                if q.results == 0 {
                                    out.push((
                                        "result",
                                        Rec::V(json!({ "n": q.n, "skipped": "no result (the group ended)" })),
                                    ));
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if gap_rows > 0 || gap_bytes > 0 {
            self.rec.stats.gaps.fetch_add(1, Ordering::Relaxed);
            self.rec.stats.gap_rows.fetch_add(gap_rows, Ordering::Relaxed);
        }
        for (kind, v) in out {
            match v {
                Rec::V(v) => self.emit(session, t, kind, v),
                Rec::F(f) => self.emit_fields(session, t, kind, &f),
            }
        }
    }

    fn close(&mut self, session: RecordingKey, t: u64, end: &str, mut fields: Value) {
        if let Some(s) = self.sessions.get_mut(&session) {
            if !s.rows.is_empty() {
                let rows = std::mem::take(&mut s.rows);
                let n = s.rows_of;
                self.emit(session, t, "rows", json!({ "n": n, "rows": rows }));
            }
        }
        let Some(s) = self.sessions.get(&session) else { return };
        fields["end"] = Value::from(end);
        fields["duration_ms"] = Value::from(t.saturating_sub(s.started) / 1000);
        self.emit(session, t, "close", fields);
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        let sealing = self.seal(s, t, end);
        self.sealing.push(sealing);
    }

    /// Makes a closed session's seal (signed, with a key) and the audit
    /// log's record of it (its file and the hash of the seal line), both
    /// held back until `write_sealed` writes them, the audit record first.
    fn seal(&self, mut s: Session, t: u64, end: &str) -> Sealing {
        let records = s.chain.seq();
        let mut fields = Fields::default();
        fields.u64("records", records);
        let seal = match &self.rec.signer {
            Some(signer) => s
                .chain
                .line_signed(t, "seal", &fields, signer, crate::record::signing::SEAL_CONTEXT),
            None => s.chain.line_fields(t, "seal", &fields),
        };
        let file_name = s
            .path
            .strip_prefix(&self.rec.cfg.dir)
            .unwrap_or(&s.path)
            .display()
            .to_string();
        let hash = String::from_utf8_lossy(s.chain.prev()).into_owned();
        let mut audit = Fields::default();
        audit
            .str("id", &s.id)
            .str("file", &file_name)
            .u64("records", records + 1)
            .str("hash", &hash);
        s.entry.seal_hash = Some(hash);
        s.entry.live = false;
        s.entry.ended_us = Some(t);
        s.entry.end = Some(end.into());
        Sealing {
            file: s.file,
            seal,
            audit,
            t,
            file_name,
            live: s.live,
            entry: s.entry,
        }
    }
}

/// A closed session waiting for the pass's end to be sealed.
struct Sealing {
    /// Its records up to the close (some may be written already).
    file: SessionFile,
    /// The seal line, written after `audit`.
    seal: Vec<u8>,
    /// The audit log's `sealed` record of it.
    audit: Fields,
    /// When it closed.
    t: u64,
    /// Its file, relative to the recordings directory.
    file_name: String,
    live: Option<LiveTail>,
    /// Its index entry as it ended.
    entry: Entry,
}

/// A Bind's portal, statement and parameters (text; binary shown as
/// `\x` hex unless it is UTF-8), capped.
#[allow(clippy::type_complexity)]
fn bind_params(body: &[u8]) -> Option<(&[u8], &[u8], Vec<Option<String>>)> {
    let mut c = Cursor::new(body, "Bind");
    let portal = c.cstr().ok()?;
    let stmt = c.cstr().ok()?;
    let nf = c.i16().ok()?.max(0) as usize;
    let mut fmts = Vec::with_capacity(nf);
    for _ in 0..nf {
        fmts.push(c.i16().ok()?);
    }
    let np = c.i16().ok()?.max(0) as usize;
    let mut out = Vec::with_capacity(np.min(MAX_PARAMS));
    for i in 0..np {
        let len = c.i32().ok()?;
        let v = if len < 0 {
            None
        } else {
            let b = c.bytes(len as usize).ok()?;
            let fmt = match nf {
                0 => 0,
                1 => fmts[0],
                _ => fmts.get(i).copied().unwrap_or(0),
            };
            let shown = &b[..b.len().min(MAX_PARAM_BYTES)];
            let mut s = match (fmt, std::str::from_utf8(shown)) {
                (_, Ok(s)) if fmt == 0 || !s.contains('\0') => s.to_string(),
                _ => format!("\\x{}", hex::encode(shown)),
            };
            if b.len() > MAX_PARAM_BYTES {
                s.push_str(&format!("…({} bytes)", b.len()));
            }
            Some(s)
        };
        if i < MAX_PARAMS {
            out.push(v);
        }
    }
    Some((portal, stmt, out))
}

fn row_description(body: &[u8]) -> Vec<(String, i16)> {
    let mut c = Cursor::new(body, "RowDescription");
    let n = c.i16().unwrap_or(0).max(0) as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(name) = c.cstr() else { break };
        // table oid, column, type oid, size, modifier, format
        if c.bytes(4 + 2 + 4 + 2 + 4).is_err() {
            break;
        }
        let fmt = c.i16().unwrap_or(0);
        out.push((String::from_utf8_lossy(name).into_owned(), fmt));
    }
    out
}

fn data_row(body: &[u8], columns: &[(String, i16)]) -> Value {
    let mut c = Cursor::new(body, "DataRow");
    let n = c.i16().unwrap_or(0).max(0) as usize;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let Ok(len) = c.i32() else { break };
        if len < 0 {
            out.push(Value::Null);
            continue;
        }
        let Ok(b) = c.bytes(len as usize) else { break };
        let binary = columns.get(i).is_some_and(|c| c.1 == 1);
        out.push(match (binary, std::str::from_utf8(b)) {
            (false, Ok(s)) => Value::from(s),
            _ => Value::from(format!("\\x{}", hex::encode(b))),
        });
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A closed session's seal and its audit record wait for the pass's
    /// end, when the audit log's `sealed` records are written first, then
    /// the seals (`write_sealed`), then the index says the session ended.
    /// Driven here by hand: a writer of the test's own beside the
    /// recorder's (which has nothing to do).
    #[test]
    fn a_seal_waits_for_the_pass_end_and_its_audit_record() {
        use super::super::tests::{close_event, one_writer, open_event};
        let (_dir, cfg, rec) = one_writer();
        let mut w = Writer::new(rec.clone(), false);
        let t = crate::record::now_us();
        w.handle(open_event(1, 77, t, "main"));
        w.flush_buffers();
        let id = rec
            .index
            .lock()
            .unwrap()
            .live()
            .next()
            .expect("indexed at its open")
            .id
            .to_string();
        let path = rec.path_of(&id).expect("its file");
        let on_disk = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let audit = cfg.dir.join(super::super::AUDIT_FILE_NAME);
        assert!(
            on_disk(&path).contains(r#""kind":"open""#),
            "the open record is written at the pass's end"
        );
        w.handle(close_event(1, "client-terminate", 5));
        assert!(
            !on_disk(&path).contains(r#""kind":"seal""#),
            "the seal waits for the pass's end"
        );
        // Whatever else writes the audit log out meanwhile (another
        // writer's pass, a sync, its buffer filling), the session's
        // `sealed` record is not out before its seal can be.
        rec.audit_log().flush().unwrap();
        assert!(
            !on_disk(&audit).contains(r#""kind":"sealed""#),
            "the audit log names a seal its file cannot have yet"
        );
        assert!(
            rec.index.lock().unwrap().get(&id).unwrap().live,
            "ended only once written"
        );
        w.flush_buffers();
        assert!(on_disk(&path).contains(r#""kind":"seal""#));
        assert!(on_disk(&audit)
            .lines()
            .any(|l| l.contains(r#""kind":"sealed""#) && l.contains(&id)));
        let entry = rec.index.lock().unwrap().get(&id).unwrap();
        assert!(!entry.live);
        assert_eq!(entry.end.as_deref(), Some("client-terminate"));
        rec.finish();
    }

    /// When the audit log cannot be written, a closing session is not
    /// sealed: its file keeps its records up to the close, with no seal
    /// the audit log does not name, it is no longer live, and recording
    /// says it is failing.
    #[test]
    fn a_session_whose_audit_record_cannot_be_written_is_left_unsealed() {
        use super::super::tests::{close_event, one_writer, open_event};
        let (_dir, _cfg, rec) = one_writer();
        let mut w = Writer::new(rec.clone(), false);
        w.handle(open_event(1, 78, crate::record::now_us(), "main"));
        w.flush_buffers();
        let id = rec.index.lock().unwrap().live().next().unwrap().id.to_string();
        let path = rec.path_of(&id).unwrap();
        rec.audit_log().fail_writes();
        w.handle(close_event(1, "client-terminate", 5));
        w.flush_buffers();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""kind":"close""#), "{text}");
        assert!(
            !text.contains(r#""kind":"seal""#),
            "sealed without its audit record: {text}"
        );
        let entry = rec.index.lock().unwrap().get(&id).unwrap();
        assert!(!entry.live);
        assert_eq!(entry.seal_hash, None);
        assert!(rec.health.failing(), "recording is not said to be failing");
        rec.finish();
    }

    #[test]
    fn bind_parameters() {
        let mut b = Vec::new();
        b.extend_from_slice(b"p\0s\0");
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&3i16.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(b"42");
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&5i32.to_be_bytes());
        b.extend_from_slice(b"hello");
        let (portal, stmt, p) = bind_params(&b).unwrap();
        assert_eq!((portal, stmt), (&b"p"[..], &b"s"[..]));
        assert_eq!(p, vec![Some("42".into()), None, Some("hello".into())]);
    }
}

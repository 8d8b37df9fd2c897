//! The session recorder: writer threads at low priority that turn the data
//! path's raw events into chained records (see `crate::record`).
//!
//! Workers send cheap events (copies of the protocol frames that matter,
//! already masked as they went out) through a bounded channel per writer;
//! all parsing, classification, masking of client statements, JSON and file
//! I/O happen here. Writers poll their channel (every few milliseconds when
//! idle) instead of being woken per event, so a busy data path pays no
//! wake-up per statement. Under backlog a session waits for statements and
//! decisions; rows of `full` results are dropped and a `gap` record says
//! how many.

mod audit;
mod index;
mod packed;
mod recover;
mod session_file;
mod spill;
mod writer;

pub use crate::record::events::{Ev, OpenInfo};
pub use audit::load_signer;
pub use index::{Entry, Index, Stats};
pub use packed::View;

/// The audit log's file name in the recordings directory.
pub const AUDIT_FILE_NAME: &str = AUDIT_FILE;

/// Creates a directory for recordings (and its parents), private to
/// gatehouse and its group.
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    create_dirs(dir)
}

use crate::config::Recording;
use crate::record::signing::Signer;
use crate::record::Fields;
use crate::record::{self, now_us};
use audit::{AuditLog, AUDIT_FILE};
use index::entry_from_file;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use writer::Writer;

/// Bind parameters remembered per session, at most (the portals a client
/// keeps open at once).
pub(crate) const MAX_BINDS: usize = 1024;
/// Bytes of remembered Bind parameters (as JSON, escapes included) per
/// session, at most: past it the oldest are forgotten, and an Execute of
/// a forgotten Bind is recorded without its parameters.
pub(crate) const MAX_BIND_BYTES: usize = 4 << 20;
/// Parameters recorded per statement, and bytes per parameter, at most.
pub(crate) const MAX_PARAMS: usize = 256;
pub(crate) const MAX_PARAM_BYTES: usize = 16 << 10;
/// Rows per `rows` record.
pub(crate) const ROWS_PER_RECORD: usize = 500;
/// Sleep of an idle writer between looks at its channel.
pub(crate) const IDLE_POLL: Duration = Duration::from_millis(3);
/// Sessions the index keeps, at most (finished ones in its spill).
pub(crate) const MAX_INDEX: usize = 200_000;

/// A session's live tail: a channel made when a tail first subscribes.
pub type LiveTail = Arc<std::sync::OnceLock<tokio::sync::broadcast::Sender<Arc<str>>>>;

/// Subscribes to a live tail, making its channel if it is the first.
pub fn subscribe(tail: &LiveTail) -> tokio::sync::broadcast::Receiver<Arc<str>> {
    tail.get_or_init(|| tokio::sync::broadcast::channel(1024).0).subscribe()
}

/// The recorder: its channels, its index, its live tails.
pub struct Recorder {
    pub cfg: Recording,
    shards: Vec<mpsc::Sender<Ev>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    pub index: Mutex<Index>,
    /// Active sessions' record lines, for live tails.
    /// The channel is made by the first tail that asks (most sessions have none).
    pub live: Mutex<HashMap<String, LiveTail>>,
    pub stats: Stats,
    stopped: AtomicBool,
    /// Signs seals and the audit log's checkpoints (none: unsigned).
    pub(crate) signer: Option<Arc<Signer>>,
    /// Written by every writer (sealed sessions) and the lead writer
    /// (admin actions, deletions, checkpoints).
    audit: Mutex<AuditLog>,
    /// Whether writing works; the data path refuses while it does not
    /// (`on_failure = "refuse"`).
    pub health: Arc<crate::record::link::Health>,
    /// When the current failure began (µs), and write errors since.
    failure: Mutex<Option<(u64, String)>>,
    /// Open sessions' heads (file → last record written to the file and
    /// its hash), kept by the writers at each sync; each checkpoint signs
    /// those that moved, so that after an unclean stop the next start can
    /// seal a session up to what a signature vouched for, and no further.
    heads: Mutex<Heads>,
    /// Held for the process's life: one gateway writes a recordings
    /// directory (a second would interleave chains, and the first's open
    /// sessions would look like an unclean stop's to it).
    _lock: std::fs::File,
}

/// Open sessions' heads, and which moved since the last checkpoint.
#[derive(Default)]
pub(super) struct Heads {
    pub(super) at: HashMap<String, (u64, String)>,
    pub(super) moved: std::collections::HashSet<String>,
}

/// Takes the recordings directory's lock (an flock on the directory
/// itself), or says that another process holds it.
fn lock_dir(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::other(format!(
            "another gatehouse process records into {}",
            dir.display()
        )));
    }
    Ok(f)
}

fn lower_priority() {
    // SAFETY: setpriority on the calling thread (who = 0 is this thread on
    // Linux); failure leaves the default priority.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, super::CONTROL_NICE);
    }
}

impl crate::record::link::Sink for Recorder {
    fn sender(&self, session: u32) -> mpsc::Sender<Ev> {
        Recorder::sender(self, session)
    }

    fn health(&self) -> Arc<crate::record::link::Health> {
        self.health.clone()
    }

    fn finish(&self) {
        Recorder::finish(self)
    }
}

/// Recordings and the audit log: read-write for gatehouse, readable by its
/// group, nothing for others (whatever the umask).
pub(super) const FILE_MODE: u32 = 0o640;
/// Their directories: the same, searchable.
const DIR_MODE: u32 = 0o750;

/// Creates `dir` and its missing parents with `DIR_MODE`.
pub(super) fn create_dirs(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

impl Recorder {
    /// Creates the directory, indexes what is there, applies retention and
    /// starts the writer threads.
    pub fn start(cfg: &Recording) -> std::io::Result<Arc<Recorder>> {
        create_dirs(&cfg.dir)?;
        let signer = load_signer(cfg).map_err(std::io::Error::other)?.map(Arc::new);
        let lock = lock_dir(&cfg.dir)?;
        let mut audit = AuditLog::open(&cfg.dir, signer.clone())?;
        // Before anything new is recorded: seal what an unclean stop left.
        let leftovers = recover::seal_leftovers(&cfg.dir, &mut audit, signer.as_deref())?;
        let mut shards = Vec::with_capacity(cfg.writers);
        let mut rxs = Vec::with_capacity(cfg.writers);
        for _ in 0..cfg.writers {
            let (tx, rx) = mpsc::channel(cfg.queue_events);
            shards.push(tx);
            rxs.push(rx);
        }
        let rec = Arc::new(Recorder {
            cfg: cfg.clone(),
            shards,
            threads: Mutex::new(Vec::new()),
            index: Mutex::new(Index::new(cfg.dir.clone())),
            live: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            stopped: AtomicBool::new(false),
            signer,
            audit: Mutex::new(audit),
            health: Arc::new(crate::record::link::Health::new(
                cfg.on_failure == crate::config::OnFailure::Refuse,
            )),
            failure: Mutex::new(None),
            heads: Mutex::new(Heads::default()),
            _lock: lock,
        });
        rec.stats.recovered.store(leftovers.sealed, Ordering::Relaxed);
        rec.load_index();
        rec.apply_retention();
        for (i, rx) in rxs.into_iter().enumerate() {
            let r = rec.clone();
            let h = std::thread::Builder::new()
                .name(format!("gatehouse-rec{i}"))
                .spawn(move || {
                    lower_priority();
                    Writer::new(r, i == 0).run(rx);
                })?;
            rec.threads.lock().unwrap_or_else(|p| p.into_inner()).push(h);
        }
        Ok(rec)
    }

    /// The channel of a session's writer.
    pub fn sender(&self, session: u32) -> mpsc::Sender<Ev> {
        self.shards[session as usize % self.shards.len()].clone()
    }

    /// Events waiting in the channels.
    pub fn backlog(&self) -> usize {
        self.shards.iter().map(|s| s.max_capacity() - s.capacity()).sum()
    }

    /// Records an admin action (waits for room: the audit log never drops).
    pub async fn audit(&self, who: &str, roles: &[String], action: &str, object: &str, outcome: &str) {
        let ev = Ev::Audit {
            t: now_us(),
            who: who.to_string(),
            roles: roles.to_vec(),
            action: action.to_string(),
            object: object.to_string(),
            outcome: outcome.to_string(),
        };
        let _ = self.shards[0].send(ev).await;
    }

    /// Stops the writers after what is queued (sessions still open are
    /// closed with an `interrupted` end), syncing every file.
    pub fn finish(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        for s in &self.shards {
            let _ = s.blocking_send(Ev::Stop);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        // Every writer has sealed its sessions: the last checkpoint signs them all.
        let r = self.checkpoint();
        let mut a = self.audit_log();
        let r = r.and_then(|_| a.sync());
        drop(a);
        if let Err(e) = r {
            self.failed("the audit log's last checkpoint", &e);
        }
    }

    /// A write, sync or file creation failed: recordings are failing until
    /// a probe shows writing works again.
    pub(super) fn failed(&self, what: &str, e: &std::io::Error) {
        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        if self.health.fail() {
            *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some((now_us(), format!("{what}: {e}")));
            let refusing = self.health.refusing();
            tracing::error!(target: "gatehouse::record", error = %e, refusing,
                "recording: cannot write ({what}); {}",
                if refusing { "new sessions and statements are refused until it can" } else { "sessions go on unrecorded (on_failure = \"continue\")" });
        } else {
            tracing::debug!(target: "gatehouse::record", error = %e, "recording: {what}");
        }
    }

    /// Writes and syncs a probe file (64 KiB, then removed): while
    /// recordings are failing, the lead writer tries it every sync
    /// interval; when it works, the failure ends and the audit log says
    /// how long it lasted and how many writes failed.
    pub(super) fn probe(&self) {
        use std::io::Write;
        let path = self.cfg.dir.join(".gatehouse-write-probe");
        let ok = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&path)?;
            f.write_all(&[0u8; 64 << 10])?;
            f.sync_all()
        })();
        let _ = std::fs::remove_file(&path);
        let ok = ok.and_then(|_| self.audit_log().sync());
        if ok.is_err() || !self.health.recover() {
            return;
        }
        let (since, why) = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        let errors = self.stats.write_errors.load(Ordering::Relaxed);
        tracing::warn!(target: "gatehouse::record", failed_for_ms = now_us().saturating_sub(since) / 1000,
            "recording: writing works again");
        let mut f = Fields::default();
        f.str("outcome", "recovered")
            .u64("failed_since", since)
            .str("error", &why)
            .u64("write_errors_total", errors)
            .str(
                "policy",
                if self.cfg.on_failure == crate::config::OnFailure::Refuse {
                    "refuse"
                } else {
                    "continue"
                },
            );
        let r = {
            let mut a = self.audit_log();
            a.append_signed(now_us(), "recording", &f).and_then(|_| a.flush())
        };
        if let Err(e) = r {
            self.failed("audit log", &e);
        }
    }

    /// The audit log, locked.
    /// Signs the audit log as it stands with the heads of the open
    /// sessions that moved since the last checkpoint.
    pub(super) fn checkpoint(&self) -> std::io::Result<()> {
        let moved: Vec<(String, u64, String)> = {
            let mut h = self.heads.lock().unwrap_or_else(|p| p.into_inner());
            let moved = std::mem::take(&mut h.moved);
            let mut v: Vec<_> = moved
                .into_iter()
                .filter_map(|f| h.at.get(&f).map(|(seq, hash)| (f.clone(), *seq, hash.clone())))
                .collect();
            v.sort();
            v
        };
        let r = self.audit_log().checkpoint(&moved);
        if r.is_err() {
            // Announced again at the next checkpoint.
            let mut h = self.heads.lock().unwrap_or_else(|p| p.into_inner());
            h.moved.extend(moved.into_iter().map(|(f, _, _)| f));
        }
        r
    }

    /// A session's head moved (its records up to `seq` are in its file).
    pub(super) fn head_moved(&self, file: &str, seq: u64, hash: &str) {
        let mut h = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        h.at.insert(file.to_string(), (seq, hash.to_string()));
        h.moved.insert(file.to_string());
    }

    /// A session was sealed: its head is no longer needed.
    pub(super) fn head_sealed(&self, file: &str) {
        let mut h = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        h.at.remove(file);
        h.moved.remove(file);
    }

    fn audit_log(&self) -> std::sync::MutexGuard<'_, AuditLog> {
        self.audit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an audit record, counting a failure.
    fn audit_append(&self, t: u64, kind: &str, fields: &Fields) {
        let r = self.audit_log().append(t, kind, fields);
        if let Err(e) = r {
            self.failed("audit log", &e);
        }
    }

    /// Writes to the audit log (signed, synced) that a sealed recording
    /// went to object storage, before its local file is removed: `verify`
    /// then counts the file as accounted for.
    pub fn record_upload(&self, e: &Entry, key: &str, sha256: &str, bytes: u64, seal: &str) -> std::io::Result<()> {
        let file = e
            .path
            .strip_prefix(&self.cfg.dir)
            .unwrap_or(&e.path)
            .display()
            .to_string();
        let mut f = Fields::default();
        f.str("file", &file)
            .str("id", &e.id)
            .str("hash", seal)
            .str("key", key)
            .str("sha256", sha256)
            .u64("bytes", bytes);
        let mut a = self.audit_log();
        a.append_signed(now_us(), "uploaded", &f).and_then(|_| a.sync())
    }

    /// Drops a recording from the local index (its file went elsewhere).
    pub fn forget(&self, path: &std::path::Path) {
        self.index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove_paths(&[path.to_path_buf()]);
    }

    /// The path of a recording by id.
    pub fn path_of(&self, id: &str) -> Option<PathBuf> {
        let g = self.index.lock().unwrap_or_else(|p| p.into_inner());
        g.get(id).map(|e| e.path)
    }

    /// The audit log's path.
    pub fn audit_path(&self) -> PathBuf {
        self.cfg.dir.join(AUDIT_FILE)
    }

    fn load_index(&self) {
        let mut files = Vec::new();
        if record::collect(&self.cfg.dir, &mut files).is_err() {
            return;
        }
        let mut entries: Vec<Entry> = files
            .iter()
            .filter(|p| !record::is_audit(p))
            .filter_map(|p| entry_from_file(p))
            .collect();
        entries.sort_by_key(|e| e.started_us);
        let mut g = self.index.lock().unwrap_or_else(|p| p.into_inner());
        for e in entries {
            g.upsert(e);
        }
    }

    /// Deletes finished recordings past the age limit, then the oldest
    /// until the total fits the size limit, never one younger than
    /// `retention_min_days`. Open sessions are never touched. Each deletion
    /// is an audit record (so that `verify` tells it from a file removed
    /// by hand).
    pub fn apply_retention(&self) {
        let (days, max) = (self.cfg.retention_days, self.cfg.max_total_bytes);
        if days == 0 && max == 0 {
            return;
        }
        const DAY_US: u64 = 86_400 * 1_000_000;
        let now = now_us();
        let mut g = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let mut sizes: Vec<(u64, u64, PathBuf, String)> = Vec::new();
        let read = g.each(|e| {
            if !e.live {
                let path = e.path();
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                sizes.push((e.started_us, size, path, e.id.to_string()));
            }
        });
        if let Err(e) = read {
            // What was read is still judged: each deletion stands on its
            // own age, and a total short of some files deletes less.
            tracing::warn!(target: "gatehouse::recorder", error = %e,
                "retention sees only part of the index: its file of finished sessions cannot be read");
        }
        sizes.sort();
        let mut total: u64 = sizes.iter().map(|s| s.1).sum();
        let mut gone = Vec::new();
        let mut kept_young = 0u64;
        for (started, size, path, id) in &sizes {
            let age = now.saturating_sub(*started);
            let old = days > 0 && age > days * DAY_US;
            let over = max > 0 && total > max;
            if !(old || over) {
                continue;
            }
            if age <= self.cfg.retention_min_days * DAY_US {
                kept_young += 1;
                continue;
            }
            // On record first: a crash between the two leaves a record of
            // a deletion that did not happen, never a deletion unrecorded.
            let file = path.strip_prefix(&self.cfg.dir).unwrap_or(path).display().to_string();
            let mut f = Fields::default();
            f.str("file", &file)
                .str("id", id)
                .u64("started", *started)
                .u64("bytes", *size)
                .str("why", if old { "retention_days" } else { "max_total_bytes" });
            let recorded = {
                let mut a = self.audit_log();
                a.append_signed(now, "deleted", &f).and_then(|_| a.sync())
            };
            if let Err(e) = recorded {
                self.failed("audit log", &e);
                break;
            }
            if std::fs::remove_file(path).is_ok() {
                total -= size;
                gone.push(path.clone());
                self.stats.deleted.fetch_add(1, Ordering::Relaxed);
            }
        }
        if kept_young > 0 {
            tracing::warn!(target: "gatehouse::record", kept = kept_young, total_bytes = total, max_total_bytes = max,
                "recordings over max_total_bytes are younger than retention_min_days and are kept");
        }
        if !gone.is_empty() {
            tracing::info!(target: "gatehouse::record", deleted = gone.len(), "recordings deleted by retention");
            g.remove_paths(&gone);
        }
    }
}

pub use crate::record::civil_day;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::events::RecordingKey;

    /// A recorder with one writer, in a directory of its own.
    pub(super) fn one_writer() -> (tempfile::TempDir, Recording, Arc<Recorder>) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Recording {
            dir: dir.path().join("recordings"),
            writers: 1,
            ..Default::default()
        };
        let rec = Recorder::start(&cfg).unwrap();
        (dir, cfg, rec)
    }

    pub(super) fn open_event(key: RecordingKey, session: u32, t: u64, target: &str) -> Ev {
        Ev::Open {
            session: key,
            t,
            info: Box::new(OpenInfo {
                session,
                identity: "agent".into(),
                roles: vec![],
                client: "127.0.0.1:40000".into(),
                target: target.into(),
                account: "app".into(),
                client_tls: false,
                upstream_tls: false,
                protocol: crate::config::Protocol::Postgres,
                worker: 0,
                results: crate::config::ResultsMode::Summary,
                engine: None,
            }),
        }
    }

    pub(super) fn close_event(key: RecordingKey, end: &'static str, bytes_in: u64) -> Ev {
        Ev::Close {
            session: key,
            t: now_us(),
            end,
            bytes_in,
            bytes_out: 0,
            statements: 0,
            rows: 0,
            masked: 0,
        }
    }

    /// A session's id can come back while the last events of an earlier
    /// session with it are still on their way (a server's backend pid,
    /// repeated across targets): each recording has a key of its own, and
    /// the writer keeps them apart whatever the order their events meet in.
    #[test]
    fn two_sessions_with_one_id_are_recorded_apart_whatever_order_their_events_come_in() {
        let (_dir, cfg, rec) = one_writer();
        let tx = rec.sender(42);
        let open = |key, target| open_event(key, 42, now_us(), target);
        let close = |key, bytes_in| close_event(key, "client-disconnect", bytes_in);
        // The second session opens before the first one's close arrives.
        tx.blocking_send(open(1, "first")).unwrap();
        tx.blocking_send(open(2, "second")).unwrap();
        tx.blocking_send(close(1, 111)).unwrap();
        tx.blocking_send(close(2, 222)).unwrap();
        rec.finish();

        let mut files = Vec::new();
        for day in std::fs::read_dir(&cfg.dir).unwrap().flatten() {
            if day.path().is_dir() {
                for f in std::fs::read_dir(day.path()).unwrap().flatten() {
                    files.push(f.path());
                }
            }
        }
        assert_eq!(files.len(), 2, "{files:?}");
        let mut seen = Vec::new();
        for f in files {
            let records: Vec<serde_json::Value> = crate::record::records(std::fs::File::open(&f).unwrap()).collect();
            let kinds: Vec<&str> = records.iter().filter_map(|r| r["kind"].as_str()).collect();
            assert_eq!(kinds, ["open", "close", "seal"], "{}", f.display());
            let (target, bytes_in) = (records[0]["target"].as_str().unwrap(), records[1]["bytes_in"].as_u64());
            assert_eq!(
                records[1]["end"], "client-disconnect",
                "closed by its own session, not the stop"
            );
            let id = records[0]["id"].as_str().unwrap();
            let index = rec.index.lock().unwrap();
            let entry = index.get(id).unwrap();
            assert_eq!(entry.session, 42);
            assert!(!entry.live);
            assert_eq!(entry.end.as_deref(), Some("client-disconnect"));
            seen.push((target.to_string(), bytes_in));
        }
        seen.sort();
        assert_eq!(
            seen,
            [("first".to_string(), Some(111)), ("second".to_string(), Some(222))]
        );
    }

    /// The writer names a session's file with `create_new`: a name already
    /// taken (here by a link pointing elsewhere, which must not be
    /// followed) gets the next free one, and a day's directory removed
    /// under the writer (by hand: gatehouse removes files only) is made
    /// again, so neither loses the session; the index finds each file by
    /// its id.
    #[test]
    fn a_taken_name_or_a_removed_day_directory_does_not_lose_a_session() {
        let (dir, cfg, rec) = one_writer();
        let tx = rec.sender(7);
        // Both sessions open in the same second: the same name first.
        let t = now_us();
        let open = |key| open_event(key, 7, t, "main");
        let close = |key| close_event(key, "client-terminate", 1);
        let day = cfg.dir.join(civil_day(t / 1_000_000));
        let base = format!("{}-{:08x}", t / 1_000_000, 7);
        let file = |id: &str| day.join(format!("{id}.{}", record::EXT));
        // A link that points outside, to nothing yet, has the name.
        std::fs::create_dir_all(&day).unwrap();
        let outside = dir.path().join("outside.ghrec");
        std::os::unix::fs::symlink(&outside, file(&base)).unwrap();
        tx.blocking_send(open(1)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !file(&format!("{base}-1")).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the first session's file never came"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!outside.exists(), "the link was followed");
        assert!(std::fs::symlink_metadata(file(&base)).unwrap().file_type().is_symlink());
        // The day goes (with the link) while the writer knows it.
        std::fs::remove_dir_all(&day).unwrap();
        tx.blocking_send(open(2)).unwrap();
        tx.blocking_send(close(1)).unwrap();
        tx.blocking_send(close(2)).unwrap();
        rec.finish();
        let kinds = |p: &std::path::Path| -> Vec<String> {
            crate::record::records(std::fs::File::open(p).unwrap())
                .filter_map(|r| r["kind"].as_str().map(str::to_string))
                .collect()
        };
        assert_eq!(kinds(&file(&base)), ["open", "close", "seal"]);
        let index = rec.index.lock().unwrap();
        let second = index
            .get(&base)
            .expect("the second session is indexed under the freed name");
        assert_eq!((second.path.as_path(), second.live), (file(&base).as_path(), false));
        let first = index.get(&format!("{base}-1")).expect("the first session is indexed");
        assert_eq!(first.path, file(&format!("{base}-1")));
        assert_eq!(first.end.as_deref(), Some("client-terminate"));
    }

    #[test]
    fn days() {
        assert_eq!(civil_day(0), "1970-01-01");
        assert_eq!(civil_day(1_764_150_000), "2025-11-26");
        assert_eq!(civil_day(951_782_400), "2000-02-29");
    }
}

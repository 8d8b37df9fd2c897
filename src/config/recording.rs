//! `[recording]`: where sessions are recorded and how much of their results.

use super::locate::{Invalid, PathPart};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What of results goes into a recording.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default)]
#[serde(rename_all = "lowercase")]
pub enum ResultsMode {
    /// Statements and decisions only.
    None,
    /// Plus per result: columns, row count, masked-value counts, errors.
    #[default]
    Summary,
    /// Plus the rows as the client saw them (masked), capped per statement.
    Full,
}

/// What happens when recordings cannot be written (disk full, permissions).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// New sessions and new statements are refused until writing works
    /// again: nothing runs unrecorded.
    #[default]
    Refuse,
    /// Sessions go on unrecorded; the loss is counted in metrics and the
    /// audit log.
    Continue,
}

/// Session recording, written by the control plane.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Recording {
    /// Where recordings go (one file per session, by day).
    pub dir: PathBuf,
    /// Results recorded unless a policy role says otherwise.
    pub results: ResultsMode,
    /// `full`: rows recorded per statement, at most.
    pub full_max_rows: u64,
    /// `full`: bytes of rows recorded per statement, at most.
    pub full_max_bytes: u64,
    /// Open files are synced to disk at least this often (and at session end).
    pub sync_interval_ms: u64,
    /// Writer threads (sessions are spread over them).
    pub writers: usize,
    /// Events queued per writer before sessions wait (statements) or result
    /// rows are dropped with a gap record.
    pub queue_events: usize,
    /// Recordings older than this are deleted (0: kept).
    pub retention_days: u64,
    /// Past this total size the oldest recordings are deleted (0: no limit),
    /// but never one younger than `retention_min_days`.
    pub max_total_bytes: u64,
    /// No recording younger than this is deleted, whatever the size limit
    /// says: an agent cannot flush recent evidence out by making traffic.
    pub retention_min_days: u64,
    /// Ed25519 private key (PKCS#8 PEM, `gatehouse keygen --recordings`)
    /// that signs each seal and the audit log's checkpoints. It must live
    /// outside `dir` and be readable by its owner only.
    pub signing_key: Option<PathBuf>,
    /// Or: the environment variable that holds the key's PEM.
    pub signing_key_env: Option<String>,
    /// The audit log is signed (a `checkpoint` record) this often when it
    /// has new records, and at shutdown.
    pub checkpoint_interval_secs: u64,
    /// When recordings cannot be written.
    pub on_failure: OnFailure,
}

impl Default for Recording {
    fn default() -> Self {
        Recording {
            dir: PathBuf::from("/var/lib/gatehouse/recordings"),
            results: ResultsMode::Summary,
            full_max_rows: 10_000,
            full_max_bytes: 8 << 20,
            sync_interval_ms: 1000,
            writers: 1,
            queue_events: 1024,
            retention_days: 90,
            max_total_bytes: 0,
            retention_min_days: 7,
            signing_key: None,
            signing_key_env: None,
            checkpoint_interval_secs: 60,
            on_failure: OnFailure::Refuse,
        }
    }
}

impl Recording {
    pub(super) fn validate(&mut self, base: &Path) -> Result<(), Invalid> {
        let k = |k: &'static str| vec![PathPart::Key("recording"), PathPart::Key(k)];
        self.dir = base.join(&self.dir);
        if self.writers == 0 || self.writers > 64 {
            return Err((k("writers"), "must be between 1 and 64".into()));
        }
        if self.queue_events < 16 {
            return Err((k("queue_events"), "must be at least 16".into()));
        }
        if self.sync_interval_ms == 0 {
            return Err((k("sync_interval_ms"), "must be at least 1".into()));
        }
        if self.checkpoint_interval_secs == 0 {
            return Err((k("checkpoint_interval_secs"), "must be at least 1".into()));
        }
        if self.retention_days > 0 && self.retention_days < self.retention_min_days {
            return Err((
                k("retention_days"),
                format!(
                    "is shorter than retention_min_days ({}): lower retention_min_days to delete sooner",
                    self.retention_min_days
                ),
            ));
        }
        if self.signing_key.is_some() && self.signing_key_env.is_some() {
            return Err((
                k("signing_key_env"),
                "give signing_key or signing_key_env, not both".into(),
            ));
        }
        if let Some(key) = &mut self.signing_key {
            *key = base.join(&*key);
            // Whoever can write the recordings could then read the key
            // and sign what they rewrote.
            let resolved = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
            let key_dir = key.parent().map(resolved).unwrap_or_default();
            if key_dir.starts_with(resolved(&self.dir)) || key.starts_with(&self.dir) {
                return Err((
                    k("signing_key"),
                    "must live outside the recordings directory (whoever can write recordings must not read the key)"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

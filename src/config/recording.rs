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
    /// Past this total size the oldest recordings are deleted (0: no limit).
    pub max_total_bytes: u64,
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
        Ok(())
    }
}

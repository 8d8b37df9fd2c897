//! The audit log of admin actions: one chain that continues across
//! restarts.

use crate::record::{self, now_us, Chain};
use serde_json::json;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

pub(super) const AUDIT_FILE: &str = "audit.ghrec";

/// The audit log: one chain that continues across restarts.
pub(super) struct AuditLog {
    pub(super) file: BufWriter<File>,
    pub(super) chain: Chain,
}

impl AuditLog {
    pub(super) fn open(dir: &Path) -> std::io::Result<AuditLog> {
        let path = dir.join(AUDIT_FILE);
        let chain = if path.exists() {
            match record::last_record(&path) {
                Ok(Some((seq, line))) => Chain::after(seq, &line),
                Ok(None) => Chain::default(),
                Err(e) => {
                    // A cut-short tail (a crash mid-write): keep the old
                    // log aside, start a new chain.
                    let aside = dir.join(format!("audit-broken-{}.ghrec", now_us()));
                    tracing::warn!(target: "gatehouse::record", error = %e, aside = %aside.display(), "audit log set aside");
                    std::fs::rename(&path, &aside)?;
                    Chain::default()
                }
            }
        } else {
            Chain::default()
        };
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(super::FILE_MODE)
                .open(&path)?
        };
        let mut log = AuditLog {
            file: BufWriter::new(file),
            chain,
        };
        // Each start is on the record (and the log is never empty).
        let line = log.chain.line(
            now_us(),
            "start",
            json!({ "pid": std::process::id(), "version": env!("CARGO_PKG_VERSION") }),
        );
        log.file.write_all(&line)?;
        log.file.flush()?;
        Ok(log)
    }
}

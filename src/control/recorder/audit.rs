//! The audit log: admin actions, every sealed session (its file and the
//! hash of its seal) and every deletion by retention, in one chain that
//! continues across restarts. With a signing key, `checkpoint` records
//! sign the chain at a fixed interval, at each start and at shutdown; each
//! checkpoint's position and hash also go to the service log, a copy that
//! lives outside the recordings directory.

use crate::record::signing::{Signer, AUDIT_CONTEXT};
use crate::record::{now_us, read, Chain, Fields};
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

pub(super) const AUDIT_FILE: &str = "audit.ghrec";

/// The audit log: one chain that continues across restarts.
pub(super) struct AuditLog {
    file: BufWriter<File>,
    chain: Chain,
    signer: Option<Arc<Signer>>,
    /// Records written since the last signed one.
    unsigned: u64,
    /// The next record's seq when the service log was last given the
    /// chain's position and hash.
    anchored: u64,
}

/// Where an existing log ends: its last complete record, its last
/// checkpoint, and where a torn last line (a crash mid-write) begins.
struct Tail {
    last: Option<(u64, Vec<u8>)>,
    checkpoint: Option<u64>,
    torn_at: Option<u64>,
}

fn read_tail(path: &Path) -> std::io::Result<Tail> {
    let mut r = BufReader::new(File::open(path)?);
    let mut tail = Tail {
        last: None,
        checkpoint: None,
        torn_at: None,
    };
    let mut line = Vec::new();
    let mut offset = 0u64;
    loop {
        line.clear();
        let n = read::read_line(&mut r, &mut line)?;
        if n == 0 {
            return Ok(tail);
        }
        if line.last() != Some(&b'\n') {
            tail.torn_at = Some(offset);
            return Ok(tail);
        }
        offset += n as u64;
        line.pop();
        let v: Value = serde_json::from_slice(&line).map_err(std::io::Error::other)?;
        let seq = v["seq"]
            .as_u64()
            .ok_or_else(|| std::io::Error::other("a record without seq"))?;
        if tail
            .last
            .as_ref()
            .map_or(seq != 0, |(s, _)| s.checked_add(1) != Some(seq))
        {
            return Err(std::io::Error::other("out of sequence"));
        }
        if v["kind"] == "checkpoint" {
            tail.checkpoint = Some(seq);
        }
        tail.last = Some((seq, line.clone()));
    }
}

/// Why an existing audit log cannot be continued: its chain (or, with a
/// key, a checkpoint) does not verify.
fn broken(path: &Path, signer: Option<&Signer>) -> Option<String> {
    let keys = signer.map(|s| crate::record::signing::Keyring(vec![s.public()]));
    let f = File::open(path).ok()?;
    let mut rep = crate::record::verify_signed(path, f, true, keys.as_ref());
    if let Some((n, why)) = rep.broken.take() {
        // No checkpoint at all is an unsigned log (written before a key
        // was configured): continued, and its records counted as unsigned.
        // A checkpoint of another key is a rotation: `verify` checks it
        // with that key.
        if !why.contains("no signed record") && !why.contains("not one of the keys given") {
            return Some(format!("record {n}: {why}"));
        }
    }
    None
}

impl AuditLog {
    pub(super) fn open(dir: &Path, signer: Option<Arc<Signer>>) -> std::io::Result<AuditLog> {
        let path = dir.join(AUDIT_FILE);
        let set_aside = |why: &str| -> std::io::Result<()> {
            // The old log stays as it is, beside the new one, for `verify`
            // to report; a new chain starts. Nothing is signed for it.
            let aside = dir.join(format!("audit-broken-{}.ghrec", now_us()));
            tracing::error!(target: "gatehouse::record", why, aside = %aside.display(),
                "the audit log does not verify: set aside, a new one starts");
            std::fs::rename(&path, &aside)
        };
        let mut torn = 0u64;
        let (chain, unsigned_tail) = if path.exists() {
            match read_tail(&path) {
                Ok(tail) => {
                    if let Some(at) = tail.torn_at {
                        // A crash mid-write: the torn fragment is cut off
                        // (the start record says how many bytes).
                        let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                        torn = f.metadata()?.len().saturating_sub(at);
                        f.set_len(at)?;
                        f.sync_all()?;
                        tracing::warn!(target: "gatehouse::record", bytes = torn, "audit log: a torn last record was cut off");
                    }
                    match (tail.last, broken(&path, signer.as_deref())) {
                        (Some(_), Some(why)) => {
                            set_aside(&why)?;
                            (Chain::default(), 0)
                        }
                        (Some((seq, line)), None) => (
                            Chain::after(seq, &line),
                            tail.checkpoint.map_or(seq.saturating_add(1), |c| seq.saturating_sub(c)),
                        ),
                        (None, _) => (Chain::default(), 0),
                    }
                }
                Err(e) => {
                    set_aside(&e.to_string())?;
                    (Chain::default(), 0)
                }
            }
        } else {
            (Chain::default(), 0)
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
            signer,
            unsigned: 0,
            anchored: 0,
        };
        // Each start is on the record (and the log is never empty). It
        // says that this run records sealed sessions, its key, and how many
        // records an earlier run left unsigned (it stopped without a
        // checkpoint): the checkpoint below signs them, and `verify` trusts
        // no deletion recorded among them.
        let mut start = json!({ "pid": std::process::id(), "version": env!("CARGO_PKG_VERSION"), "seals": true });
        if log.signer.is_some() && unsigned_tail > 0 {
            start["unsigned_tail"] = Value::from(unsigned_tail);
        }
        if torn > 0 {
            start["torn_bytes"] = Value::from(torn);
        }
        if log.chain.seq() == 0 && has_recordings(dir) {
            // Recordings without an audit log: it was removed (or lost).
            // `verify` reports every session it cannot account for.
            start["previous"] = Value::from("missing");
            tracing::error!(target: "gatehouse::record", "the audit log is missing while recordings exist: a new one starts");
        }
        log.append_signed(now_us(), "start", &Fields::from_object(start))?;
        log.file.flush()?;
        Ok(log)
    }

    /// Appends a record (buffered: see [`AuditLog::flush`]); a later
    /// checkpoint signs it.
    pub(super) fn append(&mut self, t: u64, kind: &str, fields: &Fields) -> std::io::Result<()> {
        let line = self.chain.line_fields(t, kind, fields);
        self.unsigned += 1;
        self.file.write_all(&line)
    }

    /// Appends a record that carries its own signature (with a key): the
    /// records `verify` builds the audit log's account from (`start`,
    /// `sealed`, `deleted`, `recording`) count only when signed.
    pub(super) fn append_signed(&mut self, t: u64, kind: &str, fields: &Fields) -> std::io::Result<()> {
        let Some(signer) = self.signer.clone() else {
            return self.append(t, kind, fields);
        };
        let line = self.chain.line_signed(t, kind, fields, &signer, AUDIT_CONTEXT);
        self.unsigned = 0;
        self.file.write_all(&line)
    }

    /// Signs the chain as it stands (a `checkpoint` record), if there is a
    /// key and anything unsigned since the last signed record; then gives
    /// the service log the chain's position and hash, a copy outside the
    /// recordings directory to compare the log with.
    ///
    /// `heads`: open sessions whose records moved since the last
    /// checkpoint, (file, seq of its last record in the file, hash of that
    /// line); signed with the rest, they vouch for those records should
    /// the gateway stop uncleanly before sealing them.
    pub(super) fn checkpoint(&mut self, heads: &[(String, u64, String)]) -> std::io::Result<()> {
        let Some(signer) = self.signer.clone() else {
            return Ok(());
        };
        if self.unsigned > 0 || !heads.is_empty() {
            let mut fields = Fields::default();
            if !heads.is_empty() {
                let open: Vec<Value> = heads.iter().map(|(f, seq, hash)| json!([f, seq, hash])).collect();
                fields.value("open", &Value::from(open));
            }
            let line = self
                .chain
                .line_signed(now_us(), "checkpoint", &fields, &signer, AUDIT_CONTEXT);
            self.file.write_all(&line)?;
            self.unsigned = 0;
        }
        if self.chain.seq() > self.anchored {
            self.anchored = self.chain.seq();
            let hash = String::from_utf8_lossy(self.chain.prev()).into_owned();
            tracing::info!(target: "gatehouse::record", seq = self.anchored - 1, hash = %hash, key = %signer.id(), "audit log checkpoint");
        }
        Ok(())
    }

    pub(super) fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }

    /// Makes every later write fail, as a full disk would (tests).
    #[cfg(test)]
    pub(super) fn fail_writes(&mut self) {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        self.file = BufWriter::with_capacity(0, full);
    }

    /// Flushes and makes durable.
    pub(super) fn sync(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()
    }
}

/// Whether the recordings directory holds any day directory.
fn has_recordings(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut it| it.any(|e| e.is_ok_and(|e| e.path().is_dir())))
        .unwrap_or(false)
}

/// Reads the recordings' signing key as configured (none: not signed).
pub fn load_signer(cfg: &crate::config::Recording) -> Result<Option<Signer>, String> {
    if let Some(path) = &cfg.signing_key {
        return Signer::load(path).map(Some);
    }
    if let Some(var) = &cfg.signing_key_env {
        let pem =
            std::env::var(var).map_err(|_| format!("the environment variable {var} (signing_key_env) is not set"))?;
        return Signer::from_pem(&pem).map(Some).map_err(|e| format!("{var}: {e}"));
    }
    Ok(None)
}

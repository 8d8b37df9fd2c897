//! Sessions an unclean stop left open (a crash, SIGKILL, the OOM killer,
//! power loss) are sealed at the next start, before any new session is
//! recorded: each gets a `close` that says so and a seal (signed, with a
//! key), and the audit log accounts for it like any other session. Without
//! this, every session open at the moment of the stop would stay unsealed
//! forever and `verify` could not tell them from files cut by hand.
//!
//! Only what the chain vouches for is sealed. A file whose chain breaks
//! (edited while the gateway was down) is left as it is, for `verify` to
//! report; a torn last line (a write the stop interrupted) is cut off and
//! the cut is on record. What this cannot give is a signature made at the
//! time of writing: records written after the last signed seal or
//! checkpoint are signed now, so `verify` notes each recovered session.

use super::audit::AuditLog;
use crate::record::signing::{Signer, SEAL_CONTEXT};
use crate::record::{self, now_us, Chain, Fields};
use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The `end` of a session that an unclean stop ended.
pub const UNCLEAN_STOP: &str = "unclean-stop";

/// What the start found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Sessions sealed now.
    pub sealed: u64,
    /// Files left unsealed because their chain does not verify.
    pub broken: u64,
    /// Files with no complete record (created just before the stop), removed.
    pub empty: u64,
}

/// Seals every session file under `dir` that has no seal. Runs at start,
/// under the recordings directory's lock, so no other process writes them.
pub(super) fn seal_leftovers(dir: &Path, audit: &mut AuditLog, signer: Option<&Signer>) -> std::io::Result<Leftovers> {
    let mut files = Vec::new();
    record::collect(dir, &mut files)?;
    files.sort();
    let mut out = Leftovers::default();
    let mut on_record: Option<HashSet<String>> = None;
    for path in files.iter().filter(|p| !record::is_audit(p)) {
        if ends_with_seal(path).unwrap_or(false) {
            continue;
        }
        let rel = path.strip_prefix(dir).unwrap_or(path).display().to_string();
        // A file the audit log says was sealed lost its seal since: cut
        // (or cut and rewritten). Sealing it again would vouch for that.
        let sealed_before = on_record.get_or_insert_with(|| sealed_on_record(dir, &files));
        if sealed_before.contains(&rel) {
            out.broken += 1;
            tracing::error!(target: "gatehouse::record", file = %rel,
                "a session file the audit log recorded as sealed has no seal (it was cut): left as it is, not sealed");
            continue;
        }
        match seal_one(path, &rel, audit, signer) {
            Ok(Outcome::Sealed { records, torn }) => {
                out.sealed += 1;
                tracing::warn!(target: "gatehouse::record", file = %rel, records, torn_bytes = torn,
                    "a session the gateway did not end (an unclean stop) was sealed at start");
            }
            Ok(Outcome::AlreadySealed) => {}
            Ok(Outcome::Empty) => {
                out.empty += 1;
                tracing::warn!(target: "gatehouse::record", file = %rel,
                    "a session file with no complete record (an unclean stop right after it was created) was removed");
            }
            Ok(Outcome::Broken(why)) => {
                out.broken += 1;
                tracing::error!(target: "gatehouse::record", file = %rel, why = %why,
                    "an unsealed session file does not verify: left as it is, not sealed");
            }
            Err(e) => {
                out.broken += 1;
                tracing::error!(target: "gatehouse::record", file = %rel, error = %e,
                    "an unsealed session file could not be sealed");
            }
        }
    }
    audit.sync()?;
    Ok(out)
}

/// The files the audit logs at the root name in `sealed` records.
fn sealed_on_record(dir: &Path, files: &[std::path::PathBuf]) -> HashSet<String> {
    let mut out = HashSet::new();
    for log in files.iter().filter(|p| p.parent() == Some(dir) && record::is_audit(p)) {
        let Ok(f) = File::open(log) else { continue };
        for v in record::records(f) {
            if v["kind"] == "sealed" {
                if let Some(file) = v["file"].as_str() {
                    out.insert(file.to_string());
                }
            }
        }
    }
    out
}

enum Outcome {
    Sealed { records: u64, torn: u64 },
    AlreadySealed,
    Empty,
    Broken(String),
}

/// Whether the file's last line is a seal: the cheap check that lets a
/// start skip every finished session without reading it whole.
fn ends_with_seal(path: &Path) -> std::io::Result<bool> {
    const TAIL: u64 = 8 * 1024;
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let from = len.saturating_sub(TAIL);
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::with_capacity((len - from) as usize);
    f.read_to_end(&mut tail)?;
    let Some(body) = tail.strip_suffix(b"\n") else {
        return Ok(false);
    };
    let Some(start) = body
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .or((from == 0).then_some(0))
    else {
        return Ok(false);
    };
    let v: serde_json::Value = match serde_json::from_slice(&body[start..]) {
        Ok(v) => v,
        Err(_) => return Ok(false),
    };
    Ok(v["kind"] == "seal")
}

fn seal_one(path: &Path, rel: &str, audit: &mut AuditLog, signer: Option<&Signer>) -> std::io::Result<Outcome> {
    let torn = cut_torn_tail(path)?;
    let report = record::verify_signed(path, File::open(path)?, false, None);
    if report.sealed && report.broken.is_none() {
        return Ok(Outcome::AlreadySealed);
    }
    match &report.broken {
        Some((0, why)) if why.starts_with("empty") => {
            // Nothing was ever complete in it: there is no session to seal.
            // Its removal is on record, like a deletion by retention.
            let mut f = Fields::default();
            f.str("file", rel).str("why", "empty after an unclean stop");
            audit.append_signed(now_us(), "deleted", &f)?;
            audit.sync()?;
            std::fs::remove_file(path)?;
            return Ok(Outcome::Empty);
        }
        Some((_, why)) if why.starts_with("no seal") => {}
        Some((n, why)) => return Ok(Outcome::Broken(format!("record {n}: {why}"))),
        None => return Ok(Outcome::Broken("no seal".into())),
    }
    let Some(id) = report.id.clone() else {
        return Ok(Outcome::Broken("no session id in its first record".into()));
    };
    let Some((seq, last)) = record::last_record(path)? else {
        return Ok(Outcome::Broken("no complete record".into()));
    };
    let first_t = record::records(File::open(path)?)
        .next()
        .and_then(|v| v["t"].as_u64())
        .unwrap_or(0);
    let last_t = serde_json::from_slice::<serde_json::Value>(&last)
        .ok()
        .and_then(|v| v["t"].as_u64())
        .unwrap_or(0);
    let mut chain = Chain::after(seq, &last);
    let t = now_us().max(last_t);
    let mut close = Fields::default();
    close
        .str("end", UNCLEAN_STOP)
        .u64("duration_ms", last_t.saturating_sub(first_t) / 1000)
        .u64("last_record_t", last_t)
        .u64("torn_bytes", torn);
    let mut lines = chain.line_fields(t, "close", &close);
    let records = chain.seq();
    let mut seal = Fields::default();
    seal.u64("records", records).str("recovered", UNCLEAN_STOP);
    let seal_line = match signer {
        Some(s) => chain.line_signed(t, "seal", &seal, s, SEAL_CONTEXT),
        None => chain.line_fields(t, "seal", &seal),
    };
    lines.extend_from_slice(&seal_line);
    // On record first, as for every seal: whoever sees the sealed file
    // sees it in the audit log too.
    let mut sealed = Fields::default();
    sealed
        .str("id", &id)
        .str("file", rel)
        .u64("records", records + 1)
        .str("hash", &String::from_utf8_lossy(chain.prev()))
        .str("recovered", UNCLEAN_STOP);
    audit.append_signed(t, "sealed", &sealed)?;
    audit.sync()?;
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(&lines)?;
    f.sync_data()?;
    Ok(Outcome::Sealed {
        records: records + 1,
        torn,
    })
}

/// Cuts a last line that has no end (a write the stop interrupted);
/// returns how many bytes went.
fn cut_torn_tail(path: &Path) -> std::io::Result<u64> {
    const STEP: u64 = 64 * 1024;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut buf = vec![0u8; STEP as usize];
    let mut end = len;
    // Walk back to the last newline.
    let keep = loop {
        let from = end.saturating_sub(STEP);
        let n = (end - from) as usize;
        (&f).seek(SeekFrom::Start(from))?;
        (&f).read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            break from + i as u64 + 1;
        }
        if from == 0 {
            break 0;
        }
        end = from;
    };
    if keep == len {
        return Ok(0);
    }
    f.set_len(keep)?;
    f.sync_all()?;
    Ok(len - keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::signing::Keyring;

    fn session_file(dir: &Path, id: &str, records: u64) -> std::path::PathBuf {
        let day = dir.join("2026-01-01");
        std::fs::create_dir_all(&day).unwrap();
        let path = day.join(format!("{id}.ghrec"));
        let mut chain = Chain::default();
        let mut out = Vec::new();
        let mut open = Fields::default();
        open.str("id", id).str("identity", "agent");
        out.extend(chain.line_fields(1_000_000, "open", &open));
        for i in 1..records {
            let mut f = Fields::default();
            f.str("sql", &format!("select {i}"));
            out.extend(chain.line_fields(1_000_000 + i, "statement", &f));
        }
        std::fs::write(&path, out).unwrap();
        path
    }

    #[test]
    fn an_unsealed_session_is_sealed_and_a_torn_line_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (pem, _) = crate::record::signing::generate().unwrap();
        let signer = std::sync::Arc::new(Signer::from_pem(&pem).unwrap());
        let keys = Keyring(vec![signer.public()]);
        let a = session_file(dir.path(), "a", 5);
        let b = session_file(dir.path(), "b", 3);
        // A write the stop cut in the middle.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&b)
            .unwrap()
            .write_all(b"{\"seq\":3,\"t\":9,\"pr")
            .unwrap();
        let empty = dir.path().join("2026-01-01/c.ghrec");
        std::fs::write(&empty, b"").unwrap();
        let mut audit = AuditLog::open(dir.path(), Some(signer.clone())).unwrap();
        let got = seal_leftovers(dir.path(), &mut audit, Some(&signer)).unwrap();
        assert_eq!(
            got,
            Leftovers {
                sealed: 2,
                broken: 0,
                empty: 1
            }
        );
        assert!(!empty.exists());
        for (path, n) in [(&a, 5u64), (&b, 3)] {
            let r = record::verify_signed(path, File::open(path).unwrap(), false, Some(&keys));
            assert!(r.ok(), "{path:?}: {:?}", r.broken);
            assert_eq!(r.intact, n + 2);
            let recs: Vec<_> = record::records(File::open(path).unwrap()).collect();
            assert_eq!(recs[n as usize]["end"], UNCLEAN_STOP);
        }
        audit.checkpoint().unwrap();
        audit.sync().unwrap();
        drop(audit);
        let v = record::verify(dir.path(), Some(&keys), false).unwrap();
        assert_eq!(v.failed(), 0, "{:?}", v.reports);
        // A second start finds nothing left to do.
        let mut audit = AuditLog::open(dir.path(), Some(signer.clone())).unwrap();
        assert_eq!(
            seal_leftovers(dir.path(), &mut audit, Some(&signer)).unwrap(),
            Leftovers::default()
        );
        drop(audit);
        // A sealed file cut by hand afterwards is not sealed again.
        let text = std::fs::read_to_string(&a).unwrap();
        let cut: Vec<&str> = text.lines().take(5).collect();
        std::fs::write(&a, cut.join("\n") + "\n").unwrap();
        let mut audit = AuditLog::open(dir.path(), Some(signer.clone())).unwrap();
        let got = seal_leftovers(dir.path(), &mut audit, Some(&signer)).unwrap();
        assert_eq!(got.broken, 1);
        assert!(!record::verify_signed(&a, File::open(&a).unwrap(), false, None).sealed);
    }

    #[test]
    fn a_file_edited_while_the_gateway_was_down_is_not_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let a = session_file(dir.path(), "a", 4);
        let text = std::fs::read_to_string(&a).unwrap().replace("select 2", "select 9");
        std::fs::write(&a, text).unwrap();
        let mut audit = AuditLog::open(dir.path(), None).unwrap();
        let got = seal_leftovers(dir.path(), &mut audit, None).unwrap();
        assert_eq!(got.broken, 1);
        let r = record::verify_signed(&a, File::open(&a).unwrap(), false, None);
        assert!(!r.sealed);
    }
}

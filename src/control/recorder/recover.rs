//! Sessions an unclean stop left open (a crash, SIGKILL, the OOM killer,
//! power loss) are sealed at the next start, before any new session is
//! recorded, but only as far as a signature vouched for them.
//!
//! While a session is open its records are only hash-chained, which
//! anyone who can write the directory can redo. So each checkpoint of the
//! audit log (signed) carries the heads of the open sessions that moved
//! since the one before: (file, last record written, its hash). After an
//! unclean stop a session file is sealed only if the latest signed head
//! names it and its record at that head still has that hash; its seal says
//! `signed_through` that record, so `verify` can tell what was vouched for
//! from what was written after the last checkpoint. A file no signed head
//! names (a session younger than the checkpoint interval, or one planted
//! while the gateway was down), a file whose chain breaks, and a file the
//! audit log records as sealed (it was cut) are left unsealed, for
//! `verify` to report. Without a signing key nothing is vouched for by
//! anyone: every chain-intact file is sealed, marked recovered.

use super::audit::{AuditLog, AUDIT_FILE};
use crate::record::signing::{Keyring, Signer, AUDIT_CONTEXT, SEAL_CONTEXT};
use crate::record::{self, now_us, Chain, Fields};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The `end` of a session that an unclean stop ended.
pub const UNCLEAN_STOP: &str = "unclean-stop";

/// What the start found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Sessions sealed now.
    pub sealed: u64,
    /// Files left unsealed: their chain does not verify, the audit log
    /// records them as sealed, or no signed head vouches for them.
    pub left: u64,
    /// Files with no byte in them (created just before the stop), removed.
    pub empty: u64,
}

/// A signed head: the last record of an open session a checkpoint vouched for.
struct Head {
    seq: u64,
    hash: String,
}

/// Seals every session file under `dir` that has no seal, as far as a
/// signed head allows. Runs at start, under the recordings directory's
/// lock, so no other process writes them.
pub(super) fn seal_leftovers(dir: &Path, audit: &mut AuditLog, signer: Option<&Signer>) -> std::io::Result<Leftovers> {
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.sort();
    let unsealed: Vec<&PathBuf> = files
        .iter()
        .filter(|p| !record::is_audit(p) && !ends_with_seal(p).unwrap_or(false))
        .collect();
    let mut out = Leftovers::default();
    if unsealed.is_empty() {
        return Ok(out);
    }
    let rel = |p: &Path| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    let wanted: HashSet<String> = unsealed.iter().map(|p| rel(p)).collect();
    let account = read_account(dir, &files, &wanted, signer);
    for path in unsealed {
        let rel = rel(path);
        // A file the audit log says was sealed lost its seal since: cut
        // (or cut and rewritten). Sealing it again would vouch for that.
        if account.sealed.contains(&rel) {
            out.left += 1;
            tracing::error!(target: "gatehouse::record", file = %rel,
                "a session file the audit log recorded as sealed has no seal (it was cut): left as it is, not sealed");
            continue;
        }
        let head = account.heads.get(&rel);
        match seal_one(path, &rel, audit, signer, head) {
            Ok(Outcome::Sealed {
                records,
                torn,
                unvouched,
            }) => {
                out.sealed += 1;
                tracing::warn!(target: "gatehouse::record", file = %rel, records, torn_bytes = torn, unvouched,
                    "a session the gateway did not end (an unclean stop) was sealed at start");
            }
            Ok(Outcome::Empty) => {
                out.empty += 1;
                tracing::warn!(target: "gatehouse::record", file = %rel,
                    "an empty session file (an unclean stop right after it was created) was removed");
            }
            Ok(Outcome::Left(why)) => {
                out.left += 1;
                tracing::error!(target: "gatehouse::record", file = %rel, why = %why,
                    "an unsealed session file was left as it is, not sealed");
            }
            Err(e) => {
                out.left += 1;
                tracing::error!(target: "gatehouse::record", file = %rel, error = %e,
                    "an unsealed session file could not be sealed");
            }
        }
    }
    audit.sync()?;
    Ok(out)
}

/// Regular `.ghrec` files under `dir`; what cannot be read (a `lost+found`,
/// a permission) is logged and skipped rather than stopping the start, and
/// symbolic links, FIFOs and the like are never opened.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(target: "gatehouse::record", dir = %dir.display(), error = %e, "cannot read a directory under the recordings: skipped");
            return;
        }
    };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        let p = e.path();
        if t.is_dir() {
            walk(&p, out);
        } else if t.is_file() && p.extension().and_then(|x| x.to_str()) == Some(record::EXT) {
            out.push(p);
        }
    }
}

/// What the audit logs say about the files to recover.
#[derive(Default)]
struct Account {
    /// Files named by `sealed` records (any audit log at the root).
    sealed: HashSet<String>,
    /// The latest head of each wanted file in a checkpoint of the current
    /// audit log whose signature verifies with this gateway's key.
    heads: HashMap<String, Head>,
}

fn read_account(dir: &Path, files: &[PathBuf], wanted: &HashSet<String>, signer: Option<&Signer>) -> Account {
    let mut acc = Account::default();
    let keys = signer.map(|s| Keyring(vec![s.public()]));
    for log in files.iter().filter(|p| p.parent() == Some(dir) && record::is_audit(p)) {
        let current = log.file_name().is_some_and(|n| n == AUDIT_FILE);
        let Ok(f) = File::open(log) else { continue };
        let mut r = std::io::BufReader::new(f);
        let mut line = Vec::new();
        loop {
            line.clear();
            match record::read::read_line(&mut r, &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if line.pop() != Some(b'\n') {
                break;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
                break;
            };
            match v["kind"].as_str() {
                Some("sealed") => {
                    if let Some(file) = v["file"].as_str() {
                        acc.sealed.insert(file.to_string());
                    }
                }
                // Heads count only from the current log, in checkpoints
                // whose signature verifies with this gateway's key (checked
                // only for checkpoints that name a file to recover).
                Some("checkpoint") if current => {
                    let Some(keys) = keys.as_ref() else { continue };
                    let mut verified = None;
                    for h in v["open"].as_array().into_iter().flatten() {
                        let (Some(file), Some(at), Some(hash)) = (h[0].as_str(), h[1].as_u64(), h[2].as_str()) else {
                            continue;
                        };
                        if !wanted.contains(file) {
                            continue;
                        }
                        let ok = *verified
                            .get_or_insert_with(|| keys.check(AUDIT_CONTEXT, &line, v["key"].as_str()).is_ok());
                        if ok {
                            let head = Head {
                                seq: at,
                                hash: hash.to_string(),
                            };
                            acc.heads.insert(file.to_string(), head);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    acc
}

enum Outcome {
    Sealed { records: u64, torn: u64, unvouched: u64 },
    Empty,
    Left(String),
}

/// Opens a recording without following a symbolic link (an insider's link
/// must not make the start read or cut a file elsewhere) or blocking.
fn open_nofollow(path: &Path, write: bool) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Whether the file's last line is a seal: the cheap check that lets a
/// start skip every finished session without reading it whole.
fn ends_with_seal(path: &Path) -> std::io::Result<bool> {
    const TAIL: u64 = 8 * 1024;
    let mut f = open_nofollow(path, false)?;
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

fn seal_one(
    path: &Path,
    rel: &str,
    audit: &mut AuditLog,
    signer: Option<&Signer>,
    head: Option<&Head>,
) -> std::io::Result<Outcome> {
    let file = open_nofollow(path, false)?;
    if !file.metadata()?.is_file() {
        return Ok(Outcome::Left("not a regular file".into()));
    }
    if file.metadata()?.len() == 0 {
        if head.is_some() {
            // A signed checkpoint saw records in it: emptied since.
            return Ok(Outcome::Left("empty, but a signed checkpoint saw records in it".into()));
        }
        // Nothing was ever written: there is no session to seal, and no
        // record is needed to say so (an empty file is evidence of nothing).
        std::fs::remove_file(path)?;
        return Ok(Outcome::Empty);
    }
    // The whole records first: a break in the chain is reported before
    // anything is cut.
    let report = record::verify_signed(path, file, false, None);
    match &report.broken {
        Some((_, why)) if why.starts_with("no seal") => {}
        Some((n, why)) if *n > 0 && why.contains("no end of line") => {}
        Some((n, why)) => return Ok(Outcome::Left(format!("record {n}: {why}"))),
        None => return Ok(Outcome::Left("sealed after all".into())),
    }
    let Some(id) = report.id.clone() else {
        return Ok(Outcome::Left("no session id in its first record".into()));
    };
    // With a key: only as far as a signed checkpoint vouched for it.
    let signed_through = match (signer, head) {
        (None, _) => None,
        (Some(_), None) => {
            return Ok(Outcome::Left(
                "no signed checkpoint names it (a session younger than checkpoint_interval_secs at the stop, or a file the gateway did not write)".into(),
            ))
        }
        (Some(_), Some(h)) => {
            if record::hash_at(path, h.seq).as_deref() != Some(h.hash.as_str()) {
                return Ok(Outcome::Left(format!(
                    "its record {} is not the one a signed checkpoint vouched for: changed since",
                    h.seq
                )));
            }
            Some(h.seq)
        }
    };
    let torn = cut_torn_tail(path)?;
    let Some((seq, last)) = record::last_record(path)? else {
        return Ok(Outcome::Left("no complete record".into()));
    };
    let first_t = record::records(open_nofollow(path, false)?)
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
    if let Some(n) = signed_through {
        seal.u64("signed_through", n);
    }
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
    if let Some(n) = signed_through {
        sealed.u64("signed_through", n);
    }
    audit.append_signed(t, "sealed", &sealed)?;
    audit.sync()?;
    let mut f = open_nofollow(path, true)?;
    f.seek(SeekFrom::End(0))?;
    f.write_all(&lines)?;
    f.sync_data()?;
    Ok(Outcome::Sealed {
        records: records + 1,
        torn,
        unvouched: signed_through.map_or(0, |n| seq - n),
    })
}

/// Cuts a last line that has no end (a write the stop interrupted);
/// returns how many bytes went.
fn cut_torn_tail(path: &Path) -> std::io::Result<u64> {
    const STEP: u64 = 64 * 1024;
    let f = open_nofollow(path, true)?;
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
    use std::sync::Arc;

    fn session_file(dir: &Path, id: &str, records: u64) -> PathBuf {
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

    fn head(dir: &Path, path: &Path, seq: u64) -> (String, u64, String) {
        let rel = path.strip_prefix(dir).unwrap().display().to_string();
        (rel, seq, record::hash_at(path, seq).unwrap())
    }

    fn signer() -> (Arc<Signer>, Keyring) {
        let (pem, _) = crate::record::signing::generate().unwrap();
        let s = Arc::new(Signer::from_pem(&pem).unwrap());
        let keys = Keyring(vec![s.public()]);
        (s, keys)
    }

    /// Rewrites a file's record `n` (sql) and re-chains everything after
    /// it, as someone who can write the directory could.
    fn rewrite_and_rechain(path: &Path, n: usize) {
        let text = std::fs::read_to_string(path).unwrap();
        let mut chain = Chain::default();
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            if i == n {
                v["sql"] = "drop table evidence".into();
            }
            let kind = v["kind"].as_str().unwrap().to_string();
            let t = v["t"].as_u64().unwrap();
            let obj = v.as_object_mut().unwrap();
            for k in ["seq", "t", "prev", "kind"] {
                obj.remove(k);
            }
            out.extend(chain.line_fields(t, &kind, &Fields::from_object(v)));
        }
        std::fs::write(path, out).unwrap();
    }

    #[test]
    fn sessions_are_sealed_as_far_as_a_signed_head_vouches() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, keys) = signer();
        let a = session_file(dir.path(), "a", 5);
        let b = session_file(dir.path(), "b", 3);
        let young = session_file(dir.path(), "young", 2);
        let mut audit = AuditLog::open(dir.path(), Some(signer.clone())).unwrap();
        audit
            .checkpoint(&[head(dir.path(), &a, 3), head(dir.path(), &b, 2)])
            .unwrap();
        audit.sync().unwrap();
        drop(audit);
        // A write the stop cut in the middle, and a file created just before.
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
                left: 1,
                empty: 1
            }
        );
        assert!(!empty.exists());
        for (path, n, through) in [(&a, 5u64, 3u64), (&b, 3, 2)] {
            let r = record::verify_signed(path, File::open(path).unwrap(), false, Some(&keys));
            assert!(r.ok(), "{path:?}: {:?}", r.broken);
            assert_eq!(r.intact, n + 2);
            assert_eq!(r.signed_through, Some(through));
            let recs: Vec<_> = record::records(File::open(path).unwrap()).collect();
            assert_eq!(recs[n as usize]["end"], UNCLEAN_STOP);
        }
        // No signed head named the young session: not sealed.
        assert!(!record::verify_signed(&young, File::open(&young).unwrap(), false, None).sealed);
        audit.checkpoint(&[]).unwrap();
        audit.sync().unwrap();
        drop(audit);
        let v = record::verify(dir.path(), Some(&keys), false).unwrap();
        let failed: Vec<_> = v
            .reports
            .iter()
            .filter(|r| r.broken.is_some())
            .map(|r| r.path.clone())
            .collect();
        assert_eq!(failed, vec![young.clone()], "{:?}", v.reports);
        assert_eq!(
            v.notes.iter().filter(|n| n.contains("unclean stop")).count(),
            2,
            "{:?}",
            v.notes
        );

        // A second start: the young one is still left, nothing else to do.
        let mut audit = AuditLog::open(dir.path(), Some(signer.clone())).unwrap();
        let got = seal_leftovers(dir.path(), &mut audit, Some(&signer)).unwrap();
        assert_eq!((got.sealed, got.left), (0, 1));
        drop(audit);
        // A sealed file cut by hand afterwards is not sealed again.
        let text = std::fs::read_to_string(&a).unwrap();
        let cut: Vec<&str> = text.lines().take(5).collect();
        std::fs::write(&a, cut.join("\n") + "\n").unwrap();
        let mut audit = AuditLog::open(dir.path(), Some(signer.clone())).unwrap();
        let got = seal_leftovers(dir.path(), &mut audit, Some(&signer)).unwrap();
        assert_eq!((got.sealed, got.left), (0, 2));
        assert!(!record::verify_signed(&a, File::open(&a).unwrap(), false, None).sealed);
    }

    #[test]
    fn a_rechained_or_planted_file_is_not_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, _) = signer();
        let a = session_file(dir.path(), "a", 6);
        let b = session_file(dir.path(), "b", 6);
        let mut audit = AuditLog::open(dir.path(), Some(signer.clone())).unwrap();
        audit
            .checkpoint(&[head(dir.path(), &a, 4), head(dir.path(), &b, 4)])
            .unwrap();
        audit.sync().unwrap();
        drop(audit);
        // Before the head: caught. After it: within what no one vouched for.
        rewrite_and_rechain(&a, 2);
        rewrite_and_rechain(&b, 5);
        let planted = session_file(dir.path(), "planted", 3);
        let mut audit = AuditLog::open(dir.path(), Some(signer.clone())).unwrap();
        let got = seal_leftovers(dir.path(), &mut audit, Some(&signer)).unwrap();
        assert_eq!((got.sealed, got.left), (1, 2));
        for p in [&a, &planted] {
            assert!(
                !record::verify_signed(p, File::open(p).unwrap(), false, None).sealed,
                "{p:?}"
            );
        }
        let r = record::verify_signed(&b, File::open(&b).unwrap(), false, None);
        assert!(r.sealed && r.signed_through == Some(4));
    }

    #[test]
    fn without_a_key_chain_intact_files_are_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let a = session_file(dir.path(), "a", 4);
        let b = session_file(dir.path(), "b", 4);
        let text = std::fs::read_to_string(&b).unwrap().replace("select 2", "select 9");
        std::fs::write(&b, text).unwrap();
        let mut audit = AuditLog::open(dir.path(), None).unwrap();
        let got = seal_leftovers(dir.path(), &mut audit, None).unwrap();
        assert_eq!((got.sealed, got.left), (1, 1));
        assert!(record::verify_signed(&a, File::open(&a).unwrap(), false, None).ok());
        assert!(!record::verify_signed(&b, File::open(&b).unwrap(), false, None).sealed);
    }

    #[test]
    fn links_and_fifos_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim.txt");
        std::fs::write(&victim, b"line one\nno newline at the end").unwrap();
        let day = dir.path().join("2026-01-01");
        std::fs::create_dir_all(&day).unwrap();
        std::os::unix::fs::symlink(&victim, day.join("link.ghrec")).unwrap();
        let fifo = std::ffi::CString::new(day.join("fifo.ghrec").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid C path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let mut audit = AuditLog::open(dir.path(), None).unwrap();
        let got = seal_leftovers(dir.path(), &mut audit, None).unwrap();
        assert_eq!(got, Leftovers::default());
        assert_eq!(std::fs::read(&victim).unwrap(), b"line one\nno newline at the end");
    }

    #[test]
    fn verify_refuses_a_recovered_seal_no_checkpoint_vouched_for() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, keys) = signer();
        let a = session_file(dir.path(), "a", 4);
        let mut audit = AuditLog::open(dir.path(), Some(signer.clone())).unwrap();
        // Sealed on a head no checkpoint in the audit log holds.
        let h = Head {
            seq: 2,
            hash: record::hash_at(&a, 2).unwrap(),
        };
        let rel = a.strip_prefix(dir.path()).unwrap().display().to_string();
        assert!(matches!(
            seal_one(&a, &rel, &mut audit, Some(&signer), Some(&h)).unwrap(),
            Outcome::Sealed { .. }
        ));
        audit.checkpoint(&[]).unwrap();
        audit.sync().unwrap();
        drop(audit);
        let v = record::verify(dir.path(), Some(&keys), false).unwrap();
        let r = v.reports.iter().find(|r| r.path == a).unwrap();
        assert!(
            r.broken
                .as_ref()
                .is_some_and(|b| b.1.contains("no signed checkpoint vouched")),
            "{r:?}"
        );
    }

    #[test]
    fn a_session_a_checkpoint_saw_open_cannot_be_deleted_or_emptied_unseen() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, keys) = signer();
        let a = session_file(dir.path(), "a", 4);
        let b = session_file(dir.path(), "b", 4);
        let mut audit = AuditLog::open(dir.path(), Some(signer.clone())).unwrap();
        audit
            .checkpoint(&[head(dir.path(), &a, 3), head(dir.path(), &b, 3)])
            .unwrap();
        audit.sync().unwrap();
        drop(audit);
        std::fs::remove_file(&a).unwrap();
        std::fs::write(&b, b"").unwrap();
        let mut audit = AuditLog::open(dir.path(), Some(signer.clone())).unwrap();
        let got = seal_leftovers(dir.path(), &mut audit, Some(&signer)).unwrap();
        assert_eq!(
            got,
            Leftovers {
                sealed: 0,
                left: 1,
                empty: 0
            }
        );
        assert!(b.exists(), "an emptied file a checkpoint saw records in is kept");
        drop(audit);
        let v = record::verify(dir.path(), Some(&keys), false).unwrap();
        let missing = v
            .reports
            .iter()
            .find(|r| r.path == a)
            .expect("the deleted file is reported");
        assert!(missing.broken.as_ref().unwrap().1.starts_with("missing"), "{missing:?}");
        assert!(v.reports.iter().find(|r| r.path == b).unwrap().broken.is_some());
    }
}

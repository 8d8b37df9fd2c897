//! Verifying a recordings directory as a whole: each file's chain (and,
//! with keys, its signatures), then the audit log's account of the
//! sessions. The audit log records every session the gateway seals
//! (`sealed`: the file and the hash of its seal line) and every file
//! retention deletes (`deleted`), so:
//!
//! - a session file that was deleted by hand is missing from the
//!   directory while the audit log names it;
//! - a session file that was rewritten and re-chained has a seal that is
//!   not the one the audit log recorded;
//! - a session file sealed while the audit log was recording seals but
//!   absent from it means the audit log was cut (or the file was made
//!   elsewhere).
//!
//! Without a signing key all of this can be redone by whoever can write
//! the directory (rewrite both and re-chain both); with one, the seals and
//! the audit log's checkpoints cannot be.

use super::signing::Keyring;
use super::{collect, is_audit, records, verify_signed, Report};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Every file's report, and what the audit log's account adds.
#[derive(Debug, Default)]
pub struct Verification {
    pub reports: Vec<Report>,
    /// Facts an auditor should see that are not failures (the audit log's
    /// last checkpoint, records signed only by a later start).
    pub notes: Vec<String>,
}

impl Verification {
    pub fn failed(&self) -> usize {
        self.reports.iter().filter(|r| r.broken.is_some()).count()
    }
}

/// What the audit logs say about session files (paths relative to the
/// recordings directory).
#[derive(Default)]
struct Account {
    /// file → where its seal is recorded
    sealed: HashMap<String, Sealed>,
    /// Files named by more than one `sealed` record.
    twice: HashSet<String>,
    deleted: HashSet<String>,
    /// Files uploaded to a fleet's bucket → the seal hash the upload
    /// named (it accounts for the file only if it is the recorded seal's).
    uploaded: HashMap<String, String>,
    /// Open sessions' heads from checkpoints (file → last record vouched
    /// for, its hash), the latest of each: what a seal made after an
    /// unclean stop may rest on.
    heads: HashMap<String, Head>,
    /// The first start that recorded seals: sessions sealed after it must
    /// be in the account.
    seals_since: Option<u64>,
    /// (audit log, seq of a start, records before it that its run signed
    /// for an earlier run that did not end with a checkpoint)
    late_signed: Vec<(String, u64, u64)>,
}

/// An open session's head in a checkpoint: the record vouched for, its
/// hash, and where the checkpoint is (audit log, seq, time).
struct Head {
    at: u64,
    hash: String,
    log: String,
    seq: u64,
    t: u64,
}

/// A `sealed` record: the audit log, its seq, the seal's hash, the
/// session id.
struct Sealed {
    log: String,
    seq: u64,
    hash: String,
    id: String,
}

/// An audit log the gateway writes: `audit.ghrec` at the root, or an
/// earlier one it set aside there (`audit-broken-<time>.ghrec`).
fn is_audit_log(dir: &Path, f: &Path) -> bool {
    let Some(name) = f.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let set_aside = name
        .strip_prefix("audit-broken-")
        .and_then(|r| r.strip_suffix(".ghrec"))
        .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
    f.parent() == Some(dir) && (name == "audit.ghrec" || set_aside)
}

/// Reads the account. With keys only records whose own signature
/// verified count (`signed`, by audit log): anyone can append unsigned
/// records, or cut the log and append them again.
fn read_account(dir: &Path, audits: &[(PathBuf, Option<HashSet<u64>>)]) -> Account {
    let mut acc = Account::default();
    for (a, signed) in audits {
        let name = a.strip_prefix(dir).unwrap_or(a).display().to_string();
        let Ok(f) = std::fs::File::open(a) else { continue };
        for v in records(f) {
            let seq = v["seq"].as_u64().unwrap_or(0);
            if signed.as_ref().is_some_and(|s| !s.contains(&seq)) {
                continue;
            }
            match v["kind"].as_str() {
                Some("start") => {
                    if v["seals"] == true {
                        let t = v["t"].as_u64().unwrap_or(0);
                        acc.seals_since = Some(acc.seals_since.map_or(t, |s| s.min(t)));
                    }
                    if let Some(k) = v["unsigned_tail"].as_u64().filter(|k| *k > 0) {
                        acc.late_signed.push((name.clone(), seq, k.min(seq)));
                    }
                }
                Some("sealed") => {
                    if let (Some(file), Some(hash)) = (v["file"].as_str(), v["hash"].as_str()) {
                        let entry = Sealed {
                            log: name.clone(),
                            seq,
                            hash: hash.to_string(),
                            id: v["id"].as_str().unwrap_or("").to_string(),
                        };
                        if acc.sealed.insert(file.to_string(), entry).is_some() {
                            acc.twice.insert(file.to_string());
                        }
                    }
                }
                Some("deleted") => {
                    if let Some(file) = v["file"].as_str() {
                        acc.deleted.insert(file.to_string());
                    }
                }
                // Uploaded to a fleet's bucket (verified against its seal,
                // read back and hash-checked first).
                Some("uploaded") => {
                    if let Some(file) = v["file"].as_str() {
                        acc.uploaded
                            .insert(file.to_string(), v["hash"].as_str().unwrap_or("").to_string());
                    }
                }
                Some("checkpoint") => {
                    for h in v["open"].as_array().into_iter().flatten() {
                        if let (Some(file), Some(at), Some(hash)) = (h[0].as_str(), h[1].as_u64(), h[2].as_str()) {
                            let head = Head {
                                at,
                                hash: hash.to_string(),
                                log: name.clone(),
                                seq,
                                t: v["t"].as_u64().unwrap_or(0),
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

/// Checks a file, or every recording under a directory (sorted by path);
/// for a directory that holds an audit log, also the audit log's account.
/// With keys, a directory must hold one (`audit.ghrec`).
///
/// `live`: the gateway is running, so a session file without a seal may be
/// open; it is noted, not failed (unless the audit log says it was sealed).
pub fn verify(path: &Path, keys: Option<&Keyring>, live: bool) -> std::io::Result<Verification> {
    let mut files = Vec::new();
    let is_dir = path.is_dir();
    if is_dir {
        collect(path, &mut files)?;
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut out = Verification::default();
    for f in &files {
        let file = std::fs::File::open(f)?;
        let audit = if is_dir { is_audit_log(path, f) } else { is_audit(f) };
        let mut r = verify_signed(f, file, audit, keys);
        if live && !audit && !r.sealed && r.intact > 0 && r.intact == r.broken.as_ref().map_or(0, |b| b.0) {
            // Whole records, no seal yet: a session still open.
            if r.broken.as_ref().is_some_and(|b| b.1.starts_with("no seal")) {
                r.broken = None;
                out.notes
                    .push(format!("{}: open (no seal yet), {} records", f.display(), r.intact));
            }
        }
        if is_dir && !audit && is_audit(f) && r.broken.is_none() {
            r.broken = Some((
                0,
                "named as an audit log but not one the gateway writes (audit.ghrec, audit-broken-<time>.ghrec at the root)".into(),
            ));
        }
        // A session file is named by its session's id: a file copied
        // over another is not the session it claims to be.
        if !audit && r.broken.is_none() {
            let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if r.id.as_deref() != Some(stem) {
                r.broken = Some((
                    0,
                    format!(
                        "the file is named {stem}, its session is {:?}",
                        r.id.as_deref().unwrap_or("")
                    ),
                ));
            }
        }
        if !is_dir && r.recovered && r.broken.is_none() {
            out.notes.push(format!(
                "{}: sealed at a start after an unclean stop; check the directory to see what a signed checkpoint vouched for",
                f.display()
            ));
        }
        out.reports.push(r);
    }
    for r in out.reports.iter().filter(|r| is_dir && is_audit_log(path, &r.path)) {
        if let Some((seq, t)) = r.checkpoint {
            out.notes.push(format!(
                "{}: signed through record {seq} ({}){}",
                r.path.display(),
                utc(t),
                match r.unsigned_tail {
                    0 => String::new(),
                    k => format!(
                        "; {k} record(s) after it are not signed yet (a running gateway signs them at its next checkpoint)"
                    ),
                }
            ));
        }
    }
    if !is_dir {
        return Ok(out);
    }
    // The account is kept by the audit logs at the recordings' root.
    let audits: Vec<(PathBuf, Option<HashSet<u64>>)> = out
        .reports
        .iter()
        .filter(|r| is_audit_log(path, &r.path))
        .map(|r| (r.path.clone(), keys.map(|_| r.signed.iter().copied().collect())))
        .collect();
    if !audits
        .iter()
        .any(|(p, _)| p.file_name().is_some_and(|n| n == "audit.ghrec"))
    {
        if keys.is_some() {
            out.reports.push(Report::failed(
                path.join("audit.ghrec"),
                "missing: a recordings directory written with a signing key has an audit log at its root".into(),
            ));
        }
        if audits.is_empty() {
            return Ok(out);
        }
    }
    let acc = read_account(path, &audits);
    for (log, seq, k) in &acc.late_signed {
        out.notes.push(format!(
            "{log}: the {k} record(s) before record {seq} were signed by the start at record {seq}, not by the run that wrote them (that run did not stop cleanly, or they were changed while the gateway was stopped)"
        ));
    }
    let rel = |p: &Path| p.strip_prefix(path).unwrap_or(p).display().to_string();
    let present: HashSet<String> = files.iter().map(|f| rel(f)).collect();
    for r in out.reports.iter_mut().filter(|r| !is_audit(&r.path)) {
        if r.broken.is_some() {
            continue;
        }
        let name = rel(&r.path);
        if !r.sealed {
            // Open (`live`): fine unless the audit log says it was sealed.
            if let Some(Sealed { log, seq, .. }) = acc.sealed.get(&name) {
                r.broken = Some((
                    r.intact,
                    format!("no seal, but {log} recorded its seal at record {seq}: the file was cut"),
                ));
            }
            continue;
        }
        if acc.twice.contains(&name) {
            r.broken = Some((
                r.intact.saturating_sub(1),
                "the audit logs record this file's seal more than once".into(),
            ));
            continue;
        }
        match acc.sealed.get(&name) {
            Some(Sealed { log, seq, hash, id }) => {
                if r.seal_hash.as_deref() != Some(hash.as_str()) || r.id.as_deref() != Some(id.as_str()) {
                    r.broken = Some((
                        r.intact.saturating_sub(1),
                        format!(
                            "the seal is not the one {log} recorded at its record {seq}: the recording was rewritten"
                        ),
                    ));
                } else if r.recovered {
                    recovered(r, acc.heads.get(&name), keys.is_some(), &mut out.notes);
                }
            }
            // With keys every session must be accounted for by a signed
            // record; without, those sealed since the log began recording
            // seals.
            None => {
                let since = if keys.is_some() {
                    0
                } else {
                    acc.seals_since.unwrap_or(u64::MAX)
                };
                if r.sealed_at.is_some_and(|t| t >= since) {
                    r.broken = Some((
                        r.intact.saturating_sub(1),
                        if keys.is_some() {
                            "not in the audit log (no signed record of its seal): the audit log was cut or replaced, or the file was not written by this gateway".into()
                        } else {
                            "not in the audit log, which records every session sealed since it began recording seals: the audit log was cut, or the file was not written by this gateway".into()
                        },
                    ));
                }
            }
        }
    }
    // A session a signed checkpoint saw open, gone without a seal or a
    // deletion on record: deleted by hand.
    let mut gone: Vec<(&String, &Head)> = acc
        .heads
        .iter()
        .filter(|(f, _)| !present.contains(*f) && !acc.sealed.contains_key(*f) && !acc.deleted.contains(*f))
        .collect();
    gone.sort_by_key(|g| g.0);
    for (file, h) in gone {
        out.reports.push(Report::failed(
            path.join(file),
            format!(
                "missing: the checkpoint at record {} of {} saw this session open, and no seal or deletion of it is on record",
                h.seq, h.log
            ),
        ));
    }
    // An upload accounts for a file only when it names the recorded seal.
    let uploaded_as_sealed = |f: &String, s: &Sealed| acc.uploaded.get(f).is_some_and(|h| *h == s.hash);
    let mut missing: Vec<(&String, &Sealed)> = acc
        .sealed
        .iter()
        .filter(|(f, s)| !present.contains(*f) && !acc.deleted.contains(*f) && !uploaded_as_sealed(f, s))
        .collect();
    missing.sort_by_key(|m| m.0);
    for (file, Sealed { log, seq, .. }) in missing {
        out.reports.push(Report::failed(
            path.join(file),
            format!("missing: {log} recorded its seal at record {seq}, and no deletion by retention is on record"),
        ));
    }
    Ok(out)
}

/// A session sealed at a start after an unclean stop. With keys its seal
/// must rest on a signed checkpoint's head for the file: the record it
/// says it is `signed_through` is the one the checkpoint named, with the
/// same hash. Records after it were written after the last checkpoint:
/// noted, as nothing vouched for them.
fn recovered(r: &mut Report, head: Option<&Head>, keyed: bool, notes: &mut Vec<String>) {
    let through = r.signed_through;
    if keyed {
        let vouched = match (through, head) {
            (Some(n), Some(h)) => n == h.at && super::hash_at(&r.path, n).as_deref() == Some(h.hash.as_str()),
            _ => false,
        };
        if !vouched {
            r.broken = Some((
                r.intact.saturating_sub(1),
                "sealed after an unclean stop, but no signed checkpoint vouched for its records".into(),
            ));
            return;
        }
    }
    // intact counts the close and the seal recovery added.
    let written = r.intact.saturating_sub(2);
    notes.push(match (through, head) {
        (Some(n), Some(h)) => format!(
            "{}: sealed at a start after an unclean stop (at {}); records 0–{n} were vouched for by the signed checkpoint at record {} of {} ({}), the {} after them were not",
            r.path.display(),
            r.sealed_at.map(utc).unwrap_or_default(),
            h.seq,
            h.log,
            utc(h.t),
            written.saturating_sub(n + 1)
        ),
        _ => format!(
            "{}: sealed at a start after an unclean stop (no key: nothing vouched for its records)",
            r.path.display()
        ),
    });
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a time in microseconds.
fn utc(t_us: u64) -> String {
    let s = t_us / 1_000_000;
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        super::civil_day(s),
        s / 3600 % 24,
        s / 60 % 60,
        s % 60
    )
}

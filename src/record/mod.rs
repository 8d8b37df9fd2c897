//! The recording format: one file per session (and one audit log), JSON
//! lines, each record chained to the one before it by SHA-256.
//!
//! ```text
//! {"seq":0,"prev":"000…000","t":1764150000123456,"kind":"open",…}
//! {"seq":1,"prev":"<hex SHA-256 of line 0's bytes>","t":…,"kind":"statement",…}
//! …
//! {"seq":N,"prev":"<hex SHA-256 of line N-1>","t":…,"kind":"seal","records":N}
//! ```
//!
//! - `seq` counts from 0; `prev` is the lowercase hex SHA-256 of the
//!   previous line's exact bytes (without its newline); the first record's
//!   `prev` is 64 zeros. `t` is Unix time in microseconds.
//! - A session file ends with a `seal` record whose `records` is its own
//!   `seq`: a file without one was cut short (the gateway stopped, or the
//!   file was truncated). The audit log is never sealed: it continues, across
//!   restarts, from its last record.
//! - Editing a record breaks the next record's `prev`; removing or
//!   reordering records breaks `seq` and `prev`; cutting the end removes the
//!   seal. [`verify`] names the first record that fails.
//!
//! Record kinds and their fields are documented in `FORMAT.md` beside this file.

pub mod events;
pub mod link;
pub mod read;
pub mod render;
pub mod signing;
pub mod tree;

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// File name extension of recordings.
pub const EXT: &str = "ghrec";
/// The `prev` of a first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest record line accepted when reading (a capped `rows` record is
/// far smaller).
pub const MAX_LINE: usize = 64 << 20;

/// A statement the data path resolved, as the recorder is told of it: the
/// client frame it belongs to, its text (what the server ran: for an
/// Execute, the statement its portal was bound from), its class when a
/// policy classified it, and for an Execute the ordinal of the Bind (among
/// the session's recorded Bind frames) that made its portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRef {
    pub frame: u32,
    pub sql: std::sync::Arc<str>,
    pub class: Option<&'static str>,
    pub bind: Option<u64>,
}

/// Unix time in microseconds.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// `YYYY-MM-DD` of a Unix time (UTC).
pub fn civil_day(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

/// Appends records to one chain.
#[derive(Debug, Clone)]
pub struct Chain {
    /// Lowercase hex SHA-256 of the previous line.
    prev: [u8; 64],
    seq: u64,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            prev: [b'0'; 64],
            seq: 0,
        }
    }
}

impl Chain {
    /// Continues a chain after a record with this `seq` and line.
    pub fn after(seq: u64, line: &[u8]) -> Chain {
        Chain {
            prev: hex64(&Sha256::digest(line).into()),
            seq: seq + 1,
        }
    }

    /// The next record's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The next record's `prev`: the hex SHA-256 of the last line written.
    pub fn prev(&self) -> &[u8; 64] {
        &self.prev
    }

    /// Serialises a record of `kind` with `fields` (an object) as one line,
    /// newline included, and advances the chain.
    pub fn line(&mut self, t_us: u64, kind: &str, fields: Value) -> Vec<u8> {
        self.line_fields(t_us, kind, &Fields::from_object(fields))
    }

    /// As [`Chain::line`], with the fields already written.
    pub fn line_fields(&mut self, t_us: u64, kind: &str, fields: &Fields) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + fields.0.len());
        self.append_line(&mut out, t_us, kind, fields);
        out
    }

    /// As [`Chain::line_fields`], appended to `out` (a buffer the caller
    /// reuses): returns where the line starts in it.
    pub fn append_line(&mut self, out: &mut Vec<u8>, t_us: u64, kind: &str, fields: &Fields) -> usize {
        let start = out.len();
        self.write_unsealed(out, t_us, kind, fields);
        out.push(b'}');
        self.prev = hex64(&Sha256::digest(&out[start..]).into());
        self.seq += 1;
        out.push(b'\n');
        start
    }

    /// As [`Chain::line_fields`], signed: the record ends with `"key"` and
    /// `"sig"`, the signature of the whole line as it would read without
    /// its `sig` member (see [`signing`]).
    pub fn line_signed(
        &mut self,
        t_us: u64,
        kind: &str,
        fields: &Fields,
        signer: &signing::Signer,
        context: &[u8],
    ) -> Vec<u8> {
        let mut out = self.unsealed_line(t_us, kind, fields);
        out.extend_from_slice(b",\"key\":");
        let _ = serde_json::to_writer(&mut out, signer.id());
        out.push(b'}');
        let sig = signer.sign_line(context, &out);
        out.pop();
        out.extend_from_slice(b",\"sig\":\"");
        out.extend_from_slice(sig.as_bytes());
        out.extend_from_slice(b"\"}");
        self.advance(out)
    }

    /// The line without its closing brace.
    fn unsealed_line(&self, t_us: u64, kind: &str, fields: &Fields) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + fields.0.len());
        self.write_unsealed(&mut out, t_us, kind, fields);
        out
    }

    fn write_unsealed(&self, out: &mut Vec<u8>, t_us: u64, kind: &str, fields: &Fields) {
        out.extend_from_slice(b"{\"seq\":");
        push_u64(out, self.seq);
        out.extend_from_slice(b",\"prev\":\"");
        out.extend_from_slice(&self.prev);
        out.extend_from_slice(b"\",\"t\":");
        push_u64(out, t_us);
        out.extend_from_slice(b",\"kind\":");
        let _ = serde_json::to_writer(&mut *out, kind);
        if !fields.0.is_empty() {
            out.push(b',');
            out.extend_from_slice(&fields.0);
        }
    }

    /// Links a finished line (without its newline) into the chain.
    fn advance(&mut self, mut out: Vec<u8>) -> Vec<u8> {
        self.prev = hex64(&Sha256::digest(&out).into());
        self.seq += 1;
        out.push(b'\n');
        out
    }
}

/// Appends the decimal digits of `n`.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Lowercase hex of a digest.
fn hex64(d: &[u8; 32]) -> [u8; 64] {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in d.iter().enumerate() {
        out[2 * i] = H[(b >> 4) as usize];
        out[2 * i + 1] = H[(b & 15) as usize];
    }
    out
}

/// The fields of a record, written straight into JSON (`"k":v,"k2":v2`),
/// for the records the recorder writes per statement.
#[derive(Default, Debug, Clone)]
pub struct Fields(Vec<u8>);

impl Fields {
    /// The members of a JSON object (the chain's own keys are left out).
    pub fn from_object(fields: Value) -> Fields {
        let mut body = Fields::default();
        if let Value::Object(f) = fields {
            for (k, v) in f {
                if !matches!(k.as_str(), "seq" | "prev" | "t" | "kind") {
                    body.value(&k, &v);
                }
            }
        }
        body
    }

    fn key(&mut self, k: &str) {
        if !self.0.is_empty() {
            self.0.push(b',');
        }
        let _ = serde_json::to_writer(&mut self.0, k);
        self.0.push(b':');
    }

    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        let _ = serde_json::to_writer(&mut self.0, v);
        self
    }

    pub fn u64(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        push_u64(&mut self.0, v);
        self
    }

    pub fn value(&mut self, k: &str, v: &Value) -> &mut Self {
        self.key(k);
        let _ = serde_json::to_writer(&mut self.0, v);
        self
    }

    /// A list of strings.
    pub fn strs<'a>(&mut self, k: &str, v: impl IntoIterator<Item = &'a str>) -> &mut Self {
        self.key(k);
        json_strs(&mut self.0, v);
        self
    }

    /// Room for `n` bytes of members before the buffer grows.
    pub fn with_capacity(n: usize) -> Fields {
        Fields(Vec::with_capacity(n))
    }

    /// A member whose value is JSON written already (by [`json_strs`] or
    /// `serde_json`): values the recorder writes once and repeats (a Bind's
    /// parameters, a result's column names).
    pub(crate) fn raw(&mut self, k: &str, json: &[u8]) -> &mut Self {
        debug_assert!(serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok());
        self.key(k);
        self.0.extend_from_slice(json);
        self
    }
}

/// Appends a JSON array of strings.
pub fn json_strs<'a>(out: &mut Vec<u8>, v: impl IntoIterator<Item = &'a str>) {
    out.push(b'[');
    for (i, s) in v.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, s);
    }
    out.push(b']');
}

/// What [`verify`] found in one file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub path: PathBuf,
    /// Records that check out, from the first.
    pub intact: u64,
    pub sealed: bool,
    /// The first record that fails and why.
    pub broken: Option<(u64, String)>,
    /// The key whose signature on the seal (or, for an audit log, on every
    /// checkpoint) verified, when keys were given.
    pub signed_by: Option<String>,
    /// A session file: its id (from `open`), the hex SHA-256 of its seal
    /// line and the seal's time, for the audit log's cross-check.
    pub id: Option<String>,
    pub seal_hash: Option<String>,
    pub sealed_at: Option<u64>,
    /// A session sealed at a start after an unclean stop (its seal says
    /// `recovered`): its records were signed then, not as they were written.
    pub recovered: bool,
    /// A recovered seal: the last record a signed checkpoint vouched for.
    pub signed_through: Option<u64>,
    /// An audit log: its last checkpoint whose signature verified (`seq`,
    /// `t`), and how many records follow it unsigned (a running gateway
    /// signs them at its next checkpoint).
    pub checkpoint: Option<(u64, u64)>,
    pub unsigned_tail: u64,
    /// An audit log: the records whose signature verified.
    pub signed: Vec<u64>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.broken.is_none() && self.sealed
    }

    /// A file that fails as a whole (missing, unreadable).
    pub fn failed(path: PathBuf, why: String) -> Report {
        Report {
            path,
            broken: Some((0, why)),
            ..Report::default()
        }
    }
}

/// Checks one recording: the chain, the sequence, the seal. `audit` files
/// are not expected to be sealed.
pub fn verify_reader(path: &Path, r: impl Read, audit: bool) -> Report {
    verify_signed(path, r, audit, None)
}

/// As [`verify_reader`], and with `keys` every seal (session files) or
/// every checkpoint (audit logs, which must have one) must carry a
/// signature that one of the keys verifies.
pub fn verify_signed(path: &Path, r: impl Read, audit: bool, keys: Option<&signing::Keyring>) -> Report {
    let mut rep = Report {
        path: path.to_path_buf(),
        ..Report::default()
    };
    let mut reader = BufReader::new(r);
    let mut prev: [u8; 64] = [b'0'; 64];
    let mut line = Vec::new();
    let mut n: u64 = 0;
    let mut signers: Vec<String> = Vec::new();
    loop {
        line.clear();
        match read::read_line(&mut reader, &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                rep.broken = Some((n, format!("unreadable: {e}")));
                return rep;
            }
        }
        if rep.sealed {
            rep.broken = Some((n, "a record after the seal".into()));
            return rep;
        }
        if line.last() != Some(&b'\n') {
            rep.broken = Some((n, "the record is cut short (no end of line)".into()));
            return rep;
        }
        let body = &line[..line.len() - 1];
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                rep.broken = Some((n, format!("not a JSON record: {e}")));
                return rep;
            }
        };
        if v["seq"].as_u64() != Some(n) {
            rep.broken = Some((
                n,
                format!(
                    "out of sequence: seq is {}, expected {n} (a record was removed, added or moved)",
                    v["seq"]
                ),
            ));
            return rep;
        }
        if v["prev"].as_str().map(str::as_bytes) != Some(&prev[..]) {
            rep.broken = Some((
                n,
                if n == 0 {
                    "the first record's prev is not the genesis value".into()
                } else {
                    format!("prev does not match record {}: record {} was changed", n - 1, n - 1)
                },
            ));
            return rep;
        }
        let kind = v["kind"].as_str().unwrap_or("");
        if n == 0 && !audit {
            rep.id = v["id"].as_str().map(str::to_string);
        }
        // With keys: a session's seal must be signed; in an audit log a
        // checkpoint must be, and any record that carries a signature must
        // carry a valid one.
        let signed = match (kind, audit) {
            ("seal", false) => Some(signing::SEAL_CONTEXT),
            ("checkpoint", true) => Some(signing::AUDIT_CONTEXT),
            (_, true) if v.get("sig").is_some() => Some(signing::AUDIT_CONTEXT),
            _ => None,
        };
        if let (Some(context), Some(keys)) = (signed, keys) {
            match keys.check(context, body, v["key"].as_str()) {
                Ok(id) => {
                    if !signers.contains(&id) {
                        signers.push(id);
                    }
                    if audit {
                        rep.checkpoint = Some((n, v["t"].as_u64().unwrap_or(0)));
                        rep.signed.push(n);
                    }
                }
                Err(why) => {
                    rep.broken = Some((n, format!("{kind}: {why}")));
                    return rep;
                }
            }
        }
        if kind == "seal" && !audit {
            if v["records"].as_u64() != Some(n) {
                rep.broken = Some((n, format!("the seal counts {} records, the file has {n}", v["records"])));
                return rep;
            }
            rep.sealed = true;
            rep.sealed_at = v["t"].as_u64();
            rep.recovered = v.get("recovered").is_some();
            rep.signed_through = v["signed_through"].as_u64();
        }
        prev = hex64(&Sha256::digest(body).into());
        n += 1;
        rep.intact = n;
    }
    if rep.sealed {
        rep.seal_hash = Some(String::from_utf8_lossy(&prev).into_owned());
    }
    if n == 0 {
        rep.broken = Some((0, "empty recording".into()));
    } else if !rep.sealed && !audit {
        rep.broken = Some((
            n,
            format!("no seal after record {}: the recording was cut short (truncated, or the gateway stopped before the session ended)", n - 1),
        ));
    }
    if audit && rep.broken.is_none() {
        if keys.is_some() {
            match rep.checkpoint {
                Some((seq, _)) => rep.unsigned_tail = n - 1 - seq,
                None => {
                    rep.broken = Some((
                        n.saturating_sub(1),
                        "the audit log has no signed record (it was not written with a signing key, or was cut before its first)".into(),
                    ));
                    return rep;
                }
            }
        }
        rep.sealed = true;
    }
    if keys.is_some() && rep.broken.is_none() {
        rep.signed_by = Some(signers.join(","));
    }
    rep
}

/// The hex SHA-256 of a record line (without its newline): what the next
/// record's `prev` holds.
pub fn line_hash(line: &[u8]) -> String {
    String::from_utf8_lossy(&hex64(&Sha256::digest(line).into())).into_owned()
}

/// The hash of record `seq` of a file (None when the file is shorter or
/// unreadable).
pub fn hash_at(path: &Path, seq: u64) -> Option<String> {
    let mut r = BufReader::new(std::fs::File::open(path).ok()?);
    let mut line = Vec::new();
    for n in 0..=seq {
        line.clear();
        if read::read_line(&mut r, &mut line).ok()? == 0 || line.last() != Some(&b'\n') {
            return None;
        }
        if n == seq {
            line.pop();
            return Some(line_hash(&line));
        }
    }
    None
}

/// Whether a file is an audit log (by name).
pub fn is_audit(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("audit"))
}

pub use tree::{verify, Verification};

/// Every recording file under `dir`.
pub fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            // Dot-directories hold no recordings of this directory's own
            // (a fleet's cache of recordings fetched from its bucket).
            if !e.file_name().to_string_lossy().starts_with('.') {
                collect(&p, out)?;
            }
        } else if p.extension().and_then(|x| x.to_str()) == Some(EXT) {
            out.push(p);
        }
    }
    Ok(())
}

/// The last complete line of a file and its `seq` (to continue a chain).
pub fn last_record(path: &Path) -> std::io::Result<Option<(u64, Vec<u8>)>> {
    let f = std::fs::File::open(path)?;
    let mut r = BufReader::new(f);
    let mut last = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        if read::read_line(&mut r, &mut line)? == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            return Err(std::io::Error::other("the last record is cut short"));
        }
        line.pop();
        let v: Value = serde_json::from_slice(&line).map_err(std::io::Error::other)?;
        let seq = v["seq"]
            .as_u64()
            .ok_or_else(|| std::io::Error::other("a record without seq"))?;
        last = Some((seq, line.clone()));
    }
    Ok(last)
}

/// Reads records as JSON values (stops at the first bad line).
pub fn records(r: impl Read) -> impl Iterator<Item = Value> {
    let mut reader = BufReader::new(r);
    let mut line = Vec::new();
    std::iter::from_fn(move || {
        line.clear();
        match read::read_line(&mut reader, &mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => serde_json::from_slice(&line).ok(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(n: usize, seal: bool) -> Vec<u8> {
        let mut c = Chain::default();
        let mut out = c.line(1, "open", json!({"session": "s"}));
        for i in 0..n {
            out.extend(c.line(2 + i as u64, "statement", json!({"sql": format!("select {i}")})));
        }
        if seal {
            let s = c.seq();
            out.extend(c.line(99, "seal", json!({ "records": s })));
        }
        out
    }

    fn check(data: &[u8]) -> Report {
        verify_reader(Path::new("x.ghrec"), data, false)
    }

    #[test]
    fn numbers_and_links_are_written_as_json() {
        for n in [0u64, 7, 10, 99, 1_764_150_000_123_456, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
        let mut c = Chain::default();
        let first = c.line(5, "open", json!({}));
        let v: serde_json::Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(v["prev"], GENESIS);
        assert_eq!(v["seq"], 0);
        let second = c.line(6, "x", json!({}));
        let v: serde_json::Value = serde_json::from_slice(&second).unwrap();
        let want = hex::encode(Sha256::digest(&first[..first.len() - 1]));
        assert_eq!(v["prev"].as_str(), Some(want.as_str()));
        // A chain continued from a line links exactly as the original did.
        let mut after = Chain::after(0, &first[..first.len() - 1]);
        assert_eq!(after.line(6, "x", json!({})), second);
    }

    #[test]
    fn a_sealed_chain_verifies() {
        let r = check(&sample(5, true));
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.intact, 7);
    }

    #[test]
    fn an_edit_breaks_the_next_record() {
        let data = String::from_utf8(sample(5, true))
            .unwrap()
            .replace("select 2", "select 9");
        let r = check(data.as_bytes());
        // Record 3 holds `select 2`; record 4's prev no longer matches.
        assert_eq!(r.broken.as_ref().map(|b| b.0), Some(4), "{r:?}");
        assert!(r.broken.unwrap().1.contains("record 3 was changed"));
    }

    #[test]
    fn removed_reordered_and_truncated_records_fail() {
        let data = String::from_utf8(sample(5, true)).unwrap();
        let lines: Vec<&str> = data.lines().collect();
        let mut removed = lines.clone();
        removed.remove(2);
        let r = check((removed.join("\n") + "\n").as_bytes());
        assert_eq!(r.broken.as_ref().map(|b| b.0), Some(2), "{r:?}");
        let mut swapped = lines.clone();
        swapped.swap(2, 3);
        let r = check((swapped.join("\n") + "\n").as_bytes());
        assert_eq!(r.broken.as_ref().map(|b| b.0), Some(2), "{r:?}");
        // Cut at a record boundary: no seal.
        let cut = lines[..4].join("\n") + "\n";
        let r = check(cut.as_bytes());
        assert_eq!(r.intact, 4);
        assert!(!r.ok());
        assert!(r.broken.unwrap().1.contains("no seal"));
        // Cut inside a record.
        let r = check(&data.as_bytes()[..data.len() - 10]);
        assert_eq!(r.broken.as_ref().map(|b| b.0), Some(6), "{r:?}");
        assert!(r.broken.unwrap().1.contains("cut short"));
    }

    #[test]
    fn a_forged_seal_count_fails() {
        let data = String::from_utf8(sample(2, true)).unwrap();
        assert!(data.contains("\"records\":3"));
        let data = data.replace("\"records\":3", "\"records\":2");
        let r = check(data.as_bytes());
        assert_eq!(r.broken.as_ref().map(|b| b.0), Some(3), "{r:?}");
    }

    #[test]
    fn chains_continue() {
        let data = sample(2, false);
        let text = String::from_utf8(data.clone()).unwrap();
        let last = text.lines().last().unwrap();
        let mut c = Chain::after(2, last.as_bytes());
        let mut all = data;
        all.extend(c.line(5, "statement", json!({})));
        let s = c.seq();
        all.extend(c.line(6, "seal", json!({ "records": s })));
        assert!(check(&all).ok());
    }

    #[test]
    fn signed_audit_logs_need_a_signed_record_and_count_their_unsigned_tail() {
        use signing::{Keyring, Signer, AUDIT_CONTEXT, SEAL_CONTEXT};
        let (pem, public) = signing::generate().unwrap();
        let key = Signer::from_pem(&pem).unwrap();
        let ring = Keyring(vec![public]);
        let mut c = Chain::default();
        let mut log = c.line(1, "start", json!({}));
        let unsigned = verify_signed(Path::new("audit.ghrec"), &log[..], true, Some(&ring));
        assert!(unsigned.broken.unwrap().1.contains("no signed record"));
        let s = c.seq();
        log.extend(c.line_signed(2, "checkpoint", &Fields::default(), &key, AUDIT_CONTEXT));
        log.extend(c.line(3, "admin", json!({})));
        log.extend(c.line(4, "admin", json!({})));
        let r = verify_signed(Path::new("audit.ghrec"), &log[..], true, Some(&ring));
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.checkpoint, Some((s, 2)));
        assert_eq!(r.signed, vec![s]);
        assert_eq!(r.unsigned_tail, 2);
        // A seal's signature is no audit record's.
        let mut c = Chain::default();
        let mut log = c.line(1, "start", json!({}));
        log.extend(c.line_signed(2, "checkpoint", &Fields::default(), &key, SEAL_CONTEXT));
        let r = verify_signed(Path::new("audit.ghrec"), &log[..], true, Some(&ring));
        assert!(r.broken.unwrap().1.contains("does not verify"));
    }
}

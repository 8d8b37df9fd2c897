//! An index entry packed into bytes: one allocation for a session still
//! open, a run of the spill's file for a finished one (see `spill`).
//!
//! The index keeps up to `MAX_INDEX` recorded sessions for the admin API.
//! An [`Entry`] as the API hands it out is about 230 bytes of fields plus
//! five allocations (id, client, path, seal, decisions) and shared names;
//! packed, a storm's session is 120 bytes:
//!
//! - the numbers at fixed places, so that a live session's statement count
//!   and decisions are updated in place;
//! - the decisions as bits, the end as a code when it is one gatehouse
//!   writes, the seal's hash as its 32 bytes;
//! - the path left out when it is the one the writer gives every recording
//!   (`DIR/DAY/ID.ghrec`), derived again when asked for;
//! - the text (id, identity, target, client, roles) as length-prefixed
//!   UTF-8, the id first so that finding an id reads no further.

use super::index::Entry;
use crate::core::end::EndReason;
use crate::record;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The decisions a statement's record can carry, one bit each, in the
/// order the admin API lists them.
const DECISIONS: [&str; 3] = ["allow", "deny", "approved"];

// The header: numbers at fixed offsets (little-endian).
const STARTED: usize = 0;
const ENDED: usize = 8;
const STATEMENTS: usize = 16;
const SESSION: usize = 24;
const DECIDED: usize = 28;
const FLAGS: usize = 29;
const END: usize = 30;
const HEADER: usize = 31;

// Flags.
const LIVE: u8 = 1;
/// The seal's hash is 64 lowercase hex digits, kept as 32 bytes.
const SEAL_BYTES: u8 = 2;
/// The seal's hash is other text, kept as text.
const SEAL_TEXT: u8 = 4;
/// The path is stored (it is not the one derived from the id).
const PATH_STORED: u8 = 8;
/// `ENDED` holds when the session ended.
const HAS_ENDED: u8 = 16;

// The end: 0 for none, 1 + its place among the known ends, or text.
const END_NONE: u8 = 0;
const END_TEXT: u8 = u8::MAX;

/// Ends gatehouse writes that are not a session's own reason: sessions
/// open when the process stopped, sealed at the next start after an
/// unclean stop, a file indexed without its close.
const OTHER_ENDS: [&str; 3] = ["gateway-stopped", super::recover::UNCLEAN_STOP, "unsealed"];

const _: () = assert!(EndReason::ALL.len() + OTHER_ENDS.len() < END_TEXT as usize);

/// The known end at place `i` (code `1 + i`).
fn known_end(i: usize) -> Option<&'static str> {
    match EndReason::ALL.get(i) {
        Some(r) => Some(r.as_str()),
        None => OTHER_ENDS.get(i - EndReason::ALL.len()).copied(),
    }
}

fn end_code(end: Option<&str>) -> u8 {
    match end {
        None => END_NONE,
        Some(text) => (0..)
            .map_while(known_end)
            .position(|known| known == text)
            .map_or(END_TEXT, |i| 1 + i as u8),
    }
}

/// The path the writer gives a recording that started at `started_us`.
fn derived_path(dir: &Path, started_us: u64, id: &str) -> PathBuf {
    let mut p = dir.join(record::civil_day(started_us / 1_000_000));
    p.push(format!("{id}.{}", record::EXT));
    p
}

fn decision_bits<'a>(decisions: impl IntoIterator<Item = &'a str>) -> u8 {
    decisions
        .into_iter()
        .filter_map(|d| DECISIONS.iter().position(|k| *k == d))
        .fold(0, |bits, i| bits | 1 << i)
}

/// The 32 bytes of a hash written as 64 lowercase hex digits (the only
/// form that comes back the same when written out again).
fn seal_bytes(hash: &str) -> Option<[u8; 32]> {
    let lower = hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let mut out = [0u8; 32];
    (hash.len() == 64 && lower && hex::decode_to_slice(hash, &mut out).is_ok()).then_some(out)
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

/// Reads what `Packed::pack` wrote, front to back. The bytes are this
/// module's own, so a short read is a bug here: it reads as empty rather
/// than panicking in the recorder or the admin API.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn len(&mut self) -> usize {
        let mut n = 0usize;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.at) else { return 0 };
            self.at += 1;
            n |= ((b & 0x7f) as usize) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        n
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let end = self.at.saturating_add(n).min(self.bytes.len());
        let b = &self.bytes[self.at.min(end)..end];
        self.at = end;
        b
    }

    fn bytes(&mut self) -> &'a [u8] {
        let n = self.len();
        self.take(n)
    }

    fn text(&mut self) -> &'a str {
        std::str::from_utf8(self.bytes()).unwrap_or("")
    }
}

/// A recorded session, packed. See the module's comment for the layout.
#[derive(Debug)]
pub struct Packed(Box<[u8]>);

impl Packed {
    /// Packs `e`, whose recording would be under `dir`. `scratch` is
    /// reused between calls, so that the entry is allocated once, at its
    /// size.
    pub fn pack(e: &Entry, dir: &Path, scratch: &mut Vec<u8>) -> Packed {
        let end = e.end.as_deref();
        let code = end_code(end);
        let seal = e.seal_hash.as_deref().map(|h| (h, seal_bytes(h)));
        let path_stored = e.path != derived_path(dir, e.started_us, &e.id);
        let mut flags = 0;
        if e.live {
            flags |= LIVE;
        }
        match seal {
            Some((_, Some(_))) => flags |= SEAL_BYTES,
            Some((_, None)) => flags |= SEAL_TEXT,
            None => {}
        }
        if path_stored {
            flags |= PATH_STORED;
        }
        if e.ended_us.is_some() {
            flags |= HAS_ENDED;
        }
        let out = scratch;
        out.clear();
        out.extend_from_slice(&e.started_us.to_le_bytes());
        out.extend_from_slice(&e.ended_us.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&e.statements.to_le_bytes());
        out.extend_from_slice(&e.session.to_le_bytes());
        out.push(decision_bits(e.decisions.iter().map(|d| &**d)));
        out.push(flags);
        out.push(code);
        debug_assert_eq!(out.len(), HEADER);
        put_bytes(out, e.id.as_bytes());
        put_bytes(out, e.identity.as_bytes());
        put_bytes(out, e.target.as_bytes());
        put_bytes(out, e.client.as_bytes());
        put_len(out, e.roles.len());
        for r in e.roles.iter() {
            put_bytes(out, r.as_bytes());
        }
        if code == END_TEXT {
            put_bytes(out, end.unwrap_or("").as_bytes());
        }
        match seal {
            Some((_, Some(raw))) => out.extend_from_slice(&raw),
            Some((text, None)) => put_bytes(out, text.as_bytes()),
            None => {}
        }
        if path_stored {
            put_bytes(out, e.path.as_os_str().as_bytes());
        }
        let packed = Packed(Box::from(&out[..]));
        // A long entry (a stored path, long names) does not leave the
        // scratch buffer large for the life of the index.
        if out.capacity() > 4096 {
            *out = Vec::new();
        }
        packed
    }

    /// How many bytes this entry holds (its one allocation).
    #[cfg(test)]
    pub fn size(&self) -> usize {
        self.0.len()
    }

    fn flags(&self) -> u8 {
        self.0[FLAGS]
    }

    /// The packed bytes (as the index's file of finished sessions keeps
    /// them).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// An entry from bytes `pack` made.
    pub fn from_bytes(bytes: &[u8]) -> Packed {
        Packed(Box::from(bytes))
    }

    pub fn live(&self) -> bool {
        self.flags() & LIVE != 0
    }

    /// Brings a live session's statement count and decisions up to date,
    /// in place.
    pub fn set_counts(&mut self, statements: u64, decisions: &[Arc<str>]) {
        self.0[STATEMENTS..STATEMENTS + 8].copy_from_slice(&statements.to_le_bytes());
        self.0[DECIDED] = decision_bits(decisions.iter().map(|d| &**d));
    }

    /// The entry's fields, borrowed; `dir` is the recordings' directory it
    /// was packed with.
    pub fn view<'a>(&'a self, dir: &'a Path) -> View<'a> {
        view_of(&self.0, dir)
    }
}

/// The id of the entry packed in `b` (read without unpacking the rest).
pub fn id_of(b: &[u8]) -> &str {
    Reader { bytes: b, at: HEADER }.text()
}

/// The fields of the entry packed in `b`, borrowed; `dir` is the
/// recordings' directory it was packed with. Bytes too short for a header
/// (never made by `pack`) read as an empty entry.
pub fn view_of<'a>(b: &'a [u8], dir: &'a Path) -> View<'a> {
    let b: &[u8] = if b.len() >= HEADER { b } else { &[0; HEADER] };
    let u64_at = |at: usize| {
        let mut n = [0u8; 8];
        n.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(n)
    };
    let flags = b[FLAGS];
    let mut r = Reader { bytes: b, at: HEADER };
    let id = r.text();
    let identity = r.text();
    let target = r.text();
    let client = r.text();
    let role_count = r.len();
    let roles_at = r.at;
    for _ in 0..role_count {
        r.bytes();
    }
    let roles = &b[roles_at.min(r.at)..r.at];
    let end = match b[END] {
        END_NONE => None,
        END_TEXT => Some(r.text()),
        code => Some(known_end(code as usize - 1).unwrap_or("")),
    };
    let seal = if flags & SEAL_BYTES != 0 {
        Seal::Bytes(r.take(32))
    } else if flags & SEAL_TEXT != 0 {
        Seal::Text(r.text())
    } else {
        Seal::None
    };
    let stored_path = (flags & PATH_STORED != 0).then(|| Path::new(OsStr::from_bytes(r.bytes())));
    View {
        id,
        identity,
        target,
        client,
        roles,
        role_count,
        started_us: u64_at(STARTED),
        ended_us: (flags & HAS_ENDED != 0).then(|| u64_at(ENDED)),
        statements: u64_at(STATEMENTS),
        session: u32::from_le_bytes([b[SESSION], b[SESSION + 1], b[SESSION + 2], b[SESSION + 3]]),
        live: flags & LIVE != 0,
        decided: b[DECIDED],
        end,
        seal,
        stored_path,
        dir,
    }
}

#[derive(Debug, Clone, Copy)]
enum Seal<'a> {
    None,
    Bytes(&'a [u8]),
    Text(&'a str),
}

/// A packed entry's fields, borrowed: what the index's readers filter on
/// without unpacking every entry into an [`Entry`].
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub id: &'a str,
    pub identity: &'a str,
    pub target: &'a str,
    pub client: &'a str,
    roles: &'a [u8],
    role_count: usize,
    pub started_us: u64,
    pub ended_us: Option<u64>,
    pub statements: u64,
    pub session: u32,
    pub live: bool,
    decided: u8,
    pub end: Option<&'a str>,
    seal: Seal<'a>,
    stored_path: Option<&'a Path>,
    dir: &'a Path,
}

impl<'a> View<'a> {
    pub fn roles(&self) -> impl Iterator<Item = &'a str> {
        let mut r = Reader {
            bytes: self.roles,
            at: 0,
        };
        (0..self.role_count).map(move |_| r.text())
    }

    /// The decisions seen, in the admin API's order.
    pub fn decisions(&self) -> impl Iterator<Item = &'static str> {
        let bits = self.decided;
        DECISIONS
            .iter()
            .enumerate()
            .filter(move |(i, _)| bits & 1 << i != 0)
            .map(|(_, d)| *d)
    }

    pub fn has_decision(&self, d: &str) -> bool {
        self.decisions().any(|x| x == d)
    }

    /// The hash of the seal line as the writer made it.
    pub fn seal_hash(&self) -> Option<String> {
        match self.seal {
            Seal::None => None,
            Seal::Bytes(b) => Some(hex::encode(b)),
            Seal::Text(t) => Some(t.to_string()),
        }
    }

    /// The stored path, when it is not the derived one.
    pub fn stored_path(&self) -> Option<&'a Path> {
        self.stored_path
    }

    /// The recording's file.
    pub fn path(&self) -> PathBuf {
        match self.stored_path {
            Some(p) => p.to_path_buf(),
            None => derived_path(self.dir, self.started_us, self.id),
        }
    }

    /// What the admin API's list shows: the entry without its file's path
    /// and seal (left empty).
    pub fn summary(&self) -> Entry {
        Entry {
            id: self.id.to_string(),
            session: self.session,
            identity: self.identity.into(),
            roles: self.roles().map(Arc::from).collect(),
            target: self.target.into(),
            client: self.client.to_string(),
            started_us: self.started_us,
            ended_us: self.ended_us,
            end: self.end.map(Arc::from),
            statements: self.statements,
            decisions: self.decisions().map(Arc::from).collect(),
            live: self.live,
            path: PathBuf::new(),
            seal_hash: None,
        }
    }

    /// The entry, unpacked.
    pub fn to_entry(&self) -> Entry {
        Entry {
            path: self.path(),
            seal_hash: self.seal_hash(),
            ..self.summary()
        }
    }
}

//! What the data path sends the recorder: a session's opening, its client
//! and server frames as they went out, review outcomes, its close; admin
//! actions for the audit log. The recorder's threads (in the control plane)
//! turn these into chained records.

use crate::config::ResultsMode;
use crate::scan::Engine;
use std::sync::Arc;

/// A recording's key: unique in the process for as long as it runs (a
/// 64-bit count, never reused), unlike a session's id.
pub type RecordingKey = u64;

/// A session as the data path describes it at its start.
#[derive(Clone)]
pub struct OpenInfo {
    pub session: u32,
    pub identity: String,
    pub roles: Vec<String>,
    pub client: String,
    pub target: String,
    pub account: String,
    pub client_tls: bool,
    pub upstream_tls: bool,
    /// The database protocol the session speaks.
    pub protocol: crate::config::Protocol,
    pub worker: usize,
    pub results: ResultsMode,
    /// Masks client statements the way results are masked.
    pub engine: Option<Arc<Engine>>,
}

/// What the data path sends.
///
/// `session` in every session's event is the key of its recording
/// (`SessionRec::key`), unique in the process; the session's id, as
/// clients and the admin API know it, is `OpenInfo::session`.
pub enum Ev {
    Open {
        session: RecordingKey,
        t: u64,
        info: Box<OpenInfo>,
    },
    /// Client frames (Query, Parse, Bind, Execute, FunctionCall, Close,
    /// Sync) as sent upstream, and which of them gatehouse refused
    /// (index among these frames, SQLSTATE, message).
    Client {
        session: RecordingKey,
        t: u64,
        frames: Vec<u8>,
        refused: Vec<(u32, &'static str, String)>,
        /// What the data path resolved each Query, Execute and FunctionCall
        /// to (index among these frames).
        statements: Vec<super::StatementRef>,
    },
    /// Server frames as the client received them (masked); rows only in
    /// `full` mode, up to the caps. `masked`: values masked, by rule id.
    Server {
        session: RecordingKey,
        t: u64,
        frames: Vec<u8>,
        masked: Vec<(String, u64)>,
        gap_rows: u64,
        gap_bytes: u64,
    },
    /// A held statement's review ended.
    Review {
        session: RecordingKey,
        t: u64,
        review: String,
        outcome: String,
        reason: Option<String>,
        by: Vec<String>,
    },
    Close {
        session: RecordingKey,
        t: u64,
        end: &'static str,
        bytes_in: u64,
        bytes_out: u64,
        statements: u64,
        rows: u64,
        masked: u64,
    },
    /// An admin action, for the audit log.
    Audit {
        t: u64,
        who: String,
        roles: Vec<String>,
        action: String,
        object: String,
        outcome: String,
    },
    /// Flush, seal what is open as interrupted, and stop (shutdown).
    Stop,
}

impl Ev {
    /// The session an event belongs to (none: the audit log's, a stop).
    pub fn session(&self) -> Option<RecordingKey> {
        match self {
            Ev::Open { session, .. }
            | Ev::Client { session, .. }
            | Ev::Server { session, .. }
            | Ev::Review { session, .. }
            | Ev::Close { session, .. } => Some(*session),
            Ev::Audit { .. } | Ev::Stop => None,
        }
    }
}

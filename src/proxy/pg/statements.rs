//! What a session knows of the statements and portals on its upstream
//! connection: the payloads of the protocol tracker
//! (`wire::pg::track`), shared by enforcement and recording.

use crate::sql::Classification;
use crate::wire::pg::track::{NameEffect, Tracker};
use std::sync::Arc;

/// A prepared statement: its text and, under a policy, its classification.
#[derive(Debug)]
pub struct Stmt {
    pub sql: Arc<str>,
    pub class: Option<Arc<Classification>>,
}

/// A portal: the statement it was bound from, the Bind's parameters when a
/// reviewer may need them, and which Bind of the session made it. Cheap to
/// clone (no allocation per Bind).
#[derive(Debug, Clone)]
pub struct Portal {
    pub stmt: Arc<Stmt>,
    /// The Bind message after its two names (formats and values).
    pub params: Option<Arc<[u8]>>,
    /// The ordinal of the Bind among the session's recorded Bind messages
    /// (`u64::MAX`: one of gatehouse's own, or too large to record).
    pub bind: u64,
    /// The policy decided (and allowed) the statement at the Bind: running
    /// the portal is what was allowed.
    pub cleared: bool,
}

/// The session's tracker.
pub type StatementTracker = Tracker<Arc<Stmt>, Portal>;

/// Bind parameters are kept for reviews up to this size.
pub const MAX_KEPT_PARAMS: usize = 64 * 1024;

/// Names the statements of `c` create by SQL (`PREPARE`, `DECLARE`): the
/// protocol sees them, and gatehouse cannot say what they hold.
pub fn created_names(c: &Classification) -> Vec<NameEffect> {
    let mut out = Vec::new();
    for s in &c.statements {
        out.extend(
            s.prepared
                .iter()
                .map(|n| NameEffect::Statement(crate::wire::pg::track::name_key(n.as_bytes()).into())),
        );
        out.extend(
            s.cursors
                .iter()
                .map(|n| NameEffect::Portal(crate::wire::pg::track::name_key(n.as_bytes()).into())),
        );
    }
    out
}

/// Text shown for an Execute of a portal gatehouse cannot name.
pub const UNKNOWN_PORTAL: &str = "<a portal gatehouse cannot name>";

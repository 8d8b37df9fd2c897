//! The read-only upstream session and the read-write context gatehouse
//! opens for one approved statement.
//!
//! For a role that may not change anything without approval, the upstream
//! session starts with `default_transaction_read_only = on` (a startup
//! parameter, so `RESET ALL` and `DISCARD ALL` keep it). A statement the
//! classifier takes for a read but that writes (a view calling a writing
//! function, a trigger) then fails at the server with 25006.
//!
//! A write that a reviewer approved (or that a grant allows) must run
//! read-write, and nothing else may. So gatehouse opens the read-write
//! context only when the approved statement is alone in its group: a
//! simple Query without transaction control, or extended-protocol messages
//! up to Sync that hold one Bind (the approved one), one Execute (of its
//! portal) and otherwise only Parse, Describe, Close and Flush. Then,
//! with answers dropped:
//!
//! - outside a transaction block: `SET default_transaction_read_only =
//!   off` before the group (its transaction starts read-write), `SET
//!   TRANSACTION READ ONLY` right after the statement, and `SET
//!   default_transaction_read_only = on` right after the group, before
//!   anything of the client's; until the server confirms that one outside a
//!   block, every group the client starts is preceded by it again
//!   ([`MARK_RESTORE`]);
//! - inside a transaction block: `SET TRANSACTION READ WRITE` before the
//!   group, which the server accepts only while the block has run no query
//!   and no savepoint is open, and `SET TRANSACTION READ ONLY` right after
//!   the statement, at the block's top level, where no later `ROLLBACK TO
//!   SAVEPOINT` can undo it. A block that has run a query cannot become
//!   read-write: the client gets the server's refusal as a WARNING and the
//!   statement fails (25006 or 25P02).
//!
//! A held statement that is not alone in its group runs as it is, read-only,
//! and fails with 25006 once approved (the hold notice says so).

use super::statements::{StatementTracker, Stmt};
use crate::core::enforce::{Plan, TxStatus};
use crate::wire::pg::messages::Target;
use crate::wire::pg::track::Answers;
use crate::wire::pg::{self};
use std::sync::Arc;

/// A tracker mark: `default_transaction_read_only` set on again; the
/// server side clears [`super::ctx::SessionCtx::restore_read_only`] when
/// it ends outside a transaction block.
pub const MARK_RESTORE: u8 = 1;
/// A tracker mark: a statement that may change functions, operators or
/// types ended; the next statements read the catalog afresh.
pub const MARK_CATALOG: u8 = 2;

/// Statement and portal names gatehouse uses on the upstream connection;
/// clients may not use names with this prefix under a policy.
pub const RESERVED_PREFIX: &[u8] = b"gatehouse:";
const RO_NAME: &[u8] = b"gatehouse:ro";

const RESTORE_SQL: &str = "SET default_transaction_read_only = on";
const OPEN_SQL: &str = "SET default_transaction_read_only = off";
const OPEN_IN_BLOCK_SQL: &str = "SET TRANSACTION READ WRITE";
const CLOSE_SQL: &str = "SET TRANSACTION READ ONLY";

fn query(out: &mut Vec<u8>, tracker: &mut StatementTracker, sql: &str, answers: Answers, mark: u8) {
    pg::cstring_message(out, b'Q', sql.as_bytes());
    tracker.query(Vec::new(), answers, mark);
}

/// `SET default_transaction_read_only = on`, marked for confirmation.
pub fn restore(out: &mut Vec<u8>, tracker: &mut StatementTracker) {
    query(out, tracker, RESTORE_SQL, Answers::Dropped, MARK_RESTORE);
}

/// Before the approved statement's group. Returns whether the default was
/// turned off (it must be restored).
pub fn open(plan: &Plan, out: &mut Vec<u8>, tracker: &mut StatementTracker) -> bool {
    match plan.status {
        TxStatus::Idle => {
            query(out, tracker, OPEN_SQL, Answers::Dropped, 0);
            true
        }
        TxStatus::InBlock => {
            query(out, tracker, OPEN_IN_BLOCK_SQL, Answers::ErrorAsNotice, 0);
            false
        }
        // A failed block: the statement fails anyway.
        TxStatus::Failed => false,
    }
}

/// Right after the approved statement: a Query when it was a Query or a
/// FunctionCall (`tag` `Q`/`F`), inside its group otherwise.
pub fn close(tag: u8, plan: &Plan, out: &mut Vec<u8>, tracker: &mut StatementTracker) {
    if plan.status == TxStatus::Failed {
        return;
    }
    if matches!(tag, b'Q' | b'F') {
        query(out, tracker, CLOSE_SQL, Answers::Dropped, 0);
        return;
    }
    // Inside the group: a statement and portal of gatehouse's own, never
    // the unnamed ones (the client may bind its unnamed statement again).
    let stmt = Arc::new(Stmt {
        sql: Arc::from(CLOSE_SQL),
        class: None,
    });
    let at = pg::begin(out, b'P');
    out.extend_from_slice(RO_NAME);
    out.push(0);
    out.extend_from_slice(CLOSE_SQL.as_bytes());
    out.push(0);
    out.extend_from_slice(&0i16.to_be_bytes());
    pg::finish(out, at);
    tracker.parse(RO_NAME, stmt.clone(), Answers::Dropped);
    let at = pg::begin(out, b'B');
    out.extend_from_slice(RO_NAME);
    out.push(0);
    out.extend_from_slice(RO_NAME);
    out.push(0);
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    pg::finish(out, at);
    tracker.bind(
        RO_NAME,
        Some(super::statements::Portal {
            stmt,
            params: None,
            bind: u64::MAX,
            cleared: false,
        }),
        Answers::Dropped,
    );
    let at = pg::begin(out, b'E');
    out.extend_from_slice(RO_NAME);
    out.push(0);
    out.extend_from_slice(&0i32.to_be_bytes());
    pg::finish(out, at);
    tracker.execute(Vec::new(), Answers::Dropped, 0);
    for (kind, target) in [(b'P', Target::Portal), (b'S', Target::Statement)] {
        let at = pg::begin(out, b'C');
        out.push(kind);
        out.extend_from_slice(RO_NAME);
        out.push(0);
        pg::finish(out, at);
        tracker.close(target, RO_NAME, Answers::Dropped);
    }
}

/// Whether a statement or portal name is one gatehouse keeps for itself.
pub fn reserved(name: &[u8]) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pg::{peek_header, Side};

    fn tags(out: &[u8]) -> Vec<u8> {
        let mut rest = out;
        let mut v = Vec::new();
        while let Ok(Some(h)) = peek_header(rest, Side::Frontend, usize::MAX) {
            v.push(h.tag);
            rest = &rest[h.total_len..];
        }
        assert!(rest.is_empty(), "whole frames");
        v
    }

    #[test]
    fn the_context_is_opened_and_closed_per_status() {
        let mut t = StatementTracker::new();
        let mut out = Vec::new();
        let idle = Plan::new(TxStatus::Idle);
        assert!(idle.turned_default_off());
        assert!(open(&idle, &mut out, &mut t));
        close(b'E', &idle, &mut out, &mut t);
        restore(&mut out, &mut t);
        assert_eq!(tags(&out), b"QPBECCQ");
        assert_eq!(t.pending_len(), 7);
        let mut out = Vec::new();
        let failed = Plan::new(TxStatus::Failed);
        assert!(!open(&failed, &mut out, &mut t));
        close(b'Q', &failed, &mut out, &mut t);
        assert!(out.is_empty());
        assert!(reserved(b"gatehouse:ro") && !reserved(b"s1"));
    }
}

//! What both pumps of a session share: settings, counters, the recorder
//! link, and the protocol tracker that tells what the server holds.

use super::statements::StatementTracker;
use crate::core::registry::SessionHandle;
use crate::core::state::Shared;
use crate::scan::Engine;
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::task::Waker;

/// What both pumps of a session share.
pub struct SessionCtx<'a> {
    pub shared: &'a Shared,
    pub handle: &'a SessionHandle,
    pub engine: Option<&'a Engine>,
    pub refuse_client_secrets: bool,
    /// `max_prepared_statement_bytes`: the text the session's named
    /// statements may hold, over all of them.
    pub max_statement_bytes: usize,
    pub max_value: usize,
    /// Rows per result the policy allows this identity (`None`: no limit).
    pub max_rows: Option<u64>,
    /// The session's recorder link, when sessions are recorded.
    pub rec: Option<crate::record::link::SessionRec>,
    /// Which secret rules mask for this identity (`None`: all of them).
    pub applies: Option<Arc<[bool]>>,
    /// The identity's budget meter, when its policy sets a budget.
    pub meter: Option<Arc<crate::policy::Meter>>,
    /// Masked values per rule in this session.
    pub masked: RefCell<Vec<(u32, u64)>>,
    /// Statements from the client that carried a secret.
    pub client_secrets: Cell<u64>,
    /// Whether the connection may go back to the pool.
    pub track: PoolTrack,
    /// The server's statements and portals, and what is pending.
    pub tracker: RefCell<StatementTracker>,
    /// The server side read more answers (waits on the tracker look again).
    pub progress: Progress,
    /// Under a policy: what the server's reported parameters must stay.
    pub pinned: Pinned,
    /// gatehouse turned `default_transaction_read_only` off for an approved
    /// statement and has not seen it back on outside a transaction block:
    /// every group the client starts is preceded by setting it on again.
    pub restore_read_only: Cell<bool>,
    /// The upstream backend's process id and the one the client was given:
    /// a NotificationResponse from its own backend carries the client's,
    /// as it would direct (clients tell their own notifications by it).
    pub pids: (u32, u32),
}

/// Parameters the server reports that gatehouse pins under a policy.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pinned {
    /// `client_encoding`, `standard_conforming_strings`.
    pub lexical: bool,
    /// `default_transaction_read_only`.
    pub read_only: bool,
}

impl Pinned {
    /// Why a ParameterStatus the client's own statement caused breaks what
    /// gatehouse pinned, if it does.
    pub fn violation(&self, name: &[u8], value: &[u8]) -> Option<String> {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = String::from_utf8_lossy(value);
        let broken = match name.as_str() {
            "client_encoding" | "standard_conforming_strings" => {
                self.lexical && !crate::sql::lexical_value_ok(&name, &value)
            }
            "default_transaction_read_only" => self.read_only && !value.eq_ignore_ascii_case("on"),
            _ => false,
        };
        broken.then(|| format!("the server reports {name} = {value}, which gatehouse pins for this session"))
    }
}

/// What the relay knows of the upstream connection beyond the tracker, so
/// that a session that ends can leave it to the pool.
#[derive(Default)]
pub struct PoolTrack {
    /// The session may give its connection to the pool.
    pub on: bool,
    /// The client sent part of a message too large to follow.
    pub loose: Cell<bool>,
    /// 0 while relaying; 1 once the reset query is out (its answers are
    /// dropped, its ReadyForQuery stops the server pump); 2 if it failed.
    pub resetting: Cell<u8>,
    /// The server sent a FATAL (or PANIC) error: it is ending the
    /// connection, so a client that leaves after it was told is not the
    /// cause of the end.
    pub server_fatal: Cell<bool>,
}

/// A wake-up for a task waiting on the other pump's progress (both pumps
/// run in one task on one thread).
#[derive(Default)]
pub struct Progress {
    waker: Cell<Option<Waker>>,
    /// The server side stopped: nothing more will come.
    pub ended: Cell<bool>,
}

impl Progress {
    pub fn notify(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    pub fn end(&self) {
        self.ended.set(true);
        self.notify();
    }

    /// Waits for the next [`Self::notify`] (returns at once when ended).
    pub async fn changed(&self) {
        let mut registered = false;
        std::future::poll_fn(|cx| {
            if self.ended.get() || registered {
                return std::task::Poll::Ready(());
            }
            registered = true;
            self.waker.set(Some(cx.waker().clone()));
            std::task::Poll::Pending
        })
        .await
    }
}

impl SessionCtx<'_> {
    /// Whether the connection is idle: nothing pending, no transaction.
    pub fn idle(&self) -> bool {
        self.track.on && !self.track.loose.get() && self.tracker.borrow().idle()
    }

    pub fn count_masked(&self, rule: u32) {
        if let Some(e) = self.engine {
            e.count(rule);
        }
        if let Some(r) = &self.rec {
            r.count_masked(rule);
        }
        let mut m = self.masked.borrow_mut();
        match m.iter_mut().find(|(r, _)| *r == rule) {
            Some((_, n)) => *n += 1,
            None => m.push((rule, 1)),
        }
    }

    pub fn masked_total(&self) -> u64 {
        self.masked.borrow().iter().map(|(_, n)| n).sum()
    }

    /// `rule-id:count,…` for the session log.
    pub fn masked_summary(&self) -> String {
        let Some(e) = self.engine else { return String::new() };
        self.masked
            .borrow()
            .iter()
            .map(|(r, n)| format!("{}:{n}", e.rule_id(*r)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

//! Who may open a session, and where it goes: the gateway's own limits,
//! the identity behind the password, the target the client asked for, the
//! identity's reach and the upstream account its roles use. The same for
//! every protocol; each tells its client the refusal in its own terms.

use super::end::EndReason;
use super::sqlstate::SqlState;
use super::state::{AccountRt, Shared, State, TargetRt};
use crate::config::Protocol;
use crate::identity::Identity;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Why a session is not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: SqlState,
    pub message: String,
    pub end: EndReason,
}

impl Refusal {
    pub fn new(code: SqlState, message: impl Into<String>, end: EndReason) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            end,
        }
    }
}

/// A session that may open: who it is, the target and the upstream account.
pub struct Admitted<'s> {
    pub identity: Arc<Identity>,
    pub target: &'s TargetRt,
    pub account: &'s AccountRt,
}

/// Before anything of the client's is read: the gateway takes new
/// sessions (not draining, under `max_handshakes`).
pub fn open_to_new(shared: &Shared, over_limit: bool) -> Result<(), Refusal> {
    if shared.draining.load(Ordering::Acquire) {
        return Err(Refusal::new(
            SqlState::CANNOT_CONNECT_NOW,
            "gatehouse is shutting down",
            EndReason::Draining,
        ));
    }
    if over_limit {
        return Err(Refusal::new(
            SqlState::TOO_MANY_CONNECTIONS,
            "sorry, too many connections are logging in at once (max_handshakes); try again",
            EndReason::ConnectionLimit,
        ));
    }
    // No session runs unrecorded while recordings cannot be written.
    if shared.recorder.get().is_some_and(|r| r.health().refusing()) {
        return Err(Refusal::new(
            SqlState::IO_ERROR,
            crate::record::link::REFUSED_MESSAGE,
            EndReason::RecordingFailed,
        ));
    }
    Ok(())
}

/// Logged-in sessions, over all and by identity.
#[derive(Debug, Default)]
pub struct Seats {
    total: AtomicUsize,
    by_identity: Mutex<HashMap<String, usize>>,
}

impl Seats {
    /// Sessions of an identity now.
    pub fn of(&self, identity: &str) -> usize {
        self.by_identity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(identity)
            .copied()
            .unwrap_or(0)
    }
}

/// A logged-in session's place, counted against `max_connections` and its
/// identity's `max_sessions_per_identity` until dropped.
#[derive(Debug)]
pub struct Seat {
    seats: Arc<Seats>,
    /// The session's own identity (its name is the count's key).
    identity: Arc<Identity>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.seats.total.fetch_sub(1, Ordering::AcqRel);
        let mut m = self.seats.by_identity.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.identity.name) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.identity.name);
            }
        }
    }
}

/// After the login, before the session opens: a place under
/// `max_connections` and under the identity's `max_sessions_per_identity`
/// (one agent cannot take every session the gateway has).
pub fn seat(shared: &Shared, state: &State, identity: &Arc<Identity>) -> Result<Seat, Refusal> {
    let srv = &state.config.server;
    let seats = &shared.seats;
    let mut m = seats.by_identity.lock().unwrap_or_else(|p| p.into_inner());
    let mine = m.get(&identity.name).copied().unwrap_or(0);
    if mine >= srv.max_sessions_per_identity {
        return Err(Refusal::new(
            SqlState::TOO_MANY_CONNECTIONS,
            format!(
                "too many sessions for identity \"{}\" (max_sessions_per_identity = {})",
                identity.name, srv.max_sessions_per_identity
            ),
            EndReason::ConnectionLimit,
        ));
    }
    if seats.total.fetch_add(1, Ordering::AcqRel) >= srv.max_connections {
        seats.total.fetch_sub(1, Ordering::AcqRel);
        return Err(Refusal::new(
            SqlState::TOO_MANY_CONNECTIONS,
            "sorry, too many clients already",
            EndReason::ConnectionLimit,
        ));
    }
    *m.entry(identity.name.clone()).or_default() += 1;
    Ok(Seat {
        seats: seats.clone(),
        identity: Arc::clone(identity),
    })
}

/// The identity `password` proves for `user`, and where its session with
/// `database` goes.
pub fn admit<'s>(
    state: &'s State,
    protocol: Protocol,
    user: &str,
    password: &[u8],
    database: &str,
) -> Result<Admitted<'s>, Refusal> {
    let identity = state
        .auth
        .authenticate(user, password)
        .map_err(|e| Refusal::new(SqlState::INVALID_PASSWORD, e.to_string(), EndReason::AuthFailed))?;
    let Some(target) = state.select_target(protocol, database, user) else {
        return Err(Refusal::new(
            SqlState::INVALID_CATALOG_NAME,
            format!("database \"{database}\" is not served by this gateway"),
            EndReason::NoTarget,
        ));
    };
    if !identity.may_reach(&target.cfg.name) {
        return Err(Refusal::new(
            SqlState::INVALID_AUTHORIZATION,
            format!("identity \"{}\" may not reach database \"{database}\"", identity.name),
            EndReason::NotAllowed,
        ));
    }
    // Policy: whether the identity's roles reach the target, and as which
    // upstream account.
    let account_name = match &state.policy {
        Some(p) => p.reach(&identity.roles, &target.cfg.name).map_err(|why| {
            Refusal::new(
                SqlState::INVALID_AUTHORIZATION,
                format!("identity \"{}\": {why}", identity.name),
                EndReason::NotAllowed,
            )
        })?,
        None => None,
    };
    let Some(account) = state.account(target, account_name.as_deref()) else {
        return Err(Refusal::new(
            SqlState::INVALID_AUTHORIZATION,
            format!(
                "target \"{}\" has no upstream account for this identity",
                target.cfg.name
            ),
            EndReason::NoAccount,
        ));
    };
    Ok(Admitted {
        identity,
        target,
        account,
    })
}

/// The target and account a session was admitted to, found again by name
/// in the state it was admitted under. A session keeps that state for its
/// life, so they are there; should they not be, the session is refused
/// rather than run without the target's policy.
pub fn still_served<'s>(
    state: &'s State,
    target: &str,
    account: &str,
) -> Result<(&'s TargetRt, &'s AccountRt), Refusal> {
    let lost = || {
        Refusal::new(
            SqlState::CONNECTION_FAILURE,
            format!("target \"{target}\" is no longer served by this gateway"),
            EndReason::NoTarget,
        )
    };
    let t = state.targets.iter().find(|t| t.cfg.name == target).ok_or_else(lost)?;
    let a = t.accounts.iter().find(|a| &*a.name == account).ok_or_else(lost)?;
    Ok((t, a))
}

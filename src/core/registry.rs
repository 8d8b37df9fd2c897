//! Sessions known to the whole process: for CancelRequests that arrive on
//! any worker, for kills (admin, shutdown, idle timeout), and for listing.
//!
//! Touched at session open and close, on a cancel and on a kill: never per
//! frame. Sharded mutexes keep the open/close path short under storms.

use super::end::EndReason;
use super::sqlstate::SqlState;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use subtle::ConstantTimeEq;

const SHARDS: usize = 16;

/// Why a session was ended from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum KillReason {
    Admin = 1,
    Shutdown = 2,
    Idle = 3,
    /// A reload removed the identity, changed its token or its reach.
    Revoked = 4,
}

impl KillReason {
    fn from_u8(v: u8) -> Option<KillReason> {
        match v {
            1 => Some(KillReason::Admin),
            2 => Some(KillReason::Shutdown),
            3 => Some(KillReason::Idle),
            4 => Some(KillReason::Revoked),
            _ => None,
        }
    }

    /// The SQLSTATE and message the client gets.
    pub fn client_error(self) -> (SqlState, &'static str) {
        match self {
            KillReason::Admin => (
                SqlState::ADMIN_SHUTDOWN,
                "terminating connection due to administrator command",
            ),
            KillReason::Shutdown => (
                SqlState::ADMIN_SHUTDOWN,
                "terminating connection because gatehouse is shutting down",
            ),
            KillReason::Idle => (
                SqlState::IDLE_SESSION_TIMEOUT,
                "terminating connection due to idle timeout",
            ),
            KillReason::Revoked => (
                SqlState::ADMIN_SHUTDOWN,
                "terminating connection because a configuration reload removed this identity, changed its token or no longer lets it reach this target",
            ),
        }
    }

    /// How the session's end is logged and recorded.
    pub fn end(self) -> EndReason {
        match self {
            KillReason::Admin => EndReason::Killed,
            KillReason::Shutdown => EndReason::Shutdown,
            KillReason::Idle => EndReason::IdleTimeout,
            KillReason::Revoked => EndReason::Revoked,
        }
    }
}

/// The part of a session other threads may touch.
pub struct SessionHandle {
    killed: AtomicU8,
    /// A CancelRequest for this session arrived (a held statement gives up).
    cancel: std::sync::atomic::AtomicBool,
    pub last_active: AtomicU64,
    /// Statements and result rows so far, as the session last published
    /// them (at each read: for the live sessions list, not for accounting).
    pub statements: AtomicU64,
    pub rows: AtomicU64,
    client_fd: AtomicI32,
    upstream_fd: AtomicI32,
}

impl SessionHandle {
    pub fn new(client_fd: RawFd, now: u64) -> Arc<SessionHandle> {
        Arc::new(SessionHandle {
            killed: AtomicU8::new(0),
            cancel: std::sync::atomic::AtomicBool::new(false),
            last_active: AtomicU64::new(now),
            statements: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            client_fd: AtomicI32::new(client_fd),
            upstream_fd: AtomicI32::new(-1),
        })
    }

    pub fn set_upstream_fd(&self, fd: RawFd) {
        self.upstream_fd.store(fd, Ordering::Release);
    }

    /// Whether a cancel arrived since the last call.
    pub fn take_cancel(&self) -> bool {
        self.cancel.swap(false, Ordering::AcqRel)
    }

    pub fn killed(&self) -> Option<KillReason> {
        KillReason::from_u8(self.killed.load(Ordering::Acquire))
    }

    #[inline]
    pub fn touch(&self, now: u64) {
        self.last_active.store(now, Ordering::Relaxed);
    }

    /// Shuts the read side of both sockets so that the session's pending
    /// reads return at once. Called only while the registry holds the
    /// session, so the descriptors are still the session's own.
    fn kill(&self, reason: KillReason) -> bool {
        if self
            .killed
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        for fd in [
            self.client_fd.load(Ordering::Acquire),
            self.upstream_fd.load(Ordering::Acquire),
        ] {
            if fd >= 0 {
                // SAFETY: `fd` belongs to a session still in the registry; the
                // session removes itself (under the shard lock) before closing it.
                unsafe {
                    libc::shutdown(fd, libc::SHUT_RD);
                }
            }
        }
        true
    }
}

/// Where to send a cancel for a session's upstream backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelTarget {
    pub host: String,
    pub port: u16,
    pub pid: u32,
    pub secret: Vec<u8>,
}

/// What the registry knows of a session, for listings.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    /// Who the session runs as and what vouched for it (a reload checks
    /// that it still holds): the session's own shared value, not a copy.
    pub identity: Arc<crate::identity::Identity>,
    pub target: Arc<str>,
    /// Kept as the address it is (a text of its own would be another
    /// allocation per session, idle ones included).
    pub client: std::net::SocketAddr,
    pub worker: usize,
    /// Unix seconds.
    pub started_unix: u64,
    pub client_tls: bool,
}

impl SessionInfo {
    /// A session starting now.
    pub fn new(
        identity: &Arc<crate::identity::Identity>,
        target: &Arc<str>,
        client: std::net::SocketAddr,
        worker: usize,
        client_tls: bool,
    ) -> Self {
        SessionInfo {
            identity: Arc::clone(identity),
            target: Arc::clone(target),
            client,
            worker,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            client_tls,
        }
    }
}

/// Removes a session from the registry when dropped; a session drops it
/// before its sockets close, so a kill never touches a descriptor the
/// session no longer owns.
pub struct Registered<'a>(pub &'a Registry, pub u32);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.deregister(self.1);
    }
}

/// A session's entry; boxed in the table, so that the room a hash table
/// keeps for growth (up to as many empty slots as full ones) costs a
/// pointer a slot, not a whole entry: an idle client's share of the table
/// was 340 bytes.
struct Entry {
    secret: [u8; 4],
    handle: Arc<SessionHandle>,
    /// Boxed: a pooled session has none until its first message, and an
    /// idle one's entry is smaller without the room.
    cancel: Option<Box<CancelTarget>>,
    info: SessionInfo,
}

/// A random session id of gatehouse's own: at least 2^22, above any
/// process id Linux hands out (`pid_max` is at most 2^22), so a client
/// that terminates "its own backend" by this id never reaches another
/// session's server process; below 2^31 (a positive int4).
fn gateway_id() -> u32 {
    (rand::random::<u32>() & 0x7fff_ffff) | (1 << 22)
}

pub struct Registry {
    shards: Vec<Mutex<HashMap<u32, Box<Entry>>>>,
    /// Bumped when a session registers or leaves: a fleet compares it to
    /// know when to write the list again.
    generation: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            generation: AtomicU64::new(0),
        }
    }

    fn shard(&self, pid: u32) -> MutexGuard<'_, HashMap<u32, Box<Entry>>> {
        let m = &self.shards[pid as usize % SHARDS];
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a session under a fresh random key; returns the (pid, secret)
    /// the client is given as its BackendKeyData.
    pub fn register(
        &self,
        handle: Arc<SessionHandle>,
        info: SessionInfo,
        cancel: Option<CancelTarget>,
    ) -> (u32, [u8; 4]) {
        loop {
            let pid = gateway_id();
            let secret: [u8; 4] = rand::random();
            let mut s = self.shard(pid);
            if let std::collections::hash_map::Entry::Vacant(v) = s.entry(pid) {
                v.insert(Box::new(Entry {
                    secret,
                    handle,
                    cancel: cancel.map(Box::new),
                    info,
                }));
                self.generation.fetch_add(1, Ordering::Relaxed);
                return (pid, secret);
            }
        }
    }

    /// An id no session has now, for a greeting sent before the session
    /// registers (`register_as` still checks: another may take it first).
    pub fn unused_id(&self) -> u32 {
        loop {
            let pid = gateway_id();
            if !self.shard(pid).contains_key(&pid) {
                return pid;
            }
        }
    }

    /// Adds a session under the id its client was already given (a MySQL
    /// greeting carries it before the login); `None` when the id is taken.
    pub fn register_as(
        &self,
        pid: u32,
        handle: Arc<SessionHandle>,
        info: SessionInfo,
        cancel: Option<CancelTarget>,
    ) -> Option<[u8; 4]> {
        if pid == 0 {
            return None;
        }
        let secret: [u8; 4] = rand::random();
        let mut s = self.shard(pid);
        match s.entry(pid) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Box::new(Entry {
                    secret,
                    handle,
                    cancel: cancel.map(Box::new),
                    info,
                }));
                self.generation.fetch_add(1, Ordering::Relaxed);
                Some(secret)
            }
            std::collections::hash_map::Entry::Occupied(_) => None,
        }
    }

    /// A client's own `KILL` of a session by id: allowed only for a
    /// session of the same identity. `query`: ask the session to stop its
    /// running statement; otherwise end the session. Whether it was found.
    pub fn kill_own(&self, pid: u32, identity: &str, query: bool) -> bool {
        let s = self.shard(pid);
        let Some(e) = s.get(&pid) else { return false };
        if e.info.identity.name != identity {
            return false;
        }
        if query {
            e.handle.cancel.store(true, Ordering::Release);
            true
        } else {
            e.handle.kill(KillReason::Admin);
            true
        }
    }

    /// Records the upstream connection a session got after its login:
    /// where cancels go and which socket a kill shuts.
    pub fn set_upstream(&self, pid: u32, fd: RawFd, cancel: CancelTarget) {
        let mut s = self.shard(pid);
        if let Some(e) = s.get_mut(&pid) {
            e.handle.set_upstream_fd(fd);
            e.cancel = Some(Box::new(cancel));
        }
    }

    pub fn deregister(&self, pid: u32) {
        if self.shard(pid).remove(&pid).is_some() {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A number that changes whenever a session registers or leaves.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The upstream to cancel for a client's CancelRequest, if the key
    /// matches a live session exactly.
    pub fn cancel_target(&self, pid: u32, secret: &[u8]) -> Option<CancelTarget> {
        let s = self.shard(pid);
        let e = s.get(&pid)?;
        let ok: bool = e.secret.as_slice().ct_eq(secret).into();
        if ok {
            e.handle.cancel.store(true, Ordering::Release);
            e.cancel.as_deref().cloned()
        } else {
            None
        }
    }

    pub fn kill(&self, pid: u32, reason: KillReason) -> bool {
        let s = self.shard(pid);
        s.get(&pid).map(|e| e.handle.kill(reason)).unwrap_or(false)
    }

    pub fn kill_all(&self, reason: KillReason) -> usize {
        let mut n = 0;
        for m in &self.shards {
            let s = m.lock().unwrap_or_else(|p| p.into_inner());
            n += s.values().filter(|e| e.handle.kill(reason)).count();
        }
        n
    }

    /// Kills the sessions `doomed` picks (by what they are).
    pub fn kill_where(&self, reason: KillReason, doomed: impl Fn(&SessionInfo) -> bool) -> usize {
        let mut n = 0;
        for m in &self.shards {
            let s = m.lock().unwrap_or_else(|p| p.into_inner());
            n += s.values().filter(|e| doomed(&e.info) && e.handle.kill(reason)).count();
        }
        n
    }

    /// Kills sessions with no traffic for `idle_secs` or more.
    pub fn sweep_idle(&self, now: u64, idle_secs: u64) -> usize {
        let mut n = 0;
        for m in &self.shards {
            let s = m.lock().unwrap_or_else(|p| p.into_inner());
            for e in s.values() {
                if now.saturating_sub(e.handle.last_active.load(Ordering::Relaxed)) >= idle_secs
                    && e.handle.kill(KillReason::Idle)
                {
                    n += 1;
                }
            }
        }
        n
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn list(&self) -> Vec<(u32, SessionInfo)> {
        let mut out = Vec::new();
        for m in &self.shards {
            let s = m.lock().unwrap_or_else(|p| p.into_inner());
            out.extend(s.iter().map(|(k, e)| (*k, e.info.clone())));
        }
        out
    }

    /// As [`list`](Self::list), with each session's statements and rows so far.
    pub fn list_progress(&self) -> Vec<(u32, SessionInfo, u64, u64)> {
        let mut out = Vec::new();
        for m in &self.shards {
            let s = m.lock().unwrap_or_else(|p| p.into_inner());
            out.extend(s.iter().map(|(k, e)| {
                (
                    *k,
                    e.info.clone(),
                    e.handle.statements.load(Ordering::Relaxed),
                    e.handle.rows.load(Ordering::Relaxed),
                )
            }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> SessionInfo {
        SessionInfo {
            identity: Arc::new(crate::identity::Identity {
                name: "a".into(),
                roles: Vec::new(),
                targets: Vec::new(),
                source: crate::identity::IdentitySource::Oidc,
            }),
            target: "t".into(),
            client: "127.0.0.1:5432".parse().unwrap(),
            worker: 0,
            started_unix: 0,
            client_tls: false,
        }
    }

    #[test]
    fn cancel_needs_exact_key() {
        let r = Registry::new();
        let ct = CancelTarget {
            host: "h".into(),
            port: 1,
            pid: 9,
            secret: vec![1, 2, 3, 4],
        };
        let (pid, secret) = r.register(SessionHandle::new(-1, 0), info(), Some(ct.clone()));
        assert_eq!(r.cancel_target(pid, &secret), Some(ct.clone()));
        let mut wrong = secret;
        wrong[0] ^= 1;
        assert_eq!(r.cancel_target(pid, &wrong), None);
        assert_eq!(r.cancel_target(pid, &secret[..3]), None);
        r.deregister(pid);
        assert_eq!(r.cancel_target(pid, &secret), None);
        // A cancel target given after the login (a pooled session's, at
        // its first message) is found the same way.
        let (pid, secret) = r.register(SessionHandle::new(-1, 0), info(), None);
        assert_eq!(r.cancel_target(pid, &secret), None);
        r.set_upstream(pid, -1, ct.clone());
        assert_eq!(r.cancel_target(pid, &secret), Some(ct));
    }

    #[test]
    fn a_client_kills_only_sessions_of_its_own_identity() {
        let r = Registry::new();
        let h = SessionHandle::new(-1, 0);
        // `info()` is identity "a"'s.
        let (pid, _) = r.register(h.clone(), info(), None);
        assert!(!r.kill_own(pid, "b", false));
        assert!(!r.kill_own(pid, "b", true));
        assert_eq!(h.killed(), None);
        assert!(!h.take_cancel());
        assert!(r.kill_own(pid, "a", true));
        assert!(h.take_cancel());
        assert_eq!(h.killed(), None);
        assert!(r.kill_own(pid, "a", false));
        assert_eq!(h.killed(), Some(KillReason::Admin));
    }

    #[test]
    fn kill_once_and_idle_sweep() {
        let r = Registry::new();
        let h = SessionHandle::new(-1, 0);
        let (pid, _) = r.register(h.clone(), info(), None);
        assert_eq!(r.sweep_idle(5, 10), 0);
        assert_eq!(r.sweep_idle(10, 10), 1);
        assert_eq!(h.killed(), Some(KillReason::Idle));
        assert!(!r.kill(pid, KillReason::Admin), "first reason wins");
    }
}

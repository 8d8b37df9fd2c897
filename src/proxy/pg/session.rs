//! A client connection from accept to close: the startup phase (TLS,
//! protocol negotiation, authentication, target selection, upstream login)
//! and then the relay.

use super::conn::{Conn, ConnError};
use super::ctx::{Pinned, PoolTrack, SessionCtx};
use super::frontend::ClientSide;
use super::pool::{self, PoolKey};
use super::relay::{pump, Limits, PumpEnd, PumpError, Sink};
use super::scanning::ServerSide;
use super::stream::{Peeked, Stream};
use super::upstream::{self, UpstreamError};
use crate::core::catalog::CatalogKey;
use crate::core::enforce::CatalogAccess;
use crate::core::enforce::{BudgetGuard, Enforcer, Who};
use crate::core::registry::{CancelTarget, SessionHandle, SessionInfo};
use crate::core::state::{Shared, State};
use crate::identity::Identity;
use crate::record::events::{Ev, OpenInfo};
use crate::record::link::SessionRec;
use crate::wire::pg::{self, Side, StartupPacket};
use futures_util::lock::Mutex;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Buffer for a TLS client's first message after login.
const STARTUP_READ: usize = 64 * 1024;

/// How long a session's end waits for the pool's reset query.
const RESET_WAIT: Duration = Duration::from_secs(5);

/// Largest password message accepted (a JWT fits easily).
const MAX_PASSWORD_MESSAGE: usize = 64 * 1024;

/// After refusing a client's message, how long and how much gatehouse keeps
/// reading (and discarding) what the client still sends, so that the close
/// does not become a reset that destroys the error before the client reads it.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 64 << 20;

/// A statement's text with its secrets masked, for reviews and logs.
fn mask_text(engine: Option<&crate::scan::Engine>, sql: &str) -> String {
    match engine {
        Some(e) => e.mask_text(sql),
        None => sql.to_string(),
    }
}

/// A FATAL error for the client, with what the session log says.
struct Fatal {
    code: &'static str,
    message: String,
    detail: Option<String>,
    /// A complete ErrorResponse frame to send instead (an upstream's own).
    raw: Option<Vec<u8>>,
    end: &'static str,
}

impl Fatal {
    fn new(code: &'static str, message: impl Into<String>, end: &'static str) -> Fatal {
        Fatal {
            code,
            message: message.into(),
            detail: None,
            raw: None,
            end,
        }
    }

    fn frame(&self) -> Vec<u8> {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        let mut out = Vec::with_capacity(128);
        pg::error_message(
            &mut out,
            false,
            "FATAL",
            self.code,
            &self.message,
            self.detail.as_deref(),
            None,
        );
        out
    }
}

impl From<ConnError> for Fatal {
    fn from(e: ConnError) -> Fatal {
        match e {
            ConnError::Wire(w) => Fatal::new(w.sqlstate(), w.to_string(), "protocol-error"),
            ConnError::Closed => Fatal::new("08006", "connection closed", "client-disconnect"),
            ConnError::Io(e) => Fatal::new("08006", e.to_string(), "client-io-error"),
        }
    }
}

impl From<pg::WireError> for Fatal {
    fn from(e: pg::WireError) -> Fatal {
        ConnError::Wire(e).into()
    }
}

impl From<UpstreamError> for Fatal {
    fn from(e: UpstreamError) -> Fatal {
        match e {
            UpstreamError::Server { frame } => Fatal { raw: Some(frame), ..Fatal::new("08006", "upstream error", "upstream-refused") },
            e @ UpstreamError::Auth { .. } => Fatal {
                detail: Some("The gateway's credentials for this target were refused; the gateway's operator must fix the target's configuration.".into()),
                ..Fatal::new("08006", e.to_string(), "upstream-auth-failed")
            },
            e => Fatal::new("08006", e.to_string(), "upstream-unreachable"),
        }
    }
}

/// A session past its startup.
struct Ready {
    identity: Identity,
    target: String,
    account: String,
    /// `None` until the client's first message when the target pools.
    upstream: Option<upstream::Upstream>,
    /// The pool the upstream connection comes from and goes back to.
    pool: Option<PoolKey>,
    /// The server parameters the client was given at login.
    announced: Vec<u8>,
    pid: u32,
    handle: Arc<SessionHandle>,
}

/// Only the ParameterStatus frames of an upstream login's announcement.
fn parameters_only(announce: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(announce.len());
    let mut rest = announce;
    while let Ok(Some(h)) = pg::peek_header(rest, pg::Side::Backend, rest.len()) {
        if h.tag == b'S' {
            out.extend_from_slice(&rest[..h.total_len]);
        }
        rest = &rest[h.total_len..];
    }
    out
}

/// A flag one task sets and another awaits, on one thread.
#[derive(Default)]
struct Signal {
    set: Cell<bool>,
    waker: Cell<Option<std::task::Waker>>,
}

impl Signal {
    fn set(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.set.get() {
                std::task::Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            }
        })
        .await
    }
}

enum Handshake {
    /// A CancelRequest was served; nothing more on this connection.
    Cancel,
    Session(Box<Ready>),
}

/// Counts sessions open; dropping it closes the count.
struct ActiveGuard<'a>(&'a Shared);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Removes the session from the registry; dropped before its sockets close,
/// so a kill never touches a descriptor the session no longer owns.
struct RegGuard<'a>(&'a Shared, u32);

impl Drop for RegGuard<'_> {
    fn drop(&mut self) {
        self.0.registry.deregister(self.1);
    }
}

fn shutdown_fd(fd: RawFd, how: libc::c_int) {
    // SAFETY: `fd` is a socket this session still owns (its halves are alive
    // for the whole relay); shutdown does not close it.
    unsafe {
        libc::shutdown(fd, how);
    }
}

/// Serves one accepted client connection to its end.
pub async fn handle_connection(shared: Arc<Shared>, worker: usize, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let client_fd = tcp.as_raw_fd();
    let started = Instant::now();
    let state = shared.state.load_full();
    let count = shared.active.fetch_add(1, Ordering::AcqRel) + 1;
    let _active = ActiveGuard(&shared);
    let over_limit = count > state.config.server.max_connections;
    let mut conn = Conn::new(Stream::Plain(tcp));
    let hs_timeout = Duration::from_secs(state.config.server.handshake_timeout_secs);

    let outcome = monoio::time::timeout(
        hs_timeout,
        handshake(&shared, &state, &mut conn, peer, worker, over_limit, client_fd),
    )
    .await;
    let ready = match outcome {
        Ok(Ok(Handshake::Cancel)) => return,
        Ok(Ok(Handshake::Session(r))) => r,
        Ok(Err(f)) => {
            if f.end != "client-disconnect" && f.end != "client-io-error" {
                let _ = monoio::time::timeout(Duration::from_secs(1), conn.write_all(f.frame())).await;
            }
            crate::core::counters::WorkerCounters::add(&shared.counters.worker(worker).sessions_refused, 1);
            tracing::info!(target: "gatehouse::session", client = %peer, worker, end = f.end, reason = %f.message, "session refused");
            return;
        }
        Err(_) => {
            let f = Fatal::new(
                "08P01",
                format!("startup did not complete within {}s", hs_timeout.as_secs()),
                "handshake-timeout",
            );
            let _ = monoio::time::timeout(Duration::from_secs(1), conn.write_all(f.frame())).await;
            crate::core::counters::WorkerCounters::add(&shared.counters.worker(worker).sessions_refused, 1);
            tracing::info!(target: "gatehouse::session", client = %peer, worker, end = f.end, "session refused");
            return;
        }
    };
    let mut ready = *ready;
    let upstream = match ready.upstream.take() {
        Some(up) => up,
        None => match attach(&shared, &state, &mut conn, &mut ready, client_fd).await {
            Ok(up) => up,
            Err(f) => {
                end_unattached(&shared, &state, conn, ready, f, peer, worker, started).await;
                return;
            }
        },
    };
    // Boxed: only sessions past their first message carry the relay's state.
    Box::pin(relay(
        &shared, &state, conn, ready, upstream, peer, worker, client_fd, started,
    ))
    .await;
}

/// Waits for the client's first message, then gives the session its
/// upstream connection: a kept one from the pool or a new login. An idle
/// client holds no upstream connection and no relay buffer meanwhile.
async fn attach(
    shared: &Shared,
    state: &State,
    conn: &mut Conn,
    ready: &mut Ready,
    client_fd: RawFd,
) -> Result<upstream::Upstream, Fatal> {
    if conn.buf.is_empty() {
        if let Stream::Plain(tcp) = &conn.stream {
            conn.buf = Vec::new();
            tcp.readable(false)
                .await
                .map_err(|e| Fatal::new("08006", e.to_string(), "client-io-error"))?;
            if ready.handle.killed().is_none() {
                match super::stream::peek(client_fd) {
                    Peeked::Eof => return Err(Fatal::new("08006", "connection closed", "client-disconnect")),
                    // Goodbye before a first statement: no upstream needed.
                    Peeked::Byte(b'X') => return Err(Fatal::new("08006", "terminated", "client-terminate")),
                    _ => {}
                }
            }
        } else {
            conn.fill(STARTUP_READ).await?;
        }
    }
    if conn.buf.first() == Some(&b'X') {
        return Err(Fatal::new("08006", "terminated", "client-terminate"));
    }
    if let Some(reason) = ready.handle.killed() {
        let (code, message) = reason.client_error();
        return Err(Fatal::new(code, message, reason.as_str()));
    }
    let lost = || {
        Fatal::new(
            "08006",
            format!("target \"{}\" is no longer served by this gateway", ready.target),
            "no-target",
        )
    };
    let target = state
        .targets
        .iter()
        .find(|t| t.cfg.name == ready.target)
        .ok_or_else(lost)?;
    let account = target
        .accounts
        .iter()
        .find(|a| a.name == ready.account)
        .ok_or_else(lost)?;
    let key = ready.pool.as_ref().ok_or_else(lost)?;
    let up = match pool::take(key) {
        Some(up) => up,
        None => {
            let params: Vec<(&str, &str)> = key.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let up = upstream::connect(target, account, &params, state.config.server.max_message_bytes).await?;
            pool::remember(key, &parameters_only(&up.announce));
            up
        }
    };
    shared.registry.set_upstream(
        ready.pid,
        up.conn.stream.raw_fd(),
        CancelTarget {
            host: target.cfg.host.clone(),
            port: target.cfg.port,
            pid: up.backend_pid,
            secret: up.backend_secret.clone(),
        },
    );
    let params = parameters_only(&up.announce);
    if params != ready.announced {
        // The server's parameters changed since the login the client was
        // told about: the protocol lets them come at any time.
        conn.write_all(params).await?;
    }
    Ok(up)
}

/// Ends a session that never got its upstream connection: the client is
/// told why (if it is still there), and the session is recorded and logged.
#[allow(clippy::too_many_arguments)]
async fn end_unattached(
    shared: &Shared,
    state: &State,
    mut conn: Conn,
    ready: Ready,
    f: Fatal,
    peer: SocketAddr,
    worker: usize,
    started: Instant,
) {
    if !matches!(f.end, "client-disconnect" | "client-io-error" | "client-terminate") {
        let _ = monoio::time::timeout(Duration::from_secs(1), conn.write_all(f.frame())).await;
    }
    let client_tls = conn.stream.is_tls();
    if let Some(rec) = open_recording(shared, state, &ready, peer, worker, client_tls, false) {
        rec.push(Ev::Close {
            session: ready.pid,
            t: crate::record::now_us(),
            end: f.end,
            bytes_in: 0,
            bytes_out: 0,
            statements: 0,
            rows: 0,
            masked: 0,
        });
        rec.flush().await;
    }
    shared.registry.deregister(ready.pid);
    crate::core::counters::WorkerCounters::add(&shared.counters.worker(worker).sessions_closed, 1);
    tracing::info!(
        target: "gatehouse::session",
        session = ready.pid,
        identity = %ready.identity.name,
        target = %ready.target,
        client = %peer,
        worker,
        client_tls,
        statements = 0,
        duration_ms = started.elapsed().as_millis() as u64,
        end = f.end,
        reason = %f.message,
        "session close"
    );
}

/// The session's recorder link with its open record pushed, when sessions
/// are recorded.
fn open_recording(
    shared: &Shared,
    state: &State,
    ready: &Ready,
    peer: SocketAddr,
    worker: usize,
    client_tls: bool,
    upstream_tls: bool,
) -> Option<SessionRec> {
    let (r, cfg) = (shared.recorder.get()?, state.config.recording.as_ref()?);
    let identity = &ready.identity;
    let mode = match &state.policy {
        Some(p) => p.record_results(&identity.roles, cfg.results),
        None => cfg.results,
    };
    let info = OpenInfo {
        session: ready.pid,
        identity: identity.name.clone(),
        roles: identity.roles.clone(),
        client: peer.to_string(),
        target: ready.target.clone(),
        account: ready.account.clone(),
        client_tls,
        upstream_tls,
        worker,
        results: mode,
        engine: state.scan.clone(),
    };
    let rec = SessionRec::new(
        r.sender(ready.pid),
        ready.pid,
        mode,
        cfg.full_max_rows,
        cfg.full_max_bytes,
        super::capture::strip_rows,
    );
    rec.push(Ev::Open {
        t: crate::record::now_us(),
        info: Box::new(info),
    });
    Some(rec)
}

#[allow(clippy::too_many_arguments)]
async fn handshake(
    shared: &Shared,
    state: &State,
    conn: &mut Conn,
    peer: SocketAddr,
    worker: usize,
    over_limit: bool,
    client_fd: RawFd,
) -> Result<Handshake, Fatal> {
    let srv = &state.config.server;
    let mut tls = false;
    let packet = loop {
        let packet = conn.read_startup().await?;
        match pg::parse_startup(&packet)? {
            StartupPacket::SslRequest => {
                if tls {
                    return Err(Fatal::new("08P01", "SSLRequest received twice", "protocol-error"));
                }
                // Bytes after the SSLRequest would be read as if they came
                // through TLS (CVE-2021-23214): refuse them.
                if !conn.buf.is_empty() {
                    return Err(Fatal::new(
                        "08P01",
                        "received unencrypted data after SSL request",
                        "protocol-error",
                    ));
                }
                match &state.server_tls {
                    Some(cfg) => {
                        conn.write_all(b"S".to_vec()).await?;
                        let Stream::Plain(tcp) = std::mem::replace(&mut conn.stream, Stream::Closed) else {
                            return Err(Fatal::new("08P01", "TLS requested twice", "protocol-error"));
                        };
                        let fd = tcp.as_raw_fd();
                        let acceptor = monoio_rustls::TlsAcceptor::from(cfg.clone());
                        let s = acceptor.accept(tcp).await.map_err(|e| {
                            let e = std::io::Error::from(e);
                            Fatal::new("08P01", format!("TLS handshake failed: {e}"), "tls-failed")
                        })?;
                        conn.stream = Stream::ServerTls(Box::new(s), fd);
                        tls = true;
                    }
                    None => conn.write_all(b"N".to_vec()).await?,
                }
            }
            StartupPacket::GssEncRequest => conn.write_all(b"N".to_vec()).await?,
            StartupPacket::Cancel { pid, secret } => {
                let session = pid;
                match shared.registry.cancel_target(pid, secret) {
                    Some(CancelTarget {
                        host,
                        port,
                        pid,
                        secret,
                    }) => match upstream::send_cancel(&host, port, pid, &secret).await {
                        Ok(()) => {
                            crate::core::counters::WorkerCounters::add(&shared.counters.worker(worker).cancels, 1);
                            tracing::info!(target: "gatehouse::session", session, client = %peer, worker, "cancel request forwarded")
                        }
                        Err(e) => {
                            tracing::warn!(target: "gatehouse::session", session, client = %peer, worker, error = %e, "cancel could not reach the upstream")
                        }
                    },
                    None => {
                        tracing::info!(target: "gatehouse::session", client = %peer, worker, "cancel request for no known session ignored")
                    }
                }
                return Ok(Handshake::Cancel);
            }
            StartupPacket::Startup(_) => break packet,
        }
    };
    let StartupPacket::Startup(startup) = pg::parse_startup(&packet)? else {
        return Err(Fatal::new("08P01", "invalid startup packet", "protocol-error"));
    };

    let mut out = Vec::with_capacity(256);
    let unknown: Vec<&str> = startup
        .params
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if startup.minor > 0 || !unknown.is_empty() {
        pg::negotiate_protocol_version(&mut out, 0, &unknown);
    }
    if shared.draining.load(Ordering::Acquire) {
        return Err(Fatal::new("57P03", "gatehouse is shutting down", "draining"));
    }
    if over_limit {
        return Err(Fatal::new(
            "53300",
            "sorry, too many clients already",
            "connection-limit",
        ));
    }
    let Some(user) = startup.param("user").filter(|u| !u.is_empty()) else {
        return Err(Fatal::new(
            "28000",
            "no user name specified in startup packet",
            "auth-failed",
        ));
    };
    let database = startup.param("database").filter(|d| !d.is_empty()).unwrap_or(user);
    if startup
        .param("replication")
        .is_some_and(|r| r != "false" && r != "0" && r != "off")
    {
        return Err(Fatal::new(
            "0A000",
            "replication connections are not supported by gatehouse",
            "refused",
        ));
    }
    let loopback = peer.ip().to_canonical().is_loopback();
    if !(tls || loopback && srv.allow_cleartext_on_loopback) {
        let hint = if state.server_tls.is_some() {
            "connect with sslmode=require"
        } else {
            "TLS is not configured on this gateway, and cleartext passwords are accepted only from loopback"
        };
        return Err(Fatal::new(
            "28000",
            format!("gatehouse accepts passwords only over TLS: {hint}"),
            "tls-required",
        ));
    }

    pg::auth_request(&mut out, 3, &[]);
    conn.write_all(std::mem::take(&mut out)).await?;
    let (tag, body) = conn.read_frame(Side::Frontend, MAX_PASSWORD_MESSAGE).await?;
    if tag != b'p' {
        return Err(Fatal::new(
            "08P01",
            format!("expected a password message, got message type 0x{tag:02x}"),
            "protocol-error",
        ));
    }
    let password = body.split(|&b| b == 0).next().unwrap_or(&[]);
    let identity = state
        .auth
        .authenticate(user, password)
        .map_err(|e| Fatal::new("28P01", e.to_string(), "auth-failed"))?;

    let Some(target) = state.select_target(database, user) else {
        return Err(Fatal::new(
            "3D000",
            format!("database \"{database}\" is not served by this gateway"),
            "no-target",
        ));
    };
    if !identity.may_reach(&target.cfg.name) {
        return Err(Fatal::new(
            "28000",
            format!("identity \"{}\" may not reach database \"{database}\"", identity.name),
            "not-allowed",
        ));
    }

    // Policy: whether the identity's roles reach the target, and as which
    // upstream account.
    let account_name = match &state.policy {
        Some(p) => p
            .reach(&identity.roles, &target.cfg.name)
            .map_err(|why| Fatal::new("28000", format!("identity \"{}\": {why}", identity.name), "not-allowed"))?,
        None => None,
    };
    let Some(account) = state.account(target, account_name.as_deref()) else {
        return Err(Fatal::new(
            "28000",
            format!(
                "target \"{}\" has no upstream account for this identity",
                target.cfg.name
            ),
            "no-account",
        ));
    };

    // Only parameters that cannot change who runs the session, what it may
    // do or how its statements are read; under a policy gatehouse adds the
    // values its classifier reads text with (and read-only for roles that
    // may not change anything without approval).
    let client_params =
        super::params::client_params(&startup.params).map_err(|e| Fatal::new("42501", e.to_string(), "refused"))?;
    let read_only = state.policy.as_ref().is_some_and(|p| p.read_only(&identity.roles));
    let passthrough = super::params::upstream_params(&client_params, state.policy.is_some(), read_only);
    // With a pool, the upstream connection waits for the client's first
    // message; the client is told the parameters the last login with the
    // same key announced. Without one (or before any login), log in now.
    let pool = (target.cfg.pool_size > 0)
        .then(|| PoolKey::new(state.generation, &target.cfg.name, &account.name, &passthrough));
    let (up, announced) = match pool.as_ref().and_then(pool::announce) {
        Some(a) => (None, a),
        None => {
            let up = upstream::connect(target, account, &passthrough, srv.max_message_bytes).await?;
            let params = parameters_only(&up.announce);
            if let Some(k) = &pool {
                pool::remember(k, &params);
            }
            (Some(up), params)
        }
    };

    let handle = SessionHandle::new(client_fd, shared.now());
    if let Some(up) = &up {
        handle.set_upstream_fd(up.conn.stream.raw_fd());
    }
    let info = SessionInfo {
        identity: identity.name.clone(),
        target: target.cfg.name.clone(),
        client_addr: peer.to_string(),
        worker,
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        client_tls: tls,
    };
    let cancel = up.as_ref().map(|up| CancelTarget {
        host: target.cfg.host.clone(),
        port: target.cfg.port,
        pid: up.backend_pid,
        secret: up.backend_secret.clone(),
    });
    let (pid, secret) = shared.registry.register(handle.clone(), info, cancel);

    pg::auth_request(&mut out, 0, &[]);
    match &up {
        // Notices of the login too.
        Some(up) => out.extend_from_slice(&up.announce),
        None => out.extend_from_slice(&announced),
    }
    pg::backend_key_data(&mut out, pid, &secret);
    pg::ready_for_query(&mut out, b'I');
    if let Err(e) = conn.write_all(out).await {
        shared.registry.deregister(pid);
        return Err(e.into());
    }
    crate::core::counters::WorkerCounters::add(&shared.counters.worker(worker).sessions_opened, 1);
    tracing::info!(
        target: "gatehouse::session",
        session = pid,
        identity = %identity.name,
        roles = %identity.roles.join(","),
        target = %target.cfg.name,
        account = %account.name,
        client = %peer,
        worker,
        client_tls = tls,
        upstream = if up.is_some() { "connected" } else { "at first message" },
        "session open"
    );
    Ok(Handshake::Session(Box::new(Ready {
        identity,
        target: target.cfg.name.clone(),
        account: account.name.clone(),
        upstream: up,
        pool,
        announced,
        pid,
        handle,
    })))
}

/// Half-closes the client's socket and discards its input until it closes,
/// within [`LINGER_TIME`] and [`LINGER_MAX_BYTES`]. Closing a socket with
/// unread input sends a reset, and a client still writing (say, the rest of a
/// message over the size limit) would lose the ErrorResponse sent just before.
async fn linger(r: &mut super::relay::Reader, client_fd: RawFd) {
    shutdown_fd(client_fd, libc::SHUT_WR);
    let drain = async {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut total = 0;
        while total < LINGER_MAX_BYTES {
            buf.clear();
            let (res, b) = r.read(buf).await;
            buf = b;
            match res {
                Ok(n) if n > 0 => total += n,
                _ => break,
            }
        }
    };
    let _ = monoio::time::timeout(LINGER_TIME, drain).await;
}

/// Writes a frame of gatehouse's own, unless the peer is in the middle of a
/// streamed frame: the protocol cannot carry it there, so the caller's
/// close is all the peer gets (as when a server dies mid-message).
/// Returns whether the frame went out.
async fn write_frame(w: &Mutex<super::relay::Writer>, mid_frame: &Cell<bool>, frame: Vec<u8>) -> bool {
    let mut w = w.lock().await;
    if mid_frame.get() {
        return false;
    }
    let fut = async {
        let (res, _) = w.write_all(frame).await;
        res.is_ok() && monoio::io::AsyncWriteRent::flush(&mut *w).await.is_ok()
    };
    monoio::time::timeout(Duration::from_secs(2), fut)
        .await
        .unwrap_or(false)
}

#[allow(clippy::too_many_arguments)]
async fn relay(
    shared: &Shared,
    state: &State,
    conn: Conn,
    ready: Ready,
    upstream: upstream::Upstream,
    peer: SocketAddr,
    worker: usize,
    client_fd: RawFd,
    started: Instant,
) {
    let srv = &state.config.server;
    let (cap, max_msg) = (srv.buffer_bytes, srv.max_message_bytes);
    let client_tls = conn.stream.is_tls();
    let upstream_tls = upstream.tls;
    let rec = open_recording(shared, state, &ready, peer, worker, client_tls, upstream_tls);
    if let Some(rec) = &rec {
        // The open record waits for room like a statement.
        rec.flush().await;
    }
    let Ready {
        identity,
        target,
        account: account_name,
        pool: pool_key,
        pid,
        handle,
        ..
    } = ready;
    let _relaying = super::relay::Relaying::enter();
    let upstream::Upstream {
        conn: uconn,
        announce,
        backend_pid,
        backend_secret,
        tls: up_tls,
        born,
    } = upstream;
    let upstream_fd = uconn.stream.raw_fd();
    let Conn {
        stream: cstream,
        buf: cbuf,
    } = conn;
    let Conn {
        stream: ustream,
        buf: ubuf,
    } = uconn;
    let client_plain = (!client_tls).then_some(client_fd);
    let upstream_plain = (!ustream.is_tls()).then_some(upstream_fd);
    let (mut cr, cw) = cstream.into_split();
    let (mut ur, uw) = ustream.into_split();
    let (cw, uw) = (Mutex::new(cw), Mutex::new(uw));
    let reg = RegGuard(shared, pid);

    let closing = Cell::new(false);
    let (client_mid, upstream_mid) = (Cell::new(false), Cell::new(false));
    let end: Cell<&'static str> = Cell::new("");
    let budget = state.policy.as_ref().and_then(|p| p.budget(&identity.roles));
    let read_only = state.policy.as_ref().is_some_and(|p| p.read_only(&identity.roles));
    let ctx = SessionCtx {
        shared,
        handle: &handle,
        engine: state.scan.as_deref(),
        refuse_client_secrets: state.config.scan.refuse_client_secrets,
        max_value: state.config.scan.max_value_bytes,
        max_rows: state.policy.as_ref().and_then(|p| p.max_rows(&identity.roles)),
        meter: budget.as_ref().map(|_| shared.budgets.meter(&identity.name)),
        applies: state.masking_for(&identity.roles),
        rec,
        masked: Default::default(),
        client_secrets: Cell::new(0),
        track: PoolTrack {
            on: pool_key.is_some(),
            ..Default::default()
        },
        tracker: Default::default(),
        progress: Default::default(),
        pinned: Pinned {
            lexical: state.policy.is_some(),
            read_only,
        },
        restore_read_only: Cell::new(false),
    };
    let track = &ctx.track;
    let reset_query = state
        .targets
        .iter()
        .find(|t| t.cfg.name == target)
        .map_or("DISCARD ALL", |t| t.cfg.pool_reset_query.as_str());
    let server_done = Signal::default();
    let server_stopped: Cell<Option<usize>> = Cell::new(None);
    let limits = Limits {
        buffer: cap,
        max_message: max_msg,
    };
    let who = Who {
        identity: identity.name.clone(),
        roles: identity.roles.clone(),
        target: target.clone(),
        session: pid,
    };
    let engine = state.scan.clone();
    let target_rt = state.targets.iter().find(|t| t.cfg.name == target);
    let account_rt = target_rt.and_then(|t| t.accounts.iter().find(|a| a.name == account_name));
    let enforcer = match (state.policy.clone(), target_rt, account_rt) {
        (Some(p), Some(target_rt), Some(account_rt)) => Some((p, target_rt, account_rt)),
        _ => None,
    }
    .map(|(p, target_rt, account_rt)| {
        let mask = Box::new(move |sql: &str| mask_text(engine.as_deref(), sql));
        let catalog = CatalogAccess {
            key: CatalogKey {
                generation: state.generation,
                target: target.clone(),
                account: account_name.clone(),
            },
            epoch: &shared.catalog_epoch,
            fetch: Box::new(move || Box::pin(super::catalog::fetch(target_rt, account_rt, max_msg))),
        };
        let mut e = Enforcer::new(p, &who, &shared.reviews, mask, catalog);
        let scheme = if state.config.admin.tls.is_some() {
            "https"
        } else {
            "http"
        };
        e.admin_url = state
            .config
            .notify
            .admin_url
            .clone()
            .or_else(|| state.config.admin.listen.as_ref().map(|a| format!("{scheme}://{a}")));
        if let (Some(limits), Some(meter)) = (budget.clone(), ctx.meter.clone()) {
            e.budget = Some(BudgetGuard {
                limits,
                meter,
                clock: &shared.coarse_now,
            });
        }
        e
    });
    let mut cs = ClientSide::new(&ctx, enforcer, (&cw, &client_mid, client_fd));
    let mut ss = ServerSide::new(&ctx);

    let c2s = async {
        let sink = Sink {
            w: &uw,
            plain_fd: upstream_plain,
            mid_frame: &upstream_mid,
        };
        let r = pump(&mut cr, sink, Side::Frontend, cbuf, limits, &mut cs).await;
        let first = !closing.replace(true);
        let mut refused = false;
        match (&r, handle.killed()) {
            (_, Some(reason)) => {
                let (code, msg) = reason.client_error();
                let mut f = Vec::new();
                pg::fatal(&mut f, code, msg);
                write_frame(&cw, &client_mid, f).await;
                end.set(reason.as_str());
            }
            (Ok(PumpEnd::Stopped { .. }), _) => end.set("client-terminate"),
            (Ok(PumpEnd::Eof { .. }), _) | (Err(PumpError::Read(_)), _) if first => end.set("client-disconnect"),
            (Err(PumpError::Protocol(e)), _) => {
                let mut f = Vec::new();
                pg::fatal(&mut f, e.sqlstate(), &format!("client sent an invalid message: {e}"));
                write_frame(&cw, &client_mid, f).await;
                end.set("protocol-error");
                refused = true;
            }
            (Err(PumpError::Write(_)), _) if first => end.set("upstream-lost"),
            _ => {}
        }
        // A connection left idle goes back to the pool once reset: the
        // reset's answers (dropped) end the server pump at a frame boundary.
        // A client that left half a message behind is not a clean end.
        let clean = matches!(r, Ok(PumpEnd::Eof { rest: 0 } | PumpEnd::Stopped { .. }));
        if first && clean && handle.killed().is_none() && ctx.idle() && !upstream_mid.get() {
            track.resetting.set(1);
            let mut q = Vec::with_capacity(32);
            pg::cstring_message(&mut q, b'Q', reset_query.as_bytes());
            ctx.tracker
                .borrow_mut()
                .query(Vec::new(), crate::wire::pg::track::Answers::Dropped, 0);
            if write_frame(&uw, &upstream_mid, q).await
                && monoio::time::timeout(RESET_WAIT, server_done.wait()).await.is_ok()
            {
                return;
            }
            track.resetting.set(2);
        }
        // Tell the server goodbye, then wake the other pump.
        let mut t = Vec::with_capacity(5);
        pg::terminate(&mut t);
        // A Terminate from the client went upstream already, unless the
        // session may pool (then the relay drops it).
        if track.on || !matches!(r, Ok(PumpEnd::Stopped { .. })) {
            write_frame(&uw, &upstream_mid, t).await;
        }
        shutdown_fd(upstream_fd, libc::SHUT_RDWR);
        if refused {
            linger(&mut cr, client_fd).await;
        }
    };
    let s2c = async {
        let sink = Sink {
            w: &cw,
            plain_fd: client_plain,
            mid_frame: &client_mid,
        };
        let r = pump(&mut ur, sink, Side::Backend, ubuf, limits, &mut ss).await;
        if let Ok(PumpEnd::Stopped { rest }) = r {
            server_stopped.set(Some(rest));
        }
        server_done.set();
        ctx.progress.end();
        if closing.replace(true) || handle.killed().is_some() {
            return;
        }
        match r {
            Ok(_) | Err(PumpError::Read(_)) => {
                let mut f = Vec::new();
                pg::error_message(
                    &mut f,
                    false,
                    "FATAL",
                    "08006",
                    &format!(
                        "the connection to target \"{target}\" was lost: the server closed the connection unexpectedly"
                    ),
                    None,
                    Some("The database server may have restarted or ended this session; reconnect to try again."),
                );
                write_frame(&cw, &client_mid, f).await;
                end.set("upstream-lost");
            }
            Err(PumpError::Protocol(e)) => {
                let mut f = Vec::new();
                pg::fatal(
                    &mut f,
                    e.sqlstate(),
                    &format!("target \"{target}\" sent a message gatehouse cannot pass on: {e}"),
                );
                write_frame(&cw, &client_mid, f).await;
                end.set("upstream-protocol-error");
            }
            Err(PumpError::Write(_)) => end.set("client-disconnect"),
            Err(PumpError::Refused(why)) => {
                // Unless part of a large value is already out (the protocol
                // cannot carry an error then), the client is told why.
                tracing::warn!(target: "gatehouse::session", session = pid, error = %why, end = why.end, "closing the session");
                let mut f = Vec::new();
                pg::fatal(&mut f, why.code, &why.message);
                write_frame(&cw, &client_mid, f).await;
                end.set(why.end);
            }
        }
        shutdown_fd(client_fd, libc::SHUT_RD);
    };
    futures_util::future::join(c2s, s2c).await;
    let (cs_bytes, cs_statements) = (cs.bytes, cs.statements);
    drop(cs);
    // Back to the pool: the reset answered, nothing more read, no kill.
    let keep = match pool_key.as_ref() {
        Some(key) if track.resetting.get() == 1 && server_stopped.get() == Some(0) && handle.killed().is_none() => {
            Some(key)
        }
        _ => None,
    };
    if let Some(key) = keep {
        let (cw, uw) = (cw.into_inner(), uw.into_inner());
        drop((cr, cw));
        match ur.reunite(uw) {
            Ok(stream) => {
                // Out of the registry first: a kill must not reach a socket
                // another session may get.
                shared.registry.deregister(pid);
                let limits = state
                    .targets
                    .iter()
                    .find(|t| t.cfg.name == target)
                    .map(|t| t.pool_limits());
                if let Some(limits) = limits {
                    let up = upstream::Upstream {
                        conn: Conn {
                            stream,
                            buf: Vec::new(),
                        },
                        announce,
                        backend_pid,
                        backend_secret,
                        tls: up_tls,
                        born,
                    };
                    pool::put(key, up, &limits);
                }
            }
            Err(_) => {
                tracing::warn!(target: "gatehouse::session", session = pid, "upstream connection halves did not match; not kept")
            }
        }
    }
    if let Some(r) = &ctx.rec {
        r.push(Ev::Close {
            session: pid,
            t: crate::record::now_us(),
            end: end.get(),
            bytes_in: cs_bytes,
            bytes_out: ss.bytes,
            statements: cs_statements,
            rows: ss.rows,
            masked: ctx.masked_total(),
        });
        r.flush().await;
    }
    drop(reg);
    let c = shared.counters.worker(worker);
    use crate::core::counters::WorkerCounters as W;
    W::add(&c.sessions_closed, 1);
    W::add(&c.bytes_in, cs_bytes);
    W::add(&c.bytes_out, ss.bytes);
    W::add(&c.statements, cs_statements);
    W::add(&c.rows, ss.rows);
    W::add(&c.masked, ctx.masked_total());
    W::add(&c.client_secrets, ctx.client_secrets.get());
    tracing::info!(
        target: "gatehouse::session",
        session = pid,
        identity = %identity.name,
        target = %target,
        client = %peer,
        worker,
        client_tls,
        bytes_in = cs_bytes,
        bytes_out = ss.bytes,
        statements = cs_statements,
        rows = ss.rows,
        masked = ctx.masked_total(),
        masked_rules = %ctx.masked_summary(),
        client_secrets = ctx.client_secrets.get(),
        duration_ms = started.elapsed().as_millis() as u64,
        end = end.get(),
        "session close"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![tag];
        f.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn only_parameter_status_frames_are_kept() {
        let tz = frame(b'S', b"TimeZone\0UTC\0");
        let enc = frame(b'S', b"client_encoding\0UTF8\0");
        let mut announce = tz.clone();
        announce.extend(frame(b'K', &[0, 0, 0, 7, 0, 0, 0, 9]));
        announce.extend(&enc);
        announce.extend(frame(b'Z', b"I"));
        assert_eq!(parameters_only(&announce), [tz.clone(), enc].concat());
        // A cut or garbled tail ends the walk without reading past it.
        let mut cut = tz.clone();
        cut.extend(&frame(b'S', b"DateStyle\0ISO\0")[..8]);
        assert_eq!(parameters_only(&cut), tz);
        let mut bad = tz.clone();
        bad.extend([b'S', 0, 0, 0, 1]);
        assert_eq!(parameters_only(&bad), tz);
        assert!(parameters_only(&[]).is_empty());
    }
}

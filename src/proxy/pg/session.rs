//! A client connection from accept to close: the startup (`startup`), the
//! upstream connection at the client's first message (from the pool or a
//! new login), the relay in both directions (`frontend` and `server_side`
//! judge what passes), and the end (`core::summary`), a pooled upstream
//! connection going back to its pool once reset.

use super::conn::Conn;
use super::ctx::{Pinned, PoolTrack, SessionCtx};
use super::fatal::{wire_sqlstate, Fatal};
use super::frontend::ClientSide;
use super::pool;
use super::relay::{pump, Limits, PumpEnd, PumpError, Sink};
use super::server_side::ServerSide;
use super::startup::{handshake, parameters_only, Handshake, Ready};
use super::stream::{Peeked, Stream};
use super::upstream;
use crate::core::admission;
use crate::core::catalog::CatalogKey;
use crate::core::end::EndReason;
use crate::core::enforce::CatalogAccess;
use crate::core::enforce::{BudgetGuard, Enforcer, Who};
use crate::core::registry::{CancelTarget, Registered};
use crate::core::sqlstate::SqlState;
use crate::core::state::{AccountRt, Shared, State, TargetRt};
use crate::core::summary::Summary;
use crate::record::events::{Ev, OpenInfo};
use crate::record::link::SessionRec;
use crate::wire::pg::{self, Side};
use futures_util::lock::Mutex;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Buffer for a TLS client's first message after login.
const STARTUP_READ: usize = 64 * 1024;

/// How long a session's end waits for the pool's reset query.
const RESET_WAIT: Duration = Duration::from_secs(5);

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

fn shutdown_fd(fd: RawFd, how: libc::c_int) {
    // SAFETY: `fd` is a socket this session still owns (its halves are alive
    // for the whole relay); shutdown does not close it.
    unsafe {
        libc::shutdown(fd, how);
    }
}

/// Serves one accepted client connection to its end.
///
/// The task spawned for a connection is allocated once at the size of
/// its largest state and kept for the connection's life, so an idle
/// client costs what the task holds while it waits for the first message.
/// That wait is all this future does itself: the login before it and the
/// session after it run boxed, each only for as long as it runs. (Not an
/// `async fn`: one keeps its arguments twice, as captures and as locals,
/// in every state.)
pub fn handle_connection(
    shared: Arc<Shared>,
    worker: usize,
    tcp: TcpStream,
    peer: SocketAddr,
) -> impl std::future::Future<Output = ()> + 'static {
    // The login's future is made here and boxed: the socket moves into it
    // instead of being kept in this task's own state for its whole life.
    let login = Box::pin(log_in(shared.clone(), worker, tcp, peer));
    async move {
        let (_, _active) = shared.enter();
        let Some(mut s) = login.await else {
            return;
        };
        let first = match s.ready.upstream {
            Some(_) => Ok(()),
            None => first_message(&mut s.conn, &s.ready, s.client_fd).await,
        };
        Box::pin(serve(&shared, s, first, peer, worker)).await;
    }
}

/// A client past its login, before its session runs.
struct LoggedIn {
    state: Arc<State>,
    conn: Conn,
    ready: Box<Ready>,
    client_fd: RawFd,
    started: Instant,
}

/// The client's login (TLS, authentication, admission and, for a target
/// that does not pool, the upstream login), within the handshake's time;
/// `None` when the connection ends there (refused, or a cancel request).
async fn log_in(shared: Arc<Shared>, worker: usize, tcp: TcpStream, peer: SocketAddr) -> Option<LoggedIn> {
    let shared = &*shared;
    // No-delay and keepalive come from the listener (`runtime`).
    let client_fd = tcp.as_raw_fd();
    let started = Instant::now();
    let state = shared.state.load_full();
    let (handshakes, in_handshake) = shared.enter_handshake();
    let over_limit = handshakes > state.config.server.max_handshakes;
    let mut conn = Conn::new(Stream::Plain(tcp));
    let hs_timeout = Duration::from_secs(state.config.server.handshake_timeout_secs);
    // A timer is boxed with what it times (monoio's is 640 bytes, aligned
    // to 128, which held by value would pad the whole future to that
    // alignment).
    let outcome = Box::pin(monoio::time::timeout(
        hs_timeout,
        handshake(shared, &state, &mut conn, peer, worker, over_limit, client_fd),
    ))
    .await;
    drop(in_handshake);
    let f = match outcome {
        Ok(Ok(Handshake::Cancel)) => return None,
        Ok(Ok(Handshake::Session(ready))) => {
            return Some(LoggedIn {
                state,
                conn,
                ready,
                client_fd,
                started,
            })
        }
        Ok(Err(f)) => f,
        Err(_) => Fatal::new(
            SqlState::PROTOCOL_VIOLATION,
            format!("startup did not complete within {}s", hs_timeout.as_secs()),
            EndReason::HandshakeTimeout,
        ),
    };
    if !f.end.client_gone() {
        // Boxed: its timer would pad this future to 128 bytes' alignment.
        Box::pin(tell(&mut conn, f.frame())).await;
    }
    crate::core::counters::WorkerCounters::add(&shared.counters.worker(worker).sessions_refused, 1);
    tracing::info!(target: "gatehouse::session", client = %peer, worker, end = f.end.as_str(), reason = %f.message, "session refused");
    None
}

/// The session from the client's first message on: its upstream
/// connection (kept by the login, or taken at the first message), then the
/// relay; or, when there is none to be had, the session's end.
async fn serve(shared: &Shared, s: LoggedIn, first: Result<(), Fatal>, peer: SocketAddr, worker: usize) {
    let LoggedIn {
        state,
        mut conn,
        mut ready,
        client_fd,
        started,
    } = s;
    // The target and account the session was admitted to, found once in
    // the state it was admitted under (the login found them there): the
    // upstream login and the relay's policy both need them, and a session
    // never runs without its policy because one could not be found.
    let attached = match (ready.upstream.is_some(), first) {
        // Gone (or killed) before a first message with no upstream yet.
        (false, Err(f)) => Err(f),
        _ => match admission::still_served(&state, &ready.target, &ready.account) {
            Err(refusal) => Err(Fatal::from(refusal)),
            Ok((target_rt, account_rt)) => match ready.upstream.take() {
                Some(up) => Ok(*up),
                None => attach(shared, (target_rt, account_rt), &state, &mut conn, &mut ready).await,
            }
            .map(|up| (up, (target_rt, account_rt))),
        },
    };
    match attached {
        Ok((upstream, admitted)) => {
            relay(
                shared, &state, conn, *ready, upstream, admitted, peer, worker, client_fd, started,
            )
            .await
        }
        Err(f) => end_unattached(shared, &state, conn, *ready, f, peer, worker, started).await,
    }
}

/// Tells a client that is being turned away why, giving the write a
/// second.
async fn tell(conn: &mut Conn, frame: Vec<u8>) {
    let _ = monoio::time::timeout(Duration::from_secs(1), conn.write_all(frame)).await;
}

/// Waits for the client's first message (or its going away) without a
/// read buffer: an idle client holds no upstream connection and no relay
/// buffer meanwhile.
async fn first_message(conn: &mut Conn, ready: &Ready, client_fd: RawFd) -> Result<(), Fatal> {
    if conn.buf.is_empty() {
        if let Stream::Plain(tcp) = &conn.stream {
            conn.buf = Vec::new();
            tcp.readable(false)
                .await
                .map_err(|e| Fatal::new(SqlState::CONNECTION_FAILURE, e.to_string(), EndReason::ClientIoError))?;
            if ready.handle.killed().is_none() {
                match super::stream::peek(client_fd) {
                    Peeked::Eof => {
                        return Err(Fatal::new(
                            SqlState::CONNECTION_FAILURE,
                            "connection closed",
                            EndReason::ClientDisconnect,
                        ))
                    }
                    // Goodbye before a first statement: no upstream needed.
                    Peeked::Byte(b'X') => {
                        return Err(Fatal::new(
                            SqlState::CONNECTION_FAILURE,
                            "terminated",
                            EndReason::ClientTerminate,
                        ))
                    }
                    _ => {}
                }
            }
        } else {
            Box::pin(conn.fill(STARTUP_READ)).await?;
        }
    }
    Ok(())
}

/// Gives a session its upstream connection at the client's first message:
/// a kept one from the pool or a new login.
async fn attach(
    shared: &Shared,
    (target, account): (&TargetRt, &AccountRt),
    state: &State,
    conn: &mut Conn,
    ready: &mut Ready,
) -> Result<upstream::Upstream, Fatal> {
    if conn.buf.first() == Some(&b'X') {
        return Err(Fatal::new(
            SqlState::CONNECTION_FAILURE,
            "terminated",
            EndReason::ClientTerminate,
        ));
    }
    if let Some(reason) = ready.handle.killed() {
        let (code, message) = reason.client_error();
        return Err(Fatal::new(code, message, reason.end()));
    }
    let Some(key) = ready.pool.as_ref() else {
        return Err(Fatal::new(
            SqlState::CONNECTION_FAILURE,
            "the session has no upstream connection",
            EndReason::UpstreamLost,
        ));
    };
    let up = match pool::take(key) {
        Some(up) => up,
        None => {
            let params: Vec<(&str, &str)> = key.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let up = Box::pin(upstream::connect(
                target,
                account,
                &params,
                state.config.server.max_message_bytes,
            ))
            .await?;
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
    if params[..] != ready.announced[..] {
        // The server's parameters changed since the login the client was
        // told about: the protocol lets them come at any time. (Boxed: a
        // write's state is larger than the rest of an idle session's wait.)
        Box::pin(conn.write_all(params)).await?;
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
    if !f.end.client_gone() {
        let _ = monoio::time::timeout(Duration::from_secs(1), conn.write_all(f.frame())).await;
    }
    let client_tls = conn.stream.is_tls();
    let rec = open_recording(shared, state, &ready, peer, worker, client_tls, false);
    shared.registry.deregister(ready.pid);
    Summary {
        session: ready.pid,
        identity: &ready.identity.name,
        target: &ready.target,
        client: peer,
        worker,
        client_tls,
        bytes_in: 0,
        bytes_out: 0,
        statements: 0,
        rows: 0,
        masked: 0,
        masked_rules: String::new(),
        client_secrets: 0,
        started,
        end: f.end,
        reason: Some(&f.message),
    }
    .close(shared, rec.as_ref())
    .await;
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
        target: ready.target.to_string(),
        account: ready.account.to_string(),
        client_tls,
        upstream_tls,
        protocol: crate::config::Protocol::Postgres,
        worker,
        results: mode,
        engine: state.scan.clone(),
    };
    let rec = SessionRec::new(
        r.sender(ready.pid),
        r.health(),
        mode,
        cfg.full_max_rows,
        cfg.full_max_bytes,
        super::capture::strip_rows,
    );
    rec.push(Ev::Open {
        session: rec.key,
        t: crate::record::now_us(),
        info: Box::new(info),
    });
    Some(rec)
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
    (target_rt, account_rt): (&TargetRt, &AccountRt),
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
    let reg = Registered(&shared.registry, pid);

    let closing = Cell::new(false);
    let (client_mid, upstream_mid) = (Cell::new(false), Cell::new(false));
    let end: Cell<EndReason> = Cell::new(EndReason::Open);
    let budget = state.policy.as_ref().and_then(|p| p.budget(&identity.roles));
    let read_only = state.policy.as_ref().is_some_and(|p| p.read_only(&identity.roles));
    let ctx = SessionCtx {
        shared,
        handle: &handle,
        engine: state.scan.as_deref(),
        refuse_client_secrets: state.config.scan.refuse_client_secrets,
        max_statement_bytes: state.config.server.max_prepared_statement_bytes,
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
        pids: (backend_pid, pid),
    };
    let track = &ctx.track;
    let reset_query = target_rt.cfg.pool_reset_query.as_str();
    let server_done = Signal::default();
    let server_stopped: Cell<Option<usize>> = Cell::new(None);
    let limits = Limits {
        buffer: cap,
        max_message: max_msg,
    };
    let who = Who {
        identity: identity.name.clone(),
        roles: identity.roles.clone(),
        target: target.to_string(),
        session: pid,
    };
    let engine = state.scan.clone();
    let enforcer = state.policy.clone().map(|p| {
        let mask = Box::new(move |sql: &str| mask_text(engine.as_deref(), sql));
        let catalog = CatalogAccess {
            key: CatalogKey {
                generation: state.generation,
                target: target.to_string(),
                account: account_name.to_string(),
            },
            epoch: &shared.catalog_epoch,
            fetch: Box::new(move || Box::pin(super::catalog::fetch(target_rt, account_rt, max_msg))),
        };
        let mut e = Enforcer::new(p, &who, &shared.reviews, mask, Some(catalog));
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
                clock: &shared.unix_now,
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
                pg::fatal(&mut f, code.code(), msg);
                write_frame(&cw, &client_mid, f).await;
                end.set(reason.end());
            }
            (Ok(PumpEnd::Stopped { .. }), _) => end.set(EndReason::ClientTerminate),
            // The server ended the connection with a FATAL error that went
            // to the client, which then left: the server's end.
            (Ok(PumpEnd::Eof { .. }), _) | (Err(PumpError::Read(_)), _) if first && track.server_fatal.get() => {
                end.set(EndReason::UpstreamLost)
            }
            (Ok(PumpEnd::Eof { .. }), _) | (Err(PumpError::Read(_)), _) if first => {
                end.set(EndReason::ClientDisconnect)
            }
            (Err(PumpError::Protocol(e)), _) => {
                let mut f = Vec::new();
                pg::fatal(
                    &mut f,
                    wire_sqlstate(e).code(),
                    &format!("client sent an invalid message: {e}"),
                );
                write_frame(&cw, &client_mid, f).await;
                end.set(EndReason::ProtocolError);
                refused = true;
            }
            (Err(PumpError::Write(_)), _) if first => end.set(EndReason::UpstreamLost),
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
                    SqlState::CONNECTION_FAILURE.code(),
                    &format!(
                        "the connection to target \"{target}\" was lost: the server closed the connection unexpectedly"
                    ),
                    None,
                    Some("The database server may have restarted or ended this session; reconnect to try again."),
                );
                write_frame(&cw, &client_mid, f).await;
                end.set(EndReason::UpstreamLost);
            }
            Err(PumpError::Protocol(e)) => {
                let mut f = Vec::new();
                pg::fatal(
                    &mut f,
                    wire_sqlstate(&e).code(),
                    &format!("target \"{target}\" sent a message gatehouse cannot pass on: {e}"),
                );
                write_frame(&cw, &client_mid, f).await;
                end.set(EndReason::UpstreamProtocolError);
            }
            Err(PumpError::Write(_)) => end.set(EndReason::ClientDisconnect),
            Err(PumpError::Refused(why)) => {
                // Unless part of a large value is already out (the protocol
                // cannot carry an error then), the client is told why.
                tracing::warn!(target: "gatehouse::session", session = pid, error = %why, end = why.end.as_str(), "closing the session");
                let mut f = Vec::new();
                pg::fatal(&mut f, why.code.code(), &why.message);
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
        Some(key)
            if track.resetting.get() == 1
                && server_stopped.get() == Some(0)
                && handle.killed().is_none()
                && !track.server_fatal.get() =>
        {
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
                pool::put(key, up, &target_rt.pool_limits());
            }
            Err(_) => {
                tracing::warn!(target: "gatehouse::session", session = pid, "upstream connection halves did not match; not kept")
            }
        }
    }
    drop(reg);
    Summary {
        session: pid,
        identity: &identity.name,
        target: &target,
        client: peer,
        worker,
        client_tls,
        bytes_in: cs_bytes,
        bytes_out: ss.bytes,
        statements: cs_statements,
        rows: ss.rows,
        masked: ctx.masked_total(),
        masked_rules: ctx.masked_summary(),
        client_secrets: ctx.client_secrets.get(),
        started,
        end: end.get(),
        reason: None,
    }
    .close(shared, ctx.rec.as_ref())
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a connection's task holds for its whole life: an idle client
    /// costs this (and its registry entry and login) while it waits. It was
    /// 1,224 bytes while the login and the relay were held in it.
    #[test]
    fn a_connections_own_task_state_stays_small() {
        // Without scanning: the engine's build is not what this measures.
        let config = format!("{}\n[scan]\nenabled = false\n", crate::config::tests::GOOD);
        let cfg = crate::config::Config::parse(&config, "t.toml", std::path::Path::new(".")).expect("config");
        let shared = Shared::new(State::build(cfg).expect("state"), 1);
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("address");
            let _client = std::net::TcpStream::connect(addr).expect("connect");
            let (tcp, peer) = listener.accept().await.expect("accept");
            let task = handle_connection(shared, 0, tcp, peer);
            let size = std::mem::size_of_val(&task);
            assert!(size <= 512, "a connection's task holds {size} bytes");
        });
    }
}

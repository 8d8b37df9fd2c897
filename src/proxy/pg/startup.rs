//! The startup phase of a PostgreSQL session: TLS and protocol
//! negotiation, the cancel request, the password (a gatehouse token or an
//! OIDC JWT), admission (`core::admission`), the startup parameters the
//! upstream gets, and the upstream login unless the target pools.

use super::conn::Conn;
use super::fatal::Fatal;
use super::pool::{self, PoolKey};
use super::stream::Stream;
use super::upstream;
use crate::core::admission::{self, Admitted};
use crate::core::end::EndReason;
use crate::core::registry::{CancelTarget, SessionHandle, SessionInfo};
use crate::core::sqlstate::SqlState;
use crate::core::state::{Shared, State};
use crate::identity::Identity;
use crate::wire::pg::{self, Side, StartupPacket};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

/// Largest password message accepted (a JWT fits easily).
const MAX_PASSWORD_MESSAGE: usize = 64 * 1024;

/// A session past its startup.
pub struct Ready {
    pub identity: Arc<Identity>,
    pub target: Arc<str>,
    pub account: Arc<str>,
    /// `None` until the client's first message when the target pools
    /// (boxed: a pooled session waits without its room).
    pub upstream: Option<Box<upstream::Upstream>>,
    /// The pool the upstream connection comes from and goes back to (the
    /// pool's own copy of the key when the client was told the pool's
    /// announcement).
    pub pool: Option<Arc<PoolKey>>,
    /// The server parameters the client was given at login (shared with
    /// the pool's copy when they came from it).
    pub announced: Arc<[u8]>,
    pub pid: u32,
    pub handle: Arc<SessionHandle>,
    /// Its place under `max_connections` and its identity's limit: held
    /// (never read) while the session lives, given back when dropped.
    #[allow(dead_code)]
    pub seat: admission::Seat,
}

/// Only the ParameterStatus frames of an upstream login's announcement.
pub fn parameters_only(announce: &[u8]) -> Vec<u8> {
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

pub enum Handshake {
    /// A CancelRequest was served; nothing more on this connection.
    Cancel,
    Session(Box<Ready>),
}

#[allow(clippy::too_many_arguments)]
pub async fn handshake(
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
                    return Err(Fatal::new(
                        SqlState::PROTOCOL_VIOLATION,
                        "SSLRequest received twice",
                        EndReason::ProtocolError,
                    ));
                }
                // Bytes after the SSLRequest would be read as if they came
                // through TLS (CVE-2021-23214): refuse them.
                if !conn.buf.is_empty() {
                    return Err(Fatal::new(
                        SqlState::PROTOCOL_VIOLATION,
                        "received unencrypted data after SSL request",
                        EndReason::ProtocolError,
                    ));
                }
                match &state.server_tls {
                    Some(cfg) => {
                        conn.write_all(b"S".to_vec()).await?;
                        let Stream::Plain(tcp) = std::mem::replace(&mut conn.stream, Stream::Closed) else {
                            return Err(Fatal::new(
                                SqlState::PROTOCOL_VIOLATION,
                                "TLS requested twice",
                                EndReason::ProtocolError,
                            ));
                        };
                        let fd = tcp.as_raw_fd();
                        let acceptor = monoio_rustls::TlsAcceptor::from(cfg.clone());
                        let s = acceptor.accept(tcp).await.map_err(|e| {
                            let e = std::io::Error::from(e);
                            Fatal::new(
                                SqlState::PROTOCOL_VIOLATION,
                                format!("TLS handshake failed: {e}"),
                                EndReason::TlsFailed,
                            )
                        })?;
                        conn.stream = Stream::ServerTls(Box::new(s), fd);
                        tls = true;
                    }
                    None => conn.write_all(b"N".to_vec()).await?,
                }
            }
            StartupPacket::GssEncRequest => conn.write_all(b"N".to_vec()).await?,
            StartupPacket::Cancel { pid, secret, forwarded } => {
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
                    None => match shared.peer_cancel.get().filter(|_| !forwarded) {
                        // Perhaps another instance's session: the fleet
                        // passes the key to the instance that has it.
                        Some(peers) => {
                            peers.forward(pid, secret);
                            tracing::info!(target: "gatehouse::session", session, client = %peer, worker, "cancel request for no session here passed to the fleet")
                        }
                        None => {
                            tracing::info!(target: "gatehouse::session", client = %peer, worker, "cancel request for no known session ignored")
                        }
                    },
                }
                return Ok(Handshake::Cancel);
            }
            StartupPacket::Startup(_) => break packet,
        }
    };
    let StartupPacket::Startup(startup) = pg::parse_startup(&packet)? else {
        return Err(Fatal::new(
            SqlState::PROTOCOL_VIOLATION,
            "invalid startup packet",
            EndReason::ProtocolError,
        ));
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
    admission::open_to_new(shared, over_limit)?;
    let Some(user) = startup.param("user").filter(|u| !u.is_empty()) else {
        return Err(Fatal::new(
            SqlState::INVALID_AUTHORIZATION,
            "no user name specified in startup packet",
            EndReason::AuthFailed,
        ));
    };
    let database = startup.param("database").filter(|d| !d.is_empty()).unwrap_or(user);
    if startup
        .param("replication")
        .is_some_and(|r| r != "false" && r != "0" && r != "off")
    {
        return Err(Fatal::new(
            SqlState::FEATURE_NOT_SUPPORTED,
            "replication connections are not supported by gatehouse",
            EndReason::Refused,
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
            SqlState::INVALID_AUTHORIZATION,
            format!("gatehouse accepts passwords only over TLS: {hint}"),
            EndReason::TlsRequired,
        ));
    }

    pg::auth_request(&mut out, 3, &[]);
    conn.write_all(std::mem::take(&mut out)).await?;
    let (tag, body) = conn.read_frame(Side::Frontend, MAX_PASSWORD_MESSAGE).await?;
    if tag != b'p' {
        return Err(Fatal::new(
            SqlState::PROTOCOL_VIOLATION,
            format!("expected a password message, got message type 0x{tag:02x}"),
            EndReason::ProtocolError,
        ));
    }
    let password = body.split(|&b| b == 0).next().unwrap_or(&[]);
    let Admitted {
        identity,
        target,
        account,
    } = admission::admit(state, crate::config::Protocol::Postgres, user, password, database)?;
    let seat = admission::seat(shared, state, &identity)?;

    // Only parameters that cannot change who runs the session, what it may
    // do or how its statements are read; under a policy gatehouse adds the
    // values its classifier reads text with (and read-only for roles that
    // may not change anything without approval).
    let client_params = super::params::client_params(&startup.params)
        .map_err(|e| Fatal::new(SqlState::INSUFFICIENT_PRIVILEGE, e.to_string(), EndReason::Refused))?;
    let read_only = state.policy.as_ref().is_some_and(|p| p.read_only(&identity.roles));
    let passthrough = super::params::upstream_params(&client_params, state.policy.is_some(), read_only);
    // With a pool, the upstream connection waits for the client's first
    // message; the client is told the parameters the last login with the
    // same key announced. Without one (or before any login), log in now.
    let key = (target.cfg.pool_size > 0)
        .then(|| PoolKey::new(state.generation, &target.cfg.name, &account.name, &passthrough));
    let (pool, up, announced) = match key.as_ref().and_then(pool::announce) {
        Some((key, announced)) => (Some(key), None, announced),
        None => {
            let up = upstream::connect(target, account, &passthrough, srv.max_message_bytes).await?;
            let params = parameters_only(&up.announce);
            if let Some(k) = &key {
                pool::remember(k, &params);
            }
            (key.map(Arc::new), Some(up), Arc::from(params))
        }
    };

    let handle = SessionHandle::new(client_fd, shared.now());
    if let Some(up) = &up {
        handle.set_upstream_fd(up.conn.stream.raw_fd());
    }
    let info = SessionInfo::new(&identity, &target.name, peer, worker, tls);
    let cancel = up.as_ref().map(|up| CancelTarget {
        host: target.cfg.host.clone(),
        port: target.cfg.port,
        pid: up.backend_pid,
        secret: up.backend_secret.clone(),
    });
    // A session that holds its own upstream connection from the login is
    // given the server's process id, so that what the client sees
    // (BackendKeyData, NotificationResponse, `pg_backend_pid()`,
    // `pg_terminate_backend`) agrees; one that gets its connection from
    // the pool at its first message gets an id of gatehouse's.
    let own = up
        .as_ref()
        .map(|u| u.backend_pid)
        .filter(|p| *p != 0 && *p <= 0x7fff_ffff);
    let (pid, secret) = match own.and_then(|p| {
        shared
            .registry
            .register_as(p, handle.clone(), info.clone(), cancel.clone())
            .map(|s| (p, s))
    }) {
        Some(registered) => registered,
        None => shared.registry.register(handle.clone(), info, cancel),
    };

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
        target: Arc::clone(&target.name),
        account: Arc::clone(&account.name),
        upstream: up.map(Box::new),
        pool,
        announced,
        pid,
        handle,
        seat,
    })))
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

//! The upstream side: gatehouse logs in to a MySQL/MariaDB target with
//! the account's held credentials (`wire::mysql::login` decides what to
//! send; this module does the I/O), over TLS as the target says, and
//! cancels a running statement with `KILL QUERY` on a second connection.

use super::conn::{MyConn, ReadError};
use super::errors::Fatal;
use crate::config::UpstreamTls;
use crate::core::end::EndReason;
use crate::core::sqlstate::SqlState;
use crate::core::state::{AccountRt, TargetRt};
use crate::proxy::stream::Stream;
use crate::wire::mysql::login::{Action, ClientLogin, Established, LoginError, LoginOptions, TlsWanted};
use crate::wire::mysql::packet::write_message;
use crate::wire::mysql::{caps, Command};
use monoio::net::TcpStream;
use std::net::ToSocketAddrs;
use std::time::Duration;

/// Largest message read during the login.
const MAX_LOGIN_MESSAGE: usize = 1 << 20;

/// Capabilities a client may ask of the upstream through gatehouse (the
/// others gatehouse does not offer, or sets itself).
const PASSED: u32 = caps::FOUND_ROWS
    | caps::LONG_FLAG
    | caps::INTERACTIVE
    | caps::MULTI_STATEMENTS
    | caps::MULTI_RESULTS
    | caps::PS_MULTI_RESULTS
    | caps::LOCAL_FILES;

/// A logged-in upstream connection.
pub struct Upstream {
    pub conn: MyConn,
    pub established: Established,
    pub tls: bool,
    /// When it logged in (a pool keeps it for the target's lifetime at most).
    pub born: std::time::Instant,
}

/// What the upstream login asks of the server for a client that asked for
/// `client_caps`: only what `PASSED` names, and `LOCAL_FILES` only when
/// `LOAD DATA LOCAL` may be asked for at all.
pub fn passed_capabilities(client_caps: u32, local_files: bool) -> u32 {
    let wanted = client_caps & PASSED;
    if local_files {
        wanted
    } else {
        wanted & !caps::LOCAL_FILES
    }
}

/// The collation the upstream login asks for (utf8mb4 when the client
/// named none gatehouse passes).
pub fn login_collation(collation: u8) -> u8 {
    if collation == 0 {
        45
    } else {
        collation
    }
}

fn unreachable(t: &TargetRt, reason: impl std::fmt::Display) -> Fatal {
    Fatal::new(
        SqlState::CONNECTION_FAILURE,
        format!("cannot reach target \"{}\": {reason}", t.cfg.name),
        EndReason::UpstreamUnreachable,
    )
}

async fn dial(t: &TargetRt) -> Result<TcpStream, Fatal> {
    let timeout = Duration::from_secs(t.cfg.connect_timeout_secs);
    let addrs: Vec<_> = (t.cfg.host.as_str(), t.cfg.port)
        .to_socket_addrs()
        .map_err(|e| unreachable(t, e))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        match monoio::time::timeout(timeout, TcpStream::connect_addr(a)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                crate::proxy::stream::keepalive(std::os::fd::AsRawFd::as_raw_fd(&s));
                return Ok(s);
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("timed out after {}s", timeout.as_secs()),
        }
    }
    Err(unreachable(t, last))
}

/// Logs in as `account`. `client_caps`: what the client asked for (only
/// what `PASSED` names reaches the server); `local_files`: whether
/// `LOAD DATA LOCAL` may be asked for at all.
pub async fn connect(
    t: &TargetRt,
    account: &AccountRt,
    client_caps: u32,
    collation: u8,
    local_files: bool,
) -> Result<Upstream, Fatal> {
    let tcp = dial(t).await?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    let mut conn = MyConn::new(Stream::Plain(tcp));
    let wanted = passed_capabilities(client_caps, local_files);
    let tls_wanted = match (t.cfg.tls, &t.tls) {
        (UpstreamTls::Disable, _) | (_, None) => TlsWanted::No,
        (UpstreamTls::Prefer, Some(_)) => TlsWanted::IfOffered,
        (UpstreamTls::Require | UpstreamTls::VerifyFull, Some(_)) => TlsWanted::Required,
    };
    let mut login = ClientLogin::new(LoginOptions {
        user: account.user.as_bytes().to_vec(),
        password: account.password.clone().unwrap_or_default().into_bytes(),
        database: Some(t.cfg.upstream_database().as_bytes().to_vec()),
        charset: login_collation(collation),
        capabilities: wanted,
        tls: tls_wanted,
        attributes: vec![(b"program_name".to_vec(), b"gatehouse".to_vec())],
    })
    .verified_tls(t.cfg.tls == UpstreamTls::VerifyFull);
    let login_err = |e: LoginError| match e {
        LoginError::Server { code, message, .. } => Fatal::new(
            if code == 1045 {
                SqlState::INVALID_AUTHORIZATION
            } else {
                SqlState::CONNECTION_FAILURE
            },
            format!("target \"{}\" refused gatehouse's login: {code} {message}", t.cfg.name),
            if code == 1045 {
                EndReason::UpstreamAuthFailed
            } else {
                EndReason::UpstreamRefused
            },
        ),
        other => Fatal::new(
            SqlState::CONNECTION_FAILURE,
            format!("target \"{}\": {other}", t.cfg.name),
            EndReason::UpstreamProtocolError,
        ),
    };
    let mut tls = false;
    loop {
        let (m, p) = conn.read_message(MAX_LOGIN_MESSAGE).await.map_err(|e| match e {
            ReadError::Wire(w) => login_err(LoginError::Protocol(w)),
            other => unreachable(t, other),
        })?;
        let mut action = login.on_message(m.first_seq, &p).map_err(login_err)?;
        loop {
            match action {
                Action::Send(bytes) => {
                    conn.write_all(bytes).await.map_err(|e| unreachable(t, e))?;
                    break;
                }
                Action::Read => break,
                Action::StartTls(bytes) => {
                    conn.write_all(bytes).await.map_err(|e| unreachable(t, e))?;
                    if !conn.pending().is_empty() {
                        return Err(login_err(LoginError::Refused("data before the TLS handshake")));
                    }
                    let Some(cfg) = &t.tls else {
                        return Err(login_err(LoginError::Refused("TLS without a configuration")));
                    };
                    let Stream::Plain(tcp) = std::mem::replace(&mut conn.stream, Stream::Closed) else {
                        return Err(login_err(LoginError::Refused("TLS started twice")));
                    };
                    let connector = monoio_rustls::TlsConnector::from(cfg.clone());
                    let s = connector.connect(t.server_name.clone(), tcp).await.map_err(|e| {
                        Fatal::new(
                            SqlState::CONNECTION_FAILURE,
                            format!(
                                "target \"{}\": TLS handshake failed: {}",
                                t.cfg.name,
                                std::io::Error::from(e)
                            ),
                            EndReason::UpstreamUnreachable,
                        )
                    })?;
                    conn.stream = Stream::ClientTls(Box::new(s), fd);
                    tls = true;
                    action = login.after_tls().map_err(login_err)?;
                }
                Action::Done(established) => {
                    return Ok(Upstream {
                        conn,
                        established,
                        tls,
                        born: std::time::Instant::now(),
                    })
                }
            }
        }
    }
}

/// Stops the statement running on upstream connection `connection_id`:
/// `KILL QUERY` from a connection of the same account.
pub async fn kill_query(t: &TargetRt, account: &AccountRt, connection_id: u32) -> Result<(), Fatal> {
    let mut up = connect(t, account, 0, 45, false).await?;
    let mut out = Vec::new();
    let mut p = vec![Command::Query.code()];
    p.extend_from_slice(format!("KILL QUERY {connection_id}").as_bytes());
    write_message(&mut out, 0, &p);
    up.conn.write_all(out).await.map_err(|e| unreachable(t, e))?;
    let _ = monoio::time::timeout(Duration::from_secs(5), up.conn.read_message(MAX_LOGIN_MESSAGE)).await;
    let mut out = Vec::new();
    write_message(&mut out, 0, &[Command::Quit.code()]);
    let _ = up.conn.write_all(out).await;
    Ok(())
}

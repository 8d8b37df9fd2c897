//! The upstream side of the startup: connect, TLS, authenticate with the
//! target's held credentials, collect what the server announces.

use super::conn::{Conn, ConnError};
use super::stream::Stream;
use crate::config::{UpstreamAuth, UpstreamTls};
use crate::core::state::{AccountRt, TargetRt};
use crate::wire::pg::{self, Cursor, Side};
use monoio::net::TcpStream;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use std::net::ToSocketAddrs;
use std::time::Duration;

/// Why the upstream could not be reached or logged into. The client sees the
/// message; none of it carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to target \"{target}\" ({addr}): {reason}")]
    Connect {
        target: String,
        addr: String,
        reason: String,
    },
    #[error("target \"{target}\" requires TLS but the server refused it")]
    TlsRefused { target: String },
    #[error("TLS with target \"{target}\" failed: {reason}")]
    Tls { target: String, reason: String },
    #[error("authentication with target \"{target}\" failed: {reason}")]
    Auth { target: String, reason: String },
    /// The server sent an ErrorResponse (e.g. the database does not exist):
    /// passed to the client as it is.
    #[error("upstream error")]
    Server { frame: Vec<u8> },
    #[error("target \"{target}\": {reason}")]
    Protocol { target: String, reason: String },
}

/// A logged-in upstream connection.
pub struct Upstream {
    pub conn: Conn,
    /// ParameterStatus and NoticeResponse frames to pass to the client, raw.
    pub announce: Vec<u8>,
    pub backend_pid: u32,
    pub backend_secret: Vec<u8>,
    pub tls: bool,
    /// When the login happened (for the pool's lifetime limit).
    pub born: std::time::Instant,
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 5);
    v.push(tag);
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn error_message(body: &[u8]) -> String {
    pg::error_fields(body)
        .find(|(c, _)| *c == b'M')
        .map(|(_, m)| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_else(|| "unknown error".into())
}

pub async fn connect(
    t: &TargetRt,
    account: &AccountRt,
    client_params: &[(&str, &str)],
    max_msg: usize,
) -> Result<Upstream, UpstreamError> {
    let name = t.cfg.name.clone();
    let addr_text = format!("{}:{}", t.cfg.host, t.cfg.port);
    let connect_err = |reason: String| UpstreamError::Connect {
        target: name.clone(),
        addr: addr_text.clone(),
        reason,
    };
    let timeout = Duration::from_secs(t.cfg.connect_timeout_secs);
    let addrs: Vec<_> = (t.cfg.host.as_str(), t.cfg.port)
        .to_socket_addrs()
        .map_err(|e| connect_err(e.to_string()))?
        .collect();
    let mut last = String::from("no address");
    let mut tcp = None;
    for a in addrs {
        match monoio::time::timeout(timeout, TcpStream::connect_addr(a)).await {
            Ok(Ok(s)) => {
                tcp = Some(s);
                break;
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("timed out after {}s", timeout.as_secs()),
        }
    }
    let tcp = tcp.ok_or_else(|| connect_err(last))?;
    let _ = tcp.set_nodelay(true);
    crate::proxy::stream::keepalive(std::os::fd::AsRawFd::as_raw_fd(&tcp));
    let mut conn = Conn::new(Stream::Plain(tcp));
    let io = |e: ConnError| connect_err(e.to_string());

    let mut tls = false;
    if let Some(cfg) = &t.tls {
        let mut req = Vec::with_capacity(8);
        pg::request_packet(&mut req, pg::SSL_REQUEST_CODE, &[]);
        conn.write_all(req).await.map_err(io)?;
        let answer = read_byte(&mut conn).await.map_err(io)?;
        match answer {
            b'S' => {
                if !conn.buf.is_empty() {
                    return Err(UpstreamError::Protocol {
                        target: name,
                        reason: "data after the TLS answer".into(),
                    });
                }
                let Stream::Plain(tcp) = conn.stream else {
                    return Err(UpstreamError::Protocol {
                        target: name,
                        reason: "TLS requested twice".into(),
                    });
                };
                let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
                let connector = monoio_rustls::TlsConnector::from(cfg.clone());
                let s = connector
                    .connect(t.server_name.clone(), tcp)
                    .await
                    .map_err(|e| UpstreamError::Tls {
                        target: name.clone(),
                        // monoio-rustls displays every error as "io error";
                        // the inner error says what failed (e.g. UnknownIssuer).
                        reason: std::io::Error::from(e).to_string(),
                    })?;
                conn = Conn::new(Stream::ClientTls(Box::new(s), fd));
                tls = true;
            }
            b'N' if t.cfg.tls == UpstreamTls::Prefer => {}
            b'N' => return Err(UpstreamError::TlsRefused { target: name }),
            b'E' => {
                return Err(UpstreamError::Protocol {
                    target: name,
                    reason: "the server answered the TLS request with an error".into(),
                })
            }
            _ => {
                return Err(UpstreamError::Protocol {
                    target: name,
                    reason: "bad answer to the TLS request".into(),
                })
            }
        }
    }

    let mut params: Vec<(&str, &str)> = vec![("user", &account.user), ("database", t.cfg.upstream_database())];
    params.extend(client_params.iter().copied());
    let mut out = Vec::with_capacity(256);
    pg::startup_message(&mut out, &params);
    conn.write_all(out).await.map_err(io)?;

    // A password in clear only to a server whose certificate was verified.
    let verified = tls && t.cfg.tls == UpstreamTls::VerifyFull;
    authenticate(&mut conn, t, account, max_msg, verified).await?;

    let mut announce = Vec::new();
    let mut key = None;
    loop {
        let (tag, body) = conn.read_frame(Side::Backend, max_msg).await.map_err(io)?;
        match tag {
            b'S' | b'N' => announce.extend_from_slice(&frame(tag, &body)),
            b'K' => {
                let mut c = Cursor::new(&body, "BackendKeyData");
                let pid = c.i32().map_err(|e| UpstreamError::Protocol {
                    target: name.clone(),
                    reason: e.to_string(),
                })? as u32;
                key = Some((pid, c.remaining().to_vec()));
            }
            b'Z' => break,
            b'E' => {
                return Err(UpstreamError::Server {
                    frame: frame(tag, &body),
                })
            }
            b'v' => {}
            other => {
                return Err(UpstreamError::Protocol {
                    target: name,
                    reason: format!("unexpected message 0x{other:02x} during startup"),
                })
            }
        }
    }
    let (backend_pid, backend_secret) = key.unwrap_or((0, Vec::new()));
    crate::core::counters::UPSTREAM_LOGINS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(Upstream {
        conn,
        announce,
        backend_pid,
        backend_secret,
        tls,
        born: std::time::Instant::now(),
    })
}

async fn read_byte(conn: &mut Conn) -> Result<u8, ConnError> {
    // Read exactly one byte: anything after it belongs to TLS.
    let buf = Vec::with_capacity(1);
    let (res, buf) = monoio::io::AsyncReadRent::read(&mut conn.stream, buf).await;
    match res? {
        0 => Err(ConnError::Closed),
        _ => Ok(buf[0]),
    }
}

/// Answers the server's authentication requests with the account's
/// password, each request only if the target's `auth` allows it: a server
/// (or whoever answered in its place, say after refusing TLS) that asks for
/// anything else gets no credential and the login fails. SCRAM must end
/// with the server's verified signature before its AuthenticationOk counts.
async fn authenticate(
    conn: &mut Conn,
    t: &TargetRt,
    account: &AccountRt,
    max_msg: usize,
    verified_tls: bool,
) -> Result<(), UpstreamError> {
    let name = &t.cfg.name;
    let auth_err = |reason: String| UpstreamError::Auth {
        target: name.clone(),
        reason,
    };
    let allowed = |a: UpstreamAuth| t.cfg.auth.contains(&a);
    let refuse = |asked: UpstreamAuth| {
        auth_err(format!(
            "the server asked for {} authentication, which this target's auth ({}) does not allow; no credential was sent",
            asked.name(),
            t.cfg.auth.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
        ))
    };
    // Which request the server made, once it made one.
    let mut asked: Option<UpstreamAuth> = None;
    let mut scram_proven = false;
    let io = |e: ConnError| auth_err(e.to_string());
    let password = || {
        account
            .password
            .as_deref()
            .ok_or_else(|| auth_err("the server asks for a password and none is configured".into()))
    };
    let mut scram: Option<ScramSha256> = None;
    loop {
        let (tag, body) = conn.read_frame(Side::Backend, max_msg).await.map_err(io)?;
        match tag {
            b'E' => {
                let msg = error_message(&body);
                return Err(auth_err(msg));
            }
            b'v' => continue,
            b'R' => {}
            other => return Err(auth_err(format!("unexpected message 0x{other:02x}"))),
        }
        let mut c = Cursor::new(&body, "Authentication");
        let code = c.i32().map_err(|e| auth_err(e.to_string()))?;
        let mut out = Vec::new();
        match code {
            0 => {
                return match asked {
                    None if allowed(UpstreamAuth::None) => Ok(()),
                    None => Err(refuse(UpstreamAuth::None)),
                    Some(UpstreamAuth::ScramSha256) if !scram_proven => Err(auth_err(
                        "the server ended SCRAM without proving it knows the password (no verified server signature)"
                            .into(),
                    )),
                    Some(_) => Ok(()),
                }
            }
            3 => {
                if !allowed(UpstreamAuth::Password) {
                    return Err(refuse(UpstreamAuth::Password));
                }
                if !verified_tls {
                    return Err(auth_err(
                        "the server asked for the password in clear on a connection whose TLS did not verify the server; nothing was sent".into(),
                    ));
                }
                asked = Some(UpstreamAuth::Password);
                pg::cstring_message(&mut out, b'p', password()?.as_bytes())
            }
            5 => {
                if !allowed(UpstreamAuth::Md5) {
                    return Err(refuse(UpstreamAuth::Md5));
                }
                asked = Some(UpstreamAuth::Md5);
                let salt: [u8; 4] = c
                    .bytes(4)
                    .map_err(|e| auth_err(e.to_string()))?
                    .try_into()
                    .map_err(|_| auth_err("bad salt".into()))?;
                let h =
                    postgres_protocol::authentication::md5_hash(account.user.as_bytes(), password()?.as_bytes(), salt);
                pg::cstring_message(&mut out, b'p', h.as_bytes());
            }
            10 => {
                if !allowed(UpstreamAuth::ScramSha256) {
                    return Err(refuse(UpstreamAuth::ScramSha256));
                }
                if asked.is_some() {
                    return Err(auth_err("the server started SASL a second time".into()));
                }
                asked = Some(UpstreamAuth::ScramSha256);
                let mut mechs = Vec::new();
                while let Ok(m) = c.cstr() {
                    if m.is_empty() {
                        break;
                    }
                    mechs.push(m.to_vec());
                }
                if !mechs.iter().any(|m| m == sasl::SCRAM_SHA_256.as_bytes()) {
                    return Err(auth_err(
                        "the server offers no SASL mechanism gatehouse supports".into(),
                    ));
                }
                let s = ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
                let mut body = Vec::new();
                body.extend_from_slice(sasl::SCRAM_SHA_256.as_bytes());
                body.push(0);
                body.extend_from_slice(&(s.message().len() as i32).to_be_bytes());
                body.extend_from_slice(s.message());
                pg::raw_message(&mut out, b'p', &body);
                scram = Some(s);
            }
            11 => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| auth_err("SASL continue without a start".into()))?;
                s.update(c.remaining()).map_err(|e| auth_err(format!("SCRAM: {e}")))?;
                pg::raw_message(&mut out, b'p', s.message());
            }
            12 => {
                let mut s = scram
                    .take()
                    .ok_or_else(|| auth_err("SASL final without a start".into()))?;
                s.finish(c.remaining())
                    .map_err(|e| auth_err(format!("SCRAM server proof: {e}")))?;
                scram_proven = true;
                continue;
            }
            other => return Err(auth_err(format!("unsupported authentication method {other}"))),
        }
        conn.write_all(out).await.map_err(io)?;
    }
}

/// Sends a CancelRequest for `pid`/`secret` to the upstream at host:port.
pub async fn send_cancel(host: &str, port: u16, pid: u32, secret: &[u8]) -> std::io::Result<()> {
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    let mut s = monoio::time::timeout(Duration::from_secs(5), TcpStream::connect_addr(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let mut rest = pid.to_be_bytes().to_vec();
    rest.extend_from_slice(secret);
    let mut pkt = Vec::with_capacity(16);
    pg::request_packet(&mut pkt, pg::CANCEL_REQUEST_CODE, &rest);
    let (res, _) = monoio::io::AsyncWriteRentExt::write_all(&mut s, pkt).await;
    res?;
    // The server closes the connection once it has acted on the request.
    let (_, _) = monoio::io::AsyncReadRent::read(&mut s, Vec::with_capacity(1)).await;
    Ok(())
}

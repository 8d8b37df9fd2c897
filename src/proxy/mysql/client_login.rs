//! The server side of a MySQL client's login: the greeting, TLS when the
//! client asks, and the gatehouse token checked without ever being stored
//! in clear.
//!
//! gatehouse keeps only a hash of each token, so it cannot check a
//! scramble (`mysql_native_password` needs SHA1(SHA1(password)) on the
//! server, and `caching_sha2_password`'s fast path SHA256(SHA256(password)):
//! either stored value would let its holder log in). It announces
//! `caching_sha2_password` and always asks for the full authentication,
//! which every current client and driver does without a flag:
//! - over TLS the client sends the token itself (encrypted by TLS);
//! - without TLS the client asks for gatehouse's RSA public key and sends
//!   the token encrypted to it (RSA-OAEP), never in clear.
//!
//! A client that offers another plugin is switched to this one. A client
//! that sends a password in clear on a connection without TLS (it believes
//! the connection is safe) is refused unless it is on loopback and
//! `allow_cleartext_on_loopback` is set, as for PostgreSQL. An OIDC JWT
//! is longer than RSA-OAEP can carry (214 bytes with a 2048-bit key):
//! JWTs need TLS.

use super::conn::{MyConn, ReadError};
use super::errors::{code, Fatal};
use super::rsa_key;
use crate::core::admission::{self, Admitted};
use crate::core::end::EndReason;
use crate::core::sqlstate::SqlState;
use crate::core::state::{Shared, State};
use crate::proxy::stream::Stream;
use crate::wire::mysql::auth::{CACHING_SHA2_PASSWORD, PERFORM_FULL_AUTHENTICATION};
use crate::wire::mysql::handshake::{
    AuthSwitch, ClientHello, Greeting, HandshakeResponse, AUTH_MORE_DATA_HEADER, SCRAMBLE_LEN,
};
use crate::wire::mysql::{caps, packet::write_message, status};
use std::net::SocketAddr;

/// Largest message read before the client is logged in.
const MAX_LOGIN_MESSAGE: usize = 128 * 1024;

/// A caching_sha2_password client asks for the server's public key with this byte.
const REQUEST_PUBLIC_KEY: u8 = 2;

/// The collation announced (utf8mb4_general_ci); the client says its own.
const DEFAULT_COLLATION: u8 = 45;

/// What gatehouse offers a client. Not offered: compression (refused),
/// DEPRECATE_EOF and session tracking (gatehouse reads results with EOF
/// packets and plain OK packets), query attributes.
pub const OFFERED: u32 = caps::LONG_PASSWORD
    | caps::FOUND_ROWS
    | caps::LONG_FLAG
    | caps::CONNECT_WITH_DB
    | caps::LOCAL_FILES
    | caps::PROTOCOL_41
    | caps::INTERACTIVE
    | caps::TRANSACTIONS
    | caps::SECURE_CONNECTION
    | caps::MULTI_STATEMENTS
    | caps::MULTI_RESULTS
    | caps::PS_MULTI_RESULTS
    | caps::PLUGIN_AUTH
    | caps::CONNECT_ATTRS
    | caps::PLUGIN_AUTH_LENENC_CLIENT_DATA;

/// Collations whose character set the classifier reads text in: utf8mb4,
/// utf8mb3, latin1, ascii and binary, none with a multibyte sequence that
/// holds a backslash. A client asking for another (gbk, big5, sjis, cp932,
/// gb18030, …) gets utf8mb4: otherwise the server could end a string
/// literal where the classifier does not.
fn safe_collation(id: u8) -> u8 {
    match id {
        5 | 8 | 11 | 15 | 31 | 33 | 45 | 46 | 47 | 48 | 49 | 63 | 65 | 76 | 83 | 94 | 192..=215 | 224..=247 => id,
        _ => DEFAULT_COLLATION,
    }
}

/// The version string clients see.
pub fn server_version() -> String {
    format!("8.0.35-gatehouse-{}", env!("CARGO_PKG_VERSION"))
}

/// A client that proved its identity.
pub struct LoggedIn<'s> {
    pub admitted: Admitted<'s>,
    /// Its place under `max_connections` and its identity's limit.
    pub seat: admission::Seat,
    /// Capabilities in force with the client.
    pub caps: u32,
    pub collation: u8,
    pub tls: bool,
    /// The sequence id of gatehouse's next packet (the OK that ends the login).
    pub seq: u8,
}

/// A nonce of printable bytes (clients read it up to a NUL).
fn nonce() -> Vec<u8> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..SCRAMBLE_LEN).map(|_| rng.gen_range(0x21u8..0x7f)).collect()
}

fn read_err(e: ReadError) -> Fatal {
    match e {
        ReadError::Closed => Fatal::new(
            SqlState::CONNECTION_FAILURE,
            "connection closed",
            EndReason::ClientDisconnect,
        ),
        ReadError::Io(e) => Fatal::new(SqlState::CONNECTION_FAILURE, e.to_string(), EndReason::ClientIoError),
        ReadError::Wire(e) => Fatal::with_code(
            code::HANDSHAKE,
            b"08S01",
            format!("bad handshake: {e}"),
            EndReason::ProtocolError,
        ),
    }
}

fn write_err(e: std::io::Error) -> Fatal {
    Fatal::new(SqlState::CONNECTION_FAILURE, e.to_string(), EndReason::ClientIoError)
}

fn protocol(message: impl Into<String>) -> Fatal {
    Fatal::with_code(code::HANDSHAKE, b"08S01", message, EndReason::ProtocolError)
}

/// Reads the client's next login message, which must carry sequence id
/// `*seq`; advances `*seq` past it.
async fn next(conn: &mut MyConn, seq: &mut u8) -> Result<Vec<u8>, (Fatal, u8)> {
    let read = conn.read_message(MAX_LOGIN_MESSAGE).await;
    in_sequence(read, seq)
}

/// [`next`], reading nothing past the message (see `MyConn::read_message_exact`).
async fn next_exact(conn: &mut MyConn, seq: &mut u8) -> Result<Vec<u8>, (Fatal, u8)> {
    let read = conn.read_message_exact(MAX_LOGIN_MESSAGE).await;
    in_sequence(read, seq)
}

fn in_sequence(
    read: Result<(crate::wire::mysql::Message, Vec<u8>), super::conn::ReadError>,
    seq: &mut u8,
) -> Result<Vec<u8>, (Fatal, u8)> {
    let (m, p) = read.map_err(|e| (read_err(e), *seq))?;
    if m.first_seq != *seq {
        return Err((
            Fatal::with_code(
                code::NET_PACKETS_OUT_OF_ORDER,
                b"08S01",
                format!("packets out of order: sequence id {}, expected {}", m.first_seq, *seq),
                EndReason::ProtocolError,
            ),
            *seq,
        ));
    }
    *seq = m.next_seq();
    Ok(p)
}

async fn send(conn: &mut MyConn, seq: &mut u8, payload: &[u8]) -> Result<(), (Fatal, u8)> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    *seq = write_message(&mut out, *seq, payload);
    conn.write_all(out).await.map_err(|e| (write_err(e), *seq))?;
    Ok(())
}

/// Runs the login to the point where the client is admitted. On failure,
/// the error and the sequence id its ERR packet must carry.
pub async fn accept<'s>(
    shared: &Shared,
    state: &'s State,
    conn: &mut MyConn,
    peer: SocketAddr,
    connection_id: u32,
    over_limit: bool,
) -> Result<LoggedIn<'s>, (Fatal, u8)> {
    // Refusals before the greeting go as the first packet, as servers do.
    admission::open_to_new(shared, over_limit).map_err(|r| (Fatal::from(r), 0))?;
    let nonce = nonce();
    let server_tls = state.server_tls.clone();
    let mut offered = OFFERED;
    if server_tls.is_some() {
        offered |= caps::SSL;
    }
    let greeting = Greeting {
        server_version: server_version().into_bytes(),
        connection_id,
        scramble: nonce.clone(),
        capabilities: offered,
        charset: DEFAULT_COLLATION,
        status: status::AUTOCOMMIT,
        mariadb_capabilities: 0,
        auth_plugin: CACHING_SHA2_PASSWORD.to_vec(),
    };
    let mut g = Vec::with_capacity(128);
    greeting
        .write(&mut g)
        .map_err(|e| (protocol(format!("cannot write the greeting: {e}")), 0))?;
    let mut seq = 0u8;
    send(conn, &mut seq, &g).await?;

    let mut tls = false;
    let mut hello = HandshakeResponse::parse(&next_exact(conn, &mut seq).await?)
        .map_err(|e| (protocol(format!("bad handshake: {e}")), seq))?;
    if let ClientHello::SslRequest { .. } = hello {
        let Some(cfg) = server_tls else {
            return Err((protocol("TLS is not configured on this gateway"), seq));
        };
        let Stream::Plain(tcp) = std::mem::replace(&mut conn.stream, Stream::Closed) else {
            return Err((protocol("TLS requested twice"), seq));
        };
        if !conn.pending().is_empty() {
            // Bytes after the SSL request would be read as plain text
            // inside the TLS session: a client (or a man in the middle)
            // injecting them is refused.
            return Err((protocol("data after the SSL request"), seq));
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
        let acceptor = monoio_rustls::TlsAcceptor::from(cfg);
        let s = acceptor.accept(tcp).await.map_err(|e| {
            let e = std::io::Error::from(e);
            (
                Fatal::new(
                    SqlState::PROTOCOL_VIOLATION,
                    format!("TLS handshake failed: {e}"),
                    EndReason::TlsFailed,
                ),
                seq,
            )
        })?;
        conn.stream = Stream::ServerTls(Box::new(s), fd);
        tls = true;
        hello = HandshakeResponse::parse(&next(conn, &mut seq).await?)
            .map_err(|e| (protocol(format!("bad handshake: {e}")), seq))?;
    }
    let ClientHello::Response(resp) = hello else {
        return Err((protocol("TLS requested twice"), seq));
    };
    if resp.capabilities & caps::COMPRESS != 0 {
        return Err((
            Fatal::new(
                SqlState::FEATURE_NOT_SUPPORTED,
                "the compressed protocol is not supported by gatehouse; connect without compression",
                EndReason::Refused,
            ),
            seq,
        ));
    }
    if resp.capabilities & caps::SSL != 0 && !tls {
        return Err((protocol("the client asked for TLS without an SSL request"), seq));
    }
    let user = String::from_utf8_lossy(&resp.user).into_owned();
    let Some(database) = resp.database.as_ref().filter(|d| !d.is_empty()) else {
        return Err((
            Fatal::with_code(
                code::NO_DB,
                b"3D000",
                "gatehouse needs a database to choose the target: name one when connecting (mariadb … DATABASE)",
                EndReason::NoTarget,
            ),
            seq,
        ));
    };
    let database = String::from_utf8_lossy(database).into_owned();

    // The token, by the full authentication of caching_sha2_password.
    let mut reply = resp.auth_response.clone();
    if resp.auth_plugin.as_deref() != Some(CACHING_SHA2_PASSWORD) {
        let mut sw = Vec::with_capacity(64);
        AuthSwitch {
            plugin: CACHING_SHA2_PASSWORD,
            data: &nonce,
        }
        .write(&mut sw)
        .map_err(|e| (protocol(e.to_string()), seq))?;
        send(conn, &mut seq, &sw).await?;
        reply = next(conn, &mut seq).await?;
    }
    let denied = |seq| {
        (
            Fatal::new(
                SqlState::INVALID_PASSWORD,
                format!("Access denied for user '{user}' (gatehouse token required as the password)"),
                EndReason::AuthFailed,
            ),
            seq,
        )
    };
    if reply.is_empty() {
        // An empty password: no token.
        return Err(denied(seq));
    }
    send(conn, &mut seq, &[AUTH_MORE_DATA_HEADER, PERFORM_FULL_AUTHENTICATION]).await?;
    let answer = next(conn, &mut seq).await?;
    let password: Vec<u8> = if tls {
        answer.strip_suffix(&[0]).unwrap_or(&answer).to_vec()
    } else if answer == [REQUEST_PUBLIC_KEY] {
        let pem = rsa_key::public_pem()
            .await
            .map_err(|e| (Fatal::new(SqlState::INTERNAL_ERROR, e, EndReason::AuthFailed), seq))?;
        let mut p = Vec::with_capacity(pem.len() + 1);
        p.push(AUTH_MORE_DATA_HEADER);
        p.extend_from_slice(pem.as_bytes());
        send(conn, &mut seq, &p).await?;
        let cipher = next(conn, &mut seq).await?;
        rsa_key::decrypt_password(&cipher, &nonce)
            .await
            .map_err(|_| denied(seq))?
    } else if let Some(password) = rsa_key::decrypt_pinned(&answer, &nonce) {
        password
    } else {
        let loopback_ok = state.config.server.allow_cleartext_on_loopback && peer.ip().is_loopback();
        if !loopback_ok {
            return Err((
                Fatal::with_code(
                    code::SECURE_TRANSPORT_REQUIRED,
                    b"HY000",
                    "a password in clear needs TLS: connect with TLS, or let the client fetch gatehouse's RSA key",
                    EndReason::TlsRequired,
                ),
                seq,
            ));
        }
        answer.strip_suffix(&[0]).unwrap_or(&answer).to_vec()
    };
    let admitted =
        admission::admit(state, crate::config::Protocol::Mysql, &user, &password, &database).map_err(|r| {
            let f = Fatal::from(r);
            (f, seq)
        })?;
    drop(password);
    let seat = admission::seat(shared, state, &admitted.identity).map_err(|r| (Fatal::from(r), seq))?;
    Ok(LoggedIn {
        admitted,
        seat,
        caps: resp.capabilities & (offered | caps::SSL),
        collation: safe_collation(resp.charset),
        tls,
        seq,
    })
}

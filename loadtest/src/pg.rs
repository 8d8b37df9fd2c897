//! A minimal PostgreSQL v3 client on tokio: startup (optionally TLS),
//! trust / cleartext / md5 / SCRAM-SHA-256, simple and extended query,
//! pipelining, COPY in and out. Just what the scenarios need, kept lean so
//! the harness is not the bottleneck.

use bytes::{Buf, BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("server: {severity} {code}: {message}")]
    Server {
        severity: String,
        code: String,
        message: String,
    },
    #[error("protocol: {0}")]
    Protocol(String),
}

pub type Result<T> = std::result::Result<T, PgError>;

fn proto(s: impl Into<String>) -> PgError {
    PgError::Protocol(s.into())
}

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Where and as whom to connect.
#[derive(Clone, Debug)]
pub struct ConnectParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub tls: bool,
}

/// The TLS client configuration: loopback only, so the server's certificate
/// (self-signed in the managed targets) is not verified.
pub fn tls_connector() -> tokio_rustls::TlsConnector {
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                .with_no_client_auth()
        });
    // The ring provider always supports the default protocol versions.
    #[allow(clippy::expect_used)]
    let mut config = config.expect("ring supports TLS 1.2 and 1.3");
    // Every connection does a full handshake, as libpq's do: no session resumption.
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// What a statement (or a batch) returned.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    pub rows: u64,
    pub bytes: u64,
}

pub struct Conn {
    stream: Stream,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

/// One backend message: its tag and the body's range in the read buffer.
struct Msg {
    tag: u8,
    len: usize,
}

impl Conn {
    pub async fn connect(p: &ConnectParams, tls: Option<&tokio_rustls::TlsConnector>) -> Result<Conn> {
        let tcp = TcpStream::connect((p.host.as_str(), p.port)).await?;
        tcp.set_nodelay(true)?;
        let stream = if p.tls {
            let mut tcp = tcp;
            let mut req = [0u8; 8];
            req[..4].copy_from_slice(&8i32.to_be_bytes());
            req[4..].copy_from_slice(&80877103i32.to_be_bytes());
            tcp.write_all(&req).await?;
            let mut answer = [0u8; 1];
            tcp.read_exact(&mut answer).await?;
            if answer[0] != b'S' {
                return Err(proto("the server does not do TLS (answered the SSLRequest with N)"));
            }
            let connector = match tls {
                Some(c) => c.clone(),
                None => tls_connector(),
            };
            let name = rustls_pki_types::ServerName::try_from("localhost")
                .map_err(|e| proto(format!("server name: {e}")))?
                .to_owned();
            Stream::Tls(Box::new(connector.connect(name, tcp).await?))
        } else {
            Stream::Plain(tcp)
        };
        let mut c = Conn {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::with_capacity(8 * 1024),
        };
        c.startup(p).await?;
        Ok(c)
    }

    async fn startup(&mut self, p: &ConnectParams) -> Result<()> {
        let mut body = BytesMut::new();
        body.put_i32(196608);
        for (k, v) in [
            ("user", p.user.as_str()),
            ("database", p.dbname.as_str()),
            ("application_name", "gatehouse-load"),
        ] {
            put_cstr(&mut body, k);
            put_cstr(&mut body, v);
        }
        body.put_u8(0);
        self.wbuf.put_i32(body.len() as i32 + 4);
        self.wbuf.extend_from_slice(&body);
        self.flush().await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let m = self.read_msg().await?;
            match m.tag {
                b'R' => {
                    let body = self.body(&m);
                    if body.len() < 4 {
                        return Err(proto("short authentication message"));
                    }
                    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let rest = body[4..].to_vec();
                    self.consume(&m);
                    let password = || {
                        p.password
                            .clone()
                            .ok_or_else(|| proto("the server asks for a password and the target has none"))
                    };
                    match code {
                        0 => {}
                        3 => {
                            let pw = password()?;
                            self.put_msg(b'p', |b| put_cstr(b, &pw));
                            self.flush().await?;
                        }
                        5 => {
                            let pw = password()?;
                            if rest.len() < 4 {
                                return Err(proto("short md5 salt"));
                            }
                            let salt = [rest[0], rest[1], rest[2], rest[3]];
                            let hash =
                                postgres_protocol::authentication::md5_hash(p.user.as_bytes(), pw.as_bytes(), salt);
                            self.put_msg(b'p', |b| put_cstr(b, &hash));
                            self.flush().await?;
                        }
                        10 => {
                            let pw = password()?;
                            let mechs = String::from_utf8_lossy(&rest);
                            if !mechs.split('\0').any(|m| m == "SCRAM-SHA-256") {
                                return Err(proto(format!("no supported SASL mechanism in {mechs:?}")));
                            }
                            let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                            let first = s.message().to_vec();
                            scram = Some(s);
                            self.put_msg(b'p', |b| {
                                put_cstr(b, "SCRAM-SHA-256");
                                b.put_i32(first.len() as i32);
                                b.extend_from_slice(&first);
                            });
                            self.flush().await?;
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| proto("SASLContinue before SASL"))?;
                            s.update(&rest)?;
                            let msg = s.message().to_vec();
                            self.put_msg(b'p', |b| b.extend_from_slice(&msg));
                            self.flush().await?;
                        }
                        12 => {
                            let mut s = scram.take().ok_or_else(|| proto("SASLFinal before SASL"))?;
                            s.finish(&rest)?;
                        }
                        other => return Err(proto(format!("authentication method {other} is not supported"))),
                    }
                }
                b'E' => {
                    let e = self.server_error(&m);
                    return Err(e);
                }
                b'Z' => {
                    self.consume(&m);
                    return Ok(());
                }
                _ => self.consume(&m), // ParameterStatus, BackendKeyData, NoticeResponse
            }
        }
    }

    fn put_msg(&mut self, tag: u8, f: impl FnOnce(&mut BytesMut)) {
        self.wbuf.put_u8(tag);
        let at = self.wbuf.len();
        self.wbuf.put_i32(0);
        f(&mut self.wbuf);
        let len = (self.wbuf.len() - at) as i32;
        self.wbuf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    pub async fn flush(&mut self) -> Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Waits until a whole message is at the front of the read buffer.
    async fn read_msg(&mut self) -> Result<Msg> {
        loop {
            if self.rbuf.len() >= 5 {
                let len = i32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]);
                if len < 4 {
                    return Err(proto(format!("bad message length {len}")));
                }
                let total = 1 + len as usize;
                if self.rbuf.len() >= total {
                    return Ok(Msg {
                        tag: self.rbuf[0],
                        len: len as usize - 4,
                    });
                }
                self.rbuf.reserve(total - self.rbuf.len());
            }
            if self.rbuf.capacity() - self.rbuf.len() < 8192 {
                self.rbuf.reserve(64 * 1024);
            }
            let n = self.stream.read_buf(&mut self.rbuf).await?;
            if n == 0 {
                return Err(proto("the server closed the connection"));
            }
        }
    }

    fn body(&self, m: &Msg) -> &[u8] {
        &self.rbuf[5..5 + m.len]
    }

    fn consume(&mut self, m: &Msg) {
        self.rbuf.advance(5 + m.len);
    }

    fn server_error(&mut self, m: &Msg) -> PgError {
        let (severity, code, message) = parse_fields(self.body(m));
        self.consume(m);
        PgError::Server {
            severity,
            code,
            message,
        }
    }

    /// Queues a simple Query.
    pub fn query(&mut self, sql: &str) {
        self.put_msg(b'Q', |b| put_cstr(b, sql));
    }

    /// Queues Parse of a statement (named, or unnamed with "").
    pub fn parse(&mut self, name: &str, sql: &str) {
        self.put_msg(b'P', |b| {
            put_cstr(b, name);
            put_cstr(b, sql);
            b.put_i16(0);
        });
    }

    /// Queues Bind (text parameters, text results), Execute and Sync.
    pub fn bind_execute_sync(&mut self, statement: &str, params: &[&[u8]]) {
        self.put_msg(b'B', |b| {
            put_cstr(b, "");
            put_cstr(b, statement);
            b.put_i16(0);
            b.put_i16(params.len() as i16);
            for p in params {
                b.put_i32(p.len() as i32);
                b.extend_from_slice(p);
            }
            b.put_i16(0);
        });
        self.put_msg(b'E', |b| {
            put_cstr(b, "");
            b.put_i32(0);
        });
        self.sync();
    }

    pub fn sync(&mut self) {
        self.put_msg(b'S', |_| {});
    }

    /// Reads up to the next ReadyForQuery: rows counted, the first error
    /// returned after the ReadyForQuery, notices handed to `on_notice`.
    pub async fn finish(&mut self, mut on_notice: impl FnMut(&str)) -> Result<Outcome> {
        let mut out = Outcome::default();
        let mut err: Option<PgError> = None;
        loop {
            let m = self.read_msg().await?;
            match m.tag {
                b'D' => {
                    out.rows += 1;
                    out.bytes += m.len as u64 + 5;
                    self.consume(&m);
                }
                b'd' => {
                    out.bytes += m.len as u64;
                    self.consume(&m);
                }
                b'E' => {
                    let e = self.server_error(&m);
                    err.get_or_insert(e);
                }
                b'N' => {
                    let (_, _, msg) = parse_fields(self.body(&m));
                    self.consume(&m);
                    on_notice(&msg);
                }
                b'G' => {
                    // COPY IN that the caller did not expect: refuse it.
                    self.consume(&m);
                    self.put_msg(b'f', |b| put_cstr(b, "gatehouse-load did not expect COPY IN"));
                    self.flush().await?;
                }
                b'Z' => {
                    self.consume(&m);
                    return match err {
                        Some(e) => Err(e),
                        None => Ok(out),
                    };
                }
                _ => self.consume(&m),
            }
        }
    }

    /// Sends what is queued, then reads `n` ReadyForQuery-terminated results,
    /// calling `done(i, at)` as each completes.
    pub async fn round_trip(&mut self, n: usize, mut done: impl FnMut(usize, Instant)) -> Result<Outcome> {
        self.flush().await?;
        let mut total = Outcome::default();
        let mut first_err = None;
        for i in 0..n {
            match self.finish(|_| {}).await {
                Ok(o) => {
                    total.rows += o.rows;
                    total.bytes += o.bytes;
                    done(i, Instant::now());
                }
                Err(e @ PgError::Server { .. }) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// One simple statement, waited for.
    pub async fn simple(&mut self, sql: &str) -> Result<Outcome> {
        self.query(sql);
        self.flush().await?;
        self.finish(|_| {}).await
    }

    /// `COPY … FROM STDIN`, sending `total` bytes made of `chunk` repeated
    /// (the last piece cut at a line end).
    pub async fn copy_in(&mut self, sql: &str, chunk: &[u8], total: u64) -> Result<Outcome> {
        self.query(sql);
        self.flush().await?;
        loop {
            let m = self.read_msg().await?;
            match m.tag {
                b'G' => {
                    self.consume(&m);
                    break;
                }
                b'E' => {
                    let e = self.server_error(&m);
                    self.finish(|_| {}).await.ok();
                    return Err(e);
                }
                _ => self.consume(&m),
            }
        }
        let mut sent = 0u64;
        while sent < total {
            let want = ((total - sent) as usize).min(chunk.len());
            let piece = if want == chunk.len() {
                chunk
            } else {
                let cut = chunk[..want].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                if cut == 0 {
                    break;
                }
                &chunk[..cut]
            };
            self.put_msg(b'd', |b| b.extend_from_slice(piece));
            self.flush().await?;
            sent += piece.len() as u64;
        }
        self.put_msg(b'c', |_| {});
        self.flush().await?;
        let mut out = self.finish(|_| {}).await?;
        out.bytes = sent;
        Ok(out)
    }

    /// The first column of the first row of a simple statement, as text.
    pub async fn scalar(&mut self, sql: &str) -> Result<Option<String>> {
        self.query(sql);
        self.flush().await?;
        let mut value = None;
        let mut err = None;
        loop {
            let m = self.read_msg().await?;
            match m.tag {
                b'D' if value.is_none() => {
                    let b = self.body(&m);
                    if b.len() >= 6 {
                        let len = i32::from_be_bytes([b[2], b[3], b[4], b[5]]);
                        if len >= 0 && b.len() >= 6 + len as usize {
                            value = Some(String::from_utf8_lossy(&b[6..6 + len as usize]).into_owned());
                        }
                    }
                    self.consume(&m);
                }
                b'E' => {
                    let e = self.server_error(&m);
                    err.get_or_insert(e);
                }
                b'Z' => {
                    self.consume(&m);
                    return match err {
                        Some(e) => Err(e),
                        None => Ok(value),
                    };
                }
                _ => self.consume(&m),
            }
        }
    }

    /// Reads until a NoticeResponse (its message) or, if none comes, the
    /// ReadyForQuery (None); a server error is returned after ReadyForQuery.
    pub async fn until_notice(&mut self) -> Result<Option<String>> {
        let mut err = None;
        loop {
            let m = self.read_msg().await?;
            match m.tag {
                b'N' => {
                    let (_, _, msg) = parse_fields(self.body(&m));
                    self.consume(&m);
                    return Ok(Some(msg));
                }
                b'E' => {
                    let e = self.server_error(&m);
                    err.get_or_insert(e);
                }
                b'Z' => {
                    self.consume(&m);
                    return match err {
                        Some(e) => Err(e),
                        None => Ok(None),
                    };
                }
                _ => self.consume(&m),
            }
        }
    }

    /// Sends Terminate and closes.
    pub async fn close(mut self) {
        self.put_msg(b'X', |_| {});
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }

    /// Still open, as far as the socket knows (for held idle connections).
    pub fn alive(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => {
                let mut b = [0u8; 1];
                match s.try_read(&mut b) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                }
            }
            Stream::Tls(_) => true,
        }
    }
}

fn put_cstr(b: &mut BytesMut, s: &str) {
    b.extend_from_slice(s.as_bytes());
    b.put_u8(0);
}

/// Severity, SQLSTATE and message of an ErrorResponse / NoticeResponse body.
pub fn parse_fields(body: &[u8]) -> (String, String, String) {
    let (mut sev, mut code, mut msg) = (String::new(), String::new(), String::new());
    let mut rest = body;
    while let Some((&t, tail)) = rest.split_first() {
        if t == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let v = String::from_utf8_lossy(&tail[..end]).into_owned();
        match t {
            b'S' => sev = v,
            b'C' => code = v,
            b'M' => msg = v,
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    (sev, code, msg)
}

/// The review id in gatehouse's "statement held for approval: review <id> (…)" notice.
pub fn review_id(notice: &str) -> Option<String> {
    let rest = notice.split("review ").nth(1)?;
    let id: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_fields() {
        let body = b"SERROR\0VERROR\0C42501\0Mnope\0\0";
        assert_eq!(parse_fields(body), ("ERROR".into(), "42501".into(), "nope".into()));
        assert_eq!(parse_fields(b"Mtrunc"), (String::new(), String::new(), "trunc".into()));
    }

    #[test]
    fn review_ids_from_notices() {
        assert_eq!(
            review_id("statement held for approval: review r-7f3a (write statement); waiting up to 30s").as_deref(),
            Some("r-7f3a")
        );
        assert_eq!(review_id("something else"), None);
    }
}

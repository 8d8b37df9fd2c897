//! The client side of the connection phase, as gatehouse logs in to an
//! upstream server with a target's held credentials: a state machine fed
//! the server's messages that says what to send, with no I/O of its own
//! (the proxy drives it over its sockets, the tests over a blocking one).
//!
//! Plugins: `mysql_native_password`, `caching_sha2_password` (the fast
//! path; the full password only over TLS), MariaDB's `client_ed25519` and
//! `mysql_clear_password` (only over TLS). The password never leaves in clear on a connection
//! that is not encrypted, whatever the server asks for: a server (or a man
//! in the middle) that asks for it gets a refusal, not the password.

use super::auth::{
    caching_sha2_password, clear_password, ed25519_password, native_password, CACHING_SHA2_PASSWORD, CLEAR_PASSWORD,
    ED25519, FAST_AUTH_SUCCESS, NATIVE_PASSWORD, PERFORM_FULL_AUTHENTICATION,
};
use super::handshake::{AuthSwitch, Greeting, HandshakeResponse, AUTH_MORE_DATA_HEADER, AUTH_SWITCH_HEADER};
use super::packet::write_message;
use super::response::{ErrPacket, OkPacket, ERR_HEADER, OK_HEADER};
use super::{caps, MyWireError};

/// Whether the connection is to be encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsWanted {
    No,
    /// When the server offers it; the password still never goes in clear.
    IfOffered,
    Required,
}

/// What the login is for.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    pub user: Vec<u8>,
    pub password: Vec<u8>,
    pub database: Option<Vec<u8>>,
    /// Collation id sent in the response (45: utf8mb4_general_ci).
    pub charset: u8,
    /// Capabilities asked for beyond those every login needs; only those
    /// the server offers are kept.
    pub capabilities: u32,
    pub tls: TlsWanted,
    pub attributes: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes (whole packets), then feed the next message.
    Send(Vec<u8>),
    /// Nothing to write: feed the next message.
    Read,
    /// Write these bytes (the SSL request), start TLS on the connection,
    /// then call [`ClientLogin::after_tls`].
    StartTls(Vec<u8>),
    /// Logged in.
    Done(Established),
}

/// The session as the server accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Established {
    pub connection_id: u32,
    pub server_version: Vec<u8>,
    /// Capabilities in force (what was asked for and offered).
    pub capabilities: u32,
    pub status: u16,
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("the server refused the login: {code} {message}")]
    Server {
        code: u16,
        sql_state: Option<[u8; 5]>,
        message: String,
    },
    #[error("{0}")]
    Refused(&'static str),
    #[error("protocol error during login: {0}")]
    Protocol(#[from] MyWireError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    /// The SSL request was sent; waiting for the driver to start TLS.
    Tls,
    /// The response (or a later auth packet) was sent.
    Auth,
    /// caching_sha2_password said "fast auth success": an OK follows.
    AwaitOk,
    Done,
}

/// Every login asks for these; a server without them is refused.
const REQUIRED: u32 = caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH;

pub struct ClientLogin {
    options: LoginOptions,
    state: State,
    /// Sequence id of the next packet gatehouse sends.
    seq: u8,
    greeting: Option<Greeting>,
    capabilities: u32,
    tls: bool,
    /// The TLS connection checked the server's certificate: only then may
    /// the password itself go (a TLS peer that was not verified may be a
    /// man in the middle).
    tls_verified: bool,
    plugin: Vec<u8>,
}

impl ClientLogin {
    pub fn new(options: LoginOptions) -> Self {
        ClientLogin {
            options,
            state: State::Greeting,
            seq: 0,
            greeting: None,
            capabilities: 0,
            tls: false,
            tls_verified: true,
            plugin: Vec::new(),
        }
    }

    /// Whether a TLS connection of this login checks the server's
    /// certificate (default: yes). When it does not, the password is never
    /// sent in clear, whatever the server asks.
    pub fn verified_tls(mut self, verified: bool) -> Self {
        self.tls_verified = verified;
        self
    }

    /// The server's greeting, once read.
    pub fn greeting(&self) -> Option<&Greeting> {
        self.greeting.as_ref()
    }

    /// Feeds one whole message from the server (its payload and the
    /// sequence id of its first packet).
    pub fn on_message(&mut self, seq: u8, payload: &[u8]) -> Result<Action, LoginError> {
        if self.state != State::Greeting && seq != self.seq {
            return Err(MyWireError::BadSequence {
                expected: self.seq,
                got: seq,
            }
            .into());
        }
        self.seq = seq.wrapping_add(1);
        if payload.first() == Some(&ERR_HEADER) {
            let e = ErrPacket::parse(payload)?;
            self.state = State::Done;
            return Err(LoginError::Server {
                code: e.code,
                sql_state: e.sql_state,
                message: String::from_utf8_lossy(e.message).into_owned(),
            });
        }
        match self.state {
            State::Greeting => self.on_greeting(payload),
            State::Auth => self.on_auth(payload),
            State::AwaitOk => match payload.first() {
                Some(&OK_HEADER) => self.done(payload),
                _ => Err(MyWireError::Malformed("expected OK after fast authentication").into()),
            },
            State::Tls | State::Done => Err(MyWireError::Malformed("message from the server out of turn").into()),
        }
    }

    /// After TLS started: the handshake response, over the encrypted connection.
    pub fn after_tls(&mut self) -> Result<Action, LoginError> {
        if self.state != State::Tls {
            return Err(MyWireError::Malformed("TLS started out of turn").into());
        }
        self.tls = true;
        self.send_response()
    }

    fn on_greeting(&mut self, payload: &[u8]) -> Result<Action, LoginError> {
        let g = Greeting::parse(payload)?;
        if g.capabilities & REQUIRED != REQUIRED {
            return Err(LoginError::Refused(
                "the server does not speak protocol 41 with plugin authentication",
            ));
        }
        let offered_tls = g.capabilities & caps::SSL != 0;
        let use_tls = match self.options.tls {
            TlsWanted::No => false,
            TlsWanted::IfOffered => offered_tls,
            TlsWanted::Required if offered_tls => true,
            TlsWanted::Required => return Err(LoginError::Refused("the server does not offer TLS")),
        };
        let wanted = self.options.capabilities
            | REQUIRED
            | caps::LONG_PASSWORD
            | caps::TRANSACTIONS
            | caps::PLUGIN_AUTH_LENENC_CLIENT_DATA
            | if self.options.database.is_some() {
                caps::CONNECT_WITH_DB
            } else {
                0
            }
            | if self.options.attributes.is_empty() {
                0
            } else {
                caps::CONNECT_ATTRS
            }
            | if use_tls { caps::SSL } else { 0 };
        // Never ask for compression or a local-infile capability the
        // options did not name: they change the framing and who reads files.
        self.capabilities = wanted & g.capabilities;
        self.plugin = g.auth_plugin.clone();
        self.greeting = Some(g);
        if use_tls {
            let mut body = Vec::new();
            self.response().write_ssl_request(&mut body);
            let mut out = Vec::new();
            self.seq = write_message(&mut out, self.seq, &body);
            self.state = State::Tls;
            return Ok(Action::StartTls(out));
        }
        self.send_response()
    }

    fn response(&self) -> HandshakeResponse {
        let g = self.greeting.as_ref();
        HandshakeResponse {
            capabilities: self.capabilities,
            max_packet: 1 << 30,
            charset: self.options.charset,
            mariadb_capabilities: 0,
            user: self.options.user.clone(),
            auth_response: Vec::new(),
            database: self.options.database.clone(),
            auth_plugin: g.map(|_| self.plugin.clone()),
            attributes: self.options.attributes.clone(),
        }
    }

    fn send_response(&mut self) -> Result<Action, LoginError> {
        let nonce = self.greeting.as_ref().map(|g| g.scramble.clone()).unwrap_or_default();
        // A plugin gatehouse does not speak: answer as native and let the
        // server switch (it names the plugin it wants in the switch).
        if !matches!(self.plugin.as_slice(), p if p == NATIVE_PASSWORD || p == CACHING_SHA2_PASSWORD) {
            self.plugin = NATIVE_PASSWORD.to_vec();
        }
        let mut r = self.response();
        r.auth_response = self.scramble(&nonce)?;
        let mut body = Vec::new();
        r.write(&mut body)?;
        let mut out = Vec::new();
        self.seq = write_message(&mut out, self.seq, &body);
        self.state = State::Auth;
        Ok(Action::Send(out))
    }

    /// The auth data for the current plugin and nonce.
    fn scramble(&self, nonce: &[u8]) -> Result<Vec<u8>, LoginError> {
        let pw = &self.options.password;
        let p = self.plugin.as_slice();
        if p == NATIVE_PASSWORD {
            Ok(native_password(pw, nonce))
        } else if p == CACHING_SHA2_PASSWORD {
            Ok(caching_sha2_password(pw, nonce))
        } else if p == ED25519 {
            // The server's nonce is 32 bytes (a trailing NUL is not part of it).
            let nonce = nonce
                .get(..32)
                .ok_or(MyWireError::Malformed("client_ed25519 nonce shorter than 32 bytes"))?;
            Ok(ed25519_password(pw, nonce))
        } else if p == CLEAR_PASSWORD {
            if !(self.tls && self.tls_verified) {
                return Err(LoginError::Refused(
                    "the server asked for the password in clear on a connection without verified TLS (tls = \"verify-full\")",
                ));
            }
            Ok(clear_password(pw))
        } else {
            Err(LoginError::Refused(
                "the server asked for an authentication plugin gatehouse does not speak",
            ))
        }
    }

    fn send(&mut self, body: &[u8]) -> Action {
        let mut out = Vec::new();
        self.seq = write_message(&mut out, self.seq, body);
        Action::Send(out)
    }

    fn on_auth(&mut self, payload: &[u8]) -> Result<Action, LoginError> {
        match payload.first() {
            Some(&OK_HEADER) => self.done(payload),
            Some(&AUTH_SWITCH_HEADER) => {
                let s = AuthSwitch::parse(payload)?;
                self.plugin = s.plugin.to_vec();
                let data = self.scramble(s.data)?;
                Ok(self.send(&data))
            }
            Some(&AUTH_MORE_DATA_HEADER) if self.plugin == CACHING_SHA2_PASSWORD => match payload.get(1) {
                Some(&FAST_AUTH_SUCCESS) => {
                    self.state = State::AwaitOk;
                    Ok(Action::Read)
                }
                Some(&PERFORM_FULL_AUTHENTICATION) if self.tls && self.tls_verified => {
                    let pw = clear_password(&self.options.password);
                    Ok(self.send(&pw))
                }
                Some(&PERFORM_FULL_AUTHENTICATION) => Err(LoginError::Refused(
                    "the server wants the full password, which gatehouse sends only over TLS that verified the server (use tls = \"verify-full\" for this target)",
                )),
                _ => Err(MyWireError::Malformed("unexpected caching_sha2_password data").into()),
            },
            _ => Err(MyWireError::Malformed("unexpected message during authentication").into()),
        }
    }

    fn done(&mut self, payload: &[u8]) -> Result<Action, LoginError> {
        let ok = OkPacket::parse(payload, self.capabilities)?;
        self.state = State::Done;
        let g = self.greeting.as_ref();
        Ok(Action::Done(Established {
            connection_id: g.map_or(0, |g| g.connection_id),
            server_version: g.map(|g| g.server_version.clone()).unwrap_or_default(),
            capabilities: self.capabilities,
            status: ok.status,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mysql::packet::{frame, payload};

    fn options(tls: TlsWanted) -> LoginOptions {
        LoginOptions {
            user: b"app".to_vec(),
            password: b"secret".to_vec(),
            database: Some(b"test".to_vec()),
            charset: 45,
            capabilities: caps::MULTI_RESULTS,
            tls,
            attributes: Vec::new(),
        }
    }

    fn greeting(plugin: &[u8], extra_caps: u32) -> Vec<u8> {
        let g = Greeting {
            server_version: b"8.0.36".to_vec(),
            connection_id: 9,
            scramble: b"ABCDEFGHIJKLMNOPQRST".to_vec(),
            capabilities: REQUIRED
                | caps::LONG_PASSWORD
                | caps::TRANSACTIONS
                | caps::PLUGIN_AUTH_LENENC_CLIENT_DATA
                | caps::CONNECT_WITH_DB
                | caps::MULTI_RESULTS
                | extra_caps,
            charset: 45,
            status: 2,
            mariadb_capabilities: 0,
            auth_plugin: plugin.to_vec(),
        };
        let mut out = Vec::new();
        g.write(&mut out).unwrap();
        out
    }

    fn ok() -> Vec<u8> {
        let mut out = Vec::new();
        OkPacket {
            status: 2,
            ..Default::default()
        }
        .write(&mut out, caps::PROTOCOL_41, false);
        out
    }

    /// The response gatehouse sent, parsed back.
    fn sent_response(a: &Action) -> HandshakeResponse {
        let Action::Send(bytes) = a else { panic!("{a:?}") };
        let m = frame(bytes, 1 << 20).unwrap().unwrap();
        match HandshakeResponse::parse(&payload(bytes, &m)).unwrap() {
            super::super::handshake::ClientHello::Response(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn native_password_login() {
        let mut l = ClientLogin::new(options(TlsWanted::IfOffered));
        let a = l.on_message(0, &greeting(NATIVE_PASSWORD, 0)).unwrap();
        let r = sent_response(&a);
        assert_eq!(r.user, b"app");
        assert_eq!(r.database.as_deref(), Some(&b"test"[..]));
        assert_eq!(r.auth_response, native_password(b"secret", b"ABCDEFGHIJKLMNOPQRST"));
        assert_eq!(r.capabilities & caps::SSL, 0, "no TLS offered");
        assert_eq!(r.capabilities & caps::COMPRESS, 0);
        let Action::Done(e) = l.on_message(2, &ok()).unwrap() else {
            panic!()
        };
        assert_eq!(e.connection_id, 9);
    }

    #[test]
    fn tls_first_when_offered_or_required() {
        let mut l = ClientLogin::new(options(TlsWanted::IfOffered));
        let a = l.on_message(0, &greeting(NATIVE_PASSWORD, caps::SSL)).unwrap();
        let Action::StartTls(req) = a else { panic!("{a:?}") };
        assert_eq!(req.len(), 4 + 32);
        assert_eq!(req[3], 1, "sequence id");
        let r = sent_response(&l.after_tls().unwrap());
        assert_ne!(r.capabilities & caps::SSL, 0);
        let mut l = ClientLogin::new(options(TlsWanted::Required));
        assert!(matches!(
            l.on_message(0, &greeting(NATIVE_PASSWORD, 0)),
            Err(LoginError::Refused(_))
        ));
    }

    /// A server, or a man in the middle, cannot get the password in clear
    /// on a connection without TLS.
    #[test]
    fn the_password_never_goes_in_clear_without_tls() {
        let mut l = ClientLogin::new(options(TlsWanted::IfOffered));
        l.on_message(0, &greeting(NATIVE_PASSWORD, 0)).unwrap();
        let mut switch = Vec::new();
        AuthSwitch {
            plugin: CLEAR_PASSWORD,
            data: b"",
        }
        .write(&mut switch)
        .unwrap();
        assert!(matches!(l.on_message(2, &switch), Err(LoginError::Refused(_))));

        let mut l = ClientLogin::new(options(TlsWanted::IfOffered));
        l.on_message(0, &greeting(CACHING_SHA2_PASSWORD, 0)).unwrap();
        assert!(matches!(
            l.on_message(2, &[AUTH_MORE_DATA_HEADER, PERFORM_FULL_AUTHENTICATION]),
            Err(LoginError::Refused(_))
        ));
    }

    #[test]
    fn caching_sha2_fast_path_and_full_over_tls() {
        let mut l = ClientLogin::new(options(TlsWanted::IfOffered));
        let r = sent_response(&l.on_message(0, &greeting(CACHING_SHA2_PASSWORD, 0)).unwrap());
        assert_eq!(
            r.auth_response,
            caching_sha2_password(b"secret", b"ABCDEFGHIJKLMNOPQRST")
        );
        assert_eq!(
            l.on_message(2, &[AUTH_MORE_DATA_HEADER, FAST_AUTH_SUCCESS]).unwrap(),
            Action::Read
        );
        assert!(matches!(l.on_message(3, &ok()).unwrap(), Action::Done(_)));

        let mut l = ClientLogin::new(options(TlsWanted::Required));
        l.on_message(0, &greeting(CACHING_SHA2_PASSWORD, caps::SSL)).unwrap();
        l.after_tls().unwrap();
        let Action::Send(pw) = l
            .on_message(3, &[AUTH_MORE_DATA_HEADER, PERFORM_FULL_AUTHENTICATION])
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(&pw[4..], b"secret\0");
        assert_eq!(pw[3], 4);
    }

    #[test]
    fn a_switch_to_ed25519_signs_the_servers_nonce() {
        use ed25519_dalek::Verifier;
        let mut l = ClientLogin::new(options(TlsWanted::No));
        l.on_message(0, &greeting(NATIVE_PASSWORD, 0)).unwrap();
        let nonce = *b"0123456789abcdef0123456789abcdef";
        let mut switch = Vec::new();
        AuthSwitch {
            plugin: ED25519,
            data: &nonce,
        }
        .write(&mut switch)
        .unwrap();
        let Action::Send(out) = l.on_message(2, &switch).unwrap() else {
            panic!()
        };
        assert_eq!(out.len(), 4 + 64);
        let public =
            ed25519_dalek::VerifyingKey::from_bytes(&crate::wire::mysql::auth::ed25519_public_key(b"secret")).unwrap();
        let signature = ed25519_dalek::Signature::from_slice(&out[4..]).unwrap();
        public
            .verify(&nonce, &signature)
            .expect("a signature the server's stored key verifies");
        // A nonce too short is a malformed request, not a signature of less.
        let mut l = ClientLogin::new(options(TlsWanted::No));
        l.on_message(0, &greeting(NATIVE_PASSWORD, 0)).unwrap();
        let mut switch = Vec::new();
        AuthSwitch {
            plugin: ED25519,
            data: b"short",
        }
        .write(&mut switch)
        .unwrap();
        assert!(l.on_message(2, &switch).is_err());
    }

    #[test]
    fn switch_to_native_with_a_new_nonce() {
        let mut l = ClientLogin::new(options(TlsWanted::No));
        l.on_message(0, &greeting(b"client_ed25519", 0)).unwrap();
        let mut switch = Vec::new();
        AuthSwitch {
            plugin: NATIVE_PASSWORD,
            data: b"01234567890123456789",
        }
        .write(&mut switch)
        .unwrap();
        let Action::Send(out) = l.on_message(2, &switch).unwrap() else {
            panic!()
        };
        assert_eq!(&out[4..], &native_password(b"secret", b"01234567890123456789")[..]);
        assert_eq!(out[3], 3);
    }

    #[test]
    fn errors_and_hostile_servers() {
        let mut l = ClientLogin::new(options(TlsWanted::No));
        l.on_message(0, &greeting(NATIVE_PASSWORD, 0)).unwrap();
        let mut err = Vec::new();
        ErrPacket {
            code: 1045,
            sql_state: Some(*b"28000"),
            message: b"Access denied",
        }
        .write(&mut err);
        assert!(matches!(
            l.on_message(2, &err),
            Err(LoginError::Server { code: 1045, .. })
        ));
        // wrong sequence id
        let mut l = ClientLogin::new(options(TlsWanted::No));
        l.on_message(0, &greeting(NATIVE_PASSWORD, 0)).unwrap();
        assert!(matches!(l.on_message(5, &ok()), Err(LoginError::Protocol(_))));
        // a server without protocol 41
        let mut g = greeting(NATIVE_PASSWORD, 0);
        let caps_at = 1 + b"8.0.36\0".len() + 4 + 8 + 1;
        g[caps_at + 1] &= !((caps::PROTOCOL_41 >> 8) as u8);
        assert!(ClientLogin::new(options(TlsWanted::No)).on_message(0, &g).is_err());
        // every prefix of a greeting fails cleanly
        let g = greeting(NATIVE_PASSWORD, 0);
        for n in 0..g.len() {
            let _ = ClientLogin::new(options(TlsWanted::No)).on_message(0, &g[..n]);
        }
    }
}

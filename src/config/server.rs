//! `[server]` (the client listener, its limits and TLS) and `[log]`.

use super::locate::{Invalid, PathPart};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Addresses the listeners bind (each worker binds each one with
    /// SO_REUSEPORT): `"127.0.0.1:6432"` speaks PostgreSQL;
    /// `{ address = "127.0.0.1:3307", protocol = "mysql" }` names the protocol.
    pub listen: Vec<Listen>,
    /// Data-plane workers; 0 means one per available core.
    pub workers: usize,
    /// Pin worker N to core N.
    pub pin_workers: bool,
    /// `auto` (io_uring where the kernel allows it, else epoll), `io_uring`, or `epoll`.
    pub io_driver: IoDriver,
    /// Logged-in sessions open at once, over all workers.
    pub max_connections: usize,
    /// Logged-in sessions of one identity at once.
    pub max_sessions_per_identity: usize,
    /// Connections in their handshake (TLS, startup, login) at once,
    /// counted apart from logged-in sessions.
    pub max_handshakes: usize,
    /// Bytes of statement text one session's prepared statements may hold
    /// (gatehouse keeps each one's text to decide its executions).
    pub max_prepared_statement_bytes: usize,
    /// Largest protocol message accepted in either direction, in bytes.
    pub max_message_bytes: usize,
    /// Read buffer per direction of a session, in bytes.
    pub buffer_bytes: usize,
    /// Time a client has to finish TLS, startup and authentication.
    pub handshake_timeout_secs: u64,
    /// Close sessions with no traffic in either direction for this long
    /// (0: never). Default one hour: an agent that walked away does not
    /// hold a session (and its upstream connection) forever.
    pub idle_timeout_secs: u64,
    /// After SIGTERM, how long open sessions may take to finish.
    pub shutdown_timeout_secs: u64,
    /// Accept a cleartext password without TLS from loopback clients.
    pub allow_cleartext_on_loopback: bool,
    pub tls: Option<ServerTls>,
    /// The RSA private key (PEM, PKCS#8 or PKCS#1, at least 2048 bits) MySQL
    /// clients without TLS encrypt their token to; read at start. Without
    /// it a key is made at each start, which clients cannot pin.
    pub mysql_rsa_key_file: Option<PathBuf>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: vec![Listen::Address("127.0.0.1:6432".into())],
            workers: 0,
            pin_workers: false,
            io_driver: IoDriver::Auto,
            max_connections: 10_000,
            max_sessions_per_identity: 1_000,
            max_handshakes: 1_024,
            max_prepared_statement_bytes: 16 << 20,
            max_message_bytes: 1 << 30,
            buffer_bytes: 64 * 1024,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 3600,
            shutdown_timeout_secs: 30,
            allow_cleartext_on_loopback: false,
            tls: None,
            mysql_rsa_key_file: None,
        }
    }
}

/// The database protocol a listener speaks, or a target is reached by.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    #[serde(alias = "postgresql")]
    Postgres,
    /// MySQL and MariaDB (client/server protocol 41).
    #[serde(alias = "mariadb")]
    Mysql,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
        }
    }

    /// The port a server of this protocol listens on unless told otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Postgres => 5432,
            Protocol::Mysql => 3306,
        }
    }
}

/// One listener: an address (PostgreSQL), or an address and its protocol.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Listen {
    Address(String),
    Table {
        address: String,
        #[serde(default)]
        protocol: Protocol,
    },
}

impl Listen {
    pub fn address(&self) -> &str {
        match self {
            Listen::Address(a) | Listen::Table { address: a, .. } => a,
        }
    }

    pub fn protocol(&self) -> Protocol {
        match self {
            Listen::Address(_) => Protocol::Postgres,
            Listen::Table { protocol, .. } => *protocol,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IoDriver {
    Auto,
    IoUring,
    Epoll,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `gatehouse=debug`.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl Server {
    pub(super) fn validate(&mut self, base: &Path) -> Result<(), Invalid> {
        use PathPart::{Idx, Key};
        let srv = |k: &'static str| vec![Key("server"), Key(k)];
        if self.listen.is_empty() {
            return Err((srv("listen"), "at least one address is needed".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, l) in self.listen.iter().enumerate() {
            let a = l.address();
            let Ok(addr) = a.parse::<SocketAddr>() else {
                return Err((
                    vec![Key("server"), Key("listen"), Idx(i)],
                    format!("`{a}` is not an address like 127.0.0.1:6432"),
                ));
            };
            if !seen.insert(addr) {
                return Err((
                    vec![Key("server"), Key("listen"), Idx(i)],
                    format!("`{a}` is listed twice"),
                ));
            }
        }
        if self.workers > 1024 {
            return Err((srv("workers"), "at most 1024 workers".into()));
        }
        if self.max_connections == 0 {
            return Err((srv("max_connections"), "must be at least 1".into()));
        }
        if self.max_sessions_per_identity == 0 {
            return Err((srv("max_sessions_per_identity"), "must be at least 1".into()));
        }
        if self.max_prepared_statement_bytes < 1 << 16 {
            return Err((srv("max_prepared_statement_bytes"), "must be at least 65536".into()));
        }
        if self.max_handshakes == 0 {
            return Err((srv("max_handshakes"), "must be at least 1".into()));
        }
        if !(1024..=(1 << 30)).contains(&self.max_message_bytes) {
            return Err((srv("max_message_bytes"), "must be between 1024 and 1073741824".into()));
        }
        if !(4096..=(16 << 20)).contains(&self.buffer_bytes) {
            return Err((srv("buffer_bytes"), "must be between 4096 and 16777216".into()));
        }
        if self.handshake_timeout_secs == 0 {
            return Err((srv("handshake_timeout_secs"), "must be at least 1".into()));
        }
        if let Some(tls) = &mut self.tls {
            tls.resolve(base, "server")?;
        }
        if let Some(p) = &mut self.mysql_rsa_key_file {
            // Its contents are checked when gatehouse starts.
            *p = base.join(&*p);
            if !p.is_file() {
                return Err((
                    srv("mysql_rsa_key_file"),
                    format!("{} is not a readable file", p.display()),
                ));
            }
        }
        Ok(())
    }
}

impl ServerTls {
    /// Makes the certificate and key paths absolute and checks they are files.
    pub(super) fn resolve(&mut self, base: &Path, section: &'static str) -> Result<(), Invalid> {
        use PathPart::Key;
        for (k, p) in [("cert_file", &mut self.cert_file), ("key_file", &mut self.key_file)] {
            *p = base.join(&*p);
            if !p.is_file() {
                return Err((
                    vec![Key(section), Key("tls"), Key(k)],
                    format!("{} is not a readable file", p.display()),
                ));
            }
        }
        Ok(())
    }
}

impl Log {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        use PathPart::Key;
        if !matches!(self.format.as_str(), "text" | "json") {
            return Err((vec![Key("log"), Key("format")], "must be `text` or `json`".into()));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            return Err((
                vec![Key("log"), Key("level")],
                "is not a valid filter (e.g. `info`)".into(),
            ));
        }
        Ok(())
    }
}

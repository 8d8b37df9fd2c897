//! The TOML configuration model and its validation.
//!
//! Errors name the file, the line and the key: `file:line: key: what is wrong`.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration error located in its file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    #[serde(default, rename = "target")]
    pub targets: Vec<Target>,
    #[serde(default, rename = "identity")]
    pub identities: Vec<IdentityConfig>,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub scan: Scan,
}

/// Secret scanning of everything that leaves the database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scan {
    pub enabled: bool,
    /// A rules file in gatehouse's format; without it, the rules built into
    /// the binary (the project's policies/secrets.toml) apply.
    pub rules_file: Option<PathBuf>,
    /// Rule ids switched off.
    pub disabled_rules: Vec<String>,
    /// Key of the `hash` mask (any string; keep it secret and stable so
    /// equal secrets keep giving equal tokens). From the config, or from an
    /// environment variable.
    pub hash_key: Option<String>,
    pub hash_key_env: Option<String>,
    /// Refuse statements from clients that carry a secret (they are always
    /// flagged and counted).
    pub refuse_client_secrets: bool,
    /// Values larger than this are withheld rather than passed unscanned.
    pub max_value_bytes: usize,
    /// Rules added to the rules file's, in the same format.
    #[serde(rename = "rule")]
    pub rules: Vec<toml::Table>,
}

impl Default for Scan {
    fn default() -> Self {
        Scan {
            enabled: true,
            rules_file: None,
            disabled_rules: Vec::new(),
            hash_key: None,
            hash_key_env: None,
            refuse_client_secrets: false,
            max_value_bytes: 1 << 30,
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Addresses the PostgreSQL listener binds (each worker binds each one with SO_REUSEPORT).
    pub listen: Vec<String>,
    /// Data-plane workers; 0 means one per available core.
    pub workers: usize,
    /// Pin worker N to core N.
    pub pin_workers: bool,
    /// `auto` (io_uring where the kernel allows it, else epoll), `io_uring`, or `epoll`.
    pub io_driver: IoDriver,
    /// Sessions open at once, over all workers.
    pub max_connections: usize,
    /// Largest protocol message accepted in either direction, in bytes.
    pub max_message_bytes: usize,
    /// Read buffer per direction of a session, in bytes.
    pub buffer_bytes: usize,
    /// Time a client has to finish TLS, startup and authentication.
    pub handshake_timeout_secs: u64,
    /// Close sessions with no traffic in either direction for this long (0: never).
    pub idle_timeout_secs: u64,
    /// After SIGTERM, how long open sessions may take to finish.
    pub shutdown_timeout_secs: u64,
    /// Accept a cleartext password without TLS from loopback clients.
    pub allow_cleartext_on_loopback: bool,
    pub tls: Option<ServerTls>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: vec!["127.0.0.1:6432".into()],
            workers: 0,
            pin_workers: false,
            io_driver: IoDriver::Auto,
            max_connections: 10_000,
            max_message_bytes: 1 << 30,
            buffer_bytes: 64 * 1024,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 0,
            shutdown_timeout_secs: 30,
            allow_cleartext_on_loopback: false,
            tls: None,
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
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Name of the target in logs and policy.
    pub name: String,
    /// The `database` a client asks for to reach this target.
    pub database: String,
    /// When set, only these client user names select this target.
    #[serde(default)]
    pub client_users: Vec<String>,
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// The database name upstream (default: `database`).
    pub upstream_database: Option<String>,
    /// The upstream role gatehouse logs in as.
    pub user: String,
    /// The upstream password, one of: inline, from an environment variable, from a file.
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: UpstreamTls,
    /// CA bundle for `verify-full` (default: the built-in web roots).
    pub ca_file: Option<PathBuf>,
    /// Name checked in the server certificate (default: `host`).
    pub tls_server_name: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
}

fn default_pg_port() -> u16 {
    5432
}
fn default_connect_timeout() -> u64 {
    5
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyFull,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The identity's name: the `user` a client connects as.
    pub name: String,
    /// SHA-256 of the identity's token, as `sha256:<64 hex digits>`.
    pub token_hash: String,
    /// Targets this identity may reach, by name; `*` for all.
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
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

impl Target {
    pub fn upstream_database(&self) -> &str {
        self.upstream_database.as_deref().unwrap_or(&self.database)
    }

    /// Resolves the upstream password from its source.
    pub fn resolve_password(&self) -> Result<Option<String>, String> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        if let Some(var) = &self.password_env {
            return std::env::var(var)
                .map(Some)
                .map_err(|_| format!("environment variable {var} is not set"));
        }
        if let Some(f) = &self.password_file {
            return std::fs::read_to_string(f)
                .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| format!("cannot read {}: {e}", f.display()));
        }
        Ok(None)
    }
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            key: "-".into(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &file, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses and validates configuration text. Relative paths are resolved against `base`.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            let message = e.message().to_string();
            let key = key_from_message(&message).unwrap_or_else(|| "-".into());
            ConfigError {
                file: file.into(),
                line,
                key,
                message,
            }
        })?;
        let locate = |path: &[PathPart], message: String| {
            let (line, key) = locate(text, path);
            ConfigError {
                file: file.into(),
                line,
                key,
                message,
            }
        };
        cfg.validate(base).map_err(|(path, msg)| locate(&path, msg))?;
        Ok(cfg)
    }

    fn validate(&mut self, base: &Path) -> Result<(), (Vec<PathPart>, String)> {
        use PathPart::{Idx, Key};
        let s = &self.server;
        let srv = |k: &'static str| vec![Key("server"), Key(k)];
        if s.listen.is_empty() {
            return Err((srv("listen"), "at least one address is needed".into()));
        }
        for (i, a) in s.listen.iter().enumerate() {
            if a.parse::<SocketAddr>().is_err() {
                return Err((
                    vec![Key("server"), Key("listen"), Idx(i)],
                    format!("`{a}` is not an address like 127.0.0.1:6432"),
                ));
            }
        }
        if s.workers > 1024 {
            return Err((srv("workers"), "at most 1024 workers".into()));
        }
        if s.max_connections == 0 {
            return Err((srv("max_connections"), "must be at least 1".into()));
        }
        if !(1024..=(1 << 30)).contains(&s.max_message_bytes) {
            return Err((srv("max_message_bytes"), "must be between 1024 and 1073741824".into()));
        }
        if !(4096..=(16 << 20)).contains(&s.buffer_bytes) {
            return Err((srv("buffer_bytes"), "must be between 4096 and 16777216".into()));
        }
        if s.handshake_timeout_secs == 0 {
            return Err((srv("handshake_timeout_secs"), "must be at least 1".into()));
        }
        if let Some(tls) = &mut self.server.tls {
            for (k, p) in [("cert_file", &mut tls.cert_file), ("key_file", &mut tls.key_file)] {
                *p = base.join(&*p);
                if !p.is_file() {
                    return Err((
                        vec![Key("server"), Key("tls"), Key(k)],
                        format!("{} is not a readable file", p.display()),
                    ));
                }
            }
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err((vec![Key("log"), Key("format")], "must be `text` or `json`".into()));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err((
                vec![Key("log"), Key("level")],
                "is not a valid filter (e.g. `info`)".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.targets.iter_mut().enumerate() {
            let k = |k: &'static str| vec![Key("target"), Idx(i), Key(k)];
            if t.name.is_empty() || !names.insert(t.name.clone()) {
                return Err((k("name"), format!("target name `{}` is empty or used twice", t.name)));
            }
            if t.database.is_empty() {
                return Err((k("database"), "must not be empty".into()));
            }
            if t.host.is_empty() {
                return Err((k("host"), "must not be empty".into()));
            }
            if t.port == 0 {
                return Err((k("port"), "must not be 0".into()));
            }
            let sources = [
                t.password.is_some(),
                t.password_env.is_some(),
                t.password_file.is_some(),
            ];
            if sources.iter().filter(|&&b| b).count() > 1 {
                return Err((
                    k("password"),
                    "give only one of password, password_env, password_file".into(),
                ));
            }
            if let Some(f) = &mut t.password_file {
                *f = base.join(&*f);
            }
            if let Err(e) = t.resolve_password() {
                let key = if t.password_env.is_some() {
                    "password_env"
                } else {
                    "password_file"
                };
                return Err((k(key), e));
            }
            if let Some(ca) = &mut t.ca_file {
                *ca = base.join(&*ca);
                if !ca.is_file() {
                    return Err((k("ca_file"), format!("{} is not a readable file", ca.display())));
                }
            }
            if t.connect_timeout_secs == 0 {
                return Err((k("connect_timeout_secs"), "must be at least 1".into()));
            }
        }
        if let Some(f) = &mut self.scan.rules_file {
            *f = base.join(&*f);
            if !f.is_file() {
                return Err((
                    vec![Key("scan"), Key("rules_file")],
                    format!("{} is not a readable file", f.display()),
                ));
            }
        }
        if self.scan.hash_key.is_some() && self.scan.hash_key_env.is_some() {
            return Err((
                vec![Key("scan"), Key("hash_key")],
                "give only one of hash_key, hash_key_env".into(),
            ));
        }
        if let Some(var) = &self.scan.hash_key_env {
            if std::env::var(var).is_err() {
                return Err((
                    vec![Key("scan"), Key("hash_key_env")],
                    format!("environment variable {var} is not set"),
                ));
            }
        }
        if self.scan.max_value_bytes == 0 {
            return Err((vec![Key("scan"), Key("max_value_bytes")], "must be at least 1".into()));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, id) in self.identities.iter().enumerate() {
            let k = |k: &'static str| vec![Key("identity"), Idx(i), Key(k)];
            if id.name.is_empty() || !ids.insert(id.name.clone()) {
                return Err((k("name"), format!("identity name `{}` is empty or used twice", id.name)));
            }
            if crate::identity::parse_token_hash(&id.token_hash).is_none() {
                return Err((
                    k("token_hash"),
                    "must be `sha256:` and 64 hex digits (make one with `gatehouse token hash`)".into(),
                ));
            }
            for (j, t) in id.targets.iter().enumerate() {
                if t != "*" && !names.contains(t) {
                    return Err((
                        vec![Key("identity"), Idx(i), Key("targets"), Idx(j)],
                        format!("no target is named `{t}`"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The number of workers to run.
    pub fn worker_count(&self) -> usize {
        if self.server.workers > 0 {
            self.server.workers
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }
}

/// One step of a key path.
#[derive(Debug, Clone, Copy)]
pub enum PathPart {
    Key(&'static str),
    Idx(usize),
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

fn key_from_message(m: &str) -> Option<String> {
    // serde messages name fields as "unknown field `x`" or "missing field `x`".
    let start = m.find('`')? + 1;
    let end = start + m[start..].find('`')?;
    Some(m[start..end].to_string())
}

/// The line of the deepest part of `path` present in the document, and the
/// dotted key.
fn locate(text: &str, path: &[PathPart]) -> (usize, String) {
    let key = path
        .iter()
        .map(|p| match p {
            PathPart::Key(k) => k.to_string(),
            PathPart::Idx(i) => format!("[{i}]"),
        })
        .collect::<Vec<_>>()
        .join(".")
        .replace(".[", "[");
    let Ok(doc) = text.parse::<toml_edit::ImDocument<String>>() else {
        return (0, key);
    };
    let mut item: &toml_edit::Item = doc.as_item();
    let mut line = 1;
    for p in path {
        let next = match p {
            PathPart::Key(k) => item.get(k),
            PathPart::Idx(i) => item.get(*i),
        };
        match next {
            Some(n) => {
                item = n;
                let span = match n {
                    toml_edit::Item::Value(v) => v.span(),
                    toml_edit::Item::Table(t) => t.span(),
                    toml_edit::Item::ArrayOfTables(a) => a.span(),
                    toml_edit::Item::None => None,
                };
                if let Some(s) = span {
                    line = line_of(text, s.start);
                }
            }
            None => break,
        }
    }
    (line, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = ["127.0.0.1:6432"]

[[target]]
name = "pg"
database = "postgres"
host = "127.0.0.1"
user = "postgres"

[[identity]]
name = "demo"
token_hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
targets = ["pg"]
"#;

    #[test]
    fn good_config_parses() {
        let c = Config::parse(GOOD, "g.toml", Path::new(".")).unwrap();
        assert_eq!(c.targets[0].port, 5432);
        assert_eq!(c.targets[0].tls, UpstreamTls::Prefer);
    }

    #[test]
    fn bad_value_names_line_and_key() {
        let bad = GOOD.replace("targets = [\"pg\"]", "targets = [\"nope\"]");
        let e = Config::parse(&bad, "g.toml", Path::new(".")).unwrap_err();
        assert_eq!(e.line, 14, "{e}");
        assert_eq!(e.key, "identity[0].targets[0]");
        assert!(
            e.to_string()
                .starts_with("g.toml:14: identity[0].targets[0]: no target"),
            "{e}"
        );
    }

    #[test]
    fn bad_listen_names_line() {
        let bad = GOOD.replace("127.0.0.1:6432", "localhost");
        let e = Config::parse(&bad, "g.toml", Path::new(".")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "server.listen[0]"), "{e}");
    }

    #[test]
    fn unknown_key_is_reported_with_line() {
        let bad = GOOD.replace("user = \"postgres\"", "user = \"postgres\"\nsslmode = \"x\"");
        let e = Config::parse(&bad, "g.toml", Path::new(".")).unwrap_err();
        assert_eq!(e.line, 10, "{e}");
        assert_eq!(e.key, "sslmode");
    }

    #[test]
    fn wrong_type_is_reported_with_line() {
        let bad = GOOD.replace("host = \"127.0.0.1\"", "host = \"127.0.0.1\"\nport = \"x\"");
        let e = Config::parse(&bad, "g.toml", Path::new(".")).unwrap_err();
        assert_eq!(e.line, 9, "{e}");
    }
}

//! `[[target]]`: the databases behind gatehouse, their upstream accounts and
//! where their passwords come from.

use super::locate::{Invalid, PathPart};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

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
    /// The protocol gatehouse speaks to it; only clients of a listener of
    /// the same protocol reach it.
    #[serde(default)]
    pub protocol: super::Protocol,
    pub host: String,
    /// Default: the protocol's port (5432, 3306).
    #[serde(default)]
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
    /// How a PostgreSQL server may have gatehouse authenticate (like
    /// libpq's `require_auth`): any other request is refused before a
    /// credential leaves. Default: SCRAM-SHA-256 (which must end with the
    /// server's proof) or no authentication at all (nothing is sent).
    /// `md5` sends a hash a listener can replay; `password` sends the
    /// password itself and is allowed only with `tls = "verify-full"`.
    #[serde(default = "default_auth")]
    pub auth: Vec<UpstreamAuth>,
    /// CA bundle for `verify-full` (default: the built-in web roots).
    pub ca_file: Option<PathBuf>,
    /// Name checked in the server certificate (default: `host`).
    pub tls_server_name: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Idle upstream connections kept for reuse (all workers, upstream
    /// accounts and client startup parameters together). With a pool, a session logs
    /// in upstream (or takes a kept connection) at its first message, not at
    /// login, and a connection its session left idle is reset with
    /// `pool_reset_query` and kept. 0: no pool; every session logs in
    /// upstream at login and its connection closes with it.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// A kept connection unused this long is closed.
    #[serde(default = "default_pool_idle_timeout")]
    pub pool_idle_timeout_secs: u64,
    /// A connection older than this is closed instead of kept.
    #[serde(default = "default_pool_lifetime")]
    pub pool_lifetime_secs: u64,
    /// Run on a connection before it is kept for another session
    /// (PostgreSQL; a MySQL connection is reset with COM_RESET_CONNECTION).
    #[serde(default = "default_pool_reset_query")]
    pub pool_reset_query: String,
    /// More upstream accounts on this target, beside `user` (the default
    /// account); policy roles choose one by name (`[policy.roles.X.accounts]`).
    #[serde(default, rename = "account")]
    pub accounts: Vec<Account>,
}

/// An upstream account: the role gatehouse logs in as, and its password.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The account's name in policy.
    pub name: String,
    pub user: String,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
}

impl Account {
    pub fn resolve_password(&self) -> Result<Option<String>, String> {
        resolve_secret(&self.password, &self.password_env, &self.password_file)
    }
}

/// A secret given inline, by environment variable or by file.
pub(super) fn resolve_secret(
    inline: &Option<String>,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<String>, String> {
    if let Some(p) = inline {
        return Ok(Some(p.clone()));
    }
    if let Some(var) = env {
        return std::env::var(var)
            .map(Some)
            .map_err(|_| format!("environment variable {var} is not set"));
    }
    if let Some(f) = file {
        return std::fs::read_to_string(f)
            .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|e| format!("cannot read {}: {e}", f.display()));
    }
    Ok(None)
}

fn default_connect_timeout() -> u64 {
    5
}
fn default_pool_size() -> usize {
    20
}
fn default_pool_idle_timeout() -> u64 {
    300
}
fn default_pool_lifetime() -> u64 {
    3600
}
fn default_pool_reset_query() -> String {
    "DISCARD ALL".into()
}

/// A way a PostgreSQL server may ask gatehouse to authenticate.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum UpstreamAuth {
    /// SCRAM-SHA-256, ending with the server's signature verified.
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// The server asks for nothing (trust): no credential is sent.
    #[serde(rename = "none")]
    None,
    /// An MD5 hash of password and user: replayable by whoever sees it.
    #[serde(rename = "md5")]
    Md5,
    /// The password in clear (only under `tls = "verify-full"`).
    #[serde(rename = "password")]
    Password,
}

impl UpstreamAuth {
    pub fn name(self) -> &'static str {
        match self {
            UpstreamAuth::ScramSha256 => "scram-sha-256",
            UpstreamAuth::None => "none",
            UpstreamAuth::Md5 => "md5",
            UpstreamAuth::Password => "password",
        }
    }
}

fn default_auth() -> Vec<UpstreamAuth> {
    vec![UpstreamAuth::ScramSha256, UpstreamAuth::None]
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

impl Target {
    pub fn upstream_database(&self) -> &str {
        self.upstream_database.as_deref().unwrap_or(&self.database)
    }

    /// Why this target's password could be captured on its way upstream,
    /// for `gatehouse check` to warn about.
    pub fn credential_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.auth.contains(&UpstreamAuth::Md5) {
            out.push(format!(
                "target `{}`: auth allows md5, a hash anyone who sees it can replay{}",
                self.name,
                if self.tls == UpstreamTls::VerifyFull {
                    ""
                } else {
                    " (and TLS does not verify the server)"
                }
            ));
        }
        out
    }

    /// Resolves the upstream password from its source.
    pub fn resolve_password(&self) -> Result<Option<String>, String> {
        resolve_secret(&self.password, &self.password_env, &self.password_file)
    }
}

/// Checks every target and resolves its paths; returns the target names.
pub(super) fn validate_targets(targets: &mut [Target], base: &Path) -> Result<HashSet<String>, Invalid> {
    use PathPart::{Idx, Key};
    let mut names = HashSet::new();
    for (i, t) in targets.iter_mut().enumerate() {
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
            t.port = t.protocol.default_port();
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
        if t.auth.is_empty() {
            return Err((k("auth"), "name at least one way to authenticate".into()));
        }
        if t.auth.contains(&UpstreamAuth::Password) && t.tls != UpstreamTls::VerifyFull {
            return Err((
                k("auth"),
                "\"password\" sends the password itself: only with tls = \"verify-full\"".into(),
            ));
        }
        if t.protocol == super::Protocol::Mysql && t.auth != default_auth() {
            return Err((
                k("auth"),
                "applies to PostgreSQL targets (a MySQL target never sends its password in clear without verified TLS)"
                    .into(),
            ));
        }
        if t.connect_timeout_secs == 0 {
            return Err((k("connect_timeout_secs"), "must be at least 1".into()));
        }
        if t.pool_size > 10_000 {
            return Err((k("pool_size"), "must be at most 10000".into()));
        }
        if t.pool_size > 0 && (t.pool_idle_timeout_secs == 0 || t.pool_lifetime_secs == 0) {
            return Err((
                k("pool_idle_timeout_secs"),
                "pool_idle_timeout_secs and pool_lifetime_secs must be at least 1".into(),
            ));
        }
        if t.pool_size > 0 && (t.pool_reset_query.trim().is_empty() || t.pool_reset_query.contains('\0')) {
            return Err((k("pool_reset_query"), "must be a statement (no NUL byte)".into()));
        }
        let mut accounts = std::collections::HashSet::new();
        for (j, a) in t.accounts.iter_mut().enumerate() {
            let k = |k: &'static str| vec![Key("target"), Idx(i), Key("account"), Idx(j), Key(k)];
            if a.name.is_empty() || a.name == "default" || !accounts.insert(a.name.clone()) {
                return Err((
                    k("name"),
                    format!("account name `{}` is empty, `default` or used twice", a.name),
                ));
            }
            if a.user.is_empty() {
                return Err((k("user"), "must not be empty".into()));
            }
            let n = [
                a.password.is_some(),
                a.password_env.is_some(),
                a.password_file.is_some(),
            ];
            if n.iter().filter(|&&b| b).count() > 1 {
                return Err((
                    k("password"),
                    "give only one of password, password_env, password_file".into(),
                ));
            }
            if let Some(f) = &mut a.password_file {
                *f = base.join(&*f);
            }
            if let Err(e) = a.resolve_password() {
                let key = if a.password_env.is_some() {
                    "password_env"
                } else {
                    "password_file"
                };
                return Err((k(key), e));
            }
        }
    }
    Ok(names)
}

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
    /// OIDC tokens as passwords, beside the static identities.
    pub oidc: Option<Oidc>,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub scan: Scan,
    #[serde(default)]
    pub admin: Admin,
    /// Statement policy per role; absent: every statement is allowed.
    pub policy: Option<PolicyConfig>,
    /// Where new reviews are announced: webhooks (Slack, signed JSON), e-mail.
    #[serde(default)]
    pub notify: Notify,
    /// Session recording; absent: sessions are not recorded.
    pub recording: Option<Recording>,
}

/// What of results goes into a recording.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default)]
#[serde(rename_all = "lowercase")]
pub enum ResultsMode {
    /// Statements and decisions only.
    None,
    /// Plus per result: columns, row count, masked-value counts, errors.
    #[default]
    Summary,
    /// Plus the rows as the client saw them (masked), capped per statement.
    Full,
}

/// Session recording, written by the control plane.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Recording {
    /// Where recordings go (one file per session, by day).
    pub dir: PathBuf,
    /// Results recorded unless a policy role says otherwise.
    pub results: ResultsMode,
    /// `full`: rows recorded per statement, at most.
    pub full_max_rows: u64,
    /// `full`: bytes of rows recorded per statement, at most.
    pub full_max_bytes: u64,
    /// Open files are synced to disk at least this often (and at session end).
    pub sync_interval_ms: u64,
    /// Writer threads (sessions are spread over them).
    pub writers: usize,
    /// Events queued per writer before sessions wait (statements) or result
    /// rows are dropped with a gap record.
    pub queue_events: usize,
    /// Recordings older than this are deleted (0: kept).
    pub retention_days: u64,
    /// Past this total size the oldest recordings are deleted (0: no limit).
    pub max_total_bytes: u64,
}

impl Default for Recording {
    fn default() -> Self {
        Recording {
            dir: PathBuf::from("/var/lib/gatehouse/recordings"),
            results: ResultsMode::Summary,
            full_max_rows: 10_000,
            full_max_bytes: 8 << 20,
            sync_interval_ms: 1000,
            writers: 1,
            queue_events: 1024,
            retention_days: 90,
            max_total_bytes: 0,
        }
    }
}

/// What a statement of a class gets.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Approve,
    Deny,
}

/// Guardrail flags (the names of `sql::Flags`; a test keeps them equal).
pub const GUARDRAIL_FLAGS: &[&str] = &[
    "delete_without_where",
    "update_without_where",
    "drop",
    "truncate",
    "alter_system",
    "copy_program",
    "copy_from",
    "file_access",
    "set_role",
    "do_block",
    "call",
    "execute",
    "row_locks",
    "lock_table",
    "select_into",
    "upsert",
    "data_modifying_cte",
    "explain_analyze",
    "notify",
    "grant",
    "role_admin",
    "maintenance",
    "side_effect_function",
    "guarded_setting",
    "read_only_override",
    "lexical_setting",
    "volatile_function",
    "unresolved_function",
];

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The role of identities that carry none of the roles below.
    pub default_role: Option<String>,
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, RolePolicyConfig>,
    #[serde(default, rename = "guardrail")]
    pub guardrails: Vec<GuardrailConfig>,
    /// More functions with side effects, classed as admin when called.
    #[serde(default)]
    pub side_effect_functions: Vec<String>,
    /// Functions (optionally `schema.name`) that only read whatever their
    /// volatility says, e.g. an extension's `uuid_generate_v4`: calls of
    /// them stay reads. Others are classed by the target's catalog.
    #[serde(default)]
    pub read_functions: Vec<String>,
    /// Functions that insert or update rows but neither delete nor change
    /// the schema, e.g. `app.record_event`: calls of them are writes. Other
    /// volatile user functions are writes where the upstream session is
    /// read-only and `unknown` elsewhere (their effect cannot be seen).
    #[serde(default)]
    pub write_functions: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePolicyConfig {
    #[serde(default = "allow")]
    pub read: Verdict,
    #[serde(default = "approve")]
    pub write: Verdict,
    #[serde(default = "approve")]
    pub delete: Verdict,
    #[serde(default = "deny")]
    pub ddl: Verdict,
    #[serde(default = "deny")]
    pub admin: Verdict,
    /// Statements gatehouse cannot classify are treated as the strictest class.
    #[serde(default = "deny")]
    pub unknown: Verdict,
    /// Rows per result; past it the result is cut with an error.
    pub max_rows: Option<u64>,
    /// Roles whose members may approve this role's held statements.
    #[serde(default)]
    pub approvers: Vec<String>,
    #[serde(default = "one")]
    pub approvals_required: u32,
    #[serde(default = "five_minutes")]
    pub approval_timeout_secs: u64,
    /// Targets members of this role reach, by name (`*`: all); absent: the
    /// role does not restrict reach (the identity's own `targets` still do).
    pub targets: Option<Vec<String>>,
    /// Target name (or `*`) → the target's `[[target.account]]` members of
    /// this role log in upstream as; otherwise the target's default account.
    #[serde(default)]
    pub accounts: std::collections::BTreeMap<String, String>,
    /// Limits per identity and minute, over all its sessions.
    pub budget: Option<BudgetConfig>,
    /// Results recorded for members of this role (over `[recording]
    /// results`); with several roles, the most detailed.
    pub record_results: Option<ResultsMode>,
    /// Secret rules (by id) whose findings members of this role see
    /// unmasked, e.g. a DBA role and `postgres-password-hash`. Every other
    /// rule masks. With several roles, a rule any role exempts is exempt.
    #[serde(default)]
    pub unmasked_rules: Vec<String>,
}

/// Per-identity limits per minute (a sliding minute). Past one, the
/// identity's next statements are held for approval or denied.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub statements_per_minute: Option<u64>,
    pub rows_per_minute: Option<u64>,
    pub bytes_per_minute: Option<u64>,
    /// `approve` (hold the statement for a reviewer; an approval for minutes
    /// lifts the budget for that long) or `deny`.
    #[serde(default = "approve")]
    pub action: Verdict,
}

fn allow() -> Verdict {
    Verdict::Allow
}
fn approve() -> Verdict {
    Verdict::Approve
}
fn deny() -> Verdict {
    Verdict::Deny
}
fn one() -> u32 {
    1
}
fn five_minutes() -> u64 {
    300
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailConfig {
    pub id: String,
    /// The statement flag that trips it (see `GUARDRAIL_FLAGS`).
    pub flag: String,
    /// What the client is told (SQLSTATE 42501).
    pub message: String,
    /// Roles it applies to; empty: everyone.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Announcements of new reviews, sent by the control plane.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Notify {
    /// The admin API's URL as approvers reach it, put in messages
    /// (default: `http(s)://` and `[admin] listen`).
    pub admin_url: Option<String>,
    #[serde(rename = "webhook")]
    pub webhooks: Vec<Webhook>,
    pub smtp: Option<Smtp>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebhookKind {
    /// A Slack incoming webhook: `{"text": ...}`.
    Slack,
    /// The review as JSON, signed with HMAC-SHA256.
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub kind: WebhookKind,
    /// `https://` (`http://` only to a loopback host). A Slack URL is a
    /// credential: prefer `url_env`.
    pub url: Option<String>,
    /// The environment variable holding the URL.
    pub url_env: Option<String>,
    /// `json`: the environment variable holding the HMAC key.
    pub secret_env: Option<String>,
}

impl Webhook {
    /// The URL, from the config or its environment variable.
    pub fn resolve_url(&self) -> Result<String, String> {
        match (&self.url, &self.url_env) {
            (Some(u), _) => Ok(u.clone()),
            (None, Some(var)) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set")),
            (None, None) => Err("one of url, url_env is needed".into()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    /// The mail server, `host:port`.
    pub server: String,
    pub from: String,
    pub to: Vec<String>,
    /// Upgrade to TLS (server checked against the built-in web roots)
    /// before anything else; off only for a relay you trust the path to.
    #[serde(default = "yes")]
    pub starttls: bool,
    /// AUTH PLAIN with this user and the password in `password_env`.
    pub username: Option<String>,
    pub password_env: Option<String>,
}

fn yes() -> bool {
    true
}

/// The admin API: health, metrics, sessions; served by the control plane.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Address of the admin HTTP(S) server; no server without it.
    pub listen: Option<String>,
    pub tls: Option<ServerTls>,
    /// Bearer tokens for the API, stored hashed.
    #[serde(rename = "token")]
    pub tokens: Vec<AdminToken>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    pub name: String,
    /// `sha256:<64 hex>` of the token (`gatehouse token hash`).
    pub token_hash: String,
    /// Any of `admin`, `auditor`, `approver`.
    pub roles: Vec<String>,
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
    /// The mask per rule id, over the rule's own: `redact`, `partial` or `hash`.
    pub masks: std::collections::BTreeMap<String, String>,
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
            masks: Default::default(),
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
    /// Run on a connection before it is kept for another session.
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
fn resolve_secret(
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

fn default_pg_port() -> u16 {
    5432
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

/// OIDC: a client presents a JWT from its identity provider as its
/// password. See `src/identity/oidc.rs` for the checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Oidc {
    /// The `iss` every token must carry, exactly.
    pub issuer: String,
    /// The accepted `aud` value, or several.
    pub audience: OneOrMany,
    /// The provider's public keys: a JWKS file, or an `https://` URL
    /// (`http://` only to a loopback address, for tests).
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    /// CA bundle for `jwks_url` (default: the built-in web roots).
    pub jwks_ca_file: Option<PathBuf>,
    /// Regular JWKS refresh, in seconds.
    pub refresh_secs: u64,
    /// Least time between two fetches: an unknown `kid` or a failed fetch
    /// asks for one no sooner than this (nor later than `refresh_secs`).
    pub refresh_min_secs: u64,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Accepted signature algorithms: any of `RS256`, `ES256`, `EdDSA`.
    pub algorithms: Vec<String>,
    /// The claim holding the identity name; the client's `user` must equal it.
    pub user_claim: String,
    pub user_must_match: bool,
    /// The claim holding the groups (a dotted path reaches nested claims,
    /// e.g. `realm_access.roles`).
    pub roles_claim: String,
    /// Group → gatehouse role(s); unmapped groups are ignored...
    pub role_map: std::collections::BTreeMap<String, OneOrMany>,
    /// ...unless this is set, when they become roles of the same name.
    pub role_passthrough: bool,
    /// Role → targets it reaches (`*` for all). Without this table, an OIDC
    /// identity reaches every target (the policy engine will refine this).
    pub role_targets: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

impl Default for Oidc {
    fn default() -> Self {
        Oidc {
            issuer: String::new(),
            audience: OneOrMany::Many(Vec::new()),
            jwks_file: None,
            jwks_url: None,
            jwks_ca_file: None,
            refresh_secs: 300,
            refresh_min_secs: 30,
            leeway_secs: 60,
            algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
            user_claim: "sub".into(),
            user_must_match: true,
            roles_claim: "groups".into(),
            role_map: Default::default(),
            role_passthrough: false,
            role_targets: None,
        }
    }
}

/// A string, or an array of strings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// An `http://` URL is accepted only to a loopback host.
fn loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    let host = if authority.starts_with('[') {
        authority.split(']').next().map(|h| format!("{h}]")).unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or("").to_string()
    };
    matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]")
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
        resolve_secret(&self.password, &self.password_env, &self.password_file)
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
        for (id, m) in &self.scan.masks {
            if !matches!(m.as_str(), "redact" | "partial" | "hash") {
                return Err((
                    vec![Key("scan"), Key("masks"), PathPart::Name(id.clone())],
                    format!("`{m}` is not a mask; one of redact, partial, hash"),
                ));
            }
        }
        if self.scan.max_value_bytes == 0 {
            return Err((vec![Key("scan"), Key("max_value_bytes")], "must be at least 1".into()));
        }
        if let Some(a) = &self.admin.listen {
            if a.parse::<SocketAddr>().is_err() {
                return Err((
                    vec![Key("admin"), Key("listen")],
                    format!("`{a}` is not an address like 127.0.0.1:9090"),
                ));
            }
        }
        if let Some(tls) = &mut self.admin.tls {
            for (k, p) in [("cert_file", &mut tls.cert_file), ("key_file", &mut tls.key_file)] {
                *p = base.join(&*p);
                if !p.is_file() {
                    return Err((
                        vec![Key("admin"), Key("tls"), Key(k)],
                        format!("{} is not a readable file", p.display()),
                    ));
                }
            }
        }
        for (i, t) in self.admin.tokens.iter().enumerate() {
            let k = |k: &'static str| vec![Key("admin"), Key("token"), Idx(i), Key(k)];
            if crate::identity::parse_token_hash(&t.token_hash).is_none() {
                return Err((
                    k("token_hash"),
                    "must be `sha256:` and 64 hex digits (make one with `gatehouse token hash`)".into(),
                ));
            }
            for (j, r) in t.roles.iter().enumerate() {
                // Beyond the API's roles, a token may carry a role that
                // approves held statements (`approvers` under [policy.roles]).
                let approver_role = self
                    .policy
                    .as_ref()
                    .is_some_and(|p| p.roles.values().any(|pr| pr.approvers.contains(r)));
                if !matches!(r.as_str(), "admin" | "auditor" | "approver") && !approver_role {
                    return Err((
                        vec![Key("admin"), Key("token"), Idx(i), Key("roles"), Idx(j)],
                        format!(
                            "`{r}` is not one of admin, auditor, approver, nor an approver role under [policy.roles]"
                        ),
                    ));
                }
            }
        }
        validate_notify(&self.notify)?;
        if let Some(r) = &mut self.recording {
            let k = |k: &'static str| vec![Key("recording"), Key(k)];
            r.dir = base.join(&r.dir);
            if r.writers == 0 || r.writers > 64 {
                return Err((k("writers"), "must be between 1 and 64".into()));
            }
            if r.queue_events < 16 {
                return Err((k("queue_events"), "must be at least 16".into()));
            }
            if r.sync_interval_ms == 0 {
                return Err((k("sync_interval_ms"), "must be at least 1".into()));
            }
        }
        if let Some(p) = &self.policy {
            for (name, r) in &p.roles {
                let k = |k: &'static str| vec![Key("policy"), Key("roles"), PathPart::Name(name.clone()), Key(k)];
                if r.approvals_required == 0 {
                    return Err((k("approvals_required"), "must be at least 1".into()));
                }
                if r.approval_timeout_secs == 0 {
                    return Err((k("approval_timeout_secs"), "must be at least 1".into()));
                }
                if r.max_rows == Some(0) {
                    return Err((k("max_rows"), "must be at least 1".into()));
                }
                let budget_holds = r.budget.as_ref().is_some_and(|b| b.action == Verdict::Approve);
                let holds =
                    [r.read, r.write, r.delete, r.ddl, r.admin, r.unknown].contains(&Verdict::Approve) || budget_holds;
                if let Some(ts) = &r.targets {
                    for (j, t) in ts.iter().enumerate() {
                        if t != "*" && !names.contains(t) {
                            let mut key = k("targets");
                            key.push(Idx(j));
                            return Err((key, format!("no target is named `{t}`")));
                        }
                    }
                }
                for (target, account) in &r.accounts {
                    let mut key = k("accounts");
                    key.push(PathPart::Name(target.clone()));
                    let reached = |t: &Target| {
                        r.targets
                            .as_ref()
                            .is_none_or(|ts| ts.iter().any(|x| x == "*" || x == &t.name))
                    };
                    let on: Vec<&Target> = if target == "*" {
                        self.targets.iter().filter(|t| reached(t)).collect()
                    } else {
                        match self.targets.iter().find(|t| &t.name == target) {
                            Some(t) => vec![t],
                            None => return Err((key, format!("no target is named `{target}`"))),
                        }
                    };
                    for t in on {
                        if account != "default" && !t.accounts.iter().any(|a| &a.name == account) {
                            return Err((
                                key,
                                format!("target `{}` has no [[target.account]] named `{account}`", t.name),
                            ));
                        }
                    }
                }
                if let Some(b) = &r.budget {
                    let limits = [
                        ("statements_per_minute", b.statements_per_minute),
                        ("rows_per_minute", b.rows_per_minute),
                        ("bytes_per_minute", b.bytes_per_minute),
                    ];
                    if limits.iter().all(|(_, v)| v.is_none()) {
                        return Err((
                            k("budget"),
                            "give at least one of statements_per_minute, rows_per_minute, bytes_per_minute".into(),
                        ));
                    }
                    for (name, v) in limits {
                        if v == Some(0) {
                            let mut key = k("budget");
                            key.push(Key(name));
                            return Err((key, "must be at least 1".into()));
                        }
                    }
                    if b.action == Verdict::Allow {
                        let mut key = k("budget");
                        key.push(Key("action"));
                        return Err((key, "must be `approve` or `deny`".into()));
                    }
                }
                if holds && r.approvers.is_empty() {
                    return Err((
                        k("approvers"),
                        "a role with `approve` verdicts needs approver roles".into(),
                    ));
                }
            }
            if let Some(d) = &p.default_role {
                if !p.roles.contains_key(d) {
                    return Err((
                        vec![Key("policy"), Key("default_role")],
                        format!("no role `{d}` under [policy.roles]"),
                    ));
                }
            }
            for (i, g) in p.guardrails.iter().enumerate() {
                if !GUARDRAIL_FLAGS.contains(&g.flag.as_str()) {
                    return Err((
                        vec![Key("policy"), Key("guardrail"), Idx(i), Key("flag")],
                        format!(
                            "`{}` is not a statement flag; one of: {}",
                            g.flag,
                            GUARDRAIL_FLAGS.join(", ")
                        ),
                    ));
                }
            }
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
        if let Some(o) = &mut self.oidc {
            validate_oidc(o, base, &names)?;
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

/// An address for SMTP's MAIL FROM / RCPT TO: no spaces, brackets or line breaks.
fn mailbox_ok(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !a
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "<>,;\"()[]\\".contains(c))
}

/// `host:port` of a mail server, split.
pub fn smtp_host_port(server: &str) -> Option<(&str, u16)> {
    let (host, port) = server.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    (!host.is_empty() && !host.contains(['/', '@', ' '])).then_some((host, port))
}

fn validate_notify(n: &Notify) -> Result<(), (Vec<PathPart>, String)> {
    use PathPart::{Idx, Key};
    if let Some(u) = &n.admin_url {
        let lower = u.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) || u.contains(char::is_whitespace) {
            return Err((
                vec![Key("notify"), Key("admin_url")],
                "must be an http:// or https:// URL, as approvers reach the admin API".into(),
            ));
        }
    }
    for (i, w) in n.webhooks.iter().enumerate() {
        let k = |k: &'static str| vec![Key("notify"), Key("webhook"), Idx(i), Key(k)];
        let url = match (&w.url, &w.url_env) {
            (Some(_), Some(_)) => return Err((k("url_env"), "give only one of url, url_env".into())),
            (None, None) => {
                return Err((
                    vec![Key("notify"), Key("webhook"), Idx(i)],
                    "one of url, url_env is needed".into(),
                ))
            }
            _ => w.resolve_url().map_err(|e| (k("url_env"), e))?,
        };
        let key = if w.url.is_some() { "url" } else { "url_env" };
        let https = url.len() > 8 && url.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("https://"));
        if !https && !loopback_http(&url) {
            return Err((
                k(key),
                "must be an https:// URL (http:// only to 127.0.0.1, localhost or [::1])".into(),
            ));
        }
        match (w.kind, &w.secret_env) {
            (WebhookKind::Json, None) => {
                return Err((
                    k("secret_env"),
                    "a json webhook is signed: name the environment variable holding its key".into(),
                ))
            }
            (WebhookKind::Json, Some(var)) => {
                if std::env::var(var).map(|v| v.is_empty()).unwrap_or(true) {
                    return Err((k("secret_env"), format!("environment variable {var} is not set")));
                }
            }
            (WebhookKind::Slack, Some(_)) => {
                return Err((k("secret_env"), "only json webhooks are signed".into()));
            }
            (WebhookKind::Slack, None) => {}
        }
    }
    if let Some(m) = &n.smtp {
        let k = |k: &'static str| vec![Key("notify"), Key("smtp"), Key(k)];
        let Some((host, _)) = smtp_host_port(&m.server) else {
            return Err((
                k("server"),
                format!("`{}` is not host:port, e.g. 127.0.0.1:25", m.server),
            ));
        };
        if !mailbox_ok(&m.from) {
            return Err((
                k("from"),
                format!("`{}` is not an address like gatehouse@example.com", m.from),
            ));
        }
        if m.to.is_empty() {
            return Err((k("to"), "at least one address is needed".into()));
        }
        for (i, a) in m.to.iter().enumerate() {
            if !mailbox_ok(a) {
                return Err((
                    vec![Key("notify"), Key("smtp"), Key("to"), Idx(i)],
                    format!("`{a}` is not an address like dba@example.com"),
                ));
            }
        }
        match (&m.username, &m.password_env) {
            (Some(_), None) => return Err((k("password_env"), "a username needs password_env".into())),
            (None, Some(_)) => return Err((k("username"), "password_env needs a username".into())),
            (Some(_), Some(var)) => {
                if std::env::var(var).is_err() {
                    return Err((k("password_env"), format!("environment variable {var} is not set")));
                }
                let loopback = matches!(host, "127.0.0.1" | "localhost" | "::1");
                if !m.starttls && !loopback {
                    return Err((
                        k("starttls"),
                        "a password is sent only over TLS: set starttls = true (or use a relay on loopback)".into(),
                    ));
                }
            }
            (None, None) => {}
        }
    }
    Ok(())
}

fn validate_oidc(
    o: &mut Oidc,
    base: &Path,
    targets: &std::collections::HashSet<String>,
) -> Result<(), (Vec<PathPart>, String)> {
    use PathPart::{Idx, Key};
    let k = |k: &'static str| vec![Key("oidc"), Key(k)];
    if o.issuer.is_empty() {
        return Err((k("issuer"), "is required: the `iss` of the provider's tokens".into()));
    }
    let auds = o.audience.to_vec();
    if auds.is_empty() || auds.iter().any(|a| a.is_empty()) {
        return Err((
            k("audience"),
            "is required: the `aud` tokens for this gateway carry".into(),
        ));
    }
    match (&mut o.jwks_file, &o.jwks_url) {
        (Some(_), Some(_)) => return Err((k("jwks_url"), "give only one of jwks_file, jwks_url".into())),
        (None, None) => return Err((vec![Key("oidc")], "one of jwks_file, jwks_url is needed".into())),
        (Some(f), None) => {
            *f = base.join(&*f);
            if !f.is_file() {
                return Err((k("jwks_file"), format!("{} is not a readable file", f.display())));
            }
        }
        (None, Some(u)) => {
            let https = u.len() > 8 && u.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("https://"));
            if !https && !loopback_http(u) {
                return Err((
                    k("jwks_url"),
                    "must be an https:// URL (http:// only to 127.0.0.1, localhost or [::1])".into(),
                ));
            }
        }
    }
    if let Some(ca) = &mut o.jwks_ca_file {
        if o.jwks_url.is_none() {
            return Err((k("jwks_ca_file"), "is used only with jwks_url".into()));
        }
        *ca = base.join(&*ca);
        if !ca.is_file() {
            return Err((k("jwks_ca_file"), format!("{} is not a readable file", ca.display())));
        }
    }
    if !(1..=604_800).contains(&o.refresh_secs) {
        return Err((k("refresh_secs"), "must be between 1 and 604800 (a week)".into()));
    }
    if o.leeway_secs > 3600 {
        return Err((k("leeway_secs"), "must be at most 3600".into()));
    }
    if o.algorithms.is_empty() {
        return Err((k("algorithms"), "at least one of RS256, ES256, EdDSA".into()));
    }
    for (i, a) in o.algorithms.iter().enumerate() {
        if !matches!(a.as_str(), "RS256" | "ES256" | "EdDSA") {
            let why = if a.eq_ignore_ascii_case("none") || a.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("HS")) {
                format!(
                    "`{a}` is never accepted: tokens must be signed with a public-key algorithm (RS256, ES256, EdDSA)"
                )
            } else {
                format!("`{a}` is not one of RS256, ES256, EdDSA")
            };
            return Err((vec![Key("oidc"), Key("algorithms"), Idx(i)], why));
        }
    }
    if o.user_claim.is_empty() {
        return Err((k("user_claim"), "must not be empty".into()));
    }
    if o.roles_claim.is_empty() {
        return Err((k("roles_claim"), "must not be empty".into()));
    }
    for (group, roles) in &o.role_map {
        if roles.to_vec().iter().any(|r| r.is_empty()) {
            return Err((k("role_map"), format!("group `{group}`: a role name is empty")));
        }
    }
    if let Some(rt) = &o.role_targets {
        for (role, list) in rt {
            for t in list {
                if t != "*" && !targets.contains(t) {
                    return Err((k("role_targets"), format!("role `{role}`: no target is named `{t}`")));
                }
            }
        }
    }
    Ok(())
}

/// One step of a key path.
#[derive(Debug, Clone)]
pub enum PathPart {
    Key(&'static str),
    /// A key named by the document (a role name, a rule id).
    Name(String),
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
            PathPart::Name(k) => k.clone(),
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
            PathPart::Name(k) => item.get(k.as_str()),
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
    fn accounts_reach_and_budgets_are_checked() {
        let ok = format!(
            "{GOOD}[[target.account]]\nname = \"ro\"\nuser = \"reader\"\n\
             [policy.roles.r]\ntargets = [\"pg\"]\naccounts = {{ pg = \"ro\" }}\nwrite = \"deny\"\ndelete = \"deny\"\n\
             [policy.roles.r.budget]\nrows_per_minute = 10\naction = \"deny\"\n"
        );
        Config::parse(&ok, "g.toml", Path::new(".")).unwrap();
        let e = Config::parse(&ok.replace("pg = \"ro\"", "pg = \"rw\""), "g.toml", Path::new(".")).unwrap_err();
        assert_eq!(e.key, "policy.roles.r.accounts.pg", "{e}");
        assert!(e.message.contains("no [[target.account]] named `rw`"), "{e}");
        assert_eq!(e.line, 20, "{e}");
        let e = Config::parse(
            &ok.replace("targets = [\"pg\"]", "targets = [\"x\"]"),
            "g.toml",
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.key, "policy.roles.r.targets[0]", "{e}");
        let e = Config::parse(
            &ok.replace("rows_per_minute = 10", "rows_per_minute = 0"),
            "g.toml",
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.key, "policy.roles.r.budget.rows_per_minute", "{e}");
        let e = Config::parse(
            &ok.replace("action = \"deny\"", "action = \"approve\""),
            "g.toml",
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(
            e.key, "policy.roles.r.approvers",
            "a budget that holds needs approvers: {e}"
        );
        let e = Config::parse(
            &ok.replace("name = \"ro\"", "name = \"default\""),
            "g.toml",
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.key, "target[0].account[0].name", "{e}");
    }

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

    #[test]
    fn oidc_section() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jwks.json"), "{}").unwrap();
        // [oidc] is line 15.
        let oidc = |body: &str| format!("{GOOD}[oidc]\n{body}");
        let ok = oidc(
            "issuer = \"https://idp\"\naudience = [\"gh\", \"gh2\"]\njwks_file = \"jwks.json\"\n\
             [oidc.role_map]\n\"db-admins\" = \"admin\"\nops = [\"a\", \"b\"]\n\
             [oidc.role_targets]\nadmin = [\"*\"]\na = [\"pg\"]\n",
        );
        let c = Config::parse(&ok, "g.toml", dir.path()).unwrap();
        let o = c.oidc.unwrap();
        assert_eq!(o.audience.to_vec(), vec!["gh", "gh2"]);
        assert_eq!(o.jwks_file.unwrap(), dir.path().join("jwks.json"));
        assert_eq!(o.role_map["ops"].to_vec(), vec!["a", "b"]);
        assert_eq!(
            (o.leeway_secs, o.user_claim.as_str(), o.roles_claim.as_str()),
            (60, "sub", "groups")
        );
        assert!(o.user_must_match);
        assert!(Config::parse(GOOD, "g.toml", dir.path()).unwrap().oidc.is_none());

        let base = "issuer = \"https://idp\"\naudience = \"gh\"\n";
        let cases: &[(&str, usize, &str, &str)] = &[
            ("audience = \"gh\"\njwks_file = \"jwks.json\"\n", 15, "oidc.issuer", "is required"),
            ("issuer = \"i\"\njwks_file = \"jwks.json\"\n", 15, "oidc.audience", "is required"),
            (base, 15, "oidc", "one of jwks_file, jwks_url"),
            ("issuer = \"i\"\naudience = \"gh\"\njwks_file = \"nope.json\"\n", 18, "oidc.jwks_file", "not a readable file"),
            ("issuer = \"i\"\naudience = \"gh\"\njwks_url = \"http://idp.example/jwks\"\n", 18, "oidc.jwks_url", "https://"),
            ("issuer = \"i\"\naudience = \"gh\"\njwks_url = \"http://127.0.0.1.evil/x\"\n", 18, "oidc.jwks_url", "https://"),
            ("issuer = \"i\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\njwks_url = \"https://x\"\n", 19, "oidc.jwks_url", "only one"),
            ("issuer = \"i\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\njwks_ca_file = \"jwks.json\"\n", 19, "oidc.jwks_ca_file", "only with jwks_url"),
            ("issuer = \"i\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\nalgorithms = [\"RS256\", \"HS256\"]\n", 19, "oidc.algorithms[1]", "never accepted"),
            ("issuer = \"i\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\nalgorithms = [\"none\"]\n", 19, "oidc.algorithms[0]", "never accepted"),
            ("issuer = \"i\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\nalgorithms = [\"PS256\"]\n", 19, "oidc.algorithms[0]", "not one of"),
            ("issuer = \"i\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\nleeway_secs = 7200\n", 19, "oidc.leeway_secs", "at most"),
            ("issuer = \"i\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\nrefresh_secs = 0\n", 19, "oidc.refresh_secs", "between 1 and"),
            ("issuer = \"i\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\n[oidc.role_targets]\nadmin = [\"nope\"]\n", 19, "oidc.role_targets", "no target is named `nope`"),
        ];
        for (body, line, key, msg) in cases {
            let e = Config::parse(&oidc(body), "g.toml", dir.path()).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (*line, *key), "{e}");
            assert!(e.message.contains(msg), "{e}");
        }
        let e = Config::parse(&oidc("issuer = \"i\"\nbogus = 1\n"), "g.toml", dir.path()).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (17, "bogus"), "{e}");
        assert!(loopback_http("http://127.0.0.1:8080/jwks"));
        assert!(loopback_http("http://[::1]:80/"));
        assert!(!loopback_http("http://127.0.0.1@evil/"));
        assert!(!loopback_http("http://127.0.0.1:80@evil/"));
    }

    #[test]
    fn notify_section() {
        std::env::set_var("GH_TEST_NOTIFY_SECRET", "s3cret");
        // [notify] is line 15.
        let notify = |body: &str| format!("{GOOD}[notify]\n{body}");
        let ok = notify(
            "admin_url = \"https://gh.example:9090/\"\n\
             [[notify.webhook]]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/x\"\n\
             [[notify.webhook]]\nkind = \"json\"\nurl = \"http://127.0.0.1:8080/hook\"\nsecret_env = \"GH_TEST_NOTIFY_SECRET\"\n\
             [notify.smtp]\nserver = \"127.0.0.1:2525\"\nfrom = \"gh@example.com\"\nto = [\"dba@example.com\"]\nstarttls = false\n",
        );
        let c = Config::parse(&ok, "g.toml", Path::new(".")).unwrap();
        assert_eq!(c.notify.webhooks.len(), 2);
        assert_eq!(c.notify.webhooks[1].kind, WebhookKind::Json);
        assert!(!c.notify.smtp.as_ref().unwrap().starttls);
        let d = Config::parse(GOOD, "g.toml", Path::new(".")).unwrap();
        assert!(d.notify.webhooks.is_empty() && d.notify.smtp.is_none());
        let smtp = "[notify.smtp]\nserver = \"127.0.0.1:2525\"\nfrom = \"gh@example.com\"\n";
        let cases: &[(&str, usize, &str, &str)] = &[
            ("admin_url = \"ftp://x\"\n", 16, "notify.admin_url", "http://"),
            ("[[notify.webhook]]\nkind = \"slack\"\nurl = \"http://hooks.example/x\"\n", 18, "notify.webhook[0].url", "https://"),
            ("[[notify.webhook]]\nkind = \"slack\"\n", 16, "notify.webhook[0]", "one of url, url_env"),
            ("[[notify.webhook]]\nkind = \"slack\"\nurl_env = \"GH_TEST_NOTIFY_UNSET\"\n", 18, "notify.webhook[0].url_env", "not set"),
            ("[[notify.webhook]]\nkind = \"json\"\nurl = \"https://x/h\"\n", 16, "notify.webhook[0].secret_env", "signed"),
            ("[[notify.webhook]]\nkind = \"json\"\nurl = \"https://x/h\"\nsecret_env = \"GH_TEST_NOTIFY_UNSET\"\n", 19, "notify.webhook[0].secret_env", "not set"),
            ("[[notify.webhook]]\nkind = \"slack\"\nurl = \"https://x/h\"\nsecret_env = \"GH_TEST_NOTIFY_SECRET\"\n", 19, "notify.webhook[0].secret_env", "only json"),
            ("[notify.smtp]\nserver = \"mail\"\nfrom = \"a@b\"\nto = [\"c@d\"]\n", 17, "notify.smtp.server", "host:port"),
            ("[notify.smtp]\nserver = \"mail:25\"\nfrom = \"a\"\nto = [\"c@d\"]\n", 18, "notify.smtp.from", "not an address"),
            (&format!("{smtp}to = []\n"), 19, "notify.smtp.to", "at least one"),
            (&format!("{smtp}to = [\"ok@x\", \"a@b>\\r\\nRCPT TO:<c@d\"]\n"), 19, "notify.smtp.to[1]", "not an address"),
            (&format!("{smtp}to = [\"c@d\"]\nusername = \"u\"\n"), 16, "notify.smtp.password_env", "needs password_env"),
            ("[notify.smtp]\nserver = \"mail.example:25\"\nfrom = \"a@b\"\nto = [\"c@d\"]\nstarttls = false\nusername = \"u\"\npassword_env = \"GH_TEST_NOTIFY_SECRET\"\n", 20, "notify.smtp.starttls", "only over TLS"),
        ];
        for (body, line, key, msg) in cases {
            let e = Config::parse(&notify(body), "g.toml", Path::new(".")).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (*line, *key), "{e}");
            assert!(e.message.contains(msg), "{e}");
        }
        let e = Config::parse(
            &notify("[[notify.webhook]]\nkind = \"teams\"\n"),
            "g.toml",
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.message.contains("unknown variant"), "{e}");
    }

    #[test]
    fn admin_tokens_may_carry_approver_roles() {
        let tok = "[admin]\n[[admin.token]]\nname = \"t\"\ntoken_hash = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\nroles = [\"approver\", \"dba\"]\n";
        let e = Config::parse(&format!("{GOOD}{tok}"), "g.toml", Path::new(".")).unwrap_err();
        assert_eq!(e.key, "admin.token[0].roles[1]", "{e}");
        let policy = "[policy.roles.agent]\napprovers = [\"dba\"]\n";
        Config::parse(&format!("{GOOD}{tok}{policy}"), "g.toml", Path::new(".")).unwrap();
    }
}

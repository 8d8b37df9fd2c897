//! `[fleet]`: several gatehouse instances sharing reviews, grants and
//! (as they land) budgets and recordings through a control database.
//!
//! Without `[fleet]` an instance keeps all of that in its own memory and
//! files, as a single appliance does.

use super::locate::{Invalid, PathPart};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One instance's place in a fleet.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// This instance's name, unique in the fleet: reviews, sessions and
    /// metrics carry it. Letters, digits, `.`, `_`, `-`; at most 63.
    pub instance: String,
    /// The control database, as libpq key/value pairs or a
    /// `postgresql://` URL, without a password (see `password_*`).
    /// gatehouse creates and migrates its schema `gatehouse` there.
    pub control: String,
    /// `host:port` at which the other instances reach this one's
    /// PostgreSQL listener (to pass on cancels); default: the first
    /// PostgreSQL listener, unless it is a wildcard address.
    pub advertise: Option<String>,
    /// The control database's password, one of: inline, from an
    /// environment variable, from a file.
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// How often (ms) an instance re-reads the open reviews and grants
    /// besides the notifications it listens to (default 1000): what a lost
    /// notification costs at most.
    #[serde(default = "default_sync_ms")]
    pub sync_ms: u64,
    /// How often (ms) an instance writes its budget counts and reads the
    /// others' (default 250): the staleness of a fleet-wide budget.
    #[serde(default = "default_budget_flush_ms")]
    pub budget_flush_ms: u64,
    /// Seconds to connect and for each control query (default 5): past
    /// it the control database counts as unreachable.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// TLS to the control database: `verify-full` (the default: the chain
    /// and the host name are checked) or `disable`. Plaintext is accepted
    /// only to this machine (loopback, a Unix socket) unless
    /// `allow_cleartext` says the network between is trusted: whoever can
    /// change what the control database answers can approve statements.
    #[serde(default)]
    pub tls: ControlTls,
    /// CAs for `verify-full` (PEM); default: the public web's.
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_cleartext: bool,
    /// Where sealed recordings go (with `[recording]`); absent: they stay
    /// in the recordings directory, as on a lone instance.
    pub bucket: Option<Bucket>,
}

/// An S3-compatible bucket for sealed recordings and audit-log copies.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    /// `https://…` (or `http://` to a loopback host): the S3 endpoint.
    pub endpoint: String,
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// Prepended to every object's key (`prod/`, say).
    #[serde(default)]
    pub prefix: String,
    /// The access key id, inline or from an environment variable.
    pub access_key_id: Option<String>,
    pub access_key_id_env: Option<String>,
    /// The secret access key, from an environment variable or a file (or
    /// inline).
    pub secret_access_key: Option<String>,
    pub secret_access_key_env: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    /// Seconds between looks for sealed recordings to upload (default 1).
    #[serde(default = "default_upload_secs")]
    pub upload_every_secs: u64,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_upload_secs() -> u64 {
    1
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Bucket {
    fn validate(&mut self, base: &Path) -> Result<(), Invalid> {
        use PathPart::Key;
        let at = |k: &'static str, m: String| -> Invalid { (vec![Key("fleet"), Key("bucket"), Key(k)], m) };
        if !(self.endpoint.starts_with("https://") || super::loopback_http(&self.endpoint)) {
            return Err(at(
                "endpoint",
                "must be https:// (http:// only to a loopback host)".into(),
            ));
        }
        let name_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !name_ok {
            return Err(at("bucket", "3 to 63 of a-z, 0-9, '-', '.'".into()));
        }
        if self.prefix.starts_with('/') || self.prefix.contains("..") {
            return Err(at("prefix", "a relative key prefix, without '..'".into()));
        }
        if self.access_key_id.is_some() == self.access_key_id_env.is_some() {
            return Err(at(
                "access_key_id",
                "give one of access_key_id, access_key_id_env".into(),
            ));
        }
        let secrets = [
            self.secret_access_key.is_some(),
            self.secret_access_key_env.is_some(),
            self.secret_access_key_file.is_some(),
        ];
        if secrets.iter().filter(|s| **s).count() != 1 {
            return Err(at(
                "secret_access_key",
                "give one of secret_access_key, secret_access_key_env, secret_access_key_file".into(),
            ));
        }
        if let Some(f) = &mut self.secret_access_key_file {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        if !(1..=3600).contains(&self.upload_every_secs) {
            return Err(at("upload_every_secs", "between 1 and 3600".into()));
        }
        Ok(())
    }

    /// (access key id, secret access key), from their sources.
    pub fn credentials(&self) -> Result<(String, String), String> {
        let id = match (&self.access_key_id, &self.access_key_id_env) {
            (Some(v), _) => v.clone(),
            (None, Some(var)) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?,
            _ => return Err("no access key id".into()),
        };
        let secret = super::target::resolve_secret(
            &self.secret_access_key,
            &self.secret_access_key_env,
            &self.secret_access_key_file,
        )?
        .ok_or("no secret access key")?;
        Ok((id, secret))
    }
}

/// TLS to the control database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlTls {
    #[default]
    VerifyFull,
    Disable,
}

fn default_sync_ms() -> u64 {
    1000
}
fn default_budget_flush_ms() -> u64 {
    250
}
fn default_timeout() -> u64 {
    5
}

// The DSN and password stay out of debug output (and so out of logs).
impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("instance", &self.instance)
            .field("sync_ms", &self.sync_ms)
            .finish_non_exhaustive()
    }
}

/// Whether `name` may name an instance.
pub fn valid_instance_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Fleet {
    pub(super) fn validate(&mut self, base: &Path) -> Result<(), Invalid> {
        use PathPart::Key;
        let at = |k: &'static str, m: String| -> Invalid { (vec![Key("fleet"), Key(k)], m) };
        if !valid_instance_name(&self.instance) {
            return Err(at(
                "instance",
                "letters, digits, '.', '_' and '-', 1 to 63 of them".into(),
            ));
        }
        let parsed: tokio_postgres::Config = self
            .control
            .parse()
            .map_err(|e| at("control", format!("not a PostgreSQL connection string: {e}")))?;
        if parsed.get_password().is_some() {
            return Err(at(
                "control",
                "holds a password: give it with password_env or password_file instead".into(),
            ));
        }
        if parsed.get_user().is_none() {
            return Err(at("control", "names no user".into()));
        }
        if parsed.get_dbname().is_none() {
            return Err(at("control", "names no dbname".into()));
        }
        if parsed.get_ssl_mode() != tokio_postgres::config::SslMode::Prefer {
            return Err(at("control", "no sslmode here: say it with [fleet] tls".into()));
        }
        if self.tls == ControlTls::Disable && !self.allow_cleartext {
            let local = parsed.get_hosts().iter().all(|h| match h {
                tokio_postgres::config::Host::Unix(_) => true,
                tokio_postgres::config::Host::Tcp(name) => {
                    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
                }
            });
            if !local || parsed.get_hosts().is_empty() {
                return Err(at(
                    "tls",
                    "\"disable\" sends approvals and the password in clear: only to this machine, or say allow_cleartext = true for a network you trust".into(),
                ));
            }
        }
        if let Some(f) = &mut self.ca_file {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        let sources = [
            self.password.is_some(),
            self.password_env.is_some(),
            self.password_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(at(
                "password",
                "give one of password, password_env, password_file".into(),
            ));
        }
        if let Some(f) = &mut self.password_file {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        if let Some(a) = &self.advertise {
            let ok = a
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(at("advertise", "host:port".into()));
            }
        }
        if !(50..=60_000).contains(&self.sync_ms) {
            return Err(at("sync_ms", "between 50 and 60000".into()));
        }
        if !(20..=10_000).contains(&self.budget_flush_ms) {
            return Err(at("budget_flush_ms", "between 20 and 10000".into()));
        }
        if !(1..=60).contains(&self.timeout_secs) {
            return Err(at("timeout_secs", "between 1 and 60".into()));
        }
        if let Some(b) = &mut self.bucket {
            b.validate(base)?;
        }
        Ok(())
    }

    /// The control database's connection settings, password included.
    pub fn connect_config(&self) -> Result<tokio_postgres::Config, String> {
        let mut c: tokio_postgres::Config = self.control.parse().map_err(|e| format!("control: {e}"))?;
        if let Some(p) = super::target::resolve_secret(&self.password, &self.password_env, &self.password_file)? {
            c.password(p);
        }
        c.connect_timeout(std::time::Duration::from_secs(self.timeout_secs));
        c.keepalives(true);
        c.keepalives_idle(std::time::Duration::from_secs(10));
        c.application_name(format!("gatehouse fleet {}", self.instance));
        Ok(c)
    }
}

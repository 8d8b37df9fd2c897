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

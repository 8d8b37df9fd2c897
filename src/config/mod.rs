//! The TOML configuration model and its validation, one module per section.
//!
//! Errors name the file, the line and the key: `file:line: key: what is wrong`.
//! Each section checks itself (`validate`); checks that cross sections (a
//! role's targets and accounts, an admin token's approver roles, an
//! identity's targets) receive what they look at.

mod admin;
mod fleet;
mod identity;
mod locate;
mod notify;
mod policy;
mod recording;
mod scan;
mod server;
mod target;

pub use admin::{Admin, AdminToken};
pub use fleet::{valid_instance_name, Bucket, ControlTls, Fleet};
pub use identity::{parse_token_hash, IdentityConfig, Oidc, OidcConsole, OneOrMany};
pub use notify::{smtp_host_port, Approver, Notify, SlackApp, Smtp, Webhook, WebhookKind, MAX_GRANT_MINUTES};
pub use policy::{BudgetConfig, GuardrailConfig, PolicyConfig, RolePolicyConfig, Verdict, GUARDRAIL_FLAGS};
pub use recording::{OnFailure, Recording, ResultsMode};
pub use scan::Scan;
pub use server::{IoDriver, Listen, Log, Protocol, Server, ServerTls};
pub use target::{Account, Target, UpstreamAuth, UpstreamTls};

use locate::{key_from_message, line_of, locate, Invalid, PathPart};
use serde::Deserialize;
use std::path::Path;

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
    /// Several instances sharing state through a control database; absent:
    /// this instance stands alone.
    pub fleet: Option<Fleet>,
}

/// An `http://` URL is accepted only to a loopback host.
pub fn loopback_http(url: &str) -> bool {
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

    fn validate(&mut self, base: &Path) -> Result<(), Invalid> {
        self.server.validate(base)?;
        self.log.validate()?;
        let names = target::validate_targets(&mut self.targets, base)?;
        self.scan.validate(base)?;
        self.admin.validate(self.policy.as_ref(), base)?;
        notify::validate_notify(&self.notify, self.policy.as_ref(), self.admin.listen.is_some())?;
        if let Some(f) = &mut self.fleet {
            f.validate(base)?;
            if f.bucket.is_some() && self.recording.is_none() {
                return Err((
                    vec![locate::PathPart::Key("fleet"), locate::PathPart::Key("bucket")],
                    "holds recordings: it needs a [recording] section".into(),
                ));
            }
        }
        if let Some(r) = &mut self.recording {
            r.validate(base)?;
        }
        if let Some(p) = &self.policy {
            p.validate(&self.targets, &names)?;
        }
        identity::validate_identities(&self.identities, &names)?;
        if let Some(o) = &mut self.oidc {
            identity::validate_oidc(o, base, &names)?;
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

#[cfg(test)]
pub(crate) mod tests;

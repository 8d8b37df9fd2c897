//! `[scan]`: secret scanning of what leaves the database, and its masks.

use super::locate::{Invalid, PathPart};
use serde::Deserialize;
use std::path::{Path, PathBuf};

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

impl Scan {
    pub(super) fn validate(&mut self, base: &Path) -> Result<(), Invalid> {
        use PathPart::Key;
        if let Some(f) = &mut self.rules_file {
            *f = base.join(&*f);
            if !f.is_file() {
                return Err((
                    vec![Key("scan"), Key("rules_file")],
                    format!("{} is not a readable file", f.display()),
                ));
            }
        }
        if self.hash_key.is_some() && self.hash_key_env.is_some() {
            return Err((
                vec![Key("scan"), Key("hash_key")],
                "give only one of hash_key, hash_key_env".into(),
            ));
        }
        if let Some(var) = &self.hash_key_env {
            if std::env::var(var).is_err() {
                return Err((
                    vec![Key("scan"), Key("hash_key_env")],
                    format!("environment variable {var} is not set"),
                ));
            }
        }
        for (id, m) in &self.masks {
            if !matches!(m.as_str(), "redact" | "partial" | "hash") {
                return Err((
                    vec![Key("scan"), Key("masks"), PathPart::Name(id.clone())],
                    format!("`{m}` is not a mask; one of redact, partial, hash"),
                ));
            }
        }
        if self.max_value_bytes == 0 {
            return Err((vec![Key("scan"), Key("max_value_bytes")], "must be at least 1".into()));
        }
        Ok(())
    }
}

//! Who is connecting: credentials presented by clients, checked against
//! what the configuration holds. The data path sees only the
//! [`Authenticator`] interface; static tokens are one implementation and
//! OIDC tokens plug in beside them.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// An authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub roles: Vec<String>,
    /// Target names this identity may reach; `*` for all.
    pub targets: Vec<String>,
}

impl Identity {
    pub fn may_reach(&self, target: &str) -> bool {
        self.targets.iter().any(|t| t == "*" || t == target)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// Unknown user and wrong token look the same to the client.
    #[error("password authentication failed for user \"{0}\"")]
    Rejected(String),
}

/// Checks a client's user name and password (a gatehouse credential).
pub trait Authenticator: Send + Sync {
    fn authenticate(&self, user: &str, password: &[u8]) -> Result<Identity, AuthError>;
}

/// Parses `sha256:<64 hex>` into the digest.
pub fn parse_token_hash(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

/// The stored form of a token: `sha256:<hex>`.
pub fn hash_token(token: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token)))
}

struct StaticEntry {
    digest: [u8; 32],
    identity: Identity,
}

/// Static tokens from the configuration, stored only as SHA-256 digests.
/// Tokens are long random strings, so a fast hash is the right choice here
/// (as for API tokens generally); a slow password hash would make every
/// connection pay for it.
pub struct StaticTokens {
    entries: Vec<StaticEntry>,
}

impl StaticTokens {
    pub fn from_config(ids: &[crate::config::IdentityConfig]) -> Self {
        let entries = ids
            .iter()
            .filter_map(|c| {
                Some(StaticEntry {
                    digest: parse_token_hash(&c.token_hash)?,
                    identity: Identity {
                        name: c.name.clone(),
                        roles: c.roles.clone(),
                        targets: c.targets.clone(),
                    },
                })
            })
            .collect();
        StaticTokens { entries }
    }
}

impl Authenticator for StaticTokens {
    fn authenticate(&self, user: &str, password: &[u8]) -> Result<Identity, AuthError> {
        let digest = Sha256::digest(password);
        // Compare against the entry for this user, in constant time; do the
        // same work when the user is unknown.
        let entry = self.entries.iter().find(|e| e.identity.name == user);
        let expected = entry.map(|e| e.digest).unwrap_or([0xa5; 32]);
        let ok: bool = digest.as_slice().ct_eq(&expected).into();
        match entry {
            Some(e) if ok => Ok(e.identity.clone()),
            _ => Err(AuthError::Rejected(user.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IdentityConfig;

    #[test]
    fn static_tokens() {
        let cfg = vec![IdentityConfig {
            name: "demo".into(),
            token_hash: hash_token(b"demo-token-change-me"),
            targets: vec!["*".into()],
            roles: vec![],
        }];
        let a = StaticTokens::from_config(&cfg);
        assert_eq!(a.authenticate("demo", b"demo-token-change-me").unwrap().name, "demo");
        assert!(a.authenticate("demo", b"wrong").is_err());
        assert!(a.authenticate("other", b"demo-token-change-me").is_err());
        assert!(parse_token_hash("sha256:zz").is_none());
        assert!(parse_token_hash(&hash_token(b"x")).is_some());
    }
}

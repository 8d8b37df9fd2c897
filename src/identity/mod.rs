//! Who is connecting: credentials presented by clients, checked against
//! what the configuration holds. The data path sees only the
//! [`Authenticator`] interface; static tokens are one implementation and
//! OIDC tokens plug in beside them.

pub mod jwks;
pub mod mint;
pub mod oidc;

use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// An authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub roles: Vec<String>,
    /// Target names this identity may reach; `*` for all.
    pub targets: Vec<String>,
    /// What vouched for it, for a reload to tell whether it still holds.
    pub source: IdentitySource,
}

/// What authenticated an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// A static token: the digest it matched.
    Static { digest: [u8; 32] },
    /// A JWT verified against the `[oidc]` settings.
    Oidc,
}

impl Identity {
    pub fn may_reach(&self, target: &str) -> bool {
        self.targets.iter().any(|t| t == "*" || t == target)
    }
}

/// Whether a session of `identity` (from `source`) on `target` may go on
/// under a configuration just reloaded: its identity is still there with
/// the same token and still reaches the target, and the target is still
/// there (an OIDC session: `[oidc]` is still configured). A reload ends
/// the sessions that may not.
pub fn survives_reload(identity: &str, source: &IdentitySource, target: &str, config: &crate::config::Config) -> bool {
    if !config.targets.iter().any(|t| t.name == target) {
        return false;
    }
    match source {
        IdentitySource::Static { digest } => config.identities.iter().any(|i| {
            i.name == identity
                && parse_token_hash(&i.token_hash) == Some(*digest)
                && i.targets.iter().any(|t| t == "*" || t == target)
        }),
        IdentitySource::Oidc => config.oidc.is_some(),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// Unknown user and wrong token look the same to the client.
    #[error("password authentication failed for user \"{0}\"")]
    Rejected(String),
    /// An OIDC token was refused; the reason says which check failed (and
    /// never holds the token).
    #[error("password authentication failed for user \"{user}\": {reason}")]
    Token { user: String, reason: oidc::TokenError },
}

/// Checks a client's user name and password (a gatehouse credential).
pub trait Authenticator: Send + Sync {
    /// The identity a session runs as, shared: a static token's identity is
    /// one value however many sessions hold it (10,000 idle clients of one
    /// service account keep one copy of its name, roles and targets).
    fn authenticate(&self, user: &str, password: &[u8]) -> Result<Arc<Identity>, AuthError>;
    /// An OIDC JWT presented as an admin API bearer token: the identity it
    /// names, with its mapped roles (`None`: not a valid token).
    fn bearer(&self, _token: &str) -> Option<Identity> {
        None
    }
}

/// Parses `sha256:<64 hex>` into the digest (the format is the configuration's).
pub use crate::config::parse_token_hash;

/// The stored form of a token: `sha256:<hex>`.
pub fn hash_token(token: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token)))
}

struct StaticEntry {
    digest: [u8; 32],
    identity: Arc<Identity>,
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
                let digest = parse_token_hash(&c.token_hash)?;
                Some(StaticEntry {
                    digest,
                    identity: Arc::new(Identity {
                        name: c.name.clone(),
                        roles: c.roles.clone(),
                        targets: c.targets.clone(),
                        source: IdentitySource::Static { digest },
                    }),
                })
            })
            .collect();
        StaticTokens { entries }
    }
}

impl Authenticator for StaticTokens {
    fn authenticate(&self, user: &str, password: &[u8]) -> Result<Arc<Identity>, AuthError> {
        let digest = Sha256::digest(password);
        // Compare against the entry for this user, in constant time; do the
        // same work when the user is unknown.
        let entry = self.entries.iter().find(|e| e.identity.name == user);
        let expected = entry.map(|e| e.digest).unwrap_or([0xa5; 32]);
        let ok: bool = digest.as_slice().ct_eq(&expected).into();
        match entry {
            Some(e) if ok => Ok(Arc::clone(&e.identity)),
            _ => Err(AuthError::Rejected(user.to_string())),
        }
    }
}

/// Static tokens, and OIDC tokens beside them: a password shaped like a JWT
/// goes to OIDC (when configured), anything else to the static tokens,
/// which keep working for service accounts. A JWT that OIDC refuses is not
/// tried as a static token.
pub struct Chain {
    pub oidc: Option<oidc::OidcAuthenticator>,
    pub static_tokens: StaticTokens,
}

impl Authenticator for Chain {
    fn authenticate(&self, user: &str, password: &[u8]) -> Result<Arc<Identity>, AuthError> {
        match &self.oidc {
            Some(o) if oidc::looks_like_jwt(password) => o.authenticate(user, password),
            _ => self.static_tokens.authenticate(user, password),
        }
    }

    fn bearer(&self, token: &str) -> Option<Identity> {
        let o = self.oidc.as_ref()?;
        if !oidc::looks_like_jwt(token.as_bytes()) {
            return None;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        o.check_bearer(token, now).ok()
    }
}

/// The authenticator the configuration describes. With `[oidc]` this loads
/// the JWKS (a file now, a URL on the refresher thread) and starts its
/// refresher, which stops when the authenticator is dropped.
pub fn from_config(config: &crate::config::Config) -> Result<Box<dyn Authenticator>, String> {
    let static_tokens = StaticTokens::from_config(&config.identities);
    let oidc = match &config.oidc {
        Some(o) => Some(oidc::OidcAuthenticator::from_config(o).map_err(|e| format!("oidc: {e}"))?),
        None => None,
    };
    Ok(Box::new(Chain { oidc, static_tokens }))
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
        // Every session of a static token holds the one identity value,
        // not a copy of its strings each.
        let first = a.authenticate("demo", b"demo-token-change-me").unwrap();
        let second = a.authenticate("demo", b"demo-token-change-me").unwrap();
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn chain_sends_jwts_to_oidc_and_the_rest_to_static_tokens() {
        let g = mint::keygen(jwks::Alg::EdDSA, Some("k")).unwrap();
        let doc = mint::add_to_jwks(None, g.jwk.clone()).unwrap();
        let (keys, _) = jwks::parse(doc.as_bytes()).unwrap();
        let settings = oidc::Settings {
            issuer: "iss".into(),
            audiences: vec!["gh".into()],
            admin_audiences: Vec::new(),
            leeway_secs: 60,
            algorithms: jwks::Alg::ALL.to_vec(),
            user_claim: "sub".into(),
            roles_claim: "groups".into(),
            role_map: [("g".to_string(), vec!["r".to_string()])].into_iter().collect(),
            role_passthrough: false,
            role_targets: None,
            user_must_match: true,
        };
        // A static token that is itself shaped like a JWT is reachable only
        // without OIDC.
        let jwt_shaped = mint::mint(
            &mint::SigningKey::from_pem(&g.private_pem, None).unwrap(),
            Some("x"),
            &Default::default(),
        )
        .unwrap();
        let statics = |extra: &str| {
            StaticTokens::from_config(&[
                IdentityConfig {
                    name: "svc".into(),
                    token_hash: hash_token(b"service-token"),
                    targets: vec!["*".into()],
                    roles: vec!["svc".into()],
                },
                IdentityConfig {
                    name: "odd".into(),
                    token_hash: hash_token(extra.as_bytes()),
                    targets: vec![],
                    roles: vec![],
                },
            ])
        };
        let chain = Chain {
            oidc: Some(oidc::OidcAuthenticator::with_keys(settings, keys)),
            static_tokens: statics(&jwt_shaped),
        };
        assert_eq!(chain.authenticate("svc", b"service-token").unwrap().roles, vec!["svc"]);
        assert_eq!(
            chain.authenticate("svc", b"wrong").unwrap_err(),
            AuthError::Rejected("svc".into())
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({"iss": "iss", "aud": "gh", "sub": "alice", "groups": ["g"], "exp": now + 60});
        let key = mint::SigningKey::from_pem(&g.private_pem, None).unwrap();
        let t = mint::mint(&key, Some("k"), claims.as_object().unwrap()).unwrap();
        let id = chain.authenticate("alice", t.as_bytes()).unwrap();
        assert_eq!((id.name.as_str(), id.roles.clone()), ("alice", vec!["r".to_string()]));
        // A JWT that OIDC refuses is not tried as a static token.
        let e = chain.authenticate("odd", jwt_shaped.as_bytes()).unwrap_err();
        assert!(matches!(e, AuthError::Token { .. }), "{e}");
        let no_oidc = Chain {
            oidc: None,
            static_tokens: statics(&jwt_shaped),
        };
        assert_eq!(no_oidc.authenticate("odd", jwt_shaped.as_bytes()).unwrap().name, "odd");
    }
}

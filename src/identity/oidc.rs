//! OIDC identity: the client presents a JWT from its identity provider as
//! its password.
//!
//! A token is accepted when, in this order:
//! 1. it is a compact JWS (three base64url parts) whose header is JSON, has
//!    no `crit`, and names an algorithm that is in the configured allow-list
//!    (`none` and every HMAC algorithm are refused outright: the keys here
//!    are public, so a shared-secret algorithm would let anyone who has the
//!    public key "sign" — the algorithm-confusion attack);
//! 2. a key of the cached JWKS with the token's `kid` exists, its type (and
//!    its own `alg`, when the JWK states one) is the token's algorithm, and
//!    the signature verifies;
//! 3. `exp` (required) and `nbf` hold within the leeway, `iss` is the
//!    configured issuer and `aud` (a string or an array) names a configured
//!    audience;
//! 4. the name claim (`sub` by default) is a non-empty string equal to the
//!    client's user name (unless `user_must_match = false`).
//!
//! Roles come from the roles claim (`groups` by default) through
//! `role_map`; unmapped groups are ignored unless `role_passthrough`.
//! Targets come from the roles through `role_targets`; without
//! `role_targets`, an OIDC identity may reach every target (the policy
//! engine refines this later).
//!
//! Nothing here logs or returns the token or its signature; messages name
//! only the failed check and claim values (issuer, audience, key id), cut
//! short and escaped.

use super::jwks::{self, Alg, KeySet};
use super::{AuthError, Identity};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// Largest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Most groups looked at in one token.
const MAX_GROUPS: usize = 1024;
/// Longest identity name accepted from a token.
const MAX_NAME_BYTES: usize = 256;

/// Why a token was refused. Messages never hold the token.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("malformed token: encrypted tokens (JWE) are not supported")]
    Encrypted,
    #[error("unsigned tokens (alg \"none\") are refused")]
    AlgNone,
    #[error("algorithm {0} is refused: shared-secret (HMAC) algorithms are never accepted")]
    Hmac(String),
    #[error("algorithm \"{alg}\" is not allowed (allowed: {allowed})")]
    AlgorithmNotAllowed { alg: String, allowed: String },
    #[error("algorithm {alg} does not match key \"{kid}\", which is {key_kind}")]
    KeyMismatch {
        alg: Alg,
        kid: String,
        key_kind: &'static str,
    },
    #[error("the token has critical header parameters (crit) gatehouse does not support")]
    Critical,
    #[error("unknown key id \"{0}\" (the key set is being refreshed; retry shortly)")]
    UnknownKid(String),
    #[error("no key for {0} in the key set and the token names no key id")]
    NoKeyForAlg(Alg),
    #[error("no signing keys are loaded yet (the JWKS could not be fetched; retry shortly)")]
    NoKeys,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired {0} s ago")]
    Expired(i64),
    #[error("token not yet valid (nbf is {0} s from now)")]
    NotYetValid(i64),
    #[error("token has no `{0}` claim")]
    MissingClaim(String),
    #[error("claim `{0}` is not {1}")]
    BadClaim(String, &'static str),
    #[error("wrong issuer \"{got}\" (expected \"{want}\")")]
    WrongIssuer { got: String, want: String },
    #[error("wrong audience {got} (expected {want})")]
    WrongAudience { got: String, want: String },
    #[error("user \"{user}\" does not match the token's `{claim}` \"{name}\"")]
    UserMismatch { user: String, claim: String, name: String },
}

/// A value from a token, fit for a message: at most 64 characters, escaped.
pub fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

/// Validated settings (see `crate::config::Oidc`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub issuer: String,
    pub audiences: Vec<String>,
    /// The `aud` of admin API bearer tokens (empty: none accepted).
    pub admin_audiences: Vec<String>,
    pub leeway_secs: i64,
    pub algorithms: Vec<Alg>,
    pub user_claim: String,
    pub roles_claim: String,
    pub role_map: HashMap<String, Vec<String>>,
    pub role_passthrough: bool,
    /// `None`: every target.
    pub role_targets: Option<HashMap<String, Vec<String>>>,
    pub user_must_match: bool,
}

impl Settings {
    pub fn from_config(c: &crate::config::Oidc) -> Result<Settings, String> {
        let mut algorithms = Vec::new();
        for a in &c.algorithms {
            let alg = Alg::from_name(a).ok_or_else(|| format!("algorithm `{a}` is not supported"))?;
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        Ok(Settings {
            issuer: c.issuer.clone(),
            audiences: c.audience.to_vec(),
            admin_audiences: c.admin_audience.to_vec(),
            leeway_secs: i64::try_from(c.leeway_secs).unwrap_or(i64::MAX),
            algorithms,
            user_claim: c.user_claim.clone(),
            roles_claim: c.roles_claim.clone(),
            role_map: c.role_map.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect(),
            role_passthrough: c.role_passthrough,
            role_targets: c
                .role_targets
                .as_ref()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            user_must_match: c.user_must_match,
        })
    }

    fn allowed(&self) -> String {
        self.algorithms.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
    }
}

/// True when `password` has the shape of a JWT: three (or, for JWE, five)
/// base64url parts whose first decodes to a JSON object. Static tokens never
/// look like this.
pub fn looks_like_jwt(password: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(password) else {
        return false;
    };
    if s.len() > MAX_TOKEN_BYTES {
        return false;
    }
    let parts: Vec<&str> = s.split('.').collect();
    if !(parts.len() == 3 || parts.len() == 5) {
        return false;
    }
    let b64url = |p: &str| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if parts[0].is_empty() || !parts.iter().all(|p| b64url(p)) {
        return false;
    }
    URL_SAFE_NO_PAD
        .decode(parts[0])
        .ok()
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .is_some_and(|v| v.is_object())
}

fn decode_json(part: &str, what: &'static str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed(what))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(TokenError::Malformed(what)),
    }
}

/// A numeric date claim, in whole seconds.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f.floor() as i64))
            .map(Some)
            .ok_or_else(|| TokenError::BadClaim(name.into(), "a number")),
    }
}

/// Checks a token's signature and standard claims against `keys` at time
/// `now` (seconds since the epoch) and returns its claims. Pure: no I/O.
pub fn verify(settings: &Settings, keys: &KeySet, token: &str, now: i64) -> Result<Map<String, Value>, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("longer than 16 KiB"));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() == 5 {
        return Err(TokenError::Encrypted);
    }
    let [header_b64, payload_b64, sig_b64] = parts[..] else {
        return Err(TokenError::Malformed("not three dot-separated parts"));
    };
    let header = decode_json(header_b64, "the header is not base64url-encoded JSON")?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.as_str(),
        _ => return Err(TokenError::Malformed("the header has no `alg`")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(TokenError::AlgNone);
    }
    if alg.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("HS")) {
        return Err(TokenError::Hmac(shown(alg)));
    }
    let Some(alg) = Alg::from_name(alg).filter(|a| settings.algorithms.contains(a)) else {
        return Err(TokenError::AlgorithmNotAllowed {
            alg: shown(alg),
            allowed: settings.allowed(),
        });
    };
    if header.contains_key("crit") {
        return Err(TokenError::Critical);
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(TokenError::Malformed("`kid` is not a string")),
    };
    let signature = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| TokenError::Malformed("the signature is not base64url"))?;
    if keys.keys.is_empty() {
        return Err(TokenError::NoKeys);
    }
    // The signed message: the first two parts as sent, with their dot.
    let message = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    let verified = match kid {
        Some(kid) => {
            let mut candidates = keys.by_kid(kid).peekable();
            let Some(first) = candidates.peek() else {
                return Err(TokenError::UnknownKid(shown(kid)));
            };
            let first_kind = first.alg().key_kind();
            let mut fitting = candidates.filter(|k| k.alg() == alg).peekable();
            if fitting.peek().is_none() {
                return Err(TokenError::KeyMismatch {
                    alg,
                    kid: shown(kid),
                    key_kind: first_kind,
                });
            }
            fitting.any(|k| k.verify(message, &signature))
        }
        None => {
            let mut fitting = keys.keys.iter().filter(|k| k.alg() == alg).peekable();
            if fitting.peek().is_none() {
                return Err(TokenError::NoKeyForAlg(alg));
            }
            fitting.any(|k| k.verify(message, &signature))
        }
    };
    if !verified {
        return Err(TokenError::BadSignature);
    }

    let claims = decode_json(payload_b64, "the payload is not base64url-encoded JSON")?;
    let leeway = settings.leeway_secs;
    let exp = numeric_date(&claims, "exp")?.ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
    if now > exp.saturating_add(leeway) {
        return Err(TokenError::Expired(now.saturating_sub(exp)));
    }
    if let Some(nbf) = numeric_date(&claims, "nbf")? {
        if now.saturating_add(leeway) < nbf {
            return Err(TokenError::NotYetValid(nbf.saturating_sub(now)));
        }
    }
    match claims.get("iss") {
        Some(Value::String(iss)) if *iss == settings.issuer => {}
        Some(Value::String(iss)) => {
            return Err(TokenError::WrongIssuer {
                got: shown(iss),
                want: shown(&settings.issuer),
            })
        }
        Some(_) => return Err(TokenError::BadClaim("iss".into(), "a string")),
        None => return Err(TokenError::MissingClaim("iss".into())),
    }
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(|v| v.as_str()).take(64).collect(),
        Some(_) => return Err(TokenError::BadClaim("aud".into(), "a string or an array of strings")),
        None => return Err(TokenError::MissingClaim("aud".into())),
    };
    if !auds.iter().any(|a| settings.audiences.iter().any(|w| w == a)) {
        let list = |v: &mut dyn Iterator<Item = &str>| {
            let items: Vec<String> = v.take(4).map(|s| format!("\"{}\"", shown(s))).collect();
            if items.is_empty() {
                "[]".to_string()
            } else {
                items.join(", ")
            }
        };
        return Err(TokenError::WrongAudience {
            got: list(&mut auds.iter().copied()),
            want: list(&mut settings.audiences.iter().map(String::as_str)),
        });
    }
    Ok(claims)
}

/// A claim by name, or else by dotted path (`realm_access.roles`): names
/// with dots, like `https://example.com/groups`, are tried whole first.
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

/// The identity a verified token stands for, as `user`.
pub fn identity(settings: &Settings, user: &str, claims: &Map<String, Value>) -> Result<Identity, TokenError> {
    let name = match claim(claims, &settings.user_claim) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_NAME_BYTES => s.clone(),
        Some(Value::String(_)) => {
            return Err(TokenError::BadClaim(
                settings.user_claim.clone(),
                "a name of 1 to 256 bytes",
            ))
        }
        Some(_) => return Err(TokenError::BadClaim(settings.user_claim.clone(), "a string")),
        None => return Err(TokenError::MissingClaim(settings.user_claim.clone())),
    };
    if settings.user_must_match && name != user {
        return Err(TokenError::UserMismatch {
            user: shown(user),
            claim: settings.user_claim.clone(),
            name: shown(&name),
        });
    }
    let groups: Vec<&str> = match claim(claims, &settings.roles_claim) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(g)) => vec![g.as_str()],
        Some(Value::Array(list)) => list.iter().take(MAX_GROUPS).filter_map(|v| v.as_str()).collect(),
        Some(_) => {
            return Err(TokenError::BadClaim(
                settings.roles_claim.clone(),
                "a string or an array of strings",
            ))
        }
    };
    let mut roles = BTreeSet::new();
    for g in groups {
        match settings.role_map.get(g) {
            Some(mapped) => roles.extend(mapped.iter().cloned()),
            None if settings.role_passthrough => {
                roles.insert(g.to_string());
            }
            None => {}
        }
    }
    let targets = match &settings.role_targets {
        None => vec!["*".to_string()],
        Some(map) => {
            let set: BTreeSet<String> = roles
                .iter()
                .filter_map(|r| map.get(r))
                .flat_map(|t| t.iter().cloned())
                .collect();
            if set.contains("*") {
                vec!["*".to_string()]
            } else {
                set.into_iter().collect()
            }
        }
    };
    Ok(Identity {
        name,
        roles: roles.into_iter().collect(),
        targets,
        source: super::IdentitySource::Oidc,
    })
}

/// OIDC tokens checked against a JWKS cached in memory.
pub struct OidcAuthenticator {
    settings: Settings,
    keys: jwks::Cache,
}

impl OidcAuthenticator {
    /// Loads the key set (see [`jwks::Cache::start`]) and starts its refresher.
    pub fn from_config(c: &crate::config::Oidc) -> Result<OidcAuthenticator, String> {
        let settings = Settings::from_config(c)?;
        let source = match (&c.jwks_file, &c.jwks_url) {
            (Some(f), _) => jwks::Source::File(f.clone()),
            (None, Some(u)) => jwks::Source::url(u, c.jwks_ca_file.as_deref())?,
            (None, None) => return Err("one of jwks_file, jwks_url is needed".into()),
        };
        let timing = jwks::Timing {
            every: Duration::from_secs(c.refresh_secs.max(1)),
            min_gap: Duration::from_secs(c.refresh_min_secs.min(c.refresh_secs)),
        };
        Ok(OidcAuthenticator {
            settings,
            keys: jwks::Cache::start(source, timing)?,
        })
    }

    /// With a fixed key set (tests).
    pub fn with_keys(settings: Settings, keys: KeySet) -> OidcAuthenticator {
        OidcAuthenticator {
            settings,
            keys: jwks::Cache::fixed(keys),
        }
    }

    /// Checks a token presented by `user`. Reads the cached key set only.
    pub fn check(&self, user: &str, token: &str, now: i64) -> Result<Identity, TokenError> {
        let keys = self.keys.keys();
        let claims = match verify(&self.settings, &keys, token, now) {
            Ok(c) => c,
            Err(e @ (TokenError::UnknownKid(_) | TokenError::NoKeys)) => {
                self.keys.request_refresh();
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        identity(&self.settings, user, &claims)
    }

    /// Checks a bearer token of the admin API: the identity is whoever the
    /// token names (no user name to match).
    /// The token must carry the admin audience, not the database one.
    pub fn check_bearer(&self, token: &str, now: i64) -> Result<Identity, TokenError> {
        if self.settings.admin_audiences.is_empty() {
            return Err(TokenError::Malformed(
                "the admin API takes JWTs only with [oidc] admin_audience",
            ));
        }
        let admin = Settings {
            audiences: self.settings.admin_audiences.clone(),
            ..self.settings.clone()
        };
        let keys = self.keys.keys();
        let claims = verify(&admin, &keys, token, now)?;
        let name = claim(&claims, &self.settings.user_claim)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        identity(&self.settings, &name, &claims)
    }
}

impl super::Authenticator for OidcAuthenticator {
    fn authenticate(&self, user: &str, password: &[u8]) -> Result<std::sync::Arc<Identity>, AuthError> {
        let fail = |reason| AuthError::Token {
            user: user.to_string(),
            reason,
        };
        let token = std::str::from_utf8(password).map_err(|_| fail(TokenError::Malformed("not UTF-8")))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.check(user, token, now).map(std::sync::Arc::new).map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::super::mint::{self, SigningKey};
    use super::*;
    use hmac::Mac;
    use std::sync::OnceLock;

    const NOW: i64 = 1_700_000_000;

    /// Signing keys with their kids, the parsed key set, the JWKS document.
    type Fixture = (Vec<(SigningKey, String)>, KeySet, Value);

    fn keys() -> &'static Fixture {
        static K: OnceLock<Fixture> = OnceLock::new();
        K.get_or_init(|| {
            let mut signers = Vec::new();
            let mut jwks = Vec::new();
            for (alg, kid) in [(Alg::RS256, "rsa"), (Alg::ES256, "ec"), (Alg::EdDSA, "ed")] {
                let g = mint::keygen(alg, Some(kid)).unwrap();
                jwks.push(g.jwk.clone());
                signers.push((
                    SigningKey::from_pem(&g.private_pem, Some(alg)).unwrap(),
                    kid.to_string(),
                ));
            }
            let doc = serde_json::json!({ "keys": jwks });
            let (set, _) = jwks::parse(doc.to_string().as_bytes()).unwrap();
            (signers, set, doc)
        })
    }

    fn settings() -> Settings {
        Settings {
            issuer: "https://idp.example".into(),
            audiences: vec!["gatehouse".into()],
            admin_audiences: vec!["gatehouse-admin".into()],
            leeway_secs: 60,
            algorithms: Alg::ALL.to_vec(),
            user_claim: "sub".into(),
            roles_claim: "groups".into(),
            role_map: [
                ("db-admins".to_string(), vec!["admin".to_string()]),
                (
                    "analysts".to_string(),
                    vec!["reader".to_string(), "auditor".to_string()],
                ),
            ]
            .into_iter()
            .collect(),
            role_passthrough: false,
            role_targets: None,
            user_must_match: true,
        }
    }

    fn claims() -> Map<String, Value> {
        match serde_json::json!({
            "iss": "https://idp.example", "aud": "gatehouse", "sub": "alice",
            "groups": ["db-admins", "other"], "iat": NOW, "exp": NOW + 3600,
        }) {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn signer(kid: &str) -> &'static SigningKey {
        &keys().0.iter().find(|(_, k)| k == kid).unwrap().0
    }

    fn token(kid: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut c = claims();
        edit(&mut c);
        mint::mint(signer(kid), Some(kid), &c).unwrap()
    }

    fn check(t: &str) -> Result<Identity, TokenError> {
        let s = settings();
        let c = verify(&s, &keys().1, t, NOW)?;
        identity(&s, "alice", &c)
    }

    /// A token with this header and claims, "signed" with `sig`.
    fn forged(header: Value, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims()).to_string()),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    #[test]
    fn valid_tokens_of_each_algorithm() {
        for kid in ["rsa", "ec", "ed"] {
            let t = token(kid, |_| {});
            assert!(looks_like_jwt(t.as_bytes()));
            let id = check(&t).unwrap_or_else(|e| panic!("{kid}: {e}"));
            assert_eq!(id.name, "alice");
            assert_eq!(id.roles, vec!["admin"]);
            assert_eq!(id.targets, vec!["*"]);
        }
    }

    #[test]
    fn token_without_kid_tries_keys_of_its_algorithm() {
        let t = mint::mint(signer("ed"), None, &claims()).unwrap();
        assert_eq!(check(&t).unwrap().name, "alice");
    }

    #[test]
    fn time_claims() {
        let expired = token("ed", |c| {
            c.insert("exp".into(), (NOW - 61).into());
        });
        assert_eq!(check(&expired).unwrap_err(), TokenError::Expired(61));
        assert!(TokenError::Expired(61).to_string().contains("expired"));
        let within_leeway = token("ed", |c| {
            c.insert("exp".into(), (NOW - 59).into());
        });
        assert!(check(&within_leeway).is_ok());
        let early = token("ed", |c| {
            c.insert("nbf".into(), (NOW + 120).into());
        });
        assert_eq!(check(&early).unwrap_err(), TokenError::NotYetValid(120));
        assert!(TokenError::NotYetValid(120).to_string().contains("not yet valid"));
        let nbf_in_leeway = token("ed", |c| {
            c.insert("nbf".into(), (NOW + 30).into());
        });
        assert!(check(&nbf_in_leeway).is_ok());
        let no_exp = token("ed", |c| {
            c.remove("exp");
        });
        assert_eq!(check(&no_exp).unwrap_err(), TokenError::MissingClaim("exp".into()));
        let float_exp = token("ed", |c| {
            c.insert("exp".into(), ((NOW + 10) as f64 + 0.5).into());
        });
        assert!(check(&float_exp).is_ok());
        let text_exp = token("ed", |c| {
            c.insert("exp".into(), "tomorrow".into());
        });
        assert!(matches!(check(&text_exp).unwrap_err(), TokenError::BadClaim(..)));
    }

    #[test]
    fn issuer_and_audience() {
        let t = token("ec", |c| {
            c.insert("iss".into(), "https://evil.example".into());
        });
        let e = check(&t).unwrap_err();
        assert!(matches!(e, TokenError::WrongIssuer { .. }));
        assert!(
            e.to_string().starts_with("wrong issuer \"https://evil.example\""),
            "{e}"
        );
        let t = token("ec", |c| {
            c.remove("iss");
        });
        assert_eq!(check(&t).unwrap_err(), TokenError::MissingClaim("iss".into()));
        let t = token("ec", |c| {
            c.insert("aud".into(), "someone-else".into());
        });
        let e = check(&t).unwrap_err();
        assert!(e.to_string().starts_with("wrong audience \"someone-else\""), "{e}");
        let t = token("ec", |c| {
            c.insert("aud".into(), serde_json::json!(["x", "gatehouse"]));
        });
        assert!(check(&t).is_ok());
        let t = token("ec", |c| {
            c.insert("aud".into(), serde_json::json!(["x", "y"]));
        });
        assert!(matches!(check(&t).unwrap_err(), TokenError::WrongAudience { .. }));
        let t = token("ec", |c| {
            c.remove("aud");
        });
        assert_eq!(check(&t).unwrap_err(), TokenError::MissingClaim("aud".into()));
    }

    #[test]
    fn bad_signatures() {
        for kid in ["rsa", "ec", "ed"] {
            let t = token(kid, |_| {});
            let (msg, sig) = t.rsplit_once('.').unwrap();
            let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
            raw[5] ^= 1;
            let bad = format!("{msg}.{}", URL_SAFE_NO_PAD.encode(&raw));
            assert_eq!(check(&bad).unwrap_err(), TokenError::BadSignature, "{kid}");
            // Claims changed after signing.
            let (h, _) = msg.split_once('.').unwrap();
            let mut c = claims();
            c.insert("sub".into(), "mallory".into());
            let swapped = format!("{h}.{}.{sig}", URL_SAFE_NO_PAD.encode(Value::Object(c).to_string()));
            assert_eq!(check(&swapped).unwrap_err(), TokenError::BadSignature, "{kid}");
        }
        // Another key's signature under this key's id.
        let ec = token("ec", |_| {});
        let other = mint::keygen(Alg::ES256, Some("ec")).unwrap();
        let imposter = mint::mint(
            &SigningKey::from_pem(&other.private_pem, None).unwrap(),
            Some("ec"),
            &claims(),
        )
        .unwrap();
        assert_ne!(ec, imposter);
        assert_eq!(check(&imposter).unwrap_err(), TokenError::BadSignature);
    }

    #[test]
    fn alg_none_and_hmac_are_refused() {
        for alg in ["none", "None", "NONE"] {
            let t = forged(serde_json::json!({"alg": alg, "kid": "rsa"}), b"");
            assert_eq!(check(&t).unwrap_err(), TokenError::AlgNone);
            // The unsecured form with an empty third part too.
            let bare = format!("{}.", t.rsplit_once('.').unwrap().0);
            assert_eq!(check(&bare).unwrap_err(), TokenError::AlgNone);
        }
        // Algorithm confusion: HS256 "signed" with the RSA public key as the
        // HMAC secret, in each form an attacker might try.
        let jwk = keys().2["keys"][0].clone();
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        for secret in [jwk.to_string().into_bytes(), n] {
            for alg in ["HS256", "HS384", "HS512", "hs256"] {
                let header = serde_json::json!({"alg": alg, "kid": "rsa", "typ": "JWT"});
                let unsigned = forged(header.clone(), b"");
                let msg = unsigned.rsplit_once('.').unwrap().0;
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
                mac.update(msg.as_bytes());
                let t = format!("{msg}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
                let e = check(&t).unwrap_err();
                assert!(matches!(e, TokenError::Hmac(_)), "{e}");
                assert!(e.to_string().contains("HMAC"), "{e}");
            }
        }
    }

    #[test]
    fn algorithm_must_be_allowed_and_match_the_key() {
        let mut s = settings();
        s.algorithms = vec![Alg::ES256];
        let t = token("rsa", |_| {});
        let e = verify(&s, &keys().1, &t, NOW).unwrap_err();
        assert_eq!(e.to_string(), "algorithm \"RS256\" is not allowed (allowed: ES256)");
        for alg in ["RS384", "PS256", "ES512", "foo"] {
            let t = forged(serde_json::json!({"alg": alg, "kid": "rsa"}), b"x");
            assert!(
                matches!(check(&t).unwrap_err(), TokenError::AlgorithmNotAllowed { .. }),
                "{alg}"
            );
        }
        // An ES256 token naming the RSA key; an EdDSA signature presented as ES256.
        let ec_sig = token("ec", |_| {});
        let sig = ec_sig.rsplit_once('.').unwrap().1;
        let t = format!(
            "{}.{sig}",
            forged(serde_json::json!({"alg": "ES256", "kid": "rsa"}), b"")
                .rsplit_once('.')
                .unwrap()
                .0
        );
        let e = check(&t).unwrap_err();
        assert!(matches!(e, TokenError::KeyMismatch { .. }), "{e}");
        assert!(e.to_string().contains("an RSA key"), "{e}");
        let ed = token("ed", |_| {});
        let (_, ed_sig) = ed.rsplit_once('.').unwrap();
        let t = format!(
            "{}.{ed_sig}",
            forged(serde_json::json!({"alg": "ES256", "kid": "ed"}), b"")
                .rsplit_once('.')
                .unwrap()
                .0
        );
        assert!(matches!(check(&t).unwrap_err(), TokenError::KeyMismatch { .. }));
        // No kid and no key of the algorithm.
        let mut only_ed = keys().1.clone();
        only_ed.keys.retain(|k| k.alg() == Alg::EdDSA);
        let t = mint::mint(signer("ec"), None, &claims()).unwrap();
        assert_eq!(
            verify(&settings(), &only_ed, &t, NOW).unwrap_err(),
            TokenError::NoKeyForAlg(Alg::ES256)
        );
    }

    #[test]
    fn unknown_kid_and_no_keys() {
        let t = mint::mint(signer("ed"), Some("rotated-1"), &claims()).unwrap();
        let e = check(&t).unwrap_err();
        assert_eq!(e, TokenError::UnknownKid("rotated-1".into()));
        assert!(e.to_string().starts_with("unknown key id \"rotated-1\""));
        assert_eq!(
            verify(&settings(), &KeySet::default(), &t, NOW).unwrap_err(),
            TokenError::NoKeys
        );
    }

    #[test]
    fn malformed_tokens() {
        let good = token("ed", |_| {});
        let (h, rest) = good.split_once('.').unwrap();
        let (p, sig) = rest.split_once('.').unwrap();
        let cases = [
            "abc".to_string(),
            "a.b".to_string(),
            "a.b.c.d".to_string(),
            format!("{h}.{p}"),
            format!("!!.{p}.{sig}"),
            format!("{}.{p}.{sig}", URL_SAFE_NO_PAD.encode("[1]")),
            format!("{}.{p}.{sig}", URL_SAFE_NO_PAD.encode(r#"{"kid":"ed"}"#)),
            format!("{}.{p}.{sig}", URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":7}"#)),
            format!("{h}.{p}.{sig}=="),
            format!("{h}.{p}.***"),
            "x".repeat(MAX_TOKEN_BYTES + 1),
        ];
        for c in &cases {
            let e = check(c).unwrap_err();
            assert!(matches!(e, TokenError::Malformed(_)), "{c:.60}: {e}");
        }
        let five = format!("{h}.a.b.c.d");
        assert_eq!(check(&five).unwrap_err(), TokenError::Encrypted);
        let crit = forged(serde_json::json!({"alg": "EdDSA", "kid": "ed", "crit": ["exp"]}), b"x");
        assert_eq!(check(&crit).unwrap_err(), TokenError::Critical);
        // A payload that is not JSON, correctly signed.
        let msg = format!("{h}.{}", URL_SAFE_NO_PAD.encode("not json"));
        let sig = signer("ed").sign(msg.as_bytes()).unwrap();
        let t = format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig));
        assert!(matches!(check(&t).unwrap_err(), TokenError::Malformed(_)));
    }

    #[test]
    fn names_roles_and_targets() {
        let s = settings();
        let c = claims();
        // The user must be the subject.
        let e = identity(&s, "bob", &c).unwrap_err();
        assert_eq!(e.to_string(), "user \"bob\" does not match the token's `sub` \"alice\"");
        let mut s2 = s.clone();
        s2.user_must_match = false;
        assert_eq!(identity(&s2, "bob", &c).unwrap().name, "alice");
        // Another name claim, nested role claims, pass-through.
        let mut s3 = s.clone();
        s3.user_claim = "preferred_username".into();
        s3.roles_claim = "realm_access.roles".into();
        s3.role_passthrough = true;
        let mut c3 = c.clone();
        c3.insert("preferred_username".into(), "alice.smith".into());
        c3.insert("realm_access".into(), serde_json::json!({"roles": ["analysts", "ops"]}));
        let id = identity(&s3, "alice.smith", &c3).unwrap();
        assert_eq!(id.roles, vec!["auditor", "ops", "reader"]);
        assert_eq!(
            identity(&s3, "alice", &c).unwrap_err(),
            TokenError::MissingClaim("preferred_username".into())
        );
        // Targets from roles.
        let mut s4 = s.clone();
        s4.role_targets = Some(
            [
                ("admin".to_string(), vec!["postgres".to_string(), "test".to_string()]),
                ("reader".to_string(), vec!["postgres".to_string()]),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(identity(&s4, "alice", &c).unwrap().targets, vec!["postgres", "test"]);
        let mut c4 = c.clone();
        c4.insert("groups".into(), serde_json::json!(["nobody"]));
        let id = identity(&s4, "alice", &c4).unwrap();
        assert!(id.roles.is_empty() && id.targets.is_empty());
        assert!(!id.may_reach("postgres"));
        c4.insert("groups".into(), "analysts".into());
        assert_eq!(identity(&s4, "alice", &c4).unwrap().targets, vec!["postgres"]);
        c4.insert("groups".into(), 5.into());
        assert!(matches!(
            identity(&s4, "alice", &c4).unwrap_err(),
            TokenError::BadClaim(..)
        ));
        c4.insert("sub".into(), "".into());
        assert!(matches!(identity(&s4, "", &c4).unwrap_err(), TokenError::BadClaim(..)));
    }

    #[test]
    fn messages_never_hold_the_token() {
        let t = token("ed", |c| {
            c.insert("exp".into(), (NOW - 1000).into());
        });
        let a = OidcAuthenticator::with_keys(settings(), keys().1.clone());
        let e = super::super::Authenticator::authenticate(&a, "alice", t.as_bytes()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("password authentication failed for user \"alice\": token expired"),
            "{msg}"
        );
        for part in t.split('.') {
            assert!(!msg.contains(part), "{msg}");
        }
        // Long or hostile claim values are cut and escaped.
        assert_eq!(shown("a\"b\n"), "a\\\"b\\n");
        assert_eq!(shown(&"x".repeat(100)).chars().count(), 65);
    }

    #[test]
    fn jwt_shape() {
        assert!(!looks_like_jwt(b"demo-token-change-me"));
        assert!(!looks_like_jwt(b"a.b.c"));
        assert!(!looks_like_jwt(b"\xff.b.c"));
        assert!(!looks_like_jwt(b"e30.b.c=")); // `{}` header, but padding
        assert!(looks_like_jwt(b"e30.b.c")); // `{}`
        assert!(looks_like_jwt(b"e30..")); // an unsecured token's shape
    }

    #[test]
    fn admin_bearer_tokens_carry_the_admin_audience_only() {
        let auth = OidcAuthenticator::with_keys(settings(), keys().1.clone());
        // An agent's database token is not an admin credential…
        let db = token("ed", |_| {});
        assert!(auth.check("alice", &db, NOW).is_ok());
        let e = auth.check_bearer(&db, NOW).unwrap_err();
        assert!(e.to_string().contains("audience"), "{e}");
        // …an admin token is, and does not open a database session.
        let admin = token("ed", |c| {
            c.insert("aud".into(), Value::from("gatehouse-admin"));
        });
        assert_eq!(auth.check_bearer(&admin, NOW).unwrap().name, "alice");
        assert!(auth.check("alice", &admin, NOW).is_err());
        // Without an admin audience no JWT reaches the admin API.
        let none = OidcAuthenticator::with_keys(
            Settings {
                admin_audiences: Vec::new(),
                ..settings()
            },
            keys().1.clone(),
        );
        assert!(none.check_bearer(&admin, NOW).is_err());
        assert!(none.check_bearer(&db, NOW).is_err());
    }
}

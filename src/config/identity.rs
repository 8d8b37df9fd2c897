//! `[[identity]]` (static identities with hashed tokens) and `[oidc]`
//! (tokens from an identity provider).

use super::locate::{Invalid, PathPart};
use super::loopback_http;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Parses a stored token hash, `sha256:<64 hex>`, into the digest.
pub fn parse_token_hash(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
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
    /// The `aud` of tokens the admin API accepts as bearer tokens (none
    /// set: it accepts no JWT). Kept apart from `audience` so that an
    /// agent's database token is never an admin credential.
    pub admin_audience: OneOrMany,
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
    /// The console's sign-in for people: the authorization-code flow with
    /// PKCE against this provider.
    pub console: Option<OidcConsole>,
}

/// `[oidc.console]`: the console's single sign-on. The ID token the
/// provider returns is checked as an admin-API JWT (its `aud`, the
/// `client_id`, must be one of `admin_audience`), its roles from
/// `role_map` like any other.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConsole {
    pub client_id: String,
    /// A confidential client's secret (sent with the code); absent for a
    /// public client (PKCE alone).
    pub client_secret_env: Option<String>,
    /// The provider's authorization and token endpoints.
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    /// Where the provider sends the browser back:
    /// `<admin URL>/console/oidc/callback`, registered with the provider.
    pub redirect_url: String,
    #[serde(default = "console_scopes")]
    pub scopes: Vec<String>,
}

fn console_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}

impl Default for Oidc {
    fn default() -> Self {
        Oidc {
            issuer: String::new(),
            audience: OneOrMany::Many(Vec::new()),
            admin_audience: OneOrMany::Many(Vec::new()),
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
            console: None,
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

/// Checks every static identity: a unique name, a well-formed token hash,
/// targets that exist.
pub(super) fn validate_identities(identities: &[IdentityConfig], names: &HashSet<String>) -> Result<(), Invalid> {
    use PathPart::{Idx, Key};
    let mut ids = HashSet::new();
    for (i, id) in identities.iter().enumerate() {
        let k = |k: &'static str| vec![Key("identity"), Idx(i), Key(k)];
        if id.name.is_empty() || !ids.insert(id.name.clone()) {
            return Err((k("name"), format!("identity name `{}` is empty or used twice", id.name)));
        }
        if parse_token_hash(&id.token_hash).is_none() {
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

pub(super) fn validate_oidc(o: &mut Oidc, base: &Path, targets: &HashSet<String>) -> Result<(), Invalid> {
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
    let admin = o.admin_audience.to_vec();
    if admin.iter().any(|a| a.is_empty() || auds.contains(a)) {
        return Err((
            k("admin_audience"),
            "must differ from every `audience`: a database token must not be an admin credential".into(),
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
    if let Some(c) = &o.console {
        let k = |f: &'static str| vec![Key("oidc"), Key("console"), Key(f)];
        if !admin.contains(&c.client_id) {
            return Err((
                k("client_id"),
                "must be one of [oidc] admin_audience: the ID token's `aud` is the client_id, and the console \
                 takes only admin-audience tokens"
                    .into(),
            ));
        }
        for (f, u) in [
            ("authorization_endpoint", &c.authorization_endpoint),
            ("token_endpoint", &c.token_endpoint),
            ("redirect_url", &c.redirect_url),
        ] {
            let https = u.len() > 8 && u.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("https://"));
            if !https && !loopback_http(u) {
                return Err((
                    k(f),
                    "must be an https:// URL (http:// only to 127.0.0.1, localhost or [::1])".into(),
                ));
            }
        }
        if !c.redirect_url.ends_with("/console/oidc/callback") {
            return Err((
                k("redirect_url"),
                "must be the admin listener's /console/oidc/callback, as approvers reach it".into(),
            ));
        }
        if !c.scopes.iter().any(|s| s == "openid") {
            return Err((k("scopes"), "must include openid".into()));
        }
        if let Some(var) = &c.client_secret_env {
            if std::env::var(var).map(|v| v.is_empty()).unwrap_or(true) {
                return Err((k("client_secret_env"), format!("environment variable {var} is not set")));
            }
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

//! The console's single sign-on: OpenID Connect's authorization-code flow
//! with PKCE (S256) against `[oidc.console]`.
//!
//! `/console/oidc/start` draws a state, a nonce and a code verifier, keeps
//! them (ten minutes, once), binds the state to the browser with a cookie
//! and sends the browser to the provider. `/console/oidc/callback` takes
//! the code only with that state from that browser, redeems it at the
//! token endpoint with the verifier, and checks the ID token as an admin
//! JWT (signature by the provider's JWKS, issuer, `aud` = client_id among
//! `admin_audience`, expiry) and its nonce. The console session then holds
//! the ID token: it ends when the token expires or its roles no longer
//! map, as for a JWT pasted at sign-in.

use super::admin::{audit, AppState};
use super::console::Credential;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::Value;
use sha2::Digest;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The cookie binding a sign-in to the browser that began it: a secret of
/// its own (not the state, which travels in URLs and logs).
const STATE_COOKIE: &str = "gh_console_sso";
/// Its name with TLS: a `__Host-` cookie cannot be planted from a sibling
/// domain or over plain HTTP.
const STATE_COOKIE_TLS: &str = "__Host-gh_console_sso";
/// How long a begun sign-in may take.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// Sign-ins begun and not finished, at most; past it the oldest is dropped.
const MAX_PENDING: usize = 10_000;
/// Largest token endpoint answer read.
const MAX_TOKEN_RESPONSE: u64 = 256 * 1024;

struct Pending {
    nonce: String,
    verifier: String,
    /// SHA-256 of the browser's binding secret (its cookie).
    binding: [u8; 32],
    at: Instant,
}

/// Sign-ins under way, by state.
#[derive(Default)]
pub struct Sso {
    pending: Mutex<HashMap<String, Pending>>,
}

fn state_cookie(config: &crate::config::Config) -> &'static str {
    if config.admin.tls.is_some() {
        STATE_COOKIE_TLS
    } else {
        STATE_COOKIE
    }
}

fn random() -> String {
    B64.encode(rand::random::<[u8; 32]>())
}

/// The PKCE S256 challenge of a verifier.
pub fn challenge(verifier: &str) -> String {
    B64.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// A page saying why the sign-in did not work (no detail an attacker
/// could use; the log has the reason).
fn refused(why: &str) -> Response {
    page(StatusCode::FORBIDDEN, why)
}

/// Single sign-on is not set up here.
fn not_configured() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Single sign-on is not configured ([oidc.console]).",
    )
}

fn page(status: StatusCode, why: &str) -> Response {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in failed · gatehouse</title></head>\
         <body><main><h1>Sign-in failed</h1><p>{}</p><p><a href=\"/console\">Back to the console</a></p></main></body></html>\n",
        super::links::esc(why)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, super::console::CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter())
        .finish()
}

/// `GET /console/oidc/start`: off to the provider.
pub async fn start(State(st): State<AppState>) -> Response {
    let config = st.shared.state.load().config.clone();
    let Some(c) = config.oidc.as_ref().and_then(|o| o.console.as_ref()) else {
        return not_configured();
    };
    let (state, nonce, verifier, binding) = (random(), random(), random(), random());
    let url = format!(
        "{}{}{}",
        c.authorization_endpoint,
        if c.authorization_endpoint.contains('?') {
            "&"
        } else {
            "?"
        },
        query(&[
            ("response_type", "code"),
            ("client_id", &c.client_id),
            ("redirect_uri", &c.redirect_url),
            ("scope", &c.scopes.join(" ")),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &challenge(&verifier)),
            ("code_challenge_method", "S256"),
        ])
    );
    {
        let mut g = st.sso.pending.lock().unwrap_or_else(|p| p.into_inner());
        g.retain(|_, p| p.at.elapsed() < PENDING_TTL);
        if g.len() >= MAX_PENDING {
            let oldest = g.iter().min_by_key(|(_, p)| p.at).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                g.remove(&k);
            }
        }
        g.insert(
            state.clone(),
            Pending {
                nonce,
                verifier,
                binding: sha2::Sha256::digest(binding.as_bytes()).into(),
                at: Instant::now(),
            },
        );
    }
    // Lax, not Strict: the provider's redirect back is a cross-site
    // top-level navigation, and the cookie must come with it.
    let cookie = format!(
        "{}={binding}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        state_cookie(&config),
        PENDING_TTL.as_secs(),
        if config.admin.tls.is_some() { "; Secure" } else { "" }
    );
    let (Ok(loc), Ok(c)) = (HeaderValue::from_str(&url), HeaderValue::from_str(&cookie)) else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The provider's address cannot be used.",
        );
    };
    let mut resp = StatusCode::FOUND.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, loc);
    h.insert(header::SET_COOKIE, c);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// The code redeemed at the token endpoint: the ID token.
async fn redeem(
    c: &crate::config::OidcConsole,
    ca: Option<std::path::PathBuf>,
    code: &str,
    verifier: &str,
) -> Result<String, String> {
    let mut form = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code.to_string()),
        ("redirect_uri", c.redirect_url.clone()),
        ("client_id", c.client_id.clone()),
        ("code_verifier", verifier.to_string()),
    ];
    if let Some(var) = &c.client_secret_env {
        let secret = std::env::var(var).map_err(|_| format!("{var} is not set"))?;
        form.push(("client_secret", secret));
    }
    let url = c.token_endpoint.clone();
    tokio::task::spawn_blocking(move || -> Result<String, String> {
        let agent = super::notify::http_agent(ca.as_deref())?;
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = agent.post(&url).send_form(&pairs).map_err(|e| match e {
            ureq::Error::Status(code, _) => format!("the token endpoint answered {code}"),
            ureq::Error::Transport(t) => format!("the token endpoint: {}", t.kind()),
        })?;
        let mut text = String::new();
        use std::io::Read as _;
        resp.into_reader()
            .take(MAX_TOKEN_RESPONSE)
            .read_to_string(&mut text)
            .map_err(|e| format!("the token endpoint: {e}"))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|_| "the token endpoint's answer is not JSON".to_string())?;
        v["id_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "the token endpoint gave no id_token".to_string())
    })
    .await
    .map_err(|_| "the token request failed".to_string())?
}

/// The claims of a JWT whose signature was checked already.
fn claims_of(jwt: &str) -> Option<Value> {
    let payload = jwt.split('.').nth(1)?;
    serde_json::from_slice(&B64.decode(payload).ok()?).ok()
}

/// Whether an ID token was issued to this client (OpenID Connect Core
/// 3.1.3.7): `aud` names the client_id, and `azp`, present or needed
/// with several audiences, is it.
fn issued_to(claims: &Value, client_id: &str) -> bool {
    let auds: Vec<&str> = match &claims["aud"] {
        Value::String(a) => vec![a.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !auds.contains(&client_id) {
        return false;
    }
    match claims["azp"].as_str() {
        Some(azp) => azp == client_id,
        None => auds.len() == 1,
    }
}

/// `GET /console/oidc/callback?code=…&state=…`: back from the provider.
pub async fn callback(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let config = st.shared.state.load().config.clone();
    let Some(oidc) = config.oidc.as_ref() else {
        return not_configured();
    };
    let Some(c) = oidc.console.as_ref() else {
        return not_configured();
    };
    if let Some(e) = q.get("error") {
        tracing::info!(target: "gatehouse::admin", error = %e.chars().take(60).collect::<String>(), "console sign-on: the provider refused");
        return refused("The identity provider did not sign you in.");
    }
    let (Some(code), Some(state)) = (q.get("code"), q.get("state")) else {
        return refused("The provider's answer has no code or state.");
    };
    // The state must be unused, and this browser the one that began it:
    // its cookie holds the sign-in's own secret, which no URL carries.
    let pending = st.sso.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(state);
    let Some(p) = pending.filter(|p| p.at.elapsed() < PENDING_TTL) else {
        tracing::debug!(target: "gatehouse::admin", "console sign-on refused: an unknown, expired or used state");
        return refused("This sign-in has expired or was used already. Start again from the console.");
    };
    let bound = super::console::cookie(&headers, state_cookie(&config)).is_some_and(|c| {
        let d: [u8; 32] = sha2::Sha256::digest(c.as_bytes()).into();
        bool::from(d.ct_eq(&p.binding))
    });
    if !bound {
        tracing::debug!(target: "gatehouse::admin", "console sign-on refused: not the browser that began it");
        return refused("This sign-in was not started in this browser. Start again from the console.");
    }
    let id_token = match redeem(c, oidc.jwks_ca_file.clone(), code, &p.verifier).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(target: "gatehouse::admin", error = %e, "console sign-on: the code was not redeemed");
            return refused("The identity provider did not confirm the sign-in.");
        }
    };
    let Some((name, roles)) = super::console::resolve_token(&st, &id_token) else {
        tracing::warn!(target: "gatehouse::admin", "console sign-on refused: the ID token does not verify as an admin token");
        return refused(
            "The identity provider's token is not valid for the console (issuer, audience, expiry or roles).",
        );
    };
    let claims = claims_of(&id_token).unwrap_or(Value::Null);
    let nonce_ok = claims["nonce"]
        .as_str()
        .is_some_and(|n| bool::from(n.as_bytes().ct_eq(p.nonce.as_bytes())));
    if !nonce_ok {
        tracing::warn!(target: "gatehouse::admin", by = %name, "console sign-on refused: the ID token's nonce is not this sign-in's");
        audit(
            &st,
            &name,
            &roles,
            "console sign-in",
            "console",
            "refused: another sign-in's ID token (nonce)",
        )
        .await;
        return refused("The identity provider's token is not for this sign-in.");
    }
    if !issued_to(&claims, &c.client_id) {
        audit(
            &st,
            &name,
            &roles,
            "console sign-in",
            "console",
            "refused: an ID token issued to another client",
        )
        .await;
        return refused("The identity provider's token was issued to another client.");
    }
    if !roles.iter().any(|r| super::console::console_role(r, &config)) {
        audit(
            &st,
            &name,
            &roles,
            "console sign-in",
            "console",
            "refused: no console role",
        )
        .await;
        return refused("Your groups map to none of the console's roles (admin, auditor, approver).");
    }
    let Some((id, _csrf)) = st.console.open(Credential::Jwt(id_token), &name) else {
        return refused("Too many console sessions are open; try again later.");
    };
    tracing::info!(target: "gatehouse::admin", by = %name, "console sign-in (single sign-on)");
    audit(&st, &name, &roles, "console sign-in", "console", "ok, single sign-on").await;
    let mut resp = StatusCode::FOUND.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/console#/reviews"));
    h.append(header::SET_COOKIE, super::console::session_cookie(&st, &id));
    if let Ok(v) = HeaderValue::from_str(&format!("{}=; Path=/; Max-Age=0", state_cookie(&config))) {
        h.append(header::SET_COOKIE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_token_is_for_this_client_only() {
        let c = |v: Value| issued_to(&v, "console");
        assert!(c(serde_json::json!({ "aud": "console" })));
        assert!(c(serde_json::json!({ "aud": ["console"] })));
        assert!(c(serde_json::json!({ "aud": ["console", "api"], "azp": "console" })));
        assert!(
            !c(serde_json::json!({ "aud": ["console", "api"] })),
            "several audiences need azp"
        );
        assert!(!c(serde_json::json!({ "aud": ["console", "api"], "azp": "api" })));
        assert!(!c(serde_json::json!({ "aud": "api" })));
        assert!(!c(serde_json::json!({ "aud": "console", "azp": "other" })));
        assert!(!c(serde_json::json!({})));
    }

    #[test]
    fn pkce_s256_as_rfc7636_shows_it() {
        // RFC 7636, appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}

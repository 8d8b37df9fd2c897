//! The web console: its assets (built into the binary from `console/`),
//! sign-in, and the cookie sessions its pages call the admin API with.
//!
//! A person signs in with an admin token (or, with `[oidc] admin_audience`,
//! a JWT for it); the console session is a random id in a `Secure` (when
//! the admin listener has TLS), `HttpOnly`, `SameSite=Strict` cookie. The
//! session stores no roles of its own: each request resolves the token
//! again (a static token by its hash in the configuration now, a JWT by
//! verifying it again), so removing a token or letting a JWT expire ends
//! the sessions it opened. Every change made with the cookie must carry
//! the session's CSRF token in `X-CSRF-Token` and, when the browser sends
//! an `Origin`, come from the admin listener's own origin.
//!
//! The pages are served with a Content-Security-Policy that allows the
//! console's own script and style only: no inline script, no outside
//! resource, no framing.

use super::admin::{audit, error, AppState};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::Digest;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The cookie's name over plain HTTP (loopback development).
pub const COOKIE: &str = "gh_console";
/// Its name with TLS: a `__Host-` cookie cannot be set by a sibling
/// domain or over plain HTTP, so nobody can plant one beside it.
pub const COOKIE_TLS: &str = "__Host-gh_console";
/// Console sessions one person (by name) may hold at once; past it, their
/// own oldest ends (never anyone else's).
const SESSIONS_PER_CREDENTIAL: usize = 20;
/// The CSRF header the console's script sends on every change.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A console session's lifetime from sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Console sessions at once; past it the oldest is ended.
const MAX_SESSIONS: usize = 10_000;

/// The policy of every console response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const INDEX: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/app.js");
const APP_CSS: &str = include_str!("../../console/app.css");

/// What signed a session in.
pub(super) enum Credential {
    /// An admin token, by its SHA-256 (found in the configuration again
    /// at each request).
    Static([u8; 32]),
    /// An OIDC JWT for the admin audience, verified again at each request.
    Jwt(String),
}

struct Session {
    credential: Credential,
    /// Who signed in (the name the credential resolved to then): the
    /// per-person bound counts these, whatever token each session holds.
    owner: String,
    csrf: String,
    started: Instant,
}

/// Console sessions, by the SHA-256 of their cookie value.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn digest(s: &str) -> [u8; 32] {
    sha2::Sha256::digest(s.as_bytes()).into()
}

/// Who a console request is: name, roles, and whether it may change
/// something (CSRF token and origin checked).
pub struct CookieCaller {
    pub name: String,
    pub roles: Vec<String>,
    pub may_change: bool,
}

/// The value of cookie `name` in the request; none when the browser sends
/// it twice (a planted copy beside the real one: trust neither).
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v);
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// The session cookie's name for this configuration.
fn cookie_name(st: &AppState) -> &'static str {
    if st.shared.state.load().config.admin.tls.is_some() {
        COOKIE_TLS
    } else {
        COOKIE
    }
}

/// Whether the request's `Origin` (when the browser sends one) is the
/// admin listener's own, as the `Host` header names it.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .unwrap_or("");
    !authority.is_empty() && authority.eq_ignore_ascii_case(host)
}

/// The name and roles a token stands for now: an admin token of the
/// configuration, or a JWT for the admin audience.
pub fn resolve_token(st: &AppState, token: &str) -> Option<(String, Vec<String>)> {
    let d = digest(token);
    resolve(st, &Credential::Static(d)).or_else(|| resolve(st, &Credential::Jwt(token.to_string())))
}

fn resolve(st: &AppState, c: &Credential) -> Option<(String, Vec<String>)> {
    let state = st.shared.state.load();
    match c {
        Credential::Static(d) => state.config.admin.tokens.iter().find_map(|t| {
            let expected = crate::identity::parse_token_hash(&t.token_hash)?;
            bool::from(d.as_slice().ct_eq(&expected)).then(|| (t.name.clone(), t.roles.clone()))
        }),
        Credential::Jwt(jwt) => state.auth.bearer(jwt).map(|id| (id.name, id.roles)),
    }
}

impl Sessions {
    /// The caller of a request carrying a console cookie.
    pub fn caller(&self, st: &AppState, headers: &HeaderMap) -> Option<CookieCaller> {
        let id = cookie(headers, cookie_name(st))?;
        let key = digest(id);
        // The credential is copied out: a JWT is verified without the lock.
        let (credential, csrf_ok) = {
            let mut g = self.map.lock().unwrap_or_else(|p| p.into_inner());
            let s = g.get(&key)?;
            if s.started.elapsed() > SESSION_TTL {
                g.remove(&key);
                return None;
            }
            let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
            let csrf_ok = !sent.is_empty() && bool::from(sent.as_bytes().ct_eq(s.csrf.as_bytes()));
            let credential = match &s.credential {
                Credential::Static(d) => Credential::Static(*d),
                Credential::Jwt(j) => Credential::Jwt(j.clone()),
            };
            (credential, csrf_ok)
        };
        let resolved = resolve(st, &credential);
        let Some((name, roles)) = resolved else {
            // The token is gone from the configuration or the JWT expired.
            self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            return None;
        };
        Some(CookieCaller {
            name,
            roles,
            may_change: csrf_ok && same_origin(headers),
        })
    }

    /// The CSRF token of the request's session.
    fn csrf(&self, st: &AppState, headers: &HeaderMap) -> Option<String> {
        let key = digest(cookie(headers, cookie_name(st))?);
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .map(|s| s.csrf.clone())
    }

    pub(super) fn open(&self, credential: Credential, owner: &str) -> Option<(String, String)> {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let csrf = hex::encode(rand::random::<[u8; 32]>());
        let mut g = self.map.lock().unwrap_or_else(|p| p.into_inner());
        g.retain(|_, s| s.started.elapsed() <= SESSION_TTL);
        // One person holds a bounded number (each single sign-on brings a
        // new ID token, so they are counted by name): past it, their own
        // oldest ends, so nobody can sign everyone else out.
        let owner_key = owner.to_lowercase();
        let same = |s: &Session| s.owner.to_lowercase() == owner_key;
        while g.values().filter(|s| same(s)).count() >= SESSIONS_PER_CREDENTIAL {
            let oldest = g
                .iter()
                .filter(|(_, s)| same(s))
                .min_by_key(|(_, s)| s.started)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => g.remove(&k),
                None => break,
            };
        }
        if g.len() >= MAX_SESSIONS {
            // Tokens are few; only many distinct JWTs get here. The new
            // sign-in waits for sessions to end.
            return None;
        }
        g.insert(
            digest(&id),
            Session {
                credential,
                owner: owner.to_string(),
                csrf: csrf.clone(),
                started: Instant::now(),
            },
        );
        Some((id, csrf))
    }

    fn close(&self, st: &AppState, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, cookie_name(st)) {
            self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&digest(id));
        }
    }
}

fn with_headers(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    with_headers("text/html; charset=utf-8", INDEX)
}

pub async fn app_js() -> Response {
    with_headers("text/javascript; charset=utf-8", APP_JS)
}

pub async fn app_css() -> Response {
    with_headers("text/css; charset=utf-8", APP_CSS)
}

fn cookie_header(st: &AppState, value: &str, max_age: u64) -> HeaderValue {
    let name = cookie_name(st);
    let secure = if name == COOKIE_TLS { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("gh_console=; Max-Age=0"))
}

/// The session cookie for a new console session.
pub(super) fn session_cookie(st: &AppState, id: &str) -> HeaderValue {
    cookie_header(st, id, SESSION_TTL.as_secs())
}

/// Whether a role opens the console: one of the admin API's.
pub(super) fn console_role(role: &str, _config: &crate::config::Config) -> bool {
    matches!(role, "admin" | "auditor" | "approver")
}

/// `GET /console/sign-in-methods`: what the sign-in page offers.
pub async fn sign_in_methods(State(st): State<AppState>) -> Response {
    let sso = st
        .shared
        .state
        .load()
        .config
        .oidc
        .as_ref()
        .is_some_and(|o| o.console.is_some());
    let mut resp = Json(json!({ "token": true, "sso": sso })).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `POST /console/login`, body `{"token": "..."}` (JSON only: a form
/// posted from another site cannot send it).
pub async fn login(State(st): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
    if !json_body {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body is JSON: {\"token\": \"...\"} (sign in from the console's own page)",
        );
    }
    if !same_origin(&headers) {
        return error(
            StatusCode::FORBIDDEN,
            "sign in from the console's own page (JSON from the same origin)",
        );
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Login {
        token: String,
    }
    let Ok(l) = serde_json::from_slice::<Login>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is {\"token\": \"...\"}");
    };
    let token = l.token.trim();
    let Some((name, roles)) = (!token.is_empty()).then(|| resolve_token(&st, token)).flatten() else {
        tracing::info!(target: "gatehouse::admin", "console sign-in refused: unknown token");
        audit(&st, "-", &[], "console sign-in", "console", "refused: unknown token").await;
        return error(StatusCode::UNAUTHORIZED, "this token is not an admin token");
    };
    if !roles.iter().any(|r| console_role(r, &st.shared.state.load().config)) {
        audit(
            &st,
            &name,
            &roles,
            "console sign-in",
            "console",
            "refused: no console role",
        )
        .await;
        return error(
            StatusCode::FORBIDDEN,
            "this token has none of the console's roles (admin, auditor, approver)",
        );
    }
    let credential = if resolve(&st, &Credential::Static(digest(token))).is_some() {
        Credential::Static(digest(token))
    } else {
        Credential::Jwt(token.to_string())
    };
    let Some((id, csrf)) = st.console.open(credential, &name) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many console sessions are open; try again later",
        );
    };
    tracing::info!(target: "gatehouse::admin", by = %name, "console sign-in");
    audit(&st, &name, &roles, "console sign-in", "console", "ok").await;
    let mut resp = Json(json!({ "name": name, "roles": roles, "csrf": csrf })).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie_header(&st, &id, SESSION_TTL.as_secs()));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /console/me`: who the cookie is, and the CSRF token for changes.
pub async fn me(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let (name, roles) = match super::admin::authorize_roles(&st, &headers, "get", "/console/me") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let csrf = st.console.csrf(&st, &headers);
    let mut resp = Json(json!({ "name": name, "roles": roles, "csrf": csrf })).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `POST /console/logout`.
pub async fn logout(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let (name, roles) = match super::admin::authorize_roles(&st, &headers, "post", "/console/logout") {
        Ok(c) => c,
        Err(r) => return r,
    };
    st.console.close(&st, &headers);
    audit(&st, &name, &roles, "console sign-out", "console", "ok").await;
    let mut resp = Json(json!({ "signed_out": true })).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, cookie_header(&st, "", 0));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_origins() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; gh_console=abc; b=2"));
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "gh"), None);
        let mut twice = HeaderMap::new();
        twice.insert(
            header::COOKIE,
            HeaderValue::from_static("gh_console=planted; gh_console=abc"),
        );
        assert_eq!(cookie(&twice, COOKIE), None, "two copies: neither is trusted");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9090"));
        assert!(same_origin(&h), "no Origin: not a cross-site browser request");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:9090"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
    }
}

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

/// The cookie's name.
pub const COOKIE: &str = "gh_console";
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
enum Credential {
    /// An admin token, by its SHA-256 (found in the configuration again
    /// at each request).
    Static([u8; 32]),
    /// An OIDC JWT for the admin audience, verified again at each request.
    Jwt(String),
}

struct Session {
    credential: Credential,
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

/// The value of cookie `name` in the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
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
        let id = cookie(headers, COOKIE)?;
        let key = digest(id);
        let (resolved, csrf_ok) = {
            let mut g = self.map.lock().unwrap_or_else(|p| p.into_inner());
            let s = g.get(&key)?;
            if s.started.elapsed() > SESSION_TTL {
                g.remove(&key);
                return None;
            }
            let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
            let csrf_ok = !sent.is_empty() && bool::from(sent.as_bytes().ct_eq(s.csrf.as_bytes()));
            (resolve(st, &s.credential), csrf_ok)
        };
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
    fn csrf(&self, headers: &HeaderMap) -> Option<String> {
        let key = digest(cookie(headers, COOKIE)?);
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .map(|s| s.csrf.clone())
    }

    fn open(&self, credential: Credential) -> (String, String) {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let csrf = hex::encode(rand::random::<[u8; 32]>());
        let mut g = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() >= MAX_SESSIONS {
            g.retain(|_, s| s.started.elapsed() <= SESSION_TTL);
            if g.len() >= MAX_SESSIONS {
                let oldest = g.iter().min_by_key(|(_, s)| s.started).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    g.remove(&k);
                }
            }
        }
        g.insert(
            digest(&id),
            Session {
                credential,
                csrf: csrf.clone(),
                started: Instant::now(),
            },
        );
        (id, csrf)
    }

    fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
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
    let secure = if st.shared.state.load().config.admin.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("gh_console=; Max-Age=0"))
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
    if !json_body || !same_origin(&headers) {
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
        return error(StatusCode::UNAUTHORIZED, "this token is not an admin token");
    };
    let credential = if resolve(&st, &Credential::Static(digest(token))).is_some() {
        Credential::Static(digest(token))
    } else {
        Credential::Jwt(token.to_string())
    };
    let (id, csrf) = st.console.open(credential);
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
    let csrf = st.console.csrf(&headers);
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
    st.console.close(&headers);
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

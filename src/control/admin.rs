//! The admin API: HTTP/JSON (HTTPS with rustls when configured) on its own
//! port, on the control plane's runtime.
//!
//! Bearer tokens, stored hashed in the configuration, carry roles:
//! `admin` may do everything; `auditor` reads sessions and metrics;
//! `approver` approves reviews. Probes (`/healthz`, `/readyz`) and the
//! OpenAPI document need no token.
//!
//! A review is decided as the token's `name`; the token's roles (which may
//! include approver roles named under `[policy.roles]`) must meet the
//! review's `approvers` (`admin` always does), and a name never approves a
//! review its own identity asked for.

use super::decide::{decide, state_name, Action};
use super::Ops;
use crate::core::{KillReason, Shared};
use crate::policy::reviews::{Grant, ReviewError};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub shared: Arc<Shared>,
    pub ready: Arc<AtomicBool>,
    pub ops: Arc<dyn Ops>,
    /// The session recorder, when sessions are recorded.
    pub recorder: Option<Arc<super::recorder::Recorder>>,
    /// What Slack callbacks remember (signatures seen, e-mails looked up).
    pub slack: Arc<super::slack::SlackState>,
    /// The key of mail decision links, and the links spent.
    pub links: Arc<super::links::Links>,
    /// The web console's signed-in sessions.
    pub console: Arc<super::console::Sessions>,
    /// The console's single sign-ons under way.
    pub sso: Arc<super::sso::Sso>,
    /// This instance's link to its fleet, in fleet mode.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

impl AppState {
    pub fn new(
        shared: Arc<Shared>,
        ready: Arc<AtomicBool>,
        ops: Arc<dyn Ops>,
        recorder: Option<Arc<super::recorder::Recorder>>,
    ) -> AppState {
        AppState {
            shared,
            ready,
            ops,
            recorder,
            slack: Default::default(),
            links: Default::default(),
            console: Default::default(),
            sso: Default::default(),
            fleet: None,
        }
    }
}

/// A role an admin token may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Auditor,
    Approver,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "auditor" => Some(Role::Auditor),
            "approver" => Some(Role::Approver),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Approver => "approver",
        }
    }
}

/// Every route: method, path (axum syntax), roles allowed (empty: public),
/// summary. The router and the OpenAPI document are both made from it.
pub const ROUTES: &[(&str, &str, &[Role], &str)] = &[
    ("get", "/healthz", &[], "Liveness: 200 while the process runs."),
    (
        "get",
        "/readyz",
        &[],
        "Readiness: 200 once the gateway listens, 503 while starting or draining.",
    ),
    ("get", "/openapi.json", &[], "This document."),
    (
        "get",
        "/console",
        &[],
        "The web console (its page; the script and style are /console/app.js and /console/app.css).",
    ),
    ("get", "/console/app.js", &[], "The web console's script."),
    ("get", "/console/app.css", &[], "The web console's style."),
    (
        "post",
        "/console/login",
        &[],
        "Signs in to the console. Body (JSON, from the console's own origin): {\"token\": \"...\"}, an admin \
         token or an admin-audience JWT. Sets the console's session cookie (HttpOnly, SameSite=Strict; Secure \
         with TLS) and returns {name, roles, csrf}: every change made with the cookie needs the csrf value \
         in X-CSRF-Token.",
    ),
    (
        "get",
        "/console/sign-in-methods",
        &[],
        "What the console's sign-in offers: {token: true, sso: bool}.",
    ),
    (
        "get",
        "/console/oidc/start",
        &[],
        "Single sign-on ([oidc.console]): redirects to the provider (authorization code with PKCE S256, a \
         state bound to the browser by a cookie, a nonce).",
    ),
    (
        "get",
        "/console/oidc/callback",
        &[],
        "Single sign-on: the provider's redirect back. Takes the code only with this browser's unused \
         state, redeems it with the PKCE verifier, checks the ID token (signature, issuer, admin audience, \
         expiry, nonce) and opens a console session.",
    ),
    (
        "get",
        "/console/me",
        &[Role::Admin, Role::Auditor, Role::Approver],
        "Who the caller is: {name, roles, csrf}.",
    ),
    (
        "post",
        "/console/logout",
        &[Role::Admin, Role::Auditor, Role::Approver],
        "Ends the console session.",
    ),
    ("get", "/metrics", &[Role::Admin, Role::Auditor], "Prometheus metrics."),
    (
        "get",
        "/api/v1/fleet",
        &[Role::Admin, Role::Auditor],
        "Fleet mode: the instances sharing the control database, whether each is alive, and its last reload.",
    ),
    (
        "get",
        "/api/v1/sessions",
        &[Role::Admin, Role::Auditor],
        "Sessions open now: who, where, since when, statements and rows so far, what is held. In a fleet, every \
         instance's (each with its `instance`).",
    ),
    (
        "post",
        "/api/v1/sessions/{id}/kill",
        &[Role::Admin],
        "Ends a session; its client gets 57P01. Body (optional): {\"reason\": \"...\"}, audited.",
    ),
    (
        "post",
        "/api/v1/reload",
        &[Role::Admin],
        "Re-reads the configuration, as SIGHUP does; in a fleet, `?fleet=true` has every instance re-read its own file and answers with each one's outcome.",
    ),
    (
        "get",
        "/api/v1/reviews",
        &[Role::Admin, Role::Approver, Role::Auditor],
        "Reviews of held statements: open ones (oldest first), then finished ones (newest first). \
         `?state=pending` (or approved, denied, withdrawn) keeps one state.",
    ),
    (
        "get",
        "/api/v1/reviews/events",
        &[Role::Admin, Role::Approver, Role::Auditor],
        "Server-sent events: `reviews` with the open reviews and the latest finished ones, at once and \
         after every change (within 200 ms).",
    ),
    (
        "get",
        "/api/v1/overview",
        &[Role::Admin, Role::Auditor],
        "Counters since start as JSON (the numbers of /metrics): sessions, statements, rows, reviews \
         pending, masked values by rule, statements by class and decision, recorder backlog.",
    ),
    (
        "get",
        "/api/v1/reviews/{id}",
        &[Role::Admin, Role::Approver, Role::Auditor],
        "One review.",
    ),
    (
        "post",
        "/api/v1/reviews/{id}/approve",
        &[Role::Admin, Role::Approver],
        "Approves as the token's name. Body (optional): {\"reason\": \"...\", \"grant_minutes\": N}; \
         N absent or 0 lets this statement run once, N > 0 also grants the statement's class (and, for \
         a review held by a budget, a lifted budget) to the identity on the target for N minutes \
         (`grant_seconds` instead gives the time in seconds). With N-of-M approvals the review stays \
         pending until enough approvers agree.",
    ),
    (
        "post",
        "/api/v1/reviews/{id}/deny",
        &[Role::Admin, Role::Approver],
        "Denies as the token's name. Body: {\"reason\": \"...\"}; the client gets the reason.",
    ),
    (
        "get",
        "/api/v1/recordings",
        &[Role::Admin, Role::Auditor],
        "Recorded sessions, newest first. Filters: identity, target, since, until (Unix seconds or \
         YYYY-MM-DDTHH:MM:SSZ), text (in statements), decision (allow, deny, approved); paging: \
         limit (1-1000, default 50), offset.",
    ),
    (
        "get",
        "/api/v1/recordings/{id}",
        &[Role::Admin, Role::Auditor],
        "One recorded session: who, where, how it ended, record counts, and its chain verified.",
    ),
    (
        "get",
        "/api/v1/recordings/{id}/events",
        &[Role::Admin, Role::Auditor],
        "The session's records: `?format=jsonl` (default), `csv` or `text` (a transcript). Audited.",
    ),
    (
        "get",
        "/api/v1/recordings/{id}/tail",
        &[Role::Admin, Role::Auditor],
        "Server-sent events: the records so far, then each new one until the session is sealed. Audited.",
    ),
    (
        "post",
        "/slack/interactions",
        &[],
        "Slack's interaction callback (the app's Request URL): Approve / Deny buttons. No bearer token: \
         every request must carry Slack's signature (X-Slack-Signature, X-Slack-Request-Timestamp within \
         5 minutes, each accepted once) made with the app's signing secret; the clicker decides as the \
         approver [[notify.slack.approver]] names.",
    ),
    (
        "get",
        "/review-links/{token}",
        &[],
        "A mail decision link: shows the review and a button; decides nothing. No bearer token: the \
         link's signed token names the review, the action, the approver and an expiry.",
    ),
    (
        "post",
        "/review-links/{token}",
        &[],
        "The button of a mail decision link: decides as the link's approver (as configured now), once \
         for the mail's two links. Body (form-encoded, for a denial): reason.",
    ),
    (
        "get",
        "/api/v1/audit",
        &[Role::Admin, Role::Auditor],
        "The audit log of admin actions (same chained format): `?format=jsonl|csv|text`. Audited.",
    ),
];

/// Longest grant an approval may give: a day.
pub use crate::config::MAX_GRANT_MINUTES;
/// Largest request body read, in bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest reason accepted with a decision, in bytes.
pub const MAX_REASON_BYTES: usize = 1000;

pub(super) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Who calls: name, roles (as configured), and whether the request may
/// change something. A bearer token (`Authorization: Bearer <token>`: an
/// admin token or an admin-audience JWT) may; a console cookie only with
/// its CSRF token from the console's own origin.
fn caller_roles(st: &AppState, headers: &HeaderMap) -> Option<(String, Vec<String>, bool)> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?
            .trim();
        // An OIDC JWT's groups map to roles (`[oidc] role_map`), which may
        // be admin, auditor, approver or approver roles of the policy.
        return super::console::resolve_token(st, token).map(|(n, r)| (n, r, true));
    }
    st.console.caller(st, headers).map(|c| (c.name, c.roles, c.may_change))
}

/// The roles a route allows (empty: public), `None` for a route not in
/// [`ROUTES`].
fn route_roles(method: &str, path: &str) -> Option<&'static [Role]> {
    ROUTES
        .iter()
        .find(|(m, p, _, _)| *m == method && *p == path)
        .map(|r| r.2)
}

/// Checks the caller may use the route at `path` with `method`.
#[allow(clippy::result_large_err)] // the error is the response itself
pub(super) fn authorize(st: &AppState, headers: &HeaderMap, method: &str, path: &str) -> Result<String, Response> {
    authorize_roles(st, headers, method, path).map(|(name, _)| name)
}

/// As [`authorize`], also returning the token's configured roles.
#[allow(clippy::result_large_err)]
pub(super) fn authorize_roles(
    st: &AppState,
    headers: &HeaderMap,
    method: &str,
    path: &str,
) -> Result<(String, Vec<String>), Response> {
    // Deny by default: a handler asking about a route the table does not
    // hold is a mistake, refused rather than public.
    let Some(allowed) = route_roles(method, path) else {
        tracing::error!(target: "gatehouse::admin", method, path, "a route missing from the route table was refused");
        return Err(error(
            StatusCode::FORBIDDEN,
            "this route is not in gatehouse's route table",
        ));
    };
    if allowed.is_empty() {
        return Ok((String::new(), Vec::new()));
    }
    let Some((name, roles, may_change)) = caller_roles(st, headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token (or a console sign-in) is required",
        ));
    };
    if method != "get" && !may_change {
        tracing::warn!(target: "gatehouse::admin", by = %name, path, "a console change without its CSRF token was refused");
        return Err(error(
            StatusCode::FORBIDDEN,
            "a change from the console needs its CSRF token (X-CSRF-Token) from the console's own origin",
        ));
    }
    if roles
        .iter()
        .filter_map(|r| Role::parse(r))
        .any(|r| allowed.contains(&r))
    {
        Ok((name, roles))
    } else {
        let need: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        Err(error(
            StatusCode::FORBIDDEN,
            &format!("this needs one of the roles: {}", need.join(", ")),
        ))
    }
}

/// Writes an admin action to the audit log (when sessions are recorded).
pub(super) async fn audit(st: &AppState, who: &str, roles: &[String], action: &str, object: &str, outcome: &str) {
    if let Some(r) = st.recorder.as_ref() {
        r.audit(who, roles, action, object, outcome).await;
    }
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(st): State<AppState>) -> Response {
    if st.shared.draining.load(Ordering::Acquire) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    if !st.ready.load(Ordering::Acquire) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "starting");
    }
    // Without its control database an instance still serves what policy
    // allows (and refuses holds): it stays ready, so that an outage of the
    // control database does not take the whole fleet out of the load
    // balancer; the state is in the body and in the metrics.
    match &st.fleet {
        Some(f) => Json(json!({ "status": "ready", "fleet": f.status() })).into_response(),
        None => Json(json!({ "status": "ready" })).into_response(),
    }
}

async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers, "get", "/metrics") {
        return r;
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        match &st.fleet {
            Some(f) => super::metrics::for_fleet(super::metrics::render(&st.shared, st.recorder.as_deref()), f),
            None => super::metrics::render(&st.shared, st.recorder.as_deref()),
        },
    )
        .into_response()
}

async fn sessions(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers, "get", "/api/v1/sessions") {
        return r;
    }
    let mut list = st.shared.registry.list_progress();
    list.sort_by_key(|(_, i, _, _)| i.started_unix);
    // What each session has waiting for review now.
    let held: std::collections::HashMap<u32, (String, String)> = st
        .shared
        .reviews
        .list()
        .into_iter()
        .filter(|r| r.status == crate::policy::reviews::Status::Pending)
        .map(|r| (r.request.session, (r.id, r.request.class)))
        .collect();
    // The recording of each open session, for its live tail.
    let recordings: std::collections::HashMap<u32, String> = match st.recorder.as_ref() {
        Some(r) => r
            .index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .live()
            .map(|e| (e.session, e.id.to_string()))
            .collect(),
        None => Default::default(),
    };
    let here = st.fleet.as_ref().map(|f| f.instance.clone());
    let mut items: Vec<_> = list
        .into_iter()
        .map(|(id, i, statements, rows)| {
            json!({
                "id": id.to_string(),
                "instance": here,
                "statements": statements,
                "rows": rows,
                "held": held.get(&id).map(|(r, class)| json!({ "review": r, "class": class })),
                "identity": i.identity.name,
                "target": i.target,
                "client_addr": i.client.to_string(),
                "client_tls": i.client_tls,
                "worker": i.worker,
                "started": i.started_unix,
                "recording": recordings.get(&id),
            })
        })
        .collect();
    // In a fleet, the other instances' sessions too (as they last wrote
    // them); the list says when they could not be read.
    if let Some(f) = &st.fleet {
        match f.remote_sessions().await {
            Ok(remote) => items.extend(remote.into_iter().map(|r| json!(r))),
            Err(e) => {
                tracing::warn!(target: "gatehouse::admin", error = %e, "other instances' sessions not listed");
                return Json(json!({
                    "sessions": items,
                    "incomplete": "the other instances' sessions could not be read from the control database",
                }))
                .into_response();
            }
        }
    }
    Json(json!({ "sessions": items })).into_response()
}

/// `?instance=` of a kill: the fleet instance that has the session.
#[derive(Debug, serde::Deserialize, Default)]
struct KillAt {
    instance: Option<String>,
}

async fn kill(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(at): Query<KillAt>,
    body: axum::body::Bytes,
) -> Response {
    let (who, roles) = match authorize_roles(&st, &headers, "post", "/api/v1/sessions/{id}/kill") {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Ok(pid) = id.parse::<u32>() else {
        return error(StatusCode::BAD_REQUEST, "a session id is a number");
    };
    let reason = match decision(&body) {
        Ok(d) if d.grant_secs() == 0 => d.reason,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "a kill grants nothing: no `grant_minutes`"),
        Err(r) => return r,
    };
    if let (Some(fleet), Some(instance)) = (&st.fleet, &at.instance) {
        if *instance != fleet.instance {
            if !crate::config::valid_instance_name(instance) {
                return error(StatusCode::BAD_REQUEST, "no instance has this name");
            }
            let what = format!("session {pid} on {instance}");
            return match fleet.kill_remote(instance, pid, &who, &roles, &reason).await {
                Ok(true) => {
                    tracing::info!(target: "gatehouse::admin", session = pid, instance = %instance, by = %who, reason = ?reason, "session on another instance killed");
                    let outcome = if reason.is_empty() {
                        "killed".to_string()
                    } else {
                        format!("killed, reason: {reason}")
                    };
                    audit(&st, &who, &roles, "kill", &what, &outcome).await;
                    Json(json!({ "killed": id, "instance": instance })).into_response()
                }
                Ok(false) => {
                    audit(&st, &who, &roles, "kill", &what, "not found").await;
                    error(StatusCode::NOT_FOUND, "no open session has this id on that instance")
                }
                Err(e) => {
                    tracing::warn!(target: "gatehouse::admin", error = %e, "kill on another instance not confirmed");
                    audit(&st, &who, &roles, "kill", &what, "not confirmed").await;
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the kill could not be confirmed through the fleet's control database",
                    )
                }
            };
        }
    } else if at.instance.is_some() && st.fleet.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "`instance` names a fleet instance: this one is in no fleet",
        );
    }
    if st.shared.registry.kill(pid, KillReason::Admin) {
        tracing::info!(target: "gatehouse::admin", session = pid, by = %who, reason = ?reason, "session killed");
        let outcome = if reason.is_empty() {
            "killed".to_string()
        } else {
            format!("killed, reason: {reason}")
        };
        audit(&st, &who, &roles, "kill", &format!("session {pid}"), &outcome).await;
        Json(json!({ "killed": id })).into_response()
    } else {
        audit(&st, &who, &roles, "kill", &format!("session {pid}"), "not found").await;
        error(StatusCode::NOT_FOUND, "no open session has this id")
    }
}

/// `?fleet=true` of a reload: every instance of the fleet re-reads its file.
#[derive(Debug, serde::Deserialize, Default)]
struct ReloadScope {
    #[serde(default)]
    fleet: bool,
}

async fn reload(State(st): State<AppState>, headers: HeaderMap, Query(scope): Query<ReloadScope>) -> Response {
    let (who, roles) = match authorize_roles(&st, &headers, "post", "/api/v1/reload") {
        Ok(w) => w,
        Err(r) => return r,
    };
    if scope.fleet && st.fleet.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "`fleet` reloads a fleet: this instance is in no fleet",
        );
    }
    let ops = st.ops.clone();
    match tokio::task::spawn_blocking(move || ops.reload()).await {
        Ok(Ok(())) => {
            tracing::info!(target: "gatehouse::admin", by = %who, "configuration reloaded");
            audit(&st, &who, &roles, "reload", "configuration", "reloaded").await;
            let Some(fleet) = st.fleet.as_ref() else {
                return Json(json!({ "reloaded": true })).into_response();
            };
            let _ = fleet.record_reload("reloaded").await;
            if !scope.fleet {
                return Json(json!({ "reloaded": true })).into_response();
            }
            match fleet.reload_all(&who).await {
                Ok(others) => {
                    let outcome: serde_json::Map<String, serde_json::Value> =
                        others.into_iter().map(|(name, o)| (name, json!(o))).collect();
                    audit(
                        &st,
                        &who,
                        &roles,
                        "reload",
                        "fleet configuration",
                        &json!(outcome).to_string(),
                    )
                    .await;
                    Json(json!({ "reloaded": true, "instances": outcome })).into_response()
                }
                Err(e) => {
                    tracing::warn!(target: "gatehouse::admin", error = %e, "fleet reload not announced");
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "reloaded here; the other instances could not be asked (control database)",
                    )
                }
            }
        }
        Ok(Err(e)) => {
            audit(&st, &who, &roles, "reload", "configuration", &format!("refused: {e}")).await;
            error(StatusCode::UNPROCESSABLE_ENTITY, &e)
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "reload failed"),
    }
}

async fn fleet_instances(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers, "get", "/api/v1/fleet") {
        return r;
    }
    let Some(fleet) = st.fleet.as_ref() else {
        return error(
            StatusCode::NOT_FOUND,
            "this instance is in no fleet (no [fleet] section)",
        );
    };
    match fleet.instances().await {
        Ok(list) => Json(json!({ "instance": fleet.instance, "here": fleet.status_detail(), "instances": list }))
            .into_response(),
        Err(e) => {
            tracing::warn!(target: "gatehouse::admin", error = %e, "instances not listed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the control database cannot be read now",
            )
        }
    }
}

const STATES: &[&str] = &["pending", "approved", "denied", "withdrawn"];

/// The HTTP answer to a refused decision (already [`refine`]d).
pub(super) fn review_error(e: ReviewError) -> Response {
    let status = match e {
        ReviewError::NotFound => StatusCode::NOT_FOUND,
        ReviewError::NotPending | ReviewError::Twice => StatusCode::CONFLICT,
        ReviewError::SelfApproval | ReviewError::WrongRole(_) => StatusCode::FORBIDDEN,
        ReviewError::TooMany | ReviewError::TooManyOfIdentity(_) | ReviewError::Unavailable(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    error(status, &e.to_string())
}

async fn reviews_list(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorize(&st, &headers, "get", "/api/v1/reviews") {
        return r;
    }
    let want = match q.get("state").map(String::as_str) {
        None | Some("") => None,
        Some(s) => match STATES.iter().find(|k| **k == s) {
            Some(k) => Some(*k),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("`state` is one of: {}", STATES.join(", ")),
                )
            }
        },
    };
    let items: Vec<_> = st
        .shared
        .reviews
        .list()
        .into_iter()
        .filter(|r| want.is_none_or(|w| state_name(&r.status) == w))
        .collect();
    Json(json!({ "reviews": items })).into_response()
}

async fn review_get(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorize(&st, &headers, "get", "/api/v1/reviews/{id}") {
        return r;
    }
    match st.shared.reviews.get(&id) {
        Some(r) => Json(r).into_response(),
        None => error(StatusCode::NOT_FOUND, &ReviewError::NotFound.to_string()),
    }
}

/// The body of a decision.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    grant_minutes: u64,
    #[serde(default)]
    grant_seconds: u64,
}

impl Decision {
    /// The grant's length in seconds.
    fn grant_secs(&self) -> u64 {
        self.grant_minutes.saturating_mul(60).max(self.grant_seconds)
    }
}

#[allow(clippy::result_large_err)]
fn decision(body: &[u8]) -> Result<Decision, Response> {
    let d = if body.iter().all(u8::is_ascii_whitespace) {
        Decision::default()
    } else {
        serde_json::from_slice::<Decision>(body).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                &format!("the body is JSON like {{\"reason\": \"...\", \"grant_minutes\": 0}}: {e}"),
            )
        })?
    };
    if d.reason.len() > MAX_REASON_BYTES {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("`reason` is at most {MAX_REASON_BYTES} bytes"),
        ));
    }
    if d.grant_minutes > MAX_GRANT_MINUTES || d.grant_seconds > MAX_GRANT_MINUTES * 60 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("a grant is at most {MAX_GRANT_MINUTES} minutes"),
        ));
    }
    if d.grant_minutes != 0 && d.grant_seconds != 0 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "give one of `grant_minutes`, `grant_seconds`",
        ));
    }
    Ok(d)
}

async fn review_approve(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    review_decide(st, headers, id, body, true).await
}

async fn review_deny(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    review_decide(st, headers, id, body, false).await
}

/// Approves or denies as the token's name; both are audited.
async fn review_decide(
    st: AppState,
    headers: HeaderMap,
    id: String,
    body: axum::body::Bytes,
    approve: bool,
) -> Response {
    let route = if approve {
        "/api/v1/reviews/{id}/approve"
    } else {
        "/api/v1/reviews/{id}/deny"
    };
    let (who, roles) = match authorize_roles(&st, &headers, "post", route) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let d = match decision(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let action = if approve {
        match d.grant_secs() {
            0 => Action::Approve(Grant::Once),
            n => Action::Approve(Grant::For(n)),
        }
    } else {
        if d.grant_secs() != 0 {
            return error(StatusCode::BAD_REQUEST, "a denial grants nothing: no `grant_minutes`");
        }
        Action::Deny(d.reason.clone())
    };
    // Bearer calls are the API's; cookie calls the console's.
    let via = if headers.contains_key(header::AUTHORIZATION) {
        "api"
    } else {
        "console"
    };
    match decide(&st, &who, &roles, &id, action, via, &d.reason).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => review_error(e),
    }
}

/// Per-operation details beyond what [`ROUTES`] says.
fn doc_details(method: &str, path: &str, op: &mut serde_json::Value) {
    let decision_body = |with_grant: bool| {
        let mut props = json!({ "reason": { "type": "string", "maxLength": MAX_REASON_BYTES } });
        if with_grant {
            props["grant_minutes"] =
                json!({ "type": "integer", "minimum": 0, "maximum": MAX_GRANT_MINUTES, "default": 0 });
            props["grant_seconds"] =
                json!({ "type": "integer", "minimum": 0, "maximum": MAX_GRANT_MINUTES * 60, "default": 0 });
        }
        json!({
            "required": false,
            "content": { "application/json": { "schema": {
                "type": "object", "properties": props, "additionalProperties": false,
            } } },
        })
    };
    match (method, path) {
        ("get", "/api/v1/reviews") => {
            op["parameters"] = json!([{
                "name": "state", "in": "query", "required": false,
                "schema": { "type": "string", "enum": STATES },
            }]);
            op["responses"]["400"] = json!({ "description": "an unknown state" });
        }
        ("get", "/api/v1/recordings") => {
            let q = |name: &str, schema: serde_json::Value| json!({ "name": name, "in": "query", "required": false, "schema": schema });
            op["parameters"] = json!([
                q("identity", json!({ "type": "string" })),
                q("target", json!({ "type": "string" })),
                q("since", json!({ "type": "string" })),
                q("until", json!({ "type": "string" })),
                q("text", json!({ "type": "string" })),
                q(
                    "decision",
                    json!({ "type": "string", "enum": ["allow", "deny", "approved"] })
                ),
                q(
                    "limit",
                    json!({ "type": "integer", "minimum": 1, "maximum": 1000, "default": 50 })
                ),
                q("offset", json!({ "type": "integer", "minimum": 0, "default": 0 })),
            ]);
            op["responses"]["400"] = json!({ "description": "a malformed filter" });
            op["responses"]["404"] = json!({ "description": "sessions are not recorded" });
        }
        ("get", "/api/v1/recordings/{id}/events") | ("get", "/api/v1/audit") => {
            let mut params = op["parameters"].as_array().cloned().unwrap_or_default();
            params.push(json!({
                "name": "format", "in": "query", "required": false,
                "schema": { "type": "string", "enum": ["jsonl", "csv", "text"], "default": "jsonl" },
            }));
            op["parameters"] = json!(params);
            op["responses"]["404"] = json!({ "description": "no such recording" });
        }
        ("get", "/api/v1/recordings/{id}") | ("get", "/api/v1/recordings/{id}/tail") => {
            op["responses"]["404"] = json!({ "description": "no such recording" });
        }
        ("get", "/api/v1/reviews/{id}") => {
            op["responses"]["404"] = json!({ "description": "no review has this id" });
        }
        ("post", "/api/v1/reviews/{id}/approve") | ("post", "/api/v1/reviews/{id}/deny") => {
            op["requestBody"] = decision_body(path.ends_with("/approve"));
            op["responses"]["400"] = json!({ "description": "a malformed body" });
            op["responses"]["403"] = json!({
                "description": "the token's roles do not allow this, or the caller asked for this review, or lacks the review's approver roles"
            });
            op["responses"]["404"] = json!({ "description": "no review has this id" });
            op["responses"]["409"] =
                json!({ "description": "the review is decided already, or this approver approved it already" });
        }
        _ => {}
    }
}

/// The OpenAPI 3.1 document, made from [`ROUTES`].
pub fn openapi() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for (method, path, roles, summary) in ROUTES {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        let mut op = json!({
            "summary": summary,
            "responses": { "200": { "description": "OK" } },
        });
        if !roles.is_empty() {
            op["security"] = json!([{ "bearer": [] }]);
            op["x-roles"] = json!(roles.iter().map(|r| r.as_str()).collect::<Vec<_>>());
            op["responses"]["401"] = json!({ "description": "no or unknown bearer token" });
            op["responses"]["403"] = json!({ "description": "the token's roles do not allow this" });
        }
        for name in ["id", "token"] {
            if path.contains(&format!("{{{name}}}")) {
                op["parameters"] =
                    json!([{ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }]);
            }
        }
        doc_details(method, path, &mut op);
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "gatehouse admin API", "version": env!("CARGO_PKG_VERSION") },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
        "paths": paths,
    })
}

async fn openapi_doc() -> Response {
    Json(openapi()).into_response()
}

pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_doc))
        .route("/metrics", get(metrics))
        .route("/api/v1/fleet", get(fleet_instances))
        .route("/api/v1/sessions", get(sessions))
        .route("/api/v1/sessions/{id}/kill", post(kill))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/reviews", get(reviews_list))
        .route("/api/v1/reviews/{id}", get(review_get))
        .route("/api/v1/reviews/{id}/approve", post(review_approve))
        .route("/api/v1/reviews/{id}/deny", post(review_deny))
        .route("/api/v1/recordings", get(super::recordings_api::list))
        .route("/api/v1/recordings/{id}", get(super::recordings_api::detail))
        .route("/api/v1/recordings/{id}/events", get(super::recordings_api::events))
        .route("/api/v1/recordings/{id}/tail", get(super::recordings_api::tail))
        .route("/api/v1/audit", get(super::recordings_api::audit_log))
        .route("/slack/interactions", post(super::slack::interactions))
        .route("/console", get(super::console::index))
        .route("/console/app.js", get(super::console::app_js))
        .route("/console/app.css", get(super::console::app_css))
        .route("/console/login", post(super::console::login))
        .route("/console/me", get(super::console::me))
        .route("/console/sign-in-methods", get(super::console::sign_in_methods))
        .route("/console/oidc/start", get(super::sso::start))
        .route("/console/oidc/callback", get(super::sso::callback))
        .route("/console/logout", post(super::console::logout))
        .route("/api/v1/reviews/events", get(super::live::review_events))
        .route("/api/v1/overview", get(super::live::overview))
        .route("/review-links/{token}", get(super::links::show).post(super::links::act))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route; see /openapi.json") })
        // Every body here is a small JSON or form (the largest, a Slack
        // callback): nothing larger is read, on the public routes least.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(private_answers))
        .with_state(app)
}

/// Answers are private: never cached (they carry statements, masked rows,
/// reviews), never sniffed into another type, and vary by cookie.
async fn private_answers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::VARY,
        axum::http::HeaderValue::from_static("Cookie, Authorization"),
    );
    resp
}

/// What one client of the admin API may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub connections: usize,
    /// To finish TLS, and to send each request's headers.
    pub header_timeout: std::time::Duration,
}

/// Serves the admin API on `listener` until the runtime stops.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    app: AppState,
) {
    let router = router(app);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(target: "gatehouse::admin", error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(target: "gatehouse::admin", %peer, limit = limits.connections, "admin connection refused: too many open");
            drop(tcp);
            continue;
        };
        let router = router.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper_util::service::TowerToHyperService::new(router);
            let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let handshake = limits.header_timeout;
            let res = match acceptor {
                Some(a) => match tokio::time::timeout(handshake, a.accept(tcp)).await {
                    Ok(Ok(s)) => builder.serve_connection(hyper_util::rt::TokioIo::new(s), service).await,
                    _ => return,
                },
                None => {
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await
                }
            };
            if let Err(e) = res {
                tracing::debug!(target: "gatehouse::admin", error = %e, "admin connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_routes_in_the_table_have_roles_and_few_are_public() {
        assert_eq!(route_roles("get", "/healthz"), Some(&[][..]));
        assert_eq!(route_roles("post", "/api/v1/reload"), Some(&[Role::Admin][..]));
        assert_eq!(route_roles("get", "/api/v1/reload"), None, "another method");
        assert_eq!(route_roles("post", "/api/v1/reload/"), None, "another path");
        let public: Vec<&str> = ROUTES.iter().filter(|r| r.2.is_empty()).map(|r| r.1).collect();
        // The Slack callback has no token: Slack's signature stands for it.
        // and a mail link's signed token for those; the console's page,
        // assets and sign-in.
        assert_eq!(
            public,
            [
                "/healthz",
                "/readyz",
                "/openapi.json",
                "/console",
                "/console/app.js",
                "/console/app.css",
                "/console/login",
                "/console/sign-in-methods",
                "/console/oidc/start",
                "/console/oidc/callback",
                "/slack/interactions",
                "/review-links/{token}",
                "/review-links/{token}"
            ]
        );
    }
}

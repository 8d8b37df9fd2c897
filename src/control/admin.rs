//! The admin API: HTTP/JSON (HTTPS with rustls when configured) on its own
//! port, on the control plane's runtime.
//!
//! Bearer tokens, stored hashed in the configuration, carry roles:
//! `admin` may do everything; `auditor` reads sessions and metrics;
//! `approver` approves reviews. Probes (`/healthz`, `/readyz`) and the
//! OpenAPI document need no token.

use super::Ops;
use crate::proxy::pg::{KillReason, Shared};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::Digest;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use subtle::ConstantTimeEq;

#[derive(Clone)]
pub struct AppState {
    pub shared: Arc<Shared>,
    pub ready: Arc<AtomicBool>,
    pub ops: Arc<dyn Ops>,
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
    ("get", "/metrics", &[Role::Admin, Role::Auditor], "Prometheus metrics."),
    (
        "get",
        "/api/v1/sessions",
        &[Role::Admin, Role::Auditor],
        "Sessions open now.",
    ),
    (
        "post",
        "/api/v1/sessions/{id}/kill",
        &[Role::Admin],
        "Ends a session; its client gets 57P01.",
    ),
    (
        "post",
        "/api/v1/reload",
        &[Role::Admin],
        "Re-reads the configuration, as SIGHUP does.",
    ),
];

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The caller's roles, from `Authorization: Bearer <token>`.
fn caller_roles(st: &AppState, headers: &HeaderMap) -> Option<(String, Vec<Role>)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    let digest = sha2::Sha256::digest(token.as_bytes());
    let state = st.shared.state.load();
    for t in &state.config.admin.tokens {
        if let Some(expected) = crate::identity::parse_token_hash(&t.token_hash) {
            if bool::from(digest.as_slice().ct_eq(&expected)) {
                return Some((t.name.clone(), t.roles.iter().filter_map(|r| Role::parse(r)).collect()));
            }
        }
    }
    None
}

/// Checks the caller may use the route at `path` with `method`.
#[allow(clippy::result_large_err)] // the error is the response itself
fn authorize(st: &AppState, headers: &HeaderMap, method: &str, path: &str) -> Result<String, Response> {
    let allowed = ROUTES
        .iter()
        .find(|(m, p, _, _)| *m == method && *p == path)
        .map(|r| r.2)
        .unwrap_or(&[]);
    if allowed.is_empty() {
        return Ok(String::new());
    }
    let Some((name, roles)) = caller_roles(st, headers) else {
        return Err(error(StatusCode::UNAUTHORIZED, "a valid bearer token is required"));
    };
    if roles.iter().any(|r| allowed.contains(r)) {
        Ok(name)
    } else {
        let need: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        Err(error(
            StatusCode::FORBIDDEN,
            &format!("this needs one of the roles: {}", need.join(", ")),
        ))
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
    Json(json!({ "status": "ready" })).into_response()
}

async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers, "get", "/metrics") {
        return r;
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        super::metrics::render(&st.shared),
    )
        .into_response()
}

async fn sessions(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers, "get", "/api/v1/sessions") {
        return r;
    }
    let mut list = st.shared.registry.list();
    list.sort_by_key(|(_, i)| i.started_unix);
    let items: Vec<_> = list
        .into_iter()
        .map(|(id, i)| {
            json!({
                "id": id.to_string(),
                "identity": i.identity,
                "target": i.target,
                "client_addr": i.client_addr,
                "client_tls": i.client_tls,
                "worker": i.worker,
                "started": i.started_unix,
            })
        })
        .collect();
    Json(json!({ "sessions": items })).into_response()
}

async fn kill(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let who = match authorize(&st, &headers, "post", "/api/v1/sessions/{id}/kill") {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Ok(pid) = id.parse::<u32>() else {
        return error(StatusCode::BAD_REQUEST, "a session id is a number");
    };
    if st.shared.registry.kill(pid, KillReason::Admin) {
        tracing::info!(target: "gatehouse::admin", session = pid, by = %who, "session killed");
        Json(json!({ "killed": id })).into_response()
    } else {
        error(StatusCode::NOT_FOUND, "no open session has this id")
    }
}

async fn reload(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let who = match authorize(&st, &headers, "post", "/api/v1/reload") {
        Ok(w) => w,
        Err(r) => return r,
    };
    let ops = st.ops.clone();
    match tokio::task::spawn_blocking(move || ops.reload()).await {
        Ok(Ok(())) => {
            tracing::info!(target: "gatehouse::admin", by = %who, "configuration reloaded");
            Json(json!({ "reloaded": true })).into_response()
        }
        Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "reload failed"),
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
        if path.contains("{id}") {
            op["parameters"] =
                json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }]);
        }
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
        .route("/api/v1/sessions", get(sessions))
        .route("/api/v1/sessions/{id}/kill", post(kill))
        .route("/api/v1/reload", post(reload))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route; see /openapi.json") })
        .with_state(app)
}

/// Serves the admin API on `listener` until the runtime stops.
pub async fn serve(listener: tokio::net::TcpListener, tls: Option<Arc<rustls::ServerConfig>>, app: AppState) {
    let router = router(app);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(target: "gatehouse::admin", error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let router = router.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(router);
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let handshake = std::time::Duration::from_secs(10);
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

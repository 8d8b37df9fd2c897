//! What the console watches: the reviews inbox as a live stream, and the
//! overview's numbers (the same counters `/metrics` exposes, as JSON).

use super::admin::{authorize, AppState};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often the stream looks for a change: a new review shows within it.
pub const LOOK_EVERY: Duration = Duration::from_millis(200);
/// Finished reviews sent with the open ones (the inbox's history).
pub const HISTORY: usize = 100;
/// A stream ends after this long; the browser's EventSource reconnects.
/// (Bounds what one signed-in tab holds, and re-checks its sign-in.)
const STREAM_FOR: Duration = Duration::from_secs(600);

/// The inbox: open reviews and the latest finished ones.
fn inbox(st: &AppState) -> Value {
    let mut list = st.shared.reviews.list();
    let open = list
        .iter()
        .take_while(|r| r.status == crate::policy::reviews::Status::Pending)
        .count();
    list.truncate(open + HISTORY);
    json!({ "reviews": list, "now": now_unix() })
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `GET /api/v1/reviews/events`: server-sent events, `reviews` with the
/// whole inbox at once and after every change.
pub async fn review_events(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers, "get", "/api/v1/reviews/events") {
        return r;
    }
    let deadline = tokio::time::Instant::now() + STREAM_FOR;
    let stream = futures_util::stream::unfold((st, None::<u64>), move |(st, last)| async move {
        loop {
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            let now = st.shared.reviews.changes();
            if last != Some(now) {
                let ev = Event::default().event("reviews").data(inbox(&st).to_string());
                return Some((Ok::<_, Infallible>(ev), (st, Some(now))));
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// `GET /api/v1/overview`: counters since start, for the console to draw
/// rates from.
pub async fn overview(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers, "get", "/api/v1/overview") {
        return r;
    }
    let s = &st.shared;
    let sum =
        |f: &dyn Fn(&crate::core::counters::WorkerCounters) -> u64| -> u64 { s.counters.workers.iter().map(f).sum() };
    let state = s.state.load();
    let masked: serde_json::Map<String, Value> = state
        .scan
        .as_ref()
        .map(|e| {
            e.counts()
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(id, n)| (id.to_string(), json!(n)))
                .collect()
        })
        .unwrap_or_default();
    let (by_class, backlog) = match st.recorder.as_ref() {
        Some(r) => {
            let list: Vec<Value> = r
                .stats
                .statements
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|((class, decision), n)| json!({ "class": class, "decision": decision, "count": n }))
                .collect();
            (Some(list), Some(r.backlog()))
        }
        None => (None, None),
    };
    Json(json!({
        "now": now_unix(),
        "started": s.started_unix,
        "sessions_active": s.active.load(Ordering::Relaxed),
        "sessions_opened": sum(&|w| w.sessions_opened.load(Ordering::Relaxed)),
        "statements": sum(&|w| w.statements.load(Ordering::Relaxed)),
        "rows": sum(&|w| w.rows.load(Ordering::Relaxed)),
        "reviews_pending": s.reviews.pending(),
        "masked_by_rule": masked,
        "statements_by_class": by_class,
        "recorder_backlog": backlog,
    }))
    .into_response()
}

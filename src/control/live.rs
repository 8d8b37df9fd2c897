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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How often the stream looks for a change: a new review shows within it.
pub const LOOK_EVERY: Duration = Duration::from_millis(200);
/// Finished reviews sent with the open ones (the inbox's history).
pub const HISTORY: usize = 100;
/// A stream ends after this long; the browser's EventSource reconnects.
const STREAM_FOR: Duration = Duration::from_secs(600);
/// How often an open stream checks that its caller may still read it (a
/// token removed, a JWT expired, a sign-out end it within this).
pub const RECHECK: Duration = Duration::from_secs(5);
/// Open reviews sent at most in one inbox update (the rest are counted).
pub const MAX_OPEN_SENT: usize = 200;
/// Statement characters sent per review in the inbox; the whole text is
/// at `/api/v1/reviews/{id}`.
pub const MAX_SQL_SENT: usize = 8192;

/// Streams open now, over every caller.
static STREAMS: AtomicUsize = AtomicUsize::new(0);

/// One open stream: counted while it lives.
pub struct StreamSlot(());

impl Drop for StreamSlot {
    fn drop(&mut self) {
        STREAMS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A slot for a new stream, or the answer that refuses it: streams may
/// hold at most a quarter of the admin listener's connections, so they
/// never starve the API, probes and callbacks of theirs.
#[allow(clippy::result_large_err)]
pub fn stream_slot(st: &AppState) -> Result<StreamSlot, Response> {
    let max = (st.shared.state.load().config.admin.max_connections / 4).max(4);
    if STREAMS.fetch_add(1, Ordering::AcqRel) >= max {
        STREAMS.fetch_sub(1, Ordering::AcqRel);
        return Err(super::admin::error(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many live streams are open; try again later",
        ));
    }
    Ok(StreamSlot(()))
}

/// Resolves when the caller may no longer use `path`: a stream ends then.
pub async fn revoked(st: AppState, headers: HeaderMap, method: &'static str, path: &'static str) {
    loop {
        tokio::time::sleep(RECHECK).await;
        if authorize(&st, &headers, method, path).is_err() {
            return;
        }
    }
}

/// The inbox: the oldest open reviews and the latest finished ones, long
/// statements cut (`sql_cut`: characters left out).
fn inbox(st: &AppState) -> Value {
    let list = st.shared.reviews.list();
    let open = list
        .iter()
        .take_while(|r| r.status == crate::policy::reviews::Status::Pending)
        .count();
    let sent: Vec<Value> = list
        .iter()
        .take(open.min(MAX_OPEN_SENT))
        .chain(list.iter().skip(open).take(HISTORY))
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            let chars = r.request.sql.chars().count();
            if chars > MAX_SQL_SENT {
                v["sql"] = r.request.sql.chars().take(MAX_SQL_SENT).collect::<String>().into();
                v["sql_cut"] = (chars - MAX_SQL_SENT).into();
            }
            v
        })
        .collect();
    json!({ "reviews": sent, "open": open, "now": crate::policy::reviews::now_unix() })
}

/// `GET /api/v1/reviews/events`: server-sent events, `reviews` with the
/// whole inbox at once and after every change.
pub async fn review_events(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers, "get", "/api/v1/reviews/events") {
        return r;
    }
    let slot = match stream_slot(&st) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let deadline = tokio::time::Instant::now() + STREAM_FOR;
    let ended = revoked(st.clone(), headers, "get", "/api/v1/reviews/events");
    let stream = futures_util::stream::unfold((st, None::<u64>, slot), move |(st, last, slot)| async move {
        loop {
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            let now = st.shared.reviews.changes();
            if last != Some(now) {
                let ev = Event::default().event("reviews").data(inbox(&st).to_string());
                return Some((Ok::<_, Infallible>(ev), (st, Some(now), slot)));
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    });
    use futures_util::StreamExt;
    Sse::new(stream.take_until(ended))
        .keep_alive(KeepAlive::default())
        .into_response()
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
        "now": crate::policy::reviews::now_unix(),
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

//! The auditors' part of the admin API: recorded sessions (list with
//! filters and paging, detail, downloads as JSON lines, CSV or a
//! transcript, a live tail over server-sent events) and the audit log.
//! Every download and tail is itself written to the audit log.
// Handlers return their error responses directly.
#![allow(clippy::result_large_err)]

use super::admin::{audit, authorize_roles, error, AppState};
use super::recorder::Entry;
use crate::record::render::{self, Format};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;

/// Recordings listed per page, at most.
pub const MAX_PAGE: usize = 1000;
/// Other instances' recordings a text search fetches and reads, at most.
pub const MAX_REMOTE_SEARCH: usize = 200;

fn recorder(st: &AppState) -> Result<&std::sync::Arc<super::recorder::Recorder>, Response> {
    st.recorder.as_ref().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "sessions are not recorded: no [recording] section",
        )
    })
}

/// Seconds (or RFC 3339 `YYYY-MM-DDTHH:MM:SSZ`) → microseconds.
fn parse_time(s: &str) -> Option<u64> {
    if let Ok(n) = s.parse::<u64>() {
        return Some(n * 1_000_000);
    }
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // days_from_civil
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs).ok().map(|s| s * 1_000_000)
}

/// Where a recording is: a local file (this instance's, or a copy fetched
/// from the fleet's bucket), and the instance that recorded it when that
/// is another.
struct Located {
    entry: Entry,
    path: std::path::PathBuf,
    instance: Option<String>,
}

/// Finds recording `id`: in the local index (file still here), else in the
/// fleet's index (fetched from the bucket). `instance` picks one when
/// several instances have a recording with this id.
async fn locate(
    st: &AppState,
    rec: &super::recorder::Recorder,
    id: &str,
    instance: Option<&str>,
) -> Result<Located, Response> {
    let here = st.fleet.as_ref().map(|f| f.instance.clone());
    // One entry: from memory, or one short read of the spill (the page
    // cache's, as a rule), under the index's lock.
    let local = match rec.index.lock().unwrap_or_else(|p| p.into_inner()).find(id) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(target: "gatehouse::admin", error = %e, "the index of recordings cannot be read");
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the index of recordings cannot be read now",
            ));
        }
    };
    if let Some(e) = local {
        if (instance.is_none() || instance == here.as_deref()) && e.path.exists() {
            let path = e.path.clone();
            return Ok(Located {
                entry: e,
                path,
                instance: None,
            });
        }
    }
    let Some(fleet) = st.fleet.as_ref().filter(|f| f.objects.is_some()) else {
        return Err(error(StatusCode::NOT_FOUND, "no recording has this id"));
    };
    let found = fleet.indexed_recordings(Some(id), 0).await.map_err(|e| {
        tracing::warn!(target: "gatehouse::admin", error = %e, "fleet index of recordings unreadable");
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the fleet's index of recordings cannot be read now",
        )
    })?;
    let mut found: Vec<_> = found
        .into_iter()
        .filter(|r| instance.is_none_or(|i| r.instance == i))
        .collect();
    if found.len() > 1 {
        return Err(error(
            StatusCode::CONFLICT,
            "recordings of several instances have this id: say which with ?instance=",
        ));
    }
    let Some(r) = found.pop() else {
        return Err(error(StatusCode::NOT_FOUND, "no recording has this id"));
    };
    let path = fleet.fetch_recording(rec, &r).await.map_err(|e| {
        tracing::warn!(target: "gatehouse::admin", recording = %id, error = %e, "recording not fetched from the bucket");
        error(
            StatusCode::BAD_GATEWAY,
            "the recording could not be fetched from the bucket (or did not match its hash)",
        )
    })?;
    Ok(Located {
        entry: r.entry,
        path,
        instance: Some(r.instance),
    })
}

fn entry_json(e: &Entry) -> Value {
    json!({
        "id": e.id,
        "session": e.session,
        "identity": e.identity,
        "roles": e.roles,
        "target": e.target,
        "client": e.client,
        "started_us": e.started_us,
        "ended_us": e.ended_us,
        "end": e.end,
        "statements": e.statements,
        "decisions": e.decisions,
        "live": e.live,
    })
}

/// Whether a statement of the recording contains `text` (case-insensitive).
fn mentions(path: &std::path::Path, text: &str) -> bool {
    let Ok(f) = std::fs::File::open(path) else { return false };
    let needle = text.to_lowercase();
    crate::record::records(f)
        .any(|v| v["kind"] == "statement" && v["sql"].as_str().is_some_and(|s| s.to_lowercase().contains(&needle)))
}

pub async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorize_roles(&st, &headers, "get", "/api/v1/recordings") {
        return r;
    }
    let rec = match recorder(&st) {
        Ok(r) => r.clone(),
        Err(r) => return r,
    };
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let time = |k: &str| -> Result<Option<u64>, Response> {
        match get(k) {
            None => Ok(None),
            Some(v) => parse_time(v).map(Some).ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    &format!("`{k}` is Unix seconds or YYYY-MM-DDTHH:MM:SSZ"),
                )
            }),
        }
    };
    let (since, until) = match (time("since"), time("until")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let num = |k: &str, d: usize| {
        get(k)
            .map(|v| v.parse::<usize>().map_err(|_| k.to_string()))
            .unwrap_or(Ok(d))
    };
    let (limit, offset) = match (num("limit", 50), num("offset", 0)) {
        (Ok(l), Ok(o)) if (1..=MAX_PAGE).contains(&l) => (l, o),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("`limit` is 1 to {MAX_PAGE} and `offset` a number"),
            )
        }
    };
    let decision = get("decision");
    if let Some(d) = decision {
        if !matches!(d, "allow" | "deny" | "approved") {
            return error(StatusCode::BAD_REQUEST, "`decision` is one of: allow, deny, approved");
        }
    }
    let (identity, target) = (get("identity").map(str::to_string), get("target").map(str::to_string));
    let text = get("text").map(str::to_string);
    let decision = decision.map(str::to_string);
    // Filters on the index first (it reads its file of finished
    // sessions); the text filter reads the recordings. Both off the
    // runtime's threads.
    let filters = (identity.clone(), target.clone(), decision.clone(), text.is_some());
    let index_of = rec.clone();
    let candidates = tokio::task::spawn_blocking(move || {
        let (identity, target, decision, with_path) = filters;
        let g = index_of.index.lock().unwrap_or_else(|p| p.into_inner());
        let mut listed: Vec<Entry> = Vec::new();
        g.each(|e| {
            let keep = identity.as_deref().is_none_or(|i| e.identity == i)
                && target.as_deref().is_none_or(|t| e.target == t)
                && since.is_none_or(|s| e.ended_us.unwrap_or(u64::MAX) >= s)
                && until.is_none_or(|u| e.started_us <= u)
                && decision.as_deref().is_none_or(|d| e.has_decision(d));
            if keep {
                // The path only for the text filter (it reads the file).
                listed.push(if with_path { e.to_entry() } else { e.summary() });
            }
        })
        .map(|()| {
            // Newest first, ties by id: the same order at every request
            // (the index hands entries in memory first, then the spill's
            // in its order, and a session moves when it ends), so that
            // pages neither repeat nor skip an entry.
            listed.sort_unstable_by(|a, b| b.started_us.cmp(&a.started_us).then_with(|| b.id.cmp(&a.id)));
            listed
        })
    })
    .await;
    let candidates: Vec<Entry> = match candidates {
        Ok(Ok(listed)) => listed,
        Ok(Err(e)) => {
            tracing::warn!(target: "gatehouse::admin", error = %e, "the index of recordings cannot be read");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the index of recordings cannot be read now",
            );
        }
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "listing failed"),
    };
    // In a fleet with a bucket, the uploaded recordings of every instance
    // too (newest first, the index's newest 10,000).
    let mut remote: Vec<(String, Entry)> = Vec::new();
    // Remote recordings that matched the text filter already.
    let mut remote_matched: Vec<(String, Entry)> = Vec::new();
    let mut searched = 0usize;
    if let Some(fleet) = st.fleet.as_ref().filter(|f| f.objects.is_some()) {
        match fleet.indexed_recordings(None, 10_000).await {
            Ok(list) => {
                let local: std::collections::HashSet<String> = candidates.iter().map(|e| e.id.clone()).collect();
                for r in list {
                    let e = &r.entry;
                    let keep = identity.as_deref().is_none_or(|i| &*e.identity == i)
                        && target.as_deref().is_none_or(|t| &*e.target == t)
                        && since.is_none_or(|s| e.ended_us.unwrap_or(u64::MAX) >= s)
                        && until.is_none_or(|u| e.started_us <= u)
                        && decision
                            .as_deref()
                            .is_none_or(|d| e.decisions.iter().any(|x| &**x == d))
                        && !(r.instance == fleet.instance && local.contains(&e.id));
                    if !keep {
                        continue;
                    }
                    let mut e = r.entry.clone();
                    if let Some(t) = &text {
                        // The text filter reads the recording, fetched
                        // now and searched at once (the cache is small).
                        searched += 1;
                        if searched > MAX_REMOTE_SEARCH {
                            return error(
                                StatusCode::BAD_REQUEST,
                                &format!(
                                    "a text search reads at most {MAX_REMOTE_SEARCH} recordings of other instances: narrow it with identity, target, since or until"
                                ),
                            );
                        }
                        let Ok(p) = fleet.fetch_recording(&rec, &r).await else {
                            continue;
                        };
                        let t = t.clone();
                        let found = tokio::task::spawn_blocking(move || mentions(&p, &t))
                            .await
                            .unwrap_or(false);
                        if !found {
                            continue;
                        }
                        e.path = PathBuf::new();
                        remote_matched.push((r.instance.clone(), e));
                        continue;
                    }
                    remote.push((r.instance.clone(), e));
                }
            }
            Err(e) => {
                tracing::warn!(target: "gatehouse::admin", error = %e, "fleet index of recordings unreadable");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the fleet's index of recordings cannot be read now",
                );
            }
        }
    }
    let here = st.fleet.as_ref().map(|f| f.instance.clone());
    let res = tokio::task::spawn_blocking(move || {
        let mut all: Vec<(Option<String>, Entry)> = candidates.into_iter().map(|e| (here.clone(), e)).collect();
        all.extend(remote.into_iter().map(|(i, e)| (Some(i), e)));
        // Newest first over both.
        all.sort_by_key(|e| std::cmp::Reverse(e.1.started_us));
        let mut matched: Vec<(Option<String>, Entry)> = match &text {
            None => all,
            Some(t) => all.into_iter().filter(|(_, e)| mentions(&e.path, t)).collect(),
        };
        matched.extend(remote_matched.into_iter().map(|(i, e)| (Some(i), e)));
        matched.sort_by_key(|e| std::cmp::Reverse(e.1.started_us));
        let total = matched.len();
        let page: Vec<Value> = matched
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(instance, e)| {
                let mut v = entry_json(e);
                if let Some(i) = instance {
                    v["instance"] = json!(i);
                }
                v
            })
            .collect();
        (total, page)
    })
    .await;
    match res {
        Ok((total, page)) => Json(json!({
            "total": total, "offset": offset, "limit": limit, "recordings": page,
        }))
        .into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "listing failed"),
    }
}

pub async fn detail(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorize_roles(&st, &headers, "get", "/api/v1/recordings/{id}") {
        return r;
    }
    let rec = match recorder(&st) {
        Ok(r) => r.clone(),
        Err(r) => return r,
    };
    let located = match locate(&st, &rec, &id, q.get("instance").map(String::as_str)).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let (entry, path, from) = (located.entry, located.path, located.instance);
    // With a signing key, the seal's signature is checked with its public half.
    let keys = rec
        .signer
        .as_ref()
        .map(|s| crate::record::signing::Keyring(vec![s.public()]));
    let res = tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&path).ok()?;
        let report = crate::record::verify_signed(&path, f, false, keys.as_ref());
        let f = std::fs::File::open(&path).ok()?;
        let mut open = Value::Null;
        let mut close = Value::Null;
        let mut kinds: HashMap<String, u64> = HashMap::new();
        for v in crate::record::records(f) {
            let k = v["kind"].as_str().unwrap_or("").to_string();
            match k.as_str() {
                "open" => open = v.clone(),
                "close" => close = v.clone(),
                _ => {}
            }
            *kinds.entry(k).or_default() += 1;
        }
        Some((report, open, close, kinds))
    })
    .await;
    match res {
        Ok(Some((report, open, close, kinds))) => {
            let mut v = entry_json(&entry);
            if let Some(i) = &from {
                v["instance"] = json!(i);
                v["stored"] = json!("bucket");
            }
            v["open"] = open;
            v["close"] = close;
            v["records"] = json!(kinds);
            v["verified"] = json!({
                "intact": report.intact,
                "sealed": report.sealed,
                "broken": report.broken.map(|(n, why)| json!({ "record": n, "why": why })),
                "signed_by": report.signed_by,
            });
            Json(v).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "the recording cannot be read"),
    }
}

fn format_of(q: &HashMap<String, String>) -> Result<Format, Response> {
    match q.get("format").map(String::as_str) {
        None | Some("") => Ok(Format::Json),
        Some(f) => f.parse().map_err(|e: String| error(StatusCode::BAD_REQUEST, &e)),
    }
}

/// Bytes per chunk of a streamed download, and chunks in flight: a
/// download holds at most this much of the file in memory, however large.
const CHUNK: usize = 64 << 10;
const CHUNKS_IN_FLIGHT: usize = 4;
/// A download whose client has taken nothing for this long is ended.
const STALLED: std::time::Duration = std::time::Duration::from_secs(60);

/// A recording file in one of the formats, as an HTTP response streamed
/// from disk: a reader thread sends it in chunks through a bounded channel.
async fn serve_file(path: std::path::PathBuf, fmt: Format, name: &str) -> Response {
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(_) => return error(StatusCode::NOT_FOUND, "the recording cannot be read"),
    };
    // As it is now (a live session's file, the audit log, keep growing):
    // JSON lines go out as exactly these bytes, with their length.
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(CHUNKS_IN_FLIGHT);
    let rt = tokio::runtime::Handle::current();
    // A client that stops reading lets the reader go after a while rather
    // than hold its thread and file for as long as the connection lasts.
    let send = move |chunk: std::io::Result<Vec<u8>>| -> bool {
        matches!(rt.block_on(tokio::time::timeout(STALLED, tx.send(chunk))), Ok(Ok(())))
    };
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut r = std::io::BufReader::with_capacity(CHUNK, file.take(len));
        if fmt == Format::Json {
            loop {
                let mut chunk = vec![0u8; CHUNK];
                match r.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) => {
                        chunk.truncate(n);
                        if !send(Ok(chunk)) {
                            return; // the client went away or stalled
                        }
                    }
                    Err(e) => {
                        let _ = send(Err(e));
                        return;
                    }
                }
            }
        }
        let mut out = String::with_capacity(CHUNK);
        if fmt == Format::Csv {
            out.push_str(render::CSV_HEADER);
        }
        for v in crate::record::records(r) {
            out.push_str(&render::line(&v, fmt));
            if out.len() >= CHUNK && !send(Ok(std::mem::take(&mut out).into_bytes())) {
                return;
            }
        }
        if !out.is_empty() {
            let _ = send(Ok(out.into_bytes()));
        }
    });
    let body = axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let (ctype, ext) = match fmt {
        Format::Json => ("application/x-ndjson", "jsonl"),
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Text => ("text/plain; charset=utf-8", "txt"),
    };
    let mut res = (
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.{ext}\""),
            ),
        ],
        body,
    )
        .into_response();
    if fmt == Format::Json {
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    }
    res
}

pub async fn events(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (who, roles) = match authorize_roles(&st, &headers, "get", "/api/v1/recordings/{id}/events") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let rec = match recorder(&st) {
        Ok(r) => r.clone(),
        Err(r) => return r,
    };
    let fmt = match format_of(&q) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let path = match locate(&st, &rec, &id, q.get("instance").map(String::as_str)).await {
        Ok(l) => l.path,
        Err(r) => {
            audit(&st, &who, &roles, "download", &format!("recording {id}"), "not found").await;
            return r;
        }
    };
    audit(
        &st,
        &who,
        &roles,
        "download",
        &format!("recording {id}"),
        &format!("{fmt:?}").to_lowercase(),
    )
    .await;
    serve_file(path, fmt, &id).await
}

pub async fn audit_log(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (who, roles) = match authorize_roles(&st, &headers, "get", "/api/v1/audit") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let rec = match recorder(&st) {
        Ok(r) => r.clone(),
        Err(r) => return r,
    };
    let fmt = match format_of(&q) {
        Ok(f) => f,
        Err(r) => return r,
    };
    audit(&st, &who, &roles, "download", "audit log", "ok").await;
    // Let the writer put the record just made into the file first.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    serve_file(rec.audit_path(), fmt, "audit").await
}

/// Server-sent events: the recording's records so far, then each new one
/// as it is written, until the session is sealed.
pub async fn tail(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let (who, roles) = match authorize_roles(&st, &headers, "get", "/api/v1/recordings/{id}/tail") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let rec = match recorder(&st) {
        Ok(r) => r.clone(),
        Err(r) => return r,
    };
    let slot = match super::live::stream_slot(&st) {
        Ok(s) => s,
        Err(r) => return r,
    };
    // The tail ends when its caller may no longer read it.
    let ended = super::live::revoked(st.clone(), headers.clone(), "get", "/api/v1/recordings/{id}/tail");
    // A live session's tail comes from the instance that holds it; a
    // sealed recording from anywhere (fetched from the bucket).
    let path = match locate(&st, &rec, &id, None).await {
        Ok(l) => l.path,
        Err(r) => {
            // Live on another instance: say which (recording ids are
            // `<start>-<session in hex>`).
            if let (Some(fleet), Some(session)) = (&st.fleet, session_of_recording(&id)) {
                if let Ok(remote) = fleet.remote_sessions().await {
                    if let Some(s) = remote.iter().find(|s| s.id == session.to_string()) {
                        return (
                            StatusCode::CONFLICT,
                            Json(json!({
                                "error": format!("the session is live on instance {}: tail it through that instance's admin API", s.instance),
                                "instance": s.instance,
                                "admin": s.admin,
                            })),
                        )
                            .into_response();
                    }
                }
            }
            return r;
        }
    };
    audit(&st, &who, &roles, "tail", &format!("recording {id}"), "ok").await;
    // Subscribe before reading the file, so nothing falls in between.
    let live = rec
        .live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .map(crate::control::recorder::subscribe);
    // The records so far, read by a thread into a bounded channel (a long
    // recording is never held in memory whole), then the live ones.
    let (tx, backlog) = tokio::sync::mpsc::channel::<Value>(256);
    let rt = tokio::runtime::Handle::current();
    let file = path.clone();
    tokio::task::spawn_blocking(move || {
        if let Ok(f) = std::fs::File::open(&file) {
            for v in crate::record::records(f) {
                // Gone, or stalled past `STALLED`: the reader stops.
                if !matches!(rt.block_on(tokio::time::timeout(STALLED, tx.send(v))), Ok(Ok(()))) {
                    return;
                }
            }
        }
    });
    struct S {
        backlog: Option<tokio::sync::mpsc::Receiver<Value>>,
        live: Option<tokio::sync::broadcast::Receiver<std::sync::Arc<str>>>,
        /// The seq after the last record sent.
        next_seq: u64,
        done: bool,
        path: PathBuf,
        /// Records to send before reading on (a jump caught up).
        pending: std::collections::VecDeque<Value>,
        /// A live record (or a lag) has come.
        live_started: bool,
    }
    let state = S {
        backlog: Some(backlog),
        live,
        next_seq: 0,
        done: false,
        path,
        pending: std::collections::VecDeque::new(),
        live_started: false,
    };
    /// Sends a record (from the file, the live channel or a catch-up),
    /// ending the stream after the seal.
    fn send(mut s: S, v: &Value, data: String) -> Option<(Result<Event, Infallible>, S)> {
        if let Some(q) = v["seq"].as_u64() {
            s.next_seq = q + 1;
        }
        if v["kind"] == "seal" {
            s.done = true;
            s.pending.clear();
        }
        let ev = Event::default()
            .event(v["kind"].as_str().unwrap_or("record"))
            .data(data);
        Some((Ok(ev), s))
    }
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if let Some(v) = s.pending.pop_front() {
            let data = v.to_string();
            return send(s, &v, data);
        }
        if s.done {
            return None;
        }
        if let Some(b) = s.backlog.as_mut() {
            match b.recv().await {
                Some(v) => {
                    let data = v.to_string();
                    return send(s, &v, data);
                }
                None => s.backlog = None,
            }
        }
        let rx = s.live.as_mut()?;
        loop {
            match rx.recv().await {
                Ok(line) => {
                    // Only the first live record can follow records sent
                    // before this tail subscribed; later jumps are lags,
                    // which say so themselves.
                    let first = !std::mem::replace(&mut s.live_started, true);
                    let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                    if v["seq"].as_u64().is_some_and(|q| q < s.next_seq) {
                        continue; // already sent from the file
                    }
                    if let Some(to) = v["seq"].as_u64().filter(|&q| first && q > s.next_seq) {
                        // Sent live before this tail subscribed and not in
                        // the file when it was read (a record waits in the
                        // writer's buffer until its pass ends): read again.
                        let (path, from, next) = (s.path.clone(), s.next_seq, v.clone());
                        let caught = tokio::task::spawn_blocking(move || catch_up(&path, from, next))
                            .await
                            .unwrap_or_else(|_| vec![json!({ "kind": "gap", "missed_records": to - from }), v]);
                        s.pending.extend(caught);
                        let v = s.pending.pop_front()?;
                        let data = v.to_string();
                        return send(s, &v, data);
                    }
                    return send(s, &v, line.to_string());
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    s.live_started = true;
                    let ev = Event::default()
                        .event("gap")
                        .data(json!({ "kind": "gap", "missed_records": n }).to_string());
                    return Some((Ok(ev), s));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    use futures_util::StreamExt;
    let stream = stream.take_until(ended).map(move |ev| {
        let _slot = &slot;
        ev
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// Records, and bytes of them, a tail catches up on at most: past
/// either, a gap counts the rest (a client that stalled until its file
/// reader gave up gets the recording's start, then a gap, never the whole
/// recording in memory).
const CATCH_UP_RECORDS: usize = 1024;
const CATCH_UP_BYTES: usize = 4 << 20;
/// Looks at the file while records it lacks may still be on their way
/// (a writer's pass writes them out within a few milliseconds).
const CATCH_UP_TRIES: u32 = 4;
const CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// What a tail sends when its first live record, `next`, comes after a
/// jump from `from`: the records in between as the file has them (looked
/// at again for a while when some are missing), a `gap` counting those
/// it does not have or may not send, then `next`. A seal is sent live
/// only once its file holds every record, so the records before a seal
/// are always found.
fn catch_up(path: &std::path::Path, from: u64, next: Value) -> Vec<Value> {
    let Some(to) = next["seq"].as_u64() else {
        return vec![next];
    };
    let mut out = Vec::new();
    for attempt in 1..=CATCH_UP_TRIES {
        let bounded;
        (out, bounded) = records_between(path, from, to);
        if bounded || out.len() as u64 == to - from || attempt == CATCH_UP_TRIES {
            break;
        }
        std::thread::sleep(CATCH_UP_WAIT);
    }
    let missed = (to - from).saturating_sub(out.len() as u64);
    if missed > 0 {
        out.push(json!({ "kind": "gap", "missed_records": missed }));
    }
    out.push(next);
    out
}

/// The file's records with `from <= seq < to`, in order, up to the
/// catch-up's bounds; and whether a bound stopped it.
fn records_between(path: &std::path::Path, from: u64, to: u64) -> (Vec<Value>, bool) {
    let Ok(f) = std::fs::File::open(path) else {
        return (Vec::new(), false);
    };
    let (mut out, mut bytes) = (Vec::new(), 0usize);
    for v in crate::record::records(f) {
        let Some(q) = v["seq"].as_u64() else { continue };
        if q < from {
            continue;
        }
        if q >= to || q != from + out.len() as u64 {
            break;
        }
        bytes += v.to_string().len();
        if out.len() == CATCH_UP_RECORDS || bytes > CATCH_UP_BYTES {
            return (out, true);
        }
        out.push(v);
    }
    (out, false)
}

/// The session id in a recording id (`<start secs>-<session hex>[-n]`).
fn session_of_recording(id: &str) -> Option<u32> {
    let mut parts = id.split('-');
    let _start = parts.next()?.parse::<u64>().ok()?;
    let hex = parts.next()?;
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::parse_time;
    use serde_json::json;

    /// A tail that meets a jump in `seq` sends the records in between
    /// from the file, and says how many it could not find.
    #[test]
    fn a_tail_catches_up_on_records_sent_before_it_subscribed() {
        let dir = tempfile::tempdir().unwrap();
        let path = chained_file(dir.path(), "s.ghrec", 4, |n| ("statement", json!({ "n": n })));
        let seqs = |v: &[serde_json::Value]| -> Vec<String> {
            v.iter()
                .map(|r| match r["seq"].as_u64() {
                    Some(q) => q.to_string(),
                    None => format!("gap {}", r["missed_records"]),
                })
                .collect()
        };
        // Records 1..=3 are in the file: sent, then the live one.
        let caught = super::catch_up(&path, 1, json!({ "seq": 4, "kind": "seal" }));
        assert_eq!(seqs(&caught), ["1", "2", "3", "4"]);
        // Records 4 and 5 are not there yet: a gap of two says so.
        let caught = super::catch_up(&path, 2, json!({ "seq": 6, "kind": "close" }));
        assert_eq!(seqs(&caught), ["2", "3", "gap 2", "6"]);
        // No file: all of it a gap.
        let caught = super::catch_up(&dir.path().join("gone"), 0, json!({ "seq": 2 }));
        assert_eq!(seqs(&caught), ["gap 2", "2"]);
    }

    /// However far behind a tail is, it catches up on a bounded number of
    /// records and counts the rest as a gap.
    #[test]
    fn a_tail_catches_up_on_a_bounded_part() {
        let dir = tempfile::tempdir().unwrap();
        let n = super::CATCH_UP_RECORDS as u64 + 500;
        let path = chained_file(dir.path(), "s.ghrec", n, |i| ("statement", json!({ "n": i })));
        let caught = super::catch_up(&path, 0, json!({ "seq": n, "kind": "close" }));
        assert_eq!(caught.len(), super::CATCH_UP_RECORDS + 2);
        assert_eq!(caught[0]["seq"], 0);
        let gap = &caught[super::CATCH_UP_RECORDS];
        assert_eq!(
            (gap["kind"].as_str(), gap["missed_records"].as_u64()),
            (Some("gap"), Some(500))
        );
        assert_eq!(caught.last().unwrap()["seq"], n);
        // And by bytes: records of 64 KiB each, 4 MiB at most.
        let big = chained_file(dir.path(), "big.ghrec", 100, |_| {
            ("rows", json!({ "rows": "x".repeat(64 << 10) }))
        });
        let caught = super::catch_up(&big, 0, json!({ "seq": 100, "kind": "close" }));
        let sent = caught.len() - 2;
        assert!(sent < 64 && sent > 50, "{sent} records of 64 KiB");
        assert_eq!(caught[sent]["missed_records"].as_u64(), Some(100 - sent as u64));
    }

    /// A recording of `records` chained records, record `i` made by
    /// `record(i)` (its kind and fields) at time `i`.
    fn chained_file(
        dir: &std::path::Path,
        name: &str,
        records: u64,
        record: impl Fn(u64) -> (&'static str, serde_json::Value),
    ) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut chain = crate::record::Chain::default();
        let mut text = Vec::new();
        for i in 0..records {
            let (kind, fields) = record(i);
            text.extend(chain.line(i, kind, fields));
        }
        std::fs::write(&path, &text).unwrap();
        path
    }

    #[test]
    fn session_of_a_recording_id() {
        assert_eq!(super::session_of_recording("1796455580-00001c14"), Some(0x1c14));
        assert_eq!(super::session_of_recording("1796455580-00001c14-2"), Some(0x1c14));
        assert_eq!(super::session_of_recording("x-00001c14"), None);
        assert_eq!(super::session_of_recording("1796455580-1c14"), None);
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("0"), Some(0));
        assert_eq!(parse_time("1764150000"), Some(1_764_150_000_000_000));
        assert_eq!(parse_time("2025-11-26T09:40:00Z"), Some(1_764_150_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("yesterday"), None);
    }
}

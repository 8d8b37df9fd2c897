//! Slack interactive approvals.
//!
//! With `[notify.slack]` set, the messages of `kind = "slack"` webhooks
//! carry Approve / Deny buttons (Block Kit). Slack posts each click to the
//! app's Request URL, `POST /slack/interactions` on the admin listener;
//! this module checks that the request is Slack's (the `v0` HMAC-SHA256
//! signature over timestamp and body with the app's signing secret, a
//! timestamp within five minutes, each signature accepted once), maps the
//! Slack user to a configured approver (by member ID, or by the confirmed
//! e-mail Slack's `users.info` gives), decides with the same rules as the
//! admin API ([`super::decide`]), and rewrites the message through the
//! click's `response_url` with the outcome, or tells the clicker alone
//! (an ephemeral message) why nothing happened.
//!
//! What a button carries (the review id, the grant) is only a request:
//! the approver's roles come from the configuration, a grant only from the
//! configured `grant_minutes`, and the review's own rules decide.

use super::admin::{error, AppState};
use super::decide::{decide, state_name, Action};
use super::notify::{slack_escape, MAX_SQL_CHARS};
use crate::config::{Approver, SlackApp};
use crate::policy::reviews::{Grant, Review, ReviewError, Status};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Oldest (and furthest in the future) request timestamp accepted, as
/// Slack advises: a captured request cannot be replayed later.
pub const MAX_SKEW_SECS: u64 = 300;
/// Largest callback body read.
pub const MAX_BODY: usize = 64 * 1024;
/// Signatures remembered to refuse a replay within the window; past it
/// the oldest are dropped (they are outside the window soon anyway).
const MAX_SEEN: usize = 100_000;
/// How long a `users.info` answer is trusted.
const EMAIL_TTL: Duration = Duration::from_secs(600);
const MAX_EMAILS: usize = 10_000;
/// Slack's limit on a section's text.
const SECTION_CHARS: usize = 2900;

pub const ACTION_APPROVE: &str = "approve";
pub const ACTION_DENY: &str = "deny";
/// `approve_grant_<minutes>`.
pub const ACTION_GRANT_PREFIX: &str = "approve_grant_";
/// The deny-reason dialog's callback id.
pub const DENY_DIALOG: &str = "gatehouse_deny";

/// What the callback remembers between requests.
#[derive(Default)]
pub struct SlackState {
    /// Signatures seen, with their timestamps.
    seen: Mutex<HashMap<Vec<u8>, u64>>,
    /// Slack user id → (confirmed e-mail, when asked).
    emails: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

impl SlackState {
    /// Remembers a signature; false if it was seen already.
    fn first_use(&self, sig: &[u8], ts: u64, now: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_SEEN {
            seen.retain(|_, t| t.abs_diff(now) <= MAX_SKEW_SECS);
            if seen.len() >= MAX_SEEN {
                let oldest = seen.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    seen.remove(&k);
                }
            }
        }
        seen.insert(sig.to_vec(), ts).is_none()
    }
}

// ---- signatures ------------------------------------------------------------

/// `v0=<hex HMAC-SHA256 of "v0:<timestamp>:<body>">`, as Slack signs.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a callback is not taken as Slack's.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    #[error("no valid X-Slack-Request-Timestamp or X-Slack-Signature header")]
    Missing,
    #[error("the request timestamp is not within {MAX_SKEW_SECS} seconds of now")]
    Stale,
    #[error("the signature does not match")]
    BadSignature,
    #[error("this signed request was received already")]
    Replayed,
}

/// Checks a callback's timestamp and signature; returns the signature's
/// bytes (the replay key).
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: u64,
) -> Result<(Vec<u8>, u64), Unverified> {
    let (Some(ts_text), Some(sig)) = (timestamp, signature) else {
        return Err(Unverified::Missing);
    };
    let ts: u64 = ts_text.trim().parse().map_err(|_| Unverified::Missing)?;
    if ts.abs_diff(now) > MAX_SKEW_SECS {
        return Err(Unverified::Stale);
    }
    let sig = sig
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(Unverified::BadSignature)?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(|_| Unverified::BadSignature)?;
    mac.update(b"v0:");
    mac.update(ts_text.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| Unverified::BadSignature)?;
    Ok((sig, ts))
}

// ---- messages --------------------------------------------------------------

fn section(text: String) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

/// Text shortened to what a Slack section holds.
fn fit(s: String) -> String {
    if s.chars().count() <= SECTION_CHARS {
        s
    } else {
        let cut: String = s.chars().take(SECTION_CHARS).collect();
        format!("{cut}…")
    }
}

/// A code block that nothing inside can end early, at most `budget`
/// characters of escaped text; what does not fit is named after the
/// closing fence, never silently dropped.
fn code(s: &str, budget: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    let mut taken = 0;
    for c in s.chars() {
        let piece = match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '`' => "`\u{200b}".to_string(),
            c => c.to_string(),
        };
        let n = piece.chars().count();
        if used + n > budget {
            break;
        }
        used += n;
        taken += 1;
        out.push_str(&piece);
    }
    let rest = s.chars().count() - taken;
    if rest == 0 {
        format!("```{out}```")
    } else {
        format!("```{out}```\n_… and {rest} more characters: the console and the admin API have the whole text_")
    }
}

/// The blocks describing a review: who, where, what.
fn review_blocks(r: &Review) -> Vec<Value> {
    let q = &r.request;
    let e = slack_escape;
    let flags = if q.flags.is_empty() {
        String::new()
    } else {
        format!(" ({})", e(&q.flags.join(", ")))
    };
    let why = q
        .reason
        .as_ref()
        .map(|r| format!("\nheld because: {}", e(r)))
        .unwrap_or_default();
    let mut blocks = vec![
        section(fit(format!(
            "*gatehouse review `{id}`*\nidentity: *{identity}* · target: *{target}* · class: *{class}*{flags} · session {session}\n\
             needs {required} approval(s) from: {approvers} · expires {timeout}s after it opened{why}",
            id = e(&r.id),
            identity = e(&q.identity),
            target = e(&q.target),
            class = e(&q.class),
            session = q.session,
            required = q.required,
            approvers = e(&q.approvers.join(", ")),
            timeout = q.timeout_secs,
        ))),
        section(code(&q.sql, MAX_SQL_CHARS.min(SECTION_CHARS - 120))),
    ];
    if !q.params.is_empty() {
        let all: Vec<String> = q
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| format!("${} = {p}", i + 1))
            .collect();
        blocks.push(section(format!(
            "parameters: {}",
            code(&all.join(", "), SECTION_CHARS - 140)
        )));
    }
    blocks
}

/// The buttons: approve once, approve with each configured grant, deny
/// (with a confirmation dialog).
fn buttons(r: &Review, app: &SlackApp) -> Value {
    let mut elements = vec![json!({
        "type": "button", "action_id": ACTION_APPROVE, "value": r.id, "style": "primary",
        "text": { "type": "plain_text", "text": "Approve once" },
    })];
    for m in &app.grant_minutes {
        let what: String = r.request.class.chars().take(30).collect();
        elements.push(json!({
            "type": "button", "action_id": format!("{ACTION_GRANT_PREFIX}{m}"), "value": r.id,
            "text": { "type": "plain_text", "text": format!("Approve + grant {what} for {m} min") },
        }));
    }
    elements.push(json!({
        "type": "button", "action_id": ACTION_DENY, "value": r.id, "style": "danger",
        "text": { "type": "plain_text", "text": "Deny" },
        "confirm": {
            "title": { "type": "plain_text", "text": "Deny this statement?" },
            "text": { "type": "plain_text", "text": "The client gets an error and the statement does not run." },
            "confirm": { "type": "plain_text", "text": "Deny" },
            "deny": { "type": "plain_text", "text": "Cancel" },
        },
    }));
    json!({ "type": "actions", "block_id": "gatehouse_review", "elements": elements })
}

/// The announcement of a new review with its buttons; `text` is the
/// plain message (the notification's fallback), `note` a line on reviews
/// announced with it.
pub fn announcement(r: &Review, app: &SlackApp, text: &str, admin_url: &str, note: Option<&str>) -> Value {
    let mut blocks = review_blocks(r);
    blocks.push(buttons(r, app));
    let mut context = format!(
        "Full review: `GET {}/api/v1/reviews/{}`",
        slack_escape(admin_url),
        slack_escape(&r.id)
    );
    if let Some(n) = note {
        context = format!("{}\n{context}", slack_escape(n));
    }
    blocks.push(json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": fit(context) }] }));
    json!({ "text": text, "blocks": blocks })
}

/// One line on where the review stands now.
pub fn outcome_line(r: &Review) -> String {
    let e = slack_escape;
    let by = r.decided_by.as_deref().map(e).unwrap_or_default();
    match &r.status {
        Status::Approved => {
            let grant = match r.grant_until {
                Some(until) => format!(
                    " (class *{}* granted until <!date^{until}^{{date_short_pretty}} {{time}}|{until}>)",
                    e(&r.request.class)
                ),
                None => " (this statement once)".to_string(),
            };
            format!(":white_check_mark: *Approved* by *{by}*{grant}")
        }
        Status::Denied { reason } => format!(":no_entry: *Denied* by *{by}*: {}", e(reason)),
        Status::Withdrawn { why } => format!(":heavy_minus_sign: *Withdrawn*: {}", e(why)),
        Status::Pending => {
            let names: Vec<String> = r.approvals.iter().map(|a| e(&a.by)).collect();
            format!(
                ":hourglass_flowing_sand: {} of {} approvals ({}); waiting for more",
                r.approvals.len(),
                r.request.required,
                if names.is_empty() {
                    "none yet".into()
                } else {
                    names.join(", ")
                }
            )
        }
    }
}

/// The message rewritten after a click: the review, where it stands, and
/// the buttons only while it is pending.
pub fn update(r: &Review, app: &SlackApp) -> Value {
    let mut blocks = review_blocks(r);
    let line = outcome_line(r);
    blocks.push(section(fit(line.clone())));
    if r.status == Status::Pending {
        blocks.push(buttons(r, app));
    }
    json!({
        "replace_original": true,
        "text": format!("gatehouse review {}: {}", r.id, state_name(&r.status)),
        "blocks": blocks,
    })
}

/// A reply only the clicker sees; the message stays as it is.
pub fn ephemeral(text: &str) -> Value {
    json!({ "response_type": "ephemeral", "replace_original": false, "text": text })
}

/// The dialog asking why a review is denied. Its private metadata names
/// the review and the message to rewrite; Slack hands it back signed.
pub fn deny_dialog(review: &str, response_url: &str) -> Value {
    json!({
        "type": "modal",
        "callback_id": DENY_DIALOG,
        "private_metadata": json!({ "review": review, "response_url": response_url }).to_string(),
        "title": { "type": "plain_text", "text": "Deny the statement" },
        "submit": { "type": "plain_text", "text": "Deny" },
        "close": { "type": "plain_text", "text": "Cancel" },
        "blocks": [{
            "type": "input", "block_id": "reason",
            "label": { "type": "plain_text", "text": "Reason (the client is told)" },
            "element": { "type": "plain_text_input", "action_id": "reason", "multiline": true, "max_length": 1000 },
        }],
    })
}

/// Calls a Slack Web API method with the bot token.
async fn web_api(app: &SlackApp, method: &str, body: Value) -> Result<Value, String> {
    let token = app.bot_token().ok_or("the Slack bot token is not set")?;
    let url = format!("{}/{method}", app.api_url.trim_end_matches('/'));
    let method = method.to_string();
    tokio::task::spawn_blocking(move || -> Result<Value, String> {
        let agent = super::notify::http_agent(None)?;
        let resp = agent
            .post(&url)
            .set("Authorization", &format!("Bearer {token}"))
            .set("Content-Type", "application/json; charset=utf-8")
            .send_string(&body.to_string())
            .map_err(|e| match e {
                ureq::Error::Status(c, _) => format!("{method}: HTTP status {c}"),
                ureq::Error::Transport(t) => format!("{method}: {}", t.kind()),
            })?;
        let mut text = String::new();
        use std::io::Read as _;
        resp.into_reader()
            .take(256 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| format!("{method}: {e}"))?;
        let v: Value = serde_json::from_str(&text).map_err(|_| format!("{method}: not JSON"))?;
        if v["ok"] == json!(true) {
            Ok(v)
        } else {
            Err(format!(
                "{method}: {}",
                v["error"]
                    .as_str()
                    .unwrap_or("not ok")
                    .chars()
                    .take(60)
                    .collect::<String>()
            ))
        }
    })
    .await
    .map_err(|_| "the Slack request failed".to_string())?
}

/// The answer to a dialog submission that keeps the dialog open with an
/// error under the reason field.
fn dialog_error(text: &str) -> Response {
    axum::Json(json!({ "response_action": "errors", "errors": { "reason": text } })).into_response()
}

// ---- callbacks -------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: Option<PayloadUser>,
    team: Option<PayloadTeam>,
    #[serde(default)]
    actions: Vec<PayloadAction>,
    response_url: Option<String>,
    trigger_id: Option<String>,
    view: Option<PayloadView>,
}

#[derive(Debug, Deserialize)]
struct PayloadView {
    #[serde(default)]
    callback_id: String,
    #[serde(default)]
    private_metadata: String,
    #[serde(default)]
    state: Value,
}

#[derive(Debug, Deserialize)]
struct PayloadUser {
    id: String,
    team_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PayloadTeam {
    id: String,
}

#[derive(Debug, Deserialize)]
struct PayloadAction {
    action_id: String,
    value: Option<String>,
}

/// Where Slack's `response_url`s point: a signed request names one, and
/// nothing else is posted to.
fn response_url_ok(u: &str) -> bool {
    ["https://hooks.slack.com/", "https://hooks.slack-gov.com/"]
        .iter()
        .any(|p| u.len() > p.len() && u.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
        || crate::config::loopback_http(u)
}

/// The approver a Slack user is, by member ID, else by the confirmed
/// e-mail Slack knows them by.
async fn approver_of(st: &AppState, app: &SlackApp, user_id: &str) -> Result<Option<Approver>, String> {
    if let Some(a) = app.approvers.iter().find(|a| a.user_id.as_deref() == Some(user_id)) {
        return Ok(Some(a.clone()));
    }
    if !app.approvers.iter().any(|a| a.email.is_some()) {
        return Ok(None);
    }
    let cached = {
        let g = st.slack.emails.lock().unwrap_or_else(|p| p.into_inner());
        g.get(user_id)
            .filter(|(_, at)| at.elapsed() < EMAIL_TTL)
            .map(|(e, _)| e.clone())
    };
    let email = match cached {
        Some(e) => e,
        None => {
            let e = lookup_email(app, user_id).await?;
            let mut g = st.slack.emails.lock().unwrap_or_else(|p| p.into_inner());
            if g.len() >= MAX_EMAILS {
                g.retain(|_, (_, at)| at.elapsed() < EMAIL_TTL);
                if g.len() >= MAX_EMAILS {
                    g.clear();
                }
            }
            g.insert(user_id.to_string(), (e.clone(), Instant::now()));
            e
        }
    };
    Ok(email.and_then(|mail| {
        app.approvers
            .iter()
            .find(|a| a.email.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(&mail)))
            .cloned()
    }))
}

/// The user's e-mail from `users.info`, if Slack says it is confirmed and
/// the account is a live human one.
async fn lookup_email(app: &SlackApp, user_id: &str) -> Result<Option<String>, String> {
    let token = app.bot_token().ok_or("the Slack bot token is not set")?;
    if !user_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Ok(None);
    }
    let url = format!("{}/users.info?user={user_id}", app.api_url.trim_end_matches('/'));
    let res = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        let agent = super::notify::http_agent(None)?;
        let resp = agent
            .get(&url)
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .map_err(|e| match e {
                ureq::Error::Status(c, _) => format!("users.info: HTTP status {c}"),
                ureq::Error::Transport(t) => format!("users.info: {}", t.kind()),
            })?;
        let mut text = String::new();
        use std::io::Read as _;
        resp.into_reader()
            .take(256 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| format!("users.info: {e}"))?;
        serde_json::from_str(&text).map_err(|_| "users.info: not JSON".to_string())
    })
    .await
    .map_err(|_| "users.info: the request task failed".to_string())??;
    if res["ok"] != json!(true) {
        if matches!(res["error"].as_str(), Some("user_not_found" | "user_not_visible")) {
            return Ok(None);
        }
        return Err(format!(
            "users.info: {}",
            res["error"]
                .as_str()
                .unwrap_or("not ok")
                .chars()
                .take(60)
                .collect::<String>()
        ));
    }
    let u = &res["user"];
    // A live, full member of the configured workspace (no guest, no bot)
    // whose address Slack says is confirmed.
    let live_human = u["deleted"] != json!(true)
        && u["is_bot"] != json!(true)
        && u["is_restricted"] != json!(true)
        && u["is_ultra_restricted"] != json!(true)
        && u["id"] == json!(user_id);
    let in_team = app
        .team_id
        .as_ref()
        .is_none_or(|t| u["team_id"].as_str() == Some(t.as_str()));
    let confirmed = u["is_email_confirmed"] == json!(true);
    Ok(u["profile"]["email"]
        .as_str()
        .filter(|_| live_human && confirmed && in_team)
        .map(str::to_string))
}

/// Posts `body` to the click's `response_url` (in the background: Slack
/// wants its answer within three seconds).
fn respond(response_url: Option<String>, body: Value) {
    let Some(url) = response_url.filter(|u| response_url_ok(u)) else {
        return;
    };
    tokio::spawn(async move {
        let agent = match super::notify::http_agent(None) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(target: "gatehouse::slack", error = %e, "no HTTP client for the Slack response");
                return;
            }
        };
        if let Err(e) = super::notify::post(&agent, &url, Vec::new(), body.to_string().into_bytes()).await {
            tracing::warn!(target: "gatehouse::slack", error = %e, "the Slack message was not updated");
        }
    });
}

/// What a refusal tells the clicker.
fn refusal_text(e: &ReviewError) -> String {
    match e {
        ReviewError::SelfApproval => "You asked for this review: someone else has to decide it.".into(),
        ReviewError::WrongRole(r) => format!("This review needs an approver with one of the roles: {r}."),
        ReviewError::Twice => "You have approved this review already; it waits for other approvers.".into(),
        ReviewError::NotPending => "This review is decided already.".into(),
        e => format!("Nothing was decided: {e}."),
    }
}

/// `POST /slack/interactions`.
pub async fn interactions(State(st): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let config = st.shared.state.load().config.clone();
    let Some(app) = config.notify.slack.as_ref() else {
        return error(
            StatusCode::NOT_FOUND,
            "Slack interactivity is not configured ([notify.slack])",
        );
    };
    if body.len() > MAX_BODY {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "the callback body is too large");
    }
    let Some(secret) = app.signing_secret() else {
        tracing::error!(target: "gatehouse::slack", "the Slack signing secret's environment variable is not set: callbacks refused");
        return error(StatusCode::SERVICE_UNAVAILABLE, "the Slack signing secret is not set");
    };
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let now = crate::policy::reviews::now_unix();
    let checked = verify(
        secret.as_bytes(),
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        &body,
        now,
    )
    .and_then(|(sig, ts)| {
        if st.slack.first_use(&sig, ts, now) {
            Ok(())
        } else {
            Err(Unverified::Replayed)
        }
    });
    if let Err(e) = checked {
        // Anyone can send these: not a warning each (a flood would fill the log).
        tracing::debug!(target: "gatehouse::slack", refused = %e, "a Slack callback was refused");
        return error(StatusCode::UNAUTHORIZED, &e.to_string());
    }
    let payload = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned());
    let Some(Ok(p)) = payload.map(|p| serde_json::from_str::<Payload>(&p)) else {
        return error(StatusCode::BAD_REQUEST, "the body is not a Slack interaction payload");
    };
    let Some(user) = p.user.as_ref() else {
        return error(StatusCode::BAD_REQUEST, "the payload names no user");
    };
    if let Some(team) = &app.team_id {
        // The clicker's own workspace and the message's must both be the
        // configured one (a shared channel carries users of others).
        let teams = [p.team.as_ref().map(|t| t.id.as_str()), user.team_id.as_deref()];
        let ok = teams.iter().any(Option::is_some) && teams.iter().flatten().all(|t| *t == team.as_str());
        if !ok {
            super::admin::audit(
                &st,
                &format!("slack user {}", user.id),
                &[],
                "slack callback",
                "workspace",
                "refused: another workspace",
            )
            .await;
            return error(StatusCode::FORBIDDEN, "this workspace is not the configured one");
        }
    }
    if p.kind == "view_submission" {
        return deny_submitted(&st, app, &p, &user.id).await;
    }
    if p.kind != "block_actions" {
        return StatusCode::OK.into_response();
    }
    let Some(action) = p.actions.first() else {
        return StatusCode::OK.into_response();
    };
    let id = action.value.clone().unwrap_or_default();
    let via = format!("slack user {}", user.id);
    let decision = if action.action_id == ACTION_APPROVE {
        Some(Action::Approve(Grant::Once))
    } else if action.action_id == ACTION_DENY {
        Some(Action::Deny(String::new()))
    } else {
        action
            .action_id
            .strip_prefix(ACTION_GRANT_PREFIX)
            .and_then(|m| m.parse::<u64>().ok())
            .filter(|m| app.grant_minutes.contains(m))
            .map(|m| Action::Approve(Grant::For(m * 60)))
    };
    let Some(decision) = decision else {
        respond(
            p.response_url,
            ephemeral("This button is not one gatehouse offers now."),
        );
        return StatusCode::OK.into_response();
    };
    let approver = match approver_of(&st, app, &user.id).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(target: "gatehouse::slack", error = %e, "a Slack user could not be looked up");
            super::admin::audit(
                &st,
                &via,
                &[],
                decision.verb(),
                &format!("review {id}"),
                "refused: the Slack user could not be looked up",
            )
            .await;
            respond(
                p.response_url,
                ephemeral("gatehouse could not look up who you are in Slack; nothing was decided."),
            );
            return StatusCode::OK.into_response();
        }
    };
    let Some(approver) = approver else {
        super::admin::audit(
            &st,
            &via,
            &[],
            decision.verb(),
            &format!("review {id}"),
            "refused: this Slack user is not a configured approver",
        )
        .await;
        respond(
            p.response_url,
            ephemeral("You are not a gatehouse approver ([[notify.slack.approver]]); nothing was decided."),
        );
        return StatusCode::OK.into_response();
    };
    if matches!(decision, Action::Deny(_)) && app.ask_deny_reason {
        // Ask why first; the denial comes with the dialog's submission.
        if let Err(e) = st.shared.reviews.may_deny(&id, &approver.name, &approver.roles) {
            let e = super::decide::refine(&st, &id, e);
            super::admin::audit(
                &st,
                &approver.name,
                &approver.roles,
                "deny",
                &format!("review {id}"),
                &format!("refused: {e}, via {via}"),
            )
            .await;
            respond(p.response_url, ephemeral(&refusal_text(&e)));
            return StatusCode::OK.into_response();
        }
        let (Some(trigger), Some(url)) = (p.trigger_id.as_deref(), p.response_url.as_deref()) else {
            return StatusCode::OK.into_response();
        };
        if let Err(e) = web_api(
            app,
            "views.open",
            json!({ "trigger_id": trigger, "view": deny_dialog(&id, url) }),
        )
        .await
        {
            tracing::warn!(target: "gatehouse::slack", error = %e, "the deny dialog did not open");
            respond(
                p.response_url,
                ephemeral("gatehouse could not open the reason dialog; nothing was decided."),
            );
        }
        return StatusCode::OK.into_response();
    }
    let decision = match decision {
        Action::Deny(_) => Action::Deny(format!("denied in Slack by {}", approver.name)),
        a => a,
    };
    match decide(&st, &approver.name, &approver.roles, &id, decision, &via, "").await {
        Ok(r) => respond(p.response_url, update(&r, app)),
        Err(ReviewError::NotPending) => {
            // Decided elsewhere (or timed out): show where it stands.
            match st.shared.reviews.get(&id) {
                Some(r) => respond(p.response_url, update(&r, app)),
                None => respond(p.response_url, ephemeral("This review is decided already.")),
            }
        }
        Err(e) => respond(p.response_url, ephemeral(&refusal_text(&e))),
    }
    StatusCode::OK.into_response()
}

/// A submitted deny dialog: the reason, as the user who submitted it
/// (mapped again: the dialog carries no authority of its own).
async fn deny_submitted(st: &AppState, app: &SlackApp, p: &Payload, user_id: &str) -> Response {
    let Some(view) = p.view.as_ref().filter(|v| v.callback_id == DENY_DIALOG) else {
        return StatusCode::OK.into_response();
    };
    let meta: Value = serde_json::from_str(&view.private_metadata).unwrap_or(Value::Null);
    let id = meta["review"].as_str().unwrap_or_default().to_string();
    let response_url = meta["response_url"].as_str().map(str::to_string);
    let reason = view.state["values"]["reason"]["reason"]["value"]
        .as_str()
        .unwrap_or("")
        .trim()
        .to_string();
    if reason.is_empty() {
        return dialog_error("Give the reason the client is told.");
    }
    // The dialog counts characters, the API bytes: keep what fits.
    let mut reason = reason;
    if reason.len() > super::admin::MAX_REASON_BYTES {
        let mut at = super::admin::MAX_REASON_BYTES;
        while !reason.is_char_boundary(at) {
            at -= 1;
        }
        reason.truncate(at);
    }
    let via = format!("slack user {user_id}");
    let approver = match approver_of(st, app, user_id).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            super::admin::audit(
                st,
                &via,
                &[],
                "deny",
                &format!("review {id}"),
                "refused: this Slack user is not a configured approver",
            )
            .await;
            return dialog_error("You are not a gatehouse approver; nothing was decided.");
        }
        Err(e) => {
            tracing::warn!(target: "gatehouse::slack", error = %e, "a Slack user could not be looked up");
            super::admin::audit(
                st,
                &via,
                &[],
                "deny",
                &format!("review {id}"),
                "refused: the Slack user could not be looked up",
            )
            .await;
            return dialog_error("gatehouse could not look up who you are in Slack; nothing was decided.");
        }
    };
    match decide(st, &approver.name, &approver.roles, &id, Action::Deny(reason), &via, "").await {
        Ok(r) => {
            respond(response_url, update(&r, app));
            StatusCode::OK.into_response()
        }
        Err(e) => dialog_error(&refusal_text(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_as_slack_documents_them() {
        // The worked example of Slack's "Verifying requests from Slack".
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let ts = "1531420618";
        let sig = sign(secret, ts, body);
        assert_eq!(
            sig,
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
        let now = 1531420618 + 10;
        assert!(verify(secret, Some(ts), Some(&sig), body, now).is_ok());
        assert_eq!(
            verify(secret, Some(ts), Some(&sig), body, now + MAX_SKEW_SECS + 1),
            Err(Unverified::Stale)
        );
        assert_eq!(
            verify(secret, Some(ts), Some(&sig), b"other", now),
            Err(Unverified::BadSignature)
        );
        assert_eq!(
            verify(b"other", Some(ts), Some(&sig), body, now),
            Err(Unverified::BadSignature)
        );
        assert_eq!(verify(secret, None, Some(&sig), body, now), Err(Unverified::Missing));
        assert_eq!(
            verify(secret, Some("x"), Some(&sig), body, now),
            Err(Unverified::Missing)
        );
        assert_eq!(
            verify(secret, Some(ts), Some(sig.trim_start_matches("v0=")), body, now),
            Err(Unverified::BadSignature)
        );
        // The timestamp is signed: another one with the same signature fails.
        assert_eq!(
            verify(secret, Some("1531420619"), Some(&sig), body, now),
            Err(Unverified::BadSignature)
        );
    }

    #[test]
    fn long_statements_end_with_a_note_never_cut_silently() {
        // Escaping makes `<` five characters: the cut is on the escaped text.
        let sql = format!("update t set note = '{}'; delete from accounts", "<".repeat(1500));
        let c = code(&sql, 2000);
        assert!(c.chars().count() < 2200, "{}", c.len());
        assert!(c.contains("```\n_… and "), "the fence closes, then the note: {c}");
        assert!(c.contains("more characters"));
        let whole = code("select 1 -- ```", 2000);
        assert_eq!(whole, "```select 1 -- `\u{200b}`\u{200b}`\u{200b}```");
    }

    #[test]
    fn a_signature_is_accepted_once() {
        let s = SlackState::default();
        assert!(s.first_use(b"a", 100, 100));
        assert!(!s.first_use(b"a", 100, 101));
        assert!(s.first_use(b"b", 100, 101));
    }

    #[test]
    fn response_urls_are_slack_or_loopback() {
        assert!(response_url_ok("https://hooks.slack.com/actions/T1/2/x"));
        assert!(response_url_ok("http://127.0.0.1:9/x"));
        assert!(!response_url_ok("https://hooks.slack.com.evil.example/x"));
        assert!(!response_url_ok("https://evil.example/https://hooks.slack.com/"));
        assert!(!response_url_ok("http://hooks.slack.com/actions"));
        assert!(!response_url_ok("http://127.0.0.1@evil.example/"));
        assert!(
            !response_url_ok("https://hooks.slack.co\u{e9}/x"),
            "no panic on a multi-byte URL"
        );
        assert!(!response_url_ok("https://hooks.slack.com\u{e9}/x"));
    }
}

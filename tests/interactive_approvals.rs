//! Deciding reviews where approvers are: Slack buttons (callbacks signed
//! as Slack signs them) and mail links (signed, once, as the approver).
//!
//! The admin router is served in-process over a `Shared` the test builds,
//! with the notifier on the same runtime sending to receivers the test
//! starts; one test runs a real gateway and a held `psql` end to end.
mod common;
use common::sinks::*;
use common::*;
use gatehouse::control::admin::{self, AppState};
use gatehouse::control::{links, notify, slack};
use gatehouse::policy::reviews::{ReviewRequest, Status};
use serde_json::{json, Value};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SIGNING_ENV: &str = "GH_SLACK_TEST_SIGNING";
const SIGNING: &str = "slack-signing-secret-for-tests";
const BOT_ENV: &str = "GH_SLACK_TEST_BOT";
const BOT: &str = "xoxb-test-bot-token";

/// Identities without roles are `agent`s, whose writes wait for a `dba`.
const POLICY: &str = "[policy]\ndefault_role = \"agent\"\n[policy.roles.agent]\napprovers = [\"dba\"]\n";

fn request(required: u32, timeout_secs: u64) -> ReviewRequest {
    ReviewRequest {
        identity: "agent".into(),
        roles: vec!["agent".into()],
        target: "test".into(),
        session: 7,
        sql: "insert into t values ('[MASKED]') -- <b>&".into(),
        params: vec![],
        class: "write".into(),
        flags: vec![],
        fingerprint: "fp".into(),
        approvers: vec!["dba".into()],
        required,
        timeout_secs,
        reason: None,
        grants: vec!["write".into()],
    }
}

struct NoOps;
impl gatehouse::control::Ops for NoOps {
    fn reload(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The admin router and the notifier over a `Shared` of the test's.
struct Api {
    shared: Arc<gatehouse::core::Shared>,
    port: u16,
    rt: tokio::runtime::Runtime,
}

fn parse(extra: &str) -> gatehouse::config::Config {
    let text = config_text(
        free_port(),
        "",
        &format!("[scan]\nenabled = false\n\n{POLICY}\n{extra}"),
    );
    gatehouse::config::Config::parse(&text, "test.toml", std::path::Path::new(".")).expect("config")
}

fn api(extra: &str) -> Api {
    std::env::set_var(SIGNING_ENV, SIGNING);
    std::env::set_var(BOT_ENV, BOT);
    let state = gatehouse::core::State::build(parse(extra)).expect("state");
    let shared = gatehouse::core::Shared::new(state, 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let links = Arc::new(links::Links::default());
    let from = shared.clone();
    notify::start(
        rt.handle(),
        &shared.reviews,
        Arc::new(move || {
            let mut s = notify::Settings::from_config(&from.state.load().config);
            s.admin_url = format!("http://127.0.0.1:{port}");
            s
        }),
        links.clone(),
    );
    let app = AppState {
        links,
        ..AppState::new(shared.clone(), Arc::new(AtomicBool::new(true)), Arc::new(NoOps), None)
    };
    let limits = admin::Limits {
        connections: 64,
        header_timeout: Duration::from_secs(10),
    };
    rt.spawn(admin::serve(listener, None, limits, app));
    Api { shared, port, rt }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A `block_actions` payload as Slack sends it, form-encoded.
fn click(user: &str, team: &str, action_id: &str, review: &str, response_url: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": { "id": user, "username": "someone", "name": "someone", "team_id": team },
        "api_app_id": "A0TEST",
        "token": "legacy-verification-token",
        "container": { "type": "message", "message_ts": "1.2", "channel_id": "C1", "is_ephemeral": false },
        "trigger_id": "1.2.3",
        "team": { "id": team, "domain": "example" },
        "channel": { "id": "C1", "name": "approvals" },
        "response_url": response_url,
        "actions": [{
            "action_id": action_id, "block_id": "gatehouse_review", "type": "button",
            "value": review, "action_ts": "1.3",
            "text": { "type": "plain_text", "text": "x" },
        }],
    });
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
}

/// POSTs a callback with the given timestamp and signature headers.
fn post_raw(port: u16, body: &str, ts: Option<&str>, sig: Option<&str>) -> u16 {
    let mut req = ureq::post(&format!("http://127.0.0.1:{port}/slack/interactions"))
        .set("Content-Type", "application/x-www-form-urlencoded");
    if let Some(t) = ts {
        req = req.set("X-Slack-Request-Timestamp", t);
    }
    if let Some(s) = sig {
        req = req.set("X-Slack-Signature", s);
    }
    match req.send_string(body) {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(c, _)) => c,
        Err(e) => panic!("{e}"),
    }
}

/// POSTs a callback signed as Slack signs it, now.
fn post_signed(port: u16, body: &str) -> u16 {
    let ts = now().to_string();
    let sig = slack::sign(SIGNING.as_bytes(), &ts, body.as_bytes());
    post_raw(port, body, Some(&ts), Some(&sig))
}

/// Waits for the `n`th post to `path` on the receiver and returns it.
fn nth_post(seen: &Arc<Mutex<Vec<HttpReq>>>, path: &str, n: usize) -> Value {
    wait_for(path, || {
        seen.lock().unwrap().iter().filter(|q| q.path == path).count() > n
    });
    let g = seen.lock().unwrap();
    let q = g.iter().filter(|q| q.path == path).nth(n).unwrap();
    serde_json::from_slice(&q.body).unwrap()
}

fn slack_config(hport: u16, extra: &str) -> String {
    format!(
        r#"
[notify]
[[notify.webhook]]
kind = "slack"
url = "http://127.0.0.1:{hport}/incoming"

[notify.slack]
signing_secret_env = "{SIGNING_ENV}"
team_id = "T0TEAM"
grant_minutes = [30]
bot_token_env = "{BOT_ENV}"
api_url = "http://127.0.0.1:{hport}/api"

[[notify.slack.approver]]
user_id = "U0DBA1"
name = "dba1"
roles = ["dba"]

[[notify.slack.approver]]
user_id = "U0DBA2"
name = "dba2"
roles = ["dba"]

[[notify.slack.approver]]
user_id = "U0AGENT"
name = "agent"
roles = ["dba"]

[[notify.slack.approver]]
user_id = "U0OPS"
name = "ops"
roles = ["approver"]

[[notify.slack.approver]]
email = "carol@example.com"
name = "carol"
roles = ["dba"]
{extra}"#
    )
}

/// A receiver for the incoming webhook, the response URLs and Slack's
/// `users.info` (U0CAROL is carol, confirmed; U0MALLORY claims carol's
/// address unconfirmed; U0BOT is a bot with it).
fn slack_receiver() -> (u16, Arc<Mutex<Vec<HttpReq>>>) {
    http_receiver_with(Box::new(|q: &HttpReq, _| {
        if q.path == "/api/views.open" {
            let bearer = q.headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {BOT}"));
            let body = if bearer {
                json!({ "ok": true, "view": { "id": "V0DIALOG" } })
            } else {
                json!({ "ok": false, "error": "not_authed" })
            };
            return ("200 OK".into(), body.to_string());
        }
        if let Some(rest) = q.path.strip_prefix("/api/users.info?user=") {
            let bearer = q.headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {BOT}"));
            let body = match (bearer, rest) {
                (false, _) => json!({ "ok": false, "error": "not_authed" }),
                (true, "U0CAROL") => json!({ "ok": true, "user": {
                    "id": "U0CAROL", "team_id": "T0TEAM", "deleted": false, "is_bot": false, "is_email_confirmed": true,
                    "profile": { "email": "Carol@Example.com" } } }),
                (true, "U0MALLORY") => json!({ "ok": true, "user": {
                    "id": "U0MALLORY", "team_id": "T0TEAM", "deleted": false, "is_bot": false, "is_email_confirmed": false,
                    "profile": { "email": "carol@example.com" } } }),
                (true, "U0BOT") => json!({ "ok": true, "user": {
                    "id": "U0BOT", "team_id": "T0TEAM", "deleted": false, "is_bot": true, "is_email_confirmed": true,
                    "profile": { "email": "carol@example.com" } } }),
                (true, "U0GUEST") => json!({ "ok": true, "user": {
                    "id": "U0GUEST", "team_id": "T0TEAM", "deleted": false, "is_bot": false, "is_restricted": true,
                    "is_email_confirmed": true, "profile": { "email": "carol@example.com" } } }),
                (true, "U0ELSEWHERE") => json!({ "ok": true, "user": {
                    "id": "U0ELSEWHERE", "team_id": "T0OTHER", "deleted": false, "is_bot": false,
                    "is_email_confirmed": true, "profile": { "email": "carol@example.com" } } }),
                (true, "U0NOCONFIRM") => json!({ "ok": true, "user": {
                    "id": "U0NOCONFIRM", "team_id": "T0TEAM", "deleted": false, "is_bot": false,
                    "profile": { "email": "carol@example.com" } } }),
                (true, _) => json!({ "ok": false, "error": "user_not_found" }),
            };
            return ("200 OK".into(), body.to_string());
        }
        ("200 OK".into(), "ok".into())
    }))
}

fn texts(v: &Value) -> String {
    v.to_string()
}

#[test]
fn slack_buttons_decide_as_the_mapped_approver() {
    let (hport, seen) = slack_receiver();
    let a = api(&slack_config(hport, ""));
    let resp = |n: u32| format!("http://127.0.0.1:{hport}/resp/{n}");

    // The announcement carries the buttons, the review's id in each.
    let id = a.shared.reviews.submit(request(1, 300)).unwrap();
    let msg = nth_post(&seen, "/incoming", 0);
    assert!(msg["text"].as_str().unwrap().contains(&id), "{msg}");
    let actions = msg["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "actions")
        .expect("an actions block");
    let ids: Vec<&str> = actions["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["approve", "approve_grant_30", "deny"]);
    assert!(actions["elements"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["value"] == id.as_str()));
    let shown = texts(&msg["blocks"]);
    assert!(
        shown.contains("&lt;b&gt;&amp;"),
        "statement text escaped for Slack: {shown}"
    );
    assert!(shown.contains("[MASKED]"));

    // Not Slack's: refused, nothing decided.
    let body = click("U0DBA1", "T0TEAM", "approve", &id, &resp(1));
    let ts = now().to_string();
    let good = slack::sign(SIGNING.as_bytes(), &ts, body.as_bytes());
    assert_eq!(post_raw(a.port, &body, None, None), 401, "unsigned");
    assert_eq!(post_raw(a.port, &body, Some(&ts), Some("v0=00")), 401, "bad signature");
    let wrong_key = slack::sign(b"another secret", &ts, body.as_bytes());
    assert_eq!(post_raw(a.port, &body, Some(&ts), Some(&wrong_key)), 401, "another key");
    let old = (now() - 6 * 60).to_string();
    let old_sig = slack::sign(SIGNING.as_bytes(), &old, body.as_bytes());
    assert_eq!(
        post_raw(a.port, &body, Some(&old), Some(&old_sig)),
        401,
        "stale timestamp"
    );
    let other = click("U0DBA1", "T0TEAM", "deny", &id, &resp(1));
    assert_eq!(
        post_raw(a.port, &other, Some(&ts), Some(&good)),
        401,
        "signature of another body"
    );
    let other_team = click("U0DBA1", "T0OTHER", "approve", &id, &resp(1));
    assert_eq!(post_signed(a.port, &other_team), 403, "another workspace");
    assert_eq!(a.shared.reviews.get(&id).unwrap().status, Status::Pending);

    // Unknown users, the requester, a user without the review's role: told
    // so, privately; nothing decided.
    assert_eq!(
        post_signed(a.port, &click("U0NOBODY", "T0TEAM", "approve", &id, &resp(2))),
        200
    );
    let r = nth_post(&seen, "/resp/2", 0);
    assert_eq!(
        (r["response_type"].as_str(), r["replace_original"].as_bool()),
        (Some("ephemeral"), Some(false))
    );
    assert!(r["text"].as_str().unwrap().contains("not a gatehouse approver"), "{r}");
    assert_eq!(
        post_signed(a.port, &click("U0AGENT", "T0TEAM", "approve", &id, &resp(3))),
        200
    );
    assert!(nth_post(&seen, "/resp/3", 0)["text"]
        .as_str()
        .unwrap()
        .contains("You asked for this review"));
    assert_eq!(
        post_signed(a.port, &click("U0OPS", "T0TEAM", "approve", &id, &resp(4))),
        200
    );
    assert!(nth_post(&seen, "/resp/4", 0)["text"]
        .as_str()
        .unwrap()
        .contains("roles: dba"));
    // A grant the configuration does not offer.
    assert_eq!(
        post_signed(a.port, &click("U0DBA1", "T0TEAM", "approve_grant_600", &id, &resp(5))),
        200
    );
    assert!(nth_post(&seen, "/resp/5", 0)["text"]
        .as_str()
        .unwrap()
        .contains("not one gatehouse offers"));
    // An unconfirmed address, a bot with the address: not carol.
    assert_eq!(
        post_signed(a.port, &click("U0MALLORY", "T0TEAM", "approve", &id, &resp(6))),
        200
    );
    assert!(nth_post(&seen, "/resp/6", 0)["text"]
        .as_str()
        .unwrap()
        .contains("not a gatehouse approver"));
    assert_eq!(
        post_signed(a.port, &click("U0BOT", "T0TEAM", "approve", &id, &resp(7))),
        200
    );
    assert!(nth_post(&seen, "/resp/7", 0)["text"]
        .as_str()
        .unwrap()
        .contains("not a gatehouse approver"));
    assert_eq!(a.shared.reviews.get(&id).unwrap().status, Status::Pending);
    assert!(a.shared.reviews.get(&id).unwrap().approvals.is_empty());

    // The approver's click decides, as them; the message says so and
    // loses its buttons.
    assert_eq!(post_raw(a.port, &body, Some(&ts), Some(&good)), 200);
    let r = a.shared.reviews.get(&id).unwrap();
    assert_eq!(
        (r.status.clone(), r.decided_by.as_deref()),
        (Status::Approved, Some("dba1"))
    );
    assert_eq!(r.grant_until, None, "approve once grants nothing");
    let u = nth_post(&seen, "/resp/1", 0);
    assert_eq!(u["replace_original"], true);
    assert!(texts(&u["blocks"]).contains("Approved* by *dba1*"), "{u}");
    assert!(
        !texts(&u["blocks"]).contains("\"actions\""),
        "no buttons once decided: {u}"
    );
    // The same signed request again: a replay.
    assert_eq!(post_raw(a.port, &body, Some(&ts), Some(&good)), 401);
    // A click on a decided review shows where it stands.
    assert_eq!(
        post_signed(a.port, &click("U0DBA2", "T0TEAM", "deny", &id, &resp(8))),
        200
    );
    assert!(texts(&nth_post(&seen, "/resp/8", 0)).contains("Approved* by *dba1*"));
    assert_eq!(a.shared.reviews.get(&id).unwrap().status, Status::Approved);
}

#[test]
fn slack_n_of_m_grants_denials_and_email_mapping() {
    let (hport, seen) = slack_receiver();
    let a = api(&slack_config(hport, ""));
    let resp = |n: u32| format!("http://127.0.0.1:{hport}/resp/{n}");

    // Two approvals needed: the first leaves it pending with its buttons,
    // the same person again is refused, a second person grants.
    let id = a.shared.reviews.submit(request(2, 300)).unwrap();
    assert_eq!(
        post_signed(a.port, &click("U0DBA1", "T0TEAM", "approve", &id, &resp(1))),
        200
    );
    let u = nth_post(&seen, "/resp/1", 0);
    assert!(texts(&u).contains("1 of 2 approvals (dba1)"), "{u}");
    assert!(
        texts(&u["blocks"]).contains("\"actions\""),
        "buttons stay while pending: {u}"
    );
    assert_eq!(
        post_signed(a.port, &click("U0DBA1", "T0TEAM", "approve_grant_30", &id, &resp(2))),
        200
    );
    assert!(nth_post(&seen, "/resp/2", 0)["text"]
        .as_str()
        .unwrap()
        .contains("approved this review already"));
    assert!(!a.shared.reviews.granted("agent", "test", "write"));
    // carol is known by her confirmed address only (users.info with the bot token).
    assert_eq!(
        post_signed(a.port, &click("U0CAROL", "T0TEAM", "approve_grant_30", &id, &resp(3))),
        200
    );
    let r = a.shared.reviews.get(&id).unwrap();
    assert_eq!(
        (r.status.clone(), r.decided_by.as_deref()),
        (Status::Approved, Some("carol"))
    );
    let until = r.grant_until.expect("a grant");
    assert!(until.abs_diff(now() + 30 * 60) < 5, "{until}");
    assert!(a.shared.reviews.granted("agent", "test", "write"));
    assert!(texts(&nth_post(&seen, "/resp/3", 0)).contains("granted until"));
    let asked = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|q| q.path.starts_with("/api/users.info"))
        .count();
    assert!(asked >= 1);

    // A denial, with the reason the client gets.
    let id = a.shared.reviews.submit(request(1, 300)).unwrap();
    assert_eq!(
        post_signed(a.port, &click("U0DBA2", "T0TEAM", "deny", &id, &resp(4))),
        200
    );
    assert_eq!(
        a.shared.reviews.get(&id).unwrap().status,
        Status::Denied {
            reason: "denied in Slack by dba2".into()
        }
    );
    assert!(texts(&nth_post(&seen, "/resp/4", 0)).contains("Denied* by *dba2*"));

    // Malformed bodies, signed: a clear 400, nothing decided.
    let id = a.shared.reviews.submit(request(1, 300)).unwrap();
    assert_eq!(post_signed(a.port, "payload=%7Bnot%20json"), 400);
    assert_eq!(post_signed(a.port, "nothing=here"), 400);
    // A response URL elsewhere is not posted to; the decision still holds.
    let elsewhere = click("U0DBA1", "T0TEAM", "approve", &id, "https://evil.example/collect");
    assert_eq!(post_signed(a.port, &elsewhere), 200);
    assert_eq!(a.shared.reviews.get(&id).unwrap().status, Status::Approved);
    // Other interaction types are acknowledged and ignored.
    let other = form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "payload",
            &json!({"type": "view_closed", "user": {"id": "U0DBA1", "team_id": "T0TEAM"}, "team": {"id": "T0TEAM"}})
                .to_string(),
        )
        .finish();
    assert_eq!(post_signed(a.port, &other), 200);
    drop(a.rt);
}

/// A signed `view_submission` of the deny dialog with `reason`.
fn dialog_submission(user: &str, private_metadata: &str, reason: &str) -> String {
    let payload = json!({
        "type": "view_submission",
        "user": { "id": user, "team_id": "T0TEAM" },
        "team": { "id": "T0TEAM" },
        "view": {
            "id": "V0DIALOG", "callback_id": "gatehouse_deny", "private_metadata": private_metadata,
            "state": { "values": { "reason": { "reason": { "type": "plain_text_input", "value": reason } } } },
        },
    });
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
}

/// POSTs a signed callback; returns the status and body.
fn post_signed_body(port: u16, body: &str) -> (u16, String) {
    let ts = now().to_string();
    let sig = slack::sign(SIGNING.as_bytes(), &ts, body.as_bytes());
    match ureq::post(&format!("http://127.0.0.1:{port}/slack/interactions"))
        .set("X-Slack-Request-Timestamp", &ts)
        .set("X-Slack-Signature", &sig)
        .send_string(body)
    {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn slack_deny_asks_for_the_reason_the_client_gets() {
    let (hport, seen) = slack_receiver();
    let cfg = slack_config(hport, "").replace("grant_minutes = [30]", "grant_minutes = [30]\nask_deny_reason = true");
    let a = api(&cfg);
    let resp = |n: u32| format!("http://127.0.0.1:{hport}/resp/{n}");
    let id = a.shared.reviews.submit(request(1, 300)).unwrap();

    // The requester's Deny opens nothing; it is told why.
    assert_eq!(
        post_signed(a.port, &click("U0AGENT", "T0TEAM", "deny", &id, &resp(1))),
        200
    );
    assert!(nth_post(&seen, "/resp/1", 0)["text"]
        .as_str()
        .unwrap()
        .contains("You asked"));
    // An approver's Deny opens the dialog (with the bot token); nothing is
    // decided yet.
    assert_eq!(
        post_signed(a.port, &click("U0DBA2", "T0TEAM", "deny", &id, &resp(2))),
        200
    );
    let open = nth_post(&seen, "/api/views.open", 0);
    assert_eq!(open["trigger_id"], "1.2.3");
    assert_eq!(open["view"]["callback_id"], "gatehouse_deny");
    let meta = open["view"]["private_metadata"].as_str().unwrap().to_string();
    assert!(meta.contains(&id) && meta.contains("/resp/2"), "{meta}");
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .filter(|q| q.path == "/api/views.open")
            .count(),
        1
    );
    assert_eq!(a.shared.reviews.get(&id).unwrap().status, Status::Pending);

    // Submitted by someone who is no approver: the dialog shows why.
    let (st, body) = post_signed_body(a.port, &dialog_submission("U0NOBODY", &meta, "because"));
    assert_eq!(st, 200);
    assert!(
        body.contains("response_action") && body.contains("not a gatehouse approver"),
        "{body}"
    );
    // An empty reason: asked again.
    let (_, body) = post_signed_body(a.port, &dialog_submission("U0DBA2", &meta, "  "));
    assert!(body.contains("Give the reason"), "{body}");
    assert_eq!(a.shared.reviews.get(&id).unwrap().status, Status::Pending);

    // Submitted by the approver: denied with their reason, the message rewritten.
    let (st, body) = post_signed_body(a.port, &dialog_submission("U0DBA2", &meta, "not on a friday"));
    assert_eq!((st, body.as_str()), (200, ""));
    let r = a.shared.reviews.get(&id).unwrap();
    assert_eq!(
        (r.status, r.decided_by.as_deref()),
        (
            Status::Denied {
                reason: "not on a friday".into()
            },
            Some("dba2")
        )
    );
    assert!(texts(&nth_post(&seen, "/resp/2", 0)).contains("not on a friday"));
    // Again: decided already.
    let (_, body) = post_signed_body(a.port, &dialog_submission("U0DBA2", &meta, "twice"));
    assert!(body.contains("decided already"), "{body}");

    // One who approved a 2-of-M review may still deny it through the dialog.
    let id = a.shared.reviews.submit(request(2, 300)).unwrap();
    assert_eq!(
        post_signed(a.port, &click("U0DBA1", "T0TEAM", "approve", &id, &resp(3))),
        200
    );
    assert_eq!(
        post_signed(a.port, &click("U0DBA1", "T0TEAM", "deny", &id, &resp(4))),
        200
    );
    let open = nth_post(&seen, "/api/views.open", 1);
    let meta = open["view"]["private_metadata"].as_str().unwrap().to_string();
    let (st, _) = post_signed_body(a.port, &dialog_submission("U0DBA1", &meta, &"ü".repeat(900)));
    assert_eq!(st, 200);
    match a.shared.reviews.get(&id).unwrap().status {
        Status::Denied { reason } => assert!(reason.len() <= 1000 && reason.starts_with('ü'), "{}", reason.len()),
        s => panic!("{s:?}"),
    }
}

#[test]
fn slack_callbacks_are_refused_without_slack_configured() {
    let a = api("");
    let body = click("U0DBA1", "T0TEAM", "approve", "r-1", "http://127.0.0.1:9/x");
    assert_eq!(post_signed(a.port, &body), 404);
}

#[test]
fn slack_configuration_is_checked() {
    std::env::set_var(SIGNING_ENV, SIGNING);
    std::env::remove_var("GH_SLACK_TEST_UNSET");
    let base = |extra: &str| format!("[notify.slack]\nsigning_secret_env = \"{SIGNING_ENV}\"\n{extra}\n");
    let approver = "[[notify.slack.approver]]\nuser_id = \"U0DBA1\"\nname = \"dba1\"\nroles = [\"dba\"]\n";
    let bad = [
        (
            "[notify.slack]\nsigning_secret_env = \"GH_SLACK_TEST_UNSET\"\n".to_string() + approver,
            "is not set",
        ),
        (base(""), "at least one"),
        (base(&format!("grant_minutes = [0]\n{approver}")), "a grant is 1 to"),
        (
            base(&format!("grant_minutes = [100000]\n{approver}")),
            "a grant is 1 to",
        ),
        (
            base("[[notify.slack.approver]]\nuser_id = \"dba1\"\nname = \"dba1\"\nroles = [\"dba\"]\n"),
            "member ID",
        ),
        (
            base("[[notify.slack.approver]]\nuser_id = \"U0DBA1\"\nname = \"dba1\"\nroles = [\"superuser\"]\n"),
            "not admin, approver",
        ),
        (
            base("[[notify.slack.approver]]\nemail = \"c@example.com\"\nname = \"c\"\nroles = [\"dba\"]\n"),
            "bot_token_env",
        ),
        (
            base("[[notify.slack.approver]]\nname = \"c\"\nroles = [\"dba\"]\n"),
            "one of user_id, email",
        ),
        (base(&format!("{approver}{approver}")), "named twice"),
        (
            base(&format!("api_url = \"http://slack.example/api\"\n{approver}")),
            "https://",
        ),
    ];
    for (extra, want) in bad {
        let text = config_text(free_port(), "", &format!("{POLICY}\n[notify]\n{extra}"));
        let err = gatehouse::config::Config::parse(&text, "t.toml", std::path::Path::new("."))
            .err()
            .unwrap_or_else(|| panic!("accepted: {extra}"))
            .to_string();
        assert!(err.contains(want), "{want:?} not in {err} for {extra}");
    }
    let ok = config_text(free_port(), "", &format!("{POLICY}\n[notify]\n{}", base(approver)));
    gatehouse::config::Config::parse(&ok, "t.toml", std::path::Path::new(".")).expect("a good [notify.slack]");

    // Mail approvers: one person, one name; links only to an admin URL
    // that is TLS (or this machine) and served.
    std::env::set_var(BOT_ENV, BOT);
    let mail = |admin: &str, approvers: &str| {
        format!(
            "{POLICY}\n{admin}\n[notify.smtp]\nserver = \"127.0.0.1:25\"\nfrom = \"g@example.com\"\nto = []\nstarttls = false\n{approvers}"
        )
    };
    let listen = "[admin]\nlisten = \"127.0.0.1:9999\"\n[notify]\nadmin_url = \"https://gh.example\"\n";
    let a1 = "[[notify.smtp.approver]]\nemail = \"dba1@example.com\"\nname = \"dba1\"\nroles = [\"dba\"]\n";
    let a1_again = "[[notify.smtp.approver]]\nemail = \"DBA1@example.com\"\nname = \"dba1-again\"\nroles = [\"dba\"]\n";
    let a1_other = "[[notify.smtp.approver]]\nemail = \"other@example.com\"\nname = \"DBA1\"\nroles = [\"dba\"]\n";
    let bad = [
        (mail(listen, &format!("{a1}{a1_again}")), "belongs to approver `dba1`"),
        (mail(listen, &format!("{a1}{a1_other}")), "named twice"),
        (mail("", a1), "[admin] listen"),
        (mail("[admin]\nlisten = \"127.0.0.1:9999\"\n", a1), "admin_url"),
        (
            mail(
                "[admin]\nlisten = \"127.0.0.1:9999\"\n[notify]\nadmin_url = \"http://gh.example\"\n",
                a1,
            ),
            "https://",
        ),
        (
            mail(
                &format!(
                    "{listen}[notify.slack]\nsigning_secret_env = \"{SIGNING_ENV}\"\nbot_token_env = \"{BOT_ENV}\"\n\
                     [[notify.slack.approver]]\nemail = \"dba1@example.com\"\nname = \"alice\"\nroles = [\"dba\"]\n"
                ),
                a1,
            ),
            "belongs to approver `alice`",
        ),
    ];
    for (text, want) in bad {
        let text = config_text(free_port(), "", &text);
        let err = gatehouse::config::Config::parse(&text, "t.toml", std::path::Path::new("."))
            .err()
            .unwrap_or_else(|| panic!("accepted: {text}"))
            .to_string();
        assert!(err.contains(want), "{want:?} not in {err}");
    }
    let ok = config_text(free_port(), "", &mail(listen, a1));
    gatehouse::config::Config::parse(&ok, "t.toml", std::path::Path::new(".")).expect("good mail approvers");
}

// ---- mail links ------------------------------------------------------------

/// (The admin listener and URL here only satisfy the configuration: the
/// test serves the router itself and gives the notifier its real URL.)
fn mail_config(mport: u16, approvers: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:1"

[notify]
admin_url = "http://127.0.0.1:1"

[notify.smtp]
server = "127.0.0.1:{mport}"
from = "gatehouse@example.com"
to = ["list@example.com"]
starttls = false
{approvers}"#
    )
}

const MAIL_APPROVERS: &str = r#"
[[notify.smtp.approver]]
email = "dba1@example.com"
name = "dba1"
roles = ["dba"]

[[notify.smtp.approver]]
email = "dba2@example.com"
name = "dba2"
roles = ["dba"]

[[notify.smtp.approver]]
email = "agent@example.com"
name = "agent"
roles = ["dba"]

[[notify.smtp.approver]]
email = "ops@example.com"
name = "ops"
roles = ["approver"]
"#;

/// The mails to `mailbox` that name `review`.
fn mails_to(mails: &Mails, mailbox: &str, review: &str) -> Vec<String> {
    mails
        .lock()
        .unwrap()
        .iter()
        .filter(|(env, data)| env.iter().any(|e| e == &format!("RCPT TO:<{mailbox}>")) && data.contains(review))
        .map(|(_, d)| d.clone())
        .collect()
}

/// The approve and deny links in a mail, as paths.
fn links_in(mail: &str, port: u16) -> (String, String) {
    let prefix = format!("http://127.0.0.1:{port}/review-links/");
    let found: Vec<String> = mail
        .lines()
        .filter_map(|l| l.trim().strip_prefix(&prefix))
        .map(|t| format!("/review-links/{t}"))
        .collect();
    assert_eq!(found.len(), 2, "two links in {mail}");
    (found[0].clone(), found[1].clone())
}

fn get(port: u16, path: &str) -> (u16, String, Option<String>) {
    match ureq::get(&format!("http://127.0.0.1:{port}{path}")).call() {
        Ok(r) => {
            let csp = r.header("content-security-policy").map(str::to_string);
            (r.status(), r.into_string().unwrap(), csp)
        }
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default(), None),
        Err(e) => panic!("{e}"),
    }
}

fn post_form(port: u16, path: &str, body: &str) -> (u16, String) {
    match ureq::post(&format!("http://127.0.0.1:{port}{path}"))
        .set("Content-Type", "application/x-www-form-urlencoded")
        .send_string(body)
    {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn mail_links_decide_once_as_their_approver() {
    let (mport, mails) = smtp_sink();
    let a = api(&mail_config(mport, MAIL_APPROVERS));
    let id = a.shared.reviews.submit(request(1, 300)).unwrap();

    // The list gets the mail without links; each approver who may decide
    // gets their own; the requester and an approver without the review's
    // role get none.
    wait_for("the mails", || mails_to(&mails, "dba2@example.com", &id).len() == 1);
    wait_for("the mails", || mails_to(&mails, "dba1@example.com", &id).len() == 1);
    wait_for("the list's mail", || {
        mails_to(&mails, "list@example.com", &id).len() == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!mails_to(&mails, "list@example.com", &id)[0].contains("/review-links/"));
    assert!(
        mails_to(&mails, "agent@example.com", &id).is_empty(),
        "not to the requester"
    );
    assert!(
        mails_to(&mails, "ops@example.com", &id).is_empty(),
        "not to one who cannot decide"
    );
    let mail = &mails_to(&mails, "dba1@example.com", &id)[0];
    assert!(mail.contains("To: dba1@example.com\r\n"), "{mail}");
    assert!(mail.contains("act as you (dba1)"), "{mail}");
    let (approve, deny) = links_in(mail, a.port);

    // Opening the link decides nothing; the page is locked down.
    let (status, html, csp) = get(a.port, &approve);
    assert_eq!(status, 200);
    assert!(
        html.contains("<form method=\"post\">") && html.contains("Approve as dba1"),
        "{html}"
    );
    assert!(html.contains("&lt;b&gt;&amp;"), "escaped: {html}");
    assert!(!html.contains("<b>&"), "{html}");
    let csp = csp.expect("a CSP");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(a.shared.reviews.get(&id).unwrap().status, Status::Pending);

    // A forged or altered token does nothing.
    let mut forged = approve.clone();
    forged.pop();
    forged.push(if approve.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(post_form(a.port, &forged, "").0, 404);
    assert_eq!(post_form(a.port, "/review-links/nonsense", "").0, 404);
    assert_eq!(a.shared.reviews.get(&id).unwrap().status, Status::Pending);

    // The button approves as dba1, once; the mail's other link is spent too.
    let (status, html) = post_form(a.port, &approve, "");
    assert_eq!(status, 200, "{html}");
    let r = a.shared.reviews.get(&id).unwrap();
    assert_eq!(
        (r.status.clone(), r.decided_by.as_deref()),
        (Status::Approved, Some("dba1"))
    );
    assert_eq!(post_form(a.port, &approve, "").0, 410);
    assert_eq!(post_form(a.port, &deny, "reason=x").0, 410);
    assert_eq!(get(a.port, &deny).0, 410);
    // dba2's links, on a decided review: nothing to do.
    let (_, deny2) = links_in(&mails_to(&mails, "dba2@example.com", &id)[0], a.port);
    let (status, html) = post_form(a.port, &deny2, "reason=late");
    assert_eq!(status, 409, "{html}");
    assert_eq!(a.shared.reviews.get(&id).unwrap().status, Status::Approved);

    // A denial with a reason.
    let id = a.shared.reviews.submit(request(1, 300)).unwrap();
    wait_for("dba2's mail", || mails_to(&mails, "dba2@example.com", &id).len() == 1);
    let (_, deny) = links_in(&mails_to(&mails, "dba2@example.com", &id)[0], a.port);
    let (status, html, _) = get(a.port, &deny);
    assert!(status == 200 && html.contains("<textarea"), "{html}");
    let (status, html) = post_form(a.port, &deny, "reason=not+on+a+friday");
    assert_eq!(status, 200, "{html}");
    assert_eq!(
        a.shared.reviews.get(&id).unwrap().status,
        Status::Denied {
            reason: "not on a friday".into()
        }
    );
}

#[test]
fn mail_links_expire_with_the_review_and_are_revoked_with_the_approver() {
    let (mport, mails) = smtp_sink();
    let a = api(&mail_config(mport, MAIL_APPROVERS));

    // A link works no longer than the review waits.
    let id = a.shared.reviews.submit(request(1, 1)).unwrap();
    wait_for("dba1's mail", || mails_to(&mails, "dba1@example.com", &id).len() == 1);
    let (approve, _) = links_in(&mails_to(&mails, "dba1@example.com", &id)[0], a.port);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(post_form(a.port, &approve, "").0, 410);
    assert_eq!(a.shared.reviews.get(&id).unwrap().status, Status::Pending);

    // An approver removed from the configuration: their links are dead.
    let id = a.shared.reviews.submit(request(1, 300)).unwrap();
    wait_for("dba1's mail", || mails_to(&mails, "dba1@example.com", &id).len() == 1);
    let (approve, _) = links_in(&mails_to(&mails, "dba1@example.com", &id)[0], a.port);
    let without = MAIL_APPROVERS.replacen(
        "[[notify.smtp.approver]]\nemail = \"dba1@example.com\"\nname = \"dba1\"\nroles = [\"dba\"]\n",
        "",
        1,
    );
    let state = gatehouse::core::State::build(parse(&mail_config(mport, &without))).expect("state");
    a.shared.state.store(Arc::new(state));
    assert_eq!(post_form(a.port, &approve, "").0, 403);
    assert_eq!(a.shared.reviews.get(&id).unwrap().status, Status::Pending);
}

// ---- end to end ------------------------------------------------------------

fn held_psql(g: &Gatehouse, sql: &str) -> std::process::Child {
    let mut c = std::process::Command::new("psql");
    g.pg_env(&mut c, "postgres");
    c.args(["-X", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql")
}

/// The review id in the `n`th announcement.
fn announced_id(seen: &Arc<Mutex<Vec<HttpReq>>>, n: usize) -> String {
    let msg = nth_post(seen, "/incoming", n);
    let actions = msg["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "actions")
        .cloned()
        .expect("buttons");
    actions["elements"][0]["value"].as_str().unwrap().to_string()
}

#[test]
fn a_held_write_is_approved_and_another_denied_from_slack() {
    std::env::set_var(SIGNING_ENV, SIGNING);
    std::env::set_var(BOT_ENV, BOT);
    let (hport, seen) = slack_receiver();
    let admin_port = free_port();
    let extra = format!(
        "{admin}\n[recording]\ndir = \"rec\"\n\n{POLICY}\n{slack}",
        admin = admin_section(admin_port),
        slack = slack_config(hport, "")
    );
    let g = Gatehouse::start("", &extra);
    let t = format!("gh_slack_e2e_{}", std::process::id());
    direct_psql(&format!("drop table if exists {t}; create table {t} (id int)"));
    let resp = |n: u32| format!("http://127.0.0.1:{hport}/resp/{n}");

    // Held; someone who is no approver clicks; then dba1 approves.
    let held = held_psql(&g, &format!("insert into {t} values (1)"));
    let id = announced_id(&seen, 0);
    assert_eq!(
        direct_psql(&format!("select count(*) from {t}")),
        "0",
        "held means not run"
    );
    assert_eq!(
        post_signed(admin_port, &click("U0NOBODY", "T0TEAM", "approve", &id, &resp(1))),
        200
    );
    nth_post(&seen, "/resp/1", 0);
    assert_eq!(
        post_signed(admin_port, &click("U0DBA1", "T0TEAM", "approve", &id, &resp(2))),
        200
    );
    let out = held.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(direct_psql(&format!("select count(*) from {t}")), "1");
    assert!(texts(&nth_post(&seen, "/resp/2", 0)).contains("Approved* by *dba1*"));

    // Denied from Slack: the client gets the reason, nothing runs.
    let held = held_psql(&g, &format!("delete from {t}"));
    let id2 = announced_id(&seen, 1);
    assert_eq!(
        post_signed(admin_port, &click("U0DBA2", "T0TEAM", "deny", &id2, &resp(3))),
        200
    );
    let out = held.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("denied in Slack by dba2"), "{err}");
    assert_eq!(direct_psql(&format!("select count(*) from {t}")), "1");

    // The audit log names who decided, through which channel, and the refusal.
    let mut audit = String::new();
    wait_for("the audit records", || {
        audit = http(admin_port, "GET", "/api/v1/audit", ADMIN, "").1;
        audit.contains(&id2)
    });
    assert!(audit.contains("via slack user U0DBA1"), "{audit}");
    assert!(audit.contains("via slack user U0DBA2"), "{audit}");
    assert!(
        audit.contains("this Slack user is not a configured approver"),
        "{audit}"
    );
    assert!(audit.contains("slack user U0NOBODY"), "{audit}");
    let log = g.log();
    assert!(!log.contains(SIGNING) && !log.contains(BOT), "no secret in the log");
    direct_psql(&format!("drop table {t}"));
}

//! Reviews over the admin API, the notifiers, and `gatehouse review`.
//!
//! No statement is held on the data path yet, so reviews are submitted
//! straight into a `Reviews` store: the admin router is served in-process
//! over a `Shared` the test builds; the notifiers run on a runtime of the
//! test's against a webhook receiver and an SMTP sink it starts; the CLI
//! runs against both that server and a real gateway's admin port.
mod common;
use common::sinks::*;
use common::*;
use gatehouse::control::admin::{self, AppState};
use gatehouse::control::notify;
use gatehouse::policy::reviews::{ReviewRequest, Reviews};
use serde_json::{json, Value};

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-tok-1111";
const AUDITOR: &str = "auditor-tok-2222";
const APPROVER: &str = "approver-tok-3333";
const DBA1: &str = "dba1-tok-4444";
const DBA2: &str = "dba2-tok-5555";
/// A token named like the identity that asks for reviews.
const SELF: &str = "agent-admin-tok-6666";
const SECRET_ENV: &str = "GH_REVIEWS_TEST_SECRET";
const SECRET: &str = "webhook-signing-key";

fn admin_tokens() -> String {
    let mut s = String::new();
    for (name, tok, roles) in [
        ("ops", ADMIN, "\"admin\""),
        ("audit", AUDITOR, "\"auditor\""),
        ("review", APPROVER, "\"approver\""),
        ("dba1", DBA1, "\"approver\", \"dba\""),
        ("dba2", DBA2, "\"approver\", \"dba\""),
        ("agent", SELF, "\"approver\", \"dba\""),
    ] {
        s += &format!(
            "[[admin.token]]\nname = \"{name}\"\ntoken_hash = \"{}\"\nroles = [{roles}]\n\n",
            token_hash(tok)
        );
    }
    s
}

/// Identities without roles are `agent`s, whose writes wait for a `dba`.
const POLICY: &str = "[policy]\ndefault_role = \"agent\"\n[policy.roles.agent]\napprovers = [\"dba\"]\n";

fn request(class: &str, required: u32) -> ReviewRequest {
    ReviewRequest {
        identity: "agent".into(),
        roles: vec!["agent".into()],
        target: "test".into(),
        session: 7,
        sql: format!("{class} statement for t where secret = '[MASKED]'"),
        params: vec![],
        class: class.into(),
        flags: vec![],
        fingerprint: "fp".into(),
        approvers: vec!["dba".into()],
        required,
        timeout_secs: 300,
        reason: None,
        grants: vec![class.into()],
    }
}

struct NoOps;
impl gatehouse::control::Ops for NoOps {
    fn reload(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The admin router over a `Shared` of the test's, on its own runtime.
struct Api {
    shared: Arc<gatehouse::core::Shared>,
    port: u16,
    _rt: tokio::runtime::Runtime,
}

fn api() -> Api {
    let text = config_text(
        free_port(),
        "",
        &format!("[scan]\nenabled = false\n\n[admin]\n{}{POLICY}", admin_tokens()),
    );
    let cfg = gatehouse::config::Config::parse(&text, "test.toml", std::path::Path::new(".")).expect("config");
    let state = gatehouse::core::State::build(cfg).expect("state");
    let shared = gatehouse::core::Shared::new(state, 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = AppState::new(shared.clone(), Arc::new(AtomicBool::new(true)), Arc::new(NoOps), None);
    let limits = admin::Limits {
        connections: 64,
        header_timeout: Duration::from_secs(10),
    };
    rt.spawn(admin::serve(listener, None, limits, app));
    Api { shared, port, _rt: rt }
}

/// One request; returns the status and the JSON body (Null when none).
fn call(port: u16, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let mut req = ureq::request(method, &format!("http://127.0.0.1:{port}{path}"));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let (status, resp) = match res {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(c, r)) => (c, r),
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let text = resp.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn approve(port: u16, id: &str, token: &str, body: &str) -> (u16, Value) {
    call(
        port,
        "POST",
        &format!("/api/v1/reviews/{id}/approve"),
        Some(token),
        Some(body),
    )
}

fn deny(port: u16, id: &str, token: &str, body: &str) -> (u16, Value) {
    call(
        port,
        "POST",
        &format!("/api/v1/reviews/{id}/deny"),
        Some(token),
        Some(body),
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn list_get_approve_deny() {
    let a = api();
    let (p, reviews) = (a.port, &a.shared.reviews);
    assert_eq!(
        call(p, "GET", "/api/v1/reviews", Some(AUDITOR), None),
        (200, json!({ "reviews": [] }))
    );

    let r1 = reviews.submit(request("write", 1)).unwrap();
    let (st, v) = call(p, "GET", "/api/v1/reviews", Some(AUDITOR), None);
    assert_eq!(st, 200);
    assert_eq!(v["reviews"][0]["id"], r1.as_str());
    assert_eq!(v["reviews"][0]["status"]["state"], "pending");
    assert_eq!(v["reviews"][0]["identity"], "agent");
    let count = |q: &str| {
        call(p, "GET", &format!("/api/v1/reviews?state={q}"), Some(APPROVER), None).1["reviews"]
            .as_array()
            .map(Vec::len)
    };
    assert_eq!((count("pending"), count("approved")), (Some(1), Some(0)));
    let (st, v) = call(p, "GET", "/api/v1/reviews?state=bogus", Some(ADMIN), None);
    assert_eq!(st, 400, "{v}");

    let (st, v) = call(p, "GET", &format!("/api/v1/reviews/{r1}"), Some(AUDITOR), None);
    assert_eq!((st, v["id"].as_str()), (200, Some(r1.as_str())));
    assert_eq!(v["sql"], "write statement for t where secret = '[MASKED]'");
    let (st, v) = call(p, "GET", "/api/v1/reviews/r-nope", Some(AUDITOR), None);
    assert_eq!((st, v["error"].as_str()), (404, Some("no review has this id")));

    // Refusals: self-approval, a token without the review's approver role,
    // the route's roles, no token.
    let (st, v) = approve(p, &r1, SELF, "{}");
    assert_eq!(st, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("their own review"), "{v}");
    let (st, v) = approve(p, &r1, APPROVER, "{}");
    assert_eq!(st, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("roles: dba"), "{v}");
    assert_eq!(approve(p, &r1, AUDITOR, "{}").0, 403);
    assert_eq!(
        call(p, "POST", &format!("/api/v1/reviews/{r1}/approve"), None, Some("{}")).0,
        401
    );
    assert_eq!(reviews.get(&r1).unwrap().approvals.len(), 0);

    // Malformed decisions.
    for body in [
        "not json",
        "{\"grant_minutes\": -1}",
        "{\"grant_minutes\": 100000}",
        "{\"extra\": 1}",
    ] {
        let (st, v) = approve(p, &r1, DBA1, body);
        assert_eq!(st, 400, "{body}: {v}");
    }

    // Approval with a grant: the class, to the identity, on the target.
    assert!(!reviews.granted("agent", "test", "write"));
    let (st, v) = approve(p, &r1, DBA1, "{\"reason\": \"ticket 42\", \"grant_minutes\": 30}");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"]["state"], "approved");
    assert_eq!(v["decided_by"], "dba1");
    let until = v["grant_until"].as_u64().unwrap();
    assert!(until.abs_diff(now() + 30 * 60) <= 5, "{v}");
    assert!(reviews.granted("agent", "test", "write"));
    assert!(!reviews.granted("agent", "test", "delete"));
    assert!(!reviews.granted("agent", "postgres", "write"));
    // Decided: a second approval conflicts.
    let (st, v) = approve(p, &r1, DBA2, "{}");
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no longer pending"), "{v}");

    // Once, by an admin, with no body at all: no grant.
    let r2 = reviews.submit(request("delete", 1)).unwrap();
    let (st, v) = call(p, "POST", &format!("/api/v1/reviews/{r2}/approve"), Some(ADMIN), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["status"]["state"].as_str(), &v["grant_until"]),
        (Some("approved"), &Value::Null)
    );
    assert!(!reviews.granted("agent", "test", "delete"));

    // N of M: two different approvers.
    let r3 = reviews.submit(request("ddl", 2)).unwrap();
    let (st, v) = approve(p, &r3, DBA1, "{}");
    assert_eq!((st, v["status"]["state"].as_str()), (200, Some("pending")), "{v}");
    assert_eq!(v["approvals"][0]["by"], "dba1");
    let (st, v) = approve(p, &r3, DBA1, "{}");
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("approved already"), "{v}");
    let (st, v) = approve(p, &r3, DBA2, "{\"grant_minutes\": 0}");
    assert_eq!((st, v["status"]["state"].as_str()), (200, Some("approved")), "{v}");
    assert_eq!(v["approvals"].as_array().unwrap().len(), 2);

    // Deny.
    let r4 = reviews.submit(request("write", 1)).unwrap();
    assert_eq!(deny(p, &r4, DBA1, "{\"grant_minutes\": 5}").0, 400);
    assert_eq!(deny(p, &r4, SELF, "{\"reason\": \"x\"}").0, 403);
    assert_eq!(deny(p, &r4, APPROVER, "{\"reason\": \"x\"}").0, 403);
    let (st, v) = deny(p, &r4, DBA2, "{\"reason\": \"not on a Friday\"}");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], json!({ "state": "denied", "reason": "not on a Friday" }));
    assert_eq!(approve(p, &r4, DBA1, "{}").0, 409);
    assert_eq!(deny(p, &r4, DBA1, "{}").0, 409);

    assert_eq!(approve(p, "r-nope", DBA1, "{}").0, 404);
    assert_eq!(deny(p, "r-nope", DBA1, "{}").0, 404);
    assert_eq!(
        (count("pending"), count("approved"), count("denied")),
        (Some(0), Some(3), Some(1))
    );
    // Open first, then finished newest first.
    let (_, v) = call(p, "GET", "/api/v1/reviews", Some(ADMIN), None);
    let ids: Vec<&str> = v["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [r4.as_str(), &r3, &r2, &r1]);
}

#[test]
fn role_matrix_of_review_routes() {
    let a = api();
    let p = a.port;
    // (method, path, admin, auditor, approver): an unknown id is 404 once
    // the roles let the caller that far.
    let cases: &[(&str, &str, u16, u16, u16)] = &[
        ("GET", "/api/v1/reviews", 200, 200, 200),
        ("GET", "/api/v1/reviews/r-x", 404, 404, 404),
        ("POST", "/api/v1/reviews/r-x/approve", 404, 403, 404),
        ("POST", "/api/v1/reviews/r-x/deny", 404, 403, 404),
    ];
    for &(m, path, ad, au, ap) in cases {
        assert_eq!(call(p, m, path, None, None).0, 401, "{m} {path}");
        assert_eq!(call(p, m, path, Some("nope"), None).0, 401, "{m} {path}");
        assert_eq!(call(p, m, path, Some(ADMIN), None).0, ad, "{m} {path} as admin");
        assert_eq!(call(p, m, path, Some(AUDITOR), None).0, au, "{m} {path} as auditor");
        assert_eq!(call(p, m, path, Some(APPROVER), None).0, ap, "{m} {path} as approver");
    }
    // The document says the same.
    let (_, doc) = call(p, "GET", "/openapi.json", None, None);
    let roles = |path: &str, m: &str| doc["paths"][path][m]["x-roles"].clone();
    assert_eq!(roles("/api/v1/reviews", "get"), json!(["admin", "approver", "auditor"]));
    assert_eq!(
        roles("/api/v1/reviews/{id}/approve", "post"),
        json!(["admin", "approver"])
    );
    assert_eq!(roles("/api/v1/reviews/{id}/deny", "post"), json!(["admin", "approver"]));
    let approve_doc = &doc["paths"]["/api/v1/reviews/{id}/approve"]["post"];
    let schema = &approve_doc["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(schema["properties"]["grant_minutes"]["type"], "integer");
    assert!(approve_doc["responses"]["409"].is_object());
    assert!(
        doc["paths"]["/api/v1/reviews/{id}/deny"]["post"]["requestBody"]["content"]["application/json"]["schema"]
            ["properties"]["grant_minutes"]
            .is_null()
    );
    assert_eq!(doc["paths"]["/api/v1/reviews"]["get"]["parameters"][0]["name"], "state");
}

// ---- receivers ------------------------------------------------------------

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn notifiers_send_slack_signed_json_and_mail() {
    std::env::set_var(SECRET_ENV, SECRET);
    let (hport, requests) = http_receiver();
    let (mport, mails) = smtp_sink();
    let toml = format!(
        r#"
[[target]]
name = "test"
database = "test"
host = "127.0.0.1"
user = "postgres"

[notify]
admin_url = "https://gatehouse.example:9090/"

[[notify.webhook]]
kind = "slack"
url = "http://127.0.0.1:{hport}/slack"

[[notify.webhook]]
kind = "json"
url = "http://127.0.0.1:{hport}/json"
secret_env = "{SECRET_ENV}"

[[notify.webhook]]
kind = "slack"
url = "http://127.0.0.1:{hport}/flaky"

[[notify.webhook]]
kind = "slack"
url = "http://127.0.0.1:{hport}/gone"

[notify.smtp]
server = "127.0.0.1:{mport}"
from = "gatehouse@example.com"
to = ["dba@example.com", "oncall@example.com"]
starttls = false
"#
    );
    let cfg = gatehouse::config::Config::parse(&toml, "n.toml", std::path::Path::new(".")).expect("config");
    let settings = notify::Settings::from_config(&cfg);
    assert_eq!(settings.admin_url, "https://gatehouse.example:9090");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let reviews = Arc::new(Reviews::default());
    let stats = notify::start(
        rt.handle(),
        &reviews,
        Arc::new(move || settings.clone()),
        Default::default(),
    );
    let id = reviews.submit(request("write", 1)).unwrap();

    // slack, json, flaky twice (500 then 200), gone once (404 is final).
    wait_for("the webhooks", || requests.lock().unwrap().len() >= 5);
    wait_for("the mail", || !mails.lock().unwrap().is_empty());
    wait_for("the counts", || {
        stats.delivered.load(Ordering::Relaxed) == 4 && stats.failed.load(Ordering::Relaxed) == 1
    });
    std::thread::sleep(Duration::from_millis(200));
    let reqs = requests.lock().unwrap().clone();
    let on = |p: &str| reqs.iter().filter(|r| r.path == p).cloned().collect::<Vec<_>>();
    assert_eq!(
        (
            on("/slack").len(),
            on("/json").len(),
            on("/flaky").len(),
            on("/gone").len()
        ),
        (1, 1, 2, 1)
    );
    assert_eq!(stats.queued.load(Ordering::Relaxed), 1);
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);

    // Slack: {"text": ...} with who, where, what and how to approve.
    let slack: Value = serde_json::from_slice(&on("/slack")[0].body).unwrap();
    assert_eq!(slack.as_object().unwrap().len(), 1, "{slack}");
    let text = slack["text"].as_str().unwrap();
    for want in [
        id.as_str(),
        "agent",
        "test",
        "write",
        "write statement for t where secret = '[MASKED]'",
        &format!("POST https://gatehouse.example:9090/api/v1/reviews/{id}/approve"),
        &format!("gatehouse review approve {id}"),
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
    assert_eq!(on("/slack")[0].headers["content-type"], "application/json");

    // JSON: the review as the API shows it, signed.
    let j = &on("/json")[0];
    let sig = &j.headers["x-gatehouse-signature"];
    let ts = &j.headers["x-gatehouse-timestamp"];
    assert!(notify::verify(SECRET.as_bytes(), &j.body, sig), "{sig}");
    {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(&j.body);
        assert_eq!(*sig, format!("sha256={}", hex::encode(mac.finalize().into_bytes())));
    }
    assert!(!notify::verify(b"wrong key", &j.body, sig));
    let body: Value = serde_json::from_slice(&j.body).unwrap();
    assert_eq!(body["event"], "review.opened");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["status"]["state"], "pending");
    assert_eq!(body["sent_at"].to_string(), *ts);
    assert!(ts.parse::<u64>().unwrap().abs_diff(now()) < 60);
    let api_view = serde_json::to_value(reviews.get(&id).unwrap()).unwrap();
    for (k, v) in api_view.as_object().unwrap() {
        assert_eq!(&body[k], v, "{k}");
    }
    assert_eq!(j.headers["x-gatehouse-event"], "review.opened");
    assert!(!on("/slack")[0].headers.contains_key("x-gatehouse-signature"));

    // Mail: the envelope and a message that names the review.
    let (envelope, data) = mails.lock().unwrap()[0].clone();
    assert_eq!(
        envelope,
        [
            "MAIL FROM:<gatehouse@example.com>",
            "RCPT TO:<dba@example.com>",
            "RCPT TO:<oncall@example.com>"
        ],
        "{envelope:?}"
    );
    assert!(
        data.contains(&format!("Subject: gatehouse: review {id} awaits approval")),
        "{data}"
    );
    assert!(data.contains(&format!("gatehouse review approve {id}")), "{data}");
    assert!(data.contains("From: gatehouse@example.com\r\n"), "{data}");
    assert!(data.contains("'[MASKED]'"), "{data}");
}

#[test]
fn notifier_settings_follow_the_config_at_each_review() {
    let (hport, requests) = http_receiver();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reviews = Reviews::default();
    let on = Arc::new(AtomicBool::new(false));
    let flag = on.clone();
    notify::start(
        rt.handle(),
        &reviews,
        Arc::new(move || {
            let mut s = notify::Settings::default();
            if flag.load(Ordering::Relaxed) {
                s.notify.webhooks.push(gatehouse::config::Webhook {
                    kind: gatehouse::config::WebhookKind::Slack,
                    url: Some(format!("http://127.0.0.1:{hport}/slack")),
                    url_env: None,
                    secret_env: None,
                });
            }
            s
        }),
        Default::default(),
    );
    let first = reviews.submit(request("write", 1)).unwrap();
    // Let the task take the first review while nothing is configured.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
    on.store(true, Ordering::Relaxed);
    let second = reviews.submit(request("write", 1)).unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while requests.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no webhook");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let reqs = requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1);
    let text = serde_json::from_slice::<Value>(&reqs[0].body).unwrap()["text"].to_string();
    assert!(text.contains(&second) && !text.contains(&first), "{text}");
}

// ---- the CLI --------------------------------------------------------------

fn cli(port: u16, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.arg("review")
        .args(args)
        .env_remove("GATEHOUSE_ADMIN_TOKEN")
        .env("GATEHOUSE_ADMIN_URL", format!("http://127.0.0.1:{port}"));
    if let Some(t) = token {
        cmd.env("GATEHOUSE_ADMIN_TOKEN", t);
    }
    let out = cmd.output().expect("run gatehouse review");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_decides_reviews() {
    let a = api();
    let p = a.port;
    let r1 = a.shared.reviews.submit(request("write", 1)).unwrap();
    let r2 = a.shared.reviews.submit(request("delete", 1)).unwrap();

    let (ok, out, err) = cli(p, Some(AUDITOR), &["list"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("STATEMENT"), "{out}");
    assert!(lines[1].starts_with(&r1) && lines[1].contains("pending 0/1"), "{out}");
    assert!(lines[2].starts_with(&r2), "{out}");

    let (ok, out, err) = cli(
        p,
        Some(DBA1),
        &["approve", &r1, "--reason", "ok", "--grant-minutes", "10"],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("{r1}: approved")) && out.contains("class granted until"),
        "{out}"
    );
    assert!(a.shared.reviews.granted("agent", "test", "write"));

    // Errors carry the API's status and message; the exit status says so.
    let (ok, _, err) = cli(p, Some(SELF), &["deny", &r2, "--reason", "mine"]);
    assert!(!ok);
    assert!(
        err.contains("403 Forbidden: a requester cannot approve their own review"),
        "{err}"
    );
    let (ok, out, err) = cli(p, Some(DBA2), &["deny", &r2, "--reason", "not today", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).expect("--json");
    assert_eq!(v["status"]["reason"], "not today");

    let (ok, out, err) = cli(p, Some(APPROVER), &["list", "--pending", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));

    // The token from another variable, or from the command line.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    let out = cmd
        .args([
            "review",
            "list",
            "--admin",
            &format!("http://127.0.0.1:{p}"),
            "--token-env",
            "GH_OTHER_TOKEN",
        ])
        .env("GH_OTHER_TOKEN", ADMIN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (ok, out, err) = cli(p, None, &["list", "--token", AUDITOR]);
    assert!(ok && out.lines().count() == 3, "{out}{err}");
}

#[test]
fn cli_against_a_gateway() {
    std::env::set_var(SECRET_ENV, SECRET);
    let (hport, requests) = http_receiver();
    let (mport, _mails) = smtp_sink();
    let admin_port = free_port();
    let extra = format!(
        r#"
[admin]
listen = "127.0.0.1:{admin_port}"

{tokens}
{POLICY}
[notify]
[[notify.webhook]]
kind = "slack"
url = "http://127.0.0.1:{hport}/slack"

[[notify.webhook]]
kind = "json"
url = "http://127.0.0.1:{hport}/json"
secret_env = "{SECRET_ENV}"

[notify.smtp]
server = "127.0.0.1:{mport}"
from = "gatehouse@example.com"
to = ["dba@example.com"]
starttls = false
"#,
        tokens = admin_tokens()
    );
    let g = Gatehouse::start("", &extra);
    let wait = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", admin_port)).is_err() {
        assert!(Instant::now() < wait, "admin port: {}", g.log());
        std::thread::sleep(Duration::from_millis(20));
    }

    let (ok, out, err) = cli(admin_port, Some(AUDITOR), &["list"]);
    assert!(ok, "{err}\n{}", g.log());
    assert_eq!(out, "ID  STATE  IDENTITY  TARGET  CLASS  AGE  STATEMENT\n");

    let (ok, out, err) = cli(admin_port, Some(DBA1), &["approve", "r-unknown"]);
    assert!(!ok, "{out}");
    assert!(err.contains("404 Not Found: no review has this id"), "{err}");
    let (ok, _, err) = cli(admin_port, Some(AUDITOR), &["approve", "r-unknown"]);
    assert!(!ok);
    assert!(err.contains("403 Forbidden"), "{err}");
    let (ok, _, err) = cli(admin_port, None, &["list"]);
    assert!(!ok);
    assert!(err.contains("no admin token: set GATEHOUSE_ADMIN_TOKEN"), "{err}");
    let (ok, _, err) = cli(admin_port, Some("wrong"), &["list"]);
    assert!(!ok);
    assert!(err.contains("401 Unauthorized"), "{err}");
    let (ok, _, err) = cli(free_port(), Some(ADMIN), &["list"]);
    assert!(!ok && err.contains("gatehouse: http://127.0.0.1:"), "{err}");

    // Nothing was held, so nothing was announced.
    assert!(requests.lock().unwrap().is_empty());
}

#[test]
fn a_held_statement_is_announced_and_approved_from_the_cli() {
    std::env::set_var(SECRET_ENV, SECRET);
    let (hport, requests) = http_receiver();
    let (mport, mails) = smtp_sink();
    let admin_port = free_port();
    let extra = format!(
        r#"
[admin]
listen = "127.0.0.1:{admin_port}"

{tokens}
{POLICY}
[notify]
admin_url = "http://127.0.0.1:{admin_port}"

[[notify.webhook]]
kind = "slack"
url = "http://127.0.0.1:{hport}/slack"

[[notify.webhook]]
kind = "json"
url = "http://127.0.0.1:{hport}/json"
secret_env = "{SECRET_ENV}"

[notify.smtp]
server = "127.0.0.1:{mport}"
from = "gatehouse@example.com"
to = ["dba@example.com"]
starttls = false
"#,
        tokens = admin_tokens()
    );
    let g = Gatehouse::start("", &extra);
    let t = format!("gh_reviews_e2e_{}", std::process::id());
    direct_psql(&format!("drop table if exists {t}; create table {t} (id int)"));

    // A write waits for a dba.
    let mut held = std::process::Command::new("psql");
    g.pg_env(&mut held, "postgres");
    let held = held
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!("insert into {t} values (1)"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql");
    wait_for("the announcements", || {
        let r = requests.lock().unwrap();
        r.iter().any(|q| q.path == "/json") && r.iter().any(|q| q.path == "/slack")
    });
    wait_for("the mail", || !mails.lock().unwrap().is_empty());
    let reqs = requests.lock().unwrap().clone();
    let json_req = reqs.iter().find(|q| q.path == "/json").unwrap();
    assert!(notify::verify(
        SECRET.as_bytes(),
        &json_req.body,
        &json_req.headers["x-gatehouse-signature"]
    ));
    let body: Value = serde_json::from_slice(&json_req.body).unwrap();
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(
        (
            body["identity"].as_str(),
            body["target"].as_str(),
            body["class"].as_str()
        ),
        (Some("agent"), Some("postgres"), Some("write")),
        "{body}"
    );
    let slack = String::from_utf8_lossy(&reqs.iter().find(|q| q.path == "/slack").unwrap().body).into_owned();
    assert!(
        slack.contains(&format!(
            "POST http://127.0.0.1:{admin_port}/api/v1/reviews/{id}/approve"
        )),
        "{slack}"
    );
    assert!(mails.lock().unwrap()[0].1.contains(&id));
    assert_eq!(
        direct_psql(&format!("select count(*) from {t}")),
        "0",
        "held means not run"
    );

    let (ok, out, err) = cli(admin_port, Some(APPROVER), &["list", "--pending"]);
    assert!(ok, "{err}");
    assert!(out.lines().nth(1).unwrap_or("").starts_with(&id), "{out}");
    let (ok, _, err) = cli(admin_port, Some(SELF), &["approve", &id]);
    assert!(!ok && err.contains("own review"), "{err}");
    let (ok, _, err) = cli(admin_port, Some(APPROVER), &["approve", &id]);
    assert!(!ok && err.contains("roles: dba"), "{err}");
    let (ok, out, err) = cli(
        admin_port,
        Some(DBA1),
        &["approve", &id, "--grant-minutes", "5", "--reason", "e2e"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("approved"), "{out}");

    let held = held.wait_with_output().unwrap();
    assert!(held.status.success(), "{}", String::from_utf8_lossy(&held.stderr));
    // The grant lets the next write through without a review.
    let (ok, _, err) = psql(&g, "postgres", &["-c", &format!("insert into {t} values (2)")]);
    assert!(ok, "{err}");
    assert_eq!(direct_psql(&format!("select count(*) from {t}")), "2");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        requests.lock().unwrap().len(),
        2,
        "one review, announced once per webhook"
    );
    let log = g.log();
    assert!(log.contains("review approval recorded"), "{log}");
    assert!(
        !log.contains(&format!("insert into {t}")),
        "no statement text in the log"
    );
    direct_psql(&format!("drop table {t}"));
}

/// One identity cannot fill the reviewers' queue: past
/// `max_pending_reviews_per_identity` its next statement that needs
/// approval is refused at once (53400, naming the setting) instead of
/// held; another identity's statements are still held.
#[test]
fn pending_reviews_are_bounded_per_identity() {
    let admin_port = free_port();
    let extra = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n{tokens}\n{POLICY}max_pending_reviews_per_identity = 1\n\n\
         [[identity]]\nname = \"second\"\ntoken_hash = \"{second}\"\ntargets = [\"*\"]\n",
        tokens = admin_tokens(),
        second = token_hash("second-agent-token-0123")
    );
    // The policy table's keys come before its sub-tables.
    let extra = extra.replace(
        "[policy]\ndefault_role = \"agent\"\n[policy.roles.agent]\napprovers = [\"dba\"]\nmax_pending_reviews_per_identity = 1\n",
        "[policy]\ndefault_role = \"agent\"\nmax_pending_reviews_per_identity = 1\n[policy.roles.agent]\napprovers = [\"dba\"]\n",
    );
    let g = Gatehouse::start("", &extra);
    let t = format!("gh_reviews_bound_{}", std::process::id());
    direct_psql(&format!("drop table if exists {t}; create table {t} (id int)"));
    let insert = |user: &str, token: &str| {
        let mut c = std::process::Command::new("psql");
        g.pg_env(&mut c, "postgres");
        c.env("PGUSER", user)
            .env("PGPASSWORD", token)
            .args([
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &format!("insert into {t} values (1)"),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    let pending = || -> Vec<Value> {
        let (_, v) = call(admin_port, "GET", "/api/v1/reviews?state=pending", Some(ADMIN), None);
        v["reviews"].as_array().cloned().unwrap_or_default()
    };
    let held = insert("agent", TOKEN).spawn().unwrap();
    wait_for("the first review", || pending().len() == 1);
    // The same identity again: refused at once.
    let out = insert("agent", TOKEN).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("max_pending_reviews_per_identity"), "{err}");
    assert_eq!(pending().len(), 1);
    // Another identity is still held.
    let other = insert("second", "second-agent-token-0123").spawn().unwrap();
    wait_for("the other identity's review", || pending().len() == 2);
    for r in pending() {
        let (st, _) = deny(
            admin_port,
            r["id"].as_str().unwrap(),
            ADMIN,
            r#"{"reason":"test over"}"#,
        );
        assert_eq!(st, 200);
    }
    for c in [held, other] {
        let out = c.wait_with_output().unwrap();
        assert!(!out.status.success());
    }
    direct_psql(&format!("drop table {t}"));
}

/// One identity's flood of held statements does not crowd out another's
/// announcement: past `per_identity_per_minute` its reviews wait to be
/// announced together, while the other identity's goes out at once.
#[test]
fn a_flooding_identity_is_coalesced_not_in_front() {
    std::env::set_var(SECRET_ENV, SECRET);
    let (hport, requests) = http_receiver();
    let admin_port = free_port();
    let extra = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n{tokens}\n{POLICY}\n\
         [notify]\nper_identity_per_minute = 1\n[[notify.webhook]]\nkind = \"json\"\nurl = \"http://127.0.0.1:{hport}/json\"\nsecret_env = \"{SECRET_ENV}\"\n\n\
         [[identity]]\nname = \"second\"\ntoken_hash = \"{second}\"\ntargets = [\"*\"]\n",
        tokens = admin_tokens(),
        second = token_hash("second-agent-token-0123")
    );
    let g = Gatehouse::start("", &extra);
    let t = format!("gh_reviews_flood_{}", std::process::id());
    direct_psql(&format!("drop table if exists {t}; create table {t} (id int)"));
    let insert = |user: &str, token: &str| {
        let mut c = std::process::Command::new("psql");
        g.pg_env(&mut c, "postgres");
        c.env("PGUSER", user)
            .env("PGPASSWORD", token)
            .args(["-X", "-c", &format!("insert into {t} values (1)")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c.spawn().unwrap()
    };
    let pending = || -> Vec<Value> {
        let (_, v) = call(admin_port, "GET", "/api/v1/reviews?state=pending", Some(ADMIN), None);
        v["reviews"].as_array().cloned().unwrap_or_default()
    };
    let announced = |identity: &str| -> Vec<Value> {
        requests
            .lock()
            .unwrap()
            .iter()
            .filter(|q| q.path == "/json")
            .map(|q| serde_json::from_slice::<Value>(&q.body).unwrap())
            .filter(|v| v["identity"] == identity)
            .collect()
    };
    let mut clients: Vec<std::process::Child> = (0..6).map(|_| insert("agent", TOKEN)).collect();
    wait_for("the flood's reviews", || pending().len() == 6);
    clients.push(insert("second", "second-agent-token-0123"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while announced("second").len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the other identity's announcement did not come: pending {:?}\n{}",
            pending().iter().map(|r| r["identity"].clone()).collect::<Vec<_>>(),
            g.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The flood got one announcement in this minute; the rest wait.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(announced("agent").len(), 1, "{:?}", announced("agent"));
    for r in pending() {
        deny(
            admin_port,
            r["id"].as_str().unwrap(),
            ADMIN,
            r#"{"reason":"test over"}"#,
        );
    }
    for mut c in clients {
        let _ = c.wait();
    }
    direct_psql(&format!("drop table {t}"));
}

//! The web console in a real browser (headless Chromium over WebDriver)
//! against a real gateway: the live inbox, approving and denying by
//! clicking, replaying a recording, what each role sees, CSRF and CSP.
//!
//! Screenshots of the pages go to `target/console-screenshots/` (the
//! README's are copies).
mod common;
use common::browser::Browser;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const DBA: &str = "console-dba-token-1111";
const AUDITOR: &str = "console-auditor-token-2222";
const OPS: &str = "console-ops-token-3333";
/// An approver whose name is the agent's identity: it asked for the reviews.
const SELF: &str = "console-agent-token-4444";
/// A token with a policy approver role only (no API role): not a console user.
const POLICY_ONLY: &str = "console-dba-only-token-5555";

const POLICY: &str = "[policy]\ndefault_role = \"agent\"\n[policy.roles.agent]\napprovers = [\"dba\"]\n";

fn tokens() -> String {
    let mut s = String::new();
    for (name, tok, roles) in [
        ("dba1", DBA, "\"approver\", \"dba\""),
        ("audit", AUDITOR, "\"auditor\""),
        ("ops", OPS, "\"admin\""),
        ("agent", SELF, "\"approver\", \"dba\""),
        ("dba-only", POLICY_ONLY, "\"dba\""),
    ] {
        s += &format!(
            "[[admin.token]]\nname = \"{name}\"\ntoken_hash = \"{}\"\nroles = [{roles}]\n\n",
            token_hash(tok)
        );
    }
    s
}

fn gateway() -> (Gatehouse, u16) {
    let admin_port = free_port();
    let extra = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{}\n[recording]\ndir = \"rec\"\nresults = \"full\"\n\n{POLICY}",
        tokens()
    );
    (Gatehouse::start("", &extra), admin_port)
}

fn held_psql(g: &Gatehouse, sql: &str) -> std::process::Child {
    let mut c = std::process::Command::new("psql");
    g.pg_env(&mut c, "postgres");
    c.args(["-X", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql")
}

/// The id of the pending review once the API shows one.
fn pending_review(admin_port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http(admin_port, "GET", "/api/v1/reviews?state=pending", OPS, "");
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(id) = v["reviews"][0]["id"].as_str() {
            return id.to_string();
        }
        assert!(Instant::now() < deadline, "no review opened");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sign_in(b: &Browser, admin_port: u16, token: &str) {
    b.goto(&format!("http://127.0.0.1:{admin_port}/console"));
    let input = b.wait("#token", Duration::from_secs(10));
    b.type_into(&input, token);
    b.click(&b.wait("#signin button[type=submit]", Duration::from_secs(5)));
    b.wait("#signout", Duration::from_secs(10));
}

fn sign_out(b: &Browser) {
    b.click(&b.wait("#signout", Duration::from_secs(5)));
    b.wait("#token", Duration::from_secs(10));
}

fn screenshot(b: &Browser, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../console-screenshots");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.png")), b.screenshot());
}

/// No CSP violation and no script error in the browser's console.
fn clean_console(b: &Browser) {
    let log = b.console_log();
    let bad: Vec<&String> = log
        .iter()
        .filter(|l| {
            l.contains("Content Security Policy")
                || (l.starts_with("SEVERE") && !l.contains("401") && !l.contains("403"))
        })
        .collect();
    assert!(bad.is_empty(), "browser console: {bad:#?}");
}

#[test]
fn a_held_insert_is_approved_and_another_denied_by_clicking() {
    let (g, admin_port) = gateway();
    let t = format!("gh_console_{}", std::process::id());
    direct_psql(&format!("drop table if exists {t}; create table {t} (id int)"));
    let b = Browser::start();
    sign_in(&b, admin_port, DBA);
    b.wait_text("main", "Nothing is waiting", Duration::from_secs(10));

    // Held: the inbox shows it within a second of the review opening.
    let held = held_psql(
        &g,
        &format!("insert into {t} values (1) -- <img src=x onerror=alert(1)> \u{202e}gnp.exe"),
    );
    let id = pending_review(admin_port);
    let seen = Instant::now();
    let card = format!("article.review[data-id='{id}']");
    b.wait(&card, Duration::from_secs(1));
    assert!(seen.elapsed() <= Duration::from_secs(1), "{:?}", seen.elapsed());
    let text = b.wait_text(&card, "insert into", Duration::from_secs(2));
    for want in ["agent", "postgres", "write", "0 of 1 approvals", "left"] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
    // Highlighted: the keyword is its own element, as text.
    assert!(b.find(&format!("{card} pre.sql span.kw")).is_some());
    // Markup in a statement is text, and a reordering character is shown
    // as its code, not obeyed.
    assert!(text.contains("<img src=x onerror=alert(1)>"), "{text}");
    assert!(
        b.find(&format!("{card} img")).is_none(),
        "no element from the statement"
    );
    assert!(text.contains("<U+202E>gnp.exe"), "{text}");
    screenshot(&b, "inbox");
    assert_eq!(
        direct_psql(&format!("select count(*) from {t}")),
        "0",
        "held means not run"
    );
    b.click(&b.wait(&format!("{card} button.approve"), Duration::from_secs(2)));
    let out = held.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(direct_psql(&format!("select count(*) from {t}")), "1");
    b.wait_text(&format!("#finished {card}"), "Approved by dba1", Duration::from_secs(5));

    // Denied with a reason: the client gets it.
    let held = held_psql(&g, &format!("delete from {t}"));
    let id = pending_review(admin_port);
    let card = format!("article.review[data-id='{id}']");
    let reason = b.wait(&format!("{card} input.reason"), Duration::from_secs(2));
    b.type_into(&reason, "not during the freeze");
    b.click(&b.wait(&format!("{card} button.deny"), Duration::from_secs(2)));
    let out = held.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not during the freeze"), "{err}");
    assert_eq!(direct_psql(&format!("select count(*) from {t}")), "1");
    b.wait_text(&format!("#finished {card}"), "Denied by dba1", Duration::from_secs(5));
    clean_console(&b);

    // The requester (an approver named like the identity) has no buttons.
    sign_out(&b);
    let held = held_psql(&g, &format!("insert into {t} values (2)"));
    let id = pending_review(admin_port);
    sign_in(&b, admin_port, SELF);
    let card = format!("article.review[data-id='{id}']");
    b.wait_text(&card, "You asked for this review", Duration::from_secs(5));
    assert!(b.find(&format!("{card} button.approve")).is_none());
    // Nor can the page's own script approve for it: the API refuses.
    let r = b.run_async(&format!(
        "const done = arguments[0]; fetch('/console/me').then(r => r.json()).then(me => \
         fetch('/api/v1/reviews/{id}/approve', {{method: 'POST', headers: {{'Content-Type': 'application/json', \
         'X-CSRF-Token': me.csrf}}, body: '{{}}'}})).then(r => done(r.status))"
    ));
    assert_eq!(r, 403);
    // Killing the held session from the console (admin), with a reason.
    sign_out(&b);
    sign_in(&b, admin_port, OPS);
    b.goto(&format!("http://127.0.0.1:{admin_port}/console#/sessions"));
    let row = b.wait("tr[data-session] button.kill", Duration::from_secs(5));
    // The session's row names what it has held.
    b.wait_text("tr[data-session]", &format!("{id} (write)"), Duration::from_secs(5));
    let reason = b.wait("tr[data-session] input.kill-reason", Duration::from_secs(5));
    b.type_into(&reason, "runaway agent");
    screenshot(&b, "sessions");
    b.click(&row);
    let out = held.wait_with_output().unwrap();
    assert!(!out.status.success(), "the killed session's statement does not run");
    assert_eq!(direct_psql(&format!("select count(*) from {t}")), "1");
    let mut audit = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !audit.contains("runaway agent") && Instant::now() < deadline {
        audit = http(admin_port, "GET", "/api/v1/audit", OPS, "").1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(audit.contains("killed, reason: runaway agent"), "{audit}");
    assert!(audit.contains("console sign-in"), "{audit}");
    clean_console(&b);
    direct_psql(&format!("drop table {t}"));
}

#[test]
fn an_auditor_replays_masked_values_and_an_approver_sees_no_recordings() {
    let (g, admin_port) = gateway();
    let secret = ["AKIA", "QWERTYUIOPASDFGH"].concat();
    let (ok, out, err) = psql(&g, "postgres", &["-c", &format!("select '{secret}' as key, 42 as n")]);
    assert!(ok, "{err}");
    assert!(!out.contains(&secret));
    // Wait for the session's recording to be sealed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let (_, body) = http(admin_port, "GET", "/api/v1/recordings", AUDITOR, "");
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(r) = v["recordings"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["live"] == false))
        {
            break r["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no sealed recording");
        std::thread::sleep(Duration::from_millis(50));
    };

    let b = Browser::start();
    sign_in(&b, admin_port, AUDITOR);
    // An auditor decides nothing: no buttons in the inbox.
    b.goto(&format!("http://127.0.0.1:{admin_port}/console#/recordings"));
    let link = b.wait(&format!("a[href='#/recordings/{id}']"), Duration::from_secs(10));
    b.click(&link);
    b.wait_text("#verified", "chain intact, sealed", Duration::from_secs(10));
    // The test configuration masks partially: all but the last 4 hidden.
    let masked = format!("{}DFGH", "*".repeat(16));
    let timeline = b.wait_text("#timeline", &masked, Duration::from_secs(10));
    assert!(timeline.contains("masked {\"aws-access-key-id\":1}"), "{timeline}");
    assert!(timeline.contains("select"), "{timeline}");
    assert!(timeline.contains("42"), "the row as the client saw it: {timeline}");
    assert!(!b.page_text().contains(&secret), "no secret on the page");
    screenshot(&b, "replay");
    // Replay: from the start, records appear; jump to a statement.
    b.click(&b.wait("#play", Duration::from_secs(2)));
    b.wait_text("#position", "/", Duration::from_secs(2));
    b.click(&b.wait("#show-all", Duration::from_secs(2)));
    let pos = b.wait_text("#position", "records", Duration::from_secs(2));
    let (shown, total) = pos.split_once(" / ").unwrap();
    assert_eq!(shown, total.trim_end_matches(" records"), "{pos}");
    b.click(&b.wait("#timeline li[data-kind='statement']", Duration::from_secs(2)));
    let pos = b.wait_text("#position", "records", Duration::from_secs(2));
    assert!(
        pos.starts_with("2 / ") || pos.starts_with("1 / "),
        "jumped to the statement: {pos}"
    );
    // The audit log and overview render for an auditor.
    b.goto(&format!("http://127.0.0.1:{admin_port}/console#/audit"));
    b.wait_text("main", "console sign-in", Duration::from_secs(10));
    b.goto(&format!("http://127.0.0.1:{admin_port}/console#/overview"));
    b.wait_text("#stat-sessions", "sessions open", Duration::from_secs(10));
    screenshot(&b, "overview");
    clean_console(&b);

    // An approver: no recordings in the navigation, the page refuses, and
    // the API refuses the page's own script.
    sign_out(&b);
    sign_in(&b, admin_port, DBA);
    let nav = b.text(&b.wait("#nav", Duration::from_secs(2)));
    assert!(nav.contains("Reviews") && !nav.contains("Recordings"), "{nav}");
    b.goto(&format!("http://127.0.0.1:{admin_port}/console#/recordings/{id}"));
    b.wait_text("main", "Not for your roles", Duration::from_secs(5));
    let status = b.run_async("const done = arguments[0]; fetch('/api/v1/recordings').then(r => done(r.status))");
    assert_eq!(status, 403);
    let status = b.run_async(&format!(
        "const done = arguments[0]; fetch('/api/v1/recordings/{id}/events').then(r => done(r.status))"
    ));
    assert_eq!(status, 403);
    assert!(!b.page_text().contains(&secret));
}

/// A request with a cookie jar of its own (ureq's agent keeps cookies).
fn request(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, Option<String>) {
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let res = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    match res {
        Ok(r) => {
            let cookie = r.header("set-cookie").map(str::to_string);
            (r.status(), r.into_string().unwrap_or_default(), cookie)
        }
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default(), None),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn console_changes_need_the_csrf_token_and_pages_carry_a_strict_csp() {
    let (g, admin_port) = gateway();
    let base = format!("http://127.0.0.1:{admin_port}");
    let origin = base.clone();

    // The page and its assets: a CSP without inline script.
    for path in ["/console", "/console/app.js", "/console/app.css"] {
        let r = ureq::get(&format!("{base}{path}")).call().unwrap();
        let csp = r.header("content-security-policy").unwrap_or("").to_string();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
            "{path}: {csp}"
        );
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{path}: {csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    let html = ureq::get(&format!("{base}/console"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        !html.contains("<script>") && !html.contains(" on"),
        "no inline script or handler: {html}"
    );

    // Sign-in: JSON only, from the same origin; a form from elsewhere is refused.
    let agent = ureq::AgentBuilder::new().build();
    let login = |ct: &str, origin: &str, token: &str| {
        request(
            &agent,
            "POST",
            &format!("{base}/console/login"),
            &[("Content-Type", ct), ("Origin", origin)],
            Some(&format!("{{\"token\":\"{token}\"}}")),
        )
    };
    assert_eq!(login("application/x-www-form-urlencoded", &origin, DBA).0, 415);
    assert_eq!(login("text/plain", &origin, DBA).0, 415);
    assert_eq!(login("application/json", "https://evil.example", DBA).0, 403);
    assert_eq!(login("application/json", &origin, "not-a-token").0, 401);
    // A token whose roles open no part of the console signs nothing in.
    assert_eq!(login("application/json", &origin, POLICY_ONLY).0, 403);
    let (st, body, set_cookie) = login("application/json", &origin, DBA);
    assert_eq!(st, 200, "{body}");
    let set_cookie = set_cookie.expect("a session cookie");
    for want in ["gh_console=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(want), "{want} not in {set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let with_cookie = ("Cookie", cookie.as_str());
    assert!(!body.contains(DBA), "the token is not echoed");
    let csrf = serde_json::from_str::<Value>(&body).unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_string();

    // A held statement to decide.
    let t = format!("gh_console_csrf_{}", std::process::id());
    direct_psql(&format!("drop table if exists {t}; create table {t} (id int)"));
    let held = held_psql(&g, &format!("insert into {t} values (1)"));
    let id = pending_review(admin_port);
    let approve = format!("{base}/api/v1/reviews/{id}/approve");
    let json = ("Content-Type", "application/json");
    // The cookie alone (a cross-site POST would carry nothing more): refused.
    let c = with_cookie;
    assert_eq!(request(&agent, "POST", &approve, &[c, json], Some("{}")).0, 403);
    assert_eq!(
        request(
            &agent,
            "POST",
            &approve,
            &[c, json, ("X-CSRF-Token", "0000")],
            Some("{}")
        )
        .0,
        403
    );
    let other = "f".repeat(csrf.len());
    assert_eq!(
        request(
            &agent,
            "POST",
            &approve,
            &[c, json, ("X-CSRF-Token", &other)],
            Some("{}")
        )
        .0,
        403
    );
    assert_eq!(
        request(
            &agent,
            "POST",
            &approve,
            &[c, json, ("X-CSRF-Token", &csrf), ("Origin", "https://evil.example")],
            Some("{}")
        )
        .0,
        403
    );
    // No cookie, no token: 401.
    let stranger = ureq::AgentBuilder::new().build();
    assert_eq!(
        request(
            &stranger,
            "POST",
            &approve,
            &[json, ("X-CSRF-Token", &csrf)],
            Some("{}")
        )
        .0,
        401
    );
    assert_eq!(
        direct_psql(&format!("select count(*) from {t}")),
        "0",
        "nothing refused ran"
    );
    // GETs need no CSRF token (they change nothing).
    assert_eq!(
        request(&agent, "GET", &format!("{base}/api/v1/reviews"), &[c], None).0,
        200
    );
    // The CSRF token and the same origin: approved.
    let (st, body, _) = request(
        &agent,
        "POST",
        &approve,
        &[c, json, ("X-CSRF-Token", &csrf), ("Origin", &origin)],
        Some("{}"),
    );
    assert_eq!(st, 200, "{body}");
    assert!(held.wait_with_output().unwrap().status.success());

    // Signed out: the cookie opens nothing any more.
    let (st, _, _) = request(
        &agent,
        "POST",
        &format!("{base}/console/logout"),
        &[c, json, ("X-CSRF-Token", &csrf)],
        Some(""),
    );
    assert_eq!(st, 200);
    assert_eq!(
        request(&agent, "GET", &format!("{base}/api/v1/reviews"), &[c], None).0,
        401
    );
    assert_eq!(request(&agent, "GET", &format!("{base}/console/me"), &[c], None).0, 401);

    // A token removed from the configuration: its console session ends,
    // and so does a live stream it opened (within the recheck period).
    let (_, body, set_cookie) = login("application/json", &origin, DBA);
    let csrf2 = serde_json::from_str::<Value>(&body).unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    let _ = csrf2;
    let cookie2 = set_cookie.unwrap().split(';').next().unwrap().to_string();
    let events = agent
        .get(&format!("{base}/api/v1/reviews/events"))
        .set("Cookie", &cookie2)
        .call()
        .unwrap();
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    let stream = std::thread::spawn(move || {
        use std::io::Read;
        let mut sink = Vec::new();
        let started = Instant::now();
        let _ = events.into_reader().read_to_end(&mut sink);
        (started.elapsed(), String::from_utf8_lossy(&sink).into_owned())
    });
    let config = std::fs::read_to_string(&g.config_path).unwrap();
    let without = config.replace(&token_hash(DBA), &token_hash("a-new-token-for-dba1"));
    assert_ne!(config, without);
    std::fs::write(&g.config_path, without).unwrap();
    let (st, body) = http(admin_port, "POST", "/api/v1/reload", OPS, "");
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        request(
            &agent,
            "GET",
            &format!("{base}/api/v1/reviews"),
            &[("Cookie", &cookie2)],
            None
        )
        .0,
        401
    );
    let (lasted, seen) = stream.join().unwrap();
    assert!(lasted < Duration::from_secs(30), "the stream ended after {lasted:?}");
    assert!(seen.contains("event: reviews"), "{seen}");

    // The console works under its CSP in a real browser.
    let b = Browser::start();
    sign_in(&b, admin_port, OPS);
    b.wait_text("main", "Decided", Duration::from_secs(10));
    clean_console(&b);

    // A page on another site, opened in the signed-in browser, posts a
    // form to approve a held write: the browser sends no cookie with it
    // (SameSite=Strict), and it has no CSRF token anyway. Nothing runs.
    let held = held_psql(&g, &format!("insert into {t} values (2)"));
    let id = pending_review(admin_port);
    let attack = format!(
        "data:text/html,<form method=post enctype=text/plain action='{base}/api/v1/reviews/{id}/approve'>\
         <input name='{{\"reason\":\"x\",\"pad\":\"' value='\"}}'></form>\
         <script>document.forms[0].submit()</script>"
    );
    b.goto(&attack);
    // The form was sent: the browser is on the API's answer, which found
    // no sign-in in it (401: the cookie stayed home).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.url().ends_with("/approve") {
        assert!(Instant::now() < deadline, "the form was not sent: {}", b.url());
        std::thread::sleep(Duration::from_millis(50));
    }
    b.wait_text(
        "body",
        "a valid bearer token (or a console sign-in) is required",
        Duration::from_secs(5),
    );
    let (_, body) = http(admin_port, "GET", &format!("/api/v1/reviews/{id}"), OPS, "");
    assert!(
        body.contains("\"state\":\"pending\""),
        "a cross-site form approved nothing: {body}"
    );
    let (st, _) = http(
        admin_port,
        "POST",
        &format!("/api/v1/reviews/{id}/deny"),
        OPS,
        "{\"reason\":\"test over\"}",
    );
    assert_eq!(st, 200);
    assert!(!held.wait_with_output().unwrap().status.success());
    assert_eq!(direct_psql(&format!("select count(*) from {t}")), "1");
    direct_psql(&format!("drop table {t}"));
}

// ---- single sign-on ----------------------------------------------------------

mod sso {
    use super::*;
    use common::sinks::{http_receiver_with, HttpReq};
    use gatehouse::identity::mint;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    const ISS: &str = "https://idp.test";
    const CLIENT: &str = "gatehouse-console";

    struct Idp {
        port: u16,
        /// Mint ID tokens with a nonce of another sign-in.
        wrong_nonce: Arc<AtomicBool>,
    }

    /// A provider: /authorize sends the browser back with a code at once
    /// (alice is signed in); /token redeems a code once, only with the
    /// PKCE verifier of its challenge, for an ID token with the nonce.
    fn idp(key: Arc<mint::SigningKey>) -> Idp {
        let codes: Arc<Mutex<HashMap<String, (String, String)>>> = Default::default();
        let wrong_nonce = Arc::new(AtomicBool::new(false));
        let wrong = wrong_nonce.clone();
        let (port, _) = http_receiver_with(Box::new(move |q: &HttpReq, n: usize| {
            let param = |s: &str, k: &str| {
                form_urlencoded::parse(s.as_bytes())
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            if let Some(query) = q.path.strip_prefix("/authorize?") {
                assert_eq!(param(query, "code_challenge_method"), "S256");
                assert_eq!(param(query, "response_type"), "code");
                assert_eq!(param(query, "client_id"), CLIENT);
                let code = format!("code-{n}-{}", rand_suffix());
                codes
                    .lock()
                    .unwrap()
                    .insert(code.clone(), (param(query, "nonce"), param(query, "code_challenge")));
                let back = format!(
                    "{}?code={code}&state={}",
                    param(query, "redirect_uri"),
                    form_urlencoded::byte_serialize(param(query, "state").as_bytes()).collect::<String>()
                );
                return ("302 Found".into(), back);
            }
            if q.path == "/token" {
                let body = String::from_utf8_lossy(&q.body).into_owned();
                let Some((nonce, challenge)) = codes.lock().unwrap().remove(&param(&body, "code")) else {
                    return ("400 Bad Request".into(), r#"{"error":"invalid_grant"}"#.into());
                };
                let verifier = param(&body, "code_verifier");
                use base64::Engine;
                use sha2::Digest;
                let want =
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
                if want != challenge || param(&body, "grant_type") != "authorization_code" {
                    return ("400 Bad Request".into(), r#"{"error":"invalid_grant"}"#.into());
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let nonce = if wrong.load(Ordering::Relaxed) {
                    "another".to_string()
                } else {
                    nonce
                };
                let claims = serde_json::json!({
                    "iss": ISS, "aud": CLIENT, "sub": "alice", "groups": ["console-approvers"],
                    "nonce": nonce, "iat": now, "exp": now + 600,
                });
                let token = mint::mint(&key, Some("k1"), claims.as_object().unwrap()).unwrap();
                return (
                    "200 OK".into(),
                    serde_json::json!({ "id_token": token, "token_type": "Bearer" }).to_string(),
                );
            }
            ("404 Not Found".into(), "{}".into())
        }));
        Idp { port, wrong_nonce }
    }

    fn gateway_with_sso() -> (Gatehouse, u16, Idp, tempfile::TempDir) {
        let generated = mint::keygen(gatehouse::identity::jwks::Alg::EdDSA, Some("k1")).unwrap();
        let key = Arc::new(mint::SigningKey::from_pem(&generated.private_pem, None).unwrap());
        let keys = tempfile::tempdir().unwrap();
        let jwks = keys.path().join("jwks.json");
        std::fs::write(&jwks, mint::add_to_jwks(None, generated.jwk).unwrap()).unwrap();
        let idp = idp(key);
        let admin_port = free_port();
        let extra = format!(
            r#"[admin]
listen = "127.0.0.1:{admin_port}"
{tokens}
{POLICY}
[oidc]
issuer = "{ISS}"
audience = ["database"]
admin_audience = ["{CLIENT}"]
jwks_file = "{jwks}"

[oidc.role_map]
"console-approvers" = ["approver", "dba"]

[oidc.console]
client_id = "{CLIENT}"
authorization_endpoint = "http://127.0.0.1:{idp}/authorize"
token_endpoint = "http://127.0.0.1:{idp}/token"
redirect_url = "http://127.0.0.1:{admin_port}/console/oidc/callback"
"#,
            tokens = tokens(),
            jwks = jwks.display(),
            idp = idp.port,
        );
        (Gatehouse::start("", &extra), admin_port, idp, keys)
    }

    fn no_redirects() -> ureq::Agent {
        ureq::AgentBuilder::new().redirects(0).build()
    }

    /// GET without following redirects: status, Location, Set-Cookie values.
    fn get(agent: &ureq::Agent, url: &str, cookie: Option<&str>) -> (u16, String, Vec<String>) {
        let mut req = agent.get(url);
        if let Some(c) = cookie {
            req = req.set("Cookie", c);
        }
        let r = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        let cookies = r.all("set-cookie").iter().map(|s| s.to_string()).collect();
        (r.status(), r.header("location").unwrap_or("").to_string(), cookies)
    }

    /// Begins a sign-in: the state cookie, and the provider's redirect back.
    fn begin(agent: &ureq::Agent, admin_port: u16) -> (String, String) {
        let (st, to_idp, cookies) = get(
            agent,
            &format!("http://127.0.0.1:{admin_port}/console/oidc/start"),
            None,
        );
        assert_eq!(st, 302);
        let state_cookie = cookies
            .iter()
            .find(|c| c.starts_with("gh_console_sso="))
            .expect("a state cookie")
            .clone();
        assert!(
            state_cookie.contains("HttpOnly") && state_cookie.contains("SameSite=Lax"),
            "{state_cookie}"
        );
        let (st, back, _) = get(agent, &to_idp, None);
        assert_eq!(st, 302, "{to_idp}");
        (state_cookie.split(';').next().unwrap().to_string(), back)
    }

    #[test]
    fn single_sign_on_with_pkce_state_and_nonce() {
        let (_g, admin_port, idp, _keys) = gateway_with_sso();
        let agent = no_redirects();

        // The whole flow, by hand: a console session for alice.
        let (cookie, back) = begin(&agent, admin_port);
        let (st, to, cookies) = get(&agent, &back, Some(&cookie));
        assert_eq!((st, to.as_str()), (302, "/console#/reviews"), "{cookies:?}");
        let session = cookies
            .iter()
            .find(|c| c.starts_with("gh_console=") && !c.starts_with("gh_console=;"))
            .expect("a console session")
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let me = agent
            .get(&format!("http://127.0.0.1:{admin_port}/console/me"))
            .set("Cookie", &session)
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        assert!(me.contains("\"alice\"") && me.contains("dba"), "{me}");
        // The same answer again: the state is spent.
        assert_eq!(get(&agent, &back, Some(&cookie)).0, 403);

        // The provider's answer in another browser (no state cookie, or
        // another sign-in's): refused, and the code is not redeemed.
        let (other_cookie, back) = begin(&agent, admin_port);
        assert_eq!(get(&agent, &back, None).0, 403);
        let (_, back2) = begin(&agent, admin_port);
        assert_eq!(get(&agent, &back2, Some(&other_cookie)).0, 403);
        // The callback URL leaked (history, a proxy's log) to someone who
        // makes the cookie from the state in it: refused, for the cookie
        // holds a secret of its own that no URL carries.
        let (_, leaked) = begin(&agent, admin_port);
        let state = leaked.split("state=").nth(1).unwrap().to_string();
        let state = form_urlencoded::parse(format!("s={state}").as_bytes())
            .next()
            .unwrap()
            .1
            .into_owned();
        assert_eq!(get(&agent, &leaked, Some(&format!("gh_console_sso={state}"))).0, 403);
        // A made-up state with its own cookie: unknown.
        let forged = format!("http://127.0.0.1:{admin_port}/console/oidc/callback?code=x&state=madeup");
        assert_eq!(get(&agent, &forged, Some("gh_console_sso=madeup")).0, 403);

        // An ID token minted for another sign-in (its nonce): refused.
        idp.wrong_nonce.store(true, Ordering::Relaxed);
        let (cookie, back) = begin(&agent, admin_port);
        let (st, _, cookies) = get(&agent, &back, Some(&cookie));
        assert_eq!(st, 403);
        assert!(!cookies
            .iter()
            .any(|c| c.starts_with("gh_console=") && !c.starts_with("gh_console=;")));
        idp.wrong_nonce.store(false, Ordering::Relaxed);

        // One person signing in again and again ends only their own oldest
        // sessions (each sign-on brings a new ID token): at most 20 live.
        let mut sessions = Vec::new();
        for _ in 0..22 {
            let (cookie, back) = begin(&agent, admin_port);
            let (st, _, cookies) = get(&agent, &back, Some(&cookie));
            assert_eq!(st, 302);
            let c = cookies
                .iter()
                .find(|c| c.starts_with("gh_console=") && !c.starts_with("gh_console=;"))
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string();
            sessions.push(c);
        }
        let alive = |c: &str| match agent
            .get(&format!("http://127.0.0.1:{admin_port}/console/me"))
            .set("Cookie", c)
            .call()
        {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(alive(&sessions[21]), 200);
        assert_eq!(alive(&sessions[0]), 401, "the oldest of alice's ended");
        // Someone else's sign-in is untouched (a token session of dba1).
        let (st, _, set) = request(
            &agent,
            "POST",
            &format!("http://127.0.0.1:{admin_port}/console/login"),
            &[("Content-Type", "application/json")],
            Some(&format!("{{\"token\":\"{DBA}\"}}")),
        );
        assert_eq!(st, 200);
        assert_eq!(alive(set.unwrap().split(';').next().unwrap()), 200);

        // In a browser: the sign-in page offers single sign-on, and it works.
        let b = Browser::start();
        b.goto(&format!("http://127.0.0.1:{admin_port}/console"));
        b.click(&b.wait("#sso", Duration::from_secs(10)));
        b.wait_text("#who", "alice", Duration::from_secs(10));
        b.wait_text("main", "Nothing is waiting", Duration::from_secs(10));
        clean_console(&b);
    }
}

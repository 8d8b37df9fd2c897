//! The quick start as the README walks a newcomer through it: the demo
//! configuration `./dev.sh start` serves (policies/gatehouse.toml, ports
//! and the recordings directory moved so the test runs beside others),
//! the agent's reads, a held write approved in the console, DDL denied, a
//! secret masked, and the session replayed, in a real browser.
mod common;
use common::browser::Browser;
use common::*;
use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const AGENT_TOKEN: &str = "demo-token-change-me";
const APPROVER_TOKEN: &str = "approver-token-change-me";

/// The demo configuration on free ports, recording into `rec`.
fn demo_config(pg: u16, mysql: u16, admin: u16, rec: &std::path::Path) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/gatehouse.toml")).unwrap();
    for (from, _) in [
        ("127.0.0.1:6432", pg),
        ("127.0.0.1:3307", mysql),
        ("127.0.0.1:9090", admin),
    ] {
        assert!(text.contains(from), "the demo listens on {from}");
    }
    assert!(text.contains("/tmp/gatehouse-demo/recordings"));
    text.replace("127.0.0.1:6432", &format!("127.0.0.1:{pg}"))
        .replace("127.0.0.1:3307", &format!("127.0.0.1:{mysql}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin}"))
        .replace("/tmp/gatehouse-demo/recordings", &rec.display().to_string())
}

fn agent_psql(port: u16, sql: &str) -> Command {
    let mut c = Command::new("psql");
    c.arg(format!(
        "host=127.0.0.1 port={port} dbname=postgres user=demo password={AGENT_TOKEN} sslmode=disable"
    ))
    .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

fn run(port: u16, sql: &str) -> Output {
    agent_psql(port, sql).output().expect("psql")
}

fn screenshot(b: &Browser, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../console-screenshots");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.png")), b.screenshot());
}

#[test]
fn the_quick_start_walkthrough() {
    let (pg, mysql, admin) = (free_port(), free_port(), free_port());
    let rec = tempfile::tempdir().unwrap();
    let g = Gatehouse::start_with(pg, &demo_config(pg, mysql, admin, rec.path()));
    let t = format!("gh_demo_{}", std::process::id());
    direct_psql(&format!(
        "drop table if exists {t}; create table {t} (id int, note text)"
    ));

    // 1. The agent reads; a secret in a result is masked.
    let out = run(pg, "select 1 + 1");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    let secret = ["AKIA", "ZXCVBNMASDFGHJKL"].concat();
    let out = run(pg, &format!("select 'aws key: {secret}'"));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !shown.contains(&secret), "{shown}");
    // The default mask keeps the last four characters.
    let masked = format!("{}HJKL", "*".repeat(16));
    assert!(shown.contains(&masked), "{shown}");

    // 2. DDL is denied outright.
    let out = run(pg, &format!("drop table {t}"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ERROR"), "denied");
    assert_eq!(
        direct_psql(&format!("select count(*) from {t}")),
        "0",
        "the table is still there"
    );

    // 3. A write waits; the demo approver approves it in the console.
    let b = Browser::start();
    b.goto(&format!("http://127.0.0.1:{admin}/console"));
    b.type_into(&b.wait("#token", Duration::from_secs(10)), APPROVER_TOKEN);
    b.click(&b.wait("#signin button[type=submit]", Duration::from_secs(5)));
    b.wait_text("main", "Nothing is waiting", Duration::from_secs(10));
    let held = agent_psql(pg, &format!("insert into {t} values (1, 'from the agent')"))
        .spawn()
        .expect("psql");
    let card = b.wait("article.review", Duration::from_secs(10));
    let text = b.wait_text("article.review", "insert into", Duration::from_secs(5));
    assert!(text.contains("demo") && text.contains("write"), "{text}");
    screenshot(&b, "walkthrough-held");
    let _ = card;
    assert_eq!(
        direct_psql(&format!("select count(*) from {t}")),
        "0",
        "held means not run"
    );
    b.click(&b.wait("article.review button.approve", Duration::from_secs(5)));
    let out = held.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(direct_psql(&format!("select count(*) from {t}")), "1");

    // 4. The session replayed: the statements, the hold and its approval,
    // the masked value, the chain verified.
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let (_, body) = http(admin, "GET", "/api/v1/recordings?text=aws", APPROVER_TOKEN, "");
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(r) = v["recordings"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["live"] == false))
        {
            break r["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no recording of the read: {body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    b.goto(&format!("http://127.0.0.1:{admin}/console#/recordings"));
    b.click(&b.wait(&format!("a[href='#/recordings/{id}']"), Duration::from_secs(10)));
    b.wait_text("#verified", "chain intact, sealed", Duration::from_secs(10));
    let timeline = b.wait_text("#timeline", &masked, Duration::from_secs(10));
    assert!(!timeline.contains(&secret));
    screenshot(&b, "walkthrough-replay");
    let (_, held_rec) = http(admin, "GET", "/api/v1/recordings?decision=approved", APPROVER_TOKEN, "");
    assert!(
        held_rec.contains("\"total\":1"),
        "the approved write's session: {held_rec}"
    );
    drop(g);
    direct_psql(&format!("drop table {t}"));
}

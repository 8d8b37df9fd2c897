//! Session recording through the real gateway: what a recording holds,
//! that it carries no secret in clear, that `verify` catches edits,
//! truncation and reordering at the right record and accepts what was
//! synced before a SIGKILL; the auditors' API (every route against every
//! role, filters and paging, downloads, a live tail) and the audit log.
mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const ADMIN: &str = "rec-admin-token";
const AUDITOR: &str = "rec-auditor-token";
const APPROVER: &str = "rec-approver-token";
const OTHER_TOKEN: &str = "rec-other-identity-token";
/// A secret the server returns (built-in rule: GitHub token) and one the
/// client sends in a statement.
const SECRET_OUT: &str = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";
const SECRET_IN: &str = "AKIAQRSTUVWXYZ234567";

fn config(admin_port: u16, results: &str, sync_ms: u64) -> String {
    format!(
        r#"
[[identity]]
name = "other"
token_hash = "{other}"
targets = ["*"]
roles = ["writer"]

[recording]
dir = "rec"
results = "{results}"
sync_interval_ms = {sync_ms}
full_max_rows = 100

[admin]
listen = "127.0.0.1:{admin_port}"
[[admin.token]]
name = "ops"
token_hash = "{admin}"
roles = ["admin"]
[[admin.token]]
name = "audit"
token_hash = "{auditor}"
roles = ["auditor"]
[[admin.token]]
name = "rev"
token_hash = "{approver}"
roles = ["approver"]

[policy]
default_role = "agent"
[policy.roles.agent]
write = "approve"
delete = "deny"
approvers = ["approver"]
approval_timeout_secs = 20
[policy.roles.writer]
write = "allow"
delete = "allow"
"#,
        other = token_hash(OTHER_TOKEN),
        admin = token_hash(ADMIN),
        auditor = token_hash(AUDITOR),
        approver = token_hash(APPROVER),
    )
}

struct Rec {
    g: Gatehouse,
    admin: u16,
}

impl Rec {
    fn start(results: &str, sync_ms: u64) -> Rec {
        let admin = free_port();
        Rec {
            g: Gatehouse::start("", &config(admin, results, sync_ms)),
            admin,
        }
    }
    fn dir(&self) -> PathBuf {
        self.g.dir.path().join("rec")
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    gatehouse::record::collect(dir, &mut out).unwrap();
    out.sort();
    out
}

fn session_files(dir: &Path) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| !gatehouse::record::is_audit(p))
        .collect()
}

fn verify_cmd(path: &Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("verify")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn records(path: &Path) -> Vec<Value> {
    gatehouse::record::records(std::fs::File::open(path).unwrap()).collect()
}

/// A session of the test identity: reads with a secret in the result, a
/// statement with a secret in it, an error, a denial, an extended query
/// with parameters.
async fn workload(g: &Gatehouse, table: &str) {
    let (c, _n) = through(g).await;
    c.batch_execute(&format!(
        "select '{}' || '{}' as token",
        &SECRET_OUT[..10],
        &SECRET_OUT[10..]
    ))
    .await
    .unwrap();
    let rows = c
        .query(
            &format!("select $1::text as k, '{SECRET_IN}' as inline"),
            &[&"param-value"],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let _ = c.simple_query("select nope").await.unwrap_err();
    let e = c
        .simple_query(&format!("delete from {table} where id = 1"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
    c.simple_query("select generate_series(1, 5)").await.unwrap();
    let rows = c.simple_query("select generate_series(1, 500)").await.unwrap();
    assert_eq!(rows.len(), 502, "500 rows, the row description and the command tag");
}

#[tokio::test]
async fn a_session_is_recorded_masked_chained_and_verifiable() {
    let r = Rec::start("full", 1000);
    let t = unique("gh_rec");
    direct()
        .await
        .batch_execute(&format!("create table {t} (id int)"))
        .await
        .unwrap();
    workload(&r.g, &t).await;
    // Off the test's runtime: it must run the client's connection task,
    // which says goodbye to the gateway.
    let admin = r.admin;
    let rec = tokio::task::spawn_blocking(move || {
        RecView { admin }.wait(1);
        RecView { admin }.json("/api/v1/recordings")["recordings"]
            .as_array()
            .unwrap()
            .clone()
    })
    .await
    .unwrap();
    assert_eq!(rec[0]["identity"], "agent");

    let files = session_files(&r.dir());
    assert_eq!(files.len(), 1, "{files:?}");
    let recs = records(&files[0]);
    let kinds: Vec<&str> = recs.iter().map(|v| v["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"open"));
    assert_eq!(&kinds[kinds.len() - 2..], &["close", "seal"]);
    let open = &recs[0];
    assert_eq!(open["target"], "postgres");
    assert_eq!(open["account"], "default");
    assert_eq!(open["tls"]["client"], false);
    let stmts: Vec<&Value> = recs.iter().filter(|v| v["kind"] == "statement").collect();
    assert_eq!(stmts.len(), 6, "{stmts:?}");
    assert_eq!(stmts[0]["class"], "read");
    assert_eq!(stmts[1]["protocol"], "extended");
    assert_eq!(stmts[1]["params"], serde_json::json!(["param-value"]));
    assert!(
        !stmts[1]["sql"].as_str().unwrap().contains(SECRET_IN) && stmts[1]["sql"].as_str().unwrap().contains("****"),
        "the client's secret is masked: {}",
        stmts[1]["sql"]
    );
    assert_eq!(stmts[3]["decision"], "deny");
    assert_eq!(stmts[3]["class"], "delete");
    assert_eq!(stmts[3]["error"]["code"], "42501");
    let results: Vec<&Value> = recs.iter().filter(|v| v["kind"] == "result").collect();
    assert!(
        results[0]["masked"].as_object().is_some_and(|m| !m.is_empty()),
        "{:?}",
        results[0]
    );
    assert!(results.iter().any(|r| r["error"]["code"] == "42703"));
    assert!(results.iter().any(|r| r["tag"] == "SELECT 5" && r["rows"] == 5));
    // `full`: the rows as the client saw them.
    let rows: Vec<&Value> = recs.iter().filter(|v| v["kind"] == "rows").collect();
    let all_rows = serde_json::to_string(&rows).unwrap();
    assert!(all_rows.contains("[MASKED:"), "{all_rows}");
    assert!(all_rows.contains("\"5\""), "{all_rows}");

    // Past `full_max_rows` (100) a result's rows are not recorded: a gap
    // record says how many.
    let gaps: Vec<&Value> = recs.iter().filter(|v| v["kind"] == "gap").collect();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0]["rows"], 400);
    let last_rows: usize = recs
        .iter()
        .filter(|v| v["kind"] == "rows" && v["n"] == 5)
        .map(|v| v["rows"].as_array().unwrap().len())
        .sum();
    assert_eq!(last_rows, 100);

    // No secret in clear anywhere in the recordings.
    for f in self::files(&r.dir()) {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains(SECRET_OUT) && !text.contains(SECRET_IN),
            "{}",
            f.display()
        );
    }
    let (code, out) = verify_cmd(&r.dir());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 intact, 0 failed"), "{out}");

    // Replay: a transcript and CSV from the file.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["replay", "--no-wait"])
        .arg(&files[0])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("[delete deny]") && text.contains("sealed after"),
        "{text}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["replay", "--no-wait", "--format", "csv"])
        .arg(&files[0])
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(csv.starts_with("seq,time,kind,"), "{csv}");
    assert_eq!(csv.lines().count(), recs.len() + 1);
    direct().await.batch_execute(&format!("drop table {t}")).await.unwrap();
}

/// The recorder writes a Bind's parameters once and a RowDescription's
/// column names once, and repeats them: every statement must still carry
/// its own parameters and every result its own columns, whatever ran
/// before it in the session.
#[tokio::test]
async fn each_statement_carries_its_own_parameters_and_each_result_its_own_columns() {
    let r = Rec::start("summary", 1000);
    let (c, _n) = through(&r.g).await;
    for _ in 0..2 {
        c.simple_query("select 1 as a").await.unwrap();
        c.simple_query("select 2 as b, 3 as c").await.unwrap();
    }
    c.simple_query("select").await.unwrap();
    let one = c.prepare("select $1::text as p").await.unwrap();
    for v in ["first", SECRET_IN, "third"] {
        c.query(&one, &[&v]).await.unwrap();
    }
    let two = c.prepare("select $1::text as x, $2::int4 as y").await.unwrap();
    c.query(&two, &[&None::<&str>, &Some(7i32)]).await.unwrap();
    c.query(&one, &[&"fourth"]).await.unwrap();
    drop(c);
    let admin = r.admin;
    tokio::task::spawn_blocking(move || RecView { admin }.wait(1))
        .await
        .unwrap();

    let files = session_files(&r.dir());
    assert_eq!(files.len(), 1, "{files:?}");
    let recs = records(&files[0]);
    let stmts: Vec<&Value> = recs.iter().filter(|v| v["kind"] == "statement").collect();
    let results: Vec<&Value> = recs.iter().filter(|v| v["kind"] == "result").collect();
    assert_eq!(stmts.len(), 10, "{stmts:?}");
    assert_eq!(results.len(), 10, "{results:?}");
    let columns: Vec<&Value> = results[..5].iter().map(|r| &r["columns"]).collect();
    assert_eq!(
        columns,
        [
            &serde_json::json!(["a"]),
            &serde_json::json!(["b", "c"]),
            &serde_json::json!(["a"]),
            &serde_json::json!(["b", "c"]),
            // No columns: no member.
            &Value::Null,
        ]
    );
    for s in &stmts[..5] {
        assert!(s.get("params").is_none(), "{s}");
    }
    assert_eq!(stmts[5]["params"], serde_json::json!(["first"]));
    let masked = stmts[6]["params"][0].as_str().unwrap();
    assert!(!masked.contains(SECRET_IN) && masked.contains("****"), "{masked}");
    assert_eq!(stmts[7]["params"], serde_json::json!(["third"]));
    // Binary parameters (the driver's choice): NULL, and an int4 as hex.
    assert_eq!(stmts[8]["params"], serde_json::json!([null, "\\x00000007"]));
    assert_eq!(stmts[9]["params"], serde_json::json!(["fourth"]));
    for (s, r) in stmts.iter().zip(&results) {
        assert_eq!(s["n"], r["n"], "a result answers its own statement");
    }
    let (code, out) = verify_cmd(&r.dir());
    assert_eq!(code, 0, "{out}");
}

/// A RowDescription answering a Describe in a group of its own (a client
/// preparing a statement while earlier and later executions are in
/// flight) is not the next statement's: that statement's result names no
/// columns it did not have.
#[tokio::test]
async fn a_pipelined_describe_does_not_lend_its_columns_to_the_next_statement() {
    let r = Rec::start("summary", 1000);
    let (c, _n) = through(&r.g).await;
    let first = c.prepare("select 1::int4 as first_col").await.unwrap();
    let third = c.prepare("select 3::int4 as third_col").await.unwrap();
    // Bind/Execute/Sync, Parse/Describe/Sync, Bind/Execute/Sync, sent
    // before any answer is read.
    let (a, b, d) = tokio::join!(
        c.query(&first, &[]),
        c.prepare("select 2::int4 as described_only"),
        c.query(&third, &[])
    );
    assert_eq!(a.unwrap()[0].get::<_, i32>(0), 1);
    b.unwrap();
    assert_eq!(d.unwrap()[0].get::<_, i32>(0), 3);
    drop(c);
    let admin = r.admin;
    tokio::task::spawn_blocking(move || RecView { admin }.wait(1))
        .await
        .unwrap();
    let files = session_files(&r.dir());
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        !text
            .lines()
            .any(|l| l.contains("\"kind\":\"result\"") && l.contains("described_only")),
        "a result took the Describe's columns: {text}"
    );
}

/// Rewrites line `i` of a file with `f`.
fn edit_line(src: &Path, dst: &Path, f: impl Fn(usize, String) -> Option<String>) {
    let text = std::fs::read_to_string(src).unwrap();
    let mut out = String::new();
    for (i, l) in text.lines().enumerate() {
        if let Some(l) = f(i, l.to_string()) {
            out.push_str(&l);
            out.push('\n');
        }
    }
    std::fs::write(dst, out).unwrap();
}

#[tokio::test]
async fn verify_names_the_record_an_edit_truncation_or_reorder_breaks() {
    let r = Rec::start("summary", 1000);
    let t = unique("gh_rec_v");
    direct()
        .await
        .batch_execute(&format!("create table {t} (id int)"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    workload(&r.g, &t).await;
    let src = loop {
        if let Some(f) = session_files(&r.dir())
            .into_iter()
            .find(|f| records(f).last().is_some_and(|v| v["kind"] == "seal"))
        {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let n = records(&src).len();
    assert!(n >= 10, "{n}");
    let (ok, _) = verify_cmd(&src);
    assert_eq!(ok, 0);

    // An edited statement: the record after it fails.
    let edited = dir.path().join("edited.ghrec");
    edit_line(&src, &edited, |i, l| {
        Some(if i == 3 {
            l.replace("\"read\"", "\"write\"").replace("select", "SELECT")
        } else {
            l
        })
    });
    let (code, out) = verify_cmd(&edited);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAILED at record 4") && out.contains("record 3 was changed"),
        "{out}"
    );

    // Truncated at a record boundary: no seal after the last record kept.
    let cut = dir.path().join("cut.ghrec");
    edit_line(&src, &cut, |i, l| (i < 6).then_some(l));
    let (code, out) = verify_cmd(&cut);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAILED at record 6") && out.contains("no seal after record 5"),
        "{out}"
    );

    // Truncated inside a record.
    let torn = dir.path().join("torn.ghrec");
    let bytes = std::fs::read(&src).unwrap();
    std::fs::write(&torn, &bytes[..bytes.len() - 7]).unwrap();
    let (code, out) = verify_cmd(&torn);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("FAILED at record {}", n - 1)), "{out}");

    // Two records swapped.
    let lines: Vec<String> = std::fs::read_to_string(&src)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let swapped = dir.path().join("swapped.ghrec");
    edit_line(&src, &swapped, |i, l| {
        Some(match i {
            2 => lines[3].clone(),
            3 => lines[2].clone(),
            _ => l,
        })
    });
    let (code, out) = verify_cmd(&swapped);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAILED at record 2") && out.contains("out of sequence"),
        "{out}"
    );

    // A removed record.
    let removed = dir.path().join("removed.ghrec");
    edit_line(&src, &removed, |i, l| (i != 5).then_some(l));
    let (code, out) = verify_cmd(&removed);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED at record 5"), "{out}");

    // A directory: names the broken file, counts the rest.
    let (code, out) = verify_cmd(dir.path());
    assert_eq!(code, 1);
    assert!(out.contains("5 recording(s) checked, 0 intact, 5 failed"), "{out}");
    direct().await.batch_execute(&format!("drop table {t}")).await.unwrap();
}

#[tokio::test]
async fn after_sigkill_what_was_synced_verifies() {
    let r = Rec::start("summary", 100);
    let (c, _n) = through(&r.g).await;
    for i in 0..20 {
        c.simple_query(&format!("select {i}")).await.unwrap();
    }
    // Past two sync intervals: all of it is on disk.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut g = r.g;
    // SAFETY-free: a signal to our own child.
    let pid = g.child.id() as i32;
    unsafe_kill(pid);
    let _ = g.child.wait();
    let files = session_files(&g.dir.path().join("rec"));
    assert_eq!(files.len(), 1);
    let (code, out) = verify_cmd(&files[0]);
    assert_eq!(code, 1, "an unsealed recording is not intact: {out}");
    // open + 20 statements + 20 results, all intact; the seal is missing.
    assert!(
        out.contains("FAILED at record 41") && out.contains("no seal after record 40"),
        "{out}"
    );
    assert!(out.contains("(41 records before it are intact)"), "{out}");
    let recs = records(&files[0]);
    assert_eq!(recs.iter().filter(|v| v["kind"] == "statement").count(), 20);
    drop(c);
}

fn unsafe_kill(pid: i32) {
    let st = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Every route, every role: allowed routes never answer 401/403, the
/// others answer 403 (401 without a valid token).
#[tokio::test]
async fn every_route_against_every_role() {
    let r = Rec::start("summary", 1000);
    workload_small(&r.g).await;
    let rec_id = tokio::task::spawn_blocking({
        let admin = r.admin;
        move || {
            for _ in 0..200 {
                let (_, b) = http(admin, "GET", "/api/v1/recordings", ADMIN, "");
                let v: Value = serde_json::from_str(&b).unwrap_or_default();
                // A finished one: a live session's tail streams until it ends.
                let done = v["recordings"]
                    .as_array()
                    .and_then(|a| a.iter().find(|r| r["live"] == false))
                    .and_then(|r| r["id"].as_str());
                if let Some(id) = done {
                    return id.to_string();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("no finished recording")
        }
    })
    .await
    .unwrap();
    let tokens: [(&str, Option<&'static str>); 5] = [
        ("admin", Some(ADMIN)),
        ("auditor", Some(AUDITOR)),
        ("approver", Some(APPROVER)),
        ("unknown", Some("not-a-token")),
        ("none", None),
    ];
    let admin = r.admin;
    let rec_id2 = rec_id.clone();
    tokio::task::spawn_blocking(move || {
        for (method, path, roles, _) in gatehouse::control::admin::ROUTES {
            let concrete = path
                .replace("{id}", if path.contains("recordings") { &rec_id2 } else { "999" })
                .replace("{token}", "x");
            for (role, token) in &tokens {
                // Tails stream until the session ends: a finished one here.
                eprintln!("{role}: {method} {concrete}");
                let (st, body) = if concrete.ends_with("/events") && !concrete.contains("recordings") {
                    // The live inbox streams until it is closed: its head only.
                    (
                        status_only(admin, &method.to_uppercase(), &concrete, *token),
                        String::new(),
                    )
                } else {
                    match token {
                        Some(t) => http(admin, &method.to_uppercase(), &concrete, t, ""),
                        None => http_noauth(admin, &method.to_uppercase(), &concrete),
                    }
                };
                let allowed = roles.is_empty() || roles.iter().any(|r| r.as_str() == *role);
                if allowed {
                    assert!(st != 401 && st != 403, "{role} may {method} {path}: got {st} {body}");
                } else if matches!(*role, "unknown" | "none") {
                    assert_eq!(st, 401, "{role} {method} {path}: {body}");
                } else {
                    assert_eq!(st, 403, "{role} must not {method} {path}: {body}");
                }
            }
        }
    })
    .await
    .unwrap();
    // The downloads and tails above are in the audit log, whose chain holds.
    let (st, audit) = tokio::task::spawn_blocking(move || http(admin, "GET", "/api/v1/audit", AUDITOR, ""))
        .await
        .unwrap();
    assert_eq!(st, 200);
    assert!(
        audit.contains("\"action\":\"tail\"") && audit.contains("\"action\":\"download\""),
        "{audit}"
    );
    let rep = gatehouse::record::verify_reader(Path::new("audit.ghrec"), audit.as_bytes(), true);
    assert!(rep.broken.is_none(), "{rep:?}");
}

fn http_noauth(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    let st = r.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (
        st,
        r.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default(),
    )
}

async fn workload_small(g: &Gatehouse) {
    let (c, _n) = through(g).await;
    c.simple_query("select 'needle_statement_text'").await.unwrap();
}

#[tokio::test]
async fn filters_paging_downloads_and_the_audit_log() {
    let r = Rec::start("summary", 1000);
    let t = unique("gh_rec_f");
    direct()
        .await
        .batch_execute(&format!("create table {t} (id int)"))
        .await
        .unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Three sessions of `agent` (one with a denial), two of `other` on `test`.
    workload(&r.g, &t).await;
    workload_small(&r.g).await;
    workload_small(&r.g).await;
    for _ in 0..2 {
        let ci = format!(
            "host=127.0.0.1 port={} user=other password={OTHER_TOKEN} dbname=test sslmode=disable",
            r.g.port
        );
        let (c, _) = connect_collecting(&ci).await.unwrap();
        c.simple_query("select 'from other'").await.unwrap();
    }
    let admin = r.admin;
    tokio::task::spawn_blocking(move || {
        let r = RecView { admin };
        r.wait(5);
        let q = |s: &str| r.json(&format!("/api/v1/recordings?{s}"));
        assert_eq!(q("")["total"], 5);
        assert_eq!(q("identity=agent")["total"], 3);
        assert_eq!(q("identity=other")["total"], 2);
        assert_eq!(q("target=test")["total"], 2);
        assert_eq!(q("identity=other&target=postgres")["total"], 0);
        assert_eq!(q("decision=deny")["total"], 1);
        assert_eq!(q("text=needle_statement")["total"], 2);
        assert_eq!(q("text=NEEDLE_STATEMENT&identity=other")["total"], 0);
        assert_eq!(q(&format!("since={before}"))["total"], 5);
        assert_eq!(q("until=1000")["total"], 0);
        assert_eq!(q("since=2000-01-01T00:00:00Z")["total"], 5);
        // Paging: newest first, stable pages.
        let all: Vec<String> = q("limit=5")["recordings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect();
        let p1 = q("limit=2&offset=0");
        let p2 = q("limit=2&offset=2");
        let p3 = q("limit=2&offset=4");
        let paged: Vec<String> = [p1, p2, p3]
            .iter()
            .flat_map(|p| p["recordings"].as_array().unwrap().clone())
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(paged, all);
        let started: Vec<u64> = q("limit=5")["recordings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["started_us"].as_u64().unwrap())
            .collect();
        assert!(started.windows(2).all(|w| w[0] >= w[1]), "{started:?}");
        // Bad filters are 400s.
        for bad in ["limit=0", "limit=5000", "since=yesterday", "decision=maybe", "offset=x"] {
            let (st, _) = http(admin, "GET", &format!("/api/v1/recordings?{bad}"), ADMIN, "");
            assert_eq!(st, 400, "{bad}");
        }
        // Detail and downloads of the session with the denial.
        let id = q("decision=deny")["recordings"][0]["id"].as_str().unwrap().to_string();
        let d = r.json(&format!("/api/v1/recordings/{id}"));
        assert_eq!(d["verified"]["sealed"], true, "{d}");
        assert_eq!(d["open"]["identity"], "agent");
        assert_eq!(d["close"]["end"], "client-terminate");
        let (st, jsonl) = http(admin, "GET", &format!("/api/v1/recordings/{id}/events"), AUDITOR, "");
        assert_eq!(st, 200);
        assert!(jsonl.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()));
        assert_eq!(jsonl.lines().count() as u64, d["verified"]["intact"].as_u64().unwrap());
        let (st, csv) = http(
            admin,
            "GET",
            &format!("/api/v1/recordings/{id}/events?format=csv"),
            AUDITOR,
            "",
        );
        assert_eq!(st, 200);
        assert!(
            csv.starts_with("seq,time,kind") && csv.contains(",delete,deny,"),
            "{csv}"
        );
        let (st, txt) = http(
            admin,
            "GET",
            &format!("/api/v1/recordings/{id}/events?format=text"),
            AUDITOR,
            "",
        );
        assert_eq!(st, 200);
        assert!(txt.contains("[delete deny]") && txt.contains("session closed"), "{txt}");
        let (st, _) = http(admin, "GET", "/api/v1/recordings/nope/events", AUDITOR, "");
        assert_eq!(st, 404);
        // `gatehouse replay` over the admin API.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["replay", "--no-wait", "--session", &id, "--admin"])
            .arg(format!("http://127.0.0.1:{admin}"))
            .env("GATEHOUSE_ADMIN_TOKEN", AUDITOR)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text, txt, "the same transcript as the download");
        let (st, _) = http(
            admin,
            "GET",
            &format!("/api/v1/recordings/{id}/events?format=xml"),
            AUDITOR,
            "",
        );
        assert_eq!(st, 400);

        // Admin actions are audited: a kill of no session, a reload, the
        // downloads above; the audit log's chain verifies.
        let (st, _) = http(admin, "POST", "/api/v1/sessions/12345/kill", ADMIN, "");
        assert_eq!(st, 404);
        let (st, _) = http(admin, "POST", "/api/v1/reload", ADMIN, "");
        assert_eq!(st, 200);
        // The audit log is written by the recorder's thread: its records
        // arrive when that thread gets to them.
        let expected: [(String, String, String); 3] = [
            ("audit".into(), "download".into(), format!("recording {id}")),
            ("ops".into(), "kill".into(), "session 12345".into()),
            ("ops".into(), "reload".into(), "configuration".into()),
        ];
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let audit = loop {
            let (st, audit) = http(admin, "GET", "/api/v1/audit", AUDITOR, "");
            assert_eq!(st, 200);
            let recs: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            let actions: Vec<(String, String, String)> = recs
                .iter()
                .filter(|v| v["kind"] == "admin")
                .map(|v| {
                    (
                        v["who"].as_str().unwrap().to_string(),
                        v["action"].as_str().unwrap().to_string(),
                        v["object"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            if expected.iter().all(|e| actions.contains(e)) {
                break audit;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{expected:?} not all in {actions:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let rep = gatehouse::record::verify_reader(Path::new("audit.ghrec"), audit.as_bytes(), true);
        assert!(rep.broken.is_none(), "{rep:?}");
        // The approver reads neither recordings nor the audit log.
        let (st, _) = http(admin, "GET", &format!("/api/v1/recordings/{id}/events"), APPROVER, "");
        assert_eq!(st, 403);
    })
    .await
    .unwrap();
    let (code, out) = verify_cmd(&r.dir());
    assert_eq!(code, 0, "{out}");
    direct().await.batch_execute(&format!("drop table {t}")).await.unwrap();
}

struct RecView {
    admin: u16,
}

impl RecView {
    fn json(&self, path: &str) -> Value {
        let (st, body) = http(self.admin, "GET", path, ADMIN, "");
        assert_eq!(st, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
    fn wait(&self, n: u64) {
        // Up to 30 s: under the full suite on two cores the recorder's
        // threads can be far behind the sessions.
        for _ in 0..600 {
            let v = self.json("/api/v1/recordings?limit=1000");
            let done = v["recordings"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["live"] == false)
                .count() as u64;
            if done >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{n} recordings did not finish");
    }
}

#[tokio::test]
async fn a_live_tail_sees_a_statement_while_the_session_is_open() {
    let r = Rec::start("summary", 1000);
    let (c, _n) = through(&r.g).await;
    c.simple_query("select 'first'").await.unwrap();
    let admin = r.admin;
    // The live session's recording id.
    let id = tokio::task::spawn_blocking(move || {
        for _ in 0..200 {
            let (_, b) = http(admin, "GET", "/api/v1/recordings", AUDITOR, "");
            let v: Value = serde_json::from_str(&b).unwrap_or_default();
            if let Some(id) = v["recordings"][0]["id"].as_str() {
                assert_eq!(v["recordings"][0]["live"], true);
                return id.to_string();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no live recording")
    })
    .await
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let path = format!("/api/v1/recordings/{id}/tail");
    std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {AUDITOR}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let r = BufReader::new(s);
        for line in r.lines() {
            let Ok(line) = line else { break };
            if let Some(d) = line.strip_prefix("data: ") {
                if tx.send(d.to_string()).is_err() {
                    break;
                }
            }
        }
    });
    // The backlog: open, the first statement and its result.
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("'first'")) {
        seen.push(next_line(&mut rx).await);
    }
    // A statement now, while the session is open, arrives on the tail.
    c.simple_query("select 'tailed_while_open'").await.unwrap();
    loop {
        let l = next_line(&mut rx).await;
        if l.contains("tailed_while_open") {
            let v: Value = serde_json::from_str(&l).unwrap();
            assert_eq!(v["kind"], "statement");
            break;
        }
    }
    // Closing the session ends the stream with the seal.
    drop(c);
    loop {
        let l = next_line(&mut rx).await;
        if l.contains("\"seal\"") {
            break;
        }
    }
}

async fn next_line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a tail event")
        .expect("stream open")
}

#[test]
fn retention_by_age_and_by_total_size() {
    let rec = tempfile::tempdir().unwrap();
    let old = fake_recording(rec.path(), "old", 10 * 86_400, 1000);
    let older_recent = fake_recording(rec.path(), "recent-2h", 7200, 20_000);
    let newest = fake_recording(rec.path(), "recent-1h", 3600, 20_000);
    assert_eq!(verify_cmd(rec.path()).0, 0);
    let admin = free_port();
    let g = Gatehouse::start(
        "",
        &format!(
            "[recording]\ndir = {:?}\nretention_days = 1\nretention_min_days = 0\nmax_total_bytes = 30000\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n[[admin.token]]\nname = \"ops\"\ntoken_hash = \"{}\"\nroles = [\"admin\"]\n",
            rec.path().display().to_string(),
            token_hash(ADMIN)
        ),
    );
    assert!(!old.exists(), "older than retention_days");
    assert!(!older_recent.exists(), "the oldest goes first past max_total_bytes");
    assert!(newest.exists());
    let (st, body) = http(admin, "GET", "/api/v1/recordings", ADMIN, "");
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(v["recordings"][0]["id"], "recent-1h");
    let (_, metrics) = http(admin, "GET", "/metrics", ADMIN, "");
    assert!(metrics.contains("gatehouse_recorder_deleted_total 2"), "{metrics}");
    drop(g);
}

/// A tiny recorder queue: sessions wait for room, no statement is lost,
/// result rows may be (each loss in a gap record), and the chain holds.
#[tokio::test]
async fn under_backlog_statements_wait_and_rows_become_gaps() {
    let g = Gatehouse::start(
        "",
        "[recording]\ndir = \"rec\"\nresults = \"full\"\nqueue_events = 16\nfull_max_rows = 100000\nfull_max_bytes = 100000000\n",
    );
    let (c, _n) = through(&g).await;
    let ids: Vec<i32> = (0..300).collect();
    let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> = ids.iter().map(|i| [i as _]).collect();
    let futs = params
        .iter()
        .map(|p| c.query_one("select $1::int, repeat('x', 200)", p));
    let rows = futures::future::join_all(futs).await;
    assert!(rows.iter().all(|r| r.is_ok()));
    let big = c
        .simple_query("select g, repeat('y', 100) from generate_series(1, 20000) g")
        .await
        .unwrap();
    assert_eq!(big.len(), 20_002);
    drop(c);
    let dir = g.dir.path().join("rec");
    let file = loop {
        if let Some(f) = session_files(&dir)
            .into_iter()
            .find(|f| records(f).last().is_some_and(|v| v["kind"] == "seal"))
        {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let recs = records(&file);
    assert_eq!(recs.iter().filter(|v| v["kind"] == "statement").count(), 301);
    assert_eq!(recs.iter().filter(|v| v["kind"] == "result").count(), 301);
    let recorded: u64 = recs
        .iter()
        .filter(|v| v["kind"] == "rows")
        .map(|v| v["rows"].as_array().unwrap().len() as u64)
        .sum();
    let lost: u64 = recs
        .iter()
        .filter(|v| v["kind"] == "gap")
        .map(|v| v["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(recorded + lost, 20_300, "every row is recorded or counted in a gap");
    let (code, out) = verify_cmd(&file);
    assert_eq!(code, 0, "{out}");
}

/// Recordings, the audit log and their directories are not for others,
/// whatever the umask: files 0640 at most, directories 0750.
#[tokio::test]
async fn recordings_are_not_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let r = Rec::start("summary", 50);
    workload_small(&r.g).await;
    let admin = r.admin;
    tokio::task::spawn_blocking(move || RecView { admin }.wait(1))
        .await
        .unwrap();
    let all = files(&r.dir());
    assert!(all.iter().any(|p| gatehouse::record::is_audit(p)), "{all:?}");
    assert!(all.iter().any(|p| !gatehouse::record::is_audit(p)), "{all:?}");
    for f in &all {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "{}: {mode:o}", f.display());
        let dir = f.parent().unwrap();
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o750, 0, "{}: {mode:o}", dir.display());
    }
}

/// Peak resident memory of a process, from /proc (kB).
fn peak_rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Downloads and tails are streamed from disk: a recording of about
/// 120 MB goes out whole, in every format, while the gateway's peak memory
/// grows by a small fraction of it.
#[test]
fn downloads_of_a_large_recording_are_streamed() {
    use serde_json::json;
    let rec = tempfile::tempdir().unwrap();
    let id = "1764150000-0badcafe";
    let mut c = gatehouse::record::Chain::default();
    let t = gatehouse::record::now_us() - 3600 * 1_000_000;
    let day = rec.path().join("2026-01-01");
    std::fs::create_dir_all(&day).unwrap();
    let path = day.join(format!("{id}.ghrec"));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        f.write_all(&c.line(
            t,
            "open",
            json!({ "id": id, "identity": "agent", "target": "postgres" }),
        ))
        .unwrap();
        let filler = "y".repeat(1000);
        for n in 0..120_000u64 {
            f.write_all(&c.line(
                t + n,
                "statement",
                json!({ "n": n, "sql": format!("select '{filler}'"), "decision": "allow" }),
            ))
            .unwrap();
        }
        f.write_all(&c.line(t + 200_000, "close", json!({ "end": "client-terminate" })))
            .unwrap();
        let n = c.seq();
        f.write_all(&c.line(t + 200_001, "seal", json!({ "records": n })))
            .unwrap();
    }
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 120_000_000, "{size}");
    let admin = free_port();
    let g = Gatehouse::start(
        "",
        &format!(
            "[recording]\ndir = {:?}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[[admin.token]]\nname = \"ops\"\ntoken_hash = \"{}\"\nroles = [\"admin\"]\n",
            rec.path().display().to_string(),
            token_hash(ADMIN)
        ),
    );
    let before = peak_rss_kb(g.pid());
    // Read each response as it comes, counting bytes, keeping none.
    let download = |path: &str| -> (u64, String) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let (mut total, mut head) = (0u64, String::new());
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            if head.len() < 512 {
                head.push_str(&String::from_utf8_lossy(&buf[..n.min(512)]));
            }
            total += n as u64;
        }
        (total, head)
    };
    let (bytes, head) = download(&format!("/api/v1/recordings/{id}/events?format=jsonl"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains(&format!("content-length: {size}")),
        "{head}"
    );
    assert!(bytes > size, "{bytes} of {size}");
    for fmt in ["csv", "text"] {
        let (bytes, head) = download(&format!("/api/v1/recordings/{id}/events?format={fmt}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(bytes > 120_000_000, "{fmt}: {bytes}");
    }
    let (bytes, head) = download(&format!("/api/v1/recordings/{id}/tail"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(bytes > 120_000_000, "tail: {bytes}");
    let grown_mb = peak_rss_kb(g.pid()).saturating_sub(before) / 1024;
    assert!(
        grown_mb < 48,
        "the peak grew by {grown_mb} MB for a {} MB recording",
        size >> 20
    );
    eprintln!(
        "peak memory grew by {grown_mb} MB serving a {} MB recording four times",
        size >> 20
    );
}

//! Fleet mode: three gatehouse instances on loopback ports sharing one
//! control database (a database of its own on the machine's PostgreSQL,
//! or a private cluster for the outage test). A statement held on one
//! instance is decided through another's admin API; N-of-M counts
//! approvals made on different instances; an instance without its control
//! database refuses holds and catches up; a killed instance's review ends.
mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ADMIN: &str = "fleet-admin-token-0001";
const DBA1: &str = "fleet-dba1-token-0002";
const DBA2: &str = "fleet-dba2-token-0003";
/// An approver token named like the identity that asks.
const AGENT_APPROVER: &str = "fleet-agent-approver-0004";
const AUDITOR: &str = "fleet-auditor-token-0005";
/// The identity with a fleet-wide budget.
const COUNTED: &str = "fleet-counted-identity-0006";
/// Statements per minute the `metered` role may run, over the fleet.
const BUDGET: u64 = 30;
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A control database of the test's own on the machine's PostgreSQL,
/// dropped at the end.
struct ControlDb {
    name: String,
}

impl ControlDb {
    fn new() -> ControlDb {
        let name = unique("gh_fleet");
        direct_psql(&format!("create database {name}"));
        ControlDb { name }
    }
    fn dsn(&self) -> String {
        format!("host=127.0.0.1 port=5432 user=postgres dbname={}", self.name)
    }
    fn query(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                &self.name,
                "-X",
                "-At",
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for ControlDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-X", "-c"])
            .arg(format!("drop database if exists {} with (force)", self.name))
            .output();
    }
}

struct Member {
    g: Gatehouse,
    admin: u16,
}

/// What the members' configurations share.
#[derive(Clone)]
struct Setup {
    control: String,
    required: u32,
    timeout_secs: u64,
    sync_ms: u64,
    /// Extra `[fleet]` lines (a password source).
    fleet_extra: String,
    /// Appended to the configuration (`[recording]`, `[fleet.bucket]`),
    /// with `{instance}` replaced by the member's name.
    tail: String,
}

fn tokens() -> String {
    let mut s = String::new();
    for (name, tok, roles) in [
        ("ops", ADMIN, "\"admin\""),
        ("dba1", DBA1, "\"approver\", \"dba\""),
        ("dba2", DBA2, "\"approver\", \"dba\""),
        ("agent", AGENT_APPROVER, "\"approver\", \"dba\""),
        ("audit", AUDITOR, "\"auditor\""),
    ] {
        s += &format!(
            "[[admin.token]]\nname = \"{name}\"\ntoken_hash = \"{}\"\nroles = [{roles}]\n",
            token_hash(tok)
        );
    }
    s
}

fn member(instance: &str, s: &Setup) -> Member {
    member_on(instance, s, free_port(), free_port())
}

fn member_on(instance: &str, s: &Setup, port: u16, admin: u16) -> Member {
    let m = member_unchecked(instance, s, port, admin);
    m.wait_connected();
    m
}

/// A member, without waiting for its control database.
fn member_unchecked(instance: &str, s: &Setup, port: u16, admin: u16) -> Member {
    let extra = format!(
        r#"
[[identity]]
name = "counted"
token_hash = "{counted}"
targets = ["*"]
roles = ["metered"]

[admin]
listen = "127.0.0.1:{admin}"
{tokens}

[policy]
default_role = "agent"
[policy.roles.agent]
read = "allow"
write = "approve"
delete = "approve"
ddl = "deny"
admin = "deny"
unknown = "deny"
approvers = ["dba"]
approvals_required = {required}
approval_timeout_secs = {timeout}

[policy.roles.metered]
write = "allow"
delete = "allow"
[policy.roles.metered.budget]
statements_per_minute = {budget}
action = "deny"

[fleet]
instance = "{instance}"
control = "{control}"
sync_ms = {sync_ms}
timeout_secs = 2
{fleet_extra}
"#,
        tokens = tokens(),
        counted = token_hash(COUNTED),
        budget = BUDGET,
        required = s.required,
        timeout = s.timeout_secs,
        control = s.control,
        sync_ms = s.sync_ms,
        fleet_extra = s.fleet_extra,
    ) + &s.tail.replace("{instance}", instance);
    let g = Gatehouse::start_with(port, &config_text(port, "", &extra));
    Member { g, admin }
}

impl Member {
    fn readyz(&self) -> Value {
        if std::net::TcpStream::connect(("127.0.0.1", self.admin)).is_err() {
            return Value::Null;
        }
        let (_, body) = http(self.admin, "GET", "/readyz", "", "");
        serde_json::from_str(&body).unwrap_or_default()
    }
    fn wait_connected(&self) {
        self.wait_control("connected");
    }
    fn wait_control(&self, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.readyz()["fleet"]["control_database"] == state {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("control database never {state}: {}\n{}", self.readyz(), self.g.log());
    }
    fn reviews(&self) -> Vec<Value> {
        let (st, body) = http(self.admin, "GET", "/api/v1/reviews", ADMIN, "");
        assert_eq!(st, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["reviews"].as_array().cloned().unwrap_or_default()
    }
    fn review(&self, id: &str) -> Value {
        let (_, body) = http(self.admin, "GET", &format!("/api/v1/reviews/{id}"), ADMIN, "");
        serde_json::from_str(&body).unwrap_or_default()
    }
    /// Waits until this member lists a pending review; returns its id.
    fn wait_pending(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(r) = self.reviews().iter().find(|r| r["status"]["state"] == "pending") {
                return r["id"].as_str().unwrap().to_string();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no pending review on this member: {}", self.g.log());
    }
    fn wait_state(&self, id: &str, state: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let r = self.review(id);
            if r["status"]["state"] == state {
                return r;
            }
            if Instant::now() > deadline {
                panic!("review {id} never {state}: {r}\n{}", self.g.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn decide(&self, token: &str, id: &str, verb: &str, body: &str) -> (u16, Value) {
        let (st, body) = http(self.admin, "POST", &format!("/api/v1/reviews/{id}/{verb}"), token, body);
        (st, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }
}

fn setup(control: &ControlDb) -> Setup {
    Setup {
        control: control.dsn(),
        required: 1,
        timeout_secs: 60,
        sync_ms: 1000,
        // The machine's PostgreSQL on loopback has no certificate of ours.
        fleet_extra: "tls = \"disable\"".into(),
        tail: String::new(),
    }
}

/// Runs one statement through `m` with psql in a thread.
fn run_through(m: &Member, sql: &str) -> std::thread::JoinHandle<(bool, String, String)> {
    let mut cmd = Command::new("psql");
    m.g.pg_env(&mut cmd, "postgres");
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql]);
    std::thread::spawn(move || {
        let out = cmd.output().expect("psql");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
}

fn table() -> String {
    let t = unique("gh_fleet_t");
    direct_psql(&format!("create table public.{t} (id int)"));
    t
}

fn count_direct(t: &str) -> i64 {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-X", "-At", "-c"])
        .arg(format!("select count(*) from {t}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(-1)
}

#[test]
fn a_write_held_on_a_is_approved_through_b_and_completes_on_a() {
    let db = ControlDb::new();
    // Syncs a minute apart: only the notification can release the hold in
    // time.
    let s = Setup {
        sync_ms: 60_000,
        ..setup(&db)
    };
    let (a, b, c) = (member("gw-a", &s), member("gw-b", &s), member("gw-c", &s));
    let t = table();
    let client = run_through(&a, &format!("insert into {t} values (1)"));
    // B and C list the review held on A.
    let id = b.wait_pending();
    assert_eq!(c.wait_pending(), id);
    let r = b.review(&id);
    assert_eq!(r["identity"], "agent");
    assert_eq!(r["class"], "write");
    assert_eq!(count_direct(&t), 0, "held, not run");
    let (st, body) = b.decide(DBA1, &id, "approve", "{}");
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"]["state"], "approved");
    let started = Instant::now();
    let (ok, _, err) = client.join().unwrap();
    assert!(ok, "{err}\n{}", a.g.log());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "released by the notification, not a sync"
    );
    assert_eq!(count_direct(&t), 1);
    // Every instance knows the outcome; the control database has it.
    a.wait_state(&id, "approved", Duration::from_secs(5));
    let rc = c.wait_state(&id, "approved", Duration::from_secs(5));
    assert_eq!(rc["decided_by"], "dba1");
    assert_eq!(
        db.query(&format!(
            "select instance || ' ' || status from gatehouse.reviews where id = '{id}'"
        )),
        "gw-a approved"
    );
    // The decision is logged where it was made.
    b.g.wait_log_line("approval of this review", LOG_WAIT, |l| {
        l.contains("review approval recorded") && l.contains(&id)
    });
    direct_psql(&format!("drop table {t}"));
}

#[test]
fn n_of_m_counts_approvals_made_on_two_instances() {
    let db = ControlDb::new();
    let s = Setup {
        required: 2,
        ..setup(&db)
    };
    let (a, b, c) = (member("gw-a", &s), member("gw-b", &s), member("gw-c", &s));
    let t = table();
    let client = run_through(&c, &format!("insert into {t} values (1)"));
    let id = a.wait_pending();
    let (st, body) = a.decide(DBA1, &id, "approve", "{}");
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"]["state"], "pending", "one of two");
    assert_eq!(body["approvals"].as_array().unwrap().len(), 1);
    // The same approver on another instance is still the same approver.
    let (st, body) = b.decide(DBA1, &id, "approve", "{}");
    assert_eq!(st, 409, "{body}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count_direct(&t), 0, "one approval of two runs nothing");
    assert!(!client.is_finished());
    // B sees the first approval.
    let rb = b.review(&id);
    assert_eq!(rb["approvals"][0]["by"], "dba1", "{rb}");
    let (st, body) = b.decide(DBA2, &id, "approve", "{}");
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"]["state"], "approved");
    let (ok, _, err) = client.join().unwrap();
    assert!(ok, "{err}");
    assert_eq!(count_direct(&t), 1);
    direct_psql(&format!("drop table {t}"));
}

#[test]
fn concurrent_approvals_on_three_instances_count_once_each() {
    let db = ControlDb::new();
    let s = Setup {
        required: 2,
        ..setup(&db)
    };
    let members = [member("gw-a", &s), member("gw-b", &s), member("gw-c", &s)];
    let t = table();
    let client = run_through(&members[0], &format!("insert into {t} values (1)"));
    let id = members[0].wait_pending();
    for m in &members {
        m.wait_pending();
    }
    // dba1 on all three at once, dba2 on two: the row lock orders them;
    // exactly one approval of dba1 counts.
    let results: Vec<(u16, Value)> = std::thread::scope(|sc| {
        let hs: Vec<_> = [(0, DBA1), (1, DBA1), (2, DBA1), (1, DBA2), (2, DBA2)]
            .iter()
            .map(|(i, tok)| {
                let (m, id) = (&members[*i], id.clone());
                sc.spawn(move || m.decide(tok, &id, "approve", "{}"))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|(st, _)| *st == 200).count();
    let conflict = results.iter().filter(|(st, _)| *st == 409).count();
    assert_eq!(ok + conflict, 5, "{results:?}");
    assert!((2..=3).contains(&ok), "two approvers, each counted once: {results:?}");
    let (done, _, err) = client.join().unwrap();
    assert!(done, "{err}");
    let r = members[2].wait_state(&id, "approved", Duration::from_secs(5));
    let by: Vec<&str> = r["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["by"].as_str().unwrap())
        .collect();
    assert_eq!(by.len(), 2, "{r}");
    assert!(by.contains(&"dba1") && by.contains(&"dba2"), "{r}");
    assert_eq!(count_direct(&t), 1);
    direct_psql(&format!("drop table {t}"));
}

#[test]
fn denial_on_c_reaches_the_client_on_a_and_rules_hold_across_instances() {
    let db = ControlDb::new();
    let s = setup(&db);
    let (a, b, c) = (member("gw-a", &s), member("gw-b", &s), member("gw-c", &s));
    let t = table();
    let client = run_through(&a, &format!("delete from {t}"));
    let id = c.wait_pending();
    // The requester cannot approve their own statement on another instance,
    // nor can an auditor or an unknown review be decided.
    let (st, body) = b.decide(AGENT_APPROVER, &id, "approve", "{}");
    assert_eq!(st, 403, "{body}");
    let (st, _) = b.decide(AUDITOR, &id, "approve", "{}");
    assert_eq!(st, 403);
    let (st, _) = b.decide(DBA1, "r-nope-1", "approve", "{}");
    assert_eq!(st, 404);
    let (st, body) = c.decide(DBA2, &id, "deny", r#"{"reason":"not on a Friday"}"#);
    assert_eq!(st, 200, "{body}");
    let (ok, _, err) = client.join().unwrap();
    assert!(!ok);
    assert!(err.contains("not on a Friday"), "{err}");
    // Decided once: a later approval anywhere is refused.
    let (st, _) = b.decide(DBA1, &id, "approve", "{}");
    assert_eq!(st, 409);
    a.wait_state(&id, "denied", Duration::from_secs(5));
    direct_psql(&format!("drop table {t}"));
}

#[test]
fn a_time_grant_given_on_b_lets_the_identity_write_on_c() {
    let db = ControlDb::new();
    let s = setup(&db);
    let (a, b, c) = (member("gw-a", &s), member("gw-b", &s), member("gw-c", &s));
    let t = table();
    let client = run_through(&a, &format!("insert into {t} values (1)"));
    let id = b.wait_pending();
    let (st, body) = b.decide(DBA1, &id, "approve", r#"{"grant_minutes": 5}"#);
    assert_eq!(st, 200, "{body}");
    assert!(client.join().unwrap().0);
    // The grant reaches C by notification: a write there is not held.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (ok, _, err) = run_through(&c, &format!("insert into {t} values (2)")).join().unwrap();
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "{err}");
    }
    assert_eq!(count_direct(&t), 2);
    direct_psql(&format!("drop table {t}"));
}

#[test]
fn a_killed_instance_s_review_ends_and_the_others_keep_serving() {
    let db = ControlDb::new();
    let s = Setup {
        timeout_secs: 2,
        ..setup(&db)
    };
    let (mut a, b) = (member("gw-a", &s), member("gw-b", &s));
    let t = table();
    let _client = run_through(&a, &format!("insert into {t} values (1)"));
    let id = b.wait_pending();
    a.g.signal(libc::SIGKILL);
    let _ = a.g.child.wait();
    // Nobody ends it on A: B withdraws it after its deadline and grace.
    let r = b.wait_state(&id, "withdrawn", Duration::from_secs(20));
    assert!(r["status"]["why"].as_str().unwrap().contains("gw-a"), "{r}");
    let (st, _) = b.decide(DBA1, &id, "approve", "{}");
    assert_eq!(st, 409);
    let (ok, out, err) = run_through(&b, "select 41 + 1").join().unwrap();
    assert!(ok && out.trim() == "42", "{err}");
    assert_eq!(count_direct(&t), 0);

    // A restarted under its name withdraws what its earlier run held.
    let s_long = Setup {
        timeout_secs: 300,
        ..s.clone()
    };
    let (port, admin) = (a.g.port, a.admin);
    drop(a);
    let a = member_on("gw-a", &s_long, port, admin);
    let _held = run_through(&a, &format!("insert into {t} values (2)"));
    let id2 = b.wait_pending();
    a.g.signal(libc::SIGKILL);
    drop(a);
    let a = member_on("gw-a", &s_long, port, admin);
    let r = b.wait_state(&id2, "withdrawn", Duration::from_secs(10));
    assert!(r["status"]["why"].as_str().unwrap().contains("restarted"), "{r}");
    drop(a);
    direct_psql(&format!("drop table {t}"));
}

/// Runs `n` statements as `counted` through `m` in one session; returns
/// how many ran before the first refusal, and that refusal.
async fn run_counted(m: &Member, n: usize) -> (usize, Option<String>) {
    let conninfo = format!(
        "host=127.0.0.1 port={} user=counted password={COUNTED} dbname=postgres sslmode=disable",
        m.g.port
    );
    let (c, _) = connect_collecting(&conninfo).await.unwrap();
    for i in 0..n {
        if let Err(e) = c.simple_query("select 1").await {
            return (i, Some(message(&e)));
        }
    }
    (n, None)
}

#[tokio::test]
async fn a_budget_is_spent_by_sessions_spread_over_the_three() {
    let db = ControlDb::new();
    let s = setup(&db);
    let (a, b, c) = (member("gw-a", &s), member("gw-b", &s), member("gw-c", &s));
    // Stay clear of a minute's turn, where the estimate weighs the
    // previous minute: the checks below take a few seconds, more on a
    // loaded host.
    while reviews_now() % 60 > 40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(run_counted(&a, 10).await, (10, None));
    assert_eq!(run_counted(&b, 10).await, (10, None));
    // Two flushes later C knows of the twenty.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (ran, refusal) = run_counted(&c, 20).await;
    assert_eq!(ran, (BUDGET - 20) as usize, "{refusal:?}\n{}", c.g.log());
    let refusal = refusal.unwrap();
    assert!(
        refusal.contains("budget exceeded") && refusal.contains("limit is 30"),
        "{refusal}"
    );
    // A and B are refused too, once C's count reaches them.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(run_counted(&a, 1).await.0, 0);
    assert_eq!(run_counted(&b, 1).await.0, 0);
    // Other identities are not metered by it.
    let (ok, out, err) = run_through(&c, "select 1").join().unwrap();
    assert!(ok && out.trim() == "1", "{err}");
    // Every instance's count is there (refused statements count too).
    // Counts are kept a minute at a time, and the last checks may fall
    // in the next minute.
    let per: String = db.query(
        "select string_agg(instance || '=' || n, ' ' order by instance) from (select instance, sum(statements) as n from gatehouse.budget_usage where identity = 'counted' group by instance) per_instance",
    );
    let n: Vec<u64> = per
        .split(' ')
        .map(|kv| kv.split('=').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(n.len(), 3, "{per}");
    assert!(n[0] >= 10 && n[1] >= 10 && n[2] >= 10, "{per}");
}

fn reviews_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn readyz_and_metrics_carry_the_instance() {
    let db = ControlDb::new();
    let a = member("gw-a", &setup(&db));
    let r = a.readyz();
    assert_eq!(r["status"], "ready");
    assert_eq!(r["fleet"]["instance"], "gw-a");
    assert_eq!(r["fleet"]["control_database"], "connected");
    let (st, m) = http(a.admin, "GET", "/metrics", ADMIN, "");
    assert_eq!(st, 200);
    assert!(
        m.contains("gatehouse_fleet_control_connected{fleet_instance=\"gw-a\"} 1"),
        "{m}"
    );
    assert!(m.contains("gatehouse_up{fleet_instance=\"gw-a\"} 1"), "{m}");
    assert_eq!(db.query("select name from gatehouse.instances"), "gw-a");
    assert_eq!(
        db.query("select version from gatehouse.schema_version"),
        r["fleet"]["schema_version"].to_string()
    );
    // The DSN and its password never reach the log.
    assert!(!a.g.log().contains(&db.name), "{}", a.g.log());
}

#[test]
fn fleet_configuration_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let check = |fleet: &str| -> String {
        let path = dir.path().join("g.toml");
        std::fs::write(&path, config_text(free_port(), "", fleet)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{fleet} should be refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = check("[fleet]\ninstance = \"a b\"\ncontrol = \"host=h user=u dbname=d\"\n");
    assert!(e.contains("fleet.instance"), "{e}");
    let e = check("[fleet]\ninstance = \"a\"\ncontrol = \"host=h user=u dbname=d password=hunter2\"\n");
    assert!(e.contains("password_env") && !e.contains("hunter2"), "{e}");
    let e = check("[fleet]\ninstance = \"a\"\ncontrol = \"postgresql://u:hunter2@h/d\"\n");
    assert!(e.contains("password_env") && !e.contains("hunter2"), "{e}");
    let e = check("[fleet]\ninstance = \"a\"\ncontrol = \"host=h dbname=d\"\n");
    assert!(e.contains("user"), "{e}");
    let e = check("[fleet]\ninstance = \"a\"\ncontrol = \"host=h user=u dbname=d\"\nsync_ms = 1\n");
    assert!(e.contains("sync_ms"), "{e}");
    let e = check("[fleet]\ninstance = \"a\"\ncontrol = \"host=db.internal user=u dbname=d\"\ntls = \"disable\"\n");
    assert!(e.contains("fleet.tls") && e.contains("allow_cleartext"), "{e}");
    let e = check("[fleet]\ninstance = \"a\"\ncontrol = \"host=db.internal user=u dbname=d sslmode=disable\"\n");
    assert!(e.contains("sslmode"), "{e}");
    // Plaintext to this machine, or to a network said to be trusted, passes.
    for ok in [
        "[fleet]\ninstance = \"a\"\ncontrol = \"host=127.0.0.1 user=u dbname=d\"\ntls = \"disable\"\n",
        "[fleet]\ninstance = \"a\"\ncontrol = \"host=/run/postgresql user=u dbname=d\"\ntls = \"disable\"\n",
        "[fleet]\ninstance = \"a\"\ncontrol = \"host=10.0.0.9 user=u dbname=d\"\ntls = \"disable\"\nallow_cleartext = true\n",
    ] {
        let path = dir.path().join("ok.toml");
        std::fs::write(&path, config_text(free_port(), "", ok)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{ok}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

// ---- the control database restarted mid-run (a private cluster) ----

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn as_postgres(bin: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(format!("{PG_BIN}/{bin}"));
    c
}

/// A private cluster for the control database, with a password user.
struct PrivateControl {
    dir: PathBuf,
    port: u16,
}

const CONTROL_PASSWORD: &str = "Control-Db-Secret-7f3a91";

impl PrivateControl {
    fn start() -> PrivateControl {
        let dir = tempfile::Builder::new()
            .prefix("gh-fleet-pg-")
            .tempdir()
            .unwrap()
            .keep();
        run_ok(Command::new("chown").arg("postgres:postgres").arg(&dir));
        let data = dir.join("data");
        run_ok(
            as_postgres("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres", "-N"]),
        );
        let port = free_port();
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 30\nshared_buffers = 16MB\n",
            dir.display()
        );
        let path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&conf);
        std::fs::write(&path, text).unwrap();
        // TLS: a CA of the test's and a certificate for 127.0.0.1; the
        // control role may log in over TLS only.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fleet test CA");
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(data.join("server.crt"), cert.pem()).unwrap();
        std::fs::write(data.join("server.key"), key.serialize_pem()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        run_ok(
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(data.join("server.crt"))
                .arg(data.join("server.key")),
        );
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&path, text).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all gh_control 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        let pc = PrivateControl { dir, port };
        pc.pg_ctl("start");
        run_ok(
            as_postgres("psql")
                .args(["-h"])
                .arg(&pc.dir)
                .args(["-p", &port.to_string(), "-U", "postgres", "-c"])
                .arg(format!("create role gh_control login password '{CONTROL_PASSWORD}'"))
                .args(["-c", "create database control owner gh_control"]),
        );
        pc
    }
    fn pg_ctl(&self, what: &str) {
        run_ok(
            as_postgres("pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.dir.join("log"))
                .args(["-m", "fast", "-w", "-t", "30", what]),
        );
    }
}

impl Drop for PrivateControl {
    fn drop(&mut self) {
        let _ = as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn password_file(dir: &Path) -> PathBuf {
    let p = dir.join("control-password");
    std::fs::write(&p, format!("{CONTROL_PASSWORD}\n")).unwrap();
    p
}

#[test]
fn the_control_database_restarted_mid_run_refuses_holds_then_catches_up() {
    let pg = PrivateControl::start();
    let secrets = tempfile::tempdir().unwrap();
    let s = Setup {
        control: format!("host=127.0.0.1 port={} user=gh_control dbname=control", pg.port),
        required: 1,
        timeout_secs: 120,
        sync_ms: 200,
        // TLS checked against the test's CA, and a password over it.
        fleet_extra: format!(
            "password_file = \"{}\"\ntls = \"verify-full\"\nca_file = \"{}\"",
            password_file(secrets.path()).display(),
            pg.dir.join("ca.crt").display()
        ),
        tail: String::new(),
    };
    let (a, b) = (member("gw-a", &s), member("gw-b", &s));
    let t = table();
    // Held before the outage, decided after it.
    let before = run_through(&a, &format!("insert into {t} values (1)"));
    let id = b.wait_pending();

    pg.pg_ctl("stop");
    a.wait_control("unreachable");
    b.wait_control("unreachable");
    // Reads still pass; a write cannot be held and says why.
    let (ok, out, err) = run_through(&a, "select 6 * 7").join().unwrap();
    assert!(ok && out.trim() == "42", "{err}");
    let (ok, _, err) = run_through(&a, &format!("insert into {t} values (2)")).join().unwrap();
    assert!(!ok);
    assert!(err.contains("cannot reach the fleet's control database"), "{err}");
    // Nothing can be decided meanwhile.
    let (st, body) = b.decide(DBA1, &id, "approve", "{}");
    assert_eq!(st, 503, "{body}");
    assert!(!before.is_finished(), "the earlier hold still waits");
    let (_, m) = http(a.admin, "GET", "/metrics", ADMIN, "");
    assert!(
        m.contains("gatehouse_fleet_control_connected{fleet_instance=\"gw-a\"} 0"),
        "{m}"
    );

    pg.pg_ctl("start");
    a.wait_connected();
    b.wait_connected();
    // The review opened before the outage is still there, and deciding it
    // on B releases A's statement.
    let (st, body) = b.decide(DBA1, &id, "approve", "{}");
    assert_eq!(st, 200, "{body}");
    let (ok, _, err) = before.join().unwrap();
    assert!(ok, "{err}");
    // Holds work again.
    let again = run_through(&a, &format!("insert into {t} values (3)"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let id3 = loop {
        let pending: Vec<String> = b
            .reviews()
            .iter()
            .filter(|r| r["status"]["state"] == "pending")
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        if let Some(i) = pending.into_iter().find(|i| *i != id) {
            break i;
        }
        assert!(Instant::now() < deadline, "no new review");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(b.decide(DBA2, &id3, "approve", "{}").0, 200);
    assert!(again.join().unwrap().0);
    assert_eq!(count_direct(&t), 2, "rows 1 and 3; 2 was refused");
    // The password stays out of the logs.
    assert!(!a.g.log().contains(CONTROL_PASSWORD));
    direct_psql(&format!("drop table {t}"));
}

// ---- sessions and cancels across instances ----

#[tokio::test]
async fn sessions_of_every_instance_are_listed_and_killed_from_any() {
    let db = ControlDb::new();
    let s = Setup {
        sync_ms: 200,
        ..setup(&db)
    };
    let (a, b) = (member("gw-a", &s), member("gw-b", &s));
    let (client, _n) = connect_collecting(&a.g.conninfo("postgres")).await.unwrap();
    for _ in 0..3 {
        client.simple_query("select 1").await.unwrap();
    }
    let sessions = |m: &Member| -> Vec<Value> {
        let (st, body) = http(m.admin, "GET", "/api/v1/sessions", ADMIN, "");
        assert_eq!(st, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v.get("incomplete").is_none(), "{v}");
        v["sessions"].as_array().cloned().unwrap()
    };
    // B lists A's session, with its progress, within a sync or two.
    let deadline = Instant::now() + Duration::from_secs(5);
    let on_a = loop {
        let list = sessions(&b);
        if let Some(x) = list
            .iter()
            .find(|x| x["instance"] == "gw-a" && x["statements"].as_u64() >= Some(3))
        {
            break x.clone();
        }
        assert!(Instant::now() < deadline, "{list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(on_a["identity"], "agent");
    assert_eq!(on_a["target"], "postgres");
    // A lists it as its own.
    let mine = sessions(&a);
    assert!(
        mine.iter().any(|x| x["id"] == on_a["id"] && x["instance"] == "gw-a"),
        "{mine:?}"
    );
    let id = on_a["id"].as_str().unwrap().to_string();
    assert_eq!(on_a["admin"], format!("127.0.0.1:{}", a.admin));
    // An auditor may list but not kill; a kill of an unknown session is 404.
    let (st, _) = http(
        b.admin,
        "POST",
        &format!("/api/v1/sessions/{id}/kill?instance=gw-a"),
        AUDITOR,
        "",
    );
    assert_eq!(st, 403);
    let (st, _) = http(b.admin, "POST", "/api/v1/sessions/12345/kill?instance=gw-a", ADMIN, "");
    assert_eq!(st, 404);
    let (st, _) = http(
        b.admin,
        "POST",
        &format!("/api/v1/sessions/{id}/kill?instance=a%20b"),
        ADMIN,
        "",
    );
    assert_eq!(st, 400);
    // The kill through B ends the session on A.
    let (st, body) = http(
        b.admin,
        "POST",
        &format!("/api/v1/sessions/{id}/kill?instance=gw-a"),
        ADMIN,
        r#"{"reason":"runaway"}"#,
    );
    assert_eq!(st, 200, "{body}");
    assert!(client.simple_query("select 1").await.is_err(), "killed");
    a.g.wait_log_line("kill asked by another instance", LOG_WAIT, |l| {
        l.contains("session kill asked by another instance")
    });
    assert!(!sessions(&b).iter().any(|x| x["id"] == id.as_str()));
}

#[tokio::test]
async fn a_cancel_sent_to_another_instance_reaches_the_session() {
    let db = ControlDb::new();
    let s = setup(&db);
    let (a, b) = (member("gw-a", &s), member("gw-b", &s));
    let (client, _n) = connect_collecting(&a.g.conninfo("postgres")).await.unwrap();
    // A made-up key sent to B cancels nothing.
    let token = client.cancel_token();
    let sleeper = {
        let started = Instant::now();
        let q = tokio::spawn(async move {
            let r = client.simple_query("select pg_sleep(30)").await;
            (r.map(|_| ()).map_err(|e| code(&e)), started.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        q
    };
    let bogus = [0u8, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 9, 9, 9, 9];
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", b.g.port)).await.unwrap();
        s.write_all(&bogus).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!sleeper.is_finished(), "a wrong key cancels nothing");
    // The session's own key, sent to B, cancels the statement on A.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", b.g.port)).await.unwrap();
    token.cancel_query_raw(stream, tokio_postgres::NoTls).await.unwrap();
    let (res, took) = sleeper.await.unwrap();
    assert_eq!(res, Err("57014".to_string()), "query_canceled");
    assert!(took < Duration::from_secs(20), "{took:?}");
    // B logs once its send is done, which can be after A has cancelled and
    // the client has its error: the line may come a moment later.
    b.g.wait_log_line("cancel request passed on", LOG_WAIT, |l| {
        l.contains("cancel request passed on")
    });
}

// ---- recordings in object storage (s3s-fs, an S3 server on a directory) ----

const S3_BIN: &str = "/opt/gatehouse-test-tools/bin/s3s-fs";
const S3_KEY_ID: &str = "gatehouse-test-key";
const S3_SECRET: &str = "gatehouse-test-secret-7c1e";
const BUCKET: &str = "gh-recordings";

/// An S3-compatible server the test starts (`./dev.sh test` installs it).
struct S3 {
    child: Option<std::process::Child>,
    root: tempfile::TempDir,
    port: u16,
}

impl S3 {
    fn start() -> S3 {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let mut s = S3 {
            child: None,
            root,
            port: free_port(),
        };
        s.run();
        s
    }
    fn run(&mut self) {
        let child = Command::new(S3_BIN)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_KEY_ID, "--secret-key", S3_SECRET])
            .arg(self.root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{S3_BIN} (./dev.sh test installs it): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// The objects under `recordings/` in the bucket: (key, sha256).
    fn recordings(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let base = self.root.path().join(BUCKET).join("recordings");
        for dir in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
                let bytes = std::fs::read(f.path()).unwrap();
                let sha = sha256_hex(&bytes);
                out.push((
                    f.path()
                        .strip_prefix(self.root.path().join(BUCKET))
                        .unwrap()
                        .display()
                        .to_string(),
                    sha,
                ));
            }
        }
        out
    }
    fn section(&self, dir: &Path) -> String {
        format!(
            r#"
[recording]
dir = "{dir}/{{instance}}"
results = "full"
sync_interval_ms = 100

[fleet.bucket]
endpoint = "http://127.0.0.1:{port}"
bucket = "{BUCKET}"
access_key_id = "{S3_KEY_ID}"
secret_access_key_env = "GH_FLEET_TEST_S3_SECRET"
upload_every_secs = 1
"#,
            dir = dir.display(),
            port = self.port
        )
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The recording files left in an instance's recordings directory.
fn local_recordings(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for day in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if day.path().is_dir() && !day.file_name().to_string_lossy().starts_with('.') {
            for f in std::fs::read_dir(day.path()).into_iter().flatten().flatten() {
                out.push(f.path());
            }
        }
    }
    out
}

fn recordings_of(m: &Member, token: &str) -> Vec<Value> {
    let (st, body) = http(m.admin, "GET", "/api/v1/recordings?limit=1000", token, "");
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["recordings"].as_array().cloned().unwrap_or_default()
}

fn wait_recording(m: &Member, from: &Member, pred: impl Fn(&Value) -> bool, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(r) = recordings_of(m, AUDITOR).into_iter().find(|r| pred(r)) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {:?}\n{}",
            recordings_of(m, AUDITOR),
            from.g.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn s3_setup(db: &ControlDb, s3: &S3, dir: &Path) -> Setup {
    std::env::set_var("GH_FLEET_TEST_S3_SECRET", S3_SECRET);
    Setup {
        tail: s3.section(dir),
        ..setup(db)
    }
}

#[test]
fn a_recording_made_on_a_is_uploaded_and_replayed_through_c() {
    let db = ControlDb::new();
    let s3 = S3::start();
    let dirs = tempfile::tempdir().unwrap();
    let s = s3_setup(&db, &s3, dirs.path());
    let (a, _b, c) = (member("gw-a", &s), member("gw-b", &s), member("gw-c", &s));
    let marker = unique("fleet_marker");
    let (ok, out, err) = run_through(&a, &format!("select '{marker}' as m, 6 * 7 as answer"))
        .join()
        .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains(&marker));
    // C lists it once A has uploaded it, as A's.
    let r = wait_recording(
        &c,
        &a,
        |r| r["instance"] == "gw-a" && r["live"] == false,
        "A's recording on C",
    );
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["identity"], "agent");
    // The local copy is gone; the object is in the bucket under its hash.
    let a_dir = dirs.path().join("gw-a");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !local_recordings(&a_dir).is_empty() {
        assert!(Instant::now() < deadline, "{:?}", local_recordings(&a_dir));
        std::thread::sleep(Duration::from_millis(100));
    }
    let objects = s3.recordings();
    assert_eq!(objects.len(), 1, "{objects:?}");
    let (key, sha) = &objects[0];
    assert!(key.contains(sha.as_str()), "content-addressed: {key}");
    assert_eq!(
        db.query(&format!(
            "select instance || ' ' || sha256 from gatehouse.recordings where id = '{id}'"
        )),
        format!("gw-a {sha}")
    );
    // C's detail verifies the chain and its seal.
    let (st, body) = http(c.admin, "GET", &format!("/api/v1/recordings/{id}"), AUDITOR, "");
    assert_eq!(st, 200, "{body}");
    let d: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["verified"]["sealed"], true, "{d}");
    assert!(d["verified"]["broken"].is_null(), "{d}");
    assert_eq!(d["instance"], "gw-a");
    assert_eq!(d["stored"], "bucket");
    // Downloaded through C, whole: the JSON lines hash to the object.
    let (st, jsonl) = http(c.admin, "GET", &format!("/api/v1/recordings/{id}/events"), AUDITOR, "");
    assert_eq!(st, 200);
    assert_eq!(&sha256_hex(jsonl.as_bytes()), sha);
    // And as a transcript, the statement replayed.
    let (st, text) = http(
        c.admin,
        "GET",
        &format!("/api/v1/recordings/{id}/events?format=text"),
        AUDITOR,
        "",
    );
    assert_eq!(st, 200);
    assert!(text.contains(&marker), "{text}");
    // The text filter finds it through C too.
    let (_, found) = http(
        c.admin,
        "GET",
        &format!("/api/v1/recordings?text={marker}"),
        AUDITOR,
        "",
    );
    assert!(found.contains(&id), "{found}");
    // A's directory still verifies: the upload is in its audit log.
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("verify")
        .arg(&a_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The audit log's copy is in the bucket too.
    assert!(s3.root.path().join(BUCKET).join("audit/gw-a/audit.ghrec").exists());
    // An approver may not read recordings; readiness reports the bucket.
    let (st, _) = http(c.admin, "GET", &format!("/api/v1/recordings/{id}/events"), DBA1, "");
    assert_eq!(st, 403);
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.readyz()["fleet"]["object_storage"] != "reachable" {
        assert!(
            Instant::now() < deadline,
            "{}",
            http(c.admin, "GET", "/api/v1/fleet", ADMIN, "").1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A recording id nobody has is 404 on every instance.
    let (st, _) = http(c.admin, "GET", "/api/v1/recordings/1-deadbeef", AUDITOR, "");
    assert_eq!(st, 404);
    // A live session's tail: C says which instance holds it.
    let mut live = Command::new("psql");
    a.g.pg_env(&mut live, "postgres");
    let mut live = live
        .args(["-X", "-At", "-c", "select pg_sleep(20)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let rid = loop {
        let (_, body) = http(a.admin, "GET", "/api/v1/sessions", ADMIN, "");
        let v: Value = serde_json::from_str(&body).unwrap();
        let found = v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|x| x["recording"].as_str().map(str::to_string));
        if let Some(r) = found {
            break r;
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (st, body) = http(c.admin, "GET", &format!("/api/v1/recordings/{rid}/tail"), AUDITOR, "");
        if st == 409 {
            assert!(body.contains("gw-a"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "{st} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = live.kill();
    let _ = live.wait();
}

#[test]
fn recordings_wait_out_a_bucket_outage_and_a_killed_instance_uploads_on_restart() {
    let db = ControlDb::new();
    let mut s3 = S3::start();
    let dirs = tempfile::tempdir().unwrap();
    let s = s3_setup(&db, &s3, dirs.path());
    let (a, b) = (member("gw-a", &s), member("gw-b", &s));
    let a_dir = dirs.path().join("gw-a");
    // One finished session: uploaded.
    assert!(run_through(&a, "select 'first'").join().unwrap().0);
    wait_recording(&b, &a, |r| r["instance"] == "gw-a", "the first recording");
    // The bucket goes away: the next finished session stays on disk.
    s3.stop();
    assert!(run_through(&a, "select 'second'").join().unwrap().0);
    a.wait_control("connected");
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.readyz()["fleet"]["object_storage"] != "unreachable" {
        assert!(Instant::now() < deadline, "{}", a.readyz());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        local_recordings(&a_dir).len(),
        1,
        "kept locally while the bucket is down"
    );
    // A session open when A is killed.
    let mut open = Command::new("psql");
    a.g.pg_env(&mut open, "postgres");
    let mut open = open
        .args(["-X", "-At", "-c", "select 'third'", "-c", "select pg_sleep(60)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let (port, admin) = (a.g.port, a.admin);
    a.g.signal(libc::SIGKILL);
    drop(a);
    let _ = open.kill();
    let _ = open.wait();
    assert_eq!(local_recordings(&a_dir).len(), 2);
    // The bucket and A come back: both waiting recordings are uploaded
    // (the killed session's sealed at start as interrupted).
    s3.run();
    let a = member_on("gw-a", &s, port, admin);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !local_recordings(&a_dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{:?}\n{}",
            local_recordings(&a_dir),
            a.g.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let all = recordings_of(&b, AUDITOR);
    let from_a: Vec<&Value> = all.iter().filter(|r| r["instance"] == "gw-a").collect();
    assert_eq!(from_a.len(), 3, "{all:?}");
    assert_eq!(s3.recordings().len(), 3);
    // Every object matches its index row.
    for (key, sha) in s3.recordings() {
        assert_eq!(
            db.query(&format!(
                "select count(*) from gatehouse.recordings where sha256 = '{sha}' and key like '%{}'",
                key
            )),
            "1"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("verify")
        .arg(&a_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_bucket_that_refuses_the_signature_keeps_recordings_local() {
    let db = ControlDb::new();
    let s3 = S3::start();
    let dirs = tempfile::tempdir().unwrap();
    std::env::set_var("GH_FLEET_TEST_S3_WRONG", "not-the-secret");
    let s = Setup {
        tail: s3
            .section(dirs.path())
            .replace("GH_FLEET_TEST_S3_SECRET", "GH_FLEET_TEST_S3_WRONG"),
        ..setup(&db)
    };
    let a = member("gw-a", &s);
    assert!(run_through(&a, "select 1").join().unwrap().0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = a.readyz();
        let (_, detail) = http(a.admin, "GET", "/api/v1/fleet", ADMIN, "");
        let detail: Value = serde_json::from_str(&detail).unwrap_or_default();
        if r["fleet"]["object_storage"] == "unreachable" && detail["here"]["object_storage_trouble"].is_string() {
            // The public probe says no more than the state.
            assert!(r["fleet"].get("object_storage_trouble").is_none(), "{r}");
            break;
        }
        assert!(Instant::now() < deadline, "{r}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(local_recordings(&dirs.path().join("gw-a")).len(), 1, "kept");
    assert!(s3.recordings().is_empty());
    assert_eq!(db.query("select count(*) from gatehouse.recordings"), "0");
    // The secret never reaches the log.
    assert!(!a.g.log().contains("not-the-secret"));
}

// ---- configuration across the fleet ----

#[tokio::test]
async fn a_reload_through_one_instance_reloads_every_instance_s_file() {
    let db = ControlDb::new();
    let s = setup(&db);
    let (a, b, c) = (member("gw-a", &s), member("gw-b", &s), member("gw-c", &s));
    // Every instance is listed, alive.
    let (st, body) = http(b.admin, "GET", "/api/v1/fleet", AUDITOR, "");
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gw-a", "gw-b", "gw-c"]);
    assert!(
        v["instances"].as_array().unwrap().iter().all(|i| i["alive"] == true),
        "{v}"
    );
    // B's file gains an identity; C's is broken.
    const LATE: &str = "fleet-late-identity-0007";
    let mut fb = std::fs::read_to_string(&b.g.config_path).unwrap();
    fb.push_str(&format!(
        "\n[[identity]]\nname = \"late\"\ntoken_hash = \"{}\"\ntargets = [\"*\"]\n",
        token_hash(LATE)
    ));
    std::fs::write(&b.g.config_path, fb).unwrap();
    let mut fc = std::fs::read_to_string(&c.g.config_path).unwrap();
    fc.push_str("\n[[identity]]\nname = 3\n");
    std::fs::write(&c.g.config_path, fc).unwrap();
    let late = format!(
        "host=127.0.0.1 port={} user=late password={LATE} dbname=postgres sslmode=disable",
        b.g.port
    );
    assert!(connect_collecting(&late).await.is_err(), "not yet");
    // Only an admin may; a reload without `fleet` stays on its instance.
    let (st, _) = http(a.admin, "POST", "/api/v1/reload?fleet=true", AUDITOR, "");
    assert_eq!(st, 403);
    let (st, body) = http(a.admin, "POST", "/api/v1/reload?fleet=true", ADMIN, "");
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["instances"]["gw-b"], "reloaded", "{v}");
    assert!(v["instances"]["gw-c"].as_str().unwrap().starts_with("refused"), "{v}");
    // B took its new file; C kept serving its old one.
    let (client, _) = connect_collecting(&late).await.unwrap();
    client.simple_query("select 1").await.unwrap();
    let (ok, _, err) = run_through(&c, "select 1").join().unwrap();
    assert!(ok, "{err}");
    let (_, body) = http(a.admin, "GET", "/api/v1/fleet", ADMIN, "");
    assert!(body.contains("refused"), "{body}");
}

#[tokio::test]
async fn a_notify_from_any_database_role_kills_nothing() {
    let db = ControlDb::new();
    let s = setup(&db);
    let (a, _b) = (member("gw-a", &s), member("gw-b", &s));
    let (client, _n) = connect_collecting(&a.g.conninfo("postgres")).await.unwrap();
    client.simple_query("select 1").await.unwrap();
    let (_, body) = http(a.admin, "GET", "/api/v1/sessions", ADMIN, "");
    let v: Value = serde_json::from_str(&body).unwrap();
    let id = v["sessions"][0]["id"].as_str().unwrap().to_string();
    // NOTIFY needs no privilege: a payload naming the session, a made-up
    // request id and a reload request are all ignored.
    db.query(&format!(
        "select pg_notify('gatehouse_kills', '{{\"instance\":\"gw-a\",\"session\":{id},\"by\":\"ops\",\"from\":\"gw-b\",\"reason\":\"\"}}')"
    ));
    db.query("select pg_notify('gatehouse_kills', '987654321')");
    db.query("select pg_notify('gatehouse_reloads', '{\"from\":\"gw-b\",\"by\":\"ops\",\"at_ms\":0}')");
    tokio::time::sleep(Duration::from_millis(700)).await;
    client.simple_query("select 1").await.expect("still alive");
    assert!(!a.g.log().contains("session kill asked by another instance"));
    assert!(!a.g.log().contains("configuration reload asked by another instance"));
}

#[test]
fn a_second_live_instance_under_one_name_is_refused() {
    let db = ControlDb::new();
    let s = setup(&db);
    let a = member("gw-a", &s);
    let twin = member_unchecked("gw-a", &s, free_port(), free_port());
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        twin.readyz()["fleet"]["control_database"],
        "unreachable",
        "{}",
        twin.g.log()
    );
    assert!(
        twin.g.log().contains("another live instance runs under the name gw-a"),
        "{}",
        twin.g.log()
    );
    // It refuses holds; the first keeps its place.
    let (ok, _, err) = run_through(&twin, "insert into nothing values (1)").join().unwrap();
    assert!(
        !ok && err.contains("cannot reach the fleet's control database"),
        "{err}"
    );
    assert_eq!(a.readyz()["fleet"]["control_database"], "connected");
}

#[test]
fn a_recording_rewritten_on_disk_is_not_uploaded() {
    let db = ControlDb::new();
    let mut s3 = S3::start();
    let dirs = tempfile::tempdir().unwrap();
    let s = s3_setup(&db, &s3, dirs.path());
    let a = member("gw-a", &s);
    let a_dir = dirs.path().join("gw-a");
    // The bucket is away while a session is recorded.
    s3.stop();
    assert!(run_through(&a, "select 'the original statement'").join().unwrap().0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let file = loop {
        if let Some(f) = local_recordings(&a_dir).pop() {
            let text = std::fs::read_to_string(&f).unwrap();
            if text.contains("\"seal\"") {
                break f;
            }
        }
        assert!(Instant::now() < deadline, "no sealed recording");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Once the uploader has given up on it for now (a pass in flight sent
    // the bytes it had checked), someone with write access to the
    // directory rewrites it.
    a.g.wait_log_line("recording not uploaded yet", Duration::from_secs(30), |l| {
        l.contains("recording not uploaded yet")
    });
    assert!(file.exists());
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("the original statement", "a harmless statement!!")).unwrap();
    s3.run();
    a.g.wait_log_line("does not match its seal", Duration::from_secs(15), |l| {
        l.contains("does not match its seal")
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(file.exists(), "kept where it is");
    assert!(s3.recordings().is_empty(), "not uploaded: {:?}", s3.recordings());
    assert_eq!(db.query("select count(*) from gatehouse.recordings"), "0");
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("verify")
        .arg(&a_dir)
        .output()
        .unwrap();
    assert!(!out.status.success(), "verify still reports the rewrite");
}

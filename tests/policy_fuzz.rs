//! A fuzzer of pipelines through the real gateway under a read-only
//! policy: random Parse/Bind/Describe/Execute/Close/Sync/Flush/Query/
//! FunctionCall sequences over a small set of names (the unnamed ones, names
//! that collide at 63 bytes, a cursor's, SQL-prepared ones, gatehouse's own),
//! statements that read, write through every door the policy knows of, fail
//! or change the session, oversized Binds, and the byte stream cut into
//! random writes. Holds are denied by a reviewer thread within milliseconds.
//!
//! After every pipeline the canary table (rows and checksum) must be
//! unchanged, the gateway alive, and the session either answering a marker
//! query or closed by the gateway: never hung.
//!
//! `cargo test --test policy_fuzz` runs it for 20 seconds. For longer runs:
//! `GH_POLICY_FUZZ_SECS=600 cargo test --release --test policy_fuzz -- --nocapture`
//! (`GH_POLICY_FUZZ_SEED=n` replays one seed).
mod common;
mod pgraw;
use common::*;
use pgraw::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::time::{Duration, Instant};

const ADMIN: &str = "fuzz-admin-token";

fn config(admin_port: u16) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:{admin_port}"
[[admin.token]]
name = "ops"
token_hash = "{}"
roles = ["admin"]

[policy]
default_role = "agent"
[policy.roles.agent]
read = "allow"
write = "approve"
delete = "approve"
ddl = "deny"
admin = "deny"
unknown = "deny"
approvers = ["admin"]
approval_timeout_secs = 10
"#,
        token_hash(ADMIN)
    )
}

/// Names the pipelines use.
fn names(t: &str) -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"s1".to_vec(),
        b"s2".to_vec(),
        [b"a".repeat(63), b"X".to_vec()].concat(),
        [b"a".repeat(63), b"Y".to_vec()].concat(),
        b"c".to_vec(),
        b"q".to_vec(),
        b"d".to_vec(),
        format!("{t}_long_{}", "n".repeat(90)).into_bytes(),
        b"gatehouse:ro".to_vec(),
    ]
}

/// Statements: reads, writes through every door, errors, session changes.
fn statements(t: &str) -> Vec<String> {
    [
        "SELECT 1",
        "SELECT count(*) FROM {t}",
        "SELECT * FROM {t} WHERE id = $1::int",
        "SELECT $1::text",
        "SELECT pg_sleep(0)",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT sp",
        "ROLLBACK TO SAVEPOINT sp",
        "DECLARE c CURSOR FOR SELECT * FROM {t}",
        "DECLARE c CURSOR WITH HOLD FOR SELECT {t}_w()",
        "FETCH 1 FROM c",
        "CLOSE c",
        "PREPARE q AS SELECT 1",
        "PREPARE d AS DELETE FROM {t}",
        "EXECUTE d",
        "DEALLOCATE q",
        "DEALLOCATE ALL",
        "SET search_path = public",
        "SET standard_conforming_strings = off",
        "SELECT 'a\\' , '; DELETE FROM {t}; SELECT ' --'",
        "DELETE FROM {t}",
        "DELETE FROM {t} WHERE id = $1::int",
        "UPDATE {t} SET v = 'x'",
        "INSERT INTO {t} VALUES (100, 'x')",
        "TRUNCATE {t}",
        "DROP TABLE {t}",
        "SELECT {t}_w()",
        "SELECT * FROM {t}_view",
        "SELECT {t}_stable()",
        "WITH x AS (DELETE FROM {t} RETURNING 1) SELECT 1",
        "DO $$BEGIN DELETE FROM {t}; END$$",
        "SET default_transaction_read_only = off",
        "BEGIN READ WRITE",
        "SET TRANSACTION READ WRITE",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "FETCH ALL FROM s1",
        "MOVE ALL IN d",
        "FETCH ALL FROM c",
        "SELECT cursor_to_xml('s2', 10, false, false, '')",
        "INSERT INTO {t} VALUES (101, 'y') RETURNING id",
        "DELETE FROM {t} RETURNING id",
        "WITH d AS (DELETE FROM {t} RETURNING *) SELECT * FROM d",
        "RESET transaction_read_only",
        "SET transaction_read_only TO DEFAULT",
        "SELECT {t}_agg(id) FROM {t}",
        "SELEC 1",
        "SELECT 1/0",
        "",
    ]
    .iter()
    .map(|s| s.replace("{t}", t))
    .collect()
}

/// One pipeline, as bytes, and a readable form of it.
fn pipeline(rng: &mut StdRng, t: &str, writer_oid: u32) -> (Vec<u8>, Vec<String>) {
    let names = names(t);
    let stmts = statements(t);
    let mut out = Vec::new();
    let mut shown = Vec::new();
    let n = rng.gen_range(1..25);
    for _ in 0..n {
        let name = |rng: &mut StdRng| names[rng.gen_range(0..names.len())].clone();
        match rng.gen_range(0..100) {
            0..=19 => {
                let (nm, s) = (name(rng), &stmts[rng.gen_range(0..stmts.len())]);
                shown.push(format!("Parse {:?} {s:?}", String::from_utf8_lossy(&nm)));
                out.extend(parse(&nm, s));
            }
            20..=39 => {
                let (p, s) = (name(rng), name(rng));
                let params: Vec<Option<Vec<u8>>> = match rng.gen_range(0..10) {
                    0..=4 => vec![],
                    5..=8 => vec![Some(b"1".to_vec())],
                    // A Bind larger than the relay buffer.
                    _ => vec![Some(vec![b'7'; 100_000])],
                };
                shown.push(format!(
                    "Bind {:?} {:?} ({} params)",
                    String::from_utf8_lossy(&p),
                    String::from_utf8_lossy(&s),
                    params.len()
                ));
                let refs: Vec<Option<&[u8]>> = params.iter().map(|p| p.as_deref()).collect();
                out.extend(bind(&p, &s, &refs));
            }
            40..=54 => {
                let p = name(rng);
                let max: i32 = if rng.gen_bool(0.2) { 1 } else { 0 };
                shown.push(format!("Execute {:?} {max}", String::from_utf8_lossy(&p)));
                let mut b = p.clone();
                b.push(0);
                b.extend_from_slice(&max.to_be_bytes());
                out.extend(frame(b'E', &b));
            }
            55..=59 => {
                let (k, nm) = (if rng.gen_bool(0.5) { b'S' } else { b'P' }, name(rng));
                shown.push(format!("Describe {} {:?}", k as char, String::from_utf8_lossy(&nm)));
                out.extend(describe(k, &nm));
            }
            60..=64 => {
                let (k, nm) = (if rng.gen_bool(0.5) { b'S' } else { b'P' }, name(rng));
                shown.push(format!("Close {} {:?}", k as char, String::from_utf8_lossy(&nm)));
                out.extend(close(k, &nm));
            }
            65..=79 => {
                shown.push("Sync".into());
                out.extend(sync());
            }
            80..=84 => {
                shown.push("Flush".into());
                out.extend(frame(b'H', b""));
            }
            85..=97 => {
                let s = &stmts[rng.gen_range(0..stmts.len())];
                shown.push(format!("Query {s:?}"));
                out.extend(query(s));
            }
            _ => {
                shown.push(format!("FunctionCall {writer_oid}"));
                let mut b = writer_oid.to_be_bytes().to_vec();
                b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
                out.extend(frame(b'F', &b));
            }
        }
    }
    (out, shown)
}

/// Sends `bytes` in random pieces, then Sync, ROLLBACK and a marker query; reads
/// until the marker's answer (Ok(true)), the gateway closes the session
/// (Ok(false)), or the time runs out (Err).
fn run(r: &mut Raw, rng: &mut StdRng, bytes: &[u8], marker: &str) -> Result<bool, String> {
    let mut at = 0;
    while at < bytes.len() {
        let n = rng
            .gen_range(1..=bytes.len() - at)
            .min(if rng.gen_bool(0.3) { 7 } else { 64 * 1024 });
        if r.s.write_all(&bytes[at..at + n]).is_err() {
            return Ok(false);
        }
        if rng.gen_bool(0.05) {
            std::thread::sleep(Duration::from_millis(2));
        }
        at += n;
    }
    // Whatever the pipeline left open (an aborted block), the marker runs.
    let end = [sync(), query("ROLLBACK"), query(&format!("SELECT '{marker}'"))].concat();
    if r.s.write_all(&end).is_err() {
        return Ok(false);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_marker = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no answer within 60 s: the session hung".into());
        }
        match r.next(left) {
            Ok((b'D', body)) if contains(&body, marker.as_bytes()) => seen_marker = true,
            Ok((b'Z', _)) if seen_marker => return Ok(true),
            Ok(_) => {}
            Err(End::Closed) => return Ok(false),
            Err(End::Timeout) => return Err("no answer within 60 s: the session hung".into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelines_never_change_the_canary() {
    let secs: u64 = std::env::var("GH_POLICY_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("GH_POLICY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let admin_port = free_port();
    let g = Gatehouse::start("", &config(admin_port));
    let t = unique("gh_fuzz");
    let d = direct().await;
    d.batch_execute(&format!(
        "create table {t} (id int primary key, v text);
         insert into {t} select g, 'v' || g from generate_series(1, 5) g;
         create function {t}_w() returns int language plpgsql as $$ begin update {t} set v = 'w'; return 1; end $$;
         create function {t}_stable() returns int language plpgsql stable as $$ begin return {t}_w(); end $$;
         create view {t}_view as select {t}_w() as x;
         create function {t}_acc(int, int) returns int language plpgsql as $$ begin update {t} set v = 'agg'; return coalesce($1, 0) + $2; end $$;
         create aggregate {t}_agg(int) (sfunc = {t}_acc, stype = int);"
    ))
    .await
    .unwrap();
    let writer_oid: u32 = d
        .query_one(&format!("select '{t}_w()'::regprocedure::oid"), &[])
        .await
        .unwrap()
        .get(0);
    let state_sql = format!(
        "select count(*)::text || ':' || md5(coalesce(string_agg(id::text || v, ',' order by id), '')) from {t}"
    );
    let before: String = d.query_one(&state_sql, &[]).await.unwrap().get(0);

    // A reviewer who denies every hold at once.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reviewer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (_, body) = http(admin_port, "GET", "/api/v1/reviews", ADMIN, "");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                for r in v["reviews"].as_array().into_iter().flatten() {
                    if r["status"]["state"] != "pending" {
                        continue;
                    }
                    if let Some(id) = r["id"].as_str() {
                        http(
                            admin_port,
                            "POST",
                            &format!("/api/v1/reviews/{id}/deny"),
                            ADMIN,
                            r#"{"reason":"fuzz"}"#,
                        );
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let port = g.port;
    let t2 = t.clone();
    let expected = before.clone();
    let check_sql = state_sql.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut rng = StdRng::seed_from_u64(seed);
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut conn: Option<Raw> = None;
        let (mut cases, mut closed) = (0u64, 0u64);
        while Instant::now() < deadline {
            let r = conn.get_or_insert_with(|| {
                Raw::login(port, &[("user", "agent"), ("database", "postgres")], TOKEN)
                    .expect("login")
                    .0
            });
            let (bytes, shown) = pipeline(&mut rng, &t2, writer_oid);
            let marker = format!("fuzz-end-{cases}");
            match run(r, &mut rng, &bytes, &marker) {
                Ok(true) => {}
                Ok(false) => {
                    closed += 1;
                    conn = None;
                }
                Err(e) => return Err(format!("seed {seed}, case {cases}: {e}\n{}", shown.join("\n"))),
            }
            cases += 1;
            // The canary is checked after every case (on another connection).
            let out = std::process::Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-XAtc"])
                .arg(&check_sql)
                .output()
                .expect("psql");
            let now = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if now != expected {
                return Err(format!(
                    "seed {seed}, case {cases}: the canary changed: {expected} -> {now}\n{}",
                    shown.join("\n")
                ));
            }
        }
        Ok((cases, closed))
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reviewer.join().unwrap();
    let (cases, closed) = outcome.unwrap_or_else(|e| panic!("{e}\ngatehouse log:\n{}", g.log()));
    assert!(alive(g.pid()), "gatehouse died");
    assert!(!g.log().contains("panicked"), "a panic: {}", g.log());
    let after: String = d.query_one(&state_sql, &[]).await.unwrap().get(0);
    assert_eq!(after, before);
    println!("policy fuzz: seed {seed}, {cases} pipelines in {secs} s, {closed} ended by the gateway");
    assert!(cases > 10, "too few pipelines ran: {cases}");
    d.batch_execute(&format!(
        "drop aggregate {t}_agg(int); drop function {t}_acc(int, int); drop view {t}_view; drop function {t}_stable(); drop function {t}_w(); drop table {t}"
    ))
    .await
    .unwrap();
}

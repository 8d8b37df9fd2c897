//! Statement policy through the real gateway: denials and guardrails in
//! both protocols, holds that time out, are cancelled, approved or denied,
//! and a bypass corpus checked against the table afterwards.
mod common;
use common::*;
use std::time::Duration;
use tokio_postgres::NoTls;

const ADMIN: &str = "policy-admin-token";
const APPROVER: &str = "policy-approver-token";

fn policy_toml(admin_port: u16, timeout_secs: u64) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:{admin_port}"
[[admin.token]]
name = "ops"
token_hash = "{}"
roles = ["admin"]
[[admin.token]]
name = "reviewer"
token_hash = "{}"
roles = ["approver"]

[policy]
default_role = "agent"
[policy.roles.agent]
read = "allow"
write = "approve"
delete = "approve"
ddl = "deny"
admin = "deny"
unknown = "deny"
approvers = ["approver"]
approval_timeout_secs = {timeout_secs}

[[policy.guardrail]]
id = "no-drop"
flag = "drop"
message = "DROP is not allowed through gatehouse"
"#,
        token_hash(ADMIN),
        token_hash(APPROVER)
    )
}

#[tokio::test]
async fn reads_pass_ddl_and_guardrails_are_denied_in_both_protocols() {
    let admin_port = free_port();
    let g = Gatehouse::start("", &policy_toml(admin_port, 2));
    let t = unique("gh_pol_keep");
    direct()
        .await
        .batch_execute(&format!("create table {t} (id int)"))
        .await
        .unwrap();
    let (c, _n) = through(&g).await;
    assert_eq!(c.query_one("select 1 + 1", &[]).await.unwrap().get::<_, i32>(0), 2);
    // DDL: denied (simple and extended), nothing created.
    let made = unique("gh_pol_made");
    let e = c
        .batch_execute(&format!("create table {made} (a int)"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    assert!(message(&e).contains("ddl statements are denied"), "{}", message(&e));
    let e = c
        .execute(&format!("create table {made} (a int)"), &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
    let exists: bool = direct()
        .await
        .query_one("select to_regclass($1) is not null", &[&made])
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "the denied DDL ran");
    // A guardrail names itself; the table stays.
    let e = c.batch_execute(&format!("DROP TABLE {t}")).await.unwrap_err();
    assert_eq!(code(&e), "42501");
    assert!(
        message(&e).contains("DROP is not allowed through gatehouse (guardrail no-drop)"),
        "{}",
        message(&e)
    );
    assert_eq!(count(&t).await, 0);
    // The session stays in step: a pipeline with a denial in the middle.
    let drop_sql = format!("drop table {t}");
    let (a, b, d) = tokio::join!(
        c.query_one("select 10", &[]),
        c.execute(drop_sql.as_str(), &[]),
        c.query_one("select 20", &[])
    );
    assert_eq!(a.unwrap().get::<_, i32>(0), 10);
    assert_eq!(code(&b.unwrap_err()), "42501");
    assert_eq!(d.unwrap().get::<_, i32>(0), 20);
    direct().await.batch_execute(&format!("drop table {t}")).await.unwrap();
}

#[tokio::test]
async fn held_statement_times_out_and_is_cancelled() {
    let admin_port = free_port();
    let g = Gatehouse::start("", &policy_toml(admin_port, 2));
    let t = unique("gh_pol_hold");
    direct()
        .await
        .batch_execute(&format!("create table {t} (id int)"))
        .await
        .unwrap();
    let (c, mut notices) = through(&g).await;
    let e = c
        .execute(&format!("insert into {t} values (1)"), &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
    assert!(message(&e).contains("approval timed out"), "{}", message(&e));
    let n = tokio::time::timeout(Duration::from_secs(5), notices.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(n.contains("held for approval"), "{n}");
    assert_eq!(count(&t).await, 0);

    // Cancel while held: 57014 at once, the review is withdrawn.
    let cancel = c.cancel_token();
    let sql2 = format!("insert into {t} values (2)");
    let q = c.execute(sql2.as_str(), &[]);
    let canceller = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        cancel.cancel_query(NoTls).await.unwrap();
    };
    let (r, _) = tokio::join!(q, canceller);
    assert_eq!(code(&r.unwrap_err()), "57014");
    let n = notices.recv().await.unwrap();
    let id = review_id(&n);
    let (_, body) =
        tokio::task::spawn_blocking(move || http(admin_port, "GET", &format!("/api/v1/reviews/{id}"), ADMIN, ""))
            .await
            .unwrap();
    assert!(body.contains("withdrawn"), "{body}");
    assert_eq!(count(&t).await, 0);
    // And the session still works.
    assert_eq!(c.query_one("select 3", &[]).await.unwrap().get::<_, i32>(0), 3);
    direct().await.batch_execute(&format!("drop table {t}")).await.unwrap();
}

#[tokio::test]
async fn disconnecting_while_held_withdraws_the_review() {
    let admin_port = free_port();
    let g = Gatehouse::start("", &policy_toml(admin_port, 30));
    let t = unique("gh_pol_gone");
    direct()
        .await
        .batch_execute(&format!("create table {t} (id int)"))
        .await
        .unwrap();
    // psql holds the statement; the process is killed while it waits.
    let mut cmd = std::process::Command::new("psql");
    g.pg_env(&mut cmd, "postgres");
    let mut child = cmd
        .args(["-X", "-c", &format!("insert into {t} values (1)")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    let list = move || http(admin_port, "GET", "/api/v1/reviews", ADMIN, "");
    let mut id = None;
    for _ in 0..100 {
        let (_, body) = tokio::task::spawn_blocking(list).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(r) = v["reviews"].as_array().and_then(|a| a.first()) {
            id = r["id"].as_str().map(str::to_string);
            // The review carries the statement's fingerprint (computed when
            // it is held, not for every statement classified).
            let fp = gatehouse::sql::fingerprint(&format!("insert into {t} values (1)"));
            assert_eq!(fp.len(), 16, "{fp}");
            assert!(body.contains(&format!("\"fingerprint\":\"{fp}\"")), "{body}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = id.expect("a review opens");
    child.kill().unwrap();
    let _ = child.wait();
    let mut state = String::new();
    for _ in 0..100 {
        let path = format!("/api/v1/reviews/{id}");
        let (_, body) = tokio::task::spawn_blocking(move || http(admin_port, "GET", &path, ADMIN, ""))
            .await
            .unwrap();
        state = body;
        if state.contains("withdrawn") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(state.contains("the client disconnected"), "{state}");
    // Approving it now does nothing: nothing runs.
    let path = format!("/api/v1/reviews/{id}/approve");
    let (st, _) = tokio::task::spawn_blocking(move || http(admin_port, "POST", &path, APPROVER, ""))
        .await
        .unwrap();
    assert_eq!(st, 409);
    assert_eq!(count(&t).await, 0);
    direct().await.batch_execute(&format!("drop table {t}")).await.unwrap();
}

#[tokio::test]
async fn held_statement_runs_when_approved_and_fails_when_denied() {
    let admin_port = free_port();
    let g = Gatehouse::start("", &policy_toml(admin_port, 30));
    let t = unique("gh_pol_appr");
    direct()
        .await
        .batch_execute(&format!("create table {t} (id int)"))
        .await
        .unwrap();
    let (c, mut notices) = through(&g).await;

    let sql1 = format!("insert into {t} values (1)");
    let q = c.execute(sql1.as_str(), &[]);
    let approve = async {
        let n = notices.recv().await.unwrap();
        let id = review_id(&n);
        assert_eq!(count(&t).await, 0, "held means not run");
        // The requester's identity cannot approve; the admin token 'ops'
        // (not the requester) can, as can an approver.
        let path = format!("/api/v1/reviews/{id}/approve");
        let (st, body) =
            tokio::task::spawn_blocking(move || http(admin_port, "POST", &path, APPROVER, r#"{"reason":"ok"}"#))
                .await
                .unwrap();
        assert_eq!(st, 200, "{body}");
    };
    let (r, _) = tokio::join!(q, approve);
    assert_eq!(r.unwrap(), 1);
    assert_eq!(count(&t).await, 1);

    let sql3 = format!("delete from {t} where id = 1");
    let q = c.execute(sql3.as_str(), &[]);
    let deny = async {
        let n = notices.recv().await.unwrap();
        let id = review_id(&n);
        let path = format!("/api/v1/reviews/{id}/deny");
        let (st, body) = tokio::task::spawn_blocking(move || {
            http(admin_port, "POST", &path, APPROVER, r#"{"reason":"not on a friday"}"#)
        })
        .await
        .unwrap();
        assert_eq!(st, 200, "{body}");
    };
    let (r, _) = tokio::join!(q, deny);
    let e = r.unwrap_err();
    assert_eq!(code(&e), "42501");
    assert!(message(&e).contains("not on a friday"), "{}", message(&e));
    assert_eq!(count(&t).await, 1);
    direct().await.batch_execute(&format!("drop table {t}")).await.unwrap();
}

#[tokio::test]
async fn bypass_corpus_never_runs_without_approval() {
    let admin_port = free_port();
    let g = Gatehouse::start("", &policy_toml(admin_port, 1));
    let t = unique("gh_pol_byp");
    let d = direct().await;
    d.batch_execute(&format!(
        "create table {t} (id int); insert into {t} values (1); create procedure {t}_p() language sql as 'delete from {t}'"
    ))
    .await
    .unwrap();
    let corpus = [
        format!("WITH d AS (DELETE FROM {t} RETURNING *) SELECT * FROM d"),
        format!("/* select */ DeLeTe FROM {t} WHERE id = 1"),
        format!("SELECT $$x$$; DELETE FROM {t} WHERE id = 1"),
        format!("EXPLAIN ANALYZE DELETE FROM {t} WHERE id = 1"),
        format!("SELECT 1; -- \n UPDATE {t} SET id = 2"),
        format!("DO $$ BEGIN DELETE FROM {t}; END $$"),
        format!("INSERT INTO {t} SELECT 5"),
        "SET ROLE postgres".to_string(),
        "SELECT pg_terminate_backend(pg_backend_pid())".to_string(),
        "SELECT set_config('role', 'postgres', false)".to_string(),
        format!("PREPARE p AS DELETE FROM {t}; EXECUTE p"),
        format!("CALL {t}_p()"),
    ];
    let (c, _n) = through(&g).await;
    for sql in &corpus {
        // Simple protocol.
        let e = c.batch_execute(sql).await.expect_err(sql);
        assert!(matches!(code(&e).as_str(), "42501"), "{sql}: {e}");
        // Extended protocol (single statements only).
        if !sql.contains(';') || sql.starts_with("DO") {
            let e = c.execute(sql.as_str(), &[]).await.expect_err(sql);
            assert_eq!(code(&e), "42501", "{sql} (extended): {e}");
        }
        let rows: Vec<i32> = d
            .query(&format!("select id from {t}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(rows, vec![1], "{sql} changed the table");
    }
    // COPY FROM STDIN is a write: held, then timed out, nothing copied.
    let e = c
        .copy_in::<_, bytes::Bytes>(&format!("COPY {t} FROM STDIN"))
        .await
        .err()
        .expect("copy refused");
    assert_eq!(code(&e), "42501", "{e}");
    assert_eq!(count(&t).await, 1);
    d.batch_execute(&format!("drop procedure {t}_p; drop table {t}"))
        .await
        .unwrap();
}

/// Texts that differ only in constants share one classification on the
/// data path, except where a constant's value decides: a client that warms
/// the shape with harmless values gets the risky value refused all the same.
#[tokio::test]
async fn a_warmed_shape_does_not_carry_a_risky_value_through() {
    let admin_port = free_port();
    let guard = "\n[[policy.guardrail]]\nid = \"wide-delete\"\nflag = \"delete_without_where\"\nmessage = \"a delete must pick its rows\"\n";
    let g = Gatehouse::start("", &(policy_toml(admin_port, 1) + guard));
    let t = unique("gh_pol_shape");
    let d = direct().await;
    d.batch_execute(&format!(
        "create table {t} (id int); insert into {t} select generate_series(1, 50)"
    ))
    .await
    .unwrap();
    let (c, _n) = through(&g).await;
    // Inlined values, one shape: each answer is its own.
    for id in 1..=50 {
        let rows = c
            .simple_query(&format!("select id from {t} where id = {id}"))
            .await
            .unwrap();
        let got: Vec<&str> = rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0),
                _ => None,
            })
            .collect();
        assert_eq!(got, vec![id.to_string().as_str()]);
    }
    let warmed_then_risky: &[(&str, &str)] = &[
        (
            "SET default_transaction_read_only = on",
            "SET default_transaction_read_only = off",
        ),
        ("SET client_encoding = 'UTF8'", "SET client_encoding = 'SJIS'"),
        (
            "SET standard_conforming_strings = on",
            "SET standard_conforming_strings = off",
        ),
        (
            "SET transaction_read_only = 'true'",
            "SET transaction_read_only = 'false'",
        ),
    ];
    for (harmless, risky) in warmed_then_risky {
        for _ in 0..3 {
            c.batch_execute(harmless).await.expect(harmless);
        }
        let e = c.batch_execute(risky).await.expect_err(risky);
        assert_eq!(code(&e), "42501", "{risky}: {e}");
    }
    // The delete guard: a constant truth is read whatever came before.
    for _ in 0..2 {
        let e = c
            .batch_execute(&format!("DELETE FROM {t} WHERE id = 1 OR 1 = 2"))
            .await
            .expect_err("a delete is held, then times out");
        assert_eq!(code(&e), "42501", "{e}");
        assert!(!message(&e).contains("pick its rows"), "{e}");
    }
    let e = c
        .batch_execute(&format!("DELETE FROM {t} WHERE id = 1 OR 1 = 1"))
        .await
        .expect_err("the guardrail refuses");
    assert!(message(&e).contains("a delete must pick its rows"), "{e}");
    assert_eq!(count(&t).await, 50);
    d.batch_execute(&format!("drop table {t}")).await.unwrap();
}

#[tokio::test]
async fn results_past_max_rows_are_cut() {
    let admin_port = free_port();
    let toml =
        policy_toml(admin_port, 2).replace("approval_timeout_secs = 2", "approval_timeout_secs = 2\nmax_rows = 5");
    let g = Gatehouse::start("", &toml);
    let (c, _n) = through(&g).await;
    assert_eq!(c.query("select generate_series(1, 5)", &[]).await.unwrap().len(), 5);
    let e = c.query("select generate_series(1, 100000)", &[]).await.unwrap_err();
    assert_eq!(code(&e), "54000", "{e}");
    assert!(message(&e).contains("after 5 rows"), "{}", message(&e));
    // Simple protocol, and the session stays in step.
    let e = c
        .simple_query("select repeat('x', 100) from generate_series(1, 1000)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "54000");
    assert_eq!(c.query_one("select 7", &[]).await.unwrap().get::<_, i32>(0), 7);
    // A row larger than the relay buffer counts too.
    let e = c
        .query("select repeat('y', 200000) from generate_series(1, 10)", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "54000");
    assert_eq!(c.query_one("select 8", &[]).await.unwrap().get::<_, i32>(0), 8);
}

#[tokio::test]
async fn statements_too_large_to_check_are_refused_but_large_parameters_pass() {
    let admin_port = free_port();
    let g = Gatehouse::start("", &policy_toml(admin_port, 2));
    let t = unique("gh_pol_big");
    direct()
        .await
        .batch_execute(&format!("create table {t} (id int); insert into {t} values (1)"))
        .await
        .unwrap();
    let (c, _n) = through(&g).await;
    // A write hidden behind 100 KB of comment, in both protocols.
    let padded = format!("/* {} */ DELETE FROM {t}", "x".repeat(100_000));
    let e = c.batch_execute(&padded).await.unwrap_err();
    assert_eq!(code(&e), "54000", "{e}");
    let e = c.execute(padded.as_str(), &[]).await.unwrap_err();
    assert_eq!(code(&e), "54000", "{e}");
    assert_eq!(count(&t).await, 1);
    // A read with a 300 KB parameter passes (its Bind streams through).
    let big = "y".repeat(300_000);
    let n: i32 = c.query_one("select length($1::text)", &[&big]).await.unwrap().get(0);
    assert_eq!(n, 300_000);
    assert_eq!(c.query_one("select 9", &[]).await.unwrap().get::<_, i32>(0), 9);
    direct().await.batch_execute(&format!("drop table {t}")).await.unwrap();
}

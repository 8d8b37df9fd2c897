//! Policy enforcement a read-only agent cannot get around: each test is an
//! attack through the real gateway against the real PostgreSQL, under a
//! policy of `read = "allow"`, `write`/`delete` held for approval and
//! `ddl`/`admin`/`unknown` denied, and each asserts that the database is
//! unchanged and the client got a clear error (or a hold).
mod common;
mod pgraw;
use common::*;
use pgraw::*;
use std::time::Duration;

const ADMIN: &str = "enforcement-admin-token";
const APPROVER: &str = "enforcement-approver-token";

fn policy(admin_port: u16, timeout_secs: u64, extra_role: &str) -> String {
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
{extra_role}
"#,
        token_hash(ADMIN),
        token_hash(APPROVER)
    )
}

/// A table of three rows the attacks try to change.
struct Canary {
    name: String,
}

impl Canary {
    async fn new(prefix: &str) -> Canary {
        let name = unique(prefix);
        direct()
            .await
            .batch_execute(&format!(
                "create table {name} (id int primary key, v text); insert into {name} select g, 'v' || g from generate_series(1, 3) g"
            ))
            .await
            .unwrap();
        Canary { name }
    }

    /// Rows and a checksum of them.
    async fn state(&self) -> (i64, String) {
        let row = direct()
            .await
            .query_one(
                &format!(
                    "select count(*), coalesce(md5(string_agg(id::text || v, ',' order by id)), '') from {}",
                    self.name
                ),
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    async fn assert_unchanged(&self, before: &(i64, String), what: &str) {
        assert_eq!(&self.state().await, before, "{what} changed {}", self.name);
    }

    async fn drop(self, also: &str) {
        direct()
            .await
            .batch_execute(&format!("{also} drop table if exists {} cascade", self.name))
            .await
            .unwrap();
    }
}

fn login(g: &Gatehouse) -> Raw {
    login_with(g, &[])
}

fn login_with(g: &Gatehouse, extra: &[(&str, &str)]) -> Raw {
    let mut params = vec![("user", "agent"), ("database", "postgres")];
    params.extend_from_slice(extra);
    match Raw::login(g.port, &params, TOKEN) {
        Ok((r, _)) => r,
        Err(e) => panic!("login refused: {}", String::from_utf8_lossy(&e)),
    }
}

/// Frames up to the `n`th ReadyForQuery; panics if the session ends first.
fn readys(r: &mut Raw, n: usize) -> Frames {
    let mut out = Vec::new();
    for _ in 0..n {
        out.extend(r.until_ready(Duration::from_secs(30)));
    }
    out
}

fn codes(frames: &Frames) -> Vec<String> {
    errors(frames).into_iter().map(|(c, _)| c).collect()
}

fn held(frames: &Frames) -> bool {
    frames
        .iter()
        .any(|(t, b)| *t == b'N' && field(b, b'M').is_some_and(|m| m.contains("held for approval")))
}

/// The statement was held and then refused: a hold notice, then 42501.
fn assert_held_and_refused(frames: &Frames, what: &str) {
    assert!(held(frames), "{what}: no hold notice in {frames:?}");
    let errs = errors(frames);
    assert!(
        errs.iter()
            .any(|(c, m)| c == "42501" && m.contains("approval timed out")),
        "{what}: {errs:?}"
    );
}

#[tokio::test]
async fn attack_1_a_rejected_parse_does_not_redefine_a_named_statement() {
    let g = Gatehouse::start("", &policy(free_port(), 1, ""));
    let t = Canary::new("gh_enf_a1").await;
    let before = t.state().await;
    let del = format!("DELETE FROM {}", t.name);

    // One round trip at a time.
    let mut r = login(&g);
    r.send(&[parse(b"s", &del), sync()].concat()).unwrap();
    assert!(codes(&readys(&mut r, 1)).is_empty());
    r.send(&[parse(b"s", "SELECT 1"), sync()].concat()).unwrap();
    assert_eq!(codes(&readys(&mut r, 1)), vec!["42P05"]);
    r.send(&[bind(b"", b"s", &[]), execute(b""), sync()].concat()).unwrap();
    assert_held_and_refused(&readys(&mut r, 1), "stepwise");
    t.assert_unchanged(&before, "a redefined statement").await;

    // All in one write, pipelined.
    let mut r = login(&g);
    r.send(
        &[
            parse(b"s2", &del),
            sync(),
            parse(b"s2", "SELECT 1"),
            sync(),
            bind(b"", b"s2", &[]),
            execute(b""),
            sync(),
        ]
        .concat(),
    )
    .unwrap();
    let f = readys(&mut r, 3);
    assert!(codes(&f).contains(&"42P05".to_string()), "{f:?}");
    assert_held_and_refused(&f, "pipelined");
    t.assert_unchanged(&before, "a pipelined redefinition").await;
    t.drop("").await;
}

#[tokio::test]
async fn attack_2_a_skipped_parse_does_not_replace_the_unnamed_statement() {
    let g = Gatehouse::start("", &policy(free_port(), 1, ""));
    let t = Canary::new("gh_enf_a2").await;
    let before = t.state().await;
    let del = format!("DELETE FROM {}", t.name);
    for pipelined in [false, true] {
        let mut r = login(&g);
        let first = [parse(b"", &del), sync()].concat();
        // An error, then a Parse the server skips, then the Execute in a
        // later group.
        let rest = [
            bind(b"", b"no_such_statement", &[]),
            parse(b"", "SELECT 1"),
            sync(),
            bind(b"", b"", &[]),
            execute(b""),
            sync(),
        ]
        .concat();
        let f = if pipelined {
            r.send(&[first, rest].concat()).unwrap();
            readys(&mut r, 3)
        } else {
            r.send(&first).unwrap();
            readys(&mut r, 1);
            r.send(&rest).unwrap();
            readys(&mut r, 2)
        };
        assert!(codes(&f).contains(&"26000".to_string()), "{f:?}");
        assert_held_and_refused(&f, if pipelined { "pipelined" } else { "stepwise" });
        t.assert_unchanged(&before, "a skipped Parse").await;
    }
    t.drop("").await;
}

#[tokio::test]
async fn attack_3_a_bind_larger_than_the_buffer_is_judged_whole() {
    let g = Gatehouse::start("", &policy(free_port(), 1, ""));
    let t = Canary::new("gh_enf_a3").await;
    let before = t.state().await;
    let mut r = login(&g);
    r.send(
        &[
            parse(b"s_del", &format!("DELETE FROM {} WHERE $1::text IS NOT NULL", t.name)),
            parse(b"s_sel", "SELECT length($1::text)"),
            sync(),
        ]
        .concat(),
    )
    .unwrap();
    assert!(codes(&readys(&mut r, 1)).is_empty());
    // The unnamed portal holds an allowed read.
    r.send(&[bind(b"", b"s_sel", &[Some(b"x")]), execute(b""), sync()].concat())
        .unwrap();
    assert_eq!(first_value(&readys(&mut r, 1)).as_deref(), Some("1"));
    // A 200 KB Bind of the DELETE into the same portal, its first write
    // cut inside the portal's name.
    let big = bind(b"", b"s_del", &[Some(&vec![b'a'; 200_000])]);
    r.send(&big[..7]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    r.send(&[&big[7..], &execute(b"")[..], &sync()[..]].concat()).unwrap();
    assert_held_and_refused(&readys(&mut r, 1), "a large Bind");
    t.assert_unchanged(&before, "a large Bind").await;

    // Names larger than the buffer: refused, never half-read.
    let mut r = login(&g);
    let long = vec![b'p'; 100_000];
    r.send(&[parse(b"d", &format!("DELETE FROM {}", t.name)), sync()].concat())
        .unwrap();
    readys(&mut r, 1);
    r.send(&[bind(&long, b"d", &[]), sync()].concat()).unwrap();
    let f = readys(&mut r, 1);
    assert_eq!(codes(&f), vec!["54000"], "{f:?}");
    r.send(&[execute(&long), sync()].concat()).unwrap();
    let (f, closed) = r.until_closed(Duration::from_secs(10));
    assert!(closed, "an Execute too large to read ends the session");
    assert!(!codes(&f).is_empty(), "{f:?}");
    t.assert_unchanged(&before, "a Bind with long names").await;
    t.drop("").await;
}

#[tokio::test]
async fn attack_4_standard_conforming_strings_stay_on() {
    let g = Gatehouse::start("", &policy(free_port(), 1, ""));
    let t = Canary::new("gh_enf_a4").await;
    let before = t.state().await;
    let mut r = login(&g);
    for sql in [
        "SET standard_conforming_strings = off",
        "SET LOCAL standard_conforming_strings TO false",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "SET backslash_quote = on",
    ] {
        let f = r.simple(sql);
        assert_eq!(codes(&f), vec!["42501"], "{sql}: {f:?}");
        let (_, m) = first_error(&f).unwrap();
        assert!(m.contains("how statements are read"), "{m}");
    }
    // The extended protocol too.
    r.send(
        &[
            parse(b"", "SET standard_conforming_strings = off"),
            bind(b"", b"", &[]),
            execute(b""),
            sync(),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(codes(&readys(&mut r, 1)), vec!["42501"]);
    // Read with standard strings, as gatehouse reads it: one SELECT of two
    // literals, and the server agrees.
    let sneaky = format!("SELECT 'a\\' , '; DELETE FROM {}; SELECT ' --'", t.name);
    let f = r.simple(&sneaky);
    assert!(codes(&f).is_empty(), "{f:?}");
    assert_eq!(first_value(&f).as_deref(), Some("a\\"));
    // Going back to the pinned value is fine.
    assert!(codes(&r.simple("RESET standard_conforming_strings")).is_empty());
    assert!(codes(&r.simple("SET standard_conforming_strings = on")).is_empty());
    t.assert_unchanged(&before, "standard_conforming_strings").await;
    t.drop("").await;
}

#[tokio::test]
async fn attack_5_and_6_startup_parameters_are_allow_listed() {
    let g = Gatehouse::start("", &policy(free_port(), 1, ""));
    for (k, v) in [
        ("options", "-c standard_conforming_strings=off"),
        ("options", "--standard-conforming-strings=off"),
        ("options", "-c search_path=public -c backslash_quote=on"),
        ("standard_conforming_strings", "off"),
        ("client_encoding", "SJIS"),
        ("Client_Encoding", "BIG5"),
        ("role", "postgres"),
        ("session_authorization", "postgres"),
        ("default_transaction_read_only", "off"),
        ("session_replication_role", "replica"),
        ("options", "-c role=postgres"),
        (
            "options",
            "-c application_name=x\x0b-c\x0bsession_replication_role=replica",
        ),
    ] {
        let e = Raw::login(g.port, &[("user", "agent"), ("database", "postgres"), (k, v)], TOKEN)
            .err()
            .unwrap_or_else(|| panic!("{k}={v} was accepted"));
        assert_eq!(sqlstate(&e), "42501", "{k}={v}");
        let m = field(&e, b'M').unwrap_or_default();
        assert!(m.contains("startup parameter"), "{k}={v}: {m}");
    }
    // Ordinary parameters still pass, and the session reads them.
    let mut r = login_with(
        &g,
        &[
            ("application_name", "gh_enf"),
            ("client_encoding", "UTF8"),
            ("options", "-c search_path=public -c statement_timeout=5s"),
        ],
    );
    assert_eq!(first_value(&r.simple("SHOW statement_timeout")).as_deref(), Some("5s"));
    assert_eq!(
        first_value(&r.simple("SHOW standard_conforming_strings")).as_deref(),
        Some("on")
    );
    assert_eq!(first_value(&r.simple("SHOW backslash_quote")).as_deref(), Some("off"));
    assert_eq!(first_value(&r.simple("SHOW client_encoding")).as_deref(), Some("UTF8"));
    assert_eq!(
        first_value(&r.simple("SHOW default_transaction_read_only")).as_deref(),
        Some("on"),
        "a role that may not write without approval runs read-only upstream"
    );
    // RESET ALL keeps them: they are the session's reset values.
    r.simple("RESET ALL");
    assert_eq!(
        first_value(&r.simple("SHOW standard_conforming_strings")).as_deref(),
        Some("on")
    );
    assert_eq!(
        first_value(&r.simple("SHOW default_transaction_read_only")).as_deref(),
        Some("on")
    );
}

#[tokio::test]
async fn attack_6_multibyte_client_encodings_and_invalid_text_are_refused() {
    let g = Gatehouse::start("", &policy(free_port(), 1, ""));
    let t = Canary::new("gh_enf_a6").await;
    let before = t.state().await;
    let mut r = login(&g);
    for sql in ["SET client_encoding = 'SJIS'", "SET NAMES 'BIG5'"] {
        assert_eq!(codes(&r.simple(sql)), vec!["42501"], "{sql}");
    }
    // SJIS text whose second byte is a backslash: not UTF-8, refused.
    let mut q = b"SELECT '\x95\\' ; DELETE FROM ".to_vec();
    q.extend_from_slice(t.name.as_bytes());
    q.extend_from_slice(b"; --'\0");
    r.send(&frame(b'Q', &q)).unwrap();
    let f = readys(&mut r, 1);
    assert_eq!(codes(&f), vec!["22021"], "{f:?}");
    let mut p = b"\0".to_vec();
    p.extend_from_slice(&q);
    p.extend_from_slice(&0i16.to_be_bytes());
    r.send(&[frame(b'P', &p), bind(b"", b"", &[]), execute(b""), sync()].concat())
        .unwrap();
    assert_eq!(codes(&readys(&mut r, 1)), vec!["22021"]);
    t.assert_unchanged(&before, "a multibyte encoding").await;
    t.drop("").await;
}

#[tokio::test]
async fn attack_7_functions_are_classed_by_what_they_do() {
    let g = Gatehouse::start("", &policy(free_port(), 1, ""));
    let t = Canary::new("gh_enf_a7").await;
    let n = &t.name.clone();
    direct()
        .await
        .batch_execute(&format!(
            "create function {n}_sql() returns int language sql as 'update {n} set v = ''x''; select 1';
             create function {n}_plpgsql() returns int language plpgsql as $$ begin delete from {n}; return 1; end $$;
             create function {n}_stable() returns int language plpgsql stable as $$ begin return {n}_plpgsql(); end $$;
             create view {n}_view as select {n}_plpgsql() as x;"
        ))
        .await
        .unwrap();
    let before = t.state().await;
    let mut r = login(&g);
    // Volatile user functions: writes, held.
    for sql in [
        format!("SELECT {n}_sql()"),
        format!("SELECT 1 FROM {n} WHERE id = {n}_plpgsql()"),
        format!("SELECT public.{n}_plpgsql()"),
    ] {
        assert_held_and_refused(&r.simple(&sql), &sql);
        t.assert_unchanged(&before, &sql).await;
    }
    r.send(
        &[
            parse(b"", &format!("SELECT {n}_sql()")),
            bind(b"", b"", &[]),
            execute(b""),
            sync(),
        ]
        .concat(),
    )
    .unwrap();
    assert_held_and_refused(&readys(&mut r, 1), "extended");
    // What the catalog cannot see (a view, a function labelled STABLE that
    // calls a writer) the read-only session stops at the server.
    for sql in [format!("SELECT * FROM {n}_view"), format!("SELECT {n}_stable()")] {
        let f = r.simple(&sql);
        assert_eq!(codes(&f), vec!["25006"], "{sql}: {f:?}");
        t.assert_unchanged(&before, &sql).await;
    }
    // A function the catalog does not have is unknown (denied).
    let f = r.simple("SELECT gh_no_such_function_at_all()");
    assert_eq!(codes(&f), vec!["42501"], "{f:?}");
    // Built-ins and harmless volatile ones stay reads.
    let f = r.simple("SELECT lower('A'), now() > '2000-01-01', random() >= 0, count(*) FROM pg_class");
    assert!(codes(&f).is_empty(), "{f:?}");
    t.drop(&format!(
        "drop view {n}_view; drop function {n}_stable(); drop function {n}_sql(); drop function {n}_plpgsql();"
    ))
    .await;
}

#[tokio::test]
async fn read_only_cannot_be_turned_off() {
    let g = Gatehouse::start("", &policy(free_port(), 1, ""));
    let mut r = login(&g);
    for sql in [
        "BEGIN READ WRITE",
        "START TRANSACTION READ WRITE",
        "SET default_transaction_read_only = off",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SET transaction_read_only = off",
    ] {
        let f = r.simple(sql);
        assert_eq!(codes(&f), vec!["42501"], "{sql}: {f:?}");
    }
    r.simple("BEGIN");
    let f = r.simple("SET TRANSACTION READ WRITE");
    assert_eq!(codes(&f), vec!["42501"]);
    r.simple("ROLLBACK");
    assert_eq!(
        first_value(&r.simple("SHOW default_transaction_read_only")).as_deref(),
        Some("on")
    );
}

#[tokio::test]
async fn a_changed_pinned_parameter_ends_the_session() {
    let g = Gatehouse::start("", &policy(free_port(), 1, ""));
    let f = unique("gh_enf_sneaky");
    direct()
        .await
        .batch_execute(&format!(
            "create function {f}() returns int language plpgsql stable as $$ begin perform set_config('standard_conforming_strings', 'off', false); return 1; end $$"
        ))
        .await
        .unwrap();
    let mut r = login(&g);
    r.send(&query(&format!("SELECT {f}()"))).unwrap();
    let (frames, closed) = r.until_closed(Duration::from_secs(10));
    assert!(closed, "the session ends");
    let (code, m) = first_error(&frames).expect("a FATAL");
    assert_eq!(code, "42501");
    assert!(m.contains("standard_conforming_strings"), "{m}");
    direct()
        .await
        .batch_execute(&format!("drop function {f}()"))
        .await
        .unwrap();
}

#[tokio::test]
async fn names_made_by_sql_or_cut_at_63_bytes_are_not_trusted() {
    let g = Gatehouse::start("", &policy(free_port(), 1, ""));
    let t = Canary::new("gh_enf_names").await;
    let before = t.state().await;
    let mut r = login(&g);
    // A name the server cuts at 63 bytes binds the statement it collides with.
    let x = [b"a".repeat(63), b"X".to_vec()].concat();
    let y = [b"a".repeat(63), b"Y".to_vec()].concat();
    r.send(&[parse(&x, &format!("DELETE FROM {}", t.name)), sync()].concat())
        .unwrap();
    readys(&mut r, 1);
    r.send(&[bind(b"", &y, &[]), execute(b""), sync()].concat()).unwrap();
    assert_held_and_refused(&readys(&mut r, 1), "a truncated name");
    // A statement prepared by SQL, run by the protocol: gatehouse cannot
    // name what it holds.
    assert!(codes(&r.simple("PREPARE q AS SELECT 1")).is_empty());
    r.send(&[bind(b"", b"q", &[]), execute(b""), sync()].concat()).unwrap();
    let f = readys(&mut r, 1);
    assert_eq!(codes(&f), vec!["42501"], "{f:?}");
    // A cursor run as a portal: the same.
    r.simple("BEGIN");
    assert!(codes(&r.simple("DECLARE c CURSOR FOR SELECT 1")).is_empty());
    r.send(&[execute(b"c"), sync()].concat()).unwrap();
    assert_eq!(codes(&readys(&mut r, 1)), vec!["42501"]);
    r.simple("ROLLBACK");
    // Names gatehouse keeps for itself.
    r.send(&[parse(b"gatehouse:ro", "SELECT 1"), sync()].concat()).unwrap();
    assert_eq!(codes(&readys(&mut r, 1)), vec!["42501"]);
    t.assert_unchanged(&before, "names").await;
    t.drop("").await;
}

#[tokio::test]
async fn malformed_and_uninspectable_messages_are_refused() {
    let g = Gatehouse::start("", &policy(free_port(), 1, ""));
    let mut r = login(&g);
    // A Bind whose parameter is cut short.
    let mut b = b"\0\0\0\0\0\x01\0\0\0\x09ab".to_vec();
    b.extend_from_slice(&0i16.to_be_bytes());
    r.send(&[parse(b"", "SELECT $1::text"), frame(b'B', &b), execute(b""), sync()].concat())
        .unwrap();
    assert_eq!(codes(&readys(&mut r, 1)), vec!["08P01"]);
    // A FunctionCall: the role does not allow unknown statements.
    let mut fc = 1_300u32.to_be_bytes().to_vec(); // any OID
    fc.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    r.send(&frame(b'F', &fc)).unwrap();
    let f = readys(&mut r, 1);
    assert_eq!(codes(&f), vec!["42501"], "{f:?}");
    // The session stays in step.
    assert_eq!(first_value(&r.simple("SELECT 41 + 1")).as_deref(), Some("42"));
    // A password message after the login: the session ends.
    r.send(&password("x")).unwrap();
    let (f, closed) = r.until_closed(Duration::from_secs(10));
    assert!(closed);
    assert_eq!(codes(&f), vec!["08P01"]);
}

#[tokio::test]
async fn an_approved_write_runs_read_write_and_only_it() {
    let admin_port = free_port();
    let g = Gatehouse::start("", &policy(admin_port, 30, ""));
    let t = Canary::new("gh_enf_rw").await;
    let n = t.name.clone();
    direct()
        .await
        .batch_execute(&format!(
            "create function {n}_w() returns int language plpgsql as $$ begin update {n} set v = 'w'; return 1; end $$;
             create view {n}_view as select {n}_w() as x;"
        ))
        .await
        .unwrap();
    let approve_next = move || {
        // The next review that opens: approve it.
        for _ in 0..200 {
            let (_, body) = http(admin_port, "GET", "/api/v1/reviews", ADMIN, "");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let pending = v["reviews"]
                .as_array()
                .and_then(|a| a.iter().find(|r| r["status"]["state"] == "pending"));
            if let Some(id) = pending.and_then(|r| r["id"].as_str()) {
                let (st, body) = http(
                    admin_port,
                    "POST",
                    &format!("/api/v1/reviews/{id}/approve"),
                    APPROVER,
                    "{}",
                );
                assert_eq!(st, 200, "{body}");
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("no review opened");
    };
    let mut r = login(&g);
    // Simple protocol.
    let a = std::thread::spawn(approve_next);
    let f = r.simple(&format!("INSERT INTO {n} VALUES (10, 'approved')"));
    a.join().unwrap();
    assert!(held(&f) && codes(&f).is_empty(), "{f:?}");
    assert_eq!(t.state().await.0, 4);
    // The session is read-only again right after: a write hidden in a view
    // fails at the server.
    assert_eq!(codes(&r.simple(&format!("SELECT * FROM {n}_view"))), vec!["25006"]);
    // Extended protocol, a whole group.
    let a = std::thread::spawn(approve_next);
    r.send(
        &[
            parse(b"", &format!("INSERT INTO {n} VALUES ($1::int, 'x')")),
            bind(b"", b"", &[Some(b"11")]),
            execute(b""),
            sync(),
        ]
        .concat(),
    )
    .unwrap();
    let f = readys(&mut r, 1);
    a.join().unwrap();
    assert!(codes(&f).is_empty(), "{f:?}");
    assert_eq!(t.state().await.0, 5);
    assert_eq!(codes(&r.simple(&format!("SELECT * FROM {n}_view"))), vec!["25006"]);
    // A transaction whose first statement is the held write.
    assert!(codes(&r.simple("BEGIN")).is_empty());
    let a = std::thread::spawn(approve_next);
    let f = r.simple(&format!("INSERT INTO {n} VALUES (12, 'in a block')"));
    a.join().unwrap();
    assert!(codes(&f).is_empty(), "{f:?}");
    // ...and the rest of the block is read-only again.
    assert_eq!(codes(&r.simple(&format!("SELECT * FROM {n}_view"))), vec!["25006"]);
    r.simple("ROLLBACK");
    assert_eq!(t.state().await.0, 5, "rolled back");
    // A block that ran a query first cannot become read-write: the client
    // is told why, and nothing is written.
    r.simple("BEGIN");
    r.simple("SELECT 1");
    let a = std::thread::spawn(approve_next);
    let f = r.simple(&format!("INSERT INTO {n} VALUES (13, 'late')"));
    a.join().unwrap();
    assert!(
        f.iter().any(|(t, b)| *t == b'N'
            && field(b, b'M').is_some_and(|m| m.contains("could not make this transaction read-write"))),
        "{f:?}"
    );
    assert!(!codes(&f).is_empty());
    r.simple("ROLLBACK");
    assert_eq!(t.state().await.0, 5);
    assert_eq!(
        first_value(&r.simple("SHOW default_transaction_read_only")).as_deref(),
        Some("on")
    );
    t.drop(&format!("drop view {n}_view; drop function {n}_w();")).await;
}

#[tokio::test]
async fn reviews_carry_bind_parameters_masked_and_function_calls_by_name() {
    let admin_port = free_port();
    let toml = policy(admin_port, 2, "").replace("unknown = \"deny\"", "unknown = \"approve\"");
    let g = Gatehouse::start("", &toml);
    let t = Canary::new("gh_enf_rev").await;
    let mut r = login(&g);
    let key = "AKIAIOSFODNN7EXAMPLE";
    r.send(
        &[
            parse(b"", &format!("INSERT INTO {} VALUES ($1::int, $2)", t.name)),
            bind(b"", b"", &[Some(b"77"), Some(key.as_bytes())]),
            execute(b""),
            sync(),
        ]
        .concat(),
    )
    .unwrap();
    let mut review = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, body) = http(admin_port, "GET", "/api/v1/reviews", ADMIN, "");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(rv) = v["reviews"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["status"]["state"] == "pending"))
        {
            review = rv.clone();
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(review["params"][0], "77", "{review}");
    let p1 = review["params"][1].as_str().unwrap_or_default();
    assert!(
        !p1.contains(key) && (p1.contains("MASKED") || p1.contains("****")),
        "{review}"
    );
    assert!(review["sql"].as_str().unwrap().contains("INSERT INTO"), "{review}");
    readys(&mut r, 1);
    // A FunctionCall's review names the function and its arguments.
    let oid: u32 = direct()
        .await
        .query_one("select 'pg_catalog.lower(text)'::regprocedure::oid", &[])
        .await
        .unwrap()
        .get(0);
    let mut fc = oid.to_be_bytes().to_vec();
    fc.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 3]);
    fc.extend_from_slice(b"ABC");
    fc.extend_from_slice(&[0, 0]);
    r.send(&frame(b'F', &fc)).unwrap();
    let mut found = false;
    for _ in 0..100 {
        let (_, body) = http(admin_port, "GET", "/api/v1/reviews", ADMIN, "");
        if body.contains("FunctionCall of pg_catalog.lower") {
            assert!(body.contains("\"params\":[\"ABC\"]"), "{body}");
            found = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(found, "a review of the FunctionCall");
    let f = readys(&mut r, 1);
    assert_held_and_refused(&f, "a FunctionCall");
    t.drop("").await;
}

#[tokio::test]
async fn copy_out_counts_against_max_rows() {
    let g = Gatehouse::start("", &policy(free_port(), 1, "max_rows = 5"));
    let mut r = login(&g);
    let f = r.simple("COPY (SELECT generate_series(1, 100)) TO STDOUT");
    let copied = f.iter().filter(|(t, _)| *t == b'd').count();
    assert_eq!(copied, 5, "{f:?}");
    assert_eq!(codes(&f), vec!["54000"]);
    assert_eq!(first_value(&r.simple("SELECT 5")).as_deref(), Some("5"));
    let f = r.simple("COPY (SELECT generate_series(1, 5)) TO STDOUT");
    assert!(codes(&f).is_empty(), "{f:?}");
}

#[tokio::test]
async fn a_bound_portal_cannot_be_run_by_sql_without_a_decision() {
    // A role that may insert but not delete: its upstream session is not
    // read-only, so only the decision at the Bind stands between a bound
    // DELETE and SQL that runs the portal by name.
    let toml = policy(free_port(), 1, "").replacen("write = \"approve\"", "write = \"allow\"", 1);
    let g = Gatehouse::start("", &toml);
    let t = Canary::new("gh_enf_fetch").await;
    let before = t.state().await;
    let n = &t.name;
    let mut r = login(&g);
    r.send(
        &[
            parse(
                b"ins",
                &format!("INSERT INTO {n} VALUES (50, 'via a portal') RETURNING id"),
            ),
            parse(b"del", &format!("DELETE FROM {n} RETURNING id")),
            sync(),
        ]
        .concat(),
    )
    .unwrap();
    assert!(codes(&readys(&mut r, 1)).is_empty());
    for (stmt, run) in [
        (&b"del"[..], "FETCH ALL FROM p"),
        (&b"del"[..], "MOVE ALL IN p"),
        (&b"del"[..], "SELECT cursor_to_xml('p', 10, false, false, '')"),
    ] {
        assert!(codes(&r.simple("BEGIN")).is_empty());
        // The Bind of a change is decided at the Bind: held, then refused.
        r.send(&[bind(b"p", stmt, &[]), sync()].concat()).unwrap();
        assert_held_and_refused(&readys(&mut r, 1), "a Bind of a change");
        // Nothing is left for SQL to run.
        let f = r.simple(run);
        assert!(!codes(&f).is_empty(), "{run}: {f:?}");
        r.simple("ROLLBACK");
        t.assert_unchanged(&before, run).await;
    }
    // An allowed change is bound and runs as usual, by Execute or by FETCH.
    r.simple("BEGIN");
    r.send(&[bind(b"p", b"ins", &[]), sync()].concat()).unwrap();
    assert!(codes(&readys(&mut r, 1)).is_empty());
    assert_eq!(first_value(&r.simple("FETCH ALL FROM p")).as_deref(), Some("50"));
    r.simple("ROLLBACK");
    // The same in one extended group with the SQL behind it.
    r.send(
        &[
            query("BEGIN"),
            bind(b"p", b"del", &[]),
            query("FETCH ALL FROM p"),
            sync(),
            query("COMMIT"),
        ]
        .concat(),
    )
    .unwrap();
    let f = readys(&mut r, 3);
    assert!(held(&f), "{f:?}");
    t.assert_unchanged(&before, "FETCH in the group").await;
    t.drop("").await;
}

#[tokio::test]
async fn transaction_read_only_cannot_be_reset_and_aggregates_count_their_functions() {
    let g = Gatehouse::start("", &policy(free_port(), 1, ""));
    let t = Canary::new("gh_enf_agg").await;
    let n = t.name.clone();
    direct()
        .await
        .batch_execute(&format!(
            "create function {n}_acc(int, int) returns int language plpgsql as $$ begin update {n} set v = 'agg'; return coalesce($1, 0) + $2; end $$;
             create aggregate {n}_agg(int) (sfunc = {n}_acc, stype = int);"
        ))
        .await
        .unwrap();
    let before = t.state().await;
    let mut r = login(&g);
    for sql in [
        "RESET transaction_read_only",
        "SET transaction_read_only TO DEFAULT",
        "SET LOCAL transaction_read_only = DEFAULT",
    ] {
        r.simple("BEGIN");
        let f = r.simple(sql);
        assert_eq!(codes(&f), vec!["42501"], "{sql}: {f:?}");
        r.simple("ROLLBACK");
    }
    // A multi-statement Query cannot smuggle it either.
    let f = r.simple(&format!("RESET transaction_read_only; SELECT {n}_agg(id) FROM {n}"));
    assert!(!codes(&f).is_empty(), "{f:?}");
    // An aggregate is as volatile as its transition function: held.
    assert_held_and_refused(&r.simple(&format!("SELECT {n}_agg(id) FROM {n}")), "an aggregate");
    t.assert_unchanged(&before, "an aggregate").await;
    t.drop(&format!(
        "drop aggregate {n}_agg(int); drop function {n}_acc(int, int);"
    ))
    .await;
}

#[tokio::test]
async fn a_denied_statement_never_passes_as_one_allowed_before() {
    // Texts longer than the classification cache keeps are classified anew
    // each time: a denied one must never reuse an allowed one's memo.
    let g = Gatehouse::start("", &policy(free_port(), 1, ""));
    let mut r = login(&g);
    let pad = format!("/* {} */", "x".repeat(17 * 1024));
    let made = unique("gh_enf_memo");
    for i in 0..30 {
        let f = r.simple(&format!("SELECT {i} {pad}"));
        assert!(codes(&f).is_empty(), "{f:?}");
        let f = r.simple(&format!("CREATE TABLE {made}_{i} (x int) {pad}"));
        let errs = errors(&f);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "42501", "refused by gatehouse, not by the server: {errs:?}");
        assert!(errs[0].1.contains("ddl statements are denied"), "{errs:?}");
    }
}

/// Approves every review whose statement contains `needle`, until stopped.
fn approver(
    admin_port: u16,
    needle: &'static str,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            let (_, body) = http(admin_port, "GET", "/api/v1/reviews", ADMIN, "");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            for r in v["reviews"].as_array().into_iter().flatten() {
                if r["status"]["state"] == "pending" && r["sql"].as_str().is_some_and(|q| q.contains(needle)) {
                    if let Some(id) = r["id"].as_str() {
                        http(
                            admin_port,
                            "POST",
                            &format!("/api/v1/reviews/{id}/approve"),
                            APPROVER,
                            "{}",
                        );
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (stop, h)
}

#[tokio::test]
async fn an_approval_never_stretches_to_other_statements() {
    let admin_port = free_port();
    let g = Gatehouse::start("", &policy(admin_port, 3, ""));
    let t = Canary::new("gh_enf_window").await;
    let n = t.name.clone();
    direct()
        .await
        .batch_execute(&format!(
            "create table {n}_log (x text);
             create function {n}_del() returns int language plpgsql as $$ begin delete from {n} where id = (select max(id) from {n}); return 1; end $$;
             create view {n}_vw as select {n}_del() as x;"
        ))
        .await
        .unwrap();
    let before = t.state().await;
    let (stop, h) = approver(admin_port, "_log VALUES");
    let ins = format!("INSERT INTO {n}_log VALUES ('approved')");
    let view = format!("SELECT * FROM {n}_vw");
    let mut r = login(&g);
    r.send(&[parse(b"w", &ins), parse(b"v", &view), sync()].concat())
        .unwrap();
    assert!(codes(&readys(&mut r, 1)).is_empty());
    // The view runs in the approved group, before the approved Execute.
    r.send(
        &[
            bind(b"pw", b"w", &[]),
            bind(b"pv", b"v", &[]),
            execute(b"pv"),
            execute(b"pw"),
            sync(),
        ]
        .concat(),
    )
    .unwrap();
    let f = readys(&mut r, 1);
    assert!(held(&f), "{f:?}");
    t.assert_unchanged(&before, "a view in the approved group").await;
    // COMMIT, BEGIN and savepoints after the approved Execute.
    // (Each fails read-only once approved, so the server skips the rest of
    // its group: one ReadyForQuery.)
    for (tail, answers) in [
        (vec![query("SELECT 1")], 1),
        (
            vec![
                parse(b"", "COMMIT"),
                bind(b"", b"", &[]),
                execute(b""),
                parse(b"", &view),
                bind(b"", b"", &[]),
                execute(b""),
            ],
            1,
        ),
        (
            vec![
                parse(b"", "COMMIT"),
                bind(b"", b"", &[]),
                execute(b""),
                parse(b"", "BEGIN"),
                bind(b"", b"", &[]),
                execute(b""),
            ],
            1,
        ),
    ] {
        let mut group = vec![bind(b"pw", b"w", &[]), execute(b"pw")];
        group.extend(tail);
        group.push(sync());
        r.send(&group.concat()).unwrap();
        readys(&mut r, answers);
        r.simple("ROLLBACK");
        assert_eq!(codes(&r.simple(&view)), vec!["25006"], "the session is read-only again");
        t.assert_unchanged(&before, "statements after the approved one").await;
    }
    r.simple("BEGIN");
    r.send(
        &[
            parse(b"", "SAVEPOINT s"),
            bind(b"", b"", &[]),
            execute(b""),
            bind(b"pw", b"w", &[]),
            execute(b"pw"),
            parse(b"", "ROLLBACK TO SAVEPOINT s"),
            bind(b"", b"", &[]),
            execute(b""),
            sync(),
        ]
        .concat(),
    )
    .unwrap();
    readys(&mut r, 1);
    assert!(!codes(&r.simple(&view)).is_empty(), "the block is not read-write");
    r.simple("ROLLBACK");
    // A Query that leaves a block open gets no read-write context.
    let f = r.simple(&format!("{ins}; BEGIN"));
    assert!(codes(&f).contains(&"25006".to_string()), "{f:?}");
    r.simple("ROLLBACK");
    assert_eq!(codes(&r.simple(&view)), vec!["25006"]);
    t.assert_unchanged(&before, "a Query with BEGIN").await;
    // And alone, the approved statement runs.
    let f = r.simple(&ins);
    assert!(codes(&f).is_empty(), "{f:?}");
    assert_eq!(codes(&r.simple(&view)), vec!["25006"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    h.join().unwrap();
    t.assert_unchanged(&before, "the window").await;
    t.drop(&format!(
        "drop view {n}_vw; drop function {n}_del(); drop table {n}_log;"
    ))
    .await;
}

#[tokio::test]
async fn without_a_read_only_session_opaque_functions_are_unknown() {
    // A role that may write but not delete: no read-only session, so a
    // function whose effect the catalog cannot see is unknown (denied).
    let toml = policy(free_port(), 1, "").replacen("write = \"approve\"", "write = \"allow\"", 1);
    let g = Gatehouse::start("", &toml);
    let t = Canary::new("gh_enf_opaque").await;
    let n = t.name.clone();
    direct()
        .await
        .batch_execute(&format!(
            "create function {n}_del() returns int language plpgsql as $$ begin delete from {n}; return 1; end $$;"
        ))
        .await
        .unwrap();
    let before = t.state().await;
    let mut r = login(&g);
    let f = r.simple(&format!("SELECT {n}_del()"));
    assert_eq!(codes(&f), vec!["42501"], "{f:?}");
    assert!(first_error(&f).unwrap().1.contains("unknown"), "{f:?}");
    t.assert_unchanged(&before, "an opaque function").await;
    t.drop(&format!("drop function {n}_del();")).await;
}

/// Calls the parse tree does not show as calls, on a role without the
/// read-only session's net (so only the classification stands between the
/// client and the write): attribute notation, an operator in `ANY
/// (subquery)`, and syntax this parser reads as SQL/JSON while the server
/// (PostgreSQL 15) calls a function through search_path. Each must be
/// refused (unknown: opaque code) and change nothing.
#[tokio::test]
async fn calls_hidden_from_the_parse_tree_are_still_calls() {
    let toml = policy(free_port(), 1, "").replacen("write = \"approve\"", "write = \"allow\"", 1);
    let g = Gatehouse::start("", &toml);
    let t = Canary::new("gh_enf_hidden").await;
    let n = t.name.clone();
    direct()
        .await
        .batch_execute(&format!(
            "create schema {n}_s;
             create function {n}_s.purge(r {n}) returns text language plpgsql as $$ begin delete from {n} where id = r.id; return 'gone'; end $$;
             create function {n}_s.opdel(int, int) returns boolean language plpgsql as $$ begin delete from {n}; return true; end $$;
             create operator {n}_s.%%% (leftarg = int, rightarg = int, function = {n}_s.opdel);
             create function {n}_s.json_object(text[]) returns text language plpgsql as $$ begin delete from {n} where id = 3; return 'mine'; end $$;
             create function {n}_s.json_array(variadic int[]) returns text language plpgsql as $$ begin delete from {n} where id = 2; return 'mine'; end $$;"
        ))
        .await
        .unwrap();
    let before = t.state().await;
    let mut r = login(&g);
    let f = r.simple(&format!("SET search_path = {n}_s, pg_catalog, public"));
    assert!(codes(&f).is_empty(), "{f:?}");
    for sql in [
        format!("SELECT t.purge FROM {n} t WHERE id = 1"),
        format!("SELECT (t).purge FROM {n} t WHERE id = 1"),
        format!("SELECT 1 OPERATOR({n}_s.%%%) ANY (SELECT 2)"),
        format!("SELECT 1 WHERE 1 OPERATOR({n}_s.%%%) ALL (SELECT 2)"),
        "SELECT json_object('{a,1}'::text[])".to_string(),
        "SELECT json_array(1, 2)".to_string(),
    ] {
        let f = r.simple(&sql);
        assert_eq!(codes(&f), vec!["42501"], "{sql}: {f:?}");
        t.assert_unchanged(&before, &sql).await;
        // the extended protocol decides the same way
        r.send(&[parse(b"", &sql), bind(b"", b"", &[]), execute(b""), sync()].concat())
            .unwrap();
        let f = readys(&mut r, 1);
        assert_eq!(codes(&f), vec!["42501"], "extended {sql}: {f:?}");
        t.assert_unchanged(&before, &sql).await;
    }
    // Columns stay columns, and built-ins stay reads.
    let f = r.simple(&format!("SELECT t.id, t.v FROM {n} t ORDER BY t.id"));
    assert!(codes(&f).is_empty(), "{f:?}");
    t.drop(&format!("drop schema {n}_s cascade;")).await;
}

/// Settings fail closed (the upstream account is a superuser here): only
/// those any user may set for the session alone pass; a system view's
/// rule cannot turn an UPDATE into a SET.
#[tokio::test]
async fn settings_and_system_catalogs_are_administration() {
    let g = Gatehouse::start("", &policy(free_port(), 1, ""));
    let mut r = login(&g);
    for sql in [
        "SET jit_dump_bitcode = on",
        "SET track_activities = off",
        "SET temp_file_limit = -1",
        "SET compute_query_id = off",
        "SELECT set_config('track_functions', 'none', false)",
        "UPDATE pg_settings SET setting = 'replica' WHERE name = 'session_replication_role'",
        "UPDATE pg_catalog.pg_settings SET setting = 'on' WHERE name = 'backslash_quote'",
        "UPDATE pg_catalog.pg_proc SET provolatile = 'i' WHERE proname = 'gh_nothing'",
        "COPY pg_catalog.pg_description FROM STDIN",
        "SET plperl.on_plperl_init = 'system(1)'",
        // attribute notation on a scalar is a call of a side-effect function
        "SELECT ('/etc/passwd'::text).pg_read_file",
        "SELECT (pg_backend_pid()).pg_terminate_backend",
    ] {
        let f = r.simple(sql);
        assert_eq!(codes(&f), vec!["42501"], "{sql}: {f:?}");
        assert!(!held(&f), "{sql}: administration is denied, not held");
    }
    let f = r.simple("SHOW session_replication_role");
    assert!(
        f.iter()
            .any(|(t, b)| *t == b'D' && b.windows(6).any(|w| w == b"origin")),
        "{f:?}"
    );
    for sql in [
        "SET jit = off",
        "SET work_mem = '8MB'",
        "SET app.tenant_id = '7'",
        "SET statement_timeout = 0",
    ] {
        let f = r.simple(sql);
        assert!(codes(&f).is_empty(), "{sql}: {f:?}");
    }
}

//! Secret masking end to end: the real `gatehouse` binary between psql /
//! tokio-postgres / a raw client and the PostgreSQL on this machine (and, for
//! what PostgreSQL never sends, a scripted fake server).
//!
//! The tests bring their own rules (a rules file in a temp dir plus one
//! `[[scan.rule]]` table in the config), so they do not depend on the rule
//! set built into the binary.
//!
//!   cargo nextest run --test masking

mod common;
mod pgraw;

use common::*;
use futures::StreamExt;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// rules and secrets
// ---------------------------------------------------------------------------

/// The rules file the tests write into their temp dir.
const RULES: &str = r#"
[[rule]]
id = "t-aws"
name = "test AWS access key id"
pattern = '''\b(AKIA[A-Z0-9]{16})\b'''
keywords = ["akia"]

[[rule]]
id = "t-gh"
name = "test GitHub classic token"
pattern = '''\b(ghp_[A-Za-z0-9]{36})\b'''
keywords = ["ghp_"]
mask = "redact"

[[rule]]
id = "t-part"
name = "test partially masked token"
pattern = '''\b(tokp_[a-z0-9]{20})\b'''
mask = "partial"

[[rule]]
id = "t-hash"
name = "test hashed token"
pattern = '''\b(tokh_[a-z0-9]{20})\b'''
mask = "hash"

[[rule]]
id = "t-edge"
name = "test token bounded by a value's start and end"
pattern = '''(?:^|=)(tokd_[a-z0-9]{12})(?:;|$)'''

[[rule]]
id = "t-wrap"
name = "test wrapper around other text, which a role may see in clear"
pattern = '''(wrap\[[^\]]{10,80}\])'''
"#;

/// A rule that comes from the config's `[[scan.rule]]` table instead.
const CFG_RULE: &str = r#"
[[scan.rule]]
id = "t-cfg"
name = "test config rule"
pattern = '''\b(cfgsecret_[0-9]{12})\b'''
"#;

const AWS1: &str = "AKIAABCDEFGHIJKLMNOP";
const AWS2: &str = "AKIAQRSTUVWXYZ234567";
const AWS3: &str = "AKIA2345ABCDEFGH6789";
const GH1: &str = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";
const PART1: &str = "tokp_abcdefghij0123456789";
const HASH1: &str = "tokh_aaaaabbbbbccccc01234";
const HASH2: &str = "tokh_zzzzzyyyyyxxxxx56789";
const CFG1: &str = "cfgsecret_123456789012";
const EDGE1: &str = "tokd_abcdef012345";

const M_AWS: &str = "[MASKED:t-aws]";
const M_GH: &str = "[MASKED:t-gh]";
const M_CFG: &str = "[MASKED:t-cfg]";
const M_EDGE: &str = "[MASKED:t-edge]";

const ALL_SECRETS: &[&str] = &[AWS1, AWS2, AWS3, GH1, PART1, HASH1, HASH2, CFG1, EDGE1];

/// The same-length mask gatehouse writes where it rewrites a value in place:
/// the mask, cut or padded with `*` to the secret's length.
fn same_len_mask(mask: &str, len: usize) -> String {
    let mut m: String = mask.chars().take(len).collect();
    while m.len() < len {
        m.push('*');
    }
    m
}

/// SQL that builds `secret` on the server, so the statement itself does not
/// carry it.
fn sql_secret(secret: &str) -> String {
    let (a, b) = secret.split_at(secret.len() / 2);
    format!("('{a}' || '{b}')")
}

fn assert_no_secret(what: &str, hay: &[u8]) {
    for s in ALL_SECRETS {
        assert!(
            !pgraw::contains(hay, s.as_bytes()),
            "{what} carries the secret {s}: {}",
            String::from_utf8_lossy(&hay[..hay.len().min(4000)])
        );
    }
}

// ---------------------------------------------------------------------------
// gateway setup
// ---------------------------------------------------------------------------

/// A gatehouse with the test rules; the rules file lives in `_rules`.
struct Gw {
    g: Gatehouse,
    _rules: tempfile::TempDir,
}

impl std::ops::Deref for Gw {
    type Target = Gatehouse;
    fn deref(&self) -> &Gatehouse {
        &self.g
    }
}

/// `scan_lines` go into `[scan]`; `extra` after it (more targets…).
fn start(scan_lines: &str, extra: &str) -> Gw {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).expect("write rules");
    let toml = format!(
        "{extra}\n[scan]\nrules_file = {:?}\n{scan_lines}\n{CFG_RULE}\n",
        rules.display().to_string()
    );
    Gw {
        g: Gatehouse::start("", &toml),
        _rules: dir,
    }
}

impl Gw {
    /// The log must never carry a secret.
    fn check_log(&self) {
        assert_no_secret("the gateway's log", self.g.log().as_bytes());
    }
}

// ---------------------------------------------------------------------------
// clients
// ---------------------------------------------------------------------------

async fn connect(conninfo: &str) -> Client {
    let (client, conn) = timeout(WAIT, tokio_postgres::connect(conninfo, NoTls))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect {conninfo}: {e:?}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

async fn connect_with_messages(conninfo: &str) -> (Client, mpsc::UnboundedReceiver<AsyncMessage>) {
    let (client, mut conn) = timeout(WAIT, tokio_postgres::connect(conninfo, NoTls))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect {conninfo}: {e:?}"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if tx.send(m).is_err() {
                break;
            }
        }
    });
    (client, rx)
}

async fn next_message(rx: &mut mpsc::UnboundedReceiver<AsyncMessage>) -> AsyncMessage {
    timeout(WAIT, rx.recv())
        .await
        .expect("no asynchronous message within the wait")
        .expect("connection ended")
}

fn direct_conninfo(db: &str) -> String {
    format!("host={PG_HOST} port={PG_PORT} user=postgres dbname={db} sslmode=disable")
}

async fn direct(db: &str) -> Client {
    connect(&direct_conninfo(db)).await
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("<no SQLSTATE: {e:?}>"))
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// The raw bytes of a value in whatever format the server sent (tokio-postgres
/// asks for binary).
struct RawValue(Vec<u8>);

impl<'a> FromSql<'a> for RawValue {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn simple_rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .collect()
}

/// A raw client logged in through the gateway.
fn raw_login(g: &Gatehouse, db: &str) -> pgraw::Raw {
    match pgraw::Raw::login(g.port, &[("user", "agent"), ("database", db)], TOKEN) {
        Ok((r, _)) => r,
        Err(e) => panic!("login refused: {}", String::from_utf8_lossy(&e)),
    }
}

/// A raw client logged in to PostgreSQL directly (trust auth).
fn raw_direct(db: &str) -> pgraw::Raw {
    let mut r = pgraw::Raw::connect(PG_PORT);
    r.send(&pgraw::startup(&[("user", "postgres"), ("database", db)]))
        .expect("send startup");
    let frames = r.until_ready(WAIT);
    assert!(
        frames.iter().all(|(t, _)| *t != b'E'),
        "direct login failed: {frames:?}"
    );
    r
}

fn tags(frames: &pgraw::Frames) -> String {
    frames.iter().map(|(t, _)| *t as char).collect()
}

fn cstr(v: &mut Vec<u8>, s: &str) {
    v.extend_from_slice(s.as_bytes());
    v.push(0);
}

fn parse_msg(sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, "");
    cstr(&mut b, sql);
    b.extend_from_slice(&0i16.to_be_bytes());
    pgraw::frame(b'P', &b)
}

/// Bind of the unnamed statement with text parameters.
fn bind_msg(params: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, "");
    cstr(&mut b, "");
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as i32).to_be_bytes());
        b.extend_from_slice(p.as_bytes());
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    pgraw::frame(b'B', &b)
}

fn execute_msg() -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, "");
    b.extend_from_slice(&0i32.to_be_bytes());
    pgraw::frame(b'E', &b)
}

fn sync_msg() -> Vec<u8> {
    pgraw::frame(b'S', &[])
}

fn psql_ok(g: &Gatehouse, db: &str, sql: &str) -> String {
    let (ok, out, err) = psql(g, db, &["-c", sql]);
    assert!(ok, "psql failed: {err}");
    assert_no_secret("psql's stderr", err.as_bytes());
    out
}

// ---------------------------------------------------------------------------
// 1. results: text columns, several secrets, json/jsonb, bytea, arrays
// ---------------------------------------------------------------------------

#[test]
fn psql_text_columns_several_secrets_columns_and_rows() {
    let g = start("", "");
    let sql = format!(
        "SELECT id, a, b FROM (VALUES \
           (1, 'first {AWS1} then {GH1} and {AWS2} end', 'plain'), \
           (2, 'nothing to see', {aws3}), \
           (3, NULL, 'cfg {CFG1} x'), \
           (4, '{AWS1}{AWS2}', 'not one key: {AWS1}X'), \
           (5, 'near miss: AKIAABCDEFGHIJKLMNO and ghp_short', '')) v(id, a, b) ORDER BY id",
        aws3 = sql_secret(AWS3)
    );
    let out = psql_ok(&g, "postgres", &sql);
    let expected = format!(
        "1|first {M_AWS} then {M_GH} and {M_AWS} end|plain\n\
         2|nothing to see|{M_AWS}\n\
         3||cfg {M_CFG} x\n\
         4|{AWS1}{AWS2}|not one key: {AWS1}X\n\
         5|near miss: AKIAABCDEFGHIJKLMNO and ghp_short|\n"
    );
    // Row 4: two keys run together are one 40-character word, and a key
    // followed by a letter is not a key: neither matches the rule.
    assert_eq!(out, expected);
    g.check_log();
}

/// Secrets at the very edges of values, where the bytes around a value in
/// the message (a length, a field code, the next message's tag) are word
/// characters: each value is scanned as the value it is.
#[test]
fn secrets_at_the_edges_of_values() {
    let g = start("", "");
    // The secret alone in each of several rows: each value is followed by
    // the next DataRow's tag 'D' (a word character) in the stream.
    let out = psql_ok(
        &g,
        "postgres",
        &format!("SELECT {} FROM generate_series(1, 3)", sql_secret(AWS1)),
    );
    assert_eq!(out, format!("{M_AWS}\n{M_AWS}\n{M_AWS}\n"));
    // Two columns, the secret ending the first one.
    let out = psql_ok(&g, "postgres", &format!("SELECT 'x ' || {}, 'y'", sql_secret(AWS1)));
    assert_eq!(out, format!("x {M_AWS}|y\n"));
    // A value starting with the secret whose length's last byte is a word
    // character ('0', 'A', 'Z', '_', 'a', 'z').
    for len in [48usize, 65, 90, 95, 97, 122] {
        let pad = len - AWS1.len() - 1;
        let out = psql_ok(
            &g,
            "postgres",
            &format!(
                "SELECT {} || repeat(' ', {pad}) || '|' FROM generate_series(1, 2)",
                sql_secret(AWS1)
            ),
        );
        let line = format!("{M_AWS}{}|\n", " ".repeat(pad));
        assert_eq!(out, format!("{line}{line}"), "value of {len} bytes");
    }
    // A rule anchored to the value's start and end (`^`, `$`): each value
    // is its own string, whatever surrounds it in the message.
    let out = psql_ok(
        &g,
        "postgres",
        &format!(
            "SELECT {e}, 'k=' || {e} || ';x', 'not' || {e}, {e} || 'x' FROM generate_series(1, 2)",
            e = sql_secret(EDGE1)
        ),
    );
    let line = format!("{M_EDGE}|k={M_EDGE};x|not{EDGE1}|{EDGE1}x\n");
    assert_eq!(out, format!("{line}{line}"));
    let (ok, _, err) = psql(
        &g,
        "postgres",
        &[
            "-c",
            &format!("DO $$BEGIN RAISE EXCEPTION '%', {}; END$$", sql_secret(EDGE1)),
        ],
    );
    assert!(!ok);
    assert!(err.contains(&format!("ERROR:  {M_EDGE}\n")), "{err}");
    // An error message that starts with the secret (after the field code 'M').
    let (ok, _, err) = psql(
        &g,
        "postgres",
        &[
            "-c",
            &format!(
                "DO $$BEGIN RAISE EXCEPTION '%', {} || ' is bad'; END$$",
                sql_secret(AWS1)
            ),
        ],
    );
    assert!(!ok);
    assert!(err.contains(&format!("{M_AWS} is bad")), "{err}");
    assert_no_secret("psql's stderr", err.as_bytes());
    g.check_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_jsonb_in_text_and_binary() {
    let g = start("", "");
    let c = connect(&g.conninfo("postgres")).await;
    let sql = format!(
        "SELECT ('{{\"k\": \"' || {} || '\", \"n\": 1, \"t\": \"{GH1}\"}}')::json, \
                ('{{\"k\": \"' || {} || '\", \"n\": 1}}')::jsonb",
        sql_secret(AWS1),
        sql_secret(AWS2)
    );
    // Text format (simple query).
    let rows = simple_rows(&c.simple_query(&sql).await.expect("simple query"));
    assert_eq!(
        rows,
        vec![vec![
            Some(format!("{{\"k\": \"{M_AWS}\", \"n\": 1, \"t\": \"{M_GH}\"}}")),
            Some(format!("{{\"k\": \"{M_AWS}\", \"n\": 1}}")),
        ]]
    );
    // Binary format: json is its text, jsonb a version byte and its text.
    let row = c.query_one(&sql, &[]).await.expect("extended query");
    let json: RawValue = row.get(0);
    let jsonb: RawValue = row.get(1);
    assert_eq!(
        String::from_utf8_lossy(&json.0),
        format!("{{\"k\": \"{M_AWS}\", \"n\": 1, \"t\": \"{M_GH}\"}}")
    );
    assert_eq!(jsonb.0[0], 1, "jsonb binary version byte");
    assert_eq!(
        String::from_utf8_lossy(&jsonb.0[1..]),
        format!("{{\"k\": \"{M_AWS}\", \"n\": 1}}")
    );
    g.check_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytea_in_binary_format() {
    let g = start("", "");
    let c = connect(&g.conninfo("postgres")).await;
    // Printable bytes around the secret.
    let v: Vec<u8> = c
        .query_one(
            &format!("SELECT convert_to('key=' || {} || ';', 'UTF8')", sql_secret(AWS1)),
            &[],
        )
        .await
        .expect("bytea")
        .get(0);
    assert_eq!(v, format!("key={M_AWS};").into_bytes());
    // Binary bytes (NULs, 0xff) around two secrets.
    let v: Vec<u8> = c
        .query_one(
            &format!(
                "SELECT '\\x0001ff'::bytea || convert_to({}, 'UTF8') || '\\x00'::bytea \
                 || convert_to({}, 'UTF8') || '\\xfe00'::bytea",
                sql_secret(AWS1),
                sql_secret(GH1)
            ),
            &[],
        )
        .await
        .expect("bytea")
        .get(0);
    assert_no_secret("bytea", &v);
    assert_eq!(&v[..3], b"\x00\x01\xff");
    assert_eq!(&v[v.len() - 2..], b"\xfe\x00");
    let inner = &v[3..v.len() - 2];
    let nul = inner.iter().position(|&b| b == 0).expect("the NUL between the secrets");
    let (a, b) = (&inner[..nul], &inner[nul + 1..]);
    // Either mask form is a faithful bytea: the exact mask or one fitted to
    // the secret's length.
    assert!(
        a == M_AWS.as_bytes() || a == same_len_mask(M_AWS, AWS1.len()).as_bytes(),
        "{}",
        String::from_utf8_lossy(a)
    );
    assert!(
        b == M_GH.as_bytes() || b == same_len_mask(M_GH, GH1.len()).as_bytes(),
        "{}",
        String::from_utf8_lossy(b)
    );
    // A parameter round trip of a bytea carrying no secret is untouched.
    let plain: Vec<u8> = (0..=255u8).collect();
    let back: Vec<u8> = c.query_one("SELECT $1::bytea", &[&plain]).await.expect("bytea").get(0);
    assert_eq!(back, plain);
    g.check_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_arrays_in_text_and_binary() {
    let g = start("", "");
    let c = connect(&g.conninfo("postgres")).await;
    let sql = format!(
        "SELECT ARRAY['plain', {}, NULL, 'x {GH1} y', {}]::text[], ARRAY[1, 2, 3]",
        sql_secret(AWS1),
        sql_secret(AWS2)
    );
    let rows = simple_rows(&c.simple_query(&sql).await.expect("simple"));
    assert_eq!(
        rows,
        vec![vec![
            Some(format!("{{plain,{M_AWS},NULL,\"x {M_GH} y\",{M_AWS}}}")),
            Some("{1,2,3}".to_string())
        ]]
    );
    // Binary: the array must still decode (element lengths agree with the
    // elements), with the secrets masked.
    let row = c.query_one(&sql, &[]).await.expect("extended");
    let arr: Vec<Option<String>> = row
        .try_get(0)
        .unwrap_or_else(|e| panic!("a masked text[] in binary format must still decode: {e:?}"));
    let ints: Vec<i32> = row.get(1);
    assert_eq!(ints, vec![1, 2, 3]);
    assert_eq!(arr.len(), 5);
    assert_eq!(arr[0].as_deref(), Some("plain"));
    assert_eq!(arr[2], None);
    let ok = |got: &Option<String>, prefix: &str, mask: &str, secret: &str, suffix: &str| {
        let got = got.as_deref().expect("not NULL");
        assert!(
            got == format!("{prefix}{mask}{suffix}")
                || got == format!("{prefix}{}{suffix}", same_len_mask(mask, secret.len())),
            "element {got:?}"
        );
    };
    ok(&arr[1], "", M_AWS, AWS1, "");
    ok(&arr[3], "x ", M_GH, GH1, " y");
    ok(&arr[4], "", M_AWS, AWS2, "");
    // A record (composite) in binary format keeps its structure too:
    // column count, then (type oid, length, bytes) per column.
    let row = c
        .query_one(&format!("SELECT ROW(1, {}, 'x'::text)", sql_secret(AWS1)), &[])
        .await
        .expect("record");
    let rec: RawValue = row.get(0);
    let b = &rec.0;
    let be = |p: usize| i32::from_be_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]]);
    assert_eq!(be(0), 3, "columns");
    assert_eq!((be(4), be(8), be(12)), (23, 4, 1), "int4 column");
    assert_eq!(be(16), 25, "text column");
    let len = be(20) as usize;
    let v = std::str::from_utf8(&b[24..24 + len]).expect("utf8");
    assert!(v == M_AWS || v == same_len_mask(M_AWS, AWS1.len()), "{v}");
    let p = 24 + len;
    assert_eq!((be(p), be(p + 4)), (25, 1), "third column");
    assert_eq!(&b[p + 8..], b"x", "the record ends where its columns say");
    g.check_log();
}

// ---------------------------------------------------------------------------
// 2. errors, notices, notifications
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_are_masked() {
    let g = start("", "");
    // psql: the server echoes the literal in its message.
    let (ok, out, err) = psql(&g, "postgres", &["-c", &format!("SELECT '{AWS1}'::int")]);
    assert!(!ok, "{out}");
    assert!(err.contains("invalid input syntax for type integer"), "{err}");
    // psql shows its own statement after the server's message ("LINE 1:
    // SELECT 'AKIA…'"); the server's message is what went through the
    // gateway.
    let line = err.lines().find(|l| l.starts_with("ERROR:")).expect("an ERROR line");
    assert_eq!(
        line,
        format!("ERROR:  invalid input syntax for type integer: \"{M_AWS}\"")
    );

    let c = connect(&g.conninfo("postgres")).await;
    for sql in [
        format!("SELECT '{AWS1}'::int"),
        format!("SELECT {}::int", sql_secret(AWS1)),
    ] {
        let e = c.simple_query(&sql).await.expect_err("cast fails");
        assert_eq!(sqlstate(&e), "22P02");
        let m = db_message(&e);
        assert_eq!(m, format!("invalid input syntax for type integer: \"{M_AWS}\""));
        let e = c.query(&sql, &[]).await.expect_err("cast fails");
        assert_eq!(
            db_message(&e),
            format!("invalid input syntax for type integer: \"{M_AWS}\"")
        );
    }
    // Message, detail and hint of a raised exception.
    let e = c
        .simple_query(&format!(
            "DO $$BEGIN RAISE EXCEPTION 'boom %', {} USING DETAIL = 'detail {GH1}', HINT = 'hint ' || {}; END$$",
            sql_secret(AWS1),
            sql_secret(CFG1)
        ))
        .await
        .expect_err("raise");
    let d = e.as_db_error().expect("a server error");
    assert_eq!(d.message(), format!("boom {M_AWS}"));
    assert_eq!(d.detail(), Some(format!("detail {M_GH}").as_str()));
    assert_eq!(d.hint(), Some(format!("hint {M_CFG}").as_str()));
    assert_eq!(d.code().code(), "P0001");
    // The session goes on.
    let v: i32 = c.query_one("SELECT 7", &[]).await.expect("after errors").get(0);
    assert_eq!(v, 7);
    g.check_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_are_masked() {
    let g = start("", "");
    let (c, mut rx) = connect_with_messages(&g.conninfo("postgres")).await;
    c.batch_execute(&format!(
        "DO $$BEGIN RAISE NOTICE 'key % and %', {}, '{GH1}'; RAISE NOTICE '%', {}; END$$",
        sql_secret(AWS1),
        sql_secret(AWS2)
    ))
    .await
    .expect("DO");
    let mut got = Vec::new();
    for _ in 0..2 {
        match next_message(&mut rx).await {
            AsyncMessage::Notice(n) => got.push(n.message().to_string()),
            other => panic!("expected a notice, got {other:?}"),
        }
    }
    assert_eq!(got, vec![format!("key {M_AWS} and {M_GH}"), M_AWS.to_string()]);
    g.check_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_payloads_and_channels_are_masked() {
    let g = start("", "");
    let (listener, mut rx) = connect_with_messages(&g.conninfo("postgres")).await;
    listener
        .batch_execute(&format!("LISTEN masking_ch; LISTEN \"{AWS2}\""))
        .await
        .expect("LISTEN");
    // Notify from another session through the gateway, and from a direct one.
    let other = connect(&g.conninfo("postgres")).await;
    other
        .batch_execute(&format!("NOTIFY masking_ch, 'payload {AWS1} and {GH1}'"))
        .await
        .expect("NOTIFY");
    let d = direct("postgres").await;
    d.execute(
        &format!("SELECT pg_notify('masking_ch', {} || ' first')", sql_secret(AWS3)),
        &[],
    )
    .await
    .expect("pg_notify");
    d.execute(
        &format!("SELECT pg_notify({}, 'on a secret channel')", sql_secret(AWS2)),
        &[],
    )
    .await
    .expect("pg_notify");
    let mut got = Vec::new();
    for _ in 0..3 {
        match next_message(&mut rx).await {
            AsyncMessage::Notification(n) => got.push((n.channel().to_string(), n.payload().to_string())),
            other => panic!("expected a notification, got {other:?}"),
        }
    }
    assert_eq!(
        got,
        vec![
            ("masking_ch".to_string(), format!("payload {M_AWS} and {M_GH}")),
            ("masking_ch".to_string(), format!("{M_AWS} first")),
            (M_AWS.to_string(), "on a secret channel".to_string()),
        ]
    );
    g.check_log();
}

// ---------------------------------------------------------------------------
// 3. COPY TO STDOUT
// ---------------------------------------------------------------------------

/// Masks every secret of `ALL_SECRETS` handled by a redact rule.
fn mask_text(s: &str) -> String {
    s.replace(AWS1, M_AWS)
        .replace(AWS2, M_AWS)
        .replace(AWS3, M_AWS)
        .replace(GH1, M_GH)
        .replace(CFG1, M_CFG)
}

async fn copy_messages(c: &Client, sql: &str) -> Vec<Vec<u8>> {
    let stream = c.copy_out(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    futures::pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(b) = stream.next().await {
        out.push(b.expect("copy data").to_vec());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_text_is_masked_row_by_row() {
    let g = start("", "");
    let c = connect(&g.conninfo("postgres")).await;
    let d = direct("postgres").await;
    // Enough rows for many reads; every 7th row carries secrets.
    let sql = format!(
        "COPY (SELECT g, CASE WHEN g % 7 = 0 THEN 'k ' || {} || ' and {GH1}' \
                              WHEN g % 11 = 0 THEN {} ELSE md5(g::text) END, \
                         repeat('z', g % 300) \
               FROM generate_series(1, 20000) g) TO STDOUT",
        sql_secret(AWS1),
        sql_secret(AWS2)
    );
    let direct_msgs = copy_messages(&d, &sql).await;
    let got = copy_messages(&c, &sql).await;
    let direct_all: Vec<u8> = direct_msgs.concat();
    let got_all: Vec<u8> = got.concat();
    assert_no_secret("COPY data", &got_all);
    let expected = mask_text(&String::from_utf8(direct_all).expect("utf8"));
    assert_eq!(String::from_utf8(got_all).expect("utf8"), expected);
    // The protocol sends one CopyData per row; so does the gateway.
    assert_eq!(got.len(), direct_msgs.len(), "CopyData messages, one per row");
    for (i, (a, b)) in direct_msgs.iter().zip(&got).enumerate() {
        let want = mask_text(&String::from_utf8_lossy(a));
        assert_eq!(String::from_utf8_lossy(b), want, "row {i}");
    }
    // psql sees the same.
    let out = psql_ok(&g, "postgres", &sql.replace("20000", "30"));
    assert!(out.contains(&format!("k {M_AWS} and {M_GH}")), "{out}");
    g.check_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_binary_still_parses() {
    use tokio_postgres::binary_copy::BinaryCopyOutStream;
    let g = start("", "");
    let c = connect(&g.conninfo("postgres")).await;
    let sql = format!(
        "COPY (SELECT g, CASE WHEN g % 3 = 0 THEN 'key ' || {} ELSE 'row ' || g END, \
                      CASE WHEN g % 5 = 0 THEN NULL ELSE '{GH1}' END \
               FROM generate_series(1, 3000) g) TO STDOUT (FORMAT binary)",
        sql_secret(AWS1)
    );
    let stream = c.copy_out(&sql).await.expect("copy out");
    let rows = BinaryCopyOutStream::new(stream, &[Type::INT4, Type::TEXT, Type::TEXT]);
    futures::pin_mut!(rows);
    let mut n = 0;
    while let Some(row) = rows.next().await {
        let row = row.unwrap_or_else(|e| panic!("binary COPY row {} does not parse: {e:?}", n + 1));
        n += 1;
        let id: i32 = row.get(0);
        assert_eq!(id, n);
        let a: String = row.get(1);
        if n % 3 == 0 {
            assert!(
                a == format!("key {M_AWS}") || a == format!("key {}", same_len_mask(M_AWS, AWS1.len())),
                "row {n}: {a}"
            );
        } else {
            assert_eq!(a, format!("row {n}"));
        }
        let b: Option<String> = row.get(2);
        if n % 5 == 0 {
            assert_eq!(b, None);
        } else {
            let b = b.expect("not NULL");
            assert!(b == M_GH || b == same_len_mask(M_GH, GH1.len()), "row {n}: {b}");
        }
    }
    assert_eq!(n, 3000);
    g.check_log();
}

/// One row larger than the relay buffer arrives in many reads; secrets
/// throughout it, several of them across read boundaries, are all masked
/// (in place, with same-length masks: the message is already on its way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_row_larger_than_the_buffer() {
    let g = start("", "");
    let c = connect(&g.conninfo("postgres")).await;
    let d = direct("postgres").await;
    // 400 KiB: a secret every 997 bytes (a prime, so the secrets fall at every
    // offset relative to the 64 KiB buffer).
    let sql = format!(
        "COPY (SELECT string_agg(repeat('.', 977) || {}, '' ORDER BY g) FROM generate_series(1, 420) g) TO STDOUT",
        sql_secret(AWS1)
    );
    let direct_msgs = copy_messages(&d, &sql).await;
    assert_eq!(direct_msgs.len(), 1, "the server sends the row as one CopyData");
    let got = copy_messages(&c, &sql).await;
    let got_all = got.concat();
    assert_no_secret("COPY data", &got_all);
    let expected = String::from_utf8(direct_msgs.concat())
        .expect("utf8")
        .replace(AWS1, &same_len_mask(M_AWS, AWS1.len()));
    assert_eq!(got_all.len(), expected.len());
    assert!(got_all == expected.as_bytes(), "masked long row differs");
    assert_eq!(got.len(), 1, "one row, one CopyData");
    g.check_log();
}

/// What PostgreSQL never does but the gateway promises to handle: a secret
/// split across two CopyData messages, arriving in separate reads and in
/// the same read. A scripted server plays the upstream.
#[test]
fn copy_out_secret_split_across_copydata_messages() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake server");
    let fake_port = listener.local_addr().expect("addr").port();
    let (a1, a2) = AWS1.split_at(9);
    let (g1, g2) = GH1.split_at(30);
    let script: Vec<(Vec<u8>, bool)> = vec![
        (format!("row1 {a1}").into_bytes(), true),
        (format!("{a2} end\n").into_bytes(), false),
        (format!("row2 {g1}").into_bytes(), false),
        (format!("{g2}\n").into_bytes(), true),
        (b"row3 plain\n".to_vec(), true),
    ];
    let expected_rows = [
        format!("row1 {M_AWS} end\n"),
        format!("row2 {M_GH}\n"),
        "row3 plain\n".to_string(),
    ];
    let server = std::thread::spawn(move || fake_copy_server(listener, script));
    let g = start(
        "",
        &format!(
            "[[target]]\nname = \"fake\"\ndatabase = \"fake\"\nhost = \"127.0.0.1\"\nport = {fake_port}\n\
             user = \"postgres\"\ntls = \"disable\"\n"
        ),
    );
    let mut r = raw_login(&g, "fake");
    let frames = r.simple("COPY t TO STDOUT");
    let t = tags(&frames);
    assert!(t.starts_with('H') && t.ends_with("cCZ"), "{t}");
    let data: Vec<u8> = frames
        .iter()
        .filter(|(t, _)| *t == b'd')
        .flat_map(|(_, b)| b.clone())
        .collect();
    assert_eq!(String::from_utf8_lossy(&data), expected_rows.concat());
    // Message for message: a mask goes where its secret starts.
    let msgs: Vec<String> = frames
        .iter()
        .filter(|(t, _)| *t == b'd')
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(
        msgs,
        vec![
            format!("row1 {M_AWS}"),
            " end\n".to_string(),
            format!("row2 {M_GH}"),
            "\n".to_string(),
            "row3 plain\n".to_string()
        ]
    );
    assert_no_secret("COPY data", &r.received);
    r.send(&pgraw::frame(b'X', &[])).ok();
    drop(r);
    server.join().expect("fake server");
    g.check_log();
}

/// A scripted upstream: trust login, then answers one query with the COPY
/// `script` (payload, flush-and-pause-after), then waits for Terminate.
fn fake_copy_server(listener: TcpListener, script: Vec<(Vec<u8>, bool)>) {
    let (mut s, _) = listener.accept().expect("accept");
    s.set_read_timeout(Some(WAIT)).ok();
    s.set_nodelay(true).ok();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("startup length");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize - 4];
    s.read_exact(&mut body).expect("startup");
    let mut out = pgraw::frame(b'R', &0i32.to_be_bytes());
    for (k, v) in [
        ("server_version", "15.0"),
        ("client_encoding", "UTF8"),
        ("integer_datetimes", "on"),
    ] {
        let mut b = Vec::new();
        cstr(&mut b, k);
        cstr(&mut b, v);
        out.extend(pgraw::frame(b'S', &b));
    }
    let mut k = 4242i32.to_be_bytes().to_vec();
    k.extend_from_slice(&7i32.to_be_bytes());
    out.extend(pgraw::frame(b'K', &k));
    out.extend(pgraw::frame(b'Z', b"I"));
    s.write_all(&out).expect("login answer");
    loop {
        let mut tag = [0u8; 1];
        if s.read_exact(&mut tag).is_err() {
            return;
        }
        s.read_exact(&mut len).expect("length");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize - 4];
        s.read_exact(&mut body).expect("body");
        match tag[0] {
            b'X' => return,
            b'Q' => {
                let mut h = vec![0u8];
                h.extend_from_slice(&1i16.to_be_bytes());
                h.extend_from_slice(&0i16.to_be_bytes());
                let mut pending = pgraw::frame(b'H', &h);
                for (payload, pause) in &script {
                    pending.extend(pgraw::frame(b'd', payload));
                    if *pause {
                        s.write_all(&pending).expect("write");
                        s.flush().ok();
                        pending.clear();
                        std::thread::sleep(Duration::from_millis(150));
                    }
                }
                pending.extend(pgraw::frame(b'c', &[]));
                pending.extend(pgraw::frame(b'C', b"COPY 3\0"));
                pending.extend(pgraw::frame(b'Z', b"I"));
                s.write_all(&pending).expect("write");
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// 4. large values
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabyte_value_with_a_secret_at_its_end() {
    let g = start("", "");
    let c = connect(&g.conninfo("postgres")).await;
    const TOTAL: usize = 100 * 1024 * 1024;
    let sql = format!(
        "SELECT repeat('x', {}) || ' ' || {}",
        TOTAL - AWS1.len() - 1,
        sql_secret(AWS1)
    );
    let row = timeout(Duration::from_secs(120), c.query_one(&sql, &[]))
        .await
        .expect("100 MB value in time")
        .expect("query");
    let v: &str = row.get(0);
    assert_eq!(v.len(), TOTAL, "the value keeps its length");
    let (body, tail) = v.split_at(TOTAL - AWS1.len() - 1);
    assert!(body.bytes().all(|b| b == b'x'), "the rest is intact");
    let tail = tail.strip_prefix(' ').expect("the space before the secret");
    assert_eq!(tail, same_len_mask(M_AWS, AWS1.len()));
    drop(row);
    // A large value starting with a secret, its length's last byte a word
    // character (0x41, 'A').
    let total = 0x10_0041usize;
    let sql = format!(
        "SELECT {} || ' ' || repeat('y', {})",
        sql_secret(AWS2),
        total - AWS2.len() - 1
    );
    let row = c.query_one(&sql, &[]).await.expect("query");
    let v: &str = row.get(0);
    assert_eq!(v.len(), total);
    assert_eq!(&v[..AWS2.len()], same_len_mask(M_AWS, AWS2.len()));
    assert_eq!(&v[AWS2.len()..AWS2.len() + 2], " y");
    assert!(v[AWS2.len() + 1..].bytes().all(|b| b == b'y'));
    // The session goes on.
    let n: i32 = c.query_one("SELECT 1", &[]).await.expect("after").get(0);
    assert_eq!(n, 1);
    g.check_log();
}

// ---------------------------------------------------------------------------
// 5. mask kinds and rule switches
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_masks_are_stable_and_joinable() {
    let key_lines = "hash_key = \"masking-test-key\"";
    let g = start(key_lines, "");
    let d = direct("test").await;
    let nomatch = format!("tokh_{}", "n".repeat(20));
    let other = format!("tokh_{}", "o".repeat(20));
    let users = unique("mask_users");
    let orders = unique("mask_orders");
    d.batch_execute(&format!(
        "CREATE TABLE {users} (id int, tok text); CREATE TABLE {orders} (oid int, tok text);
         INSERT INTO {users} VALUES (1, '{HASH1}'), (2, '{HASH2}'), (3, '{nomatch}');
         INSERT INTO {orders} VALUES (10, '{HASH2}'), (11, '{HASH1}'), (12, '{HASH2}'), (13, '{other}');"
    ))
    .await
    .expect("tables");
    let hash_re = |s: &str| {
        s.starts_with("[HASH:t-hash:")
            && s.ends_with(']')
            && s.len() == "[HASH:t-hash:]".len() + 16
            && s["[HASH:t-hash:".len()..s.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
    };
    let a = connect(&g.conninfo("test")).await;
    let b = connect(&g.conninfo("test")).await;
    let us: Vec<(i32, String)> = a
        .query(&format!("SELECT id, tok FROM {users} ORDER BY id"), &[])
        .await
        .expect("users")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let os: Vec<(i32, String)> = b
        .query(&format!("SELECT oid, tok FROM {orders} ORDER BY oid"), &[])
        .await
        .expect("orders")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (_, t) in us.iter().chain(&os) {
        assert!(hash_re(t), "{t}");
    }
    assert_ne!(us[0].1, us[1].1, "different secrets, different tokens");
    // Joined on the masked column in the client, the pairs are those of the
    // real join.
    let mut joined: Vec<(i32, i32)> = us
        .iter()
        .flat_map(|(u, t)| os.iter().filter(move |(_, t2)| t2 == t).map(move |(o, _)| (*u, *o)))
        .collect();
    joined.sort();
    let mut real: Vec<(i32, i32)> = d
        .query(
            &format!("SELECT u.id, o.oid FROM {users} u JOIN {orders} o USING (tok)"),
            &[],
        )
        .await
        .expect("real join")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    real.sort();
    assert_eq!(joined, real);
    assert_eq!(joined, vec![(1, 11), (2, 10), (2, 12)]);
    // The same key in another gateway process gives the same tokens; another
    // key gives others.
    let g2 = start(key_lines, "");
    let c2 = connect(&g2.conninfo("test")).await;
    let t2: String = c2
        .query_one(&format!("SELECT tok FROM {users} WHERE id = 1"), &[])
        .await
        .expect("again")
        .get(0);
    assert_eq!(t2, us[0].1);
    let g3 = start("hash_key = \"another-key\"", "");
    let c3 = connect(&g3.conninfo("test")).await;
    let t3: String = c3
        .query_one(&format!("SELECT tok FROM {users} WHERE id = 1"), &[])
        .await
        .expect("again")
        .get(0);
    assert!(hash_re(&t3));
    assert_ne!(t3, us[0].1, "another key, another token");
    d.batch_execute(&format!("DROP TABLE {users}; DROP TABLE {orders}"))
        .await
        .expect("drop");
    g.check_log();
}

#[test]
fn partial_mask_keeps_the_last_four() {
    let g = start("", "");
    let out = psql_ok(&g, "postgres", &format!("SELECT 'id ' || {} || '.'", sql_secret(PART1)));
    let stars = "*".repeat(PART1.len() - 4);
    assert_eq!(out, format!("id {stars}6789.\n"));
    g.check_log();
}

#[test]
fn disabled_rules_switch_a_rule_off() {
    let g = start("disabled_rules = [\"t-gh\", \"t-cfg\"]", "");
    let out = psql_ok(
        &g,
        "postgres",
        &format!("SELECT '{GH1}', {}, '{CFG1}'", sql_secret(AWS1)),
    );
    assert_eq!(out, format!("{GH1}|{M_AWS}|{CFG1}\n"));
    // An id no rule has is a configuration error.
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).expect("rules");
    let cfg = dir.path().join("g.toml");
    std::fs::write(
        &cfg,
        config_text(
            free_port(),
            "",
            &format!(
                "[scan]\nrules_file = {:?}\ndisabled_rules = [\"no-such-rule\"]\n",
                rules.display().to_string()
            ),
        ),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .expect("check");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-rule"));
}

/// The token of `dba-user`, whose role `dba` sees one rule in clear.
const DBA_TOKEN: &str = "dba-token-0123456789";

/// A gateway where `dba-user` (role `dba`) sees `rule` in clear, and every
/// other identity gets the default role, which masks every rule.
fn start_with_dba_seeing(rule: &str) -> Gw {
    start(
        "",
        &format!(
            "[[identity]]\nname = \"dba-user\"\ntoken_hash = \"{}\"\ntargets = [\"*\"]\nroles = [\"dba\"]\n\
             [policy]\ndefault_role = \"reader\"\n\
             [policy.roles.reader]\nwrite = \"deny\"\ndelete = \"deny\"\n\
             [policy.roles.dba]\nwrite = \"deny\"\ndelete = \"deny\"\nunmasked_rules = [\"{rule}\"]\n",
            token_hash(DBA_TOKEN)
        ),
    )
}

/// `sql` through psql as `dba-user`: its output, unaligned.
fn psql_as_dba(g: &Gw, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-A", "-t", "-c", sql])
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", g.port.to_string())
        .env("PGUSER", "dba-user")
        .env("PGPASSWORD", DBA_TOKEN)
        .env("PGDATABASE", "postgres")
        .env("PGSSLMODE", "disable")
        .output()
        .expect("psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_rule_seen_in_clear_does_not_unmask_a_secret_inside_its_match() {
    // `t-wrap`'s match holds an AWS key ID. A role that sees `t-wrap` in
    // clear still gets the key ID masked: in rows, in COPY data, and in a
    // value too large for the relay's buffer (masked in place, same
    // length).
    let g = start_with_dba_seeing("t-wrap");
    let wrapped = format!("('wrap[' || {} || ']')", sql_secret(AWS1));
    let dba = |sql: &str| psql_as_dba(&g, sql);
    let in_clear = format!("wrap[{M_AWS}]");
    assert_eq!(dba(&format!("SELECT {wrapped}")), format!("{in_clear}\n"), "a row");
    assert_eq!(
        dba(&format!("COPY (SELECT {wrapped} FROM generate_series(1, 3)) TO STDOUT")),
        format!("{in_clear}\n").repeat(3),
        "COPY data"
    );
    let large = dba(&format!("SELECT repeat('.', 300000) || {wrapped}"));
    assert_no_secret("a large value", large.as_bytes());
    assert!(
        large.ends_with(&format!("wrap[{}]\n", same_len_mask(M_AWS, AWS1.len()))),
        "a large value: {:?}",
        &large[large.len().saturating_sub(60)..]
    );
    // The default role masks the wrapper whole.
    let out = psql_ok(&g, "postgres", &format!("SELECT {wrapped}"));
    assert_eq!(out, "[MASKED:t-wrap]\n");
    g.check_log();
}

#[test]
fn a_role_may_see_a_rule_unmasked() {
    // `dba-user` carries role `dba`, which sees t-gh in clear; `agent` has
    // no role and gets the default role, which masks every rule.
    let g = start_with_dba_seeing("t-gh");
    let sql = format!("SELECT '{GH1}', {}", sql_secret(AWS1));
    let out = psql_ok(&g, "postgres", &sql);
    assert_eq!(out, format!("{M_GH}|{M_AWS}\n"), "the default role masks every rule");
    assert_eq!(
        psql_as_dba(&g, &sql),
        format!("{GH1}|{M_AWS}\n"),
        "dba sees t-gh, and only t-gh, in clear"
    );
    // A rule id no rule has stops the gateway at start.
    let cfg = std::fs::read_to_string(&g.config_path)
        .unwrap()
        .replace("unmasked_rules = [\"t-gh\"]", "unmasked_rules = [\"t-nope\"]");
    std::fs::write(&g.config_path, cfg).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--config"])
        .arg(&g.config_path)
        .output()
        .expect("check");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("policy.roles.dba.unmasked_rules: no secret rule has the id `t-nope`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// 6. refusing statements that carry secrets
// ---------------------------------------------------------------------------

async fn count_rows(d: &Client, table: &str) -> i64 {
    d.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_client_secrets_simple_and_extended() {
    let g = start("refuse_client_secrets = true", "");
    let d = direct("test").await;
    let t = unique("mask_refuse");
    d.batch_execute(&format!("CREATE TABLE {t} (v text)"))
        .await
        .expect("table");
    let c = connect(&g.conninfo("test")).await;

    let check = |e: tokio_postgres::Error| {
        assert_eq!(sqlstate(&e), "42501", "{e:?}");
        let m = db_message(&e);
        assert!(m.contains("refused by gatehouse"), "{m}");
        assert_no_secret("the refusal", m.as_bytes());
    };
    // Simple query.
    check(
        c.simple_query(&format!("INSERT INTO {t} VALUES ('{AWS1}')"))
            .await
            .expect_err("refused"),
    );
    let one = simple_rows(&c.simple_query("SELECT 1").await.expect("usable"));
    assert_eq!(one, vec![vec![Some("1".to_string())]]);
    // Extended: the secret in the statement (Parse)…
    check(
        c.execute(&format!("INSERT INTO {t} VALUES ('{GH1}')"), &[])
            .await
            .expect_err("refused"),
    );
    // …and in a parameter (Bind), alone and at the start of a longer value
    // whose length's last byte is a word character.
    check(
        c.execute(&format!("INSERT INTO {t} VALUES ($1)"), &[&AWS2])
            .await
            .expect_err("refused"),
    );
    let long = format!("{AWS2}{}", " ".repeat(65 - AWS2.len()));
    check(
        c.execute(&format!("INSERT INTO {t} VALUES ($1)"), &[&long])
            .await
            .expect_err("refused"),
    );
    // A secret in a prepared statement's parameter.
    let st = c
        .prepare(&format!("INSERT INTO {t} VALUES ($1)"))
        .await
        .expect("prepare");
    check(c.execute(&st, &[&CFG1]).await.expect_err("refused"));
    // In a transaction: the refusal is an error like any other.
    c.batch_execute("BEGIN").await.expect("begin");
    check(
        c.simple_query(&format!("INSERT INTO {t} VALUES ('{AWS3}')"))
            .await
            .expect_err("refused"),
    );
    c.batch_execute("ROLLBACK").await.expect("rollback");
    // Nothing ran; the session works; statements without secrets run.
    assert_eq!(count_rows(&d, &t).await, 0);
    assert_eq!(c.execute(&st, &[&"fine"]).await.expect("no secret"), 1);
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM {t}"), &[])
        .await
        .expect("usable")
        .get(0);
    assert_eq!(n, 1);
    // psql.
    let (ok, _, err) = psql(&g, "test", &["-c", &format!("INSERT INTO {t} VALUES ('{AWS1}')")]);
    assert!(!ok);
    assert!(err.contains("refused by gatehouse"), "{err}");
    assert_eq!(count_rows(&d, &t).await, 1);
    let log = g.log();
    assert!(log.contains("carries a secret"), "{log}");
    g.check_log();
    d.batch_execute(&format!("DROP TABLE {t}")).await.expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_in_a_pipelined_batch_keeps_order() {
    let g = start("refuse_client_secrets = true", "");
    let d = direct("test").await;
    let t = unique("mask_pipe");
    d.batch_execute(&format!("CREATE TABLE {t} (v text)"))
        .await
        .expect("table");
    let c = connect(&g.conninfo("test")).await;
    for round in 0..5 {
        let ins_ok = format!("INSERT INTO {t} VALUES ('ok{round}')");
        let ins_secret = format!("INSERT INTO {t} VALUES ('{AWS1}')");
        let ins_param = format!("INSERT INTO {t} VALUES ($1)");
        let (a, b, x, y, z) = tokio::join!(
            c.query_one("SELECT 1::int4", &[]),
            c.execute(&ins_ok, &[]),
            c.execute(&ins_secret, &[]),
            c.query_one("SELECT $1::int4", &[&3i32]),
            c.execute(&ins_param, &[&GH1]),
        );
        assert_eq!(a.expect("first").get::<_, i32>(0), 1);
        assert_eq!(b.expect("second"), 1);
        assert_eq!(sqlstate(&x.expect_err("refused")), "42501");
        assert_eq!(y.expect("fourth").get::<_, i32>(0), 3);
        assert_eq!(sqlstate(&z.expect_err("refused")), "42501");
    }
    assert_eq!(count_rows(&d, &t).await, 5);

    // Raw: three extended groups in one write, the middle one refused.
    let mut r = raw_login(&g, "test");
    let mut batch = Vec::new();
    for sql in ["SELECT 1", &format!("INSERT INTO {t} VALUES ('{AWS2}')"), "SELECT 3"] {
        batch.extend(parse_msg(sql));
        batch.extend(bind_msg(&[]));
        batch.extend(execute_msg());
        batch.extend(sync_msg());
    }
    // And one whose Bind carries the secret.
    batch.extend(parse_msg(&format!("INSERT INTO {t} VALUES ($1)")));
    batch.extend(bind_msg(&[AWS3]));
    batch.extend(execute_msg());
    batch.extend(sync_msg());
    batch.extend(parse_msg("SELECT 5"));
    batch.extend(bind_msg(&[]));
    batch.extend(execute_msg());
    batch.extend(sync_msg());
    r.send(&batch).expect("send");
    let mut groups = Vec::new();
    for _ in 0..5 {
        groups.push(r.until_ready(WAIT));
    }
    let shape: Vec<String> = groups.iter().map(tags).collect();
    assert_eq!(shape, vec!["12DCZ", "EZ", "12DCZ", "1EZ", "12DCZ"]);
    assert_eq!(pgraw::first_value(&groups[0]).as_deref(), Some("1"));
    assert_eq!(pgraw::first_value(&groups[2]).as_deref(), Some("3"));
    assert_eq!(pgraw::first_value(&groups[4]).as_deref(), Some("5"));
    assert_eq!(pgraw::first_error(&groups[1]).map(|e| e.0).as_deref(), Some("42501"));
    assert_eq!(pgraw::first_error(&groups[3]).map(|e| e.0).as_deref(), Some("42501"));
    // A refusal the server skips (an earlier message of its group failed)
    // leaves nothing pending: a Parse answered on Flush arrives at once.
    let mut batch = parse_msg("SELECT * FROM no_such_table_masking");
    batch.extend(bind_msg(&[]));
    batch.extend(execute_msg());
    batch.extend(parse_msg(&format!("INSERT INTO {t} VALUES ('{AWS2}')")));
    batch.extend(bind_msg(&[]));
    batch.extend(execute_msg());
    batch.extend(sync_msg());
    r.send(&batch).expect("send");
    let group = r.until_ready(WAIT);
    assert_eq!(tags(&group), "EZ");
    assert_eq!(pgraw::first_error(&group).map(|e| e.0).as_deref(), Some("42P01"));
    r.send(&[parse_msg("SELECT 6"), pgraw::frame(b'H', &[])].concat())
        .expect("send");
    assert_eq!(
        r.next(Duration::from_secs(5)).map(|f| f.0),
        Ok(b'1'),
        "ParseComplete on Flush"
    );
    r.send(&[bind_msg(&[]), execute_msg(), sync_msg()].concat())
        .expect("send");
    assert_eq!(tags(&r.until_ready(WAIT)), "2DCZ");
    // Simple queries pipelined the same way.
    let mut batch = Vec::new();
    for sql in ["SELECT 1", &format!("INSERT INTO {t} VALUES ('{GH1}')"), "SELECT 3"] {
        batch.extend(pgraw::query(sql));
    }
    r.send(&batch).expect("send");
    let shape: Vec<String> = (0..3).map(|_| tags(&r.until_ready(WAIT))).collect();
    assert_eq!(shape, vec!["TDCZ", "EZ", "TDCZ"]);
    assert_eq!(count_rows(&d, &t).await, 5);
    g.check_log();
    d.batch_execute(&format!("DROP TABLE {t}")).await.expect("drop");
}

// ---------------------------------------------------------------------------
// 7. frames without findings are forwarded unchanged
// ---------------------------------------------------------------------------

#[test]
fn rows_without_secrets_are_byte_identical_to_a_direct_query() {
    let g = start("", "");
    let sql = "SELECT g, md5(g::text), repeat('y', g % 50), g::float8 / 7, \
               CASE WHEN g % 3 = 0 THEN NULL ELSE 'AKIA' || g END, ARRAY[g, g + 1] \
               FROM generate_series(1, 10000) g";
    let mut via = raw_login(&g, "postgres");
    let mut dir = raw_direct("postgres");
    let a = via.simple(sql);
    let b = dir.simple(sql);
    let rows = a.iter().filter(|(t, _)| *t == b'D').count();
    assert_eq!(rows, 10000);
    assert!(a == b, "frames through the gateway differ from the direct ones");
    // And in the extended protocol.
    let mut batch = parse_msg(sql);
    batch.extend(bind_msg(&[]));
    batch.extend(execute_msg());
    batch.extend(sync_msg());
    via.send(&batch).expect("send");
    dir.send(&batch).expect("send");
    let a = via.until_ready(WAIT);
    let b = dir.until_ready(WAIT);
    assert_eq!(a.len(), 10004);
    assert!(a == b, "extended frames differ");
}

// ---------------------------------------------------------------------------
// 8. failing closed
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_the_scanning_limit_are_withheld() {
    let g = start("max_value_bytes = 100000", "");
    let mut r = raw_login(&g, "postgres");
    // A secret in the large value, and one in a small column of the same row.
    let frames = r.simple(&format!(
        "SELECT {}, {} || ' ' || repeat('x', 1000000)",
        sql_secret(AWS2),
        sql_secret(AWS1)
    ));
    assert_eq!(tags(&frames), "TEZ", "{frames:?}");
    let (code, msg) = pgraw::first_error(&frames).expect("error");
    assert_eq!(code, "XX000");
    assert!(msg.contains("gatehouse withheld"), "{msg}");
    assert!(msg.contains("over the scanning limit"), "{msg}");
    // Rows before the large one arrive; the rest is withheld.
    let frames = r.simple(&format!(
        "SELECT g, CASE WHEN g = 3 THEN {} || ' ' || repeat('x', 1000000) ELSE 'small ' || g END \
         FROM generate_series(1, 6) g",
        sql_secret(AWS1)
    ));
    assert_eq!(tags(&frames), "TDDEZ", "{frames:?}");
    // COPY too.
    let frames = r.simple(&format!(
        "COPY (SELECT {} || ' ' || repeat('x', 1000000)) TO STDOUT",
        sql_secret(AWS1)
    ));
    assert_eq!(tags(&frames), "HEZ", "{frames:?}");
    // The session goes on.
    assert_eq!(pgraw::first_value(&r.simple("SELECT 42")).as_deref(), Some("42"));
    assert_no_secret("the client's bytes", &r.received);

    // tokio-postgres (extended protocol, binary results).
    let c = connect(&g.conninfo("postgres")).await;
    let e = c
        .query(
            &format!("SELECT {} || ' ' || repeat('x', 1000000)", sql_secret(AWS1)),
            &[],
        )
        .await
        .expect_err("withheld");
    assert_eq!(sqlstate(&e), "XX000");
    assert!(db_message(&e).contains("scanning limit"), "{e:?}");
    let v: i32 = c.query_one("SELECT 5", &[]).await.expect("usable").get(0);
    assert_eq!(v, 5);
    // A value under the limit passes.
    let v: String = c
        .query_one(
            &format!("SELECT {} || ' ' || repeat('x', 90000)", sql_secret(AWS1)),
            &[],
        )
        .await
        .expect("under the limit")
        .get(0);
    assert!(
        v.starts_with(M_AWS) || v.starts_with(&same_len_mask(M_AWS, AWS1.len())),
        "{}",
        &v[..40]
    );
    g.check_log();
}

fn write_config(dir: &std::path::Path, scan: &str) -> std::path::PathBuf {
    let cfg = dir.join("gatehouse.toml");
    std::fs::write(&cfg, config_text(free_port(), "", scan)).expect("config");
    cfg
}

#[test]
fn bad_rules_files_stop_check_and_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-rules.toml");
    let cfg = write_config(
        dir.path(),
        &format!("[scan]\nrules_file = {:?}\n", missing.display().to_string()),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .expect("check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check passed: {err}");
    assert!(err.contains("no-such-rules.toml"), "{err}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve kept running with a missing rules file");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).ok();
    assert!(err.contains("no-such-rules.toml"), "{err}");

    // A rules file with a pattern that does not compile names file and rule.
    let bad = dir.path().join("bad-rules.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nid = \"broken\"\nname = \"b\"\npattern = '''(unclosed'''\n",
    )
    .expect("bad");
    let cfg = write_config(
        dir.path(),
        &format!("[scan]\nrules_file = {:?}\n", bad.display().to_string()),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .expect("check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check passed: {err}");
    assert!(err.contains("bad-rules.toml") && err.contains("broken"), "{err}");
}

// ---------------------------------------------------------------------------
// 9. `gatehouse scan`
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Line {
    rule: String,
    start: usize,
    end: usize,
    masked: String,
    preview: String,
}

fn scan_cli(args: &[&str], stdin: Option<&[u8]>) -> (Vec<Line>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.arg("scan").args(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("gatehouse scan");
    let writer = stdin.map(|data| {
        let mut w = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            w.write_all(&data).expect("write stdin");
        })
    });
    let out = child.wait_with_output().expect("scan output");
    if let Some(w) = writer {
        w.join().expect("stdin writer");
    }
    let stdout = String::from_utf8(out.stdout).expect("utf8 output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "scan failed: {stderr}");
    assert_no_secret("scan's output", stdout.as_bytes());
    let lines = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            Line {
                rule: v["rule"].as_str().expect("rule").to_string(),
                start: v["start"].as_u64().expect("start") as usize,
                end: v["end"].as_u64().expect("end") as usize,
                masked: v["masked"].as_str().expect("masked").to_string(),
                preview: v["preview"].as_str().expect("preview").to_string(),
            }
        })
        .collect();
    (lines, stderr)
}

#[test]
fn scan_cli_on_a_file_and_on_stdin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).expect("rules");
    let rules_s = rules.display().to_string();
    // Secrets at known offsets, some of them around the scanner's 1 MiB
    // chunk boundaries.
    let mut data = b"header line\nkey = ".to_vec();
    let mut planted = Vec::new();
    let mut plant = |data: &mut Vec<u8>, s: &str, rule: &str| {
        planted.push((data.len(), data.len() + s.len(), rule.to_string()));
        data.extend_from_slice(s.as_bytes());
    };
    plant(&mut data, AWS1, "t-aws");
    data.extend_from_slice(b" and ");
    plant(&mut data, GH1, "t-gh");
    data.extend_from_slice(b"\n");
    for boundary in [1usize << 20, 2 << 20] {
        data.resize(boundary - 9, b'.');
        data.push(b' ');
        plant(&mut data, AWS2, "t-aws");
        data.push(b' ');
    }
    data.extend_from_slice(b"tail ");
    plant(&mut data, PART1, "t-part");
    data.extend_from_slice(b" ");
    plant(&mut data, HASH1, "t-hash");
    data.extend_from_slice(b" end\n");
    let file = dir.path().join("input.txt");
    std::fs::write(&file, &data).expect("input");
    let file_s = file.display().to_string();

    let check = |lines: &[Line]| {
        let got: Vec<(usize, usize, String)> = lines.iter().map(|l| (l.start, l.end, l.rule.clone())).collect();
        assert_eq!(got, planted);
        for l in lines {
            let secret = std::str::from_utf8(&data[l.start..l.end]).expect("secret");
            assert!(ALL_SECRETS.contains(&secret), "{l:?} → {secret}");
            match l.rule.as_str() {
                "t-aws" => assert_eq!(l.masked, M_AWS),
                "t-gh" => assert_eq!(l.masked, M_GH),
                "t-part" => assert_eq!(l.masked, format!("{}6789", "*".repeat(PART1.len() - 4))),
                "t-hash" => assert!(l.masked.starts_with("[HASH:t-hash:"), "{}", l.masked),
                r => panic!("unexpected rule {r}"),
            }
            assert!(l.preview.contains(&l.masked), "{l:?}");
        }
        // The first preview shows its neighbours, masked too.
        assert!(lines[0].preview.contains("key = "), "{:?}", lines[0]);
        assert!(lines[0].preview.contains(M_GH) || lines[1].preview.contains(M_AWS));
    };
    let (lines, err) = scan_cli(&["--rules", &rules_s, &file_s], None);
    check(&lines);
    assert!(err.contains(&format!("{} findings", planted.len())), "{err}");
    let (lines, _) = scan_cli(&["--rules", &rules_s, "-"], Some(&data));
    check(&lines);
    let (lines, _) = scan_cli(&["--rules", &rules_s], Some(&data));
    check(&lines);
    // The built-in rules find AWS keys too.
    let small = dir.path().join("small.txt");
    std::fs::write(&small, format!("a {AWS1} b\n{AWS2}\n")).expect("small");
    let (lines, _) = scan_cli(&[&small.display().to_string()], None);
    let spans: Vec<(usize, usize)> = lines.iter().map(|l| (l.start, l.end)).collect();
    assert_eq!(spans, vec![(2, 22), (25, 45)], "{lines:?}");
    // Nothing to find: no output.
    let (lines, err) = scan_cli(&["--rules", &rules_s, "-"], Some(b"nothing here at all\n"));
    assert!(lines.is_empty());
    assert!(err.contains("0 findings"), "{err}");
}

/// `[scan.masks]` overrides a built-in rule's mask by id, and an unknown id
/// is a configuration error.
#[test]
fn mask_kind_overridden_by_rule_id() {
    let g = Gatehouse::start(
        "",
        "[scan]\nhash_key = \"k\"\n[scan.masks]\n\"github-personal-access-token\" = \"hash\"\n",
    );
    let token = format!("ghp_{}", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8");
    let (ok, out, err) = psql(&g, "postgres", &["-c", &format!("select '{token}'")]);
    assert!(ok, "{err}");
    assert!(out.trim().starts_with("[HASH:github-personal-access-token:"), "{out}");
    assert!(!out.contains(&token));

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("g.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[scan.masks]\n\"no-such-rule\" = \"hash\"\n",
            config_text(free_port(), "", "")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-rule"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A statement larger than the relay buffer streams through; a secret in it
/// is still found and counted (it can no longer be refused).
#[test]
fn secrets_in_statements_larger_than_the_buffer_are_flagged() {
    let g = Gatehouse::start("", "");
    let sql = format!(
        "select length('{}') /* AKIA{} */",
        "z".repeat(100_000),
        "QWERTYUIOPASDFGH"
    );
    let (ok, out, err) = psql(&g, "postgres", &["-c", &sql]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "100000");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = g.log();
    assert!(log.contains("too large to refuse"), "{log}");
    assert!(log.contains("client_secrets=1"), "{log}");
    assert!(!log.contains("AKIAQWERTYUIOPASDFGH"));
}

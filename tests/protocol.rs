//! Protocol coverage through the gateway: the three query paths, pipelining,
//! COPY in both directions with its error cases, asynchronous messages,
//! cancellation (also across workers), large messages and the startup
//! negotiation, each checked against the real PostgreSQL on this machine.

mod common;
use common::*;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

/// Upper bound for any single test body.
const TEST_LIMIT: Duration = Duration::from_secs(120);
/// Upper bound for one wait on the gateway or the server.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// helpers: tokio-postgres
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

/// A client whose asynchronous messages (notices, notifications) arrive on
/// the returned channel.
async fn connect_with_messages(conninfo: &str) -> (Client, mpsc::UnboundedReceiver<AsyncMessage>) {
    let (client, mut conn) = timeout(WAIT, tokio_postgres::connect(conninfo, NoTls))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect {conninfo}: {e:?}"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(m) => {
                    if tx.send(m).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    (client, rx)
}

async fn direct() -> Client {
    connect(&format!("host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres")).await
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

async fn next_message(rx: &mut mpsc::UnboundedReceiver<AsyncMessage>) -> AsyncMessage {
    timeout(WAIT, rx.recv())
        .await
        .expect("no asynchronous message within the wait")
        .expect("connection ended")
}

/// Waits until the upstream backend `pid` is running a pg_sleep.
async fn wait_sleeping(direct: &Client, pid: i32) {
    let deadline = Instant::now() + WAIT;
    loop {
        let row = direct
            .query_opt("select state, query from pg_stat_activity where pid = $1", &[&pid])
            .await
            .expect("pg_stat_activity");
        if let Some(row) = row {
            let state: Option<String> = row.get(0);
            let query: Option<String> = row.get(1);
            if state.as_deref() == Some("active") && query.unwrap_or_default().contains("pg_sleep") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "backend {pid} never started its pg_sleep");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{nanos}", std::process::id())
}

// ---------------------------------------------------------------------------
// helpers: raw protocol over a std TcpStream
// ---------------------------------------------------------------------------

struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn cstr(v: &mut Vec<u8>, s: &str) {
    v.extend_from_slice(s.as_bytes());
    v.push(0);
}

fn startup_packet(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        cstr(&mut body, k);
        cstr(&mut body, v);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn request_packet(code: u32, rest: &[u8]) -> Vec<u8> {
    let mut out = ((8 + rest.len()) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(rest);
    out
}

fn query_msg(sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql);
    frame(b'Q', &b)
}

fn parse_msg(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(b'P', &b)
}

fn bind_msg(portal: &str, stmt: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    cstr(&mut b, stmt);
    b.extend_from_slice(&0i16.to_be_bytes()); // parameter formats
    b.extend_from_slice(&0i16.to_be_bytes()); // parameters
    b.extend_from_slice(&0i16.to_be_bytes()); // result formats
    frame(b'B', &b)
}

fn execute_msg(portal: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    b.extend_from_slice(&0i32.to_be_bytes());
    frame(b'E', &b)
}

fn sync_msg() -> Vec<u8> {
    frame(b'S', &[])
}

fn flush_msg() -> Vec<u8> {
    frame(b'H', &[])
}

/// Fields of an ErrorResponse/NoticeResponse body.
fn fields(body: &[u8]) -> HashMap<u8, String> {
    let mut out = HashMap::new();
    let mut i = 0;
    while i < body.len() && body[i] != 0 {
        let code = body[i];
        let end = i + 1 + body[i + 1..].iter().position(|&b| b == 0).expect("unterminated field");
        out.insert(code, String::from_utf8_lossy(&body[i + 1..end]).into_owned());
        i = end + 1;
    }
    out
}

/// The C strings of a body.
fn cstrings(body: &[u8]) -> Vec<String> {
    body.split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The text columns of a DataRow body.
fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let n = i16::from_be_bytes([body[0], body[1]]) as usize;
    let mut i = 2;
    let mut cols = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
        i += 4;
        if len < 0 {
            cols.push(None);
        } else {
            let len = len as usize;
            cols.push(Some(String::from_utf8_lossy(&body[i..i + len]).into_owned()));
            i += len;
        }
    }
    cols
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to gatehouse");
        s.set_read_timeout(Some(WAIT)).expect("read timeout");
        s.set_write_timeout(Some(WAIT)).expect("write timeout");
        Raw { s, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write to gatehouse");
    }

    /// Reads more bytes; false on timeout, panics on EOF.
    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 64 * 1024];
        match self.s.read(&mut tmp) {
            Ok(0) => panic!("gatehouse closed the connection; unread: {:?}", self.buf),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => false,
            Err(e) => panic!("reading from gatehouse: {e}"),
        }
    }

    fn read_byte(&mut self) -> u8 {
        while self.buf.is_empty() {
            assert!(self.fill(), "timed out waiting for a byte");
        }
        self.buf.remove(0)
    }

    fn take_msg(&mut self) -> Option<(u8, Vec<u8>)> {
        if self.buf.len() < 5 {
            return None;
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if self.buf.len() < len + 1 {
            return None;
        }
        let tag = self.buf[0];
        let body = self.buf[5..len + 1].to_vec();
        self.buf.drain(..len + 1);
        Some((tag, body))
    }

    fn read_msg(&mut self) -> (u8, Vec<u8>) {
        loop {
            if let Some(m) = self.take_msg() {
                return m;
            }
            assert!(self.fill(), "timed out waiting for a message; have {:?}", self.buf);
        }
    }

    /// A message if one arrives within `wait`.
    fn try_read_msg(&mut self, wait: Duration) -> Option<(u8, Vec<u8>)> {
        self.s.set_read_timeout(Some(wait)).expect("read timeout");
        let r = loop {
            if let Some(m) = self.take_msg() {
                break Some(m);
            }
            if !self.fill() {
                break None;
            }
        };
        self.s.set_read_timeout(Some(WAIT)).expect("read timeout");
        r
    }

    /// Reads until ReadyForQuery; returns the messages before it and the
    /// transaction status.
    fn until_ready(&mut self) -> (Vec<(u8, Vec<u8>)>, u8) {
        let mut msgs = Vec::new();
        loop {
            let (tag, body) = self.read_msg();
            if tag == b'Z' {
                return (msgs, body[0]);
            }
            msgs.push((tag, body));
        }
    }

    /// Answers the cleartext password request and reads to ReadyForQuery.
    fn finish_login(&mut self) -> Login {
        let (tag, body) = self.read_msg();
        assert_eq!(tag, b'R', "expected an authentication request, got {:?}", tag as char);
        assert_eq!(
            i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
            3,
            "cleartext password"
        );
        let mut p = Vec::new();
        cstr(&mut p, TOKEN);
        self.send(&frame(b'p', &p));
        let mut login = Login::default();
        let mut ok = false;
        loop {
            let (tag, body) = self.read_msg();
            match tag {
                b'R' => {
                    assert_eq!(&body[..4], &[0, 0, 0, 0], "AuthenticationOk");
                    ok = true;
                }
                b'S' => {
                    let s = cstrings(&body);
                    login.params.insert(s[0].clone(), s[1].clone());
                }
                b'K' => {
                    login.pid = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    login.key = body[4..].to_vec();
                }
                b'Z' => {
                    assert_eq!(body, b"I");
                    break;
                }
                b'E' => panic!("login failed: {:?}", fields(&body)),
                b'N' => {}
                t => panic!("unexpected message {:?} during login", t as char),
            }
        }
        assert!(ok, "no AuthenticationOk");
        assert_eq!(login.key.len(), 4, "BackendKeyData secret");
        login
    }

    /// Runs one simple query and returns its text rows; panics on an error.
    fn simple(&mut self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.send(&query_msg(sql));
        let (msgs, _) = self.until_ready();
        let mut rows = Vec::new();
        for (tag, body) in msgs {
            match tag {
                b'D' => rows.push(data_row(&body)),
                b'E' => panic!("{sql}: {:?}", fields(&body)),
                _ => {}
            }
        }
        rows
    }
}

#[derive(Default, Debug)]
struct Login {
    pid: u32,
    key: Vec<u8>,
    params: HashMap<String, String>,
}

fn raw_login(port: u16, params: &[(&str, &str)]) -> (Raw, Login) {
    let mut r = Raw::connect(port);
    let mut all = vec![("user", "agent")];
    all.extend_from_slice(params);
    r.send(&startup_packet(3 << 16, &all));
    let login = r.finish_login();
    (r, login)
}

fn send_cancel(port: u16, pid: u32, key: &[u8]) {
    let mut rest = pid.to_be_bytes().to_vec();
    rest.extend_from_slice(key);
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect for cancel");
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    s.write_all(&request_packet(80_877_102, &rest)).expect("send cancel");
    // The gateway closes the connection once it has handled the request.
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    assert!(sink.is_empty(), "a CancelRequest gets no answer, got {sink:?}");
}

// ---------------------------------------------------------------------------
// helpers: external programs
// ---------------------------------------------------------------------------

/// Runs a command with a deadline; returns (success, stdout, stderr).
fn run_bounded(mut cmd: Command, limit: Duration) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("out");
    let err_path = dir.path().join("err");
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let mut err = std::fs::read_to_string(&err_path).unwrap_or_default();
    if status.is_none() {
        err.push_str(&format!("\n<killed after {limit:?}>"));
    }
    (status.is_some_and(|s| s.success()), out, err)
}

fn direct_psql(sql: &str) -> (bool, String, String) {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", PG_HOST, "-p"])
        .arg(PG_PORT.to_string())
        .args(["-U", "postgres", "-d", "postgres", "-c", sql])
        .env("PGSSLMODE", "disable");
    run_bounded(cmd, Duration::from_secs(60))
}

/// A scratch database on the local server, dropped (forcibly) at the end.
struct ScratchDb(String);

impl ScratchDb {
    fn create(name: String) -> ScratchDb {
        let (ok, _, err) = direct_psql(&format!("create database {name}"));
        assert!(ok, "create database {name}: {err}");
        ScratchDb(name)
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let _ = direct_psql(&format!("drop database if exists {} with (force)", self.0));
    }
}

// ---------------------------------------------------------------------------
// 1. pgbench
// ---------------------------------------------------------------------------

#[test]
fn pgbench_init_and_three_query_modes() {
    let db = ScratchDb::create(unique("gh_pgbench"));
    let extra = format!(
        r#"
[[target]]
name = "pgbench"
database = "{db}"
host = "{PG_HOST}"
port = {PG_PORT}
user = "postgres"
tls = "disable"
"#,
        db = db.0
    );
    let g = Gatehouse::start("", &extra);

    // -i loads pgbench_accounts with COPY FROM STDIN through the gateway.
    let mut init = Command::new("pgbench");
    g.pg_env(&mut init, &db.0);
    init.args(["-i", "-s", "1", "-q"]);
    let (ok, out, err) = run_bounded(init, Duration::from_secs(180));
    assert!(ok, "pgbench -i failed:\n{out}\n{err}\n{}", g.log());
    assert!(err.contains("done in"), "pgbench -i did not finish: {err}");
    let mut check = Command::new("psql");
    check
        .args(["-X", "-At", "-h", PG_HOST, "-p"])
        .arg(PG_PORT.to_string())
        .args([
            "-U",
            "postgres",
            "-d",
            &db.0,
            "-c",
            "select count(*) from pgbench_accounts",
        ])
        .env("PGSSLMODE", "disable");
    let (ok, count, err) = run_bounded(check, Duration::from_secs(30));
    assert!(ok, "{err}");
    assert_eq!(count.trim(), "100000", "rows loaded by COPY through the gateway");

    for mode in ["simple", "extended", "prepared"] {
        let mut bench = Command::new("pgbench");
        g.pg_env(&mut bench, &db.0);
        bench.args(["-S", "-t", "200", "-c", "4", "-j", "2", "-M", mode]);
        let (ok, out, err) = run_bounded(bench, Duration::from_secs(180));
        assert!(ok, "pgbench -M {mode} failed:\n{out}\n{err}\n{}", g.log());
        assert!(
            out.contains(&format!("query mode: {mode}")),
            "pgbench -M {mode} output:\n{out}"
        );
        assert!(
            out.contains("number of transactions actually processed: 800/800"),
            "pgbench -M {mode} output:\n{out}\n{err}"
        );
        assert!(
            out.contains("number of failed transactions: 0 "),
            "pgbench -M {mode} output:\n{out}\n{err}"
        );
    }
    drop(g);
}

// ---------------------------------------------------------------------------
// 2. extended protocol, prepared statements, pipelining, batches
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_parameters_of_several_types() {
    let g = Gatehouse::start("", "");
    timeout(TEST_LIMIT, async {
        let c = connect(&g.conninfo("test")).await;
        let text = "héllo ✓ 'quoted' \"double\" \\ back";
        let blob: Vec<u8> = (0..=255u8).collect();
        let none: Option<i32> = None;
        let arr = vec![1i32, -2, 3];
        let tarr = vec!["a".to_string(), "b c".to_string(), String::new()];
        let row = c
            .query_one(
                "select $1::int2, $2::int4, $3::int8, $4::float4, $5::float8, $6::bool, $7::text, \
                 $8::bytea, $9::int4, $10::int4[], $11::text[], $2::int4 + $3::int8, length($8::bytea)",
                &[
                    &-12i16,
                    &2_000_000_000i32,
                    &-9_000_000_000_000i64,
                    &1.5f32,
                    &-2.25e300f64,
                    &true,
                    &text,
                    &blob,
                    &none,
                    &arr,
                    &tarr,
                ],
            )
            .await
            .expect("query with parameters");
        assert_eq!(row.get::<_, i16>(0), -12);
        assert_eq!(row.get::<_, i32>(1), 2_000_000_000);
        assert_eq!(row.get::<_, i64>(2), -9_000_000_000_000);
        assert_eq!(row.get::<_, f32>(3), 1.5);
        assert_eq!(row.get::<_, f64>(4), -2.25e300);
        assert!(row.get::<_, bool>(5));
        assert_eq!(row.get::<_, &str>(6), text);
        assert_eq!(row.get::<_, Vec<u8>>(7), blob);
        assert_eq!(row.get::<_, Option<i32>>(8), None);
        assert_eq!(row.get::<_, Vec<i32>>(9), arr);
        assert_eq!(row.get::<_, Vec<String>>(10), tarr);
        assert_eq!(row.get::<_, i64>(11), 2_000_000_000 - 9_000_000_000_000);
        assert_eq!(row.get::<_, i32>(12), 256);

        // Several rows and an empty result through the extended path.
        let rows = c
            .query(
                "select g, g * $1::int8 from generate_series(1, $2::int4) g",
                &[&3i64, &50i32],
            )
            .await
            .expect("series");
        assert_eq!(rows.len(), 50);
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r.get::<_, i32>(0), i as i32 + 1);
            assert_eq!(r.get::<_, i64>(1), 3 * (i as i64 + 1));
        }
        let rows = c.query("select 1 where $1::bool", &[&false]).await.expect("empty");
        assert!(rows.is_empty());
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_are_reused() {
    let g = Gatehouse::start("", "");
    timeout(TEST_LIMIT, async {
        let c = connect(&g.conninfo("test")).await;
        let double = c.prepare("select $1::int4 * 2").await.expect("prepare double");
        let concat = c
            .prepare("select $1::text || '-' || $2::text")
            .await
            .expect("prepare concat");
        for i in 0..100i32 {
            let r = c.query_one(&double, &[&i]).await.expect("double");
            assert_eq!(r.get::<_, i32>(0), i * 2);
            let s = format!("s{i}");
            let r = c.query_one(&concat, &[&s, &"x"]).await.expect("concat");
            assert_eq!(r.get::<_, String>(0), format!("s{i}-x"));
        }
        // Both statements live on the one upstream backend as named statements.
        let n: i64 = c
            .query_one("select count(*) from pg_prepared_statements where not from_sql", &[])
            .await
            .expect("pg_prepared_statements")
            .get(0);
        assert!(n >= 2, "named statements on the server: {n}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_return_in_order() {
    let g = Gatehouse::start("", "");
    timeout(TEST_LIMIT, async {
        let c = connect(&g.conninfo("test")).await;
        let stmt = c.prepare("select $1::int4 * 3").await.expect("prepare");
        let futs = (0..200i32).map(|i| {
            let c = &c;
            let stmt = &stmt;
            async move { c.query_one(stmt, &[&i]).await }
        });
        let results = futures::future::join_all(futs).await;
        assert_eq!(results.len(), 200);
        for (i, r) in results.into_iter().enumerate() {
            let v: i32 = r.expect("pipelined query").get(0);
            assert_eq!(v, i as i32 * 3);
        }

        // Pipelined rows from a few bytes to larger than the relay buffer
        // (64 KiB), so small and streamed frames interleave.
        let big = c
            .prepare("select $1::int4, repeat(chr(65 + $1::int4 % 26), $2::int4)")
            .await
            .expect("prepare");
        let futs = (0..200i32).map(|i| {
            let c = &c;
            let big = &big;
            async move { c.query_one(big, &[&i, &(i * 997)]).await }
        });
        let results = futures::future::join_all(futs).await;
        for (i, r) in results.into_iter().enumerate() {
            let r = r.expect("pipelined big query");
            let i = i as i32;
            assert_eq!(r.get::<_, i32>(0), i);
            let s: &str = r.get(1);
            assert_eq!(s.len(), (i * 997) as usize);
            let ch = (b'A' + (i % 26) as u8) as char;
            assert!(s.chars().all(|c| c == ch), "row {i} has the wrong content");
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_statements_in_one_simple_query() {
    let g = Gatehouse::start("", "");
    timeout(TEST_LIMIT, async {
        let c = connect(&g.conninfo("test")).await;
        c.batch_execute(
            "create temp table gh_batch(a int, b text); \
             insert into gh_batch values (1, 'one'); \
             insert into gh_batch values (2, 'two'), (3, 'three');",
        )
        .await
        .expect("batch");
        let msgs = c
            .simple_query(
                "select 1 as x; select a, b from gh_batch order by a; update gh_batch set b = upper(b); select 'last'",
            )
            .await
            .expect("multi-statement query");
        let mut rows: Vec<Vec<Option<String>>> = Vec::new();
        let mut completes = Vec::new();
        let mut descriptions = 0;
        for m in &msgs {
            match m {
                SimpleQueryMessage::Row(r) => rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()),
                SimpleQueryMessage::CommandComplete(n) => completes.push(*n),
                SimpleQueryMessage::RowDescription(_) => descriptions += 1,
                _ => {}
            }
        }
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            rows,
            vec![
                vec![s("1")],
                vec![s("1"), s("one")],
                vec![s("2"), s("two")],
                vec![s("3"), s("three")],
                vec![s("last")],
            ]
        );
        assert_eq!(completes, vec![1, 3, 3, 1], "one CommandComplete per statement");
        assert_eq!(descriptions, 3, "one RowDescription per SELECT");
        let n: i64 = c
            .query_one("select count(*) from gh_batch where b = upper(b)", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 3);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_in_extended_batch_keeps_session_in_sync() {
    let g = Gatehouse::start("", "");
    timeout(TEST_LIMIT, async {
        let c = connect(&g.conninfo("test")).await;
        // Pipelined: the middle one fails, its neighbours must not.
        let q1 = c.query_one("select $1::int4 + 1", &[&1i32]);
        let q2 = c.query_one("select 1 / $1::int4", &[&0i32]);
        let q3 = c.query_one("select $1::text", &[&"after"]);
        let (r1, r2, r3) = futures::join!(q1, q2, q3);
        assert_eq!(r1.expect("first").get::<_, i32>(0), 2);
        let e = r2.expect_err("division by zero");
        assert_eq!(sqlstate(&e), "22012");
        assert_eq!(r3.expect("third").get::<_, &str>(0), "after");
        // A Parse error (syntax) inside the pipeline.
        let bad = c.prepare("selec oops");
        let good = c.query_one("select 42::int4", &[]);
        let (bad, good) = futures::join!(bad, good);
        assert_eq!(sqlstate(&bad.expect_err("syntax error")), "42601");
        assert_eq!(good.expect("after syntax error").get::<_, i32>(0), 42);
        for i in 0..20i32 {
            let r = c.query_one("select $1::int4", &[&i]).await.expect("later query");
            assert_eq!(r.get::<_, i32>(0), i);
        }
    })
    .await
    .expect("test timed out");

    // Raw: three statements before a single Sync; the server skips to Sync
    // after the error, and the next batch works.
    let (mut r, _) = raw_login(g.port, &[("database", "test")]);
    let mut batch = Vec::new();
    for sql in ["select 1", "select 1 / g from generate_series(0, 0) g", "select 3"] {
        batch.extend(parse_msg("", sql));
        batch.extend(bind_msg("", ""));
        batch.extend(execute_msg(""));
    }
    batch.extend(sync_msg());
    r.send(&batch);
    let (msgs, status) = r.until_ready();
    let tags: String = msgs.iter().map(|(t, _)| *t as char).collect();
    assert_eq!(tags, "12DC12E", "messages of the failed batch");
    assert_eq!(fields(&msgs[6].1).get(&b'C').map(String::as_str), Some("22012"));
    assert_eq!(status, b'I');
    // Flush asks for output without ending the batch.
    let mut b = parse_msg("", "select 4");
    b.extend(bind_msg("", ""));
    b.extend(execute_msg(""));
    b.extend(flush_msg());
    r.send(&b);
    let mut tags = String::new();
    let mut row = None;
    for _ in 0..4 {
        let (t, body) = r.read_msg();
        if t == b'D' {
            row = Some(data_row(&body));
        }
        tags.push(t as char);
    }
    assert_eq!(tags, "12DC");
    assert_eq!(row, Some(vec![Some("4".to_string())]));
    assert!(
        r.try_read_msg(Duration::from_millis(300)).is_none(),
        "no ReadyForQuery before Sync"
    );
    r.send(&sync_msg());
    let (msgs, status) = r.until_ready();
    assert!(msgs.is_empty());
    assert_eq!(status, b'I');
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_rollback_and_commit() {
    let g = Gatehouse::start("", "");
    timeout(TEST_LIMIT, async {
        let mut c = connect(&g.conninfo("test")).await;
        c.batch_execute("create temp table gh_tx(a int)").await.expect("create");
        let tx = c.transaction().await.expect("begin");
        tx.execute("insert into gh_tx values (1), (2)", &[])
            .await
            .expect("insert");
        let n: i64 = tx
            .query_one("select count(*) from gh_tx", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 2, "visible inside the transaction");
        tx.rollback().await.expect("rollback");
        let n: i64 = c
            .query_one("select count(*) from gh_tx", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 0, "rolled back");

        // A failed statement aborts the transaction until rollback.
        let tx = c.transaction().await.expect("begin");
        tx.execute("insert into gh_tx values (5)", &[]).await.expect("insert");
        let e = tx
            .execute("insert into gh_tx values ('x')", &[])
            .await
            .expect_err("bad int");
        assert_eq!(sqlstate(&e), "22P02");
        let e = tx.query_one("select 1", &[]).await.expect_err("aborted transaction");
        assert_eq!(sqlstate(&e), "25P02");
        tx.rollback().await.expect("rollback");

        let tx = c.transaction().await.expect("begin");
        tx.execute("insert into gh_tx values (7)", &[]).await.expect("insert");
        tx.commit().await.expect("commit");
        let rows = c.query("select a from gh_tx", &[]).await.expect("select");
        let v: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(v, vec![7]);
    })
    .await
    .expect("test timed out");
}

// ---------------------------------------------------------------------------
// 3. COPY
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_copy_out() {
    let g = Gatehouse::start("", "");
    timeout(TEST_LIMIT, async {
        let c = connect(&g.conninfo("test")).await;
        c.batch_execute("create temp table gh_copy(a int, b text)")
            .await
            .expect("create");
        let sink = c.copy_in("copy gh_copy from stdin").await.expect("copy in");
        futures::pin_mut!(sink);
        // Several rows per CopyData, and CopyData messages of varied sizes.
        let mut chunk = String::new();
        for i in 0..5000 {
            chunk.push_str(&format!("{i}\trow {i}\n"));
            if i % 97 == 0 {
                sink.send(Bytes::from(std::mem::take(&mut chunk)))
                    .await
                    .expect("copy data");
            }
        }
        sink.send(Bytes::from(chunk)).await.expect("copy data");
        let n = sink.finish().await.expect("copy finish");
        assert_eq!(n, 5000);
        let r = c
            .query_one("select count(*), sum(a)::int8, count(distinct b) from gh_copy", &[])
            .await
            .expect("verify");
        assert_eq!(r.get::<_, i64>(0), 5000);
        assert_eq!(r.get::<_, i64>(1), (0..5000i64).sum::<i64>());
        assert_eq!(r.get::<_, i64>(2), 5000);

        let stream = c
            .copy_out("copy (select a, b from gh_copy where a < 1000 order by a) to stdout")
            .await
            .expect("copy out");
        let chunks: Vec<Bytes> = stream.map(|r| r.expect("copy out data")).collect().await;
        let got: Vec<u8> = chunks.concat();
        let want: String = (0..1000).map(|i| format!("{i}\trow {i}\n")).collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want.as_bytes(), "COPY TO STDOUT bytes differ");

        // A COPY TO STDOUT larger than the relay buffer many times over.
        let stream = c
            .copy_out("copy (select g, repeat('z', 1000) from generate_series(1, 20000) g) to stdout")
            .await
            .expect("big copy out");
        let total: usize = stream
            .map(|r| r.expect("copy out data").len())
            .fold(0, |a, b| async move { a + b })
            .await;
        let want: usize = (1..=20000).map(|g: usize| g.to_string().len() + 1 + 1000 + 1).sum();
        assert_eq!(total, want);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_error_mid_stream_then_session_works() {
    let g = Gatehouse::start("", "");
    timeout(TEST_LIMIT, async {
        let c = connect(&g.conninfo("test")).await;
        c.batch_execute("create temp table gh_copy_err(a int)")
            .await
            .expect("create");
        let sink = c.copy_in("copy gh_copy_err from stdin").await.expect("copy in");
        futures::pin_mut!(sink);
        let mut err = None;
        for i in 0..3000 {
            let row = if i == 1500 {
                "not-a-number\n".to_string()
            } else {
                format!("{i}\n")
            };
            if let Err(e) = sink.send(Bytes::from(row)).await {
                err = Some(e);
                break;
            }
        }
        let e = match err {
            Some(e) => e,
            None => sink.finish().await.expect_err("COPY with a bad row must fail"),
        };
        assert_eq!(sqlstate(&e), "22P02", "{e:?}");
        assert!(db_message(&e).contains("not-a-number"), "{}", db_message(&e));
        let n: i64 = c
            .query_one("select count(*) from gh_copy_err", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 0, "the failed COPY inserted nothing");
        let r = c
            .query_one("select $1::int4 + 1", &[&41i32])
            .await
            .expect("after failed copy");
        assert_eq!(r.get::<_, i32>(0), 42);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_fail_from_client() {
    let g = Gatehouse::start("", "");
    timeout(TEST_LIMIT, async {
        let c = connect(&g.conninfo("test")).await;
        c.batch_execute("create temp table gh_copy_fail(a int)")
            .await
            .expect("create");
        {
            // Dropping the sink unfinished sends CopyFail.
            let sink = c
                .copy_in::<_, Bytes>("copy gh_copy_fail from stdin")
                .await
                .expect("copy in");
            futures::pin_mut!(sink);
            for i in 0..100 {
                sink.send(Bytes::from(format!("{i}\n"))).await.expect("copy data");
            }
        }
        let n: i64 = c
            .query_one("select count(*) from gh_copy_fail", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 0, "the aborted COPY inserted nothing");
        let r = c
            .query_one("select 'still here'::text", &[])
            .await
            .expect("after CopyFail");
        assert_eq!(r.get::<_, &str>(0), "still here");
    })
    .await
    .expect("test timed out");

    // Raw: CopyFail with a reason; the server's error names it.
    let (mut r, _) = raw_login(g.port, &[("database", "test")]);
    r.simple("create temp table gh_copy_fail_raw(a int)");
    r.send(&query_msg("copy gh_copy_fail_raw from stdin"));
    let (tag, _) = r.read_msg();
    assert_eq!(tag, b'G', "CopyInResponse");
    r.send(&frame(b'd', b"1\n2\n"));
    let mut f = Vec::new();
    cstr(&mut f, "client gave up on purpose");
    r.send(&frame(b'f', &f));
    let (msgs, status) = r.until_ready();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].0, b'E');
    let e = fields(&msgs[0].1);
    assert_eq!(e.get(&b'C').map(String::as_str), Some("57014"), "{e:?}");
    assert!(e[&b'M'].contains("client gave up on purpose"), "{e:?}");
    assert_eq!(status, b'I');
    assert_eq!(
        r.simple("select count(*) from gh_copy_fail_raw"),
        vec![vec![Some("0".into())]]
    );
}

// ---------------------------------------------------------------------------
// 4. LISTEN / NOTIFY
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_through_gateway() {
    let g = Gatehouse::start("", "");
    timeout(TEST_LIMIT, async {
        let chan = unique("gh_chan");
        let (listener, mut rx) = connect_with_messages(&g.conninfo("test")).await;
        listener.batch_execute(&format!("listen {chan}")).await.expect("listen");
        let notifier = connect(&g.conninfo("test")).await;
        let notifier_pid: i32 = notifier
            .query_one("select pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0);

        // The listener is idle: the notification arrives between queries.
        notifier
            .execute("select pg_notify($1, $2)", &[&chan, &"payload one"])
            .await
            .expect("notify");
        match next_message(&mut rx).await {
            AsyncMessage::Notification(n) => {
                assert_eq!(n.channel(), chan);
                assert_eq!(n.payload(), "payload one");
                assert_eq!(n.process_id(), notifier_pid);
            }
            m => panic!("expected a notification, got {m:?}"),
        }

        // Idle for a while, then several in one transaction, in order.
        tokio::time::sleep(Duration::from_millis(500)).await;
        notifier
            .batch_execute(&format!(
                "begin; notify {chan}, 'a'; notify {chan}, 'b'; notify {chan}, 'c'; commit"
            ))
            .await
            .expect("notify several");
        for want in ["a", "b", "c"] {
            match next_message(&mut rx).await {
                AsyncMessage::Notification(n) => assert_eq!(n.payload(), want),
                m => panic!("expected a notification, got {m:?}"),
            }
        }

        // Its own notification arrives with the response to its query.
        let own_pid: i32 = listener
            .query_one("select pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0);
        listener
            .batch_execute(&format!("notify {chan}, 'self'"))
            .await
            .expect("self notify");
        match next_message(&mut rx).await {
            AsyncMessage::Notification(n) => {
                assert_eq!(n.payload(), "self");
                assert_eq!(n.process_id(), own_pid);
            }
            m => panic!("expected a notification, got {m:?}"),
        }
        // The listener still answers queries.
        let r = listener
            .query_one("select 5::int4", &[])
            .await
            .expect("query after notifications");
        assert_eq!(r.get::<_, i32>(0), 5);
    })
    .await
    .expect("test timed out");
}

// ---------------------------------------------------------------------------
// 5. ParameterStatus, NoticeResponse, ErrorResponse
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_reach_the_server() {
    let g = Gatehouse::start("", "");
    timeout(TEST_LIMIT, async {
        let info = format!(
            "{} application_name=gh_proto_app options='-c DateStyle=SQL,DMY'",
            g.conninfo("test")
        );
        let c = connect(&info).await;
        let m = c.simple_query("show application_name").await.expect("show");
        let v = m.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        assert_eq!(v.as_deref(), Some("gh_proto_app"));
        let m = c.simple_query("show datestyle").await.expect("show");
        let v = m.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        assert_eq!(v.as_deref(), Some("SQL, DMY"));
        let d: String = c
            .query_one(
                "select to_char(date '2024-03-05', 'DD') || ' ' || (date '2024-03-05')::text",
                &[],
            )
            .await
            .expect("date")
            .get(0);
        assert_eq!(d, "05 05/03/2024", "the DMY style is in effect");
    })
    .await
    .expect("test timed out");
}

#[test]
fn parameter_status_passthrough_raw() {
    let g = Gatehouse::start("", "");
    let (mut r, login) = raw_login(
        g.port,
        &[
            ("database", "test"),
            ("application_name", "gh_raw_app"),
            ("options", "-c DateStyle=SQL,DMY"),
        ],
    );
    assert_eq!(
        login.params.get("application_name").map(String::as_str),
        Some("gh_raw_app")
    );
    assert_eq!(login.params.get("DateStyle").map(String::as_str), Some("SQL, DMY"));
    for p in [
        "server_version",
        "client_encoding",
        "server_encoding",
        "integer_datetimes",
        "TimeZone",
    ] {
        assert!(
            login.params.contains_key(p),
            "ParameterStatus {p} missing: {:?}",
            login.params
        );
    }
    // A SET of a reported parameter sends ParameterStatus mid-session.
    r.send(&query_msg(
        "set application_name = 'gh_changed'; set datestyle = 'ISO, MDY'",
    ));
    let (msgs, _) = r.until_ready();
    let statuses: Vec<Vec<String>> = msgs
        .iter()
        .filter(|(t, _)| *t == b'S')
        .map(|(_, b)| cstrings(b)[..2].to_vec())
        .collect();
    assert!(
        statuses.contains(&vec!["application_name".into(), "gh_changed".into()]),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&vec!["DateStyle".into(), "ISO, MDY".into()]),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_and_errors_pass_through() {
    let g = Gatehouse::start("", "");
    timeout(TEST_LIMIT, async {
        let (c, mut rx) = connect_with_messages(&g.conninfo("test")).await;
        c.batch_execute("do $$ begin raise notice 'gh notice %', 42; raise warning 'gh warning'; end $$")
            .await
            .expect("do block");
        match next_message(&mut rx).await {
            AsyncMessage::Notice(n) => {
                assert_eq!(n.severity(), "NOTICE");
                assert_eq!(n.code().code(), "00000");
                assert_eq!(n.message(), "gh notice 42");
            }
            m => panic!("expected a notice, got {m:?}"),
        }
        match next_message(&mut rx).await {
            AsyncMessage::Notice(n) => {
                assert_eq!(n.severity(), "WARNING");
                assert_eq!(n.code().code(), "01000");
                assert_eq!(n.message(), "gh warning");
            }
            m => panic!("expected a notice, got {m:?}"),
        }

        let e = c.query("select * from gh_no_such_table", &[]).await.expect_err("missing table");
        assert_eq!(sqlstate(&e), "42P01");
        let db = e.as_db_error().expect("server error");
        assert_eq!(db.severity(), "ERROR");
        assert_eq!(db.message(), "relation \"gh_no_such_table\" does not exist");
        assert!(db.position().is_some(), "position field passed through");

        let e = c.simple_query("select 1/0").await.expect_err("division by zero");
        assert_eq!(sqlstate(&e), "22012");
        assert_eq!(db_message(&e), "division by zero");

        let e = c
            .batch_execute("do $$ begin raise exception using errcode = 'P0042', message = 'custom', detail = 'dd', hint = 'hh'; end $$")
            .await
            .expect_err("custom error");
        let db = e.as_db_error().expect("server error");
        assert_eq!(db.code().code(), "P0042");
        assert_eq!(db.detail(), Some("dd"));
        assert_eq!(db.hint(), Some("hh"));

        let r = c.query_one("select 1::int4", &[]).await.expect("after errors");
        assert_eq!(r.get::<_, i32>(0), 1);
    })
    .await
    .expect("test timed out");
}

// ---------------------------------------------------------------------------
// 6. CancelRequest
// ---------------------------------------------------------------------------

/// Runs `select pg_sleep(30)` on a new session, cancels it with the client's
/// cancel token once it runs, and asserts 57014.
async fn sleep_and_cancel(g: &Gatehouse, direct: &Client) {
    let c = connect(&g.conninfo("postgres")).await;
    let pid: i32 = c.query_one("select pg_backend_pid()", &[]).await.expect("pid").get(0);
    let token = c.cancel_token();
    let q = tokio::spawn(async move {
        let r = c.simple_query("select pg_sleep(30)").await.map(|_| ());
        (c, r)
    });
    wait_sleeping(direct, pid).await;
    timeout(WAIT, token.cancel_query(NoTls))
        .await
        .expect("cancel timed out")
        .expect("cancel");
    let (c, r) = timeout(WAIT, q)
        .await
        .expect("query not cancelled in time")
        .expect("join");
    let e = r.expect_err("the sleep must be cancelled");
    assert_eq!(sqlstate(&e), "57014", "{e:?}");
    let v: i32 = c.query_one("select 9::int4", &[]).await.expect("after cancel").get(0);
    assert_eq!(v, 9);
}

/// (session id, worker) of each "session open" and each forwarded cancel.
fn log_workers(log: &str) -> (HashMap<String, String>, Vec<(String, String)>) {
    let field = |line: &str, name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name).map(str::to_string))
    };
    let mut opened = HashMap::new();
    let mut cancels = Vec::new();
    for line in log.lines() {
        let (Some(s), Some(w)) = (field(line, "session="), field(line, "worker=")) else {
            continue;
        };
        if line.contains("session open") {
            opened.insert(s, w);
        } else if line.contains("cancel request forwarded") {
            cancels.push((s, w));
        }
    }
    (opened, cancels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_cancels_query() {
    let g = Gatehouse::start("", "");
    timeout(TEST_LIMIT, async {
        let d = direct().await;
        sleep_and_cancel(&g, &d).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_crosses_workers() {
    let g = Gatehouse::start("", "");
    timeout(Duration::from_secs(240), async {
        let d = direct().await;
        let mut crossed = false;
        for attempt in 1..=40usize {
            sleep_and_cancel(&g, &d).await;
            // The cancel's log line may trail the client's error slightly.
            let deadline = Instant::now() + WAIT;
            let (opened, cancels) = loop {
                let (o, c) = log_workers(&g.log());
                if c.len() >= attempt || Instant::now() > deadline {
                    break (o, c);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(cancels.len(), attempt, "every cancel is forwarded:\n{}", g.log());
            let (session, worker) = &cancels[attempt - 1];
            let open_worker = opened
                .get(session)
                .unwrap_or_else(|| panic!("no session open line for {session}:\n{}", g.log()));
            if open_worker != worker {
                eprintln!("session {session} opened on worker {open_worker}, cancelled via worker {worker} (attempt {attempt})");
                crossed = true;
                break;
            }
        }
        assert!(crossed, "no cancel arrived on another worker in 40 attempts:\n{}", g.log());
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_wrong_key_is_ignored() {
    let g = Gatehouse::start("", "");
    let d = timeout(WAIT, direct()).await.expect("direct connect");
    let port = g.port;
    let (mut r, login) = raw_login(port, &[("database", "postgres")]);
    let rows = r.simple("select pg_backend_pid()");
    let upstream_pid: i32 = rows[0][0].as_deref().expect("pid").parse().expect("pid number");
    r.send(&query_msg("select pg_sleep(30)"));
    timeout(WAIT, wait_sleeping(&d, upstream_pid)).await.expect("wait");

    let mut wrong = login.key.clone();
    wrong[3] ^= 0x5a;
    send_cancel(port, login.pid, &wrong);
    // A wrong pid with the right key does nothing either.
    send_cancel(port, login.pid ^ 1, &login.key);
    // The query keeps running.
    assert!(
        r.try_read_msg(Duration::from_millis(1500)).is_none(),
        "a CancelRequest with a wrong key must not end the query"
    );
    let row = timeout(
        WAIT,
        d.query_one("select state from pg_stat_activity where pid = $1", &[&upstream_pid]),
    )
    .await
    .expect("timeout")
    .expect("state");
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("active"));
    g.wait_log_line("ignored cancel request", LOG_WAIT, |l| {
        l.contains("cancel request for no known session ignored")
    });

    // The right key cancels it.
    send_cancel(port, login.pid, &login.key);
    let (msgs, status) = r.until_ready();
    let err = msgs
        .iter()
        .find(|(t, _)| *t == b'E')
        .map(|(_, b)| fields(b))
        .expect("an ErrorResponse");
    assert_eq!(err.get(&b'C').map(String::as_str), Some("57014"), "{err:?}");
    assert_eq!(status, b'I');
    assert_eq!(r.simple("select 1"), vec![vec![Some("1".into())]]);
}

// ---------------------------------------------------------------------------
// 7. Large messages
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabyte_bytea_round_trip() {
    let g = Gatehouse::start("", "");
    timeout(Duration::from_secs(240), async {
        let c = connect(&g.conninfo("test")).await;
        const N: usize = 100 * 1024 * 1024;
        // Server to client: a 100 MiB DataRow.
        let r = c
            .query_one("select convert_to(repeat('ab', $1::int4 / 2), 'UTF8')", &[&(N as i32)])
            .await
            .expect("100 MiB from the server");
        let v: &[u8] = r.get(0);
        assert_eq!(v.len(), N);
        assert_eq!(&v[..4], b"abab");
        assert_eq!(&v[N / 2 - 1..N / 2 + 1], b"ba");
        assert_eq!(&v[N - 2..], b"ab");
        drop(r);

        // Client to server and back: a 100 MiB Bind parameter.
        let big: Vec<u8> = (0..N).map(|i| (i % 251) as u8).collect();
        let r = c
            .query_one("select length($1::bytea), md5($1::bytea), $1::bytea", &[&big])
            .await
            .expect("100 MiB parameter");
        assert_eq!(r.get::<_, i32>(0), N as i32);
        let back: &[u8] = r.get(2);
        assert_eq!(back.len(), N);
        assert!(back == big.as_slice(), "the parameter came back changed");
        let md5: &str = r.get(1);
        assert_eq!(md5.len(), 32);
        drop(r);
        let r = c.query_one("select 1::int4", &[]).await.expect("after large messages");
        assert_eq!(r.get::<_, i32>(0), 1);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_size_limit_in_both_directions() {
    let g = Gatehouse::start("max_message_bytes = 1048576", "");
    timeout(TEST_LIMIT, async {
        // Under the limit both ways still works.
        let c = connect(&g.conninfo("test")).await;
        let half = vec![3u8; 512 * 1024];
        let r = c.query_one("select $1::bytea", &[&half]).await.expect("512 KiB");
        assert_eq!(r.get::<_, &[u8]>(0).len(), half.len());

        // Client to server: a 2 MiB Bind.
        let big = vec![7u8; 2 * 1024 * 1024];
        let e = c
            .query_one("select length($1::bytea)", &[&big])
            .await
            .expect_err("a 2 MiB message must be refused");
        assert_eq!(sqlstate(&e), "54000", "{e:?}");
        assert!(db_message(&e).contains("1048576"), "{}", db_message(&e));

        // Server to client: a 2 MiB DataRow.
        let c = connect(&g.conninfo("test")).await;
        let e = c
            .simple_query("select repeat('x', 2 * 1024 * 1024)")
            .await
            .expect_err("a 2 MiB row must be refused");
        assert_eq!(sqlstate(&e), "54000", "{e:?}");
        assert!(db_message(&e).contains("1048576"), "{}", db_message(&e));

        // The gateway still serves new sessions.
        let c = connect(&g.conninfo("test")).await;
        let r = c.query_one("select 2::int4", &[]).await.expect("new session");
        assert_eq!(r.get::<_, i32>(0), 2);
    })
    .await
    .expect("test timed out");
}

// ---------------------------------------------------------------------------
// 8. Raw startup negotiation
// ---------------------------------------------------------------------------

#[test]
fn protocol_3_2_with_pq_option_is_negotiated_down() {
    let g = Gatehouse::start("", "");
    let mut r = Raw::connect(g.port);
    r.send(&startup_packet(
        (3 << 16) | 2,
        &[("user", "agent"), ("database", "test"), ("_pq_.test_option", "on")],
    ));
    let (tag, body) = r.read_msg();
    assert_eq!(tag, b'v', "NegotiateProtocolVersion first");
    assert_eq!(
        u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
        0,
        "newest minor"
    );
    assert_eq!(
        u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        1,
        "one unknown option"
    );
    assert_eq!(&body[8..], b"_pq_.test_option\0");
    let login = r.finish_login();
    assert!(login.params.contains_key("server_version"));
    assert_eq!(r.simple("select 'v3.0'"), vec![vec![Some("v3.0".into())]]);

    // A plain 3.0 startup gets no NegotiateProtocolVersion.
    let mut r = Raw::connect(g.port);
    r.send(&startup_packet(3 << 16, &[("user", "agent"), ("database", "test")]));
    let (tag, body) = r.read_msg();
    assert_eq!((tag, &body[..]), (b'R', &[0u8, 0, 0, 3][..]));
}

#[test]
fn gssenc_and_ssl_requests_are_declined_then_startup_continues() {
    let g = Gatehouse::start("", "");

    // GSSENCRequest → 'N', then the startup on the same socket.
    let mut r = Raw::connect(g.port);
    r.send(&request_packet(80_877_104, &[]));
    assert_eq!(r.read_byte(), b'N');
    r.send(&startup_packet(3 << 16, &[("user", "agent"), ("database", "test")]));
    r.finish_login();
    assert_eq!(r.simple("select 'gss'"), vec![vec![Some("gss".into())]]);

    // SSLRequest without TLS configured → 'N', then the startup.
    let mut r = Raw::connect(g.port);
    r.send(&request_packet(80_877_103, &[]));
    assert_eq!(r.read_byte(), b'N');
    r.send(&startup_packet(3 << 16, &[("user", "agent"), ("database", "test")]));
    r.finish_login();
    assert_eq!(r.simple("select 'ssl'"), vec![vec![Some("ssl".into())]]);

    // libpq's order with gssencmode=prefer and sslmode=prefer: both, then startup.
    let mut r = Raw::connect(g.port);
    r.send(&request_packet(80_877_104, &[]));
    assert_eq!(r.read_byte(), b'N');
    r.send(&request_packet(80_877_103, &[]));
    assert_eq!(r.read_byte(), b'N');
    r.send(&startup_packet(3 << 16, &[("user", "agent"), ("database", "test")]));
    r.finish_login();
    assert_eq!(r.simple("select 'both'"), vec![vec![Some("both".into())]]);
    assert!(r.buf.is_empty());
}

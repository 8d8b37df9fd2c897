//! Hostile and broken peers: garbage and impossible lengths from clients
//! before and after login, random bytes, an unreachable upstream and an
//! upstream that dies in the middle of a result. Each must end that one
//! session with a real SQLSTATE while the gateway keeps serving.

mod common;
mod pgraw;

use common::*;
use futures::StreamExt;
use pgraw::*;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// The gateway is alive and a normal query through it succeeds.
fn assert_serving(g: &Gatehouse) {
    assert!(alive(g.pid()), "gatehouse died; log:\n{}", g.log());
    let (ok, out, err) = psql(g, "postgres", &["-c", "select 40 + 2"]);
    assert!(
        ok && out.trim() == "42",
        "gatehouse stopped serving: {err}\nlog:\n{}",
        g.log()
    );
}

/// Rows of `sql` on the system PostgreSQL, straight (not through gatehouse).
fn direct(sql: &str) -> Vec<String> {
    let out = std::process::Command::new("psql")
        .args(["-X", "-At", "-h", PG_HOST, "-U", "postgres", "-d", "postgres"])
        .arg("-p")
        .arg(PG_PORT.to_string())
        .env("PGSSLMODE", "disable")
        .args(["-c", sql])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until no upstream backend carries `app` as its application_name:
/// a session the gateway ended must not leave its upstream connection open.
fn assert_upstream_gone(app: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = direct(&format!(
            "select count(*) from pg_stat_activity where application_name = '{app}'"
        ));
        if n.first().map(String::as_str) == Some("0") {
            return;
        }
        assert!(Instant::now() < deadline, "upstream backend of {app} still open");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `bytes` on a fresh connection; expects a 08P01 ErrorResponse and a close.
fn expect_08p01_before_login(g: &Gatehouse, bytes: &[u8], what: &str) {
    let mut c = Raw::connect(g.port);
    c.send(bytes).expect("send");
    let (frames, closed) = c.until_closed(WAIT);
    let e = first_error(&frames);
    assert_eq!(
        e.as_ref().map(|e| e.0.as_str()),
        Some("08P01"),
        "{what}: got {frames:?}"
    );
    assert!(closed, "{what}: the connection should be closed");
}

fn login(g: &Gatehouse, app: &str) -> Raw {
    let (c, _) = Raw::login(
        g.port,
        &[("user", "agent"), ("database", "postgres"), ("application_name", app)],
        TOKEN,
    )
    .unwrap_or_else(|e| panic!("login: {:?}\n{}", first_error(&[(b'E', e)]), g.log()));
    c
}

/// Logs in, proves the session works, sends `bytes`; expects 08P01 and a close.
fn expect_08p01_after_login(g: &Gatehouse, bytes: &[u8], what: &str) {
    let app = format!("gh-hostile-{}", what.replace(' ', "-"));
    let mut c = login(g, &app);
    assert_eq!(first_value(&c.simple("select 1")), Some("1".into()));
    c.send(bytes).expect("send");
    let (frames, closed) = c.until_closed(WAIT);
    let e = first_error(&frames);
    assert_eq!(
        e.as_ref().map(|e| e.0.as_str()),
        Some("08P01"),
        "{what}: got {frames:?}"
    );
    assert!(closed, "{what}: the connection should be closed");
    assert_upstream_gone(&app);
}

#[test]
fn garbage_and_bad_lengths_before_startup() {
    let g = Gatehouse::start("", "");
    expect_08p01_before_login(&g, b"GET / HTTP/1.1\r\n\r\n", "HTTP request");
    expect_08p01_before_login(&g, &[0x80, 0, 0, 0, 0, 3, 0, 0], "startup length 2^31");
    expect_08p01_before_login(&g, &[0, 0, 0, 3, 0, 3, 0, 0], "startup length 3");
    // A length that fits but a protocol version from another century.
    expect_08p01_before_login(&g, &[0, 0, 0, 9, 0, 2, 0, 0, 0], "protocol 2");
    assert_serving(&g);
}

#[test]
fn bad_frames_after_login() {
    let g = Gatehouse::start("", "");
    expect_08p01_after_login(&g, &[b'Q', 0x80, 0, 0, 0], "length 2^31");
    expect_08p01_after_login(&g, &[b'Q', 0, 0, 0, 3], "length 3");
    expect_08p01_after_login(&g, &[b'z', 0, 0, 0, 4], "unknown type");
    // A message type only servers send.
    expect_08p01_after_login(&g, &frame(b'Z', b"I"), "server message type");
    assert_serving(&g);
}

#[test]
fn truncated_frame_then_close() {
    let g = Gatehouse::start("", "");
    let app = "gh-hostile-truncated";
    let mut c = login(&g, app);
    assert_eq!(first_value(&c.simple("select 1")), Some("1".into()));
    // A Query that announces 100 bytes and carries 10, then the client goes away.
    let mut f = vec![b'Q', 0, 0, 0, 104];
    f.extend_from_slice(b"select 1; ");
    c.send(&f).expect("send");
    std::thread::sleep(Duration::from_millis(100));
    drop(c);
    assert_upstream_gone(app);
    // The same with a half-close: the gateway can still write, and it must
    // not hang waiting for the rest of the frame.
    let app = "gh-hostile-truncated-half";
    let mut c = login(&g, app);
    c.send(&f).expect("send");
    c.s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let (frames, closed) = c.until_closed(WAIT);
    assert!(
        closed,
        "the gateway should close a session whose client half-closed; got {frames:?}"
    );
    eprintln!("half-closed truncated frame: {:?}", first_error(&frames));
    if let Some((code, _)) = first_error(&frames) {
        assert_eq!(code, "08P01", "{frames:?}");
    }
    assert_upstream_gone(app);
    assert_serving(&g);
}

#[test]
fn upstream_unreachable_is_08006_with_an_actionable_message() {
    let dead = free_port();
    let extra = format!(
        "[[target]]\nname = \"deadtarget\"\ndatabase = \"deaddb\"\nhost = \"127.0.0.1\"\nport = {dead}\n\
         user = \"postgres\"\ntls = \"disable\"\nconnect_timeout_secs = 3\n"
    );
    let g = Gatehouse::start("", &extra);
    let started = Instant::now();
    let mut c = Raw::connect(g.port);
    c.send(&startup(&[("user", "agent"), ("database", "deaddb")]))
        .expect("startup");
    let (t, _) = c.next(WAIT).expect("password request");
    assert_eq!(t, b'R');
    c.send(&password(TOKEN)).expect("password");
    let (frames, closed) = c.until_closed(WAIT);
    let (code, msg) = first_error(&frames).unwrap_or_else(|| panic!("no error: {frames:?}"));
    assert_eq!(code, "08006", "{msg}");
    assert!(msg.contains("deadtarget"), "the message should name the target: {msg}");
    assert!(
        msg.contains(&format!("127.0.0.1:{dead}")),
        "the message should name the address: {msg}"
    );
    assert!(
        msg.to_lowercase().contains("refused"),
        "the message should say why: {msg}"
    );
    assert!(closed);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_serving(&g);
}

#[test]
fn upstream_dying_mid_result_reaches_the_client() {
    let g = Gatehouse::start("", "");
    let marker = format!("gh_kill_{}", std::process::id());
    let sql = format!("select g, repeat('x', 100) from generate_series(1, 50000000) g /* {marker} */");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let info = g.conninfo("postgres");
    let result = rt.block_on(async move {
        let (client, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls)
            .await
            .expect("connect through gatehouse");
        let conn_task = tokio::spawn(conn);
        let stream = client.simple_query_raw(&sql).await.expect("start the query");
        futures::pin_mut!(stream);
        let mut rows = 0u64;
        while rows < 1000 {
            match tokio::time::timeout(WAIT, stream.next()).await {
                Ok(Some(Ok(tokio_postgres::SimpleQueryMessage::Row(_)))) => rows += 1,
                Ok(Some(Ok(_))) => {}
                other => panic!("streaming failed before the kill: {other:?}"),
            }
        }
        // Kill the upstream backend from a direct connection.
        let (direct, dconn) = tokio_postgres::connect(
            &format!("host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres sslmode=disable"),
            tokio_postgres::NoTls,
        )
        .await
        .expect("direct connection");
        tokio::spawn(dconn);
        let killed = direct
            .simple_query(&format!(
                "select pg_terminate_backend(pid)::text from pg_stat_activity \
                 where query like '%{marker}%' and pid <> pg_backend_pid()"
            ))
            .await
            .expect("terminate");
        let n = killed
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("true")))
            .count();
        assert_eq!(n, 1, "exactly one backend should run the query");
        // Drain what is buffered; the stream must end in an error, soon.
        let drain = async {
            loop {
                match stream.next().await {
                    Some(Ok(_)) => rows += 1,
                    Some(Err(e)) => return Some(e),
                    None => return None,
                }
            }
        };
        let end = tokio::time::timeout(Duration::from_secs(60), drain)
            .await
            .expect("the client hung after the upstream died");
        drop(client);
        let _ = tokio::time::timeout(WAIT, conn_task).await;
        end
    });
    let e = result.expect("the stream ended without an error after the upstream died");
    let code = e.code().map(|c| c.code().to_string());
    eprintln!("after the upstream died the client got: {e:?}");
    assert!(
        matches!(code.as_deref(), Some("57P01") | Some("08006")),
        "expected 57P01 or 08006, got {e:?}"
    );
    assert_serving(&g);
}

#[test]
fn random_bytes_after_login_never_crash_the_gateway() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    let g = Gatehouse::start("", "");
    // Client message types, without FunctionCall ('F'): random calls of
    // random functions have no place on a shared cluster.
    let tags: Vec<u8> = b"BCDEHPQSXdcfpz\x00\xff".to_vec();
    let raw = proptest::collection::vec(any::<u8>(), 0..96).prop_map(|mut v| {
        if v.first() == Some(&b'F') {
            v[0] = b'z';
        }
        v
    });
    let framed = (
        proptest::sample::select(tags),
        prop_oneof![0u32..64, any::<u32>()],
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(t, len, body)| {
            let mut v = vec![t];
            v.extend_from_slice(&len.to_be_bytes());
            v.extend_from_slice(&body);
            v
        });
    let strategy = prop_oneof![raw, framed];
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let started = Instant::now();
    let res = runner.run(&strategy, |bytes| {
        let (mut c, _) = Raw::login(g.port, &[("user", "agent"), ("database", "postgres")], TOKEN)
            .map_err(|e| TestCaseError::fail(format!("login failed: {:?}", first_error(&[(b'E', e)]))))?;
        let _ = c.send(&bytes);
        let _ = c.until_closed(Duration::from_millis(150));
        drop(c);
        prop_assert!(alive(g.pid()), "gatehouse died after {:?}", bytes);
        Ok(())
    });
    if let Err(e) = res {
        panic!("{e}\nlog:\n{}", g.log());
    }
    assert!(started.elapsed() < Duration::from_secs(240));
    assert_serving(&g);
}

#[test]
fn upstream_dying_mid_large_row_closes_the_client() {
    let g = Gatehouse::start("", "");
    let marker = format!("gh_kill_large_{}", std::process::id());
    let app = format!("gh-large-{}", std::process::id());
    let mut c = login(&g, &app);
    // One DataRow of 200 MB: far larger than the relay's buffers, so it is
    // streamed through in pieces when the upstream dies.
    const ROW: usize = 200_000_000;
    c.send(&query(&format!("select repeat('x', {ROW}) /* {marker} */")))
        .expect("query");
    let mut buf = vec![0u8; 64 * 1024];
    let mut all = Vec::new();
    c.s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    while all.len() < 4 << 20 {
        let n = std::io::Read::read(&mut c.s, &mut buf).expect("read the row");
        assert!(n > 0, "closed early");
        all.extend_from_slice(&buf[..n]);
    }
    let killed = direct(&format!(
        "select pg_terminate_backend(pid) from pg_stat_activity where query like '%{marker}%' and pid <> pg_backend_pid()"
    ));
    assert_eq!(killed, vec!["t".to_string()]);
    // Whatever is buffered arrives, then the connection must close.
    let t = Instant::now();
    loop {
        match std::io::Read::read(&mut c.s, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the client hung after the upstream died"
        );
    }
    // RowDescription, then the DataRow's header and as much of its value as
    // was sent, and nothing else: the protocol cannot carry an error inside
    // a half-sent row, so none may be injected there.
    assert_eq!(all[0], b'T');
    let t_len = u32::from_be_bytes([all[1], all[2], all[3], all[4]]) as usize;
    let d = &all[1 + t_len..];
    assert_eq!(d[0], b'D');
    assert_eq!(u32::from_be_bytes([d[1], d[2], d[3], d[4]]) as usize, 4 + 2 + 4 + ROW);
    let value = &d[11..];
    assert!(value.len() < ROW, "the whole row arrived");
    if let Some(at) = value.iter().position(|&b| b != b'x') {
        panic!(
            "bytes inside the half-sent row are not the row's: {:?}",
            String::from_utf8_lossy(&value[at..(at + 200).min(value.len())])
        );
    }
    assert_upstream_gone(&app);
    assert_serving(&g);
}

/// Text a client puts into its startup packet cannot forge log lines: a
/// line break in `user` (logged when authentication fails) is written
/// escaped, inside the one event.
#[test]
fn startup_text_cannot_forge_log_lines() {
    let g = Gatehouse::start("", "");
    let forged = "x\nFORGED session open identity=admin\r";
    let refused = Raw::login(g.port, &[("user", forged), ("database", "postgres")], TOKEN);
    assert!(refused.is_err(), "no such identity");
    let log = g.wait_log_line("the forged user's line", LOG_WAIT, |l| l.contains("FORGED"));
    assert!(log.contains("x\\nFORGED session open identity=admin\\r"), "{log}");
    assert!(!log.lines().any(|l| l.starts_with("FORGED")), "{log}");
    assert_serving(&g);
}

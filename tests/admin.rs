//! The admin API against a running gatehouse: every route, the role matrix,
//! the OpenAPI document, kills and reloads.
mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const ADMIN: &str = "admin-tok-1111";
const AUDITOR: &str = "auditor-tok-2222";
const APPROVER: &str = "approver-tok-3333";

fn start() -> (Gatehouse, u16) {
    let admin_port = free_port();
    let extra = format!(
        r#"
[admin]
listen = "127.0.0.1:{admin_port}"

[[admin.token]]
name = "ops"
token_hash = "{}"
roles = ["admin"]

[[admin.token]]
name = "audit"
token_hash = "{}"
roles = ["auditor"]

[[admin.token]]
name = "review"
token_hash = "{}"
roles = ["approver"]
"#,
        token_hash(ADMIN),
        token_hash(AUDITOR),
        token_hash(APPROVER)
    );
    let g = Gatehouse::start("", &extra);
    (g, admin_port)
}

/// A minimal HTTP/1.1 request; returns (status, body).
fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    let status: u16 = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Chunked bodies: good enough to search in for these tests.
    (status, body)
}

#[test]
fn probes_and_openapi_need_no_token() {
    let (g, port) = start();
    assert_eq!(http(port, "GET", "/healthz", None).0, 200, "{}", g.log());
    // Ready once every worker serves: the data port may already accept
    // (one worker bound) a moment before.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match http(port, "GET", "/readyz", None).0 {
            200 => break,
            503 if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("/readyz answered {other}: {}", g.log()),
        }
    }
    let (st, body) = http(port, "GET", "/openapi.json", None);
    assert_eq!(st, 200);
    assert!(body.contains("\"openapi\""), "{body}");
    assert_eq!(http(port, "GET", "/nope", None).0, 404);
}

#[test]
fn role_matrix() {
    let (_g, port) = start();
    // (method, path, admin, auditor, approver)
    let cases: &[(&str, &str, u16, u16, u16)] = &[
        ("GET", "/metrics", 200, 200, 403),
        ("GET", "/api/v1/sessions", 200, 200, 403),
        ("POST", "/api/v1/sessions/12345/kill", 404, 403, 403),
        ("POST", "/api/v1/reload", 200, 403, 403),
    ];
    for &(m, p, a, au, ap) in cases {
        assert_eq!(http(port, m, p, None).0, 401, "{m} {p} without a token");
        assert_eq!(
            http(port, m, p, Some("not-a-token")).0,
            401,
            "{m} {p} with an unknown token"
        );
        assert_eq!(http(port, m, p, Some(ADMIN)).0, a, "{m} {p} as admin");
        assert_eq!(http(port, m, p, Some(AUDITOR)).0, au, "{m} {p} as auditor");
        assert_eq!(http(port, m, p, Some(APPROVER)).0, ap, "{m} {p} as approver");
    }
}

#[test]
fn openapi_matches_the_routes() {
    let (_g, port) = start();
    let (_, body) = http(port, "GET", "/openapi.json", None);
    let doc: serde_json::Value = serde_json::from_str(body.trim()).expect("openapi is JSON");
    let paths = doc["paths"].as_object().expect("paths");
    // Every documented operation is served (not the fallback 404 / 405).
    let mut ops = 0;
    for (path, item) in paths {
        for (method, _) in item.as_object().unwrap() {
            let concrete = path.replace("{id}", "1").replace("{token}", "x");
            let (st, body) = if concrete == "/api/v1/reviews/events" {
                // A stream that does not end: its head only.
                (
                    status_only(port, &method.to_uppercase(), &concrete, Some(ADMIN)),
                    String::new(),
                )
            } else {
                http(port, &method.to_uppercase(), &concrete, Some(ADMIN))
            };
            assert!(
                st != 405 && !body.contains("no such route"),
                "{method} {path} is documented but not served ({st})"
            );
            ops += 1;
        }
    }
    assert_eq!(ops, gatehouse::control::admin::ROUTES.len());
    // Every served route is documented: the router is built from ROUTES,
    // and an undocumented path is the fallback.
    for (m, p, _, _) in gatehouse::control::admin::ROUTES {
        assert!(
            paths.get(*p).and_then(|i| i.get(*m)).is_some(),
            "{m} {p} missing from the document"
        );
    }
}

#[test]
fn metrics_count_sessions_and_masks() {
    let (g, port) = start();
    let (ok, out, err) = psql(&g, "postgres", &["-c", "select 'AKIA' || 'ABCDEFGHIJKLMNOP'"]);
    assert!(ok, "{err}");
    assert!(!out.contains("AKIAABCDEFGHIJKLMNOP"), "{out}");
    let (st, body) = http(port, "GET", "/metrics", Some(AUDITOR));
    assert_eq!(st, 200);
    let opened: u64 = body
        .lines()
        .filter(|l| l.starts_with("gatehouse_sessions_opened_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(opened, 1, "{body}");
    assert!(
        body.contains("gatehouse_masked_values_total{rule=\"aws-access-key-id\"} 1"),
        "{body}"
    );
}

#[tokio::test]
async fn kill_a_session() {
    let (g, port) = start();
    let (client, conn) = tokio_postgres::connect(&g.conninfo("postgres"), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let conn = tokio::spawn(conn);
    client.simple_query("select 1").await.expect("query");
    let (st, body) = tokio::task::spawn_blocking(move || http(port, "GET", "/api/v1/sessions", Some(AUDITOR)))
        .await
        .unwrap();
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(body.trim()).expect("json");
    let list = v["sessions"].as_array().expect("sessions");
    assert_eq!(list.len(), 1, "{body}");
    assert_eq!(list[0]["identity"], "agent");
    assert_eq!(list[0]["target"], "postgres", "{body}");
    let client = list[0]["client_addr"].as_str().unwrap_or_default();
    assert!(
        client
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback()),
        "{body}"
    );
    // What it did so far: one statement, one row; nothing held.
    assert_eq!(
        (list[0]["statements"].as_u64(), list[0]["rows"].as_u64()),
        (Some(1), Some(1)),
        "{body}"
    );
    assert!(list[0]["held"].is_null(), "{body}");
    let id = list[0]["id"].as_str().unwrap().to_string();
    let (st, _) =
        tokio::task::spawn_blocking(move || http(port, "POST", &format!("/api/v1/sessions/{id}/kill"), Some(ADMIN)))
            .await
            .unwrap();
    assert_eq!(st, 200);
    let err = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("connection ends")
        .unwrap()
        .expect_err("killed");
    let code = err.as_db_error().map(|e| e.code().code().to_string());
    assert_eq!(code.as_deref(), Some("57P01"), "{err}");
}

#[test]
fn readyz_turns_503_while_draining() {
    let (g, port) = start();
    // An open session keeps the process draining after SIGTERM.
    let mut cmd = std::process::Command::new("psql");
    g.pg_env(&mut cmd, "postgres");
    let mut child = cmd.args(["-X", "-c", "select pg_sleep(3)"]).spawn().expect("psql");
    std::thread::sleep(Duration::from_millis(800));
    g.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    let (st, body) = http(port, "GET", "/readyz", None);
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("draining"));
    let _ = child.wait();
}

/// A client that trickles its headers is cut off after
/// `header_timeout_secs`, and one that holds `max_connections` open cannot
/// take more: the next connection is closed at once, and a slot comes back
/// when one of its connections ends.
#[test]
fn slow_and_greedy_clients_are_bounded() {
    let admin_port = free_port();
    let g = Gatehouse::start(
        "",
        &format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\"\nmax_connections = 2\nheader_timeout_secs = 2\n"),
    );
    // Wait for the admin API.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", admin_port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{}", g.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    // Whether the server closed the connection within `limit`, and what it
    // sent before.
    let closed_within = |s: &mut TcpStream, limit: Duration| -> (bool, usize) {
        s.set_read_timeout(Some(limit)).unwrap();
        let mut b = [0u8; 512];
        let mut got = 0;
        loop {
            match s.read(&mut b) {
                Ok(0) => return (true, got),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (true, got),
                Err(_) => return (false, got),
            }
        }
    };
    // Slowloris: half a request line, then nothing.
    let mut slow = TcpStream::connect(("127.0.0.1", admin_port)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t = std::time::Instant::now();
    assert!(
        closed_within(&mut slow, Duration::from_secs(10)).0,
        "a trickling client stays connected"
    );
    assert!(t.elapsed() < Duration::from_secs(6), "cut after {:?}", t.elapsed());
    // Two silent connections take both slots; a third is closed at once.
    let a = TcpStream::connect(("127.0.0.1", admin_port)).unwrap();
    let _b = TcpStream::connect(("127.0.0.1", admin_port)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(("127.0.0.1", admin_port)).unwrap();
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        closed_within(&mut third, Duration::from_secs(5)),
        (true, 0),
        "a third connection is closed unanswered"
    );
    // Once the slots are free again, requests are served.
    drop(a);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(http(admin_port, "GET", "/healthz", None).0, 200, "{}", g.log());
    assert!(g.log().contains("too many open"), "{}", g.log());
}

//! A hostile MySQL client against gatehouse's MySQL listener: bad
//! lengths, wrong sequence ids, truncated and malformed handshakes, junk
//! after login. Each gets an error packet (where the protocol leaves room
//! for one) and a close, never a panic or a hang, and gatehouse goes on
//! serving well-behaved clients.

mod common;
use common::*;
use gatehouse::wire::mysql::handshake::HandshakeResponse;
use gatehouse::wire::mysql::{caps, frame, payload, write_message};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn open(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Reads one whole message: Some((seq, payload)), None at EOF.
fn read(s: &mut impl Read, buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    loop {
        if let Some(m) = frame(buf, 1 << 24).expect("gatehouse sent a malformed packet") {
            let p = payload(buf, &m).into_owned();
            buf.drain(..m.wire_len);
            return Some((m.first_seq, p));
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("gatehouse neither answered nor closed: {e}"),
        }
    }
}

/// What gatehouse does after the client sent something: the error packet
/// it sent (code) if any, and that it closed the connection afterwards.
fn error_then_close(what: &str, s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<u16> {
    let mut code = None;
    while let Some((_, p)) = read(s, buf) {
        assert_eq!(p.first(), Some(&0xff), "{what}: expected an error packet, got {p:?}");
        code = Some(u16::from_le_bytes([p[1], p[2]]));
    }
    code
}

fn response(user: &str, database: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    let with_db = if database.is_some() { caps::CONNECT_WITH_DB } else { 0 };
    HandshakeResponse {
        capabilities: caps::PROTOCOL_41
            | caps::SECURE_CONNECTION
            | caps::PLUGIN_AUTH
            | with_db
            | caps::MULTI_RESULTS
            | caps::MULTI_STATEMENTS
            | caps::LONG_PASSWORD,
        max_packet: 1 << 24,
        charset: 45,
        mariadb_capabilities: 0,
        user: user.as_bytes().to_vec(),
        auth_response: vec![0x11; 32],
        database: database.map(|d| d.as_bytes().to_vec()),
        auth_plugin: Some(b"caching_sha2_password".to_vec()),
        attributes: vec![],
    }
    .write(&mut out)
    .unwrap();
    out
}

/// A logged-in raw session: the token sent in clear after "perform full
/// authentication", which gatehouse accepts on loopback when the
/// configuration allows it (the tests' does).
fn login(port: u16) -> (TcpStream, Vec<u8>) {
    let mut s = open(port);
    let mut buf = Vec::new();
    let (seq, greeting) = read(&mut s, &mut buf).expect("greeting");
    assert_eq!((seq, greeting[0]), (0, 10));
    let mut out = Vec::new();
    write_message(&mut out, 1, &response("agent", Some("test")));
    s.write_all(&out).unwrap();
    let (seq, more) = read(&mut s, &mut buf).expect("auth more data");
    assert_eq!((seq, &more[..]), (2, &[1u8, 4][..]), "perform full authentication");
    let mut pw = TOKEN.as_bytes().to_vec();
    pw.push(0);
    let mut out = Vec::new();
    write_message(&mut out, 3, &pw);
    s.write_all(&out).unwrap();
    let (seq, ok) = read(&mut s, &mut buf).expect("OK");
    assert_eq!((seq, ok[0]), (4, 0), "{ok:?}");
    (s, buf)
}

/// A query on a raw session: the answer's packets up to the last, whose
/// first byte is returned.
fn query(s: &mut TcpStream, buf: &mut Vec<u8>, sql: &str) -> u8 {
    let mut p = vec![3u8];
    p.extend_from_slice(sql.as_bytes());
    let mut out = Vec::new();
    write_message(&mut out, 0, &p);
    s.write_all(&out).unwrap();
    // A result set: column count, columns, EOF, rows, EOF.
    let (_, first) = read(s, buf).expect("answer");
    if first[0] == 0 || first[0] == 0xff {
        return first[0];
    }
    let mut eofs = 0;
    loop {
        let (_, p) = read(s, buf).expect("result set");
        if p[0] == 0xff {
            return 0xff;
        }
        if p[0] == 0xfe && p.len() < 9 {
            eofs += 1;
            if eofs == 2 {
                return 0xfe;
            }
        }
    }
}

fn assert_still_serves(g: &Gatehouse, port: u16) {
    let (mut s, mut buf) = login(port);
    assert_eq!(query(&mut s, &mut buf, "SELECT 1"), 0xfe, "{}", g.log());
    assert!(!g.log().contains("panicked"), "{}", g.log());
}

/// Sends one command (sequence id 0).
fn send(s: &mut TcpStream, payload: &[u8]) {
    let mut out = Vec::new();
    write_message(&mut out, 0, payload);
    s.write_all(&out).unwrap();
}

/// Prepares `sql` and executes it with a read-only cursor: the server
/// answers with column definitions and an EOF saying the cursor exists, and
/// no rows. Returns the statement id.
fn open_cursor(g: &Gatehouse, s: &mut TcpStream, buf: &mut Vec<u8>, sql: &[u8]) -> [u8; 4] {
    let mut p = vec![0x16];
    p.extend_from_slice(sql);
    send(s, &p);
    let (_, ok) = read(s, buf).unwrap();
    assert_eq!(ok[0], 0, "{ok:?}\n{}", g.log());
    let id = [ok[1], ok[2], ok[3], ok[4]];
    let columns = u16::from_le_bytes([ok[5], ok[6]]);
    // Its column definitions and their EOF.
    for _ in 0..columns + 1 {
        read(s, buf).unwrap();
    }
    let mut p = vec![0x17];
    p.extend_from_slice(&id);
    p.extend_from_slice(&[1, 1, 0, 0, 0]);
    send(s, &p);
    loop {
        let (_, m) = read(s, buf).unwrap();
        assert_ne!(m[0], 0xff, "{m:?}");
        if m[0] == 0xfe && m.len() < 9 {
            return id;
        }
    }
}

#[test]
fn hostile_handshakes_get_an_error_and_a_close() {
    let (g, port) = start_mysql("", "", "");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // A response with sequence id 0 instead of 1.
        ("wrong sequence id", {
            let mut out = Vec::new();
            write_message(&mut out, 0, &response("agent", Some("test")));
            out
        }),
        // A header announcing 16 MiB - 1 and a few bytes, then EOF.
        ("length past what follows", vec![0xff, 0xff, 0xff, 1, 1, 2, 3]),
        // An empty payload.
        ("empty response", vec![0, 0, 0, 1]),
        // A response cut after its capability flags.
        ("truncated response", {
            let r = response("agent", Some("test"));
            let mut out = Vec::new();
            write_message(&mut out, 1, &r[..6]);
            out
        }),
        // No database (gatehouse needs one to choose the target).
        ("no database", {
            let mut out = Vec::new();
            write_message(&mut out, 1, &response("agent", None));
            out
        }),
        // A user name without its terminating NUL.
        ("unterminated user", {
            let mut r = response("agent", Some("test"));
            r.truncate(32 + 5);
            let mut out = Vec::new();
            write_message(&mut out, 1, &r);
            out
        }),
        // An SSL request while gatehouse has no certificate.
        ("SSL request without TLS", {
            let mut p = (caps::PROTOCOL_41 | caps::SSL | caps::SECURE_CONNECTION)
                .to_le_bytes()
                .to_vec();
            p.extend_from_slice(&(1u32 << 24).to_le_bytes());
            p.push(45);
            p.extend_from_slice(&[0; 23]);
            let mut out = Vec::new();
            write_message(&mut out, 1, &p);
            out
        }),
        // A protocol 320 response (no PROTOCOL_41).
        ("old protocol", {
            let mut out = Vec::new();
            write_message(&mut out, 1, &[0x05, 0xa6, 0, 0, 0, b'a', 0]);
            out
        }),
        // Junk.
        ("junk", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ];
    for (what, bytes) in cases {
        let mut s = open(port);
        let mut buf = Vec::new();
        let (_, greeting) = read(&mut s, &mut buf).expect("greeting");
        assert_eq!(greeting[0], 10);
        s.write_all(&bytes).unwrap();
        // Half-close: a client that sent a part of a packet and nothing more.
        let _ = s.shutdown(std::net::Shutdown::Write);
        let started = Instant::now();
        let code = error_then_close(what, &mut s, &mut buf);
        assert!(started.elapsed() < Duration::from_secs(12), "{what}: no close in time");
        if what != "length past what follows" && what != "junk" {
            assert!(code.is_some(), "{what}: no error packet before the close");
        }
    }
    // A client that says nothing is closed at the handshake timeout.
    let mut s = open(port);
    let mut buf = Vec::new();
    read(&mut s, &mut buf).expect("greeting");
    let started = Instant::now();
    error_then_close("silence", &mut s, &mut buf);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_still_serves(&g, port);
}

#[test]
fn hostile_commands_after_login_get_an_error_and_a_close() {
    let (g, port) = start_mysql("", "", "");
    // Each: bytes sent after a good login; whether the session survives.
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "command with sequence id 3",
            {
                let mut out = Vec::new();
                write_message(&mut out, 3, b"\x03SELECT 1");
                out
            },
            false,
        ),
        ("empty command", vec![0, 0, 0, 0], false),
        (
            "unknown command",
            {
                let mut out = Vec::new();
                write_message(&mut out, 0, &[0xee, 1, 2]);
                out
            },
            true,
        ),
        (
            "COM_CHANGE_USER",
            {
                let mut out = Vec::new();
                write_message(&mut out, 0, b"\x11root\0\0test\0");
                out
            },
            true,
        ),
        (
            "COM_STMT_EXECUTE of an id never prepared",
            {
                let mut out = Vec::new();
                write_message(&mut out, 0, &[0x17, 9, 9, 9, 9, 0, 1, 0, 0, 0]);
                out
            },
            true,
        ),
        (
            "COM_STMT_EXECUTE too short",
            {
                let mut out = Vec::new();
                write_message(&mut out, 0, &[0x17, 1]);
                out
            },
            true,
        ),
        (
            "COM_STMT_FETCH without a cursor",
            {
                let mut out = Vec::new();
                write_message(&mut out, 0, &[0x1c, 1, 0, 0, 0, 10, 0, 0, 0]);
                out
            },
            true,
        ),
        (
            "COM_PROCESS_KILL too short",
            {
                let mut out = Vec::new();
                write_message(&mut out, 0, &[0x0c, 1]);
                out
            },
            true,
        ),
        (
            "COM_INIT_DB of another database",
            {
                let mut out = Vec::new();
                write_message(&mut out, 0, b"\x02mysql");
                out
            },
            true,
        ),
        (
            "a packet larger than the header says, then EOF",
            vec![0x20, 0, 0, 0, 3, b'S'],
            false,
        ),
    ];
    for (what, bytes, survives) in cases {
        let (mut s, mut buf) = login(port);
        s.write_all(&bytes).unwrap();
        if survives {
            let (seq, p) = read(&mut s, &mut buf).unwrap_or_else(|| panic!("{what}: closed\n{}", g.log()));
            assert_eq!((seq, p[0]), (1, 0xff), "{what}: {p:?}");
            assert_eq!(query(&mut s, &mut buf, "SELECT 2"), 0xfe, "{what}: the session goes on");
        } else {
            let _ = s.shutdown(std::net::Shutdown::Write);
            error_then_close(what, &mut s, &mut buf);
        }
    }
    assert_still_serves(&g, port);
}

#[test]
fn random_bytes_at_every_stage_never_hurt_gatehouse() {
    let (g, port) = start_mysql("", "", "");
    // A fixed seed: the same inputs each run, as many as a debug build
    // gets through in a few seconds.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..60 {
        let len = (next() % 64) as usize;
        let mut junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let (mut s, mut buf) = if i % 2 == 0 {
            let mut s = open(port);
            let mut buf = Vec::new();
            read(&mut s, &mut buf).expect("greeting");
            (s, buf)
        } else {
            let r = login(port);
            // After login a command must start at sequence 0: make half of
            // them well-framed commands with junk bodies.
            if i % 4 == 1 && junk.len() > 1 {
                let body = junk.split_off(1);
                let mut out = Vec::new();
                write_message(&mut out, 0, &[[junk[0] % 0x20].as_slice(), &body].concat());
                junk = out;
            }
            r
        };
        let _ = s.write_all(&junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        // Whatever comes back is well-framed, and the connection ends.
        let deadline = Instant::now() + Duration::from_secs(12);
        loop {
            match frame(&buf, 1 << 24) {
                Ok(Some(m)) => {
                    buf.drain(..m.wire_len);
                }
                Ok(None) => {
                    let mut chunk = [0u8; 4096];
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                Err(e) => panic!("input {i}: gatehouse sent a malformed packet: {e}"),
            }
            assert!(Instant::now() < deadline, "input {i}: no close in time");
        }
    }
    assert_still_serves(&g, port);
}

/// A client that starts its TLS handshake in the same segment as its SSL
/// request (the protocol has no answer to wait for): the handshake's
/// bytes belong to the TLS session, and the login completes inside it.
#[test]
fn tls_bytes_right_after_the_ssl_request_are_the_tls_session() {
    use rustls::pki_types::pem::PemObject;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(dir.path());
    let tls = format!(
        "\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let (g, port) = start_mysql("", "", &tls);
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let mut tcp = open(port);
    let mut buf = Vec::new();
    read(&mut tcp, &mut buf).expect("greeting");
    let mut ssl_request =
        (caps::PROTOCOL_41 | caps::SSL | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH | caps::CONNECT_WITH_DB)
            .to_le_bytes()
            .to_vec();
    ssl_request.extend_from_slice(&(1u32 << 24).to_le_bytes());
    ssl_request.push(45);
    ssl_request.extend_from_slice(&[0; 23]);
    let mut first = Vec::new();
    write_message(&mut first, 1, &ssl_request);
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), "localhost".try_into().unwrap()).unwrap();
    conn.write_tls(&mut first).unwrap();
    tcp.write_all(&first).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut r = response("agent", Some("test"));
    let with_ssl = u32::from_le_bytes([r[0], r[1], r[2], r[3]]) | caps::SSL;
    r[..4].copy_from_slice(&with_ssl.to_le_bytes());
    let mut out = Vec::new();
    write_message(&mut out, 2, &r);
    s.write_all(&out).unwrap();
    let mut buf = Vec::new();
    let (seq, more) = read(&mut s, &mut buf).unwrap_or_else(|| panic!("closed: {}", g.log()));
    assert_eq!((seq, &more[..]), (3, &[1u8, 4][..]), "perform full authentication");
    let mut pw = TOKEN.as_bytes().to_vec();
    pw.push(0);
    let mut out = Vec::new();
    write_message(&mut out, 4, &pw);
    s.write_all(&out).unwrap();
    let (seq, ok) = read(&mut s, &mut buf).expect("OK");
    assert_eq!((seq, ok[0]), (5, 0), "{ok:?}");
}

/// max_rows counts a cursor's rows over all its COM_STMT_FETCHes: a client
/// cannot read a large result a few rows per fetch past its role's limit.
#[test]
fn max_rows_counts_a_cursors_rows_over_its_fetches() {
    let (g, port) = start_mysql(
        "",
        "",
        "[policy]\ndefault_role = \"agent\"\n[policy.roles.agent]\nread = \"allow\"\nwrite = \"deny\"\ndelete = \"deny\"\nddl = \"deny\"\nadmin = \"deny\"\nunknown = \"deny\"\nmax_rows = 5\n",
    );
    let (mut s, mut buf) = login(port);
    let id = open_cursor(&g, &mut s, &mut buf, b"SELECT seq FROM seq_1_to_20");
    // Fetch 3 rows at a time: the first fetch passes, the second crosses
    // the limit and ends in gatehouse's error.
    let mut rows = 0;
    let mut refused = false;
    for _ in 0..4 {
        let mut p = vec![0x1c];
        p.extend_from_slice(&id);
        p.extend_from_slice(&3u32.to_le_bytes());
        send(&mut s, &p);
        loop {
            let (_, m) = read(&mut s, &mut buf).unwrap();
            if m[0] == 0xff {
                refused = true;
                assert!(String::from_utf8_lossy(&m).contains("limit of 5 rows"), "{m:?}");
                break;
            }
            if m[0] == 0xfe && m.len() < 9 {
                break;
            }
            rows += 1;
        }
        if refused {
            break;
        }
    }
    assert!(refused, "{rows} rows fetched past max_rows = 5");
    assert!(rows <= 5, "{rows} rows reached the client");
}

/// COM_FIELD_LIST sends each column's default value: a secret in one is
/// masked like any value.
#[test]
fn field_list_defaults_are_masked() {
    let table = unique("gh_fl");
    mariadb_direct(&format!(
        "CREATE TABLE {table} (id INT, v VARCHAR(100) DEFAULT 'key AKIAIOSFODNN7EXAMPLE')"
    ));
    let (g, port) = start_mysql("", "", "");
    let (mut s, mut buf) = login(port);
    let mut p = vec![0x04];
    p.extend_from_slice(table.as_bytes());
    p.push(0);
    let mut out = Vec::new();
    write_message(&mut out, 0, &p);
    s.write_all(&out).unwrap();
    let mut defs = Vec::new();
    loop {
        let (_, m) = read(&mut s, &mut buf).unwrap_or_else(|| panic!("closed: {}", g.log()));
        assert_ne!(m[0], 0xff, "{}", String::from_utf8_lossy(&m));
        if m[0] == 0xfe && m.len() < 9 {
            break;
        }
        defs.push(m);
    }
    assert_eq!(defs.len(), 2);
    let all: Vec<u8> = defs.concat();
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains("key ") && !text.contains("AKIAIOSFODNN7EXAMPLE"),
        "{text}"
    );
    // The session goes on: the definitions were framed right.
    assert_eq!(query(&mut s, &mut buf, "SELECT 1"), 0xfe);
    mariadb_direct(&format!("DROP TABLE {table}"));
}

/// A refused COM_STMT_EXECUTE never reaches the server, so the long data
/// and parameter types the server holds for the statement stay as they
/// were: the next execution's review must not show values the server would
/// not run (here the server would take parameter 0 from the long data and
/// read the payload's first value as parameter 1).
#[test]
fn a_refused_execution_cannot_make_the_next_review_lie() {
    let table = unique("gh_desync");
    mariadb_direct(&format!(
        "CREATE TABLE {table} (id INT, v TEXT); INSERT INTO {table} VALUES (42, 'x')"
    ));
    let admin_port = free_port();
    let (g, port) = start_mysql(
        "",
        "",
        &format!(
            "{}\n[policy]\ndefault_role = \"agent\"\n[policy.roles.agent]\nread = \"allow\"\nwrite = \"approve\"\napprovers = [\"approver\"]\napproval_timeout_secs = 30\n",
            admin_section(admin_port)
        ),
    );
    let (mut s, mut buf) = login(port);
    let mut p = vec![0x16];
    p.extend_from_slice(format!("UPDATE {table} SET v = ? WHERE id = ?").as_bytes());
    send(&mut s, &p);
    let (_, ok) = read(&mut s, &mut buf).unwrap();
    assert_eq!(ok[0], 0, "{}", String::from_utf8_lossy(&ok));
    let id = [ok[1], ok[2], ok[3], ok[4]];
    let params = u16::from_le_bytes([ok[7], ok[8]]);
    assert_eq!(params, 2);
    for _ in 0..params + 1 {
        read(&mut s, &mut buf).unwrap();
    }
    // Parameter 0 sent as long data: 'admin'.
    let mut p = vec![0x18];
    p.extend_from_slice(&id);
    p.extend_from_slice(&0u16.to_le_bytes());
    p.extend_from_slice(b"admin");
    send(&mut s, &p);
    // An execution the reviewer denies.
    let execute = |values: &[u8]| {
        let mut p = vec![0x17];
        p.extend_from_slice(&id);
        p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 253, 0, 3, 0]);
        p.extend_from_slice(values);
        p
    };
    let reviewer = decide_next(admin_port, "deny", "no");
    send(&mut s, &execute(&42i32.to_le_bytes()));
    let (_, e) = read(&mut s, &mut buf).unwrap();
    assert_eq!(e[0], 0xff);
    let first: serde_json::Value = serde_json::from_str(&reviewer.join().unwrap()).unwrap();
    assert_eq!(first["params"][0], "(sent with COM_STMT_SEND_LONG_DATA)", "{first}");
    assert_eq!(first["params"][1], "42", "{first}");
    // The next execution carries 'user' and 42 in its payload; the server
    // still has 'admin' as parameter 0. The reviewer must not see 'user'.
    let mut values = vec![4];
    values.extend_from_slice(b"user");
    values.extend_from_slice(&42i32.to_le_bytes());
    let reviewer = decide_next(admin_port, "deny", "no");
    send(&mut s, &execute(&values));
    let (_, e) = read(&mut s, &mut buf).unwrap();
    assert_eq!(e[0], 0xff);
    let second: serde_json::Value = serde_json::from_str(&reviewer.join().unwrap()).unwrap();
    let shown = second["params"].to_string();
    assert!(
        !shown.contains("user"),
        "the review shows a value the server would not run: {second}"
    );
    assert!(shown.contains("unreadable"), "{second}\n{}", g.log());
    assert_eq!(
        mariadb_direct(&format!("SELECT v FROM {table}; DROP TABLE {table}")).trim(),
        "x"
    );
}

/// Rows fetched from a cursor come without column definitions: the
/// recording lists the columns the cursor was opened with, and reads its
/// rows with their flags (an unsigned BIGINT stays unsigned), values
/// masked.
#[test]
fn cursor_fetches_are_recorded_with_their_columns() {
    let (g, port) = start_mysql(
        "",
        "",
        "[recording]\ndir = \"rec\"\nresults = \"full\"\nsync_interval_ms = 50\n",
    );
    let (mut s, mut buf) = login(port);
    let id = open_cursor(
        &g,
        &mut s,
        &mut buf,
        b"SELECT CAST(18446744073709551615 AS UNSIGNED) AS big, CONCAT('key ', 'AKIA', 'IOSFODNN7EXAMPLE') AS k, seq FROM seq_1_to_4",
    );
    let mut rows = 0;
    for _ in 0..2 {
        let mut p = vec![0x1c];
        p.extend_from_slice(&id);
        p.extend_from_slice(&2u32.to_le_bytes());
        send(&mut s, &p);
        loop {
            let (_, m) = read(&mut s, &mut buf).unwrap();
            assert_ne!(m[0], 0xff, "{m:?}");
            if m[0] == 0xfe && m.len() < 9 {
                break;
            }
            assert!(!String::from_utf8_lossy(&m).contains("AKIAIOSFODNN7EXAMPLE"), "{m:?}");
            rows += 1;
        }
    }
    assert_eq!(rows, 4);
    send(&mut s, &[0x01]);
    drop(s);
    let text = sealed_recordings(&g.dir.path().join("rec"));
    assert!(!text.contains("AKIAIOSFODNN7EXAMPLE"), "{text}");
    let fetched: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"kind\":\"result\"") && l.contains("\"columns\":[\"big\",\"k\",\"seq\"]"))
        .collect();
    assert!(
        fetched.len() >= 2,
        "each fetch's result lists the cursor's columns: {text}"
    );
    let rows: Vec<&str> = text.lines().filter(|l| l.contains("\"kind\":\"rows\"")).collect();
    assert!(
        rows.iter().filter(|l| l.contains("\"18446744073709551615\"")).count() >= 2,
        "unsigned values read as unsigned: {text}"
    );
}

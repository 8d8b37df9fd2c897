//! A session's and the process's life: handshake and idle timeouts, the
//! connection limit, SIGTERM drains, SIGHUP reloads, backpressure on slow
//! readers, and the session log lines.

mod common;
mod pgraw;

use common::*;
use pgraw::*;
use std::io::Read;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);
/// A reload compiles the secret rules again: seconds in a debug build.
const RELOAD_WAIT: Duration = Duration::from_secs(60);

/// The harness config on `port` with [server] keys set (replacing the
/// harness's own value of a key where it has one).
fn config_with(port: u16, server: &[(&str, &str)], extra: &str) -> String {
    let mut text = config_text(port, "", extra);
    let mut lines = String::new();
    for (k, v) in server {
        text = text
            .lines()
            .filter(|l| !l.trim_start().starts_with(&format!("{k} =")))
            .collect::<Vec<_>>()
            .join("\n");
        lines.push_str(&format!("{k} = {v}\n"));
    }
    text.replacen("[server]\n", &format!("[server]\n{lines}"), 1)
}

fn start(server: &[(&str, &str)]) -> Gatehouse {
    let port = free_port();
    Gatehouse::start_with(port, &config_with(port, server, ""))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
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

fn wait_exit(g: &mut Gatehouse, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = g.child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn vm_rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[test]
fn handshake_timeout_closes_silent_and_partial_clients() {
    let g = start(&[("handshake_timeout_secs", "1")]);
    // Connects and says nothing.
    let t = Instant::now();
    let mut silent = Raw::connect(g.port);
    let (frames, closed) = silent.until_closed(WAIT);
    assert!(closed, "a silent client must be closed");
    assert!(t.elapsed() < Duration::from_secs(3), "closed after {:?}", t.elapsed());
    if let Some((code, _)) = first_error(&frames) {
        assert_eq!(code, "08P01");
    }
    // Sends half a startup packet.
    let t = Instant::now();
    let mut partial = Raw::connect(g.port);
    partial
        .send(&startup(&[("user", "agent"), ("database", "postgres")])[..12])
        .expect("send");
    let (frames, closed) = partial.until_closed(WAIT);
    assert!(closed, "a client stuck in its startup must be closed");
    assert!(t.elapsed() < Duration::from_secs(3), "closed after {:?}", t.elapsed());
    let (code, msg) = first_error(&frames).unwrap_or_else(|| panic!("no error: {frames:?}"));
    assert_eq!(code, "08P01", "{msg}");
    // Logs in without a password for too long.
    let mut slow = Raw::connect(g.port);
    slow.send(&startup(&[("user", "agent"), ("database", "postgres")]))
        .expect("send");
    let (frames, closed) = slow.until_closed(WAIT);
    assert!(closed);
    assert_eq!(frames.first().map(|f| f.0), Some(b'R'), "{frames:?}");
    assert_eq!(first_error(&frames).map(|e| e.0), Some("08P01".into()), "{frames:?}");
    // A prompt client is unaffected.
    let (ok, out, err) = psql(&g, "postgres", &["-c", "select 1"]);
    assert!(ok && out.trim() == "1", "{err}");
}

#[test]
fn idle_sessions_end_with_57p05_and_busy_ones_stay() {
    let g = start(&[("idle_timeout_secs", "2")]);
    let mut idle = login(&g, "gh-idle");
    let mut busy = login(&g, "gh-busy");
    assert_eq!(first_value(&idle.simple("select 1")), Some("1".into()));
    // The busy session runs a query every 300 ms for 4 s.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(4) {
        assert_eq!(
            first_value(&busy.simple("select 2")),
            Some("2".into()),
            "the busy session must stay"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (frames, closed) = idle.until_closed(WAIT);
    let (code, msg) = first_error(&frames).unwrap_or_else(|| panic!("no error for the idle session: {frames:?}"));
    assert_eq!(code, "57P05", "{msg}");
    assert!(closed, "the idle session must be closed");
    g.wait_log_line("idle-timeout", WAIT, |l| l.contains("idle-timeout"));
}

#[test]
fn connection_limit_refuses_the_fourth_session() {
    let g = start(&[("max_connections", "3")]);
    let info = g.conninfo("postgres");
    rt().block_on(async move {
        let mut clients = Vec::new();
        for _ in 0..3 {
            let (c, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls)
                .await
                .expect("one of the first three sessions");
            tokio::spawn(conn);
            c.simple_query("select 1").await.expect("query");
            clients.push(c);
        }
        let e = match tokio_postgres::connect(&info, tokio_postgres::NoTls).await {
            Ok(_) => panic!("a fourth session must be refused"),
            Err(e) => e,
        };
        let db = e
            .as_db_error()
            .unwrap_or_else(|| panic!("expected an ErrorResponse, got {e}"));
        assert_eq!(db.code().code(), "53300", "{db}");
        assert!(db.message().contains("too many clients"), "{db}");
        // Once one leaves, there is room again.
        clients.pop();
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio_postgres::connect(&info, tokio_postgres::NoTls).await {
                Ok((c, conn)) => {
                    tokio::spawn(conn);
                    c.simple_query("select 1").await.expect("query");
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("no room after a session left: {e}"),
            }
        }
    });
}

#[test]
fn sigterm_drains_open_sessions_and_exits_zero() {
    let mut g = start(&[("shutdown_timeout_secs", "20")]);
    let mut s = login(&g, "gh-drain");
    assert_eq!(first_value(&s.simple("select 1")), Some("1".into()));
    g.signal(libc::SIGTERM);
    g.wait_log_line("draining", WAIT, |l| l.contains("draining"));
    // New connections are refused: no connect, or an error before login.
    match std::net::TcpStream::connect(("127.0.0.1", g.port)) {
        Err(e) => eprintln!("connect while draining: {e}"),
        Ok(s) => {
            let mut c = Raw::from_stream(s);
            let _ = c.send(&startup(&[("user", "agent"), ("database", "postgres")]));
            let (frames, closed) = c.until_closed(WAIT);
            eprintln!("connect while draining: {:?}", first_error(&frames));
            if let Some((code, _)) = first_error(&frames) {
                assert_eq!(code, "57P03", "{frames:?}");
            } else {
                assert!(
                    closed && frames.is_empty(),
                    "a new session was served while draining: {frames:?}"
                );
            }
        }
    }
    // The open session still works.
    for i in 0..3 {
        assert_eq!(first_value(&s.simple(&format!("select {i}"))), Some(i.to_string()));
    }
    assert!(
        wait_exit(&mut g, Duration::from_millis(500)).is_none(),
        "exited with a session open"
    );
    s.send(&frame(b'X', b"")).expect("terminate");
    drop(s);
    let st = wait_exit(&mut g, WAIT).unwrap_or_else(|| panic!("no exit after the last session; log:\n{}", g.log()));
    assert!(st.success(), "exit status {st}; log:\n{}", g.log());
    assert!(g.log().contains("gatehouse stopped"), "log:\n{}", g.log());
}

#[test]
fn sigterm_deadline_ends_sessions_with_57p01() {
    let mut g = start(&[("shutdown_timeout_secs", "2")]);
    let mut s = login(&g, "gh-deadline");
    assert_eq!(first_value(&s.simple("select 1")), Some("1".into()));
    let t = Instant::now();
    g.signal(libc::SIGTERM);
    let (frames, closed) = s.until_closed(Duration::from_secs(15));
    let (code, msg) = first_error(&frames).unwrap_or_else(|| panic!("no error: {frames:?}\n{}", g.log()));
    assert_eq!(code, "57P01", "{msg}");
    assert!(closed);
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "ended before the deadline: {:?}",
        t.elapsed()
    );
    let st = wait_exit(&mut g, Duration::from_secs(15)).unwrap_or_else(|| panic!("no exit; log:\n{}", g.log()));
    assert!(st.success(), "exit status {st}; log:\n{}", g.log());
    assert!(g.log().contains("end=\"shutdown\""), "log:\n{}", g.log());
}

#[test]
fn sighup_reloads_identities_and_refuses_invalid_config() {
    let port = free_port();
    let g = Gatehouse::start_with(port, &config_with(port, &[], ""));
    let mut open = login(&g, "gh-reload");
    const TOKEN2: &str = "second-token-9876543210";
    let try_second = || {
        Raw::login(port, &[("user", "agent2"), ("database", "postgres")], TOKEN2).map(|(mut c, _)| {
            let v = first_value(&c.simple("select 'second'"));
            c.send(&frame(b'X', b"")).ok();
            v
        })
    };
    let e = try_second().expect_err("agent2 must not log in before the reload");
    assert_eq!(sqlstate(&e), "28P01");

    let extra = format!(
        "[[identity]]\nname = \"agent2\"\ntoken_hash = \"{}\"\ntargets = [\"postgres\"]\n",
        token_hash(TOKEN2)
    );
    let good = config_with(port, &[], &extra);
    std::fs::write(&g.config_path, &good).expect("rewrite config");
    g.signal(libc::SIGHUP);
    g.wait_log_line("configuration reloaded", RELOAD_WAIT, |l| {
        l.contains("configuration reloaded")
    });
    assert_eq!(try_second(), Ok(Some("second".into())));
    assert_eq!(
        first_value(&open.simple("select 'still here'")),
        Some("still here".into())
    );

    // An invalid file is refused; the running configuration keeps serving.
    std::fs::write(&g.config_path, format!("{good}\n[server]\nnot valid = = toml\n")).expect("rewrite config");
    g.signal(libc::SIGHUP);
    g.wait_log_line("reload refused", RELOAD_WAIT, |l| l.contains("reload refused"));
    let log = g.log();
    let line = log.lines().find(|l| l.contains("reload refused")).unwrap_or("");
    assert!(
        line.contains("gatehouse.toml"),
        "the refusal should name the file: {line}"
    );
    assert_eq!(try_second(), Ok(Some("second".into())));
    assert_eq!(
        first_value(&open.simple("select 'still here'")),
        Some("still here".into())
    );
    let (ok, _, err) = psql(&g, "postgres", &["-c", "select 1"]);
    assert!(ok, "{err}");
    assert!(alive(g.pid()));
    assert!(
        !g.log().contains(TOKEN2) && !g.log().contains(TOKEN),
        "a token reached the log"
    );
}

/// A reload ends, with 57P01 and the reason, the sessions of an identity
/// it removed, whose token it changed or that may no longer reach the
/// session's target; the others go on.
#[test]
fn a_reload_ends_sessions_whose_identity_no_longer_holds() {
    let port = free_port();
    const T2: &str = "second-token-9876543210";
    const T3: &str = "third-token-0123498765";
    const T4: &str = "fourth-token-5647382910";
    let ids = |t2: &str, t3_targets: &str, with4: bool| {
        let mut s = format!(
            "[[identity]]\nname = \"agent2\"\ntoken_hash = \"{}\"\ntargets = [\"postgres\"]\n\
             [[identity]]\nname = \"agent3\"\ntoken_hash = \"{}\"\ntargets = {t3_targets}\n",
            token_hash(t2),
            token_hash(T3)
        );
        if with4 {
            s.push_str(&format!(
                "[[identity]]\nname = \"agent4\"\ntoken_hash = \"{}\"\ntargets = [\"*\"]\n",
                token_hash(T4)
            ));
        }
        s
    };
    let g = Gatehouse::start_with(
        port,
        &config_with(port, &[], &ids(T2, "[\"postgres\", \"test\"]", true)),
    );
    let open = |user: &str, pw: &str| {
        let (mut c, _) = Raw::login(port, &[("user", user), ("database", "postgres")], pw)
            .unwrap_or_else(|e| panic!("{user}: {e:?}"));
        assert_eq!(first_value(&c.simple("select 1")), Some("1".into()));
        c
    };
    let mut kept = open("agent", TOKEN);
    let mut new_token = open("agent2", T2);
    let mut lost_reach = open("agent3", T3);
    let mut removed = open("agent4", T4);
    // agent2's token changes, agent3 keeps only `test`, agent4 is gone.
    std::fs::write(
        &g.config_path,
        config_with(port, &[], &ids("a-new-token-1111222233", "[\"test\"]", false)),
    )
    .unwrap();
    g.signal(libc::SIGHUP);
    g.wait_log_line("configuration reloaded", RELOAD_WAIT, |l| {
        l.contains("configuration reloaded")
    });
    for (who, c) in [
        ("agent2", &mut new_token),
        ("agent3", &mut lost_reach),
        ("agent4", &mut removed),
    ] {
        let (frames, closed) = c.until_closed(WAIT);
        let (code, msg) = first_error(&frames).unwrap_or_else(|| panic!("{who}: no error: {frames:?}"));
        assert_eq!(code, "57P01", "{who}: {msg}");
        assert!(msg.contains("reload"), "{who}: {msg}");
        assert!(closed, "{who}'s session must be closed");
    }
    assert_eq!(first_value(&kept.simple("select 'kept'")), Some("kept".into()));
    g.wait_log_line("end=\"revoked\"", WAIT, |l| l.contains("end=\"revoked\""));
    // agent3 still reaches `test`.
    let (mut c, _) = Raw::login(port, &[("user", "agent3"), ("database", "test")], T3).expect("agent3 on test");
    assert_eq!(first_value(&c.simple("select 3")), Some("3".into()));
}

/// Reads ~1 GB of rows slowly for ~10 s while sampling gatehouse's VmRSS;
/// returns (RSS before, highest RSS seen, bytes read), in KiB and bytes.
fn slow_read(g: &Gatehouse, app: &str) -> (u64, u64, usize) {
    let pid = g.pid();
    let mut c = login(g, app);
    assert_eq!(first_value(&c.simple("select 1")), Some("1".into()));
    let before = vm_rss_kib(pid);
    c.send(&query("select repeat('x', 1000) from generate_series(1, 1000000)"))
        .expect("send query");
    c.s.set_read_timeout(Some(WAIT)).ok();
    let mut buf = vec![0u8; 8192];
    let mut got = 0usize;
    let mut max_rss = before;
    let t = Instant::now();
    let mut last_sample = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        let n = c.s.read(&mut buf).expect("read the result");
        assert!(n > 0, "the result ended early after {got} bytes");
        got += n;
        std::thread::sleep(Duration::from_millis(5));
        if last_sample.elapsed() >= Duration::from_millis(250) {
            max_rss = max_rss.max(vm_rss_kib(pid));
            last_sample = Instant::now();
        }
    }
    max_rss = max_rss.max(vm_rss_kib(pid));
    eprintln!("slow reader ({app}): {got} bytes read; gatehouse VmRSS {before} KiB before, {max_rss} KiB at most");
    assert!(got > 1 << 20, "the reader should have made progress: {got} bytes");
    assert!(got < 900 << 20, "the reader was not slow: {got} bytes");
    drop(c);
    let (ok, out, err) = psql(g, "postgres", &["-c", "select 1"]);
    assert!(ok && out.trim() == "1", "{err}");
    (before, max_rss, got)
}

/// The relay alone (secret scanning off): the whole process stays under
/// 64 MiB while a client reads a 1 GB result slowly.
#[test]
fn slow_reader_does_not_grow_memory() {
    let port = free_port();
    let g = Gatehouse::start_with(port, &config_with(port, &[], "[scan]\nenabled = false\n"));
    let (before, max_rss, _) = slow_read(&g, "gh-slow-reader");
    assert!(
        max_rss < 64 * 1024,
        "gatehouse grew to {max_rss} KiB while a client read slowly (from {before} KiB)"
    );
}

/// With secret scanning on (the default), the compiled rules make the
/// starting size larger; what matters is that it does not grow with the
/// result.
#[test]
fn slow_reader_with_scanning_does_not_grow_memory() {
    let g = start(&[]);
    let (before, max_rss, _) = slow_read(&g, "gh-slow-reader-scan");
    assert!(
        max_rss < before + 16 * 1024,
        "gatehouse grew from {before} KiB to {max_rss} KiB while a client read slowly"
    );
}

/// The value of `key=` in a log line (up to the next space).
fn field_of<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!(" {key}=");
    let at = line.find(&pat)? + pat.len();
    Some(line[at..].split(' ').next().unwrap_or("").trim_matches('"'))
}

#[test]
fn one_open_and_one_close_line_per_session() {
    let g = start(&[]);
    let (ok, _, err) = psql(&g, "postgres", &["-c", "select 1"]);
    assert!(ok, "{err}");
    let (ok, _, err) = psql(&g, "postgres", &["-c", "select 1", "-c", "select 2"]);
    assert!(ok, "{err}");
    let mut c = login(&g, "gh-log");
    c.simple("select 1");
    c.simple("select 2");
    c.simple("select 3");
    drop(c); // no Terminate: a client that just goes away
             // A refused login is not a session.
    let e = Raw::login(g.port, &[("user", "agent"), ("database", "postgres")], "wrong-token").expect_err("wrong token");
    assert_eq!(sqlstate(&e), "28P01");

    let deadline = Instant::now() + WAIT;
    while g.log().matches("session close").count() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let log = g.log();
    let opens: Vec<&str> = log.lines().filter(|l| l.contains("session open")).collect();
    let closes: Vec<&str> = log.lines().filter(|l| l.contains("session close")).collect();
    assert_eq!(opens.len(), 3, "log:\n{log}");
    assert_eq!(closes.len(), 3, "log:\n{log}");
    let mut open_ids: Vec<&str> = opens.iter().filter_map(|l| field_of(l, "session")).collect();
    let mut close_ids: Vec<&str> = closes.iter().filter_map(|l| field_of(l, "session")).collect();
    open_ids.sort();
    close_ids.sort();
    assert_eq!(open_ids, close_ids, "each session opens and closes once:\n{log}");
    for l in &opens {
        assert_eq!(field_of(l, "identity"), Some("agent"), "{l}");
        assert_eq!(field_of(l, "target"), Some("postgres"), "{l}");
        assert!(
            field_of(l, "client").is_some_and(|c| c.starts_with("127.0.0.1:")),
            "{l}"
        );
    }
    let mut statements = Vec::new();
    for l in &closes {
        assert_eq!(field_of(l, "identity"), Some("agent"), "{l}");
        assert_eq!(field_of(l, "target"), Some("postgres"), "{l}");
        assert!(
            field_of(l, "client").is_some_and(|c| c.starts_with("127.0.0.1:")),
            "{l}"
        );
        for k in ["bytes_in", "bytes_out", "duration_ms"] {
            let v: u64 = field_of(l, k)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {l}"));
            if k != "duration_ms" {
                assert!(v > 0, "{k} is 0 in {l}");
            }
        }
        statements.push(
            field_of(l, "statements")
                .and_then(|v| v.parse::<u64>().ok())
                .expect("statements"),
        );
        let end = field_of(l, "end").unwrap_or("");
        assert!(
            matches!(end, "client-terminate" | "client-disconnect"),
            "unexpected end reason {end:?} in {l}"
        );
    }
    statements.sort();
    assert_eq!(statements, vec![1, 2, 3], "statements per session:\n{log}");
    assert!(
        closes.iter().any(|l| field_of(l, "end") == Some("client-disconnect")),
        "{log}"
    );
    assert!(
        closes.iter().any(|l| field_of(l, "end") == Some("client-terminate")),
        "{log}"
    );
    assert!(log.contains("session refused"), "{log}");
    assert!(
        !log.contains(TOKEN) && !log.contains("wrong-token"),
        "a token reached the log:\n{log}"
    );
}

fn try_login(g: &Gatehouse, user: &str, token: &str) -> Result<Raw, (String, String)> {
    Raw::login(g.port, &[("user", user), ("database", "postgres")], token)
        .map(|(c, _)| c)
        .map_err(|e| first_error(&[(b'E', e)]).unwrap_or_default())
}

/// One identity cannot take every session: past
/// `max_sessions_per_identity` its logins get 53300 naming the limit,
/// another identity still gets in, and a session that ends gives its
/// place back.
#[test]
fn sessions_per_identity_are_bounded() {
    let port = free_port();
    let other = format!(
        "[[identity]]\nname = \"other\"\ntoken_hash = \"{}\"\ntargets = [\"*\"]\n",
        token_hash("other-token-0123456789")
    );
    let g = Gatehouse::start_with(port, &config_with(port, &[("max_sessions_per_identity", "2")], &other));
    let a = try_login(&g, "agent", TOKEN).unwrap();
    let mut b = try_login(&g, "agent", TOKEN).unwrap();
    let (code, msg) = try_login(&g, "agent", TOKEN).map(|_| ()).unwrap_err();
    assert_eq!(code, "53300", "{msg}");
    assert!(
        msg.contains("max_sessions_per_identity = 2") && msg.contains("\"agent\""),
        "{msg}"
    );
    let mut o = try_login(&g, "other", "other-token-0123456789").expect("another identity gets in");
    assert_eq!(first_value(&o.simple("select 1")), Some("1".into()));
    assert_eq!(first_value(&b.simple("select 2")), Some("2".into()));
    drop(a);
    let deadline = Instant::now() + WAIT;
    loop {
        match try_login(&g, "agent", TOKEN) {
            Ok(mut c) => {
                assert_eq!(first_value(&c.simple("select 3")), Some("3".into()));
                break;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("no place after a session ended: {e:?}"),
        }
    }
}

/// Connections in their handshake are counted apart from logged-in
/// sessions: ones that never finish their startup do not take the places
/// of agents that log in, and past `max_handshakes` a new connection is
/// refused at once with 53300.
#[test]
fn stalled_handshakes_do_not_take_the_places_of_sessions() {
    let g = start(&[("max_connections", "1"), ("max_handshakes", "3")]);
    // Two connections that send nothing (a slowloris).
    let stalled: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", g.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut s = try_login(&g, "agent", TOKEN).expect("the one session's place is free");
    assert_eq!(first_value(&s.simple("select 1")), Some("1".into()));
    // The place is taken now: a second login is refused after its
    // handshake, as over max_connections.
    let (code, msg) = try_login(&g, "agent", TOKEN).map(|_| ()).unwrap_err();
    assert_eq!(code, "53300", "{msg}");
    assert!(msg.contains("too many clients"), "{msg}");
    // A third stalled connection fills the handshakes: the next is refused
    // before its login, saying why.
    let third = std::net::TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (code, msg) = try_login(&g, "agent", TOKEN).map(|_| ()).unwrap_err();
    assert_eq!(code, "53300", "{msg}");
    assert!(msg.contains("max_handshakes"), "{msg}");
    drop((stalled, third));
}

/// The text of a session's named prepared statements, which gatehouse
/// keeps to decide their executions, is bounded: past
/// `max_prepared_statement_bytes` a Parse gets 54000, and closing
/// statements makes room again.
#[test]
fn prepared_statement_text_is_bounded_per_session() {
    let g = start(&[("max_prepared_statement_bytes", "65536")]);
    let info = g.conninfo("postgres");
    rt().block_on(async move {
        let (c, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let text = |i: usize| format!("select {i} as n, '{}' as pad", "x".repeat(10_000));
        let mut kept = Vec::new();
        let mut refused = None;
        for i in 0..20 {
            match c.prepare(&text(i)).await {
                Ok(s) => kept.push(s),
                Err(e) => {
                    refused = Some((i, e));
                    break;
                }
            }
        }
        let (i, e) = refused.expect("a Parse past the limit is refused");
        assert!((5..=7).contains(&i), "refused at statement {i}");
        let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
        assert_eq!(db.code().code(), "54000", "{db}");
        assert!(db.message().contains("max_prepared_statement_bytes"), "{db}");
        // The session goes on, and closing statements makes room.
        let n: i32 = c.query_one(&kept[0], &[]).await.unwrap().get(0);
        assert_eq!(n, 0);
        kept.clear();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let s = c
            .prepare(&text(99))
            .await
            .expect("room after the statements were closed");
        let n: i32 = c.query_one(&s, &[]).await.unwrap().get(0);
        assert_eq!(n, 99);
    });
}

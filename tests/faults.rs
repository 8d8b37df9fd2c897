//! Fault injection: the upstream killed or stalled in the middle of a
//! result, a COPY or a transaction; the client vanishing in the middle of
//! a result and while its statement is held; gatehouse itself killed with
//! SIGKILL under load. After each: gatehouse did not panic, the client got
//! a clear error (or nothing, when it is the one gone), nothing the client
//! was told was applied is missing and nothing it was not told is there,
//! the recordings verify with their signatures, and the metrics and the
//! log say what happened. (A full recordings disk: `tests/evidence.rs`.)

mod common;
mod pgraw;

use common::*;
use pgraw::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

fn direct_psql(sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-At", "-h", PG_HOST, "-U", "postgres", "-d", "postgres"])
        .arg("-p")
        .arg(PG_PORT.to_string())
        .env("PGSSLMODE", "disable")
        .args(["-c", sql])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Terminates the upstream backend running a statement that contains
/// `marker` (or, with `idle`, the one whose last statement did); returns
/// how many it terminated.
fn terminate_backend(marker: &str) -> usize {
    let n = direct_psql(&format!(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity \
         where query like '%{marker}%' and pid <> pg_backend_pid()) t"
    ));
    n.parse().unwrap_or(0)
}

/// Waits until no backend runs (or last ran) a statement with `marker`.
fn wait_backend_gone(marker: &str, what: &str) {
    let started = Instant::now();
    let deadline = started + WAIT;
    loop {
        let n = direct_psql(&format!(
            "select count(*) from pg_stat_activity where query like '%{marker}%' and pid <> pg_backend_pid()"
        ));
        if n == "0" {
            eprintln!("{what}: the upstream backend was gone after {:?}", started.elapsed());
            return;
        }
        assert!(Instant::now() < deadline, "{what}: the upstream backend is still there");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The gateway is alive and serves a fresh session.
fn assert_serving(g: &Gatehouse) {
    assert!(alive(g.pid()), "gatehouse died; log:\n{}", g.log());
    let (ok, out, err) = psql(g, "postgres", &["-c", "select 40 + 2"]);
    assert!(
        ok && out.trim() == "42",
        "gatehouse stopped serving: {err}\n{}",
        g.log()
    );
    assert!(!g.log().contains("panicked"), "a panic in the log:\n{}", g.log());
}

/// The value of a counter on `/metrics` (0 when absent).
fn metric(admin_port: u16, name: &str) -> u64 {
    let (st, body) = http(admin_port, "GET", "/metrics", ADMIN, "");
    assert_eq!(st, 200, "{body}");
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn login(g: &Gatehouse, database: &str, app: &str) -> Raw {
    let (c, _) = Raw::login(
        g.port,
        &[("user", "agent"), ("database", database), ("application_name", app)],
        TOKEN,
    )
    .unwrap_or_else(|e| panic!("login: {:?}\n{}", first_error(&[(b'E', e)]), g.log()));
    c
}

/// Reads at least `n` bytes of whatever the server sends.
fn read_at_least(s: &mut TcpStream, n: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    s.set_read_timeout(Some(WAIT)).unwrap();
    while got < n {
        let k = s.read(&mut buf).expect("read the result");
        assert!(k > 0, "closed after {got} bytes");
        got += k;
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn unique_table(prefix: &str) -> String {
    let t = unique(prefix);
    direct_psql(&format!(
        "drop table if exists {t}; create table {t} (id int, note text)"
    ));
    t
}

/// A TCP relay between gatehouse and the PostgreSQL on this machine that
/// the test can stall: stalled connections stop passing the server's bytes
/// on (the network went quiet without closing anything).
struct Relay {
    port: u16,
    conns: Arc<Mutex<Vec<RelayConn>>>,
}

#[derive(Clone)]
struct RelayConn {
    stalled: Arc<AtomicBool>,
    /// The side that faces gatehouse, to see when gatehouse closes it.
    closed_by_gateway: Arc<AtomicBool>,
    down: Arc<TcpStream>,
    up: Arc<TcpStream>,
}

impl Relay {
    fn start() -> Relay {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the relay");
        let conns: Arc<Mutex<Vec<RelayConn>>> = Arc::default();
        let list = conns.clone();
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { return };
                let Ok(up) = TcpStream::connect((PG_HOST, PG_PORT)) else {
                    continue;
                };
                let c = RelayConn {
                    stalled: Arc::default(),
                    closed_by_gateway: Arc::default(),
                    down: Arc::new(down.try_clone().unwrap()),
                    up: Arc::new(up.try_clone().unwrap()),
                };
                list.lock().unwrap().push(c.clone());
                // gatehouse → server
                let (mut from, mut to, gone) = (
                    down.try_clone().unwrap(),
                    up.try_clone().unwrap(),
                    c.closed_by_gateway.clone(),
                );
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    gone.store(true, Ordering::SeqCst);
                    let _ = to.shutdown(Shutdown::Write);
                });
                // server → gatehouse, unless stalled
                let (mut from, mut to, stalled) = (up, down, c.stalled.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        while stalled.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                });
            }
        });
        Relay { port, conns }
    }

    /// Stalls every connection open now.
    fn stall(&self) -> Vec<RelayConn> {
        let list = self.conns.lock().unwrap().clone();
        for c in &list {
            c.stalled.store(true, Ordering::SeqCst);
        }
        list
    }
}

impl RelayConn {
    fn release(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }

    fn close_both(&self) {
        let _ = self.down.shutdown(Shutdown::Both);
        let _ = self.up.shutdown(Shutdown::Both);
    }
}

/// A target `stalling` (upstream database postgres) reached through `relay`.
fn stalling_target(relay: &Relay) -> String {
    format!(
        "[[target]]\nname = \"stalling\"\ndatabase = \"stalling\"\nupstream_database = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ntls = \"disable\"\n",
        relay.port
    )
}

/// An upstream that goes quiet in the middle of a result holds only its
/// own session: others keep being served, an administrator can end it
/// (the client gets 57P01 at once, the upstream connection is closed), and
/// a client that gives up on it ends it too.
#[test]
fn a_stalled_upstream_holds_only_its_own_session() {
    let relay = Relay::start();
    let admin_port = free_port();
    let g = Gatehouse::start(
        "",
        &format!("{}\n{}", stalling_target(&relay), admin_section(admin_port)),
    );
    let sql = "select g, repeat('x', 200) from generate_series(1, 20000000) g";

    for (round, ending) in ["admin kill", "client gone"].into_iter().enumerate() {
        let mut a = login(&g, "stalling", &format!("gh-stall-{round}"));
        a.send(&query(sql)).unwrap();
        read_at_least(&mut a.s, 1 << 20);
        let stalled = relay.stall();
        // What was in flight drains; then nothing more comes.
        let mut buf = vec![0u8; 64 * 1024];
        a.s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let quiet = loop {
            match a.s.read(&mut buf) {
                Ok(n) if n > 0 => continue,
                Ok(_) => panic!("{ending}: closed while stalled"),
                Err(_) => break true,
            }
        };
        assert!(quiet);
        // Others are served meanwhile, on the same workers.
        for _ in 0..4 {
            assert_serving(&g);
        }
        let c = stalled.last().unwrap().clone();
        let t = Instant::now();
        match ending {
            "admin kill" => {
                let (st, body) = http(admin_port, "GET", "/api/v1/sessions", ADMIN, "");
                assert_eq!(st, 200);
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let id = v["sessions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["target"] == "stalling")
                    .map(|s| s["id"].as_str().unwrap().to_string())
                    .expect("the stalled session is listed");
                let (st, body) = http(admin_port, "POST", &format!("/api/v1/sessions/{id}/kill"), ADMIN, "");
                assert_eq!(st, 200, "{body}");
                // The rest of the client's buffer may hold rows; then the
                // error, then the close.
                a.s.set_read_timeout(Some(WAIT)).unwrap();
                let mut tail = Vec::new();
                loop {
                    match a.s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            tail.extend_from_slice(&buf[..n]);
                            if tail.len() > 8 << 20 {
                                tail.drain(..tail.len() - 4096);
                            }
                        }
                    }
                }
                assert!(t.elapsed() < Duration::from_secs(5), "the kill took {:?}", t.elapsed());
                assert!(contains(&tail, b"57P01"), "the client is told it was ended (57P01)");
            }
            _ => {
                drop(a);
            }
        }
        wait_for(
            &format!("{ending}: gatehouse closing its upstream connection"),
            WAIT,
            || c.closed_by_gateway.load(Ordering::SeqCst),
        );
        c.release();
        c.close_both();
    }
    wait_for("both sessions' close lines", WAIT, || {
        let log = g.log();
        log.contains("end=\"killed\"") && log.contains("end=\"client-disconnect\"")
    });
    assert_eq!(
        metric(admin_port, "gatehouse_sessions_ended_total{reason=\"killed\"}"),
        1
    );
    assert!(
        metric(
            admin_port,
            "gatehouse_sessions_ended_total{reason=\"client-disconnect\"}"
        ) >= 1
    );
    assert_serving(&g);
}

/// The upstream killed with a transaction open: the client's COMMIT fails
/// with a clear error (gatehouse never sends it to another connection,
/// which would answer an empty COMMIT) and nothing of the transaction is
/// in the table. Then the same for a session that pools its upstream.
#[test]
fn an_upstream_killed_mid_transaction_commits_nothing() {
    for extra_target in ["", "pool_size = 4\n"] {
        let cfg_targets = format!(
            "[[target]]\nname = \"pooled\"\ndatabase = \"pooled\"\nupstream_database = \"postgres\"\nhost = \"{PG_HOST}\"\nport = {PG_PORT}\nuser = \"postgres\"\ntls = \"disable\"\n{extra_target}"
        );
        let admin_port = free_port();
        let g = Gatehouse::start("", &format!("{cfg_targets}\n{}", admin_section(admin_port)));
        let t = unique_table("gh_fault_tx");
        let marker = unique("gh_tx_marker");
        let info = g.conninfo("pooled");
        let result = rt().block_on(async {
            let (c, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls).await.unwrap();
            let conn = tokio::spawn(conn);
            c.batch_execute("begin").await.unwrap();
            c.batch_execute(&format!(
                "insert into {t} select g, '{marker}' from generate_series(1, 100) g"
            ))
            .await
            .unwrap();
            assert_eq!(terminate_backend(&marker), 1, "one backend holds the transaction");
            let commit = c.batch_execute("commit").await;
            // A second statement on the same client must not succeed either.
            let after = c.simple_query("select 1").await;
            drop(c);
            let _ = conn.await;
            (commit, after.is_err())
        });
        let (commit, after_failed) = result;
        let e = commit.expect_err("COMMIT after the upstream died must fail");
        let c = e.code().map(|c| c.code().to_string());
        assert!(
            c.as_deref() == Some("08006") || c.as_deref() == Some("57P01") || e.is_closed(),
            "COMMIT failed without a clear cause: {e:?}"
        );
        assert!(after_failed, "the session goes on after its upstream died");
        assert_eq!(
            direct_psql(&format!("select count(*) from {t}")),
            "0",
            "half a transaction applied"
        );
        g.wait_log_line("upstream-lost close line", LOG_WAIT, |l| {
            l.contains("end=\"upstream-lost\"")
        });
        assert_eq!(
            metric(admin_port, "gatehouse_sessions_ended_total{reason=\"upstream-lost\"}"),
            1
        );
        assert_serving(&g);
        direct_psql(&format!("drop table {t}"));
    }
}

/// The upstream killed in the middle of COPY FROM STDIN: the client's COPY
/// fails, no row is in the table. In the middle of COPY TO STDOUT: the
/// stream ends in an error, never as if the data were complete.
#[test]
fn an_upstream_killed_mid_copy_fails_the_copy() {
    use futures::{SinkExt, StreamExt};
    let g = Gatehouse::start("", "");
    let t = unique_table("gh_fault_copy");
    let marker = unique("gh_copy_marker");
    let info = g.conninfo("postgres");
    rt().block_on(async {
        // COPY in.
        let (c, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls).await.unwrap();
        let conn = tokio::spawn(conn);
        let sink = c
            .copy_in::<_, bytes::Bytes>(&format!("copy {t} (id, note) from stdin /* {marker} */"))
            .await
            .unwrap();
        futures::pin_mut!(sink);
        let chunk: String = (0..1000).map(|i| format!("{i}\trow {i}\n")).collect();
        for _ in 0..20 {
            sink.send(bytes::Bytes::from(chunk.clone())).await.unwrap();
        }
        assert_eq!(terminate_backend(&marker), 1);
        let mut failed = false;
        for _ in 0..200 {
            if sink.send(bytes::Bytes::from(chunk.clone())).await.is_err() {
                failed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !failed {
            failed = sink.finish().await.is_err();
        }
        assert!(failed, "COPY FROM STDIN reported success after its upstream died");
        drop(c);
        let _ = conn.await;

        // COPY out.
        let (c, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls).await.unwrap();
        let conn = tokio::spawn(conn);
        let stream = c
            .copy_out(&format!(
                "copy (select g, repeat('y', 100) from generate_series(1, 20000000) g) to stdout /* {marker}_out */"
            ))
            .await
            .unwrap();
        futures::pin_mut!(stream);
        let mut bytes = 0usize;
        while bytes < 1 << 20 {
            bytes += stream.next().await.expect("data").expect("copy data").len();
        }
        assert_eq!(terminate_backend(&format!("{marker}_out")), 1);
        let end = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match stream.next().await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Some(e),
                    None => return None,
                }
            }
        })
        .await
        .expect("the COPY stream hung after its upstream died");
        let e = end.expect("COPY TO STDOUT ended as if complete after its upstream died");
        eprintln!("COPY out after the kill: {e:?}");
        drop(c);
        let _ = conn.await;
    });
    assert_eq!(
        direct_psql(&format!("select count(*) from {t}")),
        "0",
        "a COPY half applied"
    );
    assert_serving(&g);
    direct_psql(&format!("drop table {t}"));
}

/// A client that vanishes in the middle of a large result (a plain close,
/// and a reset): its upstream query stops and its connection is closed,
/// the session ends as a disconnect, the recording is sealed.
#[test]
fn a_client_vanishing_mid_result_stops_its_upstream_query() {
    let admin_port = free_port();
    let g = Gatehouse::start(
        "",
        &format!(
            "{}\n[recording]\ndir = \"rec\"\nresults = \"summary\"\n",
            admin_section(admin_port)
        ),
    );
    for rude in [false, true] {
        let marker = unique("gh_vanish");
        let mut a = login(&g, "postgres", &marker);
        a.send(&query(&format!(
            "select g, repeat('z', 200) from generate_series(1, 50000000) g /* {marker} */"
        )))
        .unwrap();
        read_at_least(&mut a.s, 2 << 20);
        if rude {
            // SO_LINGER 0: the close is a reset, as when a process dies.
            let l = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            use std::os::unix::io::AsRawFd;
            // SAFETY: setsockopt on a socket this test owns.
            unsafe {
                libc::setsockopt(
                    a.s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &l as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as u32,
                );
            }
        }
        drop(a);
        wait_backend_gone(&marker, if rude { "reset" } else { "close" });
    }
    wait_for("two close lines", WAIT, || {
        g.log().matches("session close").count() >= 2
    });
    let log = g.log();
    let ends: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("session close"))
        .filter_map(|l| Some(l.split("end=").nth(1)?.split_whitespace().next()?.trim_matches('"')))
        .collect();
    assert!(
        ends.iter()
            .all(|e| *e == "client-disconnect" || *e == "client-io-error"),
        "{ends:?}"
    );
    let text = sealed_recordings(&g.dir.path().join("rec"));
    assert!(text.contains("\"end\":\"client-"), "the recording says the client left");
    assert!(
        metric(
            admin_port,
            "gatehouse_sessions_ended_total{reason=\"client-disconnect\"}"
        ) + metric(admin_port, "gatehouse_sessions_ended_total{reason=\"client-io-error\"}")
            >= 2
    );
    assert_serving(&g);
}

/// A client that vanishes while its statement is held: the review is
/// withdrawn, an approval that comes later is refused, and the statement
/// never runs.
#[test]
fn a_held_statement_whose_client_vanished_never_runs() {
    let admin_port = free_port();
    let g = Gatehouse::start(
        "",
        &format!(
            "{}\n[policy]\ndefault_role = \"agent\"\n[policy.roles.agent]\napprovers = [\"approver\"]\n",
            admin_section(admin_port)
        ),
    );
    let t = unique_table("gh_fault_held");
    let mut a = login(&g, "postgres", "gh-held-vanish");
    a.send(&query(&format!("insert into {t} values (1, 'held')"))).unwrap();
    // The hold notice names the review.
    let notice = loop {
        match a.next(WAIT) {
            Ok((b'N', body)) => break field(&body, b'M').unwrap_or_default(),
            Ok(_) => continue,
            Err(e) => panic!("no hold notice: {e:?}\n{}", g.log()),
        }
    };
    let id = review_id(&notice);
    drop(a);
    wait_for("the review to be withdrawn", WAIT, || {
        let (_, body) = http(admin_port, "GET", &format!("/api/v1/reviews/{id}"), ADMIN, "");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["status"]["state"] == "withdrawn"
    });
    let (st, body) = http(
        admin_port,
        "POST",
        &format!("/api/v1/reviews/{id}/approve"),
        APPROVER,
        "{\"reason\":\"late\"}",
    );
    assert!(st == 409 || st == 404, "a withdrawn review was approved: {st} {body}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        direct_psql(&format!("select count(*) from {t}")),
        "0",
        "the held statement ran"
    );
    let (_, body) = http(admin_port, "GET", &format!("/api/v1/reviews/{id}"), ADMIN, "");
    assert!(body.contains("the client disconnected"), "{body}");
    assert!(g.log().contains("hold ended"), "{}", g.log());
    assert_serving(&g);
    direct_psql(&format!("drop table {t}"));
}

/// MariaDB: the upstream connection killed with a transaction open; the
/// client's COMMIT fails and nothing of the transaction is in the table.
#[test]
fn mysql_an_upstream_killed_mid_transaction_commits_nothing() {
    use mysql_async::prelude::*;
    let (g, my) = start_mysql("", "", "");
    let t = format!("gh_fault_my_{}", rand_suffix());
    mariadb_direct(&format!(
        "drop table if exists {t}; create table {t} (id int) engine=InnoDB"
    ));
    let commit_failed = rt().block_on(async {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(my)
            .user(Some("agent"))
            .pass(Some(TOKEN))
            .db_name(Some("test"));
        let mut c = mysql_async::Conn::new(opts).await.expect("connect through gatehouse");
        let id: u64 = c.query_first("select connection_id()").await.unwrap().unwrap();
        c.query_drop("start transaction").await.unwrap();
        c.query_drop(format!("insert into {t} values (1), (2), (3)"))
            .await
            .unwrap();
        mariadb_direct(&format!("kill {id}"));
        let commit = c.query_drop("commit").await;
        commit.is_err()
    });
    assert!(commit_failed, "COMMIT after the upstream died reported success");
    assert_eq!(mariadb_direct(&format!("select count(*) from {t}")).trim(), "0");
    wait_for("the upstream-lost close line", WAIT, || {
        g.log().contains("end=\"upstream-lost\"")
    });
    assert!(alive(g.pid()) && !g.log().contains("panicked"), "{}", g.log());
    mariadb_direct(&format!("drop table {t}"));
}

fn gatehouse_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
}

fn verify(dir: &Path, key: &Path) -> (i32, String) {
    let out = gatehouse_cmd()
        .args(["verify", "-v"])
        .arg(dir)
        .arg("--key")
        .arg(key)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn session_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    gatehouse::record::collect(dir, &mut out).unwrap();
    out.retain(|p| !gatehouse::record::is_audit(p));
    out
}

/// gatehouse killed with SIGKILL while clients write through it: every
/// transaction a client saw committed is in the table, every one it did
/// not see committed is absent or whole; the next start seals the sessions
/// the kill left open, signed, and the whole recordings directory verifies
/// with the public key; the metrics and the log say how many were sealed.
#[test]
fn sigkill_under_load_loses_nothing_acknowledged_and_the_evidence_verifies() {
    let keys = tempfile::tempdir().unwrap();
    let out = gatehouse_cmd()
        .args(["keygen", "--recordings", "--out"])
        .arg(keys.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let private = keys.path().join("recording-key.pem");
    let public = keys.path().join("recording-key.pub.pem");
    let rec_dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let port = free_port();
    let config = config_text(
        port,
        "",
        &format!(
            "{}\n[recording]\ndir = {:?}\nresults = \"summary\"\nsigning_key = {:?}\ncheckpoint_interval_secs = 1\nsync_interval_ms = 100\n",
            admin_section(admin_port),
            rec_dir.path().display().to_string(),
            private.display().to_string()
        ),
    );
    let mut g = Gatehouse::start_with(port, &config);
    let t = unique_table("gh_fault_kill");
    let info = g.conninfo("postgres");

    // Eight writers: each transaction inserts 5 rows tagged with its
    // number; a writer notes a number only once COMMIT returned.
    const WRITERS: usize = 8;
    let acked: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let attempted: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let statements = Arc::new(AtomicU64::new(0));
    let runtime = rt();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (info, t, acked, attempted, statements) = (
            info.clone(),
            t.clone(),
            acked.clone(),
            attempted.clone(),
            statements.clone(),
        );
        tasks.push(runtime.spawn(async move {
            let Ok((c, conn)) = tokio_postgres::connect(&info, tokio_postgres::NoTls).await else {
                return;
            };
            tokio::spawn(conn);
            for n in 0u64.. {
                attempted.lock().unwrap().push((w, n));
                let tag = format!("w{w}-{n}");
                let sql = format!(
                    "begin; insert into {t} select g, '{tag}' from generate_series(1, 5) g; \
                     select count(*) from {t} where note = '{tag}'; commit"
                );
                if c.batch_execute(&sql).await.is_err() {
                    return;
                }
                statements.fetch_add(4, Ordering::Relaxed);
                acked.lock().unwrap().push((w, n));
            }
        }));
    }
    // One more session holds a transaction open, uncommitted, at the kill.
    let open_tag = unique("open-tx");
    let (hold_client, hold_conn) = runtime
        .block_on(tokio_postgres::connect(&info, tokio_postgres::NoTls))
        .unwrap();
    runtime.spawn(hold_conn);
    runtime
        .block_on(hold_client.batch_execute(&format!("begin; insert into {t} values (1, '{open_tag}')")))
        .unwrap();
    wait_for("load", Duration::from_secs(60), || {
        statements.load(Ordering::Relaxed) > 400
    });
    // Until a checkpoint (every second here) has signed a head of every
    // open session: what was written after the last checkpoint is
    // recovered too, but noted as not vouched for.
    wait_for("checkpoints naming every open session", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(rec_dir.path().join("audit.ghrec")).unwrap_or_default();
        let named: std::collections::HashSet<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["kind"] == "checkpoint")
            .flat_map(|v| {
                v["open"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|h| h[0].as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .collect();
        named.len() > WRITERS
    });
    g.signal(libc::SIGKILL);
    let _ = g.child.wait();
    for task in tasks {
        let _ = runtime.block_on(async { tokio::time::timeout(WAIT, task).await });
    }
    drop(hold_client);
    let acked = acked.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(acked.len() > 50, "too little load before the kill: {}", acked.len());
    eprintln!(
        "at the kill: {} transactions acknowledged, {} attempted",
        acked.len(),
        attempted.len()
    );

    // The database: every acknowledged transaction whole; the one still
    // open absent; an unacknowledged one absent or whole, never partial.
    let rows = direct_psql(&format!("select note, count(*) from {t} group by note"));
    let counts: std::collections::HashMap<String, u64> = rows
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect();
    for (w, n) in &acked {
        assert_eq!(counts.get(&format!("w{w}-{n}")), Some(&5), "w{w}-{n} was acknowledged");
    }
    for (tag, n) in &counts {
        assert_eq!(*n, 5, "{tag}: a transaction half applied");
        assert!(
            attempted.iter().any(|(w, k)| &format!("w{w}-{k}") == tag),
            "{tag}: in the table, never sent"
        );
    }
    assert!(!counts.contains_key(&open_tag), "an uncommitted transaction survived");
    // Nothing half-applied, and at most one unacknowledged commit per writer.
    assert!(counts.len() <= acked.len() + WRITERS);

    // Before the next start the sessions open at the kill are unsealed:
    // `verify` says the directory does not verify.
    let (code, out) = verify(rec_dir.path(), &public);
    assert_eq!(
        code, 1,
        "unsealed sessions after a SIGKILL must not verify as whole:\n{out}"
    );
    let unsealed_before = session_files(rec_dir.path())
        .iter()
        .filter(|f| {
            gatehouse::record::records(std::fs::File::open(f).unwrap())
                .last()
                .is_some_and(|v| v["kind"] != "seal")
        })
        .count();
    assert!(unsealed_before >= WRITERS, "{unsealed_before} unsealed sessions");

    // The next start seals them, signed, and says so.
    let g2 = Gatehouse::start_with(port, &config);
    let deadline = Instant::now() + WAIT;
    while !g2.log().contains("was sealed at start") {
        assert!(
            Instant::now() < deadline,
            "no recovery in the log:\n{}\naudit log:\n{}",
            g2.log(),
            std::fs::read_to_string(rec_dir.path().join("audit.ghrec")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(
        g2.log().matches("was sealed at start").count(),
        unsealed_before,
        "{}",
        g2.log()
    );
    assert_eq!(
        metric(admin_port, "gatehouse_recorder_recovered_total"),
        unsealed_before as u64
    );
    assert_serving(&g2);
    let mut g2 = g2;
    g2.signal(libc::SIGTERM);
    let deadline = Instant::now() + WAIT;
    while g2.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "gatehouse did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, out) = verify(rec_dir.path(), &public);
    assert_eq!(code, 0, "after the restart every recording verifies:\n{out}");
    assert_eq!(
        out.matches("were vouched for by the signed checkpoint at record")
            .count(),
        unsealed_before,
        "{out}"
    );
    assert!(out.contains("sealed at a start after an unclean stop (at "), "{out}");
    let recovered_closes = session_files(rec_dir.path())
        .iter()
        .filter(|f| {
            gatehouse::record::records(std::fs::File::open(f).unwrap())
                .any(|v| v["kind"] == "close" && v["end"] == "unclean-stop")
        })
        .count();
    assert_eq!(recovered_closes, unsealed_before);
    // A second gatehouse cannot record into a directory a running one holds.
    let g3 = Gatehouse::start_with(port, &config);
    let port2 = free_port();
    let other = config.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{port2}"));
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("g.toml");
    std::fs::write(
        &cfg_path,
        other.replace(
            &format!("127.0.0.1:{admin_port}"),
            &format!("127.0.0.1:{}", free_port()),
        ),
    )
    .unwrap();
    let out = gatehouse_cmd()
        .args(["serve", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another gatehouse process records into"), "{err}");
    drop(g3);
    direct_psql(&format!("drop table {t}"));
}

/// MariaDB: a client killed while its write is held: the review is
/// withdrawn, a later approval is refused, the write never runs.
#[test]
fn mysql_a_held_statement_whose_client_vanished_never_runs() {
    let admin_port = free_port();
    let (g, port) = start_mysql(
        "",
        "",
        &format!(
            "{}\n[policy]\ndefault_role = \"agent\"\n[policy.roles.agent]\nwrite = \"approve\"\napprovers = [\"approver\"]\n",
            admin_section(admin_port)
        ),
    );
    let t = format!("gh_fault_myheld_{}", rand_suffix());
    mariadb_direct(&format!(
        "drop table if exists {t}; create table {t} (id int) engine=InnoDB"
    ));
    let mut child = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", "agent"])
        .arg(format!("-p{TOKEN}"))
        .args(["--batch", "test", "-e", &format!("insert into {t} values (1)")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut id = String::new();
    wait_for("the hold", WAIT, || {
        let (_, body) = http(admin_port, "GET", "/api/v1/reviews", ADMIN, "");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(r) = v["reviews"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["status"]["state"] == "pending"))
        {
            id = r["id"].as_str().unwrap_or("").to_string();
        }
        !id.is_empty()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("the review to be withdrawn", WAIT, || {
        let (_, body) = http(admin_port, "GET", &format!("/api/v1/reviews/{id}"), ADMIN, "");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["status"]["state"] == "withdrawn"
    });
    let (st, body) = http(
        admin_port,
        "POST",
        &format!("/api/v1/reviews/{id}/approve"),
        APPROVER,
        "{\"reason\":\"late\"}",
    );
    assert!(st == 409 || st == 404, "a withdrawn review was approved: {st} {body}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(mariadb_direct(&format!("select count(*) from {t}")).trim(), "0");
    assert!(alive(g.pid()) && !g.log().contains("panicked"), "{}", g.log());
    mariadb_direct(&format!("drop table {t}"));
}

/// The timer the kernel has armed on the established TCP socket from
/// `local` to `remote` on 127.0.0.1 (`/proc/net/tcp`'s `tr`: 0 none, 1
/// retransmit, 2 keepalive, 3 TIME_WAIT, 4 zero-window probe) and the
/// seconds until it fires.
fn socket_timer(local: u16, remote: u16) -> Option<(u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    // The address as the kernel prints it: the raw word, in host order.
    let ip = format!("{:08X}", u32::from_ne_bytes([127, 0, 0, 1]));
    let want = (format!("{ip}:{local:04X}"), format!("{ip}:{remote:04X}"));
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let established = f.get(3) == Some(&"01");
        if !established || (f.get(1).copied(), f.get(2).copied()) != (Some(want.0.as_str()), Some(want.1.as_str())) {
            return None;
        }
        let (tr, when) = f.get(5)?.split_once(':')?;
        // In USER_HZ ticks, 100 a second.
        let ticks = u64::from_str_radix(when, 16).ok()?;
        Some((tr.parse().ok()?, ticks / 100))
    })
}

/// A client that vanishes without a word (powered off, black-holed) is
/// found by TCP keepalive, which gatehouse sets on its listeners for
/// every connection they accept to inherit, PostgreSQL and MySQL alike:
/// the kernel has the keepalive timer armed on gatehouse's side of an
/// idle client, due within gatehouse's 60 s (the kernel's default is two
/// hours). That the no-delay option is inherited with it is
/// `proxy::stream`'s unit test.
#[test]
fn an_idle_clients_socket_has_the_keepalive_timer_armed() {
    idle_clients_have_keepalive("");
}

/// The same with the epoll driver, whose listeners are non-blocking.
#[test]
fn an_idle_clients_socket_has_the_keepalive_timer_armed_with_epoll() {
    idle_clients_have_keepalive("io_driver = \"epoll\"");
}

fn idle_clients_have_keepalive(server: &str) {
    let (g, mysql_port) = start_mysql(server, "", "");
    let check = |client: &TcpStream, server_port: u16, what: &str| {
        let client_port = client.local_addr().unwrap().port();
        let mut last = None;
        let start = Instant::now();
        // Right after the last bytes, a retransmit timer may still be
        // armed until they are acknowledged.
        while start.elapsed() < WAIT {
            last = socket_timer(server_port, client_port);
            if matches!(last, Some((2, _))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (timer, due) =
            last.unwrap_or_else(|| panic!("{what}: gatehouse's socket of the client is not in /proc/net/tcp"));
        assert_eq!(
            timer, 2,
            "{what}: no keepalive timer on gatehouse's side of an idle client"
        );
        assert!(
            (45..=60).contains(&due),
            "{what}: keepalive due in {due} s, not gatehouse's 60 s idle time"
        );
    };
    // The MySQL client says nothing after connecting: checked at once,
    // well within the login's time limit.
    let my = TcpStream::connect(("127.0.0.1", mysql_port)).expect("connect to the MySQL listener");
    check(&my, mysql_port, "MySQL");
    let pg = raw_login(g.port, "test", "keepalive");
    check(&pg, g.port, "PostgreSQL");
    drop((pg, my));
}

//! The upstream pool: connections reused only when their session left them
//! idle, reset between sessions; idle clients hold no backend; cancels and
//! dead pooled connections; no pool when a target asks for none.

mod common;
use common::*;

use std::io::Write;
use std::time::{Duration, Instant};
use tokio::time::timeout;
use tokio_postgres::Client;

const WAIT: Duration = Duration::from_secs(20);

/// One worker, so that consecutive sessions share its pool; a target
/// without a pool beside the default ones.
fn start() -> Gatehouse {
    let port = free_port();
    let admin = free_port();
    let extra = format!(
        "[[target]]\nname = \"nopool\"\ndatabase = \"nopool\"\nupstream_database = \"postgres\"\n\
         host = \"{PG_HOST}\"\nport = {PG_PORT}\nuser = \"postgres\"\ntls = \"disable\"\npool_size = 0\n\n\
         [[target]]\nname = \"small\"\ndatabase = \"small\"\nupstream_database = \"postgres\"\n\
         host = \"{PG_HOST}\"\nport = {PG_PORT}\nuser = \"postgres\"\ntls = \"disable\"\npool_size = 2\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[[admin.token]]\nname = \"ops\"\ntoken_hash = \"{hash}\"\nroles = [\"admin\"]\n",
        hash = token_hash("admin-secret-token"),
    );
    let config = config_text(port, "", &extra).replace("workers = 2", "workers = 1");
    let mut g = Gatehouse::start_with(port, &config);
    g.admin_port = Some(admin);
    g
}

fn metric(g: &Gatehouse, name: &str) -> u64 {
    let (status, body) = http(
        g.admin_port.expect("admin API"),
        "GET",
        "/metrics",
        "admin-secret-token",
        "",
    );
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no metric {name}"))
}

async fn connect(g: &Gatehouse, db: &str, app: &str) -> Client {
    let conninfo = format!("{} application_name={app}", g.conninfo(db));
    timeout(WAIT, connect_collecting(&conninfo))
        .await
        .expect("connect timed out")
        .expect("connect")
        .0
}

async fn backend_pid(c: &Client) -> i32 {
    c.query_one("select pg_backend_pid()", &[]).await.expect("pid").get(0)
}

/// Backends whose application_name is `app`, seen directly.
async fn backends(app: &str) -> i64 {
    direct()
        .await
        .query_one(
            "select count(*) from pg_stat_activity where application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0)
}

async fn wait_backends(g: &Gatehouse, app: &str, want: i64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = backends(app).await;
        if n == want {
            return;
        }
        if Instant::now() >= deadline {
            let rows = direct()
                .await
                .query(
                    "select state, query from pg_stat_activity where application_name = $1",
                    &[&app],
                )
                .await
                .unwrap();
            let seen: Vec<(Option<String>, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            let pool: Vec<String> = ["reused", "returned", "closed"]
                .iter()
                .map(|m| format!("{m} {}", metric(g, &format!("gatehouse_pool_{m}_total"))))
                .collect();
            panic!(
                "{n} backends of {app}, want {want}: {seen:?} pool: {pool:?}\n{}",
                g.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_reset_and_reused() {
    let g = start();
    let app = unique("gh-pool-reuse");
    let reused0 = metric(&g, "gatehouse_pool_reused_total");

    let a = connect(&g, "postgres", &app).await;
    let pid = backend_pid(&a).await;
    a.batch_execute(
        "set work_mem = '7MB'; prepare gh_pool_p as select 1; create temp table gh_pool_t(x int); \
         select set_config('application_name', 'changed-by-session', false); listen gh_pool_chan",
    )
    .await
    .expect("session state");
    let returned = metric(&g, "gatehouse_pool_returned_total");
    drop(a);
    // Once the connection is back (reset), the next session gets the same
    // backend, with nothing of the last session.
    let deadline = Instant::now() + WAIT;
    while metric(&g, "gatehouse_pool_returned_total") == returned {
        assert!(Instant::now() < deadline, "the connection was not kept:\n{}", g.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = connect(&g, "postgres", &app).await;
    assert_eq!(backend_pid(&b).await, pid, "the kept backend is reused");
    let work_mem: String = b.query_one("show work_mem", &[]).await.unwrap().get(0);
    assert_ne!(work_mem, "7MB", "settings of the last session must be reset");
    let app_now: String = b.query_one("show application_name", &[]).await.unwrap().get(0);
    assert_eq!(app_now, app, "the startup's application_name comes back");
    let e = b
        .batch_execute("execute gh_pool_p")
        .await
        .expect_err("prepared statement gone");
    assert_eq!(code(&e), "26000", "{e}");
    let e = b
        .batch_execute("select * from gh_pool_t")
        .await
        .expect_err("temp table gone");
    assert_eq!(code(&e), "42P01", "{e}");
    let listening: i64 = b
        .query_one("select count(*) from pg_listening_channels()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(listening, 0, "LISTEN must not outlive its session");
    drop(b);
    assert!(metric(&g, "gatehouse_pool_reused_total") > reused0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ends_in_a_transaction_is_not_reused() {
    let g = start();
    let app = unique("gh-pool-txn");
    let table = unique("gh_pool_txn");
    direct()
        .await
        .batch_execute(&format!("create table {table}(x int)"))
        .await
        .unwrap();

    let a = connect(&g, "postgres", &app).await;
    let pid = backend_pid(&a).await;
    a.batch_execute(&format!("begin; insert into {table} values (1)"))
        .await
        .unwrap();
    drop(a);
    // Its backend goes away and its insert with it.
    wait_backends(&g, &app, 0).await;
    assert_eq!(count(&table).await, 0);

    // A query in flight when the client's socket closed: the same (a
    // client library would wait for the answer; a raw socket does not).
    let mut raw = raw_login(g.port, "postgres", &app);
    raw.write_all(&query_message("select pg_sleep(2)")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(backends(&app).await, 1);
    drop(raw);
    wait_backends(&g, &app, 0).await;
    assert_ne!(pid, 0);
    direct()
        .await
        .batch_execute(&format!("drop table {table}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_hold_no_backend_until_they_speak() {
    let g = start();
    let app = unique("gh-pool-lazy");
    // The first login with this key logs in upstream at once (gatehouse
    // learns the server's parameters); it goes back to the pool.
    let first = connect(&g, "postgres", &app).await;
    backend_pid(&first).await;
    drop(first);
    wait_backends(&g, &app, 1).await;

    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(connect(&g, "postgres", &app).await);
    }
    // Twenty logged-in clients, still the one (pooled) backend.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(backends(&app).await, 1);
    // Each gets a backend when it sends something, and the server's
    // parameters are what the login announced.
    let enc: String = idle[0].query_one("show client_encoding", &[]).await.unwrap().get(0);
    assert_eq!(enc, "UTF8");
    for c in &idle[1..5] {
        c.query_one("select 1", &[]).await.expect("query on a deferred session");
    }
    assert_eq!(backends(&app).await, 5);
    drop(idle);
    // Left idle: reset and kept (pool_size 32), not closed.
    wait_backends(&g, &app, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_a_backend_given_after_login() {
    let g = start();
    let app = unique("gh-pool-cancel");
    let first = connect(&g, "postgres", &app).await;
    backend_pid(&first).await;
    drop(first);
    wait_backends(&g, &app, 1).await;
    // This session logged in without a backend; its first query gets one.
    let c = connect(&g, "postgres", &app).await;
    let token = c.cancel_token();
    let started = Instant::now();
    let q = tokio::spawn(async move {
        let r = c.batch_execute("select pg_sleep(30)").await;
        (r, c)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(tokio_postgres::NoTls).await.expect("cancel");
    let (r, c) = timeout(WAIT, q).await.expect("cancel took effect").unwrap();
    let e = r.expect_err("the sleep is cancelled");
    assert_eq!(code(&e), "57014", "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    c.query_one("select 1", &[]).await.expect("the session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_backend_that_died_is_replaced() {
    let g = start();
    let app = unique("gh-pool-dead");
    let a = connect(&g, "postgres", &app).await;
    let pid = backend_pid(&a).await;
    drop(a);
    wait_backends(&g, &app, 1).await;
    // The idle pooled backend is terminated behind gatehouse's back.
    let d = direct().await;
    let ok: bool = d
        .query_one("select pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(ok);
    wait_backends(&g, &app, 0).await;
    let b = connect(&g, "postgres", &app).await;
    let pid_b = backend_pid(&b).await;
    assert_ne!(pid_b, pid, "a dead connection must not be handed out");
    let v: i32 = b.query_one("select 2", &[]).await.unwrap().get(0);
    assert_eq!(v, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_without_a_pool_closes_with_its_session() {
    let g = start();
    let app = unique("gh-pool-none");
    let a = connect(&g, "nopool", &app).await;
    let pid = backend_pid(&a).await;
    drop(a);
    wait_backends(&g, &app, 0).await;
    let b = connect(&g, "nopool", &app).await;
    assert_ne!(backend_pid(&b).await, pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_size_bounds_the_kept_connections() {
    let g = start();
    let app = unique("gh-pool-small");
    let mut clients = Vec::new();
    for _ in 0..4 {
        let c = connect(&g, "small", &app).await;
        backend_pid(&c).await;
        clients.push(c);
    }
    assert_eq!(backends(&app).await, 4);
    drop(clients);
    // Two kept (pool_size = 2), the others closed.
    wait_backends(&g, &app, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(backends(&app).await, 2);
}

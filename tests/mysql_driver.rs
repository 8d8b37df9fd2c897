//! Python's PyMySQL and mysqlclient, and a Rust driver (`mysql_async`),
//! with their default options, through
//! gatehouse against the MariaDB on 127.0.0.1:3306: prepared statements,
//! several result sets, packets over 16 MiB both ways, masking in text and
//! binary rows and in error messages, TLS to the client, the policy on
//! prepared statements, and a running statement stopped upstream by
//! `KILL QUERY` or by its client leaving.

mod common;
use common::*;
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder, Row};
use std::time::{Duration, Instant};

const KEY: &str = "AKIAIOSFODNN7EXAMPLE";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn opts(port: u16, token: &str) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("agent"))
        .pass(Some(token))
        .db_name(Some("test"))
}

async fn connect(port: u16) -> Conn {
    Conn::new(opts(port, TOKEN)).await.expect("connect through gatehouse")
}

/// (code, message) of a server error.
fn server_error(e: mysql_async::Error) -> (u16, String) {
    match e {
        mysql_async::Error::Server(s) => (s.code, s.message),
        other => panic!("not a server error: {other:?}"),
    }
}

#[test]
fn prepared_statements_and_several_result_sets_with_values_masked() {
    let (g, port) = start_mysql("", "", "");
    let table = unique("gh_drv");
    rt().block_on(async {
        let mut c = connect(port).await;
        // A prepared statement: binary rows, masked.
        let (n, k): (i64, String) = c
            .exec_first("SELECT ? + 1, CONCAT('AKIA', ?)", (41, "IOSFODNN7EXAMPLE"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 42);
        assert!(!k.contains(KEY), "binary row not masked: {k}");
        // Parameters, a batch, NULLs, and a table read back by a statement
        // prepared once and executed twice.
        c.query_drop(format!("CREATE TABLE {table} (id INT PRIMARY KEY, v TEXT, d DOUBLE)"))
            .await
            .unwrap();
        c.exec_batch(
            format!("INSERT INTO {table} VALUES (?, ?, ?)"),
            vec![
                (1, Some("plain".to_string()), Some(1.5)),
                (2, Some(format!("token {KEY} here")), None),
                (3, None, Some(-2.25)),
            ],
        )
        .await
        .unwrap();
        let stmt = c
            .prep(format!("SELECT id, v, d FROM {table} WHERE id >= ? ORDER BY id"))
            .await
            .unwrap();
        for _ in 0..2 {
            let rows: Vec<(i32, Option<String>, Option<f64>)> = c.exec(&stmt, (1,)).await.unwrap();
            assert_eq!(rows.len(), 3);
            assert_eq!(rows[0], (1, Some("plain".into()), Some(1.5)));
            assert_eq!(rows[2], (3, None, Some(-2.25)));
            let v = rows[1].1.clone().unwrap();
            assert!(v.starts_with("token ") && !v.contains(KEY), "{v}");
        }
        c.close(stmt).await.unwrap();
        // Several result sets from one COM_QUERY, masked in each.
        let mut r = c
            .query_iter(format!(
                "SELECT 1; SELECT 'a', 'b' UNION ALL SELECT 'c', '{KEY}'; SELECT v FROM {table} WHERE id = 2"
            ))
            .await
            .unwrap();
        let one: Vec<i64> = r.collect().await.unwrap();
        let two: Vec<(String, String)> = r.collect().await.unwrap();
        let three: Vec<String> = r.collect().await.unwrap();
        drop(r);
        assert_eq!(one, vec![1]);
        assert_eq!(two[0], ("a".into(), "b".into()));
        assert!(!two[1].1.contains(KEY), "{:?}", two[1]);
        assert!(!three[0].contains(KEY), "{three:?}");
        // A write in the middle of several statements: an OK between sets.
        let mut r = c
            .query_iter(format!(
                "UPDATE {table} SET d = 0 WHERE id = 1; SELECT d FROM {table} WHERE id = 1"
            ))
            .await
            .unwrap();
        assert_eq!(r.affected_rows(), 1);
        let _: Vec<Row> = r.collect().await.unwrap();
        let d: Vec<f64> = r.collect().await.unwrap();
        drop(r);
        assert_eq!(d, vec![0.0]);
        // An error message carrying a secret is masked too.
        let e = c
            .query_drop(format!("SELECT * FROM `no table {KEY}`"))
            .await
            .unwrap_err();
        let (code, message) = server_error(e);
        assert_eq!(code, 1146, "{message}");
        assert!(!message.contains(KEY), "{message}");
        // The session goes on after an error; COM_PING and COM_RESET_CONNECTION.
        c.ping().await.unwrap();
        c.reset().await.unwrap();
        let v: Option<i64> = c.query_first("SELECT 7").await.unwrap();
        assert_eq!(v, Some(7));
        c.query_drop(format!("DROP TABLE {table}")).await.unwrap();
        c.disconnect().await.unwrap();
    });
    g.wait_log_line("session close", LOG_WAIT, |l| l.contains("session close"));
    let log = g.log();
    let close = log.lines().find(|l| l.contains("session close")).unwrap();
    assert!(close.contains("end=\"client-terminate\""), "{close}");
    assert!(!close.contains("masked=0 "), "values were masked: {close}");
}

/// Many rows arrive in one read and are scanned in one pass: each row is
/// still masked by its own values, and only those (text and binary rows,
/// a key in every seventh row, near misses in the others).
#[test]
fn rows_scanned_together_are_masked_one_by_one() {
    let (g, port) = start_mysql("", "", "");
    let sql = "SELECT seq, IF(seq % 7 = 0, CONCAT('k ', 'AKIA', 'IOSFODNN7EXAMPLE', ' ', seq), \
               CONCAT('AKIA-', seq, '-IOSFODNN7EXAMPLE ', seq)) FROM seq_1_to_3000 WHERE seq >= ?";
    rt().block_on(async {
        let mut c = connect(port).await;
        let text: Vec<(i64, String)> = c.query(sql.replace('?', "1")).await.unwrap();
        let binary: Vec<(i64, String)> = c.exec(sql, (1,)).await.unwrap();
        for rows in [&text, &binary] {
            assert_eq!(rows.len(), 3000);
            for (seq, v) in rows {
                if seq % 7 == 0 {
                    assert!(
                        !v.contains(KEY) && v.starts_with("k ") && v.ends_with(&format!(" {seq}")),
                        "{seq}: {v}"
                    );
                } else {
                    assert_eq!(v, &format!("AKIA-{seq}-IOSFODNN7EXAMPLE {seq}"));
                }
            }
        }
        c.disconnect().await.unwrap();
    });
    g.wait_log_line("session close", LOG_WAIT, |l| l.contains("session close"));
    let log = g.log();
    let close = log.lines().find(|l| l.contains("session close")).unwrap();
    assert!(close.contains("masked=856 "), "two results of 428 keys each: {close}");
}

#[test]
fn packets_over_sixteen_mebibytes_both_ways_and_masked() {
    // The server's packet limit for connections made after this.
    mariadb_direct("SET GLOBAL max_allowed_packet = GREATEST(@@global.max_allowed_packet, 67108864)");
    let (g, port) = start_mysql("", "", "");
    rt().block_on(async {
        let mut c = connect(port).await;
        let n = (1 << 24) + 100;
        // A text query over 16 MiB (split in packets by the client).
        let big = "a".repeat(n);
        let len: Option<i64> = c.query_first(format!("SELECT LENGTH('{big}')")).await.unwrap();
        assert_eq!(len, Some(n as i64));
        // A parameter over 16 MiB (COM_STMT_SEND_LONG_DATA or split packets).
        let len: Option<i64> = c.exec_first("SELECT LENGTH(?)", (big.clone(),)).await.unwrap();
        assert_eq!(len, Some(n as i64), "{}", g.log());
        // A row over 16 MiB back, with a secret at its end: still masked,
        // and the frames re-cut right (the next statement still works).
        let v: Option<String> = c
            .query_first(format!("SELECT CONCAT(REPEAT('x', {n}), ' {KEY}')"))
            .await
            .unwrap();
        let v = v.unwrap();
        assert!(v.len() > n && v.starts_with("xxxx") && !v.contains(KEY), "{}", v.len());
        let v: Option<String> = c
            .exec_first("SELECT CONCAT(REPEAT('y', ?), ?)", (n, format!(" {KEY}")))
            .await
            .unwrap();
        let v = v.unwrap();
        assert!(v.len() > n && v.starts_with("yyyy") && !v.contains(KEY), "{}", v.len());
        let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
        assert_eq!(one, Some(1));
    });
}

#[test]
fn kill_query_and_a_client_that_leaves_stop_the_statement_upstream() {
    let (g, port) = start_mysql("", "", "");
    let marker = unique("ghkill");
    rt().block_on(async {
        let mut victim = connect(port).await;
        let id = victim.id();
        let sleeper = tokio::spawn(async move {
            let r = victim.query_drop("SELECT SLEEP(60)").await;
            (r, victim)
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The id the client was given is gatehouse's, and the identity may
        // stop its own statement by it.
        let mut killer = connect(port).await;
        let started = Instant::now();
        killer.query_drop(format!("KILL QUERY {id}")).await.unwrap();
        let (r, mut victim) = tokio::time::timeout(Duration::from_secs(10), sleeper).await.unwrap().unwrap();
        // MariaDB answers a killed SLEEP with its result 1 or error 1317.
        if let Err(e) = r {
            assert_eq!(server_error(e).0, 1317);
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        let v: Option<i64> = victim.query_first("SELECT 5").await.unwrap();
        assert_eq!(v, Some(5), "the session goes on after its statement was stopped");

        // A client that leaves mid-statement: its statement stops upstream.
        let mut leaver = connect(port).await;
        let sql = format!("SELECT SLEEP(60) AS {marker}");
        let task = tokio::spawn(async move {
            let _ = leaver.query_drop(sql).await;
        });
        let running = || mariadb_direct(&format!(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE '%SLEEP(60) AS {marker}%' AND info NOT LIKE '%processlist%'"
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while running().trim() != "1" {
            assert!(Instant::now() < deadline, "the statement never ran upstream");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        task.abort();
        let _ = task.await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while running().trim() != "0" {
            assert!(Instant::now() < deadline, "the statement still runs upstream: {}", g.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn the_policy_holds_for_prepared_statements() {
    let table = unique("gh_drvp");
    mariadb_direct(&format!(
        "CREATE TABLE {table} (id INT, v TEXT); INSERT INTO {table} VALUES (1, 'a'), (2, 'b')"
    ));
    let (g, port) = start_mysql(
        "",
        "",
        r#"
[policy]
default_role = "agent"
[policy.roles.agent]
read = "allow"
write = "deny"
delete = "deny"
ddl = "deny"
admin = "deny"
unknown = "deny"
"#,
    );
    rt().block_on(async {
        let mut c = connect(port).await;
        let rows: Vec<(i32, String)> = c
            .exec(format!("SELECT id, v FROM {table} WHERE id > ? ORDER BY id"), (0,))
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        for sql in [
            format!("DELETE FROM {table} WHERE id = ?"),
            format!("UPDATE {table} SET v = ? WHERE id = 1"),
            format!("/*!50000 DELETE */ FROM {table} WHERE id = ?"),
        ] {
            let e = c.exec_drop(&sql, (1,)).await.unwrap_err();
            let (_, message) = server_error(e);
            assert!(message.contains("gatehouse"), "{sql}: {message}");
        }
        // SQL-level PREPARE of a write, and EXECUTE of a name never prepared.
        for sql in [
            format!("PREPARE p FROM 'DELETE FROM {table}'"),
            "EXECUTE p".to_string(),
            format!("SET @s = 'DELETE FROM {table}'; PREPARE p FROM @s"),
        ] {
            let e = c.query_drop(&sql).await.unwrap_err();
            assert!(server_error(e).1.contains("gatehouse"), "{sql}");
        }
        let v: Option<String> = c
            .query_first(format!("SELECT v FROM {table} WHERE id = 2"))
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some("b"), "{}", g.log());
    });
    assert_eq!(
        mariadb_direct(&format!("SELECT COUNT(*) FROM {table}; DROP TABLE {table}")).trim(),
        "2"
    );
}

#[test]
fn tls_to_the_client_carries_the_token_in_clear_only_inside_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(dir.path());
    let tls = format!(
        "\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let (g, port) = start_mysql("", "", &tls);
    rt().block_on(async {
        let ssl = mysql_async::SslOpts::default().with_root_certs(vec![ca.clone().into()]);
        let mut c = Conn::new(opts(port, TOKEN).ssl_opts(Some(ssl.clone())))
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{}", g.log()));
        let v: Option<String> = c.query_first(format!("SELECT '{KEY}'")).await.unwrap();
        assert!(!v.unwrap().contains(KEY));
        c.disconnect().await.unwrap();
        // A wrong token over TLS: access denied.
        let e = Conn::new(opts(port, "wrong-token").ssl_opts(Some(ssl)))
            .await
            .err()
            .unwrap();
        match e {
            mysql_async::Error::Server(s) => assert_eq!(s.code, 1045),
            other => panic!("{other:?}\n{}", g.log()),
        }
        // Without TLS the same driver still logs in (RSA-encrypted token).
        let mut c = connect(port).await;
        c.ping().await.unwrap();
    });
    g.wait_log_line("client_tls=true", LOG_WAIT, |l| l.contains("client_tls=true"));
    assert!(!g.log().contains(TOKEN), "the token must never be logged");
}

const WRITER_TOKEN: &str = "writer-token-0123456789";

/// The server's own connection id of a session.
/// Waits for a connection a client just left to be back in the pool: it
/// goes back after its reset, a round trip to the server after the
/// client's quit, and a client arriving before then gets a fresh one.
async fn back_in_the_pool() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn server_connection(c: &mut Conn) -> i64 {
    c.query_first("SELECT CONNECTION_ID()").await.unwrap().unwrap()
}

#[test]
fn a_pooled_connection_is_reset_between_sessions() {
    let table = unique("gh_pool");
    mariadb_direct(&format!("CREATE TABLE {table} (id INT)"));
    // One worker: each worker keeps a pool of its own.
    let (g, port) = start_mysql(
        "workers = 1",
        "pool_size = 4",
        &format!(
            r#"
[[identity]]
name = "writer"
token_hash = "{}"
targets = ["*"]
roles = ["writer"]

[policy]
default_role = "agent"
[policy.roles.agent]
read = "allow"
write = "deny"
delete = "deny"
ddl = "deny"
admin = "deny"
unknown = "deny"
[policy.roles.writer]
read = "allow"
write = "allow"
delete = "allow"
ddl = "allow"
admin = "allow"
unknown = "allow"
"#,
            token_hash(WRITER_TOKEN)
        ),
    );
    let writer = || {
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(port)
            .user(Some("writer"))
            .pass(Some(WRITER_TOKEN))
            .db_name(Some("test"))
    };
    rt().block_on(async {
        // A writer leaves state behind: a user variable, a temporary
        // table, a session setting, and an open transaction with a row.
        let mut c = Conn::new(writer()).await.unwrap();
        let first = server_connection(&mut c).await;
        c.query_drop(format!(
            "SET @left_behind = 'x'; CREATE TEMPORARY TABLE gh_tmp (a INT); SET SESSION wait_timeout = 12345; BEGIN; INSERT INTO {table} VALUES (1)"
        ))
        .await
        .unwrap();
        c.disconnect().await.unwrap();
        back_in_the_pool().await;
        // The next session gets the same server connection, reset.
        let mut c = Conn::new(writer()).await.unwrap();
        assert_eq!(server_connection(&mut c).await, first, "the connection was not reused: {}", g.log());
        let v: Option<Option<String>> = c.query_first("SELECT @left_behind").await.unwrap();
        assert_eq!(v, Some(None), "a user variable survived the reset");
        let e = c.query_drop("SELECT * FROM gh_tmp").await.unwrap_err();
        assert_eq!(server_error(e).0, 1146, "a temporary table survived the reset");
        let t: Option<i64> = c.query_first("SELECT @@session.wait_timeout").await.unwrap();
        assert_ne!(t, Some(12345), "a session setting survived the reset");
        let db: Option<String> = c.query_first("SELECT DATABASE()").await.unwrap();
        assert_eq!(db.as_deref(), Some("test"));
        c.disconnect().await.unwrap();
        assert_eq!(mariadb_direct(&format!("SELECT COUNT(*) FROM {table}")).trim(), "0", "the open transaction was rolled back");
        back_in_the_pool().await;

        // A read-only role on the writer's former connection: read-only at
        // the server again.
        let mut c = connect(port).await;
        assert_eq!(server_connection(&mut c).await, first);
        let ro: Option<i64> = c.query_first("SELECT @@session.tx_read_only").await.unwrap();
        assert_eq!(ro, Some(1), "a read-only role's pooled connection must be read-only at the server");
        c.disconnect().await.unwrap();
        back_in_the_pool().await;
        // And a writer after it is not held back by the agent's setting.
        let mut c = Conn::new(writer()).await.unwrap();
        assert_eq!(server_connection(&mut c).await, first);
        let ro: Option<i64> = c.query_first("SELECT @@session.tx_read_only").await.unwrap();
        assert_eq!(ro, Some(0));
        // A session that changed its active role does not give its
        // connection back (a reset leaves the role in place).
        c.query_drop("SET ROLE NONE").await.unwrap();
        c.disconnect().await.unwrap();
        let mut c = Conn::new(writer()).await.unwrap();
        let second = server_connection(&mut c).await;
        assert_ne!(second, first, "a connection whose role was set was pooled");
        let first = second;
        // A session that leaves mid-statement does not give its
        // connection back: the next one is a new login.
        let task = tokio::spawn(async move {
            let _ = c.query_drop("SELECT SLEEP(3)").await;
            drop(c);
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        task.abort();
        let _ = task.await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut c = Conn::new(writer()).await.unwrap();
        assert_ne!(server_connection(&mut c).await, first, "a connection left mid-statement was pooled");
        c.disconnect().await.unwrap();
    });
    mariadb_direct(&format!("DROP TABLE {table}"));
}

/// PyMySQL and mysqlclient (libmariadb underneath) with Debian's python3:
/// `tests/fixtures/mysql/python_drivers.py` logs in with the token, runs a
/// parameterized query, reads a masked secret, several result sets and an
/// error, with each driver.
#[test]
fn python_drivers_log_in_and_see_values_masked() {
    let (g, port) = start_mysql("", "", "");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mysql/python_drivers.py");
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .arg(port.to_string())
        .arg(TOKEN)
        .output()
        .expect("/usr/bin/python3 (./dev.sh test installs python3-pymysql and python3-mysqldb)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("pymysql ok") && stdout.contains("mysqlclient ok"),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        g.log()
    );
}

/// A MySQL session waits for room in the recorder's queue before it reads
/// its next command, as a PostgreSQL session does: the recording keeps up
/// while the session runs (nothing piles up in the session's memory until
/// it ends), and no statement is lost.
#[test]
fn under_backlog_a_session_waits_for_the_recorder() {
    let (g, port) = start_mysql(
        "",
        "",
        "[recording]\ndir = \"rec\"\nresults = \"summary\"\nqueue_events = 16\nsync_interval_ms = 50\n",
    );
    let dir = g.dir.path().join("rec");
    let statements_recorded = || -> usize {
        let mut files = Vec::new();
        gatehouse::record::collect(&dir, &mut files).unwrap();
        files
            .iter()
            .filter(|f| !gatehouse::record::is_audit(f))
            .map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("\"kind\":\"statement\"") && l.contains("backlog-probe"))
                    .count()
            })
            .sum()
    };
    rt().block_on(async {
        let mut c = connect(port).await;
        let stmt = c.prep("SELECT ? AS n /* backlog-probe */").await.unwrap();
        for i in 0..600u32 {
            let _: Vec<Row> = c.exec(&stmt, (i,)).await.unwrap();
        }
        // The session is still open: its statements reach the recording now.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = statements_recorded();
            if n == 600 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{n} of 600 statements recorded while the session is open"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.disconnect().await.unwrap();
    });
}

/// Rows of prepared statements (binary protocol) are recorded as the text
/// protocol would have sent them, masked, with their column names.
#[test]
fn binary_rows_are_recorded_as_text() {
    let (g, port) = start_mysql(
        "",
        "",
        "[recording]\ndir = \"rec\"\nresults = \"full\"\nsync_interval_ms = 50\n",
    );
    rt().block_on(async {
        let mut c = connect(port).await;
        let _: Vec<Row> = c
            .exec(
                "SELECT ? AS k, CAST('2026-12-04 13:05:09.123456' AS DATETIME(6)) AS ts, 1.5e0 AS d, \
                 CAST(-3 AS SIGNED) AS neg, CAST(18446744073709551615 AS UNSIGNED) AS big, NULL AS nothing, \
                 CAST('2026-12-04' AS DATE) AS day",
                (format!("key {KEY}"),),
            )
            .await
            .unwrap();
        c.disconnect().await.unwrap();
    });
    let text = sealed_recordings(&g.dir.path().join("rec"));
    assert!(!text.contains(KEY), "{text}");
    // (The driver's own first query comes before; its record's chain hash
    // may hold any digits, so look for the whole date.)
    let rows = text
        .lines()
        .find(|l| l.contains("\"kind\":\"rows\"") && l.contains("\"2026-12-04"))
        .unwrap_or_else(|| panic!("{text}"));
    for want in [
        "\"2026-12-04 13:05:09.123456\"",
        "\"1.5\"",
        "\"-3\"",
        "\"18446744073709551615\"",
        "null",
        "\"2026-12-04\"",
        "\"key ",
    ] {
        assert!(rows.contains(want), "{want} in {rows}");
    }
    let result = text
        .lines()
        .find(|l| l.contains("\"kind\":\"result\"") && l.contains("\"ts\""))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        result.contains("\"columns\":[\"k\",\"ts\",\"d\",\"neg\",\"big\",\"nothing\",\"day\"]"),
        "{result}"
    );
}

/// A key file in `[server] mysql_rsa_key_file` is the key clients encrypt
/// their token to, so a client can pin it: PyMySQL with the right public
/// key logs in without asking for one, with another key it cannot.
#[test]
fn a_configured_rsa_key_can_be_pinned_by_clients() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("mysql-rsa.pem");
    let public = dir.path().join("mysql-rsa.pub.pem");
    let other = dir.path().join("other.pem");
    let other_public = dir.path().join("other.pub.pem");
    for (k, p) in [(&key, &public), (&other, &other_public)] {
        let ok = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(k)
            .status()
            .unwrap()
            .success()
            && std::process::Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(k)
                .arg("-out")
                .arg(p)
                .status()
                .unwrap()
                .success();
        assert!(ok, "openssl");
    }
    let (g, port) = start_mysql(&format!("mysql_rsa_key_file = \"{}\"", key.display()), "", "");
    let script = r#"
import sys, pymysql
port, token, pub = int(sys.argv[1]), sys.argv[2], open(sys.argv[3], "rb").read()
try:
    c = pymysql.connect(host="127.0.0.1", port=port, user="agent", password=token, database="test", server_public_key=pub)
    cur = c.cursor(); cur.execute("SELECT 1"); print("logged in", cur.fetchone()[0])
except pymysql.err.OperationalError as e:
    print("refused", e.args[0])
"#;
    let run = |pem: &std::path::Path| {
        let out = std::process::Command::new("/usr/bin/python3")
            .args(["-c", script, &port.to_string(), TOKEN])
            .arg(pem)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    assert!(run(&public).contains("logged in 1"), "{}\n{}", run(&public), g.log());
    assert!(run(&other_public).contains("refused 1045"), "{}", run(&other_public));
    // Without pinning the client fetches the same key.
    let c = rt().block_on(async { Conn::new(opts(port, TOKEN)).await.map(|_| ()) });
    assert!(c.is_ok(), "{c:?}");
}

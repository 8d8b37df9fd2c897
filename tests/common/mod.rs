//! Shared harness for integration tests: runs the real `gatehouse` binary
//! against the PostgreSQL on this machine.
#![allow(dead_code)]

pub mod browser;
pub mod sinks;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The token every test identity uses, and its stored hash.
pub const TOKEN: &str = "test-token-0123456789";

pub fn token_hash(token: &str) -> String {
    gatehouse::identity::hash_token(token.as_bytes())
}

/// A port nothing listens on, for a gatehouse (or fake server) to bind.
///
/// Asking the kernel for port 0 and releasing it races twice over: the next
/// request in this process may get the same port back (a listener and an
/// admin API on one port), and any outgoing connection on the machine may
/// take it as its local port. So ports come from below the ephemeral range
/// (32768–60999 here), at random, never twice in one test process, and only
/// after a bind shows them free.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::Mutex;
    static ISSUED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    let mut issued = ISSUED.lock().unwrap_or_else(|e| e.into_inner());
    let issued = issued.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_usize(issued.len());
        let port = LOW + (h.finish() % u64::from(SPAN)) as u16;
        if issued.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            issued.insert(port);
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// PostgreSQL on this machine (trust auth) as the default upstream.
pub const PG_HOST: &str = "127.0.0.1";
pub const PG_PORT: u16 = 5432;

/// A running gatehouse; killed on drop.
pub struct Gatehouse {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    /// The admin API's port, where the test's configuration has one.
    pub admin_port: Option<u16>,
}

/// A config with one worker count, listening on `port`, with the identity
/// `agent` (token [`TOKEN`]) reaching targets `postgres` and `test` on the
/// local PostgreSQL. `extra_server` lines go into [server]; `extra` is
/// appended (more targets, identities, [server.tls]).
pub fn config_text(port: u16, extra_server: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
workers = 2
allow_cleartext_on_loopback = true
handshake_timeout_secs = 5
{extra_server}

[log]
level = "info"

[[target]]
name = "postgres"
database = "postgres"
host = "{PG_HOST}"
port = {PG_PORT}
user = "postgres"
tls = "disable"

[[target]]
name = "test"
database = "test"
host = "{PG_HOST}"
port = {PG_PORT}
user = "postgres"
tls = "disable"

[[identity]]
name = "agent"
token_hash = "{hash}"
targets = ["*"]

{extra}
"#,
        hash = token_hash(TOKEN)
    )
}

/// How long a test waits for a line it expects in the gateway's log.
pub const LOG_WAIT: Duration = Duration::from_secs(10);

impl Gatehouse {
    pub fn start(extra_server: &str, extra: &str) -> Gatehouse {
        let port = free_port();
        Self::start_with(port, &config_text(port, extra_server, extra))
    }

    /// Starts with a whole config text that listens on `port`.
    pub fn start_with(port: u16, config: &str) -> Gatehouse {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("gatehouse.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log_path = dir.path().join("gatehouse.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env(
                "GATEHOUSE_LOG",
                std::env::var("GH_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn gatehouse");
        let mut g = Gatehouse {
            child,
            port,
            dir,
            config_path,
            log_path,
            admin_port: None,
        };
        g.wait_listening();
        g
    }

    fn wait_listening(&mut self) {
        // Generous: a debug build compiles the built-in secret rules at
        // startup, which takes seconds when tests run in parallel.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("gatehouse exited early ({status}): {}", self.log());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("gatehouse did not listen on {}: {}", self.port, self.log());
    }

    /// The gateway's log so far. Lines reach the file from the log's
    /// writer thread, which looks at its queue every few milliseconds while
    /// lines come (at most `gatehouse::logs::MAX_POLL` apart): a line logged
    /// just before this call is given five times that to arrive.
    pub fn log(&self) -> String {
        std::thread::sleep(gatehouse::logs::MAX_POLL * 5);
        self.log_now()
    }

    fn log_now(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The log once a line of it satisfies `line` (waiting up to `within`
    /// for the gateway to log it); panics naming `what` otherwise.
    pub fn wait_log_line(&self, what: &str, within: Duration, line: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log_now();
            if log.lines().any(&line) {
                return log;
            }
            assert!(Instant::now() < deadline, "no {what} in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// A libpq-style connection string for tokio-postgres.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=agent password={TOKEN} dbname={dbname} sslmode=disable",
            self.port
        )
    }

    /// Environment for psql/pgbench through gatehouse.
    pub fn pg_env(&self, cmd: &mut Command, dbname: &str) {
        cmd.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "agent")
            .env("PGPASSWORD", TOKEN)
            .env("PGDATABASE", dbname)
            .env("PGSSLMODE", "disable");
    }

    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sql` on the local PostgreSQL directly (as `postgres`, not through
/// gatehouse) and returns its output; fails the test if it fails.
pub fn direct_psql(sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            PG_HOST,
            "-p",
            &PG_PORT.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs psql through gatehouse and returns (success, stdout, stderr).
pub fn psql(g: &Gatehouse, dbname: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new("psql");
    g.pg_env(&mut cmd, dbname);
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-At"]).args(args);
    let out = cmd.output().expect("run psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A simple Query message.
pub fn query_message(sql: &str) -> Vec<u8> {
    let mut m = vec![b'Q'];
    m.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
    m.extend_from_slice(sql.as_bytes());
    m.push(0);
    m
}

/// A client logged in as `agent` (token [`TOKEN`]) on a plain socket, its
/// first ReadyForQuery read; the rest is the test's to speak.
pub fn raw_login(port: u16, database: &str, app: &str) -> TcpStream {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to gatehouse");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
    let mut body = 196608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", "agent"), ("database", database), ("application_name", app)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    m.extend_from_slice(&body);
    s.write_all(&m).expect("startup");
    let mut sent_password = false;
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).expect("login answer");
        let len = (u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize).saturating_sub(4);
        let mut rest = vec![0u8; len];
        s.read_exact(&mut rest).expect("login answer");
        match head[0] {
            b'R' if rest.get(..4) == Some(&[0, 0, 0, 3]) && !sent_password => {
                let mut p = vec![b'p'];
                p.extend_from_slice(&((TOKEN.len() + 5) as u32).to_be_bytes());
                p.extend_from_slice(TOKEN.as_bytes());
                p.push(0);
                s.write_all(&p).expect("password");
                sent_password = true;
            }
            b'Z' => return s,
            b'E' => panic!("login refused: {}", String::from_utf8_lossy(&rest)),
            _ => {}
        }
    }
}

// ---- PostgreSQL clients and the admin API, for policy and review tests ----

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), rand_suffix())
}

pub fn rand_suffix() -> u32 {
    use std::time::SystemTime;
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

pub async fn direct() -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    c
}

/// A client through gatehouse, with its notices collected.
pub async fn through(g: &Gatehouse) -> (tokio_postgres::Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    connect_collecting(&g.conninfo("postgres")).await.expect("connect")
}

/// A client connected with `conninfo`, with its notices collected.
pub async fn connect_collecting(
    conninfo: &str,
) -> Result<(tokio_postgres::Client, tokio::sync::mpsc::UnboundedReceiver<String>), tokio_postgres::Error> {
    let (c, mut conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = futures::StreamExt::next(&mut stream).await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notice(n)) => {
                    let _ = tx.send(n.message().to_string());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Ok((c, rx))
}

pub fn code(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("no sqlstate: {e}"))
}

pub fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default()
}

pub async fn count(table: &str) -> i64 {
    direct()
        .await
        .query_one(&format!("select count(*) from {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

pub fn http(port: u16, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let st = r.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = r.split_once("\r\n\r\n").unwrap_or((&r, ""));
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    (st, if chunked { dechunk(body) } else { body.to_string() })
}

/// The status of a request whose answer may be a stream that does not
/// end (server-sent events): the head is read, the rest left.
pub fn status_only(port: u16, method: &str, path: &str, token: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The body of a chunked HTTP/1.1 response.
pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The review id from the hold notice.
pub fn review_id(notice: &str) -> String {
    let at = notice.find("review ").expect("review in notice") + 7;
    notice[at..]
        .split(|c: char| c.is_whitespace() || c == ')' || c == '(')
        .next()
        .unwrap()
        .to_string()
}

/// A gatehouse with a MySQL listener (the returned port) beside its
/// PostgreSQL one, and a MariaDB target `maria` for the server on
/// 127.0.0.1:3306 (database `test`, root). `extra_server` goes into
/// [server], `target_extra` into the MariaDB target, `extra` is appended.
pub fn start_mysql(extra_server: &str, target_extra: &str, extra: &str) -> (Gatehouse, u16) {
    let pg = free_port();
    let my = free_port();
    let mut cfg = config_text(pg, extra_server, extra);
    if extra_server.contains("workers =") {
        cfg = cfg.replacen("workers = 2\n", "", 1);
    }
    cfg = cfg.replace(
        &format!("listen = [\"127.0.0.1:{pg}\"]"),
        &format!("listen = [\"127.0.0.1:{pg}\", {{ address = \"127.0.0.1:{my}\", protocol = \"mysql\" }}]"),
    );
    cfg.push_str(&format!(
        "\n[[target]]\nname = \"maria\"\nprotocol = \"mysql\"\ndatabase = \"test\"\nhost = \"127.0.0.1\"\nuser = \"root\"\ntls = \"disable\"\n{target_extra}\n"
    ));
    (Gatehouse::start_with(pg, &cfg), my)
}

/// Runs one statement (or several) on MariaDB directly as root, with the
/// stock client; panics when it fails. Returns its tab-separated output.
pub fn mariadb_direct(sql: &str) -> String {
    let out = Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            "3306",
            "-u",
            "root",
            "--batch",
            "--skip-column-names",
            "test",
            "-e",
            sql,
        ])
        .output()
        .expect("run mariadb");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA and a server certificate for `localhost`/127.0.0.1 it signed, as
/// files in `dir`: (ca, cert, key).
pub fn test_certificates(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "gatehouse mysql test CA");
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = p.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

/// Tokens of the admin API in tests that hold statements: an admin and an
/// approver (role `approver`).
pub const ADMIN: &str = "mysql-admin-token-1111";
pub const APPROVER: &str = "mysql-approver-token-2222";

/// `[admin]` on `admin_port` with the `ADMIN` and `APPROVER` tokens.
pub fn admin_section(admin_port: u16) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[[admin.token]]\nname = \"ops\"\ntoken_hash = \"{}\"\nroles = [\"admin\"]\n[[admin.token]]\nname = \"reviewer\"\ntoken_hash = \"{}\"\nroles = [\"approver\"]\n",
        token_hash(ADMIN),
        token_hash(APPROVER)
    )
}

/// The next pending review, decided with `verdict` ("approve"/"deny") by
/// `APPROVER`; the thread returns the review as JSON.
pub fn decide_next(admin_port: u16, verdict: &'static str, reason: &'static str) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        for _ in 0..400 {
            let (_, body) = http(admin_port, "GET", "/api/v1/reviews", ADMIN, "");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let pending = v["reviews"]
                .as_array()
                .and_then(|a| a.iter().find(|r| r["status"]["state"] == "pending").cloned());
            if let Some(r) = pending {
                let id = r["id"].as_str().unwrap().to_string();
                let (st, body) = http(
                    admin_port,
                    "POST",
                    &format!("/api/v1/reviews/{id}/{verdict}"),
                    APPROVER,
                    &format!("{{\"reason\":\"{reason}\"}}"),
                );
                assert_eq!(st, 200, "{body}");
                return r.to_string();
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("no review opened");
    })
}

/// The session recordings under `dir` (the audit log left out), once one
/// of them is sealed; waits up to 10 s.
pub fn sealed_recordings(dir: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut files = Vec::new();
        gatehouse::record::collect(dir, &mut files).unwrap();
        let text: String = files
            .iter()
            .filter(|p| !gatehouse::record::is_audit(p))
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect();
        if text.contains("\"seal\"") {
            return text;
        }
        assert!(Instant::now() < deadline, "no sealed recording under {}", dir.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A sealed recording (unsigned) started `age_secs` ago, padded to about
/// `size` bytes, in `dir`'s day directory 2020-01-01.
pub fn fake_recording(dir: &Path, id: &str, age_secs: u64, size: usize) -> PathBuf {
    use serde_json::json;
    let t = gatehouse::record::now_us() - age_secs * 1_000_000;
    let mut c = gatehouse::record::Chain::default();
    let mut out = c.line(
        t,
        "open",
        json!({ "id": id, "identity": "agent", "target": "postgres" }),
    );
    out.extend(c.line(
        t + 1,
        "statement",
        json!({ "n": 0, "sql": "x".repeat(size), "decision": "allow" }),
    ));
    out.extend(c.line(t + 2, "close", json!({ "end": "client-terminate" })));
    let n = c.seq();
    out.extend(c.line(t + 3, "seal", json!({ "records": n })));
    let day = dir.join("2020-01-01");
    std::fs::create_dir_all(&day).unwrap();
    let p = day.join(format!("{id}.ghrec"));
    std::fs::write(&p, out).unwrap();
    p
}

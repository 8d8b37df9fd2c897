//! Upstream authentication methods and TLS on both sides, against a private
//! PostgreSQL cluster this test binary starts (the system cluster uses trust
//! auth and no TLS, so it cannot show either).

mod common;
mod pgraw;

use common::*;
use pgraw::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Upstream passwords, each distinctive so a leak is easy to find.
const SCRAM_PW: &str = "Upstream-Scram-Secret-7f3a9c21e5";
const MD5_PW: &str = "Upstream-Md5-Secret-4b8d02aa71";
const CLEAR_PW: &str = "Upstream-Clear-Secret-93ce51f0d6";
const TLS_PW: &str = "Upstream-Tls-Secret-0d7e44b3a9";
const WRONG_PW: &str = "Wrong-Upstream-Secret-61aa2f9c07";

/// The private cluster: its port and the PEM files of its TLS setup.
struct PrivatePg {
    port: u16,
    dir: PathBuf,
    /// The CA that signed the server certificate (for localhost and 127.0.0.1).
    ca_file: PathBuf,
    /// Another CA that signed nothing here.
    other_ca_file: PathBuf,
    /// The server certificate and key (also used by gatehouse's own TLS).
    cert_file: PathBuf,
    key_file: PathBuf,
}

static PG: OnceLock<PrivatePg> = OnceLock::new();

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn as_postgres(bin: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(format!("{PG_BIN}/{bin}"));
    c
}

fn postgres_ids() -> (u32, u32) {
    let uid = run(Command::new("id").args(["-u", "postgres"]));
    let gid = run(Command::new("id").args(["-g", "postgres"]));
    (uid.trim().parse().expect("uid"), gid.trim().parse().expect("gid"))
}

fn pg_ctl_stop(data: &Path) {
    let _ = as_postgres("pg_ctl")
        .arg("-D")
        .arg(data)
        .args(["-m", "immediate", "-w", "-t", "10", "stop"])
        .output();
}

/// Stops clusters left behind by test processes that died without cleaning up.
fn reap_stale() {
    let Ok(rd) = std::fs::read_dir("/tmp") else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("gh-test-pg-").and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid != std::process::id() as i32 && !alive(pid) {
            pg_ctl_stop(&e.path().join("data"));
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

extern "C" fn stop_private_pg() {
    if let Some(pg) = PG.get() {
        pg_ctl_stop(&pg.dir.join("data"));
        let _ = std::fs::remove_dir_all(&pg.dir);
    }
}

fn make_ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("CA key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).expect("CA cert");
    (cert, key)
}

fn write_owned(path: &Path, text: &str, mode: u32, ids: (u32, u32)) {
    std::fs::write(path, text).expect("write file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    std::os::unix::fs::chown(path, Some(ids.0), Some(ids.1)).expect("chown");
}

fn start_private_pg() -> PrivatePg {
    reap_stale();
    let ids = postgres_ids();
    let dir = PathBuf::from(format!("/tmp/gh-test-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create cluster dir");
    std::os::unix::fs::chown(&dir, Some(ids.0), Some(ids.1)).expect("chown cluster dir");
    let data = dir.join("data");
    run(as_postgres("initdb")
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "-N", "-E", "UTF8"]));

    // TLS material: a CA, the server certificate it signs, and an unrelated CA.
    let (ca, ca_key) = make_ca("gatehouse test CA");
    let (other_ca, _) = make_ca("gatehouse unrelated CA");
    let key = rcgen::KeyPair::generate().expect("server key");
    let mut p =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("server params");
    p.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    let cert = p.signed_by(&key, &ca, &ca_key).expect("server cert");
    let ca_file = dir.join("ca.crt");
    let other_ca_file = dir.join("other-ca.crt");
    let cert_file = dir.join("server.crt");
    let key_file = dir.join("server.key");
    write_owned(&ca_file, &ca.pem(), 0o644, ids);
    write_owned(&other_ca_file, &other_ca.pem(), 0o644, ids);
    write_owned(&cert_file, &cert.pem(), 0o644, ids);
    write_owned(&key_file, &key.serialize_pem(), 0o600, ids);

    let port = free_port();
    let conf = format!(
        "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\n\
         ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n\
         fsync = off\nsynchronous_commit = off\nmax_connections = 40\nshared_buffers = 16MB\n\
         log_connections = on\n",
        dir = dir.display(),
        cert = cert_file.display(),
        key = key_file.display(),
    );
    let mut pgconf = std::fs::read_to_string(data.join("postgresql.conf")).expect("postgresql.conf");
    pgconf.push_str(&conf);
    write_owned(&data.join("postgresql.conf"), &pgconf, 0o600, ids);
    let hba = "\
local   all all                         trust
host    all postgres    127.0.0.1/32    trust
hostssl all tls_user    127.0.0.1/32    scram-sha-256
host    all tls_user    127.0.0.1/32    reject
host    all scram_user  127.0.0.1/32    scram-sha-256
host    all md5_user    127.0.0.1/32    md5
host    all clear_user  127.0.0.1/32    password
";
    write_owned(&data.join("pg_hba.conf"), hba, 0o600, ids);
    run(as_postgres("pg_ctl")
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("server.log"))
        .args(["-w", "-t", "30", "start"]));
    // SAFETY: registering a plain extern "C" function with no captured state.
    unsafe {
        libc::atexit(stop_private_pg);
    }

    let mut psql = Command::new("psql");
    psql.args([
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        "postgres",
    ])
    .arg("-p")
    .arg(port.to_string())
    .env("PGSSLMODE", "disable")
    .args(["-c", &format!("create role scram_user login password '{SCRAM_PW}'")])
    .args(["-c", &format!("create role clear_user login password '{CLEAR_PW}'")])
    .args(["-c", &format!("create role tls_user login password '{TLS_PW}'")])
    .args(["-c", "set password_encryption = 'md5'"])
    .args(["-c", &format!("create role md5_user login password '{MD5_PW}'")]);
    run(&mut psql);
    let enc = run(Command::new("psql")
        .args(["-X", "-At", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
        .arg("-p")
        .arg(port.to_string())
        .env("PGSSLMODE", "disable")
        .args([
            "-c",
            "select rolname || ':' || left(rolpassword, 5) from pg_authid where rolname like '%_user' order by 1",
        ]));
    assert!(
        enc.contains("md5_user:md5"),
        "md5_user must hold an MD5 password: {enc}"
    );
    assert!(
        enc.contains("scram_user:SCRAM"),
        "scram_user must hold a SCRAM verifier: {enc}"
    );

    PrivatePg {
        port,
        dir,
        ca_file,
        other_ca_file,
        cert_file,
        key_file,
    }
}

fn pg() -> &'static PrivatePg {
    PG.get_or_init(start_private_pg)
}

/// A `[[target]]` on the private cluster.
fn target(name: &str, user: &str, password: &str, tls: &str, extra: &str) -> String {
    format!(
        "[[target]]\nname = \"{name}\"\ndatabase = \"{name}\"\nupstream_database = \"postgres\"\n\
         host = \"127.0.0.1\"\nport = {port}\nuser = \"{user}\"\npassword = \"{password}\"\ntls = \"{tls}\"\n\
         connect_timeout_secs = 5\n{extra}\n",
        port = pg().port
    )
}

fn conninfo(g: &Gatehouse, db: &str, token: &str, sslmode: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user=agent password={token} dbname={db} sslmode={sslmode} connect_timeout=10",
        g.port
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Connects without TLS, runs `sql`, returns the first column of each row
/// as text, or the error's (SQLSTATE, message).
fn query_plain(g: &Gatehouse, db: &str, token: &str, sql: &str) -> Result<Vec<String>, (String, String)> {
    let info = conninfo(g, db, token, "disable");
    let sql = sql.to_string();
    rt().block_on(async move {
        let fut = async {
            let (client, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls)
                .await
                .map_err(err_parts)?;
            tokio::spawn(conn);
            let rows = client.simple_query(&sql).await.map_err(err_parts)?;
            Ok(rows
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
                    _ => None,
                })
                .collect())
        };
        tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .unwrap_or_else(|_| Err(("timeout".into(), "no answer within 30s".into())))
    })
}

fn err_parts(e: tokio_postgres::Error) -> (String, String) {
    match e.as_db_error() {
        Some(db) => (db.code().code().to_string(), db.message().to_string()),
        None => ("".into(), e.to_string()),
    }
}

fn client_tls_config(ca_file: &Path) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca_file).expect("read CA") {
        roots.add(c.expect("CA pem")).expect("add CA");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Connects over TLS (sslmode=require, trusting the test CA) and runs `sql`.
fn query_tls(g: &Gatehouse, db: &str, sql: &str) -> Result<Vec<String>, (String, String)> {
    let info = conninfo(g, db, TOKEN, "require");
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls_config(&pg().ca_file));
    let sql = sql.to_string();
    rt().block_on(async move {
        let fut = async {
            let (client, conn) = tokio_postgres::connect(&info, tls).await.map_err(err_parts)?;
            tokio::spawn(conn);
            let rows = client.simple_query(&sql).await.map_err(err_parts)?;
            Ok(rows
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
                    _ => None,
                })
                .collect())
        };
        tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .unwrap_or_else(|_| Err(("timeout".into(), "no answer within 30s".into())))
    })
}

const SSL_IN_USE: &str = "select ssl::text from pg_stat_ssl where pid = pg_backend_pid()";

fn assert_upstream_ssl(g: &Gatehouse, db: &str, want: bool) {
    let r = query_plain(g, db, TOKEN, SSL_IN_USE);
    assert_eq!(r, Ok(vec![want.to_string()]), "target {db}; log:\n{}", g.log());
}

#[test]
fn upstream_scram_md5_and_cleartext_logins() {
    // MD5 and the password in clear only where the target allows them,
    // and the password in clear only to a server whose certificate verified.
    let ca = format!("ca_file = \"{}\"", pg().ca_file.display());
    let extra = [
        target("scram", "scram_user", SCRAM_PW, "disable", ""),
        target("md5", "md5_user", MD5_PW, "disable", "auth = [\"md5\"]"),
        target(
            "clear",
            "clear_user",
            CLEAR_PW,
            "verify-full",
            &format!("{ca}\nauth = [\"password\"]"),
        ),
        target("md5_default", "md5_user", MD5_PW, "disable", ""),
        target("clear_default", "clear_user", CLEAR_PW, "verify-full", &ca),
    ]
    .concat();
    let g = Gatehouse::start("", &extra);
    for (db, user) in [("scram", "scram_user"), ("md5", "md5_user"), ("clear", "clear_user")] {
        let r = query_plain(&g, db, TOKEN, "select current_user::text");
        assert_eq!(r, Ok(vec![user.to_string()]), "login to {db}; log:\n{}", g.log());
    }
    // By default neither an MD5 hash nor the password in clear leaves.
    for (db, method) in [("md5_default", "md5"), ("clear_default", "password")] {
        let r = query_plain(&g, db, TOKEN, "select 1");
        let Err((_, msg)) = r else {
            panic!("{db} logged in: {r:?}")
        };
        assert!(msg.contains(method) && msg.contains("not allow"), "{db}: {msg}");
    }
    // The private cluster logged each role in with the method pg_hba.conf forces.
    let server_log = std::fs::read_to_string(pg().dir.join("server.log")).unwrap_or_default();
    for (user, method) in [
        ("scram_user", "scram-sha-256"),
        ("md5_user", "md5"),
        ("clear_user", "password"),
    ] {
        assert!(
            server_log.lines().any(|l| l.contains("connection authenticated")
                && l.contains(&format!("identity=\"{user}\""))
                && l.contains(&format!("method={method} "))),
            "{user} did not log in upstream:\n{server_log}"
        );
    }
}

#[test]
fn wrong_upstream_password_is_08006_naming_the_target() {
    let extra = target("scram_bad", "scram_user", WRONG_PW, "disable", "");
    let g = Gatehouse::start("", &extra);
    let (code, msg) = query_plain(&g, "scram_bad", TOKEN, "select 1").expect_err("wrong upstream password must fail");
    assert_eq!(code, "08006", "{msg}");
    assert!(msg.contains("scram_bad"), "the message should name the target: {msg}");
    assert!(
        !msg.contains(WRONG_PW) && !msg.contains(SCRAM_PW),
        "password leaked: {msg}"
    );
    let log = g.log();
    assert!(!log.contains(WRONG_PW), "the log holds the upstream password:\n{log}");
}

#[test]
fn upstream_tls_require_and_verify_full() {
    let p = pg();
    let ca = format!("ca_file = \"{}\"", p.ca_file.display());
    let other = format!("ca_file = \"{}\"", p.other_ca_file.display());
    let extra = [
        target("req", "scram_user", SCRAM_PW, "require", ""),
        target("vf", "scram_user", SCRAM_PW, "verify-full", &ca),
        target("vf_other", "scram_user", SCRAM_PW, "verify-full", &other),
        target("plain", "scram_user", SCRAM_PW, "disable", ""),
        target("tls_only_plain", "tls_user", TLS_PW, "disable", ""),
        target("tls_only_req", "tls_user", TLS_PW, "require", ""),
    ]
    .concat();
    let g = Gatehouse::start("", &extra);
    assert_upstream_ssl(&g, "req", true);
    assert_upstream_ssl(&g, "vf", true);
    assert_upstream_ssl(&g, "plain", false);
    assert_upstream_ssl(&g, "tls_only_req", true);

    let (code, msg) = query_plain(&g, "vf_other", TOKEN, "select 1").expect_err("an unknown CA must fail");
    assert_eq!(code, "08006", "{msg}");
    assert!(msg.contains("vf_other"), "the message should name the target: {msg}");
    assert!(
        msg.contains("TLS") && msg.contains("certificate"),
        "the message should say the certificate was refused: {msg}"
    );
    eprintln!("verify-full with another CA: {msg}");

    let (code, msg) =
        query_plain(&g, "tls_only_plain", TOKEN, "select 1").expect_err("a hostssl-only role without TLS must fail");
    assert_eq!(code, "08006", "{msg}");
    assert!(
        msg.contains("tls_only_plain"),
        "the message should name the target: {msg}"
    );
    eprintln!("hostssl-only role without TLS: {msg}");
    assert!(!msg.contains(TLS_PW), "password leaked: {msg}");
}

/// The harness config with `allow_cleartext_on_loopback` set and a
/// `[server.tls]` table using the test CA's server certificate.
fn start_with_server_tls(allow_loopback: bool, extra: &str) -> Gatehouse {
    let p = pg();
    let port = free_port();
    let text = config_text(port, "", extra).replacen(
        "allow_cleartext_on_loopback = true\n",
        &format!("allow_cleartext_on_loopback = {allow_loopback}\n"),
        1,
    );
    let tls = format!(
        "\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        p.cert_file.display(),
        p.key_file.display()
    );
    Gatehouse::start_with(port, &format!("{text}{tls}"))
}

#[test]
fn client_tls_login_works() {
    let g = start_with_server_tls(true, "");
    let r = query_tls(&g, "postgres", "select 40 + 2");
    assert_eq!(r, Ok(vec!["42".to_string()]), "log:\n{}", g.log());
    // A plain login still works from loopback when allowed.
    assert_eq!(
        query_plain(&g, "postgres", TOKEN, "select 1"),
        Ok(vec!["1".to_string()])
    );
    g.wait_log_line("client_tls=true", LOG_WAIT, |l| l.contains("client_tls=true"));
}

#[test]
fn cleartext_refused_without_tls_when_loopback_not_allowed() {
    let g = start_with_server_tls(false, "");
    let (code, msg) = query_plain(&g, "postgres", TOKEN, "select 1").expect_err("a non-TLS login must be refused");
    assert_eq!(code, "28000", "{msg}");
    let r = query_tls(&g, "postgres", "select 40 + 2");
    assert_eq!(r, Ok(vec!["42".to_string()]), "log:\n{}", g.log());
}

#[test]
fn wrong_client_token_is_28p01_and_unknown_database_3d000() {
    let g = Gatehouse::start("", "");
    let (code, msg) = query_plain(&g, "postgres", "not-the-token", "select 1").expect_err("wrong token");
    assert_eq!(code, "28P01", "{msg}");
    let (code, msg) = query_plain(&g, "no_such_db", TOKEN, "select 1").expect_err("unknown database");
    assert_eq!(code, "3D000", "{msg}");
    assert!(!g.log().contains(TOKEN), "the log holds the client token:\n{}", g.log());
    assert!(
        !g.log().contains("not-the-token"),
        "the log holds a presented token:\n{}",
        g.log()
    );
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn no_byte_of_the_upstream_password_reaches_the_client() {
    let extra = [
        target("scram", "scram_user", SCRAM_PW, "disable", ""),
        target("scram_tls", "scram_user", SCRAM_PW, "require", ""),
    ]
    .concat();
    let g = Gatehouse::start("", &extra);
    let mut all = Vec::new();
    for db in ["scram", "scram_tls"] {
        let (mut c, frames) = Raw::login(g.port, &[("user", "agent"), ("database", db)], TOKEN)
            .unwrap_or_else(|e| panic!("login to {db}: {:?}\n{}", first_error(&[(b'E', e)]), g.log()));
        assert!(frames.iter().any(|(t, _)| *t == b'K'), "BackendKeyData expected");
        assert_eq!(
            first_value(&c.simple("select current_user::text")),
            Some("scram_user".into())
        );
        c.simple("select 1, 'two', now()");
        c.simple("show all");
        let e = c.simple("select * from no_such_table_here");
        assert_eq!(first_error(&e).map(|e| e.0), Some("42P01".into()));
        let e = c.simple("select 1/0");
        assert_eq!(first_error(&e).map(|e| e.0), Some("22012".into()));
        c.simple("select usename, application_name, client_addr::text from pg_stat_activity");
        c.send(&frame(b'X', b"")).expect("terminate");
        let (_, closed) = c.until_closed(Duration::from_secs(10));
        assert!(closed, "the gateway should close after Terminate");
        all.extend_from_slice(&c.received);
    }
    let pw = SCRAM_PW.as_bytes();
    let forms = [
        pw.to_vec(),
        base64(pw).into_bytes(),
        base64(pw).trim_end_matches('=').as_bytes().to_vec(),
        hex::encode(pw).into_bytes(),
        hex::encode_upper(pw).into_bytes(),
    ];
    for f in &forms {
        assert!(
            !contains(&all, f),
            "the client received the upstream password as {:?}",
            String::from_utf8_lossy(f)
        );
    }
    // No long piece of the password either.
    for w in pw.windows(12) {
        assert!(!contains(&all, w), "the client received part of the upstream password");
    }
    // The log holds neither the client token nor the upstream password.
    std::thread::sleep(Duration::from_millis(200));
    let log = g.log();
    assert!(log.contains("session close"), "log:\n{log}");
    assert!(!log.contains(TOKEN), "the log holds the client token:\n{log}");
    for f in &forms {
        assert!(
            !log.as_bytes().windows(f.len()).any(|w| w == &f[..]),
            "the log holds the upstream password:\n{log}"
        );
    }
}

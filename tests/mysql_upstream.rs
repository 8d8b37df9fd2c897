//! gatehouse's upstream login to MariaDB with held credentials, against a
//! private MariaDB server this test binary starts (TLS with a test CA, the
//! ed25519 plugin loaded): `client_ed25519` accounts, accounts that
//! require TLS, `verify-full` against the right and a wrong CA, and TLS on
//! both hops at once.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const ED_PW: &str = "ed-secret-4242";
const TLS_PW: &str = "tls-secret-4242";

struct PrivateMaria {
    port: u16,
    dir: PathBuf,
    ca: PathBuf,
    other_ca: PathBuf,
    child: Mutex<Option<Child>>,
}

static MARIA: OnceLock<PrivateMaria> = OnceLock::new();

extern "C" fn stop_private_maria() {
    if let Some(m) = MARIA.get() {
        if let Some(mut c) = m.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&m.dir);
    }
}

fn chown_mysql(path: &Path) {
    let out = Command::new("chown")
        .arg("-R")
        .arg("mysql:mysql")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn start_private_maria() -> PrivateMaria {
    let dir = PathBuf::from(format!("/tmp/gh-test-maria-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = test_certificates(&dir);
    let other = tempfile::tempdir().unwrap();
    let (other_ca_tmp, _, _) = test_certificates(other.path());
    let other_ca = dir.join("other-ca.pem");
    std::fs::copy(other_ca_tmp, &other_ca).unwrap();
    // Its own temporary directory: the bootstrap's temporary tables in the
    // shared /tmp were seen to vanish under it while other tests ran.
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    chown_mysql(&dir);
    let data = dir.join("data");
    let out = Command::new("mariadb-install-db")
        .args([
            "--no-defaults",
            "--user=mysql",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .output()
        .expect("mariadb-install-db");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let port = free_port();
    let socket = dir.join("mysqld.sock");
    let child = Command::new("/usr/sbin/mariadbd")
        .args([
            "--no-defaults",
            "--user=mysql",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
        ])
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .arg(format!("--port={port}"))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
        .arg(format!("--ssl-ca={}", ca.display()))
        .arg(format!("--ssl-cert={}", cert.display()))
        .arg(format!("--ssl-key={}", key.display()))
        .arg("--plugin-load-add=auth_ed25519")
        .arg(format!("--log-error={}", dir.join("error.log").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mariadbd");
    let m = PrivateMaria {
        port,
        dir: dir.clone(),
        ca,
        other_ca,
        child: Mutex::new(Some(child)),
    };
    // SAFETY: registering a plain extern "C" function.
    unsafe {
        libc::atexit(stop_private_maria);
    }
    let root = |sql: &str| {
        Command::new("mariadb")
            .arg(format!("--socket={}", socket.display()))
            .args(["-u", "root", "--batch", "--skip-column-names", "-e", sql])
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !root("SELECT 1").status.success() {
        assert!(
            Instant::now() < deadline,
            "the private MariaDB did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let setup = format!(
        "CREATE DATABASE test;
         CREATE USER 'gh_ed'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('{ED_PW}');
         CREATE USER 'gh_tls'@'%' IDENTIFIED BY '{TLS_PW}' REQUIRE SSL;
         GRANT ALL ON test.* TO 'gh_ed'@'%';
         GRANT ALL ON test.* TO 'gh_tls'@'%';"
    );
    let out = root(&setup);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    m
}

fn maria() -> &'static PrivateMaria {
    MARIA.get_or_init(start_private_maria)
}

/// A gatehouse whose MariaDB target `test` is the private server, as
/// `user`/`password` with `tls` (and `extra_target` lines); `extra` is
/// appended (e.g. [server.tls]).
fn gatehouse(user: &str, password: &str, tls: &str, extra_target: &str, extra: &str) -> (Gatehouse, u16) {
    let m = maria();
    let pg = free_port();
    let my = free_port();
    let mut cfg = config_text(pg, "", extra);
    cfg = cfg.replace(
        &format!("listen = [\"127.0.0.1:{pg}\"]"),
        &format!("listen = [\"127.0.0.1:{pg}\", {{ address = \"127.0.0.1:{my}\", protocol = \"mysql\" }}]"),
    );
    cfg.push_str(&format!(
        "\n[[target]]\nname = \"private\"\nprotocol = \"mysql\"\ndatabase = \"test\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{user}\"\npassword = \"{password}\"\ntls = \"{tls}\"\n{extra_target}\n",
        m.port
    ));
    (Gatehouse::start_with(pg, &cfg), my)
}

/// The stock client through gatehouse: (success, stdout, stderr).
fn client(port: u16, extra: &[&str], sql: &str) -> (bool, String, String) {
    let out = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", "agent"])
        .arg(format!("-p{TOKEN}"))
        .args(extra)
        .args(["--batch", "--skip-column-names", "test", "-e", sql])
        .output()
        .expect("mariadb");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_ed25519_account_logs_in_upstream() {
    let (g, port) = gatehouse("gh_ed", ED_PW, "disable", "", "");
    let (ok, out, err) = client(port, &[], "SELECT CURRENT_USER(), 40 + 2");
    assert!(ok, "{err}\n{}", g.log());
    assert!(out.contains("gh_ed@%") && out.contains("42"), "{out}");
    // A wrong held password: the server refuses gatehouse, the client
    // hears which target.
    let (g, port) = gatehouse("gh_ed", "not-the-password", "disable", "", "");
    let (ok, _, err) = client(port, &[], "SELECT 1");
    assert!(!ok);
    assert!(err.contains("private") && err.contains("refused"), "{err}\n{}", g.log());
}

#[test]
fn tls_upstream_require_and_verify_full() {
    let m = maria();
    let ca = format!("ca_file = \"{}\"", m.ca.display());
    // An account that requires TLS: refused without it.
    let (_g, port) = gatehouse("gh_tls", TLS_PW, "disable", "", "");
    let (ok, _, err) = client(port, &[], "SELECT 1");
    assert!(!ok, "a REQUIRE SSL account logged in without TLS");
    assert!(err.contains("private"), "{err}");
    for (tls, extra) in [("require", ""), ("prefer", ""), ("verify-full", ca.as_str())] {
        let (g, port) = gatehouse("gh_tls", TLS_PW, tls, extra, "");
        let (ok, out, err) = client(port, &[], "SHOW SESSION STATUS LIKE 'Ssl_cipher'");
        assert!(ok, "{tls}: {err}\n{}", g.log());
        let cipher = out.split_whitespace().nth(1).unwrap_or("");
        assert!(
            !cipher.is_empty(),
            "{tls}: the upstream connection is not encrypted: {out}"
        );
    }
    // verify-full against a CA that did not sign the server's certificate.
    let wrong = format!("ca_file = \"{}\"", m.other_ca.display());
    let (g, port) = gatehouse("gh_tls", TLS_PW, "verify-full", &wrong, "");
    let (ok, _, err) = client(port, &[], "SELECT 1");
    assert!(!ok, "verify-full accepted a certificate its CA did not sign");
    assert!(err.contains("TLS") || err.contains("certificate"), "{err}\n{}", g.log());
    // verify-full with a name the certificate does not carry.
    let (_g, port) = gatehouse(
        "gh_tls",
        TLS_PW,
        "verify-full",
        &format!("{ca}\ntls_server_name = \"db.example\""),
        "",
    );
    let (ok, _, _) = client(port, &[], "SELECT 1");
    assert!(!ok, "verify-full accepted a certificate for another name");
}

#[test]
fn tls_on_both_hops() {
    let m = maria();
    let dir = tempfile::tempdir().unwrap();
    let (client_ca, cert, key) = test_certificates(dir.path());
    let server_tls = format!(
        "\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let (g, port) = gatehouse(
        "gh_tls",
        TLS_PW,
        "verify-full",
        &format!("ca_file = \"{}\"", m.ca.display()),
        &server_tls,
    );
    let ca_arg = format!("--ssl-ca={}", client_ca.display());
    let (ok, out, err) = client(
        port,
        &["--ssl", &ca_arg, "--ssl-verify-server-cert"],
        "SHOW SESSION STATUS LIKE 'Ssl_cipher'; SELECT 'AKIAIOSFODNN7EXAMPLE'",
    );
    assert!(ok, "{err}\n{}", g.log());
    assert!(!out.contains("AKIAIOSFODNN7EXAMPLE"), "{out}");
    g.wait_log_line("client_tls=true", LOG_WAIT, |l| l.contains("client_tls=true"));
    let cipher = out
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    assert!(!cipher.is_empty(), "upstream not encrypted: {out}");
}

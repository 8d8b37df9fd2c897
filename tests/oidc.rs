//! OIDC logins through the real gateway: tokens minted by `gatehouse token`,
//! keys from a JWKS file or URL, every refusal a 28P01 with a clear message,
//! key rotation, and no token in the log.

mod common;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use hmac::Mac;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ISS: &str = "https://idp.test";
const AUD: &str = "gatehouse";

fn gatehouse(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .output()
        .expect("run gatehouse");
    assert!(
        out.status.success(),
        "gatehouse {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `gatehouse token keygen` into `dir`; returns the private key's path.
fn keygen(dir: &Path, alg: &str, kid: &str) -> PathBuf {
    let d = dir.to_str().expect("path");
    gatehouse(&["token", "keygen", "--alg", alg, "--kid", kid, "--out", d]);
    dir.join(format!("{kid}.pem"))
}

/// `gatehouse token mint` with the test issuer and audience, then `extra`.
fn mint(key: &Path, kid: &str, sub: &str, groups: &str, extra: &[&str]) -> String {
    let k = key.to_str().expect("path");
    let mut args = vec![
        "token", "mint", "--key", k, "--kid", kid, "--iss", ISS, "--aud", AUD, "--sub", sub, "--groups", groups,
    ];
    args.extend_from_slice(extra);
    gatehouse(&args).trim().to_string()
}

fn oidc_section(jwks: &str, extra: &str) -> String {
    format!(
        r#"
[scan]
enabled = false

[oidc]
issuer = "{ISS}"
audience = ["{AUD}", "other-audience"]
{jwks}
refresh_min_secs = 1
{extra}

[oidc.role_map]
"db-admins" = "admin"
"analysts" = ["reader", "auditor"]

[oidc.role_targets]
admin = ["*"]
reader = ["postgres"]
"#
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Logs in as `user` with `password` and returns `current_user` upstream,
/// or the error's (SQLSTATE, message).
fn login(g: &Gatehouse, user: &str, password: &str, db: &str) -> Result<String, (String, String)> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(g.port)
        .user(user)
        .password(password)
        .dbname(db)
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    rt().block_on(async move {
        let fut = async {
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(err_parts)?;
            tokio::spawn(conn);
            let rows = client.simple_query("select current_user").await.map_err(err_parts)?;
            Ok(rows
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
                    _ => None,
                })
                .unwrap_or_default())
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

/// Asserts a 28P01 refusal whose message contains `want`.
fn refused(g: &Gatehouse, user: &str, token: &str, want: &str) {
    match login(g, user, token, "postgres") {
        Ok(u) => panic!("logged in as {u}; expected a refusal with `{want}`"),
        Err((code, msg)) => {
            assert_eq!(code, "28P01", "{msg}");
            assert!(
                msg.starts_with(&format!("password authentication failed for user \"{user}\": ")),
                "{msg}"
            );
            assert!(msg.contains(want), "expected `{want}` in: {msg}");
        }
    }
}

fn b64(data: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// A token with this header, the claims of a valid token, and `sig`.
fn forge(header: serde_json::Value, valid: &str, sig: &[u8]) -> String {
    let payload = valid.split('.').nth(1).expect("payload");
    format!("{}.{payload}.{}", b64(header.to_string()), b64(sig))
}

/// No token, and no token's signature, appears in the log.
fn assert_log_clean(g: &Gatehouse, tokens: &[&str]) {
    let log = g.log();
    for t in tokens {
        assert!(!log.contains(t), "a token is in the log:\n{log}");
        if let Some((_, sig)) = t.rsplit_once('.') {
            if sig.len() > 16 {
                assert!(!log.contains(sig), "a signature is in the log:\n{log}");
            }
        }
    }
}

/// Retries a login until it succeeds (a refreshed key set), up to `limit`.
fn login_eventually(g: &Gatehouse, user: &str, token: &str, limit: Duration) -> Result<String, (String, String)> {
    let deadline = Instant::now() + limit;
    loop {
        let r = login(g, user, token, "postgres");
        if r.is_ok() || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn oidc_logins_roles_and_every_refusal() {
    let keys = tempfile::tempdir().expect("tempdir");
    let rsa = keygen(keys.path(), "RS256", "rsa-1");
    let ec = keygen(keys.path(), "ES256", "ec-1");
    let ed = keygen(keys.path(), "EdDSA", "ed-1");
    let jwks_path = keys.path().join("jwks.json");
    let jwks = format!("jwks_file = \"{}\"", jwks_path.display());
    let g = Gatehouse::start("", &oidc_section(&jwks, ""));
    let mut seen: Vec<String> = Vec::new();

    // Valid tokens of each algorithm; groups become roles.
    let alice = mint(&rsa, "rsa-1", "alice", "db-admins,analysts,unmapped", &[]);
    assert_eq!(login(&g, "alice", &alice, "test").expect("RS256 login"), "postgres");
    let carol = mint(&ec, "ec-1", "carol", "db-admins", &[]);
    assert_eq!(login(&g, "carol", &carol, "postgres").expect("ES256 login"), "postgres");
    let bob = mint(&ed, "ed-1", "bob", "analysts", &[]);
    assert_eq!(login(&g, "bob", &bob, "postgres").expect("EdDSA login"), "postgres");
    seen.extend([alice.clone(), carol, bob.clone()]);
    let log = g.log();
    let open = |who: &str| {
        log.lines()
            .find(|l| l.contains("session open") && l.contains(&format!("identity={who} ")))
            .unwrap_or_else(|| panic!("no session open line for {who}:\n{log}"))
            .to_string()
    };
    assert!(
        open("alice").contains("roles=admin,auditor,reader "),
        "{}",
        open("alice")
    );
    assert!(open("bob").contains("roles=auditor,reader "), "{}", open("bob"));
    // Roles decide targets: a reader reaches `postgres` only.
    match login(&g, "bob", &bob, "test") {
        Err((code, msg)) => {
            assert_eq!(code, "28000", "{msg}");
            assert!(msg.contains("may not reach database \"test\""), "{msg}");
        }
        Ok(_) => panic!("a reader reached `test`"),
    }
    // Static tokens keep working in the same gateway.
    assert_eq!(login(&g, "agent", TOKEN, "postgres").expect("static token"), "postgres");

    // Every refusal: 28P01 and a message that names the cause.
    let expired = mint(&ed, "ed-1", "alice", "db-admins", &["--ttl=-10m"]);
    refused(&g, "alice", &expired, "token expired");
    let early = mint(&ed, "ed-1", "alice", "db-admins", &["--nbf-in", "10m"]);
    refused(&g, "alice", &early, "token not yet valid");
    let k = rsa.to_str().expect("path");
    let wrong_iss = gatehouse(&[
        "token",
        "mint",
        "--key",
        k,
        "--kid",
        "rsa-1",
        "--iss",
        "https://evil.test",
        "--aud",
        AUD,
        "--sub",
        "alice",
    ])
    .trim()
    .to_string();
    refused(&g, "alice", &wrong_iss, "wrong issuer \"https://evil.test\"");
    let wrong_aud = gatehouse(&[
        "token",
        "mint",
        "--key",
        k,
        "--kid",
        "rsa-1",
        "--iss",
        ISS,
        "--aud",
        "someone-else",
        "--sub",
        "alice",
    ])
    .trim()
    .to_string();
    refused(&g, "alice", &wrong_aud, "wrong audience \"someone-else\"");
    let (msg, sig) = alice.rsplit_once('.').expect("sig");
    let mut raw = URL_SAFE_NO_PAD.decode(sig).expect("b64");
    raw[10] ^= 0x40;
    let bad_sig = format!("{msg}.{}", b64(&raw));
    refused(&g, "alice", &bad_sig, "bad signature");
    // Claims edited after signing.
    let mut claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(msg.split('.').nth(1).expect("payload"))
            .expect("b64"),
    )
    .expect("json");
    claims["groups"] = serde_json::json!(["db-admins", "root"]);
    let edited = format!(
        "{}.{}.{sig}",
        msg.split('.').next().expect("header"),
        b64(claims.to_string())
    );
    refused(&g, "alice", &edited, "bad signature");
    let none = forge(serde_json::json!({"alg": "none", "typ": "JWT"}), &alice, b"");
    refused(&g, "alice", &none, "unsigned tokens (alg \"none\") are refused");
    // Algorithm confusion: HS256 with the RSA public key (as the JWKS
    // publishes it) as the HMAC secret.
    let jwks_text = std::fs::read_to_string(&jwks_path).expect("jwks");
    let doc: serde_json::Value = serde_json::from_str(&jwks_text).expect("jwks json");
    let rsa_jwk = doc["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == "rsa-1")
        .expect("rsa key")
        .clone();
    let header = serde_json::json!({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"});
    let unsigned = forge(header, &alice, b"");
    let signing_input = unsigned.rsplit_once('.').expect("parts").0.to_string();
    let mut hs_tokens = Vec::new();
    for secret in [
        rsa_jwk.to_string().into_bytes(),
        URL_SAFE_NO_PAD.decode(rsa_jwk["n"].as_str().expect("n")).expect("n"),
        jwks_text.clone().into_bytes(),
    ] {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).expect("hmac");
        mac.update(signing_input.as_bytes());
        let t = format!("{signing_input}.{}", b64(mac.finalize().into_bytes()));
        refused(&g, "alice", &t, "algorithm HS256 is refused");
        hs_tokens.push(t);
    }
    // A key of another type under the token's kid.
    let es_on_rsa = forge(
        serde_json::json!({"alg": "ES256", "kid": "rsa-1"}),
        &alice,
        &URL_SAFE_NO_PAD
            .decode(mint(&ec, "ec-1", "alice", "", &[]).rsplit_once('.').expect("sig").1)
            .expect("b64"),
    );
    refused(
        &g,
        "alice",
        &es_on_rsa,
        "does not match key \"rsa-1\", which is an RSA key",
    );
    let ps = forge(serde_json::json!({"alg": "PS256", "kid": "rsa-1"}), &alice, b"x");
    refused(&g, "alice", &ps, "algorithm \"PS256\" is not allowed");
    let unknown = mint(&ed, "no-such-kid", "alice", "db-admins", &[]);
    refused(&g, "alice", &unknown, "unknown key id \"no-such-kid\"");
    // The user must be the token's subject.
    refused(
        &g,
        "mallory",
        &alice,
        "user \"mallory\" does not match the token's `sub` \"alice\"",
    );
    // Malformed JWT-shaped passwords go to OIDC, not to the static tokens.
    let garbage = format!("{}.e30.", b64(r#"{"typ":"JWT"}"#));
    refused(&g, "alice", &garbage, "malformed token");
    // A non-JWT password for an unknown user is the static tokens' refusal.
    match login(&g, "alice", "not-a-jwt", "postgres") {
        Err((code, msg)) => assert_eq!(
            (code.as_str(), msg.as_str()),
            ("28P01", "password authentication failed for user \"alice\"")
        ),
        Ok(_) => panic!("logged in with a wrong static token"),
    }

    seen.extend([
        expired, early, wrong_iss, wrong_aud, bad_sig, edited, none, es_on_rsa, ps, unknown, alice,
    ]);
    seen.extend(hs_tokens);
    let refs: Vec<&str> = seen.iter().map(String::as_str).collect();
    assert_log_clean(&g, &refs);
    let log = g.log();
    assert!(
        log.contains("reason=password authentication failed for user \"alice\": token expired"),
        "{log}"
    );
}

#[test]
fn jwks_file_rotation() {
    let keys = tempfile::tempdir().expect("tempdir");
    let old = keygen(keys.path(), "ES256", "2024-old");
    let jwks_path = keys.path().join("jwks.json");
    let jwks = format!("jwks_file = \"{}\"", jwks_path.display());
    let g = Gatehouse::start("", &oidc_section(&jwks, "refresh_secs = 3600"));
    let t_old = mint(&old, "2024-old", "alice", "db-admins", &[]);
    login(&g, "alice", &t_old, "postgres").expect("old key");

    // The provider rotates: a new key replaces the old one in the set.
    let next = tempfile::tempdir().expect("tempdir");
    let new = keygen(next.path(), "EdDSA", "2025-new");
    let tmp = keys.path().join("jwks.json.tmp");
    std::fs::copy(next.path().join("jwks.json"), &tmp).expect("copy");
    std::fs::rename(&tmp, &jwks_path).expect("rename");
    let t_new = mint(&new, "2025-new", "alice", "db-admins", &[]);
    // The first attempt may find the kid unknown; it asks for a refresh
    // (at most once per refresh_min_secs), and a retry gets in.
    match login(&g, "alice", &t_new, "postgres") {
        Ok(_) => {}
        Err((code, msg)) => {
            assert_eq!(code, "28P01");
            assert!(msg.contains("unknown key id \"2025-new\""), "{msg}");
        }
    }
    login_eventually(&g, "alice", &t_new, Duration::from_secs(10)).expect("new key after the refresh");
    // The old key is gone.
    refused(&g, "alice", &t_old, "unknown key id \"2024-old\"");
    let log = g.log();
    assert!(log.contains("JWKS changed"), "{log}");

    // A reload builds a new key cache; the old one's refresher thread ends.
    assert_eq!(refresher_threads(&g), 1);
    g.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !g.log().contains("configuration reloaded") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(g.log().contains("configuration reloaded"), "{}", g.log());
    login(&g, "alice", &t_new, "postgres").expect("login after reload");
    while refresher_threads(&g) != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(refresher_threads(&g), 1, "the old refresher is still running");
    assert_log_clean(&g, &[&t_old, &t_new]);
}

/// Threads of the gateway named `gatehouse-jwks`.
fn refresher_threads(g: &Gatehouse) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", g.pid())) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim() == "gatehouse-jwks")
        .count()
}

/// A tiny HTTP(S) server on loopback serving `body` at any path; counts requests.
struct JwksServer {
    port: u16,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JwksServer {
    fn start(body: String, tls: Option<Arc<rustls::ServerConfig>>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let body = Arc::new(Mutex::new(body));
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, h, s) = (body.clone(), hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((tcp, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = tcp.set_nonblocking(false);
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                let text = b.lock().map(|t| t.clone()).unwrap_or_default();
                let _ = match &tls {
                    Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                        Ok(conn) => serve_one(rustls::StreamOwned::new(conn, tcp), &text, &h),
                        Err(_) => Ok(()),
                    },
                    None => serve_one(tcp, &text, &h),
                };
            }
        });
        JwksServer {
            port,
            body,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, body: String) {
        *self.body.lock().expect("lock") = body;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(mut s: impl Read + Write, body: &str, hits: &AtomicUsize) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    hits.fetch_add(1, Ordering::SeqCst);
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

#[test]
fn jwks_url_rotation_is_rate_limited() {
    let keys = tempfile::tempdir().expect("tempdir");
    let old = keygen(keys.path(), "RS256", "old");
    let server = JwksServer::start(
        std::fs::read_to_string(keys.path().join("jwks.json")).expect("jwks"),
        None,
    );
    let jwks = format!("jwks_url = \"http://127.0.0.1:{}/.well-known/jwks.json\"", server.port);
    let g = Gatehouse::start("", &oidc_section(&jwks, "refresh_secs = 3600"));
    let t_old = mint(&old, "old", "alice", "db-admins", &[]);
    login(&g, "alice", &t_old, "postgres").expect("key from the URL");
    assert_eq!(server.hits(), 1, "one fetch at start");

    // Unknown key ids ask for refreshes, at most one per refresh_min_secs.
    let stray = mint(&old, "stray", "alice", "db-admins", &[]);
    let start = Instant::now();
    for _ in 0..15 {
        refused(&g, "alice", &stray, "unknown key id \"stray\"");
    }
    std::thread::sleep(Duration::from_millis(300));
    let secs = start.elapsed().as_secs_f64();
    let fetched = server.hits() - 1;
    assert!(
        fetched as f64 <= secs + 1.0,
        "{fetched} fetches in {secs:.1}s for 15 unknown-kid logins"
    );

    // Rotation: the server now publishes a new key (and the old one).
    let new = keygen(keys.path(), "EdDSA", "new");
    server.set(std::fs::read_to_string(keys.path().join("jwks.json")).expect("jwks"));
    let t_new = mint(&new, "new", "alice", "db-admins", &[]);
    login_eventually(&g, "alice", &t_new, Duration::from_secs(10)).expect("new key after the refresh");
    login(&g, "alice", &t_old, "postgres").expect("old key still published");
    assert_log_clean(&g, &[&t_old, &t_new, &stray]);
}

#[test]
fn jwks_over_https_with_a_private_ca() {
    // A CA and a server certificate for localhost.
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, "oidc test CA");
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = p.self_signed(&ca_key).expect("CA cert");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf cert");
    let server_cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .expect("server config");

    let keys = tempfile::tempdir().expect("tempdir");
    let ed = keygen(keys.path(), "EdDSA", "k1");
    let ca_path = keys.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("ca");
    let server = JwksServer::start(
        std::fs::read_to_string(keys.path().join("jwks.json")).expect("jwks"),
        Some(Arc::new(server_cfg)),
    );
    let jwks = format!(
        "jwks_url = \"https://localhost:{}/jwks\"\njwks_ca_file = \"{}\"",
        server.port,
        ca_path.display()
    );
    let g = Gatehouse::start("", &oidc_section(&jwks, ""));
    let t = mint(&ed, "k1", "alice", "db-admins", &[]);
    login(&g, "alice", &t, "postgres").expect("login with keys fetched over HTTPS");

    // Without the CA, the fetch fails (logged), OIDC logins say why, and
    // static tokens still work.
    let jwks = format!("jwks_url = \"https://localhost:{}/jwks\"", server.port);
    let g2 = Gatehouse::start("", &oidc_section(&jwks, ""));
    refused(&g2, "alice", &t, "no signing keys are loaded yet");
    assert_eq!(
        login(&g2, "agent", TOKEN, "postgres").expect("static token"),
        "postgres"
    );
    assert!(g2.log().contains("JWKS could not be fetched"), "{}", g2.log());
    assert_log_clean(&g, &[&t]);
    assert_log_clean(&g2, &[&t]);
}

#[test]
fn check_reports_oidc_errors_with_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("g.toml");
    let text = config_text(
        free_port(),
        "",
        "[oidc]\nissuer = \"https://idp\"\naudience = \"gh\"\njwks_url = \"http://idp.example/jwks\"\n",
    );
    std::fs::write(&cfg, &text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = text.lines().position(|l| l.starts_with("jwks_url")).expect("line") + 1;
    assert!(
        err.contains(&format!("g.toml:{line}: oidc.jwks_url: must be an https:// URL")),
        "{err}"
    );
    // A JWKS file that is not a key set fails the check, naming the file.
    let bad = dir.path().join("jwks.json");
    std::fs::write(&bad, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).expect("write");
    let text = config_text(
        free_port(),
        "",
        "[oidc]\nissuer = \"https://idp\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\n",
    );
    std::fs::write(&cfg, &text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("oidc: ") && err.contains("jwks.json") && err.contains("symmetric"),
        "{err}"
    );
}

//! A PostgreSQL target's password leaves only in the ways its `auth`
//! allows: a hostile server (or whoever answers in its place after refusing
//! TLS) that asks for the password in clear or an MD5 hash gets nothing,
//! and a SCRAM exchange counts only once the server proved itself.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

const UPSTREAM_PW: &str = "upstream-s3cret-pw";

/// What the fake server does after the startup message.
#[derive(Clone, Copy)]
enum Asks {
    /// AuthenticationCleartextPassword.
    Cleartext,
    /// AuthenticationMD5Password.
    Md5,
    /// SASL (SCRAM-SHA-256), then AuthenticationOk right after the
    /// client's first message, with no server signature.
    ScramThenOk,
    /// AuthenticationOk at once (trust).
    Nothing,
}

fn be(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// A server on loopback that refuses TLS and then asks for `asks`; the
/// thread returns every byte it received after the startup message.
fn hostile_server(asks: Asks) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let read_msg = |s: &mut std::net::TcpStream| -> Vec<u8> {
            let mut len = [0u8; 4];
            s.read_exact(&mut len).unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize - 4];
            s.read_exact(&mut body).unwrap();
            body
        };
        let mut first = read_msg(&mut s);
        if first == [0x04, 0xd2, 0x16, 0x2f] {
            s.write_all(b"N").unwrap();
            first = read_msg(&mut s);
        }
        assert_eq!(&first[..4], &[0, 3, 0, 0], "a startup message");
        match asks {
            Asks::Cleartext => s.write_all(&be(b'R', &3i32.to_be_bytes())).unwrap(),
            Asks::Md5 => {
                let mut b = 5i32.to_be_bytes().to_vec();
                b.extend_from_slice(b"salt");
                s.write_all(&be(b'R', &b)).unwrap()
            }
            Asks::ScramThenOk => {
                let mut b = 10i32.to_be_bytes().to_vec();
                b.extend_from_slice(b"SCRAM-SHA-256\0\0");
                s.write_all(&be(b'R', &b)).unwrap();
            }
            Asks::Nothing => {}
        }
        let mut got = Vec::new();
        if matches!(asks, Asks::ScramThenOk) {
            // The client's first SCRAM message, then an Ok it must not take.
            let mut head = [0u8; 5];
            if s.read_exact(&mut head).is_ok() {
                let mut body = vec![0u8; u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize - 4];
                s.read_exact(&mut body).unwrap();
                got.extend_from_slice(&head);
                got.extend_from_slice(&body);
            }
        }
        if matches!(asks, Asks::ScramThenOk | Asks::Nothing) {
            let mut ok = be(b'R', &0i32.to_be_bytes());
            let mut key = 4242i32.to_be_bytes().to_vec();
            key.extend_from_slice(&7i32.to_be_bytes());
            ok.extend(be(b'K', &key));
            ok.extend(be(b'Z', b"I"));
            let _ = s.write_all(&ok);
        }
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        got.extend(rest);
        got
    });
    (port, h)
}

fn start(port: u16, auth: Option<&str>) -> Gatehouse {
    let auth = auth.map(|a| format!("auth = {a}\n")).unwrap_or_default();
    Gatehouse::start(
        "",
        &format!(
            "[[target]]\nname = \"hostile\"\ndatabase = \"hostile\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"app\"\npassword = \"{UPSTREAM_PW}\"\ntls = \"prefer\"\npool_size = 0\n{auth}"
        ),
    )
}

/// Logs in through gatehouse to `hostile`; the error text if it fails.
fn login(g: &Gatehouse) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        match tokio_postgres::connect(&g.conninfo("hostile"), tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                drop(client);
                let _ = conn.await;
                Ok(())
            }
            Err(e) => Err(e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string())),
        }
    })
}

fn md5_of_password() -> String {
    postgres_protocol::authentication::md5_hash(b"app", UPSTREAM_PW.as_bytes(), *b"salt")
}

#[test]
fn a_server_that_refuses_tls_and_asks_for_the_password_in_clear_gets_nothing() {
    let (port, server) = hostile_server(Asks::Cleartext);
    let g = start(port, None);
    let e = login(&g).expect_err("the login must fail");
    assert!(e.contains("password") && e.contains("not allow"), "{e}");
    drop(g);
    let got = server.join().unwrap();
    assert!(
        !String::from_utf8_lossy(&got).contains(UPSTREAM_PW),
        "the password left: {got:?}"
    );
    assert!(got.is_empty(), "nothing at all was sent: {got:?}");
}

#[test]
fn even_when_allowed_a_password_in_clear_needs_verified_tls() {
    // `gatehouse check` refuses the setting outright…
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.toml");
    std::fs::write(
        &path,
        config_text(
            free_port(),
            "",
            "[[target]]\nname = \"h\"\ndatabase = \"h\"\nhost = \"127.0.0.1\"\nuser = \"app\"\npassword = \"x\"\ntls = \"require\"\nauth = [\"password\"]\n",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("verify-full"), "{err}");
}

#[test]
fn an_md5_request_is_refused_unless_allowed_and_then_check_warns() {
    let (port, server) = hostile_server(Asks::Md5);
    let g = start(port, None);
    let e = login(&g).expect_err("the login must fail");
    assert!(e.contains("md5"), "{e}");
    drop(g);
    let got = server.join().unwrap();
    assert!(got.is_empty(), "no hash was sent: {got:?}");

    // Allowed explicitly: the hash goes (the server then hangs up), and
    // `gatehouse check` warns that it can be replayed.
    let (port, server) = hostile_server(Asks::Md5);
    let g = start(port, Some("[\"md5\"]"));
    let _ = login(&g);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--config"])
        .arg(&g.config_path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning") && err.contains("`hostile`") && err.contains("replay"),
        "{err}"
    );
    drop(g);
    let got = server.join().unwrap();
    assert!(String::from_utf8_lossy(&got).contains(&md5_of_password()), "{got:?}");
}

#[test]
fn an_ok_in_the_middle_of_scram_is_not_a_login() {
    let (port, server) = hostile_server(Asks::ScramThenOk);
    let g = start(port, None);
    let e = login(&g).expect_err("the login must fail");
    assert!(e.contains("without proving"), "{e}");
    assert!(!g.log().contains(UPSTREAM_PW));
    drop(g);
    let got = server.join().unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("n,,n=") && !text.contains(UPSTREAM_PW), "{text}");
}

#[test]
fn no_authentication_is_allowed_by_default_and_can_be_refused() {
    let (port, server) = hostile_server(Asks::Nothing);
    let g = start(port, None);
    login(&g).expect("trust is a login by default: nothing is sent");
    drop(g);
    server.join().unwrap();

    let (port, server) = hostile_server(Asks::Nothing);
    let g = start(port, Some("[\"scram-sha-256\"]"));
    let e = login(&g).expect_err("a target that insists on SCRAM");
    assert!(e.contains("none") && e.contains("not allow"), "{e}");
    drop(g);
    server.join().unwrap();
}

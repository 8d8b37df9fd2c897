//! The MySQL codec and login state machine against the real MariaDB on
//! 127.0.0.1:3306 (root without a password, database `test`): a blocking
//! driver logs in, runs a query, reads its result set, sends a payload
//! larger than 16 MiB in split packets and gets it back whole.

use gatehouse::wire::mysql::bytes::Reader;
use gatehouse::wire::mysql::login::{Action, ClientLogin, Established, LoginError, LoginOptions, TlsWanted};
use gatehouse::wire::mysql::response::{response_kind, ErrPacket, ResponseKind};
use gatehouse::wire::mysql::{caps, frame, payload, write_message, Command};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const MAX: usize = 64 << 20;

struct Conn {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open() -> Conn {
        let sock = TcpStream::connect("127.0.0.1:3306").expect("MariaDB on 127.0.0.1:3306");
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Conn { sock, buf: Vec::new() }
    }

    /// The next whole message: (sequence id, payload).
    fn read(&mut self) -> (u8, Vec<u8>) {
        loop {
            if let Some(m) = frame(&self.buf, MAX).unwrap() {
                let p = payload(&self.buf, &m).into_owned();
                self.buf.drain(..m.wire_len);
                return (m.first_seq, p);
            }
            let mut chunk = vec![0u8; 1 << 20];
            let n = self.sock.read(&mut chunk).unwrap();
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn login(&mut self, user: &str, password: &str) -> Result<Established, LoginError> {
        let mut l = ClientLogin::new(LoginOptions {
            user: user.into(),
            password: password.into(),
            database: Some(b"test".to_vec()),
            charset: 45,
            capabilities: caps::MULTI_RESULTS | caps::MULTI_STATEMENTS,
            tls: TlsWanted::No,
            attributes: vec![(b"_client_name".to_vec(), b"gatehouse-test".to_vec())],
        });
        loop {
            let (seq, p) = self.read();
            match l.on_message(seq, &p)? {
                Action::Send(bytes) => self.sock.write_all(&bytes).unwrap(),
                Action::Read => {}
                Action::StartTls(_) => panic!("no TLS asked for"),
                Action::Done(e) => return Ok(e),
            }
        }
    }

    fn command(&mut self, cmd: Command, body: &[u8]) {
        let mut p = vec![cmd.code()];
        p.extend_from_slice(body);
        let mut out = Vec::new();
        write_message(&mut out, 0, &p);
        self.sock.write_all(&out).unwrap();
    }

    /// A text result set's rows (values as strings, NULL as None), or the
    /// error packet's code.
    fn query(&mut self, caps: u32, sql: &[u8]) -> Result<Vec<Vec<Option<Vec<u8>>>>, u16> {
        self.command(Command::Query, sql);
        let (_, first) = self.read();
        match response_kind(&first, caps) {
            Some(ResponseKind::Err) => return Err(ErrPacket::parse(&first).unwrap().code),
            Some(ResponseKind::Ok) => return Ok(Vec::new()),
            _ => {}
        }
        let columns = Reader::new(&first).lenenc_int().unwrap();
        for _ in 0..columns {
            self.read();
        }
        if caps & caps::DEPRECATE_EOF == 0 {
            let (_, eof) = self.read();
            assert_eq!(response_kind(&eof, caps), Some(ResponseKind::Eof));
        }
        let mut rows = Vec::new();
        loop {
            let (_, p) = self.read();
            match response_kind(&p, caps) {
                Some(ResponseKind::Eof | ResponseKind::OkAsEof) => return Ok(rows),
                Some(ResponseKind::Err) => return Err(ErrPacket::parse(&p).unwrap().code),
                _ => {
                    let mut r = Reader::new(&p);
                    let mut row = Vec::new();
                    for _ in 0..columns {
                        let len = r.lenenc_int_or_null().unwrap();
                        row.push(len.map(|n| r.bytes(n as usize).unwrap().to_vec()));
                    }
                    assert!(r.is_empty());
                    rows.push(row);
                }
            }
        }
    }
}

fn root() -> (Conn, Established) {
    let mut c = Conn::open();
    let e = c.login("root", "").expect("root logs in without a password");
    (c, e)
}

#[test]
fn logs_in_and_reads_a_result_set() {
    let (mut c, e) = root();
    assert!(e.server_version.windows(7).any(|w| w == b"MariaDB"), "{e:?}");
    let rows = c.query(e.capabilities, b"SELECT 1, NULL, 'x', DATABASE()").unwrap();
    assert_eq!(
        rows,
        vec![vec![
            Some(b"1".to_vec()),
            None,
            Some(b"x".to_vec()),
            Some(b"test".to_vec())
        ]]
    );
    assert_eq!(
        c.query(e.capabilities, b"SELECT * FROM no_such_table_at_all"),
        Err(1146)
    );
    c.command(Command::Ping, b"");
    let (_, p) = c.read();
    assert_eq!(response_kind(&p, e.capabilities), Some(ResponseKind::Ok));
}

#[test]
fn native_password_accounts() {
    let (mut admin, e) = root();
    let user = format!("gh_login_{}", std::process::id());
    admin
        .query(
            e.capabilities,
            format!(
                "CREATE OR REPLACE USER '{user}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('s3cret')"
            )
            .as_bytes(),
        )
        .unwrap();
    admin
        .query(
            e.capabilities,
            format!("GRANT SELECT ON test.* TO '{user}'@'%'").as_bytes(),
        )
        .unwrap();
    let mut c = Conn::open();
    let ok = c.login(&user, "s3cret").unwrap();
    assert_eq!(
        c.query(ok.capabilities, b"SELECT CURRENT_USER() LIKE 'gh_login_%'")
            .unwrap()[0][0],
        Some(b"1".to_vec())
    );
    let mut bad = Conn::open();
    match bad.login(&user, "wrong") {
        Err(LoginError::Server { code, sql_state, .. }) => {
            assert_eq!(code, 1045);
            assert_eq!(sql_state, Some(*b"28000"));
        }
        other => panic!("{other:?}"),
    }
    admin
        .query(e.capabilities, format!("DROP USER '{user}'@'%'").as_bytes())
        .unwrap();
}

/// A statement longer than 2^24 − 1 bytes goes as split packets and its
/// result (as long) comes back split; both ends agree on the framing.
#[test]
fn payloads_over_sixteen_mebibytes_both_ways() {
    // The session's packet limit is read-only and taken from the global one
    // at login (16 MiB here): raise it for the connections made after this.
    let (mut admin, ae) = root();
    admin
        .query(
            ae.capabilities,
            b"SET GLOBAL max_allowed_packet = GREATEST(@@global.max_allowed_packet, 67108864)",
        )
        .unwrap();
    let (mut c, e) = root();
    let n = (1 << 24) + 100;
    let mut sql = b"SELECT LENGTH('".to_vec();
    sql.extend(std::iter::repeat_n(b'a', n));
    sql.extend_from_slice(b"') AS n, REPEAT('b', 16777300) AS big");
    let rows = c.query(e.capabilities, &sql).unwrap();
    assert_eq!(rows[0][0], Some(n.to_string().into_bytes()));
    let big = rows[0][1].as_ref().unwrap();
    assert_eq!(big.len(), 16_777_300);
    assert!(big.iter().all(|&b| b == b'b'));
}

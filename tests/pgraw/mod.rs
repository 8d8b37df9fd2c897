//! A raw PostgreSQL v3 client over a blocking `TcpStream`, for tests that
//! must write exact bytes (hostile frames) or see every byte received.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A typed frame: tag, 4-byte length (itself included), body.
pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A StartupMessage for protocol 3.0.
pub fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = (3u32 << 16).to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut v = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(&body);
    v
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut b = sql.as_bytes().to_vec();
    b.push(0);
    frame(b'Q', &b)
}

/// Parse of `sql` as statement `name` (bytes: names may be any length).
pub fn parse(name: &[u8], sql: &str) -> Vec<u8> {
    let mut b = name.to_vec();
    b.push(0);
    b.extend_from_slice(sql.as_bytes());
    b.push(0);
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(b'P', &b)
}

/// Bind of statement `stmt` into portal `portal`, text parameters.
pub fn bind(portal: &[u8], stmt: &[u8], params: &[Option<&[u8]>]) -> Vec<u8> {
    let mut b = portal.to_vec();
    b.push(0);
    b.extend_from_slice(stmt);
    b.push(0);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        match p {
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(b'B', &b)
}

pub fn execute(portal: &[u8]) -> Vec<u8> {
    let mut b = portal.to_vec();
    b.push(0);
    b.extend_from_slice(&0i32.to_be_bytes());
    frame(b'E', &b)
}

/// Describe (`kind` `S` or `P`).
pub fn describe(kind: u8, name: &[u8]) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend_from_slice(name);
    b.push(0);
    frame(b'D', &b)
}

/// Close (`kind` `S` or `P`).
pub fn close(kind: u8, name: &[u8]) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend_from_slice(name);
    b.push(0);
    frame(b'C', &b)
}

pub fn sync() -> Vec<u8> {
    frame(b'S', b"")
}

pub fn password(p: &str) -> Vec<u8> {
    let mut b = p.as_bytes().to_vec();
    b.push(0);
    frame(b'p', &b)
}

/// A field of an ErrorResponse/NoticeResponse body.
pub fn field(body: &[u8], code: u8) -> Option<String> {
    let mut i = 0;
    while i < body.len() && body[i] != 0 {
        let c = body[i];
        let end = i + 1 + body[i + 1..].iter().position(|&b| b == 0)?;
        if c == code {
            return Some(String::from_utf8_lossy(&body[i + 1..end]).into_owned());
        }
        i = end + 1;
    }
    None
}

pub fn sqlstate(body: &[u8]) -> String {
    field(body, b'C').unwrap_or_default()
}

/// What a read ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The peer closed (EOF or reset).
    Closed,
    /// Nothing arrived before the deadline.
    Timeout,
}

/// Frames as (tag, body).
pub type Frames = Vec<(u8, Vec<u8>)>;

/// A raw client connection that records every byte it receives.
#[derive(Debug)]
pub struct Raw {
    pub s: TcpStream,
    /// Every byte received so far.
    pub received: Vec<u8>,
    /// Received and not yet parsed into frames.
    pending: Vec<u8>,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        Raw::from_stream(TcpStream::connect(("127.0.0.1", port)).expect("connect to gatehouse"))
    }

    pub fn from_stream(s: TcpStream) -> Raw {
        s.set_nodelay(true).ok();
        Raw {
            s,
            received: Vec::new(),
            pending: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes)
    }

    /// Reads more bytes until `deadline`; Ok(false) on EOF.
    fn fill(&mut self, deadline: Instant) -> Result<bool, End> {
        let now = Instant::now();
        if now >= deadline {
            return Err(End::Timeout);
        }
        self.s
            .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
            .ok();
        let mut buf = [0u8; 16 * 1024];
        match self.s.read(&mut buf) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.received.extend_from_slice(&buf[..n]);
                self.pending.extend_from_slice(&buf[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(End::Timeout),
            Err(_) => Ok(false),
        }
    }

    /// The next frame, or how the connection ended.
    pub fn next(&mut self, timeout: Duration) -> Result<(u8, Vec<u8>), End> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.pending.len() >= 5 {
                let len =
                    u32::from_be_bytes([self.pending[1], self.pending[2], self.pending[3], self.pending[4]]) as usize;
                assert!(len >= 4, "server sent a frame with length {len}");
                if self.pending.len() > len {
                    let tag = self.pending[0];
                    let body = self.pending[5..len + 1].to_vec();
                    self.pending.drain(..len + 1);
                    return Ok((tag, body));
                }
            }
            if !self.fill(deadline)? {
                return Err(End::Closed);
            }
        }
    }

    /// Frames until ReadyForQuery (included); panics on close or timeout.
    pub fn until_ready(&mut self, timeout: Duration) -> Frames {
        let mut out = Vec::new();
        loop {
            match self.next(timeout) {
                Ok(f) => {
                    let done = f.0 == b'Z';
                    out.push(f);
                    if done {
                        return out;
                    }
                }
                Err(e) => panic!("connection ended before ReadyForQuery: {e:?}; got {out:?}"),
            }
        }
    }

    /// Frames until the connection closes; also reports whether it closed
    /// (true) or went quiet for `timeout` (false).
    pub fn until_closed(&mut self, timeout: Duration) -> (Frames, bool) {
        let mut out = Vec::new();
        loop {
            match self.next(timeout) {
                Ok(f) => out.push(f),
                Err(End::Closed) => return (out, true),
                Err(End::Timeout) => return (out, false),
            }
        }
    }

    /// Logs in with a cleartext password; returns the frames after the
    /// password up to ReadyForQuery, or the ErrorResponse body.
    pub fn login(port: u16, params: &[(&str, &str)], pw: &str) -> Result<(Raw, Frames), Vec<u8>> {
        let mut r = Raw::connect(port);
        r.send(&startup(params)).expect("send startup");
        let t = Duration::from_secs(15);
        match r.next(t) {
            Ok((b'R', b)) if b.len() >= 4 && b[..4] == [0, 0, 0, 3] => {}
            Ok((b'E', b)) => return Err(b),
            other => panic!("expected a cleartext password request, got {other:?}"),
        }
        r.send(&password(pw)).expect("send password");
        let mut frames = Vec::new();
        loop {
            match r.next(t) {
                Ok((b'E', b)) => return Err(b),
                Ok((b'Z', b)) => {
                    frames.push((b'Z', b));
                    return Ok((r, frames));
                }
                Ok(f) => frames.push(f),
                Err(e) => panic!("connection ended during login: {e:?}"),
            }
        }
    }

    /// Runs a simple query; returns its frames up to ReadyForQuery.
    pub fn simple(&mut self, sql: &str) -> Frames {
        self.send(&query(sql)).expect("send query");
        self.until_ready(Duration::from_secs(30))
    }
}

/// Every ErrorResponse among `frames`, as (SQLSTATE, message).
pub fn errors(frames: &[(u8, Vec<u8>)]) -> Vec<(String, String)> {
    frames
        .iter()
        .filter(|(t, _)| *t == b'E')
        .map(|(_, b)| (sqlstate(b), field(b, b'M').unwrap_or_default()))
        .collect()
}

/// The first ErrorResponse among `frames`, as (SQLSTATE, message).
pub fn first_error(frames: &[(u8, Vec<u8>)]) -> Option<(String, String)> {
    frames
        .iter()
        .find(|(t, _)| *t == b'E')
        .map(|(_, b)| (sqlstate(b), field(b, b'M').unwrap_or_default()))
}

/// The first column of the first DataRow among `frames`, as text.
pub fn first_value(frames: &[(u8, Vec<u8>)]) -> Option<String> {
    let (_, b) = frames.iter().find(|(t, _)| *t == b'D')?;
    let n = i16::from_be_bytes([b[0], b[1]]);
    if n < 1 {
        return None;
    }
    let len = i32::from_be_bytes([b[2], b[3], b[4], b[5]]);
    if len < 0 {
        return None;
    }
    Some(String::from_utf8_lossy(&b[6..6 + len as usize]).into_owned())
}

/// Whether process `pid` is alive and not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit(')').next().and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

//! MySQL upstream connections kept for reuse, one pool per worker thread
//! (`core::pool` keeps them).
//!
//! A session that ends with COM_QUIT leaves its upstream connection to the
//! pool of its target when the target has `pool_size > 0`: gatehouse
//! sends COM_RESET_CONNECTION (the server rolls back an open transaction,
//! releases locks, drops temporary tables, closes prepared statements and
//! puts session variables back to the server's defaults) and COM_INIT_DB
//! of the target's database, and keeps the connection only when both
//! answer OK. The next session with the same key skips the upstream login.
//! Unlike the PostgreSQL side, a MySQL session takes its connection at
//! login: the greeting's connection id and the OK that ends the login
//! carry nothing of the server's that would wait for the first query.

use super::upstream::Upstream;
use crate::core::pool::{Pool, PoolLimits, Pooled};
use crate::proxy::stream::{peek, Peeked};
use crate::wire::mysql::packet::write_message;
use crate::wire::mysql::response::{response_kind, OkPacket, ResponseKind};
use crate::wire::mysql::Command;
use std::cell::RefCell;
use std::time::Duration;

/// How long a session's end waits for the reset's answers.
const RESET_TIMEOUT: Duration = Duration::from_secs(2);

/// Which upstream connections are interchangeable: what the login fixed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The configuration generation (a reload starts new pools).
    pub generation: u64,
    pub target: String,
    pub account: String,
    /// Capabilities asked of the server at login (multi-statements,
    /// found rows, local files…): they cannot change afterwards.
    pub capabilities: u32,
    /// The connection's collation from the login (a reset goes back to it).
    pub collation: u8,
}

impl Pooled for Upstream {
    fn looks_alive(&self) -> bool {
        peek(self.conn.stream.raw_fd()) == Peeked::Nothing
    }

    fn born(&self) -> std::time::Instant {
        self.born
    }

    /// COM_QUIT when the socket takes it without waiting (plain sockets),
    /// then the close.
    fn close(self) {
        if !self.tls {
            let quit = [1, 0, 0, 0, Command::Quit.code()];
            // SAFETY: the connection's open socket and a live buffer.
            unsafe {
                libc::send(
                    self.conn.stream.raw_fd(),
                    quit.as_ptr().cast(),
                    quit.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                );
            }
        }
    }
}

thread_local! {
    static POOL: RefCell<Pool<PoolKey, Upstream>> = RefCell::new(Pool::default());
}

/// A kept connection for `key` that still looks alive, newest first.
pub fn take(key: &PoolKey) -> Option<Upstream> {
    POOL.with(|p| p.borrow_mut().take(key))
}

/// Keeps a connection `reset` answered for, if the target's pools have
/// room; closes it otherwise.
pub fn put(key: &PoolKey, mut up: Upstream, limits: &PoolLimits) {
    up.conn.buf = Vec::new();
    up.conn.pos = 0;
    POOL.with(|p| p.borrow_mut().put(key, up, limits));
}

/// Closes kept connections that expired, died, or belong to an older
/// configuration than `generation`. Run every few seconds by each worker.
pub fn sweep(generation: u64) {
    POOL.with(|p| p.borrow_mut().sweep(|k| k.generation < generation));
}

/// Words of statements whose effects COM_RESET_CONNECTION leaves in place
/// (an active role, an XA transaction) or that run code that could cause
/// them: a session that sent one does not give its connection back.
const TAINTING_WORDS: [&[u8]; 4] = [b"ROLE", b"XA", b"CALL", b"EXECUTE"];

/// Whether a statement's text holds one of `TAINTING_WORDS` as a word, in
/// any case, wherever it is (comments included: erring on the side of a
/// new login).
pub fn taints_connection(sql: &[u8]) -> bool {
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    TAINTING_WORDS.iter().any(|w| {
        sql.windows(w.len()).enumerate().any(|(i, win)| {
            win.eq_ignore_ascii_case(w)
                && (i == 0 || !ident(sql[i - 1]))
                && sql.get(i + w.len()).is_none_or(|&b| !ident(b))
        })
    })
}

/// Puts a connection a session left back to a fresh session's state:
/// COM_RESET_CONNECTION and COM_INIT_DB of `database`, sent together.
/// True when both answered OK and nothing else is waiting.
pub async fn reset(up: &mut Upstream, database: &str) -> bool {
    if !up.conn.pending().is_empty() {
        return false;
    }
    let mut out = Vec::with_capacity(16 + database.len());
    write_message(&mut out, 0, &[Command::ResetConnection.code()]);
    let mut init = vec![Command::InitDb.code()];
    init.extend_from_slice(database.as_bytes());
    write_message(&mut out, 0, &init);
    let caps = up.established.capabilities;
    let answers = async {
        up.conn.write_all(out).await.ok()?;
        let mut status = 0;
        for _ in 0..2 {
            let (_, p) = up.conn.read_message(1 << 16).await.ok()?;
            if response_kind(&p, caps) != Some(ResponseKind::Ok) {
                return None;
            }
            status = OkPacket::parse(&p, caps).ok()?.status;
        }
        Some(status)
    };
    match monoio::time::timeout(RESET_TIMEOUT, answers).await {
        Ok(Some(status)) if up.conn.pending().is_empty() => {
            up.established.status = status;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::taints_connection;

    #[test]
    fn statements_the_reset_would_not_undo() {
        for sql in [
            "SET ROLE dba",
            "set role none",
            "XA START 'x'",
            "call p()",
            "/* x */ execute s",
            "SET @a = 1; SET ROLE `r`",
        ] {
            assert!(taints_connection(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT roles FROM t",
            "SELECT 1",
            "SELECT max_xa FROM t",
            "UPDATE t SET recall = 1",
        ] {
            assert!(!taints_connection(sql.as_bytes()), "{sql}");
        }
    }
}

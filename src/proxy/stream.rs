//! One socket type for both sides of a session: plain TCP or TLS over it.

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::net::TcpStream;
use monoio::BufResult;
use std::os::fd::{AsRawFd, RawFd};

/// What a socket holds for reading right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peeked {
    /// At least this first byte, left in place.
    Byte(u8),
    /// The peer closed its side.
    Eof,
    /// Nothing yet.
    Nothing,
    /// An error (a reset connection, or not a socket).
    Failed,
}

/// TCP keepalive on both sides of every session: a peer that vanished
/// without a word (a host powered off, a network that black-holes) is
/// found within about two minutes of silence (60 s, then 6 probes 10 s
/// apart) instead of holding the session for hours.
const KEEPALIVE_IDLE_SECS: libc::c_int = 60;
const KEEPALIVE_INTERVAL_SECS: libc::c_int = 10;
const KEEPALIVE_PROBES: libc::c_int = 6;

/// Turns TCP keepalive on for a connected socket (best effort: a failure
/// leaves the socket as it was).
pub fn keepalive(fd: RawFd) {
    for (level, name, v, _) in &CLIENT_OPTIONS[..4] {
        set_int(fd, *level, *name, *v);
    }
}

/// The options every client socket gets: keepalive (as [`keepalive`])
/// and `TCP_NODELAY`, with their names for errors.
const CLIENT_OPTIONS: [(libc::c_int, libc::c_int, libc::c_int, &str); 5] = [
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1, "SO_KEEPALIVE"),
    (
        libc::IPPROTO_TCP,
        libc::TCP_KEEPIDLE,
        KEEPALIVE_IDLE_SECS,
        "TCP_KEEPIDLE",
    ),
    (
        libc::IPPROTO_TCP,
        libc::TCP_KEEPINTVL,
        KEEPALIVE_INTERVAL_SECS,
        "TCP_KEEPINTVL",
    ),
    (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES, "TCP_KEEPCNT"),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY, 1, "TCP_NODELAY"),
];

/// A listener for clients on `addr` (SO_REUSEPORT: one per worker),
/// listening, with the client options set before it listens. Linux copies
/// a listener's options to each connection when its handshake completes
/// (not when it is accepted), so every client's socket has them with no
/// system call of its own: in a storm of short sessions, five fewer a
/// connection. Set after `listen`, a client whose handshake completed in
/// between would keep the kernel's defaults for its whole session.
pub fn client_listener_socket(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    for (level, name, v, what) in CLIENT_OPTIONS {
        if set_int(socket.as_raw_fd(), level, name, v) != 0 {
            let e = std::io::Error::last_os_error();
            return Err(std::io::Error::new(e.kind(), format!("setting {what}: {e}")));
        }
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// `setsockopt` of an int; the call's result (0, or -1 with errno set).
fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> libc::c_int {
    // SAFETY: setsockopt reads an int from a live local; an fd that is not
    // a TCP socket gives an error.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    }
}

/// Looks at the next byte of a socket without taking it or blocking.
pub fn peek(fd: RawFd) -> Peeked {
    let mut b = [0u8; 1];
    // SAFETY: `b` is a live one-byte buffer; MSG_PEEK leaves the data in
    // place and MSG_DONTWAIT never blocks. An fd that is not an open socket
    // gives an error.
    let n = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    match n {
        0 => Peeked::Eof,
        1 => Peeked::Byte(b[0]),
        _ => match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Peeked::Nothing,
            _ => Peeked::Failed,
        },
    }
}

pub enum Stream {
    Plain(TcpStream),
    ServerTls(Box<monoio_rustls::ServerTlsStream<TcpStream>>, RawFd),
    ClientTls(Box<monoio_rustls::ClientTlsStream<TcpStream>>, RawFd),
    /// Left behind while a TLS upgrade holds the socket; every I/O fails.
    Closed,
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "connection closed")
}

// SAFETY: every variant is `Split` (TcpStream, and the rustls streams over a
// `Split` IO); reads and writes of a variant may run concurrently.
unsafe impl Split for Stream {}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::ServerTls(..) | Stream::ClientTls(..))
    }

    /// The socket's descriptor (-1 when closed).
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Plain(s) => s.as_raw_fd(),
            Stream::ServerTls(_, fd) | Stream::ClientTls(_, fd) => *fd,
            Stream::Closed => -1,
        }
    }
}

impl AsyncReadRent for Stream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::ServerTls(s, _) => s.read(buf).await,
            Stream::ClientTls(s, _) => s.read(buf).await,
            Stream::Closed => (Err(closed()), buf),
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.readv(buf).await,
            Stream::ServerTls(s, _) => s.readv(buf).await,
            Stream::ClientTls(s, _) => s.readv(buf).await,
            Stream::Closed => (Err(closed()), buf),
        }
    }
}

impl AsyncWriteRent for Stream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.write(buf).await,
            Stream::ServerTls(s, _) => s.write(buf).await,
            Stream::ClientTls(s, _) => s.write(buf).await,
            Stream::Closed => (Err(closed()), buf),
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.writev(buf).await,
            Stream::ServerTls(s, _) => s.writev(buf).await,
            Stream::ClientTls(s, _) => s.writev(buf).await,
            Stream::Closed => (Err(closed()), buf),
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush().await,
            Stream::ServerTls(s, _) => s.flush().await,
            Stream::ClientTls(s, _) => s.flush().await,
            Stream::Closed => Ok(()),
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::ServerTls(s, _) => s.shutdown().await,
            Stream::ClientTls(s, _) => s.shutdown().await,
            Stream::Closed => Ok(()),
        }
    }
}

#[cfg(test)]
mod keepalive_tests {
    use std::os::fd::AsRawFd;

    fn get(fd: i32, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes an int into a live local.
        let r = unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut libc::c_int).cast(), &mut len) };
        assert_eq!(r, 0);
        v
    }

    #[test]
    fn keepalive_is_on_with_its_timers() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let fd = s.as_raw_fd();
        assert_eq!(get(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 0);
        super::keepalive(fd);
        assert_keepalive(fd);
    }

    /// The options set on a client listener reach the connections it
    /// accepts, a connection made as soon as it listens included (the
    /// runtime sets them there instead of on each client's socket), on
    /// IPv4 and IPv6 alike.
    #[test]
    fn an_accepted_connection_has_its_listeners_options() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let l = match super::client_listener_socket(addr.parse().unwrap()) {
                Ok(l) => l,
                // A host without IPv6 (no ::1, or no IPv6 at all).
                Err(e)
                    if addr.starts_with('[')
                        && (e.kind() == std::io::ErrorKind::AddrNotAvailable
                            || e.raw_os_error() == Some(libc::EAFNOSUPPORT)) =>
                {
                    continue
                }
                Err(e) => panic!("{addr}: {e}"),
            };
            // Connected (the handshake done by the kernel) before accept.
            let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (accepted, _) = l.accept().unwrap();
            assert_client_options(accepted.as_raw_fd());
        }
    }

    fn assert_client_options(fd: i32) {
        assert_keepalive(fd);
        assert_eq!(get(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY), 1);
    }

    /// Keepalive on, with gatehouse's timers.
    fn assert_keepalive(fd: i32) {
        assert_eq!(get(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(
            get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
            super::KEEPALIVE_IDLE_SECS
        );
        assert_eq!(
            get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
            super::KEEPALIVE_INTERVAL_SECS
        );
        assert_eq!(get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT), super::KEEPALIVE_PROBES);
    }

    #[test]
    fn an_address_that_cannot_be_listened_on_is_an_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // Bound without SO_REUSEPORT: a second listener is refused.
        let e = super::client_listener_socket(taken.local_addr().unwrap()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    }
}

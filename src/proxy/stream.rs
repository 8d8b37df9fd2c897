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
    set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE_SECS);
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL_SECS);
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES);
}

/// Sets a client listener's socket options: keepalive (as [`keepalive`])
/// and `TCP_NODELAY`. Linux copies a listener's options to every
/// connection it accepts, so the clients' sockets get them with no system
/// call of their own: in a storm of short sessions, five fewer a
/// connection. Fails when an option cannot be set, since no accepted
/// connection would have it then.
pub fn listener_options(fd: RawFd) -> std::io::Result<()> {
    let options = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE_SECS),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL_SECS),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY, 1),
    ];
    for (level, name, v) in options {
        if set_int(fd, level, name, v) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
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

    /// The options set on a listener reach the connections it accepts
    /// (the runtime sets them there instead of on each client's socket).
    #[test]
    fn an_accepted_connection_has_its_listeners_options() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        super::listener_options(l.as_raw_fd()).unwrap();
        let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        let fd = accepted.as_raw_fd();
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
        assert_eq!(get(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY), 1);
    }

    #[test]
    fn a_listener_option_that_cannot_be_set_is_an_error() {
        // A UDP socket takes no TCP options.
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(super::listener_options(u.as_raw_fd()).is_err());
    }
}

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

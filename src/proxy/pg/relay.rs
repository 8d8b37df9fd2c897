//! The relay: one pump per direction, each reading its side into its own
//! buffer, splitting complete frames off without copying, and writing the
//! frames it forwards unchanged from that same buffer.
//!
//! The two pumps run concurrently and never wait for each other, so a client
//! that pipelines while results stream back cannot deadlock the session;
//! memory stays at one buffer per direction because a pump that cannot write
//! stops reading (backpressure). A frame larger than the buffer is streamed
//! through in pieces.

use super::stream::Stream;
use crate::wire::pg::{peek_header, Side, WireError, HEADER_LEN};
use futures_util::lock::Mutex;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf};
use std::io;
use std::os::fd::RawFd;

pub type Reader = OwnedReadHalf<Stream>;
pub type Writer = OwnedWriteHalf<Stream>;

/// What a pump does with a complete frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Forward,
    /// Forward it, then stop the pump (Terminate).
    ForwardAndStop,
}

/// Per-direction frame inspection.
pub trait FrameHandler {
    /// A complete frame (`body` excludes tag and length).
    fn on_frame(&mut self, tag: u8, body: &[u8]) -> Action;
    /// The start of a frame too large for the buffer; it is forwarded
    /// unchanged as it arrives.
    fn on_large_frame(&mut self, tag: u8, total_len: usize);
    /// Bytes read from this side.
    fn on_read(&mut self, n: usize);
}

#[derive(Debug)]
pub enum PumpEnd {
    /// The reading side closed its socket.
    Eof,
    /// The handler asked to stop.
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    #[error("reading: {0}")]
    Read(io::Error),
    #[error("writing: {0}")]
    Write(io::Error),
    #[error(transparent)]
    Protocol(WireError),
}

/// Sends as much of `data` as the socket takes now, without blocking.
///
/// On a plain socket with room in its send buffer (the usual case) a write
/// completes right here, without a trip through the ring and back through
/// the scheduler; whatever is left goes the asynchronous way.
fn try_send(fd: RawFd, data: &[u8]) -> usize {
    let mut done = 0;
    while done < data.len() {
        let rest = &data[done..];
        // SAFETY: `rest` is a live, initialised slice; `fd` is the session's
        // own socket, held open by its writer half while the lock is held.
        let n = unsafe {
            libc::send(
                fd,
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n <= 0 {
            // EAGAIN, EINTR or a real error: the ring path retries or reports it.
            break;
        }
        done += n as usize;
    }
    done
}

/// Writes `buf[from..to]` and gives the buffer back. `plain_fd` is the
/// socket when it carries no TLS.
async fn write_range(
    w: &Mutex<Writer>,
    plain_fd: Option<RawFd>,
    buf: Vec<u8>,
    mut from: usize,
    to: usize,
) -> (io::Result<()>, Vec<u8>) {
    let mut w = w.lock().await;
    if let Some(fd) = plain_fd {
        from += try_send(fd, &buf[from..to]);
        if from == to {
            return (Ok(()), buf);
        }
    }
    let (res, slice) = w.write_all(buf.slice(from..to)).await;
    let buf = slice.into_inner();
    if let Err(e) = res {
        return (Err(e), buf);
    }
    (w.flush().await, buf)
}

#[allow(clippy::too_many_arguments)]
/// Moves frames from `r` to `w` until EOF, an error, or the handler stops.
/// `buf` may hold bytes already read; its capacity is raised to `cap`.
pub async fn pump<H: FrameHandler>(
    r: &mut Reader,
    w: &Mutex<Writer>,
    w_plain_fd: Option<RawFd>,
    side: Side,
    mut buf: Vec<u8>,
    cap: usize,
    max_msg: usize,
    h: &mut H,
) -> Result<PumpEnd, PumpError> {
    if buf.capacity() < cap {
        buf.reserve_exact(cap - buf.len());
    }
    // Bytes of a large frame still to pass through unparsed.
    let mut passthrough: usize = 0;
    loop {
        let len = buf.len();
        let mut pos = 0;
        let mut stop = false;
        let mut err = None;
        if passthrough > 0 {
            pos = passthrough.min(len);
            passthrough -= pos;
        }
        if passthrough == 0 {
            loop {
                match peek_header(&buf[pos..], side, max_msg) {
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(hd)) => {
                        if len - pos < hd.total_len {
                            if hd.total_len > buf.capacity() {
                                h.on_large_frame(hd.tag, hd.total_len);
                                passthrough = hd.total_len - (len - pos);
                                pos = len;
                            }
                            break;
                        }
                        let action = h.on_frame(hd.tag, &buf[pos + HEADER_LEN..pos + hd.total_len]);
                        pos += hd.total_len;
                        if action == Action::ForwardAndStop {
                            stop = true;
                            break;
                        }
                    }
                }
            }
        }
        if pos > 0 {
            let (res, b) = write_range(w, w_plain_fd, buf, 0, pos).await;
            buf = b;
            res.map_err(PumpError::Write)?;
        }
        if let Some(e) = err {
            return Err(PumpError::Protocol(e));
        }
        if stop {
            return Ok(PumpEnd::Stopped);
        }
        if pos > 0 {
            buf.copy_within(pos..len, 0);
            buf.truncate(len - pos);
        }
        let start = buf.len();
        let end = buf.capacity();
        let (res, slice) = r.read(buf.slice_mut(start..end)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => return Ok(PumpEnd::Eof),
            Ok(n) => h.on_read(n),
            Err(e) => return Err(PumpError::Read(e)),
        }
    }
}

//! The relay: one pump per direction, each reading its side into its own
//! buffer, splitting complete frames off without copying, and writing the
//! frames it forwards unchanged from that same buffer.
//!
//! The two pumps run concurrently and never wait for each other, so a client
//! that pipelines while results stream back cannot deadlock the session;
//! memory stays at one buffer per direction because a pump that cannot write
//! stops reading (backpressure). A frame larger than the buffer is streamed
//! through in pieces.
//!
//! A handler sees each batch of complete frames once (`rewrite`): it may
//! replace or drop frames (masking, refusals); frames it leaves alone are
//! written from the read buffer.

use super::stream::Stream;
use crate::core::end::EndReason;
use crate::core::sqlstate::SqlState;
use crate::wire::pg::{peek_header, Side, WireError, HEADER_LEN};
use futures_util::lock::Mutex;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf};
use std::io;
use std::os::fd::RawFd;

pub type Reader = OwnedReadHalf<Stream>;
pub type Writer = OwnedWriteHalf<Stream>;

/// What a pump does after a complete frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Forward,
    /// Forward it, then stop the pump (Terminate).
    ForwardAndStop,
    /// A message that may not pass: the session ends with a protocol error
    /// (nothing of the batch is written).
    Reject(WireError),
    /// A message that breaks what gatehouse guarantees: the session ends
    /// with this error (nothing of the batch is written).
    End(Refused),
}

/// What to do with a frame too large for the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Large {
    /// Pass it on in pieces as it arrives (through `large_chunk`).
    Stream,
    /// Drop it as it arrives (the handler has said why to the peer).
    Discard,
    /// End the session with a protocol error.
    Reject(WireError),
    /// Not yet: `hold` is awaited (nothing of the frame is sent), then the
    /// frame is offered again.
    Hold,
}

/// A complete frame in the batch buffer: `buf[start..end]`, header included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRef {
    pub tag: u8,
    pub start: usize,
    pub end: usize,
}

/// A frame replaced by `out[from..to]` of the handler's output (empty to drop it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edit {
    pub frame_start: usize,
    pub frame_end: usize,
    pub from: usize,
    pub to: usize,
}

/// Rewrites of one batch: output bytes and where they go. Kept by the pump
/// and reused, so a batch without edits allocates nothing.
#[derive(Default)]
pub struct Edits {
    pub out: Vec<u8>,
    pub list: Vec<Edit>,
    /// The batch with its edits applied, as it is written.
    joined: Vec<u8>,
}

impl Edits {
    /// `batch` with the edits (sorted by frame, as `rewrite` leaves them)
    /// applied, into `to`.
    fn join(&self, batch: &[u8], to: &mut Vec<u8>) {
        to.clear();
        to.reserve(batch.len() + self.out.len());
        let mut at = 0;
        // Edits past the batch's end (frames held back) are not written now.
        for e in self.list.iter().take_while(|e| e.frame_end <= batch.len()) {
            to.extend_from_slice(&batch[at..e.frame_start]);
            to.extend_from_slice(&self.out[e.from..e.to]);
            at = e.frame_end;
        }
        to.extend_from_slice(&batch[at..]);
    }

    fn clear(&mut self) {
        self.out.clear();
        self.list.clear();
    }

    /// Replaces frame `f` with whatever `write` appends to `out`.
    pub fn replace(&mut self, f: &FrameRef, write: impl FnOnce(&mut Vec<u8>)) {
        let from = self.out.len();
        write(&mut self.out);
        self.list.push(Edit {
            frame_start: f.start,
            frame_end: f.end,
            from,
            to: self.out.len(),
        });
    }

    pub fn drop_frame(&mut self, f: &FrameRef) {
        let at = self.out.len();
        self.list.push(Edit {
            frame_start: f.start,
            frame_end: f.end,
            from: at,
            to: at,
        });
    }
}

/// Why a handler ends the session: the SQLSTATE and message the peer is
/// told (when the protocol still lets it be told), and the end reason the
/// session log gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub code: SqlState,
    pub message: String,
    pub end: EndReason,
}

/// Per-direction frame inspection.
pub trait FrameHandler {
    /// A complete frame (`body` excludes tag and length).
    fn on_frame(&mut self, tag: u8, body: &[u8]) -> Action;
    /// The batch of complete frames just read: record replacements in
    /// `edits` (in frame order). Frames not named are forwarded unchanged.
    /// `Some(i)`: hold the batch before frame `i` (no edits at or after it):
    /// the frames before it are written, then `hold` is awaited, then the
    /// rest of the batch comes round again.
    fn rewrite(&mut self, _buf: &mut [u8], _frames: &[FrameRef], _edits: &mut Edits) -> Option<usize> {
        None
    }
    /// Waits out a hold asked for by `rewrite`.
    fn hold(&mut self) -> impl std::future::Future<Output = ()> {
        async {}
    }
    /// The start of a frame too large for the buffer. Bytes the handler
    /// appends to `out` are written before the frame (or instead of it).
    /// `head` holds the frame's bytes read so far (header included).
    fn on_large_frame(&mut self, _tag: u8, _total_len: usize, _head: &[u8], _out: &mut Vec<u8>) -> Large {
        Large::Stream
    }
    /// A piece of a streamed large frame, `chunk`, which may be changed in
    /// place (same length). `last` is true for the frame's final piece.
    /// Returns how many trailing bytes to hold back until the next piece
    /// (context for matches across pieces); ignored for the last piece.
    /// An error ends the session: part of the frame is already out.
    fn large_chunk(&mut self, _chunk: &mut [u8], _last: bool) -> Result<usize, Refused> {
        Ok(0)
    }
    /// Bytes read from this side.
    fn on_read(&mut self, n: usize);
    /// Whether `flush` has work (checked after every batch).
    fn pending(&self) -> bool {
        false
    }
    /// Waits until what the handler queued for elsewhere (the recorder) is
    /// taken; the pump reads no more until then.
    fn flush(&mut self) -> impl std::future::Future<Output = ()> {
        async {}
    }
}

#[derive(Debug)]
pub enum PumpEnd {
    /// The reading side closed its socket; `rest` bytes of an incomplete
    /// frame had been read (and are dropped).
    Eof { rest: usize },
    /// The handler asked to stop; `rest` bytes after the last frame had
    /// been read already (and are dropped).
    Stopped { rest: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    #[error("reading: {0}")]
    Read(io::Error),
    #[error("writing: {0}")]
    Write(io::Error),
    #[error(transparent)]
    Protocol(WireError),
    #[error(transparent)]
    Refused(Refused),
}

thread_local! {
    /// Sessions relaying on this worker (an idle session without an
    /// upstream connection does not count).
    static RELAYING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Up to this many relaying sessions on a worker, plain writes are sent
/// inline (see [`try_send`]); above it they go through the ring.
///
/// Measured (`loadtest/pg-compare.sh`, pgbench `-S -M prepared`): inline
/// sends answer a lone client sooner (no trip through the ring and the
/// scheduler), but under load each inline send wakes its peer from inside
/// the worker's own system call and the worker is preempted there, once
/// per write; through the ring a whole round of writes is submitted in one
/// `io_uring_enter` and the worker gives up its core once per round (at
/// `-c 32`: 36 µs of proxy CPU per transaction instead of 42).
pub const INLINE_SEND_MAX: usize = 2;

/// Counts a session as relaying while it lives.
pub struct Relaying(());

impl Relaying {
    pub fn enter() -> Relaying {
        RELAYING.with(|r| r.set(r.get() + 1));
        Relaying(())
    }
}

impl Drop for Relaying {
    fn drop(&mut self) {
        RELAYING.with(|r| r.set(r.get().saturating_sub(1)));
    }
}

/// Whether a plain write may be sent inline now.
fn inline_send() -> bool {
    RELAYING.with(|r| r.get()) <= INLINE_SEND_MAX
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

/// Where a pump writes: the peer's writer half, shared with the session for
/// messages of gatehouse's own, and its descriptor when it carries no TLS.
pub struct Sink<'a> {
    pub w: &'a Mutex<Writer>,
    pub plain_fd: Option<RawFd>,
    /// True while part of a streamed large frame is out and the rest is not:
    /// nothing else may be written to this peer then. Changed only under the
    /// writer lock.
    pub mid_frame: &'a std::cell::Cell<bool>,
}

/// Writes `buf[from..to]` (already locked) and gives the buffer back.
async fn write_locked<B: IoBuf>(
    w: &mut Writer,
    plain_fd: Option<RawFd>,
    buf: B,
    mut from: usize,
    to: usize,
) -> (io::Result<()>, B) {
    if from == to {
        return (Ok(()), buf);
    }
    if let Some(fd) = plain_fd.filter(|_| inline_send()) {
        // SAFETY: from..to lies within the initialised part of `buf`.
        let data = unsafe { std::slice::from_raw_parts(buf.read_ptr().add(from), to - from) };
        from += try_send(fd, data);
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

/// Writes `buf[0..pos]` with the edits applied.
///
/// An edited batch is joined into one buffer and written at once: written
/// piece by piece (the bytes up to an edit, then the edit) a result whose
/// every row is masked cost two sends, or two TLS records, a row.
async fn write_batch(sink: &Sink<'_>, buf: Vec<u8>, pos: usize, edits: &mut Edits) -> (io::Result<()>, Vec<u8>) {
    let mut w = sink.w.lock().await;
    if edits.list.is_empty() {
        return write_locked(&mut w, sink.plain_fd, buf, 0, pos).await;
    }
    let mut joined = std::mem::take(&mut edits.joined);
    edits.join(&buf[..pos], &mut joined);
    let len = joined.len();
    let (res, mut joined) = write_locked(&mut w, sink.plain_fd, joined, 0, len).await;
    if joined.capacity() > JOINED_KEPT {
        // An unusually large batch: not kept for the session's lifetime.
        joined = Vec::new();
    }
    edits.joined = joined;
    (res, buf)
}

/// The most a session keeps of the buffer edited batches are joined in.
const JOINED_KEPT: usize = 256 << 10;

/// Buffer sizes and limits of a pump.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub buffer: usize,
    pub max_message: usize,
}

/// A pump's buffer starts this small (at most the limit) and grows, up to
/// the limit, when a frame needs it or a read fills it: a session of short
/// statements keeps small buffers, a large result gets full-size reads.
pub const INITIAL_BUFFER: usize = 8 * 1024;

/// Moves frames from `r` to `sink` until EOF, an error, or the handler stops.
/// `buf` may hold bytes already read.
pub async fn pump<H: FrameHandler>(
    r: &mut Reader,
    sink: Sink<'_>,
    side: Side,
    mut buf: Vec<u8>,
    limits: Limits,
    h: &mut H,
) -> Result<PumpEnd, PumpError> {
    let initial = INITIAL_BUFFER.min(limits.buffer);
    if buf.capacity() < initial {
        buf.reserve_exact(initial - buf.len());
    }
    let mut frames: Vec<FrameRef> = Vec::with_capacity(64);
    let mut edits = Edits::default();
    // A large frame in progress: bytes of it not yet consumed, and whether
    // it is being streamed or discarded.
    let mut large: usize = 0;
    let mut large_mode = Large::Stream;
    loop {
        let len = buf.len();
        let mut pos = 0;
        let mut stop = false;
        let mut err = None;
        let mut held_large = false;
        frames.clear();
        edits.clear();
        if large > 0 {
            let n = large.min(len);
            let last = n == large;
            match &large_mode {
                Large::Discard | Large::Reject(_) | Large::Hold => {
                    large -= n;
                    buf.drain(..n);
                }
                Large::Stream => {
                    let hold = match h.large_chunk(&mut buf[..n], last) {
                        Ok(hold) if !last => hold.min(n).min(buf.capacity() / 4),
                        Ok(_) => 0,
                        Err(e) => return Err(PumpError::Refused(e)),
                    };
                    let send = n - hold;
                    if send > 0 {
                        let mut w = sink.w.lock().await;
                        sink.mid_frame.set(true);
                        let (res, b) = write_locked(&mut w, sink.plain_fd, buf, 0, send).await;
                        buf = b;
                        res.map_err(PumpError::Write)?;
                        sink.mid_frame.set(send < large);
                        buf.drain(..send);
                    }
                    large -= send;
                }
            }
        }
        let len = buf.len();
        if large == 0 {
            loop {
                match peek_header(&buf[pos..], side, limits.max_message) {
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(hd)) => {
                        if len - pos < hd.total_len {
                            if hd.total_len > buf.capacity() && hd.total_len <= limits.buffer {
                                // Room for the whole frame (it moves to the
                                // front before the next read).
                                let want = hd.total_len.max(buf.capacity() * 2).min(limits.buffer);
                                buf.reserve_exact(want - buf.len());
                            } else if hd.total_len > buf.capacity() && pos == 0 {
                                if buf.capacity() < limits.buffer {
                                    // The whole buffer first, so the handler
                                    // judges as much of the frame as fits.
                                    buf.reserve_exact(limits.buffer - buf.len());
                                    break;
                                }
                                if len < buf.capacity() {
                                    break;
                                }
                                large_mode = h.on_large_frame(hd.tag, hd.total_len, &buf[pos..len], &mut edits.out);
                                match &large_mode {
                                    Large::Reject(e) => return Err(PumpError::Protocol(e.clone())),
                                    Large::Hold => {
                                        // Nothing of the frame is out: wait,
                                        // then judge it again.
                                        held_large = true;
                                        break;
                                    }
                                    _ => {}
                                }
                                large = hd.total_len;
                                if !edits.out.is_empty() {
                                    let out = std::mem::take(&mut edits.out);
                                    let n = out.len();
                                    let mut w = sink.w.lock().await;
                                    let (res, out) = write_locked(&mut w, sink.plain_fd, out, 0, n).await;
                                    edits.out = out;
                                    res.map_err(PumpError::Write)?;
                                }
                            }
                            break;
                        }
                        let action = h.on_frame(hd.tag, &buf[pos + HEADER_LEN..pos + hd.total_len]);
                        frames.push(FrameRef {
                            tag: hd.tag,
                            start: pos,
                            end: pos + hd.total_len,
                        });
                        pos += hd.total_len;
                        match action {
                            Action::Forward => {}
                            Action::ForwardAndStop => {
                                stop = true;
                                break;
                            }
                            Action::Reject(e) => return Err(PumpError::Protocol(e)),
                            Action::End(r) => return Err(PumpError::Refused(r)),
                        }
                    }
                }
            }
        }
        if pos > 0 {
            let held = h
                .rewrite(&mut buf[..pos], &frames, &mut edits)
                .and_then(|i| frames.get(i))
                .map(|f| f.start);
            let upto = held.unwrap_or(pos);
            let (res, b) = write_batch(&sink, buf, upto, &mut edits).await;
            buf = b;
            res.map_err(PumpError::Write)?;
            if h.pending() {
                h.flush().await;
            }
            if let Some(at) = held {
                // The held frame and what follows it come round again once
                // the hold ends, without a read in between.
                h.hold().await;
                buf.copy_within(at..len, 0);
                buf.truncate(len - at);
                continue;
            }
        }
        if held_large {
            h.hold().await;
            continue;
        }
        if let Some(e) = err {
            return Err(PumpError::Protocol(e));
        }
        if stop {
            return Ok(PumpEnd::Stopped { rest: len - pos });
        }
        if pos > 0 {
            buf.copy_within(pos..len, 0);
            buf.truncate(len - pos);
        }
        if large > 0 && !buf.is_empty() && buf.len() < large && buf.len() < buf.capacity() / 2 {
            // Fall through to read more before handing a tiny piece over.
        } else if large > 0 && !buf.is_empty() {
            continue;
        }
        let start = buf.len();
        let end = buf.capacity();
        let (res, slice) = r.read(buf.slice_mut(start..end)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => return Ok(PumpEnd::Eof { rest: buf.len() }),
            Ok(n) => {
                h.on_read(n);
                if n == end - start && buf.capacity() < limits.buffer {
                    let want = (buf.capacity() * 2).min(limits.buffer);
                    buf.reserve_exact(want - buf.len());
                }
            }
            Err(e) => return Err(PumpError::Read(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(start: usize, end: usize) -> FrameRef {
        FrameRef { tag: b'D', start, end }
    }

    #[test]
    fn an_edited_batch_is_joined_in_order_with_its_edits() {
        // Five frames of two bytes: the second replaced by a longer one, the
        // third dropped, the fifth (past the written part) left alone.
        let batch = b"AABBCCDDEE";
        let mut edits = Edits::default();
        edits.replace(&frame(2, 4), |out| out.extend_from_slice(b"bbbb"));
        edits.drop_frame(&frame(4, 6));
        edits.replace(&frame(8, 10), |out| out.extend_from_slice(b"x"));
        let mut joined = Vec::new();
        edits.join(&batch[..8], &mut joined);
        assert_eq!(joined, b"AAbbbbDD");
        edits.join(batch, &mut joined);
        assert_eq!(joined, b"AAbbbbDDx", "the buffer is reused, not appended to");
    }
}

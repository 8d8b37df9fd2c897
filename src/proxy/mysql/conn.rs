//! A buffered MySQL connection: whole messages in, bytes out.

use crate::proxy::stream::Stream;
use crate::wire::mysql::{frame, payload, Message, MyWireError};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use std::io;

/// Why reading a message failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Wire(#[from] MyWireError),
}

/// Bytes read ahead of the first message are kept here; `pos` is where the
/// next message starts.
pub struct MyConn {
    pub stream: Stream,
    pub buf: Vec<u8>,
    pub pos: usize,
}

const INITIAL: usize = 16 * 1024;

impl MyConn {
    pub fn new(stream: Stream) -> MyConn {
        MyConn {
            stream,
            buf: Vec::with_capacity(INITIAL),
            pos: 0,
        }
    }

    /// Bytes read and not yet taken.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// The next whole message in the buffer, if one is there.
    pub fn peek_message(&self, max: usize) -> Result<Option<Message>, MyWireError> {
        frame(&self.buf[self.pos..], max)
    }

    /// Reads at least one more byte. Taken bytes are dropped first, and the
    /// buffer grows to hold `need` bytes (a message's length, when its
    /// header is in).
    pub async fn fill(&mut self, need: usize) -> Result<(), ReadError> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let want = need.max(INITIAL);
        if self.buf.capacity() - self.buf.len() < 4096 || self.buf.capacity() < want {
            self.buf.reserve(want.saturating_sub(self.buf.len()).max(4096));
        }
        let buf = std::mem::take(&mut self.buf);
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = self.stream.read(buf.slice_mut(len..cap)).await;
        self.buf = slice.into_inner();
        match res? {
            0 => Err(ReadError::Closed),
            _ => Ok(()),
        }
    }

    /// How many bytes the next message needs in the buffer, from what its
    /// first header says (at least a header).
    pub fn need(&self) -> usize {
        let p = self.pending();
        if p.len() < 4 {
            return 4;
        }
        4 + u32::from_le_bytes([p[0], p[1], p[2], 0]) as usize
    }

    /// One whole message: its first sequence id and its payload.
    pub async fn read_message(&mut self, max: usize) -> Result<(Message, Vec<u8>), ReadError> {
        loop {
            if let Some(m) = self.peek_message(max)? {
                let p = payload(&self.buf[self.pos..], &m).into_owned();
                self.pos += m.wire_len;
                return Ok((m, p));
            }
            let need = self.need();
            self.fill(need).await?;
        }
    }

    /// One whole message, reading no byte past its end: what follows it
    /// stays in the socket. The client's first message after the greeting
    /// may be an SSL request, and the TLS handshake's first bytes can
    /// follow it in the same segment: they belong to the TLS session.
    pub async fn read_message_exact(&mut self, max: usize) -> Result<(Message, Vec<u8>), ReadError> {
        loop {
            if let Some(m) = self.peek_message(max)? {
                let p = payload(&self.buf[self.pos..], &m).into_owned();
                self.pos += m.wire_len;
                return Ok((m, p));
            }
            let missing = self.need() - self.pending().len();
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            self.buf.reserve(missing);
            let buf = std::mem::take(&mut self.buf);
            let len = buf.len();
            let (res, slice) = self.stream.read(buf.slice_mut(len..len + missing)).await;
            self.buf = slice.into_inner();
            if res? == 0 {
                return Err(ReadError::Closed);
            }
        }
    }

    /// Writes all of `data` and hands the buffer back (cleared) for reuse.
    pub async fn write_all(&mut self, data: Vec<u8>) -> io::Result<Vec<u8>> {
        let (res, mut data) = self.stream.write_all(data).await;
        res?;
        self.stream.flush().await?;
        data.clear();
        Ok(data)
    }
}

//! A buffered connection for the startup phase, before the relay splits it.

use super::stream::Stream;
use crate::wire::pg::{self, Side, WireError, HEADER_LEN};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Wire(#[from] WireError),
}

pub struct Conn {
    pub stream: Stream,
    /// Bytes read and not yet consumed.
    pub buf: Vec<u8>,
}

const STARTUP_BUF: usize = 8 * 1024;

impl Conn {
    pub fn new(stream: Stream) -> Conn {
        Conn {
            stream,
            buf: Vec::with_capacity(STARTUP_BUF),
        }
    }

    /// Reads at least one more byte, growing the buffer up to `limit`.
    pub async fn fill(&mut self, limit: usize) -> Result<(), ConnError> {
        let want = (self.buf.len() * 2).clamp(STARTUP_BUF, limit.max(STARTUP_BUF));
        if self.buf.capacity() - self.buf.len() < 1024 && self.buf.capacity() < want {
            self.buf.reserve(want - self.buf.len());
        }
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let cap = buf.capacity();
        let (res, slice) = self.stream.read(buf.slice_mut(len..cap)).await;
        self.buf = slice.into_inner();
        match res? {
            0 => Err(ConnError::Closed),
            _ => Ok(()),
        }
    }

    /// An untyped startup packet (length prefix included).
    pub async fn read_startup(&mut self) -> Result<Vec<u8>, ConnError> {
        loop {
            if let Some(len) = pg::startup_len(&self.buf)? {
                if self.buf.len() >= len {
                    return Ok(self.buf.drain(..len).collect());
                }
            }
            self.fill(pg::MAX_STARTUP_PACKET).await?;
        }
    }

    /// One typed frame: (tag, body), at most `max` bytes long.
    pub async fn read_frame(&mut self, side: Side, max: usize) -> Result<(u8, Vec<u8>), ConnError> {
        loop {
            if let Some(h) = pg::peek_header(&self.buf, side, max)? {
                if self.buf.len() >= h.total_len {
                    let body = self.buf[HEADER_LEN..h.total_len].to_vec();
                    self.buf.drain(..h.total_len);
                    return Ok((h.tag, body));
                }
                if self.buf.capacity() < h.total_len {
                    self.buf.reserve(h.total_len - self.buf.len());
                }
            }
            self.fill(max).await?;
        }
    }

    pub async fn write_all(&mut self, data: Vec<u8>) -> Result<(), ConnError> {
        let (res, _) = self.stream.write_all(data).await;
        res?;
        self.stream.flush().await?;
        Ok(())
    }
}

//! Typed frames (`tag`, `int32 length`, body) after the startup phase.

use super::WireError;

/// Length of a frame header: one tag byte and a 4-byte length.
pub const HEADER_LEN: usize = 5;

/// Which peer sent the bytes; it decides which tags are valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Frontend,
    Backend,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Frontend => "frontend",
            Side::Backend => "backend",
        }
    }

    /// Whether `tag` is a message type this side may send.
    #[inline]
    pub fn valid_tag(self, tag: u8) -> bool {
        match self {
            // Bind, Close, Describe, Execute, FunctionCall, Flush, Parse, Query,
            // Sync, Terminate, CopyData, CopyDone, CopyFail, password/SASL.
            Side::Frontend => matches!(
                tag,
                b'B' | b'C' | b'D' | b'E' | b'F' | b'H' | b'P' | b'Q' | b'S' | b'X' | b'd' | b'c' | b'f' | b'p'
            ),
            Side::Backend => matches!(
                tag,
                b'R' | b'K'
                    | b'2'
                    | b'3'
                    | b'C'
                    | b'G'
                    | b'H'
                    | b'W'
                    | b'd'
                    | b'c'
                    | b'D'
                    | b'I'
                    | b'E'
                    | b'V'
                    | b'v'
                    | b'n'
                    | b'N'
                    | b'A'
                    | b't'
                    | b'S'
                    | b'1'
                    | b's'
                    | b'Z'
                    | b'T'
            ),
        }
    }
}

/// The header of a frame: its tag and its total length on the wire
/// (tag byte included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub tag: u8,
    pub total_len: usize,
}

impl FrameHeader {
    #[inline]
    pub fn body_len(&self) -> usize {
        self.total_len - HEADER_LEN
    }
}

/// Reads the header at the start of `buf`. `Ok(None)` when fewer than five
/// bytes are there. Validates the tag for `side` and the length against
/// `max_len` (the largest total frame accepted).
#[inline]
pub fn peek_header(buf: &[u8], side: Side, max_len: usize) -> Result<Option<FrameHeader>, WireError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    if !side.valid_tag(tag) {
        return Err(WireError::UnknownType { side: side.name(), tag });
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 || len > i32::MAX as u32 {
        return Err(WireError::BadLength(len as u64));
    }
    let total_len = len as usize + 1;
    if total_len > max_len {
        return Err(WireError::TooLarge {
            len: total_len as u64,
            max: max_len,
        });
    }
    Ok(Some(FrameHeader { tag, total_len }))
}

/// A complete frame borrowed from a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub tag: u8,
    /// The body, without tag and length.
    pub body: &'a [u8],
}

/// Splits the complete frames off the front of a buffer, leaving a partial
/// frame (if any) for the next read.
pub struct Framer<'a> {
    buf: &'a [u8],
    pos: usize,
    side: Side,
    max_len: usize,
}

impl<'a> Framer<'a> {
    pub fn new(buf: &'a [u8], side: Side, max_len: usize) -> Self {
        Framer {
            buf,
            pos: 0,
            side,
            max_len,
        }
    }

    /// Bytes consumed by the frames returned so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// The next complete frame, `Ok(None)` when the rest is a partial frame.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'a>>, WireError> {
        let rest = &self.buf[self.pos..];
        let Some(h) = peek_header(rest, self.side, self.max_len)? else {
            return Ok(None);
        };
        if rest.len() < h.total_len {
            return Ok(None);
        }
        self.pos += h.total_len;
        Ok(Some(Frame {
            tag: h.tag,
            body: &rest[HEADER_LEN..h.total_len],
        }))
    }
}

/// A cursor over a message body: C strings and big-endian integers.
pub struct Cursor<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Cursor { buf, what }
    }
    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    fn err(&self) -> WireError {
        WireError::Malformed(self.what)
    }
    pub fn u8(&mut self) -> Result<u8, WireError> {
        let (&b, rest) = self.buf.split_first().ok_or_else(|| self.err())?;
        self.buf = rest;
        Ok(b)
    }
    pub fn i16(&mut self) -> Result<i16, WireError> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    pub fn i32(&mut self) -> Result<i32, WireError> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(self.err());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    /// A NUL-terminated string, without its NUL.
    pub fn cstr(&mut self) -> Result<&'a [u8], WireError> {
        let end = memchr::memchr(0, self.buf).ok_or_else(|| self.err())?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }
}

/// Fields of an ErrorResponse or NoticeResponse body: (field code, value).
pub fn error_fields(body: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut c = Cursor::new(body, "ErrorResponse");
    std::iter::from_fn(move || {
        let code = c.u8().ok()?;
        if code == 0 {
            return None;
        }
        let v = c.cstr().ok()?;
        Some((code, v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn splits_frames_and_leaves_partial() {
        let mut buf = frame(b'Q', b"select 1\0");
        buf.extend(frame(b'S', b""));
        let partial = frame(b'Q', b"select 2\0");
        buf.extend_from_slice(&partial[..7]);
        let mut f = Framer::new(&buf, Side::Frontend, 1 << 20);
        assert_eq!(
            f.next_frame().unwrap().unwrap(),
            Frame {
                tag: b'Q',
                body: b"select 1\0"
            }
        );
        assert_eq!(f.next_frame().unwrap().unwrap(), Frame { tag: b'S', body: b"" });
        assert_eq!(f.next_frame().unwrap(), None);
        assert_eq!(f.consumed(), 14 + 5);
    }

    #[test]
    fn rejects_bad_lengths_and_tags() {
        assert_eq!(
            peek_header(&[b'Q', 0, 0, 0, 3], Side::Frontend, 100),
            Err(WireError::BadLength(3))
        );
        assert_eq!(
            peek_header(&[b'Q', 0x80, 0, 0, 0], Side::Frontend, usize::MAX),
            Err(WireError::BadLength(1 << 31))
        );
        assert!(matches!(
            peek_header(&[b'Q', 0, 1, 0, 0], Side::Frontend, 100),
            Err(WireError::TooLarge { .. })
        ));
        assert!(matches!(
            peek_header(&[b'z', 0, 0, 0, 4], Side::Frontend, 100),
            Err(WireError::UnknownType { .. })
        ));
        assert!(matches!(
            peek_header(&[b'Q', 0, 0, 0, 4], Side::Backend, 100),
            Err(WireError::UnknownType { .. })
        ));
    }

    #[test]
    fn error_fields_parse() {
        let body = b"SERROR\0C42601\0Msyntax error\0\0";
        let f: Vec<_> = error_fields(body).collect();
        assert_eq!(
            f,
            vec![
                (b'S', &b"ERROR"[..]),
                (b'C', &b"42601"[..]),
                (b'M', &b"syntax error"[..])
            ]
        );
    }
}

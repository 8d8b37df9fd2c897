//! The protocol's basic types: fixed-width little-endian integers,
//! length-encoded integers and strings, NUL-terminated strings. A `Reader`
//! walks a payload and reports a short or malformed one as an error, never a
//! panic.

use super::MyWireError;

/// A length-encoded integer's first byte that means SQL NULL (in text rows).
pub const NULL_MARKER: u8 = 0xfb;

/// A cursor over one message's payload.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.at
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.buf.len()
    }

    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.at).copied()
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], MyWireError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(MyWireError::Truncated)?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), MyWireError> {
        self.bytes(n).map(|_| ())
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.at.min(self.buf.len())..];
        self.at = self.buf.len();
        s
    }

    pub fn u8(&mut self) -> Result<u8, MyWireError> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, MyWireError> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u24(&mut self) -> Result<u32, MyWireError> {
        let b = self.bytes(3)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    pub fn u32(&mut self) -> Result<u32, MyWireError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, MyWireError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length-encoded integer. `None` is the NULL marker (0xFB); 0xFF is
    /// not an integer (it starts an error packet).
    pub fn lenenc_int_or_null(&mut self) -> Result<Option<u64>, MyWireError> {
        let first = self.u8()?;
        Ok(Some(match first {
            0..=0xfa => first as u64,
            NULL_MARKER => return Ok(None),
            0xfc => self.u16()? as u64,
            0xfd => self.u24()? as u64,
            0xfe => self.u64()?,
            0xff => return Err(MyWireError::Malformed("0xff is not a length-encoded integer")),
        }))
    }

    /// A length-encoded integer where NULL is not allowed.
    pub fn lenenc_int(&mut self) -> Result<u64, MyWireError> {
        self.lenenc_int_or_null()?
            .ok_or(MyWireError::Malformed("unexpected NULL marker"))
    }

    /// A length-encoded string.
    pub fn lenenc_bytes(&mut self) -> Result<&'a [u8], MyWireError> {
        let n = self.lenenc_int()?;
        let n = usize::try_from(n).map_err(|_| MyWireError::Truncated)?;
        self.bytes(n)
    }

    /// A string up to (not including) a NUL byte, which is consumed.
    pub fn nul_bytes(&mut self) -> Result<&'a [u8], MyWireError> {
        let rest = &self.buf[self.at.min(self.buf.len())..];
        let n = memchr::memchr(0, rest).ok_or(MyWireError::Malformed("string without its NUL terminator"))?;
        self.at += n + 1;
        Ok(&rest[..n])
    }
}

/// Appends a length-encoded integer.
pub fn put_lenenc_int(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0xfa => out.push(v as u8),
        0xfb..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Appends a length-encoded string.
pub fn put_lenenc_bytes(out: &mut Vec<u8>, s: &[u8]) {
    put_lenenc_int(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Bytes a length-encoded integer of `v` takes.
pub fn lenenc_int_len(v: u64) -> usize {
    match v {
        0..=0xfa => 1,
        0xfb..=0xffff => 3,
        0x1_0000..=0xff_ffff => 4,
        _ => 9,
    }
}

/// Appends a NUL-terminated string. A NUL inside `s` would end it early on
/// the other side, so it is refused.
pub fn put_nul_bytes(out: &mut Vec<u8>, s: &[u8]) -> Result<(), MyWireError> {
    if memchr::memchr(0, s).is_some() {
        return Err(MyWireError::Malformed("NUL byte inside a NUL-terminated string"));
    }
    out.extend_from_slice(s);
    out.push(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lenenc_boundaries() {
        for (v, len) in [
            (0u64, 1),
            (250, 1),
            (251, 3),
            (0xffff, 3),
            (0x1_0000, 4),
            (0xff_ffff, 4),
            (0x100_0000, 9),
            (u64::MAX, 9),
        ] {
            let mut out = Vec::new();
            put_lenenc_int(&mut out, v);
            assert_eq!(out.len(), len, "{v}");
            assert_eq!(lenenc_int_len(v), len);
            let mut r = Reader::new(&out);
            assert_eq!(r.lenenc_int().unwrap(), v);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn null_and_error_markers() {
        assert_eq!(Reader::new(&[0xfb]).lenenc_int_or_null().unwrap(), None);
        assert!(Reader::new(&[0xfb]).lenenc_int().is_err());
        assert!(Reader::new(&[0xff]).lenenc_int_or_null().is_err());
        assert_eq!(Reader::new(&[0xfe, 1, 2]).lenenc_int(), Err(MyWireError::Truncated));
    }

    #[test]
    fn strings() {
        let mut out = Vec::new();
        put_lenenc_bytes(&mut out, b"abc");
        put_nul_bytes(&mut out, b"root").unwrap();
        assert!(put_nul_bytes(&mut out, b"a\0b").is_err());
        let mut r = Reader::new(&out);
        assert_eq!(r.lenenc_bytes().unwrap(), b"abc");
        assert_eq!(r.nul_bytes().unwrap(), b"root");
        assert!(r.nul_bytes().is_err());
        // a length beyond the payload is truncation, not a panic
        assert_eq!(
            Reader::new(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).lenenc_bytes(),
            Err(MyWireError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn any_integer_round_trips(v in any::<u64>()) {
            let mut out = Vec::new();
            put_lenenc_int(&mut out, v);
            prop_assert_eq!(Reader::new(&out).lenenc_int().unwrap(), v);
        }

        #[test]
        fn any_bytes_read_without_panic(b in proptest::collection::vec(any::<u8>(), 0..32)) {
            let mut r = Reader::new(&b);
            while !r.is_empty() {
                if r.lenenc_bytes().is_err() { break; }
            }
        }
    }
}

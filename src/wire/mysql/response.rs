//! The generic responses: OK, ERR and EOF packets, read and built.
//!
//! With `DEPRECATE_EOF` a result set ends with an OK packet whose first byte
//! is 0xFE (the EOF marker) instead of an EOF packet; the two are told apart
//! by length (an EOF packet's payload is shorter than 9 bytes).

use super::bytes::{put_lenenc_bytes, put_lenenc_int, Reader};
use super::{caps, MyWireError};

pub const OK_HEADER: u8 = 0x00;
pub const EOF_HEADER: u8 = 0xfe;
pub const ERR_HEADER: u8 = 0xff;
/// `LOAD DATA LOCAL INFILE`: the server asks the client for a file.
pub const LOCAL_INFILE_HEADER: u8 = 0xfb;

/// What kind of generic response a server payload is, by its first byte and
/// length; `None`: not a generic response (a result set's column count, a
/// row, a prepared statement's reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    Ok,
    /// A 0xFE-headed OK that ends a result set (`DEPRECATE_EOF`).
    OkAsEof,
    Eof,
    Err,
    LocalInfile,
}

/// Classifies a server payload that is in the position of a response (the
/// first message of a reply, or after a result set's rows).
pub fn response_kind(payload: &[u8], client_caps: u32) -> Option<ResponseKind> {
    match *payload.first()? {
        OK_HEADER => Some(ResponseKind::Ok),
        ERR_HEADER => Some(ResponseKind::Err),
        EOF_HEADER if payload.len() < 9 => Some(ResponseKind::Eof),
        EOF_HEADER if client_caps & caps::DEPRECATE_EOF != 0 => Some(ResponseKind::OkAsEof),
        LOCAL_INFILE_HEADER => Some(ResponseKind::LocalInfile),
        _ => None,
    }
}

/// An OK packet's fields. `info` is the human-readable rest (session state
/// changes, when tracked, follow it and are not read here).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OkPacket<'a> {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    pub info: &'a [u8],
}

impl<'a> OkPacket<'a> {
    pub fn parse(payload: &'a [u8], client_caps: u32) -> Result<Self, MyWireError> {
        let mut r = Reader::new(payload);
        let h = r.u8()?;
        if h != OK_HEADER && h != EOF_HEADER {
            return Err(MyWireError::Malformed("not an OK packet"));
        }
        let affected_rows = r.lenenc_int()?;
        let last_insert_id = r.lenenc_int()?;
        let (status, warnings) = if client_caps & caps::PROTOCOL_41 != 0 {
            (r.u16()?, r.u16()?)
        } else if client_caps & caps::TRANSACTIONS != 0 {
            (r.u16()?, 0)
        } else {
            (0, 0)
        };
        let info = if client_caps & caps::SESSION_TRACK != 0 {
            if r.is_empty() {
                &[][..]
            } else {
                r.lenenc_bytes()?
            }
        } else {
            r.rest()
        };
        Ok(OkPacket {
            affected_rows,
            last_insert_id,
            status,
            warnings,
            info,
        })
    }

    /// Appends the payload (protocol 41, no session tracking data). With
    /// `as_eof` the header is 0xFE: the end of a result set under
    /// `DEPRECATE_EOF`.
    pub fn write(&self, out: &mut Vec<u8>, client_caps: u32, as_eof: bool) {
        out.push(if as_eof { EOF_HEADER } else { OK_HEADER });
        put_lenenc_int(out, self.affected_rows);
        put_lenenc_int(out, self.last_insert_id);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&self.warnings.to_le_bytes());
        if client_caps & caps::SESSION_TRACK != 0 {
            if !self.info.is_empty() {
                put_lenenc_bytes(out, self.info);
            }
        } else {
            out.extend_from_slice(self.info);
        }
    }
}

/// An ERR packet. `sql_state` is absent in errors sent before the client's
/// capabilities are known (and from servers that do not speak protocol 41).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket<'a> {
    pub code: u16,
    pub sql_state: Option<[u8; 5]>,
    pub message: &'a [u8],
}

impl<'a> ErrPacket<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, MyWireError> {
        let mut r = Reader::new(payload);
        if r.u8()? != ERR_HEADER {
            return Err(MyWireError::Malformed("not an ERR packet"));
        }
        let code = r.u16()?;
        let sql_state = if r.peek() == Some(b'#') {
            r.skip(1)?;
            let s = r.bytes(5)?;
            Some([s[0], s[1], s[2], s[3], s[4]])
        } else {
            None
        };
        Ok(ErrPacket {
            code,
            sql_state,
            message: r.rest(),
        })
    }

    /// Appends the payload, with the SQLSTATE marker (every client gatehouse
    /// accepts speaks protocol 41).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(ERR_HEADER);
        out.extend_from_slice(&self.code.to_le_bytes());
        if let Some(s) = &self.sql_state {
            out.push(b'#');
            out.extend_from_slice(s);
        }
        out.extend_from_slice(self.message);
    }
}

/// An EOF packet (protocol 41): warnings and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EofPacket {
    pub warnings: u16,
    pub status: u16,
}

impl EofPacket {
    pub fn parse(payload: &[u8]) -> Result<Self, MyWireError> {
        let mut r = Reader::new(payload);
        if r.u8()? != EOF_HEADER || payload.len() >= 9 {
            return Err(MyWireError::Malformed("not an EOF packet"));
        }
        if r.is_empty() {
            // protocol 320: the header alone
            return Ok(EofPacket { warnings: 0, status: 0 });
        }
        Ok(EofPacket {
            warnings: r.u16()?,
            status: r.u16()?,
        })
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(EOF_HEADER);
        out.extend_from_slice(&self.warnings.to_le_bytes());
        out.extend_from_slice(&self.status.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: u32 = caps::PROTOCOL_41 | caps::TRANSACTIONS | caps::DEPRECATE_EOF;

    #[test]
    fn ok_round_trips() {
        let ok = OkPacket {
            affected_rows: 300,
            last_insert_id: 7,
            status: 2,
            warnings: 1,
            info: b"Rows matched: 1",
        };
        let mut out = Vec::new();
        ok.write(&mut out, CAPS, false);
        assert_eq!(response_kind(&out, CAPS), Some(ResponseKind::Ok));
        assert_eq!(OkPacket::parse(&out, CAPS).unwrap(), ok);
        out.clear();
        ok.write(&mut out, CAPS, true);
        assert_eq!(response_kind(&out, CAPS), Some(ResponseKind::OkAsEof));
        assert_eq!(OkPacket::parse(&out, CAPS).unwrap(), ok);
    }

    #[test]
    fn ok_with_session_track() {
        let caps = CAPS | caps::SESSION_TRACK;
        let ok = OkPacket {
            info: b"info",
            ..Default::default()
        };
        let mut out = Vec::new();
        ok.write(&mut out, caps, false);
        assert_eq!(OkPacket::parse(&out, caps).unwrap(), ok);
    }

    #[test]
    fn err_with_and_without_sqlstate() {
        let e = ErrPacket {
            code: 1045,
            sql_state: Some(*b"28000"),
            message: b"Access denied",
        };
        let mut out = Vec::new();
        e.write(&mut out);
        assert_eq!(response_kind(&out, CAPS), Some(ResponseKind::Err));
        assert_eq!(ErrPacket::parse(&out).unwrap(), e);
        let pre41 = [0xff, 0x15, 0x04, b'n', b'o'];
        let p = ErrPacket::parse(&pre41).unwrap();
        assert_eq!((p.code, p.sql_state, p.message), (1045, None, &b"no"[..]));
        assert_eq!(ErrPacket::parse(&[0xff, 1]), Err(MyWireError::Truncated));
    }

    #[test]
    fn eof_is_told_from_a_long_row_by_length() {
        let mut out = Vec::new();
        EofPacket {
            warnings: 0,
            status: 0x22,
        }
        .write(&mut out);
        assert_eq!(out.len(), 5);
        assert_eq!(response_kind(&out, 0), Some(ResponseKind::Eof));
        assert_eq!(EofPacket::parse(&out).unwrap().status, 0x22);
        // a text row whose first value is 2^24 bytes or more also starts with 0xFE
        let row = [0xfe, 0, 0, 0, 1, 0, 0, 0, 0, b'x'];
        assert_eq!(response_kind(&row, 0), None);
        assert!(EofPacket::parse(&row).is_err());
    }
}

//! Result sets: column definitions, and where each value lies in a text or
//! binary row, so that values can be scanned and masked in place (a masked
//! row is rebuilt with new lengths; its packets are framed again).

use super::bytes::{Reader, NULL_MARKER};
use super::MyWireError;
use std::ops::Range;

/// Column types (`enum_field_types`).
pub mod types {
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
    pub const NEWDATE: u8 = 14;
    pub const VARCHAR: u8 = 15;
    pub const BIT: u8 = 16;
    pub const TIMESTAMP2: u8 = 17;
    pub const DATETIME2: u8 = 18;
    pub const TIME2: u8 = 19;
    pub const JSON: u8 = 245;
    pub const NEWDECIMAL: u8 = 246;
    pub const ENUM: u8 = 247;
    pub const SET: u8 = 248;
    pub const TINY_BLOB: u8 = 249;
    pub const MEDIUM_BLOB: u8 = 250;
    pub const LONG_BLOB: u8 = 251;
    pub const BLOB: u8 = 252;
    pub const VAR_STRING: u8 = 253;
    pub const STRING: u8 = 254;
    pub const GEOMETRY: u8 = 255;
}

/// A column definition (protocol 41), the fields gatehouse uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub schema: Vec<u8>,
    pub table: Vec<u8>,
    pub name: Vec<u8>,
    pub charset: u16,
    pub length: u32,
    pub column_type: u8,
    pub flags: u16,
    pub decimals: u8,
}

impl Column {
    pub fn parse(payload: &[u8]) -> Result<Column, MyWireError> {
        let mut r = Reader::new(payload);
        let _catalog = r.lenenc_bytes()?;
        let schema = r.lenenc_bytes()?.to_vec();
        let table = r.lenenc_bytes()?.to_vec();
        let _org_table = r.lenenc_bytes()?;
        let name = r.lenenc_bytes()?.to_vec();
        let _org_name = r.lenenc_bytes()?;
        let fixed = r.lenenc_int()?;
        if fixed < 0x0a {
            return Err(MyWireError::Malformed("column definition too short"));
        }
        Ok(Column {
            schema,
            table,
            name,
            charset: r.u16()?,
            length: r.u32()?,
            column_type: r.u8()?,
            flags: r.u16()?,
            decimals: r.u8()?,
        })
    }
}

/// Where one value of a row is: `None` for NULL, else the byte range of its
/// contents in the row payload, and whether it is text a secret could be in
/// (strings, blobs, JSON, decimals as text; not fixed-width numbers or
/// temporal values in binary rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueSpan {
    pub range: Option<Range<usize>>,
    pub textual: bool,
}

/// The values of a text-protocol row: every value is a length-encoded
/// string or the NULL marker.
pub fn text_row_values(payload: &[u8], columns: usize) -> Result<Vec<ValueSpan>, MyWireError> {
    let mut r = Reader::new(payload);
    let mut out = Vec::with_capacity(columns);
    for _ in 0..columns {
        if r.peek() == Some(NULL_MARKER) {
            r.skip(1)?;
            out.push(ValueSpan {
                range: None,
                textual: true,
            });
            continue;
        }
        let len = usize::try_from(r.lenenc_int()?).map_err(|_| MyWireError::Truncated)?;
        let start = r.position();
        r.skip(len)?;
        out.push(ValueSpan {
            range: Some(start..start + len),
            textual: true,
        });
    }
    if !r.is_empty() {
        return Err(MyWireError::Malformed("bytes after the last value of a row"));
    }
    Ok(out)
}

/// The values of a binary-protocol row (the reply to COM_STMT_EXECUTE):
/// a 0x00 header, a NULL bitmap offset by two bits, then each non-NULL
/// value in its type's encoding.
pub fn binary_row_values(payload: &[u8], column_types: &[u8]) -> Result<Vec<ValueSpan>, MyWireError> {
    let mut r = Reader::new(payload);
    if r.u8()? != 0 {
        return Err(MyWireError::Malformed("binary row without its 0x00 header"));
    }
    let n = column_types.len();
    let bitmap = r.bytes((n + 7 + 2) / 8)?;
    let mut out = Vec::with_capacity(n);
    for (i, &t) in column_types.iter().enumerate() {
        let bit = i + 2;
        if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
            out.push(ValueSpan {
                range: None,
                textual: false,
            });
            continue;
        }
        let (len, textual) = match t {
            types::TINY => (1, false),
            types::SHORT | types::YEAR => (2, false),
            types::LONG | types::INT24 | types::FLOAT => (4, false),
            types::DOUBLE | types::LONGLONG => (8, false),
            types::NULL => (0, false),
            types::DATE
            | types::DATETIME
            | types::TIMESTAMP
            | types::TIME
            | types::NEWDATE
            | types::TIMESTAMP2
            | types::DATETIME2
            | types::TIME2 => (r.u8()? as usize, false),
            types::DECIMAL
            | types::NEWDECIMAL
            | types::VARCHAR
            | types::BIT
            | types::JSON
            | types::ENUM
            | types::SET
            | types::TINY_BLOB
            | types::MEDIUM_BLOB
            | types::LONG_BLOB
            | types::BLOB
            | types::VAR_STRING
            | types::STRING
            | types::GEOMETRY => (
                usize::try_from(r.lenenc_int()?).map_err(|_| MyWireError::Truncated)?,
                true,
            ),
            // A type gatehouse cannot size: the rest of the row cannot be
            // found, so the row is refused rather than passed unscanned.
            _ => return Err(MyWireError::Unsupported("a binary row value of an unknown type")),
        };
        let start = r.position();
        r.skip(len)?;
        out.push(ValueSpan {
            range: Some(start..start + len),
            textual,
        });
    }
    if !r.is_empty() {
        return Err(MyWireError::Malformed("bytes after the last value of a row"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mysql::bytes::{put_lenenc_bytes, put_lenenc_int};

    #[test]
    fn column_definition() {
        let mut p = Vec::new();
        for s in [&b"def"[..], b"test", b"t", b"t", b"token", b"token"] {
            put_lenenc_bytes(&mut p, s);
        }
        put_lenenc_int(&mut p, 0x0c);
        p.extend_from_slice(&45u16.to_le_bytes());
        p.extend_from_slice(&1024u32.to_le_bytes());
        p.push(types::VAR_STRING);
        p.extend_from_slice(&0u16.to_le_bytes());
        p.push(0);
        p.extend_from_slice(&[0, 0]);
        let c = Column::parse(&p).unwrap();
        assert_eq!(
            (c.name.as_slice(), c.column_type, c.charset),
            (&b"token"[..], types::VAR_STRING, 45)
        );
        for n in 0..p.len() - 2 {
            assert!(Column::parse(&p[..n]).is_err());
        }
    }

    #[test]
    fn text_rows() {
        let mut p = Vec::new();
        put_lenenc_bytes(&mut p, b"1");
        p.push(NULL_MARKER);
        put_lenenc_bytes(&mut p, &[b'x'; 300]);
        let v = text_row_values(&p, 3).unwrap();
        assert_eq!(v[0].range, Some(1..2));
        assert_eq!(v[1].range, None);
        assert_eq!(v[2].range, Some(6..306), "a 300-byte value has a 3-byte length");
        assert!(text_row_values(&p, 2).is_err(), "bytes left over");
        assert!(text_row_values(&p, 4).is_err(), "a value missing");
        assert!(text_row_values(&p[..100], 3).is_err());
    }

    #[test]
    fn binary_rows() {
        let types = [
            types::LONGLONG,
            types::VAR_STRING,
            types::DATETIME,
            types::BLOB,
            types::TINY,
        ];
        let mut p = vec![0u8];
        // NULL bitmap: 5 columns + 2 bits = 1 byte; column 3 (BLOB) is NULL
        p.push(1 << (3 + 2));
        p.extend_from_slice(&7i64.to_le_bytes());
        put_lenenc_bytes(&mut p, b"ghp_secret");
        p.extend_from_slice(&[4, 0xea, 0x07, 12, 3]);
        p.push(9);
        let v = binary_row_values(&p, &types).unwrap();
        assert_eq!(
            v[0],
            ValueSpan {
                range: Some(2..10),
                textual: false
            }
        );
        assert_eq!(
            v[1],
            ValueSpan {
                range: Some(11..21),
                textual: true
            }
        );
        assert_eq!(&p[11..21], b"ghp_secret");
        assert_eq!(v[2].range, Some(22..26));
        assert_eq!(v[3].range, None);
        assert_eq!(v[4].range, Some(26..27));
        assert!(binary_row_values(&p[..p.len() - 1], &types).is_err());
        assert!(binary_row_values(
            &p,
            &[types::LONGLONG, types::VAR_STRING, types::DATETIME, types::BLOB, 100]
        )
        .is_err());
        // any truncation is an error, never a panic
        for n in 0..p.len() {
            assert!(binary_row_values(&p[..n], &types).is_err());
        }
    }
}

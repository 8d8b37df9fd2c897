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

/// The strings of a column definition a secret could be in: its catalog,
/// schema, table and column names and, in a reply to COM_FIELD_LIST, the
/// column's default value after the fixed-length fields.
pub fn column_definition_values(payload: &[u8]) -> Result<Vec<ValueSpan>, MyWireError> {
    let mut r = Reader::new(payload);
    let mut out = Vec::with_capacity(7);
    for _ in 0..6 {
        let len = usize::try_from(r.lenenc_int()?).map_err(|_| MyWireError::Truncated)?;
        let start = r.position();
        r.skip(len)?;
        out.push(ValueSpan {
            range: Some(start..start + len),
            textual: true,
        });
    }
    let fixed = usize::try_from(r.lenenc_int()?).map_err(|_| MyWireError::Truncated)?;
    r.skip(fixed)?;
    if !r.is_empty() {
        if r.peek() == Some(NULL_MARKER) {
            r.skip(1)?;
        } else {
            let len = usize::try_from(r.lenenc_int()?).map_err(|_| MyWireError::Truncated)?;
            let start = r.position();
            r.skip(len)?;
            out.push(ValueSpan {
                range: Some(start..start + len),
                textual: true,
            });
        }
    }
    Ok(out)
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
        let (len, textual) = value_size(&mut r, t)?;
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

/// The length of a binary-protocol value of type `t` (its length prefix
/// read, if it has one), and whether it is text a secret could be in.
fn value_size(r: &mut Reader<'_>, t: u8) -> Result<(usize, bool), MyWireError> {
    Ok(match t {
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
        // A type gatehouse cannot size: what follows cannot be found, so
        // the message is refused rather than passed unread.
        _ => return Err(MyWireError::Unsupported("a binary value of an unknown type")),
    })
}

/// A fixed-width or temporal binary-protocol value as the text protocol
/// would have sent it (other bytes in hex).
pub fn binary_value_text(column_type: u8, unsigned: bool, b: &[u8]) -> String {
    let le = |n: usize| -> u64 {
        let mut v = 0u64;
        for (i, &x) in b.iter().take(n).enumerate() {
            v |= (x as u64) << (8 * i);
        }
        v
    };
    let int = |n: usize| -> String {
        let v = le(n);
        if unsigned {
            v.to_string()
        } else {
            let shift = 64 - 8 * n as u32;
            (((v << shift) as i64) >> shift).to_string()
        }
    };
    match column_type {
        types::TINY if b.len() == 1 => int(1),
        types::SHORT | types::YEAR if b.len() == 2 => int(2),
        types::LONG | types::INT24 if b.len() == 4 => int(4),
        types::LONGLONG if b.len() == 8 => int(8),
        types::FLOAT if b.len() == 4 => float_text(f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64),
        types::DOUBLE if b.len() == 8 => float_text(f64::from_bits(le(8))),
        types::DATE | types::DATETIME | types::TIMESTAMP | types::NEWDATE | types::DATETIME2 | types::TIMESTAMP2 => {
            let date_only = matches!(column_type, types::DATE | types::NEWDATE);
            if b.len() < 4 {
                return if date_only { "0000-00-00" } else { "0000-00-00 00:00:00" }.to_string();
            }
            let mut s = format!("{:04}-{:02}-{:02}", u16::from_le_bytes([b[0], b[1]]), b[2], b[3]);
            if !date_only {
                let (h, m, sec) = if b.len() >= 7 { (b[4], b[5], b[6]) } else { (0, 0, 0) };
                s.push_str(&format!(" {h:02}:{m:02}:{sec:02}"));
                if b.len() >= 11 {
                    s.push_str(&format!(".{:06}", u32::from_le_bytes([b[7], b[8], b[9], b[10]])));
                }
            }
            s
        }
        types::TIME | types::TIME2 => {
            if b.len() < 8 {
                return "00:00:00".to_string();
            }
            let negative = b[0] == 1;
            let days = u32::from_le_bytes([b[1], b[2], b[3], b[4]]) as u64;
            let hours = days * 24 + b[5] as u64;
            let mut s = format!("{}{hours:02}:{:02}:{:02}", if negative { "-" } else { "" }, b[6], b[7]);
            if b.len() >= 12 {
                s.push_str(&format!(".{:06}", u32::from_le_bytes([b[8], b[9], b[10], b[11]])));
            }
            s
        }
        _ => format!("\\x{}", hex::encode(b)),
    }
}

/// The parameter types a COM_STMT_EXECUTE binds, if it binds new ones
/// (see [`execute_params`]); the values are not read.
pub fn bind_types(payload: &[u8], count: usize) -> Result<Option<Vec<(u8, bool)>>, MyWireError> {
    if count == 0 {
        return Ok(None);
    }
    let mut r = Reader::new(payload);
    r.skip(1 + 4 + 1 + 4 + count.div_ceil(8))?;
    if r.u8()? != 1 {
        return Ok(None);
    }
    let mut types = Vec::with_capacity(count);
    for _ in 0..count {
        let t = r.u8()?;
        let flags = r.u8()?;
        types.push((t, flags & 0x80 != 0));
    }
    Ok(Some(types))
}

/// A floating-point value as the server writes one: an exponent for the
/// very large and very small (never hundreds of digits).
fn float_text(v: f64) -> String {
    if v != 0.0 && v.is_finite() && (v.abs() >= 1e15 || v.abs() < 1e-4) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

/// One parameter of a COM_STMT_EXECUTE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Null,
    /// Sent before, with COM_STMT_SEND_LONG_DATA.
    LongData,
    /// The value as the text protocol would write it (text and blobs as sent).
    Value(Vec<u8>),
}

/// The parameters of a COM_STMT_EXECUTE payload (command byte included) of
/// a statement with `count` parameters. `bound`: each parameter's type and
/// whether it is unsigned, as the last execution that bound types left
/// them (updated when this one binds new ones); `long_data`: parameters
/// sent with COM_STMT_SEND_LONG_DATA since, which the payload leaves out.
pub fn execute_params(
    payload: &[u8],
    count: usize,
    bound: &mut Vec<(u8, bool)>,
    long_data: &[u16],
) -> Result<Vec<Param>, MyWireError> {
    let mut r = Reader::new(payload);
    r.skip(1 + 4 + 1 + 4)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let nulls = r.bytes(count.div_ceil(8))?;
    if r.u8()? == 1 {
        let mut types = Vec::with_capacity(count);
        for _ in 0..count {
            let t = r.u8()?;
            let flags = r.u8()?;
            types.push((t, flags & 0x80 != 0));
        }
        *bound = types;
    }
    if bound.len() != count {
        return Err(MyWireError::Malformed("parameters without their types"));
    }
    let mut out = Vec::with_capacity(count);
    for (i, &(t, unsigned)) in bound.iter().enumerate() {
        if nulls[i / 8] & (1 << (i % 8)) != 0 {
            out.push(Param::Null);
            continue;
        }
        if long_data.contains(&(i as u16)) {
            out.push(Param::LongData);
            continue;
        }
        if matches!(t, types::NEWDATE | types::TIMESTAMP2 | types::DATETIME2 | types::TIME2) {
            // Types a server does not take as parameters the way rows send
            // them: what it would read cannot be told.
            return Err(MyWireError::Unsupported(
                "a parameter type the server reads its own way",
            ));
        }
        let (len, textual) = value_size(&mut r, t)?;
        let b = r.bytes(len)?;
        out.push(Param::Value(if textual {
            b.to_vec()
        } else {
            binary_value_text(t, unsigned, b).into_bytes()
        }));
    }
    if !r.is_empty() {
        // Bytes the server would not read as these parameters: what a
        // reviewer is shown would not be what runs.
        return Err(MyWireError::Malformed("bytes after the last parameter"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mysql::bytes::{put_lenenc_bytes, put_lenenc_int};

    #[test]
    fn binary_values_read_as_the_text_protocol_would_send_them() {
        assert_eq!(binary_value_text(types::TINY, false, &[0xff]), "-1");
        assert_eq!(binary_value_text(types::TINY, true, &[0xff]), "255");
        assert_eq!(binary_value_text(types::LONG, false, &(-42i32).to_le_bytes()), "-42");
        assert_eq!(
            binary_value_text(types::LONGLONG, true, &u64::MAX.to_le_bytes()),
            u64::MAX.to_string()
        );
        assert_eq!(
            binary_value_text(types::LONGLONG, false, &i64::MIN.to_le_bytes()),
            i64::MIN.to_string()
        );
        assert_eq!(binary_value_text(types::DOUBLE, false, &1.5f64.to_le_bytes()), "1.5");
        assert_eq!(
            binary_value_text(types::DOUBLE, false, &1e308f64.to_le_bytes()),
            "1e308"
        );
        assert_eq!(
            binary_value_text(types::DOUBLE, false, &(-2.5e-7f64).to_le_bytes()),
            "-2.5e-7"
        );
        assert_eq!(
            binary_value_text(types::DATE, false, &[0xea, 0x07, 12, 4]),
            "2026-12-04"
        );
        assert_eq!(
            binary_value_text(
                types::DATETIME,
                false,
                &[0xea, 0x07, 12, 4, 13, 5, 9, 0x40, 0xe2, 0x01, 0]
            ),
            "2026-12-04 13:05:09.123456"
        );
        assert_eq!(binary_value_text(types::TIMESTAMP, false, &[]), "0000-00-00 00:00:00");
        assert_eq!(
            binary_value_text(types::TIME, false, &[1, 1, 0, 0, 0, 2, 3, 4]),
            "-26:03:04"
        );
        assert_eq!(binary_value_text(types::TINY, false, &[1, 2]), "\\x0102");
    }

    #[test]
    fn execute_parameters_with_types_bound_then_reused() {
        // id 7, no cursor, one iteration; 3 params: NULL bitmap 0b010
        // (the second is NULL), types bound: LONGLONG unsigned, VAR_STRING, TINY.
        let mut p = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0b010, 1];
        p.extend_from_slice(&[types::LONGLONG, 0x80, types::VAR_STRING, 0, types::TINY, 0]);
        p.extend_from_slice(&u64::MAX.to_le_bytes());
        p.push(0xfe);
        let mut bound = Vec::new();
        let v = execute_params(&p, 3, &mut bound, &[]).unwrap();
        assert_eq!(
            v,
            vec![
                Param::Value(u64::MAX.to_string().into_bytes()),
                Param::Null,
                Param::Value(b"-2".to_vec())
            ]
        );
        // Next execution: no new types, all values; the second was sent as long data.
        let mut p = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0];
        p.extend_from_slice(&5u64.to_le_bytes());
        p.push(3);
        let v = execute_params(&p, 3, &mut bound, &[1]).unwrap();
        assert_eq!(
            v,
            vec![
                Param::Value(b"5".to_vec()),
                Param::LongData,
                Param::Value(b"3".to_vec())
            ]
        );
        // A string parameter.
        let mut p = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, types::VAR_STRING, 0];
        put_lenenc_bytes(&mut p, b"o'brien");
        let mut one = Vec::new();
        assert_eq!(
            execute_params(&p, 1, &mut one, &[]).unwrap(),
            vec![Param::Value(b"o'brien".to_vec())]
        );
        // Truncated or typeless: an error, never a panic.
        assert!(execute_params(&p[..p.len() - 2], 1, &mut Vec::new(), &[]).is_err());
        let typeless = [0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
        assert!(execute_params(&typeless, 1, &mut Vec::new(), &[]).is_err());
    }

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

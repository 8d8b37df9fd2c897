//! Where the values are inside backend messages that can carry data: the
//! spans a scanner looks at, and rebuilding a message with some of them
//! changed.

use super::{begin, finish, Cursor, WireError, HEADER_LEN};

/// Appends the spans (offsets into the whole frame, header included) of the
/// values inside a backend frame that may hold data: DataRow columns,
/// ErrorResponse/NoticeResponse fields, the NotificationResponse channel
/// and payload, the CopyData payload, a FunctionCallResponse's result, a
/// ParameterStatus value. Other frames have none.
pub fn value_spans(frame: &[u8], out: &mut Vec<(usize, usize)>) -> Result<(), WireError> {
    let Some(&tag) = frame.first() else { return Ok(()) };
    let body = frame.get(HEADER_LEN..).unwrap_or(&[]);
    let base = HEADER_LEN;
    match tag {
        b'D' => {
            let mut c = Cursor::new(body, "DataRow");
            let n = c.i16()?;
            if n < 0 {
                return Err(WireError::Malformed("DataRow"));
            }
            for _ in 0..n {
                let len = c.i32()?;
                if len < 0 {
                    continue;
                }
                let at = base + (body.len() - c.remaining().len());
                c.bytes(len as usize)?;
                out.push((at, at + len as usize));
            }
            // Bytes after the last column: no server sends them, and a
            // rebuilt row could not keep them where they were.
            if !c.remaining().is_empty() {
                return Err(WireError::Malformed("DataRow"));
            }
        }
        b'E' | b'N' => {
            let mut c = Cursor::new(body, "ErrorResponse");
            loop {
                let code = c.u8()?;
                if code == 0 {
                    break;
                }
                let at = base + (body.len() - c.remaining().len());
                let v = c.cstr()?;
                if !matches!(code, b'S' | b'V' | b'C') {
                    out.push((at, at + v.len()));
                }
            }
        }
        b'A' => {
            let mut c = Cursor::new(body, "NotificationResponse");
            c.i32()?;
            for _ in 0..2 {
                let at = base + (body.len() - c.remaining().len());
                let v = c.cstr()?;
                out.push((at, at + v.len()));
            }
        }
        b'd' => out.push((base, frame.len())),
        b'V' => {
            let mut c = Cursor::new(body, "FunctionCallResponse");
            let len = c.i32()?;
            if len >= 0 {
                let at = base + 4;
                c.bytes(len as usize)?;
                out.push((at, at + len as usize));
            }
            // As for DataRow: nothing may follow the result.
            if !c.remaining().is_empty() {
                return Err(WireError::Malformed("FunctionCallResponse"));
            }
        }
        b'S' => {
            let mut c = Cursor::new(body, "ParameterStatus");
            c.cstr()?;
            let at = base + (body.len() - c.remaining().len());
            let v = c.cstr()?;
            out.push((at, at + v.len()));
        }
        _ => {}
    }
    Ok(())
}

/// A replacement of `frame[start..end]` (inside one value) by `with`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replace<'a> {
    pub start: usize,
    pub end: usize,
    pub with: &'a [u8],
}

/// Appends `frame` to `out` with the replacements applied (sorted, not
/// overlapping, each inside one value of [`value_spans`]); DataRow column
/// lengths and the message length are re-framed.
pub fn rebuild(frame: &[u8], spans: &[(usize, usize)], reps: &[Replace<'_>], out: &mut Vec<u8>) {
    let tag = frame[0];
    let at = begin(out, tag);
    let mut pos = HEADER_LEN;
    let mut ri = 0;
    let copy_value = |out: &mut Vec<u8>, s: usize, e: usize, ri: &mut usize| {
        let mut p = s;
        while *ri < reps.len() && reps[*ri].start < e {
            let r = &reps[*ri];
            out.extend_from_slice(&frame[p..r.start]);
            out.extend_from_slice(r.with);
            p = r.end;
            *ri += 1;
        }
        out.extend_from_slice(&frame[p..e]);
    };
    if tag == b'V' && spans.len() == 1 {
        // The result's length, re-framed.
        let (s, e) = spans[0];
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        copy_value(out, s, e, &mut ri);
        let new_len = (out.len() - len_at - 4) as i32;
        out[len_at..len_at + 4].copy_from_slice(&new_len.to_be_bytes());
    } else if tag == b'D' {
        // Column count, then each column re-framed (as many as the count
        // says, as `value_spans` read them).
        out.extend_from_slice(&frame[HEADER_LEN..HEADER_LEN + 2]);
        let columns = i16::from_be_bytes([frame[HEADER_LEN], frame[HEADER_LEN + 1]]).max(0);
        pos += 2;
        for _ in 0..columns {
            let len = i32::from_be_bytes([frame[pos], frame[pos + 1], frame[pos + 2], frame[pos + 3]]);
            pos += 4;
            if len < 0 {
                out.extend_from_slice(&len.to_be_bytes());
                continue;
            }
            let (s, e) = (pos, pos + len as usize);
            let len_at = out.len();
            out.extend_from_slice(&[0; 4]);
            copy_value(out, s, e, &mut ri);
            let new_len = (out.len() - len_at - 4) as i32;
            out[len_at..len_at + 4].copy_from_slice(&new_len.to_be_bytes());
            pos = e;
        }
    } else {
        for &(s, e) in spans {
            out.extend_from_slice(&frame[pos..s]);
            copy_value(out, s, e, &mut ri);
            pos = e;
        }
        out.extend_from_slice(&frame[pos..]);
    }
    finish(out, at);
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        let at = begin(&mut v, tag);
        v.extend_from_slice(body);
        finish(&mut v, at);
        v
    }

    fn data_row(cols: &[Option<&[u8]>]) -> Vec<u8> {
        let mut v = Vec::new();
        let at = begin(&mut v, b'D');
        v.extend_from_slice(&(cols.len() as i16).to_be_bytes());
        for c in cols {
            match c {
                Some(b) => {
                    v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    v.extend_from_slice(b);
                }
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        finish(&mut v, at);
        v
    }

    #[test]
    fn a_datarow_with_bytes_after_its_columns_is_malformed() {
        // Found by fuzzing: the rebuild read the trailing bytes as more
        // columns and panicked on a hostile server's row.
        let mut f = data_row(&[Some(b"ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"), None]);
        f.extend_from_slice(&[0, 0, 0, 0x3c, 8]);
        let len = (f.len() - 1) as u32;
        f[1..5].copy_from_slice(&len.to_be_bytes());
        let mut spans = Vec::new();
        assert_eq!(value_spans(&f, &mut spans), Err(WireError::Malformed("DataRow")));
    }

    #[test]
    fn datarow_rebuild_reframes() {
        let f = data_row(&[Some(b"id-1"), None, Some(b"key AKIA1234 end")]);
        let mut spans = Vec::new();
        value_spans(&f, &mut spans).unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(&f[spans[1].0..spans[1].1], b"key AKIA1234 end");
        let s = spans[1].0 + 4;
        let reps = [Replace {
            start: s,
            end: s + 8,
            with: b"[MASKED:aws]",
        }];
        let mut out = Vec::new();
        rebuild(&f, &spans, &reps, &mut out);
        assert_eq!(out, data_row(&[Some(b"id-1"), None, Some(b"key [MASKED:aws] end")]));
    }

    #[test]
    fn error_rebuild() {
        let mut f = Vec::new();
        error_message(
            &mut f,
            false,
            "ERROR",
            "22P02",
            "invalid input syntax for type integer: \"AKIA1234\"",
            None,
            None,
        );
        let mut spans = Vec::new();
        value_spans(&f, &mut spans).unwrap();
        let m = spans
            .iter()
            .find(|(s, e)| f[*s..*e].starts_with(b"invalid"))
            .copied()
            .unwrap();
        let s = m.0 + f[m.0..m.1].windows(8).position(|w| w == b"AKIA1234").unwrap();
        let mut out = Vec::new();
        rebuild(
            &f,
            &spans,
            &[Replace {
                start: s,
                end: s + 8,
                with: b"[MASKED:x]",
            }],
            &mut out,
        );
        let mut fr = Framer::new(&out, Side::Backend, 1 << 20);
        let fr = fr.next_frame().unwrap().unwrap();
        let msg = error_fields(fr.body).find(|(c, _)| *c == b'M').unwrap().1;
        assert_eq!(msg, b"invalid input syntax for type integer: \"[MASKED:x]\"");
    }

    #[test]
    fn malformed_datarow_is_an_error() {
        let mut f = data_row(&[Some(b"abc")]);
        f[8] = 0x7f; // column length far past the end
        let mut spans = Vec::new();
        assert!(value_spans(&f, &mut spans).is_err());
    }

    #[test]
    fn function_results_and_parameter_values_are_values() {
        let mut spans = Vec::new();
        let v = msg(b'V', b"\0\0\0\x05hello");
        value_spans(&v, &mut spans).unwrap();
        assert_eq!(&v[spans[0].0..spans[0].1], b"hello");
        let mut out = Vec::new();
        rebuild(
            &v,
            &spans,
            &[Replace {
                start: spans[0].0,
                end: spans[0].1,
                with: b"[MASKED]",
            }],
            &mut out,
        );
        assert_eq!(out, msg(b'V', b"\0\0\0\x08[MASKED]"));
        spans.clear();
        value_spans(&msg(b'V', b"\xff\xff\xff\xff"), &mut spans).unwrap();
        assert!(spans.is_empty(), "NULL has no value");
        let p = msg(b'S', b"application_name\0secret-app\0");
        spans.clear();
        value_spans(&p, &mut spans).unwrap();
        assert_eq!(&p[spans[0].0..spans[0].1], b"secret-app");
        assert!(value_spans(&msg(b'V', b"\0\0\0\x09ab"), &mut Vec::new()).is_err());
    }
}

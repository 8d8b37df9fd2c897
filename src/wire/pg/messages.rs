//! Typed views of the frontend messages whose contents decide what the
//! server will run: Parse, Bind, Execute, Describe, Close, FunctionCall.
//!
//! Each decoder takes a message body (after tag and length) and either
//! returns borrowed views into it or an error: a message that does not
//! decode is one the server would reject too, and callers treat it as such
//! instead of guessing at a part of it.

use super::{Cursor, WireError};

/// `Parse`: a statement name, its text, and the parameter types given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseMsg<'a> {
    pub name: &'a [u8],
    pub sql: &'a [u8],
}

pub fn parse_msg(body: &[u8]) -> Result<ParseMsg<'_>, WireError> {
    let mut c = Cursor::new(body, "Parse");
    let name = c.cstr()?;
    let sql = c.cstr()?;
    let n = c.i16()?;
    if n < 0 {
        return Err(WireError::Malformed("Parse"));
    }
    c.bytes(n as usize * 4)?;
    if !c.is_empty() {
        // The server refuses bytes after the last field too.
        return Err(WireError::Malformed("Parse"));
    }
    Ok(ParseMsg { name, sql })
}

/// `Bind`: the portal it creates, the statement it binds, and the rest of
/// the message (formats, parameters, result formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindMsg<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    /// Everything after the two names.
    pub rest: &'a [u8],
}

/// Decodes the names of a Bind. Only the names are needed to know what it
/// binds; `bind_params` reads the rest when parameters are wanted.
pub fn bind_names(body: &[u8]) -> Result<BindMsg<'_>, WireError> {
    let mut c = Cursor::new(body, "Bind");
    let portal = c.cstr()?;
    let statement = c.cstr()?;
    Ok(BindMsg {
        portal,
        statement,
        rest: c.remaining(),
    })
}

/// A Bind parameter: its bytes (`None` for NULL) and whether it is in
/// binary format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindParam<'a> {
    pub value: Option<&'a [u8]>,
    pub binary: bool,
}

/// Whether the rest of a Bind (after its names) is well formed, as the
/// server reads it; walks it without allocating.
pub fn check_bind(rest: &[u8]) -> Result<(), WireError> {
    let mut c = Cursor::new(rest, "Bind");
    let nformats = c.i16()?;
    if nformats < 0 {
        return Err(WireError::Malformed("Bind"));
    }
    c.bytes(nformats as usize * 2)?;
    let nparams = c.i16()?;
    if nparams < 0 || (nformats > 1 && nformats != nparams) {
        return Err(WireError::Malformed("Bind"));
    }
    for _ in 0..nparams {
        let len = c.i32()?;
        if len > 0 {
            c.bytes(len as usize)?;
        }
    }
    let nresults = c.i16()?;
    if nresults < 0 {
        return Err(WireError::Malformed("Bind"));
    }
    c.bytes(nresults as usize * 2)?;
    if !c.is_empty() {
        return Err(WireError::Malformed("Bind"));
    }
    Ok(())
}

/// The parameters of a Bind, from `BindMsg::rest`.
pub fn bind_params(rest: &[u8]) -> Result<Vec<BindParam<'_>>, WireError> {
    let mut c = Cursor::new(rest, "Bind");
    let nformats = c.i16()?;
    if nformats < 0 {
        return Err(WireError::Malformed("Bind"));
    }
    let mut formats = Vec::with_capacity(nformats as usize);
    for _ in 0..nformats {
        formats.push(c.i16()?);
    }
    let nparams = c.i16()?;
    if nparams < 0 || (nformats > 1 && nformats != nparams) {
        return Err(WireError::Malformed("Bind"));
    }
    let mut out = Vec::with_capacity(nparams as usize);
    for i in 0..nparams as usize {
        let format = match formats.len() {
            0 => 0,
            1 => formats[0],
            _ => formats[i],
        };
        let len = c.i32()?;
        let value = if len < 0 { None } else { Some(c.bytes(len as usize)?) };
        out.push(BindParam {
            value,
            binary: format == 1,
        });
    }
    // Result formats, and nothing after them (the server checks the end).
    let nresults = c.i16()?;
    if nresults < 0 {
        return Err(WireError::Malformed("Bind"));
    }
    c.bytes(nresults as usize * 2)?;
    if !c.is_empty() {
        return Err(WireError::Malformed("Bind"));
    }
    Ok(out)
}

/// `Execute`: the portal and the row limit (0: all).
pub fn execute_msg(body: &[u8]) -> Result<(&[u8], i32), WireError> {
    let mut c = Cursor::new(body, "Execute");
    let portal = c.cstr()?;
    let max = c.i32()?;
    Ok((portal, max))
}

/// What a Describe or Close names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Statement,
    Portal,
}

/// `Describe` and `Close`: `S` or `P`, and a name.
pub fn target_msg<'a>(body: &'a [u8], what: &'static str) -> Result<(Target, &'a [u8]), WireError> {
    let mut c = Cursor::new(body, what);
    let kind = match c.u8()? {
        b'S' => Target::Statement,
        b'P' => Target::Portal,
        _ => return Err(WireError::Malformed(what)),
    };
    Ok((kind, c.cstr()?))
}

/// `FunctionCall`: the function's OID and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCallMsg<'a> {
    pub oid: u32,
    pub args: Vec<BindParam<'a>>,
}

pub fn function_call_msg(body: &[u8]) -> Result<FunctionCallMsg<'_>, WireError> {
    let mut c = Cursor::new(body, "FunctionCall");
    let oid = c.i32()? as u32;
    let nformats = c.i16()?;
    if nformats < 0 {
        return Err(WireError::Malformed("FunctionCall"));
    }
    let mut formats = Vec::with_capacity(nformats as usize);
    for _ in 0..nformats {
        formats.push(c.i16()?);
    }
    let nargs = c.i16()?;
    if nargs < 0 || (nformats > 1 && nformats != nargs) {
        return Err(WireError::Malformed("FunctionCall"));
    }
    let mut args = Vec::with_capacity(nargs as usize);
    for i in 0..nargs as usize {
        let format = match formats.len() {
            0 => 0,
            1 => formats[0],
            _ => formats[i],
        };
        let len = c.i32()?;
        let value = if len < 0 { None } else { Some(c.bytes(len as usize)?) };
        args.push(BindParam {
            value,
            binary: format == 1,
        });
    }
    c.i16()?;
    if !c.is_empty() {
        return Err(WireError::Malformed("FunctionCall"));
    }
    Ok(FunctionCallMsg { oid, args })
}

/// A parameter as a reviewer reads it: text as it is, binary as hex, NULL
/// as `NULL`; at most `max` bytes of it.
pub fn param_text(p: &BindParam<'_>, max: usize) -> String {
    match p.value {
        None => "NULL".to_string(),
        Some(v) if p.binary => {
            let shown = &v[..v.len().min(max / 2)];
            let mut s = format!("\\x{}", hex::encode(shown));
            if shown.len() < v.len() {
                s.push_str(&format!("… ({} bytes)", v.len()));
            }
            s
        }
        Some(v) => {
            let mut end = v.len().min(max);
            while end < v.len() && end > 0 && std::str::from_utf8(&v[..end]).is_err() {
                end -= 1;
            }
            let mut s = String::from_utf8_lossy(&v[..end]).into_owned();
            if end < v.len() {
                s.push_str(&format!("… ({} bytes)", v.len()));
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_message() {
        let p = parse_msg(b"s1\0select $1\0\0\x01\0\0\0\x17").unwrap();
        assert_eq!((p.name, p.sql), (&b"s1"[..], &b"select $1"[..]));
        assert!(parse_msg(b"s1\0select 1\0").is_err(), "no type count");
        assert!(parse_msg(b"s1\0select 1\0\0\x02\0\0\0\x17").is_err(), "types cut");
        assert!(parse_msg(b"s1\0select 1\0\0\0junk").is_err(), "bytes after the types");

        let body = b"p\0s\0\0\x01\0\x01\0\x02\0\0\0\x02hi\xff\xff\xff\xff\0\0";
        let b = bind_names(body).unwrap();
        assert_eq!((b.portal, b.statement), (&b"p"[..], &b"s"[..]));
        let params = bind_params(b.rest).unwrap();
        assert_eq!(params.len(), 2);
        assert_eq!(params[0].value, Some(&b"hi"[..]));
        assert!(params[0].binary);
        assert_eq!(params[1].value, None);
        assert!(bind_names(b"portal-without-end").is_err());
        assert!(bind_params(b"\0\0\0\x01\0\0\0\x09ab").is_err(), "value cut");
        assert!(bind_params(b"\0\0\0\0\0\0x").is_err(), "bytes after the result formats");
        assert!(bind_params(b"\0\0\0\0").is_err(), "no result formats");
        for rest in [&body[4..], b"\0\0\0\0\0\0", b"\0\0\0\0\0\0x", b"\0\0\0\x01\0\0\0\x09ab"] {
            assert_eq!(check_bind(rest).is_ok(), bind_params(rest).is_ok(), "{rest:?}");
        }

        assert_eq!(execute_msg(b"p\0\0\0\0\x05").unwrap(), (&b"p"[..], 5));
        assert!(execute_msg(b"p\0\0").is_err());
        assert_eq!(
            target_msg(b"Sname\0", "Close").unwrap(),
            (Target::Statement, &b"name"[..])
        );
        assert!(target_msg(b"Xname\0", "Close").is_err());

        let f = function_call_msg(b"\0\0\x04\xd2\0\0\0\x01\0\0\0\x013\0\0").unwrap();
        assert_eq!(f.oid, 1234);
        assert_eq!(f.args[0].value, Some(&b"3"[..]));
    }

    #[test]
    fn parameters_as_text_are_bounded() {
        let text = BindParam {
            value: Some("héllo wörld".as_bytes()),
            binary: false,
        };
        assert_eq!(param_text(&text, 100), "héllo wörld");
        let cut = param_text(&text, 2);
        assert!(cut.starts_with('h') && cut.contains("bytes"), "{cut}");
        let bin = BindParam {
            value: Some(&[1, 2, 255]),
            binary: true,
        };
        assert_eq!(param_text(&bin, 100), "\\x0102ff");
        assert_eq!(
            param_text(
                &BindParam {
                    value: None,
                    binary: false
                },
                10
            ),
            "NULL"
        );
    }
}

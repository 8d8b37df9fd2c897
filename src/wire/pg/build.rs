//! Builders for the messages gatehouse itself sends.

/// Starts a typed frame; `finish` writes its length.
#[inline]
pub fn begin(out: &mut Vec<u8>, tag: u8) -> usize {
    out.push(tag);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

#[inline]
pub fn finish(out: &mut [u8], at: usize) {
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    // A NUL inside a value would end the field early; drop it.
    out.extend(s.iter().copied().filter(|&b| b != 0));
    out.push(0);
}

/// ErrorResponse (`notice == false`) or NoticeResponse with severity,
/// SQLSTATE, message and optional detail and hint.
pub fn error_message(
    out: &mut Vec<u8>,
    notice: bool,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    let at = begin(out, if notice { b'N' } else { b'E' });
    out.push(b'S');
    cstr(out, severity.as_bytes());
    out.push(b'V');
    cstr(out, severity.as_bytes());
    out.push(b'C');
    cstr(out, code.as_bytes());
    out.push(b'M');
    cstr(out, message.as_bytes());
    if let Some(d) = detail {
        out.push(b'D');
        cstr(out, d.as_bytes());
    }
    if let Some(h) = hint {
        out.push(b'H');
        cstr(out, h.as_bytes());
    }
    out.push(0);
    finish(out, at);
}

/// A FATAL ErrorResponse: the session ends after it.
pub fn fatal(out: &mut Vec<u8>, code: &str, message: &str) {
    error_message(out, false, "FATAL", code, message, None, None);
}

pub fn error(out: &mut Vec<u8>, code: &str, message: &str, hint: Option<&str>) {
    error_message(out, false, "ERROR", code, message, None, hint);
}

/// AuthenticationRequest of `code` (0 ok, 3 cleartext password) and payload.
pub fn auth_request(out: &mut Vec<u8>, code: i32, payload: &[u8]) {
    let at = begin(out, b'R');
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(payload);
    finish(out, at);
}

pub fn parameter_status(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let at = begin(out, b'S');
    cstr(out, name);
    cstr(out, value);
    finish(out, at);
}

pub fn backend_key_data(out: &mut Vec<u8>, pid: u32, secret: &[u8]) {
    let at = begin(out, b'K');
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(secret);
    finish(out, at);
}

pub fn ready_for_query(out: &mut Vec<u8>, status: u8) {
    let at = begin(out, b'Z');
    out.push(status);
    finish(out, at);
}

/// NegotiateProtocolVersion: the newest minor version supported and the
/// protocol options not recognised.
pub fn negotiate_protocol_version(out: &mut Vec<u8>, minor: u32, unrecognized: &[&str]) {
    let at = begin(out, b'v');
    out.extend_from_slice(&minor.to_be_bytes());
    out.extend_from_slice(&(unrecognized.len() as u32).to_be_bytes());
    for o in unrecognized {
        cstr(out, o.as_bytes());
    }
    finish(out, at);
}

/// A frontend message with a single C string body (PasswordMessage, Query).
pub fn cstring_message(out: &mut Vec<u8>, tag: u8, s: &[u8]) {
    let at = begin(out, tag);
    cstr(out, s);
    finish(out, at);
}

/// A frontend message with a raw body (SASLInitialResponse/SASLResponse).
pub fn raw_message(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    let at = begin(out, tag);
    out.extend_from_slice(body);
    finish(out, at);
}

/// Terminate ('X').
pub fn terminate(out: &mut Vec<u8>) {
    out.extend_from_slice(&[b'X', 0, 0, 0, 4]);
}

#[cfg(test)]
mod tests {
    use super::super::*;

    #[test]
    fn error_frames_parse_back() {
        let mut v = Vec::new();
        error(&mut v, "08P01", "bad\0thing", Some("hint"));
        let mut f = Framer::new(&v, Side::Backend, 1 << 20);
        let fr = f.next_frame().unwrap().unwrap();
        assert_eq!(fr.tag, b'E');
        let fields: Vec<_> = error_fields(fr.body).collect();
        assert!(fields.contains(&(b'C', &b"08P01"[..])));
        assert!(fields.contains(&(b'M', &b"badthing"[..])));
        assert_eq!(f.consumed(), v.len());
    }
}

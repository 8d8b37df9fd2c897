//! The untyped packets a client may open with: StartupMessage, SSLRequest,
//! GSSENCRequest and CancelRequest.

use super::*;

/// A client's first packet.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket<'a> {
    SslRequest,
    GssEncRequest,
    /// `forwarded`: passed on by another instance of the fleet (a code of
    /// gatehouse's own), so never passed on again.
    Cancel {
        pid: u32,
        secret: &'a [u8],
        forwarded: bool,
    },
    Startup(Startup<'a>),
}

/// A StartupMessage: the requested version and its parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct Startup<'a> {
    pub major: u16,
    pub minor: u16,
    pub params: Vec<(&'a str, &'a str)>,
}

impl<'a> Startup<'a> {
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }
}

/// The total length of the startup packet at the front of `buf`, once its
/// 4-byte length is there.
pub fn startup_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(WireError::BadStartup("bad packet length"));
    }
    Ok(Some(len))
}

/// Parses a whole startup packet (length prefix included).
pub fn parse_startup(packet: &[u8]) -> Result<StartupPacket<'_>, WireError> {
    let mut c = Cursor::new(packet.get(4..).ok_or(WireError::BadStartup("short packet"))?, "startup");
    let code = c.i32().map_err(|_| WireError::BadStartup("short packet"))? as u32;
    match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            if !c.is_empty() {
                return Err(WireError::BadStartup("trailing bytes after request code"));
            }
            Ok(if code == SSL_REQUEST_CODE {
                StartupPacket::SslRequest
            } else {
                StartupPacket::GssEncRequest
            })
        }
        CANCEL_REQUEST_CODE | FORWARDED_CANCEL_CODE => {
            let pid = c.i32().map_err(|_| WireError::BadStartup("short cancel request"))? as u32;
            let secret = c.remaining();
            if secret.len() < 4 || secret.len() > 256 {
                return Err(WireError::BadStartup("bad cancel key length"));
            }
            Ok(StartupPacket::Cancel {
                pid,
                secret,
                forwarded: code == FORWARDED_CANCEL_CODE,
            })
        }
        v => {
            let major = (v >> 16) as u16;
            let minor = (v & 0xffff) as u16;
            if major != 3 {
                return Err(WireError::BadStartup("unsupported protocol major version"));
            }
            let mut params = Vec::new();
            loop {
                let k = c.cstr().map_err(|_| WireError::BadStartup("unterminated parameter"))?;
                if k.is_empty() {
                    break;
                }
                let v = c.cstr().map_err(|_| WireError::BadStartup("parameter without value"))?;
                let k = std::str::from_utf8(k).map_err(|_| WireError::BadStartup("parameter name is not UTF-8"))?;
                let v = std::str::from_utf8(v).map_err(|_| WireError::BadStartup("parameter value is not UTF-8"))?;
                if params.len() >= 64 {
                    return Err(WireError::BadStartup("too many parameters"));
                }
                params.push((k, v));
            }
            if !c.is_empty() {
                return Err(WireError::BadStartup("trailing bytes after parameters"));
            }
            Ok(StartupPacket::Startup(Startup { major, minor, params }))
        }
    }
}

/// Appends a StartupMessage for protocol 3.0 with `params`.
pub fn startup_message(out: &mut Vec<u8>, params: &[(&str, &str)]) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for (k, v) in params {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out.push(0);
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends an untyped request (SSLRequest, CancelRequest) of `code` and `rest`.
pub fn request_packet(out: &mut Vec<u8>, code: u32, rest: &[u8]) {
    out.extend_from_slice(&((8 + rest.len()) as u32).to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_roundtrip() {
        let mut v = Vec::new();
        startup_message(&mut v, &[("user", "demo"), ("database", "postgres")]);
        assert_eq!(startup_len(&v).unwrap(), Some(v.len()));
        let StartupPacket::Startup(s) = parse_startup(&v).unwrap() else {
            panic!()
        };
        assert_eq!((s.major, s.minor), (3, 0));
        assert_eq!(s.param("user"), Some("demo"));
        assert_eq!(s.param("database"), Some("postgres"));
    }

    #[test]
    fn requests() {
        let mut v = Vec::new();
        request_packet(&mut v, SSL_REQUEST_CODE, &[]);
        assert_eq!(parse_startup(&v).unwrap(), StartupPacket::SslRequest);
        v.clear();
        request_packet(&mut v, CANCEL_REQUEST_CODE, &[0, 0, 0, 7, 1, 2, 3, 4]);
        assert_eq!(
            parse_startup(&v).unwrap(),
            StartupPacket::Cancel {
                pid: 7,
                secret: &[1, 2, 3, 4],
                forwarded: false
            }
        );
        v.clear();
        request_packet(&mut v, FORWARDED_CANCEL_CODE, &[0, 0, 0, 7, 1, 2, 3, 4]);
        assert_eq!(
            parse_startup(&v).unwrap(),
            StartupPacket::Cancel {
                pid: 7,
                secret: &[1, 2, 3, 4],
                forwarded: true
            }
        );
    }

    #[test]
    fn hostile_startup() {
        assert!(startup_len(&[0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(startup_len(&[0, 0, 0, 3]).is_err());
        // unterminated parameter list
        let mut v = vec![0, 0, 0, 0];
        v.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        v.extend_from_slice(b"user\0demo");
        let l = v.len() as u32;
        v[..4].copy_from_slice(&l.to_be_bytes());
        assert!(parse_startup(&v).is_err());
        // version 2
        let mut v = vec![0, 0, 0, 9, 0, 2, 0, 0, 0];
        v[3] = 9;
        assert!(parse_startup(&v).is_err());
    }
}

//! The connection phase: the server's greeting (Handshake v10), the
//! client's SSL request and handshake response (protocol 41), and the
//! authentication exchange's packets (auth switch, more data).
//!
//! MariaDB keeps protocol 41 and uses the greeting's and the response's
//! reserved bytes for extended capabilities when the `LONG_PASSWORD` bit
//! (which MariaDB calls `CLIENT_MYSQL`) is clear; both are read and written
//! here so gatehouse can pass them on.

use super::bytes::{put_lenenc_bytes, put_lenenc_int, put_nul_bytes, Reader};
use super::{caps, MyWireError};

/// The only greeting version gatehouse speaks.
pub const PROTOCOL_VERSION: u8 = 10;
/// Length of the scramble (nonce) every current plugin uses.
pub const SCRAMBLE_LEN: usize = 20;
/// An SSL request is the handshake response's fixed part alone.
pub const SSL_REQUEST_LEN: usize = 32;
/// Auth switch request header.
pub const AUTH_SWITCH_HEADER: u8 = 0xfe;
/// Extra authentication data header (caching_sha2_password, ed25519).
pub const AUTH_MORE_DATA_HEADER: u8 = 0x01;

/// The server's greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub server_version: Vec<u8>,
    pub connection_id: u32,
    /// The nonce, both parts joined (without the trailing NUL some servers add).
    pub scramble: Vec<u8>,
    pub capabilities: u32,
    pub charset: u8,
    pub status: u16,
    /// MariaDB's extended capabilities (0 from MySQL).
    pub mariadb_capabilities: u32,
    pub auth_plugin: Vec<u8>,
}

impl Greeting {
    pub fn parse(payload: &[u8]) -> Result<Self, MyWireError> {
        let mut r = Reader::new(payload);
        let version = r.u8()?;
        if version != PROTOCOL_VERSION {
            return Err(MyWireError::Unsupported("handshake version other than 10"));
        }
        let server_version = r.nul_bytes()?.to_vec();
        let connection_id = r.u32()?;
        let mut scramble = r.bytes(8)?.to_vec();
        r.skip(1)?;
        let caps_low = r.u16()? as u32;
        let (charset, status, caps_high) = if r.is_empty() {
            (0, 0, 0)
        } else {
            (r.u8()?, r.u16()?, r.u16()? as u32)
        };
        let capabilities = caps_low | (caps_high << 16);
        let mut mariadb_capabilities = 0;
        let mut auth_plugin = Vec::new();
        if !r.is_empty() {
            let data_len = r.u8()? as usize;
            r.skip(6)?;
            let ext = r.u32()?;
            if capabilities & caps::LONG_PASSWORD == 0 {
                mariadb_capabilities = ext;
            }
            if capabilities & caps::SECURE_CONNECTION != 0 {
                let n = data_len.saturating_sub(8).max(13);
                let part2 = r.bytes(n.min(r.remaining()))?;
                let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
                scramble.extend_from_slice(part2);
            }
            if capabilities & caps::PLUGIN_AUTH != 0 {
                let rest = r.rest();
                auth_plugin = rest.strip_suffix(&[0]).unwrap_or(rest).to_vec();
            }
        }
        Ok(Greeting {
            server_version,
            connection_id,
            scramble,
            capabilities,
            charset,
            status,
            mariadb_capabilities,
            auth_plugin,
        })
    }

    /// Appends the payload. The scramble must be 20 bytes without NUL
    /// bytes (clients read part 2 up to a NUL).
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), MyWireError> {
        if self.scramble.len() != SCRAMBLE_LEN || self.scramble.contains(&0) {
            return Err(MyWireError::Malformed("a scramble is 20 bytes without NUL"));
        }
        out.push(PROTOCOL_VERSION);
        put_nul_bytes(out, &self.server_version)?;
        out.extend_from_slice(&self.connection_id.to_le_bytes());
        out.extend_from_slice(&self.scramble[..8]);
        out.push(0);
        out.extend_from_slice(&(self.capabilities as u16).to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&((self.capabilities >> 16) as u16).to_le_bytes());
        out.push((SCRAMBLE_LEN + 1) as u8);
        out.extend_from_slice(&[0; 6]);
        let ext = if self.capabilities & caps::LONG_PASSWORD == 0 {
            self.mariadb_capabilities
        } else {
            0
        };
        out.extend_from_slice(&ext.to_le_bytes());
        out.extend_from_slice(&self.scramble[8..]);
        out.push(0);
        put_nul_bytes(out, &self.auth_plugin)?;
        Ok(())
    }
}

/// The client's answer to the greeting. `ssl_request` is set when the
/// payload was the 32-byte SSL request that precedes TLS (nothing after the
/// fixed part).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    pub max_packet: u32,
    pub charset: u8,
    pub mariadb_capabilities: u32,
    pub user: Vec<u8>,
    pub auth_response: Vec<u8>,
    pub database: Option<Vec<u8>>,
    pub auth_plugin: Option<Vec<u8>>,
    /// Connection attributes, in order (`program_name`, `_client_name`, …).
    pub attributes: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the client sent after the greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// Switch to TLS, then the full response follows (sequence id 2).
    SslRequest {
        capabilities: u32,
        charset: u8,
    },
    Response(HandshakeResponse),
}

/// Largest connection attributes block read (the server's own limit is 64 KiB).
const MAX_ATTRIBUTES_LEN: u64 = 64 * 1024;

impl HandshakeResponse {
    pub fn parse(payload: &[u8]) -> Result<ClientHello, MyWireError> {
        let mut r = Reader::new(payload);
        let capabilities = r.u32()?;
        if capabilities & caps::PROTOCOL_41 == 0 {
            return Err(MyWireError::Unsupported("clients older than protocol 41"));
        }
        let max_packet = r.u32()?;
        let charset = r.u8()?;
        r.skip(19)?;
        let ext = r.u32()?;
        let mariadb_capabilities = if capabilities & caps::LONG_PASSWORD == 0 {
            ext
        } else {
            0
        };
        if r.is_empty() {
            if capabilities & caps::SSL == 0 {
                return Err(MyWireError::Malformed("handshake response without a user"));
            }
            return Ok(ClientHello::SslRequest { capabilities, charset });
        }
        let user = r.nul_bytes()?.to_vec();
        let auth_response = if capabilities & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            r.lenenc_bytes()?.to_vec()
        } else if capabilities & caps::SECURE_CONNECTION != 0 {
            let n = r.u8()? as usize;
            r.bytes(n)?.to_vec()
        } else {
            r.nul_bytes()?.to_vec()
        };
        let database = if capabilities & caps::CONNECT_WITH_DB != 0 && !r.is_empty() {
            Some(r.nul_bytes()?.to_vec())
        } else {
            None
        };
        let auth_plugin = if capabilities & caps::PLUGIN_AUTH != 0 && !r.is_empty() {
            // some clients end the packet without the plugin name's NUL
            let rest_has_nul = memchr::memchr(0, &payload[r.position()..]).is_some();
            Some(if rest_has_nul {
                r.nul_bytes()?.to_vec()
            } else {
                r.rest().to_vec()
            })
        } else {
            None
        };
        let mut attributes = Vec::new();
        if capabilities & caps::CONNECT_ATTRS != 0 && !r.is_empty() {
            let len = r.lenenc_int()?;
            if len > MAX_ATTRIBUTES_LEN {
                return Err(MyWireError::Malformed("connection attributes over 64 KiB"));
            }
            let block = r.bytes(len as usize)?;
            let mut a = Reader::new(block);
            while !a.is_empty() {
                let k = a.lenenc_bytes()?.to_vec();
                let v = a.lenenc_bytes()?.to_vec();
                attributes.push((k, v));
            }
        }
        Ok(ClientHello::Response(HandshakeResponse {
            capabilities,
            max_packet,
            charset,
            mariadb_capabilities,
            user,
            auth_response,
            database,
            auth_plugin,
            attributes,
        }))
    }

    /// Appends the fixed part alone: the SSL request.
    pub fn write_ssl_request(&self, out: &mut Vec<u8>) {
        self.write_fixed(out, self.capabilities | caps::SSL);
    }

    fn write_fixed(&self, out: &mut Vec<u8>, capabilities: u32) {
        out.extend_from_slice(&capabilities.to_le_bytes());
        out.extend_from_slice(&self.max_packet.to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&[0; 19]);
        let ext = if capabilities & caps::LONG_PASSWORD == 0 {
            self.mariadb_capabilities
        } else {
            0
        };
        out.extend_from_slice(&ext.to_le_bytes());
    }

    /// Appends the whole response, as gatehouse sends it upstream: the auth
    /// response length-encoded when `PLUGIN_AUTH_LENENC_CLIENT_DATA` is set,
    /// else with a 1-byte length (`SECURE_CONNECTION`, which gatehouse always sets).
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), MyWireError> {
        let mut capabilities = self.capabilities | caps::PROTOCOL_41 | caps::SECURE_CONNECTION;
        if self.database.is_some() {
            capabilities |= caps::CONNECT_WITH_DB;
        }
        if self.auth_plugin.is_some() {
            capabilities |= caps::PLUGIN_AUTH;
        }
        if !self.attributes.is_empty() {
            capabilities |= caps::CONNECT_ATTRS;
        }
        self.write_fixed(out, capabilities);
        put_nul_bytes(out, &self.user)?;
        if capabilities & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc_bytes(out, &self.auth_response);
        } else {
            let n = u8::try_from(self.auth_response.len())
                .map_err(|_| MyWireError::Malformed("auth response over 255 bytes"))?;
            out.push(n);
            out.extend_from_slice(&self.auth_response);
        }
        if let Some(db) = &self.database {
            put_nul_bytes(out, db)?;
        }
        if let Some(p) = &self.auth_plugin {
            put_nul_bytes(out, p)?;
        }
        if !self.attributes.is_empty() {
            let mut block = Vec::new();
            for (k, v) in &self.attributes {
                put_lenenc_bytes(&mut block, k);
                put_lenenc_bytes(&mut block, v);
            }
            put_lenenc_int(out, block.len() as u64);
            out.extend_from_slice(&block);
        }
        Ok(())
    }
}

/// The server asks the client to authenticate with another plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSwitch<'a> {
    pub plugin: &'a [u8],
    /// The plugin's data: usually a fresh 20-byte scramble (and a NUL).
    pub data: &'a [u8],
}

impl<'a> AuthSwitch<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, MyWireError> {
        let mut r = Reader::new(payload);
        if r.u8()? != AUTH_SWITCH_HEADER {
            return Err(MyWireError::Malformed("not an auth switch request"));
        }
        let plugin = r.nul_bytes()?;
        let data = r.rest();
        Ok(AuthSwitch {
            plugin,
            data: data.strip_suffix(&[0]).unwrap_or(data),
        })
    }

    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), MyWireError> {
        out.push(AUTH_SWITCH_HEADER);
        put_nul_bytes(out, self.plugin)?;
        out.extend_from_slice(self.data);
        out.push(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A greeting as MariaDB 10.11 sends it (version, id and scramble changed).
    const MARIADB_GREETING: &[u8] = b"\x0a5.5.5-10.11.6-MariaDB-0+deb12u1\0\x2a\0\0\0ABCDEFGH\0\xfe\xf7\x2d\x02\0\xff\x81\x15\0\0\0\0\0\0\x1d\0\0\0IJKLMNOPQRST\0mysql_native_password\0";

    #[test]
    fn reads_a_mariadb_greeting() {
        let g = Greeting::parse(MARIADB_GREETING).unwrap();
        assert_eq!(g.server_version, b"5.5.5-10.11.6-MariaDB-0+deb12u1");
        assert_eq!(g.connection_id, 42);
        assert_eq!(g.scramble, b"ABCDEFGHIJKLMNOPQRST");
        assert_eq!(g.auth_plugin, b"mysql_native_password");
        assert_ne!(g.capabilities & caps::PLUGIN_AUTH, 0);
        assert_eq!(g.capabilities & caps::LONG_PASSWORD, 0, "MariaDB clears CLIENT_MYSQL");
        assert_eq!(g.mariadb_capabilities, 0x1d);
        let mut out = Vec::new();
        g.write(&mut out).unwrap();
        assert_eq!(Greeting::parse(&out).unwrap(), g);
    }

    #[test]
    fn greeting_write_refuses_a_bad_scramble() {
        let mut g = Greeting::parse(MARIADB_GREETING).unwrap();
        g.scramble[3] = 0;
        assert!(g.write(&mut Vec::new()).is_err());
    }

    #[test]
    fn response_round_trips_in_both_auth_encodings() {
        for lenenc in [false, true] {
            let mut capabilities = caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH;
            if lenenc {
                capabilities |= caps::PLUGIN_AUTH_LENENC_CLIENT_DATA;
            }
            let r = HandshakeResponse {
                capabilities: capabilities | caps::CONNECT_WITH_DB | caps::CONNECT_ATTRS,
                max_packet: 1 << 24,
                charset: 45,
                mariadb_capabilities: 0,
                user: b"demo".to_vec(),
                auth_response: vec![7; 20],
                database: Some(b"test".to_vec()),
                auth_plugin: Some(b"mysql_native_password".to_vec()),
                attributes: vec![(b"_client_name".to_vec(), b"libmariadb".to_vec())],
            };
            let mut out = Vec::new();
            r.write(&mut out).unwrap();
            assert_eq!(HandshakeResponse::parse(&out).unwrap(), ClientHello::Response(r));
        }
    }

    #[test]
    fn ssl_request_is_the_fixed_part() {
        let r = HandshakeResponse {
            capabilities: caps::PROTOCOL_41,
            charset: 33,
            ..Default::default()
        };
        let mut out = Vec::new();
        r.write_ssl_request(&mut out);
        assert_eq!(out.len(), SSL_REQUEST_LEN);
        assert!(matches!(
            HandshakeResponse::parse(&out).unwrap(),
            ClientHello::SslRequest { charset: 33, .. }
        ));
    }

    #[test]
    fn hostile_responses_are_errors() {
        // protocol 320
        assert!(HandshakeResponse::parse(&[0; 32]).is_err());
        // an auth response longer than the packet
        let mut out = Vec::new();
        HandshakeResponse {
            capabilities: caps::PROTOCOL_41,
            user: b"u".to_vec(),
            auth_response: vec![1; 20],
            ..Default::default()
        }
        .write(&mut out)
        .unwrap();
        out.truncate(out.len() - 5);
        assert_eq!(HandshakeResponse::parse(&out), Err(MyWireError::Truncated));
        // every prefix of a good response parses or fails cleanly
        let mut good = Vec::new();
        HandshakeResponse {
            capabilities: caps::PROTOCOL_41 | caps::CONNECT_ATTRS,
            user: b"u".to_vec(),
            database: Some(b"d".to_vec()),
            auth_plugin: Some(b"p".to_vec()),
            attributes: vec![(b"k".to_vec(), b"v".to_vec())],
            ..Default::default()
        }
        .write(&mut good)
        .unwrap();
        for n in 0..good.len() {
            let _ = HandshakeResponse::parse(&good[..n]);
        }
    }

    #[test]
    fn auth_switch_round_trips() {
        let s = AuthSwitch {
            plugin: b"caching_sha2_password",
            data: b"01234567890123456789",
        };
        let mut out = Vec::new();
        s.write(&mut out).unwrap();
        assert_eq!(AuthSwitch::parse(&out).unwrap(), s);
    }
}

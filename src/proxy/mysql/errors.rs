//! Errors gatehouse itself sends a MySQL client: the gateway's SQLSTATEs
//! mapped to the server error numbers clients know, as ERR packets.

use crate::core::end::EndReason;
use crate::core::sqlstate::SqlState;
use crate::wire::mysql::packet::write_message;
use crate::wire::mysql::response::ErrPacket;

/// Error numbers a MySQL/MariaDB server uses for the same conditions.
pub mod code {
    pub const CON_COUNT: u16 = 1040;
    pub const DBACCESS_DENIED: u16 = 1044;
    pub const ACCESS_DENIED: u16 = 1045;
    pub const NO_DB: u16 = 1046;
    pub const UNKNOWN_COM: u16 = 1047;
    pub const BAD_DB: u16 = 1049;
    pub const SERVER_SHUTDOWN: u16 = 1053;
    pub const NO_SUCH_THREAD: u16 = 1094;
    pub const UNKNOWN: u16 = 1105;
    pub const NET_PACKET_TOO_LARGE: u16 = 1153;
    pub const NET_PACKETS_OUT_OF_ORDER: u16 = 1156;
    pub const HANDSHAKE: u16 = 1043;
    pub const USER_LIMIT_REACHED: u16 = 1226;
    pub const SPECIFIC_ACCESS_DENIED: u16 = 1227;
    pub const NOT_SUPPORTED_YET: u16 = 1235;
    pub const QUERY_INTERRUPTED: u16 = 1317;
    pub const SECURE_TRANSPORT_REQUIRED: u16 = 3159;
    pub const IDLE_TIMEOUT: u16 = 4031;
    /// ER_ERROR_ON_WRITE: recordings cannot be written.
    pub const ERROR_ON_WRITE: u16 = 3;
}

/// The error number and SQLSTATE a MySQL client gets for a gateway
/// condition.
pub fn mysql_code(state: SqlState) -> (u16, &'static [u8; 5]) {
    match state {
        SqlState::INVALID_PASSWORD | SqlState::INVALID_AUTHORIZATION => (code::ACCESS_DENIED, b"28000"),
        SqlState::INVALID_CATALOG_NAME => (code::BAD_DB, b"42000"),
        SqlState::INSUFFICIENT_PRIVILEGE => (code::SPECIFIC_ACCESS_DENIED, b"42000"),
        SqlState::TOO_MANY_CONNECTIONS => (code::CON_COUNT, b"08004"),
        SqlState::CANNOT_CONNECT_NOW | SqlState::ADMIN_SHUTDOWN => (code::SERVER_SHUTDOWN, b"08S01"),
        SqlState::QUERY_CANCELED => (code::QUERY_INTERRUPTED, b"70100"),
        SqlState::PROTOCOL_VIOLATION => (code::HANDSHAKE, b"08S01"),
        SqlState::FEATURE_NOT_SUPPORTED => (code::NOT_SUPPORTED_YET, b"42000"),
        SqlState::PROGRAM_LIMIT_EXCEEDED => (code::NET_PACKET_TOO_LARGE, b"08S01"),
        SqlState::CONFIGURATION_LIMIT_EXCEEDED => (code::USER_LIMIT_REACHED, b"42000"),
        SqlState::IDLE_SESSION_TIMEOUT => (code::IDLE_TIMEOUT, b"HY000"),
        SqlState::IO_ERROR => (code::ERROR_ON_WRITE, b"HY000"),
        _ => (code::UNKNOWN, b"HY000"),
    }
}

/// Appends an ERR message with sequence id `seq`; returns the next id.
pub fn err(out: &mut Vec<u8>, seq: u8, code: u16, sql_state: &[u8; 5], message: &str) -> u8 {
    let mut p = Vec::with_capacity(9 + message.len());
    ErrPacket {
        code,
        sql_state: Some(*sql_state),
        message: message.as_bytes(),
    }
    .write(&mut p);
    write_message(out, seq, &p)
}

/// Appends the ERR message for a gateway condition.
pub fn err_state(out: &mut Vec<u8>, seq: u8, state: SqlState, message: &str) -> u8 {
    let (code, s) = mysql_code(state);
    err(out, seq, code, s, message)
}

/// A session that cannot go on: what the client is told, and how the end
/// is logged.
#[derive(Debug)]
pub struct Fatal {
    pub code: u16,
    pub sql_state: &'static [u8; 5],
    pub message: String,
    pub end: EndReason,
}

impl Fatal {
    pub fn new(state: SqlState, message: impl Into<String>, end: EndReason) -> Fatal {
        let (code, sql_state) = mysql_code(state);
        Fatal {
            code,
            sql_state,
            message: message.into(),
            end,
        }
    }

    pub fn with_code(code: u16, sql_state: &'static [u8; 5], message: impl Into<String>, end: EndReason) -> Fatal {
        Fatal {
            code,
            sql_state,
            message: message.into(),
            end,
        }
    }

    /// The ERR message, with sequence id `seq`.
    pub fn packet(&self, seq: u8) -> Vec<u8> {
        let mut out = Vec::new();
        err(&mut out, seq, self.code, self.sql_state, &self.message);
        out
    }
}

impl From<crate::core::admission::Refusal> for Fatal {
    fn from(r: crate::core::admission::Refusal) -> Fatal {
        Fatal::new(r.code, r.message, r.end)
    }
}

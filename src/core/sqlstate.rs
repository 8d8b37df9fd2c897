//! SQLSTATEs: the error codes gatehouse gives clients, each named once.
//!
//! PostgreSQL clients read them as they are; a protocol with its own error
//! numbers maps them (see each protocol's session).

use std::fmt;

/// A five-character SQLSTATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SqlState(&'static str);

impl SqlState {
    /// 01000: a warning (notices gatehouse sends).
    pub const WARNING: SqlState = SqlState("01000");
    /// 08006: the connection to the client or the server failed.
    pub const CONNECTION_FAILURE: SqlState = SqlState("08006");
    /// 08P01: a message that breaks the protocol.
    pub const PROTOCOL_VIOLATION: SqlState = SqlState("08P01");
    /// 0A000: something gatehouse does not do (replication connections).
    pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState("0A000");
    /// 22021: text that is not valid in the session's encoding.
    pub const CHARACTER_NOT_IN_REPERTOIRE: SqlState = SqlState("22021");
    /// 28000: not allowed to log in here (reach, TLS, account).
    pub const INVALID_AUTHORIZATION: SqlState = SqlState("28000");
    /// 28P01: a wrong token.
    pub const INVALID_PASSWORD: SqlState = SqlState("28P01");
    /// 3D000: no target serves this database.
    pub const INVALID_CATALOG_NAME: SqlState = SqlState("3D000");
    /// 42501: refused by the policy.
    pub const INSUFFICIENT_PRIVILEGE: SqlState = SqlState("42501");
    /// 53300: over `max_connections`.
    pub const TOO_MANY_CONNECTIONS: SqlState = SqlState("53300");
    /// 53400: over a configured limit (open reviews).
    pub const CONFIGURATION_LIMIT_EXCEEDED: SqlState = SqlState("53400");
    /// 54000: too large (a message, a result past `max_rows`).
    pub const PROGRAM_LIMIT_EXCEEDED: SqlState = SqlState("54000");
    /// 57014: cancelled by the client.
    pub const QUERY_CANCELED: SqlState = SqlState("57014");
    /// 57P01: ended by an administrator or the shutdown.
    pub const ADMIN_SHUTDOWN: SqlState = SqlState("57P01");
    /// 57P03: the gateway is shutting down and takes no new sessions.
    pub const CANNOT_CONNECT_NOW: SqlState = SqlState("57P03");
    /// 57P05: idle longer than `idle_timeout_secs`.
    pub const IDLE_SESSION_TIMEOUT: SqlState = SqlState("57P05");
    /// XX000: something gatehouse could not do (scan a value).
    pub const INTERNAL_ERROR: SqlState = SqlState("XX000");
    /// Recordings cannot be written (`recording.on_failure = "refuse"`).
    pub const IO_ERROR: SqlState = SqlState("58030");

    /// The five characters.
    pub const fn code(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_five_characters() {
        for s in [
            SqlState::WARNING,
            SqlState::CONNECTION_FAILURE,
            SqlState::PROTOCOL_VIOLATION,
            SqlState::FEATURE_NOT_SUPPORTED,
            SqlState::CHARACTER_NOT_IN_REPERTOIRE,
            SqlState::INVALID_AUTHORIZATION,
            SqlState::INVALID_PASSWORD,
            SqlState::INVALID_CATALOG_NAME,
            SqlState::INSUFFICIENT_PRIVILEGE,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CONFIGURATION_LIMIT_EXCEEDED,
            SqlState::PROGRAM_LIMIT_EXCEEDED,
            SqlState::QUERY_CANCELED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::IDLE_SESSION_TIMEOUT,
            SqlState::INTERNAL_ERROR,
            SqlState::IO_ERROR,
        ] {
            assert_eq!(s.code().len(), 5);
            assert!(s.code().bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()));
        }
    }
}

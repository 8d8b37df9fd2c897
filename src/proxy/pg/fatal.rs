//! A FATAL error that ends a session before or around its relay, with the
//! end reason the session log and the recording give.

use super::conn::ConnError;
use super::upstream::UpstreamError;
use crate::core::admission::Refusal;
use crate::core::end::EndReason;
use crate::core::sqlstate::SqlState;
use crate::wire::pg;

/// A FATAL error for the client, with what the session log says.
pub struct Fatal {
    pub code: SqlState,
    pub message: String,
    pub detail: Option<String>,
    /// A complete ErrorResponse frame to send instead (an upstream's own).
    pub raw: Option<Vec<u8>>,
    pub end: EndReason,
}

impl Fatal {
    pub fn new(code: SqlState, message: impl Into<String>, end: EndReason) -> Fatal {
        Fatal {
            code,
            message: message.into(),
            detail: None,
            raw: None,
            end,
        }
    }

    pub fn frame(&self) -> Vec<u8> {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        let mut out = Vec::with_capacity(128);
        pg::error_message(
            &mut out,
            false,
            "FATAL",
            self.code.code(),
            &self.message,
            self.detail.as_deref(),
            None,
        );
        out
    }
}

impl From<Refusal> for Fatal {
    fn from(r: Refusal) -> Fatal {
        Fatal::new(r.code, r.message, r.end)
    }
}

impl From<ConnError> for Fatal {
    fn from(e: ConnError) -> Fatal {
        match e {
            ConnError::Wire(w) => Fatal::new(wire_sqlstate(&w), w.to_string(), EndReason::ProtocolError),
            ConnError::Closed => Fatal::new(
                SqlState::CONNECTION_FAILURE,
                "connection closed",
                EndReason::ClientDisconnect,
            ),
            ConnError::Io(e) => Fatal::new(SqlState::CONNECTION_FAILURE, e.to_string(), EndReason::ClientIoError),
        }
    }
}

impl From<pg::WireError> for Fatal {
    fn from(e: pg::WireError) -> Fatal {
        ConnError::Wire(e).into()
    }
}

impl From<UpstreamError> for Fatal {
    fn from(e: UpstreamError) -> Fatal {
        match e {
            UpstreamError::Server { frame } => Fatal { raw: Some(frame), ..Fatal::new(SqlState::CONNECTION_FAILURE, "upstream error", EndReason::UpstreamRefused) },
            e @ UpstreamError::Auth { .. } => Fatal {
                detail: Some("The gateway's credentials for this target were refused; the gateway's operator must fix the target's configuration.".into()),
                ..Fatal::new(SqlState::CONNECTION_FAILURE, e.to_string(), EndReason::UpstreamAuthFailed)
            },
            e => Fatal::new(SqlState::CONNECTION_FAILURE, e.to_string(), EndReason::UpstreamUnreachable),
        }
    }
}

/// The SQLSTATE for a message gatehouse cannot read: too large (54000) or
/// malformed (08P01).
pub fn wire_sqlstate(e: &pg::WireError) -> SqlState {
    match e {
        pg::WireError::TooLarge { .. } => SqlState::PROGRAM_LIMIT_EXCEEDED,
        _ => SqlState::PROTOCOL_VIOLATION,
    }
}

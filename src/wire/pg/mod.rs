//! PostgreSQL protocol v3 framing.
//!
//! Everything here works on borrowed byte slices: a frame is a view into the
//! buffer it was read into, so a frame forwarded unchanged is written from the
//! same memory. Builders append server messages to a caller's `Vec<u8>`.

mod build;
mod frame;
pub mod messages;
mod startup;
pub mod track;
mod values;

pub use build::*;
pub use frame::*;
pub use startup::*;

pub use values::*;

/// The protocol version gatehouse speaks on both sides: 3.0.
pub const PROTOCOL_3_0: u32 = 3 << 16;
/// Request codes carried in place of a protocol version.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// gatehouse's own: a CancelRequest one fleet instance passes to another
/// (1234 << 16 | 5699; PostgreSQL's codes are 5678 to 5680). It is handled
/// like a CancelRequest but never passed on again, so two instances
/// cannot bounce a key between them.
pub const FORWARDED_CANCEL_CODE: u32 = (1234 << 16) | 5699;
/// Largest startup packet accepted (PostgreSQL uses the same bound).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// Errors of the codec. Each maps to SQLSTATE 08P01 (protocol violation)
/// except `TooLarge`, which is 54000 (program limit exceeded).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("invalid message length {0}")]
    BadLength(u64),
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: usize },
    #[error("invalid {side} message type 0x{tag:02x}")]
    UnknownType { side: &'static str, tag: u8 },
    #[error("invalid startup packet: {0}")]
    BadStartup(&'static str),
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

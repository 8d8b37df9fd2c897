//! One MySQL/MariaDB session: the client's login (`client_login`), the
//! upstream login (`upstream`), and the command loop (`session`), which
//! decides each statement on the protocol-neutral core (`core::enforce`)
//! and reads each answer (`results`) to mask its values.
//!
//! The protocol is strictly request/response, so a session runs one loop:
//! read a command, decide, send it upstream, relay its answer. While an
//! answer is awaited, the client's socket and the session's cancel flag
//! are watched: a client that leaves, or a `KILL QUERY` of this session
//! from another connection of the same identity, stops the statement
//! upstream (`KILL QUERY` on a second upstream connection).

mod capture;
mod client_login;
mod conn;
mod errors;
mod kill;
pub mod pool;
mod prescan;
mod results;
pub mod rsa_key;
mod session;
mod upstream;

pub use client_login::server_version;
pub use session::handle_connection;

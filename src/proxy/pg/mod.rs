//! One PostgreSQL session's state machine: TLS, startup, authentication,
//! the upstream connection, and the relay in both directions.

pub mod capture;
mod catalog;
mod conn;
pub mod counters;
mod ctx;
mod enforce;
mod frontend;
pub mod params;
pub mod pool;
mod read_write;
pub mod registry;
mod relay;
mod scanning;
mod session;
pub mod state;
pub mod statements;
pub mod stream;
pub mod tls;
mod upstream;

pub use registry::{KillReason, Registry};
pub use session::handle_connection;
pub use state::{Shared, State};

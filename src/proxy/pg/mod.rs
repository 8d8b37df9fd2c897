//! One PostgreSQL session's state machine: TLS, startup, authentication,
//! the upstream connection, and the relay in both directions.

pub mod capture;
mod catalog;
mod conn;
mod ctx;
mod fatal;
mod frontend;
pub mod params;
pub mod pool;
mod read_write;
mod relay;
mod server_side;
mod session;
mod startup;
pub mod statements;
pub use super::stream;
mod upstream;

pub use server_side::masking::mask_frame;
pub use session::handle_connection;

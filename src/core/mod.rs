//! The protocol-neutral core of a session: the compiled configuration and
//! what all sessions share (state), the session registry (kills, cancels,
//! idle sweeps), counters, pool limits, and the interface the control plane
//! is reached through. A protocol's session (`proxy::pg`) builds on these;
//! nothing here knows a wire format.

pub mod catalog;
pub mod counters;
pub mod end;
pub mod enforce;
pub mod ops;
pub mod pool;
pub mod registry;
pub mod sqlstate;
pub mod state;

pub use registry::{KillReason, Registry};
pub use state::{Shared, State};

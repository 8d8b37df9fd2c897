//! The protocol-neutral core of a session. A protocol's session
//! (`proxy::pg`) builds on these; nothing here knows a wire format.
//!
//! - `state`: the compiled configuration and what all sessions share;
//! - `admission`: who may open a session, to which target and account;
//! - `enforce` and `catalog`: the policy on each statement, holds and
//!   reviews, budgets, the targets' function catalogs;
//! - `summary`: the end of a session (recording, counters, close line);
//! - `registry`, `counters`, `pool`: kills, cancels and idle sweeps,
//!   counters, pool limits;
//! - `sqlstate`, `end`: the error codes and end reasons, as types;
//! - `ops`: the interface the control plane is reached through.

pub mod admission;
pub mod catalog;
pub mod counters;
pub mod end;
pub mod enforce;
pub mod ops;
pub mod pool;
pub mod registry;
pub mod sqlstate;
pub mod state;
pub mod summary;

pub use registry::{KillReason, Registry};
pub use state::{Shared, State};

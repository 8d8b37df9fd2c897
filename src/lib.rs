//! gatehouse: a gateway in front of PostgreSQL for AI agents and people.
//!
//! The binary is a thin shell over these modules; see DESIGN in the README.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod config;
pub mod control;
pub mod core;
pub mod fleet;
pub mod identity;
pub mod logs;
pub mod policy;
pub mod proxy;
pub mod record;
pub mod runtime;
pub mod scan;
pub mod sql;
pub mod tls;
pub mod wire;

//! Sessions: one module per database protocol.
pub mod pg;

//! Sessions: one module per database protocol, and the socket type they
//! share.
pub mod mysql;
pub mod pg;
pub mod stream;

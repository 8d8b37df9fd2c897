//! Protocol codecs: bytes ⇄ frames. No I/O, no policy.
pub mod mysql;
pub mod pg;

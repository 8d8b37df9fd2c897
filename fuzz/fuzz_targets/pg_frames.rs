//! The PostgreSQL framer (both directions) and the startup parser, on any
//! bytes: no panic, frames within the buffer, consumed bytes accounted.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::pg_frames(data));

//! The value decoder of server messages that carry values and the
//! masker's re-framing: a message rebuilt with its secrets masked must
//! frame again, with as many values, each either kept or masked.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::pg_values(data));

//! The recording reader: chain verification (with and without a key, as a
//! session file and as an audit log), record parsing and rendering, on any
//! bytes. No panic; a report never counts more intact records than lines.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::recording(data));

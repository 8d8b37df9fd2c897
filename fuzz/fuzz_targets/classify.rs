//! The statement classifiers' entry points (PostgreSQL through
//! libpg_query, MySQL) on any text: no panic, a class for everything.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::classify(data));

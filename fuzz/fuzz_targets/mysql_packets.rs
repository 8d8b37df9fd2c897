//! MySQL packets and the decoders of what they carry: framing, the
//! client's handshake response, rows (text and binary), column
//! definitions, COM_STMT_EXECUTE parameters, response kinds. No panic, and
//! every value span within its payload.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::mysql_packets(data));

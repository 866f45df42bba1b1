//! A log record's payload as a replica replays it from its log at start: refused or read,
//! never a panic or an allocation the bytes do not hold.
#![no_main]

use dtc_server::shard::read_log_payload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_log_payload(data);
});

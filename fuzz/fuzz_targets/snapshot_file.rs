//! A snapshot file as a replica reads it at start or installs it from its leader: any bytes
//! are refused or read, never a panic; what is read encodes back to a file that reads the
//! same table. The input is taken both as a whole file and as a file's body with its
//! checksum made right, so that the fuzzer reaches the decoding behind the checksum.
#![no_main]

use dtc_server::shard::read_snapshot_file;
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    if let Ok((_meta, table)) = read_snapshot_file(bytes) {
        let image = table.snapshot();
        let again = dtc_server::shard::TaskTable::restore(&image).map(|t| t.snapshot());
        assert_eq!(again.ok(), Some(image));
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    check(&sealed);
});

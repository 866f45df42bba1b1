//! What one replica reads from another: Raft RPCs (append-entries, vote, snapshot chunks)
//! and their answers, and the check every snapshot chunk passes before openraft sees it.
#![no_main]

use dtc_server::shard::peer::{PeerRequest, PeerResponse, SnapshotProgress};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(PeerRequest::Snapshot(chunk)) = postcard::from_bytes::<PeerRequest>(data) {
        let progress = SnapshotProgress::default();
        let id = chunk.meta.snapshot_id.clone();
        let len = chunk.data.len() as u64;
        if progress.admit(&id, chunk.offset, len).is_ok() {
            // Whatever was admitted starts at 0 or follows on from what came before.
            assert_eq!(chunk.offset, 0);
        }
    }
    let _ = postcard::from_bytes::<PeerResponse>(data);
});

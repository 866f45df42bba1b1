//! The accepting side of a handshake: a hello decoded from any bytes, then judged by a
//! plain coordinator's and a router's gate. Nothing may panic; a decoded hello of this
//! version must encode back to what decodes the same.
#![no_main]

use dtc_proto::message::{HelloFrame, Role};
use dtc_server::net::Gate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(HelloFrame::Current(hello)) = postcard::from_bytes::<HelloFrame>(data) {
        let coordinator = Gate::plain("coordinator", &Role::ALL);
        let router = Gate::plain("router", &[Role::Client, Role::Admin]);
        let _ = coordinator.admit(&hello, false);
        let _ = router.admit(&hello, true);
        if let Ok(again) = postcard::to_allocvec(&hello) {
            match postcard::from_bytes::<HelloFrame>(&again) {
                Ok(HelloFrame::Current(back)) => assert_eq!(back, hello),
                other => panic!("a hello did not read back: {other:?}"),
            }
        }
    }
});

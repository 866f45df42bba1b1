//! Every role's messages, as a connection's reader decodes them: a stream of length-prefixed
//! frames. The first byte picks the message type; the rest is the stream.
#![no_main]

use bytes::BytesMut;
use dtc_proto::codec::FrameCodec;
use dtc_proto::message::{CoordMsg, HelloFrame, HelloReply, Request, Response, WorkerMsg};
use dtc_proto::status::{AdminRequest, AdminResponse};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use tokio_util::codec::Decoder;

fn drain<T: DeserializeOwned>(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    let mut codec = FrameCodec::<T>::new(64 * 1024);
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
    let _ = codec.decode_eof(&mut buf);
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => drain::<HelloFrame>(rest),
        1 => drain::<HelloReply>(rest),
        2 => drain::<Request>(rest),
        3 => drain::<Response>(rest),
        4 => drain::<WorkerMsg>(rest),
        5 => drain::<CoordMsg>(rest),
        6 => drain::<AdminRequest>(rest),
        _ => drain::<AdminResponse>(rest),
    }
});

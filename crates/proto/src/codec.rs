//! The frame codec: a 4-byte big-endian length, then a postcard-encoded message.
//!
//! A frame longer than the limit is refused from its length prefix alone, before any byte of
//! it is buffered, so a hostile length cannot make the reader allocate.

use crate::ProtoError;
use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use tokio_util::codec::{Decoder, Encoder};

const PREFIX: usize = 4;
/// The most buffer space reserved ahead of the bytes of a frame still to come.
const RESERVE_STEP: usize = 64 * 1024;

/// Encodes messages of any serializable type and decodes messages of type `In`.
#[derive(Debug)]
pub struct FrameCodec<In> {
    max_frame: usize,
    _in: PhantomData<fn() -> In>,
}

impl<In> FrameCodec<In> {
    /// A codec that refuses frames longer than `max_frame` bytes (either way).
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            _in: PhantomData,
        }
    }

    /// The frame limit this codec enforces.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Changes the frame limit.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }
}

impl<In> Clone for FrameCodec<In> {
    fn clone(&self) -> Self {
        Self::new(self.max_frame)
    }
}

/// Appends one frame holding `item` to `dst`.
pub fn encode_frame<T: Serialize>(
    item: &T,
    dst: &mut BytesMut,
    max_frame: usize,
) -> Result<(), ProtoError> {
    let start = dst.len();
    dst.put_u32(0);
    let mut writer = dst.writer();
    let written = postcard::to_io(item, &mut writer).map(|_| ());
    let dst = writer.into_inner();
    if let Err(e) = written {
        dst.truncate(start);
        return Err(e.into());
    }
    let len = dst.len() - start - PREFIX;
    if len > max_frame {
        dst.truncate(start);
        return Err(ProtoError::FrameTooLarge {
            len,
            max: max_frame,
        });
    }
    let len32 = u32::try_from(len).map_err(|_| ProtoError::FrameTooLarge {
        len,
        max: max_frame,
    })?;
    dst[start..start + PREFIX].copy_from_slice(&len32.to_be_bytes());
    Ok(())
}

impl<In: DeserializeOwned> Decoder for FrameCodec<In> {
    type Item = In;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, ProtoError> {
        if src.len() < PREFIX {
            src.reserve(PREFIX);
            return Ok(None);
        }
        let mut prefix = [0u8; PREFIX];
        prefix.copy_from_slice(&src[..PREFIX]);
        let len = u32::from_be_bytes(prefix) as usize;
        if len > self.max_frame {
            return Err(ProtoError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        if src.len() < PREFIX + len {
            // Grow with what actually arrives, not with what the prefix announces: a peer
            // that announces a large frame and sends little costs little.
            src.reserve((PREFIX + len - src.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        src.advance(PREFIX);
        let frame = src.split_to(len);
        Ok(Some(postcard::from_bytes(&frame)?))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, ProtoError> {
        match self.decode(src)? {
            Some(item) => Ok(Some(item)),
            None if src.is_empty() => Ok(None),
            None => Err(ProtoError::Truncated),
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In> {
    type Error = ProtoError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), ProtoError> {
        encode_frame(&item, dst, self.max_frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Request, RequestBody, WorkerMsg};
    use crate::{TaskId, TaskSpec};
    use proptest::prelude::*;

    fn round_trip<T: Serialize + DeserializeOwned>(item: &T) -> T {
        let mut buf = BytesMut::new();
        encode_frame(item, &mut buf, 1024).ok();
        let mut codec = FrameCodec::<T>::new(1024);
        match codec.decode(&mut buf) {
            Ok(Some(v)) => v,
            other => panic!("decode failed: {:?}", other.err()),
        }
    }

    #[test]
    fn request_round_trips() {
        let req = Request {
            req: 7,
            body: RequestBody::Submit {
                task: TaskSpec::new("sleep", "100"),
                wait: true,
            },
        };
        assert_eq!(round_trip(&req), req);
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut full = BytesMut::new();
        encode_frame(&WorkerMsg::Heartbeat, &mut full, 1024).ok();
        let mut codec = FrameCodec::<WorkerMsg>::new(1024);
        let mut part = BytesMut::from(&full[..full.len() - 1]);
        assert!(matches!(codec.decode(&mut part), Ok(None)));
        assert!(matches!(
            codec.decode_eof(&mut part),
            Err(ProtoError::Truncated)
        ));
        part.extend_from_slice(&full[full.len() - 1..]);
        assert!(matches!(
            codec.decode(&mut part),
            Ok(Some(WorkerMsg::Heartbeat))
        ));
    }

    #[test]
    fn huge_length_prefix_is_refused_without_buffering() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3][..]);
        let mut codec = FrameCodec::<Request>::new(1024);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(ProtoError::FrameTooLarge { .. })
        ));
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn an_announced_frame_does_not_reserve_its_whole_length() {
        let mut buf = BytesMut::new();
        buf.put_u32(1 << 20);
        buf.extend_from_slice(b"abc");
        let mut codec = FrameCodec::<Request>::new(1 << 24);
        assert!(matches!(codec.decode(&mut buf), Ok(None)));
        assert!(
            buf.capacity() <= 2 * RESERVE_STEP,
            "reserved {}",
            buf.capacity()
        );
    }

    #[test]
    fn oversized_message_is_not_encoded() {
        let big = TaskSpec::new("x", vec![0u8; 2048]).with_id(TaskId(1));
        let mut buf = BytesMut::new();
        assert!(matches!(
            encode_frame(&big, &mut buf, 1024),
            Err(ProtoError::FrameTooLarge { .. })
        ));
        assert!(buf.is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let mut requests = FrameCodec::<Request>::new(256);
            while let Ok(Some(_)) = requests.decode(&mut buf) {}
            let mut buf = BytesMut::from(&bytes[..]);
            let mut workers = FrameCodec::<WorkerMsg>::new(256);
            while let Ok(Some(_)) = workers.decode(&mut buf) {}
            let _ = postcard::from_bytes::<crate::message::Hello>(&bytes);
            let _ = postcard::from_bytes::<crate::message::CoordMsg>(&bytes);
            let _ = postcard::from_bytes::<crate::message::Response>(&bytes);
        }

        #[test]
        fn framed_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::new();
            buf.put_u32(body.len() as u32);
            buf.extend_from_slice(&body);
            let mut codec = FrameCodec::<Request>::new(1024);
            let _ = codec.decode(&mut buf);
        }
    }
}

//! The cost of framing: encoding and decoding the messages every task crosses the wire in.
//! `cargo bench -p dtc-proto`.

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use dtc_proto::codec::{FrameCodec, encode_frame};
use dtc_proto::message::{Assignment, Request, RequestBody, Response};
use dtc_proto::{DEFAULT_MAX_FRAME, Outcome, TaskId, TaskSpec, TaskState, TaskView};
use std::hint::black_box;
use tokio_util::codec::Decoder;

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(
    c: &mut Criterion,
    name: &str,
    msg: &T,
) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut codec = FrameCodec::<T>::new(DEFAULT_MAX_FRAME);
    c.bench_function(name, |b| {
        b.iter(|| {
            encode_frame(black_box(msg), &mut buf, DEFAULT_MAX_FRAME).ok();
            black_box(codec.decode(&mut buf).ok().flatten())
        })
    });
}

fn codec(c: &mut Criterion) {
    let submit = Request {
        req: 42,
        body: RequestBody::Submit {
            task: TaskSpec::new("sleep", "1000"),
            wait: true,
        },
    };
    round_trip(c, "submit request: encode + decode", &submit);
    let answer = Response {
        req: 42,
        body: Ok(TaskView {
            id: TaskId::new(),
            kind: "wordcount".into(),
            state: TaskState::Succeeded,
            attempts: 1,
            outcome: Some(Outcome::Succeeded("127".into())),
            created_ms: 1_800_000_000_000,
            due_ms: None,
            finished_ms: Some(1_800_000_000_001),
            errors: Vec::new(),
            no_handler: false,
            queue: None,
            priority: 0,
            concurrency: None,
            progress: None,
        }),
    };
    round_trip(c, "result response: encode + decode", &answer);
    let words = "lorem ipsum ".repeat(500);
    let assign = Assignment {
        id: TaskId::new(),
        attempt: 1,
        kind: "wordcount".into(),
        payload: words.into(),
    };
    round_trip(c, "assignment of 1000 words: encode + decode", &assign);
}

criterion_group!(benches, codec);
criterion_main!(benches);

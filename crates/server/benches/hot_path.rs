//! The coordinator's per-task work without sockets: a task submitted, assigned and completed
//! through the task table and the scheduler, with 200,000 results kept (the default bound);
//! and a snapshot of such a table: the copy taken under the table's lock (which stalls
//! `apply` while it lasts), its encoding (done away from the lock), and the first batch
//! applied while a snapshot still shares the table (it unshares what it changes, under
//! the lock).
//! `cargo bench -p dtc-server`.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use dtc_proto::{Outcome, Retry, TaskId, TaskSpec};
use dtc_server::sched::{Ready, Scheduler};
use dtc_server::shard::{Applied, Command, Retention, TaskTable};
use std::time::{Duration, Instant};

/// A `noop` task with an empty payload and the default options.
fn noop(id: TaskId) -> TaskSpec {
    TaskSpec {
        id,
        kind: "noop".into(),
        payload: Bytes::new(),
        max_attempts: 3,
        options: None,
    }
}

fn lifecycle(c: &mut Criterion) {
    let mut table = TaskTable::new(Retention::default());
    let mut sched = Scheduler::new(Duration::from_secs(1));
    sched.add_worker(1, 64, ["noop".to_string()], &[], Instant::now());
    let mut n: u128 = 0;
    c.bench_function(
        "task lifecycle: submit, assign, complete (200k results kept)",
        |b| {
            b.iter(|| {
                n += 1;
                let id = TaskId(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let spec = noop(id);
                if let Applied::Submitted(Ok(_)) = table.apply(Command::Submit { spec, at_ms: 0 }) {
                    sched.enqueue(id, "noop", Ready::DEFAULT);
                }
                for a in sched.assign(Instant::now(), |id| {
                    table.runnable(id, 0).map(|input| input.attempt)
                }) {
                    sched.completed(a.worker, a.id, a.attempt);
                    let outcome = Outcome::Succeeded(Bytes::new());
                    table.apply(Command::Complete {
                        id: a.id,
                        attempt: a.attempt,
                        outcome,
                        retry: Retry::Policy,
                        at_ms: 0,
                    });
                    sched.forget(a.id);
                }
            })
        },
    );
}

/// A table holding 200,000 finished tasks, as the default run leaves it.
fn full_table() -> TaskTable {
    let mut table = TaskTable::new(Retention::default());
    for n in 0..200_000u128 {
        let id = TaskId(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let spec = TaskSpec {
            id,
            kind: "wordcount".into(),
            payload: Bytes::from_static(b"the quick brown fox"),
            max_attempts: 3,
            options: None,
        };
        // Times past the result TTL, so that nothing expires.
        let at_ms = 1_000_000 + n as u64;
        table.apply(Command::Submit { spec, at_ms });
        let outcome = Outcome::Succeeded(Bytes::from_static(b"4"));
        table.apply(Command::Complete {
            id,
            attempt: 1,
            outcome,
            retry: Retry::Policy,
            at_ms,
        });
    }
    table
}

fn snapshot(c: &mut Criterion) {
    let table = full_table();
    c.bench_function("snapshot: copy under the lock (200k tasks)", |b| {
        b.iter(|| table.image())
    });
    c.bench_function("snapshot: encode the copy (200k tasks)", |b| {
        b.iter_batched(
            || table.image(),
            dtc_server::shard::TableImage::encode,
            criterion::BatchSize::LargeInput,
        )
    });
}

/// One batch of 256 tasks submitted and completed while a snapshot holds the table: the
/// work `apply` does under the table's lock right after a snapshot is taken.
fn apply_after_snapshot(c: &mut Criterion) {
    let mut table = full_table();
    let mut n: u128 = 1 << 64;
    c.bench_function("snapshot: the first 256-task batch applied after it", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let image = table.image();
                let started = Instant::now();
                for _ in 0..256 {
                    n += 1;
                    let id = TaskId(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    let spec = noop(id);
                    table.apply(Command::Submit { spec, at_ms: 0 });
                    let outcome = Outcome::Succeeded(Bytes::new());
                    table.apply(Command::Complete {
                        id,
                        attempt: 1,
                        outcome,
                        retry: Retry::Policy,
                        at_ms: 0,
                    });
                }
                spent += started.elapsed();
                drop(image);
            }
            spent
        })
    });
}

criterion_group!(benches, lifecycle, snapshot, apply_after_snapshot);
criterion_main!(benches);

//! Structure-aware: a sequence of task-table commands built from the fuzzer's bytes is
//! applied to a table; its snapshot restores to a table with the same snapshot, and a
//! second table fed the same commands ends byte-identical (determinism).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use dtc_proto::{Backoff, Outcome, Retry, Start, TaskId, TaskSpec, TaskState};
use dtc_server::shard::{Command, Retention, TaskTable};
use libfuzzer_sys::fuzz_target;

fn command(u: &mut Unstructured<'_>) -> arbitrary::Result<Command> {
    let id = TaskId(u128::from(u.int_in_range(0u8..=15)?));
    let at_ms = u64::from(u.int_in_range(0u16..=2000)?);
    let attempt = u.int_in_range(0u32..=4)?;
    Ok(match u.int_in_range(0u8..=9)? {
        0 => {
            let mut spec = TaskSpec::new(String::arbitrary(u)?, Vec::<u8>::arbitrary(u)?);
            spec.id = id;
            spec.max_attempts = u.int_in_range(0u32..=4)?;
            spec.options_mut().start = match u.int_in_range(0u8..=2)? {
                0 => Start::Now,
                1 => Start::After(u64::arbitrary(u)?),
                _ => Start::At(u64::arbitrary(u)?),
            };
            spec.options_mut().timeout_ms = Option::<u64>::arbitrary(u)?;
            spec.options_mut().expires_ms = Option::<u64>::arbitrary(u)?;
            if bool::arbitrary(u)? {
                spec.options_mut().backoff = Some(Backoff {
                    initial_ms: u64::arbitrary(u)?,
                    multiplier_pct: u32::arbitrary(u)?,
                    max_ms: u64::arbitrary(u)?,
                    jitter_pct: u8::arbitrary(u)?,
                });
            }
            Command::Submit { spec, at_ms }
        }
        1 => Command::Complete {
            id,
            attempt,
            outcome: match u.int_in_range(0u8..=2)? {
                0 => Outcome::Succeeded(Vec::<u8>::arbitrary(u)?.into()),
                1 => Outcome::Failed(String::arbitrary(u)?),
                _ => Outcome::Cancelled,
            },
            retry: match u.int_in_range(0u8..=2)? {
                0 => Retry::Policy,
                1 => Retry::Never,
                _ => Retry::After(u64::arbitrary(u)?),
            },
            at_ms,
        },
        2 => Command::Requeue { id, attempt, at_ms },
        3 => Command::Cancel { id, at_ms },
        4 => Command::Expire { at_ms },
        5 => Command::Retry { id, at_ms },
        6 => Command::Lapse { id, at_ms },
        8 => Command::SetTypeDefaults {
            kind: String::arbitrary(u)?,
            options: if bool::arbitrary(u)? {
                Some(Box::new(dtc_proto::TaskOptions {
                    timeout_ms: Option::<u64>::arbitrary(u)?,
                    expires_ms: Option::<u64>::arbitrary(u)?,
                    ..Default::default()
                }))
            } else {
                None
            },
        },
        7 => Command::Purge {
            state: TaskState::ALL[usize::from(u.int_in_range(0u8..=6)?)],
            at_ms,
        },
        _ => Command::Configure {
            retention: Retention {
                result_ttl_ms: u64::from(u.int_in_range(0u16..=1000)?),
                max_results: u.int_in_range(1usize..=8)?,
                max_queued: u.int_in_range(1usize..=8)?,
                failed_ttl_ms: u64::from(u.int_in_range(0u16..=1000)?),
                max_failed: u.int_in_range(1usize..=8)?,
            },
        },
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut commands = Vec::new();
    while !u.is_empty() && commands.len() < 256 {
        match command(&mut u) {
            Ok(c) => commands.push(c),
            Err(_) => break,
        }
    }
    let mut a = TaskTable::new(Retention::default());
    let mut b = TaskTable::new(Retention::default());
    for c in commands {
        a.apply(c.clone());
        b.apply(c);
    }
    let image = a.snapshot();
    assert_eq!(
        image,
        b.snapshot(),
        "the same commands gave different tables"
    );
    let restored = TaskTable::restore(&image).map(|t| t.snapshot());
    assert_eq!(restored.ok(), Some(image));
});

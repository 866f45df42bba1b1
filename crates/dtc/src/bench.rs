//! The benchmark client: `-c` closed-loop clients, each submitting a task of the chosen
//! workload, waiting for its result (checking word counts), and repeating `-n` times; then a
//! report of throughput and latency (hdrhistogram) in text, JSON or a CSV row.

use crate::cli::{BenchArgs, Workload};
use anyhow::Context;
use bytes::Bytes;
use dtc_proto::credentials::Credentials;
use dtc_sdk::{Client, ClientConfig, ClientError, Outcome, TaskSpec, TaskState};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Word counts of the `word` workload's texts: short, medium, long.
const WORD_SIZES: [usize; 3] = [10, 100, 1000];
/// Sleep lengths of the `synthetic` workload, in µs: short, medium, long.
const SLEEP_MICROS: [u64; 3] = [100, 1000, 5000];
/// Distinct texts generated per size.
const TEXTS_PER_SIZE: usize = 8;

/// Latency figures, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Mean.
    pub avg: f64,
    /// Smallest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

/// The outcome of a benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Tasks that finished with the right result.
    pub tasks_ok: u64,
    /// Tasks that failed, gave up, or returned a wrong result.
    pub tasks_failed: u64,
    /// Wall time of the whole run, in seconds.
    pub wall_s: f64,
    /// Finished tasks (ok or not) per second.
    pub throughput: f64,
    /// Latency from submit to result, per task.
    pub latency_us: Latency,
}

/// The pre-generated inputs of a workload.
struct Inputs {
    workload: Workload,
    /// For each word size, texts and their word counts.
    texts: Vec<Vec<(Bytes, Bytes)>>,
}

impl Inputs {
    fn new(workload: Workload, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x7e57);
        const VOCAB: [&str; 16] = [
            "task", "queue", "worker", "shard", "router", "raft", "leader", "slot", "result",
            "payload", "latency", "durable", "replica", "commit", "batch", "lorem",
        ];
        let texts = WORD_SIZES
            .iter()
            .map(|&words| {
                (0..TEXTS_PER_SIZE)
                    .map(|_| {
                        let mut text = String::with_capacity(words * 8);
                        for i in 0..words {
                            if i > 0 {
                                text.push(if rng.random_ratio(1, 10) { '\n' } else { ' ' });
                            }
                            text.push_str(VOCAB[rng.random_range(0..VOCAB.len())]);
                        }
                        (Bytes::from(text), Bytes::from(words.to_string()))
                    })
                    .collect()
            })
            .collect();
        Self { workload, texts }
    }

    /// The next task and the result it must give (if checked).
    fn next(&self, rng: &mut SmallRng) -> (TaskSpec, Option<Bytes>) {
        let size = match rng.random_range(0..10) {
            0..7 => 0,
            7..9 => 1,
            _ => 2,
        };
        let word = match self.workload {
            Workload::Noop => return (TaskSpec::new("noop", Bytes::new()), Some(Bytes::new())),
            Workload::Synthetic => false,
            Workload::Word => true,
            Workload::Mixed => rng.random_bool(0.5),
        };
        if word {
            let (text, count) = &self.texts[size][rng.random_range(0..TEXTS_PER_SIZE)];
            (
                TaskSpec::new("wordcount", text.clone()),
                Some(count.clone()),
            )
        } else {
            (
                TaskSpec::new("sleep", SLEEP_MICROS[size].to_string()),
                Some(Bytes::new()),
            )
        }
    }
}

/// Runs the benchmark against the router (or coordinator) at `addr`.
pub async fn run(
    addr: SocketAddr,
    args: &BenchArgs,
    credentials: Arc<Credentials>,
) -> anyhow::Result<Report> {
    anyhow::ensure!(args.clients > 0, "-c must be at least 1");
    let conns = args.conns.unwrap_or(1).clamp(1, args.clients);
    let mut clients = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut config = ClientConfig::new(vec![addr]).with_credentials(Arc::clone(&credentials));
        config.name = format!("dtc client {i}");
        config.retry_for = Duration::from_secs(args.retry_for_s);
        let client = Client::with_config(config).await?;
        clients.push(client);
    }
    let inputs = Arc::new(Inputs::new(args.workload, args.seed));
    if let Some(delay) = args.delayed {
        return delayed_burst(&clients, &inputs, args, Duration::from_secs(delay)).await;
    }
    let done = Arc::new(AtomicU64::new(0));
    let total = args.clients as u64 * args.tasks;
    let start = Instant::now();
    // Both sets abort their tasks if this future is dropped (e.g. on Ctrl-C).
    let mut progress = tokio::task::JoinSet::new();
    progress.spawn(progress_line(Arc::clone(&done), total, start));
    let mut loops = tokio::task::JoinSet::new();
    for i in 0..args.clients {
        let client = clients[i % conns].clone();
        let inputs = Arc::clone(&inputs);
        let done = Arc::clone(&done);
        let (tasks, seed) = (args.tasks, args.seed.wrapping_add(i as u64));
        let hist = new_histogram()?;
        loops.spawn(async move { closed_loop(client, &inputs, tasks, seed, hist, &done).await });
    }
    let mut hist = new_histogram()?;
    let (mut ok, mut failed) = (0, 0);
    let mut first_errors = Vec::new();
    while let Some(part) = loops.join_next().await {
        let part = part.context("a client loop stopped")?;
        hist.add(&part.hist).context("merging latency histograms")?;
        ok += part.ok;
        failed += part.failed;
        if first_errors.len() < 5 {
            first_errors.extend(part.errors);
        }
    }
    let wall = start.elapsed();
    progress.abort_all();
    for e in first_errors.iter().take(5) {
        eprintln!("failed task: {e}");
    }
    Ok(report(ok, failed, wall.as_secs_f64(), &hist))
}

/// The report of `ok` and `failed` tasks over `wall_s` seconds, with their latencies.
fn report(ok: u64, failed: u64, wall_s: f64, hist: &Histogram<u64>) -> Report {
    Report {
        tasks_ok: ok,
        tasks_failed: failed,
        wall_s,
        throughput: if wall_s > 0.0 {
            (ok + failed) as f64 / wall_s
        } else {
            0.0
        },
        latency_us: Latency {
            avg: hist.mean(),
            min: hist.min(),
            p50: hist.value_at_quantile(0.50),
            p95: hist.value_at_quantile(0.95),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
        },
    }
}

/// `--delayed`: every task submitted at once to start at one moment, then waited for. The
/// latencies are from that moment to each task's end as the leader stamped it (ms).
async fn delayed_burst(
    clients: &[Client],
    inputs: &Arc<Inputs>,
    args: &BenchArgs,
    delay: Duration,
) -> anyhow::Result<Report> {
    let due = SystemTime::now() + delay;
    let due_ms = u64::try_from(due.duration_since(UNIX_EPOCH)?.as_millis())?;
    let rss_before = rss_kib();
    let submit_start = Instant::now();
    let mut loops = tokio::task::JoinSet::new();
    for i in 0..args.clients {
        let client = clients[i % clients.len()].clone();
        let inputs = Arc::clone(inputs);
        let (tasks, seed) = (args.tasks, args.seed.wrapping_add(i as u64));
        loops.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut ids = Vec::with_capacity(tasks as usize);
            for _ in 0..tasks {
                let (spec, _) = inputs.next(&mut rng);
                let view = client.submit(spec.with_start_at(due)).await?;
                ids.push(view.id);
            }
            Ok::<_, ClientError>((client, ids))
        });
    }
    let mut waiting = Vec::new();
    while let Some(part) = loops.join_next().await {
        waiting.push(part.context("a submitting loop stopped")??);
    }
    let submitted: usize = waiting.iter().map(|(_, ids)| ids.len()).sum();
    eprintln!(
        "submitted {submitted} tasks in {:.1} s; whole process RSS {:+.1} MiB ({:.0} bytes per \
         scheduled task, every replica and the leader's timers included)",
        submit_start.elapsed().as_secs_f64(),
        (rss_kib() as f64 - rss_before as f64) / 1024.0,
        (rss_kib() as f64 - rss_before as f64) * 1024.0 / submitted.max(1) as f64
    );
    anyhow::ensure!(
        SystemTime::now() < due,
        "submitting took longer than --delayed {}: raise it",
        delay.as_secs()
    );
    let mut waits = tokio::task::JoinSet::new();
    for (client, ids) in waiting {
        waits.spawn(async move {
            let mut ends = Vec::with_capacity(ids.len());
            for id in ids {
                ends.push(client.wait(id).await?);
            }
            Ok::<_, ClientError>(ends)
        });
    }
    let mut hist = new_histogram()?;
    let (mut ok, mut failed, mut last_ms) = (0, 0, due_ms);
    while let Some(part) = waits.join_next().await {
        for view in part.context("a waiting loop stopped")?? {
            match (view.state, view.finished_ms) {
                // A task that ended before its start time counts as failed.
                (TaskState::Succeeded, Some(end)) if end >= due_ms => {
                    ok += 1;
                    last_ms = last_ms.max(end);
                    let us = end.saturating_sub(due_ms).saturating_mul(1000).max(1);
                    hist.record(us).context("recording a latency")?;
                }
                _ => failed += 1,
            }
        }
    }
    let wall_s = (last_ms - due_ms) as f64 / 1000.0;
    Ok(report(ok, failed, wall_s, &hist))
}

/// This process's resident memory, in KiB (0 where /proc is not there).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

struct LoopResult {
    hist: Histogram<u64>,
    ok: u64,
    failed: u64,
    errors: Vec<String>,
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).context("creating a latency histogram")
}

async fn closed_loop(
    client: Client,
    inputs: &Inputs,
    tasks: u64,
    seed: u64,
    hist: Histogram<u64>,
    done: &AtomicU64,
) -> LoopResult {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut r = LoopResult {
        hist,
        ok: 0,
        failed: 0,
        errors: Vec::new(),
    };
    for _ in 0..tasks {
        let (spec, expect) = inputs.next(&mut rng);
        let id = spec.id;
        let start = Instant::now();
        let got = client.run(spec).await;
        let micros = start.elapsed().as_micros() as u64;
        r.hist.saturating_record(micros.max(1));
        let problem = match got {
            Ok(view) => match (view.outcome, &expect) {
                (Some(Outcome::Succeeded(out)), Some(want)) if out == *want => None,
                (Some(Outcome::Succeeded(out)), Some(want)) => Some(format!(
                    "{id}: result {:?}, expected {:?}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(want)
                )),
                (Some(Outcome::Succeeded(_)), None) => None,
                (other, _) => Some(format!("{id}: {other:?}")),
            },
            Err(e) => Some(format!("{id}: {e}")),
        };
        match problem {
            None => r.ok += 1,
            Some(e) => {
                r.failed += 1;
                if r.errors.len() < 5 {
                    r.errors.push(e);
                }
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    r
}

async fn progress_line(done: Arc<AtomicU64>, total: u64, start: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tick.tick().await;
        let now = done.load(Ordering::Relaxed);
        eprintln!(
            "[{:>5.1}s] {now}/{total} tasks ({:.0}%), {} tasks/s",
            start.elapsed().as_secs_f64(),
            now as f64 * 100.0 / total.max(1) as f64,
            now - last
        );
        last = now;
    }
}

/// Prints the report as text (the seed's wording) or JSON, and appends a CSV row if asked.
pub fn print(report: &Report, args: &BenchArgs, target: &str) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        let l = &report.latency_us;
        let ms = |us: f64| us / 1000.0;
        println!("==== dtc benchmark ====");
        println!("Target: {target}");
        println!(
            "Workload: {}, clients: {}, tasks per client: {}",
            args.workload, args.clients, args.tasks
        );
        println!(
            "Tasks completed: {} ok, {} failed",
            report.tasks_ok, report.tasks_failed
        );
        println!("Total time: {:.3} s", report.wall_s);
        println!("Throughput: {:.1} tasks/sec", report.throughput);
        println!("Average latency: {:.3} ms", ms(l.avg));
        println!("Min latency: {:.3} ms", ms(l.min as f64));
        println!("p50 latency: {:.3} ms", ms(l.p50 as f64));
        println!("p95 latency: {:.3} ms", ms(l.p95 as f64));
        println!("p99 latency: {:.3} ms", ms(l.p99 as f64));
        println!("p99.9 latency: {:.3} ms", ms(l.p999 as f64));
        println!("Max latency: {:.3} ms", ms(l.max as f64));
    }
    if let Some(path) = &args.csv {
        let new = !path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        if new {
            writeln!(
                f,
                "workload,clients,tasks_per_client,tasks_ok,tasks_failed,wall_s,throughput,avg_us,min_us,p50_us,p95_us,p99_us,p999_us,max_us"
            )?;
        }
        let l = &report.latency_us;
        writeln!(
            f,
            "{},{},{},{},{},{:.3},{:.1},{:.1},{},{},{},{},{},{}",
            args.workload,
            args.clients,
            args.tasks,
            report.tasks_ok,
            report.tasks_failed,
            report.wall_s,
            report.throughput,
            l.avg,
            l.min,
            l.p50,
            l.p95,
            l.p99,
            l.p999,
            l.max
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_mix_matches_the_seed() {
        let inputs = Inputs::new(Workload::Mixed, 1);
        let mut rng = SmallRng::seed_from_u64(1);
        let (mut sleeps, mut words, mut short) = (0, 0, 0);
        for _ in 0..20_000 {
            let (spec, expect) = inputs.next(&mut rng);
            match spec.kind.as_str() {
                "sleep" => {
                    sleeps += 1;
                    if spec.payload == Bytes::from_static(b"100") {
                        short += 1;
                    }
                }
                "wordcount" => {
                    words += 1;
                    let counted = dtc_sdk::handlers::count_words(&spec.payload).ok();
                    assert_eq!(counted, expect, "the expected count is the true count");
                }
                other => panic!("unexpected kind {other}"),
            }
        }
        assert!(
            (9_000..11_000).contains(&sleeps),
            "{sleeps} sleeps of 20000"
        );
        assert!((9_000..11_000).contains(&words));
        let share = short as f64 / sleeps as f64;
        assert!((0.66..0.74).contains(&share), "short share {share}");
    }
}

//! The operator's view: the router's HTTP API driven by a real HTTP client, and
//! Prometheus metrics scraped (and parsed) while a benchmark runs against a `dtc local`
//! process.

mod common;

use anyhow::Context;
use dtc::local::{LocalCluster, LocalSpec};
use dtc_proto::transport::Secure;
use dtc_server::router::http::HttpConfig;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An HTTP client that hands back error statuses as responses.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// The status and JSON body of a response.
fn json_of(mut r: ureq::http::Response<ureq::Body>) -> anyhow::Result<(u16, Value)> {
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string()?;
    let body = serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
    Ok((status, body))
}

fn api_checks(base: &str) -> anyhow::Result<()> {
    let a = agent();
    let tasks = format!("{base}/v1/tasks");

    // Submit and wait: the word count comes back.
    let r = a.post(&tasks).send_json(json!({
        "type": "wordcount", "payload": "one two three four five", "wait": true
    }))?;
    let (status, body) = json_of(r)?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "succeeded");
    assert_eq!(body["result"], "5");
    let id = body["id"].as_str().context("no id")?.to_owned();

    // The same task looked up by id; the payload may come as base64 too.
    let (status, body) = json_of(a.get(format!("{tasks}/{id}")).call()?)?;
    assert_eq!((status, &body["result"]), (200, &json!("5")));
    let r = a.post(&tasks).send_json(json!({
        "type": "wordcount", "payload_base64": "YSBiIGM=", "wait": true
    }))?;
    assert_eq!(json_of(r)?.1["result"], "3");

    // Unknown id: 404; not an id at all: 400.
    let unknown = "0192f0c1-7e4a-7b3c-9d2e-4f5a6b7c8d9e";
    let (status, body) = json_of(a.get(format!("{tasks}/{unknown}")).call()?)?;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    let (status, _) = json_of(a.get(format!("{tasks}/not-a-uuid")).call()?)?;
    assert_eq!(status, 400);

    // Malformed JSON: 400 with a message saying what is wrong.
    let r = a
        .post(&tasks)
        .content_type("application/json")
        .send("{\"type\": \"wordcount\", ")?;
    let (status, body) = json_of(r)?;
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().context("no message")?;
    assert!(message.contains("not a task"), "{message}");
    // Fields it does not know are refused, not ignored.
    let (status, _) = json_of(
        a.post(&tasks)
            .send_json(json!({"type": "noop", "wiat": true}))?,
    )?;
    assert_eq!(status, 400);

    // A body past the bound (64 KiB here): 413.
    let big = json!({ "type": "wordcount", "payload": "word ".repeat(20_000) });
    let (status, body) = json_of(a.post(&tasks).send_json(big)?)?;
    assert_eq!((status, &body["error"]["code"]), (413, &json!("too_large")));

    // A task no worker can run stays queued: it can be cancelled, once.
    let r = a
        .post(&tasks)
        .send_json(json!({"type": "no-such-handler"}))?;
    let (status, body) = json_of(r)?;
    assert_eq!((status, &body["state"]), (202, &json!("queued")));
    let queued = body["id"].as_str().context("no id")?.to_owned();
    let (status, body) = json_of(a.delete(format!("{tasks}/{queued}")).call()?)?;
    assert_eq!((status, &body["state"]), (200, &json!("cancelled")));
    let (_, body) = json_of(a.get(format!("{tasks}/{queued}")).call()?)?;
    assert_eq!(body["state"], "cancelled");
    let (status, _) = json_of(a.delete(format!("{tasks}/{queued}")).call()?)?;
    assert_eq!(status, 409);
    // A finished task cannot be cancelled either.
    let (status, _) = json_of(a.delete(format!("{tasks}/{id}")).call()?)?;
    assert_eq!(status, 409);

    // Waiting with a timeout on a task that cannot finish: 202 with its state.
    let r = a.post(&tasks).send_json(json!({
        "type": "no-such-handler", "wait": true, "timeout_ms": 300
    }))?;
    let (status, body) = json_of(r)?;
    assert_eq!((status, &body["state"]), (202, &json!("queued")));
    // That wait was given back when it timed out. This API keeps at most two waits, one
    // per client address: while one is open, another from the same address is refused
    // with 503, and served again once the first has ended.
    let open_wait = {
        let (a, tasks) = (a.clone(), tasks.clone());
        std::thread::spawn(move || -> anyhow::Result<u16> {
            let long = json!({"type": "no-such-handler", "wait": true, "timeout_ms": 3000});
            for _ in 0..100 {
                let (status, _) = json_of(a.post(&tasks).send_json(&long)?)?;
                if status != 503 {
                    return Ok(status);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            anyhow::bail!("the long wait was never let in")
        })
    };
    let short = json!({"type": "no-such-handler", "wait": true, "timeout_ms": 1});
    let mut refused = None;
    for _ in 0..500 {
        let r = a.post(&tasks).send_json(&short)?;
        let retry_after = r.headers().get("retry-after").cloned();
        let (status, body) = json_of(r)?;
        if status == 503 {
            refused = Some((body, retry_after));
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (body, retry_after) =
        refused.context("a second wait from the address was never refused")?;
    assert_eq!(body["error"]["code"], json!("limit_reached"), "{body}");
    assert!(retry_after.is_some());
    let status = open_wait
        .join()
        .map_err(|_| anyhow::anyhow!("the wait panicked"))??;
    assert_eq!(status, 202);
    let (status, _) = json_of(a.post(&tasks).send_json(&short)?)?;
    assert_eq!(
        status, 202,
        "a wait is served again once the open one ended"
    );
    let (status, _) = json_of(a.post(&tasks).send_json(json!({"type": "noop"}))?)?;
    assert!(
        status == 200 || status == 202,
        "a submit without wait is still served"
    );

    // A delayed task is scheduled with its time, listed as scheduled, and cancellable.
    let r = a
        .post(&tasks)
        .send_json(json!({"type": "noop", "delay_ms": 600_000}))?;
    let (status, body) = json_of(r)?;
    assert_eq!(
        (status, &body["state"]),
        (202, &json!("scheduled")),
        "{body}"
    );
    assert!(body["due"].is_string(), "{body}");
    let later = body["id"].as_str().context("no id")?.to_owned();
    let (status, page) = json_of(a.get(format!("{tasks}?state=scheduled")).call()?)?;
    assert_eq!(status, 200, "{page}");
    let listed: Vec<&str> = page["tasks"]
        .as_array()
        .context("no tasks")?
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(listed, [later.as_str()]);
    let (status, body) = json_of(a.delete(format!("{tasks}/{later}")).call()?)?;
    assert_eq!((status, &body["state"]), (200, &json!("cancelled")));
    let (status, _) = json_of(a.get(format!("{tasks}?state=bogus")).call()?)?;
    assert_eq!(status, 400);

    // A task that fails fatally keeps its error and can be retried; one that has not
    // failed cannot.
    // (Without wait: this API's two waits are taken by the tasks above.)
    let r = a.post(&tasks).send_json(json!({
        "type": "fail", "payload": "fatal: bad input",
        "backoff": {"initial_ms": 10, "multiplier": 2}
    }))?;
    let (status, body) = json_of(r)?;
    assert_eq!(status, 202, "{body}");
    let failed = body["id"].as_str().context("no id")?.to_owned();
    let mut body = body;
    for _ in 0..500 {
        if body["state"] == "failed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        body = json_of(a.get(format!("{tasks}/{failed}")).call()?)?.1;
    }
    assert_eq!(body["state"], "failed", "{body}");
    assert_eq!(body["errors"], json!(["bad input"]));
    let (status, body) = json_of(
        a.post(format!("{tasks}/{failed}/retry"))
            .send_json(json!({}))?,
    )?;
    assert_eq!(status, 202, "{body}");
    assert!(
        body["state"] == "queued" || body["state"] == "running",
        "{body}"
    );
    let (status, _) = json_of(a.post(format!("{tasks}/{id}/retry")).send_json(json!({}))?)?;
    assert_eq!(status, 409, "a succeeded task is not retried");

    // The cluster: both shards, each with a leader and its workers.
    let (status, body) = json_of(a.get(format!("{base}/v1/cluster")).call()?)?;
    assert_eq!(status, 200);
    let shards = body["shards"].as_array().context("no shards")?;
    assert_eq!(shards.len(), 2);
    for shard in shards {
        let replicas = shard["replicas"].as_array().context("no replicas")?;
        let leader = replicas
            .iter()
            .find(|r| r[1]["Ok"]["role"] == "Leader")
            .with_context(|| format!("no leader in {shard}"))?;
        assert_eq!(leader[1]["Ok"]["workers"].as_array().map(Vec::len), Some(1));
    }

    // Queues: a task may name one and a priority; the list counts each shard's workers.
    let r = a
        .post(&tasks)
        .send_json(json!({"type": "noop", "queue": "bulk", "priority": 3}))?;
    assert_eq!(json_of(r)?.0, 202);
    let r = a
        .post(&tasks)
        .send_json(json!({"type": "noop", "priority": 12}))?;
    let (status, body) = json_of(r)?;
    assert_eq!(status, 400, "{body}");
    // A concurrency key: the id given is routed by the key, and the task shows its key.
    let given = "0192f0c1-7e4a-7b3c-9d2e-4f5a6b7c8d9e";
    let r = a
        .post(&tasks)
        .send_json(json!({"type": "noop", "id": given, "key": "tenant:1", "key_limit": 2}))?;
    let (status, body) = json_of(r)?;
    assert!(status == 200 || status == 202, "{body}");
    assert_eq!(
        (&body["key"], &body["key_limit"]),
        (&json!("tenant:1"), &json!(2)),
        "{body}"
    );
    assert_ne!(body["id"], given, "{body}");
    let r = a
        .post(&tasks)
        .send_json(json!({"type": "noop", "key_limit": 2}))?;
    assert_eq!(json_of(r)?.0, 400, "a limit without a key");
    let (status, body) = json_of(a.get(format!("{base}/v1/queues")).call()?)?;
    assert_eq!(status, 200, "{body}");
    let queues = body["queues"].as_array().context("no queues")?;
    let default = queues
        .iter()
        .find(|q| q["name"] == "default")
        .with_context(|| format!("no default queue in {body}"))?;
    assert_eq!(default["workers"], 2, "{body}");
    assert_eq!(default["paused"], false, "{body}");
    let bulk = queues
        .iter()
        .find(|q| q["name"] == "bulk")
        .with_context(|| format!("no bulk queue in {body}"))?;
    assert_eq!(
        (&bulk["queued"], &bulk["workers"]),
        (&json!(1), &json!(0)),
        "{body}"
    );

    // Schedules: added, paused, listed and deleted over HTTP; a bad calendar is refused.
    let schedules = format!("{base}/v1/schedules");
    let r = a.post(&schedules).send_json(json!({
        "name": "http-nightly", "cron": "0 3 * * *", "tz": "Europe/Paris", "type": "noop"
    }))?;
    let (status, body) = json_of(r)?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["schedules"][0]["tz"], "Europe/Paris", "{body}");
    assert!(body["schedules"][0]["next"].is_string(), "{body}");
    let r = a
        .post(format!("{schedules}/http-nightly/pause"))
        .send_json(json!({}))?;
    let (status, body) = json_of(r)?;
    assert_eq!(
        (status, &body["schedules"][0]["paused"]),
        (200, &json!(true)),
        "{body}"
    );
    let (status, body) = json_of(a.get(&schedules).call()?)?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["schedules"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    let (status, body) = json_of(a.delete(format!("{schedules}/http-nightly")).call()?)?;
    assert_eq!((status, &body["schedules"]), (200, &json!([])), "{body}");
    let r = a.post(&schedules).send_json(json!({
        "name": "bad", "cron": "at noon", "type": "noop"
    }))?;
    assert_eq!(json_of(r)?.0, 400);

    // The dashboard is one self-contained page.
    let mut r = a.get(format!("{base}/")).call()?;
    assert_eq!(r.status().as_u16(), 200);
    let page = r.body_mut().read_to_string()?;
    assert!(page.contains("<title>dtc dashboard</title>"));
    assert!(!page.contains("http://") && !page.contains("https://"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_submits_looks_up_and_cancels_with_fitting_statuses() -> anyhow::Result<()> {
    common::bounded(async {
        common::logs();
        let spec = LocalSpec {
            shards: 2,
            workers: 1,
            slots: 2,
            router_port: 0,
            replicas: 1,
            data_dir: None,
            in_memory: true,
            http: Some(HttpConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                max_body: 64 * 1024,
                max_waits: 2,
            }),
            secure: false,
        };
        let cluster = LocalCluster::start(&spec).await?;
        let http = cluster.http.context("no HTTP address")?;
        let base = format!("http://{http}");
        let checks = tokio::task::spawn_blocking(move || api_checks(&base)).await;
        cluster.stop().await;
        checks?
    })
    .await
}

/// Scrapes `/metrics` and parses it as Prometheus' text format.
fn scrape(a: &ureq::Agent, url: &str) -> anyhow::Result<prometheus_parse::Scrape> {
    let mut r = a.get(url).call()?;
    anyhow::ensure!(r.status() == 200, "GET {url}: {}", r.status());
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(content_type.starts_with("text/plain"), "{content_type}");
    let text = r.body_mut().read_to_string()?;
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).context("parsing /metrics")?;
    // Every family the text declares parsed into samples.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line
            .split(' ')
            .nth(2)
            .context("a TYPE line without a name")?;
        anyhow::ensure!(
            scrape.samples.iter().any(|s| s.metric.starts_with(name)),
            "{name} is declared but no sample of it parsed"
        );
    }
    Ok(scrape)
}

/// The sum of a counter over all its label sets.
fn total(scrape: &prometheus_parse::Scrape, name: &str, filter: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| filter.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn metrics_parse_while_a_benchmark_runs_and_count_what_the_client_counted() -> anyhow::Result<()> {
    let router_port = common::free_port()?.to_string();
    let http_port = common::free_port()?;
    let http = format!("127.0.0.1:{http_port}");
    let (mut local, printed) = common::Proc::start_lines(
        &[
            "local",
            "-p",
            &router_port,
            "--http",
            &http,
            "--in-memory",
            "--workers",
            "2",
        ],
        1,
    )?;
    anyhow::ensure!(
        printed.first().is_some_and(|l| l.starts_with("dtc local:")),
        "dtc local did not start: {printed:?}"
    );
    let url = format!("http://{http}/metrics");
    let a = agent();
    let mut client = Command::new(env!("CARGO_BIN_EXE_dtc"))
        .args(["client", "-p", &router_port, "-c", "16", "-n", "150"])
        .args(["-t", "mixed", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    // Scrape while the benchmark runs (every scrape must parse), bounded in count and time.
    let started = Instant::now();
    let mut scrapes = 0;
    while client.try_wait()?.is_none() && scrapes < 300 && started.elapsed() < common::TEST_LIMIT {
        scrape(&a, &url)?;
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = client.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "the benchmark failed");
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let ok = report["tasks_ok"].as_f64().context("no tasks_ok")?;
    assert_eq!(ok, 16.0 * 150.0);
    assert!(scrapes > 0, "the benchmark ended before a scrape");

    // Gauges follow the status once a second: wait (bounded) for a reading after the run.
    let mut last = scrape(&a, &url)?;
    for _ in 0..30 {
        if total(&last, "dtc_raft_is_leader", &[]) == 2.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        last = scrape(&a, &url)?;
    }
    assert_eq!(total(&last, "dtc_tasks_completed_total", &[]), ok);
    assert_eq!(
        total(&last, "dtc_worker_tasks_total", &[("outcome", "succeeded")]),
        ok
    );
    assert_eq!(total(&last, "dtc_tasks_failed_total", &[]), 0.0);
    assert_eq!(
        total(&last, "dtc_raft_is_leader", &[]),
        2.0,
        "one leader per shard"
    );
    assert_eq!(
        total(&last, "dtc_router_requests_total", &[("kind", "submit")]),
        ok
    );
    let latency = last
        .samples
        .iter()
        .filter(|s| s.metric == "dtc_task_duration_seconds")
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            _ => 0.0,
        })
        .sum::<f64>();
    assert_eq!(
        latency, ok,
        "every finished task's latency is in the histogram"
    );
    local.signal("TERM")?;
    assert!(local.wait_success()?, "dtc local did not exit cleanly");
    Ok(())
}

/// The screen as text, one line per row.
fn screen(top: &dtc::top::model::Top) -> anyhow::Result<String> {
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(140, 48))?;
    terminal.draw(|f| dtc::top::view::render(f, top))?;
    let buffer = terminal.backend().buffer();
    let width = usize::from(buffer.area.width);
    let cells: Vec<&str> = buffer.content.iter().map(|c| c.symbol()).collect();
    Ok(cells
        .chunks(width)
        .map(|row| row.concat())
        .collect::<Vec<_>>()
        .join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_every_shard_its_leader_throughput_and_every_worker() -> anyhow::Result<()> {
    use dtc::top::model::{Key, Top};
    common::bounded(async {
        common::logs();
        let spec = LocalSpec {
            shards: 2,
            workers: 2,
            slots: 2,
            router_port: 0,
            replicas: 3,
            data_dir: None,
            in_memory: true,
            http: None,
            secure: false,
        };
        let cluster = LocalCluster::start(&spec).await?;
        // Load that outlasts the readings; stopped once they are taken.
        let args = dtc::cli::BenchArgs {
            clients: 16,
            tasks: 100_000,
            workload: dtc::cli::Workload::Noop,
            conns: None,
            json: true,
            csv: None,
            retry_for_s: 30,
            seed: 1,
            delayed: None,
        };
        let router = cluster.router;
        let load = tokio::spawn(async move {
            dtc::bench::run(router, &args, Default::default())
                .await
                .map(drop)
        });
        let mut top = Top::new(router.to_string());
        // Readings until both shards show a throughput, bounded in count.
        for _ in 0..20 {
            top.update(
                dtc::top::read(&Secure::plain(), router).await,
                Instant::now(),
            );
            if top.rates.len() == 2 && top.rates.values().all(|r| r.now.unwrap_or(0.0) > 0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let queues = dtc_proto::ask::ask_leader(
            &Secure::plain(),
            &[router],
            "test",
            &dtc_proto::status::QueueOp::List,
        )
        .await?;
        top.update_queues(queues);
        let nightly = dtc_proto::schedule::ScheduleSpec {
            name: "top-nightly".into(),
            cron: "0 3 * * *".into(),
            tz: None,
            overlap: dtc_proto::schedule::Overlap::Skip,
            catch_up: dtc_proto::schedule::CatchUp::One,
            kind: "noop".into(),
            payload: bytes::Bytes::new(),
            max_attempts: 3,
            options: None,
        };
        let op = dtc_proto::schedule::ScheduleOp::Add(nightly);
        dtc_proto::ask::ask_leader(&Secure::plain(), &[router], "test", &op).await?;
        let op = dtc_proto::schedule::ScheduleOp::List { after: None };
        top.update_schedules(
            dtc_proto::ask::ask_leader(&Secure::plain(), &[router], "test", &op).await?,
        );
        let text = screen(&top)?;
        // Through one coordinator (here a follower or the leader of shard 1): its shard,
        // every replica asked.
        let one = dtc::top::read(&Secure::plain(), cluster.coordinators[1][1])
            .await
            .map_err(anyhow::Error::msg)?;
        load.abort();
        cluster.stop().await;
        println!("{text}");

        let rate = top.total_rate().context("no throughput measured")?;
        assert!(rate > 0.0, "{text}");
        assert!(text.contains(&format!("{rate:.0} tasks/s")), "{text}");
        for shard in 0..2 {
            let leader_rows = text
                .lines()
                .filter(|l| l.starts_with(&format!("│{shard} ")) && l.contains(" leader "))
                .count();
            assert_eq!(leader_rows, 1, "shard {shard} has no leader row:\n{text}");
            let followers = text
                .lines()
                .filter(|l| l.starts_with(&format!("│{shard} ")) && l.contains(" follower "))
                .count();
            assert_eq!(followers, 2, "{text}");
        }
        // The queues pane: the default queue, served by all four workers, running.
        let default: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with("│default "))
            .with_context(|| format!("no default queue row:\n{text}"))?
            .split_whitespace()
            .collect();
        assert_eq!(default.get(3), Some(&"4"), "{text}");
        assert!(default.iter().any(|c| c.starts_with("active")), "{text}");
        // The schedules pane.
        let nightly = text
            .lines()
            .find(|l| l.starts_with("│top-nightly "))
            .with_context(|| format!("no schedule row:\n{text}"))?;
        assert!(
            nightly.contains("0 3 * * *") && nightly.contains("active"),
            "{text}"
        );
        for shard in 0..2 {
            for w in 0..2 {
                let name = format!("local-shard{shard}-worker{w}");
                assert!(text.contains(&name), "{name} missing:\n{text}");
            }
        }

        assert_eq!(one.shards.len(), 1);
        assert_eq!(one.shards[0].replicas.len(), 3);
        assert!(one.shards[0].replicas.iter().all(|(_, r)| r.is_ok()));
        let leader = one.shards[0]
            .leader()
            .context("no leader through a coordinator")?;
        assert_eq!(leader.workers.len(), 2);

        // Keys: s sorts the workers, Tab moves the focus, q quits.
        assert!(top.key(Key::Sort));
        assert!(screen(&top)?.contains("sorted by busy"));
        assert!(top.key(Key::NextPane));
        assert!(!top.key(Key::Quit));

        // The cluster gone: the screen says so and keeps the last reading.
        top.update(Err("connection refused".into()), Instant::now());
        let gone = screen(&top)?;
        assert!(gone.contains("disconnected (connection refused)"), "{gone}");
        assert!(gone.contains("local-shard0-worker0"));
        assert_eq!(top.total_rate(), None);
        Ok(())
    })
    .await
}

/// The URL a process printed on its "metrics on URL" line.
fn metrics_url(printed: &[String]) -> anyhow::Result<String> {
    printed
        .iter()
        .find_map(|l| l.strip_prefix("metrics on "))
        .map(str::to_owned)
        .with_context(|| format!("no metrics line in {printed:?}"))
}

#[test]
fn a_coordinator_and_a_worker_serve_their_own_metrics() -> anyhow::Result<()> {
    let (coordinator, printed) = common::Proc::start_lines(
        &[
            "coordinator",
            "-p",
            "0",
            "--in-memory",
            "--metrics",
            "127.0.0.1:0",
        ],
        2,
    )?;
    let port = coordinator.addr()?.port().to_string();
    let coordinator_url = metrics_url(&printed)?;
    let (_worker, printed) = common::Proc::start_lines(
        &[
            "worker",
            "-p",
            &port,
            "-w",
            "2",
            "--name",
            "metered",
            "--metrics",
            "127.0.0.1:0",
        ],
        2,
    )?;
    let worker_url = metrics_url(&printed)?;
    for text in ["a b", "a b c", "a b c d"] {
        let out = Command::new(env!("CARGO_BIN_EXE_dtc"))
            .args(["submit", "-p", &port, "--json", "wordcount", text])
            .output()?;
        anyhow::ensure!(out.status.success(), "submit failed: {out:?}");
    }
    let a = agent();
    // The gauges follow the status once a second: wait (bounded) for the leader's, with
    // its worker attached.
    let mut scrape_c = scrape(&a, &coordinator_url)?;
    for _ in 0..30 {
        if total(&scrape_c, "dtc_raft_is_leader", &[]) == 1.0
            && total(&scrape_c, "dtc_slots_total", &[]) > 0.0
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        scrape_c = scrape(&a, &coordinator_url)?;
    }
    assert_eq!(total(&scrape_c, "dtc_raft_is_leader", &[]), 1.0);
    assert_eq!(total(&scrape_c, "dtc_tasks_completed_total", &[]), 3.0);
    assert_eq!(total(&scrape_c, "dtc_tasks_submitted_total", &[]), 3.0);
    assert!(total(&scrape_c, "dtc_raft_term", &[]) >= 1.0);
    assert!(total(&scrape_c, "dtc_raft_commit_index", &[]) >= 1.0);
    assert_eq!(
        total(&scrape_c, "dtc_slots_total", &[]),
        2.0,
        "the worker's 2 slots (not the 2 it takes ahead)"
    );
    let scrape_w = scrape(&a, &worker_url)?;
    let worker = [("worker", "metered")];
    assert_eq!(total(&scrape_w, "dtc_worker_slots", &worker), 2.0);
    assert_eq!(
        total(
            &scrape_w,
            "dtc_worker_tasks_total",
            &[("worker", "metered"), ("outcome", "succeeded")]
        ),
        3.0
    );
    assert_eq!(total(&scrape_w, "dtc_worker_slots_busy", &worker), 0.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_nobody_can_reach_is_503_with_retry_after() -> anyhow::Result<()> {
    use dtc_server::router::{Router, RouterConfig};
    common::bounded(async {
        common::logs();
        // A shard whose only replica is a port nobody listens on.
        let dead = SocketAddr::from(([127, 0, 0, 1], common::free_port()?));
        let router = Router::bind(RouterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            shards: vec![vec![dead]],
            limits: Default::default(),
            http: Some(HttpConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                max_body: 1024,
                max_waits: 16,
            }),
            credentials: Default::default(),
            insecure: false,
        })
        .await?;
        let http = router.http_addr().context("no HTTP address")?;
        let cancel = tokio_util::sync::CancellationToken::new();
        let running = tokio::spawn(router.run(cancel.clone()));
        let answer = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let r = agent()
                .post(format!("http://{http}/v1/tasks"))
                .send_json(json!({"type": "noop"}))?;
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok((json_of(r)?, retry_after))
        })
        .await?;
        cancel.cancel();
        running.await?;
        let ((status, body), retry_after) = answer?;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "unavailable");
        assert_eq!(retry_after.as_deref(), Some("1"));
        Ok(())
    })
    .await
}
